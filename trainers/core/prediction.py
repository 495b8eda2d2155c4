"""Classifying image files with a trained model (:func:`predict`, behind
``trainers/predict.py``).

Models: whatever :func:`trainers.core.sources.load_trained` reads without a
target network (a run directory, a ``.keras`` file, ``weights:ARCH/NAME``),
and the artifacts ``trainers/export.py`` writes, which are not Keras models: a
SavedModel directory (class names inside) or a ``.tflite`` file (class names
in the ``<name>.labels.txt`` beside it). Images of another size than the
model's input are resized as the run's evaluation does.
"""

from __future__ import annotations

import pathlib

import keras
import numpy as np
import tensorflow as tf

from trainers.core import data as data_lib
from trainers.core import explain as explain_lib
from trainers.core import runtimes
from trainers.core.errors import UserError
from trainers.core.exporting import tflite_runner
from trainers.core.files import read_json
from trainers.core.sources import is_named, load_trained

READS = ".keras, run directory, SavedModel directory, .tflite, .onnx, OpenVINO folder or .xml, weights:ARCH/NAME"


def _run_config(model_path: pathlib.Path) -> dict:
    """config.json of the run an exported model came from (its folder, or the
    run directory above an export/ folder, or above export/openvino/), or {}."""
    for folder in (model_path.parent, model_path.parent.parent, model_path.parent.parent.parent):
        config = folder / "config.json"
        if config.exists():
            return read_json(config, "run configuration")  # a corrupt one is one line, not silently {}
    return {}


def is_exported(path: pathlib.Path) -> bool:
    """Whether ``path`` is an exported model (a SavedModel directory, a .tflite
    or .onnx file, an OpenVINO model), not a trained Keras one."""
    return (
        path.suffix == ".tflite"
        or (path.is_dir() and (path / "saved_model.pb").exists())
        or runtimes.is_runtime_model(path)
    )


def load_exported(model_path: pathlib.Path):
    """(predict function uint8 (H, W, 3) -> probabilities, class names, input
    size, family) of a SavedModel directory, a .tflite file, an ONNX or an
    OpenVINO model (class names inside)."""
    if not model_path.exists():
        raise UserError(f"no model at {model_path}")
    family = _run_config(model_path).get("family")
    if runtimes.is_runtime_model(model_path):
        run, names, size = runtimes.runtime_runner(model_path)
        return (lambda image: run(image[None])[0]), names, size, family

    if model_path.is_dir():
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

    labels = model_path.with_suffix(".labels.txt")
    if not labels.exists():
        raise UserError(f"{model_path} has no class names: {labels.name} is missing beside it")
    try:
        run, _, _ = tflite_runner(model_path.read_bytes())
        # Imported here, as in tflite_runner: only TFLite models need LiteRT (ai-edge-litert), an optional package.
        from ai_edge_litert.interpreter import Interpreter

        size = Interpreter(model_path=str(model_path)).get_input_details()[0]["shape"][1]
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"{model_path} is not a valid TFLite model ({type(error).__name__}: {error})") from None
    return run, labels.read_text().splitlines(), int(size), family


def keras_predictor(model):
    """A function image uint8 (H, W, 3) -> probabilities (C,) of a Keras model."""

    def predict(image):
        logits = model(image[None].astype(np.float32), training=False)
        return keras.ops.convert_to_numpy(keras.ops.softmax(keras.ops.cast(logits, "float32")))[0]

    return predict


def load_predictor(model):
    """(predict function uint8 (H, W, 3) -> probabilities, class names, input
    size, family) of ``model``: a trained model (:func:`load_trained`) or an
    exported one (:func:`load_exported`)."""
    if not is_named(model):
        path = pathlib.Path(model).expanduser().resolve()
        if is_exported(path):
            return load_exported(path)
        if path.is_dir() and not (path / "config.json").exists():
            raise UserError(f"{path} is not a SavedModel (no saved_model.pb) nor a run directory (no config.json)")
        if path.is_file() and path.suffix not in (".keras", ".h5"):
            raise UserError(f"{path}: not a model this command reads ({READS})")
    trained = _trained_with_names(model)
    return keras_predictor(trained.model), list(trained.class_names), trained.image_size, trained.family


def _trained_with_names(model):
    """:func:`load_trained`, refused in one line where the class names are unknown."""
    trained = load_trained(model)
    if not trained.class_names:
        raise UserError(f"{trained.path} has no class names: no run config.json with class_names beside it")
    return trained


def read_image(path: pathlib.Path, size: int, family: str | None) -> np.ndarray:
    """The image as the model's evaluation view, uint8 (size, size, 3)."""
    if not path.is_file():
        raise UserError(f"no image at {path}")
    try:
        image = tf.io.decode_image(path.read_bytes(), channels=3, expand_animations=False)
    except Exception as error:
        raise UserError(f"{path} cannot be decoded as an image ({type(error).__name__})") from None
    style = family or ("cifar" if size <= 64 else "imagenet")
    view = data_lib.eval_view(image, style, size).numpy()
    return np.clip(np.round(view), 0, 255).astype(np.uint8)


def predict(model, images, *, top: int = 5, explain_dir=None) -> list[dict]:
    """The ``top`` classes of ``model`` (see :func:`load_predictor`) for each
    image file of ``images``, printed and returned as [{"image", "top": [(name,
    probability), ...]}]. Every image is decoded before anything is printed.

    ``explain_dir``: also draw a Grad-CAM overlay of each image's predicted
    class into that folder (:mod:`trainers.core.explain`), its path printed
    beside the image's top classes and returned as "explained". Needs a
    trained Keras model: an exported one has no gradients."""
    if top < 1:
        raise UserError(f"--top {top}; expected a positive integer")
    if explain_dir is None:
        run, names, size, family = load_predictor(model)
    else:
        if not is_named(model) and is_exported(pathlib.Path(model).expanduser().resolve()):
            raise explain_lib.no_gradients(pathlib.Path(model).expanduser().resolve())
        trained = _trained_with_names(model)
        names, size, family = list(trained.class_names), trained.image_size, trained.family
    views = [read_image(pathlib.Path(p), size, family) for p in images]  # all decodable before printing
    if explain_dir is not None:
        folder = pathlib.Path(explain_dir)
        overlays = explain_lib.explain(trained.model, views, explain_lib.overlay_names(images, folder), names, top=top)
    results = []
    for index, (path, image) in enumerate(zip(images, views)):
        if explain_dir is None:
            probs = run(image)
            order = np.argsort(-probs)[: min(top, len(names))]
            ranked = [(names[i], float(probs[i])) for i in order]
            result = {"image": path, "top": ranked}
            print(path)
        else:
            ranked, overlay = overlays[index]
            result = {"image": path, "top": ranked, "explained": str(overlay)}
            print(f"{path}  (Grad-CAM: {overlay})")
        results.append(result)
        for name, p in ranked:
            print(f"  {p:7.2%}  {name}")
    return results
