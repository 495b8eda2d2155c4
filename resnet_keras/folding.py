"""Inference copies of a network with each BatchNormalization merged into the
convolution before it (:func:`fold_batchnorm`).

In inference a BatchNormalization is a per-channel affine map, ``y = s * x + t``
with ``s = gamma / sqrt(moving_variance + epsilon)`` and ``t = beta - s *
moving_mean``; after a convolution it folds into that convolution's kernel
(``kernel * s`` along the output channels) and bias (``s * bias + t``). The
TFLite, ONNX and OpenVINO converters do this themselves. TensorFlow does not:
its graph optimizer fuses a convolution and the BatchNormalization after it
into one ``_FusedConv2D`` whose normalization oneDNN applies as four
element-wise post-operations, and at batch 1 oneDNN runs that fused kernel on a
slow path, many times slower per image than at batch 2 (docs/export.md has the
figures). A folded graph has no normalization left to fuse, so the SavedModel
export serves a folded copy.
"""

from __future__ import annotations

from collections import Counter

import keras
import numpy as np

_TENSOR = "__keras_tensor__"


def _references(value):
    """Every ``keras_history`` [layer name, node index, tensor index] inside a
    serialized call's arguments."""
    if isinstance(value, dict):
        if value.get("class_name") == _TENSOR:
            yield value["config"]["keras_history"]
            return
        for item in value.values():
            yield from _references(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _references(item)


def _output_references(output_layers):
    """The [name, node, tensor] triples of a functional config's outputs (one
    triple, or a list of them)."""
    if output_layers and isinstance(output_layers[0], str):
        return [output_layers]
    return list(output_layers)


def _renamed(value, renames: dict):
    """A serialized call's arguments with every tensor read from a layer in
    ``renames`` read from its replacement instead."""
    if isinstance(value, dict):
        if value.get("class_name") == _TENSOR:
            history = value["config"]["keras_history"]
            if history[0] in renames:
                value = {**value, "config": {**value["config"], "keras_history": [renames[history[0]], *history[1:]]}}
            return value
        return {key: _renamed(item, renames) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_renamed(item, renames) for item in value]
    return value


def _foldable(conv, norm) -> bool:
    """Whether ``norm`` (a BatchNormalization) can merge into ``conv``: a plain
    2-D convolution, channels last, no activation of its own (the normalization
    must see the convolution's linear output), normalizing the channel axis."""
    return (
        isinstance(conv, keras.layers.Conv2D)
        and conv.data_format == "channels_last"
        and conv.activation in (None, keras.activations.linear)
        and isinstance(norm, keras.layers.BatchNormalization)
        and norm.axis in (-1, 3)
        and not getattr(norm, "renorm", False)
    )


def foldable_pairs(model) -> dict[str, str]:
    """{BatchNormalization name: convolution name} of each normalization in
    ``model``'s top level that reads a convolution's output, where that output
    is read by nothing else and each layer is called once."""
    config = model.get_config()
    if "output_layers" not in config:
        raise ValueError(f"model {model.name!r} is not a functional model: nothing to fold in its config")
    layers = {c["name"]: c for c in config["layers"]}
    reads = Counter(ref[0] for c in config["layers"] for ref in _references(c["inbound_nodes"]))
    reads.update(ref[0] for ref in _output_references(config["output_layers"]))
    pairs = {}
    for name, c in layers.items():
        if len(c["inbound_nodes"]) != 1:
            continue
        sources = list(_references(c["inbound_nodes"][0]))
        if len(sources) != 1:
            continue
        source = sources[0][0]
        if source not in layers or len(layers[source]["inbound_nodes"]) != 1 or reads[source] != 1:
            continue
        if _foldable(model.get_layer(source), model.get_layer(name)):
            pairs[name] = source
    return pairs


def folded_weights(conv, norm) -> list[np.ndarray]:
    """[kernel, bias] of ``conv`` with ``norm`` merged in, computed in float64
    and returned in the variables' dtype."""
    kernel = np.asarray(keras.ops.convert_to_numpy(conv.kernel), np.float64)
    bias = np.asarray(keras.ops.convert_to_numpy(conv.bias), np.float64) if conv.use_bias else 0.0
    mean = np.asarray(keras.ops.convert_to_numpy(norm.moving_mean), np.float64)
    variance = np.asarray(keras.ops.convert_to_numpy(norm.moving_variance), np.float64)
    gamma = np.asarray(keras.ops.convert_to_numpy(norm.gamma), np.float64) if norm.scale else 1.0
    beta = np.asarray(keras.ops.convert_to_numpy(norm.beta), np.float64) if norm.center else 0.0
    scale = gamma / np.sqrt(variance + norm.epsilon)
    dtype = keras.backend.standardize_dtype(conv.kernel.dtype)
    return [(kernel * scale).astype(dtype), ((bias - mean) * scale + beta).astype(dtype)]


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """An inference copy of the functional ``model`` with every
    BatchNormalization that follows a convolution alone (:func:`foldable_pairs`)
    merged into that convolution, which gains a bias. Same inputs, outputs and
    layer names otherwise; its answers equal ``model(x, training=False)`` to
    float rounding. Normalizations elsewhere (a pre-activation block's, one after
    an addition) and nested models stay as they are. A model with nothing to
    fold comes back as it is. Inference only: training the copy would not
    update any batch statistics."""
    pairs = foldable_pairs(model)
    if not pairs:
        return model
    convs = {conv: norm for norm, conv in pairs.items()}
    config = model.get_config()
    layers = []
    for c in config["layers"]:
        if c["name"] in pairs:
            continue
        c = _renamed(c, pairs)
        if c["name"] in convs:
            c["config"] = {**c["config"], "use_bias": True}
            c.pop("build_config", None)  # rebuilt with its bias from the call
        layers.append(c)
    outputs = [[pairs.get(ref[0], ref[0]), *ref[1:]] for ref in _output_references(config["output_layers"])]
    single = isinstance(config["output_layers"][0], str)
    config = {**config, "layers": layers, "output_layers": outputs[0] if single else outputs}
    folded = model.__class__.from_config(config)
    for layer in folded.layers:
        if layer.name in convs:
            layer.set_weights(folded_weights(model.get_layer(layer.name), model.get_layer(convs[layer.name])))
        elif layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return folded
