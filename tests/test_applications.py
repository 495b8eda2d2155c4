import keras
import numpy as np
import pytest

from resnet_keras import copy_applications_weights, from_applications, get_model, get_normalization


def _randomise(model, seed):
    """Every weight of keras.applications' ResNet set to random values: kernels,
    conv biases, BN scale/offset and moving statistics, the dense head."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape = tuple(weight.shape)
        name = weight.path.split("/")[-1]
        if name == "kernel":
            fan_in = np.prod(shape[:-1])
            value = rng.normal(0, np.sqrt(1.0 / fan_in), shape)
        elif name == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif name == "moving_variance":
            value = rng.uniform(0.5, 2.0, shape)
        else:  # bias, beta, moving_mean
            value = rng.normal(0, 0.2, shape)
        weight.assign(value.astype("float32"))


def _relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.fixture(scope="module")
def source():
    model = keras.applications.ResNet50(weights=None, classifier_activation=None, input_shape=(96, 96, 3))
    _randomise(model, seed=0)
    return model


def test_copied_resnet50_matches_keras_applications(source):
    target = get_model("resnet50", num_classes=1000, input_shape=(96, 96, 3))
    copy_applications_weights(source, target)

    rgb = np.random.default_rng(1).uniform(0, 255, (3, 96, 96, 3)).astype("float32")
    # Theirs takes preprocess_input'ed pixels, ours raw RGB.
    expected = source.predict(keras.applications.resnet.preprocess_input(rgb.copy()), verbose=0)
    actual = target.predict(rgb, verbose=0)
    assert _relative_error(actual, expected) < 1e-4
    np.testing.assert_array_equal(actual.argmax(-1), expected.argmax(-1))
    # Backbone features agree too, not only the head.
    feats = [keras.Model(m.input, m.get_layer("avg_pool").output) for m in (source, target)]
    assert (
        _relative_error(
            feats[1].predict(rgb, verbose=0),
            feats[0].predict(keras.applications.resnet.preprocess_input(rgb.copy()), verbose=0),
        )
        < 1e-4
    )
    np.testing.assert_allclose(get_normalization(target).mean.numpy()[0, 0], [123.68, 116.779, 103.939], rtol=1e-6)


def test_copy_without_head_keeps_a_new_classifier(source):
    target = get_model("resnet50", num_classes=10, input_shape=(96, 96, 3))
    before = target.get_layer("logits").get_weights()
    copy_applications_weights(source, target, head=False)
    for old, new in zip(before, target.get_layer("logits").get_weights()):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(
        target.get_layer("conv5_block3_3_conv").kernel.numpy(),
        source.get_layer("conv5_block3_3_conv").kernel.numpy(),
    )
    with pytest.raises(ValueError, match="head=False"):
        copy_applications_weights(source, get_model("resnet50", num_classes=10, input_shape=(96, 96, 3)))


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("resnet50", {"bottleneck_version": "v1.5"}, "strides"),
        ("resnet50", {"shortcut": "A"}, "no Conv2D named 'conv2_block1_0_conv'"),
        ("resnet50", {"shortcut": "C"}, "layers the source lacks"),
        ("resnet101", {}, "layers the source lacks"),
    ],
)
def test_mismatched_targets_are_refused(source, name, kwargs, match):
    target = get_model(name, num_classes=1000, input_shape=(96, 96, 3), **kwargs)
    with pytest.raises(ValueError, match=match):
        copy_applications_weights(source, target)


def test_from_applications_rejects_names_without_a_counterpart():
    with pytest.raises(ValueError, match=r"resnet34.*\['resnet50', 'resnet101', 'resnet152'\]"):
        from_applications("resnet34", weights=None)
    with pytest.raises(ValueError, match="shortcut is fixed"):
        from_applications("resnet50", weights=None, shortcut="A")


def test_from_applications_builds_the_matching_network():
    model = from_applications("resnet50", weights=None, input_shape=(64, 64, 3))
    assert model.name == "resnet50" and model.output_shape == (None, 1000)
    np.testing.assert_allclose(get_normalization(model).mean.numpy()[0, 0], [123.68, 116.779, 103.939], rtol=1e-6)
