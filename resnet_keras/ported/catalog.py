"""The ImageNet weights this library knows how to port, as data, and the one spelling that names them.

``SOURCE:NAME[=PATH]``:

* ``torchvision:resnet50`` (that network's ``DEFAULT`` weights: ``IMAGENET1K_V1`` for resnet18/34, ``IMAGENET1K_V2``
  for resnet50/101/152), ``torchvision:resnet50.IMAGENET1K_V1`` (a ``ResNet50_Weights`` member; ``.DEFAULT`` too);
* ``timm:resnet50d.ra2_in1k`` (timm's ``model.tag``; its Hugging Face Hub repo is ``timm/<model>.<tag>``);
* ``keras-hub:resnet_50_imagenet`` (a keras-hub preset);
* ``=PATH`` after any of them: a file or folder already on disk, in place of the source's cache or download.

Each :class:`Entry` says which of our networks the weights fit (``arch`` and ``get_model`` options), how the source
preprocesses (mean and std on the 0-1 scale, input size, crop, interpolation, as published), where the file is and
the source's published top-1 (their figure, not measured here). Facts and their sources: torchvision 0.29.1
``models/resnet.py``, timm 1.0.31 ``models/resnet.py`` default_cfgs and pytorch-image-models
``results/results-imagenet.csv`` (commit aa4b5850), keras-hub 0.32.0 ``models/resnet/resnet_presets.py`` and its
``tools/checkpoint_conversion`` scripts.

The checkpoint cannot tell a v1 from a v1.5 bottleneck (their tensors have the same shapes): the entry decides.
torchvision's, timm's and keras-hub's bottlenecks all stride their 3x3 (v1.5, ResNet-B), so every bottleneck entry
builds ``bottleneck_version="v1.5"``. Our models take raw RGB pixels in [0, 255]: :func:`build` puts the source's
mean and std, times 255, into the network's ``InputNormalization`` layer (per channel, any input size).
"""

from __future__ import annotations

import dataclasses

import keras

from resnet_keras.layers import get_normalization
from resnet_keras.models import get_model
from resnet_keras.specs import resolve_spec

SOURCES = ("torchvision", "timm", "keras-hub")
EVAL_SIZE = 224
EXAMPLES = {
    "torchvision": "torchvision:resnet50",
    "timm": "timm:resnet50d.ra2_in1k",
    "keras-hub": "keras-hub:resnet_50_imagenet",
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TORCHVISION_URL = "https://download.pytorch.org/models/"
TIMM_RESULTS = "pytorch-image-models results/results-imagenet.csv (aa4b5850)"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One set of published ImageNet weights and the network of this library that takes them.

    Attributes:
        source: ``"torchvision"``, ``"timm"`` or ``"keras-hub"``.
        name: the source's name, canonical (``resnet50.IMAGENET1K_V2``, ``resnet50d.ra2_in1k``,
            ``resnet_50_imagenet``).
        arch: our network (:func:`~resnet_keras.get_model`'s ``name``).
        options: :func:`~resnet_keras.get_model` options, as ``(key, value)`` pairs (:attr:`model_options`).
        mean, std: the source's per-channel normalization of RGB in [0, 1].
        input_size: the side of the square image the source evaluates at (its ``test_input_size`` where timm
            publishes one is :attr:`test_input_size`).
        crop_pct: center crop fraction at ``input_size`` (``None``: keras-hub resizes to ``input_size``).
        resize_size: torchvision's resize of the shorter side before its ``input_size`` center crop.
        interpolation: ``"bilinear"`` or ``"bicubic"``, as published.
        file_name: the weights file (``model.safetensors`` on the Hub for timm; ``model.weights.h5`` in a
            keras-hub preset, whose head is in :attr:`head_file_name`).
        file_format: ``"torch"`` (``torch.save`` zip), ``"safetensors"`` or ``"keras-hub"`` (a preset folder).
        url: the download URL (torchvision).
        repo_id: the Hugging Face Hub repo (timm).
        kaggle_handle: the preset's Kaggle handle (keras-hub).
        sha256_prefix: the leading hex digits of the file's sha256 that its name carries (torchvision,
            as torch.hub checks).
        origin: where the weights come from when the entry re-publishes them (timm's original URL,
            keras-hub's conversion source).
        top1: the source's published ImageNet top-1 (%), not measured here; ``top1_note`` says where and how.
        num_params: the source's published parameter count (classifier included), where it gives one.
        path: ``=PATH`` of the spelling: a file or folder on disk, else ``None``.
    """

    source: str
    name: str
    arch: str
    options: tuple = ()
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    input_size: int = 224
    crop_pct: float | None = 0.875
    resize_size: int | None = None
    interpolation: str = "bilinear"
    test_input_size: int | None = None
    test_crop_pct: float | None = None
    file_name: str = ""
    file_format: str = ""
    head_file_name: str | None = None
    url: str | None = None
    repo_id: str | None = None
    kaggle_handle: str | None = None
    sha256_prefix: str | None = None
    origin: str | None = None
    top1: float | None = None
    top1_note: str = ""
    num_params: int | None = None
    notes: str = ""
    path: str | None = None

    @property
    def spec(self) -> str:
        """The canonical spelling, ``SOURCE:NAME`` (``=PATH`` when the entry has one)."""
        return f"{self.source}:{self.name}" + ("" if self.path is None else f"={self.path}")

    @property
    def model_options(self) -> dict:
        """The ``get_model`` options of the network these weights fit (beside ``arch``)."""
        return dict(self.options)

    @property
    def eval_size(self) -> int:
        """The image size the commands build this network at: 224, the size every published top-1 of this
        catalog was measured at (timm's ``tv2_in1k`` tags train at 176 and are scored at 224)."""
        return EVAL_SIZE

    @property
    def mean_255(self) -> tuple[float, ...]:
        return tuple(255.0 * m for m in self.mean)

    @property
    def std_255(self) -> tuple[float, ...]:
        return tuple(255.0 * s for s in self.std)


def _options(arch: str) -> tuple:
    """The get_model options that pin each tweak of the sources' networks: ResNet-B (v1.5) bottlenecks in every
    source, and for the "d" networks the row's ResNet-C stem and ResNet-D shortcut (timm's stem_type='deep',
    avg_down=True; keras-hub's vd). Basic blocks take no bottleneck_version."""
    spec = resolve_spec(arch)
    options = [
        ("shortcut", "B"),
        ("stem", spec.stem),
        ("shortcut_downsample", spec.shortcut_downsample),
        ("blur_pool", "none"),
    ]
    if spec.block == "bottleneck":
        options.append(("bottleneck_version", "v1.5"))
    return tuple(options)


# --- torchvision (torchvision 0.29.1 models/resnet.py; acc@1 of each Weights enum's meta) -----------------------
# network -> [(member, file, acc@1, resize), ...] and its DEFAULT member, num_params.
_TV = {
    "resnet18": ([("IMAGENET1K_V1", "resnet18-f37072fd.pth", 69.758, 256)], "IMAGENET1K_V1", 11689512),
    "resnet34": ([("IMAGENET1K_V1", "resnet34-b627a593.pth", 73.314, 256)], "IMAGENET1K_V1", 21797672),
    "resnet50": (
        [
            ("IMAGENET1K_V1", "resnet50-0676ba61.pth", 76.130, 256),
            ("IMAGENET1K_V2", "resnet50-11ad3fa6.pth", 80.858, 232),
        ],
        "IMAGENET1K_V2",
        25557032,
    ),
    "resnet101": (
        [
            ("IMAGENET1K_V1", "resnet101-63fe2227.pth", 77.374, 256),
            ("IMAGENET1K_V2", "resnet101-cd907fc2.pth", 81.886, 232),
        ],
        "IMAGENET1K_V2",
        44549160,
    ),
    "resnet152": (
        [
            ("IMAGENET1K_V1", "resnet152-394f9c45.pth", 78.312, 256),
            ("IMAGENET1K_V2", "resnet152-f82ba261.pth", 82.284, 232),
        ],
        "IMAGENET1K_V2",
        60192808,
    ),
}
TORCHVISION_DEFAULTS = {arch: default for arch, (_, default, _) in _TV.items()}


def _torchvision_entries():
    for arch, (members, _, num_params) in _TV.items():
        for member, file_name, top1, resize in members:
            yield Entry(
                source="torchvision",
                name=f"{arch}.{member}",
                arch=arch,
                options=_options(arch),
                input_size=224,
                crop_pct=224 / resize,
                resize_size=resize,
                interpolation="bilinear",
                file_name=file_name,
                file_format="torch",
                url=TORCHVISION_URL + file_name,
                sha256_prefix=file_name.rsplit("-", 1)[1].split(".")[0],
                top1=top1,
                top1_note=f"torchvision's acc@1 (resize {resize}, center crop 224, bilinear)",
                num_params=num_params,
            )


# --- timm (timm 1.0.31 models/resnet.py default_cfgs; top-1 at 224 from the results CSV, line given) ---------------
_CFG = {"crop_pct": 0.875, "interpolation": "bilinear"}  # _cfg
_TTCFG = {"crop_pct": 0.875, "interpolation": "bicubic", "test_input_size": 288, "test_crop_pct": 0.95}  # _ttcfg
_RCFG = {"crop_pct": 0.95, "interpolation": "bicubic", "test_input_size": 288, "test_crop_pct": 1.0}  # _rcfg
_TV2 = {**_CFG, "input_size": 176, "test_input_size": 224, "test_crop_pct": 0.965}  # tv2: trained at 176
_TV_ORIGIN = "https://download.pytorch.org/models/"
_RSB = "https://github.com/huggingface/pytorch-image-models/releases/download/v0.1-rsb-weights/"
_RW = "https://github.com/rwightman/pytorch-image-models/releases/download/"
# tag -> (cfg, origin url, top-1 %, crop of that top-1, results CSV line)
_TIMM = {
    "resnet18.tv_in1k": (_CFG, _TV_ORIGIN + "resnet18-f37072fd.pth", 69.752, 0.875, 1516),
    "resnet18.a1_in1k": (_RCFG, _RSB + "resnet18_a1_0-d63eafa0.pth", 71.504, 0.95, 1500),
    "resnet34.tv_in1k": (_CFG, _TV_ORIGIN + "resnet34-b627a593.pth", 73.298, 0.875, 1466),
    "resnet34.a1_in1k": (_RCFG, _RSB + "resnet34_a1_0-46f8f793.pth", 76.420, 0.95, 1370),
    "resnet50.tv_in1k": (_CFG, _TV_ORIGIN + "resnet50-0676ba61.pth", 76.156, 0.875, 1378),
    "resnet50.tv2_in1k": (_TV2, _TV_ORIGIN + "resnet50-11ad3fa6.pth", 80.846, 0.965, 927),
    "resnet50.a1_in1k": (_RCFG, _RW + "v0.1-rsb-weights/resnet50_a1_0-14fe96d1.pth", 80.382, 0.95, 995),
    "resnet50d.ra2_in1k": (_TTCFG, _RW + "v0.1-weights/resnet50d_ra2-464e36ba.pth", 80.546, 0.875, 967),
    "resnet50d.a1_in1k": (_RCFG, _RSB + "resnet50d_a1_0-e20cff14.pth", 80.730, 0.95, 944),
    "resnet101.tv_in1k": (_CFG, _TV_ORIGIN + "resnet101-63fe2227.pth", 77.404, 0.875, 1308),
    "resnet101.tv2_in1k": (_TV2, _TV_ORIGIN + "resnet101-cd907fc2.pth", 81.906, 0.965, 773),
    "resnet152.tv_in1k": (_CFG, _TV_ORIGIN + "resnet152-394f9c45.pth", 78.330, 0.875, 1231),
    "resnet152.tv2_in1k": (_TV2, _TV_ORIGIN + "resnet152-f82ba261.pth", 82.294, 0.965, 715),
}


def _timm_entries():
    for tag, (cfg, origin, top1, top1_crop, line) in _TIMM.items():
        arch = tag.split(".")[0]
        yield Entry(
            source="timm",
            name=tag,
            arch=arch,
            options=_options(arch),
            input_size=cfg.get("input_size", 224),
            crop_pct=cfg["crop_pct"],
            interpolation=cfg["interpolation"],
            test_input_size=cfg.get("test_input_size"),
            test_crop_pct=cfg.get("test_crop_pct"),
            file_name="model.safetensors",
            file_format="safetensors",
            repo_id=f"timm/{tag}",
            origin=origin,
            top1=top1,
            top1_note=f"timm's top-1 at 224 px, crop {top1_crop} ({TIMM_RESULTS} line {line})",
        )


# --- keras-hub (keras-hub 0.32.0 models/resnet/resnet_presets.py) -----------------------------------------------------
# v1 presets: converted from timm's a1_in1k weights (tools/checkpoint_conversion/convert_resnet_checkpoints.py), their
# image converter from timm's pretrained_cfg (224 px, bicubic). vd presets: PaddleClas ResNet*_vd weights
# (convert_resnet_vd_checkpoints.py: stem 32/32/64 3x3, strides 1/2/2/2, ResNetImageConverter 224 px with
# ImageNet mean and std); their bottleneck_block_vd is our "d" network exactly: deep stem, 2x2 average pooling before
# a stride-1 projection, v1.5, the first block's projection at stride 1 as ours (params: resnet_vd_50's 25,629,512
# = our resnet50d's 23,580,512 + the 2,049,000 of the classifier).
# preset -> (arch, kaggle handle, origin, top-1 of the origin, note)
_KH_V1 = "kaggle://keras/resnetv1/keras/{}/3"
_KH_VD = "kaggle://keras/resnet_vd/keras/{}/2"
_KERAS_HUB = {
    "resnet_18_imagenet": ("resnet18", _KH_V1, "timm/resnet18.a1_in1k", 71.504, 1500),
    "resnet_50_imagenet": ("resnet50", _KH_V1, "timm/resnet50.a1_in1k", 80.382, 995),
    "resnet_101_imagenet": ("resnet101", _KH_V1, "timm/resnet101.a1_in1k", 81.494, 822),
    "resnet_152_imagenet": ("resnet152", _KH_V1, "timm/resnet152.a1_in1k", 81.998, 757),
    "resnet_vd_50_imagenet": ("resnet50d", _KH_VD, "PaddleClas ResNet50_vd", None, None),
    "resnet_vd_50_ssld_imagenet": ("resnet50d", _KH_VD, "PaddleClas ResNet50_vd_ssld", None, None),
    "resnet_vd_50_ssld_v2_imagenet": ("resnet50d", _KH_VD, "PaddleClas ResNet50_vd_ssld_v2", None, None),
    "resnet_vd_50_ssld_v2_fix_imagenet": ("resnet50d", _KH_VD, "PaddleClas Fix_ResNet50_vd_ssld_v2", None, None),
    "resnet_vd_101_imagenet": ("resnet101d", _KH_VD, "PaddleClas ResNet101_vd", None, None),
    "resnet_vd_101_ssld_imagenet": ("resnet101d", _KH_VD, "PaddleClas ResNet101_vd_ssld", None, None),
    "resnet_vd_152_imagenet": ("resnet152d", _KH_VD, "PaddleClas ResNet152_vd", None, None),
}
# keras-hub presets that no network of this library is, and why.
KERAS_HUB_REFUSED = {
    "resnet_vd_18_imagenet": (
        "keras-hub's resnet_vd_18 has a projection shortcut in its first block, which no network of this library has"
    ),
    "resnet_vd_34_imagenet": (
        "keras-hub's resnet_vd_34 has a projection shortcut in its first block, which no network of this library has"
    ),
    "resnet_vd_200_imagenet": "keras-hub's resnet_vd_200 is a 200-layer network, which this library has no row for",
    "resnet_v2_50_imagenet": (
        "keras-hub's resnet_v2_50 is a pre-activation ResNet (v2), which this library does not build"
    ),
    "resnet_v2_101_imagenet": (
        "keras-hub's resnet_v2_101 is a pre-activation ResNet (v2), which this library does not build"
    ),
}


def _keras_hub_entries():
    for preset, (arch, handle, origin, top1, line) in _KERAS_HUB.items():
        v1 = line is not None
        yield Entry(
            source="keras-hub",
            name=preset,
            arch=arch,
            options=_options(arch),
            input_size=224,
            crop_pct=None,
            interpolation="bicubic" if v1 else "bilinear",
            file_name="model.weights.h5",
            file_format="keras-hub",
            head_file_name="task.weights.h5",
            kaggle_handle=handle.format(preset),
            origin=origin,
            top1=top1,
            top1_note=(
                f"timm's top-1 of the origin {origin} at 224 px, crop 0.95 ({TIMM_RESULTS} line {line}); "
                "keras-hub publishes none"
                if v1
                else "keras-hub publishes none"
            ),
            notes=(
                "preprocessing as keras-hub's timm loader makes it from timm's pretrained_cfg (224 px, bicubic, a "
                "resize without crop)"
                if v1
                else "preprocessing of keras-hub's conversion script (224 px, ImageNet mean and std, keras-hub's "
                "default bilinear resize without crop)"
            )
            + "; the Kaggle files' image_converter.json was not read",
        )


CATALOG: dict[str, dict[str, Entry]] = {source: {} for source in SOURCES}
for _entry in (*_torchvision_entries(), *_timm_entries(), *_keras_hub_entries()):
    CATALOG[_entry.source][_entry.name] = _entry
del _entry


def entries(source: str | None = None) -> list[Entry]:
    """Every entry of the catalog, or those of one source."""
    if source is None:
        return [entry for source_entries in CATALOG.values() for entry in source_entries.values()]
    return list(CATALOG[source].values())


def names(source: str) -> list[str]:
    """The NAMEs a source accepts: torchvision's networks (their DEFAULT member) and members, timm's tags,
    keras-hub's presets."""
    if source == "torchvision":
        listed = []
        for arch, (members, _, _) in _TV.items():
            listed.append(arch)
            listed.extend(f"{arch}.{member}" for member, *_ in members)
        return listed
    return list(CATALOG[source])


def _sources_line() -> str:
    return ", ".join(f"{source} (e.g. {EXAMPLES[source]})" for source in SOURCES)


def _unknown_name(source: str, name: str) -> str:
    if source == "torchvision":
        listed = ", ".join(n if "." in n else f"{n} (= {n}.{TORCHVISION_DEFAULTS[n]})" for n in names(source))
        return f"torchvision has no weights {name!r} here; known: {listed} (NAME.DEFAULT works too)"
    if source == "timm" and "." not in name:
        tags = [n for n in names("timm") if n.split(".")[0] == name]
        if tags:
            return f"timm:{name} needs a tag, timm's model.tag: {', '.join(tags)}"
    reason = KERAS_HUB_REFUSED.get(name) if source == "keras-hub" else None
    prefix = f"{reason}; " if reason else f"{source} has no weights {name!r} here; "
    return f"{prefix}known: {', '.join(names(source))}"


def parse(spec: str) -> Entry:
    """The entry named by ``SOURCE:NAME[=PATH]``; a wrong spelling raises a one-line ``ValueError`` listing the
    right ones (the sources, or that source's names)."""
    if not isinstance(spec, str):
        raise ValueError(f"weights {spec!r}: expected a string SOURCE:NAME[=PATH], SOURCE one of {_sources_line()}")
    head, sep, path = spec.partition("=")
    if sep and not path:
        raise ValueError(f"{spec!r} ends with '=' and no path; write SOURCE:NAME=PATH, or SOURCE:NAME alone")
    source, colon, name = head.partition(":")
    if not colon or source not in SOURCES:
        raise ValueError(f"{spec!r} is not SOURCE:NAME[=PATH] with a known SOURCE; SOURCE is one of {_sources_line()}")
    if not name:
        raise ValueError(f"{spec!r} names no weights; {source} knows: {', '.join(names(source))}")
    if source == "torchvision":
        arch, dot, member = name.partition(".")
        if arch in TORCHVISION_DEFAULTS and (not dot or member == "DEFAULT"):
            name = f"{arch}.{TORCHVISION_DEFAULTS[arch]}"
    entry = CATALOG[source].get(name)
    if entry is None:
        raise ValueError(f"{spec!r}: {_unknown_name(source, name)}")
    return entry if not sep else dataclasses.replace(entry, path=path)


# get_model options that change neither the network nor the meaning of its weights, which build passes through.
BUILD_PASSTHROUGH = ("bn_momentum", "bn_epsilon", "synchronized_bn", "zero_init_residual", "seed")


def build(
    entry: Entry, *, num_classes: int = 1000, include_top: bool = True, input_shape=None, pooling=None, **options
) -> keras.Model:
    """The network of ``entry`` (random weights), its normalization set to the source's mean and std (times 255:
    our models take raw RGB pixels in [0, 255]), ready for ``mapping.load_torch_state_dict`` or
    ``mapping.load_keras_hub_weights``. Per-channel normalization, so any input size: ``input_shape`` defaults to
    ``(None, None, 3)``. ``include_top=False`` builds the backbone (then ``num_classes`` is not used), with
    ``pooling`` as :func:`~resnet_keras.get_model`'s. ``options``: only :data:`BUILD_PASSTHROUGH` (the network
    itself is the entry's)."""
    other = sorted(set(options) - set(BUILD_PASSTHROUGH))
    if other:
        raise ValueError(
            f"{entry.spec} builds its own network; {', '.join(other)} cannot be set "
            f"(only {', '.join(BUILD_PASSTHROUGH)})"
        )
    model = get_model(
        entry.arch,
        num_classes=num_classes if include_top else None,
        include_top=include_top,
        pooling=pooling,
        input_shape=(None, None, 3) if input_shape is None else input_shape,
        normalization="channel",
        **entry.model_options,
        **options,
    )
    get_normalization(model).set_statistics(entry.mean_255, entry.std_255)
    return model
