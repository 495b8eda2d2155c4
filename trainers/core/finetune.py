"""``--init-from``: start a run from trained weights.

The source is a fit.py run directory (its ``model.keras``), a ``.keras`` file,
a ``.weights.h5`` file of a network of this library (``model.save_weights``,
or a shipped file), or a ``keras.applications`` ResNet50/101/152 weights file
(``.h5``, with or without its top) downloaded elsewhere. Every layer of the
new network whose name and weight shapes match the source's is copied; the
classifier is left new when the class count differs; any other layer that
does not fit stops the run with one line naming what did not fit. The source
is read by :func:`trainers.core.sources.load_trained`, as every command reads
a trained model.
"""

from __future__ import annotations

import numpy as np

import resnet_keras
from trainers.core.errors import UserError
from trainers.core.sources import CLASSIFIER, load_trained

NORMALIZATION = "normalization"
# Trained.kind -> the "kind" an --init-from report records.
REPORTED_KINDS = {"applications": "keras.applications", "imagenet": "published ImageNet weights"}


def initialize(target, spec: str, class_names=None) -> dict:
    """Copies the source's weights into ``target``; returns what was done.

    ``class_names``: the new run's classes. The classifier is copied only when
    its shape fits and, where the source's class names are known, they are the
    same: ten other classes get a new classifier, not the old one's rows."""
    try:
        trained = load_trained(spec, like=target)
    except UserError as error:
        raise UserError(f"--init-from: {error}") from None
    source, kind, known = trained.model, REPORTED_KINDS.get(trained.kind, trained.kind), trained.class_names
    other_classes = bool(class_names and known and list(class_names) != known)
    if kind == "keras.applications":
        head = CLASSIFIER in [layer.name for layer in target.layers] and any(
            layer.name == "predictions" and layer.units == target.get_layer(CLASSIFIER).units for layer in source.layers
        )
        try:  # the copy also sets keras.applications' ImageNet input mean, which its weights expect
            resnet_keras.copy_applications_weights(source, target, head=head)
        except ValueError as error:
            raise UserError(f"--init-from {spec}: {error}") from None
        return {
            "source": str(spec),
            "kind": kind,
            "classifier": "copied" if head else "new",
            "normalization": "source (keras.applications' ImageNet mean)",
        }

    layers = {layer.name: layer for layer in source.layers}
    if trained.kind == "imagenet":
        _check_same_network(target, source, spec, trained.config["imagenet"]["network"])
    copied, misfits, classifier, normalization = 0, [], "new", "data"
    pending, renamed = [], False
    for layer in target.layers:
        if not layer.weights:
            continue
        peer = layers.get(layer.name)
        shapes = [tuple(w.shape) for w in layer.weights]
        peer_shapes = None if peer is None else [tuple(w.shape) for w in peer.weights]
        if layer.name == CLASSIFIER and other_classes and peer_shapes == shapes:
            renamed = True  # the same count of other classes: a new head
            continue
        if peer_shapes == shapes:
            pending.append((layer, peer.get_weights()))
            if layer.name == CLASSIFIER:
                classifier = "copied"
            elif layer.name == NORMALIZATION:
                normalization = "source"
            continue
        if layer.name == CLASSIFIER:
            continue  # another class count: the new head stays as initialised
        if layer.name == NORMALIZATION:
            if trained.kind == "imagenet":
                # Published weights expect their source's per-channel mean and std, whatever this run's data is.
                imagenet = trained.config["imagenet"]
                # The source's per-channel statistics broadcast to this layer's (per-pixel) shape.
                pending.append((layer, [np.broadcast_to(imagenet[k], s) for k, s in zip(("mean", "std"), shapes)]))
                normalization = f"source ({spec}'s mean {imagenet['mean']} and std {imagenet['std']}, on 0-255)"
            continue  # otherwise another input size: the mean of this run's data stays
        misfits.append(f"{layer.name} {shapes}" + (" (absent in the source)" if peer is None else f" vs {peer_shapes}"))
    if misfits:
        raise UserError(
            f"--init-from {spec} does not fit {target.name!r}: {len(misfits)} layer(s) differ: "
            + "; ".join(misfits[:4])
            + ("; ..." if len(misfits) > 4 else "")
        )
    for layer, weights in pending:
        layer.set_weights(weights)
        copied += 1
    if renamed:
        classifier = "new (the source was trained on other classes)"
    return {
        "source": str(spec),
        "kind": kind,
        "layers_copied": copied,
        "classifier": classifier,
        "normalization": normalization,
    }


def _check_same_network(target, source, spec, network: dict) -> None:
    """Published weights fit only the network they were trained in: names and
    shapes do not tell ResNet-50 v1 from v1.5 (the same tensors, the stride on
    another convolution), so every strided or pooling layer must match too."""

    def layout(model):
        return {
            layer.name: (type(layer).__name__, tuple(getattr(layer, "strides", ()) or ()))
            for layer in model.layers
            if getattr(layer, "strides", None) is not None or "pool" in layer.name or "blur" in layer.name
        }

    ours, theirs = layout(target), layout(source)
    differ = [name for name in sorted(set(ours) | set(theirs)) if ours.get(name) != theirs.get(name)]
    if differ:
        wanted = ", ".join(f"{key}={value!r}" for key, value in network.items() if key != "arch")
        flags = {
            "stem": "--stem",
            "shortcut_downsample": "--shortcut-downsample",
            "bottleneck_version": "--bottleneck-version",
        }
        hint = " ".join(f"{flags[key]} {value}" for key, value in network.items() if key in flags)
        raise UserError(
            f"--init-from {spec} holds a {network['arch']} ({wanted or 'the architecture table row'}); this run's "
            f"{target.name} differs at {differ[0]} (strides or pooling): train --arch {network['arch']}"
            + (f" {hint}" if hint else "")
        )


def freeze_backbone(model) -> list:
    """``--freeze-epochs``: makes every layer but the classifier untrainable
    (so its BatchNormalization runs in inference mode and keeps its moving
    statistics, Keras' ``trainable = False`` convention); returns the frozen
    layers for ``unfreeze``. Build the optimizer over all variables first: its
    variable set (and so its backups) stays the same across the two phases."""
    names = [layer.name for layer in model.layers]
    if CLASSIFIER not in names:
        raise UserError(f"--freeze-epochs needs a classifier layer named {CLASSIFIER!r}; {model.name!r} has none")
    frozen = [layer for layer in model.layers if layer.name != CLASSIFIER and layer.trainable and layer.weights]
    for layer in frozen:
        layer.trainable = False
    return frozen


def unfreeze(model, frozen) -> None:
    """Makes the ``frozen`` layers trainable again and retraces the training
    step, which reads the trainable variables when it is traced."""
    for layer in frozen:
        layer.trainable = True
    model.make_train_function(force=True)
