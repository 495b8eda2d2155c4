"""Residual and plain blocks over the Keras functional API.

Layer names follow ``keras.applications``: a block named ``conv3_block1`` makes
``conv3_block1_1_conv``, ``conv3_block1_1_bn``, ``conv3_block1_1_relu``, ...,
``conv3_block1_0_conv`` / ``_0_bn`` for a projection shortcut (after
``conv3_block1_0_pool`` where it downsamples by average pooling, ResNet-D),
``conv3_block1_0_zeropad`` for an option A shortcut, ``conv3_block1_add`` and
``conv3_block1_out``. The ImageNet stem is ``conv1_conv`` / ``conv1_bn`` /
``conv1_relu``, or ``conv1_1_conv`` ... ``conv1_3_relu`` for the deep stem
(ResNet-C), then ``pool1_pool``. Zhang's anti-aliased downsampling
(``blur_pool``) adds a blur after the layer whose stride it takes over, named
after it: ``pool1_blur``, ``conv3_block1_1_blur`` (or ``_2_blur``, the
bottleneck's 3x3 in v1.5) and ``conv3_block1_0_blur`` before a projection's
1x1, each after its padding ``..._blur_pad``. Stable names make summaries
readable and weights transferable by name.
"""

from __future__ import annotations

import dataclasses
import zlib

import keras
from keras import layers

from resnet_keras.layers import (
    BinomialBlur,
    FusedBatchNormalization,
    MatmulConv2D,
    ReflectPadding2D,
    zero_pad_output_shape,
    zero_pad_shortcut,
)
from resnet_keras.specs import BLUR_SIZE, DEFAULT_BLUR_POOL, DEFAULT_BOTTLENECK_VERSION, DEFAULT_SHORTCUT_DOWNSAMPLE

SHORTCUTS = ("A", "B", "C")


@dataclasses.dataclass(frozen=True)
class BlockOptions:
    """What every block of one network shares.

    shortcut: ``"A"`` zero-padding identity, ``"B"`` projection where the shape
        changes, ``"C"`` projection everywhere, ``None`` for a plain block.
    bottleneck_version: ``"v1"`` puts a downsampling block's stride on the first
        1x1 conv, as the paper's Caffe models and ``keras.applications`` do;
        ``"v1.5"`` puts it on the 3x3 (torchvision, keras-hub), which the
        paper's notes credit with about +0.5 top-1 at a little more compute.
    shortcut_downsample: ``"stride"`` downsamples a projection shortcut with
        its 1x1 conv's stride; ``"avgpool"`` with a 2x2/2 average pooling
        before a 1x1 conv of stride 1 (ResNet-D).
    blur_pool: ``"all"`` moves the stride of every strided conv of a block and
        of a downsampling projection to a binomial blur (Zhang 2019,
        arXiv:1904.11486); ``"none"`` and ``"stem"`` leave the blocks as they are.
    bn_momentum, bn_epsilon: 0.9 and 1e-5 are Caffe's and PyTorch's values
        (PyTorch's momentum 0.1 is Keras' 0.9). Keras' default momentum of 0.99
        lags badly in short runs.
    synchronized_bn: batch statistics over all replicas (``--sync-bn``).
    seed: seed of the initial weights (``None``: Keras' global seed).
    zero_init_residual: initialise the last BN scale of each residual branch to
        zero, so each block starts as the identity (Goyal et al. 2017,
        arXiv:1706.02677). Not in the paper, so off by default.
    """

    shortcut: str | None = "A"
    bottleneck_version: str = DEFAULT_BOTTLENECK_VERSION
    shortcut_downsample: str = DEFAULT_SHORTCUT_DOWNSAMPLE
    blur_pool: str = DEFAULT_BLUR_POOL
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    zero_init_residual: bool = False
    synchronized_bn: bool = False
    seed: int | None = None


def bn(options, name, gamma_initializer="ones"):
    """BatchNormalization with the network's settings. ``synchronized_bn``
    computes batch statistics over all replicas of a distribution strategy
    (Keras' ``synchronized=True``) instead of each replica's share of the batch.
    The layer is :class:`~resnet_keras.layers.FusedBatchNormalization`: Keras'
    layer computed by TensorFlow's fused kernel where it applies."""
    return FusedBatchNormalization(
        momentum=options.bn_momentum,
        epsilon=options.bn_epsilon,
        gamma_initializer=gamma_initializer,
        synchronized=options.synchronized_bn,
        name=name,
    )


def layer_seed(seed, name):
    """A per-layer seed from the network's seed and the layer's name: with a
    seed, a network starts from the same weights under any distribution
    strategy, whatever order its variables are created in."""
    if seed is None:
        return None
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % 2**31


def he_normal(seed=None, name=""):
    # "MSRA" initialisation of He et al. (arXiv:1502.01852), cited by the paper:
    # zero-mean Gaussian with std sqrt(2 / fan_in), not truncated.
    return keras.initializers.VarianceScaling(
        2.0, mode="fan_in", distribution="untruncated_normal", seed=layer_seed(seed, name)
    )


def conv_bn(x, filters, kernel_size, stride, options, name, relu=True, zero_gamma=False):
    """conv -> BN (-> ReLU). Convolutions carry no bias: BN's beta replaces it."""
    if stride > 1 and kernel_size > 1:
        # Pad (k-1)/2 on every side as Caffe and PyTorch do. TF's "same" with an
        # even input pads only bottom/right, which centres the kernel on odd
        # pixels while the stride-2 shortcut samples the even ones.
        x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    # 1x1 convolutions train as matrix products (MatmulConv2D), the rest are Keras'.
    conv = MatmulConv2D if kernel_size == 1 else layers.Conv2D
    x = conv(
        filters,
        kernel_size,
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=he_normal(options.seed, f"{name}_conv"),
        name=f"{name}_conv",
    )(x)
    x = bn(options, f"{name}_bn", gamma_initializer="zeros" if zero_gamma else "ones")(x)
    if relu:
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    return x


def apply_blur(x, stride, name):
    """Zhang's (2019, arXiv:1904.11486) anti-aliasing: a 3x3 binomial blur of
    every channel, then the subsampling, as one depthwise convolution of stride
    ``stride`` whose kernel (:class:`BinomialBlur`) is never trained.

    Padded 1 on every side by reflection, as Zhang's and timm's BlurPool: a
    map of size H becomes ceil(H / 2), as the strided layer it follows made it,
    sampled at the same pixels (0, 2, 4, ...). Reflection rather than zeros
    (ZeroPadding2D): zeros would darken the first row and column of outputs by
    a quarter (the corner by 7/16) at every blur, 13 of the 49 outputs of the
    last stage at 224 px, and a constant image would not stay constant.
    TensorFlow's MirrorPad, which does it, is the TFLite builtin MIRROR_PAD."""
    pad = BLUR_SIZE // 2
    x = ReflectPadding2D(pad, name=f"{name}_pad")(x)
    return layers.DepthwiseConv2D(
        BLUR_SIZE,
        strides=stride,
        padding="valid",
        use_bias=False,
        depthwise_initializer=BinomialBlur(),
        trainable=False,
        name=name,
    )(x)


def branch_conv_bn(x, filters, kernel_size, stride, options, name):
    """conv -> BN -> ReLU of a block's branch. Under ``blur_pool="all"`` a
    strided one runs at stride 1 and the blur takes its stride after the ReLU
    (Zhang's ConvBlurPool): ``{name}_conv`` ... ``{name}_relu``, ``{name}_blur``."""
    if stride > 1 and options.blur_pool == "all":
        x = conv_bn(x, filters, kernel_size, 1, options, name=name)
        return apply_blur(x, stride, name=f"{name}_blur")
    return conv_bn(x, filters, kernel_size, stride, options, name=name)


def apply_shortcut(x, out_channels, stride, options, name):
    """The shortcut branch of a residual block (option A, B or C)."""
    in_channels = x.shape[-1]
    shape_changes = stride != 1 or in_channels != out_channels
    if options.shortcut == "C" or (options.shortcut == "B" and shape_changes):
        if options.blur_pool == "all" and stride > 1:
            # Zhang's anti-aliased projection: blur and subsample, then the 1x1 of
            # stride 1 (in place of its stride, or of ResNet-D's average pooling).
            x = apply_blur(x, stride, name=f"{name}_0_blur")
            stride = 1
        elif options.shortcut_downsample == "avgpool" and stride > 1:
            # ResNet-D (arXiv:1812.01187, Figure 2c): a strided 1x1 conv reads one
            # pixel in four; averaging 2x2 first lets every pixel reach the shortcut.
            # "same" pads an odd edge and averages only the real pixels there, as
            # timm's AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) does.
            x = layers.AveragePooling2D(2, strides=stride, padding="same", name=f"{name}_0_pool")(x)
            stride = 1
        return conv_bn(x, out_channels, 1, stride, options, name=f"{name}_0", relu=False)
    if options.shortcut == "A" and shape_changes:
        return layers.Lambda(
            zero_pad_shortcut,
            output_shape=zero_pad_output_shape(x.shape, stride, out_channels),
            arguments={"stride": stride, "out_channels": out_channels},
            name=f"{name}_0_zeropad",
        )(x)
    return x


def apply_standard_stem(x, filters, options):
    """The paper's ImageNet stem before its max pool: 7x7/2 conv, BN, ReLU,
    padded 3 on every side as keras.applications (and Caffe)."""
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(
        filters,
        7,
        strides=2,
        use_bias=False,
        kernel_initializer=he_normal(options.seed, "conv1_conv"),
        name="conv1_conv",
    )(x)
    x = bn(options, "conv1_bn")(x)
    return layers.Activation("relu", name="conv1_relu")(x)


def apply_deep_stem(x, filters, options):
    """ResNet-C's stem before the max pool (arXiv:1812.01187, Figure 2b): three
    3x3 conv-BN-ReLU of ``filters`` (32, 32, 64 unscaled), the first of stride 2.
    Three 3x3 convs see the 7x7 conv's window through two more non-linearities;
    the paper's case is that a 7x7 kernel costs 5.4x a 3x3 one, but at these
    widths the stem costs 0.36G multiply-adds at 224x224 where the 7x7 cost 0.12G."""
    for i, n in enumerate(filters):
        x = conv_bn(x, n, 3, 2 if i == 0 else 1, options, name=f"conv1_{i + 1}")
    return x


def apply_stem_pool(x, options):
    """The ImageNet stem's 3x3/2 max pool, padded as keras.applications (and
    Caffe); under ``blur_pool`` "stem" or "all", Zhang's MaxBlurPool: a 3x3 max
    pool of stride 1 ("same": at the border the window takes the real pixels
    only), then the blur of stride 2 (timm's aa_layer stem)."""
    if options.blur_pool == DEFAULT_BLUR_POOL:
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    x = layers.MaxPooling2D(3, strides=1, padding="same", name="pool1_pool")(x)
    return apply_blur(x, 2, name="pool1_blur")


def _merge(x, residual, out_channels, stride, options, name):
    """Adds the shortcut (residual blocks) before the final ReLU."""
    if options.shortcut is not None:
        shortcut = apply_shortcut(x, out_channels, stride, options, name)
        residual = layers.Add(name=f"{name}_add")([shortcut, residual])
    return layers.Activation("relu", name=f"{name}_out")(residual)


def apply_basic_block(x, filters, stride, options, name):
    """Two 3x3 convs: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""
    zero_gamma = options.zero_init_residual and options.shortcut is not None
    y = branch_conv_bn(x, filters, 3, stride, options, name=f"{name}_1")
    y = conv_bn(y, filters, 3, 1, options, name=f"{name}_2", relu=False, zero_gamma=zero_gamma)
    return _merge(x, y, filters, stride, options, name)


def apply_bottleneck_block(x, filters, stride, options, name, expansion=4):
    """1x1 (filters) -> 3x3 (filters) -> 1x1 (expansion * filters)."""
    zero_gamma = options.zero_init_residual and options.shortcut is not None
    stride_1x1, stride_3x3 = (stride, 1) if options.bottleneck_version == "v1" else (1, stride)
    y = branch_conv_bn(x, filters, 1, stride_1x1, options, name=f"{name}_1")
    y = branch_conv_bn(y, filters, 3, stride_3x3, options, name=f"{name}_2")
    y = conv_bn(y, expansion * filters, 1, 1, options, name=f"{name}_3", relu=False, zero_gamma=zero_gamma)
    return _merge(x, y, expansion * filters, stride, options, name)
