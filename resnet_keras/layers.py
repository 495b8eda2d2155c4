"""Serializable pieces the networks are made of: input normalization and the
option A shortcut function. Both are registered with Keras, so a saved model
loads with ``keras.models.load_model`` in safe mode once ``resnet_keras`` is
imported."""

from __future__ import annotations

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
    parameters of its plain twin (Section 4.2). Strided slicing and padding are
    TFLite builtins, so models using it convert without Flex ops.
    """
    if stride > 1:
        x = x[:, ::stride, ::stride, :]
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
            raise ValueError(
                f"normalization mode {mode!r} is not valid; expected one of {NORMALIZATION_MODES}"
            )
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
