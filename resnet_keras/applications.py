"""Weights from ``keras.applications.ResNet50/101/152`` into ``resnet_keras``.

Both follow the paper's v1 bottleneck and use the same layer names, so the copy
goes layer by layer, by name. Three differences are reconciled exactly:

* ``keras.applications`` convolutions carry biases; ours do not, because BN
  follows every conv. BN(conv(x) + b) with moving mean m equals BN(conv(x)) with
  moving mean m - b, so each bias is folded into the next BN's moving mean.
* Its BN epsilon is 1.001e-5 and ours 1e-5 by default: the difference is added
  to the moving variance, so inference gives the same numbers.
* It expects ``keras.applications.resnet.preprocess_input`` ("caffe": RGB to
  BGR, minus the BGR ImageNet mean), ours raw RGB pixels. The mean goes into our
  normalization layer and the first conv's input channels are reversed, so our
  model on raw RGB equals theirs on preprocessed input.
"""

from __future__ import annotations

import keras
import numpy as np

from resnet_keras.layers import get_normalization
from resnet_keras.models import get_model

# keras.applications' "caffe" preprocessing mean, in RGB order.
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
APPLICATIONS = {
    "resnet50": "ResNet50",
    "resnet101": "ResNet101",
    "resnet152": "ResNet152",
}
_SOURCE_HEAD = "predictions"
_TARGET_HEAD = "logits"


def _weights_of(layer):
    return {w.path.split("/")[-1]: w.numpy() for w in layer.weights}


def copy_applications_weights(source: keras.Model, target: keras.Model, *, head: bool = True) -> keras.Model:
    """Copies a ``keras.applications`` ResNet (v1) into a ``resnet_keras`` model of
    the same depth, built with ``shortcut="B"`` and ``bottleneck_version="v1"``
    (the defaults for ``resnet50/101/152``). Sets the target's input normalization
    to the ImageNet "caffe" mean. ``head=False`` leaves the target's classifier
    alone (for fine-tuning with another number of classes). Returns ``target``.

    Raises ValueError when the two networks do not match layer for layer.
    """
    target_layers = {layer.name: layer for layer in target.layers}
    source_layers = {layer.name: layer for layer in source.layers}
    normalization = get_normalization(target)

    pending = {}  # target layer -> list of arrays, set once all checks pass
    for name, layer in source_layers.items():
        if not layer.weights or isinstance(layer, keras.layers.BatchNormalization):
            continue
        target_name = _TARGET_HEAD if name == _SOURCE_HEAD else name
        if target_name == _TARGET_HEAD and (not head or _TARGET_HEAD not in target_layers):
            continue  # the target keeps its classifier, or has none (include_top=False)
        peer = target_layers.get(target_name)
        if peer is None or not isinstance(peer, type(layer)):
            raise ValueError(
                f"target {target.name!r} has no {type(layer).__name__} named {target_name!r} to take "
                f"source layer {name!r}; is it the same depth, with shortcut 'B' and bottleneck 'v1'?"
            )
        weights = _weights_of(layer)
        kernel = weights["kernel"]
        if tuple(peer.kernel.shape) != kernel.shape:
            raise ValueError(
                f"layer {name!r}: source kernel {kernel.shape} does not match target {tuple(peer.kernel.shape)}"
                + ("; pass head=False to keep the target's classifier" if target_name == _TARGET_HEAD else "")
            )
        if isinstance(layer, keras.layers.Dense):
            pending[peer] = [kernel, weights["bias"]]
            continue
        if tuple(peer.strides) != tuple(layer.strides):
            raise ValueError(
                f"layer {name!r} has strides {layer.strides} in the source but {peer.strides} in the "
                "target; keras.applications ResNets are bottleneck v1"
            )
        if name == "conv1_conv":
            kernel = kernel[:, :, ::-1, :]  # BGR input channels -> RGB
        pending[peer] = [kernel]

        bn_name = name[: -len("_conv")] + "_bn"
        source_bn, target_bn = source_layers[bn_name], target_layers.get(bn_name)
        if not isinstance(target_bn, keras.layers.BatchNormalization):
            raise ValueError(f"target {target.name!r} has no BatchNormalization named {bn_name!r}")
        bn = _weights_of(source_bn)
        bias = weights.get("bias", 0.0)
        variance = bn["moving_variance"] + (source_bn.epsilon - target_bn.epsilon)
        if np.any(variance <= 0):
            raise ValueError(f"layer {bn_name!r}: cannot reconcile BN epsilons with this moving variance")
        pending[target_bn] = [bn["gamma"], bn["beta"], bn["moving_mean"] - bias, variance]

    missing = [
        layer.name
        for layer in target.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.BatchNormalization)) and layer not in pending
    ]
    if missing:
        raise ValueError(
            f"target {target.name!r} has layers the source lacks ({', '.join(missing[:5])}, ...); "
            "is it the same depth, with shortcut 'B' and bottleneck 'v1'?"
        )
    for layer, arrays in pending.items():
        layer.set_weights(arrays)
    normalization.set_statistics(CAFFE_MEAN_RGB)
    return target


def from_applications(name: str, *, weights="imagenet", input_shape=None, **kwargs) -> keras.Model:
    """``get_model(name)`` initialised from ``keras.applications``.

    ``weights`` is what ``keras.applications.ResNet50`` takes: ``"imagenet"``
    (downloads once into ``~/.keras/models``), a path to a weights file, or
    ``None``. The model keeps the 1000-class ImageNet head.
    """
    if name not in APPLICATIONS:
        raise ValueError(f"no keras.applications counterpart for {name!r}; expected one of {list(APPLICATIONS)}")
    for key in (
        "shortcut",
        "bottleneck_version",
        "stem",
        "shortcut_downsample",
        "blur_pool",
        "num_classes",
        "stage_depths",
        "width",
    ):
        if key in kwargs:
            raise ValueError(f"{key} is fixed by keras.applications.{APPLICATIONS[name]}; do not pass it")
    source = getattr(keras.applications, APPLICATIONS[name])(
        weights=weights, include_top=True, classifier_activation=None
    )
    target = get_model(name, num_classes=1000, input_shape=input_shape, **kwargs)
    return copy_applications_weights(source, target)
