"""TensorFlow's oneDNN kernels against its Eigen kernels, per network.

TensorFlow decides at import, once per process, whether its CPU convolutions,
matmuls and batch norms run on oneDNN or on Eigen (``TF_ENABLE_ONEDNN_OPTS``).
Left unset, it turns oneDNN on only on CPUs with AVX-512 VNNI, AVX-512 BF16 or
AMX; an AVX2-only CPU (an AMD EPYC of the Zen 3 generation, say) gets Eigen.
This benchmark measures what that choice costs: every round starts one worker
process per setting (the order alternating from round to round), each worker
builds the same networks, times ``--steps`` compiled training steps of each on
one constant batch after ``--warmup`` steps (the median step), and, with
``--modes train inference``, inference steps too. The ratio oneDNN / Eigen is
taken per round and reported as median [min, max] over rounds.

    python benchmarks/onednn.py                       # resnet18 at 128 px, resnet20 at 32 px
    python benchmarks/onednn.py --arch resnet50 --image-size 128 --batch-size 64 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

from benchmarks import check_counts

SETTINGS = {"onednn": "1", "eigen": "0"}
# (arch, image size, batch size) measured by default: an ImageNet network at the
# Imagenette size and a CIFAR network at its own.
DEFAULT_CASES = (("resnet18", 128, 64), ("resnet20", 32, 128))


def _worker(cases, steps: int, warmup: int, modes) -> dict:
    """Runs in a process whose TF_ENABLE_ONEDNN_OPTS was set before TensorFlow was imported."""
    import time

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    import resnet_keras
    from trainers.core.hardware import cpu_kernels

    out = {"onednn_enabled": cpu_kernels() == "oneDNN", "cases": {}}
    rng = np.random.default_rng(0)
    for arch, size, batch in cases:
        model = resnet_keras.get_model(arch, num_classes=10, input_shape=(size, size, 3))
        model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        x = (255 * rng.random((batch, size, size, 3))).astype("float32")
        y = rng.integers(0, 10, batch)
        result = {}
        for mode in modes:
            step = (lambda: model.train_on_batch(x, y)) if mode == "train" else (lambda: model.predict_on_batch(x))
            for _ in range(warmup):
                step()
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            result[mode] = batch / statistics.median(times)
        out["cases"][f"{arch}@{size}px/b{batch}"] = result
    return out


def _spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", nargs="+", help="networks (default resnet18 at 128 px, resnet20 at 32 px)")
    p.add_argument("--image-size", type=int, help="one size for every --arch")
    p.add_argument("--batch-size", type=int, help="one batch size for every --arch")
    p.add_argument("--modes", nargs="+", choices=["train", "inference"], default=["train"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=6, help="timed steps per network and mode (the median is kept)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", type=pathlib.Path, help="also write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    check_counts(args, ("rounds", "steps", "image_size", "batch_size"))
    check_counts(args, ("warmup",), minimum=0)
    if args.arch:
        if not args.image_size or not args.batch_size:
            raise SystemExit("error: --arch needs --image-size and --batch-size")
        cases = [(arch, args.image_size, args.batch_size) for arch in args.arch]
    else:
        cases = list(DEFAULT_CASES)
    if args.worker:
        print(json.dumps(_worker(cases, args.steps, args.warmup, args.modes)))
        return {}

    from benchmarks.model_throughput import describe_cpu
    from trainers.core.files import write_json_atomic

    machine = describe_cpu()
    print(f"oneDNN against Eigen, {machine}; {args.rounds} rounds, median of {args.steps} steps", flush=True)
    forwarded = ["--modes", *args.modes, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.arch:
        forwarded += ["--arch", *args.arch, "--image-size", str(args.image_size), "--batch-size", str(args.batch_size)]
    speeds = {name: [] for name in SETTINGS}  # name -> one worker result per round
    for r in range(args.rounds):
        order = list(SETTINGS) if r % 2 == 0 else list(SETTINGS)[::-1]
        for name in order:
            env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": SETTINGS[name], "TF_CPP_MIN_LOG_LEVEL": "2"}
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", name, *forwarded], env=env, capture_output=True, text=True
            )
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise SystemExit(f"error: the {name} worker failed (exit {proc.returncode}): {tail}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            if result["onednn_enabled"] != (name == "onednn"):
                raise SystemExit(f"error: TF_ENABLE_ONEDNN_OPTS={SETTINGS[name]} did not select {name} in the worker")
            speeds[name].append(result["cases"])
            line = ", ".join(
                f"{case} {mode} {v:.1f}" for case, modes in result["cases"].items() for mode, v in modes.items()
            )
            print(f"round {r + 1} {name}: {line} images/s", flush=True)
    rows = []
    for case in speeds["onednn"][0]:
        for mode in args.modes:
            on = [s[case][mode] for s in speeds["onednn"]]
            off = [s[case][mode] for s in speeds["eigen"]]
            ratio = _spread([a / b for a, b in zip(on, off)])
            rows.append({"case": case, "mode": mode, "onednn": _spread(on), "eigen": _spread(off), "ratio": ratio})
            print(
                f"{case} {mode}: oneDNN {statistics.median(on):.1f}, Eigen {statistics.median(off):.1f} images/s; "
                f"oneDNN/Eigen {ratio['median']:.2f} [{ratio['min']:.2f}, {ratio['max']:.2f}]",
                flush=True,
            )
    results = {"machine": machine, "rounds": args.rounds, "steps": args.steps, "rows": rows}
    if args.json:
        write_json_atomic(args.json, results)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
