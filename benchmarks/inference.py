"""Inference speed of every export of ours in its own runtime, against the
PyTorch peer a user would pick instead, on the same CPU (docs/export.md).

    python benchmarks/inference.py --json inference.json                   # both networks, 3 rounds
    python benchmarks/inference.py --network resnet20 --rounds 1 --calls 5 --warmup 2   # a quick look
    python benchmarks/inference.py --no-torch                               # ours alone

Networks, random weights (speed does not depend on their values), float32:
  resnet20  the option-A CIFAR ResNet-20, 32x32, 10 classes; the peer is the
            same network written in PyTorch (benchmarks/peer_torch.py's).
  resnet50  resnet_keras "resnet50" (v1), 224x224, 1000 classes; the peer is
            torchvision.models.resnet50 (v1.5: 6% more multiply-adds).

Ours, each made as trainers/export.py makes it (uint8 pixels in, normalization
and softmax inside): Keras (a tf.function around the model, float32 and
mixed_bfloat16), the SavedModel (TensorFlow's oneDNN kernels, as resnet_keras
sets them, and its Eigen kernels: savedmodel-eigen), LiteRT float32 / fp16 /
int8 (XNNPACK, every core), ONNX Runtime float32 / int8 (static QDQ),
OpenVINO float32, bf16 (the float32 model at OpenVINO's bf16 inference
precision) and int8 (the int8 ONNX model compiled by OpenVINO). Int8 models are calibrated on random images here,
which sets their speed, not their accuracy: the accuracy of each int8 model
is export.py's report on a trained network. The peer, under
torch.inference_mode(): eager float32 (NCHW and channels-last), eager bf16
autocast (channels-last), torch.compile float32 and bf16 (channels-last).
PyTorch is not a dependency: install it in a venv of its own and name it with
--torch-python (default ~/torch-venv/bin/python), as for peer_torch.py.

Every variant runs in a child process of its own (no two share thread pools;
every runtime uses every core). For each round the parent runs each child
once, the order rotating from round to round; a child runs --warmup untimed
calls, then times --calls calls one by one, at batch 1 (latency: median
milliseconds per call) and at --batch (throughput: images per second of the
median call). Reported per variant: the median over rounds, with [min, max];
per round, ours-best / torch-best among the float formats (float32, bf16,
fp16: like with like), as median [min, max] over rounds, for batch-1 latency
(torch's milliseconds / ours) and batch throughput (ours / torch's). Int8
models are listed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]

from benchmarks import check_counts  # (standard library only: the torch children import this file)
from benchmarks.peer_torch import RESULT_PREFIX, _ratio, find_torch, run_child

NETWORKS = {
    "resnet20": {"image_size": 32, "num_classes": 10},
    "resnet50": {"image_size": 224, "num_classes": 1000},
}
# variant -> (side, precision class). Float classes are compared like with like; int8 is listed beside.
VARIANTS = {
    "keras-float32": ("ours", "float"),
    "keras-bf16": ("ours", "float"),
    "savedmodel": ("ours", "float"),
    "savedmodel-eigen": ("ours", "float"),
    "tflite-float32": ("ours", "float"),
    "tflite-fp16": ("ours", "float"),
    "tflite-int8": ("ours", "int8"),
    "onnx-float32": ("ours", "float"),
    "onnx-int8": ("ours", "int8"),
    "openvino-float32": ("ours", "float"),
    "openvino-bf16": ("ours", "float"),
    "openvino-int8": ("ours", "int8"),
    "torch-eager": ("torch", "float"),
    "torch-eager-cl": ("torch", "float"),
    "torch-bf16-cl": ("torch", "float"),
    "torch-compile-cl": ("torch", "float"),
    "torch-compile-bf16-cl": ("torch", "float"),
}
FILES = {
    "tflite-float32": "model_float32.tflite",
    "tflite-fp16": "model_fp16.tflite",
    "tflite-int8": "model_int8.tflite",
    "onnx-float32": "model_float32.onnx",
    "onnx-int8": "model_int8.onnx",
    "openvino-float32": "openvino",
    "openvino-bf16": "openvino",
    "openvino-int8": "model_int8.onnx",
    "savedmodel": "savedmodel",
    "savedmodel-eigen": "savedmodel",
}
# Variants served by TensorFlow's Eigen kernels instead of oneDNN (which
# resnet_keras turns on): TensorFlow reads the switch once, at its import.
EIGEN = ("savedmodel-eigen",)


# --------------------------------------------------------------------------- ours: the models
def prepare(network: str, work: pathlib.Path, variants, calibration_images: int = 32) -> pathlib.Path:
    """Builds our ``network`` with random weights (seed 0) and writes the
    formats that ``variants`` run into ``work/network``; a file already there
    (written whole: temporary name, then rename) is reused."""
    import numpy as np

    folder = work / network
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {FILES[v] for v in variants if v in FILES} | {"model.weights.h5"}
    if all((folder / name).exists() for name in wanted):
        return folder
    import keras

    import resnet_keras
    from trainers.core import exporting, runtimes

    config = NETWORKS[network]
    size, classes = config["image_size"], config["num_classes"]
    keras.config.set_dtype_policy("float32")
    model = resnet_keras.get_model(network, num_classes=classes, input_shape=(size, size, 3), seed=0)
    names = [f"class_{i}" for i in range(classes)]
    calibration = np.random.default_rng(0).integers(0, 256, (calibration_images, size, size, 3), dtype=np.uint8)
    tflite = {"model_float32.tflite": "tflite", "model_fp16.tflite": "tflite-fp16", "model_int8.tflite": "tflite-int8"}
    writers = {
        "model.weights.h5": lambda path: model.save_weights(path),
        "savedmodel": lambda path: exporting.write_savedmodel(model, names, path),
        "model_float32.onnx": lambda path: runtimes.write_onnx(model, names, path),
        "openvino": lambda path: runtimes.write_openvino(model, names, path),
        **{
            name: lambda path, fmt=fmt: path.write_bytes(
                exporting.convert_tflite(model, fmt, calibration.astype("float32"), "uint8")
            )
            for name, fmt in tflite.items()
        },
    }
    # The int8 ONNX model is quantized from the float one: that one first.
    for name in sorted(wanted, key=lambda n: n == "model_int8.onnx"):
        target = folder / name
        if target.exists():
            continue
        tmp = folder / f"tmp-{os.getpid()}-{name}"  # the name's ending kept: Keras wants .weights.h5
        if name == "model_int8.onnx":
            if not (folder / "model_float32.onnx").exists():
                writers["model_float32.onnx"](folder / "model_float32.onnx")
            runtimes.quantize_onnx(folder / "model_float32.onnx", calibration, tmp)
        else:
            writers[name](tmp)
        os.replace(tmp, target)
    return folder


# --------------------------------------------------------------------------- children
def time_calls(call, warmup: int, calls: int) -> list[float]:
    """Seconds of each of ``calls`` timed calls of ``call`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    durations = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        durations.append(time.perf_counter() - start)
    return durations


def _ours_runner(variant: str, folder: pathlib.Path, network: str):
    """A function uint8 images (N, H, W, 3) -> probabilities for one of our variants."""
    import numpy as np

    threads = os.cpu_count() or 1
    # Set here, not inherited: the parent may or may not have imported resnet_keras, which turns oneDNN on.
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0" if variant in EIGEN else "1"
    if variant.startswith("keras"):
        import keras
        import tensorflow as tf

        import resnet_keras

        config = NETWORKS[network]
        size = config["image_size"]
        keras.config.set_dtype_policy("mixed_bfloat16" if variant == "keras-bf16" else "float32")
        model = resnet_keras.get_model(network, num_classes=config["num_classes"], input_shape=(size, size, 3), seed=0)
        model.load_weights(folder / "model.weights.h5")
        forward = tf.function(
            lambda x: tf.nn.softmax(tf.cast(model(tf.cast(x, tf.float32), training=False), "float32"))
        )
        return lambda images: forward(tf.constant(images)).numpy()
    if variant.startswith("savedmodel"):
        import tensorflow as tf

        serve = tf.saved_model.load(str(folder / "savedmodel")).signatures["serving_default"]
        return lambda images: serve(images=tf.constant(images))["probabilities"].numpy()
    if variant.startswith("tflite"):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(folder / FILES[variant]), num_threads=threads)
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        shape = {"batch": None}

        def run(images):
            if shape["batch"] != len(images):  # a batch of N: the graph is resized once, then reused
                interpreter.resize_tensor_input(inp["index"], [len(images), *inp["shape"][1:]])
                interpreter.allocate_tensors()
                shape["batch"] = len(images)
            interpreter.set_tensor(inp["index"], images.astype(inp["dtype"]))
            interpreter.invoke()
            return interpreter.get_tensor(out["index"])

        return run
    if variant.startswith("onnx"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(folder / FILES[variant]), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda images: session.run(None, {name: images})[0]
    if variant.startswith("openvino"):
        import openvino as ov

        core = ov.Core()
        path = folder / FILES[variant]
        read = core.read_model(str(path / "model.xml" if path.is_dir() else path))
        precision = "bf16" if variant == "openvino-bf16" else "f32"
        compiled = core.compile_model(
            read, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision}
        )
        request = compiled.create_infer_request()
        return lambda images: np.array(request.infer({0: images})[compiled.outputs[0]])
    raise SystemExit(f"error: unknown variant {variant!r}")


def _torch_runner(variant: str, network: str, threads: int):
    """A function float32 images (N, 3, H, W) -> probabilities for one torch variant, and its input maker."""
    import torch

    from benchmarks.peer_torch import build_torch_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_torch_model(network).eval()
    channels_last = variant.endswith("-cl")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    bf16 = "bf16" in variant
    if "compile" in variant:
        model = torch.compile(model)

    def run(images):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return torch.softmax(model(images).float(), dim=-1)

    def make(batch, size):
        images = torch.rand(batch, 3, size, size)
        return images.contiguous(memory_format=torch.channels_last) if channels_last else images

    return run, make


def _tf_kernels() -> str | None:
    """TensorFlow's CPU kernels ("oneDNN" or "Eigen") where this child ran TensorFlow, else None."""
    if "tensorflow" not in sys.modules:
        return None
    from trainers.core.hardware import cpu_kernels

    return cpu_kernels()


def child(args) -> dict:
    """Times one variant at batch 1 and at ``--batch``; prints one result line."""
    variant, network = args.child, args.network[0]
    size = NETWORKS[network]["image_size"]
    threads = os.cpu_count() or 1
    if VARIANTS[variant][0] == "torch":
        run, make = _torch_runner(variant, network, threads)
        one, many = make(1, size), make(args.batch, size)
    else:
        import numpy as np

        run = _ours_runner(variant, pathlib.Path(args.work) / network, network)
        rng = np.random.default_rng(1)
        one = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
        many = rng.integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
    start = time.perf_counter()
    latency = time_calls(lambda: run(one), args.warmup, args.calls)
    throughput = time_calls(lambda: run(many), args.warmup, args.calls)
    result = {
        "batch1_ms": 1000 * statistics.median(latency),
        "batch_images_per_s": args.batch / statistics.median(throughput),
        "batch": args.batch,
        "seconds": time.perf_counter() - start,
        "threads": threads,
        "tf_kernels": _tf_kernels(),
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return result


# --------------------------------------------------------------------------- parent
def child_command(variant, network, args, torch_python) -> list[str]:
    python = torch_python if VARIANTS[variant][0] == "torch" else sys.executable
    command = [python, "-m", "benchmarks.inference", "--child", variant, "--network", network]
    command += ["--work", str(args.work), "--batch", str(args.batch), "--calls", str(args.calls)]
    return command + ["--warmup", str(args.warmup)]


def _spread(values) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _best(results: dict, side: str, key: str, lower_is_better: bool):
    """(variant, value) of the best float variant of ``side`` in one round's results."""
    found = [
        (variant, r[key])
        for variant, r in results.items()
        if r is not None and VARIANTS[variant] == (side, "float") and r.get(key)
    ]
    if not found:
        return None, None
    return (min if lower_is_better else max)(found, key=lambda item: item[1])


def run_network(network: str, variants: list[str], args, torch_info) -> dict:
    prepare(network, args.work, variants)
    rounds = []
    for index in range(args.rounds):
        order = variants[index % len(variants) :] + variants[: index % len(variants)]
        results = {}
        for variant in order:
            if VARIANTS[variant][0] == "torch" and torch_info["python"] is None:
                results[variant] = None
                continue
            command = child_command(variant, network, args, torch_info["python"])
            results[variant], _ = run_child(command, f"{network} {variant}", timeout=args.timeout)
            if results[variant]:
                r = results[variant]
                print(
                    f"round {index + 1} {network} {variant:22s} batch 1 {r['batch1_ms']:8.2f} ms   "
                    f"batch {r['batch']} {r['batch_images_per_s']:8.1f} images/s",
                    flush=True,
                )
        rounds.append(results)
    summary = {}
    for variant in variants:
        per = [r.get(variant) for r in rounds]
        summary[variant] = {
            "side": VARIANTS[variant][0],
            "class": VARIANTS[variant][1],
            "batch1_ms": _spread([p["batch1_ms"] if p else None for p in per]),
            "batch_images_per_s": _spread([p["batch_images_per_s"] if p else None for p in per]),
            "why_missing": None
            if any(per)
            else ("torch not found" if VARIANTS[variant][0] == "torch" else "every round failed"),
        }
    latency, throughput, winners = [], [], []
    for results in rounds:
        ours_l, torch_l = _best(results, "ours", "batch1_ms", True)[1], _best(results, "torch", "batch1_ms", True)[1]
        ours_t = _best(results, "ours", "batch_images_per_s", False)[1]
        torch_t = _best(results, "torch", "batch_images_per_s", False)[1]
        latency.append(torch_l / ours_l if ours_l and torch_l else None)
        throughput.append(ours_t / torch_t if ours_t and torch_t else None)
        winners.append(
            {
                side: {
                    "batch1": _best(results, side, "batch1_ms", True)[0],
                    "batch": _best(results, side, "batch_images_per_s", False)[0],
                }
                for side in ("ours", "torch")
            }
        )
    return {
        "variants": summary,
        "ours_best_over_torch_best": {"batch1_latency": _ratio(latency), "batch_throughput": _ratio(throughput)},
        "best_per_round": winners,
        "rounds": rounds,
    }


def _cell(spread, fmt) -> str:
    if spread is None:
        return "missing"
    return f"{format(spread['median'], fmt)} [{format(spread['min'], fmt)}, {format(spread['max'], fmt)}]"


def render(network: str, report: dict, batch: int) -> str:
    lines = [f"{network}: median [min, max] over rounds", ""]
    lines.append(f"| variant | precision | batch 1, ms | batch {batch}, images/s |")
    lines.append("|---|---|---:|---:|")
    for variant, v in report["variants"].items():
        why = f" ({v['why_missing']})" if v["why_missing"] else ""
        lines.append(
            f"| {variant}{why} | {v['class']} | {_cell(v['batch1_ms'], '.2f')} | "
            f"{_cell(v['batch_images_per_s'], '.1f')} |"
        )
    ratios = report["ours_best_over_torch_best"]
    for key, label in (("batch1_latency", "batch-1 latency"), ("batch_throughput", f"batch-{batch} throughput")):
        r = ratios[key]
        value = (
            "missing (a side has no result)" if r is None else f"{r['median']:.2f}x [{r['min']:.2f}, {r['max']:.2f}]"
        )
        lines.append(f"\nours-best / torch-best float, {label}: {value}")
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=20, help="timed calls per batch size and child (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first (default 5)")
    p.add_argument("--batch", type=int, default=32, help="the throughput batch (default 32)")
    p.add_argument("--work", type=pathlib.Path, default=None, help="where the exported models go (default a temp dir)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds a child may take (default 1800)")
    p.add_argument("--torch-python", help="the interpreter with torch (default ~/torch-venv/bin/python)")
    p.add_argument("--no-torch", action="store_true", help="ours alone")
    p.add_argument("--json", type=pathlib.Path, help="write the report here (strict JSON, atomically)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    check_counts(args, ["rounds", "calls", "batch"])
    check_counts(args, ["warmup"], minimum=0)
    if args.child:
        return child(args)
    import tempfile

    from benchmarks.model_throughput import describe_cpu
    from trainers.core.files import write_json_atomic

    temporary = None
    if args.work is None:
        temporary = tempfile.TemporaryDirectory(prefix="inference-")
        args.work = pathlib.Path(temporary.name)
    args.work = args.work.expanduser().resolve()
    torch_info = find_torch(args)
    print(f"CPU: {describe_cpu()}; torch: {torch_info.get('version') or torch_info.get('reason')}", flush=True)
    report = {
        "cpu": describe_cpu(),
        "torch": torch_info,
        "settings": {k: getattr(args, k) for k in ("rounds", "calls", "warmup", "batch")},
        "networks": {},
    }
    try:
        for network in args.network:
            report["networks"][network] = run_network(network, list(args.variants), args, torch_info)
            print(render(network, report["networks"][network], args.batch), flush=True)
    finally:
        if temporary is not None:
            temporary.cleanup()
    if args.json:
        write_json_atomic(args.json, report)
    return report


if __name__ == "__main__":
    main()
