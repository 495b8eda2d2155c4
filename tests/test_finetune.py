"""--init-from: a run starts from trained weights (run directory, .keras file,
.weights.h5 file), the classifier is new when the class count differs, and a
network that does not fit is refused in one line with nothing written."""

import json

import keras
import numpy as np
import pytest

import resnet_keras
from trainers import fit
from trainers.core import finetune
from trainers.core.errors import UserError
from trainers.core.sources import load_keras_model

SHIPPED = str(resnet_keras.pretrained.WEIGHTS_DIR / "resnet20-cifar10.weights.h5")


def _fit(args, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    return fit.main(
        [*args, "--dataset", "synthetic", "--precision", "float32", "--verbose", "0", "--synthetic-train", "256"]
    )


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A resnet8 trained 6 iterations on 10 synthetic classes."""
    tmp = tmp_path_factory.mktemp("source")
    run = tmp / "run"
    fit.main(
        [
            "--arch",
            "resnet8",
            "--dataset",
            "synthetic",
            "--steps",
            "6",
            "--batch-size",
            "32",
            "--precision",
            "float32",
            "--verbose",
            "0",
            "--synthetic-train",
            "256",
            "--output-dir",
            str(run),
        ]
    )
    return run


def _backbone_equal(a, b):
    for layer in a.layers:
        if layer.weights and layer.name != "logits":
            for x, y in zip(layer.get_weights(), b.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("form", ["run", "keras", "weights"])
def test_init_from_copies_every_matching_layer_and_replaces_the_classifier(
    form, source_run, tmp_path, monkeypatch, float32_policy
):
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


def test_a_finetune_run_records_its_source_and_uses_the_finetune_recipe(
    source_run, tmp_path, monkeypatch, float32_policy
):
    run = tmp_path / "ft"
    _fit(
        [
            "--arch",
            "resnet8",
            "--init-from",
            str(source_run),
            "--synthetic-classes",
            "4",
            "--steps",
            "3",
            "--batch-size",
            "32",
            "--output-dir",
            str(run),
        ],
        tmp_path,
        monkeypatch,
    )
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"] == "finetune" and config["init_from"] == str(source_run)
    assert config["init"]["classifier"] == "new" and config["init"]["kind"] == "run"
    assert config["schedule"]["warmup_steps"] == 0 and config["schedule"]["lr"] == pytest.approx(0.02 * 32 / 128)
    # The same class count keeps the classifier too.
    same = tmp_path / "same"
    _fit(
        [
            "--arch",
            "resnet8",
            "--init-from",
            str(source_run / "model.keras"),
            "--steps",
            "1",
            "--batch-size",
            "32",
            "--recipe",
            "fast",
            "--output-dir",
            str(same),
        ],
        tmp_path,
        monkeypatch,
    )
    config = json.loads((same / "config.json").read_text())
    assert config["recipe"] == "fast" and config["init"]["classifier"] == "copied"


def test_a_source_that_does_not_fit_is_refused_and_nothing_is_written(source_run, tmp_path, monkeypatch):
    out = tmp_path / "refused"
    cases = [
        (["--arch", "resnet14", "--init-from", str(source_run)], r"does not fit 'resnet14': \d+ layer\(s\) differ"),
        (["--arch", "resnet14", "--init-from", SHIPPED], "these weights do not fit 'resnet14'"),
        (["--arch", "resnet8", "--init-from", str(tmp_path / "nothing.keras")], "no such file or directory"),
        (["--arch", "resnet8", "--init-from", str(tmp_path)], "not a run directory"),
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
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(features), keras.ops.convert_to_numpy(expected), rtol=1e-3, atol=1e-3
    )


def _backbone_state(model):
    """Every backbone weight, BatchNormalization's moving statistics included."""
    return {w.path: np.array(w) for layer in model.layers if layer.name != "logits" for w in layer.weights}


def test_freeze_epochs_trains_the_classifier_alone_then_everything(source_run, tmp_path, monkeypatch, float32_policy):
    from trainers.core import callbacks as cb

    seen = {}

    class Recording(cb.Unfreeze):  # what train() passes to fit, observed at the moment it unfreezes
        def _check(self):
            if not self.done and cb.iterations(self.model) >= self.at_step:
                seen["step"] = cb.iterations(self.model)
                seen["state"] = _backbone_state(self.model)
                seen["trainable"] = len(self.model.trainable_variables)
            super()._check()

    monkeypatch.setattr(cb, "Unfreeze", Recording)
    run = tmp_path / "frozen"
    _fit(
        [
            "--arch",
            "resnet8",
            "--init-from",
            str(source_run),
            "--synthetic-classes",
            "4",
            "--epochs",
            "2",
            "--freeze-epochs",
            "1",
            "--batch-size",
            "32",
            "--output-dir",
            str(run),
        ],
        tmp_path,
        monkeypatch,
    )
    source = _backbone_state(load_keras_model(source_run / "model.keras"))
    assert seen["step"] == 8 and seen["trainable"] == 2  # 256 images / 32: one epoch; only the classifier trained
    assert source.keys() == seen["state"].keys() and any("moving_mean" in k for k in source)
    for key, value in source.items():  # weights and BN statistics untouched while frozen
        np.testing.assert_array_equal(seen["state"][key], value, err_msg=key)
    config = json.loads((run / "config.json").read_text())
    assert config["freeze_epochs"] == 1 and config["freeze_steps"] == 8 and config["status"] == "finished"
    final = load_keras_model(run / "model.keras")
    assert all(layer.trainable for layer in final.layers)
    changed = [k for k, v in _backbone_state(final).items() if not np.array_equal(v, source[k])]
    assert any("moving_mean" in k for k in changed) and any("kernel" in k for k in changed)  # then all of it trained


@pytest.mark.parametrize(
    "args, message",
    [
        (["--freeze-epochs", "1"], "--freeze-epochs needs --init-from"),
        (["--freeze-epochs", "-1", "--init-from", "X"], "expected a number of epochs >= 0"),
        (["--freeze-epochs", "2", "--epochs", "2", "--init-from", "RUN"], "leaves nothing of this 16-iteration run"),
    ],
)
def test_freeze_epochs_out_of_range_is_one_line_and_writes_nothing(args, message, source_run, tmp_path, monkeypatch):
    args = [str(source_run) if a == "RUN" else a for a in args]
    out = tmp_path / "out"
    with pytest.raises(UserError, match=message):
        _fit(
            ["--arch", "resnet8", "--batch-size", "32", "--synthetic-classes", "4", "--output-dir", str(out), *args],
            tmp_path,
            monkeypatch,
        )
    assert not out.exists()


def test_the_same_count_of_other_classes_gets_a_new_classifier(source_run, float32_policy):
    source = load_keras_model(source_run / "model.keras")
    same = resnet_keras.get_model("resnet8", num_classes=10, seed=1)
    report = finetune.initialize(same, str(source_run), class_names=[f"synthetic_{i}" for i in range(10)])
    assert report["classifier"] == "copied"
    np.testing.assert_array_equal(same.get_layer("logits").kernel, source.get_layer("logits").kernel)
    other = resnet_keras.get_model("resnet8", num_classes=10, seed=1)
    fresh = np.array(other.get_layer("logits").kernel)
    report = finetune.initialize(other, str(source_run / "model.keras"), class_names=list("abcdefghij"))
    assert report["classifier"].startswith("new")
    np.testing.assert_array_equal(other.get_layer("logits").kernel, fresh)
    _backbone_equal(other, source)


def test_a_resumed_finetune_run_keeps_what_init_from_copied_on_record(source_run, tmp_path, monkeypatch):
    """A run stopped after a backup and resumed is not initialised again (its
    backup holds the weights); its config.json still says what --init-from copied."""
    from trainers.core import callbacks as cb

    run = tmp_path / "resumed"
    args = ["--arch", "resnet8", "--init-from", str(source_run), "--steps", "12", "--batch-size", "32"]
    args += ["--backup-every", "4", "--output-dir", str(run)]

    class StopEarly(cb.StopAtStep):  # the first session ends at iteration 8, as a killed one would
        def __init__(self, total_steps):
            super().__init__(8)

    with monkeypatch.context() as patch:
        patch.setattr(cb, "StopAtStep", StopEarly)
        with pytest.raises(UserError, match="training ended after 8 iterations instead of 12"):
            _fit(args, tmp_path, monkeypatch)
    first = json.loads((run / "config.json").read_text())
    assert first["init"]["kind"] == "run" and (run / "backup").exists()

    metrics = _fit(args, tmp_path, monkeypatch)
    assert metrics["iterations"] == 12
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "finished" and config["init"] == first["init"]
