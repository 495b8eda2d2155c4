"""What each network tweak and recipe change of issue 38 costs in training speed,
and what test-time flip costs at evaluation: the ablation table's "time per
epoch", measured here because the runs' own wall times share the cores with
other work.

    python benchmarks/recipe_cost.py                                   # every variant, 128 px, batch 64
    python benchmarks/recipe_cost.py --variants resnet18 resnet18d+adamw --rounds 3 --json cost.json

Variants (each ``resnet_keras.get_model(arch, num_classes=10, input_shape=(S, S, 3),
...)``, compiled as trainers/core/train.py compiles a run of ``--recipe fast``
for 5 epochs of 147 steps: the recipe's optimizer from ``recipes.make_optimizer``,
``SparseCrossentropy(label_smoothing=0.1)``, the accuracy and top-5 metrics,
under the dtype policy ``--precision auto`` picks on this machine):
  resnet18             the paper's ResNet-18;
  resnet18d            ResNet-18 with ResNet-C's deep stem and ResNet-D's pooled
                       shortcuts: the baseline, every ratio is against it (it is
                       timed whatever --variants says);
  resnet18d+blur-stem  resnet18d with MaxBlurPool in the stem (blur_pool="stem");
  resnet18d+blur-all   resnet18d blurring every strided downsampling (blur_pool="all");
  resnet18d+adamw      resnet18d trained with --optimizer adamw (Keras' AdamW);
  resnet18d+lamb       resnet18d trained with --optimizer lamb (Keras' Lamb);
  resnet34d, resnet50d the deeper networks with the same tweaks and recipe.
The other recipe changes cost no step time worth timing: --lr-schedule
flat-cosine changes a scalar per step, and --mixup works in the input pipeline.

Steps are timed on one fixed random batch (uniform pixels in [0, 255], random
labels): the input pipeline (decoding, crops, augmentation) is excluded. Each
variant's train step is compiled once and timed around ``train_on_batch``.
After --warmup untimed steps of every variant, each round runs --steps steps of
every variant in turn, the order of the variants rotating from round to round;
a variant's speed in a round is the batch over its median step time. Reported
per variant: images/s median [min, max] over rounds, its ratio to resnet18d
(variant / resnet18d, per round: below 1 is slower) as median [min, max], and
seconds per Imagenette epoch, 9,408 images (147 steps of 64) over images/s.

Evaluation: resnet18d's ``predict_on_batch`` on --eval-batch images (one
view, as evaluate.py by default) against the same images with their mirror
images (two views, 2 x --eval-batch images in one call, as evaluate.py --flip),
alternated in the same way; speeds are in evaluated images per second, and the
flip/single ratio per round says what --flip costs.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # the trainer's kernels (resnet_keras/__init__.py says why)
ROOT = pathlib.Path(__file__).resolve().parents[1]

import keras
import numpy as np

import resnet_keras
from benchmarks import check_counts
from benchmarks.model_throughput import describe_cpu
from trainers.core import recipes
from trainers.core.files import write_json_atomic
from trainers.core.hardware import global_dtype_policy, resolve_precision

# name: (arch, get_model overrides, optimizer); optimizer None is the recipe's (SGD).
VARIANTS = {
    "resnet18": ("resnet18", {}, None),
    "resnet18d": ("resnet18d", {}, None),
    "resnet18d+blur-stem": ("resnet18d", {"blur_pool": "stem"}, None),
    "resnet18d+blur-all": ("resnet18d", {"blur_pool": "all"}, None),
    "resnet18d+adamw": ("resnet18d", {}, "adamw"),
    "resnet18d+lamb": ("resnet18d", {}, "lamb"),
    "resnet34d": ("resnet34d", {}, None),
    "resnet50d": ("resnet50d", {}, None),
}
BASELINE = "resnet18d"
NUM_CLASSES = 10
STEPS_PER_EPOCH = 147  # Imagenette's 9,469 training images in batches of 64, the last partial batch dropped
EPOCH_IMAGES = STEPS_PER_EPOCH * 64
EPOCHS = 5
VIEWS = ("single", "flip")


def build_variant(name, image_size, batch_size):
    """The variant's model, compiled with the trainer's optimizer, loss and
    metrics for ``--recipe fast``, under the current dtype policy."""
    arch, overrides, optimizer = VARIANTS[name]
    spec = resnet_keras.resolve_spec(arch)
    schedule = recipes.resolve_schedule(
        recipes.get_recipe("fast", spec.family, spec.depth),
        batch_size=batch_size,
        steps_per_epoch=STEPS_PER_EPOCH,
        epochs=EPOCHS,
        optimizer=optimizer,
        lr_schedule=None,
    )
    model = resnet_keras.get_model(
        arch,
        num_classes=NUM_CLASSES,
        input_shape=(image_size, image_size, 3),
        seed=0,
        zero_init_residual=schedule.zero_init_residual,
        **overrides,
    )
    model.compile(
        optimizer=recipes.make_optimizer(schedule, model.trainable_variables),
        loss=recipes.SparseCrossentropy(label_smoothing=schedule.label_smoothing),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
        ],
    )
    return model, schedule


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def alternate(fns, units, args):
    """Images/s of each function per round: --warmup untimed calls of each,
    then per round --steps calls of each in turn (the order rotating from round
    to round), each round's speed ``units[key]`` over the median call time."""
    keys = list(fns)
    for key in keys:
        for _ in range(args.warmup):
            fns[key]()
    per_round = {key: [] for key in keys}
    for round_index in range(args.rounds):
        shift = round_index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            durations = []
            for _ in range(args.steps):
                start = time.perf_counter()
                fns[key]()
                durations.append(time.perf_counter() - start)
            per_round[key].append(units[key] / statistics.median(durations))
    return per_round


def ratios(per_round, key, baseline):
    return spread([a / b for a, b in zip(per_round[key], per_round[baseline])])


def run(args, policy):
    names = [name for name in VARIANTS if name in args.variants or name == BASELINE]
    size, batch = args.image_size, args.batch_size
    with global_dtype_policy(policy):
        built = {name: build_variant(name, size, batch) for name in names}
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, (batch,))

    fns = {name: (lambda m=model: m.train_on_batch(images, labels)) for name, (model, _) in built.items()}
    per_round = alternate(fns, {name: batch for name in names}, args)
    train = {}
    for name in names:
        arch, overrides, _ = VARIANTS[name]
        model, schedule = built[name]
        speeds = spread(per_round[name])
        row = {
            "arch": arch,
            "model_options": overrides,
            "optimizer": schedule.optimizer,
            "params": model.count_params(),
            "per_round": per_round[name],
            "images_per_second": speeds,
            # The fastest round gives the shortest epoch.
            "seconds_per_epoch": {
                "median": EPOCH_IMAGES / speeds["median"],
                "min": EPOCH_IMAGES / speeds["max"],
                "max": EPOCH_IMAGES / speeds["min"],
            },
        }
        if name != BASELINE:
            row["ratio_to_baseline"] = ratios(per_round, name, BASELINE)
        train[name] = row

    model = built[BASELINE][0]
    eval_images = rng.uniform(0, 255, (args.eval_batch, size, size, 3)).astype("float32")
    # As data.flip_pipeline gives them to evaluation.score: each image, then its mirror.
    flipped = np.stack([eval_images, eval_images[:, :, ::-1]], axis=1).reshape((-1, size, size, 3))
    inputs = {"single": eval_images, "flip": flipped}
    fns = {view: (lambda x=inputs[view]: model.predict_on_batch(x)) for view in VIEWS}
    eval_rounds = alternate(fns, {view: args.eval_batch for view in VIEWS}, args)
    evaluation = {
        "model": BASELINE,
        "batch": args.eval_batch,
        "views": {
            view: {
                "model_images_per_call": len(inputs[view]),
                "per_round": eval_rounds[view],
                "images_per_second": spread(eval_rounds[view]),
            }
            for view in VIEWS
        },
        "ratio_flip_to_single": ratios(eval_rounds, "flip", "single"),
    }
    return train, evaluation


def fmt(r, digits=1):
    return f"{r['median']:.{digits}f} [{r['min']:.{digits}f}, {r['max']:.{digits}f}]"


def report(train, evaluation, args):
    print(f"training, {args.image_size} px, batch {args.batch_size} (input pipeline excluded):", flush=True)
    print(f"  {'variant':21s} {'params':>7s}  {'images/s':>28s}  {'vs ' + BASELINE:>25s}  s/epoch", flush=True)
    for name, row in train.items():
        ratio = fmt(row["ratio_to_baseline"], 3) if "ratio_to_baseline" in row else "1 (baseline)"
        print(
            f"  {name:21s} {row['params'] / 1e6:6.2f}M  {fmt(row['images_per_second']):>28s}  {ratio:>25s}"
            f"  {row['seconds_per_epoch']['median']:.0f}",
            flush=True,
        )
    print(f"evaluation, {BASELINE}, batch {evaluation['batch']} images:", flush=True)
    for view, row in evaluation["views"].items():
        print(
            f"  {view:6s} ({row['model_images_per_call']} images a call) {fmt(row['images_per_second'])} images/s",
            flush=True,
        )
    print(f"  flip / single {fmt(evaluation['ratio_flip_to_single'], 3)}", flush=True)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help=f"which variants (default all; {BASELINE}, the baseline, is always timed)",
    )
    parser.add_argument("--image-size", type=int, default=128, help="input side in pixels (default 128)")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch (default 64)")
    parser.add_argument("--eval-batch", type=int, default=100, help="images per evaluation call (default 100)")
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds (default 5)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant per round (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant before timing (default 3)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_counts(args, ("image_size", "batch_size", "eval_batch", "rounds", "steps"))
    check_counts(args, ("warmup",), minimum=0)
    machine = describe_cpu()
    policy, why = resolve_precision("auto")
    print(f"keras {keras.__version__}, {policy} ({why}), {machine}", flush=True)
    train, evaluation = run(args, policy)
    report(train, evaluation, args)
    results = {
        "machine": machine,
        "keras": keras.__version__,
        "precision": {"policy": policy, "why": why},
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "steps": args.steps,
        "warmup": args.warmup,
        "recipe": {"name": "fast", "epochs": EPOCHS, "steps_per_epoch": STEPS_PER_EPOCH},
        "epoch_images": EPOCH_IMAGES,
        "data": "one fixed random batch, input pipeline excluded",
        "baseline": BASELINE,
        "train": train,
        "evaluation": evaluation,
    }
    if args.json:
        write_json_atomic(args.json, results)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
