"""Ship a trained run's weights inside the package, listed in its manifest.

    python trainers/ship_weights.py ~/resnet-runs/table6/resnet20 --name cifar10 \
        --dataset-label "CIFAR-10 (JPEG-q75 copy)" --data-dir ../shared/tensorflow_datasets

Copies the run's final (or ``--which best``) weights into a float32 network
built by ``get_model`` with the run's settings, evaluates that network on the
run's test split (the accuracy the manifest records is measured on the very
file shipped), writes ``resnet_keras/weights/<arch>-<name>.weights.h5`` and
adds its entry to ``resnet_keras/weights/manifest.json``: SHA-256, size, build
settings, dataset, recipe, epochs, iterations, the command that trained it,
its test accuracy. Both files are written under temporary names and renamed.
Then ``resnet_keras.get_model(arch, num_classes=..., weights=name)`` loads it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import sys

from trainers.core.common import UserError, load_keras_model, run_main, write_json_atomic, read_json  # noqa: E402

MAX_BYTES = 8 * 2**20
# fit.py flags of the settings a manifest's command repeats (the rest are defaults).
COMMAND_FLAGS = ("arch", "dataset", "recipe", "epochs", "steps", "batch_size", "lr", "weight_decay", "label_smoothing",
                 "augment", "image_size", "shortcut", "width", "precision", "seed", "val_split")  # fmt: skip


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=pathlib.Path, help="a finished fit.py run directory")
    p.add_argument("--name", required=True, help="the weights' name for get_model(weights=NAME), e.g. cifar10")
    p.add_argument("--which", choices=("final", "best"), default="final",
                   help="model.keras (final, default: what the paper reports) or best.keras")
    p.add_argument("--dataset-label", help="how the manifest names the data (default: the TFDS name)")
    p.add_argument("--data-dir", help="TFDS data dir for the evaluation (default: the run's, $TFDS_DATA_DIR)")
    p.add_argument("--replace", action="store_true", help="replace shipped weights of the same network and name")
    p.add_argument("--allow-synthetic", action="store_true",
                   help="ship a run on the synthetic dataset (tests and demos only; the entry says so)")
    p.add_argument("--weights-dir", type=pathlib.Path, help="where the weights and manifest go "
                   "(default: the package's resnet_keras/weights)")
    return p


def _command(config: dict) -> str:
    parts = ["python trainers/fit.py"]
    for key in COMMAND_FLAGS:
        value = config.get(key)
        if value is None or (key == "width" and value == 1.0) or (key == "seed" and value == 0) \
                or (key == "val_split" and value == 0.0) or (key == "precision" and value == "auto"):  # fmt: skip
            continue
        parts.append(f"--{key.replace('_', '-')} {value:g}" if isinstance(value, float) else f"--{key.replace('_', '-')} {value}")
    return " ".join(parts)


def ship(args) -> dict:
    import keras

    import resnet_keras
    from resnet_keras import pretrained
    from resnet_keras.models import build_settings
    from trainers.core import data as data_lib
    from trainers.evaluate import score

    run = args.run.expanduser().resolve()
    try:
        config = read_json(run / "config.json", "run configuration")
        metrics = read_json(run / "metrics.json", "run metrics")
    except UserError as error:
        raise UserError(f"{run} is not a finished fit.py run ({error})") from None
    if config.get("synthetic") and not args.allow_synthetic:
        raise UserError(f"{run} trained on the synthetic dataset; its weights say nothing about real images "
                        "(--allow-synthetic ships it anyway, for tests)")  # fmt: skip
    if not args.name.replace("_", "").replace("-", "").isalnum():
        raise UserError(f"--name {args.name!r}; use letters, digits, '-' and '_'")
    weights_dir = (args.weights_dir or pretrained.WEIGHTS_DIR).expanduser().resolve()
    manifest = weights_dir / "manifest.json"
    entries = pretrained.read_manifest(manifest)
    arch = config["arch"]
    if any(e["arch"] == arch and e["name"] == args.name for e in entries) and not args.replace:
        raise UserError(f"weights {args.name!r} of {arch!r} are already shipped; --replace replaces them")

    trained = load_keras_model(run / ("best.keras" if args.which == "best" else "model.keras"))
    keras.config.set_dtype_policy("float32")
    image_size = config["image_size"]
    num_classes = trained.output_shape[-1]
    try:
        model = resnet_keras.get_model(arch, num_classes=num_classes, input_shape=(image_size, image_size, 3),
                                       shortcut=config.get("shortcut"), width=config.get("width", 1.0),
                                       stage_depths=config.get("stage_depths"))  # fmt: skip
        model.set_weights(trained.get_weights())
    except ValueError as error:
        raise UserError(f"the run's network cannot be rebuilt by get_model ({error})") from None
    spec = resnet_keras.resolve_spec(arch)
    if config.get("stage_depths"):
        spec = spec.with_stage_depths(tuple(config["stage_depths"]))
    build = build_settings(
        num_classes=num_classes, input_shape=model.input_shape[1:], shortcut=config.get("shortcut") or
        spec.default_shortcut, width=config.get("width", 1.0), stage_depths=spec.stage_depths,
        bottleneck_version="v1", normalization="pixel",
    )  # fmt: skip

    info = data_lib.describe_run(config, image_size, data_dir=args.data_dir)
    top1, topk, count = score(model, data_lib.eval_pipeline(info, "test", 250), ten_crop=False,
                               k=min(5, info.num_classes))  # fmt: skip
    accuracy = top1 / count

    weights_dir.mkdir(parents=True, exist_ok=True)
    filename = f"{arch}-{args.name}.weights.h5"
    target = weights_dir / filename
    tmp = weights_dir / f".{arch}-{args.name}.tmp-{os.getpid()}.weights.h5"
    model.save_weights(tmp)
    size = tmp.stat().st_size
    if size > MAX_BYTES:
        tmp.unlink()
        raise UserError(f"the weights of {arch!r} take {size / 2**20:.1f} MiB, over the {MAX_BYTES // 2**20} MiB "
                        "limit of a shipped file")  # fmt: skip
    entry = {
        "arch": arch,
        "name": args.name,
        "file": filename,
        "sha256": pretrained.sha256(tmp),
        "bytes": size,
        "build": build,
        "dataset": args.dataset_label or config["dataset"],
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
        "which": args.which,
        "trained_precision": config.get("resolved_precision"),
        "command": _command(config),
        "run": run.name,
        "shipped": datetime.date.today().isoformat(),
    }
    os.replace(tmp, target)
    others = [e for e in entries if not (e["arch"] == arch and e["name"] == args.name)]
    write_json_atomic(manifest, {"weights": sorted(others + [entry], key=lambda e: (e["arch"], e["name"]))})
    print(f"shipped {target} ({size / 2**20:.2f} MiB, sha256 {entry['sha256'][:12]}...): {arch} weights={args.name!r}, "
          f"test accuracy {100 * accuracy:.2f}% on {entry['dataset']} {info.test_split} ({count} images)")  # fmt: skip
    return entry


def main(argv=None):
    return ship(build_parser().parse_args(argv))


if __name__ == "__main__":
    run_main(main)
