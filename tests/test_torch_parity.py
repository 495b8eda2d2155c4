"""benchmarks/torch_parity.py mirrors the trainer's schedule and augmentation
(the PyTorch side itself needs torch, which is not a dependency)."""

import subprocess
import sys

import numpy as np
import pytest

from benchmarks import torch_parity
from trainers.core import data as data_lib
from trainers.core import recipes


@pytest.mark.parametrize("recipe, epochs", [("fast", None), ("fast", 10), ("paper", None), ("paper", 3)])
def test_learning_rate_matches_the_keras_schedule_at_every_iteration(recipe, epochs):
    schedule = recipes.resolve_schedule(
        recipes.get_recipe(recipe, "cifar", 20), batch_size=128, steps_per_epoch=390, epochs=epochs
    )
    keras_schedule = recipes.learning_rate(schedule)
    total = schedule.total_steps
    steps = sorted(
        set(range(0, total, 97))
        | {0, 1, total - 1}
        | {b + d for b in schedule.boundaries or [] for d in (-1, 0, 1)}
        | {(schedule.warmup_steps or 0) + d for d in (-1, 0, 1)}
    )
    steps = [s for s in steps if 0 <= s < total]
    # The PyTorch child reads the schedule from the JSON the parent writes: a dict.
    ours = np.array([torch_parity.learning_rate_at(schedule.to_dict(), s) for s in steps])
    theirs = np.array([float(keras_schedule(s)) for s in steps])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-8)
    assert len(set(np.round(ours, 6))) > 2  # the schedule does change


def test_batch_view_is_the_trainers_crop_and_flip():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    u = rng.random((16, 3)).astype(np.float32)
    u[0] = [0.0, 0.0, 0.1]  # the corners of the padded image, flipped and not
    u[1] = [0.9999, 0.9999, 0.9]
    ours = torch_parity.batch_view(images, u)
    theirs = data_lib.cifar_batch_view(images, u, 32).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert not np.array_equal(ours, images.astype(np.float32))


def test_without_torch_it_says_how_to_install_it(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/torch_parity.py",
            "--output-dir",
            str(tmp_path / "run"),
            "--torch-python",
            str(tmp_path / "no-python"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot import torch" in lines[0] and "--torch-python" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_truncated_or_foreign_file_is_refused_in_one_line(tmp_path):
    images = tmp_path / "images.npz"
    arrays = {k: np.zeros((4, 32, 32, 3), np.uint8) for k in ("x_train", "x_test")}
    arrays.update(y_train=np.zeros(4, np.int64), y_test=np.zeros(4, np.int64), pixel_mean=np.zeros((32, 32, 3)))
    np.savez(images, **arrays)
    assert set(torch_parity._read_images(images)) == set(arrays)  # a good file reads whole
    images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])  # cut off mid-write
    settings = tmp_path / "parity.json"
    settings.write_text('{"arch": "resnet20", ')
    for path, read in ((images, torch_parity._read_images), (settings, torch_parity._read_json)):
        with pytest.raises(SystemExit) as raised:
            read(path)
        message = str(raised.value)
        assert message.startswith(f"error: {path} is unreadable") and "rerun" in message and "\n" not in message
