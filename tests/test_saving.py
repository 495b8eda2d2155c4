import json
import os
import pathlib
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import resnet_keras
from resnet_keras import get_model, get_normalization

ROOT = pathlib.Path(__file__).resolve().parents[1]

LOAD_AND_PREDICT = """
import sys
import numpy as np
{imports}
import keras
model = keras.models.load_model(sys.argv[1])
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
"""


def _with_statistics(model, seed=0):
    """Randomises every weight (BN statistics and the input mean included), so a
    round trip that dropped or reordered any of them would show."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape = tuple(weight.shape)
        if "moving_variance" in weight.path or weight.path.endswith("std"):
            value = rng.uniform(0.5, 2.0, shape)
        elif weight.path.endswith("normalization/mean"):
            value = rng.uniform(100, 150, shape)
        else:
            value = rng.normal(0, 0.1, shape)
        weight.assign(value.astype(weight.dtype))
    return model


def _run_in_fresh_process(tmp_path, model_path, images, imports="import resnet_keras"):
    script = tmp_path / "load.py"
    script.write_text(LOAD_AND_PREDICT.format(imports=imports))
    np.save(tmp_path / "images.npy", images)
    out = tmp_path / "out.npy"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, str(script), str(model_path), str(tmp_path / "images.npy"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return result, (np.load(out) if out.exists() else None)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("resnet20", {}),  # option A: the Lambda over the registered function
        pytest.param(
            "resnet50",
            {"input_shape": (64, 64, 3), "bottleneck_version": "v1.5", "shortcut": "C"},
            marks=pytest.mark.slow,
        ),  # the same path as resnet20's, with projections: 31 s
    ],
)
def test_keras_file_round_trip_in_a_fresh_process_in_safe_mode(tmp_path, name, kwargs):
    model = _with_statistics(get_model(name, num_classes=10, **kwargs))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    size = model.input_shape[1]
    images = np.random.default_rng(1).uniform(0, 255, (4, size, size, 3)).astype("float32")
    expected = model.predict(images, verbose=0)

    result, loaded = _run_in_fresh_process(tmp_path, path, images)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(loaded, expected, rtol=1e-5, atol=1e-5)

    # The saved config names our registered function, never Python bytecode.
    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    assert "__lambda__" not in json.dumps(config)
    lambdas = [layer for layer in config["config"]["layers"] if layer["class_name"] == "Lambda"]
    assert len(lambdas) == (2 if name == "resnet20" else 0)
    for layer in lambdas:
        assert layer["config"]["function"]["config"] == "resnet_keras>zero_pad_shortcut"
        assert layer["config"]["output_shape"] is not None


def test_option_a_model_needs_resnet_keras_imported_to_load(tmp_path):
    """Without our registrations, safe-mode loading must refuse rather than run
    anything it does not know; with them (test above) it loads."""
    model = get_model("resnet20", num_classes=10, input_shape=(16, 16, 3))
    path = tmp_path / "m.keras"
    model.save(path)
    result, loaded = _run_in_fresh_process(tmp_path, path, np.zeros((1, 16, 16, 3), "float32"), imports="")
    assert result.returncode != 0 and loaded is None
    assert "Could not locate" in result.stderr


@pytest.mark.parametrize("name", ["resnet20", "plain20", "resnet18"])
def test_get_config_from_config_round_trip(name):
    model = _with_statistics(get_model(name, num_classes=10, input_shape=(32, 32, 3)))
    clone = keras.Model.from_config(model.get_config())
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    assert clone.count_params() == model.count_params()
    clone.set_weights(model.get_weights())
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(clone(images), model(images), rtol=1e-5, atol=1e-5)


def test_mixed_bfloat16_gives_float32_logits(float32_policy):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = get_model("resnet20", num_classes=10, input_shape=(16, 16, 3))
    assert model.get_layer("conv2_block1_1_conv").compute_dtype == "bfloat16"
    assert model.get_layer("conv2_block1_1_conv").kernel.dtype == "float32"  # variables stay float32
    assert get_normalization(model).compute_dtype == "float32"
    images = np.random.default_rng(3).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    logits = model(images, training=False)
    assert logits.dtype == "float32"
    assert np.all(np.isfinite(logits))
    # One training step runs too, and moves the weights.
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = model.get_layer("logits").kernel.numpy().copy()
    loss = model.train_on_batch(images, np.array([1, 2]))
    assert np.isfinite(loss)
    assert not np.allclose(before, model.get_layer("logits").kernel.numpy())


def test_no_code_path_disables_safe_mode():
    offenders = []
    for folder in ("resnet_keras", "trainers", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if "safe_mode=False" in text.replace(" ", "") or "enable_unsafe_deserialization" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_package_registers_its_serializables():
    assert keras.saving.get_registered_object("resnet_keras>zero_pad_shortcut") is resnet_keras.zero_pad_shortcut
    assert keras.saving.get_registered_object("resnet_keras>InputNormalization") is resnet_keras.InputNormalization
