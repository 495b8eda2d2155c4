"""Each work-around of trainers/core/compat.py: the Keras behaviour it answers
(which fails here when a Keras upgrade changes it) and the fix."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from trainers.core import compat

ROOT = pathlib.Path(__file__).resolve().parents[1]

SKIPPED_FIRST_BATCH = r"""
import json, sys
from trainers.core.hardware import split_cpu
split_cpu(2)  # two logical CPU devices, before TensorFlow starts
import keras, numpy as np, tensorflow as tf
import resnet_keras
from trainers.core import compat

from trainers.core import data

info = data.describe("synthetic", data_dir=None, family="cifar", image_size=16, val_split=0.0, seed=0,
                     synthetic_train=512)

def first_loss(strategy, patch):
    # The trainer's own input path: one pipeline per worker, per-replica batches.
    ds = data.distributed_train_data(strategy, info, 32, seed=0)
    with strategy.scope():
        model = resnet_keras.get_model("resnet8", num_classes=10, input_shape=(16, 16, 3), seed=0, synchronized_bn=True)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss)
    if patch:
        compat.build_before_fit(model, strategy, (((32, 16, 16, 3), "float32"), ((32,), "int64")))
    return model.fit(ds, steps_per_epoch=4, epochs=1, verbose=0).history["loss"][0]

mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
json.dump({"default": first_loss(tf.distribute.get_strategy(), False),
           "mirrored_unpatched": first_loss(mirrored, False),
           "mirrored_patched": first_loss(mirrored, True)}, open(sys.argv[1], "w"))
"""


@pytest.mark.slow
def test_fit_under_mirrored_strategy_skips_the_first_batch_unless_built_first(tmp_path):
    """Slow tier (a process of its own, three short fits): it shows the Keras bug still there unpatched, a watch
    for a Keras release that fixes it. The fix runs in every default MirroredStrategy test (test_fit's
    test_mirrored_strategy_follows_the_default_strategys_loss compares its losses with the default strategy's)."""
    script = tmp_path / "probe.py"
    script.write_text(SKIPPED_FIRST_BATCH)
    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    losses = json.loads(out.read_text())
    # With a learning rate of 0 the epoch's loss is the mean loss of the 4
    # batches it trained on. Unpatched, Keras 3.15 trains on batches 2-5, not 1-4:
    assert abs(losses["mirrored_unpatched"] - losses["default"]) > 1e-3, (
        "Keras no longer skips the first batch under MirroredStrategy: trainers/compat.build_before_fit may be retired"
    )
    # Built first, it trains on the first batch, as the default strategy does.
    assert abs(losses["mirrored_patched"] - losses["default"]) < 1e-5 * abs(losses["default"])


MULTI_WORKER_PROBE = r"""
import json, os, sys, time
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
import keras
import resnet_keras
from trainers.core import callbacks as cb, compat, data, distributed

role = distributed.role(strategy)
out = {}
info = data.describe("synthetic", data_dir=None, family="cifar", image_size=16, val_split=0.0, seed=0,
                     synthetic_train=256)
spec = (((32, 16, 16, 3), "float32"), ((32,), "int64"))

def model_and_data():
    ds = data.distributed_train_data(strategy, info, 32, seed=0)
    with strategy.scope():
        model = resnet_keras.get_model("resnet8", num_classes=10, input_shape=(16, 16, 3), seed=0)
        model.compile(optimizer=keras.optimizers.SGD(0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, ds

def attempt(name, fn):
    try:
        out[name] = {"ok": True, "value": fn()}
    except Exception as error:
        out[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"[:400]}

# 1. Unpatched Keras: fit takes a batch to build the model and reduces it with axis=None.
model, ds = model_and_data()
attempt("unpatched", lambda: model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0).history["loss"][0])
# 2. Built first, but Keras reduces the scalar loss with axis=0.
model, ds = model_and_data()
compat.build_before_fit(model, strategy, spec)
attempt("built_only", lambda: model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0).history["loss"][0])
# 3. Both fixes.
model, ds = model_and_data()
compat.build_before_fit(model, strategy, spec)
compat.fix_multi_worker_scalar_reduction()
attempt("fixed", lambda: model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0).history["loss"][0])
# BN moving statistics: Keras gives them no aggregation, so each worker keeps
# its own; callbacks.AverageBatchNormStatistics makes them one.
def bn_stats():
    return [float(abs(w).sum()) for w in model.get_weights()]
out["bn_before"] = bn_stats()
average = cb.AverageBatchNormStatistics(strategy, steps_per_epoch=2)
average.set_model(model)
average.sync()
out["bn_after"] = bn_stats()

# 4. Where backups are written: Keras' BackupAndRestore, and the trainer's Backup.
shared = sys.argv[2]
written = {"keras": [], "ours": []}
class KerasSpy(keras.callbacks.BackupAndRestore):
    def _save_model(self):
        written["keras"].append(self._weights_path)
        try:  # two processes writing one HDF5 file: one may fail to lock it
            super()._save_model()
        except OSError as error:
            written.setdefault("keras_errors", []).append(str(error)[:200])
class OurSpy(cb.Backup):
    def _save_model(self):
        written["ours"].append(self._weights_path)
        super()._save_model()
model, ds = model_and_data()
compat.build_before_fit(model, strategy, spec)
model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0,
          callbacks=[KerasSpy(os.path.join(shared, "keras"), save_freq=1, delete_checkpoint=False)])
mine = distributed.output_dir(role, shared)
model, ds = model_and_data()
compat.build_before_fit(model, strategy, spec)
model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0,
          callbacks=[OurSpy(os.path.join(mine, "backup"), save_freq=1, guard=cb.NonFiniteGuard(),
                            restore_dir=os.path.join(shared, "backup"))])
distributed.cleanup(role, mine)
out["written"] = written

# 5. A worker that leaves before the chief's last collective: the chief's
# coordination service declares it dead after missing heartbeats.
if role.is_chief:
    time.sleep(float(sys.argv[3]))
    attempt("late_collective", lambda: distributed.barrier(strategy))
json.dump(out, open(sys.argv[1] + f".{role.task_id}", "w"))
sys.stdout.flush()
os._exit(0)
"""


@pytest.mark.slow
def test_multi_worker_bugs_of_keras_and_their_fixes(tmp_path):
    """Slow tier (about a minute, two workers): it shows each Keras bug still there unpatched, a watch for a Keras
    release that fixes one. The fixes themselves run in every default multi-worker test of test_distributed.py,
    which trains through them and compares the workers' weights."""
    from trainers.core.launcher import free_ports, tf_configs

    script = tmp_path / "probe.py"
    script.write_text(MULTI_WORKER_PROBE)
    shared = tmp_path / "shared"
    shared.mkdir()
    procs = []
    for config in tf_configs(free_ports(2)):
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "TF_CONFIG": config,
            "TMPDIR": str(tmp_path),
        }
        procs.append(
            subprocess.Popen(
                # The chief's wait before its late collective, which waits out the missed heartbeats and fails
                # however soon it starts (0, 2, 5, 12 and 25 s all gave UnavailableError, the test 46 s with
                # 0-5 s against 62 s with 25); 2 s lets the other worker exit first.
                [sys.executable, str(script), str(tmp_path / "out"), str(shared), "2"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = [p.communicate(timeout=400)[0] for p in procs]
    results = []
    for i in range(2):
        path = tmp_path / f"out.{i}"
        assert path.exists(), logs[i][-3000:]
        results.append(json.loads(path.read_text()))
    for r in results:
        # Keras 3.15 under MultiWorkerMirroredStrategy: fit reduces the
        # first (x, y) batch with strategy.reduce(axis=None), which only takes
        # single values (compat.build_before_fit avoids that step) ...
        assert not r["unpatched"]["ok"] and "PerReplica" in r["unpatched"]["error"], r["unpatched"]
        # ... then reduces the scalar loss with axis=0 (fixed by
        # compat.fix_multi_worker_scalar_reduction).
        assert not r["built_only"]["ok"] and "Invalid reduction dimension" in r["built_only"]["error"], r["built_only"]
        assert r["fixed"]["ok"], r["fixed"]
    # Both workers log the same (all-reduced) loss.
    assert results[0]["fixed"]["value"] == results[1]["fixed"]["value"]
    # Weights after two steps: the BN moving statistics differ between the
    # workers until they are averaged; then every weight is equal.
    assert results[0]["bn_before"] != results[1]["bn_before"]
    assert results[0]["bn_after"] == results[1]["bn_after"]
    # Keras' BackupAndRestore has every worker write the same files ...
    keras_paths = [set(r["written"]["keras"]) for r in results]
    assert keras_paths[0] == keras_paths[1] and all(p.startswith(str(shared)) for p in keras_paths[0])
    # ... the trainer's Backup: the chief writes the shared directory, the
    # other worker a temporary one of its own, removed afterwards.
    ours = [set(r["written"]["ours"]) for r in results]
    assert all(p.startswith(str(shared / "backup")) for p in ours[0])
    assert ours[1] and not any(p.startswith(str(shared)) for p in ours[1])
    assert not list(tmp_path.glob("resnet-keras-*")), "the worker's temporary directory was not removed"
    # A collective the chief starts after the other worker has exited fails
    # (missing heartbeats); the trainer therefore ends with a barrier.
    late = results[0]["late_collective"]
    assert not late["ok"] and ("heartbeat" in late["error"].lower() or "unavailable" in late["error"].lower()), late


def test_keras_tuner_state_survives_a_write_cut_short(tmp_path, monkeypatch):
    """Keras Tuner truncates oracle.json before writing it; a kill in between
    leaves an empty file that the next start cannot reload. The fix writes a
    temporary file and renames it."""
    from keras_tuner.src import backend as kt_backend
    from keras_tuner.src import utils as kt_utils

    compat.make_keras_tuner_saves_atomic()
    patched = kt_utils.save_json
    upstream = patched.original
    opened = kt_backend.io.File

    class Killed(Exception):
        pass

    class CutShort:  # a file whose writer is killed after the first few bytes reach the disk
        def __init__(self, path, mode):
            self.handle = opened(path, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            self.handle.write(text[:5])
            self.handle.close()
            raise Killed

    for save_json, survives in ((upstream, False), (patched, True)):
        path = tmp_path / f"oracle-{survives}.json"
        save_json(str(path), {"trials": 1})
        monkeypatch.setattr(kt_backend.io, "File", CutShort)
        with pytest.raises(Killed):
            save_json(str(path), {"trials": 2})
        monkeypatch.setattr(kt_backend.io, "File", opened)
        if survives:
            assert kt_utils.load_json(str(path)) == {"trials": 1}
        else:  # the bug: the state is gone
            with pytest.raises(json.JSONDecodeError):
                kt_utils.load_json(str(path))


def test_a_run_traces_its_train_step_once(tmp_path, monkeypatch):
    """Without a strategy Keras builds the optimizer and metrics inside the
    first trace of the train function, and TensorFlow traces a function that
    creates variables twice: the unpatched path below shows it (so a Keras
    that stops doing so is noticed); the trainer builds first and traces once."""
    import keras
    import numpy as np
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    import resnet_keras
    from trainers import fit

    traces = []
    original = tf_trainer.TensorFlowTrainer.train_step

    def counted(self, data):
        traces.append(tuple(data[0].shape))
        return original(self, data)

    monkeypatch.setattr(tf_trainer.TensorFlowTrainer, "train_step", counted)
    images = np.zeros((32, 16, 16, 3), "float32")
    labels = np.zeros((32,), "int64")
    model = resnet_keras.get_model("resnet8", num_classes=10, input_shape=(16, 16, 3), seed=0)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(tf.data.Dataset.from_tensor_slices((images, labels)).batch(16), epochs=1, verbose=0)
    assert len(traces) == 2, "Keras no longer traces its train step twice: the note in compat.build_before_fit is moot"

    traces.clear()
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    fit.main(
        [
            "--arch",
            "resnet8",
            "--dataset",
            "synthetic",
            "--precision",
            "float32",
            "--verbose",
            "0",
            "--synthetic-train",
            "256",
            "--batch-size",
            "32",
            "--steps",
            "3",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    assert traces == [(32, 32, 32, 3)]
