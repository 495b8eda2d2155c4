r"""Ship a trained run's weights inside the package, listed in its manifest.

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
import pathlib

from trainers.core.errors import run_main
from trainers.core.shipping import ship


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=pathlib.Path, help="a finished fit.py run directory")
    p.add_argument("--name", required=True, help="the weights' name for get_model(weights=NAME), e.g. cifar10")
    p.add_argument(
        "--which",
        choices=("final", "best"),
        default="final",
        help="model.keras (final, default: what the paper reports) or best.keras",
    )
    p.add_argument("--dataset-label", help="how the manifest names the data (default: the TFDS name)")
    p.add_argument("--data-dir", help="TFDS data dir for the evaluation (default: the run's, $TFDS_DATA_DIR)")
    p.add_argument("--replace", action="store_true", help="replace shipped weights of the same network and name")
    p.add_argument(
        "--allow-synthetic",
        action="store_true",
        help="ship a run on the synthetic dataset (tests and demos only; the entry says so)",
    )
    p.add_argument(
        "--weights-dir",
        type=pathlib.Path,
        help="where the weights and manifest go (default: the package's resnet_keras/weights)",
    )
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return ship(
        args.run,
        name=args.name,
        which=args.which,
        dataset_label=args.dataset_label,
        data_dir=args.data_dir,
        replace=args.replace,
        allow_synthetic=args.allow_synthetic,
        weights_dir=args.weights_dir,
    )


if __name__ == "__main__":
    run_main(main)
