"""A keras-hub ResNet preset folder read without keras-hub: its backbone's layers by keras-hub's names.

A preset holds ``config.json`` (the serialized ``ResNetBackbone``), ``model.weights.h5`` (the backbone's weights),
``task.weights.h5`` (the classifier's ``predictions`` Dense, saved with the backbone skipped) and
``image_converter.json`` (its preprocessing). Keras files a layer's variables under its class name and a counter
(``layers/conv2d_7/vars``), not under the layer's name, so the groups are resolved to keras-hub's layer names:

* by the ``name`` attribute recent Keras versions (3.15.1 does) write on each ``vars`` group, where every group
  has one;
* else by position: the k-th ``conv2d`` group is the k-th ``Conv2D`` of ``backbone.layers`` (and likewise for
  ``batch_normalization``), the order Keras saves in. That order is Keras' topological order of the functional
  graph (by depth from the output, then by the order its depth-first walk meets the layers), which interleaves a
  block's projection shortcut with its main branch, so it is not the order the layers are written in. It is rebuilt
  here from ``config.json``: :func:`backbone_layer_order` builds, with plain Keras layers, the graph keras-hub
  0.32.0's ``ResNetBackbone`` builds (``models/resnet/resnet_backbone.py``: the same layers, connections, names and
  ``Add([shortcut, x])`` input order; one filter per conv, since widths do not change the order) and reads Keras'
  own ``model.layers``. Checked against keras-hub 0.32.0's ``ResNetBackbone`` under Keras 3.15.1 for every preset
  configuration in the catalog; a file saved by another Keras whose graph walk differed would show up as shape
  mismatches, or, for layers of equal shapes, would not: the name attributes are the reliable route.
  A file whose groups carry some names but not all is resolved by position and each name present is checked.

The preset's ``config.json`` must describe the entry's network (block type, stem, stages), else a one-line refusal.
"""

from __future__ import annotations

import functools
import json
import math
import pathlib

from resnet_keras.ported.readers import _natural_key, read_keras_weights_h5
from resnet_keras.specs import STAGE_FILTERS, resolve_spec

CONFIG_FILE = "config.json"
BACKBONE_FILE = "model.weights.h5"
HEAD_FILE = "task.weights.h5"
CONVERTER_FILE = "image_converter.json"
CLASSIFIER = "predictions"
# Keras' saving names (snake-case class names) of the two weighted layer classes of a ResNetBackbone.
CONV, BN = "conv2d", "batch_normalization"
BY_NAME = "by the name attribute of each layer's group in the file"
BY_POSITION = (
    "by position: the file's groups carry no layer names, so keras-hub's layer order was rebuilt from config.json "
    "(Keras' functional graph order, checked against keras-hub 0.32.0 under Keras 3.15.1)"
)


def expected_config(arch: str) -> dict:
    """The ``ResNetBackbone`` config keys of keras-hub's version of our network ``arch`` (v1 or vd)."""
    spec = resolve_spec(arch)
    vd = spec.stem == "deep"
    if vd != (spec.shortcut_downsample == "avgpool"):
        raise ValueError(f"{arch} mixes a deep stem and strided projections, which no keras-hub ResNet does")
    return {
        "input_conv_filters": [32, 32, 64] if vd else [64],
        "input_conv_kernel_sizes": [3, 3, 3] if vd else [7],
        "stackwise_num_filters": list(STAGE_FILTERS["imagenet"]),
        "stackwise_num_blocks": list(spec.stage_depths),
        "stackwise_num_strides": [1, 2, 2, 2],
        "block_type": ("basic_block" if spec.block == "basic" else "bottleneck_block") + ("_vd" if vd else ""),
        "use_pre_activation": False,
    }


def read_config(folder: pathlib.Path, entry) -> dict:
    """The backbone config of the preset in ``folder``, checked to describe ``entry``'s network."""
    path = folder / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{entry.spec}: {path} cannot be read as JSON ({type(e).__name__}: {e})"[:400]) from None
    if (
        not isinstance(data, dict)
        or data.get("class_name") != "ResNetBackbone"
        or not isinstance(data.get("config"), dict)
    ):
        found = data.get("class_name") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{entry.spec}: {path} is not a serialized keras-hub ResNetBackbone (class_name {found!r})")
    config = data["config"]
    for key, want in expected_config(entry.arch).items():
        got = config.get(key, False if key == "use_pre_activation" else None)
        if (list(got) if isinstance(got, (list, tuple)) else got) != want:
            raise ValueError(
                f"{entry.spec}: {path} describes a ResNetBackbone with {key}={got!r}, but {entry.spec} is our "
                f"{entry.arch}, keras-hub's {key}={want!r}: the folder holds another network"
            )
    return config


@functools.cache
def _layer_order(key: tuple) -> tuple[tuple[str, str], ...]:
    import keras
    from keras import layers

    stem_kernels, blocks, strides, block_type = key
    counter = iter(range(1 << 30))

    def conv(x, kernel, stride, name, padding):
        return layers.Conv2D(1, kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)

    def bn(x, name):
        return layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)(x)

    def relu(x, name):
        return layers.Activation("relu", name=name)(x)

    def block(x, stride, conv_shortcut, name):
        bottleneck = block_type.startswith("bottleneck")
        if conv_shortcut:
            shortcut = x
            if block_type.endswith("_vd"):
                if stride > 1:  # unnamed in keras-hub
                    shortcut = layers.AveragePooling2D(
                        2, strides=stride, padding="same", name=f"avgpool_{next(counter)}"
                    )(x)
                shortcut = conv(shortcut, 1, 1, f"{name}_0_conv", "valid")
            else:
                shortcut = conv(shortcut, 1, stride, f"{name}_0_conv", "valid")
            shortcut = bn(shortcut, f"{name}_0_bn")
        else:
            shortcut = x
        if bottleneck:
            x = relu(bn(conv(x, 1, 1, f"{name}_1_conv", "valid"), f"{name}_1_bn"), f"{name}_1_relu")
            index = 2
        else:
            index = 1
        if stride > 1:
            x = layers.ZeroPadding2D(1, name=f"{name}_{index}_pad")(x)
        x = conv(x, 3, stride, f"{name}_{index}_conv", "valid" if stride > 1 else "same")
        x = relu(bn(x, f"{name}_{index}_bn"), f"{name}_{index}_relu")
        last = index + 1
        x = bn(conv(x, 1 if bottleneck else 3, 1, f"{name}_{last}_conv", "same"), f"{name}_{last}_bn")
        x = layers.Add(name=f"{name}_add")([shortcut, x])
        return layers.Activation("relu", name=f"{name}_out")(x)

    inputs = keras.Input((None, None, 3))
    x = layers.ZeroPadding2D((stem_kernels[0] - 1) // 2, name="conv1_pad")(inputs)
    x = conv(x, stem_kernels[0], 2, "conv1_conv", "valid")
    for i in range(1, len(stem_kernels)):
        x = relu(bn(x, f"conv{i}_bn"), f"conv{i}_relu")
        x = conv(x, stem_kernels[i], 1, f"conv{i + 1}_conv", "same")
    x = relu(bn(x, f"conv{len(stem_kernels)}_bn"), f"conv{len(stem_kernels)}_relu")
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for s, (depth, stride) in enumerate(zip(blocks, strides)):
        for b in range(depth):
            first_shortcut = block_type != "basic_block" or s > 0
            x = block(x, stride if b == 0 else 1, first_shortcut and b == 0, f"stack{s}_block{b}")
    model = keras.Model(inputs, x)
    order = []
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            order.append((CONV, layer.name))
        elif isinstance(layer, layers.BatchNormalization):
            order.append((BN, layer.name))
    return tuple(order)


def backbone_layer_order(config: dict) -> list[tuple[str, str]]:
    """``(Keras saving class name, keras-hub layer name)`` of each weighted layer of the ``ResNetBackbone`` that
    ``config`` describes, in ``backbone.layers`` order (the order Keras numbers their groups in a weights file)."""
    if config.get("use_pre_activation"):
        raise ValueError("a pre-activation (v2) ResNetBackbone, which this library does not build")
    key = (
        tuple(int(k) for k in config["input_conv_kernel_sizes"]),
        tuple(int(b) for b in config["stackwise_num_blocks"]),
        tuple(int(s) for s in config["stackwise_num_strides"]),
        str(config["block_type"]),
    )
    return list(_layer_order(key))


def _by_position(path, groups, config) -> dict[str, list]:
    order = backbone_layer_order(config)
    names = {CONV: [n for c, n in order if c == CONV], BN: [n for c, n in order if c == BN]}
    found = {CONV: {}, BN: {}}
    for group, label, arrays in groups:
        base, counter = _natural_key(group)
        if base not in found or (counter == -1) != (group == base):
            raise ValueError(f"{path}: layers/{group} is not a Conv2D or BatchNormalization group of a ResNetBackbone")
        found[base][max(counter, 0)] = (group, label, arrays)
    layers = {}
    for base, listed in names.items():
        if sorted(found[base]) != list(range(len(listed))):
            raise ValueError(
                f"{path}: {len(found[base])} {base} groups, numbered {sorted(found[base])[:3]}..., but config.json's "
                f"ResNetBackbone has {len(listed)} of them: the weights and the config do not match"
            )
        for k, name in enumerate(listed):
            group, label, arrays = found[base][k]
            if label is not None and label != name:
                raise ValueError(
                    f"{path}: layers/{group} is named {label!r} in the file but is {name!r} by keras-hub's layer order "
                    "rebuilt from config.json: the file was not saved from this configuration"
                )
            layers[name] = arrays
    return layers


def read_backbone(folder: pathlib.Path, config: dict) -> tuple[dict[str, list], str]:
    """keras-hub layer name -> arrays of the preset's ``model.weights.h5``, and how the names were found
    (:data:`BY_NAME` or :data:`BY_POSITION`)."""
    path = folder / BACKBONE_FILE
    groups = read_keras_weights_h5(path)
    if groups and all(label is not None for _, label, _ in groups):
        layers = {}
        for group, label, arrays in groups:
            if label in layers:
                raise ValueError(f"{path}: two groups are named {label!r} (layers/{group} is the second)")
            layers[label] = arrays
        return layers, BY_NAME
    return _by_position(path, groups, config), BY_POSITION


def read_head(folder: pathlib.Path) -> tuple[list, str]:
    """The arrays (kernel, bias) of the classifier ``predictions`` in the preset's ``task.weights.h5``, and how the
    group was found: by its name, or as the file's only weighted group."""
    path = folder / HEAD_FILE
    groups = read_keras_weights_h5(path)
    named = [arrays for _, label, arrays in groups if label == CLASSIFIER]
    if len(named) == 1:
        return named[0], BY_NAME
    if len(groups) == 1 and groups[0][1] is None and groups[0][0] == "dense":
        return groups[0][2], "as the file's only layer (a Dense without a name attribute)"
    listed = ", ".join(f"{g} ({n})" if n else g for g, n, _ in groups[:6]) or "no weighted layer"
    raise ValueError(f"{path}: no classifier layer {CLASSIFIER!r} among its groups: {listed}")


def read_normalization(folder: pathlib.Path) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The preset's own preprocessing as our normalization of raw [0, 255] pixels, ``(mean, std)`` per channel, from
    ``image_converter.json`` (``x * scale + offset``, or the older ``mean``/``variance``/``scale`` keys keras-hub
    still accepts); ``None`` where the file is absent or says something else."""
    try:
        data = json.loads((folder / CONVERTER_FILE).read_text(encoding="utf-8"))
        config = dict(data["config"])
        scale = config.get("scale")
        scale = 1.0 if scale is None else scale
        offset = config.get("offset")
        if "mean" in config and "variance" in config:  # keras-hub's ImageConverter.__init__, old names
            std = [math.sqrt(v) for v in config["variance"]]
            scale = [scale / s for s in std]
            offset = [-m / s for m, s in zip(config["mean"], std)]
        scale = [float(scale)] * 3 if not isinstance(scale, (list, tuple)) else [float(s) for s in scale]
        offset = [0.0] * 3 if offset is None else offset
        offset = [float(offset)] * 3 if not isinstance(offset, (list, tuple)) else [float(o) for o in offset]
        if len(scale) != 3 or len(offset) != 3 or not all(s > 0 for s in scale):
            return None
    except Exception:  # absent, or not the layout read here
        return None
    # x * scale + offset == (x - mean) / std  with  std = 1 / scale, mean = -offset / scale.
    return tuple(-o / s for o, s in zip(offset, scale)), tuple(1.0 / s for s in scale)
