"""Is the input pipeline the bottleneck? Three measurements, each alternated
over rounds in one process:

1. pipeline alone: images per second that ``trainers.core.data.train_pipeline``
   delivers (the paper's augmentation, decoded images cached), with tf.data's
   autotuner and per-image augmentation, with fixed parallelism, and with fixed
   parallelism and the augmentation on whole batches (the project's default);
2. the stall: seconds that destroying an iterator takes (what ``fit`` and
   ``evaluate`` do when they return), both ways;
3. end to end against model only: the steady-state training images per second
   of ``trainers.core.train.train`` (what ``fit.py`` runs: real pipeline, every
   callback; timed inside the run, from the 6th to the last step of its second
   epoch, after the first has filled the cache of decoded images) against the
   same network, optimizer, loss, metrics and precision fed one constant batch
   already in memory (timed the same way, no other callback). With
   ``--pipeline-threads 0 1`` the end-to-end run is repeated per value of
   ``trainers.core.data.PIPELINE_INTRA_OP_THREADS`` (threads one pipeline op may
   use; 0 is TensorFlow's default, the intra-op pool the step also uses), all
   alternated.

    python benchmarks/input_pipeline.py --data-dir ../shared/tensorflow_datasets
    python benchmarks/input_pipeline.py --dataset synthetic --rounds 2 --steps 60
"""

from __future__ import annotations

import argparse
import csv
import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]

import keras
import tensorflow as tf

import resnet_keras
from benchmarks.model_throughput import describe_cpu
from trainers.core import data as data_lib
from trainers.core import recipes
from trainers.core.files import write_json_atomic
from trainers.core.hardware import resolve_precision
from trainers.core.train import train


def _info(args):
    return data_lib.describe(
        args.dataset,
        data_dir=args.data_dir,
        family="cifar",
        image_size=32,
        val_split=0.0,
        seed=0,
        synthetic_train=args.synthetic_train,
    )


def pipeline_alone(args, info):
    """Images/s of the training pipeline, alternated between: the tf.data
    autotuner with per-image augmentation (TensorFlow's defaults), fixed
    parallelism with per-image augmentation, and fixed parallelism with the
    augmentation on whole batches (the project's default)."""
    variants = {"autotune": (True, False), "fixed": (False, False), "fixed+batched": (False, True)}
    datasets = {}
    for name, (autotune, batched) in variants.items():
        data_lib.USE_AUTOTUNE, data_lib.BATCHED_CIFAR_AUGMENTATION = autotune, batched
        datasets[name] = data_lib.train_pipeline(info, args.batch_size, seed=0)
    data_lib.USE_AUTOTUNE, data_lib.BATCHED_CIFAR_AUGMENTATION = False, True
    for ds in datasets.values():  # one whole pass: the cache of decoded images is filled
        for _ in ds.take(info.num_train // args.batch_size + 1):
            pass
    speeds, stalls = {k: [] for k in datasets}, {k: [] for k in datasets}
    for r in range(args.rounds):
        for name in list(datasets)[:: 1 if r % 2 == 0 else -1]:
            iterator = iter(datasets[name])
            for _ in range(5):
                next(iterator)
            start = time.perf_counter()
            for _ in range(args.pipeline_batches):
                next(iterator)
            speeds[name].append(args.pipeline_batches * args.batch_size / (time.perf_counter() - start))
            start = time.perf_counter()
            del iterator
            stalls[name].append(time.perf_counter() - start)
    return {"images_per_second": speeds, "iterator_teardown_seconds": stalls}


class StepTimer(keras.callbacks.Callback):
    """Steady-state images/s: from the end of the 5th batch to the last."""

    def __init__(self, batch_size, warmup=5):
        super().__init__()
        self.batch_size, self.warmup = batch_size, warmup

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if batch + 1 == self.warmup:
            self.mark = (batch, now)
        self.last = (batch, now)

    @property
    def images_per_second(self):
        return (self.last[0] - self.mark[0]) * self.batch_size / (self.last[1] - self.mark[1])


def model_only(args, info, policy):
    """A compiled model as train() compiles it, fed one batch from memory."""
    keras.config.set_dtype_policy(policy)
    recipe = recipes.get_recipe(args.recipe, "cifar", 20)
    schedule = recipes.resolve_schedule(
        recipe, batch_size=args.batch_size, steps_per_epoch=info.num_train // args.batch_size, steps=args.steps
    )
    model = resnet_keras.get_model(args.arch, num_classes=10, seed=0, zero_init_residual=schedule.zero_init_residual)
    model.compile(
        optimizer=recipes.CaffeSGD(
            learning_rate=recipes.learning_rate(schedule),
            momentum=schedule.momentum,
            l2_decay=schedule.weight_decay,
            nesterov=schedule.nesterov,
            kernels_only=schedule.weight_decay_on == "kernels",
        ),
        loss=recipes.SparseCrossentropy(schedule.label_smoothing)
        if schedule.label_smoothing
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
        ],
        steps_per_execution=args.steps_per_execution,
    )
    batch = next(iter(data_lib.train_pipeline(info, args.batch_size, seed=0)))
    constant = tf.data.Dataset.from_tensors(batch).repeat()
    keras.config.set_dtype_policy("float32")

    def run():
        timer = StepTimer(args.batch_size)
        model.fit(constant, steps_per_epoch=args.steps, epochs=1, verbose=0, callbacks=[timer])
        return timer.images_per_second

    return run


def end_to_end(args, runs_dir, info):
    # One whole epoch first (it decodes and caches the images: not steady
    # state), then --steps more; the figure is the second epoch's.
    steps = info.num_train // args.batch_size + args.steps
    config = {
        "arch": args.arch,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "steps": steps,
        "recipe": args.recipe,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "verbose": 0,
        "backup_every": 200,
        "steps_per_execution": args.steps_per_execution,
        "synthetic_train": args.synthetic_train,
    }
    counter = iter(range(10**6))

    def run():
        out = pathlib.Path(runs_dir) / f"run{next(counter)}"
        train({**config, "output_dir": str(out)})
        with open(out / "history.csv") as f:
            return float(list(csv.DictReader(f))[-1]["images_per_second"])

    return run


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-dir")
    p.add_argument("--synthetic-train", type=int, default=4096, help="training images of --dataset synthetic")
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--recipe", default="paper", choices=recipes.RECIPES)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", default="auto")
    p.add_argument(
        "--steps", type=int, default=150, help="timed training steps per round (end to end: after one whole epoch)"
    )
    p.add_argument("--steps-per-execution", type=int, default=1)
    p.add_argument("--pipeline-batches", type=int, default=200, help="batches timed per pipeline round")
    p.add_argument(
        "--pipeline-threads",
        type=int,
        nargs="+",
        default=[data_lib.PIPELINE_INTRA_OP_THREADS],
        help="end to end once per value of trainers.core.data.PIPELINE_INTRA_OP_THREADS "
        f"(default: the project's, {data_lib.PIPELINE_INTRA_OP_THREADS})",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip", nargs="*", default=[], choices=["pipeline", "end-to-end"])
    p.add_argument("--json", help="also write the results here")
    return p


def _e2e_name(threads, args):
    """end_to_end, or end_to_end_threadsN when several values are compared."""
    return "end_to_end" if len(args.pipeline_threads) == 1 else f"end_to_end_threads{threads}"


def _with_pipeline_threads(run, threads):
    def wrapped():
        saved = data_lib.PIPELINE_INTRA_OP_THREADS
        data_lib.PIPELINE_INTRA_OP_THREADS = threads
        try:
            return run()
        finally:
            data_lib.PIPELINE_INTRA_OP_THREADS = saved

    return wrapped


def _spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv=None):
    args = build_parser().parse_args(argv)
    policy, _ = resolve_precision(args.precision)
    info = _info(args)
    machine = describe_cpu()
    print(f"{info.name}, batch {args.batch_size}, {args.arch}, precision {policy}, {machine}", flush=True)
    results = {
        "machine": machine,
        "dataset": info.name,
        "batch_size": args.batch_size,
        "arch": args.arch,
        "precision": policy,
        "recipe": args.recipe,
        "steps_per_execution": args.steps_per_execution,
    }
    if "pipeline" not in args.skip:
        alone = pipeline_alone(args, info)
        results["pipeline"] = alone
        for name in alone["images_per_second"]:
            speed, stall = alone["images_per_second"][name], alone["iterator_teardown_seconds"][name]
            print(
                f"pipeline alone, {name:8s}: {statistics.median(speed):8.0f} img/s (rounds "
                f"{', '.join(f'{v:.0f}' for v in speed)}); iterator teardown "
                f"{', '.join(f'{v:.2f}' for v in stall)} s",
                flush=True,
            )
    if "end-to-end" not in args.skip:
        with tempfile.TemporaryDirectory() as runs_dir:
            e2e = end_to_end(args, runs_dir, info)
            runs = {_e2e_name(n, args): _with_pipeline_threads(e2e, n) for n in args.pipeline_threads}
            runs["model_only"] = model_only(args, info, policy)
            speeds = {k: [] for k in runs}
            for r in range(args.rounds):
                for name in list(runs)[:: 1 if r % 2 == 0 else -1]:
                    speeds[name].append(runs[name]())
        results["fit"] = {"images_per_second": speeds}
        for name, v in speeds.items():
            print(f"{name:10s}: median {statistics.median(v):7.1f} img/s (rounds {', '.join(f'{x:.1f}' for x in v)})")
        for n in args.pipeline_threads:
            name = _e2e_name(n, args)
            ratio = _spread([e / m for e, m in zip(speeds[name], speeds["model_only"])])
            results["fit"][f"ratio_{name}_over_model_only"] = ratio
            print(f"{name} / model only: {ratio['median']:.3f} [{ratio['min']:.3f}, {ratio['max']:.3f}]", flush=True)
    if args.json:
        write_json_atomic(args.json, results)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
