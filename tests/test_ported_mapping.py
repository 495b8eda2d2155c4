"""Issue 39: torchvision/timm/keras-hub weights into our networks (mapping), and the catalog of known weights.

NumPy only: no torch, no files. The state dicts are synthesised here with torchvision's and timm's key names and
shapes, enumerated independently of ``resnet_keras.ported.mapping`` from the sources' module structure (the key
counts are those of the real models: /tmp/issue39-facts.md), and the converted networks are checked against a
float64 NumPy forward written with PyTorch's padding.
"""

import re

import numpy as np
import pytest

from resnet_keras import count_params, get_model, get_normalization, resolve_spec
from resnet_keras.ported import catalog, mapping

SIZE = 64  # every stage runs (stage 5 at 2x2), every feature map even
BATCH = 2

# network -> (block, blocks per stage, stem, avg_down), as torchvision/timm build them.
TORCH_NETS = {
    "resnet18": ("basic", (2, 2, 2, 2), "standard", False),
    "resnet34": ("basic", (3, 4, 6, 3), "standard", False),
    "resnet50": ("bottleneck", (3, 4, 6, 3), "standard", False),
    "resnet50d": ("bottleneck", (3, 4, 6, 3), "deep", True),
}
# Key counts of the real state dicts, num_batches_tracked included (facts, sections 1 and 3).
TORCH_KEY_COUNTS = {"resnet18": 122, "resnet34": 218, "resnet50": 320, "resnet50d": 332}


# --- the sources' names and shapes, from their module structure ----------------------------------------------------
def _bn_shapes(prefix, channels):
    return {
        f"{prefix}.weight": (channels,),
        f"{prefix}.bias": (channels,),
        f"{prefix}.running_mean": (channels,),
        f"{prefix}.running_var": (channels,),
        f"{prefix}.num_batches_tracked": (),
    }


def torch_shapes(net, num_classes=1000):
    """key -> shape of torchvision's (or timm's) state_dict, in its order."""
    block, depths, stem, avg_down = TORCH_NETS[net]
    shapes = {}
    if stem == "deep":  # timm: Sequential(conv 3->32 s2, BN, ReLU, conv 32->32, BN, ReLU, conv 32->64), then bn1
        shapes["conv1.0.weight"] = (32, 3, 3, 3)
        shapes.update(_bn_shapes("conv1.1", 32))
        shapes["conv1.3.weight"] = (32, 32, 3, 3)
        shapes.update(_bn_shapes("conv1.4", 32))
        shapes["conv1.6.weight"] = (64, 32, 3, 3)
    else:
        shapes["conv1.weight"] = (64, 3, 7, 7)
    shapes.update(_bn_shapes("bn1", 64))
    inplanes = 64
    expansion = 4 if block == "bottleneck" else 1
    for stage, (blocks, planes) in enumerate(zip(depths, (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            stride = 2 if stage > 1 and b == 0 else 1
            p = f"layer{stage}.{b}"
            if block == "basic":
                convs = [(planes, inplanes, 3), (planes, planes, 3)]
            else:
                convs = [(planes, inplanes, 1), (planes, planes, 3), (planes * 4, planes, 1)]
            for i, (out, cin, k) in enumerate(convs, start=1):
                shapes[f"{p}.conv{i}.weight"] = (out, cin, k, k)
                shapes.update(_bn_shapes(f"{p}.bn{i}", out))
            if stride != 1 or inplanes != planes * expansion:
                conv, norm = ("downsample.1", "downsample.2") if avg_down else ("downsample.0", "downsample.1")
                shapes[f"{p}.{conv}.weight"] = (planes * expansion, inplanes, 1, 1)
                shapes.update(_bn_shapes(f"{p}.{norm}", planes * expansion))
            inplanes = planes * expansion
    shapes["fc.weight"] = (num_classes, inplanes)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def synth_state(net, seed=0, num_classes=1000):
    """A state dict of random weights and BN statistics (positive variances), float32 as the sources save."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in torch_shapes(net, num_classes).items():
        leaf = key.rsplit(".", 1)[1]
        if leaf == "num_batches_tracked":
            state[key] = np.array(7, np.int64)
        elif len(shape) == 4:
            state[key] = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        elif key == "fc.weight":
            state[key] = rng.normal(0, 0.05, shape)
        elif leaf == "weight":
            state[key] = rng.uniform(0.5, 1.5, shape)
        elif leaf == "running_var":
            state[key] = rng.uniform(0.5, 2.0, shape)
        else:  # BN bias, running_mean, fc.bias
            state[key] = rng.normal(0, 0.2, shape)
        state[key] = state[key].astype(np.int64 if leaf == "num_batches_tracked" else np.float32)
    return state


def keras_hub_layers(state):
    """The same weights by keras-hub ResNetBackbone/ResNetImageClassifier layer name (Keras layouts), written from
    keras-hub's naming (stack{s}_block{b}_{i}_conv, vd stem conv{1,2,3}_*), plus weightless layers ([])."""
    if "conv1.0.weight" in state:
        stem = {"conv1.0": "conv1_conv", "conv1.1": "conv1_bn", "conv1.3": "conv2_conv", "conv1.4": "conv2_bn"}
        stem.update({"conv1.6": "conv3_conv", "bn1": "conv3_bn"})
    else:
        stem = {"conv1": "conv1_conv", "bn1": "conv1_bn"}
    layers = {"pool1_pad": [], "pool1_pool": [], "average_pooling2d": []}
    for key in state:
        module, leaf = key.rsplit(".", 1)
        if leaf == "num_batches_tracked":
            continue
        if module == "fc":
            name = "predictions"
        elif module in stem:
            name = stem[module]
        else:
            m = re.match(r"^layer(\d)\.(\d+)\.(conv|bn)(\d)$", module)
            if m:
                name = f"stack{int(m.group(1)) - 1}_block{m.group(2)}_{m.group(4)}_{m.group(3)}"
            else:
                m = re.match(r"^layer(\d)\.(\d+)\.downsample\.(\d)$", module)
                kind = "conv" if state[key].ndim == 4 else "bn"
                name = f"stack{int(m.group(1)) - 1}_block{m.group(2)}_0_{kind}"
        layers.setdefault(name, {})[leaf] = state[key]
    out = {}
    for name, arrays in layers.items():
        if not arrays:
            out[name] = []
        elif "running_var" in arrays:
            out[name] = [arrays[k] for k in ("weight", "bias", "running_mean", "running_var")]
        elif name == "predictions":
            out[name] = [arrays["weight"].T, arrays["bias"]]
        else:
            out[name] = [np.transpose(arrays["weight"], (2, 3, 1, 0))]
    return out


# --- a float64 NumPy forward with PyTorch's padding (NCHW) ---------------------------------------------------------
def np_conv(x, w, stride=1, pad=0):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", windows, w.astype(np.float64), optimize=True)


def np_bn(x, state, prefix, eps=1e-5):
    def p(name):
        return state[f"{prefix}.{name}"].astype(np.float64)[None, :, None, None]

    return (x - p("running_mean")) / np.sqrt(p("running_var") + eps) * p("weight") + p("bias")


def np_maxpool(x):  # MaxPool2d(3, 2, padding=1): padded with -inf
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    return np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2].max(axis=(-1, -2))


def np_avgpool2(x):  # AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) on an even map
    n, c, h, w = x.shape
    assert h % 2 == 0 and w % 2 == 0
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def relu(x):
    return np.maximum(x, 0.0)


def np_stem(state, images, mean, std):
    """Raw RGB images (N, H, W, 3) in [0, 255] -> the stem's max pool output, NCHW."""
    x = ((images.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)).transpose(0, 3, 1, 2)
    if "conv1.0.weight" in state:
        x = relu(np_bn(np_conv(x, state["conv1.0.weight"], 2, 1), state, "conv1.1"))
        x = relu(np_bn(np_conv(x, state["conv1.3.weight"], 1, 1), state, "conv1.4"))
        x = relu(np_bn(np_conv(x, state["conv1.6.weight"], 1, 1), state, "bn1"))
    else:
        x = relu(np_bn(np_conv(x, state["conv1.weight"], 2, 3), state, "bn1"))
    return np_maxpool(x)


def np_forward(state, images, mean, std):
    """The whole network (torchvision's / timm's v1.5 blocks), logits."""
    x = np_stem(state, images, mean, std)
    avg_down = any(".downsample.2." in key for key in state)
    bottleneck = "layer1.0.conv3.weight" in state
    for stage in range(1, 5):
        b = 0
        while f"layer{stage}.{b}.conv1.weight" in state:
            p = f"layer{stage}.{b}"
            stride = 2 if stage > 1 and b == 0 else 1
            if bottleneck:
                y = relu(np_bn(np_conv(x, state[f"{p}.conv1.weight"]), state, f"{p}.bn1"))
                y = relu(np_bn(np_conv(y, state[f"{p}.conv2.weight"], stride, 1), state, f"{p}.bn2"))
                y = np_bn(np_conv(y, state[f"{p}.conv3.weight"]), state, f"{p}.bn3")
            else:
                y = relu(np_bn(np_conv(x, state[f"{p}.conv1.weight"], stride, 1), state, f"{p}.bn1"))
                y = np_bn(np_conv(y, state[f"{p}.conv2.weight"], 1, 1), state, f"{p}.bn2")
            if avg_down and f"{p}.downsample.1.weight" in state:
                shortcut = np_avgpool2(x) if stride == 2 else x
                shortcut = np_bn(np_conv(shortcut, state[f"{p}.downsample.1.weight"]), state, f"{p}.downsample.2")
            elif f"{p}.downsample.0.weight" in state:
                shortcut = np_bn(np_conv(x, state[f"{p}.downsample.0.weight"], stride), state, f"{p}.downsample.1")
            else:
                shortcut = x
            x = relu(y + shortcut)
            b += 1
    pooled = x.mean(axis=(2, 3))
    return pooled @ state["fc.weight"].astype(np.float64).T + state["fc.bias"]


def relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def images(seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (BATCH, SIZE, SIZE, 3)).astype(np.float32)


# --- fixtures: one network per kind, built once ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet18():
    entry = catalog.parse("timm:resnet18.a1_in1k")
    return entry, catalog.build(entry, input_shape=(SIZE, SIZE, 3))


@pytest.fixture(scope="module")
def resnet50d():
    entry = catalog.parse("timm:resnet50d.ra2_in1k")
    return entry, catalog.build(entry, input_shape=(SIZE, SIZE, 3))


def stem_output(model, x):
    import keras

    return keras.Model(model.input, model.get_layer("pool1_pool").output)(x, training=False).numpy()


def test_synthesised_state_dicts_have_the_sources_key_counts():
    for net, count in TORCH_KEY_COUNTS.items():
        assert len(torch_shapes(net)) == count, net


# --- (a) + (b): every weight lands, and the network computes what the source's does ----------------------------------
@pytest.mark.parametrize("fixture", ["resnet18", "resnet50d"])
def test_loaded_network_equals_a_numpy_forward_of_the_state_dict(fixture, request):
    entry, model = request.getfixturevalue(fixture)
    state = synth_state(entry.arch, seed=3)
    report = mapping.load_torch_state_dict(model, state, source_name=entry.spec)

    weights = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert report["tensors"] == len(weights)
    assert report["parameters"] == sum(v.size for v in weights.values())
    assert report["ignored"] == len(state) - len(weights)
    assert report["classifier"] == "loaded" and report["unused"] == []
    # Every weight of the network came from the file (the normalization's mean and std are the catalog's).
    ours = sum(int(np.prod(w.shape)) for w in model.weights if not w.path.startswith("normalization/"))
    assert ours == report["parameters"]

    # A few by hand, after transposition.
    deep = entry.arch == "resnet50d"
    stem_conv, stem_key = ("conv1_1_conv", "conv1.0.weight") if deep else ("conv1_conv", "conv1.weight")
    np.testing.assert_array_equal(
        model.get_layer(stem_conv).kernel.numpy(), np.transpose(state[stem_key], (2, 3, 1, 0))
    )
    last_bn = "conv1_3_bn" if deep else "conv1_bn"
    np.testing.assert_array_equal(model.get_layer(last_bn).moving_variance.numpy(), state["bn1.running_var"])
    np.testing.assert_array_equal(model.get_layer(last_bn).gamma.numpy(), state["bn1.weight"])
    np.testing.assert_array_equal(model.get_layer(last_bn).beta.numpy(), state["bn1.bias"])
    np.testing.assert_array_equal(model.get_layer(last_bn).moving_mean.numpy(), state["bn1.running_mean"])
    np.testing.assert_array_equal(
        model.get_layer("conv2_block2_2_conv").kernel.numpy(),
        np.transpose(state["layer1.1.conv2.weight"], (2, 3, 1, 0)),
    )
    shortcut_key = "layer2.0.downsample.1.weight" if deep else "layer2.0.downsample.0.weight"
    np.testing.assert_array_equal(
        model.get_layer("conv3_block1_0_conv").kernel.numpy(), np.transpose(state[shortcut_key], (2, 3, 1, 0))
    )
    np.testing.assert_array_equal(model.get_layer("logits").kernel.numpy(), state["fc.weight"].T)
    np.testing.assert_array_equal(model.get_layer("logits").bias.numpy(), state["fc.bias"])

    # The stem, then the whole network, against float64 NumPy with PyTorch's padding.
    x = images()
    expected = np_stem(state, x, entry.mean, entry.std).transpose(0, 2, 3, 1)
    assert relative_error(stem_output(model, x), expected) < 1e-4
    logits = model(x, training=False).numpy()
    assert relative_error(logits, np_forward(state, x, entry.mean, entry.std)) < 1e-4


def test_our_names_of_the_deep_stem_and_avg_down(resnet50d):
    _, model = resnet50d
    names = mapping.torch_names(model)
    assert names["conv1_2_conv/kernel"] == ("conv1.3.weight", mapping.CONV)
    assert names["conv1_2_bn/moving_variance"] == ("conv1.4.running_var", mapping.SAME)
    assert names["conv1_3_conv/kernel"] == ("conv1.6.weight", mapping.CONV)
    assert names["conv1_3_bn/gamma"] == ("bn1.weight", mapping.SAME)
    # avg_down: index 0 of timm's downsample is the pooling (an Identity in layer1), so the conv is .1 everywhere.
    assert names["conv2_block1_0_conv/kernel"] == ("layer1.0.downsample.1.weight", mapping.CONV)
    assert names["conv4_block1_0_bn/beta"] == ("layer3.0.downsample.2.bias", mapping.SAME)
    assert names["logits/kernel"] == ("fc.weight", mapping.LINEAR)
    # The 1x1 convs are MatmulConv2D, whose kernel is Conv2D's (1, 1, in, out): the same transpose applies.
    assert type(model.get_layer("conv2_block1_1_conv")).__name__ == "MatmulConv2D"
    assert tuple(model.get_layer("conv2_block1_1_conv").kernel.shape) == (1, 1, 64, 64)
    assert len(names) == TORCH_KEY_COUNTS["resnet50d"] - 55  # 55 BNs, each with a num_batches_tracked


# --- (c) refusals ----------------------------------------------------------------------------------------------------
def test_resnet34_weights_into_resnet18_name_the_first_extra_key(resnet18):
    _, model = resnet18
    with pytest.raises(ValueError, match=r"layer1\.2\.conv1\.weight .*no such tensor.*\(resnet34\?\)") as info:
        mapping.load_torch_state_dict(model, synth_state("resnet34"), source_name="timm:resnet34.a1_in1k")
    assert "\n" not in str(info.value)


def test_resnet50_weights_into_resnet18_name_the_first_shape_mismatch(resnet18):
    _, model = resnet18
    message = (
        r"layer1\.0\.conv1\.weight has shape \(64, 64, 1, 1\) in the file but this resnet18 expects "
        r"\(64, 64, 3, 3\): the file is another network \(resnet50\?\)"
    )
    with pytest.raises(ValueError, match=message):
        mapping.load_torch_state_dict(model, synth_state("resnet50"))


def test_a_truncated_state_dict_names_the_missing_key(resnet18):
    _, model = resnet18
    state = synth_state("resnet18")
    del state["layer3.1.bn2.running_var"]
    with pytest.raises(ValueError, match=r"layer3\.1\.bn2\.running_var \(256,\) is missing.*truncated"):
        mapping.load_torch_state_dict(model, state)
    state = synth_state("resnet18")
    state = {f"module.{k}": v for k, v in state.items()}
    with pytest.raises(ValueError, match=r"conv1\.weight .* is missing.*'module\.' prefix"):
        mapping.load_torch_state_dict(model, state)


def test_an_extra_key_is_named(resnet18):
    _, model = resnet18
    state = synth_state("resnet18")
    state["conv1.bias"] = np.zeros(64, np.float32)
    with pytest.raises(ValueError, match=r"conv1\.bias \(64,\) is in the file but this resnet18 has no such tensor"):
        mapping.load_torch_state_dict(model, state)


def test_nothing_is_assigned_when_a_check_fails(resnet18):
    _, model = resnet18
    before = model.get_layer("conv1_conv").kernel.numpy().copy()
    state = synth_state("resnet18", seed=9)
    state["layer4.1.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="layer4.1.extra.weight"):
        mapping.load_torch_state_dict(model, state)
    np.testing.assert_array_equal(model.get_layer("conv1_conv").kernel.numpy(), before)


def test_another_classifier_size_is_refused_unless_skipped():
    entry = catalog.parse("torchvision:resnet18")
    model = catalog.build(entry, num_classes=10, input_shape=(SIZE, SIZE, 3))
    state = synth_state("resnet18")
    with pytest.raises(ValueError, match=r"fc\.weight has shape \(1000, 512\).*expects \(10, 512\).*skip_classifier"):
        mapping.load_torch_state_dict(model, state, source_name=entry.spec)
    head = model.get_layer("logits").kernel.numpy().copy()
    report = mapping.load_torch_state_dict(model, state, source_name=entry.spec, skip_classifier=True)
    assert report["classifier"] == "skipped" and report["unused"] == ["fc.bias", "fc.weight"]
    np.testing.assert_array_equal(model.get_layer("logits").kernel.numpy(), head)
    np.testing.assert_array_equal(
        model.get_layer("conv1_conv").kernel.numpy(), np.transpose(state["conv1.weight"], (2, 3, 1, 0))
    )
    # A headless backbone takes the file and leaves its classifier unused.
    backbone = catalog.build(entry, include_top=False, input_shape=(SIZE, SIZE, 3))
    report = mapping.load_torch_state_dict(backbone, state)
    assert report["classifier"] == "absent" and report["unused"] == ["fc.bias", "fc.weight"]
    # A classifier-less file into a network with one: refused unless skipped.
    del state["fc.weight"], state["fc.bias"]
    with pytest.raises(ValueError, match=r"fc\.weight \(10, 512\) is missing.*skip_classifier=True"):
        mapping.load_torch_state_dict(model, state)
    assert mapping.load_torch_state_dict(model, state, skip_classifier=True)["unused"] == []


def test_v1_and_v1_5_cannot_be_told_apart_so_the_catalog_builds_v1_5():
    # A resnet50 checkpoint has the same tensors whichever conv of a bottleneck strides: it loads into either
    # network, and only the catalog says which one the weights were trained in (torchvision's: v1.5).
    state = synth_state("resnet50")
    entry = catalog.parse("torchvision:resnet50")
    assert entry.model_options["bottleneck_version"] == "v1.5"
    model = catalog.build(entry, input_shape=(SIZE, SIZE, 3))
    assert model.get_layer("conv3_block1_1_conv").strides == (1, 1)
    assert model.get_layer("conv3_block1_2_conv").strides == (2, 2)
    assert mapping.load_torch_state_dict(model, state)["tensors"] == 320 - 53
    v1 = get_model("resnet50", num_classes=1000, input_shape=(SIZE, SIZE, 3), bottleneck_version="v1")
    assert mapping.load_torch_state_dict(v1, state)["tensors"] == 320 - 53


def test_networks_no_source_has_are_refused():
    with pytest.raises(ValueError, match="not an ImageNet network"):
        mapping.torch_names(get_model("resnet20", num_classes=10))
    blurred = get_model("resnet18", num_classes=1000, input_shape=(SIZE, SIZE, 3), blur_pool="stem")
    with pytest.raises(ValueError, match="anti-aliased.*pool1_blur"):
        mapping.load_torch_state_dict(blurred, synth_state("resnet18"))


def test_another_bn_epsilon_is_absorbed_into_the_moving_variance():
    model = get_model(
        "resnet18", num_classes=1000, input_shape=(SIZE, SIZE, 3), normalization="channel", bn_epsilon=1e-3
    )
    entry = catalog.parse("torchvision:resnet18")
    get_normalization(model).set_statistics(entry.mean_255, entry.std_255)
    state = synth_state("resnet18", seed=5)
    mapping.load_torch_state_dict(model, state)
    np.testing.assert_allclose(
        model.get_layer("conv1_bn").moving_variance.numpy(), state["bn1.running_var"] + (1e-5 - 1e-3), rtol=1e-6
    )
    x = images(2)
    expected = np_stem(state, x, entry.mean, entry.std).transpose(0, 2, 3, 1)
    assert relative_error(stem_output(model, x), expected) < 1e-4


# --- (d) keras-hub names ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["resnet18", "resnet50d"])
def test_keras_hub_layers_load_as_the_same_weights_by_torch_names(fixture, request):
    entry, model = request.getfixturevalue(fixture)
    state = synth_state(entry.arch, seed=4)
    hub = keras_hub_layers(state)
    report = mapping.load_keras_hub_weights(model, hub, source_name="keras-hub:test")
    assert report["classifier"] == "loaded" and report["unused"] == [] and report["ignored"] == 3
    x = images(3)
    through_hub = model(x, training=False).numpy()
    mapping.load_torch_state_dict(model, synth_state(entry.arch, seed=11))  # something else in between
    mapping.load_torch_state_dict(model, state)
    np.testing.assert_array_equal(model(x, training=False).numpy(), through_hub)


def test_keras_hub_names(resnet18, resnet50d):
    names = mapping.keras_hub_names(resnet18[1])
    assert names["conv1_conv"] == "conv1_conv" and names["conv1_bn"] == "conv1_bn"
    assert names["conv2_block1_1_conv"] == "stack0_block0_1_conv"
    assert names["conv5_block2_2_bn"] == "stack3_block1_2_bn"
    assert names["conv3_block1_0_conv"] == "stack1_block0_0_conv"
    assert names["logits"] == "predictions"
    names = mapping.keras_hub_names(resnet50d[1])
    assert [names[f"conv1_{i}_{k}"] for i in (1, 2, 3) for k in ("conv", "bn")] == [
        "conv1_conv",
        "conv1_bn",
        "conv2_conv",
        "conv2_bn",
        "conv3_conv",
        "conv3_bn",
    ]
    assert names["conv2_block1_0_conv"] == "stack0_block0_0_conv"  # a bottleneck's first block projects (64 -> 256)
    assert names["conv4_block6_3_bn"] == "stack2_block5_3_bn"


def test_keras_hub_refusals(resnet18):
    _, model = resnet18
    hub = keras_hub_layers(synth_state("resnet18"))
    # basic_block_vd's projection in the first block (resnet_vd_18/34): no network of ours has one.
    vd = {**hub, "stack0_block0_0_conv": [np.zeros((1, 1, 64, 64), np.float32)]}
    with pytest.raises(ValueError, match=r"stack0_block0_0_conv is a projection shortcut in the first block.*vd"):
        mapping.load_keras_hub_weights(model, vd)
    wrong = {**hub, "predictions": [np.zeros((512, 10), np.float32), np.zeros(10, np.float32)]}
    with pytest.raises(ValueError, match=r"predictions/0 \(kernel\) has shape \(512, 10\).*skip_classifier"):
        mapping.load_keras_hub_weights(model, wrong)
    assert mapping.load_keras_hub_weights(model, wrong, skip_classifier=True)["classifier"] == "skipped"
    missing = {k: v for k, v in hub.items() if k != "stack2_block1_2_bn"}
    with pytest.raises(ValueError, match=r"layer stack2_block1_2_bn is missing.*truncated"):
        mapping.load_keras_hub_weights(model, missing)
    backbone_only = {k: v for k, v in hub.items() if k != "predictions"}
    with pytest.raises(ValueError, match=r"layer predictions is missing.*task\.weights\.h5"):
        mapping.load_keras_hub_weights(model, backbone_only)
    short = {**hub, "conv1_bn": hub["conv1_bn"][:2]}
    with pytest.raises(ValueError, match=r"layer conv1_bn has 2 arrays in the file but .* has 4"):
        mapping.load_keras_hub_weights(model, short)
    deeper = keras_hub_layers(synth_state("resnet34"))
    with pytest.raises(ValueError, match=r"layer stack0_block2_1_conv .* no such layer.*\(resnet34\?\)"):
        mapping.load_keras_hub_weights(model, deeper)


# --- (e) catalog spelling ---------------------------------------------------------------------------------------------
def test_catalog_spellings():
    assert catalog.parse("torchvision:resnet50").name == "resnet50.IMAGENET1K_V2"
    assert catalog.parse("torchvision:resnet50.DEFAULT").name == "resnet50.IMAGENET1K_V2"
    assert catalog.parse("torchvision:resnet18").name == "resnet18.IMAGENET1K_V1"
    assert catalog.parse("torchvision:resnet34.DEFAULT").name == "resnet34.IMAGENET1K_V1"
    v1 = catalog.parse("torchvision:resnet50.IMAGENET1K_V1")
    assert (v1.file_name, v1.sha256_prefix, v1.top1) == ("resnet50-0676ba61.pth", "0676ba61", 76.130)
    assert v1.url == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert v1.resize_size == 256 and v1.crop_pct == 0.875 and v1.path is None
    timm = catalog.parse("timm:resnet50d.ra2_in1k")
    assert (timm.arch, timm.repo_id, timm.file_name) == ("resnet50d", "timm/resnet50d.ra2_in1k", "model.safetensors")
    assert (timm.interpolation, timm.crop_pct, timm.test_input_size, timm.top1) == ("bicubic", 0.875, 288, 80.546)
    assert catalog.parse("timm:resnet50.tv2_in1k").input_size == 176
    hub = catalog.parse("keras-hub:resnet_50_imagenet")
    assert hub.kaggle_handle == "kaggle://keras/resnetv1/keras/resnet_50_imagenet/3"
    assert hub.origin == "timm/resnet50.a1_in1k" and hub.arch == "resnet50"
    assert catalog.parse("keras-hub:resnet_vd_101_imagenet").arch == "resnet101d"
    for spec in ("torchvision:resnet152.IMAGENET1K_V2", "timm:resnet34.a1_in1k", "keras-hub:resnet_18_imagenet"):
        assert catalog.parse(spec).spec == spec
    with_path = catalog.parse("timm:resnet18.tv_in1k=/data/weights/model.safetensors")
    assert with_path.path == "/data/weights/model.safetensors" and with_path.name == "resnet18.tv_in1k"
    assert with_path.spec == "timm:resnet18.tv_in1k=/data/weights/model.safetensors"
    assert catalog.parse("torchvision:resnet50=C:/w/r50.pth").path == "C:/w/r50.pth"
    assert catalog.parse("torchvision:resnet50=x=y").path == "x=y"
    assert [e.spec for e in catalog.entries("timm")] == [f"timm:{n}" for n in catalog.names("timm")]
    assert len(catalog.entries()) == 8 + 13 + 11


@pytest.mark.parametrize(
    "spec, listed",
    [
        ("keras_hub:resnet_50_imagenet", ["torchvision (e.g. torchvision:resnet50)", "timm (e.g. timm:", "keras-hub"]),
        ("resnet50", ["SOURCE is one of torchvision"]),
        ("torchvision:resnet51", ["resnet18 (= resnet18.IMAGENET1K_V1)", "resnet152.IMAGENET1K_V2", "DEFAULT"]),
        ("torchvision:resnet50.IMAGENET1K_V3", ["resnet50.IMAGENET1K_V1", "resnet50.IMAGENET1K_V2"]),
        ("torchvision:resnet50.imagenet1k_v2", ["resnet50.IMAGENET1K_V2"]),
        ("timm:resnet50", ["needs a tag", "resnet50.tv_in1k, resnet50.tv2_in1k, resnet50.a1_in1k"]),
        ("timm:resnet50.a2_in1k", ["resnet18.tv_in1k", "resnet50d.a1_in1k", "resnet152.tv2_in1k"]),
        ("timm:", ["timm knows: resnet18.tv_in1k"]),
        ("keras-hub:resnet_34_imagenet", ["resnet_18_imagenet", "resnet_vd_152_imagenet"]),
        ("keras-hub:resnet_vd_18_imagenet", ["resnet_vd_18 has a projection shortcut in its first block"]),
        ("keras-hub:resnet_vd_200_imagenet", ["no row", "resnet_vd_50_imagenet"]),
        ("keras-hub:resnet_v2_50_imagenet", ["pre-activation"]),
        ("timm:resnet18.tv_in1k=", ["no path"]),
    ],
)
def test_catalog_refusals_list_the_right_spellings(spec, listed):
    with pytest.raises(ValueError) as info:
        catalog.parse(spec)
    message = str(info.value)
    assert "\n" not in message
    for text in listed:
        assert text in message, (text, message)


# --- (f) the networks the catalog builds ------------------------------------------------------------------------------
def test_every_entry_names_a_network_we_build_with_the_sources_tweaks():
    for entry in catalog.entries():
        spec = resolve_spec(entry.arch).with_tweaks(
            **{k: v for k, v in entry.model_options.items() if k not in ("shortcut",)}
        )
        assert entry.model_options["shortcut"] == "B"
        if spec.block == "bottleneck":
            assert spec.bottleneck_version == "v1.5", entry.spec
        expected_d = entry.arch.endswith("d")
        assert (spec.stem == "deep") == expected_d and (spec.shortcut_downsample == "avgpool") == expected_d
        assert spec.blur_pool == "none"
        assert entry.mean == (0.485, 0.456, 0.406) and entry.std == (0.229, 0.224, 0.225)
    archs = {e.source: set() for e in catalog.entries()}
    for e in catalog.entries():
        archs[e.source].add(e.arch)
    assert archs["torchvision"] == {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}
    assert archs["keras-hub"] == {
        "resnet18",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnet50d",
        "resnet101d",
        "resnet152d",
    }


def test_build_sets_the_sources_normalization_and_any_input_size():
    entry = catalog.parse("torchvision:resnet18")
    model = catalog.build(entry)
    assert tuple(model.input.shape) == (None, None, None, 3)
    normalization = get_normalization(model)
    np.testing.assert_allclose(normalization.mean.numpy(), [123.675, 116.28, 103.53], rtol=1e-6)
    np.testing.assert_allclose(normalization.std.numpy(), [58.395, 57.12, 57.375], rtol=1e-6)
    # torchvision's published parameter count (classifier included) is ours.
    assert count_params(model, trainable_only=True) == entry.num_params == 11689512


def test_keras_hub_published_parameter_counts_match_our_networks(resnet18, resnet50d):
    def ours(model, head):
        return sum(
            int(np.prod(w.shape))
            for w in model.weights
            if not w.path.startswith("normalization/") and (head or not w.path.startswith("logits/"))
        )

    # keras-hub's "params" (resnet_presets.py): the v1 presets count the backbone, BN statistics included; the vd
    # presets count the classifier too. resnet_vd_50_imagenet: 25,629,512.
    assert ours(resnet18[1], head=False) == 11186112
    assert ours(resnet50d[1], head=True) == 25629512
