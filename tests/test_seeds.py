"""trainers/seeds.py: N seeds of one fit.py configuration, their mean and spread.

One study of two real seeds end to end; the rest with a stand-in trainer (a
small script that writes what fit.py writes, or exits as told) or hand-made run
directories, so the file stays fast."""

import json
import math
import statistics as stats
import sys

import pytest

from trainers import seeds
from trainers.core import seeds as lib
from trainers.core.errors import UserError, run_main

TINY = [
    "--arch",
    "resnet8",
    "--dataset",
    "synthetic",
    "--synthetic-train",
    "64",
    "--synthetic-test",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--precision",
    "float32",
    "--verbose",
    "0",
]

# What fit.py writes when it finishes (config.json, metrics.json), or the exit status SEEDS_EXIT gives its seed.
STAND_IN = """
import json, os, pathlib, sys
args = sys.argv[1:]
seed = int(args[args.index("--seed") + 1])
out = pathlib.Path(args[args.index("--output-dir") + 1])
with open(os.environ["SEEDS_CALLS"], "a") as f:
    f.write(" ".join(args) + "\\n")
code = json.loads(os.environ.get("SEEDS_EXIT", "{}")).get(str(seed), 0)
if code:
    sys.exit(code)
out.mkdir(parents=True, exist_ok=True)
epochs = float(args[args.index("--epochs") + 1])
config = {"arch": "resnet8", "dataset": "synthetic", "image_size": 32, "epochs": epochs, "seed": seed}
(out / "config.json").write_text(json.dumps(config))
metrics = {"test_top1_error": 0.2 + seed / 100, "test_top5_error": 0.01, "best_val_accuracy": 0.81,
           "wall_seconds": 60.0, "train_images_per_second": 100.0, "test_split": "test", "cpus": ["a CPU"]}
(out / "metrics.json").write_text(json.dumps(metrics))
"""


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """The stand-in trainer in place of fit.py; returns a function giving the command lines it was called with."""
    script = tmp_path / "fake_fit.py"
    script.write_text(STAND_IN)
    calls = tmp_path / "calls.log"
    monkeypatch.setattr(lib, "FIT", script)
    monkeypatch.setenv("SEEDS_CALLS", str(calls))
    return lambda: calls.read_text().splitlines() if calls.exists() else []


def _run(tmp_path, identity=None, seed=0, top1_error=0.2, evals=None, name=None):
    """A hand-made finished run directory."""
    run_dir = tmp_path / (name or f"run-{seed}")
    run_dir.mkdir(parents=True)
    config = {
        "arch": "resnet8",
        "dataset": "synthetic",
        "image_size": 32,
        "epochs": 1.0,
        "seed": seed,
        **(identity or {}),
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    metrics = {"test_top1_error": top1_error, "test_top5_error": 0.0, "wall_seconds": 120, "test_split": "test"}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    for file_name, content in (evals or {}).items():
        (run_dir / file_name).write_text(json.dumps(content))
    return run_dir


def _exit(argv_or_call):
    with pytest.raises(SystemExit) as stop:
        run_main(
            argv_or_call if callable(argv_or_call) else seeds.main, None if callable(argv_or_call) else argv_or_call
        )
    return stop.value.code


# ------------------------------------------------------------- end to end
def test_two_seeds_end_to_end_then_a_rerun_skips_both(tmp_path, capsys):
    root = tmp_path / "study"
    result = seeds.main(["--seeds", "2", "--root", str(root), "--", *TINY])
    report = json.loads((root / "seeds.json").read_text())
    assert report == json.loads(json.dumps(result))  # what it returns is what it wrote
    assert [r["seed"] for r in report["runs"]] == [0, 1] and report["seeds"] == [0, 1]
    top1 = [1 - json.loads((root / f"seed-{s}" / "metrics.json").read_text())["test_top1_error"] for s in (0, 1)]
    assert report["summary"]["top1"]["mean"] == pytest.approx(stats.mean(top1))
    assert report["summary"]["top1"]["std"] == pytest.approx(stats.stdev(top1))
    assert report["summary"]["top1"]["n"] == 2 and report["configuration"]["arch"] == "resnet8"
    for s in (0, 1):
        config = json.loads((root / f"seed-{s}" / "config.json").read_text())
        assert config["seed"] == s and config["status"] == "finished"
    out = capsys.readouterr().out
    assert "top-1 over 2 runs (seeds 0, 1)" in out and "std (n-1)" in out

    stamps = [(root / f"seed-{s}" / "metrics.json").stat().st_mtime_ns for s in (0, 1)]
    again = seeds.main(["--seeds", "0,1", "--root", str(root), "--format", "markdown", "--", *TINY])
    out = capsys.readouterr().out
    assert out.count("finished already") == 2 and "| seed-0 |" in out
    assert stamps == [(root / f"seed-{s}" / "metrics.json").stat().st_mtime_ns for s in (0, 1)]
    assert again["summary"] == report["summary"]


# ------------------------------------------------------------- statistics
def test_statistics_use_n_minus_one_and_say_why_one_run_has_no_spread():
    figures = lib.statistics([0.80, 0.85, 0.90, None])
    assert figures["n"] == 3 and figures["mean"] == pytest.approx(0.85)
    assert figures["std"] == pytest.approx(0.05)  # sqrt((0.0025 + 0 + 0.0025) / 2)
    assert (figures["min"], figures["max"]) == (0.80, 0.90)
    one = lib.statistics([0.7])
    assert one["mean"] == 0.7 and one["std"] is None and one["why"] == "n/a (1 run)"
    none = lib.statistics([None, math.nan])
    assert none["n"] == 0 and none["mean"] is None and none["why"]


def test_one_run_prints_no_spread_and_writes_strict_json(tmp_path, capsys):
    run_dir = _run(tmp_path, top1_error=0.25)
    out_file = tmp_path / "one.json"
    seeds.main(["--runs", str(run_dir), "--output", str(out_file)])
    assert "n/a (1 run)" in capsys.readouterr().out
    text = out_file.read_text()
    assert "NaN" not in text
    report = json.loads(text)
    assert report["summary"]["top1"] == {
        "n": 1,
        "mean": 0.75,
        "std": None,
        "min": 0.75,
        "max": 0.75,
        "why": "n/a (1 run)",
    }
    assert report["runs"][0]["images_per_second"] is None and report["runs"][0]["why"]["images_per_second"]


def test_evaluate_views_are_reported_per_view(tmp_path, capsys):
    runs = [
        _run(
            tmp_path,
            seed=s,
            evals={
                "eval-final-test-views.json": {
                    "views": {"centre crop": {"top1_error": e}, "10-crop": {"top1_error": e - 0.02}}
                }
            },
        )
        for s, e in ((0, 0.20), (1, 0.22))
    ]
    result = seeds.main(["--runs", *map(str, runs), "--format", "markdown"])
    ten = result["evaluations"]["10-crop, final, test"]
    assert (
        ten["n"] == 2 and ten["mean"] == pytest.approx(0.81) and ten["std"] == pytest.approx(stats.stdev([0.82, 0.8]))
    )
    assert result["evaluations"]["centre crop, final, test"]["mean"] == pytest.approx(0.79)
    assert "10-crop, final, test" in capsys.readouterr().out


# ------------------------------------------------------------- refusals
def test_runs_that_differ_in_more_than_the_seed_are_refused(tmp_path):
    a = _run(tmp_path, seed=0)
    b = _run(tmp_path, seed=1, identity={"epochs": 2.0, "recipe": "fast"})
    with pytest.raises(UserError, match="differ in more than the seed") as error:
        seeds.main(["--runs", str(a), str(b)])
    assert "epochs" in str(error.value) and "recipe" in str(error.value) and "arch" not in str(error.value)
    c = _run(tmp_path, seed=0, name="again")
    with pytest.raises(UserError, match="both ran seed 0"):
        seeds.main(["--runs", str(a), str(c)])


@pytest.mark.parametrize("spelling", ["", "a", "0,,1", "-1", "0", "1,1", "1.5", "0;1"])
def test_a_bad_seeds_spelling_is_refused(spelling, tmp_path):
    with pytest.raises(UserError, match="--seeds"):
        seeds.main(["--seeds", spelling, "--root", str(tmp_path / "r"), "--", *TINY])
    assert not (tmp_path / "r").exists()


def test_seeds_spellings():
    assert lib.parse_seeds("3") == [0, 1, 2] and lib.parse_seeds("5,2, 9") == [5, 2, 9]


@pytest.mark.parametrize(
    "flags", [["--seed", "3"], ["--seed=3"], ["--output-dir", "x"], ["--output-dir=x"], ["--see", "3"]]
)
def test_fit_flags_that_set_the_seed_or_the_run_directory_are_refused(flags, tmp_path):
    with pytest.raises(UserError, match="seeds.py sets --(seed|output-dir) itself"):
        seeds.main(["--seeds", "2", "--root", str(tmp_path / "r"), "--", *TINY[:4], *flags])
    assert not (tmp_path / "r").exists()


def test_no_fit_flags_is_refused(tmp_path):
    for argv in (["--"], []):
        with pytest.raises(UserError, match="no fit.py flags"):
            seeds.main(["--seeds", "2", "--root", str(tmp_path / "r"), *argv])
    assert not (tmp_path / "r").exists()


def test_runs_that_do_not_exist_or_are_not_finished_are_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        seeds.main(["--runs", str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no finished fit.py run"):
        seeds.main(["--runs", str(tmp_path / "empty")])
    unfinished = _run(tmp_path)
    (unfinished / "metrics.json").unlink()
    with pytest.raises(UserError, match="not finished"):
        seeds.main(["--runs", str(unfinished)])
    with pytest.raises(UserError, match="does not exist"):
        seeds.main(["--root", str(tmp_path / "nowhere"), "--report-only"])
    with pytest.raises(UserError, match="no finished seed run"):
        seeds.main(["--root", str(tmp_path / "empty"), "--report-only"])
    with pytest.raises(SystemExit):  # argparse: --root or --runs, one of them
        seeds.main(["--seeds", "2", "--", *TINY])


# ------------------------------------------------------------- the stand-in trainer
def test_the_seeds_run_in_order_with_their_own_directory_and_nice(tmp_path, stand_in, capsys):
    root = tmp_path / "study"
    result = seeds.main(["--seeds", "3,1", "--root", str(root), "--nice", "5", "--", "--arch", "x", "--epochs", "1"])
    calls = stand_in()
    assert [c.split("--seed ")[1].split()[0] for c in calls] == ["3", "1"]
    assert calls[0].endswith(f"--output-dir {root / 'seed-3'}") and calls[0].startswith("--arch x --epochs 1")
    assert "nice -n 5" in capsys.readouterr().out
    assert result["seeds"] == [3, 1] and result["summary"]["top1"]["mean"] == pytest.approx(0.78)
    assert result["summary"]["wall_minutes"]["mean"] == 1.0
    report = seeds.main(["--root", str(root), "--report-only", "--format", "json"])
    assert report["seeds"] == [1, 3] and len(stand_in()) == 2  # every seed-S found, nothing trained


def test_a_preempted_seed_stops_the_study_with_75(tmp_path, stand_in, monkeypatch, capsys):
    root = tmp_path / "study"
    monkeypatch.setenv("SEEDS_EXIT", json.dumps({"0": 75}))
    assert _exit(["--seeds", "3", "--root", str(root), "--", "--arch", "x", "--epochs", "1"]) == 75
    assert len(stand_in()) == 1  # seeds 1 and 2 not started
    assert "rerun the same command" in capsys.readouterr().err


def test_a_failed_seed_stops_the_study_and_the_finished_are_reported(tmp_path, stand_in, monkeypatch, capsys):
    root = tmp_path / "study"
    monkeypatch.setenv("SEEDS_EXIT", json.dumps({"1": 3}))
    assert _exit(["--seeds", "3", "--root", str(root), "--", "--arch", "x", "--epochs", "1"]) == 3
    assert len(stand_in()) == 2  # seed 2 not started
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed 1" in err[0] and "status 3" in err[0]
    report = json.loads((root / "seeds.json").read_text())
    assert report["seeds"] == [0] and report["unfinished"] == {"1": "not started", "2": "not started"}


def test_a_study_rerun_with_other_settings_is_refused(tmp_path, stand_in):
    root = tmp_path / "study"
    seeds.main(["--seeds", "1", "--root", str(root), "--", "--arch", "x", "--epochs", "1"])
    with pytest.raises(UserError, match="epochs"):
        seeds.main(["--seeds", "2", "--root", str(root), "--", "--arch", "x", "--epochs", "2"])


def test_fit_py_is_the_package_s_own():
    assert lib.FIT.name == "fit.py" and lib.FIT.parent.name == "trainers" and lib.FIT.is_file()
    command = lib.fit_command(4, "/r", ["--arch", "x"])
    assert command == [sys.executable, str(lib.FIT), "--arch", "x", "--seed", "4", "--output-dir", "/r/seed-4"]
