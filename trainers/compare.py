"""Two trained models on the same images: is one really better?

    python trainers/compare.py RUN_A RUN_B                  # the centre crop (CIFAR: the image itself)
    python trainers/compare.py RUN_A RUN_B --view 10-crop
    python trainers/compare.py a.keras b.keras --dataset cifar10 --output compare.json

Both models are scored image by image on the same split, in the same order
(``evaluate.py``'s pipelines, so each accuracy is the one ``evaluate.py``
prints). Two runs tested on the same 3,925 images are a paired sample: what
decides is the images on which they disagree, not the two accuracies' separate
sampling noise. Printed: the accuracies, the four counts (both right, only A,
only B, both wrong), the difference B - A with its 95% interval for paired
proportions, and McNemar's exact test on the disagreements (a two-sided
binomial test at one half). ``--output`` writes the same as strict JSON.
"""

from __future__ import annotations

import argparse

from trainers.core.errors import run_main
from trainers.core.evaluation import VIEWS, compare


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="a run directory, a .keras file or weights:ARCH/NAME (A)")
    p.add_argument("b", help="a run directory, a .keras file or weights:ARCH/NAME (B)")
    p.add_argument(
        "--which",
        choices=("final", "best"),
        default="final",
        help="in run directories: model.keras (final, default) or best.keras",
    )
    p.add_argument(
        "--view",
        choices=VIEWS,
        default="single",
        help="single: the centre crop at the training size (CIFAR: the image itself); "
        "flip: it and its mirror image, softmax averaged; 10-crop: the paper's ten crops, softmax averaged",
    )
    p.add_argument("--dataset", help="TFDS dataset name or 'synthetic' (default: the runs', which must agree)")
    p.add_argument("--data-dir", help="TFDS data dir (default: the runs', $TFDS_DATA_DIR, ~/tensorflow_datasets)")
    p.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="test: the dataset's test split (its 'validation' split where it has no 'test')",
    )
    p.add_argument("--batch-size", type=int, default=100, help="images per batch (default 100)")
    p.add_argument("--output", help="also write the result to this JSON file")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return compare(
        args.a,
        args.b,
        which=args.which,
        view=args.view,
        dataset=args.dataset,
        data_dir=args.data_dir,
        split=args.split,
        batch_size=args.batch_size,
        output=args.output,
    )


if __name__ == "__main__":
    run_main(main)
