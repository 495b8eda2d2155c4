"""Issue 19: one process per run directory, nothing non-finite reported as
done, strict JSON, corrupt data and unwritable outputs in one line,
preemption."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from trainers import fit
from trainers.core import runlock
from trainers.core.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
SYNTHETIC = [
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
]


def _fit(args, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    return fit.main([*SYNTHETIC, *args])


def _snapshot(directory: pathlib.Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_second_process_on_a_run_directory_is_refused_naming_the_holder(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    run = runs / "resnet8-synthetic-20260101-000000"  # where the implicit resume looks too
    env = {**os.environ, "RESNET_KERAS_RUNS": str(runs), "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        [sys.executable, str(ROOT / "trainers" / "fit.py"), *SYNTHETIC, "--steps", "100000", "--output-dir", str(run)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not ((run / "config.json").exists() and runlock.holder(run) == first.pid):
            assert first.poll() is None, first.stderr.read()
            assert time.time() < deadline, "the first run never started"
            time.sleep(0.2)
        before = _snapshot(run)
        before.pop("steps.csv", None)
        for args in (["--steps", "100000", "--output-dir", str(run)], ["--steps", "100000"]):  # explicit, resume
            with pytest.raises(runlock.DirectoryInUse, match=f"in use by process {first.pid}"):
                _fit(args, tmp_path, monkeypatch)
        assert first.poll() is None  # the holder trains on
        after = _snapshot(run)
        assert {k: after[k] for k in ("config.json", ".lock")} == {k: before[k] for k in ("config.json", ".lock")}
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The kernel released the lock of the killed process: the directory can be taken again.
    with runlock.acquire(run):
        assert runlock.holder(run) == os.getpid()
    assert sorted(p.name for p in runs.iterdir()) == [run.name]  # the refused runs made nothing


def test_a_lock_is_released_when_its_holder_ends(tmp_path):
    lock = runlock.acquire(tmp_path)
    with pytest.raises(runlock.DirectoryInUse, match=f"in use by process {os.getpid()}"):
        runlock.acquire(tmp_path)  # flock locks are per open file: the same process is refused too
    lock.release()
    runlock.acquire(tmp_path).release()


def test_a_huge_learning_rate_is_not_reported_as_finished(tmp_path, monkeypatch):
    """Issue 19's case: the training loss stays finite (1e22) while validation is NaN."""
    run = tmp_path / "run"
    with pytest.raises(UserError, match="became non-finite at iteration") as caught:
        _fit(["--epochs", "1", "--lr", "1e12", "--output-dir", str(run)], tmp_path, monkeypatch)
    assert caught.value.exit_code == 3
    assert not (run / "metrics.json").exists() and not (run / "model.keras").exists()
    assert json.loads((run / "config.json").read_text())["status"] == "running"


def test_the_guard_names_a_non_finite_validation_figure_or_weight(float32_policy):
    import keras
    import numpy as np

    import resnet_keras
    from trainers.core import callbacks as cb

    model = resnet_keras.get_model("resnet8", num_classes=3)
    model.compile(optimizer=keras.optimizers.SGD(), loss="mse")
    model.optimizer.build(model.trainable_variables)
    guard = cb.NonFiniteGuard()
    guard.set_model(model)
    guard.on_epoch_end(0, {"loss": 1.0, "val_loss": 0.5, "val_accuracy": 0.9})
    assert guard.bad_step is None and not model.stop_training
    guard.on_epoch_end(1, {"loss": 1.0, "val_loss": 0.5, "val_top5": float("nan")})
    assert guard.bad_what == "the validation top5" and guard.bad_epoch == 2 and model.stop_training

    bn = next(layer for layer in model.layers if isinstance(layer, resnet_keras.FusedBatchNormalization))
    variance = np.array(bn.moving_variance)
    variance[0] = np.inf
    bn.moving_variance.assign(variance)
    fresh = cb.NonFiniteGuard()
    fresh.set_model(model)
    assert not fresh.check_weights() and fresh.bad_what == f"the weight {bn.moving_variance.path}"


def test_json_is_strict_and_unknown_figures_are_null(tmp_path):
    import numpy as np

    from trainers.core.files import write_json_atomic

    path = tmp_path / "m.json"
    write_json_atomic(path, {"a": float("nan"), "b": [np.float32("inf"), 1.5], "c": {"d": -float("inf")}, "e": 2})

    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "a": None,
        "b": [None, 1.5],
        "c": {"d": None},
        "e": 2,
    }


def test_an_unwritable_file_keeps_the_previous_one_and_says_so_in_one_line(tmp_path, monkeypatch):
    import errno

    from trainers.core import files
    from trainers.core.errors import OutputError
    from trainers.core.files import write_json_atomic

    path = tmp_path / "m.json"
    write_json_atomic(path, {"v": 1})

    def refused(src, dst):  # what a read-only directory does to a non-root user's rename
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(files.os, "replace", refused)
    with pytest.raises(OutputError, match="could not write .*m.json: Permission denied; the previous file"):
        write_json_atomic(path, {"v": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_a_full_disk_at_a_backup_or_the_final_model_keeps_the_last_good_files(tmp_path, monkeypatch):
    import errno

    import keras

    from trainers.core.errors import OutputError

    real_save_weights = keras.Model.save_weights
    calls = []

    def full_after_first(self, filepath, *args, **kwargs):
        calls.append(filepath)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save_weights(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", full_after_first)
    run = tmp_path / "run"
    args = ["--steps", "6", "--backup-every", "2", "--output-dir", str(run)]
    with pytest.raises(OutputError, match="backup.*No space left on device; the previous file") as caught:
        _fit(args, tmp_path, monkeypatch)
    assert caught.value.exit_code == 4
    assert json.loads((run / "backup" / "training_metadata.json").read_text())["iterations"] == 2
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name] and not (run / "metrics.json").exists()

    # The same command resumes; now the final model cannot be written.
    monkeypatch.setattr(keras.Model, "save_weights", real_save_weights)

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(keras.Model, "save", full)
    with pytest.raises(OutputError, match=r"(best|model)\.keras: No space left on device"):
        _fit(args, tmp_path, monkeypatch)
    assert (run / "backup").exists() and not (run / "model.keras").exists() and not (run / "metrics.json").exists()
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]


def _start(args, env, log):
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "trainers" / "fit.py"), *SYNTHETIC, "--verbose", "2", *args],
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )


def _terminate_after_training_started(process, log, seconds=2.0):
    """SIGTERM once fit has printed its first epoch line; (stdout, stderr)."""
    deadline = time.time() + 120
    while "Epoch 1/" not in log.read_text():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "training never started"
        time.sleep(0.2)
    time.sleep(seconds)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    return log.read_text(), err


def test_sigterm_writes_a_backup_of_the_step_and_the_same_command_ends_as_an_uninterrupted_run(
    tmp_path, monkeypatch, capsys, float32_policy
):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RESNET_KERAS_RUNS": str(tmp_path / "runs")}
    # No periodic backup: what resumes is the one SIGTERM wrote. A small test split keeps the epochs short.
    args = ["--steps", "60", "--synthetic-test", "64", "--backup-every", "100000", "--output-dir", str(run)]
    first = _start(args, env, tmp_path / "first.log")
    out, err = _terminate_after_training_started(first, tmp_path / "first.log", seconds=1.0)
    assert first.returncode == 75, out + err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "stopped by SIGTERM at iteration" in lines[0] and "Traceback" not in err
    step = int(lines[0].split("at iteration ")[1].split(":")[0])
    assert 0 < step < 60, "SIGTERM came after the run ended: nothing was tested"
    assert json.loads((run / "backup" / "training_metadata.json").read_text())["iterations"] == step
    assert json.loads((run / "config.json").read_text())["status"] == "running"
    assert not (run / "metrics.json").exists()
    # It stopped at once: the cut epoch was neither validated nor logged (its row would end at the SIGTERM's step).
    history = (run / "history.csv").read_text().splitlines()[1:] if (run / "history.csv").exists() else []
    assert all(int(row.split(",")[1]) < step for row in history), history

    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    fit.main([*SYNTHETIC, "--verbose", "2", *args])  # the same command, in this process
    assert "resuming run" in capsys.readouterr().out
    assert json.loads((run / "metrics.json").read_text())["iterations"] == 60  # as an uninterrupted run ends
    steps = [int(line.split(",")[0]) for line in (run / "steps.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] <= 60  # no iteration logged twice
    assert not (run / "backup").exists()


def _corrupt_copy(tmp_path, truncate: str, bad_image: int | None = None) -> pathlib.Path:
    """A small copy of the real cifar10 (its first 512 training and 256 test
    records, its metadata told so) whose ``truncate`` split's record file is
    then cut in half, or (``bad_image``) whose record of that index in that
    split holds bytes that are no image."""
    import shutil

    import tensorflow as tf
    from _realdata import DATA_DIR, prepared

    if not prepared("cifar10"):
        pytest.skip(f"no prepared cifar10 in TFDS_DATA_DIR={DATA_DIR!r}")
    source = sorted(pathlib.Path(DATA_DIR, "cifar10").glob("*/dataset_info.json"))[-1].parent
    target = tmp_path / "data" / "cifar10" / source.name
    target.mkdir(parents=True)
    info = json.loads((source / "dataset_info.json").read_text())
    for split in info["splits"]:
        count = {"train": 512, "test": 256}[split["name"]]
        name = f"cifar10-{split['name']}.tfrecord-00000-of-00001"
        with tf.io.TFRecordWriter(str(target / name)) as writer:
            for index, record in enumerate(tf.data.TFRecordDataset(str(source / name)).take(count)):
                record = record.numpy()
                if split["name"] == truncate and index == bad_image:
                    example = tf.train.Example.FromString(record)
                    example.features.feature["image"].bytes_list.value[0] = b"\xff\xd8 not a JPEG at all"
                    record = example.SerializeToString()
                writer.write(record)
        split["shardLengths"], split["numBytes"] = [str(count)], str((target / name).stat().st_size)
        if split["name"] == truncate and bad_image is None:
            data = (target / name).read_bytes()
            (target / name).write_bytes(data[: len(data) // 2])
    (target / "dataset_info.json").write_text(json.dumps(info))
    for path in source.iterdir():
        if not (target / path.name).exists():
            shutil.copyfile(path, target / path.name)
    return tmp_path / "data"


@pytest.mark.parametrize("split", ["train", "test"])  # read before training (the pixel mean), and during it
def test_a_truncated_record_file_ends_in_one_line_naming_the_file_and_split(split, tmp_path, monkeypatch):
    data = _corrupt_copy(tmp_path, split)
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    with pytest.raises(UserError) as caught:
        fit.main(
            [
                "--arch",
                "resnet8",
                "--data-dir",
                str(data),
                "--steps",
                "2",
                "--batch-size",
                "32",
                "--precision",
                "float32",
                "--verbose",
                "0",
            ]
        )
    message = str(caught.value)
    assert f"the {split} split of 'cifar10' is unreadable: " in message and f"cifar10-{split}.tfrecord" in message
    assert "truncated record" in message and "\n" not in message
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())  # the new run left nothing


def test_preemption_stops_every_worker_at_the_step_they_agree_on(float32_policy):
    """The callback's logic with the agreement stubbed as another worker's SIGTERM;
    the agreement itself is one all-reduce, checked here on the default strategy."""
    import keras
    import numpy as np
    import tensorflow as tf

    from trainers.core import callbacks as cb
    from trainers.core import distributed

    agree = distributed.any_worker(tf.distribute.get_strategy())
    assert agree(True) is True and agree(False) is False

    class FakeBackup:
        saved = []

        def save_now(self):
            self.saved.append(cb.iterations(model))

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    request = cb.StopRequest()  # never signalled here: the other worker was
    other_worker_asked = lambda flag: cb.iterations(model) >= 3  # noqa: E731
    preemption = cb.Preemption(request, FakeBackup(), agree=other_worker_asked)
    with pytest.raises(cb.PreemptedAt) as caught:  # out of fit at once, no validation after it
        model.fit(
            np.zeros((64, 2)),
            np.zeros(64),
            batch_size=4,
            epochs=1,
            callbacks=[preemption],
            verbose=0,
            validation_data=(np.full((8, 2), np.nan), np.zeros(8)),
        )
    assert caught.value.iteration == 3
    assert preemption.stopped_at == 3 and FakeBackup.saved == [3] and cb.iterations(model) == 3


def test_an_image_that_does_not_decode_ends_in_one_line_naming_its_record(tmp_path, monkeypatch):
    data = _corrupt_copy(tmp_path, "train", bad_image=7)
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    with pytest.raises(UserError) as caught:
        fit.main(
            [
                "--arch",
                "resnet8",
                "--data-dir",
                str(data),
                "--steps",
                "2",
                "--batch-size",
                "32",
                "--precision",
                "float32",
                "--verbose",
                "0",
            ]
        )
    message = str(caught.value)
    assert "the train split of 'cifar10' holds an image that does not decode: record 7 of " in message
    assert "cifar10-train.tfrecord" in message and "\n" not in message


def test_a_batchnorm_statistic_turned_nan_stops_the_run_at_the_next_backup(tmp_path, monkeypatch):
    import numpy as np

    import resnet_keras
    from trainers.core import callbacks as cb

    original = cb.AverageBatchNormStatistics.on_train_batch_end
    poisoned = {}

    def poison(self, batch, logs=None):  # after iteration 5, one moving variance becomes NaN
        original(self, batch, logs)
        if cb.iterations(self.model) == 5 and not poisoned:
            bn = next(layer for layer in self.model.layers if isinstance(layer, resnet_keras.FusedBatchNormalization))
            variance = np.array(bn.moving_variance)
            variance[0] = np.nan
            bn.moving_variance.assign(variance)
            poisoned["path"] = bn.moving_variance.path

    monkeypatch.setattr(cb.AverageBatchNormStatistics, "on_train_batch_end", poison)
    run = tmp_path / "run"
    with pytest.raises(UserError) as caught:
        _fit(["--steps", "16", "--backup-every", "4", "--output-dir", str(run)], tmp_path, monkeypatch)
    assert caught.value.exit_code == 3
    assert f"the weight {poisoned['path']} became non-finite at iteration 8" in str(caught.value)
    assert json.loads((run / "backup" / "training_metadata.json").read_text())["iterations"] == 4  # the last good one
    assert not (run / "metrics.json").exists() and not (run / "model.keras").exists()


def test_a_data_dir_without_read_permission_is_one_line(tmp_path, monkeypatch):
    """As root every directory reads, so the permission is taken away by patching os.access."""
    from trainers.core import data

    (tmp_path / "cifar10").mkdir()
    real = os.access
    monkeypatch.setattr(data.os, "access", lambda p, mode: False if str(p).endswith("cifar10") else real(p, mode))
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    with pytest.raises(UserError, match=r"the data dir .*cifar10 cannot be read \(permission denied\)"):
        fit.main(["--arch", "resnet8", "--data-dir", str(tmp_path), "--verbose", "0"])
    assert not (tmp_path / "runs").exists()
