import keras
import numpy as np
import pytest

import resnet_keras
from resnet_keras import get_model, list_models, resolve_spec

PAPER_NAMES = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "plain18",
    "plain34",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet1202",
    "plain20",
    "plain32",
    "plain44",
    "plain56",
    "plain110",
]

# The bag-of-tricks rows (tests/test_tweaks.py tests them).
TWEAKED_NAMES = ["resnet18d", "resnet34d", "resnet50d", "resnet101d", "resnet152d", "plain18c", "plain34c"]


def test_every_network_of_the_paper_is_registered():
    assert sorted(list_models()) == sorted(PAPER_NAMES + TWEAKED_NAMES)


def _final_map(model):
    return tuple(model.get_layer("avg_pool").input.shape[1:3])


@pytest.mark.parametrize(
    "name",
    # resnet1202 is resnet110's code with n = 200; building it is the slowest case of this file (40 s or more)
    [pytest.param(n, marks=[pytest.mark.slow] if n == "resnet1202" else []) for n in PAPER_NAMES],
)
def test_builds_small_and_gives_logits(build, name):
    spec = resolve_spec(name)
    model = build(name, size="small")
    size = model.input_shape[1]
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    logits = model(x, training=False)
    assert tuple(logits.shape) == (2, spec.default_num_classes)
    assert model.get_layer("logits").activation is keras.activations.linear
    # Total stride: 32 for ImageNet networks, 4 for CIFAR networks.
    assert spec.total_stride == {"imagenet": 32, "cifar": 4}[spec.family]
    assert _final_map(model) == (size // spec.total_stride,) * 2


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER_NAMES)
def test_builds_at_natural_size(build, name):
    spec = resolve_spec(name)
    model = build(name)
    size = {"imagenet": 224, "cifar": 32}[spec.family]
    assert model.input_shape == (None, size, size, 3)
    assert _final_map(model) == ({"imagenet": 7, "cifar": 8}[spec.family],) * 2
    logits = model(np.zeros((1, size, size, 3), "float32"), training=False)
    assert tuple(logits.shape) == (1, spec.default_num_classes)


def test_stage_names_are_stable(build):
    model = build("resnet50", size="small")
    names = {layer.name for layer in model.layers}
    for expected in [
        "conv1_conv",
        "conv1_bn",
        "pool1_pool",
        "conv2_block1_0_conv",
        "conv2_block1_3_bn",
        "conv3_block4_add",
        "conv4_block6_out",
        "conv5_block3_out",
        "avg_pool",
        "logits",
    ]:
        assert expected in names
    assert "conv5_block4_out" not in names


@pytest.mark.parametrize(
    "name, stages",
    [("resnet26", (4, 4, 4)), ("plain14", (2, 2, 2)), ("resnet8", (1, 1, 1))],
)
def test_any_cifar_depth_6n_plus_2_by_name(name, stages):
    spec = resolve_spec(name)
    assert spec.family == "cifar" and spec.stage_depths == stages
    assert spec.residual == name.startswith("resnet")
    assert spec.depth == int(name.removeprefix("resnet").removeprefix("plain"))


def test_stage_depths_override_builds_that_network():
    model = get_model("resnet50", num_classes=5, input_shape=(32, 32, 3), stage_depths=(1, 2, 1, 1))
    blocks = {layer.name.rsplit("_", 1)[0] for layer in model.layers if layer.name.endswith("_add")}
    assert blocks == {"conv2_block1", "conv3_block1", "conv3_block2", "conv4_block1", "conv5_block1"}
    deep_cifar = get_model("resnet20", num_classes=10, stage_depths=(8, 8, 8))
    assert sum(layer.name.endswith("_add") for layer in deep_cifar.layers) == 24


@pytest.mark.parametrize("width", [0.5, 2.0])
def test_width_multiplier_scales_every_stage(width):
    base = get_model("resnet20", num_classes=10, input_shape=(16, 16, 3))
    wide = get_model("resnet20", num_classes=10, input_shape=(16, 16, 3), width=width)
    for layer in ["conv1_conv", "conv2_block1_1_conv", "conv3_block2_2_conv", "conv4_block3_2_conv"]:
        assert wide.get_layer(layer).filters == int(round(base.get_layer(layer).filters * width))
    imagenet = get_model("resnet50", num_classes=10, input_shape=(32, 32, 3), width=width)
    assert imagenet.get_layer("conv5_block3_3_conv").filters == int(2048 * width)


def test_bottleneck_version_moves_the_stride():
    v1 = get_model("resnet50", num_classes=10, input_shape=(64, 64, 3))
    v15 = get_model("resnet50", num_classes=10, input_shape=(64, 64, 3), bottleneck_version="v1.5")
    assert v1.get_layer("conv3_block1_1_conv").strides == (2, 2)
    assert v1.get_layer("conv3_block1_2_conv").strides == (1, 1)
    assert v15.get_layer("conv3_block1_1_conv").strides == (1, 1)
    assert v15.get_layer("conv3_block1_2_conv").strides == (2, 2)
    assert v1.count_params() == v15.count_params()
    assert resnet_keras.count_flops(v15) > resnet_keras.count_flops(v1)


def test_variable_input_size_with_channel_normalization():
    model = get_model("resnet18", num_classes=7, input_shape=(None, None, 3), normalization="channel")
    for size in (64, 97):
        assert tuple(model(np.zeros((1, size, size, 3), "float32")).shape) == (1, 7)


def _raises(match, **kwargs):
    name = kwargs.pop("name", "resnet20")
    kwargs.setdefault("num_classes", 10)
    with pytest.raises(ValueError, match=match) as info:
        get_model(name, **kwargs)
    return str(info.value)


def test_unknown_name_lists_the_known_ones():
    message = _raises("unknown architecture 'resnet19'", name="resnet19")
    for name in PAPER_NAMES:
        assert name in message
    _raises("unknown architecture 'vgg16'", name="vgg16")
    _raises("unknown architecture 'resnet2'", name="resnet2")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shortcut": "D"}, r"shortcut='D'.*\('A', 'B', 'C'\)"),
        ({"name": "plain20", "shortcut": "A"}, "plain network"),
        ({"width": 0}, r"width=0.*\(0, 64\]"),
        ({"width": -1.5}, "width=-1.5"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"num_classes": 2.5}, "num_classes=2.5"),
        ({"stage_depths": (3, 3)}, r"stage_depths=\(3, 3\).*3 positive integers"),
        ({"stage_depths": (3, 0, 3)}, "stage_depths"),
        ({"name": "resnet50", "stage_depths": (3, 4, 6)}, "4 positive integers"),
        ({"bottleneck_version": "v2"}, r"bottleneck_version='v2'.*\('v1', 'v1.5'\)"),
        ({"bottleneck_version": "v1.5"}, "bottleneck networks only"),
        ({"normalization": "global"}, r"normalization='global'.*\('pixel', 'channel'\)"),
        ({"input_shape": (3, 3, 3)}, r"too small for 'resnet20'.*total stride is 4.*at least 4"),
        ({"name": "resnet50", "input_shape": (31, 224, 3)}, "total stride is 32"),
        ({"input_shape": (32, 32)}, r"input_shape=\(32, 32\).*\(height, width, channels\)"),
        ({"input_shape": (None, None, 3)}, "normalization='channel'"),
        ({"bn_momentum": 1.5}, r"bn_momentum=1.5.*\[0, 1\)"),
        ({"bn_momentum": "0.9"}, "bn_momentum='0.9'"),
        ({"bn_epsilon": 0}, "bn_epsilon=0"),
        ({"width": "2"}, "width='2'"),
        ({"zero_init_residual": "yes"}, "zero_init_residual='yes'"),
    ],
)
def test_bad_options_raise_value_error_naming_them(kwargs, match):
    _raises(match, **kwargs)


def test_zero_init_residual_zeroes_the_last_bn_of_each_residual_branch():
    model = get_model("resnet50", num_classes=10, input_shape=(32, 32, 3), zero_init_residual=True)
    last_bns = [layer for layer in model.layers if layer.name.endswith("_3_bn")]
    assert len(last_bns) == 16 and all(not layer.gamma.numpy().any() for layer in last_bns)
    assert model.get_layer("conv2_block1_2_bn").gamma.numpy().all()
    assert model.get_layer("conv2_block1_0_bn").gamma.numpy().all()  # projections keep theirs
    # A plain network has no residual branch to silence: zeroing would cut its signal.
    plain = get_model("plain20", num_classes=10, zero_init_residual=True)
    assert all(layer.gamma.numpy().all() for layer in plain.layers if layer.name.endswith("_bn"))


def test_a_seed_fixes_the_initial_weights():
    a = get_model("resnet20", num_classes=10, input_shape=(16, 16, 3), seed=1)
    b = get_model("resnet20", num_classes=10, input_shape=(16, 16, 3), seed=1)
    c = get_model("resnet20", num_classes=10, input_shape=(16, 16, 3), seed=2)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    kernel = a.get_layer("conv3_block1_1_conv").kernel.numpy()
    assert not np.array_equal(kernel, c.get_layer("conv3_block1_1_conv").kernel.numpy())
    # Layers of the same shape still differ: each has its own seed.
    assert not np.array_equal(kernel[..., :16, :], a.get_layer("conv3_block1_2_conv").kernel.numpy()[..., :16, :])
    # He (MSRA) initialisation: std sqrt(2 / fan_in).
    assert kernel.std() == pytest.approx(np.sqrt(2 / (3 * 3 * 16)), rel=0.1)
    with pytest.raises(ValueError, match="seed=-1"):
        get_model("resnet20", num_classes=10, seed=-1)
