r"""Transfer: a network trained on one dataset, fine-tuned on a small image
folder of other classes, against the same network trained on it from random
weights (docs/finetune.md).

    python benchmarks/transfer.py --data-dir ../shared/tensorflow_datasets \
        --source ~/resnet-runs/imagenette/r18-fast-zi-lr0.4-e5 --root ~/resnet-runs/transfer

The folder is written from a prepared TFDS dataset (default: CIFAR-10, the
first ``--per-class`` training and ``--test-per-class`` test images of each
class, as PNG files under ``ROOT/data/{train,test}/CLASS/``), so it is what a
user's own folder would be: ``fit.py --dataset folder:ROOT/data``. Then, one
after another, each a resumable fit.py run under ROOT (finished ones are
skipped): ``scratch`` (random weights, the fast recipe), ``finetune``
(``--init-from SOURCE``, the finetune recipe) and ``finetune-frozen`` (the
same with ``--freeze-epochs``), all for ``--epochs``. ``ROOT/transfer.json``
holds each run's test accuracy, wall time and command.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

from trainers.core.errors import UserError, run_main
from trainers.core.files import write_json_atomic

VARIANTS = ("scratch", "finetune", "finetune-frozen")


def write_folder(splits: dict, class_names: list, out: pathlib.Path, manifest: dict) -> pathlib.Path:
    """Writes ``{split: iterable of (image, label)}`` under ``out/split/class/``:
    a uint8 HxWx3 image as a PNG file, ``bytes`` (an encoded JPEG, as a TFDS
    dataset stores it) as they are, into a .jpg file; whole or not at all (a temporary directory,
    renamed). An existing ``out`` is kept when its manifest is the same, and
    refused otherwise."""
    import tensorflow as tf

    marker = out / "manifest.json"
    if out.exists():
        if marker.exists() and json.loads(marker.read_text()) == manifest:
            return out
        raise UserError(
            f"{out} exists and was not written by this script with these settings; remove it or choose another --root"
        )
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, examples in splits.items():
        for i, (image, label) in enumerate(examples):
            folder = tmp / split / class_names[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            if isinstance(image, bytes):
                (folder / f"{i:05d}.jpg").write_bytes(image)  # no second JPEG encoding
            else:
                (folder / f"{i:05d}.png").write_bytes(tf.io.encode_png(image).numpy())
    write_json_atomic(tmp / "manifest.json", manifest)
    os.replace(tmp, out)
    return out


def first_per_class(examples, per_class: int, num_classes: int):
    """The first ``per_class`` examples of each class, in the dataset's order."""
    counts = [0] * num_classes
    for image, label in examples:
        if counts[int(label)] < per_class:
            counts[int(label)] += 1
            yield image, label
            if min(counts) >= per_class:
                return


def tfds_splits(dataset: str, data_dir, per_class: int, test_per_class: int):
    import tensorflow_datasets as tfds

    from trainers.core.data import resolve_data_dir, tfds_builder

    builder = tfds_builder(dataset, resolve_data_dir(data_dir))  # one line where it is missing; never downloads
    names = builder.info.features["label"].names
    splits = {}
    for split, count in (("train", per_class), ("test", test_per_class)):
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        splits[split] = list(first_per_class(tfds.as_numpy(ds), count, len(names)))
    return splits, names


def commands(args, data: pathlib.Path) -> dict:
    common = [
        sys.executable,
        str(ROOT / "trainers" / "fit.py"),
        "--arch",
        args.arch,
        "--dataset",
        f"folder:{data}",
        "--image-size",
        str(args.image_size),
        "--epochs",
        str(args.epochs),
        "--verbose",
        "2",
    ]
    source = str(pathlib.Path(args.source).expanduser().resolve()) if args.source else None
    out = {"scratch": [*common, "--recipe", "fast"]}
    if source:
        out["finetune"] = [*common, "--init-from", source]
        out["finetune-frozen"] = [*common, "--init-from", source, "--freeze-epochs", str(args.freeze_epochs)]
    return {name: [*cmd, "--output-dir", str(args.root / name)] for name, cmd in out.items()}


def summarize(run_dir: pathlib.Path, command: list) -> dict:
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        return {"run_dir": str(run_dir), "status": "unfinished", "command": command}
    metrics = json.loads(metrics_path.read_text())
    config = json.loads((run_dir / "config.json").read_text())
    return {
        "run_dir": str(run_dir),
        "status": "finished",
        "command": command,
        "test_accuracy": 1 - metrics["test_top1_error"],
        "best_val_accuracy": metrics.get("best_val_accuracy"),
        "wall_seconds": metrics["wall_seconds"],
        "images_per_second": metrics.get("train_images_per_second"),
        "recipe": config["recipe"],
        "init": config.get("init"),
    }


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-dir", help="the prepared TFDS data dir holding --dataset")
    p.add_argument("--dataset", default="cifar10", help="TFDS dataset the folder is written from (default cifar10)")
    p.add_argument(
        "--source",
        help="the trained run (or .keras/.weights.h5 file) to fine-tune from; without it, only the scratch run",
    )
    p.add_argument("--root", type=pathlib.Path, required=True, help="where the folder, the runs and transfer.json go")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--per-class", type=int, default=100, help="training images per class (default 100)")
    p.add_argument("--test-per-class", type=int, default=100, help="test images per class (default 100)")
    p.add_argument("--image-size", type=int, default=64, help="training crop size (default 64)")
    p.add_argument("--epochs", type=float, default=30)
    p.add_argument("--freeze-epochs", type=float, default=5, help="finetune-frozen's frozen epochs (default 5)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--dry-run", action="store_true", help="write the folder and print the commands; train nothing")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.per_class < 1 or args.test_per_class < 1:
        raise UserError("--per-class and --test-per-class must be positive")
    args.root = args.root.expanduser().resolve()
    manifest = {"dataset": args.dataset, "per_class": args.per_class, "test_per_class": args.test_per_class}
    data = args.root / "data"
    if not (data / "manifest.json").exists():
        splits, names = tfds_splits(args.dataset, args.data_dir, args.per_class, args.test_per_class)
        args.root.mkdir(parents=True, exist_ok=True)
        write_folder(splits, names, data, manifest)
    else:
        write_folder({}, [], data, manifest)  # checks the manifest
    runs = {k: v for k, v in commands(args, data).items() if k in args.variants}
    results = {}
    for name, command in runs.items():
        run_dir = args.root / name
        if args.dry_run:
            print(" ".join(command))
        elif not (run_dir / "metrics.json").exists():
            print(f"== {name}: {' '.join(command)}", flush=True)
            rc = subprocess.call(command)
            if rc:
                raise UserError(f"the {name} run failed (exit {rc}); rerun this command to resume it")
        results[name] = summarize(run_dir, command)
    report = {
        "folder": str(data),
        **manifest,
        "arch": args.arch,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "source": args.source,
        "runs": results,
    }
    if not args.dry_run:
        write_json_atomic(args.root / "transfer.json", report)
    for name, r in results.items():
        accuracy = f"{100 * r['test_accuracy']:.2f}%" if "test_accuracy" in r else "not finished"
        wall = f"{r['wall_seconds'] / 60:.1f} min" if "wall_seconds" in r else "not finished"
        print(f"{name:16s} test top-1 {accuracy:>12s}  wall {wall}")
    return report


if __name__ == "__main__":
    run_main(main)
