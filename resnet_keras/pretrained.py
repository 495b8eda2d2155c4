"""Trained weights shipped inside the package.

``resnet_keras/weights/manifest.json`` lists every file of
``resnet_keras/weights/``: the network and the name it is asked for by
(``get_model("resnet20", num_classes=10, weights="cifar10")``), the SHA-256 of
the file, the settings the network was built with, the dataset, recipe,
epochs and command that trained it, and its measured test accuracy. A file is
loaded only after its checksum matches the manifest's. ``trainers/ship_weights.py``
adds a trained run to the manifest.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

from resnet_keras.specs import DEFAULT_BLUR_POOL, DEFAULT_SHORTCUT_DOWNSAMPLE, DEFAULT_STEM

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"
MANIFEST = WEIGHTS_DIR / "manifest.json"
# The get_model settings that decide the weights' shapes and meaning; an entry
# records each, and a request that differs is refused.
BUILD_KEYS = (
    "num_classes",
    "input_shape",
    "shortcut",
    "width",
    "stage_depths",
    "bottleneck_version",
    "normalization",
    "stem",
    "shortcut_downsample",
    "blur_pool",
)
# Entries shipped before the ResNet-C/D tweaks and the blur pool record none of
# these keys; they were built with the paper's stem, strided projections and no blur.
UNRECORDED_BUILD = {
    "stem": DEFAULT_STEM,
    "shortcut_downsample": DEFAULT_SHORTCUT_DOWNSAMPLE,
    "blur_pool": DEFAULT_BLUR_POOL,
}


def read_manifest(path=None) -> list[dict]:
    """The manifest's entries (an empty list where there is no manifest)."""
    path = pathlib.Path(path or MANIFEST)
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text())["weights"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"the weights manifest {path} cannot be read ({type(error).__name__}: {error})") from None
    return list(entries)


def list_weights(arch: str | None = None, manifest=None) -> list[dict]:
    """The shipped weights (all, or those of ``arch``): manifest entries."""
    return [e for e in read_manifest(manifest) if arch is None or e["arch"] == arch]


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_weights(arch: str, name: str, manifest=None) -> dict:
    """The manifest entry of ``arch``'s weights called ``name``, or a
    ValueError listing the names that exist for ``arch``."""
    entries = list_weights(arch, manifest)
    for entry in entries:
        if entry["name"] == name:
            return entry
    known = ", ".join(repr(e["name"]) for e in entries) or "none"
    raise ValueError(
        f"weights={name!r} do not exist for {arch!r}; shipped for {arch!r}: {known} "
        "(resnet_keras.list_weights() lists every network's)"
    )


def check_request(entry: dict, requested: dict) -> None:
    """A ValueError naming each build setting that differs from the weights'."""
    recorded = {**UNRECORDED_BUILD, **entry["build"]}
    differ = [
        f"{k}={requested.get(k)!r} (the weights': {recorded.get(k)!r})"
        for k in BUILD_KEYS
        if _normal(requested.get(k)) != _normal(recorded.get(k))
    ]
    if differ:
        raise ValueError(
            f"weights={entry['name']!r} of {entry['arch']!r} were trained with other settings: " + "; ".join(differ)
        )


def _normal(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def verified_path(entry: dict, weights_dir=None) -> pathlib.Path:
    """The entry's file, after its SHA-256 matched the manifest's; else a ValueError."""
    path = pathlib.Path(weights_dir or WEIGHTS_DIR) / entry["file"]
    if not path.exists():
        raise ValueError(f"the weights file {path} listed in the manifest is missing (a broken install?)")
    actual = sha256(path)
    if actual != entry["sha256"]:
        raise ValueError(f"refused: {path} has SHA-256 {actual}, the manifest says {entry['sha256']}")
    return path
