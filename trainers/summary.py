"""Prints every registered network with its depth, parameters, FLOPs and total
stride, beside the paper's numbers where the paper gives them (and timm's for the
bag-of-tricks networks resnet18d, resnet34d, resnet50d).

    python trainers/summary.py                     # all networks, a text table
    python trainers/summary.py --arch resnet50 --format markdown
"""

from __future__ import annotations

import argparse

import trainers  # noqa: F401  (first: a quiet TensorFlow start, on oneDNN kernels)
import resnet_keras
from trainers.core.errors import run_main
from trainers.core.network_table import NOTES, network_table, render


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--arch",
        nargs="+",
        choices=resnet_keras.list_models(),
        metavar="ARCH",
        help=f"networks to list (default: all): {', '.join(resnet_keras.list_models())}",
    )
    parser.add_argument("--format", choices=["text", "markdown", "json"], default="text", help="output format")
    return parser


def main(argv=None) -> list[dict]:
    args = build_parser().parse_args(argv)
    rows = network_table(args.arch)
    print(render(rows, args.format))
    if args.format != "json":
        print("\n" + NOTES)
    return rows


if __name__ == "__main__":
    run_main(main)
