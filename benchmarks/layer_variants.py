"""What each of the library's speed changes gains: our networks with one change
undone at a time, trained step by step, alternated in one process.

    python benchmarks/layer_variants.py                                # resnet20, resnet56, resnet50
    python benchmarks/layer_variants.py --arch resnet20 --precision mixed_bfloat16 --rounds 5

Variants of the same network (same weights, same optimizer and loss):
  current        the network as ``get_model`` builds it;
  keras_bn       every FusedBatchNormalization replaced by keras.layers.BatchNormalization;
  strided_slice  option A subsampling by ``x[:, ::2, ::2, :]`` instead of a 1x1 max pooling;
  conv_1x1       every MatmulConv2D replaced by keras.layers.Conv2D;
  before         all three undone: the network as it was before them.
A change that does not occur in a network (option A in resnet50, 1x1 convolutions
in resnet20/56) has no variant for it. Each round runs --steps training steps of
every variant, one step of each in turn (the order rotating), and a variant's
speed in a round is batch / its median step time. Ratios current / variant are
per round, reported as median [min, max].
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]

import keras
import numpy as np

import resnet_keras
from benchmarks import check_counts
from benchmarks.model_throughput import describe_cpu
from resnet_keras.layers import (
    FusedBatchNormalization,
    MatmulConv2D,
    zero_pad_output_shape,
    zero_pad_shortcut,
)
from trainers.core.files import write_json_atomic

SETTINGS = {
    "resnet20": {"image_size": 32, "batch_size": 128, "num_classes": 10, "steps": 12},
    "resnet56": {"image_size": 32, "batch_size": 128, "num_classes": 10, "steps": 6},
    "resnet50": {"image_size": 224, "batch_size": 16, "num_classes": 1000, "steps": 4},
}
PRECISIONS = ("float32", "mixed_bfloat16")
UNDO = {"keras_bn": {"bn"}, "strided_slice": {"slice"}, "conv_1x1": {"conv"}, "before": {"bn", "slice", "conv"}}


def strided_zero_pad(x, stride=2, out_channels=None):
    """Option A as it was: strided slicing, then the library's zero channels."""
    return zero_pad_shortcut(x[:, ::stride, ::stride, :], stride=1, out_channels=out_channels)


def undo(model, changes):
    """A copy of ``model`` (same weights) with the named changes undone."""

    def clone(layer):
        config = layer.get_config()
        if "bn" in changes and isinstance(layer, FusedBatchNormalization):
            return keras.layers.BatchNormalization.from_config(config)
        if "conv" in changes and isinstance(layer, MatmulConv2D):
            return keras.layers.Conv2D.from_config(config)
        if "slice" in changes and isinstance(layer, keras.layers.Lambda) and layer.name.endswith("_zeropad"):
            output_shape = zero_pad_output_shape(layer.input.shape, **layer.arguments)
            return keras.layers.Lambda(
                strided_zero_pad, output_shape=output_shape, arguments=dict(layer.arguments), name=layer.name
            )
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def applicable(model):
    """The changes that occur in ``model``."""
    found = set()
    for layer in model.layers:
        if isinstance(layer, FusedBatchNormalization):
            found.add("bn")
        elif isinstance(layer, MatmulConv2D):
            found.add("conv")
        elif isinstance(layer, keras.layers.Lambda) and layer.name.endswith("_zeropad"):
            found.add("slice")
    return found


def run_arch(arch, args):
    settings = SETTINGS[arch]
    batch = args.batch_size or settings["batch_size"]
    size = settings["image_size"]
    variants = {}
    for precision in args.precision:
        keras.config.set_dtype_policy(precision)
        try:
            model = resnet_keras.get_model(arch, num_classes=settings["num_classes"], seed=0)
            found = applicable(model)
            versions = {"current": model}
            for name, changes in UNDO.items():
                if changes & found and (name != "before" or len(found) > 1):
                    versions[name] = undo(model, changes & found)
            for name, version in versions.items():
                version.compile(
                    optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                )
                variants[f"{name}|{precision}"] = version
        finally:
            keras.config.set_dtype_policy("float32")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, settings["num_classes"], (batch,))
    keys = list(variants)
    for key in keys:
        for _ in range(args.warmup):
            variants[key].train_on_batch(images, labels)
    per_round = {key: [] for key in keys}
    for _ in range(args.rounds):
        times = {key: [] for key in keys}
        for step in range(args.steps or settings["steps"]):
            shift = step % len(keys)
            for key in keys[shift:] + keys[:shift]:
                start = time.perf_counter()
                variants[key].train_on_batch(images, labels)
                times[key].append(time.perf_counter() - start)
        for key in keys:
            per_round[key].append(batch / statistics.median(times[key]))
    ratios = {}
    for key in keys:
        name, precision = key.split("|")
        if name != "current":
            per = [a / b for a, b in zip(per_round[f"current|{precision}"], per_round[key])]
            ratios[f"current/{key}"] = {"median": statistics.median(per), "min": min(per), "max": max(per)}
    for key in keys:
        print(
            f"{arch:9s} batch {batch:4d} {key:30s} {statistics.median(per_round[key]):8.1f} img/s "
            f"(best {max(per_round[key]):.1f})",
            flush=True,
        )
    for label, r in ratios.items():
        print(f"{arch:9s} ratio {label:40s} {r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}]", flush=True)
    return {
        "batch_size": batch,
        "image_size": size,
        "per_round": per_round,
        "images_per_second": {k: statistics.median(v) for k, v in per_round.items()},
        "ratios": ratios,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--batch-size", type=int)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, help="timed steps per variant per round (default 12/6/4)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args(argv)
    check_counts(args, ("rounds", "steps", "batch_size"))
    machine = describe_cpu()
    print(f"keras {keras.__version__}, {machine}", flush=True)
    results = {"machine": machine, "keras": keras.__version__, "archs": {a: run_arch(a, args) for a in args.arch}}
    if args.json:
        write_json_atomic(args.json, results)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
