"""Which tensor of a torchvision, timm or keras-hub ResNet goes into which weight of ours.

Pure NumPy and Keras: the functions take the tensors already read (``readers``), named as their source names them,
and assign them to a network built by :func:`~resnet_keras.get_model` (the catalog decides which network:
``catalog.build``).

torchvision and timm (one state-dict naming; timm's resnet18/34/50 keys and shapes are torchvision's):

=========================================  ====================================================
ours (layer)                               state-dict key (``.weight``; BN ``.weight``, ``.bias``,
                                           ``.running_mean``, ``.running_var``)
=========================================  ====================================================
``conv1_conv`` / ``conv1_bn``              ``conv1`` / ``bn1`` (7x7 stem)
``conv1_1_conv`` / ``conv1_1_bn``          ``conv1.0`` / ``conv1.1`` (timm's deep stem)
``conv1_2_conv`` / ``conv1_2_bn``          ``conv1.3`` / ``conv1.4``
``conv1_3_conv`` / ``conv1_3_bn``          ``conv1.6`` / ``bn1``
``conv{s}_block{b}_{i}_conv`` / ``_bn``    ``layer{s-1}.{b-1}.conv{i}`` / ``.bn{i}``
``conv{s}_block{b}_0_conv`` / ``_0_bn``    ``layer{s-1}.{b-1}.downsample.0`` / ``.1`` (strided 1x1), or
                                           ``.downsample.1`` / ``.2`` (timm's avg_down: its index 0 is
                                           the pooling, an ``Identity`` at stride 1, and holds nothing)
``logits``                                 ``fc``
=========================================  ====================================================

Layouts: a conv weight is OIHW ``(out, in, kh, kw)`` and becomes Keras' HWIO ``(kh, kw, in, out)``; that holds for
our 1x1 convolutions too (:class:`~resnet_keras.layers.MatmulConv2D` keeps ``keras.layers.Conv2D``'s kernel of
shape ``(1, 1, in, out)``). A Linear weight ``(out, in)`` becomes a Dense kernel ``(in, out)``. BN: gamma <- weight,
beta <- bias, moving_mean <- running_mean, moving_variance <- running_var; ``num_batches_tracked`` (a training
counter, absent from old checkpoints) is ignored. PyTorch's BN epsilon is 1e-5, as ours by default; a network built
with another ``bn_epsilon`` gets the difference added to its moving variances, so it computes the same function.

keras-hub's ``ResNetBackbone`` (layer name -> the layer's arrays, already in Keras layouts): the stem
``conv1_conv`` / ``conv1_bn``, or ``conv{1,2,3}_conv`` / ``_bn`` for the vd stem (our ``conv1_{1,2,3}_*``);
``stack{s-2}_block{b-1}_{i}_conv`` / ``_bn`` for our ``conv{s}_block{b}_{i}_*`` (``_0_`` the projection); its
classifier's ``predictions`` (``task.weights.h5``) for our ``logits``.

What the weights cannot say: a v1 and a v1.5 (ResNet-B) bottleneck have tensors of the same shapes, and so have
``shortcut_downsample="stride"`` and ``"avgpool"`` in keras-hub's naming. A file loads into either; the catalog, not
the file, decides the network (torchvision, timm and keras-hub bottlenecks are all v1.5).

Every check runs before any weight is assigned: every tensor the network needs must be there with its shape, and no
tensor of the file may be left over, else a one-line ``ValueError`` names the first mismatched tensor.
"""

from __future__ import annotations

import re

import keras
import numpy as np

from resnet_keras.layers import InputNormalization
from resnet_keras.specs import ARCHITECTURES

# PyTorch's nn.BatchNorm2d default and keras-hub's ResNetBackbone's, the epsilon the weights were trained with.
SOURCE_BN_EPSILON = 1e-5
NUM_BATCHES_TRACKED = "num_batches_tracked"
TORCH_CLASSIFIER = "fc"
KERAS_HUB_CLASSIFIER = "predictions"
OUR_CLASSIFIER = "logits"

# Our weight attribute -> the torch parameter or buffer suffix.
_BN_TORCH = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var"))
_BN_KERAS = ("gamma", "beta", "moving_mean", "moving_variance")

# Transforms from a source layout to ours.
CONV = "oihw->hwio"
LINEAR = "out,in->in,out"
SAME = "none"

_STEM = re.compile(r"^conv1_(conv|bn)$")
_DEEP_STEM = re.compile(r"^conv1_([123])_(conv|bn)$")
_BLOCK = re.compile(r"^conv(\d+)_block(\d+)_([0-3])_(conv|bn)$")


def to_keras(array: np.ndarray, transform: str) -> np.ndarray:
    """A source tensor in our layout."""
    if transform == CONV:
        return np.transpose(array, (2, 3, 1, 0))
    if transform == LINEAR:
        return np.transpose(array)
    return array


def source_shape(shape, transform: str) -> tuple[int, ...]:
    """The shape in the source's layout of one of our weights of ``shape``."""
    shape = tuple(int(d) for d in shape)
    if transform == CONV:
        return (shape[3], shape[2], shape[0], shape[1])
    if transform == LINEAR:
        return shape[::-1]
    return shape


def _weighted_layers(model: keras.Model):
    """The layers whose weights come from the file, in the model's order; refuses what no source has."""
    names = {layer.name for layer in model.layers}
    if "pool1_pool" not in names:
        raise ValueError(
            f"{model.name} is not an ImageNet network of this library (no stem max pool 'pool1_pool'); "
            "torchvision, timm and keras-hub ResNets are"
        )
    found = []
    for layer in model.layers:
        if not layer.weights or isinstance(layer, InputNormalization):
            continue
        if isinstance(layer, keras.layers.DepthwiseConv2D) or layer.name.endswith("_blur"):
            raise ValueError(
                f"{model.name} has anti-aliased downsampling ({layer.name!r}, blur_pool): "
                "torchvision, timm and keras-hub ResNets have none; build it with blur_pool='none'"
            )
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.BatchNormalization, keras.layers.Dense)):
            raise ValueError(f"{model.name} has a layer {layer.name!r} ({type(layer).__name__}) that no source has")
        found.append(layer)
    return found


def _avg_down(model: keras.Model) -> bool:
    # ResNet-D downsamples every strided projection with a pooling ``conv{s}_block{b}_0_pool`` (stages 3-5 have one).
    return any(layer.name.endswith("_0_pool") for layer in model.layers)


def _torch_module(layer_name: str, avg_down: bool) -> str:
    if _STEM.match(layer_name):
        return "conv1" if layer_name.endswith("_conv") else "bn1"
    match = _DEEP_STEM.match(layer_name)
    if match:
        i, kind = int(match.group(1)), match.group(2)
        if kind == "conv":
            return f"conv1.{3 * (i - 1)}"  # conv1.0, conv1.3, conv1.6 (BN and ReLU between)
        return "bn1" if i == 3 else f"conv1.{3 * (i - 1) + 1}"
    match = _BLOCK.match(layer_name)
    if match:
        stage, block, i, kind = (int(match.group(1)), int(match.group(2)), int(match.group(3)), match.group(4))
        prefix = f"layer{stage - 1}.{block - 1}"
        if i == 0:
            index = (1 if kind == "conv" else 2) if avg_down else (0 if kind == "conv" else 1)
            return f"{prefix}.downsample.{index}"
        return f"{prefix}.{'conv' if kind == 'conv' else 'bn'}{i}"
    raise ValueError(f"layer {layer_name!r} has no torchvision/timm counterpart")


def torch_names(model: keras.Model) -> dict[str, tuple[str, str]]:
    """Our weight path (``"layer/attribute"``, e.g. ``"conv2_block1_1_conv/kernel"``) -> (the torchvision/timm
    state-dict key, the transform from its layout to ours: :data:`CONV`, :data:`LINEAR` or :data:`SAME`), for every
    weight of ``model`` that a state dict holds, in the model's order. The classifier ``logits`` maps to ``fc``."""
    avg_down = _avg_down(model)
    names = {}
    for layer in _weighted_layers(model):
        if isinstance(layer, keras.layers.Dense):
            if layer.name != OUR_CLASSIFIER:
                raise ValueError(f"{model.name} has a dense layer {layer.name!r} that no source has")
            names[f"{layer.name}/kernel"] = (f"{TORCH_CLASSIFIER}.weight", LINEAR)
            names[f"{layer.name}/bias"] = (f"{TORCH_CLASSIFIER}.bias", SAME)
            continue
        module = _torch_module(layer.name, avg_down)
        if isinstance(layer, keras.layers.BatchNormalization):
            for ours, theirs in _BN_TORCH:
                names[f"{layer.name}/{ours}"] = (f"{module}.{theirs}", SAME)
        else:
            names[f"{layer.name}/kernel"] = (f"{module}.weight", CONV)
            if layer.use_bias:
                names[f"{layer.name}/bias"] = (f"{module}.bias", SAME)
    return names


def keras_hub_name(layer_name: str) -> str:
    """keras-hub ``ResNetBackbone``'s (or its classifier's) name of one of our layers."""
    if layer_name == OUR_CLASSIFIER:
        return KERAS_HUB_CLASSIFIER
    if _STEM.match(layer_name):
        return layer_name
    match = _DEEP_STEM.match(layer_name)
    if match:
        return f"conv{match.group(1)}_{match.group(2)}"
    match = _BLOCK.match(layer_name)
    if match:
        stage, block, i, kind = (int(match.group(1)), int(match.group(2)), match.group(3), match.group(4))
        return f"stack{stage - 2}_block{block - 1}_{i}_{kind}"
    raise ValueError(f"layer {layer_name!r} has no keras-hub counterpart")


def keras_hub_names(model: keras.Model) -> dict[str, str]:
    """Our layer name -> keras-hub's, for every layer of ``model`` whose weights a keras-hub preset holds."""
    return {layer.name: keras_hub_name(layer.name) for layer in _weighted_layers(model)}


def _layer_arrays(layer) -> list[str]:
    """The attributes of a layer's weights in Keras' order (the order of ``layer.get_weights()``)."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return list(_BN_KERAS)
    return ["kernel", "bias"] if layer.use_bias else ["kernel"]


def _variable(layer, attribute):
    return getattr(layer, attribute)


def _guess(stem: str, block: str, depths: tuple[int, ...], avg_down: bool | None) -> str:
    """Our name of the network a file's tensors describe, or a description."""
    if not all(depths):
        return "not a ResNet of four stages at all"
    for name, spec in ARCHITECTURES.items():
        if (
            spec.family == "imagenet"
            and spec.residual
            and spec.block == block
            and spec.stage_depths == depths
            and spec.stem == stem
            and (avg_down is None or (spec.shortcut_downsample == "avgpool") == avg_down)
        ):
            return name
    return f"a {block} network with {stem} stem and stages {depths}"


def _guess_torch(state) -> str:
    depths = []
    for stage in range(1, 5):
        blocks = {int(m.group(1)) for key in state for m in [re.match(rf"^layer{stage}\.(\d+)\.", key)] if m}
        depths.append(len(blocks))
    block = "bottleneck" if any(key.endswith(".conv3.weight") for key in state) else "basic"
    stem = "deep" if "conv1.0.weight" in state else "standard"
    avg_down = any(".downsample.2." in key for key in state)
    return _guess(stem, block, tuple(depths), avg_down)


def _guess_keras_hub(layers) -> str:
    depths = []
    for stack in range(4):
        blocks = {int(m.group(1)) for key in layers for m in [re.match(rf"^stack{stack}_block(\d+)_", key)] if m}
        depths.append(len(blocks))
    block = "bottleneck" if any(re.match(r"^stack\d+_block\d+_3_conv$", key) for key in layers) else "basic"
    stem = "deep" if "conv3_conv" in layers else "standard"
    return _guess(stem, block, tuple(depths), None)


def _another(model, guess: str, problem: str) -> str:
    """The end of a refusal: which network the file seems to be. ``problem``: "shape", "missing" or "extra"."""
    if guess != model.name:
        return f"the file is another network ({guess}?)"
    return {
        "shape": f"the file looks like a {guess} too, of another width?",
        "missing": f"the file looks like a {guess} but lacks this tensor (truncated or edited?)",
        "extra": f"the file looks like a {guess} but holds more (a variant of it, or edited?)",
    }[problem]


def _check_float(key: str, array, source_name: str) -> np.ndarray:
    array = np.asarray(array)
    # bfloat16 (ml_dtypes, as a reader may return it) is not a NumPy floating type but converts to float32 exactly.
    if not (np.issubdtype(array.dtype, np.floating) or array.dtype.name == "bfloat16"):
        raise ValueError(f"{source_name}: {key} holds {array.dtype} values; a weight must be floating point")
    return array


def _bn_variance(layer, variance: np.ndarray) -> np.ndarray:
    """The moving variance that gives the source's BN (epsilon 1e-5) under this layer's epsilon."""
    shift = SOURCE_BN_EPSILON - float(layer.epsilon)
    if shift == 0.0:
        return variance
    adjusted = variance + shift
    if np.any(adjusted <= 0):
        raise ValueError(
            f"{layer.name} has BN epsilon {layer.epsilon}, the weights 1e-5, and some moving variance is too small "
            "to absorb the difference; build the network with bn_epsilon=1e-5"
        )
    return adjusted


def _assign(pending) -> int:
    count = 0
    for variable, value in pending:
        variable.assign(value.astype(np.float32))
        count += int(value.size)
    return count


def load_torch_state_dict(
    model: keras.Model, state: dict, *, source_name: str = "the file", skip_classifier: bool = False
) -> dict:
    """Assigns a torchvision/timm state dict (key -> array, as the file names them) to ``model``.

    ``skip_classifier=True`` leaves the model's classifier as it is (fine-tuning makes a new head) and the file's
    ``fc`` tensors unused; a headless model (``include_top=False``) leaves them unused too. Returns a report: the
    ``source``, the number of ``tensors`` and ``parameters`` assigned, the ``ignored`` ``num_batches_tracked``
    count, ``classifier`` (``"loaded"``, ``"skipped"`` or ``"absent"``) and the ``unused`` keys of the file.

    Raises:
        ValueError: in one line, naming the first tensor that is missing, of another shape, or left over.
    """
    names = torch_names(model)
    layers = {layer.name: layer for layer in model.layers}
    has_classifier = OUR_CLASSIFIER in layers
    load_classifier = has_classifier and not skip_classifier
    if not load_classifier:
        names = {path: v for path, v in names.items() if not path.startswith(f"{OUR_CLASSIFIER}/")}

    pending = []
    used = set()
    for path, (key, transform) in names.items():
        layer_name, attribute = path.split("/")
        layer = layers[layer_name]
        variable = _variable(layer, attribute)
        expected = source_shape(variable.shape, transform)
        if key not in state:
            hint = _another(model, _guess_torch(state), "missing")
            if f"module.{key}" in state:
                hint = "its keys carry a 'module.' prefix (a DataParallel model's): strip it"
            elif key.startswith(f"{TORCH_CLASSIFIER}.") and has_classifier:
                hint = "a backbone without classifier? pass skip_classifier=True to keep the model's"
            raise ValueError(
                f"{source_name}: {key} {expected} is missing from the file, and this {model.name} needs it: {hint}"
            )
        array = _check_float(key, state[key], source_name)
        if tuple(array.shape) != expected:
            if key.startswith(f"{TORCH_CLASSIFIER}."):
                hint = (
                    f"the file's classifier has {array.shape[0]} classes, the model's {expected[0]}; "
                    "pass skip_classifier=True to keep the model's classifier"
                )
            else:
                hint = _another(model, _guess_torch(state), "shape")
            raise ValueError(
                f"{source_name}: {key} has shape {tuple(array.shape)} in the file but this {model.name} expects "
                f"{expected}: {hint}"
            )
        value = to_keras(array, transform)
        if attribute == "moving_variance":
            value = _bn_variance(layer, value)
        pending.append((variable, value))
        used.add(key)

    ignored = [key for key in state if key.rsplit(".", 1)[-1] == NUM_BATCHES_TRACKED]
    allowed = set(ignored)
    if not load_classifier:
        allowed |= {f"{TORCH_CLASSIFIER}.weight", f"{TORCH_CLASSIFIER}.bias"}
    for key in state:
        if key not in used and key not in allowed:
            raise ValueError(
                f"{source_name}: {key} {tuple(np.shape(state[key]))} is in the file but this {model.name} has no "
                f"such tensor: {_another(model, _guess_torch(state), 'extra')}"
            )

    parameters = _assign(pending)
    return {
        "source": source_name,
        "tensors": len(pending),
        "parameters": parameters,
        "ignored": len(ignored),
        "classifier": "loaded" if load_classifier else ("skipped" if has_classifier else "absent"),
        "unused": sorted(key for key in state if key not in used and key not in ignored),
    }


_VD_SHORTCUT = re.compile(r"^stack0_block0_0_(conv|bn)$")


def load_keras_hub_weights(
    model: keras.Model, layers: dict, *, source_name: str = "the preset", skip_classifier: bool = False
) -> dict:
    """Assigns keras-hub ``ResNetBackbone`` (and ``ResNetImageClassifier`` head) weights to ``model``: ``layers``
    maps keras-hub's layer names to the layer's arrays in Keras' order (a conv's kernel; BN's gamma, beta,
    moving_mean, moving_variance; the head's kernel and bias). Layers without weights (an empty list) are ignored.
    ``skip_classifier`` and the report are as :func:`load_torch_state_dict`'s.

    keras-hub's ``basic_block_vd`` gives the first block of its first stack a projection shortcut even at stride 1
    (``stack0_block0_0_conv``); no network of this library has one there, so its resnet_vd_18/34 are refused.

    Raises:
        ValueError: in one line, naming the first layer that is missing, of another shape, or left over.
    """
    ours = {layer.name: layer for layer in model.layers}
    names = keras_hub_names(model)
    has_classifier = OUR_CLASSIFIER in ours
    load_classifier = has_classifier and not skip_classifier
    if not load_classifier:
        names.pop(OUR_CLASSIFIER, None)
    given = {name: list(arrays) for name, arrays in layers.items() if len(arrays)}

    pending = []
    used = set()
    for our_name, hub_name in names.items():
        layer = ours[our_name]
        attributes = _layer_arrays(layer)
        if hub_name not in given:
            hint = _another(model, _guess_keras_hub(given), "missing")
            if hub_name == KERAS_HUB_CLASSIFIER:
                hint = "its classifier is in task.weights.h5; or pass skip_classifier=True to keep the model's"
            raise ValueError(
                f"{source_name}: layer {hub_name} is missing from the file, and this {model.name} needs it: {hint}"
            )
        arrays = given[hub_name]
        if len(arrays) != len(attributes):
            raise ValueError(
                f"{source_name}: layer {hub_name} has {len(arrays)} arrays in the file but this {model.name}'s "
                f"{our_name} has {len(attributes)} ({', '.join(attributes)})"
            )
        for index, (attribute, array) in enumerate(zip(attributes, arrays)):
            variable = _variable(layer, attribute)
            where = f"{hub_name}/{index} ({attribute})"
            array = _check_float(where, array, source_name)
            expected = tuple(int(d) for d in variable.shape)
            if tuple(array.shape) != expected:
                if hub_name == KERAS_HUB_CLASSIFIER:
                    classes = array.shape[-1] if array.ndim else "?"
                    hint = (
                        f"the file's classifier has {classes} classes, the model's {expected[-1]}; "
                        "pass skip_classifier=True to keep the model's classifier"
                    )
                else:
                    hint = _another(model, _guess_keras_hub(given), "shape")
                raise ValueError(
                    f"{source_name}: {where} has shape {tuple(array.shape)} in the file but this {model.name} expects "
                    f"{expected}: {hint}"
                )
            value = array
            if attribute == "moving_variance":
                value = _bn_variance(layer, value)
            pending.append((variable, value))
        used.add(hub_name)

    allowed = set() if load_classifier else {KERAS_HUB_CLASSIFIER}
    for name in given:
        if name in used or name in allowed:
            continue
        if _VD_SHORTCUT.match(name) and "conv2_block1_0_conv" not in ours:
            raise ValueError(
                f"{source_name}: layer {name} is a projection shortcut in the first block, which keras-hub's "
                f"basic_block_vd (resnet_vd_18/34) has and no network of this library has ({model.name} has an "
                "identity there)"
            )
        shapes = [tuple(np.shape(a)) for a in given[name]]
        raise ValueError(
            f"{source_name}: layer {name} {shapes} is in the file but this {model.name} has no such layer: "
            f"{_another(model, _guess_keras_hub(given), 'extra')}"
        )

    parameters = _assign(pending)
    return {
        "source": source_name,
        "tensors": len(pending),
        "parameters": parameters,
        "ignored": len(layers) - len(given),
        "classifier": "loaded" if load_classifier else ("skipped" if has_classifier else "absent"),
        "unused": sorted(name for name in given if name not in used),
    }
