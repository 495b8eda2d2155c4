"""Figure 7's layer responses: which layers, and their standard deviations
against a direct computation."""

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
from trainers.core import responses

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _randomize_bn(model, seed=0):
    # Away from initial values, so that BN's offsets and scales matter.
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, gamma.shape),
                    rng.normal(0, 1, beta.shape),
                    rng.normal(0, 0.5, mean.shape),
                    rng.uniform(0.5, 2.0, var.shape),
                ]
            )


@pytest.mark.parametrize("arch, shortcut", [("resnet8", "B"), ("plain8", None)])
def test_response_layers_are_the_bns_after_3x3_convolutions(arch, shortcut):
    model = resnet_keras.get_model(arch, num_classes=10, **({"shortcut": shortcut} if shortcut else {}))
    names = responses.response_layers(model)
    # conv1, then two 3x3 layers in each of the 3 stages' one block; the 1x1 projection's BN is not one.
    assert len(names) == 7 and names[0] == "conv1_bn"
    assert all(isinstance(model.get_layer(n), keras.layers.BatchNormalization) for n in names)
    assert not any("_0_" in n for n in names)


def test_response_std_matches_a_direct_computation_at_any_batch_size():
    model = resnet_keras.get_model("resnet8", num_classes=10, input_shape=(16, 16, 3))
    _randomize_bn(model)
    images = np.random.default_rng(1).uniform(0, 255, (10, 16, 16, 3)).astype("float32")
    names = responses.response_layers(model)
    batched = responses.response_stds(model, [images[:3], images[3:7], images[7:]])
    whole = responses.response_stds(model, [(images, np.zeros(10))])
    for name in names:
        out = keras.Model(model.input, model.get_layer(name).output)(images, training=False)
        out = np.asarray(keras.ops.convert_to_numpy(out), np.float64)
        direct = out.reshape(-1, out.shape[-1]).std(axis=0).mean()
        assert batched[name] == pytest.approx(direct, rel=1e-6)
        assert whole[name] == pytest.approx(direct, rel=1e-6)
    assert len(set(round(v, 6) for v in batched.values())) == len(names)  # layers differ


@pytest.fixture(scope="module")
def fast_figure6(tmp_path_factory):
    """figure6 --recipe fast for depths 14 and 8, one epoch of 512 synthetic
    images at 16 px: four finished runs (4 iterations each), which the figure6
    test below checks and the figure7 test reads."""
    from trainers import reproduce

    root = tmp_path_factory.mktemp("figure6") / "f6fast"
    args = ["figure6", "--recipe", "fast", "--depths", "14,8", "--epochs", "1", "--dataset", "synthetic"]
    args += ["--synthetic-train", "512", "--image-size", "16", "--precision", "float32", "--root", str(root)]
    return root, reproduce.main(args)


def test_figure7_reads_trained_runs_and_draws_them(fast_figure6, tmp_path, float32_policy):
    from trainers import reproduce
    from trainers.core import data
    from trainers.core.errors import UserError
    from trainers.core.sources import load_keras_model

    runs = [fast_figure6[0] / arch for arch in ("plain8", "resnet8")]  # trained by figure6 --recipe fast
    result = reproduce.main(["figure7", *map(str, runs), "--out", str(tmp_path / "fig"), "--batch-size", "100"])
    assert (tmp_path / "fig" / "figure7.png").stat().st_size > 0
    assert json.loads((tmp_path / "fig" / "figure7.json").read_text()) == json.loads(json.dumps(result))
    # Computed from the trained weights, on the run's own test images.
    for run_dir, row in zip(runs, result["runs"]):
        model = load_keras_model(run_dir / "model.keras")
        config = json.loads((run_dir / "config.json").read_text())
        images = np.concatenate(
            [x for x, _ in data.eval_pipeline(data.describe_run(config, 16), "test", 64).as_numpy_iterator()]
        )
        direct = responses.response_stds(model, [images])
        assert row["layers"] == list(direct) and row["std"] == pytest.approx(list(direct.values()), rel=1e-6)
        assert row["synthetic"] is True and len(row["std"]) == 7
        scales = [np.abs(model.get_layer(name).get_weights()[0]).mean() for name in row["layers"]]
        assert row["bn_scale"] == pytest.approx(scales, rel=1e-6)
        assert max(abs(s - 1) for s in row["bn_scale"]) > 1e-4  # trained: moved from the initial scale of 1
    plain, residual = result["runs"]
    assert result["residual_vs_plain"] == [
        {
            "resnet": "resnet8",
            "plain": "plain8",
            "layers": 7,
            "smaller": sum(r < p for r, p in zip(residual["std"], plain["std"])),
        }
    ]
    with pytest.raises(UserError, match="--max-images -1"):
        reproduce.main(["figure7", str(runs[0]), "--max-images", "-1"])
    with pytest.raises(UserError, match="not a finished fit.py run"):
        reproduce.main(["figure7", str(tmp_path / "fig")])


def test_figure6_resumes_a_killed_run_without_rerunning_finished_ones(tmp_path, float32_policy, monkeypatch, capsys):
    """SIGKILL the figure6 command inside its second run, then run it again:
    the finished first run is left untouched and the killed one resumes from
    its backup (no iteration logged twice). One depth (plain8, then resnet8)
    keeps it short; test_figure6_trains_every_network_with_the_recipe_asked_for
    checks table6's order of depths."""
    from trainers import reproduce
    from trainers.core import callbacks
    from trainers.core.errors import UserError

    root = tmp_path / "f6"
    args = [
        "figure6",
        "--depths",
        "8",
        "--epochs",
        "2",
        "--dataset",
        "synthetic",
        "--synthetic-train",
        "2048",
        "--image-size",
        "16",
        "--precision",
        "float32",
        "--backup-every",
        "4",
        "--root",
        str(root),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "trainers" / "reproduce.py"), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = None
    deadline = time.time() + 300
    while killed is None and time.time() < deadline and process.poll() is None:
        meta = root / "resnet8" / "backup" / "training_metadata.json"  # plain8 first, then resnet8
        try:
            done = json.loads(meta.read_text())["iterations"]
        except (OSError, ValueError, KeyError):
            done = 0
        # inside one of resnet8's 2 epochs (16 steps each), plain8 finished before it
        if done >= 8 and done % 16 and not (meta.parent.parent / "metrics.json").exists():
            process.send_signal(signal.SIGKILL)
            killed = meta.parent.parent
        time.sleep(0.05)
    process.wait()
    assert killed is not None, f"no run was caught mid-training: {process.stderr.read()[-2000:]}"
    assert not (killed / "metrics.json").exists()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in root.glob("*/metrics.json")}
    assert list(finished) == ["plain8"]

    restored = []  # (run, iteration) each time a backup is loaded
    load = callbacks.Backup._load_model

    def spy(self):
        load(self)
        restored.append((pathlib.Path(self.restore_dir).parent.name, int(self.model.optimizer.iterations.numpy())))

    monkeypatch.setattr(callbacks.Backup, "_load_model", spy)
    result = reproduce.main(args)
    assert set(result["runs"]) == {"plain8", "resnet8"}
    assert f"{killed.name}: resuming" in capsys.readouterr().out
    assert [(name, it >= 8) for name, it in restored if it > 0] == [(killed.name, True)]
    assert (root / "figure6.png").stat().st_size > 0
    for name, stamp in finished.items():  # not trained again
        assert (root / name / "metrics.json").stat().st_mtime_ns == stamp
    for name in result["runs"]:
        metrics = json.loads((root / name / "metrics.json").read_text())
        assert metrics["iterations"] == 32  # 2 epochs of 2,048 images at batch 128
    with open(killed / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]  # no epoch logged twice
    rows = reproduce.main(["table6", "--root", str(root)])
    assert [r["arch"] for r in rows] == ["plain8", "resnet8"]
    assert rows[0]["params"] == rows[1]["params"]  # option A: plain and residual have the same parameters
    assert rows[1]["paper_error"] is None and (root / "table6.csv").exists()
    with open(root / "plain8" / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert rows[0]["train_error"] == pytest.approx(100 * float(history[-1]["error"]))
    best = min(history, key=lambda r: float(r["test_error"]))
    assert rows[0]["best_test_error"] == pytest.approx(100 * float(best["test_error"]))
    assert rows[0]["best_epoch"] == int(best["epoch"]) and rows[0]["best_test_error"] <= rows[0]["test_error"] + 1e-9
    assert rows[0]["akamaster_best_error"] is None and rows[1]["iterations"] == 32
    assert {r["recipe"] for r in rows} == {"paper"}
    assert [r["epochs"] for r in rows] == pytest.approx([2, 2])  # as trained (metrics.json)
    assert {r["jpeg_quality"] for r in rows} == {None}  # the images as they are (no --jpeg-quality)
    # A finished run of another recipe or length is not reused for this figure (nothing is trained or written).
    for other in (["--recipe", "fast"], ["--epochs", "3"]):
        with pytest.raises(UserError, match="plain8 is a finished run of the paper recipe, 2 epochs; this figure asks"):
            reproduce.main([*args[:3], *other, *args[5:]] if other[0] == "--epochs" else [*args, *other])
    (root / "resnet8" / "metrics.json").write_text("{}")  # corrupt: one line, not a traceback
    with pytest.raises(UserError, match="resnet8 is not a finished fit.py run"):
        reproduce.main(["table6", "--root", str(root)])
    with pytest.raises(UserError, match="6n\\+2"):
        reproduce.main(["figure6", "--depths", "21"])


def test_figure6_trains_every_network_with_the_recipe_asked_for(fast_figure6, float32_policy, capsys):
    """figure6 --recipe fast: the fast recipe's warm-up and cosine, scaled to --epochs, for plain and residual twins
    alike; the default folder name says the recipe, the figure's title too. table6 lists plain networks first,
    each kind by depth."""
    from trainers import reproduce

    root, result = fast_figure6
    assert result["recipe"] == "fast" and result["epochs"] == 1
    assert set(result["runs"]) == {"plain8", "plain14", "resnet8", "resnet14"}
    for name in result["runs"]:
        config = json.loads((root / name / "config.json").read_text())
        assert config["recipe"] == "fast" and config["schedule"]["kind"] == "cosine", config["schedule"]
        assert json.loads((root / name / "metrics.json").read_text())["iterations"] == 4  # 512 images at batch 128
    assert (root / "figure6.png").stat().st_size > 0
    rows = reproduce.main(["table6", "--root", str(root)])
    names = ["plain8", "plain14", "resnet8", "resnet14"]  # not the order of the folders' names, nor of --depths
    assert [(r["run"], r["recipe"]) for r in rows] == [(name, "fast") for name in names]
    printed = capsys.readouterr().out.splitlines()[-5:-1]
    assert [line.split()[:2] for line in printed] == [[name, name] for name in names]  # run, network


def test_two_runs_of_one_network_are_told_apart_and_paired_with_their_own_twin():
    from trainers.core import reproduction

    def row(run, arch, std):
        return {"run": run, "arch": arch, "std": std}

    rows = [
        row("/r/f6/plain20", "plain20", [2.0, 2.0]),
        row("/r/f6/resnet20", "resnet20", [1.0, 3.0]),
        row("/r/table6/resnet20", "resnet20", [1.0, 1.0]),
        row("/r/f6/plain32", "plain32", [1.0, 1.0, 1.0]),
        row("/r/x/resnet32", "resnet32", [0.5, 0.5, 2.0]),
    ]
    reproduction._label_runs(rows)
    assert [r["label"] for r in rows] == [
        "plain20",
        "resnet20 (f6/resnet20)",
        "resnet20 (table6/resnet20)",
        "plain32",
        "resnet32",
    ]
    # The 64k ResNet-20 has no plain twin beside it: it is compared with none;
    # ResNet-32 is its network's only run, so the lone plain-32 is its twin.
    assert reproduction._compare_responses(rows) == [
        {"resnet": "resnet20 (f6/resnet20)", "plain": "plain20", "smaller": 1, "layers": 2},
        {"resnet": "resnet32", "plain": "plain32", "smaller": 2, "layers": 3},
    ]
