"""Grad-CAM overlays for ``predict.py --explain``: for each image, a PNG of
the evaluation view, the same view with the heat map of the predicted class
laid over it, and the top classes named (:func:`resnet_keras.explain.grad_cam`
computes the map).
"""

from __future__ import annotations

import pathlib

import numpy as np

from trainers.core.errors import UserError
from trainers.core.files import save_figure_atomic

BATCH = 8
OVERLAY_ALPHA = 0.45  # enough colour to read the map, enough photograph to see what it covers


def overlay_names(images, folder: pathlib.Path) -> list[pathlib.Path]:
    """``<folder>/<image stem>.gradcam.png`` for each image; images of the same
    stem (from different folders) get ``-2``, ``-3``, ... so none overwrites
    another's picture."""
    seen: dict[str, int] = {}
    names = []
    for image in images:
        stem = pathlib.Path(image).stem
        seen[stem] = seen.get(stem, 0) + 1
        suffix = "" if seen[stem] == 1 else f"-{seen[stem]}"
        names.append(folder / f"{stem}{suffix}.gradcam.png")
    return names


def draw_overlay(path, image: np.ndarray, heat: np.ndarray, ranked, *, title: str = "") -> None:
    """The image (uint8 H, W, 3) and the heat map (H, W in [0, 1]) over it, side by
    side, with the ranked classes [(name, probability), ...] under them."""
    from trainers.core.report import _pyplot

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.2, 4.3), dpi=100)
    smooth = "nearest" if image.shape[0] < 96 else "antialiased"
    left.imshow(image, interpolation=smooth)
    left.set_title("input (evaluation view)", fontsize=9)
    right.imshow(image, interpolation=smooth)
    shading = right.imshow(heat, cmap="jet", alpha=OVERLAY_ALPHA, vmin=0, vmax=1, interpolation="bilinear")
    name, probability = ranked[0]
    right.set_title(f"Grad-CAM of {str(name)[:30]} ({100 * probability:.1f}%)", fontsize=9)
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shading, ax=right, fraction=0.046, pad=0.02).set_label("share of the map's peak", fontsize=8)
    lines = "   ".join(f"{str(n)[:24]} {100 * p:.1f}%" for n, p in ranked[:5])
    fig.text(0.5, 0.02, lines, ha="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save_figure_atomic(fig, path)


def no_gradients(path: pathlib.Path) -> UserError:
    """The one message for ``--explain`` on an exported model."""
    kinds = {".tflite": "a TFLite model", ".onnx": "an ONNX model", ".xml": "an OpenVINO model"}
    kind = kinds.get(path.suffix, "an OpenVINO model" if (path / "model.xml").exists() else "a SavedModel")
    source = ""
    for folder in (path.parent, path.parent.parent):
        if (folder / "config.json").exists():
            source = f"; explain with the run it came from: --model {folder}"
            break
    return UserError(
        f"--explain needs gradients, and {path} is {kind}, which keeps only the forward pass{source or ''}"
        + ("" if source else " (explain with the run directory or .keras file it was exported from)")
    )


def explain(model, views, paths, class_names, *, top: int = 5):
    """Grad-CAM of each view's predicted class: draws one overlay per image at
    ``paths`` (:func:`overlay_names`; their folder is created) and returns
    [(ranked [(name, probability), ...], overlay path)] in the order of
    ``views``."""
    from resnet_keras.explain import grad_cam

    folder = pathlib.Path(paths[0]).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {folder} for the Grad-CAM overlays ({error.strerror})") from None
    heats, probabilities = [], []
    for start in range(0, len(views), BATCH):  # a few images at a time: the gradient tape holds every activation
        try:
            heat, _, probs = grad_cam(model, np.stack(views[start : start + BATCH]))
        except ValueError as error:
            raise UserError(f"cannot explain this model: {error}") from None
        heats.extend(heat)
        probabilities.extend(probs)
    results = []
    for view, heat, probs, path in zip(views, heats, probabilities, paths):
        order = np.argsort(-probs)[: min(top, len(class_names))]
        ranked = [(class_names[i], float(probs[i])) for i in order]
        draw_overlay(path, view, heat, ranked)
        results.append((ranked, path))
    return results
