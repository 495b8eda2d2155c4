"""Train a network of the paper.

    python trainers/fit.py --arch resnet20 --dataset synthetic --epochs 3
    python trainers/fit.py --arch resnet20 --data-dir ../shared/tensorflow_datasets --epochs 3
    python trainers/fit.py --arch resnet34            # imagenette/160px-v2, paper recipe
    python trainers/fit.py --arch resnet34 --recipe fast --image-size 128 --epochs 5

The run directory (default saved_models/<arch>-<dataset>-<timestamp>/) gets
model.keras, best.keras, config.json, history.csv, steps.csv, metrics.json,
curves.png and TensorBoard logs. A killed run continues from its last backup
when the same command is run again.
"""

from __future__ import annotations

import argparse

import trainers  # noqa: F401  (first: a quiet TensorFlow start, on oneDNN kernels)
import resnet_keras
from resnet_keras.specs import (
    BLUR_POOLS,
    BOTTLENECK_VERSIONS,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_SHORTCUT,
    SHORTCUT_DOWNSAMPLES,
    STEMS,
)
from trainers.core.balance import MODES as BALANCE_MODES
from trainers.core.distributed import STRATEGIES
from trainers.core.errors import run_main, UserError
from trainers.core.hardware import PRECISIONS, split_cpu
from trainers.core.config import DEFAULT_DATASET, RunConfig
from trainers.core.folder import MAX_BAD_FRACTION
from trainers.core.recipes import AUGMENTS, FLAT_FRACTION, LR_SCHEDULES, OPTIMIZERS, RECIPES
from trainers.core.train import train


def build_parser() -> argparse.ArgumentParser:
    """fit.py's flags. Every flag of a setting defaults to None: RunConfig fills in its default (and the help
    text quotes it from there)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = RunConfig.defaults()
    models = resnet_keras.list_models()
    p.add_argument(
        "--arch",
        required=True,
        metavar="ARCH",
        help=f"network to train: {', '.join(models)}, or resnet<6n+2>/plain<6n+2>",
    )
    p.add_argument(
        "--dataset",
        help="TFDS image classification dataset with 'image' and 'label' "
        f"(default {DEFAULT_DATASET['cifar']} for CIFAR networks, {DEFAULT_DATASET['imagenet']} for "
        "ImageNet networks), "
        "'folder:PATH' for a directory of class-named image folders (docs/training.md), "
        "or 'synthetic' for the built-in dataset that needs no download",
    )
    p.add_argument(
        "--data-dir",
        help="TFDS data dir holding the prepared dataset (default $TFDS_DATA_DIR, "
        "else ~/tensorflow_datasets); nothing is ever downloaded",
    )
    add_data_flags(p)
    p.add_argument(
        "--image-size",
        type=int,
        help="training crop size (default "
        f"{DEFAULT_IMAGE_SIZE['cifar']} CIFAR, {DEFAULT_IMAGE_SIZE['imagenet']} ImageNet)",
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float, help="train this many epochs; the recipe's milestones scale along")
    length.add_argument("--steps", type=int, help="train this many iterations; the recipe's milestones scale along")
    p.add_argument(
        "--batch-size",
        type=int,
        help="global batch, split across replicas (default: the recipe's, "
        "128 CIFAR, 256 ImageNet); the learning rate scales linearly with it unless --lr is given",
    )
    p.add_argument("--recipe", choices=RECIPES, help="training recipe (default: paper, or finetune with --init-from)")
    p.add_argument(
        "--init-from",
        help="start from trained weights: a run directory, a .keras file, a .weights.h5 "
        "file of this library, or a keras.applications ResNet50/101/152 .h5 file; matching layers are "
        "copied, the classifier is new when the classes differ (docs/training.md, docs/finetune.md)",
    )
    p.add_argument(
        "--freeze-epochs",
        type=float,
        help="with --init-from: train only the classifier for the first N "
        "epochs, the backbone frozen (its BatchNormalization in inference mode), then everything",
    )
    p.add_argument("--lr", type=float, help="initial learning rate (default: the recipe's, scaled to the batch)")
    p.add_argument("--weight-decay", type=float, help="L2 weight decay, Caffe meaning (default: recipe's, 1e-4)")
    p.add_argument(
        "--label-smoothing",
        type=float,
        help="label smoothing of the cross-entropy (default: the recipe's, 0 paper, 0.1 fast ImageNet)",
    )
    p.add_argument(
        "--augment",
        choices=AUGMENTS,
        help="ImageNet networks' training crops: scale (the paper's "
        "shorter side in [256, 480], scaled) or rrc (random-resized crops); default: the recipe's",
    )
    p.add_argument(
        "--zero-init-residual",
        choices=("on", "off"),
        help="start the last BN scale of every residual branch at 0 (Goyal et al. 2017); default: the recipe's (off)",
    )
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        help="sgd (the recipe's: momentum, Caffe weight decay), adamw or lamb (decoupled weight decay; "
        "their own default --lr and --weight-decay, docs/imagenet.md)",
    )
    p.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        help="cosine (warm-up, then cosine decay to 0) or flat-cosine (warm-up, the peak held for "
        f"{round(FLAT_FRACTION * 100)}%% of the run, then cosine decay to 0); default: the recipe's",
    )
    p.add_argument(
        "--mixup",
        type=float,
        help="mixup's alpha (each batch mixed with itself reversed, by a Beta(alpha, alpha) weight); 0: off "
        "(default: the recipe's, off)",
    )
    p.add_argument(
        "--stem",
        choices=STEMS,
        help="the network's stem: standard (the paper's 7x7) or deep (ResNet-C: three 3x3); default: the network's",
    )
    p.add_argument(
        "--shortcut-downsample",
        choices=SHORTCUT_DOWNSAMPLES,
        help="how projection shortcuts downsample: stride (the paper's) or avgpool (ResNet-D); default: the network's",
    )
    p.add_argument(
        "--blur-pool",
        choices=BLUR_POOLS,
        help="anti-aliased downsampling (Zhang 2019): none, stem (MaxBlurPool) or all (also every strided "
        "convolution); default: the network's",
    )
    p.add_argument(
        "--bottleneck-version",
        choices=BOTTLENECK_VERSIONS,
        help="where a downsampling bottleneck strides: v1 (the paper's first 1x1) or v1.5 (the 3x3, ResNet-B; "
        "torchvision's and timm's ResNet-50 and deeper); default: the network's",
    )
    p.add_argument(
        "--shortcut",
        choices=("A", "B", "C"),
        help=f"shortcut option (default {DEFAULT_SHORTCUT['cifar']} CIFAR, {DEFAULT_SHORTCUT['imagenet']} ImageNet)",
    )
    p.add_argument("--width", type=float, help=f"width multiplier of every layer (default {default['width']})")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto: mixed_bfloat16 on CPUs with "
        "AVX-512 BF16/AMX, mixed_float16 on GPUs with tensor cores, float32 otherwise",
    )
    p.add_argument("--jit-compile", action="store_true", default=None, help="compile the training step with XLA")
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="auto: MultiWorkerMirroredStrategy when "
        "TF_CONFIG or Slurm describes a cluster, else MirroredStrategy over all GPUs when there are several, "
        "else the default strategy (docs/distributed.md)",
    )
    p.add_argument(
        "--sync-bn",
        action="store_true",
        default=None,
        help="BatchNormalization batch statistics over the global batch (all replicas of all workers)",
    )
    p.add_argument(
        "--cpu-replicas",
        type=int,
        default=1,
        help="split the CPU into N logical devices (to try --strategy mirrored without GPUs)",
    )
    p.add_argument("--output-dir", help="run directory (default saved_models/<arch>-<dataset>-<timestamp>)")
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        default=None,
        help="start a new run even if an unfinished run of the same settings exists",
    )
    p.add_argument("--seed", type=int, help="seed of initialisation, shuffling and augmentation")
    p.add_argument(
        "--val-split",
        type=float,
        help="fraction of the training split held out for "
        "validation (the paper tuned on 0.1 of CIFAR-10); 0: validate on the test split",
    )
    p.add_argument("--backup-every", type=int, help=f"iterations between backups (default {default['backup_every']})")
    p.add_argument("--log-every", type=int, help=f"iterations between steps.csv rows (default {default['log_every']})")
    p.add_argument("--steps-per-execution", type=int, help="training steps per compiled call")
    p.add_argument("--synthetic-classes", type=int, help="classes of the synthetic dataset")
    p.add_argument("--synthetic-train", type=int, help="training images of the synthetic dataset")
    p.add_argument("--synthetic-test", type=int, help="test images of the synthetic dataset")
    p.add_argument(
        "--jpeg-quality",
        type=int,
        help="re-encode every image (training and evaluation) as JPEG at this "
        "quality before use: an experiment knob to measure what compression costs (docs/benchmarks.md)",
    )
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), help="0 silent, 1 progress bar, 2 a line per epoch")
    return p


def add_data_flags(p: argparse.ArgumentParser) -> None:
    """--class-balance, --skip-bad-images and --max-bad-fraction (fit.py's and tune.py's)."""
    p.add_argument(
        "--class-balance",
        choices=BALANCE_MODES,
        help="unbalanced classes: none (the default: the training split as it is), weights (each class's loss "
        "weighted by N/(K n_c), its count n_c of N images in K classes) or sampling (every class drawn with "
        "probability 1/K; an epoch keeps the split's size); docs/training.md",
    )
    p.add_argument(
        "--skip-bad-images",
        action="store_true",
        default=None,
        help="--dataset folder:PATH: leave out the files that do not decode, listed with the reason in "
        "RUN_DIR/skipped_images.csv, instead of stopping at the first (the default)",
    )
    p.add_argument(
        "--max-bad-fraction",
        type=float,
        help=f"with --skip-bad-images: refuse to train when more than this fraction of the folder's files do not "
        f"decode (default {MAX_BAD_FRACTION})",
    )


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.cpu_replicas < 1:
        raise UserError(f"--cpu-replicas {args.cpu_replicas}; expected a positive integer")
    settings = vars(args).copy()
    settings.pop("cpu_replicas")
    if settings["zero_init_residual"] is not None:
        settings["zero_init_residual"] = settings["zero_init_residual"] == "on"
    config = RunConfig.from_dict(settings)
    # Before anything asks TensorFlow for its devices (train() does, making the strategy; importing
    # trainers.core does not): the split must come first.
    split_cpu(args.cpu_replicas)
    return train(config)


if __name__ == "__main__":
    run_main(main)
