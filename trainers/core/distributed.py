"""Multi-worker training: the cluster, each process's role in it, agreement
between workers, and where each worker writes.

A multi-worker job is N copies of the same ``fit.py`` command, one per worker,
each told the cluster and its own place in it by ``TF_CONFIG`` (or by Slurm's
environment). Worker 0 (or the task named ``chief``) is the chief: the only
one that writes the run directory. The others write what the same code path
writes into a temporary directory of their own, removed when they finish
(Keras' multi-worker saving convention), and read their backups from the
chief's run directory, so every worker restores the same state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from trainers.core.errors import UserError

STRATEGIES = ("auto", "mirrored", "multi-worker", "one-device")


@dataclasses.dataclass(frozen=True)
class Role:
    workers: int  # processes in the job
    task_type: str
    task_id: int
    is_chief: bool

    @property
    def multi_worker(self) -> bool:
        return self.workers > 1

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.task_id}"


SINGLE = Role(workers=1, task_type="chief", task_id=0, is_chief=True)


def tf_config() -> dict | None:
    """``TF_CONFIG`` parsed and checked, or None when it is not set."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"TF_CONFIG is not valid JSON ({error}): {text[:200]!r}") from None
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UserError(
            'TF_CONFIG needs "cluster" and "task", e.g. '
            '{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}'
        )
    unknown = set(cluster) - {"chief", "worker"}
    if unknown:
        raise UserError(
            f"TF_CONFIG cluster has {sorted(unknown)}: MultiWorkerMirroredStrategy uses only chief and worker"
        )
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise UserError(f"TF_CONFIG task {task} is not in its cluster {cluster}")
    return config


def cluster_tasks() -> int:
    """How many processes the environment describes (1 without a cluster)."""
    config = tf_config()
    if config is not None:
        return sum(len(v) for v in config["cluster"].values())
    if "SLURM_PROCID" in os.environ and "SLURM_STEP_NUM_TASKS" in os.environ:
        return int(os.environ["SLURM_STEP_NUM_TASKS"])
    return 1


def make_multi_worker_strategy(timeout_seconds: float | None = None):
    """``MultiWorkerMirroredStrategy`` for the cluster of ``TF_CONFIG``, or of
    Slurm's environment (``SlurmClusterResolver``: one task per node or per
    GPU). Collectives are NCCL on GPUs and ring all-reduce on CPUs (AUTO).
    Must be called before TensorFlow runs any op."""

    if tf_config() is not None:
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    elif cluster_tasks() > 1:
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver()
    else:
        raise UserError(
            "--strategy multi-worker needs a cluster: set TF_CONFIG in every worker (see docs/distributed.md), "
            "run under Slurm with several tasks, or start workers on this machine with "
            "`python trainers/launch_local.py --workers N -- <fit.py arguments>`"
        )
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_seconds)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)
    except RuntimeError as error:
        raise UserError(
            f"MultiWorkerMirroredStrategy could not start ({error}); it must be created before TensorFlow runs "
            "anything else"
        ) from None


def role(strategy) -> Role:
    """This process's place in the job of ``strategy``."""

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return SINGLE
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    workers = sum(len(v) for v in spec.values())
    if workers <= 1:
        return SINGLE
    kind, index = resolver.task_type, int(resolver.task_id)
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in spec)
    return Role(workers=workers, task_type=kind, task_id=index, is_chief=chief)


def all_agree(strategy, ok: bool) -> bool:
    """True on every worker when ``ok`` is true on every worker; a barrier
    (every worker must call it at the same point of the program)."""

    @tf.function
    def count_failures(flag):
        return strategy.reduce("SUM", strategy.run(lambda: tf.identity(flag)), axis=None)

    return float(count_failures(tf.constant(0.0 if ok else 1.0))) == 0.0


def any_worker(strategy):
    """A function ``flag -> bool``: true on every worker when ``flag`` is true
    on any worker; a collective (every worker calls it at the same point),
    traced once, cheap enough for every step."""

    @tf.function
    def count(flag):
        return strategy.reduce("SUM", strategy.run(lambda: tf.identity(flag)), axis=None)

    return lambda flag: float(count(tf.constant(1.0 if flag else 0.0))) > 0.0


def barrier(strategy) -> None:
    all_agree(strategy, True)


def output_dir(role: Role, run_dir):
    """Where this worker writes: the run directory on the chief, a fresh
    temporary directory elsewhere (remove it with :func:`cleanup`)."""

    if role.is_chief:
        return pathlib.Path(run_dir)
    return pathlib.Path(tempfile.mkdtemp(prefix=f"resnet-keras-{role.task_type}{role.task_id}-"))


def cleanup(role: Role, out_dir) -> None:
    if not role.is_chief and out_dir is not None:
        shutil.rmtree(out_dir, ignore_errors=True)


def weights_fingerprint(model) -> str:
    """SHA-256 of every weight's bytes, in order: equal on two workers exactly
    when their networks are bit-identical."""

    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def wants_multi_worker(name: str) -> bool:
    """Whether :func:`make_strategy` gives the multi-worker strategy for
    ``name``: read from the environment alone, so it may be asked before
    TensorFlow runs anything."""
    return name == "multi-worker" or (name == "auto" and cluster_tasks() > 1)


def make_strategy(name: str):
    """One code path for every strategy: the caller builds model, optimizer and
    metrics inside ``strategy.scope()`` whichever this returns.

    ``auto``: MultiWorkerMirroredStrategy when ``TF_CONFIG`` (or Slurm)
    describes a cluster of several processes, MirroredStrategy over the GPUs
    when there are several, else the default strategy. Call it before
    TensorFlow runs anything (the multi-worker strategy insists)."""

    if name not in STRATEGIES:
        raise UserError(f"--strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
    if wants_multi_worker(name):
        return make_multi_worker_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "mirrored":
        cpus = tf.config.list_logical_devices("CPU")
        devices = [d.name for d in gpus] if gpus else [d.name for d in cpus]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
