"""--init-from: a run starts from trained weights (run directory, .keras file,
.weights.h5 file), the classifier is new when the class count differs, and a
network that does not fit is refused in one line with nothing written."""

import json

import keras
import numpy as np
import pytest

import resnet_keras
from trainers import fit, finetune
from trainers.common import UserError, load_keras_model

SHIPPED = str(resnet_keras.pretrained.WEIGHTS_DIR / "resnet20-cifar10.weights.h5")


def _fit(args, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    return fit.main([*args, "--dataset", "synthetic", "--precision", "float32", "--verbose", "0",
                     "--synthetic-train", "256"])  # fmt: skip


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A resnet8 trained 6 iterations on 10 synthetic classes."""
    tmp = tmp_path_factory.mktemp("source")
    run = tmp / "run"
    fit.main(["--arch", "resnet8", "--dataset", "synthetic", "--steps", "6", "--batch-size", "32", "--precision",
              "float32", "--verbose", "0", "--synthetic-train", "256", "--output-dir", str(run)])  # fmt: skip
    return run


def _backbone_equal(a, b):
    for layer in a.layers:
        if layer.weights and layer.name != "logits":
            for x, y in zip(layer.get_weights(), b.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("form", ["run", "keras", "weights"])
def test_init_from_copies_every_matching_layer_and_replaces_the_classifier(form, source_run, tmp_path, monkeypatch,
                                                                           float32_policy):  # fmt: skip
    source = load_keras_model(source_run / "model.keras")
    spec = {"run": source_run, "keras": source_run / "model.keras", "weights": tmp_path / "w.weights.h5"}[form]
    if form == "weights":
        source.save_weights(spec)
    model = resnet_keras.get_model("resnet8", num_classes=4, seed=1)
    report = finetune.initialize(model, str(spec))
    assert report["classifier"] == "new" and report["normalization"] == "source"
    assert report["layers_copied"] == sum(1 for layer in model.layers if layer.weights) - 1
    _backbone_equal(model, source)
    assert model.get_layer("logits").kernel.shape == (64, 4)


def test_a_finetune_run_records_its_source_and_uses_the_finetune_recipe(source_run, tmp_path, monkeypatch,
                                                                      float32_policy):  # fmt: skip
    run = tmp_path / "ft"
    _fit(["--arch", "resnet8", "--init-from", str(source_run), "--synthetic-classes", "4", "--steps", "3",
          "--batch-size", "32", "--output-dir", str(run)], tmp_path, monkeypatch)  # fmt: skip
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"] == "finetune" and config["init_from"] == str(source_run)
    assert config["init"]["classifier"] == "new" and config["init"]["kind"] == "run"
    assert config["schedule"]["warmup_steps"] == 0 and config["schedule"]["lr"] == pytest.approx(0.02 * 32 / 128)
    # The same class count keeps the classifier too.
    same = tmp_path / "same"
    _fit(["--arch", "resnet8", "--init-from", str(source_run / "model.keras"), "--steps", "1", "--batch-size", "32",
          "--recipe", "fast", "--output-dir", str(same)], tmp_path, monkeypatch)  # fmt: skip
    config = json.loads((same / "config.json").read_text())
    assert config["recipe"] == "fast" and config["init"]["classifier"] == "copied"


def test_a_source_that_does_not_fit_is_refused_and_nothing_is_written(source_run, tmp_path, monkeypatch):
    out = tmp_path / "refused"
    cases = [
        (["--arch", "resnet14", "--init-from", str(source_run)], r"does not fit 'resnet14': \d+ layer\(s\) differ"),
        (["--arch", "resnet14", "--init-from", SHIPPED], "these weights do not fit 'resnet14'"),
        (["--arch", "resnet8", "--init-from", str(tmp_path / "nothing.keras")], "no such file or directory"),
        (["--arch", "resnet8", "--init-from", str(tmp_path)], "not a finished run directory"),
        (["--arch", "resnet18", "--init-from", str(source_run / "pixel_mean.npy")], "expected a run directory"),
    ]
    for args, match in cases:
        with pytest.raises(UserError, match=match):
            _fit([*args, "--steps", "1", "--batch-size", "32", "--output-dir", str(out)], tmp_path, monkeypatch)
        assert not out.exists(), args


def test_shipped_weights_start_a_cifar_run(tmp_path, float32_policy):
    model = resnet_keras.get_model("resnet20", num_classes=100, seed=0)
    report = finetune.initialize(model, SHIPPED)
    assert report["kind"] == "weights" and report["classifier"] == "new"
    _backbone_equal(model, resnet_keras.get_model("resnet20", num_classes=10, weights="cifar10"))


def test_keras_applications_weights_files_load_through_the_weight_copy(tmp_path, float32_policy):
    source = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
    # A weights file in the legacy .h5 layout that keras.applications downloads
    # (Keras 3's save_weights writes only .weights.h5, so its legacy writer is used).
    import h5py

    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(path, "w") as f:
        keras.src.legacy.saving.legacy_h5_format.save_weights_to_hdf5_group(f, source)
    model = resnet_keras.get_model("resnet50", num_classes=3, input_shape=(64, 64, 3), seed=0)
    report = finetune.initialize(model, str(path))
    assert report["kind"] == "keras.applications" and report["classifier"] == "new"
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    features = keras.Model(model.input, model.get_layer("avg_pool").input)(images)
    expected = source(keras.applications.resnet.preprocess_input(images.copy()))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(features), keras.ops.convert_to_numpy(expected),
                               rtol=1e-3, atol=1e-3)  # fmt: skip
