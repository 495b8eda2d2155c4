"""The architectures of He et al. (2015) as rows of data.

An architecture is a frozen :class:`ArchSpec`; adding a depth is adding a row to
``ARCHITECTURES``. The facts behind each row (stage depths, filter counts, total
stride) come from the paper's Table 1 (ImageNet) and Section 4.2 (CIFAR-10).
The ResNet-B, -C and -D "bag of tricks" tweaks of He et al. (2019,
arXiv:1812.01187) are three fields of the row (``bottleneck_version``, ``stem``,
``shortcut_downsample``), so a tweaked network is a row too (``resnet50d``);
Zhang's (2019, arXiv:1904.11486) anti-aliased downsampling is a fourth (``blur_pool``).
"""

from __future__ import annotations

import dataclasses
import re

FAMILIES = ("cifar", "imagenet")
BLOCKS = ("basic", "bottleneck")

# Filters of each stage's 3x3 convolutions, before any width multiplier.
STAGE_FILTERS = {"cifar": (16, 32, 64), "imagenet": (64, 128, 256, 512)}
STEM_FILTERS = {"cifar": 16, "imagenet": 64}
# A bottleneck block's last 1x1 convolution has 4x the filters of its 3x3.
BOTTLENECK_EXPANSION = 4
# CIFAR: a 3x3 conv at full resolution. ImageNet: 7x7/2 conv and 3x3/2 max pool.
STEM_STRIDE = {"cifar": 1, "imagenet": 4}
DEFAULT_IMAGE_SIZE = {"cifar": 32, "imagenet": 224}
DEFAULT_NUM_CLASSES = {"cifar": 10, "imagenet": 1000}
# The paper's shortcut choices: option A on CIFAR (Section 4.2, so that plain and
# residual nets have the same parameters), option B on ImageNet (Section 3.3).
DEFAULT_SHORTCUT = {"cifar": "A", "imagenet": "B"}

# The "bag of tricks" tweaks (He et al. 2019, arXiv:1812.01187, Section 4), each a
# choice whose default is the 2015 paper's:
# ResNet-B: "v1.5" moves a downsampling bottleneck's stride from its first 1x1
#   conv, which skips three quarters of its input, to its 3x3.
BOTTLENECK_VERSIONS = ("v1", "v1.5")
DEFAULT_BOTTLENECK_VERSION = "v1"
# ResNet-C: "deep" replaces the ImageNet stem's 7x7/2 conv by three 3x3 convs of
#   DEEP_STEM_FILTERS (the first of stride 2) that see the same 7x7 window
#   (Inception-v2's factorisation; timm's stem_type="deep", stem_width=32).
STEMS = ("standard", "deep")
DEFAULT_STEM = "standard"
DEEP_STEM_FILTERS = (32, 32, 64)
# ResNet-D: "avgpool" puts a 2x2/2 average pooling before a downsampling
#   projection, whose 1x1 conv then has stride 1, in place of the strided 1x1
#   conv ("stride") that skips three quarters of its input.
SHORTCUT_DOWNSAMPLES = ("stride", "avgpool")
DEFAULT_SHORTCUT_DOWNSAMPLE = "stride"

# Anti-aliased downsampling (Zhang 2019, "Making Convolutional Networks
# Shift-Invariant Again", arXiv:1904.11486): a stride reads one pixel in four and
# aliases; blurring with a 3x3 binomial filter ([1, 2, 1] outer [1, 2, 1] / 16)
# before subsampling low-passes first. The default is the 2015 paper's.
# "none": no blur.
# "stem" (ImageNet only): MaxBlurPool, the stem's 3x3/2 max pool becomes a 3x3/1
#   max pool and a blur of stride 2 (timm's aa_layer stem; Zhang's code pools
#   2x2, timm and this keep the paper's 3x3 window). The stem's convs keep their
#   stride, as in Zhang's (pool_only=True) and timm's ResNets.
# "all": "stem" (ImageNet) and ConvBlurPool in every block: a strided conv of the
#   branch runs at stride 1 and its BN and ReLU are followed by the blur of stride
#   2 (after the 1x1 of a v1 bottleneck, after the 3x3 of v1.5 and of a basic
#   block: whichever conv carried the stride), and a downsampling projection
#   shortcut (B/C) blurs with stride 2 before its 1x1 conv of stride 1, in place
#   of its stride or of ResNet-D's average pooling. Option A shortcuts keep their
#   subsampling (the CIFAR networks take "all" on their branches alone).
BLUR_POOLS = ("none", "stem", "all")
DEFAULT_BLUR_POOL = "none"
BLUR_SIZE = 3


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """One network of the paper, as data.

    Attributes:
        family: ``"cifar"`` (3 stages of 16/32/64 filters, 32x32 input) or
            ``"imagenet"`` (4 stages of 64..512 filters, 224x224 input).
        block: ``"basic"`` (two 3x3 convs) or ``"bottleneck"`` (1x1-3x3-1x1).
        stage_depths: number of blocks in each stage.
        residual: ``False`` for the paper's plain baselines (no shortcuts).
        stem: ``"standard"`` (the paper's: 7x7/2 conv on ImageNet, 3x3 conv on
            CIFAR) or ``"deep"`` (ResNet-C, ImageNet only).
        shortcut_downsample: how a projection shortcut downsamples:
            ``"stride"`` (the paper's strided 1x1 conv) or ``"avgpool"``
            (ResNet-D, residual networks only).
        bottleneck_version: ``"v1"`` (the paper's) or ``"v1.5"`` (ResNet-B,
            bottleneck networks only).
        blur_pool: anti-aliased downsampling (Zhang 2019, arXiv:1904.11486):
            ``"none"`` (the paper's), ``"stem"`` (the stem's max pool becomes a
            stride-1 max pool and a 3x3 binomial blur of stride 2; ImageNet
            only) or ``"all"`` (the stem's too where there is one, and every
            strided conv of a block and projection shortcut blurs its stride);
            the output shape of every stage is the same as without.
    """

    family: str
    block: str
    stage_depths: tuple[int, ...]
    residual: bool = True
    stem: str = DEFAULT_STEM
    shortcut_downsample: str = DEFAULT_SHORTCUT_DOWNSAMPLE
    bottleneck_version: str = DEFAULT_BOTTLENECK_VERSION
    blur_pool: str = DEFAULT_BLUR_POOL

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family={self.family!r}; expected one of {FAMILIES}")
        if self.block not in BLOCKS:
            raise ValueError(f"block={self.block!r}; expected one of {BLOCKS}")
        check_stage_depths(self.family, self.stage_depths)
        for field, value, choices in (
            ("stem", self.stem, STEMS),
            ("shortcut_downsample", self.shortcut_downsample, SHORTCUT_DOWNSAMPLES),
            ("bottleneck_version", self.bottleneck_version, BOTTLENECK_VERSIONS),
            ("blur_pool", self.blur_pool, BLUR_POOLS),
        ):
            if not isinstance(value, str) or value not in choices:
                raise ValueError(f"{field}={value!r}; expected one of {choices}")
        if self.stem != DEFAULT_STEM and self.family != "imagenet":
            raise ValueError(
                f"stem={self.stem!r} applies to ImageNet networks only; "
                "a CIFAR network's stem is already one 3x3 conv at full resolution"
            )
        if self.shortcut_downsample != DEFAULT_SHORTCUT_DOWNSAMPLE and not self.residual:
            raise ValueError(
                f"shortcut_downsample={self.shortcut_downsample!r} applies to residual networks only; "
                "a plain network has no shortcuts"
            )
        if self.bottleneck_version != DEFAULT_BOTTLENECK_VERSION and self.block != "bottleneck":
            raise ValueError(
                f"bottleneck_version={self.bottleneck_version!r} applies to bottleneck networks only; "
                "this one has basic blocks"
            )
        if self.blur_pool == "stem" and self.family != "imagenet":
            raise ValueError(
                "blur_pool='stem' applies to ImageNet networks only; a CIFAR network's stem has no max pool "
                "(blur_pool='all' blurs its strided convolutions)"
            )

    @property
    def tweaks(self) -> str:
        """The bag-of-tricks tweaks of this row as the 2019 paper's letters
        (``"B+C+D"`` for resnet50d), or ``""`` for the 2015 paper's network."""
        letters = [
            ("B", self.bottleneck_version != DEFAULT_BOTTLENECK_VERSION),
            ("C", self.stem != DEFAULT_STEM),
            ("D", self.shortcut_downsample != DEFAULT_SHORTCUT_DOWNSAMPLE),
        ]
        return "+".join(letter for letter, applied in letters if applied)

    @property
    def layers_per_block(self) -> int:
        return 2 if self.block == "basic" else 3

    @property
    def depth(self) -> int:
        """Weighted layers, counted as the paper does: convs on the main path, the
        first conv and the classifier (shortcut projections are not counted).
        A deep stem counts as the one conv it replaces, as its name says
        (timm's and the 2019 paper's ResNet-50-D has 52 weighted layers)."""
        return self.layers_per_block * sum(self.stage_depths) + 2

    @property
    def total_stride(self) -> int:
        return STEM_STRIDE[self.family] * 2 ** (len(self.stage_depths) - 1)

    @property
    def default_shortcut(self) -> str | None:
        return DEFAULT_SHORTCUT[self.family] if self.residual else None

    @property
    def default_input_shape(self) -> tuple[int, int, int]:
        size = DEFAULT_IMAGE_SIZE[self.family]
        return (size, size, 3)

    @property
    def default_num_classes(self) -> int:
        return DEFAULT_NUM_CLASSES[self.family]

    def with_stage_depths(self, stage_depths) -> ArchSpec:
        return dataclasses.replace(self, stage_depths=tuple(stage_depths))

    def with_tweaks(self, *, stem=None, shortcut_downsample=None, bottleneck_version=None, blur_pool=None) -> ArchSpec:
        """This row with the tweaks that are not ``None`` replaced (and checked)."""
        given = {
            "stem": stem,
            "shortcut_downsample": shortcut_downsample,
            "bottleneck_version": bottleneck_version,
            "blur_pool": blur_pool,
        }
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})


def check_stage_depths(family: str, stage_depths) -> tuple[int, ...]:
    n_stages = len(STAGE_FILTERS[family])
    try:
        depths = tuple(stage_depths)
    except TypeError:
        depths = None
    if (
        depths is None
        or len(depths) != n_stages
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in depths)
    ):
        raise ValueError(
            f"stage_depths={stage_depths!r} is not valid for a {family} network: "
            f"expected {n_stages} positive integers, one per stage"
        )
    return depths


def _cifar(n: int, residual: bool = True) -> ArchSpec:
    return ArchSpec("cifar", "basic", (n, n, n), residual)


def _resnet_d(block: str, stage_depths) -> ArchSpec:
    # timm's and the 2019 paper's ResNet-D: the C stem and the D shortcut, with
    # the B (v1.5) bottleneck where there is one (timm's Bottleneck always strides
    # its 3x3; its basic blocks have nothing to move).
    version = "v1.5" if block == "bottleneck" else DEFAULT_BOTTLENECK_VERSION
    return ArchSpec(
        "imagenet", block, stage_depths, stem="deep", shortcut_downsample="avgpool", bottleneck_version=version
    )


ARCHITECTURES: dict[str, ArchSpec] = {
    # ImageNet, Table 1.
    "resnet18": ArchSpec("imagenet", "basic", (2, 2, 2, 2)),
    "resnet34": ArchSpec("imagenet", "basic", (3, 4, 6, 3)),
    "resnet50": ArchSpec("imagenet", "bottleneck", (3, 4, 6, 3)),
    "resnet101": ArchSpec("imagenet", "bottleneck", (3, 4, 23, 3)),
    "resnet152": ArchSpec("imagenet", "bottleneck", (3, 8, 36, 3)),
    "plain18": ArchSpec("imagenet", "basic", (2, 2, 2, 2), residual=False),
    "plain34": ArchSpec("imagenet", "basic", (3, 4, 6, 3), residual=False),
    # ImageNet with the bag-of-tricks tweaks (arXiv:1812.01187), named as timm
    # names them: "d" is the C stem and D shortcut (and B bottleneck), "c" the
    # C stem alone. The plain twins can take the C stem only: D is a shortcut tweak.
    "resnet18d": _resnet_d("basic", (2, 2, 2, 2)),
    "resnet34d": _resnet_d("basic", (3, 4, 6, 3)),
    "resnet50d": _resnet_d("bottleneck", (3, 4, 6, 3)),
    "resnet101d": _resnet_d("bottleneck", (3, 4, 23, 3)),
    "resnet152d": _resnet_d("bottleneck", (3, 8, 36, 3)),
    "plain18c": ArchSpec("imagenet", "basic", (2, 2, 2, 2), residual=False, stem="deep"),
    "plain34c": ArchSpec("imagenet", "basic", (3, 4, 6, 3), residual=False, stem="deep"),
    # CIFAR-10, Section 4.2: 6n+2 layers.
    "resnet20": _cifar(3),
    "resnet32": _cifar(5),
    "resnet44": _cifar(7),
    "resnet56": _cifar(9),
    "resnet110": _cifar(18),
    "resnet1202": _cifar(200),
    "plain20": _cifar(3, residual=False),
    "plain32": _cifar(5, residual=False),
    "plain44": _cifar(7, residual=False),
    "plain56": _cifar(9, residual=False),
    "plain110": _cifar(18, residual=False),
}

# What the paper (and PAPER.md's Keras reference counts) say of each network.
# params_m: CIFAR parameter counts of Section 4.2, in millions.
# flops: ImageNet multiply-adds of Table 1 at 224x224.
# keras_backbone_params: exact Keras count_params() without classifier or conv
#   biases, BN moving statistics included (PAPER.md).
# error: CIFAR-10 test error (%) of Table 6; ImageNet top-1 10-crop error (%)
#   of Tables 2-4.
PAPER_NUMBERS: dict[str, dict[str, float]] = {
    "resnet18": {"flops": 1.8e9, "keras_backbone_params": 11_186_112, "error": 27.88},
    "resnet34": {"flops": 3.6e9, "keras_backbone_params": 21_301_696, "error": 25.03},
    "resnet50": {"flops": 3.8e9, "keras_backbone_params": 23_561_152, "error": 22.85},
    "resnet101": {"flops": 7.6e9, "keras_backbone_params": 42_605_504, "error": 21.75},
    "resnet152": {"flops": 11.3e9, "keras_backbone_params": 58_295_232, "error": 21.43},
    "plain18": {"flops": 1.8e9, "error": 27.94},
    "plain34": {"flops": 3.6e9, "error": 28.54},
    "resnet20": {"params_m": 0.27, "error": 8.75},
    "resnet32": {"params_m": 0.46, "error": 7.51},
    "resnet44": {"params_m": 0.66, "error": 7.17},
    "resnet56": {"params_m": 0.85, "error": 6.97},
    "resnet110": {"params_m": 1.7, "error": 6.43},
    "resnet1202": {"params_m": 19.4, "error": 7.93},
}

# timm's figures for the bag-of-tricks networks at 224x224 (huggingface/pytorch-image-models'
# model table and results CSVs), not the 2015 paper's: parameters (trainable, classifier
# included) and multiply-adds ("GMACs", the measure of the paper's "FLOPs").
TIMM_NUMBERS: dict[str, dict[str, float]] = {
    "resnet18d": {"params": 11.71e6, "flops": 2.06e9},
    "resnet34d": {"params": 21.82e6, "flops": 3.91e9},
    "resnet50d": {"params": 25.58e6, "flops": 4.35e9},
}

_DEPTH_NAME = re.compile(r"^(resnet|plain)(\d+)$")


def list_models() -> list[str]:
    """The registered networks: the paper's ImageNet networks, their
    bag-of-tricks variants, then the CIFAR networks."""
    return list(ARCHITECTURES)


def resolve_spec(name: str) -> ArchSpec:
    """The spec for a registered name, or for ``resnet{6n+2}`` / ``plain{6n+2}``.

    Any CIFAR depth 6n+2 is accepted by name (``resnet26``, ``plain74``) unless the
    name is a registered ImageNet network (``resnet50`` is the ImageNet one; a
    50-layer CIFAR net is ``get_model("resnet20", stage_depths=(8, 8, 8))``).
    """
    if not isinstance(name, str):
        raise ValueError(f"architecture name must be a string, got {name!r}")
    spec = ARCHITECTURES.get(name)
    if spec is not None:
        return spec
    match = _DEPTH_NAME.match(name)
    if match:
        depth = int(match.group(2))
        if depth >= 8 and (depth - 2) % 6 == 0:
            return _cifar((depth - 2) // 6, residual=match.group(1) == "resnet")
    raise ValueError(
        f"unknown architecture {name!r}. Known: {', '.join(list_models())}; "
        "also any CIFAR depth 6n+2 as 'resnet<depth>' or 'plain<depth>' "
        "(e.g. resnet26), and any stage depths through get_model(..., stage_depths=...)"
    )
