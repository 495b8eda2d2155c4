"""The trainer end to end on the synthetic dataset: outputs, resumption after
SIGKILL, bad input, non-finite loss, and MirroredStrategy equivalence."""

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import resnet_keras
from trainers import evaluate, fit
from trainers.core.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A small, quick run: ResNet-8 (n=1) on 1,024 synthetic 32x32 images, batch 64.
TINY = [
    "--arch",
    "resnet8",
    "--dataset",
    "synthetic",
    "--synthetic-train",
    "1024",
    "--batch-size",
    "64",
    "--precision",
    "float32",
    "--verbose",
    "0",
]


def _env(tmp_path):
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "RESNET_KERAS_RUNS": str(tmp_path / "runs"),
    }


def _fit_process(args, tmp_path, **kwargs):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "trainers" / "fit.py"), *args],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _fit(args, tmp_path, timeout=300):
    process = _fit_process(args, tmp_path)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished run, shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp("finished")
    run_dir = tmp / "run"
    args = [*TINY, "--steps", "80", "--output-dir", str(run_dir), "--log-every", "4", "--verbose", "2"]
    code, out, err = _fit(args, tmp)
    assert code == 0, err[-3000:]
    return run_dir, out


def test_a_run_writes_every_output_and_learns(finished_run):
    run_dir, out = finished_run
    for name in (
        "model.keras",
        "best.keras",
        "config.json",
        "history.csv",
        "steps.csv",
        "metrics.json",
        "curves.png",
        "pixel_mean.npy",
    ):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "logs").rglob("events.out.tfevents.*"))  # TensorBoard
    assert not (run_dir / "backup").exists()  # removed once finished
    assert not list(run_dir.glob(".*tmp*"))  # no temporary file left behind

    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    assert metrics["iterations"] == 80 and config["status"] == "finished"
    # fit.py imports resnet_keras before TensorFlow, so oneDNN is on unless the environment says no
    # (tests/test_kernels.py); the run records and prints which.
    expected = "Eigen" if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0" else "oneDNN"
    assert config["cpu_kernels"] == expected and f"CPU kernels {expected}" in out
    assert metrics["test_top1_error"] < 0.3  # chance is 0.9 with 10 classes
    assert metrics["train_images_per_second"] > 0
    # Every output says the data is synthetic.
    assert metrics["synthetic"] and "SYNTHETIC" in metrics["note"]
    assert config["synthetic"] and "SYNTHETIC" in config["note"]
    ours = [line for line in out.splitlines() if line.startswith("[synthetic] ")]
    assert ours[0].startswith("[synthetic] new run:") and ours[-1].startswith("[synthetic] done: 80 iterations")

    # The resolved schedule is saved: 80 iterations, milestones scaled from 32k/48k of 64k.
    schedule = config["schedule"]
    assert schedule["total_steps"] == 80 and schedule["boundaries"] == [40, 60]
    np.testing.assert_allclose(schedule["values"], [0.05, 0.005, 0.0005])  # 0.1 x 64/128, linear scaling
    history = _rows(run_dir / "history.csv")
    assert [int(r["iterations"]) for r in history] == [16, 32, 48, 64, 80]
    assert float(history[-1]["lr"]) == pytest.approx(0.0005)
    # Each epoch names the CPU it ran on; metrics.json lists the run's CPUs.
    from trainers.core.hardware import cpu_name

    assert {r["cpu"] for r in history} == {cpu_name()} and metrics["cpus"] == [cpu_name()]

    # The model learned what the normalization should hold: the training split's per-pixel mean.
    model = keras.models.load_model(run_dir / "model.keras")
    mean = resnet_keras.get_normalization(model).mean.numpy()
    np.testing.assert_allclose(mean, np.load(run_dir / "pixel_mean.npy"), rtol=1e-5)
    assert 100 < mean.mean() < 156


def test_runs_lists_the_finished_run_with_its_own_figures(finished_run, capsys):
    from trainers import runs

    run_dir, _ = finished_run
    (row,) = runs.main([str(run_dir.parent), "--format", "json"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = json.loads((run_dir / "best.json").read_text())
    assert row["run"] == "run" and row["arch"] == "resnet8" and row["status"] == "finished"
    assert row["top1"] == pytest.approx(1 - metrics["test_top1_error"])
    assert row["best_top1"] == pytest.approx(best["value"])
    assert row["wall_minutes"] == pytest.approx(metrics["wall_seconds"] / 60)
    assert row["ten_crop_top1"] is None and row["why"]["ten_crop_top1"] == "not evaluated"
    assert json.loads(capsys.readouterr().out)[0]["run"] == "run"  # strict JSON on stdout


def test_evaluate_matches_the_runs_own_test_error(finished_run, capsys):
    run_dir, _ = finished_run
    result = evaluate.main([str(run_dir)])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert result["top1_error"] == pytest.approx(metrics["test_top1_error"], abs=1e-6)
    assert result["images"] == 1024 and result["synthetic"]
    assert "SYNTHETIC" in capsys.readouterr().out
    assert json.loads((run_dir / "eval-final-test.json").read_text()) == result


def test_a_finished_run_is_never_overwritten(finished_run, float32_policy):
    # In this process: a UserError's exit status and one line are test_bad_input_exits_non_zero_with_one_line's.
    run_dir, _ = finished_run
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    with pytest.raises(UserError, match="holds a finished run; it is never overwritten"):
        fit.main([*TINY, "--steps", "80", "--output-dir", str(run_dir)])
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def test_killed_run_resumes_from_its_backup_and_ends_at_the_same_iteration(tmp_path, monkeypatch, capsys):
    """SIGKILL mid-epoch, then the same command (no --output-dir, in this
    process): it finds the unfinished run, resumes from the backup, and stops
    at exactly --steps."""
    args = [*TINY, "--steps", "64", "--backup-every", "5", "--log-every", "1"]
    process = _fit_process(args, tmp_path)
    metadata = None
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        found = list((tmp_path / "runs").glob("*/backup/training_metadata.json"))
        if found and json.loads(found[0].read_text())["iterations"] >= 25:  # inside epoch 2 (16 steps/epoch)
            metadata = json.loads(found[0].read_text())
            break
        time.sleep(0.2)
    assert metadata is not None, "no mid-run backup appeared"
    process.send_signal(signal.SIGKILL)
    process.wait()
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert not (run_dir / "metrics.json").exists()

    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    fit.main([*args, "--verbose", "2"])
    assert f"resuming run: {run_dir}" in capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["iterations"] == 64
    steps = [int(r["iterations"]) for r in _rows(run_dir / "steps.csv")]
    assert steps == sorted(steps) and steps[-1] == 64  # no step logged twice
    model = keras.models.load_model(run_dir / "model.keras")
    assert model.output_shape == (None, 10)
    assert len(list((tmp_path / "runs").iterdir())) == 1  # resumed, not a second run


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_backup(tmp_path, monkeypatch, float32_policy):
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    run_dir = tmp_path / "run"
    args = [*TINY, "--steps", "40", "--lr", "1e12", "--backup-every", "1", "--output-dir", str(run_dir)]
    with pytest.raises(UserError) as info:  # in this process; run_main exits with the error's exit_code
        fit.main(args)
    err = str(info.value)
    assert info.value.exit_code == 3
    assert "non-finite at iteration" in err and "backup" in err
    assert not (run_dir / "metrics.json").exists()
    metadata = run_dir / "backup" / "training_metadata.json"
    if metadata.exists():  # the loss may be non-finite from the first step: then there is nothing to keep
        step = int(err.split("non-finite at iteration ")[1].split(";")[0].split(" ")[0])
        assert json.loads(metadata.read_text())["iterations"] < step


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "resnet19"], "unknown architecture 'resnet19'. Known: resnet18, resnet34"),
        (
            ["--arch", "resnet20", "--dataset", "cifar100", "--data-dir", "{tmp}"],
            "dataset 'cifar100' is not present in the data dir {tmp}. This project never downloads",
        ),
        (
            ["--arch", "resnet20", "--dataset", "no_such_dataset", "--data-dir", "{tmp}"],
            "'no_such_dataset' is not a TFDS dataset",
        ),
        (["--arch", "resnet20", "--image-size", "2", "--dataset", "synthetic"], "--image-size 2 is too small"),
        (["--arch", "resnet20", "--dataset", "synthetic", "--batch-size", "0"], "--batch-size 0"),
        (["--arch", "resnet20", "--dataset", "synthetic", "--val-split", "1.5"], "--val-split 1.5"),
        (["--arch", "resnet20", "--dataset", "synthetic", "--steps", "0"], "--steps 0"),
        (["--arch", "plain20", "--dataset", "synthetic", "--shortcut", "A"], "plain network"),
        (["--arch", "resnet20", "--dataset", "synthetic", "--strategy", "multi-worker"], "needs a cluster"),
        # Issue 19's wider set: each was a traceback, or silently the default, before.
        (["--arch", "resnet8", "--dataset", "synthetic", "--epochs", "nan"], "--epochs nan; expected a positive"),
        (["--arch", "resnet8", "--dataset", "synthetic", "--image-size", "0"], "--image-size 0 is too small"),
        (["--arch", "resnet8", "--dataset", "synthetic", "--synthetic-classes", "1"], "--synthetic-classes 1"),
        (["--arch", "resnet8", "--dataset", "synthetic", "--seed", "-5"], "--seed -5; expected an integer"),
        (
            ["--arch", "resnet8", "--dataset", "synthetic", "--output-dir", "{tmp}/bad"],
            "{tmp}/bad/config.json is not valid JSON",
        ),
        (
            ["--arch", "resnet8", "--dataset", "synthetic", "--init-from", "{tmp}/bad/x.keras"],
            "{tmp}/bad/x.keras is not a .keras model: not a zip archive (3 bytes",
        ),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, args, message, float32_policy):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{cut sh")  # a corrupt run directory
    (tmp_path / "bad" / "x.keras").write_bytes(b"abc")  # a corrupt model file
    before = {p: p.read_bytes() for p in (tmp_path / "bad").iterdir()}
    args = [a.format(tmp=tmp_path) for a in args]
    if "--output-dir" not in args:
        args += ["--output-dir", str(tmp_path / "run")]
    with pytest.raises(UserError, match=None) as info:
        fit.main([*args, "--verbose", "0"])
    assert message.format(tmp=tmp_path) in str(info.value) and "\n" not in str(info.value)
    assert {p: p.read_bytes() for p in (tmp_path / "bad").iterdir()} == before  # nothing of it was changed
    assert not (tmp_path / "run").exists()


def test_bad_input_exits_non_zero_with_one_line(tmp_path):
    code, out, err = _fit(["--arch", "resnet19"], tmp_path)
    assert code == 2
    # TensorFlow's own start-up lines may precede it; ours is one line, last, with no traceback.
    assert err.strip().splitlines()[-1].startswith("error: unknown architecture 'resnet19'")
    assert "Traceback" not in err


def test_epochs_and_steps_are_refused_together(capsys):
    with pytest.raises(SystemExit) as info:  # argparse, in this process
        fit.main(["--arch", "resnet20", "--epochs", "1", "--steps", "5"])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_batch_must_divide_across_replicas(tmp_path):
    code, _, err = _fit(
        [
            *TINY,
            "--cpu-replicas",
            "2",
            "--strategy",
            "mirrored",
            "--batch-size",
            "63",
            "--steps",
            "2",
            "--output-dir",
            str(tmp_path / "run"),
        ],
        tmp_path,
    )
    assert code == 2 and "--batch-size 63 does not divide across 2 replicas" in err
    assert not (tmp_path / "run").exists()


def test_other_settings_do_not_resume_an_unfinished_run(tmp_path, float32_policy):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"arch": "resnet8", "dataset": "synthetic", "seed": 5}))
    with pytest.raises(UserError, match="unfinished run with other settings"):
        fit.main([*TINY, "--steps", "4", "--output-dir", str(run_dir)])
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 5


def test_mirrored_strategy_follows_the_default_strategys_loss(tmp_path, monkeypatch, float32_policy):
    """Two logical CPU replicas with synchronized BN and the same global batch
    compute the same mathematical step as one device: the batch statistics are
    all-reduced, the gradients summed. What differs is float32 summation order,
    which perturbs the loss by ~1e-6 per step; over 12 SGD steps that stays far
    below 1e-3 relative, while a real mismatch (per-replica BN, a wrong loss
    scale) moves it by percents from the first step."""
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    losses = {}
    for name, extra in {"default": [], "mirrored": ["--cpu-replicas", "2", "--strategy", "mirrored"]}.items():
        run_dir = tmp_path / name
        args = [*TINY, "--steps", "12", "--log-every", "1", "--sync-bn", "--output-dir", str(run_dir), *extra]
        if name == "default":  # in this process; the logical CPUs need a process of their own
            fit.main(args)
        else:
            code, _, err = _fit(args, tmp_path)
            assert code == 0, err[-3000:]
        config = json.loads((run_dir / "config.json").read_text())
        assert config["replicas"] == (2 if name == "mirrored" else 1)
        losses[name] = np.array([float(r["loss"]) for r in _rows(run_dir / "steps.csv")])
    assert len(losses["default"]) == 12
    np.testing.assert_allclose(losses["mirrored"], losses["default"], rtol=1e-3)


def test_evaluate_refuses_corrupt_and_missing_models(tmp_path, finished_run):
    run_dir, _ = finished_run
    broken = tmp_path / "broken.keras"
    broken.write_bytes((run_dir / "model.keras").read_bytes()[:5000])  # a truncated file
    with pytest.raises(UserError, match=r"is not a (loadable )?\.keras model"):
        evaluate.main([str(broken), "--dataset", "synthetic"])
    with pytest.raises(UserError, match="no model at"):
        evaluate.main([str(tmp_path / "missing.keras"), "--dataset", "synthetic"])
    with pytest.raises(UserError, match="not a run directory"):
        evaluate.main([str(tmp_path)])
    assert not list(tmp_path.glob("eval-*.json"))


def test_imagenet_network_trains_with_the_imagenet_recipe_and_evaluates_ten_crop(tmp_path, capsys, monkeypatch):
    """ResNet-18 at 64x64 on synthetic images through the ImageNet-style
    pipeline (scale, crop, flip, colour), with the ImageNet paper recipe
    shortened; trained in this process, as the evaluations run."""
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    run_dir = tmp_path / "run"
    fit.main(
        [
            "--arch",
            "resnet18",
            "--dataset",
            "synthetic",
            "--image-size",
            "64",
            "--synthetic-train",
            "64",
            "--synthetic-test",
            "64",
            "--batch-size",
            "16",
            "--steps",
            "8",
            "--precision",
            "float32",
            "--verbose",
            "0",
            "--output-dir",
            str(run_dir),
        ]
    )
    config = json.loads((run_dir / "config.json").read_text())
    # Shortened from 120 epochs: the plateau rule becomes the paper's milestones.
    schedule = config["schedule"]
    assert config["family"] == "imagenet" and schedule["kind"] == "step" and schedule["shortened_from"] == "plateau"
    assert schedule["boundaries"] == [2, 4] and schedule["augment"] == "scale"
    assert schedule["lr"] == pytest.approx(0.1 * 16 / 256)
    assert json.loads((run_dir / "metrics.json").read_text())["iterations"] == 8
    # The centre crop, the flip and the paper's 10-crop side by side (one 10-crop pass: it is the slow one).
    both = evaluate.main([str(run_dir), "--all-views", "--batch-size", "32"])
    assert set(both["views"]) == {"centre crop", "flip", "10-crop"}
    assert all(v["images"] == 64 and 0 <= v["top1_error"] <= 1 for v in both["views"].values())
    assert json.loads((run_dir / "eval-final-test-views.json").read_text()) == both
    centre = evaluate.main([str(run_dir), "--batch-size", "32"])
    assert centre["view"] == "centre crop" and centre["top1_error"] == both["views"]["centre crop"]["top1_error"]
    flip = evaluate.main([str(run_dir), "--flip", "--batch-size", "32"])
    assert flip["view"] == "flip" and flip["top1_error"] == both["views"]["flip"]["top1_error"]
    assert json.loads((run_dir / "eval-final-test-flip.json").read_text()) == flip
    out = capsys.readouterr().out
    assert "centre crop at 64px" in out and "10-crop at 64px" in out and "flip at 64px" in out


def test_an_in_process_run_puts_the_global_dtype_policy_back(tmp_path, monkeypatch):
    # fit.main sets --precision's policy for its run; a caller in the same
    # process (this test, a notebook) must build its next network in its own.
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    assert keras.config.dtype_policy().name == "float32"
    tiny = [a for a in TINY if a not in ("--precision", "float32")]
    metrics = fit.main([*tiny, "--precision", "mixed_bfloat16", "--steps", "2", "--output-dir", str(tmp_path / "run")])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["resolved_precision"] == "mixed_bfloat16"
    assert metrics["run_dir"]
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(UserError):  # and when the run fails
        fit.main([*tiny, "--precision", "mixed_bfloat16", "--steps", "2", "--output-dir", str(tmp_path / "run")])
    assert keras.config.dtype_policy().name == "float32"
