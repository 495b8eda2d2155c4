"""Small, tested work-arounds for Keras 3.15 behaviour under tf.distribute.

Each names the Keras code it works around; tests/test_compat.py shows the bug
on unpatched Keras (so an upgrade that fixes or changes it is noticed) and the
fix.
"""

from __future__ import annotations

import numpy as np


def build_before_fit(model, strategy, batch_spec) -> None:
    """Builds the compiled model (metrics, loss, optimizer) from a dummy batch
    and stops ``fit`` from building it again from the training data.

    Why: with a distribution strategy, Keras' TensorFlow trainer
    (``keras/src/backend/tensorflow/trainer.py``, ``_maybe_symbolic_build``)
    takes ``next()`` of the training iterator to learn the input shapes, and
    with ``steps_per_epoch`` that iterator is the one training then continues:
    the first global batch is never trained on, so a MirroredStrategy run does
    not see the same data as a default-strategy run. ``batch_spec`` is
    ``((images_shape, images_dtype), (labels_shape, labels_dtype))``.
    """
    if strategy.num_replicas_in_sync == 1 and not getattr(model, "_distribute_strategy", None):
        return
    (x_shape, x_dtype), (y_shape, y_dtype) = batch_spec
    batch = (np.zeros(x_shape, x_dtype), np.zeros(y_shape, y_dtype))
    model._maybe_symbolic_build(data_batch=batch)
    # Everything is built now; fit's own call would only consume a batch.
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
