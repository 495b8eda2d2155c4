"""``train(config)``: one code path for every network, dataset and strategy.

The caller (``trainers/fit.py``, the tuner) passes a
:class:`~trainers.core.config.RunConfig` (or a plain dict of its settings);
this resolves what the run needs (precision, strategy, data, schedule, run
directory) onto its run object, builds model, optimizer and metrics inside
``strategy.scope()``, trains with ``model.fit`` and writes the run directory:

    config.json   the settings, resolved, and what the run derived (status: running/finished)
    model.keras   the final network          best.keras  best validation epoch
    history.csv   one row per epoch           steps.csv   loss every N steps
    metrics.json  final test top-1/top-5 error, balanced accuracy, macro-F1, worst class, wall time, images/second
    report/       the final model's per-class report on the test split (trainers.core.report)
    curves.png    training (thin) and test (bold) error against iterations
    logs/         TensorBoard               backup/      while unfinished
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import math
import os
import pathlib
import shutil
import time

import keras
import numpy as np

import resnet_keras
from trainers.core import balance, compat, distributed, finetune, recipes, runlock
from trainers.core import callbacks as cb
from trainers.core import data as data_lib
from trainers.core import report as report_lib
from trainers.core.config import RunConfig, record_identity
from trainers.core.errors import UserError, write_failed
from trainers.core.files import read_json, runs_root, write_json_atomic, write_text_atomic
from trainers.core.hardware import cpu_kernels, global_dtype_policy, resolve_precision, run_cpus
from trainers.core.sources import save_model_atomic

SYNTHETIC_NOTE = "SYNTHETIC DATA: generated in code, not a real dataset; numbers say nothing about real images"


class TrainingError(UserError):
    """The run itself failed (e.g. a non-finite loss); exit status 3."""

    exit_code = 3


class Preempted(UserError):
    """SIGTERM stopped the run after a backup; rerunning resumes. Exit status
    75 (EX_TEMPFAIL: "try again later")."""

    exit_code = 75


def dataset_slug(dataset: str) -> str:
    """The dataset's part of a run directory's name: imagenette_160px-v2, folder-NAME."""
    if dataset.startswith("folder:"):
        return "folder-" + (pathlib.Path(dataset[len("folder:") :]).expanduser().resolve().name or "root")
    return dataset.replace("/", "_")


def _default_run_dir(config: RunConfig) -> pathlib.Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return runs_root() / f"{config.arch}-{dataset_slug(config.dataset)}-{stamp}"


def _is_finished(run_dir: pathlib.Path) -> bool:
    return (run_dir / "metrics.json").exists()


def choose_run_dir(config: RunConfig) -> tuple[pathlib.Path, bool]:
    """The run directory, and whether it resumes an unfinished run.

    ``--output-dir`` names it: a finished run there is never overwritten; an
    unfinished run is resumed only by the same settings. Without it, the newest
    unfinished run of the same settings under saved_models/ is resumed (so the
    same command continues a killed run), or a new timestamped directory made.
    ``config`` is resolved (:meth:`RunConfig.resolved`).
    """
    identity = config.identity()
    if config.output_dir:
        run_dir = pathlib.Path(config.output_dir).expanduser().resolve()
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"--output-dir {run_dir} exists and is not a directory")
        if _is_finished(run_dir):
            raise UserError(f"{run_dir} holds a finished run; it is never overwritten. Choose another --output-dir")
        config_path = run_dir / "config.json"
        if config_path.exists():
            previous = record_identity(read_json(config_path, "run configuration"))
            if previous != identity:
                diff = {k: (previous[k], identity[k]) for k in identity if previous[k] != identity[k]}
                raise UserError(
                    f"{run_dir} holds an unfinished run with other settings {diff} (was, now); "
                    "rerun with the same settings to resume it, or choose another --output-dir"
                )
            if not config.resume:
                raise UserError(
                    f"{run_dir} holds an unfinished run and --no-resume was given; choose another --output-dir"
                )
            return run_dir, True
        if run_dir.exists() and any(p for p in run_dir.iterdir() if not p.name.startswith(".")):
            raise UserError(f"--output-dir {run_dir} is not empty and holds no run of this trainer")
        return run_dir, False
    if config.resume:
        candidates = sorted(runs_root().glob(f"{config.arch}-{dataset_slug(config.dataset)}-*"), reverse=True)
        for run_dir in candidates:
            config_path = run_dir / "config.json"
            if config_path.exists() and not _is_finished(run_dir):
                try:
                    previous = read_json(config_path, "run configuration")
                except UserError:
                    continue  # a corrupt directory of another run is not this one
                if record_identity(previous) == identity:
                    return run_dir, True
    return _default_run_dir(config), False


def _log(message, config: RunConfig):
    if config.verbose:
        prefix = "[synthetic] " if config.dataset == data_lib.SYNTHETIC else ""
        print(prefix + message, flush=True)


def train(config: RunConfig | dict, *, model=None, strategy=None) -> dict:
    """Trains one network; returns the contents of metrics.json (plus run_dir).

    ``config``: a :class:`RunConfig`, or a dict of its settings (a name that
    is no setting is a ``ValueError``; None values are defaults).

    ``model`` (the tuner's): a network already built by ``get_model`` inside
    ``strategy.scope()``; it must match the config's data (classes, image size).
    The global Keras dtype policy it sets for the run is put back on return,
    so a caller in the same process (a test, a notebook) builds its next
    network in the policy it had.
    """
    config = (config if isinstance(config, RunConfig) else RunConfig.from_dict(config)).resolved()
    with global_dtype_policy():
        return _train_in_policy(config, model, strategy)


MULTI_WORKER_OUTPUT = (
    "a multi-worker run needs --output-dir: one directory, on storage every worker can read, that all workers are "
    "given (the chief writes it; the others restore their backups from it)"
)


def _train_in_policy(config: RunConfig, model, strategy) -> dict:
    # Asked of the environment before the strategy exists, so that each worker says it at once rather than after
    # the whole cluster has connected.
    # (--strategy multi-worker without a cluster gets make_strategy's own message instead.)
    multi = strategy is None and distributed.wants_multi_worker(config.strategy) and distributed.cluster_tasks() > 1
    if multi and not config.output_dir:
        raise UserError(MULTI_WORKER_OUTPUT)
    strategy = strategy or distributed.make_strategy(config.strategy)  # first: the multi-worker strategy insists
    keras.utils.set_random_seed(config.seed)
    policy, why = resolve_precision(config.precision)
    keras.config.set_dtype_policy(policy)
    role = distributed.role(strategy)
    if role.multi_worker:
        compat.fix_multi_worker_scalar_reduction()
        if not config.output_dir:
            raise UserError(MULTI_WORKER_OUTPUT)
    run = _Run(config, strategy, role, policy, why)
    try:
        with cb.StopRequest() as run.request:  # SIGTERM from here on stops at a step boundary, with a backup
            return _train(run, model)
    except Exception as error:  # noqa: BLE001 (a corrupt or unreadable dataset becomes one line)
        explained = data_lib.explain_data_error(error, config.dataset, config.data_dir)
        created = run.created
        if (
            (explained is not None or isinstance(error, UserError) and not isinstance(error, TrainingError))
            and created is not None
            and not (created / "backup").exists()
        ):
            shutil.rmtree(created, ignore_errors=True)
        if explained is None:
            raise
        raise explained from None
    finally:
        if run.lock is not None:
            run.lock.release()
        distributed.cleanup(role, run.out_dir)


@dataclasses.dataclass
class _Run:
    """What the stages of :func:`_train` share: the settings and the
    strategy, then what each stage resolves for the next; config.json is
    :meth:`record`."""

    config: RunConfig  # resolved
    strategy: object
    role: distributed.Role
    policy: str  # the Keras dtype policy --precision resolved to
    why: str
    request: cb.StopRequest | None = None
    # The run directory's lock, released however the run ends, and the
    # directory itself where this process made it (removed again when the run
    # fails before its first backup: a failed start leaves nothing behind).
    lock: runlock.RunLock | None = None
    created: pathlib.Path | None = None
    batch: int = 0  # the global batch: --batch-size, or the recipe's
    info: data_lib.DataInfo | None = None
    schedule: recipes.Schedule | None = None
    steps_per_epoch: int = 0
    freeze_steps: int = 0
    run_dir: pathlib.Path | None = None
    out_dir: pathlib.Path | None = None  # where this process writes: run_dir on the chief
    resuming: bool = False
    cpu_kernels: str | None = None
    status: str = "running"
    init: dict | None = None  # what --init-from copied (finetune.initialize), where it did
    # The training split's images per class, and what --class-balance does with them (balance.plan): known for
    # image folders whatever the mode, and wherever a mode is set; None otherwise.
    class_counts: np.ndarray | None = None
    balance: dict | None = None

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def record(self) -> dict:
        """config.json: the settings, then what the run derived from them, in
        the layout (keys, order, values) every earlier version wrote, which
        other commands and old run directories rely on."""
        config, info = self.config, self.info
        record = {
            **config.to_dict(),
            "family": config.family,
            "depth": config.depth,
            "resolved_precision": self.policy,
            "resolved_strategy": type(self.strategy).__name__,
            "replicas": self.replicas,
            "workers": self.role.workers,
            "batch_size_resolved": self.batch,
            "freeze_steps": self.freeze_steps or None,
            "run_dir": str(self.run_dir),
            "data": {k: v for k, v in vars(info).items() if k not in ("class_names", "files", "skipped")},
            "class_names": info.class_names,
            "schedule": self.schedule.to_dict(),
            "synthetic": info.synthetic,
        }
        if info.synthetic:
            record["note"] = SYNTHETIC_NOTE
        record.update(cpu_kernels=self.cpu_kernels, status=self.status)
        if self.init is not None:
            record["init"] = self.init
        if self.balance is not None:
            record["balance"] = self.balance
        if info.skipped is not None:
            record["skipped_images"] = {
                "count": len(info.skipped),
                "files": _folder_files(info),
                "list": SKIPPED_IMAGES,
                "max_bad_fraction": config.max_bad_fraction,
            }
        return record


SKIPPED_IMAGES = "skipped_images.csv"


def _folder_files(info: data_lib.DataInfo) -> int:
    """An image folder's files, those skipped (--skip-bad-images) included."""
    return sum(len(paths) for paths, _ in info.files.values()) + len(info.skipped or ())


def _train(run: _Run, model):
    """The stages of a run, in order."""
    _plan(run)
    _open_run_dir(run)
    train_ds, val_ds, test_ds, mean = _data(run)
    model, frozen = _model(run, model, mean)
    run_log, backup, wall = _fit(run, model, train_ds, val_ds, test_ds, frozen)
    return _finish(run, model, test_ds, run_log, backup, wall)


def _plan(run: _Run) -> None:
    """Recipe, global batch, data description and schedule: everything that
    needs no file written, checked before anything is."""
    config = run.config
    recipe = recipes.get_recipe(config.recipe, config.family, config.depth)
    batch = config.batch_size or recipe.batch_size
    if batch % run.replicas:
        raise UserError(
            f"--batch-size {batch} does not divide across {run.replicas} replicas; "
            f"use a multiple of {run.replicas} (e.g. {run.replicas * max(1, round(batch / run.replicas))})"
        )
    run.batch = batch
    run.info = info = data_lib.describe(
        config.dataset,
        data_dir=config.data_dir,
        family=config.family,
        image_size=config.image_size,
        val_split=config.val_split,
        seed=config.seed,
        synthetic_classes=config.synthetic_classes,
        synthetic_train=config.synthetic_train,
        synthetic_test=config.synthetic_test,
        jpeg_quality=config.jpeg_quality,
        skip_bad_images=config.skip_bad_images,
        max_bad_fraction=config.max_bad_fraction,
    )
    mode = config.class_balance or "none"
    if mode != "none" or info.files is not None:  # an image folder's counts are known: always on record
        run.class_counts = data_lib.train_class_counts(info, config.seed)
        run.balance = balance.plan(mode, run.class_counts, info.class_names)
    if mode == "sampling":
        data_lib.check_even_sampling(info)
    run.steps_per_epoch = info.num_train // batch
    if run.steps_per_epoch < 1:
        raise UserError(f"--batch-size {batch} is larger than the training split ({info.num_train} images)")
    run.schedule = recipes.resolve_schedule(
        recipe,
        batch_size=batch,
        steps_per_epoch=run.steps_per_epoch,
        epochs=config.epochs,
        steps=config.steps,
        lr=config.lr,
        weight_decay=config.weight_decay,
        label_smoothing=config.label_smoothing,
        augment=config.augment,
        zero_init_residual=config.zero_init_residual,
        optimizer=config.optimizer,
        lr_schedule=config.lr_schedule,
        mixup=config.mixup,
    )
    run.freeze_steps = round(config.freeze_epochs * run.steps_per_epoch) if config.freeze_epochs else 0
    if run.freeze_steps >= run.schedule.total_steps:
        raise UserError(
            f"--freeze-epochs {config.freeze_epochs:g} ({run.freeze_steps} iterations) leaves nothing of this "
            f"{run.schedule.total_steps}-iteration run to train the backbone; give fewer, or more --epochs"
        )


def _open_run_dir(run: _Run) -> None:
    """Chooses the run directory, locks it (the chief) and writes config.json."""
    config, role, info = run.config, run.role, run.info
    if role.multi_worker:
        # Every worker checks the directory before the chief writes to it, and
        # all stop if any objects (no worker is left waiting for the others).
        try:
            run_dir, resuming = choose_run_dir(config)
            problem = None
        except UserError as error:
            problem = error
        if not distributed.all_agree(run.strategy, problem is None):
            raise problem or UserError(
                f"another worker refused the run directory {config.output_dir} (see its message)"
            )
    else:
        run_dir, resuming = choose_run_dir(config)
    created = not run_dir.exists()
    if role.is_chief:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise write_failed(run_dir, error) from None
        run.lock = runlock.acquire(run_dir)
        if created:
            run.created = run_dir
        # Checked again under the lock: another process may have started or
        # finished this directory since it was chosen.
        if _is_finished(run_dir):
            raise UserError(f"{run_dir} holds a finished run; it is never overwritten. Choose another --output-dir")
        if not resuming and (run_dir / "config.json").exists():
            raise UserError(f"{run_dir} was just started by another process; choose another --output-dir")
    run.run_dir, run.resuming = run_dir, resuming
    run.out_dir = distributed.output_dir(role, run_dir)
    run.cpu_kernels = cpu_kernels()
    if resuming and config.init_from and (run_dir / "config.json").exists():
        # A run resumed from its backup is not initialised again: what --init-from copied stays on record.
        run.init = read_json(run_dir / "config.json", "run configuration").get("init")
    if role.is_chief:
        _write_config(run)

    _log(f"{'resuming' if resuming else 'new'} run: {run_dir}", config)
    _log(
        f"{config.arch} on {info.name} ({info.num_train} train / {info.num_val} val / {info.num_test} "
        f"{info.test_split} images, {info.num_classes} classes, {info.image_size}px)",
        config,
    )
    _log(
        f"precision {run.policy} ({run.why}); CPU kernels {run.cpu_kernels}; strategy {type(run.strategy).__name__} "
        f"with {run.replicas} replica(s)"
        + (
            f" on {role.workers} workers (this is {role.name}{', the chief' if role.is_chief else ''})"
            if role.multi_worker
            else ""
        )
        + f"; global batch {run.batch} = {run.batch // run.replicas} per replica",
        config,
    )
    _log(recipes.describe_schedule(run.schedule), config)


def _write_config(run: _Run) -> None:
    write_json_atomic(run.out_dir / "config.json", run.record())


def _data(run: _Run):
    """The training, validation and test pipelines, and the per-pixel mean
    (computed once and kept in the run directory)."""
    config, info = run.config, run.info
    if info.skipped is not None:
        _write_skipped(run)
    if run.balance is not None:
        _log(balance.describe(run.balance), config)
    mixup = run.schedule.mixup
    train_ds = data_lib.distributed_train_data(
        run.strategy,
        info,
        run.batch,
        config.seed,
        augment=run.schedule.augment,
        mixup=mixup,
        sample_evenly=config.class_balance == "sampling",
    )
    eval_batch = max(run.batch, 256 // run.replicas * run.replicas)
    test_ds = data_lib.eval_pipeline(info, "test", eval_batch)
    val_ds = data_lib.eval_pipeline(info, "val", eval_batch) if info.num_val else test_ds
    if mixup:  # one kind of label in the whole run: mixup's probability vectors
        test_ds = data_lib.one_hot_labels(test_ds, info.num_classes)
        val_ds = data_lib.one_hot_labels(val_ds, info.num_classes) if info.num_val else test_ds
    if (run.run_dir / "pixel_mean.npy").exists():
        mean = np.load(run.run_dir / "pixel_mean.npy")
    else:
        _log("computing the per-pixel mean of the training split", config)
        mean = data_lib.pixel_mean(info, config.seed)
        tmp = run.out_dir / f".pixel_mean.tmp-{os.getpid()}.npy"
        try:
            np.save(tmp, mean)
            os.replace(tmp, run.out_dir / "pixel_mean.npy")
        except OSError as error:
            tmp.unlink(missing_ok=True)
            raise write_failed(run.out_dir / "pixel_mean.npy", error) from None
    return train_ds, val_ds, test_ds, mean


def _write_skipped(run: _Run) -> None:
    """--skip-bad-images: the files left out, each with its split and reason, in RUN_DIR/skipped_images.csv
    (written atomically, on every start: it lists what this start skipped), and one line saying how many."""
    info = run.info
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "split", "reason"])
    writer.writerows(info.skipped)
    write_text_atomic(run.out_dir / SKIPPED_IMAGES, buffer.getvalue())
    _log(
        f"skipped {len(info.skipped):,} of {_folder_files(info):,} files that do not decode: "
        f"{run.run_dir / SKIPPED_IMAGES}",
        run.config,
    )


def _model(run: _Run, model, mean):
    """Builds (or checks the tuner's) network in the strategy's scope, sets its
    input mean, copies --init-from weights, compiles it, and freezes the
    backbone for --freeze-epochs; returns the model and the frozen layers."""
    config, info, schedule = run.config, run.info, run.schedule
    with run.strategy.scope():
        if model is None:
            try:
                model = resnet_keras.get_model(
                    config.arch,
                    num_classes=info.num_classes,
                    input_shape=(info.image_size,) * 2 + (3,),
                    shortcut=config.shortcut,
                    width=config.width,
                    stage_depths=config.stage_depths,
                    synchronized_bn=bool(config.sync_bn),
                    seed=config.seed,
                    zero_init_residual=schedule.zero_init_residual,
                    **config.arch_tweaks(),
                )
            except ValueError as error:
                raise UserError(str(error)) from None
        elif model.output_shape[-1] != info.num_classes or model.input_shape[1] != info.image_size:
            raise ValueError(
                f"model {model.name!r} does not fit {info.name} ({info.num_classes} classes, {info.image_size}px)"
            )
        resnet_keras.get_normalization(model).set_statistics(mean)
        if config.init_from and not (run.resuming and (run.run_dir / "backup").exists()):
            run.init = init = finetune.initialize(model, config.init_from, class_names=info.class_names)
            if run.role.is_chief:
                _write_config(run)  # on record from now on: a resumed run is not initialised again
            _log(
                f"initialised from {config.init_from} ({init['kind']}): classifier {init['classifier']}, "
                f"input mean from the {init['normalization']}",
                config,
            )
        optimizer = recipes.make_optimizer(schedule, model.trainable_variables)
        top_k = min(5, info.num_classes)
        if schedule.mixup:
            # Labels are probability vectors (data_lib.mix_batch); accuracy counts the argmax of the label.
            loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=schedule.label_smoothing)
            metrics = [
                keras.metrics.CategoricalAccuracy(name="accuracy"),
                keras.metrics.TopKCategoricalAccuracy(k=top_k, name="top5"),
            ]
        else:
            if schedule.label_smoothing:
                loss = recipes.SparseCrossentropy(label_smoothing=schedule.label_smoothing)
            else:
                loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            metrics = [
                keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                keras.metrics.SparseTopKCategoricalAccuracy(k=top_k, name="top5"),
            ]
        if config.class_balance == "weights":
            # Inside the loss, for either kind of label (mixup's probability vectors too); the metrics unweighted.
            loss = balance.ClassWeightedCrossentropy(
                balance.class_weights(run.class_counts),
                label_smoothing=schedule.label_smoothing,
                sparse=not schedule.mixup,
            )
        model.compile(
            optimizer=optimizer,
            loss=loss,
            metrics=metrics,
            jit_compile=bool(config.jit_compile),
            steps_per_execution=config.steps_per_execution,
        )
        frozen = []
        if run.freeze_steps:
            # The optimizer holds a slot for every variable in both phases, so
            # a backup of either phase restores into the same structure.
            optimizer.build(model.trainable_variables)
            frozen = finetune.freeze_backbone(model)
    labels = ((run.batch, info.num_classes), "float32") if schedule.mixup else ((run.batch,), "int64")
    images = ((run.batch, info.image_size, info.image_size, 3), "float32")
    compat.build_before_fit(model, run.strategy, (images, labels))
    return model, frozen


def _fit(run: _Run, model, train_ds, val_ds, test_ds, frozen):
    """``model.fit`` with the trainer's callbacks; a preempted or non-finite
    run, or one that ended short, stops here. Returns the run log, the backup
    callback and the seconds this session trained."""
    config, info, schedule, role = run.config, run.info, run.schedule, run.role
    total = schedule.total_steps
    guard = cb.NonFiniteGuard()
    title = f"{config.arch} on {info.name}" + (" (SYNTHETIC DATA)" if info.synthetic else "")
    run_log = cb.RunLog(
        run.out_dir,
        batch_size=run.batch,
        log_every=config.log_every,
        test_data=test_ds if info.num_val else None,
        title=title,
    )
    bn_statistics = cb.AverageBatchNormStatistics(run.strategy, run.steps_per_epoch)
    backup = cb.Backup(
        run.out_dir / "backup",
        save_freq=config.backup_every,
        guard=guard,
        restore_dir=run.run_dir / "backup",
        before_save=[bn_statistics.sync, run_log.flush],
    )
    preemption = cb.Preemption(
        run.request, backup, agree=distributed.any_worker(run.strategy) if role.multi_worker else None
    )
    callbacks = [
        guard,  # first: the backup must not save a non-finite state
        bn_statistics,
        run_log,  # before the backup: a batch is logged before its backup is written
        backup,
        preemption,  # after the backup's own step count
        cb.StopAtStep(total),
        cb.BestModel(run.out_dir),
        keras.callbacks.TensorBoard(log_dir=str(run.out_dir / "logs"), write_graph=False),
    ]
    if frozen:
        _log(
            f"backbone frozen for the first {run.freeze_steps} iterations ({len(frozen)} layers; "
            "BatchNormalization in inference mode): the classifier trains alone",
            config,
        )
        callbacks.append(cb.Unfreeze(frozen, run.freeze_steps, log=lambda message: _log(message, config)))
    if schedule.kind == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_accuracy",
                mode="max",
                factor=schedule.plateau_factor,
                patience=schedule.plateau_patience,
                verbose=1,
            )
        )
    started = time.time()
    try:
        model.fit(
            train_ds,
            epochs=math.ceil(total / run.steps_per_epoch),
            steps_per_epoch=run.steps_per_epoch,
            validation_data=val_ds,
            callbacks=callbacks,
            verbose=config.verbose,
            shuffle=False,
        )
    except cb.PreemptedAt:
        pass  # preemption.stopped_at says where; its backup is written
    wall = time.time() - started

    if preemption.stopped_at is not None:
        if role.multi_worker:
            distributed.barrier(run.strategy)  # the chief's backup is written before any worker leaves
        raise Preempted(
            f"stopped by SIGTERM at iteration {preemption.stopped_at}: a backup of that iteration is in "
            f"{run.run_dir / 'backup'}; rerun the same command to resume"
        )
    if guard.bad_step is not None:
        where = f"at iteration {guard.bad_step}" + (f" (end of epoch {guard.bad_epoch})" if guard.bad_epoch else "")
        raise TrainingError(
            f"{guard.bad_what} became non-finite {where}; training stopped. The last good backup "
            f"is kept in {run.run_dir / 'backup'} (rerunning resumes from it); consider a lower --lr"
        )
    done = cb.iterations(model)
    if done != total:
        raise TrainingError(f"training ended after {done} iterations instead of {total}; rerun to resume")
    return run_log, backup, wall


def _finish(run: _Run, model, test_ds, run_log, backup, wall) -> dict:
    """The final test evaluation (refused when non-finite), then model.keras,
    metrics.json and config.json written, the backup discarded last."""
    config, info, role = run.config, run.info, run.role
    done = cb.iterations(model)
    result = model.evaluate(test_ds, verbose=0, return_dict=True)
    bad = [key for key in ("loss", "accuracy", "top5") if not math.isfinite(float(result[key]))]
    if bad:
        raise TrainingError(
            f"the final {info.test_split} {bad[0]} is non-finite ({float(result[bad[0]])}) after {done} iterations; "
            f"nothing is reported as finished. The last good backup is kept in {run.run_dir / 'backup'}"
        )
    metrics = {
        "arch": config.arch,
        "dataset": info.name,
        "synthetic": info.synthetic,
        "test_split": info.test_split,
        "test_top1_error": 1 - float(result["accuracy"]),
        "test_top5_error": 1 - float(result["top5"]),
        "test_loss": float(result["loss"]),
        "iterations": done,
        "epochs": done / run.steps_per_epoch,
        # Across resumptions: the epochs' time (training and evaluation).
        "wall_seconds": sum(float(row["epoch_seconds"]) for row in run_log.rows),
        "wall_seconds_this_session": wall,
        "train_images_per_second": run_log.images_per_second,
        "precision": run.policy,
        "replicas": run.replicas,
        "best_val_accuracy": max(
            (float(row["val_accuracy"]) for row in run_log.rows if row.get("val_accuracy") not in (None, "")),
            default=None,
        ),
        "validated_on": "val split" if info.num_val else info.test_split,
        "cpus": run_cpus(run_log.rows),  # the CPUs the epochs ran on (history.csv has each epoch's)
    }
    metrics["weights_sha256"] = distributed.weights_fingerprint(model)
    if info.synthetic:
        metrics["note"] = SYNTHETIC_NOTE
    if role.is_chief:  # the final model's per-class report on the test split: one more pass over it
        where = run.out_dir / "report"
        metrics.update(report_lib.run_report(model, test_ds, info, where, arch=config.arch, multi=run.replicas > 1))
        _log(f"per-class report on {info.test_split}: {report_lib.summary_line(metrics)}; {where}", config)
    save_model_atomic(model, run.out_dir / "model.keras")
    write_json_atomic(run.out_dir / "metrics.json", metrics)
    run.status = "finished"
    _write_config(run)
    backup.discard()
    if role.multi_worker:
        # No worker leaves before the chief has written everything: a worker
        # that exits early can make the chief fail on missing heartbeats.
        distributed.barrier(run.strategy)
    _log(
        f"done: {done} iterations; test top-1 error {100 * metrics['test_top1_error']:.2f}%, "
        f"top-5 error {100 * metrics['test_top5_error']:.2f}% on {info.name} {info.test_split}; "
        + (
            f"{metrics['train_images_per_second']:.0f} images/s"
            if metrics["train_images_per_second"]
            else "images/s not measured (too few steady-state steps)"
        )
        + f"; run dir {run.run_dir}"
        + (f"; weights sha256 {metrics['weights_sha256']}" if role.multi_worker else ""),
        config,
    )
    return {**metrics, "run_dir": str(run.run_dir)}
