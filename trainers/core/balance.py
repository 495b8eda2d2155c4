"""Unbalanced classes: ``--class-balance {none,weights,sampling}``.

- ``none`` (the default): the training split as it is.
- ``weights``: each image's loss is multiplied by its class's weight
  ``w_c = N / (K n_c)`` (scikit-learn's "balanced": N images, K classes, n_c
  of class c), so every class carries the same share of the loss, and the
  mean weight over the training split is 1 (the learning rate keeps its
  meaning). Applied inside the loss (:class:`ClassWeightedCrossentropy`),
  not as Keras' ``class_weight``: that one takes a mixup label's larger part
  for its class and cannot map the distributed datasets multi-replica runs
  train on, and weights in the data would weight the training accuracy too.
- ``sampling``: the training stream draws every class with probability 1/K
  (``trainers.core.data.balanced_source``: ``sample_from_datasets`` over one
  stream per class); an epoch keeps the split's number of images.

:func:`plan` checks a mode against the class counts and says what it does,
as config.json records it (``balance``).
"""

from __future__ import annotations

import keras
import numpy as np

from trainers.core.errors import UserError

MODES = ("none", "weights", "sampling")
# The classes listed one by one in the console line (config.json has them all).
LISTED_CLASSES = 20


def class_weights(counts) -> np.ndarray:
    """``N / (K n_c)`` for each class's count ``n_c`` (float64): scikit-learn's
    ``compute_class_weight("balanced")``. A class without images has no
    weight (a ``ValueError``: :func:`plan` refuses it first)."""
    counts = np.asarray(counts, np.int64)
    if counts.ndim != 1 or len(counts) < 1 or (counts <= 0).any():
        raise ValueError(f"class counts must be positive, got {counts.tolist()}")
    return counts.sum() / (len(counts) * counts.astype(np.float64))


def plan(mode: str | None, counts, class_names) -> dict:
    """What ``--class-balance mode`` does with a training split of these class
    counts, as config.json records it: the mode, the counts by class name, and
    the loss weights (``weights``) or the distribution the classes are drawn
    from (``sampling``). A class without training images is refused for both
    (it can be neither weighted nor drawn)."""
    mode = mode or "none"
    if mode not in MODES:
        raise UserError(f"--class-balance {mode!r}; expected one of {', '.join(MODES)}")
    counts = [int(n) for n in counts]
    names = [str(name) for name in class_names] if class_names else [str(i) for i in range(len(counts))]
    record = {"mode": mode, "class_counts": dict(zip(names, counts))}
    if mode == "none":
        return record
    empty = [name for name, n in zip(names, counts) if n == 0]
    if empty:
        raise UserError(
            f"--class-balance {mode}: class {empty[0]!r} has no training images"
            + (f" ({len(empty)} classes have none)" if len(empty) > 1 else "")
            + "; it can be neither weighted nor drawn"
        )
    if mode == "weights":
        record["weights"] = dict(zip(names, (float(w) for w in class_weights(counts))))
    else:
        record["target"] = dict(zip(names, [1.0 / len(counts)] * len(counts)))
    return record


def describe(record: dict) -> str:
    """One console line: the class counts and what the balancing did."""
    counts = record["class_counts"]
    total, low, high = sum(counts.values()), min(counts.values()), max(counts.values())
    ratio = f"{high / low:.1f}:1" if low else "a class has none"
    if len(counts) <= LISTED_CLASSES:
        listed = ", ".join(f"{name} {n:,}" for name, n in counts.items())
    else:
        smallest = min(counts, key=counts.get)
        largest = max(counts, key=counts.get)
        listed = f"{len(counts)} classes, fewest {smallest} {low:,}, most {largest} {high:,}"
    line = f"class counts of the training split ({total:,} images): {listed} (largest to smallest {ratio}); "
    mode = record["mode"]
    if mode == "none":
        return line + "--class-balance none: trained as they are"
    if mode == "weights":
        weights = record["weights"]
        if len(weights) <= LISTED_CLASSES:
            shown = ", ".join(f"{name} {w:.4g}" for name, w in weights.items())
        else:
            shown = f"from {min(weights.values()):.4g} to {max(weights.values()):.4g}"
        return line + f"--class-balance weights: loss weights N/(K n_c) {shown}"
    share = 1.0 / len(counts)
    return line + (
        f"--class-balance sampling: every class drawn with probability {share:.4g}, "
        f"{total:,} images an epoch (about {total * share:,.0f} of each class)"
    )


@keras.saving.register_keras_serializable(package="resnet_keras_trainers")
class ClassWeightedCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits in which each class's part is weighted by its
    class weight: for an integer label ``y`` (``sparse=True``) the loss is
    ``w_y`` times the (label-smoothed) cross-entropy, what Keras'
    ``class_weight`` computes; for a label that is a probability vector
    (``sparse=False``, mixup's ``lam e_a + (1 - lam) e_b``) it is
    ``sum_c y_c w_c CE(smooth(e_c))``, i.e. ``lam w_a CE_a + (1 - lam) w_b CE_b``,
    each mixed image's two classes weighted as each alone would be. Label
    smoothing ``s`` smooths each class's one-hot target as Keras does
    (``(1 - s) e_c + s/K``). Reduced over the batch as Keras' losses are (the
    mean of the weighted losses), so the metrics stay unweighted."""

    def __init__(self, class_weights, label_smoothing=0.0, sparse=True, name="class_weighted_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights = [float(w) for w in class_weights]
        self.label_smoothing = float(label_smoothing)
        self.sparse = bool(sparse)

    def call(self, y_true, y_pred):
        ops = keras.ops
        logits = ops.cast(y_pred, "float32")
        log_probs = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
        classes = len(self.class_weights)
        if self.sparse:
            labels = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), classes, dtype="float32")
        else:
            labels = ops.cast(y_true, "float32")
        weighted = labels * ops.convert_to_tensor(self.class_weights, dtype="float32")  # y_c w_c
        s = self.label_smoothing
        # sum_c y_c w_c ((1 - s) e_c + s/K): each class's weighted mass, smoothed as its one-hot target would be.
        targets = (1.0 - s) * weighted + (s / classes) * ops.sum(weighted, axis=-1, keepdims=True)
        return -ops.sum(targets * log_probs, axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "class_weights": self.class_weights,
            "label_smoothing": self.label_smoothing,
            "sparse": self.sparse,
        }
