"""Headless backbones: get_model(include_top=False, pooling=...) as
keras.applications builds them, with shipped weights and the weight copy."""

import keras
import numpy as np
import pytest

import resnet_keras


@pytest.mark.parametrize(
    "name, size, channels",
    [("resnet20", 32, 64), ("plain20", 32, 64), ("resnet18", 64, 512), ("plain34", 64, 512), ("resnet50", 64, 2048)],
)
def test_include_top_false_gives_the_last_stage_or_its_pooled_vector(name, size, channels):
    stride = resnet_keras.resolve_spec(name).total_stride
    maps = resnet_keras.get_model(name, include_top=False, input_shape=(size, size, 3), seed=0)
    assert maps.output_shape == (None, size // stride, size // stride, channels)
    assert "logits" not in [layer.name for layer in maps.layers]
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    feature_map = keras.ops.convert_to_numpy(maps(images))
    for pooling, reduce in (("avg", np.mean), ("max", np.max)):
        pooled = resnet_keras.get_model(name, include_top=False, pooling=pooling, input_shape=(size, size, 3), seed=0)
        assert pooled.output_shape == (None, channels)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(pooled(images)), reduce(feature_map, axis=(1, 2)), rtol=1e-5, atol=1e-5
        )
    # The same seed: the backbone's weights are the classifier network's, minus the head.
    full = resnet_keras.get_model(name, num_classes=7, input_shape=(size, size, 3), seed=0)
    assert resnet_keras.count_params(full) - resnet_keras.count_params(maps) == channels * 7 + 7


def test_backbone_arguments_are_checked():
    with pytest.raises(ValueError, match="num_classes is required"):
        resnet_keras.get_model("resnet20")
    with pytest.raises(ValueError, match="pooling='avg' applies to include_top=False only"):
        resnet_keras.get_model("resnet20", num_classes=10, pooling="avg")
    with pytest.raises(ValueError, match="include_top=False has none"):
        resnet_keras.get_model("resnet20", num_classes=10, include_top=False)
    with pytest.raises(ValueError, match=r"pooling='mean'; expected one of \(None, 'avg', 'max'\)"):
        resnet_keras.get_model("resnet20", include_top=False, pooling="mean")
    with pytest.raises(ValueError, match="include_top=1"):
        resnet_keras.get_model("resnet20", num_classes=10, include_top=1)


def test_backbone_of_shipped_weights_is_the_trained_network_minus_its_classifier(tmp_path, float32_policy):
    backbone = resnet_keras.get_model("resnet20", include_top=False, pooling="avg", weights="cifar10")
    full = resnet_keras.get_model("resnet20", num_classes=10, weights="cifar10")
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    dense = full.get_layer("logits")
    logits = backbone.predict_on_batch(images) @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(logits, full.predict_on_batch(images), rtol=1e-5, atol=1e-4)
    # A headless model saves and loads in safe mode like any other.
    backbone.save(tmp_path / "backbone.keras")
    reloaded = keras.models.load_model(tmp_path / "backbone.keras")
    np.testing.assert_allclose(reloaded.predict_on_batch(images), backbone.predict_on_batch(images), atol=1e-5)


def test_keras_applications_weights_copy_into_a_backbone():
    source = keras.applications.ResNet50(
        weights=None, include_top=True, input_shape=(64, 64, 3), classifier_activation=None
    )
    target = resnet_keras.get_model("resnet50", include_top=False, input_shape=(64, 64, 3))
    resnet_keras.copy_applications_weights(source, target)
    images = np.random.default_rng(2).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = keras.Model(source.input, source.get_layer("conv5_block3_out").output)(
        keras.applications.resnet.preprocess_input(images.copy())
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(target(images)), keras.ops.convert_to_numpy(expected), rtol=1e-3, atol=1e-3
    )
