"""Builds any network of the paper from its :class:`~resnet_keras.specs.ArchSpec`.

``get_model`` is the only door: trainers, the tuner and the tests ask for a
network by name and never import an architecture.
"""

from __future__ import annotations

import keras
from keras import layers

from resnet_keras import pretrained
from resnet_keras.blocks import (
    SHORTCUTS,
    BlockOptions,
    apply_basic_block,
    apply_bottleneck_block,
    apply_deep_stem,
    apply_standard_stem,
    apply_stem_pool,
    conv_bn,
    layer_seed,
)
from resnet_keras.layers import NORMALIZATION_MODES, InputNormalization
from resnet_keras.specs import (
    BOTTLENECK_EXPANSION,
    DEEP_STEM_FILTERS,
    DEFAULT_BLUR_POOL,
    DEFAULT_SHORTCUT_DOWNSAMPLE,
    DEFAULT_STEM,
    STAGE_FILTERS,
    STEM_FILTERS,
    ArchSpec,
    check_stage_depths,
    resolve_spec,
)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def scaled_filters(filters: int, width: float) -> int:
    return max(1, int(round(filters * width)))


def get_model(
    name: str,
    *,
    num_classes: int | None = None,
    input_shape=None,
    include_top: bool = True,
    pooling: str | None = None,
    shortcut: str | None = None,
    width: float = 1.0,
    stage_depths=None,
    bottleneck_version: str | None = None,
    stem: str | None = None,
    shortcut_downsample: str | None = None,
    blur_pool: str | None = None,
    normalization: str | None = None,
    zero_init_residual: bool = False,
    bn_momentum: float = 0.9,
    bn_epsilon: float = 1e-5,
    synchronized_bn: bool = False,
    seed: int | None = None,
    weights: str | None = None,
) -> keras.Model:
    """A network of the paper by name, as a functional ``keras.Model`` that maps
    raw RGB pixels in [0, 255] to logits (no softmax: use ``from_logits=True``).

    Args:
        name: one of :func:`list_models`, or ``resnet<6n+2>`` / ``plain<6n+2>``.
        num_classes: size of the final dense layer (required with the
            classifier; leave it out with ``include_top=False``).
        input_shape: ``(H, W, C)``; default 32x32x3 (CIFAR) or 224x224x3
            (ImageNet). H and W may be ``None`` with ``normalization="channel"``.
        include_top: ``False`` builds the headless backbone (no global pooling
            and classifier), as ``keras.applications`` does: the last stage's
            feature map, or its pooled vector with ``pooling``.
        pooling: with ``include_top=False``: ``None`` (the 4D feature map of
            the last stage), ``"avg"`` or ``"max"`` (global pooling, 2D).
        shortcut: ``"A"``, ``"B"`` or ``"C"``; default the paper's choice (A for
            CIFAR, B for ImageNet). Plain networks take none.
        width: multiplier of every layer's filters (stem included).
        stage_depths: blocks per stage, overriding the name's (3 stages for
            CIFAR, 4 for ImageNet): ``get_model("resnet20", stage_depths=(4, 4, 4))``.
        bottleneck_version: ``"v1"`` (paper) or ``"v1.5"`` (stride on the 3x3,
            ResNet-B); default the name's (``"v1.5"`` for ``resnet50d``).
        stem: ``"standard"`` (the paper's 7x7/2 conv on ImageNet) or ``"deep"``
            (ResNet-C: three 3x3 convs, ImageNet only); default the name's.
        shortcut_downsample: ``"stride"`` (the paper's strided 1x1 projection)
            or ``"avgpool"`` (ResNet-D: 2x2/2 average pooling, then a 1x1 of
            stride 1; projection shortcuts only); default the name's.
            Any combination of the three builds, e.g. ``get_model("resnet50",
            stem="deep")`` is timm's resnet50c.
        blur_pool: anti-aliased downsampling of Zhang (2019, "Making
            Convolutional Networks Shift-Invariant Again", arXiv:1904.11486):
            ``"none"`` (the paper's), ``"stem"`` (the stem's max pool becomes a
            3x3/1 max pool and a 3x3 binomial blur of stride 2; ImageNet only)
            or ``"all"`` (also every strided conv of a block runs at stride 1
            and blurs with stride 2 after its ReLU, and a downsampling
            projection blurs before its 1x1 of stride 1); default the name's.
            The blur's kernel is fixed, so it adds no trainable parameters.
        normalization: ``"pixel"`` (a mean image, as the paper; the default) or
            ``"channel"`` (ImageNet weights of another library: the source's
            per-channel mean and std, their default).
        zero_init_residual: start each residual branch's last BN scale at zero.
        bn_momentum, bn_epsilon: BatchNormalization settings of every BN.
        synchronized_bn: compute BN batch statistics across all replicas of a
            distribution strategy (the same network; only training differs).
        seed: an integer makes the initial weights a function of it and of
            each layer's name alone, the same under any distribution strategy.
        weights: ``None`` (random initial weights), the name of trained
            weights shipped with the package for this network, e.g.
            ``get_model("resnet20", num_classes=10, weights="cifar10")``
            (:func:`resnet_keras.list_weights` lists them with their accuracy;
            the file's SHA-256 is checked against the manifest before loading,
            and the other arguments must match those the weights were trained
            with: class count, input shape, shortcut, width, depths, tweaks),
            or ImageNet weights of torchvision, timm or keras-hub spelled
            ``SOURCE:NAME[=PATH]``, e.g. ``get_model("resnet50d",
            num_classes=1000, weights="timm:resnet50d.ra2_in1k")``,
            ``"torchvision:resnet50"`` or ``"keras-hub:resnet_18_imagenet"``
            (``resnet_keras.ported.catalog`` lists them; ``=PATH`` names a file
            or folder already on disk, else the source's cache or a download
            is used). ``name`` must be the weights' network, which is built as
            the source built it (ResNet-B bottlenecks, the "d" networks' stem
            and shortcuts), with per-channel normalization set to the source's
            mean and std and input ``(None, None, 3)`` unless ``input_shape``
            is given; an option that would change it (``shortcut``, ``width``,
            ``stage_depths``, ``bottleneck_version``, ``stem``,
            ``shortcut_downsample``, ``blur_pool``, ``normalization``) is
            refused unless it is the weights' own. ``num_classes`` ``None`` or
            1000 keeps ImageNet's classifier; another count gets a new, random
            one (everything else loaded); ``include_top=False`` a backbone.
            ``resnet_keras.ported.load.load_imagenet`` does the same and also
            returns what was loaded, the check the file passed and the 1000
            class names.

    Raises:
        ValueError: naming the bad value and the valid choices.
    """
    spec = resolve_spec(name)
    if is_ported_weights(weights):
        return _ported_model(
            name,
            weights,
            num_classes=num_classes,
            input_shape=input_shape,
            include_top=include_top,
            pooling=pooling,
            network={
                "shortcut": shortcut,
                "width": width,
                "stage_depths": stage_depths,
                "bottleneck_version": bottleneck_version,
                "stem": stem,
                "shortcut_downsample": shortcut_downsample,
                "blur_pool": blur_pool,
                "normalization": normalization,
            },
            options={
                "zero_init_residual": zero_init_residual,
                "bn_momentum": bn_momentum,
                "bn_epsilon": bn_epsilon,
                "synchronized_bn": synchronized_bn,
                "seed": seed,
            },
        )
    if normalization is None:
        normalization = "pixel"
    if stage_depths is not None:
        spec = spec.with_stage_depths(check_stage_depths(spec.family, stage_depths))
    spec = spec.with_tweaks(
        stem=stem,
        shortcut_downsample=shortcut_downsample,
        bottleneck_version=bottleneck_version,
        blur_pool=blur_pool,
    )

    if not isinstance(include_top, bool):
        raise ValueError(f"include_top={include_top!r}; expected True or False")
    if include_top:
        if num_classes is None:
            raise ValueError("num_classes is required with the classifier (include_top=True)")
        if pooling is not None:
            raise ValueError(f"pooling={pooling!r} applies to include_top=False only (the classifier averages)")
    else:
        if num_classes is not None and weights is None:
            raise ValueError(f"num_classes={num_classes!r} sizes the classifier; include_top=False has none")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}; expected one of {POOLINGS}")
    if num_classes is not None and (
        not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1
    ):
        raise ValueError(f"num_classes={num_classes!r}; expected a positive integer")
    if not _is_number(width) or not 0 < width <= 64:
        raise ValueError(f"width={width!r}; expected a number in (0, 64]")
    if normalization not in NORMALIZATION_MODES:
        raise ValueError(f"normalization={normalization!r}; expected one of {NORMALIZATION_MODES}")
    if not _is_number(bn_momentum) or not 0.0 <= bn_momentum < 1.0:
        raise ValueError(f"bn_momentum={bn_momentum!r}; expected a number in [0, 1)")
    if not _is_number(bn_epsilon) or not bn_epsilon > 0:
        raise ValueError(f"bn_epsilon={bn_epsilon!r}; expected a positive number")
    for flag, value in (("zero_init_residual", zero_init_residual), ("synchronized_bn", synchronized_bn)):
        if not isinstance(value, bool):
            raise ValueError(f"{flag}={value!r}; expected True or False")
    shortcut = _check_shortcut(spec, name, shortcut)
    if shortcut == "A" and spec.shortcut_downsample != DEFAULT_SHORTCUT_DOWNSAMPLE:
        raise ValueError(
            f"shortcut_downsample={spec.shortcut_downsample!r} changes projection shortcuts, and shortcut 'A' "
            f"has none; pass shortcut='B' or 'C', or shortcut_downsample={DEFAULT_SHORTCUT_DOWNSAMPLE!r}"
        )
    input_shape = _check_input_shape(spec, name, input_shape, normalization)

    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise ValueError(f"seed={seed!r}; expected a non-negative integer or None")
    options = BlockOptions(
        shortcut=shortcut,
        bottleneck_version=spec.bottleneck_version,
        shortcut_downsample=spec.shortcut_downsample,
        blur_pool=spec.blur_pool,
        bn_momentum=float(bn_momentum),
        bn_epsilon=float(bn_epsilon),
        zero_init_residual=zero_init_residual,
        synchronized_bn=synchronized_bn,
        seed=seed,
    )
    entry = None
    if weights is not None:
        if not isinstance(weights, str):
            raise ValueError(
                f"weights={weights!r}; expected None or the name of shipped weights (or SOURCE:NAME[=PATH] for "
                "ImageNet weights of another library)"
            )
        entry = pretrained.find_weights(name, weights)
        if num_classes is None:  # a headless backbone of shipped weights: the classifier is dropped
            num_classes = entry["build"]["num_classes"]
        pretrained.check_request(
            entry,
            build_settings(
                num_classes=num_classes,
                input_shape=input_shape,
                shortcut=shortcut,
                width=width,
                stage_depths=spec.stage_depths,
                bottleneck_version=spec.bottleneck_version,
                normalization=normalization,
                stem=spec.stem,
                shortcut_downsample=spec.shortcut_downsample,
                blur_pool=spec.blur_pool,
            ),
        )
    model = build_network(
        spec,
        options,
        num_classes=1 if num_classes is None else num_classes,  # headless: the classifier is cut off below
        input_shape=input_shape,
        width=float(width),
        normalization=normalization,
        model_name=name,
    )
    if entry is not None:
        model.load_weights(pretrained.verified_path(entry))
    if not include_top:
        model = headless(model, pooling)
    return model


POOLINGS = (None, "avg", "max")


def is_ported_weights(weights) -> bool:
    """Whether ``weights`` is spelled ``SOURCE:NAME[=PATH]`` (ImageNet weights of another library; shipped weights'
    names have no colon). An unknown ``SOURCE`` is refused by the catalog in one line listing the sources."""
    return isinstance(weights, str) and ":" in weights


def _ported_model(name, weights, *, num_classes, input_shape, include_top, pooling, network, options):
    """get_model(weights="SOURCE:NAME[=PATH]"): the entry's network holding those weights (load_imagenet)."""
    from resnet_keras.ported import catalog, load  # the catalog builds through get_model: imported here

    entry = catalog.parse(weights)
    label = f"{entry.source}:{entry.name}"
    if name != entry.arch:
        raise ValueError(f"{label} is a {entry.arch}; get_model was asked for {name}")
    own = {**entry.model_options, "width": 1.0, "normalization": "channel"}
    own["stage_depths"] = tuple(resolve_spec(entry.arch).stage_depths)
    conflicts = []
    for key, value in network.items():
        if key == "width" and value == 1.0 or value is None:
            continue
        asked = value
        if key == "shortcut" and isinstance(value, str):
            asked = value.upper()
        elif key == "stage_depths" and isinstance(value, (list, tuple)):
            asked = tuple(value)
        if asked != own.get(key):
            have = own.get(key)
            conflicts.append(f"{key}={value!r} (the weights': {'none' if have is None else repr(have)})")
    if conflicts:
        raise ValueError(
            f"{label} is a {entry.arch} built as {entry.source} built it; get_model was asked for "
            + ", ".join(conflicts)
            + ": leave those options out"
        )
    model, _ = load.load_imagenet(
        entry,
        num_classes=num_classes,
        include_top=include_top,
        input_shape=input_shape,
        pooling=pooling,
        **options,
    )
    return model


def headless(model: keras.Model, pooling: str | None = None) -> keras.Model:
    """The backbone of a network built by :func:`get_model`: its layers up to
    the last stage's output (the same layer objects and weights), then global
    pooling when ``pooling`` is ``"avg"`` or ``"max"``."""
    features = model.get_layer("avg_pool").input
    if pooling == "avg":
        features = layers.GlobalAveragePooling2D(name="avg_pool")(features)
    elif pooling == "max":
        features = layers.GlobalMaxPooling2D(name="max_pool")(features)
    return keras.Model(model.input, features, name=model.name)


def build_settings(
    *,
    num_classes,
    input_shape,
    shortcut,
    width,
    stage_depths,
    bottleneck_version,
    normalization,
    stem=DEFAULT_STEM,
    shortcut_downsample=DEFAULT_SHORTCUT_DOWNSAMPLE,
    blur_pool=DEFAULT_BLUR_POOL,
):
    """The settings that decide a network's weights (``pretrained.BUILD_KEYS``), as a manifest records them.
    ``stem``, ``shortcut_downsample`` and ``blur_pool`` default to the paper's,
    which is what a caller that predates the tweaks builds."""
    return {
        "num_classes": int(num_classes),
        "input_shape": [None if d is None else int(d) for d in input_shape],
        "shortcut": shortcut,
        "width": float(width),
        "stage_depths": [int(d) for d in stage_depths],
        "bottleneck_version": bottleneck_version,
        "normalization": normalization,
        "stem": stem,
        "shortcut_downsample": shortcut_downsample,
        "blur_pool": blur_pool,
    }


def _check_shortcut(spec: ArchSpec, name: str, shortcut):
    if not spec.residual:
        if shortcut is not None:
            raise ValueError(f"shortcut={shortcut!r}: {name!r} is a plain network and has no shortcuts")
        return None
    if shortcut is None:
        return spec.default_shortcut
    if not isinstance(shortcut, str) or shortcut.upper() not in SHORTCUTS:
        raise ValueError(f"shortcut={shortcut!r}; expected one of {SHORTCUTS}")
    return shortcut.upper()


def _check_input_shape(spec: ArchSpec, name: str, input_shape, normalization):
    if input_shape is None:
        return spec.default_input_shape
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    valid = len(shape) == 3 and all(
        d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape
    )
    if not valid or shape[2] is None:
        raise ValueError(
            f"input_shape={input_shape!r}; expected (height, width, channels) with positive "
            "integers (height and width may be None)"
        )
    stride = spec.total_stride
    for size in shape[:2]:
        if size is not None and size < stride:
            raise ValueError(
                f"input_shape={shape} is too small for {name!r}: its total stride is {stride}, "
                f"so height and width must be at least {stride}"
            )
    if normalization == "pixel" and (shape[0] is None or shape[1] is None):
        raise ValueError(
            f"input_shape={shape} has a variable size, which a per-pixel mean cannot cover; "
            "pass normalization='channel'"
        )
    return shape


def build_network(spec, options, *, num_classes, input_shape, width, normalization, model_name):
    """Assembles stem, stages and head. Arguments are already validated."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = InputNormalization(mode=normalization, name="normalization")(inputs)

    stem_filters = scaled_filters(STEM_FILTERS[spec.family], width)
    if spec.family == "cifar":
        x = conv_bn(x, stem_filters, 3, 1, options, name="conv1")
    else:
        if spec.stem == "deep":
            x = apply_deep_stem(x, [scaled_filters(f, width) for f in DEEP_STEM_FILTERS], options)
        else:
            x = apply_standard_stem(x, stem_filters, options)
        x = apply_stem_pool(x, options)

    for stage, (blocks, filters) in enumerate(zip(spec.stage_depths, STAGE_FILTERS[spec.family])):
        filters = scaled_filters(filters, width)
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            block_name = f"conv{stage + 2}_block{block + 1}"
            if spec.block == "basic":
                x = apply_basic_block(x, filters, stride, options, name=block_name)
            else:
                x = apply_bottleneck_block(x, filters, stride, options, name=block_name, expansion=BOTTLENECK_EXPANSION)

    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    # float32 logits under mixed precision: softmax and the loss need the range.
    outputs = layers.Dense(
        num_classes,
        dtype="float32",
        kernel_initializer=keras.initializers.GlorotUniform(seed=layer_seed(options.seed, "logits")),
        name="logits",
    )(x)
    return keras.Model(inputs, outputs, name=model_name)
