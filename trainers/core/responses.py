"""Layer responses of trained CIFAR networks, as the paper's Figure 7 shows
them: the standard deviation of each 3x3 layer's response, after its
BatchNormalization and before the ReLU or the addition.

A layer's response std here is the standard deviation of each output channel
over all images and positions, averaged over the channels (a channel's mean is
BN's learned offset, not a response; the spread around it is). The sums are
accumulated in float64 over batches, so the result does not depend on the
batch size.
"""

from __future__ import annotations

import keras
import numpy as np


def response_layers(model: keras.Model) -> list[str]:
    """Names of the BatchNormalization layers that follow a 3x3 convolution,
    in the order of the network (the first conv, then each block's)."""
    names = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        inbound = layer._inbound_nodes[0].parent_nodes if layer._inbound_nodes else []
        sources = [node.operation for node in inbound]
        if any(isinstance(s, keras.layers.Conv2D) and tuple(s.kernel_size) == (3, 3) for s in sources):
            names.append(layer.name)
    return names


def response_stds(model: keras.Model, batches, layers: list[str] | None = None) -> dict[str, float]:
    """``{layer name: response std}`` over every image of ``batches`` (an
    iterable of image batches, or of (images, labels) pairs), in inference
    mode (BN with its moving statistics)."""
    layers = layers or response_layers(model)
    if not layers:
        raise ValueError("the model has no BatchNormalization after a 3x3 convolution")
    probe = keras.Model(model.input, [model.get_layer(name).output for name in layers])
    counts = sums = sq_sums = None
    for batch in batches:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        outputs = probe(images, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        values = [np.asarray(keras.ops.convert_to_numpy(o), np.float64) for o in outputs]
        per_channel = [v.reshape(-1, v.shape[-1]) for v in values]  # (images x positions, channels)
        if sums is None:
            counts = [0] * len(values)
            sums = [np.zeros(v.shape[-1]) for v in per_channel]
            sq_sums = [np.zeros(v.shape[-1]) for v in per_channel]
        for i, v in enumerate(per_channel):
            counts[i] += v.shape[0]
            sums[i] += v.sum(axis=0)
            sq_sums[i] += (v * v).sum(axis=0)
    if sums is None:
        raise ValueError("no images")
    result = {}
    for name, n, total, squares in zip(layers, counts, sums, sq_sums):
        mean = total / n
        variance = np.maximum(squares / n - mean * mean, 0.0)
        result[name] = float(np.sqrt(variance).mean())
    return result


def bn_scales(model: keras.Model, layers: list[str] | None = None) -> dict[str, float]:
    """``{layer name: mean |gamma|}`` of the response layers' BatchNormalization
    (1 at initialization): how far training has moved each layer's scale."""
    layers = layers or response_layers(model)
    return {name: float(np.mean(np.abs(keras.ops.convert_to_numpy(model.get_layer(name).gamma)))) for name in layers}
