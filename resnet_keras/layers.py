"""Serializable pieces the networks are made of: input normalization, the
option A shortcut function and the anti-aliasing blur's initializer and padding.
All are registered with Keras, so a saved model loads with
``keras.models.load_model`` in safe mode once ``resnet_keras`` is imported."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

PACKAGE = "resnet_keras"
NORMALIZATION_MODES = ("pixel", "channel")


@keras.saving.register_keras_serializable(package=PACKAGE)
def zero_pad_shortcut(x, stride=2, out_channels=None):
    """The paper's option A shortcut: subsample by taking every ``stride``-th
    pixel, then append zero channels up to ``out_channels``.

    It has no parameters, so a residual net with option A has exactly the
    parameters of its plain twin (Section 4.2).

    The subsampling is a max pooling with a 1x1 window and stride ``stride``:
    the same numbers as ``x[:, ::stride, ::stride, :]`` (a 1x1 window selects
    its one pixel) and the same gradient, but TensorFlow's strided slice and its
    gradient are generic copies, about 4x slower on a CPU than the pooling
    kernels (docs/benchmarks.md). Pooling and padding are TFLite builtins, so
    models using it convert without Flex ops.
    """
    if stride > 1:
        x = ops.max_pool(x, pool_size=1, strides=stride, padding="valid")
    extra = (out_channels or x.shape[-1]) - x.shape[-1]
    if extra > 0:
        x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])
    return x


def zero_pad_output_shape(input_shape, stride, out_channels):
    """Output shape of :func:`zero_pad_shortcut` without the batch axis."""
    h, w = input_shape[1], input_shape[2]
    h = None if h is None else -(-h // stride)
    w = None if w is None else -(-w // stride)
    return (h, w, out_channels)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BinomialBlur(keras.initializers.Initializer):
    """The kernel of Zhang's (2019, arXiv:1904.11486) anti-aliasing blur for a
    ``DepthwiseConv2D``: the outer product of two rows of Pascal's triangle,
    normalised to sum to one, the same in every channel. A 3x3 kernel is
    ``[1, 2, 1]`` outer ``[1, 2, 1]`` / 16. The sum of one keeps a constant
    image constant; the powers of two are exact in bfloat16 and float16.

    Shape ``(kh, kw, channels, depth_multiplier)`` (any trailing axes)."""

    def __call__(self, shape, dtype=None):
        if len(shape) < 2:
            raise ValueError(f"a blur kernel has a height and a width; got shape {tuple(shape)}")
        rows, cols = (np.array([math.comb(n - 1, i) for i in range(n)], "float64") for n in shape[:2])
        kernel = np.outer(rows, cols) / (rows.sum() * cols.sum())
        kernel = np.broadcast_to(kernel.reshape(kernel.shape + (1,) * (len(shape) - 2)), tuple(shape))
        return ops.convert_to_tensor(kernel, dtype=keras.backend.standardize_dtype(dtype or "float32"))

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ReflectPadding2D(keras.layers.Layer):
    """Pads height and width by ``padding`` pixels on every side with their
    mirror image (NumPy's ``"reflect"``: the edge pixel is not repeated), as
    Zhang's and timm's blur pools pad. TensorFlow's ``MirrorPad``, a TFLite
    builtin (``MIRROR_PAD``). Channels last."""

    def __init__(self, padding=1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
            raise ValueError(f"padding={padding!r}; expected a non-negative integer")
        self.padding = padding

    def call(self, inputs):
        p = self.padding
        return ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        grow = 2 * self.padding
        return (n, None if h is None else h + grow, None if w is None else w + grow, c)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@keras.saving.register_keras_serializable(package=PACKAGE)
class InputNormalization(keras.layers.Layer):
    """Subtracts a mean (and optionally divides by a std) held inside the model,
    so that saved and exported models take raw RGB pixels in [0, 255].

    ``mode="pixel"`` holds a mean image of the input's full shape (H, W, C), the
    paper's "per-pixel mean subtracted"; ``mode="channel"`` holds one value per
    channel and works at any image size. The statistics are non-trainable
    weights, saved with the model. Until a trainer sets them (``adapt`` or
    ``set_statistics``) the layer is the identity.

    It computes in float32 whatever the global dtype policy is: in bfloat16 a
    pixel value minus a mean near 128 would keep only ~3 significant digits.
    """

    def __init__(self, mode="pixel", **kwargs):
        if mode not in NORMALIZATION_MODES:
            raise ValueError(f"normalization mode {mode!r} is not valid; expected one of {NORMALIZATION_MODES}")
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.mode = mode

    def build(self, input_shape):
        if self.mode == "pixel":
            shape = tuple(input_shape[1:])
            if any(d is None for d in shape):
                raise ValueError(
                    f"per-pixel normalization needs a fixed input shape, got {tuple(input_shape[1:])}; "
                    "use normalization='channel' for variable image sizes"
                )
        else:
            shape = (input_shape[-1],)
        self.mean = self.add_weight(name="mean", shape=shape, initializer="zeros", trainable=False)
        self.std = self.add_weight(name="std", shape=shape, initializer="ones", trainable=False)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        return (x - self.mean) / self.std

    def compute_output_shape(self, input_shape):
        return input_shape

    def set_statistics(self, mean, std=None):
        """Sets the mean (and std; ones when ``None``). Each broadcasts to the
        layer's statistic shape, so a per-channel mean fills a per-pixel layer."""
        shape = tuple(self.mean.shape)
        values = {"mean": mean, "std": np.ones(shape) if std is None else std}
        arrays = {}
        for name, value in values.items():
            array = np.asarray(value, dtype=np.float64)
            try:
                array = np.broadcast_to(array, shape)
            except ValueError:
                raise ValueError(
                    f"{name} of shape {array.shape} does not broadcast to this layer's "
                    f"statistics shape {shape} (mode={self.mode!r})"
                ) from None
            if not np.all(np.isfinite(array)):
                raise ValueError(f"{name} has non-finite values")
            arrays[name] = array
        if np.any(arrays["std"] <= 0):
            raise ValueError("std must be positive")
        self.mean.assign(arrays["mean"].astype("float32"))
        self.std.assign(arrays["std"].astype("float32"))

    def adapt(self, images, use_std=False):
        """Sets the statistics from images: an array (N, H, W, C) or an iterable
        of such batches (for example a ``tf.data.Dataset`` of image batches).

        Sums run in float64, one pass. ``use_std=False`` (the paper) sets only the
        mean and keeps std at one.
        """
        if isinstance(images, np.ndarray):
            images = [images]
        axes = (0,) if self.mode == "pixel" else (0, 1, 2)
        count, total, total_sq = 0, 0.0, 0.0
        for batch in images:
            batch = np.asarray(batch, dtype=np.float64)
            if batch.ndim != 4:
                raise ValueError(f"adapt expects batches of shape (N, H, W, C), got {batch.shape}")
            count += int(np.prod([batch.shape[a] for a in axes]))
            total = total + batch.sum(axis=axes)
            if use_std:
                total_sq = total_sq + np.square(batch).sum(axis=axes)
        if count == 0:
            raise ValueError("adapt got no images")
        mean = total / count
        std = None
        if use_std:
            std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
            std = np.maximum(std, 1e-3)
        self.set_statistics(mean, std)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def get_normalization(model):
    """The model's :class:`InputNormalization` layer, to set its statistics."""
    for layer in model.layers:
        if isinstance(layer, InputNormalization):
            return layer
    raise ValueError(f"model {model.name!r} has no resnet_keras InputNormalization layer")


# Input dtypes TensorFlow's FusedBatchNormV3 kernels take (scale, offset and
# statistics stay float32).
_FUSED_DTYPES = ("float32", "bfloat16", "float16")


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by TensorFlow's fused kernel.

    Keras 3's BatchNormalization on the TensorFlow backend casts a bf16 input to
    float32, computes the batch moments with ``tf.nn.moments`` and normalizes
    with ``tf.nn.batch_normalization``: about ten ops and two casts per layer,
    forward and backward. ``FusedBatchNormV3`` does the forward pass in one
    kernel and the backward pass in another, reads bf16 input directly (its
    scale, offset and statistics are float32) and writes bf16 output.

    Same constructor, weights (``gamma``, ``beta``, ``moving_mean``,
    ``moving_variance``), layer names and config as Keras' layer, so weights
    copy by name in either direction and ``isinstance(layer,
    keras.layers.BatchNormalization)`` holds. The fused kernel is used where it
    applies: the TensorFlow backend, a rank-4 channels-last input (``axis=-1``
    or ``3``) of float32, bfloat16 or float16, no mask, no ``synchronized``
    statistics and no ``renorm``; elsewhere Keras' own computation runs,
    unchanged (``--sync-bn`` keeps its cross-replica statistics that way).

    Moving variance: the *biased* batch variance (divided by n), as Keras keeps
    it, not the Bessel-corrected one (n - 1) that the fused kernel returns and
    that Caffe and PyTorch keep. So one network has one meaning whichever path
    computes it (the fallback is Keras'), and statistics stay interchangeable
    with ``keras.layers.BatchNormalization``; the kernel's variance is scaled by
    (n - 1) / n before the moving-average update. For the paper's networks
    n = batch x height x width is at least 784 (ResNet-50's last stage at batch
    16), so the two conventions differ by at most 0.13%.
    """

    def _fused_applies(self, inputs, mask):
        if keras.backend.backend() != "tensorflow":
            return False
        if mask is not None or self.synchronized or self.renorm:
            return False
        rank = len(inputs.shape)
        if rank != 4 or self.axis not in (-1, rank - 1):
            return False
        return keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        gamma = self.gamma if self.scale else tf.ones([channels], "float32")
        beta = self.beta if self.center else tf.zeros([channels], "float32")
        gamma = tf.convert_to_tensor(gamma, "float32")
        beta = tf.convert_to_tensor(beta, "float32")
        if training and self.trainable:
            outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs,
                scale=gamma,
                offset=beta,
                mean=tf.constant([], "float32"),
                variance=tf.constant([], "float32"),
                epsilon=self.epsilon,
                data_format="NHWC",
                is_training=True,
            )
            # The kernel's variance is Bessel-corrected; keep the biased one.
            count = tf.cast(tf.size(inputs, out_type=tf.int64) // channels, "float32")
            variance = variance * ((count - 1.0) / tf.maximum(count, 1.0))
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        else:
            outputs, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs,
                scale=gamma,
                offset=beta,
                mean=tf.convert_to_tensor(self.moving_mean, "float32"),
                variance=tf.convert_to_tensor(self.moving_variance, "float32"),
                epsilon=self.epsilon,
                data_format="NHWC",
                is_training=False,
            )
        return tf.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MatmulConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` whose 1x1 convolutions train as matrix products.

    A 1x1 convolution is a product of the (N*H*W, C_in) pixels by the (C_in,
    C_out) kernel. In training, on the TensorFlow backend, this layer computes
    it so (after a 1x1 max pooling of stride ``strides`` when it subsamples,
    which selects the same pixels as the strided convolution), and its gradients
    are matrix products too. On CPUs this pays in bf16: oneDNN's backward-weights
    convolution (``brgconv_bwd_w``) runs 2-4x slower than its forward pass on
    ResNet-50's 1x1 shapes, the matmuls do not (docs/benchmarks.md). In
    inference (``training=False``: evaluation, export, TFLite) it is Keras'
    convolution, unchanged, so converters still fold the following
    BatchNormalization into it.

    Same constructor, weights (``kernel`` of shape (1, 1, C_in, C_out), ``bias``)
    and config as ``keras.layers.Conv2D``; every other kernel size, dilation,
    ``groups``, ``channels_first`` or another backend is Keras' convolution.
    """

    def _matmul_applies(self, inputs):
        return (
            keras.backend.backend() == "tensorflow"
            and tuple(self.kernel_size) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.groups == 1
            and self.data_format == "channels_last"
            and len(inputs.shape) == 4
        )

    def call(self, inputs, training=None):
        if not (training and self._matmul_applies(inputs)):
            return super().call(inputs)
        import tensorflow as tf

        x = inputs
        if tuple(self.strides) != (1, 1):
            x = ops.max_pool(x, pool_size=1, strides=self.strides, padding="valid")
        kernel = tf.reshape(self.kernel, (self.kernel.shape[-2], self.filters))
        y = tf.matmul(tf.reshape(x, (-1, x.shape[-1])), kernel)
        height, width = x.shape[1], x.shape[2]
        if height is not None and width is not None:
            y = tf.reshape(y, (-1, height, width, self.filters))
        else:
            y = tf.reshape(y, tf.concat([tf.shape(x)[:3], [self.filters]], axis=0))
        if self.use_bias:
            y = tf.nn.bias_add(y, self.bias)
        if self.activation is not None:
            y = self.activation(y)
        return y
