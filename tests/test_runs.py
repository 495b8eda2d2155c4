"""trainers/runs.py: run directories side by side, read from their files alone."""

import json
import os

import pytest

from trainers import runs
from trainers.core import runlock
from trainers.core.errors import UserError


def _config(run_dir, **extra):
    run_dir.mkdir(parents=True)
    config = {
        "arch": "resnet18",
        "recipe": "fast",
        "status": "running",
        "resolved_precision": "float32",
        "data": {"name": "imagenette/160px-v2", "image_size": 128},
        "schedule": {"epochs": 20.0, "total_steps": 2940},
        **extra,
    }
    (run_dir / "config.json").write_text(json.dumps(config))


def _history(run_dir, rows):
    lines = ["epoch,iterations,val_accuracy,epoch_seconds,images_per_second,cpu"]
    lines += [",".join(map(str, r)) for r in rows]
    (run_dir / "history.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def tree(tmp_path):
    done = tmp_path / "done"
    _config(done, status="finished")
    _history(done, [(1, 147, 0.5, 300, 40.0, "cpu A"), (2, 294, 0.6, 300, 41.0, "cpu A")])
    (done / "metrics.json").write_text(
        json.dumps({"test_top1_error": 0.25, "train_images_per_second": 40.5, "wall_seconds": 600.0, "cpus": ["cpu A"]})
    )
    (done / "best.json").write_text(json.dumps({"monitor": "val_accuracy", "value": 0.76, "iterations": 294}))
    (done / "eval-final-test-views.json").write_text(
        json.dumps({"views": {"centre crop": {"top1_error": 0.25}, "10-crop": {"top1_error": 0.2}}})
    )
    half = tmp_path / "group" / "half"
    _config(half)
    # An old row without the cpu column, then one with it; a backup past the last epoch.
    _history(half, [(1, 147, 0.4, 500, "", ""), (2, 294, 0.5, 400, 20.0, "cpu B")])
    (half / "backup").mkdir()
    (half / "backup" / "training_metadata.json").write_text(json.dumps({"epoch": 2, "batch": 5, "iterations": 400}))
    return tmp_path


def test_a_finished_and_a_stopped_run(tree, capsys):
    rows = runs.main([str(tree), "--format", "json"])
    assert [r["run"] for r in rows] == ["done", "group/half"]
    done, half = rows
    assert done["status"] == "finished" and done["top1"] == pytest.approx(0.75)
    assert done["best_top1"] == pytest.approx(0.76) and done["ten_crop_top1"] == pytest.approx(0.8)
    assert done["wall_minutes"] == pytest.approx(10.0) and done["cpus"] == ["cpu A"]
    # Stopped: no live process holds its lock; where it stands is its backup's iteration.
    assert half["status"] == "stopped, resumes from its backup, saved at iteration 400 of 2940"
    assert half["top1"] is None and half["why"]["top1"] == "not finished"
    assert half["best_top1"] is None and half["why"]["best_top1"] == "no validated epoch"
    assert half["images_per_second"] == pytest.approx(20.0)  # the rows that were timed
    assert half["wall_minutes"] == pytest.approx(15.0)
    assert half["cpus"] == ["not recorded", "cpu B"]
    json.loads(capsys.readouterr().out)  # strict JSON


def test_the_text_and_markdown_tables_say_why_a_figure_is_missing(tree, capsys):
    runs.main([str(tree)])
    text = capsys.readouterr().out.splitlines()
    assert text[0].split()[:3] == ["run", "network", "dataset"]
    half = next(line for line in text if line.startswith("group/half"))
    assert "not finished" in half and "no validated epoch" in half
    runs.main([str(tree / "done"), "--format", "markdown"])
    markdown = capsys.readouterr().out.splitlines()
    assert markdown[0].startswith("| run | network |") and markdown[1].startswith("|---|")
    expected = "| done | resnet18 | imagenette/160px-v2 | fast | 128 | 20 | finished | 75.00% | 76.00% | 80.00% |"
    assert markdown[2].startswith(expected)


def test_a_run_being_trained_is_told_from_a_stopped_one(tree):
    with runlock.acquire(tree / "group" / "half"):
        assert runlock.live_holder(tree / "group" / "half") == os.getpid()
        (row,) = runs.main([str(tree / "group" / "half"), "--format", "json"])
        assert row["status"].startswith(f"training now (process {os.getpid()})")
    assert runlock.live_holder(tree / "group" / "half") is None


def test_bad_input_one_line_each(tree, tmp_path, capsys):
    with pytest.raises(UserError, match="does not exist"):
        runs.main([str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no run directories"):
        runs.main([str(tmp_path / "empty")])
    (tree / "done" / "metrics.json").write_text('{"test_top1_error": ')  # cut short
    with pytest.raises(UserError, match="1 run directory could not be read: done"):
        runs.main([str(tree)])
    # The readable runs are still listed, the unreadable one says which file.
    out = capsys.readouterr().out
    assert "unreadable (metrics.json:" in out and "group/half" in out


def test_a_damaged_history_row_is_skipped_not_fatal(tree, capsys):
    half = tree / "group" / "half"
    _history(half, [(1, 147, 0.4, 500, 20.0, "cpu B"), ("2", "garbage", "", "x", "y", "")])
    (half / "backup" / "training_metadata.json").unlink()
    (row,) = runs.main([str(half), "--format", "json"])
    assert row["status"] == "stopped, saved at iteration 147 of 2940"
    assert row["images_per_second"] == pytest.approx(20.0)


def test_cpu_name_tells_machines_apart(monkeypatch):
    from trainers.core import hardware

    info = {
        "vendor_id": "GenuineIntel",
        "cpu family": "6",
        "model": "106",
        "model name": "Intel(R) Xeon(R) Processor @ 2.80GHz",
        "flags": "fpu avx2 avx512f avx512_vnni",
    }
    monkeypatch.setattr(hardware, "cpuinfo", lambda: info)
    name = hardware.cpu_name()
    assert name.startswith("GenuineIntel family 6 model 106, Intel(R) Xeon(R) Processor @ 2.80GHz, ")
    assert name.endswith("CPUs (avx2, avx512f, avx512_vnni)")
    monkeypatch.setattr(hardware, "cpuinfo", lambda: {})
    assert hardware.cpu_name() == "unknown CPU"
