"""Trained weights shipped in the package: get_model(weights=...), the manifest,
its checksums, trainers/ship_weights.py and export from shipped weights."""

import json
import pathlib
import shutil

import keras
import numpy as np
import pytest

import resnet_keras
from resnet_keras import pretrained
from trainers import export
from trainers.core.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _build(entry, **overrides):
    b = entry["build"]
    kwargs = dict(
        num_classes=b["num_classes"],
        input_shape=tuple(b["input_shape"]),
        shortcut=b["shortcut"],
        width=b["width"],
        stage_depths=tuple(b["stage_depths"]),
    )
    return resnet_keras.get_model(entry["arch"], **{**kwargs, **overrides}, weights=entry["name"])


def test_shipped_weights_load_offline_and_match_their_checksums(float32_policy):
    entries = resnet_keras.list_weights()
    assert any(e["arch"] == "resnet20" and e["name"] == "cifar10" for e in entries)
    for entry in entries:
        path = pretrained.WEIGHTS_DIR / entry["file"]
        assert path.stat().st_size == entry["bytes"] < 8 * 2**20
        assert pretrained.sha256(path) == entry["sha256"]
        assert (
            entry["dataset"]
            and 0 < entry["test_accuracy"] <= 1
            and entry["command"].startswith("python trainers/fit.py")
        )
        assert len(entry["class_names"]) == entry["build"]["num_classes"] and not entry["synthetic"]
        model = _build(entry)
        # Trained statistics came in: a new network's moving means are all zero, its moving variances all one.
        norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert norms and all(np.abs(layer.moving_mean.numpy()).max() > 0 for layer in norms)
        assert all(np.abs(layer.moving_variance.numpy() - 1).max() > 0 for layer in norms)
        # The trained pixel mean came with them: not the untrained zeros.
        assert float(np.abs(resnet_keras.get_normalization(model).get_weights()[0]).mean()) > 10
    assert resnet_keras.get_model("resnet20", num_classes=10, weights="cifar10").name == "resnet20"


def test_weights_that_do_not_exist_or_do_not_fit_are_refused():
    with pytest.raises(
        ValueError, match=r"weights='imagenet' do not exist for 'resnet20'; shipped for 'resnet20': 'cifar10'"
    ):
        resnet_keras.get_model("resnet20", num_classes=10, weights="imagenet")
    with pytest.raises(ValueError, match=r"shipped for 'resnet1202': none"):
        resnet_keras.get_model("resnet1202", num_classes=10, weights="cifar10")
    with pytest.raises(ValueError, match=r"num_classes=100 \(the weights': 10\)"):
        resnet_keras.get_model("resnet20", num_classes=100, weights="cifar10")
    with pytest.raises(ValueError, match=r"shortcut='B' \(the weights': 'A'\)"):
        resnet_keras.get_model("resnet20", num_classes=10, shortcut="B", weights="cifar10")
    with pytest.raises(ValueError, match="expected None or the name"):
        resnet_keras.get_model("resnet20", num_classes=10, weights=True)


def test_a_file_whose_checksum_does_not_match_is_refused(tmp_path, monkeypatch):
    entry = pretrained.find_weights("resnet20", "cifar10")
    shutil.copy(pretrained.MANIFEST, tmp_path / "manifest.json")
    data = bytearray((pretrained.WEIGHTS_DIR / entry["file"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / entry["file"]).write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(pretrained, "MANIFEST", tmp_path / "manifest.json")
    with pytest.raises(
        ValueError, match=r"^refused: .* has SHA-256 [0-9a-f]{64}, the manifest says " + entry["sha256"]
    ):
        resnet_keras.get_model("resnet20", num_classes=10, weights="cifar10")
    (tmp_path / entry["file"]).unlink()
    with pytest.raises(ValueError, match="is missing"):
        resnet_keras.get_model("resnet20", num_classes=10, weights="cifar10")


def test_ship_weights_adds_a_run_that_get_model_then_loads(tmp_path, monkeypatch, float32_policy):
    from trainers import fit, ship_weights
    from trainers.core.errors import UserError
    from trainers.core.sources import load_keras_model

    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    run = tmp_path / "run"
    fit.main(
        [
            "--arch",
            "resnet8",
            "--dataset",
            "synthetic",
            "--synthetic-train",
            "128",
            "--batch-size",
            "32",
            "--steps",
            "4",
            "--precision",
            "float32",
            "--verbose",
            "0",
            "--output-dir",
            str(run),
        ]
    )
    weights_dir = tmp_path / "weights"
    args = [str(run), "--name", "demo", "--weights-dir", str(weights_dir)]
    with pytest.raises(UserError, match="synthetic dataset"):
        ship_weights.main(args)
    assert not weights_dir.exists()
    entry = ship_weights.main([*args, "--allow-synthetic"])
    assert entry["synthetic"] and entry["test_images"] == 1024 and entry["iterations"] == 4
    assert (
        entry["command"] == "python trainers/fit.py --arch resnet8 --dataset synthetic --recipe paper --steps 4 "
        "--batch-size 32 --image-size 32 --precision float32"
    )
    assert json.loads((weights_dir / "manifest.json").read_text()) == {"weights": [entry]}
    assert sorted(p.name for p in weights_dir.iterdir()) == ["manifest.json", "resnet8-demo.weights.h5"]
    with pytest.raises(UserError, match="already shipped; --replace"):
        ship_weights.main([*args, "--allow-synthetic"])
    with pytest.raises(UserError, match="--name"):
        ship_weights.main([str(run), "--name", "../x", "--weights-dir", str(weights_dir), "--allow-synthetic"])

    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", weights_dir)
    monkeypatch.setattr(pretrained, "MANIFEST", weights_dir / "manifest.json")
    model = resnet_keras.get_model("resnet8", num_classes=10, weights="demo")
    trained = load_keras_model(run / "model.keras")
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.predict_on_batch(images), trained.predict_on_batch(images), rtol=1e-5, atol=1e-5)


def test_export_from_shipped_weights(tmp_path, monkeypatch):
    # export.py's command in this process: its import and help are test_layout.py's, a UserError's one line and
    # exit status run_main's (test_fit.py); a process of its own only added TensorFlow's start.
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "export"
    args = ["--format", "tflite", "--check-samples", "0", "--latency-samples", "0", "--output", str(out)]
    export.main(["weights:resnet20/cifar10", *args])
    assert (out / "model_float32.tflite").stat().st_size > 100_000
    labels = (out / "model_float32.labels.txt").read_text().split()
    assert labels == pretrained.find_weights("resnet20", "cifar10")["class_names"]
    with pytest.raises(UserError, match="^weights='nope' do not exist"):
        export.main(["weights:resnet20/nope", "--format", "tflite"])


def test_predict_evaluate_and_compare_read_shipped_weights(tmp_path, monkeypatch, float32_policy, capsys):
    # weights:ARCH/NAME works wherever a trained model is read, not only in export.py: predict.py names the
    # manifest's classes, evaluate.py writes its results outside the package, compare.py pairs them with a run.
    import tensorflow as tf

    from trainers import compare, evaluate, predict
    from trainers.core.errors import UserError

    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    names = pretrained.find_weights("resnet20", "cifar10")["class_names"]
    image = tmp_path / "photo.png"
    tf.io.write_file(
        str(image), tf.io.encode_png(np.random.default_rng(1).integers(0, 256, (48, 40, 3), dtype=np.uint8))
    )
    [result] = predict.main(["--model", "weights:resnet20/cifar10", "--top", "3", str(image)])
    assert len(result["top"]) == 3 and {name for name, _ in result["top"]} <= set(names)
    assert sum(p for _, p in result["top"]) <= 1 + 1e-6

    synthetic = ["--dataset", "synthetic", "--batch-size", "256"]
    scores = evaluate.main(["weights:resnet20/cifar10", *synthetic])
    written = tmp_path / "runs" / "shipped-resnet20-cifar10"
    assert [p.name for p in written.glob("eval-*.json")] and 0 <= scores["top1_error"] <= 1
    assert not list((ROOT / "resnet_keras" / "weights").glob("eval-*"))  # nothing written into the package
    with pytest.raises(UserError, match="--which best: weights:resnet20/cifar10 is one set of weights"):
        evaluate.main(["weights:resnet20/cifar10", "--which", "best", *synthetic])
    same = compare.main(["weights:resnet20/cifar10", "weights:resnet20/cifar10", *synthetic])
    assert same["difference_b_minus_a"] == 0 and same["only_a_right"] == same["only_b_right"] == 0
    assert same["accuracy_a"] == pytest.approx(1 - scores["top1_error"])
