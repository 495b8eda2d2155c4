"""A per-class report of a classifier on a labelled split: the confusion
matrix, each class's precision, recall and F1, the balanced accuracy and
macro-F1 beside top-1, the worst class, and the most confidently wrong images.

:func:`class_report` computes the numbers from labels and top-1 predictions;
:class:`Collector` gathers those (and the confidences, and the images of the
few most confident mistakes, in a small heap) batch by batch during one pass
over the data; :func:`write_report` writes the folder (each file atomically):

    report.json              the numbers (strict JSON)
    confusion.csv            the confusion matrix: rows = true class, columns = predicted
    confusion.png            the matrix drawn, shaded by row (each true class's share)
    confident_mistakes.png   the most confidently wrong images, "true: X / predicted: Y (p%)"

Undefined figures are ``null`` with a reason, never 0 and never NaN
(:data:`CONVENTIONS`): precision is null for a class never predicted, recall
for a class with no images; F1 = 2 TP / (images + predictions) is defined
wherever either is non-zero (0 for a class with images that is never
predicted). Balanced accuracy is the mean recall over the classes that have
images, macro-F1 the mean F1 over the classes that have images or
predictions (scikit-learn's choices).
"""

from __future__ import annotations

import csv
import heapq
import io
import json
import math
import pathlib

import numpy as np

from trainers.core.errors import UserError, write_failed
from trainers.core.files import save_figure_atomic, strict, write_text_atomic

KEEP_MISTAKES = 16  # images in confident_mistakes.png
COUNTS_UP_TO = 30  # classes: counts are written in the cells of confusion.png up to this many
NAMES_UP_TO = 150  # classes: every class name is a tick label up to this many
MOST_CONFUSED = 10  # off-diagonal cells listed in report.json
CONVENTIONS = (
    "rows of the confusion matrix are the true class, columns the predicted class; recall is a class's accuracy "
    "(the share of its images predicted as it); precision is null where a class is never predicted and recall where "
    "it has no images (per_class[].why says which); F1 = 2 TP / (images + predictions), the harmonic mean of "
    "precision and recall where both are defined, 0 for a class with images that is never predicted (or predicted "
    "but with no images), null where it has neither; balanced_accuracy is the mean recall over the classes with "
    "images, macro_f1 the mean F1 over the classes with images or predictions; worst_class is the class of lowest "
    "recall (the first by index on a tie)"
)
FILES = ("report.json", "confusion.csv", "confusion.png", "confident_mistakes.png")


# ------------------------------------------------------------------ numbers
def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts: row = true class, column = predicted."""
    labels = np.asarray(labels, np.int64).reshape(-1)
    predictions = np.asarray(predictions, np.int64).reshape(-1)
    if labels.shape != predictions.shape:
        raise ValueError(f"{labels.size} labels but {predictions.size} predictions")
    for what, values in (("label", labels), ("prediction", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            bad = values[(values < 0) | (values >= num_classes)][0]
            raise ValueError(f"a {what} is {bad}, outside the {num_classes} classes")
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _ratio(numerator: int, denominator: int):
    return numerator / denominator if denominator else None


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def class_report(labels, predictions, class_names) -> dict:
    """The per-class report of top-1 ``predictions`` against ``labels`` (class
    indices into ``class_names``): confusion matrix, per-class precision,
    recall (the class's accuracy), F1 and support, top-1, balanced accuracy,
    macro-F1, the worst class's recall and the most confused pairs.
    Undefined figures are None with a reason (:data:`CONVENTIONS`)."""
    names = [str(name) for name in class_names]
    matrix = confusion_matrix(labels, predictions, len(names))
    images = int(matrix.sum())
    if images == 0:
        raise UserError("no images to report on")
    support, predicted, correct = matrix.sum(axis=1), matrix.sum(axis=0), np.diag(matrix)
    per_class = []
    for i, name in enumerate(names):
        tp, n_true, n_pred = int(correct[i]), int(support[i]), int(predicted[i])
        row = {
            "class": name,
            "index": i,
            "support": n_true,
            "predicted": n_pred,
            "correct": tp,
            "precision": _ratio(tp, n_pred),
            "recall": _ratio(tp, n_true),
            "f1": _ratio(2 * tp, n_true + n_pred),
        }
        why = {}
        if n_pred == 0:
            why["precision"] = "never predicted"
        if n_true == 0:
            why["recall"] = "no images of this class"
        if n_true + n_pred == 0:
            why["f1"] = "no images of this class and never predicted"
        if why:
            row["why"] = why
        per_class.append(row)
    with_images = [row for row in per_class if row["support"]]
    worst = min(with_images, key=lambda row: (row["recall"], row["index"]))
    off = matrix.astype(np.float64).copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:MOST_CONFUSED]
    confused = []
    for flat in order:
        true, guess = divmod(int(flat), len(names))
        if off[true, guess] == 0:
            break
        count = int(matrix[true, guess])
        confused.append(
            {
                "true": names[true],
                "predicted": names[guess],
                "count": count,
                "share_of_true": count / int(support[true]),
            }
        )
    return {
        "images": images,
        "classes": len(names),
        "top1_accuracy": int(correct.sum()) / images,
        "top1_error": 1 - int(correct.sum()) / images,
        "balanced_accuracy": _mean(row["recall"] for row in with_images),
        "macro_f1": _mean(row["f1"] for row in per_class),
        "worst_class": worst["class"],
        "worst_class_recall": worst["recall"],
        "classes_without_images": [row["class"] for row in per_class if not row["support"]],
        "classes_never_predicted": [row["class"] for row in per_class if not row["predicted"]],
        "most_confused": confused,
        "per_class": per_class,
        "class_names": names,
        "confusion": {"rows": "true class", "columns": "predicted class", "matrix": matrix.tolist()},
        "conventions": CONVENTIONS,
    }


def key_figures(report: dict) -> dict:
    """The figures that go beside top-1 (metrics.json, evaluate.py's JSON)."""
    return {key: report[key] for key in ("balanced_accuracy", "macro_f1", "worst_class", "worst_class_recall")}


def summary_line(report: dict) -> str:
    """Balanced accuracy, macro-F1 and the worst class's recall, in one phrase."""
    return (
        f"balanced accuracy {100 * report['balanced_accuracy']:.2f}%, macro-F1 {100 * report['macro_f1']:.2f}%, "
        f"worst class {report['worst_class']} (recall {100 * report['worst_class_recall']:.2f}%)"
    )


# --------------------------------------------------------------- collecting
def to_uint8(image) -> np.ndarray:
    """A pipeline's float pixels in [0, 255] as the uint8 image they stand for."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.copy()
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def outputs_probabilities(model) -> bool:
    """Whether ``model`` ends in a softmax (the library's networks output logits)."""
    activation = getattr(model.layers[-1], "activation", None) if getattr(model, "layers", None) else None
    return getattr(activation, "__name__", "") == "softmax"


def softmax(logits) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)  # float64: distinct logits stay distinct


class Collector:
    """Each image's label, top-1 class and confidence (its top-1 probability)
    over one pass, batch by batch (:meth:`add`), and the images of the
    ``keep`` most confidently wrong ones: a heap of ``keep`` entries, so a
    pass over any number of images holds at most ``keep`` images. Ties in
    confidence keep the earlier image. ``view``: the view of a multi-view
    batch (N, V, S, S, 3) to keep for display."""

    def __init__(self, keep: int = KEEP_MISTAKES, view: int = 0):
        self.keep, self.view = keep, view
        self._labels, self._top1, self._confidence = [], [], []
        self._heap = []  # (confidence, -index, index, label, predicted, uint8 image); the least confident first
        self.count = 0

    def add(self, images, labels, probabilities) -> None:
        """One batch: images (N, S, S, 3) or (N, V, S, S, 3); labels as class
        indices (N,) or one-hot / probability vectors (N, C), read by argmax
        (a mixup run's); probabilities (N, C), softmax outputs."""
        probabilities = np.asarray(probabilities)
        labels = np.asarray(labels)
        if labels.ndim == 2:
            labels = labels.argmax(axis=-1)
        labels = labels.astype(np.int64).reshape(-1)
        n = len(labels)
        top1 = probabilities.argmax(axis=-1)
        confidence = probabilities[np.arange(n), top1].astype(np.float32)
        self._labels.append(labels)
        self._top1.append(top1.astype(np.int64))
        self._confidence.append(confidence)
        wrong = np.flatnonzero(top1 != labels)
        if self.keep and wrong.size:
            order = wrong[np.argsort(-confidence[wrong], kind="stable")][: self.keep]
            for i in order:
                index = self.count + int(i)
                key = (float(confidence[i]), -index)
                if len(self._heap) >= self.keep and key <= self._heap[0][:2]:
                    break  # the rest of this batch is less confident still
                image = images[i] if np.ndim(images[i]) == 3 else images[i][self.view]
                entry = (*key, index, int(labels[i]), int(top1[i]), to_uint8(image))
                if len(self._heap) < self.keep:
                    heapq.heappush(self._heap, entry)
                else:
                    heapq.heapreplace(self._heap, entry)
        self.count += n

    def _joined(self, parts, dtype):
        return np.concatenate(parts) if parts else np.zeros((0,), dtype)

    @property
    def labels(self) -> np.ndarray:
        return self._joined(self._labels, np.int64)

    @property
    def predictions(self) -> np.ndarray:
        return self._joined(self._top1, np.int64)

    @property
    def confidences(self) -> np.ndarray:
        return self._joined(self._confidence, np.float32)

    def mistakes(self) -> list[dict]:
        """The kept mistakes, the most confident first: index (position in
        the pass), label, predicted, confidence, image (uint8)."""
        ordered = sorted(self._heap, key=lambda entry: (-entry[0], entry[2]))
        return [
            {"index": index, "label": label, "predicted": guess, "confidence": confidence, "image": image}
            for confidence, _, index, label, guess, image in ordered
        ]


def collect(predict, ds, *, probabilities: bool = False, keep: int = KEEP_MISTAKES) -> Collector:
    """One pass of ``predict`` (a batch of images -> logits, or softmax
    outputs where ``probabilities``) over ``ds`` (batches of (images,
    labels)) into a :class:`Collector`."""
    collector = Collector(keep)
    for images, labels in ds.as_numpy_iterator():
        outputs = np.asarray(predict(images))
        collector.add(images, labels, outputs if probabilities else softmax(outputs))
    return collector


# ------------------------------------------------------------------ writing
def report_json(data: dict) -> str:
    """``data`` as strict JSON (:func:`trainers.core.files.strict`: no NaN),
    indented, with each row of the confusion matrix on one line (a 100-class
    matrix is 100 lines, not 10,000)."""
    marker = "\u0000confusion matrix\u0000"
    matrix = data["confusion"]["matrix"]
    shown = {**data, "confusion": {**data["confusion"], "matrix": marker}}
    text = json.dumps(strict(shown), indent=2, allow_nan=False)
    rows = ",\n".join(f"      {json.dumps([int(count) for count in row])}" for row in matrix)
    return text.replace(json.dumps(marker), f"[\n{rows}\n    ]" if matrix else "[]", 1) + "\n"


def _short(name: str, limit: int) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def confusion_csv(report: dict) -> str:
    """The confusion matrix as CSV: a header row of the class names (after a
    corner cell), then one row per true class: its name and its counts."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *report["class_names"]])
    for name, row in zip(report["class_names"], report["confusion"]["matrix"]):
        writer.writerow([name, *row])
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_confusion(path, report: dict, title: str = "") -> None:
    """confusion.png: class names on both axes, each row shaded by its share
    of the true class's images (the diagonal is the recall), the counts in the
    cells up to :data:`COUNTS_UP_TO` classes; beyond, smaller rotated names
    (class indices beyond :data:`NAMES_UP_TO`, the names being in the CSV)."""
    plt = _pyplot()
    matrix = np.asarray(report["confusion"]["matrix"], np.int64)
    names = report["class_names"]
    n = len(names)
    support = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, support, out=np.zeros(matrix.shape), where=support > 0)
    side = min(20.0, max(5.0, 0.42 * n + 2.5))  # inches; 100 classes: 20 in, 0.17 in (12 pt) a cell
    fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=100 if n <= 40 else 150)  # small text: more pixels
    shading = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
    if n <= NAMES_UP_TO:
        size = 10 if n <= 12 else max(5.5, min(9.0, 700 / n))
        limit = 28 if n <= 30 else 18
        labels = [_short(name, limit) for name in names]
        rotate = 90 if n > 12 or max(len(label) for label in labels) > 8 else 45
        ax.set_xticks(range(n), labels, rotation=rotate, ha="right" if rotate == 45 else "center", fontsize=size)
        ax.set_yticks(range(n), labels, fontsize=size)
        if rotate == 45:
            plt.setp(ax.get_xticklabels(), rotation_mode="anchor")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    else:
        ax.set_xlabel("predicted class (index; the names are in confusion.csv)")
        ax.set_ylabel("true class (index)")
    if n <= COUNTS_UP_TO:
        size = 11 if n <= 10 else 9 if n <= 20 else 7
        for (i, j), count in np.ndenumerate(matrix):
            color = "white" if share[i, j] > 0.55 else ("0.6" if count == 0 else "black")
            ax.text(j, i, str(count), ha="center", va="center", fontsize=size, color=color)
    else:
        ax.tick_params(length=2)
    bar = fig.colorbar(shading, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label("share of the true class's images (row); the diagonal is each class's recall")
    headline = (
        f"{report['images']:,} images, top-1 {100 * report['top1_accuracy']:.2f}%, balanced accuracy "
        f"{100 * report['balanced_accuracy']:.2f}%, macro-F1 {100 * report['macro_f1']:.2f}%"
    )
    ax.set_title(f"{title}\n{headline}" if title else headline, fontsize=10 if side < 8 else 12)
    fig.tight_layout()
    save_figure_atomic(fig, path)


def draw_mistakes(path, mistakes: list[dict], class_names, *, images: int, title: str = "") -> None:
    """confident_mistakes.png: the mistakes (:meth:`Collector.mistakes`) in a
    grid of up to 4 columns, "true: X / predicted: Y (p%)" under each image;
    a figure saying so where there is none."""
    plt = _pyplot()
    if not mistakes:
        fig, ax = plt.subplots(figsize=(6, 2), dpi=100)
        ax.axis("off")
        ax.text(0.5, 0.5, f"no mistakes: all {images:,} images predicted right", ha="center", va="center")
        if title:
            ax.set_title(title, fontsize=9)
        save_figure_atomic(fig, path)
        return
    columns = min(4, len(mistakes))
    rows = math.ceil(len(mistakes) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.7 * columns, 3.1 * rows + 0.6), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, mistake in zip(axes.flat, mistakes):
        ax.axis("on")
        ax.imshow(mistake["image"], interpolation="nearest" if mistake["image"].shape[0] < 96 else "antialiased")
        ax.set_xticks([])
        ax.set_yticks([])
        true, guess = class_names[mistake["label"]], class_names[mistake["predicted"]]
        ax.set_xlabel(
            f"true: {_short(str(true), 24)}\npredicted: {_short(str(guess), 20)} ({100 * mistake['confidence']:.0f}%)",
            fontsize=9,
        )
    heading = f"the {len(mistakes)} most confidently wrong of {images:,} images"
    fig.suptitle(f"{title}\n{heading}" if title else heading, fontsize=10)
    fig.tight_layout()
    save_figure_atomic(fig, path)


def write_report(folder, report: dict, mistakes: list[dict], *, title: str = "", context: dict | None = None):
    """Writes the report folder (:data:`FILES`, each atomically): report.json
    holds ``context`` (model, dataset, split, ...), then ``report``, then the
    confident mistakes' indices, names and confidences. Returns the folder."""
    folder = pathlib.Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_failed(folder, error) from None
    names = report["class_names"]
    listed = [
        {
            "index": m["index"],
            "true": names[m["label"]],
            "predicted": names[m["predicted"]],
            "confidence": float(m["confidence"]),
        }
        for m in mistakes
    ]
    write_text_atomic(folder / "confusion.csv", confusion_csv(report))
    draw_confusion(folder / "confusion.png", report, title)
    draw_mistakes(folder / "confident_mistakes.png", mistakes, names, images=report["images"], title=title)
    write_text_atomic(folder / "report.json", report_json({**(context or {}), **report, "confident_mistakes": listed}))
    return folder


def report_from(collector: Collector, class_names, folder, *, title: str = "", context: dict | None = None) -> dict:
    """:func:`class_report` of a finished pass, written with its mistakes into ``folder``."""
    report = class_report(collector.labels, collector.predictions, class_names)
    write_report(folder, report, collector.mistakes(), title=title, context=context)
    return report


def run_report(model, ds, info, folder, *, arch: str, multi: bool = False) -> dict:
    """The report of a fit.py run's final ``model`` (an ``arch``) on its test
    pipeline ``ds`` (labels as indices, or one-hot in a mixup run) of the data
    ``info`` describes, written into ``folder``; returns :func:`key_figures`.
    Under a strategy of several replicas (``multi``) it predicts with a plain
    call of the network: ``predict_on_batch`` would split the batch across the
    replicas (and, with several workers, wait on the others in its collective
    ops, where only the chief calls this)."""
    if multi:
        import tensorflow as tf

        call = tf.function(lambda images: model(images, training=False))

        def predict(images):
            return call(images).numpy()
    else:
        predict = model.predict_on_batch
    collector = collect(predict, ds, probabilities=outputs_probabilities(model))
    view = "original" if info.style == "cifar" else "centre crop"
    tag = " (SYNTHETIC DATA)" if info.synthetic else ""
    context = {
        "model": "model.keras",
        "arch": arch,
        "dataset": info.name,
        "synthetic": info.synthetic,
        "split": info.test_split,
        "view": view,
        "image_size": info.image_size,
    }
    title = f"{arch} on {info.name} {info.test_split} ({view} at {info.image_size}px){tag}"
    report = report_from(collector, info.class_names, folder, title=title, context=context)
    return key_figures(report)
