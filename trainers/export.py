"""Export a trained network as a SavedModel, a TFLite, ONNX or OpenVINO model, and
check in its own runtime that it gives the Keras model's answers.

    python trainers/export.py saved_models/resnet20-cifar10-<timestamp> --format all
    python trainers/export.py RUN_DIR --format tflite-int8 --int8-io int8 --check-samples 500
    python trainers/export.py RUN_DIR/best.keras --format savedmodel --output exported/
    python trainers/export.py weights:resnet20/cifar10 --format tflite    # weights shipped with the package
    python trainers/export.py timm:resnet18.a1_in1k --format tflite --output r18-imagenet/   # published weights

Formats:
  savedmodel      TensorFlow SavedModel; serving_default takes uint8 images (any batch size) and returns
                  class probabilities and the top class's name; a class_names signature lists the classes.
  tflite          float32 weights and arithmetic.
  tflite-fp16     float16 weights, float32 arithmetic.
  tflite-dynamic  int8 weights, dynamic-range quantization.
  tflite-int8     full integer: int8 weights and activations, uint8 (default) or int8 input and output,
                  calibrated on a sample of the training split of the run's dataset.
  tflite-float-input  float32 weights and float32 pixels in [0, 255] in (no uint8 cast inside): for a
                  phone's GPU delegate, which refuses the cast.
  onnx            ONNX (Keras' exporter, tf2onnx), float32; run in ONNX Runtime. Class names in its metadata.
  onnx-int8       ONNX, int8 by ONNX Runtime's static quantization (QDQ), calibrated as tflite-int8.
  openvino        OpenVINO IR (openvino/model.xml + model.bin), float32. Class names in its runtime info.
  all             every format above whose packages are installed (onnx*: tf2onnx, onnx, onnxruntime;
                  openvino: openvino; pip install -e '.[export]'), a note naming the ones left out.

Every TFLite model takes raw RGB pixels (uint8; int8 = pixel - 128 for --int8-io int8) of one image and returns
probabilities; normalization lives inside. Each has a <name>.labels.txt beside it with the class names. The ONNX
and OpenVINO models take uint8 images (N, H, W, 3), any batch size, named "images", and return "probabilities".
The export directory (default RUN_DIR/export/) gets report.json: per format, file size, maximum absolute
difference of probabilities and top-1 agreement with the Keras model, top-1 accuracy where labels are known, and
mean latency per image on this CPU in the format's runtime (LiteRT's interpreter, ONNX Runtime, OpenVINO).
"""

from __future__ import annotations

import argparse
import sys

from trainers.core.errors import run_main
from trainers.core.exporting import FORMATS, available_formats, export


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "model",
        help="a run directory (uses its model.keras), a .keras file inside a run directory, "
        "weights:ARCH/NAME for weights shipped with the package (resnet_keras.list_weights()), or published "
        "ImageNet weights as SOURCE:NAME[=PATH] (timm:resnet50d.ra2_in1k, torchvision:resnet34, ...; "
        "the 1000 class names travel into the export)",
    )
    p.add_argument("--format", required=True, choices=(*FORMATS, "all"), help="what to export")
    p.add_argument(
        "--which", choices=("final", "best"), default="final", help="in a run directory: model.keras or best.keras"
    )
    p.add_argument("--output", help="export directory (default: RUN_DIR/export)")
    p.add_argument(
        "--check-samples",
        type=int,
        default=1000,
        help="evaluation images to check each export against the Keras model (default 1000; 0 skips)",
    )
    p.add_argument(
        "--calibration-samples",
        type=int,
        default=200,
        help="training images to calibrate tflite-int8 and onnx-int8 (default 200)",
    )
    p.add_argument(
        "--int8-io",
        choices=("uint8", "int8"),
        default="uint8",
        help="tflite-int8 input and output type (default uint8)",
    )
    p.add_argument("--latency-samples", type=int, default=100, help="images timed one by one per format (default 100)")
    p.add_argument("--data-dir", help="TFDS data dir (default: the run's, $TFDS_DATA_DIR, ~/tensorflow_datasets)")
    return p


def all_formats() -> list[str]:
    """Every format whose packages are installed; a note for each left out."""
    formats, notes = available_formats()
    for note in notes:
        print(f"note: --format all leaves one out: {note}", file=sys.stderr)
    return formats


def main(argv=None):
    args = build_parser().parse_args(argv)
    return export(
        args.model,
        formats=all_formats() if args.format == "all" else [args.format],
        which=args.which,
        output=args.output,
        check_samples=args.check_samples,
        calibration_samples=args.calibration_samples,
        int8_io=args.int8_io,
        latency_samples=args.latency_samples,
        data_dir=args.data_dir,
    )


if __name__ == "__main__":
    run_main(main)
