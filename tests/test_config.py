"""RunConfig: each setting's default and check, once; its dict and JSON forms;
its identity; and run directories written before it existed still resume."""

import dataclasses
import errno
import json
import math
import os
import pathlib

import keras
import pytest

from trainers import fit
from trainers.core.config import ARCH_TWEAKS, DEFAULT_DATASET, IDENTITY_KEYS, RunConfig, record_identity
from trainers.core.errors import OutputError, UserError
from trainers.core.train import train

DATA = pathlib.Path(__file__).resolve().parent / "data"
# config.json of an unfinished run as the trainer wrote it before RunConfig (git commit 7911acc), made by
# FIXTURE_ARGS under RESNET_KERAS_RUNS=/tmp/oldfx/runs: the run was stopped after its backup at iteration 2
# (a full disk at the next backup, as in tests/test_hardening.py).
OLD_CONFIG = DATA / "config-7911acc-unfinished.json"
FIXTURE_ARGS = (
    "--arch resnet8 --dataset synthetic --synthetic-train 256 --synthetic-test 64 --batch-size 32 --steps 6 "
    "--backup-every 2 --precision float32 --verbose 0 --recipe fast --width 0.5 --seed 3 --zero-init-residual on "
    "--label-smoothing 0.1"
).split()
FIXTURE_CONFIG = RunConfig(
    arch="resnet8",
    dataset="synthetic",
    synthetic_train=256,
    synthetic_test=64,
    batch_size=32,
    steps=6,
    backup_every=2,
    precision="float32",
    verbose=0,
    recipe="fast",
    width=0.5,
    seed=3,
    zero_init_residual=True,
    label_smoothing=0.1,
)
# What a run adds to its settings in config.json, in order ("note": synthetic data only; "init": --init-from only).
DERIVED = (
    "family depth resolved_precision resolved_strategy replicas workers batch_size_resolved freeze_steps run_dir data "
    "class_names schedule synthetic note cpu_kernels status"
).split()
# Issue 40's settings (only class_balance is in the identity: skipping bad files trains on the same files or refuses).
ISSUE_40 = ("class_balance", "skip_bad_images", "max_bad_fraction")
# What differs between machines, not between versions of the trainer.
MACHINE = {"run_dir", "status", "cpu_kernels", "resolved_strategy", "replicas", "workers"}


def _strict(text):
    def refuse(constant):
        raise ValueError(f"{constant} is not strict JSON")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------ checks
@pytest.mark.parametrize(
    "settings, message",
    [
        ({"arch": None}, "--arch is required; known: resnet18, resnet34"),
        ({"arch": "resnet19"}, "unknown architecture 'resnet19'. Known: resnet18"),
        ({"freeze_epochs": -1, "init_from": "x.keras"}, "--freeze-epochs -1; expected a number of epochs >= 0"),
        ({"freeze_epochs": math.nan, "init_from": "x.keras"}, "--freeze-epochs nan; expected a number of epochs >= 0"),
        ({"freeze_epochs": "2", "init_from": "x.keras"}, "--freeze-epochs 2; expected a number of epochs >= 0"),
        ({"freeze_epochs": 1}, "--freeze-epochs needs --init-from: it trains a new classifier on a trained backbone"),
        ({"image_size": 2}, "--image-size 2 is too small for 'resnet20': its total stride is 4"),
        ({"image_size": 32.0}, "--image-size 32.0 is too small for 'resnet20': its total stride is 4"),
        ({"arch": "resnet18", "image_size": 16}, "--image-size 16 is too small for 'resnet18': its total stride is 32"),
        ({"seed": -5}, "--seed -5; expected an integer in [0, 2**32)"),
        ({"seed": 2**32}, f"--seed {2**32}; expected an integer in [0, 2**32)"),
        ({"seed": 1.5}, "--seed 1.5; expected an integer in [0, 2**32)"),
        ({"synthetic_classes": 1}, "--synthetic-classes 1; expected an integer >= 2"),
        ({"synthetic_train": 0}, "--synthetic-train 0; expected an integer >= 1"),
        ({"synthetic_test": 0}, "--synthetic-test 0; expected an integer >= 1"),
        ({"batch_size": 0}, "--batch-size 0; expected a positive integer"),
        ({"backup_every": 0}, "--backup-every 0; expected a positive integer"),
        ({"log_every": -1}, "--log-every -1; expected a positive integer"),
        ({"steps_per_execution": 0}, "--steps-per-execution 0; expected a positive integer"),
    ],
)
def test_each_refused_value_is_one_clear_error(settings, message):
    with pytest.raises(UserError) as caught:
        RunConfig(**{"arch": "resnet20", **settings})
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    base = RunConfig(arch="resnet20")
    with pytest.raises(UserError, match=None) as again:  # a replaced value is checked as a new one is
        dataclasses.replace(base, **{"arch": "resnet20", **settings})
    assert str(again.value) == str(caught.value)


def test_unknown_settings_are_a_callers_mistake():
    with pytest.raises(ValueError, match=r"unknown settings \['bogus', 'lr_max'\]"):
        RunConfig.from_dict({"arch": "resnet20", "lr_max": 1.0, "bogus": 1})
    with pytest.raises(ValueError, match=r"unknown settings \['bogus'\]"):
        train({"arch": "resnet20", "bogus": 1})  # train() takes the same dict


# ---------------------------------------------------------------- defaults
def test_defaults_and_what_resolved_fills_in(tmp_path, monkeypatch):
    config = RunConfig(arch="resnet20")
    assert config.to_dict() == {**RunConfig.defaults(), "arch": "resnet20"}
    expected = (1.0, "auto", "auto", 0, 0.0, True)
    assert (config.width, config.precision, config.strategy, config.seed, config.val_split, config.resume) == expected
    assert (config.backup_every, config.log_every, config.steps_per_execution, config.verbose) == (200, 20, 1, 2)
    assert (config.synthetic_train, config.synthetic_test, config.synthetic_classes) == (4096, 1024, 10)
    assert (config.family, config.depth) == ("cifar", 20)
    # None is the default, as on the command line: what an unset flag passes.
    assert RunConfig(arch="resnet20", width=None, seed=None, resume=None, verbose=None) == config
    assert RunConfig.from_dict({"arch": "resnet20", "precision": None}) == config

    resolved = config.resolved()
    assert (resolved.dataset, resolved.image_size, resolved.recipe) == ("cifar10", 32, "paper")
    assert resolved.resolved() == resolved
    imagenet = RunConfig(arch="resnet50").resolved()
    assert (imagenet.dataset, imagenet.image_size, imagenet.family) == (DEFAULT_DATASET["imagenet"], 224, "imagenet")
    monkeypatch.chdir(tmp_path)
    tuned = RunConfig(arch="resnet20", init_from="run", freeze_epochs=0).resolved()
    assert (tuned.recipe, tuned.init_from, tuned.freeze_epochs) == ("finetune", str(tmp_path / "run"), None)
    assert RunConfig(arch="resnet20", init_from="run", recipe="fast").resolved().recipe == "fast"
    assert RunConfig(arch="resnet20", stage_depths=[2, 2, 2]).stage_depths == (2, 2, 2)


def test_fit_flags_take_their_defaults_from_run_config():
    args = vars(fit.build_parser().parse_args(["--arch", "resnet20"]))
    assert args.pop("cpu_replicas") == 1
    assert set(args) == set(RunConfig.defaults()) - {"stage_depths"}
    assert {k: v for k, v in args.items() if k != "arch"} == dict.fromkeys(set(args) - {"arch"})
    help_text = fit.build_parser().format_help()
    assert "(default 200)" in help_text and "(default 1.0)" in help_text and "(default 32 CIFAR, 224" in help_text


# --------------------------------------------------------------- dict forms
def test_to_dict_and_from_dict_round_trip():
    config = RunConfig(
        arch="resnet20",
        dataset="synthetic",
        epochs=1.5,
        lr=0.05,
        stage_depths=(1, 2, 3),
        zero_init_residual=False,
        jit_compile=True,
        output_dir="/tmp/somewhere",
        init_from="a.keras",
        freeze_epochs=0.5,
    )
    as_dict = config.to_dict()
    assert list(as_dict) == [field.name for field in dataclasses.fields(RunConfig)]
    assert as_dict["stage_depths"] == [1, 2, 3]  # JSON's form
    assert RunConfig.from_dict(as_dict) == config
    assert RunConfig.from_dict(json.loads(json.dumps(as_dict))) == config
    resolved = config.resolved()
    assert RunConfig.from_dict(resolved.to_dict()) == resolved


def test_identity_is_what_decides_the_computation():
    config = RunConfig(arch="resnet20")
    same = RunConfig(
        arch="resnet20",
        dataset="cifar10",
        image_size=32,
        recipe="paper",
        verbose=0,
        backup_every=7,
        output_dir="/elsewhere",
        resume=False,
        log_every=3,
    )
    assert config.identity() == same.identity() and list(config.identity()) == list(IDENTITY_KEYS)
    for change in (
        {"seed": 1},
        {"width": 0.5},
        {"stage_depths": [1, 1, 1]},
        {"dataset": "synthetic"},
        {"precision": "float32"},
        {"zero_init_residual": True},
        {"epochs": 2},
        {"class_balance": "weights"},
    ):
        assert dataclasses.replace(config, **change).identity() != config.identity(), change
    assert dataclasses.replace(config, class_balance="none").identity() == config.identity()  # the default, said
    assert RunConfig(arch="resnet20", stage_depths=(1, 1, 1)).identity()["stage_depths"] == [1, 1, 1]
    # A record's identity: what it lacks counts as None.
    assert record_identity({"arch": "resnet20", "seed": 5}) == {
        **dict.fromkeys(IDENTITY_KEYS),
        "arch": "resnet20",
        "seed": 5,
    }


# ------------------------------------------- a real run, and an old layout
@pytest.fixture(scope="module")
def resumed_old_run(tmp_path_factory):
    """The run of OLD_CONFIG: its directory rebuilt around that config.json,
    with a backup at iteration 2 (the backup's format is not the config's:
    this code writes it), then the same command run again."""
    tmp = tmp_path_factory.mktemp("old")
    runs = tmp / "runs"
    old = json.loads(OLD_CONFIG.read_text())
    run_dir = runs / pathlib.Path(old["run_dir"]).name
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RESNET_KERAS_RUNS", str(runs))
        real_save_weights = keras.Model.save_weights
        calls = []

        def full_after_first(self, *args, **kwargs):
            calls.append(args)
            if len(calls) > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_save_weights(self, *args, **kwargs)

        patch.setattr(keras.Model, "save_weights", full_after_first)
        with pytest.raises(OutputError):
            fit.main([*FIXTURE_ARGS, "--output-dir", str(run_dir)])
        patch.undo()
        assert json.loads((run_dir / "backup" / "training_metadata.json").read_text())["iterations"] == 2
        # The config.json the old trainer wrote for this command, in this directory.
        (run_dir / "config.json").write_text(json.dumps({**old, "run_dir": str(run_dir)}, indent=2) + "\n")
        patch.setenv("RESNET_KERAS_RUNS", str(runs))
        metrics = fit.main(FIXTURE_ARGS)  # the same command: no --output-dir, it finds the unfinished run
    return runs, run_dir, old, metrics


def test_a_run_directory_of_the_previous_layout_resumes_with_its_command(resumed_old_run):
    runs, run_dir, old, metrics = resumed_old_run
    assert metrics["run_dir"] == str(run_dir) and metrics["iterations"] == 6
    assert [p.name for p in runs.iterdir()] == [run_dir.name]  # resumed, not refused, not a second run
    assert (run_dir / "metrics.json").exists() and not (run_dir / "backup").exists()
    # config.json keeps the layout the old trainer wrote: the same keys, in order, and the same values; the
    # settings added since (issue 38's tweaks and recipe changes, issue 40's class balance and bad files) follow
    # the old ones, unset.
    record = _strict((run_dir / "config.json").read_text())
    added = [name for name in RunConfig.defaults() if name not in old]
    assert added == list(ARCH_TWEAKS) + ["optimizer", "lr_schedule", "mixup"] + list(ISSUE_40)
    assert list(record) == [name for name in old if name not in DERIVED] + added + DERIVED
    assert list(old) == [name for name in RunConfig.defaults() if name not in added] + DERIVED
    assert all(record[name] == RunConfig.defaults()[name] for name in added)  # None, and skip_bad_images False
    assert record["status"] == "finished" and record["run_dir"] == str(run_dir)
    same = {k: v for k, v in record.items() if k not in MACHINE and k not in added}
    assert same == {k: v for k, v in old.items() if k not in MACHINE}


def test_config_json_round_trips_through_run_config(resumed_old_run):
    _, run_dir, _, _ = resumed_old_run
    record = _strict((run_dir / "config.json").read_text())
    settings = {name: record[name] for name in RunConfig.defaults()}
    config = RunConfig.from_dict(settings)
    assert config == FIXTURE_CONFIG.resolved() and config.to_dict() == settings
    assert record_identity(record) == config.identity() == FIXTURE_CONFIG.identity()
    assert (record["family"], record["depth"]) == (config.family, config.depth)
    assert record["schedule"]["total_steps"] == 6 and record["schedule"]["steps_per_epoch"] == 8


def test_an_old_record_of_other_settings_is_still_refused(tmp_path):
    old = json.loads(OLD_CONFIG.read_text())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({**old, "seed": 4}))
    with pytest.raises(UserError, match=r"unfinished run with other settings \{'seed': \(4, 3\)\}"):
        fit.main([*FIXTURE_ARGS, "--output-dir", str(run_dir)])
