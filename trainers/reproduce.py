"""Reproduce the paper's findings on this project's networks.

    python trainers/reproduce.py figure4 [--recipe fast] [--epochs E] [--image-size 128] [--root DIR]
    python trainers/reproduce.py figure6 [--recipe fast] [--epochs E] [--depths 20,32,44,56] [--root DIR]
    python trainers/reproduce.py table6 [--root DIR]
    python trainers/reproduce.py figure7 RUN_DIR [RUN_DIR ...] [--out DIR]

``figure6``: trains plain-d and ResNet-d for each depth with one recipe and
budget (the paper's recipe, its milestones scaled to ``--epochs``, or the
fast one's warm-up and cosine scaled to it), one run
directory each under ``--root``; started again, finished runs are skipped and
unfinished ones resume. Draws ``figure6.png``: training error (thin) and test
error (bold) against iterations, plain left, residual right.

``figure4``: the same for the ImageNet networks plain-18, plain-34, ResNet-18
and ResNet-34 (Imagenette by default), one recipe and budget; draws
``figure4.png``: training error (thin, the epoch's mean over its augmented
batches) and validation error (bold, centre crop) against epochs, plain left,
residual right, and writes ``figure4.json`` with each run's final errors and
whether the deeper plain network is worse and the deeper ResNet better, each
with its margin in points against the sampling noise of the validation split
(two standard errors): on Imagenette's 3,925 images a difference under about
2 points between two networks near 25% error is not evidence either way.

``table6``: depth, parameters, FLOPs, our test error and the paper's, for the
runs under ``--root``; printed and written as ``table6.csv``.

``figure7``: the standard deviation of each 3x3 layer's response (after BN,
before the ReLU or the addition) on the run's test images, for every run
given (fit.py run directories of plain and residual networks), drawn by layer
index and sorted by magnitude (``figure7.png``), with the numbers in
``figure7.json``. The statistic is defined in :mod:`trainers.core.responses`; the work is done
in :mod:`trainers.core.reproduction`.
"""

from __future__ import annotations

import argparse
import pathlib

from trainers.core.errors import run_main
from trainers.core.hardware import PRECISIONS
from trainers.core.recipes import RECIPES
from trainers.core.reproduction import figure4, figure6, figure7, table6

COMMANDS = {"figure4": figure4, "figure6": figure6, "table6": table6, "figure7": figure7}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f6 = sub.add_parser("figure6", help="train plain and residual networks of several depths; plot their errors")
    f6.add_argument("--depths", default="20,32,44,56", help="comma-separated CIFAR depths (6n+2)")
    f6.add_argument(
        "--recipe",
        default="paper",
        choices=("paper", "fast"),
        help="one recipe for every network (default paper: SGD 0.1, divided by 10 at 50%% and 75%%)",
    )
    f6.add_argument(
        "--epochs",
        type=float,
        help="budget per run, the recipe's schedule scaled to it (default: the "
        "paper's 64k iterations, 164.1 epochs; the fast recipe's 30)",
    )
    f6.add_argument("--root", type=pathlib.Path, help="where the runs go (default saved_models/reproduce/figure6-...)")
    f6.add_argument("--dataset", default="cifar10", help="TFDS name, or 'synthetic' (tests)")
    f6.add_argument("--data-dir", help="TFDS data dir (default: $TFDS_DATA_DIR)")
    f6.add_argument("--precision", default="auto", choices=PRECISIONS)
    f6.add_argument(
        "--backup-every",
        type=int,
        default=200,
        help="iterations between each run's backups, what a killed run resumes from (default 200)",
    )
    f6.add_argument("--seed", type=int, default=0)
    f6.add_argument("--image-size", type=int)
    f6.add_argument("--synthetic-train", type=int, default=4096)
    f4 = sub.add_parser("figure4", help="train plain-18/34 and ResNet-18/34; plot their errors against epochs")
    f4.add_argument("--recipe", default="fast", choices=RECIPES, help="one recipe for all four (default fast)")
    f4.add_argument("--epochs", type=float, default=10, help="budget per run (default 10)")
    f4.add_argument("--image-size", type=int, default=128, help="training crop size (default 128)")
    f4.add_argument("--root", type=pathlib.Path, help="where the runs go (default saved_models/reproduce/figure4-...)")
    f4.add_argument("--dataset", default="imagenette/160px-v2", help="TFDS name, or 'synthetic' (tests)")
    f4.add_argument("--data-dir", help="TFDS data dir (default: $TFDS_DATA_DIR)")
    f4.add_argument("--precision", default="auto", choices=PRECISIONS)
    f4.add_argument("--backup-every", type=int, default=200)
    f4.add_argument("--seed", type=int, default=0)
    f4.add_argument("--synthetic-train", type=int, default=4096)
    t6 = sub.add_parser("table6", help="depth, parameters, FLOPs, our and the paper's test error")
    t6.add_argument("--root", type=pathlib.Path, required=True, help="the figure6 command's --root")
    f7 = sub.add_parser("figure7", help="response std of each 3x3 layer of trained runs")
    f7.add_argument("runs", nargs="+", type=pathlib.Path, help="fit.py run directories")
    f7.add_argument(
        "--out", type=pathlib.Path, help="where figure7.png and figure7.json go (default saved_models/reproduce)"
    )
    f7.add_argument("--data-dir", help="TFDS data dir (default: the run's, or $TFDS_DATA_DIR)")
    f7.add_argument("--batch-size", type=int, default=250)
    f7.add_argument("--max-images", type=int, default=0, help="use only the first N test images (0: all)")
    return p


def main(argv=None):
    settings = vars(build_parser().parse_args(argv))
    return COMMANDS[settings.pop("command")](**settings)


if __name__ == "__main__":
    run_main(main)
