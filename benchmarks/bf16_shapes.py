"""How much bfloat16 gains over float32 as the matrices grow: ResNet-20's
training step at several width multipliers (16/32/64 channels at width 1) and
batch sizes, both precisions, alternated step by step in one process.

    python benchmarks/bf16_shapes.py                          # widths 1 2 4, batches 128 256
    python benchmarks/bf16_shapes.py --widths 1 --batch-sizes 64 128 256 512

AMX multiplies bf16 tiles of 16 rows by 32 (16 x 64 bytes): a convolution with
16 input and 16 output channels leaves most of each tile empty, so the gain of
bf16 should grow with the channel count. The table gives, per shape, images/s
in each precision (median over rounds), the bf16/float32 ratio (median [min,
max] over rounds) and multiply-adds per second, which tell how well each shape
feeds the hardware.
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
from benchmarks.model_throughput import describe_cpu
from trainers.core.files import write_json_atomic


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--widths", nargs="+", type=float, default=[1.0, 2.0, 4.0])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[128, 256])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args(argv)

    machine = describe_cpu()
    print(machine, flush=True)
    variants, flops = {}, {}
    for width in args.widths:
        for precision in ("float32", "mixed_bfloat16"):
            keras.config.set_dtype_policy(precision)
            model = resnet_keras.get_model(args.arch, num_classes=10, width=width, seed=0)
            model.compile(
                optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
            for batch in args.batch_sizes:
                variants[(width, batch, precision)] = model
        flops[width] = resnet_keras.count_flops(model)
    keras.config.set_dtype_policy("float32")
    rng = np.random.default_rng(0)
    data = {
        b: (rng.uniform(0, 255, (b, 32, 32, 3)).astype("float32"), rng.integers(0, 10, (b,))) for b in args.batch_sizes
    }

    def step(key):
        x, y = data[key[1]]
        start = time.perf_counter()
        variants[key].train_on_batch(x, y)
        return time.perf_counter() - start

    keys = list(variants)
    for key in keys:
        for _ in range(args.warmup):
            step(key)
    per_round = {k: [] for k in keys}
    for _ in range(args.rounds):
        times = {k: [] for k in keys}
        for s in range(args.steps):
            shift = s % len(keys)
            for key in keys[shift:] + keys[:shift]:
                times[key].append(step(key))
        for key in keys:
            per_round[key].append(key[1] / statistics.median(times[key]))

    rows = []
    print(
        f"{'width':>5s} {'channels':>10s} {'batch':>5s} {'MFLOPs':>7s} {'fp32 img/s':>10s} {'bf16 img/s':>10s} "
        f"{'bf16/fp32':>22s} {'bf16 GMAC/s':>11s}"
    )
    for width in args.widths:
        for batch in args.batch_sizes:
            f32, b16 = per_round[(width, batch, "float32")], per_round[(width, batch, "mixed_bfloat16")]
            ratio = [b / f for b, f in zip(b16, f32)]
            row = {
                "width": width,
                "channels": [round(c * width) for c in (16, 32, 64)],
                "batch": batch,
                "flops": flops[width],
                "float32": statistics.median(f32),
                "bf16": statistics.median(b16),
                "ratio": {"median": statistics.median(ratio), "min": min(ratio), "max": max(ratio)},
                "per_round": {"float32": f32, "bf16": b16},
            }
            rows.append(row)
            r = row["ratio"]
            print(
                f"{width:5g} {'/'.join(map(str, row['channels'])):>10s} {batch:5d} {flops[width] / 1e6:7.1f} "
                f"{row['float32']:10.1f} {row['bf16']:10.1f} {r['median']:8.3f} [{r['min']:.3f}, {r['max']:.3f}]"
                f" {3 * flops[width] * row['bf16'] / 1e9:11.1f}",
                flush=True,
            )
    results = {
        "machine": machine,
        "arch": args.arch,
        "rows": rows,
        "note": "GMAC/s counts a training step as 3x the forward multiply-adds",
    }
    if args.json:
        write_json_atomic(args.json, results)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
