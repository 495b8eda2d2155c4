"""resnet_keras.layers.MatmulConv2D against keras.layers.Conv2D: 1x1 convolutions
computed as matrix products in training, Keras' convolution everywhere else."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import resnet_keras
from resnet_keras.layers import MatmulConv2D


def _grads(layer, x, training):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, "float32") ** 2)
    grads = tape.gradient(loss, [x, layer.kernel, layer.bias])
    return [np.asarray(t, "float32") for t in (y, *grads)], y.dtype


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("strides, padding, size", [(1, "valid", 8), (1, "same", 7), (2, "valid", 8), (2, "same", 7)])
def test_training_output_and_gradients_match_keras_conv(policy, strides, padding, size):
    rng = np.random.default_rng(0)
    kwargs = dict(filters=6, kernel_size=1, strides=strides, padding=padding, use_bias=True, dtype=policy)
    # The float32 reference computes in float64 (Eigen's kernels): on an AVX2-only CPU, TensorFlow 2.21's oneDNN
    # returns a wrong kernel gradient for this very shape (1x1, stride 2, 5 -> 6 channels, 8 px) in most runs
    # (benchmarks/conv_gradients.py) (docs/benchmarks.md, "oneDNN or Eigen"). MatmulConv2D does not use that kernel.
    reference = keras.layers.Conv2D(**{**kwargs, "dtype": "float64" if policy == "float32" else policy})
    layer = MatmulConv2D(**kwargs)
    x = tf.constant(rng.normal(size=(3, size, size, 5)), "float32")
    for conv in (reference, layer):
        conv.build(x.shape)
    reference.set_weights([rng.normal(size=(1, 1, 5, 6)).astype("float32"), rng.normal(size=6).astype("float32")])
    layer.set_weights(reference.get_weights())
    (expected, expected_dtype), (got, got_dtype) = _grads(reference, x, True), _grads(layer, x, True)
    assert got_dtype == (tf.float32 if policy == "float32" else expected_dtype) and got[0].shape == expected[0].shape
    # bf16 keeps 8 significant bits: neighbouring values differ by up to 2**-7 of their size, and the two layers
    # round their products and sums at different places, so they may disagree by a few such steps. Measured on an
    # AVX2-only AMD EPYC (bf16 emulated, oneDNN or Eigen alike): 1.4% of the largest value; on an AMX Xeon: under 1%.
    rtol = 1e-5 if policy == "float32" else 2**-5
    for name, a, b in zip(("output", "d input", "d kernel", "d bias"), expected, got):
        error = np.max(np.abs(a - b)) / np.max(np.abs(a))
        assert error <= rtol, f"{name}: largest difference {error:.3g} of the largest value"


def test_matmul_path_runs_in_training_only(monkeypatch):
    layer = MatmulConv2D(4, 1)
    x = tf.ones((2, 4, 4, 3))
    layer.build(x.shape)
    calls = []
    original = tf.matmul
    monkeypatch.setattr(tf, "matmul", lambda *a, **k: calls.append(1) or original(*a, **k))
    layer(x, training=False)
    assert not calls  # inference: Keras' convolution, which converters fold BN into
    layer(x, training=True)
    assert calls


def test_other_kernels_are_keras_convolutions(monkeypatch):
    calls = []
    original = tf.matmul
    monkeypatch.setattr(tf, "matmul", lambda *a, **k: calls.append(1) or original(*a, **k))
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 6, 6, 3)), "float32")
    for kwargs in ({"kernel_size": 3}, {"kernel_size": 1, "dilation_rate": 2}):
        reference, layer = keras.layers.Conv2D(4, **kwargs), MatmulConv2D(4, **kwargs)
        reference.build(x.shape)
        layer.build(x.shape)
        layer.set_weights(reference.get_weights())
        np.testing.assert_allclose(layer(x, training=True), reference(x), rtol=1e-6, atol=1e-6)
    assert not calls


def test_networks_use_it_for_1x1_convolutions_only_and_it_serializes():
    model = resnet_keras.get_model("resnet50", num_classes=10, input_shape=(64, 64, 3), stage_depths=(1, 1, 1, 1))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert {type(c).__name__ for c in convs if tuple(c.kernel_size) == (1, 1)} == {"MatmulConv2D"}
    assert {type(c).__name__ for c in convs if tuple(c.kernel_size) != (1, 1)} == {"Conv2D"}
    serialized = keras.saving.serialize_keras_object(model.get_layer("conv2_block1_1_conv"))
    assert serialized["registered_name"] == "resnet_keras>MatmulConv2D"
    config = model.get_layer("conv3_block1_0_conv").get_config()
    assert MatmulConv2D.from_config(config).get_config() == config
