"""Exports for runtimes other than TensorFlow's: ONNX (run by ONNX Runtime)
and OpenVINO, behind ``export.py --format onnx|onnx-int8|openvino``.

Both are made by Keras' own exporter (``model.export(path, format="onnx")``,
which converts the model's traced function with tf2onnx, and
``format="openvino"``, which hands it to ``openvino.convert_model``): it is the
path Keras maintains and tests for its own models. What is exported is the
serving model of :func:`serving_model`, the project's contract for every
export: raw RGB pixels in (uint8, any batch size), class probabilities out.
The class names travel inside the file: ONNX metadata (``class_names``, a JSON
list), OpenVINO runtime info (``class_names``, the same JSON list). The int8
ONNX model is quantized by ONNX Runtime's own post-training quantizer
(static, QDQ, weights int8 per channel, activations uint8) calibrated on the
same training images as the full-integer TFLite model.

The packages are optional (``pip install -e .[export]``); a format whose
package is missing is refused in one line naming it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib

import numpy as np

from trainers.core.errors import UserError

# What each format needs, by import name and by the name pip installs it under.
PACKAGES = {
    "onnx": (("tf2onnx", "tf2onnx"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime")),
    "onnx-int8": (("tf2onnx", "tf2onnx"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime")),
    "openvino": (("openvino", "openvino"),),
}
CLASS_NAMES_KEY = "class_names"
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"


def require(fmt: str) -> None:
    """One line naming the packages ``fmt`` needs and lacks, before any work is done."""
    missing = [pip for module, pip in PACKAGES.get(fmt, ()) if importlib.util.find_spec(module) is None]
    if missing:
        raise UserError(
            f"--format {fmt} needs the package{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
            f"pip install {' '.join(missing)} (or pip install -e '.[export]')"
        )


def serving_model(model):
    """``model`` wrapped as every export takes it: uint8 images (N, H, W, 3)
    named ``images`` in, float32 probabilities named ``probabilities`` out."""
    import keras

    height, width, channels = model.input_shape[1:]
    images = keras.Input((height, width, channels), dtype="uint8", name=INPUT_NAME)
    logits = model(keras.ops.cast(images, "float32"))
    probabilities = keras.layers.Activation("softmax", dtype="float32", name=OUTPUT_NAME)(logits)
    serving = keras.Model(images, probabilities, name=f"{model.name}_serving")
    serving(np.zeros((1, height, width, channels), np.uint8))  # Keras exports only a model that has been called
    return serving


def _threads() -> int:
    return os.cpu_count() or 1


# --------------------------------------------------------------------- ONNX
def write_onnx(model, class_names, path: pathlib.Path) -> None:
    """The float32 ONNX model of ``model`` at ``path``, its output renamed
    ``probabilities`` and the class names in its metadata."""
    import onnx

    serving_model(model).export(str(path), format="onnx", verbose=False)
    proto = onnx.load(str(path))
    _name_output(proto)
    _set_class_names(proto, class_names)
    onnx.save(proto, str(path))


def _name_output(proto) -> None:
    """tf2onnx names the output after the traced graph's tensor (``Identity:0``); give it the contract's name."""
    old = proto.graph.output[0].name
    if old == OUTPUT_NAME:
        return
    for node in proto.graph.node:
        node.output[:] = [OUTPUT_NAME if name == old else name for name in node.output]
    proto.graph.output[0].name = OUTPUT_NAME


def _set_class_names(proto, class_names) -> None:
    kept = [p for p in proto.metadata_props if p.key != CLASS_NAMES_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = CLASS_NAMES_KEY, json.dumps(list(class_names))


def quantize_onnx(float_path: pathlib.Path, calibration: np.ndarray, path: pathlib.Path) -> None:
    """The int8 ONNX model of the float one at ``path``: ONNX Runtime's static
    post-training quantization (QDQ; weights int8 per output channel, as
    ResNet's convolutions differ channel by channel; activations uint8, as the
    quantizer advises for x86 CPUs), calibrated on ``calibration`` (uint8
    images, the evaluation view of training images) by their min/max.

    Weights use 7 of their 8 bits (``reduce_range``): a CPU without VNNI
    (AVX2, AVX-512 without VNNI) multiplies uint8 by int8 with an instruction
    that adds pairs of products into int16 and saturates, and full-range
    weights overflow it. Both ONNX Runtime and OpenVINO run the model so: on
    such a CPU full-range weights cost the shipped ResNet-20 over a point of
    CIFAR-10 accuracy, 7-bit ones a fraction of one (docs/export.md)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.images = iter(calibration)

        def get_next(self):
            image = next(self.images, None)
            return None if image is None else {INPUT_NAME: image[None].astype(np.uint8)}

    prepared = path.with_name(path.name + ".prepared.onnx")
    try:
        # Shape inference and graph optimization first, as ONNX Runtime's quantization guide asks. ONNX's own
        # shape inference knows every shape of a ResNet; the symbolic one (for dynamic shapes) would need sympy.
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,
        )
    finally:
        prepared.unlink(missing_ok=True)
    proto = onnx.load(str(path))
    _set_class_names(proto, json.loads(onnx_class_names(onnx.load(str(float_path)))))
    onnx.save(proto, str(path))


def onnx_class_names(proto) -> str:
    for prop in proto.metadata_props:
        if prop.key == CLASS_NAMES_KEY:
            return prop.value
    raise UserError("the ONNX model carries no class names (no class_names metadata); export it with export.py")


def onnx_runner(path: pathlib.Path):
    """(run: uint8 images (N, H, W, 3) -> probabilities (N, C), class names,
    input size) of an ONNX model, in ONNX Runtime on the CPU."""
    import onnx
    import onnxruntime as ort

    try:
        names = json.loads(onnx_class_names(onnx.load(str(path), load_external_data=False)))
        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
    except Exception as error:
        raise UserError(f"{path} is not a valid ONNX model ({type(error).__name__}: {error})") from None
    inp = session.get_inputs()[0]
    if inp.type != "tensor(uint8)":
        raise UserError(f"{path} takes {inp.type}, not uint8 images; export it with export.py")

    def run(images):
        return session.run(None, {inp.name: np.asarray(images, np.uint8)})[0]

    return run, names, int(inp.shape[1])


# ----------------------------------------------------------------- OpenVINO
OPENVINO_FILE = "model.xml"  # and model.bin beside it, in the format's folder


def write_openvino(model, class_names, folder: pathlib.Path) -> None:
    """The float32 OpenVINO model of ``model`` in ``folder`` (model.xml and
    model.bin), the class names in its runtime info."""
    import openvino as ov

    folder.mkdir(parents=True)
    raw = folder / "keras.xml"
    serving_model(model).export(str(raw), format="openvino", verbose=False)
    converted = ov.Core().read_model(str(raw))
    converted.set_rt_info(json.dumps(list(class_names)), [CLASS_NAMES_KEY])
    # compress_to_fp16=False: the float32 export keeps float32 weights (save_model's default halves them).
    ov.save_model(converted, str(folder / OPENVINO_FILE), compress_to_fp16=False)
    for leftover in (raw, raw.with_suffix(".bin")):
        leftover.unlink(missing_ok=True)


def openvino_runner(path: pathlib.Path, precision: str = "f32", onnx: bool | None = None):
    """(run: uint8 images (N, H, W, 3) -> probabilities (N, C), class names,
    input size) of an OpenVINO model (its folder or its .xml), or of an ONNX
    model compiled by OpenVINO (the int8 one: OpenVINO runs its QDQ pairs as
    int8 arithmetic), for the CPU in ``precision``: "f32", or "bf16"
    (OpenVINO's own default on a CPU with bfloat16 arithmetic, so it is asked
    for by name: a float32 export is checked and served in float32 unless
    told). ``onnx``: whether ``path`` is an ONNX file (default: by its suffix)."""
    import openvino as ov

    xml = path / OPENVINO_FILE if path.is_dir() else path
    try:
        core = ov.Core()
        read = core.read_model(str(xml))
        is_onnx = xml.suffix == ".onnx" if onnx is None else onnx
        if is_onnx:
            import onnx as onnx_lib

            names = json.loads(onnx_class_names(onnx_lib.load(str(xml), load_external_data=False)))
        elif not read.has_rt_info([CLASS_NAMES_KEY]):
            raise UserError(f"{xml} carries no class names (no class_names runtime info); export it with export.py")
        else:
            names = json.loads(read.get_rt_info([CLASS_NAMES_KEY]).astype(str))
        settings = {"INFERENCE_NUM_THREADS": _threads(), "INFERENCE_PRECISION_HINT": precision}
        compiled = core.compile_model(read, "CPU", settings)
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"{xml} is not a valid OpenVINO model ({type(error).__name__}: {error})") from None
    request = compiled.create_infer_request()
    size = read.inputs[0].get_partial_shape()[1].get_length()

    def run(images):
        return np.array(request.infer({0: np.asarray(images, np.uint8)})[compiled.outputs[0]])

    return run, names, int(size)


def runtime_version(fmt: str) -> str:
    """The runtime a format was checked in, with its version, for the report."""
    if fmt.startswith("onnx"):
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    import openvino

    return f"openvino {openvino.get_version()}"


def is_runtime_model(path: pathlib.Path) -> bool:
    """Whether ``path`` is an ONNX file or an OpenVINO model (a folder with model.xml, or the .xml)."""
    return path.suffix == ".onnx" or path.suffix == ".xml" or (path.is_dir() and (path / OPENVINO_FILE).exists())


def runtime_runner(path: pathlib.Path, fmt: str | None = None):
    """:func:`onnx_runner` or :func:`openvino_runner` by ``fmt`` or else the
    file's kind, its package required first."""
    fmt = "onnx" if (fmt or "").startswith("onnx") or (fmt is None and path.suffix == ".onnx") else "openvino"
    for module, pip in PACKAGES[fmt]:
        if module != "tf2onnx" and importlib.util.find_spec(module) is None:  # converting needs tf2onnx; running not
            kind = "an ONNX" if fmt == "onnx" else "an OpenVINO"
            raise UserError(f"{path} is {kind} model; running it needs the package {pip}: pip install {pip}")
    return onnx_runner(path) if fmt == "onnx" else openvino_runner(path)
