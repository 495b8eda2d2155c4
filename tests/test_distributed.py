"""Multi-worker training on 127.0.0.1: two workers through trainers/launch_local.py,
the same results as one process, and a worker killed mid-training."""

import csv
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from trainers import fit, launch_local
from trainers.core.distributed import Role, role, tf_config
from trainers.core.errors import UserError
from trainers.core.launcher import free_ports, tf_configs
from trainers.core.sources import load_keras_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = [
    "--arch",
    "resnet8",
    "--dataset",
    "synthetic",
    "--image-size",
    "16",
    "--synthetic-train",
    "512",
    "--batch-size",
    "32",
    "--precision",
    "float32",
    "--log-every",
    "1",
    "--verbose",
    "2",
]


def _env(tmp_path):
    workers_tmp = tmp_path / "worker_tmp"
    workers_tmp.mkdir(exist_ok=True)
    return {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(ROOT),
        "RESNET_KERAS_RUNS": str(tmp_path / "runs"),
        "TMPDIR": str(workers_tmp),
    }


def _launch(tmp_path, args, workers=2, timeout=400):
    cmd = [sys.executable, str(ROOT / "trainers" / "launch_local.py"), "--workers", str(workers), "--", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=timeout)


def _fit(tmp_path, args, timeout=300):
    cmd = [sys.executable, str(ROOT / "trainers" / "fit.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=timeout)


def _losses(run_dir):
    with open(pathlib.Path(run_dir) / "steps.csv") as f:
        return {int(r["iterations"]): float(r["loss"]) for r in csv.DictReader(f)}


def _fingerprints(output):
    return dict(re.findall(r"\[worker (\d)\] .*done: .*weights sha256 ([0-9a-f]{64})", output))


def test_two_workers_follow_one_process_with_the_same_global_batch(tmp_path, monkeypatch, float32_policy):
    """Two workers with a global batch of 32 (16 each) against one process with
    32: with --sync-bn they see the same images, the same augmentation and the
    same batch statistics, so only float32 rounding separates them (gradients
    summed in another order, BN variance from all-reduced sums E[x^2] - E[x]^2
    instead of a two-pass mean). Without --sync-bn each worker normalizes its
    16 images by their own statistics: a different function from the first
    step, which the tolerance must and does tell apart."""
    steps = ["--steps", "12", "--lr", "0.02", "--backup-every", "100"]
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    fit.main([*TINY, *steps, "--sync-bn", "--output-dir", str(tmp_path / "one")])  # one process: this one
    synced = _launch(tmp_path, [*TINY, *steps, "--sync-bn", "--output-dir", str(tmp_path / "two_sync")])
    assert synced.returncode == 0, synced.stderr[-3000:]
    local = _launch(tmp_path, [*TINY, *steps, "--output-dir", str(tmp_path / "two_local")])
    assert local.returncode == 0, local.stderr[-3000:]

    one, two, unsynced = (_losses(tmp_path / d) for d in ("one", "two_sync", "two_local"))
    assert sorted(one) == sorted(two) == list(range(1, 13))

    def worst(a, b):
        return max(abs(a[i] - b[i]) / abs(a[i]) for i in a)

    # Rounding differences start near 1e-7 and grow with the iterations: at
    # most 3e-6 in these 12 (measured); the tolerance leaves 30x room. Local
    # batch statistics move the loss by 2e-4 to 6e-3 per step (measured), so
    # the tolerance is 10x below the worst step of that control.
    assert worst(one, two) < 1e-4, (one, two)
    assert abs(one[1] - two[1]) / one[1] < 1e-6  # the first step: the same images, the same weights
    assert worst(one, unsynced) > 1e-3, (one, unsynced)

    # One model: the two workers of a run end bit-identical, and the chief's directory is complete.
    out = synced.stdout + synced.stderr
    assert "on 2 workers (this is worker 0, the chief)" in out and "(this is worker 1)" in out
    # Both workers end with bit-identical weights.
    prints = _fingerprints(out)
    assert set(prints) == {"0", "1"} and prints["0"] == prints["1"], out[-3000:]
    # The chief's run directory is complete, and its model loads in safe mode.
    metrics = json.loads((tmp_path / "two_sync" / "metrics.json").read_text())
    assert metrics["iterations"] == 12 and metrics["replicas"] == 2
    assert metrics["weights_sha256"] == prints["0"]
    model = load_keras_model(tmp_path / "two_sync" / "model.keras")
    assert model.output_shape == (None, 10)
    config = json.loads((tmp_path / "two_sync" / "config.json").read_text())
    assert config["workers"] == 2 and config["status"] == "finished"
    assert not (tmp_path / "two_sync" / "backup").exists()  # finished: the backup is gone
    # The other worker wrote only into a temporary directory, now removed.
    assert list((tmp_path / "worker_tmp").iterdir()) == []


@pytest.mark.slow
def test_a_killed_worker_stops_the_job_and_a_restart_resumes_it(tmp_path):
    """Slow tier (about 100 s: two launches of two workers). The default run resumes a killed single-process run
    from its backup (test_fit) and a SIGTERM'd one (test_hardening); this is the multi-worker case."""
    run = tmp_path / "run"
    args = [*TINY, "--steps", "40", "--backup-every", "10", "--output-dir", str(run)]
    cmd = [sys.executable, str(ROOT / "trainers" / "launch_local.py"), "--workers", "2", "--grace", "5", "--", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    lines, pids = [], {}

    def drain():
        for line in proc.stderr:
            lines.append(line)
            found = re.match(r"\[launch\] worker (\d).*: pid (\d+)", line)
            if found:
                pids[int(found.group(1))] = int(found.group(2))

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    metadata = run / "backup" / "training_metadata.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metadata.exists() and json.loads(metadata.read_text())["iterations"] >= 20:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "".join(lines)[-3000:]
    backed_up = json.loads(metadata.read_text())["iterations"]
    os.kill(pids[1], signal.SIGKILL)  # worker 1 dies mid-training
    status = proc.wait(timeout=120)
    reader.join(timeout=10)
    assert status != 0, "".join(lines)[-3000:]
    assert "worker 1 exited with status -9; stopping the others" in "".join(lines)
    assert not (run / "metrics.json").exists()
    restored_from = json.loads(metadata.read_text())["iterations"]
    assert 20 <= backed_up <= restored_from < 40

    again = _launch(tmp_path, args)  # the same command
    assert again.returncode == 0, again.stderr[-3000:]
    out = again.stdout + again.stderr
    assert "[worker 0] [synthetic] resuming run" in out and "[worker 1] [synthetic] resuming run" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["iterations"] == 40
    losses = _losses(run)
    assert max(losses) == 40 and sorted(losses) == list(range(1, 41))
    prints = _fingerprints(out)
    assert prints["0"] == prints["1"]


def test_multi_worker_needs_an_output_dir(tmp_path, monkeypatch):
    """A run directory every worker can find is required, and each worker says so from TF_CONFIG alone, before
    its strategy exists: in this process, where TensorFlow has run, that strategy could not even be made."""
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TF_CONFIG", tf_configs(free_ports(2))[1])
    for strategy in ("auto", "multi-worker"):
        with pytest.raises(UserError, match="^a multi-worker run needs --output-dir"):
            fit.main([*TINY, "--steps", "2", "--strategy", strategy])
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_multi_worker_refuses_no_cluster_and_an_uneven_batch_and_no_output_dir(tmp_path):
    """In the default run: test_fit's test_bad_input_is_one_clear_error, test_batch_must_divide_across_replicas,
    and test_multi_worker_needs_an_output_dir (in one process). Here each is the launched job's exit status 2."""
    result = _launch(tmp_path, [*TINY, "--steps", "2"])
    assert result.returncode == 2 and "needs --output-dir" in result.stderr, result.stderr[-2000:]
    # No cluster.
    result = _fit(tmp_path, [*TINY, "--steps", "2", "--strategy", "multi-worker"])
    assert result.returncode == 2 and "needs a cluster" in result.stderr.strip().splitlines()[-1]
    # A global batch that does not divide across the replicas.
    result = _launch(tmp_path, [*TINY, "--batch-size", "33", "--steps", "2", "--output-dir", str(tmp_path / "odd")])
    assert result.returncode == 2 and "does not divide across 2 replicas" in result.stderr


def test_launcher_arguments(tmp_path):
    cmd = [sys.executable, str(ROOT / "trainers" / "launch_local.py")]
    result = subprocess.run([*cmd, "--workers", "1", "--", *TINY], capture_output=True, text=True, env=_env(tmp_path))
    assert result.returncode == 2 and "at least 2" in result.stderr
    with pytest.raises(UserError, match="no fit.py arguments"):  # in this process: the same exit path as above
        launch_local.main(["--workers", "2"])


@pytest.mark.parametrize(
    "value, message",
    [
        ("{not json", "not valid JSON"),
        ('{"cluster": {"worker": ["a:1"]}}', 'needs "cluster" and "task"'),
        ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "uses only chief and worker"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "is not in its cluster"),
    ],
)
def test_bad_tf_config(monkeypatch, value, message):
    monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(UserError, match=message):
        tf_config()


def test_roles():
    import tensorflow as tf

    assert role(tf.distribute.get_strategy()) == Role(1, "chief", 0, True)
    assert not role(tf.distribute.get_strategy()).multi_worker
