"""One call from a ``SOURCE:NAME[=PATH]`` spelling to a network of this library holding those ImageNet weights.

:func:`load_imagenet` parses the spelling (``catalog.parse``), finds the file (``fetch.fetch``: ``=PATH``, the
source's cache, or a download), reads it (``readers``: safetensors or torch zip by content; a keras-hub preset's
``model.weights.h5`` and ``task.weights.h5`` through ``presets``), builds the entry's network with the source's
normalization (``catalog.build``) and assigns every tensor after checking them all (``mapping``).
"""

from __future__ import annotations

import dataclasses
import os

from resnet_keras.layers import get_normalization
from resnet_keras.ported import catalog, fetch, mapping, presets, readers
from resnet_keras.ported.classes import NUM_CLASSES, imagenet_class_names


def _close(a, b) -> bool:
    return all(abs(x - y) <= 1e-4 * max(abs(x), abs(y), 1.0) for x, y in zip(a, b))


def load_imagenet(spec, *, num_classes=None, include_top=True, input_shape=None, pooling=None, **options):
    """A network of this library holding published ImageNet weights, and what was done.

    Args:
        spec: ``SOURCE:NAME[=PATH]`` (``catalog.parse``; e.g. ``"timm:resnet50d.ra2_in1k"``,
            ``"torchvision:resnet50"``, ``"keras-hub:resnet_18_imagenet=/data/preset"``) or a ``catalog.Entry``.
        num_classes: the classifier's size; ``None`` or 1000 keeps the source's ImageNet classifier. Any other
            count gives a new classifier (random, from ``seed`` where given) and loads everything else.
        include_top: ``False`` builds the backbone (the file's classifier is left unused).
        input_shape: ``(H, W, 3)``; default ``(None, None, 3)`` (per-channel normalization: any size).
        pooling: the backbone's global pooling with ``include_top=False`` (``None``, ``"avg"``, ``"max"``).
        **options: further :func:`~resnet_keras.get_model` options that do not change the weights (``bn_momentum``,
            ``bn_epsilon``, ``synchronized_bn``, ``zero_init_residual``, ``seed``); the network itself is the entry's.

    Returns:
        ``(model, info)``. ``info`` holds ``spec`` (canonical), ``entry``, ``file`` (the weights file or preset
        folder), ``origin`` (``"path"``, ``"cache"``, ``"download"``), ``check`` (the integrity check done, in
        words), ``sha256`` (where computed), ``classifier`` (``"loaded"``, ``"new"`` or ``"absent"``),
        ``num_classes``, ``class_names`` (the 1000 ImageNet names where the source's classifier is kept, else
        ``None``), ``mean`` and ``std`` (the normalization set, on the [0, 255] scale), ``loaded`` (the mapping's
        report: tensors, parameters, ignored, unused) and, for keras-hub, ``names_resolved`` (how the file's
        groups were matched to layer names) and ``normalization_from`` (the catalog, or the preset's
        ``image_converter.json`` where it differs).

    Raises:
        ValueError: in one line: a wrong spelling, weights not here and not fetchable, a failed checksum, a file
            of another network (the first mismatched tensor named).
    """
    entry = spec if isinstance(spec, catalog.Entry) else catalog.parse(spec)
    if not isinstance(include_top, bool):
        raise ValueError(f"include_top={include_top!r}; expected True or False")
    if include_top:
        if num_classes is None:
            num_classes = NUM_CLASSES
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r}; expected a positive integer")
    elif num_classes not in (None, NUM_CLASSES):
        raise ValueError(f"num_classes={num_classes!r} sizes a classifier; include_top=False has none")
    # Checked before anything is fetched (the rest of the arguments are checked as the network is built).
    if include_top and pooling is not None:
        raise ValueError(f"pooling={pooling!r} applies to include_top=False only (the classifier averages)")
    other = sorted(set(options) - set(catalog.BUILD_PASSTHROUGH))
    if other:
        raise ValueError(
            f"{entry.spec} builds its own network; {', '.join(other)} cannot be set "
            f"(only {', '.join(catalog.BUILD_PASSTHROUGH)})"
        )
    keep_head = include_top and num_classes == NUM_CLASSES
    skip_classifier = include_top and not keep_head

    fetched = fetch.fetch(entry)
    source_name = os.fspath(fetched.path)
    info = {
        "spec": entry.spec,
        "entry": dataclasses.replace(entry, path=None),
        "file": fetched.path,
        "origin": fetched.origin,
        "check": fetched.check,
        "sha256": fetched.sha256,
    }
    mean, std = entry.mean_255, entry.std_255
    # The files are read (and a preset's config checked) before the network is built.
    if entry.file_format == "keras-hub":
        folder = fetched.path
        config = presets.read_config(folder, entry)
        layers, how = presets.read_backbone(folder, config)
        if keep_head:
            if not (folder / presets.HEAD_FILE).is_file():
                raise ValueError(
                    f"{entry.spec}: {folder} has no {presets.HEAD_FILE}, the classifier's weights; pass "
                    "include_top=False for the backbone, or another num_classes for a new classifier"
                )
            head, head_how = presets.read_head(folder)
            layers = {**layers, presets.CLASSIFIER: head}
            how = f"backbone {how}; classifier {head_how}"
        info["names_resolved"] = how
        info["normalization_from"] = f"the catalog ({entry.notes.split(';')[0]})"
        own = presets.read_normalization(folder)
        if own is not None:
            if _close(own[0], mean) and _close(own[1], std):
                info["normalization_from"] = f"the catalog, which the preset's {presets.CONVERTER_FILE} agrees with"
            else:
                mean, std = own
                info["normalization_from"] = f"the preset's {presets.CONVERTER_FILE} (the catalog's differs)"
    else:
        state = readers.read_weights_file(fetched.path)

    model = catalog.build(
        entry,
        num_classes=num_classes if include_top else NUM_CLASSES,
        include_top=include_top,
        input_shape=input_shape,
        pooling=pooling,
        **options,
    )
    if entry.file_format == "keras-hub":
        loaded = mapping.load_keras_hub_weights(model, layers, source_name=source_name, skip_classifier=skip_classifier)
        if (mean, std) != (entry.mean_255, entry.std_255):
            get_normalization(model).set_statistics(mean, std)
    else:
        loaded = mapping.load_torch_state_dict(model, state, source_name=source_name, skip_classifier=skip_classifier)
    info.update(
        classifier={"loaded": "loaded", "skipped": "new", "absent": "absent"}[loaded["classifier"]],
        num_classes=num_classes if include_top else None,
        class_names=imagenet_class_names() if keep_head else None,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        loaded=loaded,
    )
    if skip_classifier:
        info["note"] = (
            f"the classifier is new (random, {num_classes} classes): the weights' is ImageNet's {NUM_CLASSES}; "
            "everything else is loaded"
        )
    return model, info
