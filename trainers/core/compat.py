"""Small, tested work-arounds for Keras 3.15 behaviour under tf.distribute.

Each names the Keras code it works around; tests/test_compat.py shows the bug
on unpatched Keras (so an upgrade that fixes or changes it is noticed) and the
fix. The private Keras and Keras Tuner modules a fix patches are imported inside
that fix: a release that moves one breaks that fix alone, when it is applied.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf


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

    Without a strategy Keras defers the build to the first trace of the train
    function instead, and the optimizer's slots and the metrics' variables are
    then created inside that trace: TensorFlow traces a function that creates
    variables a second time, so every run paid for two traces of its train step.
    Built here first, it is traced once (docs/benchmarks.md has the start-up
    time this saves).
    """
    (x_shape, x_dtype), (y_shape, y_dtype) = batch_spec
    batch = (np.zeros(x_shape, x_dtype), np.zeros(y_shape, y_dtype))
    if strategy.num_replicas_in_sync == 1 and not getattr(model, "_distribute_strategy", None):
        model._symbolic_build(data_batch=batch)
        return
    model._maybe_symbolic_build(data_batch=batch)
    # Everything is built now; fit's own call would only consume a batch.
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def fix_multi_worker_scalar_reduction() -> None:
    """Lets Keras reduce scalar logs (loss, metric results) across workers.

    Why: under ``MultiWorkerMirroredStrategy`` in multi-worker mode, Keras'
    ``reduce_per_replica`` (``keras/src/backend/tensorflow/trainer.py``) reduces
    every value of a step's logs with ``strategy.reduce("MEAN", v, axis=0)``,
    and a scalar has no axis 0: ``fit`` fails at its first step with "Invalid
    reduction dimension 0 for input with 0 dimensions". Scalars are reduced
    here with ``axis=None`` (the mean over all replicas of all workers, which
    is what Keras means to compute); everything else goes to Keras unchanged.
    Idempotent; without multi-worker mode nothing changes.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_resnet_keras_fix", False):
        return
    from keras.src import tree

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not tf_trainer._collective_all_reduce_multi_worker(strategy):
            return original(values, strategy, reduction)

        def reduce_one(value):
            rank = (
                value.values[0].shape.rank if isinstance(value, tf.distribute.DistributedValues) else value.shape.rank
            )
            if rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return tree.map_structure(reduce_one, values)

    reduce_per_replica._resnet_keras_fix = True
    reduce_per_replica.__wrapped__ = original
    tf_trainer.reduce_per_replica = reduce_per_replica


def quiet_keras_tuner_failed_trials() -> None:
    """Stops Keras Tuner printing a Python traceback for every trial that
    fails (``keras_tuner.src.config.DEBUG``, True by default, no public
    setting): ``trainers/tune.py`` prints one line per rejected or diverged
    trial instead, and the traceback stays in the trial's ``trial.json``
    (``message``) for whoever needs it."""
    try:
        from keras_tuner.src import config as kt_config
    except ImportError:  # another layout: its default stands
        return
    kt_config.DEBUG = False


def make_keras_tuner_saves_atomic() -> None:
    """Makes Keras Tuner write its JSON state (``oracle.json``, each
    ``trial.json``, the tuner's state) to a temporary name and rename it.

    Why: ``keras_tuner.src.utils.save_json`` opens the target file for writing
    (truncating it) and then writes; a search killed between the two leaves an
    empty ``oracle.json``, and the next start fails in ``Oracle.reload`` with a
    ``JSONDecodeError`` instead of resuming (seen here when a search was
    SIGKILLed after its first trial). Every caller reaches the function through
    the module attribute, so replacing it covers them all. Idempotent.
    """
    from keras_tuner.src import utils as kt_utils

    if getattr(kt_utils.save_json, "_resnet_keras_fix", False):
        return

    from keras_tuner.src import backend as kt_backend

    def save_json(path, obj):
        text = json.dumps(obj)
        path = str(path)
        temporary = f"{path}.tmp-{os.getpid()}"
        with kt_backend.io.File(temporary, "w") as f:
            f.write(text)
        if kt_backend.io.tf is None:
            os.replace(temporary, path)
        else:
            kt_backend.io.tf.io.gfile.rename(temporary, path, overwrite=True)
        return text

    save_json._resnet_keras_fix = True
    save_json.original = kt_utils.save_json
    kt_utils.save_json = save_json
