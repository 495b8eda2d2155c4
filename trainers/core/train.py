"""``train(config)``: one code path for every network, dataset and strategy.

The caller (``trainers/fit.py``, later the tuner) passes a plain dict of
settings; this resolves it (precision, strategy, data, schedule, run
directory), builds model, optimizer and metrics inside ``strategy.scope()``,
trains with ``model.fit`` and writes the run directory:

    config.json   the fully resolved configuration (status: running/finished)
    model.keras   the final network          best.keras  best validation epoch
    history.csv   one row per epoch           steps.csv   loss every N steps
    metrics.json  final test top-1/top-5 error, wall time, images/second
    curves.png    training (thin) and test (bold) error against iterations
    logs/         TensorBoard               backup/      while unfinished
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import pathlib
import shutil
import time

import keras
import numpy as np

import resnet_keras
from trainers.core import callbacks as cb
from trainers.core import compat
from trainers.core import data as data_lib
from trainers.core import distributed
from trainers.core import finetune
from trainers.core import recipes
from trainers.core import runlock
from trainers.core.common import (
    cpu_kernels,
    global_dtype_policy,
    read_json,
    run_cpus,
    UserError,
    resolve_precision,
    save_model_atomic,
    write_failed,
    write_json_atomic,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def runs_root() -> pathlib.Path:
    """Where runs land without --output-dir: saved_models/ of the repository, or
    $RESNET_KERAS_RUNS (tests point it at a temporary directory)."""
    return pathlib.Path(os.environ.get("RESNET_KERAS_RUNS") or ROOT / "saved_models")
DEFAULT_DATASET = {"cifar": "cifar10", "imagenet": "imagenette/160px-v2"}
SYNTHETIC_NOTE = "SYNTHETIC DATA: generated in code, not a real dataset; numbers say nothing about real images"

# Settings that decide what a run computes: a run directory is resumed only by
# a command with the same values.
IDENTITY_KEYS = (
    "arch", "dataset", "image_size", "epochs", "steps", "batch_size", "recipe", "lr", "weight_decay",
    "shortcut", "width", "stage_depths", "precision", "jit_compile", "sync_bn", "seed", "val_split", "jpeg_quality",
    "augment", "label_smoothing", "zero_init_residual", "init_from", "freeze_epochs",
)  # fmt: skip


class TrainingError(UserError):
    """The run itself failed (e.g. a non-finite loss); exit status 3."""

    exit_code = 3


class Preempted(UserError):
    """SIGTERM stopped the run after a backup; rerunning resumes. Exit status
    75 (EX_TEMPFAIL: "try again later")."""

    exit_code = 75


DEFAULTS = {
    "arch": None,
    "dataset": None,
    "data_dir": None,
    "image_size": None,
    "epochs": None,
    "steps": None,
    "batch_size": None,
    "recipe": None,  # paper, or finetune with init_from
    "lr": None,
    "weight_decay": None,
    "shortcut": None,
    "width": 1.0,
    "stage_depths": None,
    "precision": "auto",
    "jit_compile": False,
    "strategy": "auto",
    "sync_bn": False,
    "output_dir": None,
    "seed": 0,
    "val_split": 0.0,
    "resume": True,
    "backup_every": 200,
    "log_every": 20,
    "steps_per_execution": 1,
    "verbose": 2,
    "synthetic_train": 4096,
    "synthetic_test": 1024,
    "synthetic_classes": 10,
    "jpeg_quality": None,
    "augment": None,
    "label_smoothing": None,
    "zero_init_residual": None,
    "init_from": None,
    "freeze_epochs": None,
}


def resolve(config: dict) -> dict:
    """Fills defaults and checks every setting that needs no data or device."""
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    c = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    if c["arch"] is None:
        raise UserError("--arch is required; known: " + ", ".join(resnet_keras.list_models()))
    try:
        spec = resnet_keras.resolve_spec(c["arch"])
    except ValueError as error:
        raise UserError(str(error)) from None
    c["recipe"] = c["recipe"] or ("finetune" if c["init_from"] else "paper")
    if c["init_from"]:
        c["init_from"] = str(pathlib.Path(c["init_from"]).expanduser().resolve())
    if c["freeze_epochs"] is not None:
        if not (isinstance(c["freeze_epochs"], (int, float)) and math.isfinite(c["freeze_epochs"])
                and c["freeze_epochs"] >= 0):  # fmt: skip
            raise UserError(f"--freeze-epochs {c['freeze_epochs']}; expected a number of epochs >= 0")
        if c["freeze_epochs"] and not c["init_from"]:
            raise UserError("--freeze-epochs needs --init-from: it trains a new classifier on a trained backbone")
        c["freeze_epochs"] = c["freeze_epochs"] or None
    c["family"] = spec.family
    c["depth"] = spec.depth
    c["dataset"] = c["dataset"] or DEFAULT_DATASET[spec.family]
    size = spec.default_input_shape[0] if c["image_size"] is None else c["image_size"]
    if not isinstance(size, int) or size < spec.total_stride:
        raise UserError(
            f"--image-size {size} is too small for {c['arch']!r}: its total stride is {spec.total_stride}"
        )
    c["image_size"] = size
    if not (isinstance(c["seed"], int) and 0 <= c["seed"] < 2**32):
        raise UserError(f"--seed {c['seed']}; expected an integer in [0, 2**32)")
    if c["dataset"] == data_lib.SYNTHETIC:
        for key, low in (("synthetic_classes", 2), ("synthetic_train", 1), ("synthetic_test", 1)):
            if c[key] < low:
                raise UserError(f"--{key.replace('_', '-')} {c[key]}; expected an integer >= {low}")
    if c["batch_size"] is not None and c["batch_size"] < 1:
        raise UserError(f"--batch-size {c['batch_size']}; expected a positive integer")
    for key in ("backup_every", "log_every", "steps_per_execution"):
        if c[key] < 1:
            raise UserError(f"--{key.replace('_', '-')} {c[key]}; expected a positive integer")
    return c


def dataset_slug(dataset: str) -> str:
    """The dataset's part of a run directory's name: imagenette_160px-v2, folder-NAME."""
    if dataset.startswith("folder:"):
        return "folder-" + (pathlib.Path(dataset[len("folder:"):]).expanduser().resolve().name or "root")
    return dataset.replace("/", "_")


def _default_run_dir(c) -> pathlib.Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return runs_root() / f"{c['arch']}-{dataset_slug(c['dataset'])}-{stamp}"


def _identity(c) -> dict:
    return {key: c.get(key) for key in IDENTITY_KEYS}


def _is_finished(run_dir: pathlib.Path) -> bool:
    return (run_dir / "metrics.json").exists()


def choose_run_dir(c) -> tuple[pathlib.Path, bool]:
    """The run directory, and whether it resumes an unfinished run.

    ``--output-dir`` names it: a finished run there is never overwritten; an
    unfinished run is resumed only by the same settings. Without it, the newest
    unfinished run of the same settings under saved_models/ is resumed (so the
    same command continues a killed run), or a new timestamped directory made.
    """
    if c["output_dir"]:
        run_dir = pathlib.Path(c["output_dir"]).expanduser().resolve()
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"--output-dir {run_dir} exists and is not a directory")
        if _is_finished(run_dir):
            raise UserError(f"{run_dir} holds a finished run; it is never overwritten. Choose another --output-dir")
        config_path = run_dir / "config.json"
        if config_path.exists():
            previous = read_json(config_path, "run configuration")
            if _identity(previous) != _identity(c):
                diff = {k: (previous.get(k), c.get(k)) for k in IDENTITY_KEYS if previous.get(k) != c.get(k)}
                raise UserError(
                    f"{run_dir} holds an unfinished run with other settings {diff} (was, now); "
                    "rerun with the same settings to resume it, or choose another --output-dir"
                )
            if not c["resume"]:
                raise UserError(f"{run_dir} holds an unfinished run and --no-resume was given; choose another --output-dir")
            return run_dir, True
        if run_dir.exists() and any(p for p in run_dir.iterdir() if not p.name.startswith(".")):
            raise UserError(f"--output-dir {run_dir} is not empty and holds no run of this trainer")
        return run_dir, False
    if c["resume"]:
        candidates = sorted(runs_root().glob(f"{c['arch']}-{dataset_slug(c['dataset'])}-*"), reverse=True)
        for run_dir in candidates:
            config_path = run_dir / "config.json"
            if config_path.exists() and not _is_finished(run_dir):
                try:
                    previous = read_json(config_path, "run configuration")
                except UserError:
                    continue  # a corrupt directory of another run is not this one
                if _identity(previous) == _identity(c):
                    return run_dir, True
    return _default_run_dir(c), False


def _log(message, c):
    if c["verbose"]:
        prefix = "[synthetic] " if c["dataset"] == data_lib.SYNTHETIC else ""
        print(prefix + message, flush=True)


def train(config: dict, *, model=None, strategy=None) -> dict:
    """Trains one network; returns the contents of metrics.json (plus run_dir).

    ``model`` (the tuner's): a network already built by ``get_model`` inside
    ``strategy.scope()``; it must match the config's data (classes, image size).
    The global Keras dtype policy it sets for the run is put back on return,
    so a caller in the same process (a test, a notebook) builds its next
    network in the policy it had.
    """
    with global_dtype_policy():
        return _train_in_policy(config, model, strategy)


def _train_in_policy(config: dict, model, strategy) -> dict:
    c = resolve(config)
    strategy = strategy or distributed.make_strategy(c["strategy"])  # first: the multi-worker strategy insists
    keras.utils.set_random_seed(c["seed"])
    policy, why = resolve_precision(c["precision"])
    c["resolved_precision"] = policy
    keras.config.set_dtype_policy(policy)
    replicas = strategy.num_replicas_in_sync
    role = distributed.role(strategy)
    c["resolved_strategy"] = type(strategy).__name__
    c["replicas"] = replicas
    c["workers"] = role.workers
    if role.multi_worker:
        compat.fix_multi_worker_scalar_reduction()
        if not c["output_dir"]:
            raise UserError(
                "a multi-worker run needs --output-dir: one directory, on storage every worker can read, that all "
                "workers are given (the chief writes it; the others restore their backups from it)"
            )
    run = _Run(c, strategy, role, policy, why)
    try:
        with cb.StopRequest() as run.request:  # SIGTERM from here on stops at a step boundary, with a backup
            return _train(run, model)
    except Exception as error:  # noqa: BLE001 (a corrupt or unreadable dataset becomes one line)
        explained = data_lib.explain_data_error(error, c["dataset"], c["data_dir"])
        created = run.created
        if (explained is not None or isinstance(error, UserError) and not isinstance(error, TrainingError)) \
                and created is not None and not (created / "backup").exists():  # fmt: skip
            shutil.rmtree(created, ignore_errors=True)
        if explained is None:
            raise
        raise explained from None
    finally:
        if run.lock is not None:
            run.lock.release()
        distributed.cleanup(role, c.get("out_dir"))


@dataclasses.dataclass
class _Run:
    """What the stages of :func:`_train` share: the settings and the
    strategy, then what each stage resolves for the next."""

    c: dict
    strategy: object
    role: distributed.Role
    policy: str
    why: str
    request: cb.StopRequest | None = None
    # The run directory's lock, released however the run ends, and the
    # directory itself where this process made it (removed again when the run
    # fails before its first backup: a failed start leaves nothing behind).
    lock: runlock.RunLock | None = None
    created: pathlib.Path | None = None
    batch: int = 0
    info: data_lib.DataInfo | None = None
    schedule: dict | None = None
    steps_per_epoch: int = 0
    freeze_steps: int = 0
    run_dir: pathlib.Path | None = None
    out_dir: pathlib.Path | None = None
    resuming: bool = False

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync


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
    c = run.c
    recipe = recipes.get_recipe(c["recipe"], c["family"], c["depth"])
    batch = c["batch_size"] or recipe.batch_size
    if batch % run.replicas:
        raise UserError(
            f"--batch-size {batch} does not divide across {run.replicas} replicas; "
            f"use a multiple of {run.replicas} (e.g. {run.replicas * max(1, round(batch / run.replicas))})"
        )
    c["batch_size_resolved"] = run.batch = batch
    run.info = info = data_lib.describe(
        c["dataset"], data_dir=c["data_dir"], family=c["family"], image_size=c["image_size"],
        val_split=c["val_split"], seed=c["seed"], synthetic_classes=c["synthetic_classes"],
        synthetic_train=c["synthetic_train"], synthetic_test=c["synthetic_test"], jpeg_quality=c["jpeg_quality"],
    )  # fmt: skip
    run.steps_per_epoch = info.num_train // batch
    if run.steps_per_epoch < 1:
        raise UserError(f"--batch-size {batch} is larger than the training split ({info.num_train} images)")
    run.schedule = recipes.resolve_schedule(
        recipe, batch_size=batch, steps_per_epoch=run.steps_per_epoch, epochs=c["epochs"], steps=c["steps"],
        lr=c["lr"], weight_decay=c["weight_decay"], label_smoothing=c["label_smoothing"], augment=c["augment"],
        zero_init_residual=c["zero_init_residual"],
    )  # fmt: skip
    run.freeze_steps = round(c["freeze_epochs"] * run.steps_per_epoch) if c["freeze_epochs"] else 0
    if run.freeze_steps >= run.schedule["total_steps"]:
        raise UserError(
            f"--freeze-epochs {c['freeze_epochs']:g} ({run.freeze_steps} iterations) leaves nothing of this "
            f"{run.schedule['total_steps']}-iteration run to train the backbone; give fewer, or more --epochs"
        )
    c["freeze_steps"] = run.freeze_steps or None


def _open_run_dir(run: _Run) -> None:
    """Chooses the run directory, locks it (the chief) and writes config.json."""
    c, role, info = run.c, run.role, run.info
    if role.multi_worker:
        # Every worker checks the directory before the chief writes to it, and
        # all stop if any objects (no worker is left waiting for the others).
        try:
            run_dir, resuming = choose_run_dir(c)
            problem = None
        except UserError as error:
            problem = error
        if not distributed.all_agree(run.strategy, problem is None):
            raise problem or UserError(f"another worker refused the run directory {c['output_dir']} (see its message)")
    else:
        run_dir, resuming = choose_run_dir(c)
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
    c["out_dir"] = str(run.out_dir)
    c["run_dir"] = str(run_dir)
    c["data"] = {k: v for k, v in vars(info).items() if k not in ("class_names", "files")}
    c["class_names"] = info.class_names
    c["schedule"] = run.schedule
    c["synthetic"] = info.synthetic
    if info.synthetic:
        c["note"] = SYNTHETIC_NOTE
    c["cpu_kernels"] = cpu_kernels()
    c["status"] = "running"
    if role.is_chief:
        _write_config(run)

    _log(f"{'resuming' if resuming else 'new'} run: {run_dir}", c)
    _log(f"{c['arch']} on {info.name} ({info.num_train} train / {info.num_val} val / {info.num_test} "
         f"{info.test_split} images, {info.num_classes} classes, {info.image_size}px)", c)  # fmt: skip
    _log(f"precision {run.policy} ({run.why}); CPU kernels {c['cpu_kernels']}; strategy {c['resolved_strategy']} with {run.replicas} replica(s)"
         + (f" on {role.workers} workers (this is {role.name}{', the chief' if role.is_chief else ''})"
            if role.multi_worker else "")
         + f"; global batch {run.batch} = {run.batch // run.replicas} per replica", c)  # fmt: skip
    _log(recipes.describe_schedule(run.schedule), c)


def _write_config(run: _Run) -> None:
    write_json_atomic(run.out_dir / "config.json", {k: v for k, v in run.c.items() if k != "out_dir"})


def _data(run: _Run):
    """The training, validation and test pipelines, and the per-pixel mean
    (computed once and kept in the run directory)."""
    c, info = run.c, run.info
    train_ds = data_lib.distributed_train_data(run.strategy, info, run.batch, c["seed"], augment=run.schedule["augment"])
    eval_batch = max(run.batch, 256 // run.replicas * run.replicas)
    test_ds = data_lib.eval_pipeline(info, "test", eval_batch)
    val_ds = data_lib.eval_pipeline(info, "val", eval_batch) if info.num_val else test_ds
    if (run.run_dir / "pixel_mean.npy").exists():
        mean = np.load(run.run_dir / "pixel_mean.npy")
    else:
        _log("computing the per-pixel mean of the training split", c)
        mean = data_lib.pixel_mean(info, c["seed"])
        tmp = run.out_dir / f".pixel_mean.tmp-{os.getpid()}.npy"
        try:
            np.save(tmp, mean)
            os.replace(tmp, run.out_dir / "pixel_mean.npy")
        except OSError as error:
            tmp.unlink(missing_ok=True)
            raise write_failed(run.out_dir / "pixel_mean.npy", error) from None
    return train_ds, val_ds, test_ds, mean


def _model(run: _Run, model, mean):
    """Builds (or checks the tuner's) network in the strategy's scope, sets its
    input mean, copies --init-from weights, compiles it, and freezes the
    backbone for --freeze-epochs; returns the model and the frozen layers."""
    c, info, schedule = run.c, run.info, run.schedule
    with run.strategy.scope():
        if model is None:
            try:
                model = resnet_keras.get_model(
                    c["arch"], num_classes=info.num_classes, input_shape=(info.image_size,) * 2 + (3,),
                    shortcut=c["shortcut"], width=c["width"], stage_depths=c["stage_depths"],
                    synchronized_bn=bool(c["sync_bn"]), seed=c["seed"],
                    zero_init_residual=schedule["zero_init_residual"],
                )  # fmt: skip
            except ValueError as error:
                raise UserError(str(error)) from None
        elif model.output_shape[-1] != info.num_classes or model.input_shape[1] != info.image_size:
            raise ValueError(f"model {model.name!r} does not fit {info.name} ({info.num_classes} classes, {info.image_size}px)")
        resnet_keras.get_normalization(model).set_statistics(mean)
        if c["init_from"] and not (run.resuming and (run.run_dir / "backup").exists()):
            c["init"] = finetune.initialize(model, c["init_from"], class_names=info.class_names)
            _log(f"initialised from {c['init_from']} ({c['init']['kind']}): classifier {c['init']['classifier']}, "
                 f"input mean from the {c['init']['normalization']}", c)  # fmt: skip
        optimizer = recipes.CaffeSGD(
            learning_rate=recipes.learning_rate(schedule),
            momentum=schedule["momentum"],
            l2_decay=schedule["weight_decay"],
            nesterov=schedule["nesterov"],
            kernels_only=schedule["weight_decay_on"] == "kernels",
        )
        if schedule["label_smoothing"]:
            loss = recipes.SparseCrossentropy(label_smoothing=schedule["label_smoothing"])
        else:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(
            optimizer=optimizer,
            loss=loss,
            metrics=[
                keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, info.num_classes), name="top5"),
            ],
            jit_compile=bool(c["jit_compile"]),
            steps_per_execution=c["steps_per_execution"],
        )
        frozen = []
        if run.freeze_steps:
            # The optimizer holds a slot for every variable in both phases, so
            # a backup of either phase restores into the same structure.
            optimizer.build(model.trainable_variables)
            frozen = finetune.freeze_backbone(model)
    compat.build_before_fit(
        model, run.strategy, (((run.batch, info.image_size, info.image_size, 3), "float32"), ((run.batch,), "int64"))
    )
    return model, frozen


def _fit(run: _Run, model, train_ds, val_ds, test_ds, frozen):
    """``model.fit`` with the trainer's callbacks; a preempted or non-finite
    run, or one that ended short, stops here. Returns the run log, the backup
    callback and the seconds this session trained."""
    c, info, schedule, role = run.c, run.info, run.schedule, run.role
    total = schedule["total_steps"]
    guard = cb.NonFiniteGuard()
    title = f"{c['arch']} on {info.name}" + (" (SYNTHETIC DATA)" if info.synthetic else "")
    run_log = cb.RunLog(
        run.out_dir, batch_size=run.batch, log_every=c["log_every"],
        test_data=test_ds if info.num_val else None, title=title,
    )  # fmt: skip
    bn_statistics = cb.AverageBatchNormStatistics(run.strategy, run.steps_per_epoch)
    backup = cb.Backup(run.out_dir / "backup", save_freq=c["backup_every"], guard=guard,
                       restore_dir=run.run_dir / "backup", before_save=[bn_statistics.sync, run_log.flush])  # fmt: skip
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
        _log(f"backbone frozen for the first {run.freeze_steps} iterations ({len(frozen)} layers; "
             "BatchNormalization in inference mode): the classifier trains alone", c)  # fmt: skip
        callbacks.append(cb.Unfreeze(frozen, run.freeze_steps, log=lambda message: _log(message, c)))
    if schedule["kind"] == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_accuracy", mode="max", factor=0.1, patience=schedule["plateau_patience"], verbose=1
            )
        )
    started = time.time()
    try:
        model.fit(
            train_ds, epochs=math.ceil(total / run.steps_per_epoch), steps_per_epoch=run.steps_per_epoch,
            validation_data=val_ds, callbacks=callbacks, verbose=c["verbose"], shuffle=False,
        )  # fmt: skip
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
    c, info, role = run.c, run.info, run.role
    done = cb.iterations(model)
    result = model.evaluate(test_ds, verbose=0, return_dict=True)
    bad = [key for key in ("loss", "accuracy", "top5") if not math.isfinite(float(result[key]))]
    if bad:
        raise TrainingError(
            f"the final {info.test_split} {bad[0]} is non-finite ({float(result[bad[0]])}) after {done} iterations; "
            f"nothing is reported as finished. The last good backup is kept in {run.run_dir / 'backup'}"
        )
    metrics = {
        "arch": c["arch"],
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
    save_model_atomic(model, run.out_dir / "model.keras")
    write_json_atomic(run.out_dir / "metrics.json", metrics)
    c["status"] = "finished"
    _write_config(run)
    backup.discard()
    if role.multi_worker:
        # No worker leaves before the chief has written everything: a worker
        # that exits early can make the chief fail on missing heartbeats.
        distributed.barrier(run.strategy)
    _log(
        f"done: {done} iterations; test top-1 error {100 * metrics['test_top1_error']:.2f}%, "
        f"top-5 error {100 * metrics['test_top5_error']:.2f}% on {info.name} {info.test_split}; "
        + (f"{metrics['train_images_per_second']:.0f} images/s" if metrics["train_images_per_second"]
           else "images/s not measured (too few steady-state steps)")
        + f"; run dir {run.run_dir}"
        + (f"; weights sha256 {metrics['weights_sha256']}" if role.multi_worker else ""),
        c,
    )
    return {**metrics, "run_dir": str(run.run_dir)}
