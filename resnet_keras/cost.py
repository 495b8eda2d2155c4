"""Cost accounting: multiply-adds (the paper's "FLOPs") and parameter counts."""

from __future__ import annotations

import math

import keras

from resnet_keras.layers import InputNormalization


def _layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def _static(shape, layer):
    dims = tuple(shape[1:])
    if any(d is None for d in dims):
        raise ValueError(
            f"count_flops needs a fixed input size, but layer {layer.name!r} has shape {tuple(shape)}; "
            "build the model with an input_shape of fixed height and width"
        )
    return dims


def count_flops(model: keras.Model) -> int:
    """Multiply-adds of one image through every convolution and dense layer,
    counted as the paper's Table 1 counts "FLOPs". BN, ReLU, additions and
    pooling are not counted (they are a fraction of a percent)."""
    total = 0
    for layer in _layers(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            out_h, out_w, out_c = _static(layer.output.shape, layer)
            kh, kw = layer.kernel_size
            total += out_h * out_w * out_c * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            out_h, out_w, out_c = _static(layer.output.shape, layer)
            in_c = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            total += out_h * out_w * out_c * kh * kw * (in_c // layer.groups)
        elif isinstance(layer, keras.layers.Dense):
            in_shape = _static(layer.input.shape, layer)
            total += math.prod(in_shape[:-1]) * in_shape[-1] * layer.units
    return int(total)


def count_params(model: keras.Model, *, head: bool = True, trainable_only: bool = False) -> int:
    """Parameters of the network as Keras counts them (BN moving statistics
    included), leaving out the input normalization's mean and std, which are
    constants of the data, not of the network. ``head=False`` also leaves out the
    classifier, which gives the backbone counts of ``PAPER.md``.
    ``trainable_only=True`` leaves out the BN moving statistics, which is how the
    paper counts its CIFAR networks (0.27M for ResNet-20)."""
    total = 0
    for layer in _layers(model):
        if isinstance(layer, InputNormalization):
            continue
        if not head and layer.name == "logits":
            continue
        weights = layer.trainable_weights if trainable_only else layer.weights
        total += sum(math.prod(w.shape) for w in weights)
    return int(total)
