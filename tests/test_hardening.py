"""Issue 19: one process per run directory, nothing non-finite reported as
done, strict JSON, corrupt data and unwritable outputs in one line,
preemption."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from trainers import fit, runlock
from trainers.common import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
SYNTHETIC = ["--arch", "resnet8", "--dataset", "synthetic", "--precision", "float32", "--verbose", "0",
             "--synthetic-train", "256", "--batch-size", "32"]  # fmt: skip


def _fit(args, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    return fit.main([*SYNTHETIC, *args])


def _snapshot(directory: pathlib.Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_second_process_on_a_run_directory_is_refused_naming_the_holder(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    run = runs / "resnet8-synthetic-20260101-000000"  # where the implicit resume looks too
    env = {**os.environ, "RESNET_KERAS_RUNS": str(runs), "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, str(ROOT / "trainers" / "fit.py"), *SYNTHETIC, "--steps", "100000",
                              "--output-dir", str(run)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.time() + 120
        while not ((run / "config.json").exists() and runlock.holder(run) == first.pid):
            assert first.poll() is None, first.stderr.read()
            assert time.time() < deadline, "the first run never started"
            time.sleep(0.2)
        before = _snapshot(run)
        before.pop("steps.csv", None)
        for args in (["--steps", "100000", "--output-dir", str(run)], ["--steps", "100000"]):  # explicit, resume
            with pytest.raises(runlock.DirectoryInUse, match=f"in use by process {first.pid}"):
                _fit(args, tmp_path, monkeypatch)
        assert first.poll() is None  # the holder trains on
        after = _snapshot(run)
        assert {k: after[k] for k in ("config.json", ".lock")} == {k: before[k] for k in ("config.json", ".lock")}
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The kernel released the lock of the killed process: the directory can be taken again.
    with runlock.acquire(run):
        assert runlock.holder(run) == os.getpid()
    assert sorted(p.name for p in runs.iterdir()) == [run.name]  # the refused runs made nothing


def test_a_lock_is_released_when_its_holder_ends(tmp_path):
    lock = runlock.acquire(tmp_path)
    with pytest.raises(runlock.DirectoryInUse, match=f"in use by process {os.getpid()}"):
        runlock.acquire(tmp_path)  # flock locks are per open file: the same process is refused too
    lock.release()
    runlock.acquire(tmp_path).release()
