"""resnet_keras.layers.FusedBatchNormalization against keras.layers.BatchNormalization:
the same numbers forward and backward, the same moving statistics, the same
config and weights, and Keras' own computation wherever the fused kernel does
not apply."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import resnet_keras
from resnet_keras.layers import FusedBatchNormalization

ROOT = pathlib.Path(__file__).resolve().parents[1]
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def _pair(policy, shape, momentum=0.9, epsilon=1e-5, seed=0, **kwargs):
    """A Keras BN and a fused BN with the same random gamma, beta and moving statistics."""
    rng = np.random.default_rng(seed)
    layers = []
    for cls in (keras.layers.BatchNormalization, FusedBatchNormalization):
        layer = cls(momentum=momentum, epsilon=epsilon, dtype=policy, **kwargs)
        layer.build(shape)
        layers.append(layer)
    channels = shape[-1]
    values = [
        rng.normal(1.0, 0.3, channels),
        rng.normal(0.0, 0.3, channels),
        rng.normal(0.0, 1.0, channels),
        rng.uniform(0.5, 2.0, channels),
    ]
    for layer in layers:
        for variable, value in zip((layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance), values):
            variable.assign(value.astype("float32"))
    return layers


def _step(layer, x, upstream, training):
    """Output and gradients (input, gamma, beta) of sum(layer(x) * upstream)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return [np.asarray(t.numpy(), "float32") for t in (y, *grads)], y.dtype


def _close(a, b, rtol, what=""):
    """Agreement relative to the largest magnitude of the reference."""
    scale = max(float(np.max(np.abs(a))), 1e-6)
    assert float(np.max(np.abs(a - b))) <= rtol * scale, (what, float(np.max(np.abs(a - b))) / scale)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("training", [True, False])
def test_outputs_and_gradients_match_keras(dtype, training):
    shape = (6, 5, 7, 12)
    rng = np.random.default_rng(1)
    x = tf.cast(tf.constant(rng.normal(3.0, 2.0, shape), "float32"), dtype)
    upstream = tf.constant(rng.normal(size=shape), "float32")
    keras_bn, fused = _pair(POLICIES[dtype], shape)
    (ref, ref_dtype), (out, out_dtype) = (_step(layer, x, upstream, training) for layer in (keras_bn, fused))
    assert ref_dtype == out_dtype == dtype
    # float32: summation order only. bf16: both read the same bf16 input, compute in
    # float32 and round the output (and the input gradient) to bf16 once.
    rtol = 1e-5 if dtype == "float32" else 1e-2
    for name, a, b in zip(("output", "d input", "d gamma", "d beta"), ref, out):
        _close(a, b, rtol, name)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_moving_statistics_after_several_steps_match_keras(dtype):
    shape = (4, 6, 6, 8)
    keras_bn, fused = _pair(POLICIES[dtype], shape, momentum=0.7)
    rng = np.random.default_rng(2)
    for _ in range(5):
        x = tf.cast(tf.constant(rng.normal(rng.normal(), 3.0, shape), "float32"), dtype)
        for layer in (keras_bn, fused):
            layer(x, training=True)
    for a, b in ((keras_bn.moving_mean, fused.moving_mean), (keras_bn.moving_variance, fused.moving_variance)):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)
    # and inference then uses them alike
    x = tf.cast(tf.constant(rng.normal(size=shape), "float32"), dtype)
    _close(
        np.asarray(keras_bn(x, training=False), "float32"),
        np.asarray(fused(x, training=False), "float32"),
        1e-5 if dtype == "float32" else 1e-2,
    )


def test_moving_variance_is_the_biased_batch_variance():
    """With momentum 0 the moving statistics are the last batch's: its variance
    divided by n (Keras' convention), not by n - 1 (the kernel's, Caffe's, PyTorch's)."""
    shape = (2, 3, 3, 4)  # n = 18 values per channel: the conventions differ by 1/17
    _, fused = _pair("float32", shape, momentum=0.0)
    x = np.random.default_rng(3).normal(0.0, 2.0, shape).astype("float32")
    fused(tf.constant(x), training=True)
    np.testing.assert_allclose(fused.moving_mean.numpy(), x.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), x.var(axis=(0, 1, 2), ddof=0), rtol=1e-5)
    assert not np.allclose(fused.moving_variance.numpy(), x.var(axis=(0, 1, 2), ddof=1), rtol=1e-3)


def test_a_frozen_layer_uses_its_moving_statistics_even_in_training():
    shape = (3, 4, 4, 5)
    keras_bn, fused = _pair("float32", shape)
    for layer in (keras_bn, fused):
        layer.trainable = False
    x = tf.constant(np.random.default_rng(4).normal(size=shape), "float32")
    before = fused.moving_mean.numpy().copy()
    _close(keras_bn(x, training=True).numpy(), fused(x, training=True).numpy(), 1e-5)
    np.testing.assert_array_equal(fused.moving_mean.numpy(), before)


@pytest.mark.parametrize(
    "kwargs, shape, mask",
    [
        ({"axis": 1}, (2, 3, 4, 4), None),  # channels first
        ({}, (4, 6), None),  # rank 2
        ({}, (2, 3, 4), np.array([[True, True, False], [True, False, True]])),  # rank 3 with a mask
        ({"renorm": True}, (2, 3, 3, 4), None),
    ],
)
def test_falls_back_to_keras_where_the_kernel_does_not_apply(kwargs, shape, mask, monkeypatch):
    rng = np.random.default_rng(5)
    layers = [cls(**kwargs) for cls in (keras.layers.BatchNormalization, FusedBatchNormalization)]
    x = tf.constant(rng.normal(size=shape), "float32")
    calls = []
    monkeypatch.setattr(tf.raw_ops, "FusedBatchNormV3", lambda **kw: calls.append(kw))
    outs = [layer(x, training=True, mask=None if mask is None else tf.constant(mask)).numpy() for layer in layers]
    assert not calls  # the fused kernel never ran
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-6, atol=1e-6)


def test_synchronized_layer_never_takes_the_fused_path(monkeypatch):
    layer = FusedBatchNormalization(synchronized=True)
    calls = []
    monkeypatch.setattr(tf.raw_ops, "FusedBatchNormV3", lambda **kw: calls.append(kw))
    layer(tf.ones((2, 3, 3, 4)), training=True)
    assert not calls


def test_networks_are_built_with_the_fused_layer_and_config_round_trips():
    model = resnet_keras.get_model("resnet8", num_classes=10, input_shape=(16, 16, 3))
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(type(layer) is FusedBatchNormalization for layer in bns)
    layer = model.get_layer("conv1_bn")
    config = layer.get_config()
    assert config["momentum"] == 0.9 and config["epsilon"] == 1e-5
    clone = FusedBatchNormalization.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == "resnet_keras>FusedBatchNormalization"
    # The same weights, by name and order, as Keras' layer
    keras_bn = keras.layers.BatchNormalization.from_config(config)
    keras_bn.build(layer.input.shape)
    assert [w.path.split("/")[-1] for w in keras_bn.weights] == [w.path.split("/")[-1] for w in layer.weights]


# Loads each .keras file given in one fresh process (one TensorFlow start for all of them).
SAFE_LOAD = r"""
import json, sys
import numpy as np
import keras
import resnet_keras
from resnet_keras.layers import FusedBatchNormalization
images = np.load(sys.argv[1])
for i, path in enumerate(sys.argv[3:]):
    model = keras.models.load_model(path)  # safe mode, the default
    kinds = sorted({type(l).__name__ for l in model.layers if isinstance(l, keras.layers.BatchNormalization)})
    np.save(f"{sys.argv[2]}/out{i}.npy", model.predict(images, verbose=0))
    json.dump(kinds, open(f"{sys.argv[2]}/kinds{i}.json", "w"))
"""


def _load_fresh(tmp_path, paths, images):
    """(predictions, BN layer kinds) of each model file, loaded in one fresh process."""
    script = tmp_path / "load.py"
    script.write_text(SAFE_LOAD)
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "images.npy"), str(tmp_path), *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [
        (np.load(tmp_path / f"out{i}.npy"), json.loads((tmp_path / f"kinds{i}.json").read_text()))
        for i in range(len(paths))
    ]


def _randomized(model, seed=0):
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if "moving_variance" in weight.path:
            weight.assign(rng.uniform(0.5, 2.0, weight.shape).astype("float32"))
        elif not weight.path.startswith("normalization"):
            weight.assign(rng.normal(0, 0.2, weight.shape).astype("float32"))
    return model


def test_keras_file_round_trip_in_a_fresh_process_and_models_saved_before_still_load(tmp_path):
    model = _randomized(resnet_keras.get_model("resnet8", num_classes=10, input_shape=(16, 16, 3)))
    images = np.random.default_rng(6).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    model.save(tmp_path / "fused.keras")

    # A model saved before this layer existed (Keras' BatchNormalization) loads as it was saved
    def unfuse(layer):
        cls = keras.layers.BatchNormalization if isinstance(layer, FusedBatchNormalization) else type(layer)
        return cls.from_config(layer.get_config())

    old = keras.models.clone_model(model, clone_function=unfuse)
    old.set_weights(model.get_weights())
    old.save(tmp_path / "old.keras")
    (fused_out, fused_kinds), (old_out, old_kinds) = _load_fresh(
        tmp_path, [tmp_path / "fused.keras", tmp_path / "old.keras"], images
    )
    assert fused_kinds == ["FusedBatchNormalization"]
    np.testing.assert_allclose(fused_out, expected, rtol=1e-5, atol=1e-5)
    assert old_kinds == ["BatchNormalization"]
    np.testing.assert_allclose(old_out, expected, rtol=1e-5, atol=1e-5)


SYNC_BN_PROBE = r"""
import json, sys
from trainers.core.hardware import split_cpu
split_cpu(2)
import numpy as np, tensorflow as tf, keras, resnet_keras
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(0)
# Replica 0 gets images around 0, replica 1 images around 200: per-replica means differ.
x = np.concatenate([rng.normal(0, 1, (4, 8, 8, 3)), rng.normal(200, 1, (4, 8, 8, 3))]).astype("float32")
out = {}
for sync in (False, True):
    with strategy.scope():
        layer = resnet_keras.layers.FusedBatchNormalization(momentum=0.0, synchronized=sync)
        layer.build((None, 8, 8, 3))
    dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(x).batch(8))
    batch = next(iter(dataset))
    strategy.run(tf.function(lambda b: layer(b, training=True)), args=(batch,))
    out[str(sync)] = [np.asarray(v).tolist() for v in strategy.experimental_local_results(layer.moving_mean.value)]
json.dump(out, open(sys.argv[1], "w"))
"""


def test_sync_bn_network_still_uses_statistics_over_all_replicas(tmp_path):
    script, out = tmp_path / "probe.py", tmp_path / "out.json"
    script.write_text(SYNC_BN_PROBE)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    means = json.loads(out.read_text())
    # synchronized: every replica's moving mean is the global batch's, about 100
    for replica in means["True"]:
        np.testing.assert_allclose(replica, 100.0, atol=1.0)
    # not synchronized (the fused path): each replica's own half, about 0 or 200
    assert sorted(round(r[0] / 100) for r in means["False"]) == [0, 2]
