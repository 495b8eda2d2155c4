r"""Unbalanced classes on real photographs: an image folder made from
Imagenette's training split with one class whole and the others cut to a
tenth (the validation split kept whole), a ResNet trained on it without and
with each ``--class-balance`` mode at the same budget, several seeds each
(docs/training.md, "Unbalanced classes").

    python benchmarks/unbalanced.py --data-dir ../shared/tensorflow_datasets --root ~/resnet-runs/unbalanced

The folder, ``ROOT/data/{train,val}/CLASS/*.jpg``, holds the dataset's own
JPEG bytes (nothing re-encoded) under the classes' ImageNet names, so it is what
a user's own folder would be: ``fit.py --dataset folder:ROOT/data``. Kept of a
cut class: its first ``ceil(n * keep)`` training images in the dataset's order.
Then one resumable fit.py run per mode and seed under ``ROOT/MODE-sSEED``, every
mode of the first seed before the next seed (a finished run is skipped; rerun
the command to resume), and
``ROOT/unbalanced.json``: each run's top-1, balanced accuracy, macro-F1, worst
class, the recall of the class kept whole and the mean recall of the cut ones
(from the per-class report every fit run writes), the mean and
standard deviation over seeds of each mode, and the commands. ``--report-only``
trains nothing and reports the finished runs.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

from benchmarks.transfer import write_folder
from trainers.core.balance import MODES
from trainers.core.errors import UserError, run_main
from trainers.core.files import read_json, write_json_atomic

DATASET = "imagenette/160px-v2"
# The last two say where balancing moves the answers: away from the class kept whole, to the cut ones, or neither.
FIGURES = ("top1", "balanced_accuracy", "macro_f1", "worst_class_recall", "full_class_recall", "cut_classes_recall")


def cut_counts(counts: list[int], full: int, keep: float) -> list[int]:
    """Training images kept of each class: all of class ``full``, ``ceil(n * keep)`` of the others."""
    return [n if c == full else math.ceil(n * keep) for c, n in enumerate(counts)]


def imagenette_splits(data_dir, full: int, keep: float):
    """({"train": [(jpeg bytes, label)], "val": [...]}, readable class names, kept counts, full counts)."""
    import tensorflow_datasets as tfds

    from resnet_keras.ported.classes import readable_class_names
    from trainers.core.data import resolve_data_dir, tfds_builder

    builder = tfds_builder(DATASET, resolve_data_dir(data_dir))  # one line where it is missing; never downloads
    names = readable_class_names(builder.info.features["label"].names)  # "tench", not "n01440764"
    if not 0 <= full < len(names):
        raise UserError(f"--full-class {full}; {DATASET} has classes 0 to {len(names) - 1}")

    def read(split):
        ds = builder.as_dataset(split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
        return [(bytes(ex["image"]), int(ex["label"])) for ex in tfds.as_numpy(ds)]

    train = read("train")
    counts = [sum(1 for _, label in train if label == c) for c in range(len(names))]
    kept = cut_counts(counts, full, keep)
    taken = [0] * len(names)
    cut = []
    for image, label in train:
        if taken[label] < kept[label]:
            taken[label] += 1
            cut.append((image, label))
    return {"train": cut, "val": read("validation")}, names, kept, counts


def command(args, data: pathlib.Path, mode: str, seed: int) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "trainers" / "fit.py"),
        "--arch",
        args.arch,
        "--dataset",
        f"folder:{data}",
        "--recipe",
        "fast",
        "--image-size",
        str(args.image_size),
        "--epochs",
        str(args.epochs),
        "--class-balance",
        mode,
        "--seed",
        str(seed),
        "--verbose",
        "2",
        "--output-dir",
        str(args.root / f"{mode}-s{seed}"),
    ]


def summarize(run_dir: pathlib.Path, full_class: str) -> dict | None:
    """The figures of one finished run (None while it is unfinished);
    ``full_class`` names the class kept whole."""
    if not (run_dir / "metrics.json").exists():
        return None
    metrics = read_json(run_dir / "metrics.json", "run metrics")
    if "balanced_accuracy" not in metrics:
        raise UserError(f"{run_dir} has no per-class figures in metrics.json (a run from before the report)")
    report = read_json(run_dir / "report" / "report.json", "per-class report")
    recalls = {row["class"]: row["recall"] for row in report["per_class"] if row["recall"] is not None}
    if full_class not in recalls:
        raise UserError(f"{run_dir}'s report has no recall for {full_class!r}, the class kept whole")
    return {
        "full_class_recall": recalls.pop(full_class),
        "cut_classes_recall": statistics.fmean(recalls.values()),
        "run_dir": str(run_dir),
        "top1": 1 - metrics["test_top1_error"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "macro_f1": metrics["macro_f1"],
        "worst_class": metrics["worst_class"],
        "worst_class_recall": metrics["worst_class_recall"],
        "wall_seconds": metrics["wall_seconds"],
    }


def aggregate(runs: list[dict]) -> dict:
    """Mean and standard deviation (None for one run) of each figure over a mode's finished runs."""
    out = {"runs": len(runs)}
    for key in FIGURES:
        values = [r[key] for r in runs]
        out[key] = {
            "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
        }
    worst = [r["worst_class"] for r in runs]
    out["worst_classes"] = sorted(set(worst), key=worst.index)
    return out


def _cell(figure: dict) -> str:
    if figure["mean"] is None:
        return "not run"
    spread = f" ± {100 * figure['std']:.2f}" if figure["std"] is not None else " (1 run)"
    return f"{100 * figure['mean']:.2f}%{spread}"


def table(modes: dict) -> str:
    """The modes side by side, as markdown."""
    lines = [
        "| --class-balance | runs | top-1 | balanced accuracy | macro-F1 | worst class recall | whole class recall "
        "| cut classes' mean recall | worst class(es) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode, agg in modes.items():
        cells = " | ".join(_cell(agg[key]) for key in FIGURES)
        lines.append(f"| `{mode}` | {agg['runs']} | {cells} | {', '.join(agg['worst_classes']) or '-'} |")
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-dir", help=f"the prepared TFDS data dir holding {DATASET}")
    p.add_argument("--root", type=pathlib.Path, required=True, help="where the folder, the runs and unbalanced.json go")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--full-class", type=int, default=0, help="the class kept whole (default 0, tench)")
    p.add_argument("--keep", type=float, default=0.1, help="share of every other class's images kept (default 0.1)")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--epochs", type=float, default=10, help="epochs of the cut folder (default 10)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--report-only", action="store_true", help="train nothing; report the finished runs")
    p.add_argument("--dry-run", action="store_true", help="write the folder and print the commands; train nothing")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if not 0 < args.keep <= 1:
        raise UserError(f"--keep {args.keep}; expected a share in (0, 1]")
    args.root = args.root.expanduser().resolve()
    settings = {"dataset": DATASET, "full_class": args.full_class, "keep": args.keep}
    data = args.root / "data"
    if (data / "manifest.json").exists():
        folder = read_json(data / "manifest.json", "folder manifest")
        if {key: folder.get(key) for key in settings} != settings:
            were = ", ".join(f"{key} {folder.get(key)}" for key in settings)
            raise UserError(f"{data} was written with other settings ({were}); remove it or choose another --root")
    elif args.report_only:
        raise UserError(f"no folder at {data}: run without --report-only first")
    else:
        splits, names, kept, counts = imagenette_splits(args.data_dir, args.full_class, args.keep)
        folder = {**settings, "class_names": names, "train_counts": kept, "full_train_counts": counts}
        folder["val_images"] = len(splits["val"])
        args.root.mkdir(parents=True, exist_ok=True)
        write_folder(splits, names, data, folder)
    print(
        "folder "
        + str(data)
        + ": training images per class "
        + ", ".join(f"{n} {c}" for n, c in zip(folder["class_names"], folder["train_counts"])),
        flush=True,
    )
    finished: dict[str, list] = {mode: [] for mode in args.modes}
    commands = {}
    # Seed by seed, every mode within a seed: on a machine that takes more than one sitting, what is finished
    # first is one comparable run of each mode, not both seeds of the first mode.
    for seed in args.seeds:
        for mode in args.modes:
            cmd = command(args, data, mode, seed)
            run_dir = args.root / f"{mode}-s{seed}"
            commands[run_dir.name] = cmd
            if args.dry_run:
                print(" ".join(cmd))
                continue
            if not args.report_only and not (run_dir / "metrics.json").exists():
                print(f"== {run_dir.name}: {' '.join(cmd)}", flush=True)
                rc = subprocess.call(cmd)
                if rc:
                    raise UserError(f"the {run_dir.name} run failed (exit {rc}); rerun this command to resume it")
            result = summarize(run_dir, folder["class_names"][folder["full_class"]])
            if result is not None:
                finished[mode].append({"seed": seed, **result})
    modes = {mode: aggregate(runs) for mode, runs in finished.items()}
    report = {
        "folder": str(data),
        **{k: folder[k] for k in ("dataset", "full_class", "keep", "class_names", "train_counts") if k in folder},
        "arch": args.arch,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "modes": modes,
        "runs": finished,
        "commands": commands,
    }
    if not args.dry_run:
        write_json_atomic(args.root / "unbalanced.json", report)
        print(table(modes))
    return report


if __name__ == "__main__":
    run_main(main)
