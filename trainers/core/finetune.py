"""``--init-from``: start a run from trained weights.

The source is a fit.py run directory (its ``model.keras``), a ``.keras`` file,
a ``.weights.h5`` file of a network of this library (``model.save_weights``,
or a shipped file), or a ``keras.applications`` ResNet50/101/152 weights file
(``.h5``, with or without its top) downloaded elsewhere. Every layer of the
new network whose name and weight shapes match the source's is copied; the
classifier is left new when the class count differs; any other layer that
does not fit stops the run with one line naming what did not fit.
"""

from __future__ import annotations

import pathlib

from trainers.core.common import UserError, load_keras_model, read_json

APPLICATION_DEPTHS = {50: "ResNet50", 101: "ResNet101", 152: "ResNet152"}
CLASSIFIER = "logits"
NORMALIZATION = "normalization"


def _weights_h5_classes(path: pathlib.Path):
    """The class count of a Keras 3 ``.weights.h5`` file of a library network
    (its ``logits`` kernel), or None when it has no classifier."""
    import h5py

    with h5py.File(path, "r") as f:
        group = f.get(f"layers/{CLASSIFIER}/vars")
        if group is None or "1" not in group:
            return None
        return int(group["1"].shape[0])  # the bias


def load_source(spec: str, target):
    """(source model, kind) for ``--init-from``."""
    import keras

    import resnet_keras

    path = pathlib.Path(spec).expanduser().resolve()
    if path.is_dir():
        if not (path / "model.keras").exists():
            raise UserError(f"--init-from {path}: not a finished run directory (no model.keras)")
        return load_keras_model(path / "model.keras"), "run"
    if not path.exists():
        raise UserError(f"--init-from {path}: no such file or directory")
    if path.suffix == ".keras":
        return load_keras_model(path), "keras"
    if path.name.endswith(".weights.h5"):
        try:
            classes = _weights_h5_classes(path)
        except OSError as error:
            raise UserError(f"--init-from {path}: not a readable weights file ({error})") from None
        arch = target.name
        try:
            source = resnet_keras.get_model(arch, num_classes=classes or 1, input_shape=target.input_shape[1:])
            if classes is None:
                source = resnet_keras.models.headless(source)
            source.load_weights(path)
        except (ValueError, KeyError) as error:
            # Keras' message: a summary line ending in ':', then the first layer's detail.
            lines = [line.split(" Target variable:")[0].strip() for line in str(error).splitlines() if line.strip()][:2]
            raise UserError(f"--init-from {path}: these weights do not fit {arch!r} ({' '.join(lines)})") from None
        return source, "weights"
    if path.suffix == ".h5":
        spec_ = resnet_keras.resolve_spec(target.name)
        application = APPLICATION_DEPTHS.get(spec_.depth) if spec_.block == "bottleneck" else None
        if application is None:
            raise UserError(f"--init-from {path}: a keras.applications weights file fits resnet50/101/152 only, "
                            f"not {target.name!r}")  # fmt: skip
        top = "notop" not in path.name
        try:
            source = getattr(keras.applications, application)(
                weights=str(path), include_top=top, input_shape=None if top else target.input_shape[1:],
                classifier_activation=None,
            )  # fmt: skip
        except Exception as error:  # noqa: BLE001 (Keras raises several kinds for a foreign file)
            raise UserError(f"--init-from {path}: not {application} weights ({type(error).__name__}: {error})"
                            .splitlines()[0]) from None  # fmt: skip
        return source, "keras.applications"
    raise UserError(f"--init-from {path}: expected a run directory, a .keras file, a .weights.h5 file or a "
                    "keras.applications .h5 file")  # fmt: skip


def source_class_names(spec: str):
    """The class names a run directory (or a ``.keras`` file inside one)
    was trained on, from its config.json; None where unknown."""
    path = pathlib.Path(spec).expanduser().resolve()
    config = (path if path.is_dir() else path.parent) / "config.json"
    if not (path.is_dir() or path.suffix == ".keras") or not config.exists():
        return None
    try:
        names = read_json(config, "run configuration").get("class_names")
    except (UserError, AttributeError):  # unreadable, or not a run's config: the names are unknown
        return None
    return list(names) if isinstance(names, list) else None


def initialize(target, spec: str, class_names=None) -> dict:
    """Copies the source's weights into ``target``; returns what was done.

    ``class_names``: the new run's classes. The classifier is copied only when
    its shape fits and, where the source's class names are known, they are the
    same: ten other classes get a new classifier, not the old one's rows."""
    import resnet_keras

    source, kind = load_source(spec, target)
    known = source_class_names(spec)
    other_classes = bool(class_names and known and list(class_names) != known)
    if kind == "keras.applications":
        head = CLASSIFIER in [layer.name for layer in target.layers] and any(
            layer.name == "predictions" and layer.units == target.get_layer(CLASSIFIER).units for layer in source.layers
        )
        try:  # the copy also sets keras.applications' ImageNet input mean, which its weights expect
            resnet_keras.copy_applications_weights(source, target, head=head)
        except ValueError as error:
            raise UserError(f"--init-from {spec}: {error}") from None
        return {"source": str(spec), "kind": kind, "classifier": "copied" if head else "new",
                "normalization": "source (keras.applications' ImageNet mean)"}  # fmt: skip

    layers = {layer.name: layer for layer in source.layers}
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
            continue  # another input size: the mean of this run's data stays
        misfits.append(f"{layer.name} {shapes}" + (" (absent in the source)" if peer is None else f" vs {peer_shapes}"))
    if misfits:
        raise UserError(f"--init-from {spec} does not fit {target.name!r}: {len(misfits)} layer(s) differ: "
                        + "; ".join(misfits[:4]) + ("; ..." if len(misfits) > 4 else ""))  # fmt: skip
    for layer, weights in pending:
        layer.set_weights(weights)
        copied += 1
    if renamed:
        classifier = "new (the source was trained on other classes)"
    return {"source": str(spec), "kind": kind, "layers_copied": copied, "classifier": classifier,
            "normalization": normalization}  # fmt: skip


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
