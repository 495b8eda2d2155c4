"""benchmarks/queues: the measurement queues stop at a preempted run and go on past a failed one."""

import os
import shutil
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUEUES = os.path.join(ROOT, "benchmarks", "queues")


def _queue(tmp_path, status, script, *args):
    """Runs a queue script with a stand-in interpreter that logs its command line and exits with ``status``."""
    fake = tmp_path / "python"
    calls = tmp_path / "calls.log"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexit {status}\n')
    fake.chmod(0o755)
    (tmp_path / "data").mkdir(exist_ok=True)
    env = {**os.environ, "PYTHON": str(fake), "RUNS": str(tmp_path / "runs"), "DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        ["bash", os.path.join(QUEUES, script), *args], env=env, capture_output=True, text=True, timeout=60
    )
    return done.returncode, calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.skipif(not os.path.exists("/bin/sh"), reason="needs a POSIX shell")
def test_a_preempted_run_stops_every_queue(tmp_path):
    # 75: the trainer was stopped by SIGTERM after writing its backup (a session or a spot machine ending). The
    # queue must not start the next run in the seconds before it is killed too; rerunning it resumes that run.
    code, calls = _queue(tmp_path, 75, "run_all.sh")
    assert code == 75
    assert len(calls) == 1 and "--arch resnet20" in calls[0] and "--output-dir" in calls[0]
    (tmp_path / "im").mkdir()
    code, calls = _queue(tmp_path / "im", 75, "imagenette.sh", "rows")
    assert code == 75 and len(calls) == 1 and "--arch resnet18" in calls[0]


@pytest.mark.skipif(not os.path.exists("/bin/sh"), reason="needs a POSIX shell")
def test_a_failed_run_does_not_stop_the_imagenette_queue(tmp_path):
    # Any other failure (exit 3: a non-finite loss, say) is logged and the next run starts.
    code, calls = _queue(tmp_path, 3, "imagenette.sh", "rows")
    assert code == 0
    assert [c.split("--arch ")[1].split()[0] for c in calls] == ["resnet18", "resnet18", "resnet34", "resnet50"]


@pytest.mark.skipif(not os.path.exists("/bin/sh"), reason="needs a POSIX shell")
def test_the_leaderboard_screen_stops_at_a_preempted_run_and_goes_on_past_a_failed_one(tmp_path):
    code, calls = _queue(tmp_path, 3, "leaderboard.sh", "screen")
    assert code == 0 and [c.split("--arch ")[1].split()[0] for c in calls] == ["resnet18d", "resnet18"]
    assert all("--epochs 5" in c and "--image-size 128" in c and "--recipe fast" in c for c in calls)
    (tmp_path / "pre").mkdir()
    code, calls = _queue(tmp_path / "pre", 75, "leaderboard.sh", "screen")
    assert code == 75 and len(calls) == 1


@pytest.mark.skipif(not os.path.exists("/bin/sh"), reason="needs a POSIX shell")
@pytest.mark.parametrize(
    "section, runs",
    [
        ("baseline", [("resnet18d", "--seed 1", ""), ("resnet18d", "--seed 2", "")]),
        (
            "recipe",
            [
                ("resnet18d", "--seed 0", "--lr-schedule flat-cosine"),
                ("resnet18d", "--seed 0", "--optimizer adamw"),
                ("resnet18d", "--seed 0", "--optimizer lamb"),
            ],
        ),
        ("blur", [("resnet18d", "--seed 0", "--blur-pool stem"), ("resnet18d", "--seed 0", "--blur-pool all")]),
        (
            "flat",
            [
                ("resnet18d", "--seed 1", "--lr-schedule flat-cosine"),
                ("resnet18d", "--seed 2", "--lr-schedule flat-cosine"),
            ],
        ),
        (
            "deeper",
            [
                ("resnet50d", "--seed 0", "--lr-schedule flat-cosine"),
                ("resnet34d", "--seed 0", "--lr-schedule flat-cosine"),
            ],
        ),
        ("paper", [(arch, f"--seed {seed}", "") for arch in ("resnet34", "resnet50") for seed in (0, 1, 2)]),
    ],
)
def test_each_leaderboard_section_trains_its_runs(tmp_path, section, runs):
    code, calls = _queue(tmp_path, 0, "leaderboard.sh", section)
    assert code == 0 and len(calls) == len(runs), calls
    for call, (arch, seed, change) in zip(calls, runs):
        assert f"--arch {arch} " in call and seed in call and change in call
        assert "--recipe fast --image-size 128 --epochs 5" in call and "--output-dir" in call
    (tmp_path / "unknown").mkdir()
    code, _ = _queue(tmp_path / "unknown", 0, "leaderboard.sh", "no-such-section")
    assert code == 2


@pytest.mark.skipif(not os.path.exists("/bin/sh"), reason="needs a POSIX shell")
def test_the_long_leaderboard_section_trains_20_epochs_without_and_with_mixup(tmp_path):
    code, calls = _queue(tmp_path, 0, "leaderboard.sh", "long")
    assert code == 0 and len(calls) == 2, calls
    assert all("--arch resnet18d " in c and "--epochs 20" in c and "--lr-schedule flat-cosine" in c for c in calls)
    assert "--mixup" not in calls[0] and "--mixup 0.2" in calls[1]


@pytest.mark.skipif(
    not (shutil.which("flock") and shutil.which("pgrep")), reason="needs flock (util-linux) and pgrep (procps)"
)
def test_stop_ends_the_queue_at_a_backup_and_one_queue_runs_at_a_time(tmp_path):
    # A stand-in trainer that, like fit.py, answers SIGTERM by exiting 75 (after its backup).
    calls = tmp_path / "calls.log"
    fake = tmp_path / "python"
    fake.write_text(
        f"#!/bin/sh\ntrap 'kill $!; echo SIGTERM >> {calls}; exit 75' TERM\necho \"$*\" >> {calls}\n"
        "sleep 60 &\nwait $!\n"
    )
    fake.chmod(0o755)
    (tmp_path / "data").mkdir()
    # COLUMNS=40: ps cuts command lines at $COLUMNS unless told not to; stop.sh must still find the trainer.
    env = {
        **os.environ,
        "PYTHON": str(fake),
        "RUNS": str(tmp_path / "runs"),
        "DATA_DIR": str(tmp_path / "data"),
        "COLUMNS": "40",
    }
    queue = subprocess.Popen(["bash", os.path.join(QUEUES, "run_all.sh")], env=env, start_new_session=True)
    try:
        for _ in range(200):  # the first run has started
            if calls.exists() and calls.read_text():
                break
            time.sleep(0.05)
        assert (tmp_path / "runs" / "queue.pid").read_text().strip() == str(queue.pid)
        second = subprocess.run(
            ["bash", os.path.join(QUEUES, "run_all.sh")], env=env, capture_output=True, text=True, timeout=30
        )
        assert second.returncode == 2 and "a queue is already running" in second.stderr
        stop = subprocess.run(
            ["bash", os.path.join(QUEUES, "stop.sh")], env=env, capture_output=True, text=True, timeout=60
        )
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "SIGTERM sent to its trainer" in stop.stdout and "done" in stop.stdout
        assert queue.wait(timeout=10) != 0  # killed before it could start anything else
        lines = calls.read_text().splitlines()
        assert len(lines) == 2 and "--arch resnet20" in lines[0] and lines[1] == "SIGTERM"
        again = subprocess.run(["bash", os.path.join(QUEUES, "stop.sh")], env=env, capture_output=True, text=True)
        assert again.returncode == 0 and "not running" in again.stdout
    finally:
        if queue.poll() is None:
            os.killpg(queue.pid, 9)
