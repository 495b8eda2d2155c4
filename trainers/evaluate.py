"""Top-1 and top-5 error of a trained model on a dataset's test split, and
its per-class report.

    python trainers/evaluate.py saved_models/resnet20-cifar10-20261124-101500
    python trainers/evaluate.py RUN_DIR --which best
    python trainers/evaluate.py model.keras --dataset imagenette/160px-v2 --ten-crop
    python trainers/evaluate.py RUN_DIR --flip          # test-time flip: centre crop and its mirror
    python trainers/evaluate.py RUN_DIR --all-views     # centre crop, flip and 10-crop side by side
    python trainers/evaluate.py weights:resnet20/cifar10  # weights shipped with the package, on their dataset
    python trainers/evaluate.py RUN_DIR --no-report     # top-1 and top-5 only

A run directory supplies the dataset, image size and seed from its config.json
(the synthetic dataset included); a bare .keras file needs --dataset. Results
are printed and written as JSON (default: RUN_DIR/eval-<which>-<split>[-flip|-10crop|-views].json).

The per-class report of the single view (the default, and the first of
--all-views; not --flip or --ten-crop alone): balanced accuracy, macro-F1 and
the worst class's recall printed beside top-1, and a folder
RUN_DIR/report-<which>-<split>/ (with --output DIR/x.json: DIR/x-report/) of
report.json (per-class precision, recall, F1, support, the confusion matrix),
confusion.csv, confusion.png and confident_mistakes.png. --no-report skips it.

Views: the single centre crop at the training size (CIFAR: the image itself),
which is what fast.ai's Imagenette leaderboard reports; the flip, that crop and
its mirror image with their softmax averaged; and the paper's 10-crop
(Tables 2-4): four corners and the centre of the image resized to shorter side
256 (scaled to the training size), and their flips, softmax averaged.
"""

from __future__ import annotations

import argparse

from trainers.core.errors import run_main
from trainers.core.evaluation import evaluate


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a run directory, a .keras file, or weights:ARCH/NAME (shipped with the package)")
    p.add_argument(
        "--which",
        choices=("final", "best"),
        default="final",
        help="in a run directory: model.keras (final, default) or best.keras",
    )
    p.add_argument("--dataset", help="TFDS dataset name or 'synthetic' (default: the run's)")
    p.add_argument("--data-dir", help="TFDS data dir (default: the run's, $TFDS_DATA_DIR, ~/tensorflow_datasets)")
    p.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="test: the dataset's test split (its 'validation' split where it has no 'test')",
    )
    p.add_argument(
        "--ten-crop",
        action="store_true",
        help="average the softmax over the paper's 10 crops (corners, centre, flips) of the image "
        "resized to shorter side 256 (scaled to the model's input size)",
    )
    p.add_argument(
        "--flip",
        action="store_true",
        help="test-time flip: average the softmax over the centre crop (CIFAR: the image) and its mirror image",
    )
    p.add_argument(
        "--all-views",
        action="store_true",
        help="report the centre crop (or CIFAR's original view), the flip and the 10-crop side by side",
    )
    p.add_argument("--batch-size", type=int, default=100, help="images per batch (default 100)")
    p.add_argument("--output", help="JSON file to write (default: in the run directory, or next to the model)")
    p.add_argument(
        "--no-report",
        dest="report",
        action="store_false",
        help="skip the per-class report (balanced accuracy, macro-F1, worst class; the report-*/ folder)",
    )
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return evaluate(
        args.model,
        which=args.which,
        dataset=args.dataset,
        data_dir=args.data_dir,
        split=args.split,
        ten_crop=args.ten_crop,
        flip=args.flip,
        all_views=args.all_views,
        batch_size=args.batch_size,
        output=args.output,
        report=args.report,
    )


if __name__ == "__main__":
    run_main(main)
