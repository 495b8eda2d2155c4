r"""Keras Tuner search over depth, width, shortcut, learning rate and weight decay.

    python trainers/tune.py --family cifar --tuner random --max-trials 6 --epochs 2 \
        --data-dir ../shared/tensorflow_datasets
    python trainers/tune.py --family cifar --tuner hyperband --max-epochs 4 --n-min 3 --n-max 9 --width 0.5 1.0
    python trainers/tune.py --family imagenet --tuner bayesian --max-trials 10 --max-flops 2e9 \
        --dataset synthetic --image-size 64

The hypermodel only samples: its ``build(hp)`` picks a depth and width and calls
``resnet_keras.get_model``. Every trial trains through ``trainers.core.train.train``,
the code behind ``fit.py`` (same data pipeline, recipe, precision, strategy), on
the training split less a validation split (``--val-split``, default 0.1); the
objective is the best validation accuracy, never the test split. Candidates over
``--max-params`` or ``--max-flops`` are rejected before training. Started again
with the same command and directory, a search continues where it stopped.

Results in the search directory (default saved_models/tune-<family>-<dataset>-<tuner>/):
trials.csv, best.json, pareto.png (validation error against FLOPs, the Pareto
front marked), and a run directory per trial.
"""

from __future__ import annotations

import argparse
import dataclasses

import trainers  # noqa: F401  (first: a quiet TensorFlow start, on oneDNN kernels)
from trainers.core.balance import MODES as BALANCE_MODES
from trainers.core.distributed import STRATEGIES
from trainers.core.errors import run_main
from trainers.core.hardware import PRECISIONS
from trainers.core.config import DEFAULT_DATASET
from trainers.core.tuning import TUNERS, VAL_SPLIT, SearchSettings, Space, base_config, search

SPACE = {field.name: field.default for field in dataclasses.fields(Space)}
SEARCH = {field.name: field.default for field in dataclasses.fields(SearchSettings)}


def build_parser():
    """tune.py's flags. Their defaults are Space's and SearchSettings'; a flag of a trial's setting defaults to
    None, which base_config and RunConfig fill in."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", required=True, help="cifar (6n+2 networks) or imagenet (stage depths)")
    p.add_argument("--tuner", default=SEARCH["tuner"], help=f"one of {', '.join(TUNERS)} (default {SEARCH['tuner']})")
    p.add_argument(
        "--max-trials",
        type=int,
        default=SEARCH["max_trials"],
        help=f"trials of random and bayesian search (default {SEARCH['max_trials']})",
    )
    p.add_argument(
        "--max-epochs",
        type=int,
        default=SEARCH["max_epochs"],
        help=f"hyperband: most epochs a trial trains (default {SEARCH['max_epochs']})",
    )
    p.add_argument(
        "--epochs",
        type=float,
        default=SEARCH["epochs"],
        help=f"epochs per trial, random and bayesian (default {SEARCH['epochs']})",
    )
    p.add_argument(
        "--n-min",
        type=int,
        default=SPACE["n_min"],
        help=f"cifar: smallest n of 6n+2 (default {SPACE['n_min']}, ResNet-{6 * SPACE['n_min'] + 2})",
    )
    p.add_argument(
        "--n-max",
        type=int,
        default=SPACE["n_max"],
        help=f"cifar: largest n of 6n+2 (default {SPACE['n_max']}, ResNet-{6 * SPACE['n_max'] + 2})",
    )
    p.add_argument(
        "--arch", nargs="+", default=list(SPACE["imagenet_archs"]), help="imagenet: the paper's networks to choose from"
    )
    p.add_argument("--free-depths", action="store_true", help="imagenet: any blocks per stage instead of the paper's")
    p.add_argument(
        "--stage-min", type=int, default=SPACE["stage_min"], help="imagenet --free-depths: fewest blocks per stage"
    )
    p.add_argument(
        "--stage-max", type=int, default=SPACE["stage_max"], help="imagenet --free-depths: most blocks per stage"
    )
    p.add_argument("--width", type=float, nargs="+", default=list(SPACE["widths"]), help="width multipliers")
    p.add_argument("--shortcut", nargs="+", help="shortcut options to try (default all, the paper's first)")
    p.add_argument("--lr-min", type=float, default=SPACE["lr_min"])
    p.add_argument(
        "--lr-max",
        type=float,
        default=SPACE["lr_max"],
        help=f"learning rate range, log-uniform (default {SPACE['lr_min']:g}-{SPACE['lr_max']:g})",
    )
    p.add_argument("--wd-min", type=float, default=SPACE["wd_min"])
    p.add_argument(
        "--wd-max",
        type=float,
        default=SPACE["wd_max"],
        help=f"weight decay range, log-uniform (default {_short_e(SPACE['wd_min'])}-{_short_e(SPACE['wd_max'])})",
    )
    p.add_argument("--max-params", type=float, help="reject candidates with more learned parameters, before training")
    p.add_argument(
        "--max-flops", type=float, help="reject candidates with more multiply-adds per image, before training"
    )
    p.add_argument(
        "--dataset",
        help=f"as fit.py (default {DEFAULT_DATASET['cifar']} / {DEFAULT_DATASET['imagenet']}; "
        "'synthetic' needs no data)",
    )
    p.add_argument("--data-dir", help="TFDS data dir (default $TFDS_DATA_DIR)")
    p.add_argument("--class-balance", choices=BALANCE_MODES, help="as fit.py, for every trial (default none)")
    p.add_argument(
        "--skip-bad-images", action="store_true", default=None, help="as fit.py: folder files that do not decode"
    )
    p.add_argument("--max-bad-fraction", type=float, help="as fit.py (default 0.05)")
    p.add_argument("--image-size", type=int, help="as fit.py")
    p.add_argument("--val-split", type=float, help=f"validation fraction of the training split (default {VAL_SPLIT})")
    p.add_argument("--batch-size", type=int, help="as fit.py")
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--strategy", choices=STRATEGIES)
    p.add_argument("--seed", type=int)
    p.add_argument("--directory", help="search directory (default saved_models/tune-<family>-<dataset>-<tuner>)")
    p.add_argument("--synthetic-train", type=int, help="as fit.py")
    p.add_argument(
        "--export-best",
        action="store_true",
        help="then retrain the best configuration on the full training split with fit.py's recipe",
    )
    p.add_argument("--export-epochs", type=float, help="epochs of that retraining (default: the recipe's)")
    return p


def _short_e(value: float) -> str:
    """A number in e notation without the exponent's padding: 1e-5 (Python's :g writes 1e-05)."""
    mantissa, exponent = f"{value:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    settings = SearchSettings(
        tuner=args.tuner,
        max_trials=args.max_trials,
        max_epochs=args.max_epochs,
        epochs=args.epochs,
        max_params=args.max_params,
        max_flops=args.max_flops,
        directory=args.directory,
        export_best=args.export_best,
        export_epochs=args.export_epochs,
    )
    space = Space(
        family=args.family,
        n_min=args.n_min,
        n_max=args.n_max,
        imagenet_archs=tuple(args.arch),
        free_depths=args.free_depths,
        stage_min=args.stage_min,
        stage_max=args.stage_max,
        widths=tuple(args.width),
        shortcuts=tuple(args.shortcut) if args.shortcut else None,
        lr_min=args.lr_min,
        lr_max=args.lr_max,
        wd_min=args.wd_min,
        wd_max=args.wd_max,
    )
    base = base_config(
        space,
        dataset=args.dataset,
        data_dir=args.data_dir,
        image_size=args.image_size,
        val_split=args.val_split,
        batch_size=args.batch_size,
        precision=args.precision,
        strategy=args.strategy,
        seed=args.seed,
        synthetic_train=args.synthetic_train,
        class_balance=args.class_balance,
        skip_bad_images=args.skip_bad_images,
        max_bad_fraction=args.max_bad_fraction,
    )
    return search(space, base, settings)


if __name__ == "__main__":
    run_main(main)
