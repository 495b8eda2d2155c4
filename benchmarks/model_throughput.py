"""Training and inference throughput of our networks against reference
implementations of the same architecture, per precision, with and without XLA.

    python benchmarks/model_throughput.py                                  # everything below
    python benchmarks/model_throughput.py --pair resnet20 --precision float32 mixed_bfloat16 --xla off

Pairs:
  resnet50: resnet_keras "resnet50" against keras.applications.ResNet50(weights=None),
            224x224, both ending in logits (classifier_activation=None).
  resnet20, resnet56: resnet_keras against a straightforward hand-written ResNet
            (TF "same" padding, option A with a Python lambda, no input
            normalization layer), 32x32: what a blog-post ResNet looks like.
            For resnet20 a second reference, "handwritten_symmetric", is the same
            network with the stride-2 convolutions padded one pixel on every side
            as ours are (see resnet_keras/blocks.py): what that alignment costs.

Every variant (network x precision x XLA) is built and compiled in the same
process. After warm-up, each round runs --steps compiled steps of every variant,
one step of each in turn (the order rotating from step to step); a variant's
speed in a round is batch size over its median step time. Ratios (ours over a
reference; a precision or XLA over float32 without XLA) are taken per round and
reported as median [min, max] over rounds; "best" is a variant's fastest round.
Steps are timed one by one around ``train_on_batch`` / ``predict_on_batch``
(compiled functions), not around ``fit``, whose return can stall for seconds
after the last step (docs/benchmarks.md says why).
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
from keras import layers, ops

import resnet_keras
from benchmarks import check_counts
from trainers.core.files import write_json_atomic
from trainers.core.hardware import cpu_name

PAIRS = {
    "resnet20": {"image_size": 32, "batch_size": 128, "steps": 15},
    "resnet56": {"image_size": 32, "batch_size": 128, "steps": 6},
    "resnet50": {"image_size": 224, "batch_size": 16, "steps": 4},
}
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def handwritten_resnet20(input_shape, num_classes, symmetric_padding=False, n=3):
    """A plain-Keras ResNet-(6n+2) as commonly written (ResNet-20 by default):
    the reference for resnet20 and resnet56. ``symmetric_padding=True`` pads
    its stride-2 convolutions as ours."""

    def block(x, filters, stride):
        if stride > 1 and symmetric_padding:
            x_pad = layers.ZeroPadding2D(1)(x)
            y = layers.Conv2D(filters, 3, strides=stride, padding="valid", use_bias=False)(x_pad)
        else:
            y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        y = layers.Activation("relu")(layers.BatchNormalization()(y))
        y = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same", use_bias=False)(y))
        if stride != 1 or x.shape[-1] != filters:
            pad = filters - x.shape[-1]
            x = layers.Lambda(lambda t: ops.pad(t[:, ::2, ::2, :], [[0, 0], [0, 0], [0, 0], [0, pad]]))(x)
        return layers.Activation("relu")(layers.Add()([x, y]))

    inputs = keras.Input(input_shape)
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    for stage, filters in enumerate((16, 32, 64)):
        for i in range(n):
            x = block(x, filters, 2 if stage > 0 and i == 0 else 1)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(num_classes)(x), name=f"handwritten_resnet{6 * n + 2}")


def build_pair(pair):
    """Our model first, then its references: the first is the one to beat.
    Built under the current dtype policy."""
    if pair == "resnet50":
        return {
            "resnet_keras": resnet_keras.get_model("resnet50", num_classes=1000),
            "keras_applications": keras.applications.ResNet50(weights=None, classifier_activation=None),
        }
    n = {"resnet20": 3, "resnet56": 9}[pair]
    models = {
        "resnet_keras": resnet_keras.get_model(pair, num_classes=10),
        "handwritten": handwritten_resnet20((32, 32, 3), 10, n=n),
    }
    if pair == "resnet20":
        models["handwritten_symmetric"] = handwritten_resnet20((32, 32, 3), 10, symmetric_padding=True)
    return models


def compile_model(model, jit_compile):
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )


def time_steps(step, steps):
    """Seconds of each of ``steps`` calls of ``step``."""
    durations = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        durations.append(time.perf_counter() - start)
    return durations


def variant_name(model, precision, xla):
    return f"{model}|{precision}|{'xla' if xla else 'no-xla'}"


def _ratio(a, b):
    per = [x / y for x, y in zip(a, b)]
    return {"median": statistics.median(per), "min": min(per), "max": max(per)}


def run_pair(pair, args):
    config = PAIRS[pair]
    batch = args.batch_size or config["batch_size"]
    size = config["image_size"]
    variants, names = {}, None
    for precision in args.precision:
        keras.config.set_dtype_policy(precision)
        for xla in args.xla:
            models = build_pair(pair)
            names = list(models)
            for name, model in models.items():
                compile_model(model, xla == "on")
                variants[variant_name(name, precision, xla == "on")] = model
    keras.config.set_dtype_policy("float32")
    num_classes = variants[variant_name("resnet_keras", args.precision[0], args.xla[0] == "on")].output_shape[-1]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, num_classes, (batch,))

    results = {"batch_size": batch, "image_size": size, "models": names}
    for mode in args.modes:
        fns = {
            key: (lambda m=model: m.train_on_batch(images, labels))
            if mode == "train"
            else (lambda m=model: m.predict_on_batch(images))
            for key, model in variants.items()
        }
        for fn in fns.values():  # warm-up: tracing, compilation, the first slow steps
            time_steps(fn, args.warmup)
        per_round = {key: [] for key in fns}
        keys = list(fns)
        for _ in range(args.rounds):
            durations = {key: [] for key in fns}
            # Step by step, rotating which variant goes first, so that drift in
            # the machine's speed reaches every variant alike.
            for step in range(args.steps or config["steps"]):
                shift = step % len(keys)
                for key in keys[shift:] + keys[:shift]:
                    durations[key] += time_steps(fns[key], 1)
            for key in fns:
                per_round[key].append(batch / statistics.median(durations[key]))
        ratios = {}
        baseline = variant_name("resnet_keras", "float32", False)
        for key in fns:
            name, precision, xla = key.split("|")
            if name != "resnet_keras":
                ratios[f"resnet_keras/{key}"] = _ratio(per_round[f"resnet_keras|{precision}|{xla}"], per_round[key])
            elif key != baseline and baseline in per_round:
                ratios[f"{key}/float32|no-xla"] = _ratio(per_round[key], per_round[baseline])
        results[mode] = {
            "images_per_second": {key: statistics.median(v) for key, v in per_round.items()},
            "best_round": {key: max(v) for key, v in per_round.items()},
            "per_round": per_round,
            "ratios": ratios,
        }
        for key in fns:
            print(
                f"{pair:9s} {mode:9s} batch {batch:4d}  {key:45s} median {results[mode]['images_per_second'][key]:8.1f}"
                f"  best {results[mode]['best_round'][key]:8.1f} img/s",
                flush=True,
            )
        for label, r in ratios.items():
            print(
                f"{pair:9s} {mode:9s} ratio {label:60s} {r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}]", flush=True
            )
    return results


def describe_cpu():
    """The CPU in one line: its family and model numbers, model name, CPU count
    and the instruction sets that matter for speed (trainers.core.hardware.cpu_name)."""
    return cpu_name()


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", nargs="+", choices=list(PAIRS), default=list(PAIRS), help="which comparisons")
    parser.add_argument("--modes", nargs="+", choices=["train", "inference"], default=["train", "inference"])
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=PRECISIONS,
        default=["float32", "mixed_bfloat16"],
        help="dtype policies to compare (default float32 and mixed_bfloat16; mixed_float16 is "
        "about 75x slower than float32 on a CPU without fp16 arithmetic: run it alone, "
        "with few steps)",
    )
    parser.add_argument(
        "--xla",
        nargs="+",
        choices=["off", "on"],
        default=["off", "on"],
        help="compile without and/or with XLA (jit_compile)",
    )
    parser.add_argument(
        "--batch-size", type=int, help="override the pair's batch (128 for resnet20/56, 16 for resnet50)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds (default 5)")
    parser.add_argument(
        "--steps", type=int, help="timed steps per variant per round (default 15/6/4 for resnet20/56/50)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant before timing (default 3)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_counts(args, ("rounds", "steps", "batch_size"))
    machine = describe_cpu()
    print(f"precisions {' '.join(args.precision)}, XLA {' '.join(args.xla)}, keras {keras.__version__}, {machine}")
    results = {
        "precisions": args.precision,
        "xla": args.xla,
        "keras": keras.__version__,
        "machine": machine,
        "pairs": {pair: run_pair(pair, args) for pair in args.pair},
    }
    if args.json:
        write_json_atomic(args.json, results)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
