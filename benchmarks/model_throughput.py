"""Training and inference throughput of our networks against a reference
implementation of the same architecture, same batch, same precision.

    python benchmarks/model_throughput.py                       # both pairs below
    python benchmarks/model_throughput.py --pair resnet50 --precision mixed_bfloat16

Pairs:
  resnet50: resnet_keras "resnet50" against keras.applications.ResNet50(weights=None),
            224x224, both ending in logits (classifier_activation=None).
  resnet20: resnet_keras "resnet20" against a straightforward hand-written
            ResNet-20 (TF "same" padding, option A with a Python lambda, no input
            normalization layer), 32x32: what a blog-post ResNet-20 looks like.
            A second reference, "handwritten_symmetric", is the same network with
            the stride-2 convolutions padded one pixel on every side as ours are
            (see resnet_keras/blocks.py): it shows what that alignment costs.

After warm-up, each round runs --steps compiled steps of each model, one step of
each in turn (alternating the order); a model's speed in a round is batch size
over its median step time, and the ratio ours/reference is taken per round and
reported as median [min, max] over rounds. Steps are timed one by one around
``train_on_batch`` / ``predict_on_batch`` (compiled functions), not around
``fit``, whose return can stall for seconds after the last step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

import resnet_keras  # noqa: E402

PAIRS = {
    "resnet50": {"image_size": 224, "batch_size": 16, "steps": 5},
    "resnet20": {"image_size": 32, "batch_size": 128, "steps": 15},
}


def handwritten_resnet20(input_shape, num_classes, symmetric_padding=False):
    """A plain-Keras ResNet-20 as commonly written: the reference for resnet20.
    ``symmetric_padding=True`` pads its stride-2 convolutions as ours."""

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
        for i in range(3):
            x = block(x, filters, 2 if stage > 0 and i == 0 else 1)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(num_classes)(x), name="handwritten_resnet20")


def build_pair(pair):
    """Our model first, then its references: the first is the one to beat."""
    if pair == "resnet50":
        return {
            "resnet_keras": resnet_keras.get_model("resnet50", num_classes=1000),
            "keras_applications": keras.applications.ResNet50(weights=None, classifier_activation=None),
        }
    return {
        "resnet_keras": resnet_keras.get_model("resnet20", num_classes=10),
        "handwritten": handwritten_resnet20((32, 32, 3), 10),
        "handwritten_symmetric": handwritten_resnet20((32, 32, 3), 10, symmetric_padding=True),
    }


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


def run_pair(pair, args):
    config = PAIRS[pair]
    batch = args.batch_size or config["batch_size"]
    size = config["image_size"]
    models = build_pair(pair)
    num_classes = models["resnet_keras"].output_shape[-1]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, num_classes, (batch,))
    for model in models.values():
        compile_model(model, args.jit_compile)

    steps = {
        mode: {
            name: (
                (lambda m=model: m.train_on_batch(images, labels))
                if mode == "train"
                else (lambda m=model: m.predict_on_batch(images))
            )
            for name, model in models.items()
        }
        for mode in args.modes
    }
    results = {}
    for mode, fns in steps.items():
        for fn in fns.values():  # warm-up: tracing and the first slow steps
            time_steps(fn, args.warmup)
        per_round = {name: [] for name in fns}
        for _ in range(args.rounds):
            durations = {name: [] for name in fns}
            # Step by step, alternating which model goes first, so that drift in
            # the machine's speed reaches both models alike.
            for step in range(args.steps or config["steps"]):
                order = list(fns) if step % 2 == 0 else list(fns)[::-1]
                for name in order:
                    durations[name] += time_steps(fns[name], 1)
            for name in fns:
                per_round[name].append(batch / statistics.median(durations[name]))
        ours = per_round["resnet_keras"]
        ratios = {}
        for name in list(fns)[1:]:
            per = [o / ref for o, ref in zip(ours, per_round[name])]
            ratios[name] = {"median": statistics.median(per), "min": min(per), "max": max(per)}
        results[mode] = {
            "images_per_second": {name: statistics.median(v) for name, v in per_round.items()},
            "per_round": per_round,
            "ratios": ratios,
        }
        speeds = results[mode]["images_per_second"]
        for name, r in ratios.items():
            print(
                f"{pair:9s} {mode:9s} batch {batch:4d}  resnet_keras {speeds['resnet_keras']:8.1f} img/s"
                f"  {name} {speeds[name]:8.1f} img/s"
                f"  ratio {r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}]",
                flush=True,
            )
    return {"batch_size": batch, "image_size": size, **results}


def describe_cpu():
    """The CPU's model name and the instruction sets that matter for bf16 speed."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    extras = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{os.cpu_count()} CPUs, {model}" + (f" ({', '.join(extras)})" if extras else "")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", nargs="+", choices=list(PAIRS), default=list(PAIRS), help="which comparisons")
    parser.add_argument("--modes", nargs="+", choices=["train", "inference"], default=["train", "inference"])
    parser.add_argument("--precision", choices=["float32", "mixed_bfloat16", "mixed_float16"], default="float32")
    parser.add_argument("--batch-size", type=int, help="override the pair's batch (16 for resnet50, 128 for resnet20)")
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds (default 5)")
    parser.add_argument("--steps", type=int, help="timed steps per model per round (default 5 for resnet50, 15 for resnet20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model before timing (default 3)")
    parser.add_argument("--jit-compile", action="store_true", help="compile with XLA (slower on this CPU)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ("rounds", "steps", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least 1, got {value}")
    keras.config.set_dtype_policy(args.precision)
    machine = describe_cpu()
    print(f"precision {args.precision}, jit_compile {args.jit_compile}, keras {keras.__version__}, {machine}")
    results = {
        "precision": args.precision,
        "jit_compile": args.jit_compile,
        "keras": keras.__version__,
        "machine": machine,
        "pairs": {pair: run_pair(pair, args) for pair in args.pair},
    }
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2)
        os.replace(tmp, args.json)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
