"""Callbacks of the trainer: backups that survive ``kill -9``, an exact stop at
the schedule's last iteration, a guard against non-finite losses, the best
model, and the run's logs (history.csv, steps.csv, curves.png)."""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import signal
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from trainers.core import finetune
from trainers.core.errors import write_failed
from trainers.core.files import read_csv_rows, save_figure_atomic, write_csv_atomic, write_json_atomic
from trainers.core.hardware import cpu_name
from trainers.core.sources import save_model_atomic


def iterations(model) -> int:
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class StopAtStep(keras.callbacks.Callback):
    """Ends training when the optimizer has taken ``total_steps`` steps, however
    many epochs that took. A run resumed mid-epoch restarts that epoch's data
    from its first batch, so counting iterations (not epochs) is what makes an
    interrupted run end with the same iteration count as an uninterrupted one."""

    def __init__(self, total_steps: int):
        super().__init__()
        self.total_steps = total_steps

    def on_train_begin(self, logs=None):
        if iterations(self.model) >= self.total_steps:
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        if iterations(self.model) >= self.total_steps:
            self.model.stop_training = True


class Unfreeze(keras.callbacks.Callback):
    """``--freeze-epochs``: makes the ``frozen`` layers trainable again once
    the optimizer has taken ``at_step`` steps (at once on a resumed run already
    past it). Place it after :class:`Backup`, which restores the step count."""

    def __init__(self, frozen, at_step: int, log=print):
        super().__init__()
        self.frozen = list(frozen)
        self.at_step = at_step
        self.log = log
        self.done = False

    def _check(self):
        if not self.done and iterations(self.model) >= self.at_step:
            finetune.unfreeze(self.model, self.frozen)
            self.done = True
            self.log(
                f"backbone unfrozen at iteration {iterations(self.model)}: {len(self.frozen)} layers train from here"
            )

    def on_train_begin(self, logs=None):
        self._check()

    def on_train_batch_end(self, batch, logs=None):
        self._check()


class StopRequest:
    """SIGTERM (what Slurm, Kubernetes and spot machines send before they stop
    a job), caught for the life of a run: ``with StopRequest() as request:``
    installs the handler (from the main thread), ``request.requested`` says
    whether the signal came, and leaving restores the previous handler."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _request(self, signum, frame):
        self.requested = True

    def __enter__(self):

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._request)
        return self

    def __exit__(self, *exc):

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


class PreemptedAt(Exception):
    """Raised out of ``fit`` by :class:`Preemption` once its backup is written."""

    def __init__(self, iteration: int):
        super().__init__(f"stopped at iteration {iteration}")
        self.iteration = iteration


class Preemption(keras.callbacks.Callback):
    """Stops at the first step boundary after a :class:`StopRequest`: a
    backup of that step is written and :class:`PreemptedAt` leaves ``fit`` at
    once, so the same command resumes with no step lost. Raising (rather than
    ``stop_training``, after which Keras still runs the epoch's validation:
    a minute on Imagenette, past the 30 s that Kubernetes waits before
    SIGKILL) also keeps the cut epoch out of history.csv. ``agree``
    (multi-worker): a collective that is true on every worker when any worker
    was asked, called at every step on every worker, so all of them stop, and
    back up, at the same step. Place it after :class:`Backup`, whose step
    count it saves."""

    def __init__(self, request: StopRequest, backup: Backup, agree=None):
        super().__init__()
        self.request = request
        self.backup = backup
        self.agree = agree
        self.stopped_at = None

    def on_train_batch_end(self, batch, logs=None):
        stop = self.agree(self.request.requested) if self.agree else self.request.requested
        if stop and self.stopped_at is None:
            self.stopped_at = iterations(self.model)
            self.backup.save_now()
            raise PreemptedAt(self.stopped_at)


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops at the first non-finite figure and records the iteration and
    what it was, so the trainer can say where it happened: the training loss
    (every batch), the validation loss and metrics and every weight, the
    BatchNormalization statistics included (every epoch's end, and before
    every backup). Placed before :class:`Backup`, which then declines to save
    the broken state."""

    def __init__(self):
        super().__init__()
        self.bad_step = None
        self.bad_what = None
        self.bad_epoch = None

    def _stop(self, what, epoch=None):
        if self.bad_step is None:
            self.bad_step, self.bad_what, self.bad_epoch = iterations(self.model), what, epoch
        self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._stop("the training loss")

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            if key.startswith("val_") and not math.isfinite(float(value)):
                self._stop(f"the validation {key[4:]}", epoch + 1)
                return
        self.check_weights(epoch + 1)

    def check_weights(self, epoch=None, model=None) -> bool:
        """True when every weight of ``model`` (default: the guarded one) is
        finite; else stops the run, naming the first that is not."""
        model = model or self.model
        for weight in model.weights:
            if not np.isfinite(keras.ops.convert_to_numpy(weight)).all():
                if self.model is None:
                    self.set_model(model)
                self._stop(f"the weight {weight.path}", epoch)
                return False
        return True


class AverageBatchNormStatistics(keras.callbacks.Callback):
    """Keeps the BatchNormalization moving statistics equal on every replica.

    Keras 3 creates them with no distributed aggregation, so under a strategy
    with several replicas each replica (each worker) updates its own copy from
    its own share of the batch, and a saved model would carry one replica's
    statistics. This replaces every copy by the mean over all replicas at the
    end of each epoch (before validation), before each backup (``sync()``,
    called by :class:`Backup`) and at the end of training. The moving mean is
    an exponential average, linear in the batch means, so periodic averaging
    gives exactly the moving mean of the global batches; the moving variance
    becomes the mean of the replicas' within-batch variances, as tf.keras 2's
    on-read averaging gave. With ``--sync-bn`` the copies are equal anyway.
    Every worker calls it at the same iterations (it is a collective)."""

    def __init__(self, strategy, steps_per_epoch: int):
        super().__init__()
        self.strategy = strategy
        self.steps_per_epoch = steps_per_epoch
        self._sync = None

    def _build(self):

        stats = [
            v.value
            for layer in self.model._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization)
            for v in (layer.moving_mean, layer.moving_variance)
        ]
        strategy = self.strategy

        sizes = [int(v.shape.num_elements()) for v in stats]

        @tf.function
        def sync():
            # One all-reduce of all the statistics, packed into one vector.
            local = strategy.run(lambda: tf.concat([tf.reshape(v, [-1]) for v in stats], axis=0))
            means = tf.split(strategy.reduce("MEAN", local, axis=None), sizes)
            for v, m in zip(stats, means):
                v.assign(tf.reshape(m, v.shape))

        self._sync = sync if stats else (lambda: None)

    def sync(self):
        if self.strategy.num_replicas_in_sync == 1:
            return
        if self._sync is None:
            self._build()
        self._sync()

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 >= self.steps_per_epoch:
            self.sync()

    def on_train_end(self, logs=None):
        self.sync()


class Backup(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` made safe against ``kill -9``:

    * the weights (model and optimizer, iteration count included) and the
      metadata are written under temporary names and renamed, so a backup on
      disk is always whole: the old one until the new one is complete;
    * nothing is saved once the loss or a weight is non-finite, and the
      backup is kept until the trainer has written the run's results
      (:meth:`discard`);
    * ``restore_dir``: where to restore from, when it is not where this
      process saves (the multi-worker convention: see trainers/core/distributed.py).
    """

    def __init__(self, backup_dir, save_freq, guard: NonFiniteGuard, restore_dir=None, before_save=None):
        super().__init__(str(backup_dir), save_freq=save_freq, delete_checkpoint=True, double_checkpoint=False)
        self.guard = guard
        # Called before each save: e.g. the BN statistics averaged, the logs
        # flushed, so what is on disk matches the backup.
        self.before_save = list(before_save or [])
        # Multi-worker: every worker restores the chief's backup, and only the
        # chief saves into it (the others save into a temporary directory).
        self.restore_dir = pathlib.Path(restore_dir or backup_dir)

    def _load_model(self):
        saved = self._weights_path, self._training_metadata_path
        self._weights_path = str(self.restore_dir / pathlib.Path(saved[0]).name)
        self._training_metadata_path = str(self.restore_dir / pathlib.Path(saved[1]).name)
        try:
            super()._load_model()
        finally:
            self._weights_path, self._training_metadata_path = saved

    def _save_model(self):
        if self.guard.bad_step is not None or not self.guard.check_weights(model=self.model):
            return
        for hook in self.before_save:
            hook()
        try:
            os.makedirs(self.backup_dir, exist_ok=True)
        except OSError as error:
            raise write_failed(self.backup_dir, error) from None
        weights = pathlib.Path(self._weights_path)
        tmp = weights.with_name(f".tmp-{os.getpid()}-{weights.name}")
        try:
            self.model.save_weights(str(tmp), overwrite=True)
            os.replace(tmp, weights)
        except OSError as error:
            if tmp.exists():
                tmp.unlink()
            raise write_failed(weights, error) from None
        write_json_atomic(
            self._training_metadata_path,
            {"epoch": self._current_epoch, "batch": self._last_batch_seen, "iterations": iterations(self.model)},
        )

    def save_now(self):
        """A backup of this step, now (preemption)."""
        self._save_model()

    def on_train_end(self, logs=None):
        """Keeps the backup: the trainer discards it only once the final
        evaluation is finite and the run's results are written."""

    def discard(self):
        shutil.rmtree(self.backup_dir, ignore_errors=True)


class BestModel(keras.callbacks.Callback):
    """Keeps ``best.keras``: the model of the epoch with the highest
    ``monitor`` so far, written atomically; survives resumption through
    ``best.json``."""

    def __init__(self, run_dir, monitor="val_accuracy"):
        super().__init__()
        self.path = pathlib.Path(run_dir) / "best.keras"
        self.state_path = pathlib.Path(run_dir) / "best.json"
        self.monitor = monitor
        self.best = -math.inf
        if self.state_path.exists() and self.path.exists():
            self.best = json.loads(self.state_path.read_text())["value"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)) or float(value) <= self.best:
            return
        self.best = float(value)
        save_model_atomic(self.model, self.path)
        write_json_atomic(
            self.state_path, {"monitor": self.monitor, "value": self.best, "iterations": iterations(self.model)}
        )


class RunLog(keras.callbacks.Callback):
    """Writes ``history.csv`` (one row per epoch: iterations, learning rate,
    training and evaluation errors) and ``steps.csv`` (training loss and error
    over each window of ``log_every`` iterations), redraws ``curves.png``, and times the
    steady-state training steps.

    ``test_data``: evaluated at every epoch's end when validation is a split of
    its own, so the curves always show test error (the paper's Figure 6).
    On resumption, rows past the restored iteration are dropped: those
    iterations will be run again."""

    def __init__(self, run_dir, *, batch_size, log_every, test_data=None, title="", warmup_batches=5):
        super().__init__()
        self.run_dir = pathlib.Path(run_dir)
        self.batch_size = batch_size
        self.log_every = max(1, log_every)
        self.test_data = test_data
        self.title = title
        self.warmup_batches = warmup_batches
        self.rows = read_csv_rows(self.run_dir / "history.csv")
        self.steps = read_csv_rows(self.run_dir / "steps.csv")
        self.timed_steps = 0
        self.timed_seconds = 0.0
        # Each row names the CPU its epoch ran on: a run resumed across
        # sessions may span machines, and its speed is only read against one.
        self.cpu = cpu_name()

    def on_train_begin(self, logs=None):
        self._started = False

    def on_train_batch_begin(self, batch, logs=None):
        if self._started:
            return
        # At the first batch, not at on_train_begin: this callback may come
        # before the one that restores the backup (it must log a batch before
        # the backup of that batch is written).
        self._started = True
        start = iterations(self.model)
        self.rows = [r for r in self.rows if int(r["iterations"]) <= start]
        self.steps = [r for r in self.steps if int(r["iterations"]) <= start]
        self._last_logged = start

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._mark = None  # (iterations, time) once warm-up batches are done
        self._window = (0, 0.0, 0.0)  # batches, summed loss, summed accuracy at the last log

    def on_train_batch_end(self, batch, logs=None):
        step = iterations(self.model)
        self._last_batch = (step, time.perf_counter())
        if batch + 1 == self.warmup_batches:
            self._mark = self._last_batch
        if step - self._last_logged >= self.log_every and logs and "loss" in logs:
            # Keras' logs hold means since the epoch began; the rows hold the
            # means over the batches since the previous row (the paper's thin
            # training-error line), recovered from the running sums.
            n = batch + 1
            loss_sum, acc_sum = float(logs["loss"]) * n, float(logs.get("accuracy", math.nan)) * n
            n0, loss0, acc0 = self._window
            self._window = (n, loss_sum, acc_sum)
            self._last_logged = step
            self.steps.append(
                {
                    "iterations": step,
                    "loss": (loss_sum - loss0) / (n - n0),
                    "train_error": 1 - (acc_sum - acc0) / (n - n0),
                }
            )

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        now = time.perf_counter()
        step = iterations(self.model)
        epoch_rate = None
        if self._mark is not None and self._last_batch[0] > self._mark[0]:
            # Steady state: from the end of the warm-up batches to the end of
            # the epoch's last batch (evaluation is not counted).
            steps, seconds = self._last_batch[0] - self._mark[0], self._last_batch[1] - self._mark[1]
            self.timed_steps += steps
            self.timed_seconds += seconds
            epoch_rate = steps * self.batch_size / seconds
        row = {"epoch": epoch + 1, "iterations": step, "lr": _current_lr(self.model)}
        for key, value in logs.items():
            row[key] = float(value)
        for prefix in ("", "val_"):
            if f"{prefix}accuracy" in logs:
                row[f"{prefix}error"] = 1 - float(logs[f"{prefix}accuracy"])
            if f"{prefix}top5" in logs:
                row[f"{prefix}top5_error"] = 1 - float(logs[f"{prefix}top5"])
        if self.test_data is not None:
            result = self.model.evaluate(self.test_data, verbose=0, return_dict=True)
            row.update(test_loss=result["loss"], test_error=1 - result["accuracy"], test_top5_error=1 - result["top5"])
        elif "val_accuracy" in logs:
            row.update(
                test_loss=row["val_loss"], test_error=row["val_error"], test_top5_error=row.get("val_top5_error")
            )
        row["epoch_seconds"] = now - self._epoch_start
        row["images_per_second"] = epoch_rate if epoch_rate is not None else ""
        row["cpu"] = self.cpu
        self.rows.append(row)
        write_csv_atomic(self.run_dir / "history.csv", self.rows)
        if self.steps:
            write_csv_atomic(self.run_dir / "steps.csv", self.steps)
        draw_curves(self.run_dir / "curves.png", self.rows, self.steps, self.title)

    def flush(self):
        """Writes the step log as it is now (the backup calls this, so that a
        resumed run finds every logged iteration up to its backup)."""
        if self.steps:
            write_csv_atomic(self.run_dir / "steps.csv", self.steps)

    @property
    def images_per_second(self):
        return self.timed_steps * self.batch_size / self.timed_seconds if self.timed_seconds > 0 else None


def _current_lr(model):
    lr = model.optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))


def draw_curves(path, rows, steps, title=""):
    """Training error (thin) and test error (bold) against iterations, as the
    paper's Figure 6 draws them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if steps:
        x = [int(r["iterations"]) for r in steps]
        ax.plot(x, [100 * float(r["train_error"]) for r in steps], lw=0.8, color="C0", label="training error")
    elif rows:
        x = [int(r["iterations"]) for r in rows]
        ax.plot(x, [100 * float(r["error"]) for r in rows], lw=0.8, color="C0", label="training error")
    tests = [(int(r["iterations"]), float(r["test_error"])) for r in rows if r.get("test_error") not in (None, "")]
    if tests:
        ax.plot(
            [t[0] for t in tests], [100 * t[1] for t in tests], lw=2.5, color="C0", marker="o", ms=3, label="test error"
        )
    ax.set_xlabel("iterations")
    ax.set_ylabel("error (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure_atomic(fig, path)
