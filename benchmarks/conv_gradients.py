"""Are TensorFlow's float32 convolution gradients right on this CPU? Each shape's
output, input gradient and kernel gradient (of sum(y**2)) in float32 against the
same computation in float64 (Eigen's kernels: oneDNN has no float64), over
``--runs`` random inputs; a run is wrong where any of the three differs from
float64 by more than 1e-4 of its largest value. The default shapes are the
convolutions of this project's networks, plus the 1x1 stride-2 shape with 5 and
6 channels that oneDNN gets wrong on an AVX2-only CPU (docs/benchmarks.md,
"oneDNN or Eigen"). Run it with TF_ENABLE_ONEDNN_OPTS=0 to check Eigen.

    python benchmarks/conv_gradients.py
    python benchmarks/conv_gradients.py --runs 20 --json conv_gradients.json
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]

import resnet_keras  # noqa: E402,F401  (its import chooses the kernels, as in training)
from benchmarks import check_counts

# (kernel, stride, padding, image size, in channels, out channels)
SHAPES = (
    (1, 2, "VALID", 8, 5, 6),  # the wrong one on an AVX2-only CPU with oneDNN
    (1, 2, "VALID", 8, 8, 8),
    (1, 2, "VALID", 8, 16, 16),
    (1, 1, "VALID", 8, 5, 6),
    (1, 1, "VALID", 8, 16, 16),
    (1, 2, "VALID", 32, 16, 32),
    (1, 2, "VALID", 16, 32, 64),
    (1, 2, "VALID", 32, 64, 128),
    (1, 2, "VALID", 16, 256, 512),
    (3, 1, "SAME", 8, 5, 6),
    (3, 2, "VALID", 9, 5, 6),
    (3, 1, "SAME", 32, 3, 16),
    (3, 1, "SAME", 32, 16, 16),
    (3, 1, "SAME", 16, 64, 64),
    (3, 2, "VALID", 33, 16, 32),
    (3, 2, "SAME", 16, 16, 32),
    (3, 2, "VALID", 17, 64, 128),
    (7, 2, "VALID", 37, 3, 64),
)
TOLERANCE = 1e-4


def check(shape, runs: int) -> dict:
    import numpy as np
    import tensorflow as tf

    k, stride, padding, size, cin, cout = shape
    worst, wrong = [0.0, 0.0, 0.0], 0
    for run in range(runs):
        rng = np.random.default_rng(run)
        x, w = rng.normal(size=(4, size, size, cin)), rng.normal(size=(k, k, cin, cout))
        got = {}
        for dtype in ("float32", "float64"):
            xt, wt = tf.constant(x, dtype), tf.constant(w, dtype)
            with tf.GradientTape() as tape:
                tape.watch([xt, wt])
                y = tf.nn.conv2d(xt, wt, stride, padding)
                loss = tf.reduce_sum(y * y)
            got[dtype] = [np.asarray(t, "float64") for t in (y, *tape.gradient(loss, [xt, wt]))]
        errors = [float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(got["float32"], got["float64"])]
        worst = [max(a, b) for a, b in zip(worst, errors)]
        wrong += any(e > TOLERANCE for e in errors)
    return {
        "shape": f"{k}x{k} stride {stride} {padding.lower()}, {size} px, {cin}->{cout}",
        "runs": runs,
        "wrong_runs": wrong,
        "worst_error": dict(zip(("output", "d_input", "d_kernel"), worst)),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10, help="random inputs per shape (default 10)")
    p.add_argument("--shapes", type=int, help="check only the first N shapes (tests)")
    p.add_argument("--json", type=pathlib.Path, help="also write the results here")
    args = p.parse_args(argv)
    check_counts(args, ("runs", "shapes"))
    from benchmarks.model_throughput import describe_cpu
    from trainers.core.files import write_json_atomic
    from trainers.core.hardware import cpu_kernels

    machine, kernels = describe_cpu(), cpu_kernels()
    print(f"float32 convolution gradients against float64, {kernels} kernels, {machine}", flush=True)
    rows = []
    for shape in SHAPES[: args.shapes]:
        row = check(shape, args.runs)
        rows.append(row)
        e = row["worst_error"]
        print(
            f"{row['shape']:>36s}: wrong in {row['wrong_runs']}/{row['runs']}; worst error output {e['output']:.1e}, "
            f"d input {e['d_input']:.1e}, d kernel {e['d_kernel']:.1e}",
            flush=True,
        )
    results = {"machine": machine, "kernels": kernels, "tolerance": TOLERANCE, "rows": rows}
    if args.json:
        write_json_atomic(args.json, results)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
