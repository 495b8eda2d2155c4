"""resnet_keras.fold_batchnorm: the folded copy answers as the network does, with
every BatchNormalization that follows a convolution alone merged into it, and
leaves alone those it cannot merge."""

import keras
import numpy as np
import pytest

import resnet_keras
from resnet_keras.folding import foldable_pairs


def _randomize_statistics(model, seed=0):
    """Non-trivial gamma, beta and moving statistics (a new network's are 1, 0, 0, 1)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.2, n))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.2, n))


def _norms(model):
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("arch", ["resnet20", "resnet18d"])
def test_folded_network_answers_as_the_network(arch):
    model = resnet_keras.get_model(arch, num_classes=10, input_shape=(32, 32, 3), seed=0)
    _randomize_statistics(model)
    folded = resnet_keras.fold_batchnorm(model)
    assert _norms(model) and not _norms(folded)  # every one follows a convolution in these networks
    # The convolutions keep their names and classes (MatmulConv2D in resnet18d) and gain a bias.
    convs = {layer.name: type(layer) for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}
    assert {layer.name: type(layer) for layer in folded.layers if isinstance(layer, keras.layers.Conv2D)} == convs
    assert all(folded.get_layer(name).use_bias for name in convs)
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    got = keras.ops.convert_to_numpy(folded(images, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert np.abs(expected).max() > 1  # the randomized statistics reach the logits
    assert not np.allclose(expected, keras.ops.convert_to_numpy(folded(images * 0.5, training=False)))


def _small(kind):
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")
    x = conv(inputs)
    if kind == "read twice":  # the convolution's output also feeds the addition: folding would change it
        y = keras.layers.BatchNormalization(name="bn")(x)
        out = keras.layers.Add()([x, y])
    elif kind == "after an addition":
        out = keras.layers.BatchNormalization(name="bn")(keras.layers.Add()([x, x]))
    elif kind == "activated convolution":
        relu = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_relu")(inputs)
        out = keras.layers.Concatenate()([keras.layers.BatchNormalization(name="bn")(relu), x])
    else:
        out = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, out)


@pytest.mark.parametrize("kind", ["read twice", "after an addition", "activated convolution"])
def test_normalizations_that_cannot_merge_are_left(kind):
    model = _small(kind)
    _randomize_statistics(model)
    assert foldable_pairs(model) == {}
    assert resnet_keras.fold_batchnorm(model) is model


def test_a_normalization_as_the_output_folds_with_a_bias_kept():
    inputs = keras.Input((8, 8, 3))
    out = keras.layers.BatchNormalization(name="bn", center=False)(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    model = keras.Model(inputs, out)
    _randomize_statistics(model)
    model.get_layer("conv").bias.assign(np.linspace(-1, 1, 4))
    folded = resnet_keras.fold_batchnorm(model)
    assert foldable_pairs(model) == {"bn": "conv"} and not _norms(folded)
    images = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(folded(images), model(images, training=False), rtol=1e-5, atol=1e-5)


def test_a_sequential_model_is_refused():
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="not a functional model"):
        resnet_keras.fold_batchnorm(model)
