"""The "bag of tricks" tweaks (He et al. 2019, arXiv:1812.01187) as options of
the architecture table: ResNet-B (v1.5 bottleneck), ResNet-C (deep stem) and
ResNet-D (average-pooled projection shortcut); the named rows resnet18d,
resnet34d, resnet50d, ...; their exact costs against timm's figures; and that
they save, load, convert and ship like every other network. Then Zhang's
anti-aliased downsampling (2019, arXiv:1904.11486), the ``blur_pool`` option:
the same stage shapes and trainable parameters, a fixed binomial kernel that
training leaves alone, its exact cost, and the same saving, converting and
shipping."""

import json

import keras
import numpy as np
import pytest

import resnet_keras
from resnet_keras import TIMM_NUMBERS, count_flops, count_params, get_model, list_models, pretrained, resolve_spec
from resnet_keras.models import build_settings

D_NAMES = ["resnet18d", "resnet34d", "resnet50d", "resnet101d", "resnet152d"]
# The deep stem (3x3x3x32, 3x3x32x32, 3x3x32x64 convs and their BNs) less the
# 7x7x3x64 conv and its BN it replaces: 28,512 - 9,408 kernel weights, and
# 2 x (32 + 32 + 64) - 2 x 64 learned BN weights (twice that with the moving
# statistics). The D shortcut adds none: the pooling has no weights.
DEEP_STEM_EXTRA_LEARNED = (28_512 - 9_408) + 2 * (32 + 32 + 64 - 64)
DEEP_STEM_EXTRA_KERAS = (28_512 - 9_408) + 4 * (32 + 32 + 64 - 64)
# trainable parameters, classifier included: torchvision's counts of resnet18/34/50
# (11,689,512, 21,797,672, 25,557,032, which the resnet rows reproduce) plus the deep stem.
EXACT_LEARNED = {
    "resnet18d": 11_689_512 + DEEP_STEM_EXTRA_LEARNED,  # 11,708,744
    "resnet34d": 21_797_672 + DEEP_STEM_EXTRA_LEARNED,  # 21,816,904
    "resnet50d": 25_557_032 + DEEP_STEM_EXTRA_LEARNED,  # 25,576,264
}
# count_params(head=False): PAPER.md's Keras backbone counts plus the deep stem.
EXACT_KERAS_BACKBONE = {
    "resnet18d": 11_186_112 + DEEP_STEM_EXTRA_KERAS,
    "resnet34d": 21_301_696 + DEEP_STEM_EXTRA_KERAS,
    "resnet50d": 23_561_152 + DEEP_STEM_EXTRA_KERAS,
}


def _stem_macs(out_size):
    """Multiply-adds of the deep stem and of the 7x7 conv, at a stem output of out_size^2."""
    deep = out_size**2 * (3 * 3 * 3 * 32 + 3 * 3 * 32 * 32 + 3 * 3 * 32 * 64)
    standard = out_size**2 * 7 * 7 * 3 * 64
    return deep, standard


def _small(name, **kwargs):
    return get_model(name, num_classes=10, input_shape=(64, 64, 3), **kwargs)


def _names(model):
    return {layer.name for layer in model.layers}


def test_named_rows_are_registered_as_data():
    for name in [*D_NAMES, "plain18c", "plain34c"]:
        assert name in list_models()
    for name in D_NAMES:
        spec = resolve_spec(name)
        assert (spec.family, spec.stem, spec.shortcut_downsample, spec.residual) == (
            "imagenet",
            "deep",
            "avgpool",
            True,
        )
        # timm's D networks stride the bottleneck's 3x3 (v1.5); basic blocks have no such choice.
        assert spec.bottleneck_version == ("v1.5" if spec.block == "bottleneck" else "v1")
        base = resolve_spec(name.removesuffix("d"))
        assert (spec.block, spec.stage_depths, spec.depth, spec.total_stride) == (
            base.block,
            base.stage_depths,
            base.depth,
            32,
        )
    assert resolve_spec("resnet50d").tweaks == "B+C+D" and resolve_spec("resnet18d").tweaks == "C+D"
    assert resolve_spec("plain18c").tweaks == "C" and not resolve_spec("plain18c").residual
    assert resolve_spec("resnet50").tweaks == ""
    with pytest.raises(ValueError, match="unknown architecture 'resnet50e'.*resnet50d.*plain34c"):
        get_model("resnet50e", num_classes=10)


def test_deep_stem_layers_shapes_and_strides():
    model = _small("resnet18d")
    names = _names(model)
    assert "conv1_conv" not in names
    for i, (c_in, c_out, stride, size) in enumerate([(3, 32, 2, 32), (32, 32, 1, 32), (32, 64, 1, 32)], start=1):
        conv = model.get_layer(f"conv1_{i}_conv")
        assert tuple(conv.kernel.shape) == (3, 3, c_in, c_out) and conv.strides == (stride, stride)
        assert not conv.use_bias
        assert tuple(model.get_layer(f"conv1_{i}_bn").output.shape[1:]) == (size, size, c_out)
        assert f"conv1_{i}_relu" in names
    assert "conv1_1_pad" in names  # padded 1 on every side, as Caffe and PyTorch
    assert tuple(model.get_layer("pool1_pool").output.shape[1:]) == (16, 16, 64)


def test_avgpool_shortcut_layers_shapes_and_strides():
    model = _small("resnet50d")
    names = _names(model)
    # conv2_block1 only changes channels (64 -> 256): a plain 1x1 of stride 1, no pooling.
    assert "conv2_block1_0_pool" not in names and model.get_layer("conv2_block1_0_conv").strides == (1, 1)
    for stage, size_in, c_in in [(3, 16, 256), (4, 8, 512), (5, 4, 1024)]:
        pool = model.get_layer(f"conv{stage}_block1_0_pool")
        assert isinstance(pool, keras.layers.AveragePooling2D)
        assert (pool.pool_size, pool.strides, pool.padding) == ((2, 2), (2, 2), "same")
        assert tuple(pool.input.shape[1:]) == (size_in, size_in, c_in)
        assert tuple(pool.output.shape[1:]) == (size_in // 2, size_in // 2, c_in)
        conv = model.get_layer(f"conv{stage}_block1_0_conv")
        assert conv.strides == (1, 1) and conv.input is pool.output
        # ResNet-B: the stride sits on the 3x3.
        assert model.get_layer(f"conv{stage}_block1_1_conv").strides == (1, 1)
        assert model.get_layer(f"conv{stage}_block1_2_conv").strides == (2, 2)
    assert sum(name.endswith("_0_pool") for name in names) == 3
    # Basic blocks: conv2_block1 keeps 64 channels, so it has no projection at all.
    basic = _names(_small("resnet18d"))
    assert "conv2_block1_0_conv" not in basic and {"conv3_block1_0_pool", "conv5_block1_0_pool"} <= basic


def test_avgpool_on_an_odd_map_averages_the_real_pixels_only():
    """72 px gives a 9x9 map into conv4: the pooling pads it to 10x10 and divides
    the last row and column by the pixels that exist, as timm's
    AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)."""
    model = get_model("resnet18d", num_classes=10, input_shape=(72, 72, 3))
    pool = model.get_layer("conv4_block1_0_pool")
    probe = keras.Model(model.input, [pool.input, pool.output])
    x, y = probe(np.random.default_rng(0).uniform(0, 255, (1, 72, 72, 3)).astype("float32"))
    x, y = np.asarray(x)[0], np.asarray(y)[0]
    assert x.shape[:2] == (9, 9) and y.shape[:2] == (5, 5)
    expected = np.stack(
        [np.stack([x[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(axis=(0, 1)) for j in range(5)]) for i in range(5)]
    )
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert model.get_layer("conv4_block1_add").output.shape[1:3] == (5, 5)  # the main path agrees


@pytest.mark.parametrize("name", EXACT_LEARNED)
def test_exact_parameter_counts_round_to_timms(build, name):
    model = build(name, size="small")
    learned = count_params(model, trainable_only=True)
    assert learned == EXACT_LEARNED[name]
    assert round(learned / 1e6, 2) == TIMM_NUMBERS[name]["params"] / 1e6
    assert count_params(model, head=False) == EXACT_KERAS_BACKBONE[name]
    # The D shortcut costs nothing: the same count as the C network alone.
    c_only = build(name.removesuffix("d"), size="small", stem="deep")
    assert count_params(c_only) == count_params(model)


def test_flops_at_a_small_input_are_the_deep_stem_more_than_v1_5(build):
    """At 64 px the stem's output is 32x32; the D shortcut's 1x1 conv makes the
    same output as the strided one, and pooling is not counted."""
    deep, standard = _stem_macs(32)
    assert deep == 29_196_288 and standard == 9_633_792
    d = count_flops(build("resnet50d", size="small"))
    b = count_flops(build("resnet50", size="small", bottleneck_version="v1.5"))
    assert d - b == deep - standard
    assert count_flops(build("resnet18d", size="small")) - count_flops(build("resnet18", size="small")) == (
        deep - standard
    )


@pytest.mark.parametrize("name", ["resnet18d", "resnet34d", "resnet50d"])  # 1-2 s each at 224 px: not slow
def test_flops_at_224_within_1_percent_of_timms(build, name):
    flops = count_flops(build(name))
    timm = TIMM_NUMBERS[name]["flops"]
    assert abs(flops - timm) / timm < 0.01, f"{name}: {flops / 1e9:.3f}G vs timm's {timm / 1e9}G"
    deep, standard = _stem_macs(112)
    base = "resnet50" if name == "resnet50d" else name.removesuffix("d")
    version = {"bottleneck_version": "v1.5"} if name == "resnet50d" else {}
    assert flops - count_flops(build(base, **version)) == deep - standard == 239_640_576


def test_options_build_any_combination():
    # C without D (timm's resnet50c): deep stem, strided projections, the v1 bottleneck by default.
    c = _small("resnet50", stem="deep")
    assert "conv1_1_conv" in _names(c) and "conv3_block1_0_pool" not in _names(c)
    assert c.get_layer("conv3_block1_0_conv").strides == (2, 2) and c.get_layer("conv3_block1_1_conv").strides == (2, 2)
    # D without C.
    d = _small("resnet18", shortcut_downsample="avgpool")
    assert "conv1_conv" in _names(d) and "conv3_block1_0_pool" in _names(d)
    # The D row with the B tweak taken back.
    v1 = _small("resnet50d", bottleneck_version="v1")
    assert v1.get_layer("conv3_block1_1_conv").strides == (2, 2) and "conv3_block1_0_pool" in _names(v1)
    # Every tweak taken back: resnet50 itself, layer for layer.
    undone = _small("resnet50d", stem="standard", shortcut_downsample="stride", bottleneck_version="v1")
    paper = _small("resnet50")
    assert _names(undone) == _names(paper) and count_params(undone) == count_params(paper)
    # Option C projects in every block; only the downsampling ones pool.
    all_proj = _small("resnet18d", shortcut="C")
    pools = sorted(n for n in _names(all_proj) if n.endswith("_0_pool"))
    assert pools == ["conv3_block1_0_pool", "conv4_block1_0_pool", "conv5_block1_0_pool"]
    assert "conv2_block1_0_conv" in _names(all_proj)
    # Width scales the deep stem too; a plain network takes the C stem.
    assert _small("resnet18d", width=0.5).get_layer("conv1_1_conv").filters == 16
    plain = _small("plain18c")
    assert "conv1_3_conv" in _names(plain) and not any(n.endswith("_add") for n in _names(plain))
    # Headless backbone.
    assert get_model("resnet50d", input_shape=(64, 64, 3), include_top=False).output_shape == (None, 2, 2, 2048)


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("resnet20", {"stem": "deep"}, r"^stem='deep' applies to ImageNet networks only"),
        ("resnet50", {"stem": "wide"}, r"^stem='wide'; expected one of \('standard', 'deep'\)$"),
        ("resnet50", {"stem": 3}, r"^stem=3; expected one of"),
        ("resnet50", {"shortcut_downsample": "maxpool"}, r"shortcut_downsample='maxpool'.*\('stride', 'avgpool'\)"),
        ("plain18", {"shortcut_downsample": "avgpool"}, "residual networks only"),
        ("resnet18d", {"shortcut": "A"}, r"shortcut 'A' has none; pass shortcut='B' or 'C'"),
        ("resnet20", {"shortcut_downsample": "avgpool"}, "shortcut 'A' has none"),
        ("resnet18d", {"bottleneck_version": "v1.5"}, "bottleneck networks only"),
        ("resnet50d", {"bottleneck_version": "v2"}, r"bottleneck_version='v2'; expected one of \('v1', 'v1.5'\)"),
        ("resnet20", {"blur_pool": "stem"}, r"^blur_pool='stem' applies to ImageNet networks only.*blur_pool='all'"),
        ("plain20", {"blur_pool": "stem"}, r"^blur_pool='stem' applies to ImageNet networks only"),
        ("resnet18", {"blur_pool": "max"}, r"^blur_pool='max'; expected one of \('none', 'stem', 'all'\)$"),
        ("resnet18", {"blur_pool": True}, r"^blur_pool=True; expected one of \('none', 'stem', 'all'\)$"),
    ],
)
def test_bad_tweaks_are_refused_in_one_line(name, kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        get_model(name, num_classes=10, **kwargs)
    assert "\n" not in str(info.value)


def _randomised(model, seed=0):
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape = tuple(weight.shape)
        if "moving_variance" in weight.path or weight.path.endswith("std"):
            weight.assign(rng.uniform(0.5, 2.0, shape).astype(weight.dtype))
        elif weight.path.endswith("normalization/mean"):
            weight.assign(rng.uniform(100, 150, shape).astype(weight.dtype))
        else:
            weight.assign(rng.normal(0, 0.1, shape).astype(weight.dtype))
    return model


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    model = _randomised(_small("resnet50d", stage_depths=(1, 1, 1, 1)))
    path = tmp_path / "resnet50d.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe mode: Keras' default
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)
    assert {"conv1_3_conv", "conv3_block1_0_pool"} <= _names(loaded)


def test_tflite_conversion_with_builtin_ops_only():
    from trainers.core import exporting

    # One block a stage (each stage's first block is where the D shortcut pools) converts in half the time.
    model = _randomised(_small("resnet18d", stage_depths=(1, 1, 1, 1)))
    run, ops, _ = exporting.tflite_runner(exporting.convert_tflite(model, "tflite"))
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
    assert "AVERAGE_POOL_2D" in ops  # the D shortcut's pooling, as a builtin
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(model(image[None].astype("float32"))))[0]
    np.testing.assert_allclose(run(image), expected, atol=1e-4)


def _ship(folder, monkeypatch, arch, name, build) -> dict:
    """A manifest in ``folder`` with one entry, ``folder/ARCH-NAME.weights.h5`` (already saved), made the package's."""
    entry = {
        "arch": arch,
        "name": name,
        "file": f"{arch}-{name}.weights.h5",
        "sha256": pretrained.sha256(folder / f"{arch}-{name}.weights.h5"),
        "build": build,
    }
    (folder / "manifest.json").write_text(json.dumps({"weights": [entry]}))
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", folder)
    monkeypatch.setattr(pretrained, "MANIFEST", folder / "manifest.json")
    return entry


def test_shipped_weights_record_and_check_the_tweaks(tmp_path, monkeypatch):
    """A manifest entry records stem and shortcut_downsample, so resnet18d's
    weights are refused for resnet18 settings; older entries, which record
    neither, mean the paper's and still load."""
    old = pretrained.find_weights("resnet20", "cifar10")
    assert "stem" not in old["build"] and "shortcut_downsample" not in old["build"]
    assert get_model("resnet20", num_classes=10, weights="cifar10").name == "resnet20"

    model = _randomised(_small("resnet18d"))
    model.save_weights(tmp_path / "resnet18d-demo.weights.h5")
    settings = dict(
        num_classes=10,
        input_shape=(64, 64, 3),
        shortcut="B",
        width=1.0,
        stage_depths=(2, 2, 2, 2),
        bottleneck_version="v1",
        normalization="pixel",
    )
    build = build_settings(**settings, stem="deep", shortcut_downsample="avgpool")
    assert (build["stem"], build["shortcut_downsample"]) == ("deep", "avgpool")
    entry = _ship(tmp_path, monkeypatch, "resnet18d", "demo", build)

    loaded = _small("resnet18d", weights="demo")
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"shortcut_downsample='stride' \(the weights': 'avgpool'\)"):
        _small("resnet18d", weights="demo", shortcut_downsample="stride")
    with pytest.raises(ValueError, match=r"stem='standard' \(the weights': 'deep'\)"):
        _small("resnet18d", weights="demo", stem="standard")
    # The same numbers recorded without the tweaks: an entry of the paper's network.
    with pytest.raises(ValueError, match=r"stem='deep' \(the weights': 'standard'\)"):
        pretrained.check_request({**entry, "build": build_settings(**settings)}, build)
    assert resnet_keras.count_params(loaded) == resnet_keras.count_params(model)


def test_a_tweaked_network_trains_ships_and_loads_by_name(tmp_path, monkeypatch, float32_policy):
    """fit.py trains resnet18d by name; ship_weights records its tweaks, so
    get_model("resnet18d", weights=...) loads the file and a resnet18 is refused."""
    from resnet_keras import pretrained
    from trainers import fit, ship_weights
    from trainers.core.sources import load_keras_model

    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    run = tmp_path / "run"
    # A quarter of the width keeps the file under the shipped-file limit (8 MiB).
    args = ["--arch", "resnet18d", "--width", "0.25", "--dataset", "synthetic", "--image-size", "32"]
    args += ["--synthetic-train", "64"]
    args += ["--synthetic-test", "32", "--batch-size", "16", "--steps", "2", "--precision", "float32", "--verbose", "0"]
    fit.main([*args, "--output-dir", str(run)])
    weights_dir = tmp_path / "weights"
    entry = ship_weights.main([str(run), "--name", "demo", "--weights-dir", str(weights_dir), "--allow-synthetic"])
    assert entry["build"]["stem"] == "deep" and entry["build"]["shortcut_downsample"] == "avgpool"

    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", weights_dir)
    monkeypatch.setattr(pretrained, "MANIFEST", weights_dir / "manifest.json")
    model = resnet_keras.get_model("resnet18d", num_classes=10, input_shape=(32, 32, 3), width=0.25, weights="demo")
    trained = load_keras_model(run / "model.keras")
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.predict_on_batch(images), trained.predict_on_batch(images), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="demo"):
        resnet_keras.get_model("resnet18", num_classes=10, input_shape=(32, 32, 3), width=0.25, weights="demo")


def test_tweaks_given_as_fit_flags_train_ship_and_load(tmp_path, monkeypatch, float32_policy):
    """fit.py --stem/--shortcut-downsample/--blur-pool on a network whose row has
    none of them: the run builds them, ship_weights records them, and the
    weights load by name with the same overrides (and through weights:ARCH/NAME)."""
    from resnet_keras import pretrained
    from trainers import fit, ship_weights
    from trainers.core.sources import load_keras_model, load_trained

    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    run = tmp_path / "run"
    args = ["--arch", "resnet18", "--width", "0.25", "--dataset", "synthetic", "--image-size", "32"]
    args += ["--synthetic-train", "64", "--synthetic-test", "32", "--batch-size", "16", "--steps", "2"]
    args += ["--precision", "float32", "--verbose", "0"]
    args += ["--stem", "deep", "--shortcut-downsample", "avgpool", "--blur-pool", "all"]
    fit.main([*args, "--output-dir", str(run)])
    trained = load_keras_model(run / "model.keras")
    assert trained.get_layer("conv1_1_conv") and trained.get_layer("pool1_blur")
    weights_dir = tmp_path / "weights"
    entry = ship_weights.main([str(run), "--name", "demo", "--weights-dir", str(weights_dir), "--allow-synthetic"])
    assert (entry["build"]["stem"], entry["build"]["shortcut_downsample"], entry["build"]["blur_pool"]) == (
        "deep",
        "avgpool",
        "all",
    )
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", weights_dir)
    monkeypatch.setattr(pretrained, "MANIFEST", weights_dir / "manifest.json")
    tweaks = dict(stem="deep", shortcut_downsample="avgpool", blur_pool="all")
    model = resnet_keras.get_model(
        "resnet18", num_classes=10, input_shape=(32, 32, 3), width=0.25, weights="demo", **tweaks
    )
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    expected = trained.predict_on_batch(images)
    np.testing.assert_allclose(model.predict_on_batch(images), expected, rtol=1e-5, atol=1e-5)
    shipped = load_trained("weights:resnet18/demo").model
    np.testing.assert_allclose(shipped.predict_on_batch(images), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="blur_pool"):
        resnet_keras.get_model(
            "resnet18",
            num_classes=10,
            input_shape=(32, 32, 3),
            width=0.25,
            weights="demo",
            stem="deep",
            shortcut_downsample="avgpool",
        )


# ---------------------------------------------------------------- blur pool
BINOMIAL_3X3 = np.outer([1, 2, 1], [1, 2, 1]) / 16


def _blurs(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.DepthwiseConv2D)]


def _shapes(model):
    return {layer.name: tuple(layer.output.shape) for layer in model.layers}


BLUR_CASES = [
    ("resnet18", "stem", {}),
    ("resnet18", "all", {}),
    ("resnet50", "all", {"bottleneck_version": "v1"}),
    ("resnet50", "all", {"bottleneck_version": "v1.5"}),
]


@pytest.mark.parametrize("name, blur_pool, kwargs", BLUR_CASES)
def test_blur_keeps_every_stage_shape_and_blurs_where_the_stride_was(build, name, blur_pool, kwargs):
    """At 128 px the blurred network's stages, blocks and output have the shapes
    of the network without blur; each blur has the shape the strided layer it
    replaces had, and no conv of a block strides any more under "all"."""
    plain = _shapes(build(name, size=128, **kwargs))
    model = build(name, size=128, blur_pool=blur_pool, **kwargs)
    blurred = _shapes(model)
    for layer_name, shape in plain.items():
        if layer_name.endswith(("_out", "_add", "_0_bn", "_3_bn")) or layer_name in ("avg_pool", "logits"):
            assert blurred[layer_name] == shape, layer_name
    assert blurred["pool1_blur"] == plain["pool1_pool"] == (None, 32, 32, 64)
    pool = model.get_layer("pool1_pool")
    assert (pool.pool_size, pool.strides, pool.padding) == ((3, 3), (1, 1), "same")
    assert "pool1_pad" not in blurred and blurred["pool1_pool"] == (None, 64, 64, 64)
    if blur_pool == "stem":
        assert [layer.name for layer in _blurs(model)] == ["pool1_blur"]
        assert model.get_layer("conv3_block1_1_conv").strides == (2, 2)
        return
    # The stride sits on the 1x1 in v1, on the 3x3 in v1.5 and in basic blocks: the blur follows that conv's ReLU.
    strided = "2" if kwargs.get("bottleneck_version") == "v1.5" else "1"
    for stage in (3, 4, 5):
        block = f"conv{stage}_block1"
        blur = model.get_layer(f"{block}_{strided}_blur")
        assert blur.input is model.get_layer(f"{block}_{strided}_blur_pad").output
        assert model.get_layer(f"{block}_{strided}_blur_pad").input is model.get_layer(f"{block}_{strided}_relu").output
        assert blurred[f"{block}_{strided}_blur"] == plain[f"{block}_{strided}_relu"]
        assert blurred[f"{block}_{strided}_relu"][1] == 2 * plain[f"{block}_{strided}_relu"][1]
        # The projection blurs, then its 1x1 of stride 1 gives the strided one's shape.
        shortcut = model.get_layer(f"{block}_0_conv")
        assert shortcut.strides == (1, 1) and shortcut.input is model.get_layer(f"{block}_0_blur").output
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D) and "_block" in layer.name]
    assert all(conv.strides == (1, 1) for conv in convs)
    assert len(_blurs(model)) == 7  # the stem's, and two in the first block of stages 3, 4 and 5


@pytest.mark.parametrize("name, blur_pool, kwargs", BLUR_CASES)
def test_blur_adds_only_its_fixed_kernels(build, name, blur_pool, kwargs):
    """Trainable parameters are the network's without blur; the rest grows by
    the blur kernels alone, 9 weights a channel, none of them trainable."""
    plain = build(name, size=128, **kwargs)
    model = build(name, size=128, blur_pool=blur_pool, **kwargs)
    assert count_params(model, trainable_only=True) == count_params(plain, trainable_only=True)
    blurs = _blurs(model)
    channels = sum(layer.input.shape[-1] for layer in blurs)
    assert count_params(model) - count_params(plain) == 9 * channels
    # The stem's 64; resnet18's blocks blur 64+128, 128+256, 256+512 channels
    # (projection input, branch); resnet50's 256+128, 512+256, 1024+512 (v1 and v1.5 alike).
    assert channels == {("resnet18", "stem"): 64, ("resnet18", "all"): 1408, ("resnet50", "all"): 2752}[name, blur_pool]
    for layer in blurs:
        assert not layer.trainable and not layer.trainable_weights and not layer.use_bias
        assert (layer.kernel_size, layer.strides, layer.padding, layer.depth_multiplier) == ((3, 3), (2, 2), "valid", 1)
        kernel = layer.get_weights()[0]
        assert kernel.shape == (3, 3, layer.input.shape[-1], 1)
        np.testing.assert_array_equal(kernel, np.broadcast_to(BINOMIAL_3X3[:, :, None, None], kernel.shape))


def test_binomial_kernel_and_the_blur_as_a_filter():
    """The initializer's kernels are rows of Pascal's triangle normalised to one;
    the blur layer is that filter over the reflect-padded map, sampled at the
    even pixels (a NumPy reference), and keeps a constant image constant, the
    border too (reflection, not zeros, pads it)."""
    from resnet_keras.blocks import apply_blur

    init = resnet_keras.BinomialBlur()
    np.testing.assert_array_equal(np.asarray(init((3, 3, 2, 1)))[:, :, 1, 0], BINOMIAL_3X3)
    five = np.asarray(init((5, 5, 1, 1), dtype="float64"))[:, :, 0, 0]
    np.testing.assert_allclose(five, np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256, rtol=1e-15)

    inputs = keras.Input((9, 9, 3))
    blur = keras.Model(inputs, apply_blur(inputs, 2, name="probe_blur"))
    constant = np.full((1, 9, 9, 3), 37.5, "float32")
    out = np.asarray(blur(constant))
    assert out.shape == (1, 5, 5, 3)  # ceil(9 / 2), as a 3x3/2 conv padded 1
    np.testing.assert_allclose(out, 37.5, rtol=1e-6)

    x = np.random.default_rng(3).uniform(-1, 1, (1, 9, 9, 3)).astype("float32")
    padded = np.pad(x[0], ((1, 1), (1, 1), (0, 0)), mode="reflect")
    full = sum(BINOMIAL_3X3[i, j] * padded[i : i + 9, j : j + 9] for i in range(3) for j in range(3))
    np.testing.assert_allclose(np.asarray(blur(x))[0], full[::2, ::2], rtol=1e-5, atol=1e-6)


def test_blur_options_combine_with_the_other_tweaks():
    # ResNet-D's average pooling gives way to the blur in "all"; it stays with "stem".
    d_all = _small("resnet18d", blur_pool="all")
    assert not any(n.endswith("_0_pool") for n in _names(d_all)) and "conv3_block1_0_blur" in _names(d_all)
    d_stem = _small("resnet18d", blur_pool="stem")
    assert "conv3_block1_0_pool" in _names(d_stem) and "conv1_3_relu" in _names(d_stem)
    assert d_stem.get_layer("pool1_pool").input is d_stem.get_layer("conv1_3_relu").output
    # The stem's convolutions keep their stride (Zhang's and timm's default).
    assert d_all.get_layer("conv1_1_conv").strides == (2, 2)
    assert _small("resnet18", blur_pool="all").get_layer("conv1_conv").strides == (2, 2)
    # Option C: only the downsampling projections blur.
    c = _small("resnet18", shortcut="C", blur_pool="all")
    assert sorted(n for n in _names(c) if n.endswith("_0_blur")) == [f"conv{s}_block1_0_blur" for s in (3, 4, 5)]
    # A plain network blurs its strided convs; "none" is the paper's network, layer for layer.
    plain = _small("plain18", blur_pool="all")
    assert {"pool1_blur", "conv3_block1_1_blur"} <= _names(plain)
    assert not any(n.endswith("_0_blur") for n in _names(plain))
    assert _names(_small("resnet50", blur_pool="none")) == _names(_small("resnet50"))
    assert resolve_spec("resnet50").blur_pool == "none"
    with pytest.raises(ValueError, match="blur_pool='stem' applies to ImageNet networks only"):
        resnet_keras.ArchSpec("cifar", "basic", (3, 3, 3), blur_pool="stem")


def test_blur_all_on_cifar_blurs_the_branches_and_leaves_option_a(build):
    """CIFAR takes "all": the first conv of stages 2 and 3 blurs its stride; an
    option A shortcut keeps its subsampling, a B shortcut blurs before its 1x1."""
    plain = build("resnet20", size="small")
    model = build("resnet20", size="small", blur_pool="all")
    assert [layer.name for layer in _blurs(model)] == ["conv3_block1_1_blur", "conv4_block1_1_blur"]
    assert {"conv3_block1_0_zeropad", "conv4_block1_0_zeropad"} <= _names(model)
    assert count_params(model, trainable_only=True) == count_params(plain, trainable_only=True)
    assert count_params(model) - count_params(plain) == 9 * (32 + 64)
    for layer_name, shape in _shapes(plain).items():
        if layer_name.endswith("_out") or layer_name == "logits":
            assert _shapes(model)[layer_name] == shape
    b = build("resnet20", size="small", blur_pool="all", shortcut="B")
    assert {"conv3_block1_0_blur", "conv4_block1_0_blur"} <= _names(b)
    assert b.get_layer("conv3_block1_0_conv").strides == (1, 1)


def test_blur_flops_at_224(build):
    """count_flops counts the blurs (9 multiply-adds an output value) and the
    block convs that now run at twice the resolution."""
    none = count_flops(build("resnet18"))
    stem, everywhere = (count_flops(build("resnet18", blur_pool=b)) for b in ("stem", "all"))
    assert none == 1_814_073_344
    assert stem - none == 56 * 56 * 64 * 9  # the stem's blur
    # Each stage's first 3x3 (64->128, 128->256, 256->512) at four times the outputs,
    # then the blurs of the branch (128, 256, 512 channels) and the projection (64, 128, 256).
    convs = sum(3 * size**2 * 9 * c * 2 * c for size, c in ((28, 64), (14, 128), (7, 256)))
    blurs = sum(size**2 * 9 * 3 * c for size, c in ((28, 64), (14, 128), (7, 256)))
    assert everywhere - stem == convs + blurs
    assert (stem, everywhere) == (1_815_879_680, 2_338_475_264)
    # resnet50: the blur after the v1 bottleneck's 1x1 leaves its 3x3 at the low resolution;
    # after v1.5's 3x3, the 3x3 runs at four times the outputs (Zhang's ResNet-50).
    macs = {v: count_flops(build("resnet50", bottleneck_version=v, blur_pool="all")) for v in ("v1", "v1.5")}
    assert macs == {"v1": 4_095_732_224, "v1.5": 5_136_181_760}


def _randomised_but_blur(model, seed=0):
    blur_kernels = [(layer, layer.get_weights()) for layer in _blurs(model)]
    _randomised(model, seed)
    for layer, weights in blur_kernels:
        layer.set_weights(weights)
    return model


def test_blur_keras_file_round_trip_in_safe_mode(tmp_path):
    model = _randomised_but_blur(_small("resnet50", stage_depths=(1, 1, 1, 1), blur_pool="all"))
    path = tmp_path / "resnet50-blur.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe mode: Keras' default
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=0, atol=1e-6)
    for name in ("pool1_blur", "conv3_block1_1_blur", "conv3_block1_0_blur"):
        layer = loaded.get_layer(name)
        assert isinstance(layer, keras.layers.DepthwiseConv2D) and not layer.trainable
        assert isinstance(loaded.get_layer(f"{name}_pad"), resnet_keras.ReflectPadding2D)
        np.testing.assert_array_equal(layer.get_weights()[0][:, :, 0, 0], BINOMIAL_3X3)


def test_blur_tflite_conversion_with_builtin_ops_only():
    from trainers.core import exporting

    # One block a stage: every blur is in a stage's first block (or the stem).
    model = _randomised_but_blur(_small("resnet18", stage_depths=(1, 1, 1, 1), blur_pool="all"))
    run, ops, _ = exporting.tflite_runner(exporting.convert_tflite(model, "tflite"))
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
    assert {"DEPTHWISE_CONV_2D", "MIRROR_PAD"} <= set(ops)
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(model(image[None].astype("float32"))))[0]
    np.testing.assert_allclose(run(image), expected, atol=1e-4)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_a_training_step_leaves_the_blur_alone(policy, float32_policy):
    """One optimizer step changes the convolutions, not the blur kernels, which
    are not among the trainable weights; under mixed_bfloat16 the blur computes
    in bfloat16 like the convolutions, its kernel kept in float32."""
    keras.config.set_dtype_policy(policy)
    model = get_model(
        "resnet18", num_classes=4, input_shape=(32, 32, 3), width=0.25, stage_depths=(1, 1, 1, 1), blur_pool="all"
    )
    compute = "bfloat16" if policy == "mixed_bfloat16" else "float32"
    blurs = _blurs(model)
    assert len(blurs) == 7
    for layer in blurs:
        assert layer.compute_dtype == model.get_layer("conv1_conv").compute_dtype == compute
        assert layer.variable_dtype == "float32" and layer.output.dtype == compute
        assert layer.kernel.dtype == "float32"
    trainable = {id(w) for w in model.trainable_weights}
    assert not any(id(layer.kernel) in trainable for layer in blurs)
    before = {layer.name: layer.get_weights()[0] for layer in blurs}
    conv_before = model.get_layer("conv3_block1_1_conv").get_weights()[0]
    model.compile(
        optimizer=keras.optimizers.SGD(0.5, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(4)
    model.train_on_batch(rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32"), rng.integers(0, 4, (8,)))
    assert not np.array_equal(model.get_layer("conv3_block1_1_conv").get_weights()[0], conv_before)
    for layer in blurs:
        np.testing.assert_array_equal(layer.get_weights()[0], before[layer.name])


def test_shipped_weights_record_and_check_the_blur(tmp_path, monkeypatch):
    """A manifest entry records blur_pool, so weights of a blurred network load
    by name with the same setting and are refused without it; entries that do
    not record it mean "none"."""
    assert "blur_pool" not in pretrained.find_weights("resnet20", "cifar10")["build"]
    model = _randomised_but_blur(_small("resnet18", stage_depths=(1, 1, 1, 1), blur_pool="all"))
    model.save_weights(tmp_path / "resnet18-blur.weights.h5")
    settings = dict(
        num_classes=10,
        input_shape=(64, 64, 3),
        shortcut="B",
        width=1.0,
        stage_depths=(1, 1, 1, 1),
        bottleneck_version="v1",
        normalization="pixel",
    )
    build = build_settings(**settings, blur_pool="all")
    assert build["blur_pool"] == "all" and build_settings(**settings)["blur_pool"] == "none"
    entry = _ship(tmp_path, monkeypatch, "resnet18", "blur", build)

    loaded = _small("resnet18", stage_depths=(1, 1, 1, 1), blur_pool="all", weights="blur")
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"blur_pool='none' \(the weights': 'all'\)"):
        _small("resnet18", stage_depths=(1, 1, 1, 1), weights="blur")
    with pytest.raises(ValueError, match=r"blur_pool='stem' \(the weights': 'all'\)"):
        _small("resnet18", stage_depths=(1, 1, 1, 1), blur_pool="stem", weights="blur")
    # An entry that records no blur_pool is one of the paper's networks.
    old = {**entry, "build": {k: v for k, v in build.items() if k != "blur_pool"}}
    with pytest.raises(ValueError, match=r"blur_pool='all' \(the weights': 'none'\)"):
        pretrained.check_request(old, build)
