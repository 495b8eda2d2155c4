"""Exports of a trained network: a SavedModel, TFLite models (float32, float16
weights, dynamic-range int8, full integer int8, float32 input), and ONNX and
OpenVINO models (:mod:`trainers.core.runtimes`), each run in its own runtime
and checked against the Keras model's answers (:func:`export`, behind
``trainers/export.py``).

Every export takes raw RGB pixels and returns probabilities; normalization
lives inside. The TFLite models take one image, uint8 (int8 = pixel - 128 for
``int8_io="int8"``), except ``tflite-float-input``: float32 pixels in [0, 255],
no integer cast inside, as a phone's GPU delegate wants. The SavedModel's
serving_default takes uint8 images (any batch size) and returns class
probabilities and the top class's name; the ONNX and OpenVINO models take
uint8 images (any batch size) and carry the class names inside.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import statistics
import sys
import time

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from resnet_keras.folding import fold_batchnorm
from trainers.core import data as data_lib
from trainers.core import runtimes
from trainers.core.errors import UserError
from trainers.core.files import read_json, runs_root, write_json_atomic, write_text_atomic
from trainers.core.sources import float32_clone, load_trained, named_results_dir

FORMATS = (
    "savedmodel",
    "tflite",
    "tflite-fp16",
    "tflite-dynamic",
    "tflite-int8",
    "tflite-float-input",
    "onnx",
    "onnx-int8",
    "openvino",
)
FILENAMES = {
    "savedmodel": "savedmodel",
    "tflite": "model_float32.tflite",
    "tflite-fp16": "model_fp16.tflite",
    "tflite-dynamic": "model_dynamic_int8.tflite",
    "tflite-int8": "model_int8.tflite",
    "tflite-float-input": "model_float_input.tflite",
    "onnx": "model_float32.onnx",
    "onnx-int8": "model_int8.onnx",
    "openvino": "openvino",
}
# Formats that need training images to calibrate their int8 arithmetic.
CALIBRATED = ("tflite-int8", "onnx-int8")


def available_formats() -> tuple[list[str], list[str]]:
    """(formats whose packages are installed, the notes on those left out): what ``--format all`` exports."""
    kept, notes = [], []
    for fmt in FORMATS:
        try:
            runtimes.require(fmt)
            kept.append(fmt)
        except UserError as error:
            notes.append(str(error))
    return kept, notes


def serving_function(model):
    """uint8 images (N, H, W, 3) -> float32 probabilities, as a tf.function."""
    height, width, channels = model.input_shape[1:]

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")])
    def serve(images):
        logits = model(tf.cast(images, tf.float32), training=False)
        return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)

    return serve


# ------------------------------------------------------------------ writers
def write_savedmodel(model, class_names, target: pathlib.Path):
    """A SavedModel of ``model`` at ``target``: serving_default (uint8 images ->
    probabilities and the top class's name) and class_names signatures.

    It serves ``model`` with each BatchNormalization folded into the
    convolution before it (:func:`resnet_keras.fold_batchnorm`): TensorFlow
    serves the unfolded graph through a oneDNN kernel that is many times slower
    at batch 1 (docs/export.md)."""
    model = fold_batchnorm(model)
    module = tf.Module()
    module.model = model
    module.class_names = tf.constant(class_names)
    probabilities = serving_function(model)

    height, width, channels = model.input_shape[1:]

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")])
    def serving_default(images):
        probs = probabilities(images)
        return {"probabilities": probs, "top_class": tf.gather(module.class_names, tf.argmax(probs, axis=-1))}

    @tf.function(input_signature=[])
    def class_names_fn():
        return {"class_names": module.class_names}

    module.serving_default = serving_default
    module.class_names_fn = class_names_fn
    signatures = {"serving_default": serving_default, "class_names": class_names_fn}
    tf.saved_model.save(module, str(target), signatures=signatures)
    (target / "assets").mkdir(exist_ok=True)
    write_text_atomic(target / "assets" / "class_names.txt", "\n".join(class_names) + "\n")


def convert_tflite(model, fmt, calibration=None, int8_io="uint8") -> bytes:
    """TFLite flatbuffer of ``model`` for ``fmt``, builtin ops only (no Flex):
    conversion fails rather than produce a model that needs TensorFlow ops."""
    serve = serving_function(model)
    height, width, channels = model.input_shape[1:]
    if fmt in ("tflite-int8", "tflite-float-input"):
        # Full-integer models quantize at the input: give the converter a float
        # input in [0, 255] so that uint8 input is the raw pixel (scale 1,
        # zero point 0) and int8 input is pixel - 128. The float-input model
        # takes that float input as it is: GPU delegates refuse a uint8 input
        # cast inside the graph.
        @tf.function(input_signature=[tf.TensorSpec([1, height, width, channels], tf.float32, name="images")])
        def fn(images):
            return tf.nn.softmax(tf.cast(model(images, training=False), tf.float32), axis=-1)

    else:
        signature = [tf.TensorSpec([1, height, width, channels], tf.uint8, name="images")]
        fn = tf.function(lambda images: serve(images), input_signature=signature)
    # Weights become constants first: a graph that still reads resource
    # variables cannot be calibrated for full-integer quantization.
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if fmt == "tflite-fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "tflite-dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif fmt == "tflite-int8":
        if calibration is None or len(calibration) == 0:
            raise UserError("tflite-int8 needs calibration images from the training split")
        # Anchor the input range at [0, 255] whatever the sample holds.
        anchors = [np.full((1, height, width, channels), v, "float32") for v in (0.0, 255.0)]

        def representative():
            for image in anchors:
                yield [image]
            for image in calibration:
                yield [image[None].astype("float32")]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8 if int8_io == "uint8" else tf.int8
        converter.inference_output_type = tf.uint8 if int8_io == "uint8" else tf.int8
    try:
        return converter.convert()
    except Exception as error:
        raise UserError(f"{fmt}: conversion with TFLite builtin ops failed: {type(error).__name__}: {error}") from None


# ------------------------------------------------------------------ runners
def tflite_runner(content: bytes):
    """A function image (H, W, 3) uint8 -> probabilities (C,) float32, running
    the flatbuffer in the LiteRT interpreter; and the model's op names."""
    # Imported here: only running a TFLite model needs LiteRT (ai-edge-litert), an optional package.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=os.cpu_count())
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run(image):
        if inp["dtype"] == np.int8:
            x = (image.astype(np.int16) - 128).astype(np.int8)
        else:
            x = image.astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x[None])
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0]
        if out["dtype"] in (np.uint8, np.int8):
            scale, zero_point = out["quantization"]
            y = (y.astype(np.float32) - zero_point) * scale
        return y.astype(np.float32)

    ops = sorted({op["op_name"] for op in interpreter._get_ops_details()})
    return run, ops, inp["dtype"].__name__


def check_images(config, image_size, n, data_dir, seed=0):
    """(uint8 images, labels or None, source) from the evaluation split of the
    run's dataset, or synthetic images when it is absent: what each export is
    checked on."""
    try:
        info = data_lib.describe_run(config, image_size, data_dir)
    except UserError as error:
        print(f"note: {error}; checking on synthetic images instead", file=sys.stderr)
        images, _ = data_lib.synthetic_arrays(n, image_size, len(config["class_names"]), seed=seed, offset=2)
        return images, None, "synthetic images (dataset absent; no labels)"
    images, labels = [], []
    for batch, label in data_lib.eval_pipeline(info, "test", 250).take(-(-n // 250)).as_numpy_iterator():
        images.append(batch)
        labels.append(label)
    images = np.clip(np.round(np.concatenate(images)[:n]), 0, 255).astype(np.uint8)
    return images, np.concatenate(labels)[:n], f"{info.name} {info.test_split} split"


def calibration_images(config, image_size, n, data_dir):
    """``n`` training images of the run's dataset in its evaluation view, to
    calibrate full-integer quantization."""
    info = data_lib.describe_run(config, image_size, data_dir)
    ds = data_lib.raw_dataset(info, "train", config.get("seed", 0)).shuffle(10_000, seed=1).take(n)
    ds = ds.map(lambda image, label: data_lib.eval_view(image, info.style, info.image_size))
    return np.stack(list(ds.as_numpy_iterator()))


def _latency(fn, images, n):
    n = min(n, len(images))
    for image in images[:3]:
        fn(image)
    times = []
    for image in images[:n]:
        start = time.perf_counter()
        fn(image)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.mean(times) if times else None


def _one_by_one(serve):
    """A SavedModel's serving signature called on one image (H, W, 3), as the latency is timed."""
    return lambda image: serve(images=tf.constant(image[None]))


def _size(path: pathlib.Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _install(tmp: pathlib.Path, target: pathlib.Path):
    """Moves a finished export into place; an older export there is removed only
    once the new one is complete."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()


# --------------------------------------------------------------------- main
def export(
    source,
    *,
    formats,
    which: str = "final",
    output=None,
    check_samples: int = 1000,
    calibration_samples: int = 200,
    int8_io: str = "uint8",
    latency_samples: int = 100,
    data_dir: str | None = None,
) -> dict:
    """Exports the trained model ``source`` (a run directory, a .keras file in
    one, or weights:ARCH/NAME: :func:`load_trained`) in each of ``formats``
    (names of :data:`FORMATS`) into ``output`` (default RUN_DIR/export, or
    saved_models/ARCH-NAME-export for shipped weights), checks each against the
    Keras model on ``check_samples`` evaluation images (0: no check), times
    ``latency_samples`` images one by one, and writes and prints the report."""
    if check_samples < 0 or calibration_samples < 1 or latency_samples < 0:
        raise UserError("--check-samples and --latency-samples must be >= 0, --calibration-samples >= 1")
    formats = list(formats)
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise UserError(f"formats {unknown or formats}; expected some of {', '.join(FORMATS)}")
    if int8_io not in ("uint8", "int8"):
        raise UserError(f"--int8-io {int8_io!r}; expected uint8 or int8")
    for fmt in formats:
        runtimes.require(fmt)  # a missing package in one line, before anything is loaded or written
    trained = load_trained(source, which=which)
    if not trained.class_names:
        if trained.run_dir is None:
            raise UserError(
                f"{trained.path.parent} has no config.json, so the model's class names and data are unknown"
            )
        raise UserError(f"{trained.run_dir / 'config.json'} holds no class names; export needs them")
    model, config = float32_clone(trained.model), trained.config
    out_dir = _output_dir(trained, output)

    n = check_samples
    size = model.input_shape[1]
    images, labels, checked_on = check_images(config, size, max(n, 1), data_dir) if n else (None, None, None)
    check = _Check(images[:n] if n else None, labels, latency_samples, out_dir)
    keras_fn = tf.function(lambda x: tf.nn.softmax(model(tf.cast(x, tf.float32), training=False), axis=-1))
    rows = [check.reference("keras", trained.path, keras_fn)]
    calibration = None
    for fmt in formats:
        if fmt in CALIBRATED and calibration is None:
            calibration = calibration_images(config, size, calibration_samples, data_dir)
        calibrate = calibration if fmt in CALIBRATED else None
        rows.append(_export_format(fmt, model, list(trained.class_names), out_dir, check, calibrate, int8_io))

    report = {
        "model": str(trained.path),
        "dataset": config.get("dataset"),
        "synthetic": bool(config.get("synthetic")),
        "check_source": checked_on,
        "check_samples": n,
        "machine": f"{os.cpu_count()} CPUs",
        "formats": rows,
    }
    previous = {}
    if (out_dir / "report.json").exists():
        previous = {r["format"]: r for r in read_json(out_dir / "report.json", "export report").get("formats", [])}
    report["formats"] = list({**previous, **{r["format"]: r for r in rows}}.values())
    write_json_atomic(out_dir / "report.json", report)
    print(render(rows, checked_on))
    print(f"written: {out_dir}")
    return report


def _output_dir(trained, output) -> pathlib.Path:
    """``output``, or the run's export/ folder, or saved_models/ARCH-NAME-export
    for shipped weights, saved_models/SOURCE-NAME-export for published ones
    (never into the package or a download cache); made if absent."""
    if output:
        out_dir = pathlib.Path(output).expanduser().resolve()
    elif trained.kind == "shipped":
        out_dir = runs_root() / (trained.config["shipped"].replace("/", "-") + "-export")
    elif trained.kind == "imagenet":
        named = named_results_dir(trained)
        out_dir = named.with_name(named.name + "-export")
    else:
        out_dir = trained.path.parent / "export"
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--output {out_dir} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


class _Check:
    """The report's row of each format: its file and size, and where images
    were given, its agreement with the Keras model's probabilities (the
    reference), its accuracy where labels are known, and its latency."""

    def __init__(self, images, labels, latency_samples: int, out_dir: pathlib.Path):
        self.images, self.labels, self.latency_samples, self.out_dir = images, labels, latency_samples, out_dir
        self.probabilities = None

    def reference(self, fmt, path, keras_fn) -> dict:
        if self.images is not None:
            self.probabilities = keras_fn(self.images).numpy()
        return self.row(fmt, path, self.probabilities, self.latency(lambda image: keras_fn(image[None])))

    def latency(self, run_one) -> float | None:
        """Mean milliseconds of ``run_one`` on one image, where images were given."""
        return _latency(run_one, self.images, self.latency_samples) if self.images is not None else None

    def row(self, fmt, path, probs, latency, extra=None) -> dict:
        file = str(path.relative_to(self.out_dir)) if path.is_relative_to(self.out_dir) else str(path)
        row = {"format": fmt, "file": file, "size_bytes": _size(path), "latency_ms": latency}
        if probs is not None:
            reference = self.probabilities
            row["max_abs_diff"] = float(np.max(np.abs(probs - reference)))
            row["top1_agreement"] = float(np.mean(probs.argmax(-1) == reference.argmax(-1)))
            row["top1_accuracy"] = None if self.labels is None else float(np.mean(probs.argmax(-1) == self.labels))
        return {**row, **(extra or {})}


def _export_format(fmt, model, class_names, out_dir, check: _Check, calibration, int8_io) -> dict:
    """Writes one format under a temporary name, runs it in its own runtime,
    moves it into place and returns its report row."""
    target = out_dir / FILENAMES[fmt]
    tmp = out_dir / f".{target.name}.tmp-{os.getpid()}"
    images = check.images
    try:
        if fmt == "savedmodel":
            write_savedmodel(model, class_names, tmp)
            serve = tf.saved_model.load(str(tmp)).signatures["serving_default"]
            probs = serve(images=tf.constant(images))["probabilities"].numpy() if images is not None else None
            latency = check.latency(_one_by_one(serve))
            _install(tmp, target)
            return check.row(fmt, target, probs, latency)
        if fmt in runtimes.PACKAGES:
            return _export_runtime(fmt, model, class_names, tmp, target, check, calibration)
        content = convert_tflite(model, fmt, calibration, int8_io)
        run, ops, input_type = tflite_runner(content)
        flex = [op for op in ops if op.startswith("Flex")]
        if flex:
            raise UserError(f"{fmt}: the converted model needs TensorFlow (Flex) ops {flex}")
        tmp.write_bytes(content)
        _install(tmp, target)
        write_text_atomic(target.with_suffix(".labels.txt"), "\n".join(class_names) + "\n")
        probs = np.stack([run(image) for image in images]) if images is not None else None
        return check.row(fmt, target, probs, check.latency(run), {"input_type": input_type, "ops": ops})
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()


def _export_runtime(fmt, model, class_names, tmp, target, check: _Check, calibration) -> dict:
    """An ONNX or OpenVINO export at ``tmp``, run in its runtime, then moved to ``target``."""
    if fmt == "onnx":
        runtimes.write_onnx(model, class_names, tmp)
    elif fmt == "onnx-int8":
        float_tmp = tmp.with_name(tmp.name + ".float.onnx")
        try:
            runtimes.write_onnx(model, class_names, float_tmp)
            pixels = np.clip(np.round(calibration), 0, 255).astype(np.uint8)
            runtimes.quantize_onnx(float_tmp, pixels, tmp)
        finally:
            float_tmp.unlink(missing_ok=True)
    else:
        runtimes.write_openvino(model, class_names, tmp)
    run, names, _ = runtimes.runtime_runner(tmp, fmt)
    if names != list(class_names):
        raise UserError(f"{fmt}: the class names read back from the export differ from the model's")
    probs = None if check.images is None else _batched(run, check.images)
    latency = check.latency(lambda image: run(image[None]))
    extra = {"runtime": runtimes.runtime_version(fmt)}
    if fmt == "onnx-int8":
        extra["in_openvino"] = _int8_in_openvino(tmp, check)
    _install(tmp, target)
    return check.row(fmt, target, probs, latency, extra)


def _batched(run, images, size=100):
    return np.concatenate([run(images[i : i + size]) for i in range(0, len(images), size)])


def _int8_in_openvino(path: pathlib.Path, check: _Check) -> dict:
    """The int8 ONNX model's check in OpenVINO, which runs it with its own int8
    kernels (its answers differ from ONNX Runtime's by their rounding): the
    difference from the Keras model, agreement and accuracy, or why missing."""
    if importlib.util.find_spec("openvino") is None:
        return {"why_missing": "openvino is not installed"}
    if check.images is None:
        return {"why_missing": "no check images (--check-samples 0)"}
    run, _, _ = runtimes.openvino_runner(path, onnx=True)
    row = check.row("onnx-int8", path, _batched(run, check.images), None)
    kept = ("max_abs_diff", "top1_agreement", "top1_accuracy")
    return {"runtime": runtimes.runtime_version("openvino"), **{key: row[key] for key in kept}}


def render(rows, source):
    """The report's rows as a table, and what they were checked on."""
    header = ["format", "size", "max |dp|", "top-1 agree", "top-1 acc", "latency ms/img"]
    lines = []
    # The int8 ONNX model checked in OpenVINO too: a row of its own, below it.
    shown = []
    for r in rows:
        shown.append(r)
        if "max_abs_diff" in (r.get("in_openvino") or {}):
            shown.append({**r, **r["in_openvino"], "format": f"{r['format']} in OpenVINO", "latency_ms": None})
    for r in shown:
        # A missing figure says why: no check images (--check-samples 0), no labels (synthetic), not timed.
        fmt_float = lambda v, f, why: why if v is None else format(v, f)  # noqa: E731
        agreement = None if r.get("top1_agreement") is None else 100 * r["top1_agreement"]
        accuracy = None if r.get("top1_accuracy") is None else 100 * r["top1_accuracy"]
        checked = "max_abs_diff" in r
        lines.append(
            [
                r["format"],
                f"{r['size_bytes'] / 1e6:.2f} MB",
                fmt_float(r.get("max_abs_diff"), ".2e", "not checked"),
                fmt_float(agreement, ".2f", "not checked"),
                fmt_float(accuracy, ".2f", "no labels" if checked else "not checked"),
                fmt_float(r.get("latency_ms"), ".2f", "not timed"),
            ]
        )
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]
    text = "\n".join("  ".join(c.rjust(w) for c, w in zip(x, widths)) for x in [header, *lines])
    return text + (f"\nchecked on {source}" if source else "")
