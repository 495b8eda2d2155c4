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
import os
import pathlib
import sys

import numpy as np  # noqa: E402

from trainers.core.common import UserError, load_keras_model, run_main, read_json  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help=".keras file, SavedModel directory, .tflite file, or weights:ARCH/NAME (shipped with the package)")
    p.add_argument("images", nargs="+", help="image files to classify")
    p.add_argument("--top", type=int, default=5, help="classes to print per image (default 5)")
    return p


def _run_config(model_path: pathlib.Path) -> dict:
    """config.json of the run the model came from (its folder, or the run
    directory above an export/ folder), or {}."""
    for folder in (model_path.parent, model_path.parent.parent):
        config = folder / "config.json"
        if config.exists():
            return read_json(config, "run configuration")  # a corrupt one is one line, not silently {}
    return {}


def load(model_path: pathlib.Path):
    """(predict function uint8 (H, W, 3) -> probabilities, class names, input size, family)."""
    import tensorflow as tf

    if not model_path.exists():
        raise UserError(f"no model at {model_path}")
    config = _run_config(model_path)
    family = config.get("family")

    if model_path.is_dir():
        if not (model_path / "saved_model.pb").exists():
            raise UserError(f"{model_path} is a directory but not a SavedModel (no saved_model.pb)")
        try:
            loaded = tf.saved_model.load(str(model_path))
            serve = loaded.signatures["serving_default"]
        except Exception as error:
            raise UserError(f"{model_path} is not a loadable SavedModel ({type(error).__name__}: {error})") from None
        if "class_names" not in loaded.signatures:
            raise UserError(f"{model_path} carries no class names (no class_names signature); export it with export.py")
        names = [n.decode() for n in loaded.signatures["class_names"]()["class_names"].numpy()]
        size = serve.structured_input_signature[1]["images"].shape[1]

        def predict(image):
            return serve(images=tf.constant(image[None]))["probabilities"].numpy()[0]

        return predict, names, size, family

    if model_path.suffix == ".tflite":
        from trainers.export import tflite_runner

        labels = model_path.with_suffix(".labels.txt")
        if not labels.exists():
            raise UserError(f"{model_path} has no class names: {labels.name} is missing beside it")
        try:
            run, _, _ = tflite_runner(model_path.read_bytes())
            from ai_edge_litert.interpreter import Interpreter

            size = Interpreter(model_path=str(model_path)).get_input_details()[0]["shape"][1]
        except UserError:
            raise
        except Exception as error:
            raise UserError(f"{model_path} is not a valid TFLite model ({type(error).__name__}: {error})") from None
        return run, labels.read_text().splitlines(), int(size), family

    if model_path.suffix == ".keras":
        if not config.get("class_names"):
            raise UserError(f"{model_path} has no class names: no run config.json with class_names beside it")
        model = load_keras_model(model_path)
        return _keras_predictor(model), list(config["class_names"]), model.input_shape[1], family

    raise UserError(f"{model_path}: not a model this command reads (.keras, SavedModel directory, .tflite)")


def _keras_predictor(model):
    import keras

    def predict(image):
        logits = model(image[None].astype(np.float32), training=False)
        return keras.ops.convert_to_numpy(keras.ops.softmax(keras.ops.cast(logits, "float32")))[0]

    return predict


def load_shipped(spec: str):
    """load()'s answer for weights shipped with the package, ``weights:ARCH/NAME``
    (class names from their manifest)."""
    from trainers import export

    model, config, _ = export.load_shipped(spec)
    return _keras_predictor(model), list(config["class_names"]), model.input_shape[1], config["family"]


def read_image(path: pathlib.Path, size: int, family: str | None) -> np.ndarray:
    """The image as the model's evaluation view, uint8 (size, size, 3)."""
    import tensorflow as tf

    from trainers.core import data as data_lib

    if not path.is_file():
        raise UserError(f"no image at {path}")
    try:
        image = tf.io.decode_image(path.read_bytes(), channels=3, expand_animations=False)
    except Exception as error:
        raise UserError(f"{path} cannot be decoded as an image ({type(error).__name__})") from None
    style = family or ("cifar" if size <= 64 else "imagenet")
    view = data_lib.eval_view(image, style, size).numpy()
    return np.clip(np.round(view), 0, 255).astype(np.uint8)


def predict(args) -> list[dict]:
    if args.top < 1:
        raise UserError(f"--top {args.top}; expected a positive integer")
    from trainers.export import SHIPPED_PREFIX

    if args.model.startswith(SHIPPED_PREFIX):
        run, names, size, family = load_shipped(args.model)
    else:
        run, names, size, family = load(pathlib.Path(args.model).expanduser().resolve())
    images = [read_image(pathlib.Path(p), size, family) for p in args.images]  # all decodable before printing
    results = []
    for path, image in zip(args.images, images):
        probs = run(image)
        order = np.argsort(-probs)[: min(args.top, len(names))]
        top = [(names[i], float(probs[i])) for i in order]
        results.append({"image": path, "top": top})
        print(path)
        for name, p in top:
            print(f"  {p:7.2%}  {name}")
    return results


def main(argv=None):
    return predict(build_parser().parse_args(argv))


if __name__ == "__main__":
    run_main(main)
