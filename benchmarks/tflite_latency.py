"""Latency per image of each TFLite export format in the LiteRT interpreter,
alternated over rounds in one process.

    python benchmarks/tflite_latency.py --run saved_models/RUN_DIR --data-dir ../shared/tensorflow_datasets
    python benchmarks/tflite_latency.py --arch resnet20            # an untrained network, synthetic calibration

Each format is converted the way ``trainers/export.py`` converts it (builtin
ops only; full int8 calibrated on training images) and run one image at a time
(batch 1, uint8 pixels in), with 1 thread and with every core. A round times
--images invocations of each (format, threads) in turn, the order rotating
between rounds; the figure is the median over rounds of each round's mean
milliseconds per image, with [min, max] over rounds.
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

import numpy as np

from benchmarks.model_throughput import describe_cpu
from trainers.core import exporting
from trainers.core.files import write_json_atomic
from trainers.core.sources import (
    float32_clone,
    load_trained,
)

TFLITE_FORMATS = ("tflite", "tflite-fp16", "tflite-dynamic", "tflite-int8")


def _runner(content: bytes, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]

    def run(image):
        interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
        interpreter.invoke()

    return run


def _model_and_images(args):
    import resnet_keras
    from trainers.core import data as data_lib

    if args.run:
        run = pathlib.Path(args.run)
        trained = load_trained(run)
        config, model = trained.config, float32_clone(trained.model)
        size = model.input_shape[1]
        calibration = exporting.calibration_images(config, size, args.calibration, args.data_dir)
        images, _, source = exporting.check_images(config, size, args.images, args.data_dir)
        return model, calibration.astype(np.float32), images, f"{run.name} ({source})"
    model = resnet_keras.get_model(args.arch, num_classes=10, seed=0)
    size = model.input_shape[1]
    images, _ = data_lib.synthetic_arrays(args.images + args.calibration, size, 10, seed=0)
    return model, images[args.images :].astype(np.float32), images[: args.images], f"untrained {args.arch}"


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="a run directory of fit.py (its model.keras)")
    p.add_argument("--arch", default="resnet20", help="without --run: an untrained network of this name")
    p.add_argument("--data-dir", help="TFDS data dir of the run's dataset (for int8 calibration and the images)")
    p.add_argument("--formats", nargs="+", choices=TFLITE_FORMATS, default=list(TFLITE_FORMATS))
    p.add_argument("--threads", nargs="+", type=int, default=[1, os.cpu_count() or 1])
    p.add_argument("--images", type=int, default=200, help="images timed per variant per round")
    p.add_argument("--calibration", type=int, default=200, help="int8 calibration images")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    model, calibration, images, source = _model_and_images(args)
    machine = describe_cpu()
    print(f"{source}; {machine}", flush=True)
    runners, sizes = {}, {}
    for fmt in args.formats:
        content = exporting.convert_tflite(model, fmt, calibration=calibration if fmt == "tflite-int8" else None)
        sizes[fmt] = len(content)
        for threads in args.threads:
            runners[f"{fmt}|{threads}"] = _runner(content, threads)
    for run in runners.values():  # warm-up
        for image in images[:5]:
            run(image)
    keys = list(runners)
    per_round = {k: [] for k in keys}
    for r in range(args.rounds):
        shift = r % len(keys)
        for key in keys[shift:] + keys[:shift]:
            start = time.perf_counter()
            for image in images:
                runners[key](image)
            per_round[key].append(1000 * (time.perf_counter() - start) / len(images))
    results = {"source": source, "machine": machine, "sizes_bytes": sizes, "ms_per_image": {}}
    print(f"{'format':16s} {'threads':>7s} {'MB':>6s} {'ms/image median [min, max]':>28s}")
    for key in keys:
        fmt, threads = key.split("|")
        v = per_round[key]
        results["ms_per_image"][key] = {"median": statistics.median(v), "min": min(v), "max": max(v), "rounds": v}
        print(
            f"{fmt:16s} {threads:>7s} {sizes[fmt] / 1e6:6.2f} {statistics.median(v):12.3f} "
            f"[{min(v):.3f}, {max(v):.3f}]",
            flush=True,
        )
    if args.json:
        write_json_atomic(args.json, results)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
