"""Keras Tuner sweeps on the synthetic dataset: the space, the result files,
budgets, resumption, bad input."""

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import keras_tuner as kt
import pytest

from trainers import tune
from trainers.core import tuning
from trainers.core.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Tiny: ResNet-8/14 at width 0.25-0.5 on 512 synthetic images, one epoch of 7 steps.
TINY = [
    "--dataset",
    "synthetic",
    "--synthetic-train",
    "512",
    "--n-min",
    "1",
    "--n-max",
    "2",
    "--width",
    "0.25",
    "0.5",
    "--batch-size",
    "64",
    "--epochs",
    "1",
    "--precision",
    "float32",
]


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_default_space_defaults_and_bounds():
    space = tuning.Space()
    hp = kt.HyperParameters()
    values = space.sample(hp)
    # Defaults: the paper's ResNet-20 with its recipe.
    assert values == {
        "arch": "resnet20",
        "stage_depths": None,
        "width": 1.0,
        "shortcut": "A",
        "lr": 0.1,
        "weight_decay": 1e-4,
    }
    by_name = {p.name: p for p in hp.space}
    assert (by_name["n"].min_value, by_name["n"].max_value) == (3, 18)  # ResNet-20 .. ResNet-110
    assert list(by_name["width"].values) == [0.5, 0.75, 1.0, 1.5, 2.0]
    assert list(by_name["shortcut"].values) == ["A", "B", "C"]
    assert (by_name["lr"].min_value, by_name["lr"].max_value, by_name["lr"].sampling) == (0.01, 0.3, "log")
    assert (by_name["weight_decay"].min_value, by_name["weight_decay"].max_value) == (1e-5, 1e-3)

    imagenet = tuning.Space(family="imagenet")
    hp = kt.HyperParameters()
    values = imagenet.sample(hp)
    assert values["arch"] == "resnet18" and values["shortcut"] == "B"
    assert list({p.name: p for p in hp.space}["arch"].values) == list(tuning.IMAGENET_ARCHS)
    free = tuning.Space(family="imagenet", free_depths=True, stage_min=1, stage_max=4)
    hp = kt.HyperParameters()
    values = free.sample(hp)
    assert values["stage_depths"] == [2, 2, 2, 2] and values["arch"] == "resnet18"
    assert {p.name: p for p in hp.space}["stage5"].max_value == 4
    # A range with min == max fixes the value.
    hp = kt.HyperParameters()
    assert tuning.Space(lr_min=0.05, lr_max=0.05).sample(hp)["lr"] == 0.05


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_min": 5, "n_max": 3}, "--n-min 5 > --n-max 3"),
        ({"lr_min": 0.0}, "--lr-min 0.0"),
        ({"widths": ()}, "--width"),
        ({"family": "mnist"}, "--family 'mnist'"),
        ({"family": "imagenet", "imagenet_archs": ("resnet19",)}, "resnet19"),
        ({"shortcuts": ("D",)}, "--shortcut"),
    ],
)
def test_bad_spaces_are_refused(kwargs, match):
    with pytest.raises(UserError, match=match):
        tuning.Space(**kwargs)


def test_bad_command_lines_are_refused(tmp_path, float32_policy):
    with pytest.raises(UserError, match="no candidate fits the budget"):
        tune.main(["--family", "cifar", *TINY, "--max-params", "100", "--directory", str(tmp_path / "s")])
    with pytest.raises(UserError, match="--family 'svhn'"):
        tune.main(["--family", "svhn"])
    with pytest.raises(UserError, match="--val-split 0.0"):
        tune.main(["--family", "cifar", *TINY, "--val-split", "0"])
    with pytest.raises(UserError, match="--tuner 'grid'"):
        tune.main(["--family", "cifar", "--tuner", "grid"])
    # Refused before any trial trains (--export-epochs 0 used to be found only after the whole search), and nothing
    # is written.
    for extra, match in (
        (["--export-best", "--export-epochs", "0"], "--export-epochs 0.0; expected a positive"),
        (["--epochs", "inf"], "--epochs must be positive"),
        (["--seed", "-1"], "--seed -1; expected an integer in"),
        (["--synthetic-train", "0"], "--synthetic-train 0; expected an integer >= 1"),
        (["--max-params", "-5"], "--max-params -5; expected a positive budget"),
        (["--image-size", "0"], "--image-size 0 is too small for the cifar networks"),
        (["--image-size", "2"], "--image-size 2 is too small"),
    ):
        with pytest.raises(UserError, match=match):
            tune.main(["--family", "cifar", *TINY, *extra, "--directory", str(tmp_path / "never")])
        assert not (tmp_path / "never").exists()
    # A search directory whose saved state was cut short (e.g. by an older, non-atomic write).
    (tmp_path / "cut" / "trials").mkdir(parents=True)
    for name in ("tuner0.json", "oracle.json"):
        (tmp_path / "cut" / "trials" / name).write_text('{"ongoing_trials": {')
    with pytest.raises(UserError, match="saved search state .* is unreadable"):
        tune.main(["--family", "cifar", *TINY, "--directory", str(tmp_path / "cut")])


def test_random_search_writes_a_row_per_trial_and_respects_max_params(tmp_path, float32_policy, capsys):
    # --seed 1: Keras Tuner takes a seed of 0, the default, for none and draws one from Python's global random
    # state, so which trials a search samples would depend on the tests run before it in this process.
    directory = tmp_path / "search"
    result = tune.main(
        [
            "--family",
            "cifar",
            "--tuner",
            "random",
            "--max-trials",
            "4",
            *TINY,
            "--max-params",
            "15000",
            "--seed",
            "1",
            "--directory",
            str(directory),
        ]
    )
    rows = _rows(directory / "trials.csv")
    assert len(rows) == 4 and len({r["trial"] for r in rows}) == 4
    for row in rows:
        if row["status"] == "completed":
            assert int(row["params"]) <= 15000 and 0 <= float(row["val_accuracy"]) <= 1
        else:
            assert row["status"] == "rejected" and int(row["params"]) > 15000 and "--max-params" in row["reason"]
    best = json.loads((directory / "best.json").read_text())
    completed = [r for r in rows if r["status"] == "completed"]
    if completed:
        assert best["best"]["val_accuracy"] == max(float(r["val_accuracy"]) for r in completed)
        assert (directory / "pareto.png").stat().st_size > 0
    # Trials train through the trainer: each has a run directory like fit.py's, validated on the val split.
    for row in completed:
        run = json.loads((directory / "trials" / f"trial_{row['trial']}" / "result.json").read_text())["run_dir"]
        config = json.loads((pathlib.Path(run) / "config.json").read_text())
        assert config["val_split"] == 0.1 and config["status"] == "finished" and config["dataset"] == "synthetic"
    assert result["best"] == best["best"]
    # A rejected trial is one line, no traceback.
    out = capsys.readouterr()
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert rejected, "seed 1 samples a ResNet-8 of width 0.5 (19,218 parameters) among 4 trials"
    assert "Traceback" not in out.out + out.err
    assert out.out.count("-> rejected before training: ") == len(rejected)
    assert f"trial {rejected[0]['trial']}: rejected before training: " in out.out


def test_hyperband_search_completes_and_exports_the_best(tmp_path, float32_policy, monkeypatch):
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    directory = tmp_path / "hb"
    result = tune.main(
        [
            "--family",
            "cifar",
            "--tuner",
            "hyperband",
            "--max-epochs",
            "2",
            *TINY,
            "--directory",
            str(directory),
            "--export-best",
            "--export-epochs",
            "1",
        ]
    )
    rows = _rows(directory / "trials.csv")
    assert rows and all(r["status"] == "completed" for r in rows)
    assert {int(float(r["epochs"])) for r in rows} <= {1, 2}
    assert len(rows) == len(list((directory / "trials").glob("trial_*/result.json")))
    # --export-best: the best configuration retrained on the full training split, as fit.py would.
    run_dir = pathlib.Path(result["export"]["run_dir"])
    config = json.loads((run_dir / "config.json").read_text())
    best = result["best"]
    assert run_dir.parent == tmp_path / "runs" and (run_dir / "model.keras").exists()
    assert (config["arch"], config["width"], config["shortcut"], config["val_split"]) == (
        best["arch"],
        best["width"],
        best["shortcut"],
        0.0,
    )
    assert config["lr"] == pytest.approx(best["lr"])


def test_a_killed_search_resumes_without_rerunning_completed_trials(tmp_path, float32_policy):
    directory = tmp_path / "resume"
    args = [
        "--family",
        "cifar",
        "--tuner",
        "random",
        "--max-trials",
        "2",
        *TINY,
        "--directory",
        str(directory),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "trainers" / "tune.py"), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    done = []
    while time.time() < deadline and process.poll() is None:
        done = [p for p in directory.glob("trials/trial_*/result.json") if "completed" in p.read_text()]
        if done:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert done, "no trial completed before the kill"
    stamps = {p: p.stat().st_mtime_ns for p in done}

    tune.main(args)  # the same command, in this process
    assert {p: p.stat().st_mtime_ns for p in done} == stamps  # completed trials were not run again
    rows = _rows(directory / "trials.csv")
    assert len(rows) == 2 and len({r["trial"] for r in rows}) == 2


def _strict(path):
    def refuse(constant):
        raise ValueError(f"{path}: {constant} is not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_diverged_trial_is_recorded_as_failed_in_one_line_and_the_search_goes_on(tmp_path, float32_policy, capsys):
    # A learning rate of 1e10 or more diverges at once: each trial fails (exit 3 for fit.py), is recorded with its
    # reason, and the search goes on to the next. No traceback is printed (nor for a rejected trial: the random
    # search's test above).
    directory = tmp_path / "diverge"
    tune.main(
        [
            "--family",
            "cifar",
            "--tuner",
            "random",
            "--max-trials",
            "2",
            *TINY,
            "--lr-min",
            "1e10",
            "--lr-max",
            "1e12",
            "--directory",
            str(directory),
        ]
    )
    out = capsys.readouterr()
    rows = _rows(directory / "trials.csv")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all("non-finite" in r["reason"] and r["val_accuracy"] == "" for r in rows)
    assert "Traceback" not in out.out + out.err
    assert out.out.count("-> failed: the training loss became non-finite") == 2
    assert "no completed trial" in out.out and f"trial {rows[0]['trial']}: failed: the training loss" in out.out
    assert _strict(directory / "best.json")["best"] is None
    for path in directory.rglob("*.json"):  # Keras Tuner's own state included
        _strict(path)


def test_sigterm_in_a_trial_ends_the_search_and_the_same_command_resumes_that_trial(
    tmp_path, float32_policy, monkeypatch
):
    # The trainer answers SIGTERM with a backup and Preempted (exit 75). Inside a search it must end the search
    # (Keras Tuner would count it as one invalid trial and start the next), and the same command must resume the
    # same trial, not skip it.
    from trainers.core import train as train_lib

    real = train_lib.train
    calls = []

    def preempted_once(config, **kwargs):
        calls.append(config.output_dir)
        if len(calls) == 1:
            raise train_lib.Preempted("SIGTERM: stopped after a backup at iteration 3")
        return real(config, **kwargs)

    monkeypatch.setattr(train_lib, "train", preempted_once)
    directory = tmp_path / "preempt"
    args = ["--family", "cifar", "--tuner", "random", "--max-trials", "2", *TINY, "--directory", str(directory)]
    with pytest.raises(train_lib.Preempted, match="SIGTERM"):
        tune.main(args)
    assert not list(directory.glob("trials/trial_*/result.json"))
    result = tune.main(args)
    assert calls[1] == calls[0]  # the interrupted trial again, first
    assert [r["status"] for r in result["rows"]] == ["completed", "completed"]
    assert len({r["trial"] for r in result["rows"]}) == 2


def test_a_bayesian_search_runs(tmp_path, float32_policy):
    # BayesianOptimization needs scipy (keras-tuner's "bayesian" extra, in requirements.txt).
    directory = tmp_path / "bayes"
    result = tune.main(
        ["--family", "cifar", "--tuner", "bayesian", "--max-trials", "2", *TINY, "--directory", str(directory)]
    )
    assert [r["status"] for r in result["rows"]] == ["completed", "completed"]
    assert result["best"]["val_accuracy"] == max(r["val_accuracy"] for r in result["rows"])
