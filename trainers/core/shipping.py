"""Shipping a trained run's weights inside the package, listed in its manifest
(:func:`ship`, behind ``trainers/ship_weights.py``).

The run's final (or best) weights are copied into a float32 network built by
``get_model`` with the run's settings, which is evaluated on the run's test
split (the accuracy the manifest records is measured on the very file
shipped); the weights file and the manifest are written under temporary names
and renamed. Then ``resnet_keras.get_model(arch, num_classes=..., weights=name)``
loads it.
"""

from __future__ import annotations

import datetime
import os
import pathlib

import resnet_keras
from resnet_keras import pretrained
from resnet_keras.models import build_settings
from trainers.core import data as data_lib
from trainers.core.config import ARCH_TWEAKS
from trainers.core.errors import UserError
from trainers.core.evaluation import score
from trainers.core.files import read_json, write_json_atomic
from trainers.core.hardware import global_dtype_policy
from trainers.core.sources import load_trained

MAX_BYTES = 8 * 2**20
# fit.py flags of the settings a manifest's command repeats (the rest are defaults).
COMMAND_FLAGS = (
    "arch",
    "dataset",
    "recipe",
    "epochs",
    "steps",
    "batch_size",
    "lr",
    "weight_decay",
    "label_smoothing",
    "augment",
    "image_size",
    "shortcut",
    "width",
    "precision",
    "seed",
    "val_split",
)


def _command(config: dict) -> str:
    """The fit.py command that trained the run, with its non-default settings."""
    parts = ["python trainers/fit.py"]
    for key in COMMAND_FLAGS:
        value = config.get(key)
        default = (
            (key == "width" and value == 1.0)
            or (key == "seed" and value == 0)
            or (key == "val_split" and value == 0.0)
            or (key == "precision" and value == "auto")
        )
        if value is None or default:
            continue
        flag = f"--{key.replace('_', '-')}"
        parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return " ".join(parts)


def ship(
    run,
    *,
    name: str,
    which: str = "final",
    dataset_label: str | None = None,
    data_dir: str | None = None,
    replace: bool = False,
    allow_synthetic: bool = False,
    weights_dir=None,
) -> dict:
    """Ships the weights of the finished fit.py run ``run`` (its model.keras,
    or best.keras with ``which="best"``) as ``get_model(arch, weights=name)``
    into ``weights_dir`` (default the package's resnet_keras/weights); returns
    the manifest entry written."""
    run = pathlib.Path(run).expanduser().resolve()
    config, metrics = _finished_run(run, allow_synthetic)
    if not name.replace("_", "").replace("-", "").isalnum():
        raise UserError(f"--name {name!r}; use letters, digits, '-' and '_'")
    weights_dir = pathlib.Path(weights_dir or pretrained.WEIGHTS_DIR).expanduser().resolve()
    manifest = weights_dir / "manifest.json"
    entries = pretrained.read_manifest(manifest)
    arch = config["arch"]
    if any(e["arch"] == arch and e["name"] == name for e in entries) and not replace:
        raise UserError(f"weights {name!r} of {arch!r} are already shipped; --replace replaces them")

    with global_dtype_policy("float32"):
        model, build = _float32_network(load_trained(run, which=which).model, config)
        info = data_lib.describe_run(config, config["image_size"], data_dir=data_dir)
        pipeline = data_lib.eval_pipeline(info, "test", 250)
        top1, _, count = score(model, pipeline, k=min(5, info.num_classes))
    accuracy = top1 / count

    weights_dir.mkdir(parents=True, exist_ok=True)
    filename = f"{arch}-{name}.weights.h5"
    target = weights_dir / filename
    tmp = weights_dir / f".{arch}-{name}.tmp-{os.getpid()}.weights.h5"
    model.save_weights(tmp)
    size = tmp.stat().st_size
    if size > MAX_BYTES:
        tmp.unlink()
        raise UserError(
            f"the weights of {arch!r} take {size / 2**20:.1f} MiB, over the {MAX_BYTES // 2**20} MiB "
            "limit of a shipped file"
        )
    entry = {
        "arch": arch,
        "name": name,
        "file": filename,
        "sha256": pretrained.sha256(tmp),
        "bytes": size,
        "build": build,
        "dataset": dataset_label or config["dataset"],
        "tfds_name": config["dataset"],
        "family": config["family"],
        "class_names": list(config["class_names"]),
        "synthetic": bool(config.get("synthetic")),
        "test_split": info.test_split,
        "test_images": count,
        "test_accuracy": accuracy,
        "test_view": "original" if info.style == "cifar" else "centre crop",
        "recipe": config.get("recipe"),
        "epochs": metrics.get("epochs"),
        "iterations": metrics.get("iterations"),
        "which": which,
        "trained_precision": config.get("resolved_precision"),
        "command": _command(config),
        "run": run.name,
        "shipped": datetime.date.today().isoformat(),
    }
    os.replace(tmp, target)
    others = [e for e in entries if not (e["arch"] == arch and e["name"] == name)]
    write_json_atomic(manifest, {"weights": sorted(others + [entry], key=lambda e: (e["arch"], e["name"]))})
    print(
        f"shipped {target} ({size / 2**20:.2f} MiB, sha256 {entry['sha256'][:12]}...): {arch} weights={name!r}, "
        f"test accuracy {100 * accuracy:.2f}% on {entry['dataset']} {info.test_split} ({count} images)"
    )
    return entry


def _finished_run(run: pathlib.Path, allow_synthetic: bool) -> tuple[dict, dict]:
    """The config.json and metrics.json of a finished run worth shipping."""
    try:
        config = read_json(run / "config.json", "run configuration")
        metrics = read_json(run / "metrics.json", "run metrics")
    except UserError as error:
        raise UserError(f"{run} is not a finished fit.py run ({error})") from None
    if config.get("synthetic") and not allow_synthetic:
        raise UserError(
            f"{run} trained on the synthetic dataset; its weights say nothing about real images "
            "(--allow-synthetic ships it anyway, for tests)"
        )
    return config, metrics


def _float32_network(trained, config: dict):
    """The run's network as ``get_model`` builds it (float32, under the
    caller's float32 policy) with the trained weights, and the build settings
    the manifest records for ``get_model(..., weights=NAME)`` to check."""
    arch, image_size, num_classes = config["arch"], config["image_size"], trained.output_shape[-1]
    # The tweaks the run set for its network (fit.py --stem, --shortcut-downsample, --blur-pool); None: the row's.
    tweaks = {key: config.get(key) for key in ARCH_TWEAKS if config.get(key) is not None}
    try:
        model = resnet_keras.get_model(
            arch,
            num_classes=num_classes,
            input_shape=(image_size, image_size, 3),
            shortcut=config.get("shortcut"),
            width=config.get("width", 1.0),
            stage_depths=config.get("stage_depths"),
            **tweaks,
        )
        model.set_weights(trained.get_weights())
    except ValueError as error:
        raise UserError(f"the run's network cannot be rebuilt by get_model ({error})") from None
    spec = resnet_keras.resolve_spec(arch).with_tweaks(**tweaks)
    if config.get("stage_depths"):
        spec = spec.with_stage_depths(tuple(config["stage_depths"]))
    build = build_settings(
        num_classes=num_classes,
        input_shape=model.input_shape[1:],
        shortcut=config.get("shortcut") or spec.default_shortcut,
        width=config.get("width", 1.0),
        stage_depths=spec.stage_depths,
        bottleneck_version=spec.bottleneck_version,
        normalization="pixel",
        stem=spec.stem,
        shortcut_downsample=spec.shortcut_downsample,
        blur_pool=spec.blur_pool,
    )
    return model, build
