"""Issue 40: --class-balance {none,weights,sampling} and --skip-bad-images, on
tiny image folders written here (as tests/test_folder.py does)."""

import csv
import io
import json
import math
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from trainers import fit, tune
from trainers.core import balance, data
from trainers.core.config import IDENTITY_KEYS, RunConfig, record_identity
from trainers.core.errors import UserError, run_main
from trainers.core.train import choose_run_dir

COLOURS = {"big": (200, 30, 30), "mid": (30, 200, 30), "small": (30, 30, 200)}
UNBALANCED = {"big": 30, "mid": 3, "small": 3}  # 10:1
NEW_SETTINGS = ("class_balance", "skip_bad_images", "max_bad_fraction")


def _write(directory, colour, count, rng, size=12, start=0):
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(directory / f"{i:03d}.png")


def _unbalanced(root, counts=UNBALANCED, test=2, seed=0):
    """train/ with ``counts`` images per class, test/ with ``test`` of each."""
    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        _write(root / "train" / name, COLOURS[name], n, rng)
        _write(root / "test" / name, COLOURS[name], test, rng, start=100)
    return root


def _jpeg_bytes(rng):
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _bad_files(root, rng):
    """A truncated JPEG, a text file named .jpg and an empty file, in three places of ``root``."""
    whole = _jpeg_bytes(rng)
    bad = {
        root / "train" / "big" / "truncated.jpg": whole[: len(whole) // 2],
        root / "train" / "mid" / "notes.jpg": b"this is a text file, not a photograph\n",
        root / "test" / "small" / "empty.jpg": b"",
    }
    for path, blob in bad.items():
        path.write_bytes(blob)
    return bad


def _info(root, style="cifar", size=8, **kwargs):
    return data.describe(
        f"folder:{root}", data_dir=None, family=style, image_size=size, val_split=0.0, seed=0, **kwargs
    )


def _labels(ds, batches):
    return np.concatenate([labels for _, labels in ds.take(batches).as_numpy_iterator()])


def _fit(args, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    return fit.main([*args, "--precision", "float32"])


# ------------------------------------------------------------- the weights
def test_class_weights_are_n_over_k_times_each_count():
    np.testing.assert_array_equal(balance.class_weights([10, 1]), [11 / 20, 11 / 2])  # 0.55, 5.5
    counts = np.array([2000, 80, 400])
    weights = balance.class_weights(counts)
    np.testing.assert_allclose(weights, [2480 / 6000, 2480 / 240, 2480 / 1200], rtol=0, atol=0)
    assert math.isclose(float((counts * weights).sum() / counts.sum()), 1.0)  # the mean weight of an image is 1
    np.testing.assert_array_equal(balance.class_weights([7, 7, 7]), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError):
        balance.class_weights([5, 0])
    record = balance.plan("weights", [10, 1], ["cat", "dog"])
    assert record == {"mode": "weights", "class_counts": {"cat": 10, "dog": 1}, "weights": {"cat": 0.55, "dog": 5.5}}
    assert balance.plan("sampling", [10, 1], ["cat", "dog"])["target"] == {"cat": 0.5, "dog": 0.5}
    assert balance.plan(None, [10, 1], ["cat", "dog"]) == {"mode": "none", "class_counts": {"cat": 10, "dog": 1}}
    with pytest.raises(UserError, match="^--class-balance sampling: class 'dog' has no training images") as caught:
        balance.plan("sampling", [10, 0], ["cat", "dog"])
    assert "\n" not in str(caught.value)


def _ce(logits, target):
    return -(target * tf.nn.log_softmax(logits)).numpy().sum(axis=-1)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_weighted_loss_is_keras_class_weight_and_weights_each_part_of_a_mixup_label(smoothing):
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(0, 2, (6, 4)), tf.float32)
    labels = np.array([0, 1, 2, 3, 1, 0])
    weights = balance.class_weights([40, 10, 5, 25])
    loss = balance.ClassWeightedCrossentropy(weights, label_smoothing=smoothing)
    # Integer labels: Keras' class_weight, which becomes each image's sample weight.
    onehot = tf.one_hot(labels, 4)
    keras_loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing)
    expected = keras_loss(onehot, logits, sample_weight=weights[labels])
    np.testing.assert_allclose(float(loss(tf.constant(labels), logits)), float(expected), rtol=1e-6)
    # Equal weights: the plain loss.
    plain = balance.ClassWeightedCrossentropy([1.0] * 4, label_smoothing=smoothing)
    np.testing.assert_allclose(float(plain(tf.constant(labels), logits)), float(keras_loss(onehot, logits)), rtol=1e-6)
    # mixup's labels lam e_a + (1 - lam) e_b: lam w_a CE(a) + (1 - lam) w_b CE(b), each part smoothed alone.
    other = labels[::-1]
    lam = 0.7
    mixed = lam * onehot + (1 - lam) * tf.one_hot(other, 4)
    smooth = lambda y: (1 - smoothing) * tf.one_hot(y, 4) + smoothing / 4  # noqa: E731
    by_hand = lam * weights[labels] * _ce(logits, smooth(labels)) + (1 - lam) * weights[other] * _ce(
        logits, smooth(other)
    )
    mixup_loss = balance.ClassWeightedCrossentropy(weights, label_smoothing=smoothing, sparse=False)
    np.testing.assert_allclose(float(mixup_loss(mixed, logits)), by_hand.mean(), rtol=1e-5)
    restored = keras.losses.deserialize(keras.losses.serialize(mixup_loss))
    assert (restored.class_weights, restored.label_smoothing, restored.sparse) == (list(weights), smoothing, False)


# ------------------------------------------------------------- the sampler
@pytest.fixture(scope="module")
def unbalanced(tmp_path_factory):
    return _unbalanced(tmp_path_factory.mktemp("balance") / "photos")


def test_the_sampler_draws_the_classes_evenly_from_a_10_to_1_folder(unbalanced):
    info = _info(unbalanced)
    counts = data.train_class_counts(info, seed=0)
    assert counts.tolist() == [30, 3, 3]  # sorted class names: big, mid, small
    batches, batch = 120, 16
    drawn = np.bincount(_labels(data.train_pipeline(info, batch, seed=3, sample_evenly=True), batches), minlength=3)
    n, p = batches * batch, 1 / 3
    # Each class's count is Binomial(n, 1/3): within 4.5 standard deviations (a chance of about 1e-5 each).
    tolerance = 4.5 * math.sqrt(n * p * (1 - p))
    assert np.all(np.abs(drawn - n * p) < tolerance), (drawn, n * p, tolerance)
    # Without it the stream is the split as it is: 30 of 36 images are the big class.
    plain = np.bincount(_labels(data.train_pipeline(info, batch, seed=3), batches), minlength=3)
    assert abs(plain[0] - n * 30 / 36) < 4.5 * math.sqrt(n * (30 / 36) * (6 / 36)), plain


def test_the_sampler_is_deterministic_from_the_seed(unbalanced):
    info = _info(unbalanced)

    def first(seed):
        return list(data.train_pipeline(info, 8, seed=seed, sample_evenly=True).take(6).as_numpy_iterator())

    a, b, other = first(5), first(5), first(6)
    for (images_a, labels_a), (images_b, labels_b) in zip(a, b):
        np.testing.assert_array_equal(images_a, images_b)
        np.testing.assert_array_equal(labels_a, labels_b)
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, other))


def test_every_drawn_image_gets_its_own_augmentation(unbalanced):
    """The small classes' 3 images come back many times; each draw is augmented
    as the element of its position in the stream (train_pipeline's counter), so
    repeated images get different views."""
    info = _info(unbalanced, style="imagenet", size=8)
    images, labels = next(iter(data.train_pipeline(info, 32, seed=4, augment="rrc", sample_evenly=True)))
    source, decode = data.balanced_source(info, seed=4)
    drawn = [decode(element) for element in source.take(32)]
    expected = [data.train_view(image, i, 4, "imagenet", 8, "rrc").numpy() for i, (image, _) in enumerate(drawn)]
    np.testing.assert_allclose(images.numpy(), np.stack(expected), rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(labels.numpy(), [int(label) for _, label in drawn])
    originals = {image.numpy().tobytes() for image, _ in drawn}
    views = {view.tobytes() for view in images.numpy()}
    assert len(originals) < 32 and len(views) > len(originals)  # images drawn again, seen differently


@pytest.mark.parametrize("workers, local_replicas", [(2, 2)])
def test_sampled_worker_shards_rebuild_the_global_batches(unbalanced, workers, local_replicas):
    """Several replicas, several workers: each pipeline walks the same sampled
    sequence and keeps its own per-replica batches, so the global batch is
    exactly the one-process batch (the CIFAR batched augmentation path)."""
    info = _info(unbalanced)
    replicas, per_replica = workers * local_replicas, 3
    whole = list(data.train_pipeline(info, replicas * per_replica, seed=5, sample_evenly=True).take(8))
    shards = [
        list(
            data.train_pipeline(info, per_replica, seed=5, shard=(w, workers), chunks=replicas, sample_evenly=True)
            .take(8 * local_replicas)
            .as_numpy_iterator()
        )
        for w in range(workers)
    ]
    for step, (images, labels) in enumerate(whole):
        parts = [shards[w][step * local_replicas + r] for w in range(workers) for r in range(local_replicas)]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), images.numpy())
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), labels.numpy())


def test_a_tfds_split_is_sampled_by_filtering_each_class():
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        info = data.DataInfo(
            name="cifar10",
            style="cifar",
            image_size=32,
            num_classes=10,
            class_names=[],
            num_train=40,
            num_val=0,
            num_test=40,
            test_split="test",
            data_dir=None,
            synthetic=False,
        )
        counts = data.train_class_counts(info, seed=0)
        assert counts.sum() == info.num_train == 40 and len(counts) == 10
        present = np.flatnonzero(counts)
        images, labels = next(iter(data.train_pipeline(info, 40, seed=0, sample_evenly=True, mixup=0.2)))
        assert images.shape == (40, 32, 32, 3) and labels.shape == (40, 10)  # mixup after sampling
        _, labels = next(iter(data.train_pipeline(info, 40, seed=0, sample_evenly=True)))
        assert set(labels.numpy().tolist()) <= set(present.tolist())


# ------------------------------------------------------- runs of each mode
@pytest.mark.parametrize(
    "mode, extra",
    [
        ("none", []),
        ("weights", ["--mixup", "0.2", "--label-smoothing", "0.1"]),  # the loss on probability-vector labels
        ("sampling", []),
    ],
)
def test_a_run_of_each_mode_trains_and_records_the_counts_and_the_mode(
    unbalanced, mode, extra, tmp_path, monkeypatch, float32_policy, capsys
):
    run = tmp_path / "run"
    args = ["--arch", "resnet8", "--dataset", f"folder:{unbalanced}", "--steps", "4", "--batch-size", "6"]
    args += ["--width", "0.25", "--verbose", "1", "--output-dir", str(run), "--class-balance", mode, *extra]
    metrics = _fit(args, tmp_path, monkeypatch)
    assert metrics["iterations"] == 4
    config = json.loads((run / "config.json").read_text())
    assert config["class_balance"] == (None if mode == "none" else mode)  # "none" is the default, as before
    assert config["schedule"]["steps_per_epoch"] == 36 // 6  # an epoch is the split's size in every mode
    record = config["balance"]
    assert record["mode"] == mode and record["class_counts"] == {"big": 30, "mid": 3, "small": 3}
    if mode == "weights":
        assert record["weights"] == pytest.approx({"big": 36 / 90, "mid": 4.0, "small": 4.0})
    if mode == "sampling":
        assert record["target"] == pytest.approx({"big": 1 / 3, "mid": 1 / 3, "small": 1 / 3})
    out = capsys.readouterr().out
    assert "class counts of the training split (36 images): big 30, mid 3, small 3 (largest to smallest 10.0:1)" in out
    assert f"--class-balance {mode}" in out


# ----------------------------------------------------------- bad files
@pytest.fixture
def with_bad_files(tmp_path):
    root = _unbalanced(tmp_path / "bad", counts={"big": 12, "mid": 12, "small": 12}, test=4)
    return root, _bad_files(root, np.random.default_rng(1))


def test_without_the_flag_the_first_bad_file_still_stops_the_run(with_bad_files):
    root, _ = with_bad_files
    with pytest.raises(UserError, match=r"^cannot decode image .*truncated\.jpg"):
        _info(root)


def test_skipped_files_are_listed_with_their_reasons(with_bad_files, tmp_path, monkeypatch, float32_policy, capsys):
    root, bad = with_bad_files
    run = tmp_path / "run"
    args = ["--arch", "resnet8", "--dataset", f"folder:{root}", "--steps", "2", "--batch-size", "6"]
    args += ["--width", "0.25", "--verbose", "1", "--output-dir", str(run)]
    metrics = _fit([*args, "--skip-bad-images", "--max-bad-fraction", "0.1"], tmp_path, monkeypatch)
    assert metrics["iterations"] == 2
    with open(run / "skipped_images.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(pathlib.Path(r["path"]), r["split"]) for r in rows] == [(p, p.parent.parent.name) for p in bad]
    reasons = {pathlib.Path(r["path"]).name: r["reason"] for r in rows}
    assert reasons == {
        "truncated.jpg": "jpeg::Uncompress failed. Invalid JPEG data or crop window.",
        "notes.jpg": reasons["notes.jpg"],
        "empty.jpg": "Input is empty.",
    }
    assert reasons["notes.jpg"].startswith("Unknown image file format.")
    out = capsys.readouterr().out
    assert f"skipped 3 of 51 files that do not decode: {run / 'skipped_images.csv'}" in out
    config = json.loads((run / "config.json").read_text())
    assert config["skipped_images"] == {"count": 3, "files": 51, "list": "skipped_images.csv", "max_bad_fraction": 0.1}
    assert (config["skip_bad_images"], config["max_bad_fraction"]) == (True, 0.1)
    assert (config["data"]["num_train"], config["data"]["num_test"]) == (36, 12) and "skipped" not in config["data"]
    assert config["balance"]["class_counts"] == {"big": 12, "mid": 12, "small": 12}  # the bad files left out


def test_more_bad_files_than_the_fraction_refuse_the_run(with_bad_files, tmp_path, monkeypatch):
    root, _ = with_bad_files
    out = tmp_path / "refused"
    args = ["--arch", "resnet8", "--dataset", f"folder:{root}", "--steps", "1", "--output-dir", str(out)]
    with pytest.raises(UserError) as caught:
        _fit([*args, "--skip-bad-images", "--verbose", "0"], tmp_path, monkeypatch)  # default 0.05: 3 of 51 is 5.9%
    message = str(caught.value)
    assert message.startswith(f"3 of 51 files of {root} do not decode (5.9%), more than --max-bad-fraction 0.05 allows")
    assert "truncated.jpg" in message and "\n" not in message and not out.exists()


def test_a_folder_of_bad_files_only_is_one_line_and_a_non_zero_exit(tmp_path, monkeypatch, capsys):
    root = tmp_path / "hopeless"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        (root / name / "a.jpg").write_bytes(b"")
        (root / name / "b.png").write_bytes(b"not a png")
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    for fraction in ("0.05", "1"):
        argv = ["--arch", "resnet8", "--dataset", f"folder:{root}", "--val-split", "0.5", "--skip-bad-images"]
        with pytest.raises(SystemExit) as exit_:
            run_main(fit.main, [*argv, "--max-bad-fraction", fraction, "--output-dir", str(tmp_path / "out")])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: none of the 4 files of {root} decodes") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_a_class_left_without_images_is_refused(tmp_path):
    root = _unbalanced(tmp_path / "lost", counts={"big": 20, "mid": 20, "small": 1}, test=1)
    (root / "train" / "small" / "000.png").write_bytes(b"broken")
    with pytest.raises(UserError, match=r"^class folder .*train/small has no image that decodes"):
        _info(root, skip_bad_images=True)


# ------------------------------------------------------------ bad settings
def test_bad_settings_are_refused_in_one_line(capsys):
    for parser, required in ((fit.build_parser(), ["--arch", "resnet8"]), (tune.build_parser(), ["--family", "cifar"])):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([*required, "--class-balance", "oversample"])
        assert exit_.value.code == 2
        assert "argument --class-balance: invalid choice: 'oversample'" in capsys.readouterr().err
    for settings, message in (
        ({"class_balance": "oversample"}, "--class-balance 'oversample'; expected one of none, weights, sampling"),
        ({"max_bad_fraction": 0.1}, "--max-bad-fraction needs --skip-bad-images"),
        ({"skip_bad_images": True, "dataset": "folder:x", "max_bad_fraction": 1.5}, "--max-bad-fraction 1.5;"),
        ({"skip_bad_images": True, "dataset": "synthetic"}, "--skip-bad-images applies to --dataset folder:PATH"),
    ):
        with pytest.raises(UserError) as caught:
            RunConfig(arch="resnet8", **settings)
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_tune_passes_the_settings_to_every_trial(monkeypatch):
    seen = {}
    monkeypatch.setattr(tune, "search", lambda space, base, settings: seen.setdefault("base", base))
    tune.main(["--family", "cifar", "--dataset", "folder:/x", "--class-balance", "sampling", "--skip-bad-images"])
    base = seen["base"]
    assert (base.class_balance, base.skip_bad_images, base.max_bad_fraction) == ("sampling", True, 0.05)


# ---------------------------------------------------------------- identity
def test_a_run_directory_from_before_these_settings_resumes_without_them(tmp_path):
    config = RunConfig(arch="resnet8", dataset="synthetic", steps=4, output_dir=str(tmp_path / "run")).resolved()
    assert IDENTITY_KEYS[-1] == "class_balance" and "skip_bad_images" not in IDENTITY_KEYS
    old = {key: value for key, value in config.to_dict().items() if key not in NEW_SETTINGS}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({**old, "status": "running"}))
    assert choose_run_dir(config) == (tmp_path / "run", True)
    # "none" said outright is the default; skipping bad files does not change what a run computes.
    for same in ({"class_balance": "none"}, {"dataset": "folder:x", "skip_bad_images": True}):
        changed = RunConfig(**{**config.to_dict(), **same}).resolved()
        assert {k: v for k, v in changed.identity().items() if k != "dataset"} == {
            k: v for k, v in record_identity(old).items() if k != "dataset"
        }
    for mode in ("weights", "sampling"):
        other = RunConfig(**{**config.to_dict(), "class_balance": mode}).resolved()
        with pytest.raises(UserError, match=rf"other settings \{{'class_balance': \(None, '{mode}'\)\}}"):
            choose_run_dir(other)
