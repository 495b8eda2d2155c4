"""Classify image files with a trained model and print the top-5 classes.

    python trainers/predict.py --model saved_models/RUN/model.keras cat.png dog.jpg
    python trainers/predict.py --model saved_models/RUN/export/savedmodel photo.jpg
    python trainers/predict.py --model saved_models/RUN/export/model_int8.tflite photo.jpg
    python trainers/predict.py --model weights:resnet20/cifar10 photo.png    # weights shipped with the package
    python trainers/predict.py --model saved_models/RUN --explain photo.jpg   # and where it looks (Grad-CAM)

Models: a .keras file (class names from its run directory's config.json), a
SavedModel directory written by export.py (class names inside), or a .tflite
file (class names in the <name>.labels.txt beside it). Images (PNG, JPEG, ...)
of another size than the model's input are resized as the run's evaluation
does: CIFAR-style models resize the whole image; ImageNet-style models resize
the shorter side to 256 (scaled to the input size) and take the centre crop.

--explain draws, for each image, a Grad-CAM overlay of the predicted class
(the last stage's activations weighted by the gradient of its logit) into
--explain-dir, and prints its path beside the image's top classes. It needs a
trained model (run directory, .keras, weights:...): a SavedModel or TFLite
export keeps only the forward pass.
"""

from __future__ import annotations

import argparse

from trainers.core.errors import UserError, run_main
from trainers.core.files import runs_root
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
    p.add_argument("--explain", action="store_true", help="also draw a Grad-CAM overlay of each image's top class")
    p.add_argument(
        "--explain-dir",
        default=None,
        help="folder for the overlays, <image name>.gradcam.png (default saved_models/explain)",
    )
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    explain_dir = None
    if args.explain:
        explain_dir = args.explain_dir or str(runs_root() / "explain")
    elif args.explain_dir:
        raise UserError("--explain-dir is where --explain draws; add --explain")
    return predict(args.model, args.images, top=args.top, explain_dir=explain_dir)


if __name__ == "__main__":
    run_main(main)
