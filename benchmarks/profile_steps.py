"""Where a training step's time goes: TensorFlow's profiler over compiled
training steps of our networks, summed per op type.

    python benchmarks/profile_steps.py       # resnet20, resnet56, resnet50; float32 and bf16
    python benchmarks/profile_steps.py --arch resnet20 --precision mixed_bfloat16 --top 15

For each network and precision: a model built with ``get_model``, compiled with
SGD (momentum 0.9) and sparse cross-entropy as the trainer does, warmed up, then
``--steps`` calls of ``train_on_batch`` under ``tf.profiler.experimental``. The
trace (``*.xplane.pb``, the file TensorBoard's profile plugin reads) is parsed
with the protobuf module TensorFlow ships (``tensorflow.tsl.profiler``), and the
op events of TensorFlow's compute threads are summed by op type (oneDNN's
``_MklNative...`` kernels included) and by the layer they belong to (the name
scope: ``conv2_block1_1_bn``, the optimizer, ...). Times are op time, summed over
the inter-op threads, per step: with two inter-op threads running at once their
sum can exceed the step's wall time; the shares are what to read. The profiler
itself slows the steps a little, so the wall time per step it prints is not a
benchmark figure (model_throughput.py and peer_torch.py give those).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import pathlib
import re
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]

import keras
import numpy as np

import resnet_keras
from benchmarks import check_counts
from benchmarks.model_throughput import describe_cpu
from trainers.core.files import write_json_atomic

SETTINGS = {
    "resnet20": {"image_size": 32, "batch_size": 128, "num_classes": 10},
    "resnet56": {"image_size": 32, "batch_size": 128, "num_classes": 10},
    "resnet50": {"image_size": 224, "batch_size": 16, "num_classes": 1000},
}
PRECISIONS = ("float32", "mixed_bfloat16")


def layer_kind(scope: str) -> str:
    """A coarse kind for a layer name: what the per-layer table groups by."""
    if scope in ("sgd", "SGD") or scope.startswith(("sgd", "SGD", "optimizer")):
        return "optimizer"
    for suffix, kind in (
        ("_conv", "conv"),
        ("_bn", "batchnorm"),
        ("_relu", "relu"),
        ("_out", "relu"),
        ("_add", "add"),
        ("_zeropad", "option A shortcut"),
        ("_pad", "zero padding"),
        ("_pool", "pooling"),
    ):
        if scope.endswith(suffix):
            return kind
    if scope in ("normalization", "logits", "avg_pool"):
        return scope
    return "other"


def op_scope(name: str, layer_names) -> str:
    """The layer an op belongs to: the first part of its name scope that is a
    layer of the model (gradient ops carry the forward op's scope after
    ``gradient_tape/``), else the first part."""
    parts = [p for p in name.split("/") if p]
    for part in parts:
        # Keras' name scopes add a suffix when a layer is called again: conv1_bn_1
        for candidate in (part, re.sub(r"_\d+$", "", part)):
            if candidate in layer_names:
                return candidate
    for part in parts:
        if part.lower().startswith("sgd"):
            return "sgd"
    return parts[0] if parts else name


def parse_trace(logdir, layer_names):
    """``(by op type, by layer)`` op seconds from the newest trace under ``logdir``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    if not files:
        raise SystemExit(f"error: TensorFlow's profiler wrote no trace (*.xplane.pb) under {logdir}")
    space = xplane_pb2.XSpace()
    space.ParseFromString(pathlib.Path(files[-1]).read_bytes())
    by_type, by_layer = collections.Counter(), collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                label = plane.event_metadata[event.metadata_id].name
                # Op events are "op_name:OpType"; executor and thread-pool events use "::".
                if "::" in label or ":" not in label:
                    continue
                name, op_type = label.rsplit(":", 1)
                if op_type.startswith("__inference"):  # the enclosing function, not an op
                    continue
                seconds = event.duration_ps / 1e12
                by_type[op_type] += seconds
                by_layer[op_scope(name, layer_names)] += seconds
    return by_type, by_layer


def profile(arch, precision, args):
    import tensorflow as tf

    settings = SETTINGS[arch]
    batch = args.batch_size or settings["batch_size"]
    size = settings["image_size"]
    keras.config.set_dtype_policy(precision)
    try:
        model = resnet_keras.get_model(arch, num_classes=settings["num_classes"], input_shape=(size, size, 3))
        model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    finally:
        keras.config.set_dtype_policy("float32")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, settings["num_classes"], (batch,))
    for _ in range(args.warmup):
        model.train_on_batch(images, labels)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(args.steps):
            model.train_on_batch(images, labels)
        wall = (time.perf_counter() - start) / args.steps
        tf.profiler.experimental.stop()
        by_type, by_layer = parse_trace(logdir, {layer.name for layer in model.layers})
    by_kind = collections.Counter()
    for scope, seconds in by_layer.items():
        by_kind[layer_kind(scope)] += seconds
    total = sum(by_type.values())

    def table(counter):
        return [
            {"name": k, "ms_per_step": 1e3 * v / args.steps, "share": v / total if total else None}
            for k, v in counter.most_common()
        ]

    result = {
        "arch": arch,
        "precision": precision,
        "batch_size": batch,
        "image_size": size,
        "steps": args.steps,
        "wall_ms_per_step_profiled": 1e3 * wall,
        "op_ms_per_step": 1e3 * total / args.steps,
        "by_op_type": table(by_type),
        "by_layer_kind": table(by_kind),
        "by_layer": table(by_layer),
    }
    print(
        f"\n{arch} {precision} batch {batch}: {1e3 * wall:.1f} ms/step wall (profiled), "
        f"{result['op_ms_per_step']:.1f} ms/step of op time"
    )
    print(f"  {'op type':42s} {'ms/step':>8s} {'share':>6s}    {'layer kind':20s} {'ms/step':>8s} {'share':>6s}")
    types, kinds = result["by_op_type"][: args.top], result["by_layer_kind"]
    for i in range(max(len(types), len(kinds))):
        left = (
            f"{types[i]['name']:42s} {types[i]['ms_per_step']:8.2f} {100 * types[i]['share']:5.1f}%"
            if i < len(types)
            else " " * 58
        )
        right = (
            f"{kinds[i]['name']:20s} {kinds[i]['ms_per_step']:8.2f} {100 * kinds[i]['share']:5.1f}%"
            if i < len(kinds)
            else ""
        )
        print(f"  {left}    {right}")
    if args.top_layers:
        print(f"  the {args.top_layers} most expensive layers (forward and backward ops):")
        for row in result["by_layer"][: args.top_layers]:
            print(f"    {row['name']:40s} {row['ms_per_step']:8.2f} ms {100 * row['share']:5.1f}%")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--batch-size", type=int, help="override the network's batch (128 for resnet20/56, 16 for resnet50)")
    p.add_argument("--steps", type=int, default=3, help="profiled steps (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="steps before profiling (default 3)")
    p.add_argument("--top", type=int, default=12, help="op types to print (default 12)")
    p.add_argument("--top-layers", type=int, default=0, help="also print the N most expensive layers")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    check_counts(args, ("steps", "top", "batch_size"))
    check_counts(args, ("warmup", "top_layers"), minimum=0)
    machine = describe_cpu()
    print(f"keras {keras.__version__}, {machine}")
    results = {
        "machine": machine,
        "keras": keras.__version__,
        "profiles": [profile(a, pr, args) for a in args.arch for pr in args.precision],
    }
    if args.json:
        write_json_atomic(args.json, results)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
