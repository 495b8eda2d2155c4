"""Classify image files with a trained model and print the top-5 classes.

    python trainers/predict.py --model saved_models/RUN/model.keras cat.png dog.jpg
    python trainers/predict.py --model saved_models/RUN/export/savedmodel photo.jpg
    python trainers/predict.py --model saved_models/RUN/export/model_int8.tflite photo.jpg
    python trainers/predict.py --model weights:resnet20/cifar10 photo.png    # weights shipped with the package

Models: a .keras file (class names from its run directory's config.json), a
SavedModel directory written by export.py (class names inside), or a .tflite
file (class names in the <name>.labels.txt beside it). Images (PNG, JPEG, ...)
of another size than the model's input are resized as the run's evaluation
does: CIFAR-style models resize the whole image; ImageNet-style models resize
the shorter side to 256 (scaled to the input size) and take the centre crop.
"""

from __future__ import annotations

import argparse

from trainers.core.errors import run_main
from trainers.core.prediction import predict


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model",
        required=True,
        help=".keras file, SavedModel directory, .tflite file, or weights:ARCH/NAME (shipped with the package)",
    )
    p.add_argument("images", nargs="+", help="image files to classify")
    p.add_argument("--top", type=int, default=5, help="classes to print per image (default 5)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return predict(args.model, args.images, top=args.top)


if __name__ == "__main__":
    run_main(main)
