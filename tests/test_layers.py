import keras
import numpy as np
import pytest

from resnet_keras import InputNormalization, get_model, get_normalization, zero_pad_shortcut


def test_zero_pad_shortcut_subsamples_and_appends_zero_channels():
    x = np.arange(2 * 5 * 5 * 3, dtype="float32").reshape(2, 5, 5, 3)
    y = keras.ops.convert_to_numpy(zero_pad_shortcut(x, stride=2, out_channels=8))
    assert y.shape == (2, 3, 3, 8)
    np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2, :])
    np.testing.assert_array_equal(y[..., 3:], 0)


def test_option_a_shortcut_inside_a_network_is_subsample_and_pad(build):
    model = build("resnet20", size="small")
    layer = model.get_layer("conv3_block1_0_zeropad")
    assert isinstance(layer, keras.layers.Lambda) and layer.count_params() == 0
    probe = keras.Model(model.input, [layer.input, layer.output])
    images = np.random.default_rng(0).uniform(0, 255, (1, 16, 16, 3)).astype("float32")
    before, after = (keras.ops.convert_to_numpy(t) for t in probe(images))
    assert before.shape == (1, 16, 16, 16) and after.shape == (1, 8, 8, 32)
    np.testing.assert_array_equal(after[..., :16], before[:, ::2, ::2, :])
    np.testing.assert_array_equal(after[..., 16:], 0)


def test_stride_two_convolutions_are_centred_on_the_shortcut_samples():
    """Symmetric padding: output pixel (i, j) of the stride-2 3x3 conv is centred on
    input pixel (2i, 2j), the one the option A shortcut keeps."""
    model = get_model("resnet20", num_classes=10, input_shape=(8, 8, 3))
    conv = model.get_layer("conv3_block1_1_conv")
    kernel = np.zeros(conv.kernel.shape, "float32")
    kernel[1, 1, 0, :] = 1.0  # centre tap only: the conv becomes a subsampler
    conv.kernel.assign(kernel)
    probe = keras.Model(model.input, [model.get_layer("conv3_block1_0_zeropad").input, conv.output])
    x, y = (keras.ops.convert_to_numpy(t) for t in probe(np.random.default_rng(1).uniform(0, 255, (1, 8, 8, 3))))
    np.testing.assert_allclose(y[..., 0], x[:, ::2, ::2, 0], rtol=1e-6)


def test_normalization_is_identity_until_set_then_subtracts_the_mean():
    layer = InputNormalization(mode="pixel")
    images = np.random.default_rng(2).uniform(0, 255, (6, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(layer(images), images)
    layer.adapt(images)
    np.testing.assert_allclose(layer.mean.numpy(), images.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(layer(images), images - images.mean(axis=0), atol=1e-4)
    np.testing.assert_array_equal(layer.std.numpy(), 1.0)


def test_channel_normalization_with_std_from_batches():
    layer = InputNormalization(mode="channel")
    images = np.random.default_rng(3).uniform(0, 255, (8, 5, 5, 3)).astype("float32")
    layer.build(images.shape)
    layer.adapt([images[:3], images[3:]], use_std=True)  # two batches, one pass
    np.testing.assert_allclose(layer.mean.numpy(), images.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(layer.std.numpy(), images.std(axis=(0, 1, 2)), rtol=1e-4)
    out = keras.ops.convert_to_numpy(layer(images))
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-3)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1, atol=1e-3)


def test_set_statistics_broadcasts_and_rejects_bad_values():
    model = get_model("resnet20", num_classes=10, input_shape=(8, 8, 3))
    norm = get_normalization(model)
    norm.set_statistics([125.3, 123.0, 113.9])  # per-channel values fill the mean image
    assert norm.mean.shape == (8, 8, 3)
    np.testing.assert_allclose(norm.mean.numpy()[3, 5], [125.3, 123.0, 113.9], rtol=1e-6)
    with pytest.raises(ValueError, match="does not broadcast"):
        norm.set_statistics(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        norm.set_statistics([np.nan, 0, 0])
    with pytest.raises(ValueError, match="std must be positive"):
        norm.set_statistics(0.0, std=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="has no resnet_keras InputNormalization"):
        get_normalization(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
