"""ONNX, OpenVINO and the float-input TFLite model (issue 41): each exported
from a shipped network, run in its own runtime, checked against Keras, its
class names read back; predict.py runs them; a missing package or a broken
file is refused in one line."""

import importlib.util
import json

import numpy as np
import pytest
import tensorflow as tf
from _realdata import DATA_DIR, prepared

from trainers import export, predict
from trainers.core import exporting, runtimes
from trainers.core.errors import UserError

pytest.importorskip("onnxruntime", reason="the export extra (pip install -e '.[export]') is not installed")
pytest.importorskip("openvino", reason="the export extra (pip install -e '.[export]') is not installed")

NEW = ["onnx", "onnx-int8", "openvino", "tflite-float-input"]
SHIPPED = "weights:resnet20/cifar10"
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


REAL = prepared("cifar10")  # onnx-int8 calibrates on training images: only with the dataset


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The shipped ResNet-20 in the new formats, checked on 64 images (the CIFAR-10 test split where
    TFDS_DATA_DIR has it, synthetic images otherwise)."""
    out = tmp_path_factory.mktemp("runtimes") / "export"
    rows = {}
    for fmt in NEW if REAL else [f for f in NEW if f not in exporting.CALIBRATED]:
        args = [SHIPPED, "--format", fmt, "--output", str(out), "--check-samples", "64", "--latency-samples", "3"]
        args += ["--calibration-samples", "32"] + (["--data-dir", DATA_DIR] if REAL else [])
        report = export.main(args)
        rows.update({r["format"]: r for r in report["formats"]})
    return out, rows


def test_float_exports_give_the_keras_probabilities(exported):
    out, rows = exported
    for fmt in ("onnx", "openvino", "tflite-float-input"):
        assert rows[fmt]["max_abs_diff"] < 1e-4, (fmt, rows[fmt])
        assert rows[fmt]["top1_agreement"] == 1.0
    assert rows["onnx"]["runtime"].startswith("onnxruntime ") and rows["openvino"]["runtime"].startswith("openvino ")
    report = json.loads((out / "report.json").read_text())  # every format's row kept, strict JSON
    assert {r["format"] for r in report["formats"]} == {"keras", *rows}


@pytest.mark.skipif(not REAL, reason=f"no prepared cifar10 in TFDS_DATA_DIR={DATA_DIR!r} to calibrate onnx-int8 on")
def test_the_int8_onnx_model_is_calibrated_and_checked(exported):
    import onnx

    out, rows = exported
    # Its rounding moves probabilities, rarely the answer; QDQ pairs around every convolution.
    assert rows["onnx-int8"]["top1_agreement"] >= 0.9 and rows["onnx-int8"]["top1_accuracy"] is not None
    assert rows["onnx-int8"]["size_bytes"] < 0.5 * rows["onnx"]["size_bytes"]
    # 7-bit weights: full-range ones overflow the int16 sums of a CPU without VNNI and moved one of these 64
    # images' probabilities by 0.89 in OpenVINO on an AVX2 CPU (0.23 with 7 bits).
    assert rows["onnx-int8"]["max_abs_diff"] < 0.5
    # OpenVINO runs the same file with its own int8 kernels: checked too, a little apart from ONNX Runtime.
    in_openvino = rows["onnx-int8"]["in_openvino"]
    assert in_openvino["runtime"].startswith("openvino ") and in_openvino["top1_agreement"] >= 0.9
    assert 0 < in_openvino["max_abs_diff"] < 0.5 and in_openvino["top1_accuracy"] is not None
    ops = {node.op_type for node in onnx.load(str(out / "model_int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert json.loads(runtimes.onnx_class_names(onnx.load(str(out / "model_int8.onnx")))) == CIFAR10


def test_class_names_travel_inside_each_file(exported):
    import onnx
    import openvino as ov

    out, _ = exported
    assert json.loads(runtimes.onnx_class_names(onnx.load(str(out / "model_float32.onnx")))) == CIFAR10
    xml = ov.Core().read_model(str(out / "openvino" / "model.xml"))
    assert json.loads(xml.get_rt_info(["class_names"]).astype(str)) == CIFAR10
    session_input = runtimes.onnx_runner(out / "model_float32.onnx")
    assert session_input[1] == CIFAR10 and session_input[2] == 32


def test_the_float_input_tflite_model_takes_float_pixels(exported):
    from ai_edge_litert.interpreter import Interpreter

    out, rows = exported
    details = Interpreter(model_path=str(out / "model_float_input.tflite")).get_input_details()[0]
    assert details["dtype"] == np.float32 and list(details["shape"]) == [1, 32, 32, 3]
    assert rows["tflite-float-input"]["input_type"] == "float32"
    assert "CAST" not in rows["tflite-float-input"]["ops"]  # no integer cast inside: what GPU delegates refuse


def test_predict_runs_every_new_format_to_the_same_answer(exported, tmp_path, capsys):
    out, _ = exported
    image = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    photo = tmp_path / "photo.png"
    tf.io.write_file(str(photo), tf.io.encode_png(image))
    tops = {}
    models = ["model_float32.onnx", "openvino", "openvino/model.xml", "model_float_input.tflite"]
    for model in models:
        tops[model] = predict.main(["--model", str(out / model), str(photo)])[0]["top"]
    reference = predict.main(["--model", SHIPPED, str(photo)])[0]["top"]
    for model, top in tops.items():
        assert [name for name, _ in top] == [name for name, _ in reference], model
        np.testing.assert_allclose([p for _, p in top], [p for _, p in reference], atol=1e-4)
    with pytest.raises(UserError, match="is an ONNX model, which keeps only the forward pass"):
        predict.main(["--model", str(out / "model_float32.onnx"), "--explain", str(photo)])
    with pytest.raises(UserError, match="is an OpenVINO model, which keeps only the forward pass"):
        predict.main(["--model", str(out / "openvino"), "--explain", str(photo)])


def test_broken_files_are_refused_in_one_line(exported, tmp_path):
    out, _ = exported
    broken = tmp_path / "broken.onnx"
    broken.write_bytes((out / "model_float32.onnx").read_bytes()[:5000])
    with pytest.raises(UserError, match="is not a valid ONNX model"):
        runtimes.runtime_runner(broken)
    folder = tmp_path / "ov"
    folder.mkdir()
    (folder / "model.xml").write_text("<net>")
    with pytest.raises(UserError, match="is not a valid OpenVINO model"):
        runtimes.runtime_runner(folder)


def test_a_missing_package_is_named_before_anything_is_written(monkeypatch, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(UserError, match=r"--format openvino needs the package openvino: pip install openvino"):
        export.main([SHIPPED, "--format", "openvino", "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    kept, notes = exporting.available_formats()
    assert "openvino" not in kept and "onnx" in kept and "tflite" in kept
    assert len(notes) == 1 and "openvino" in notes[0]
    with pytest.raises(UserError, match="is an OpenVINO model; running it needs the package openvino"):
        runtimes.runtime_runner(tmp_path / "model.xml")


def test_the_printed_table_says_why_a_figure_is_missing():
    rows = [
        {"format": "tflite", "size_bytes": 1_000_000, "latency_ms": None},
        {"format": "onnx", "size_bytes": 2_000_000, "latency_ms": 1.5, "max_abs_diff": 1e-6},
        {"format": "onnx-int8", "size_bytes": 500_000, "latency_ms": None, "max_abs_diff": 0.1},
    ]
    rows[1].update(top1_agreement=1.0, top1_accuracy=None)
    rows[2].update(top1_agreement=0.99, top1_accuracy=0.885)
    rows[2]["in_openvino"] = {
        "runtime": "openvino 1",
        "max_abs_diff": 0.2,
        "top1_agreement": 0.98,
        "top1_accuracy": 0.88,
    }
    lines = exporting.render(rows, "synthetic images").splitlines()
    assert lines[1].split() == [
        "tflite",
        "1.00",
        "MB",
        "not",
        "checked",
        "not",
        "checked",
        "not",
        "checked",
        "not",
        "timed",
    ]
    assert lines[2].split()[-3:] == ["no", "labels", "1.50"]
    assert lines[3].split()[-4:] == ["99.00", "88.50", "not", "timed"]
    # The int8 ONNX model's check in OpenVINO, on a row of its own below it.
    assert lines[4].split() == [
        "onnx-int8",
        "in",
        "OpenVINO",
        "0.50",
        "MB",
        "2.00e-01",
        "98.00",
        "88.00",
        "not",
        "timed",
    ]
    assert len(lines) == 6 and lines[5] == "checked on synthetic images"
