"""--dataset folder:PATH: image folders written by the tests themselves."""

import json

import numpy as np
import pytest
from PIL import Image

from trainers import evaluate, fit
from trainers.core import data, folder
from trainers.core.errors import UserError

COLOURS = {"apple": (200, 30, 30), "leaf": (30, 200, 30), "sky": (30, 30, 200)}


def _write_images(directory, colour, count, rng, start=0):
    """Noisy single-colour images of random sizes, in every format and mode."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        h, w = rng.integers(20, 60, 2)
        pixels = np.clip(np.array(colour) + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        kind = i % 6
        if kind == 0:
            image.save(directory / f"{i}.png")
        elif kind == 1:
            image.save(directory / f"{i}.jpg", quality=90)
        elif kind == 2:
            image.save(directory / f"{i}.bmp")
        elif kind == 3:
            image.save(directory / f"{i}.gif")
        elif kind == 4:
            image.convert("L").save(directory / f"{i}.png")  # grayscale
        else:
            image.convert("RGBA").save(directory / f"{i}.png")  # with alpha


def _folder(root, classes=COLOURS, per_class=12, seed=0):
    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        _write_images(root / name, colour, per_class, rng)
    return root


def _fit(args, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    return fit.main([*args, "--precision", "float32", "--verbose", "0"])


def test_a_folder_of_class_folders_trains_end_to_end(tmp_path, monkeypatch, float32_policy):
    root = _folder(tmp_path / "photos")
    run = tmp_path / "run"
    metrics = _fit(
        [
            "--arch",
            "resnet8",
            "--dataset",
            f"folder:{root}",
            "--val-split",
            "0.25",
            "--steps",
            "30",
            "--batch-size",
            "9",
            "--lr",
            "0.05",
            "--output-dir",
            str(run),
        ],
        tmp_path,
        monkeypatch,
    )
    config = json.loads((run / "config.json").read_text())
    assert config["class_names"] == ["apple", "leaf", "sky"]
    assert config["data"]["num_train"] == 27 and config["data"]["num_test"] == 9
    assert config["data"]["test_split"] == "held-out" and "files" not in config["data"]
    assert metrics["iterations"] == 30 and 1 - metrics["test_top1_error"] > 0.5  # colours: chance is 1/3
    result = evaluate.main([str(run)])
    assert result["images"] == 9 and result["top1_error"] == pytest.approx(metrics["test_top1_error"], abs=1e-6)


def test_every_format_and_mode_decodes_to_rgb(tmp_path):
    root = _folder(tmp_path / "photos", per_class=6)
    info = data.describe(f"folder:{root}", data_dir=None, family="imagenet", image_size=32, val_split=0.5, seed=0)
    assert (info.num_train, info.num_test, info.num_classes) == (9, 9, 3)
    images = list(data.raw_dataset(info, "train", seed=0).as_numpy_iterator())
    assert len(images) == 9 and all(im.shape[2] == 3 and im.dtype == np.uint8 for im, _ in images)
    # Each image keeps its colour: the label is the folder it came from.
    for image, label in images:
        assert int(np.argmax(image.reshape(-1, 3).mean(axis=0))) == int(label)


def test_split_folders_are_used_as_given(tmp_path):
    rng = np.random.default_rng(1)
    for split, count in (("train", 8), ("val", 4)):
        for name, colour in COLOURS.items():
            _write_images(tmp_path / "ds" / split / name, colour, count, rng)
    info = data.describe(
        f"folder:{tmp_path / 'ds'}", data_dir=None, family="cifar", image_size=32, val_split=0.0, seed=0
    )
    assert (info.num_train, info.num_val, info.num_test, info.test_split) == (24, 0, 12, "validation")
    held = data.describe(
        f"folder:{tmp_path / 'ds'}", data_dir=None, family="cifar", image_size=32, val_split=0.25, seed=0
    )
    assert (held.num_train, held.num_val, held.num_test) == (18, 6, 12)
    # The held-out part takes the same share of every class.
    assert sorted(held.files["val"][1]) == [0, 0, 1, 1, 2, 2]


def _refused(dataset, match, tmp_path, monkeypatch, extra=()):
    out = tmp_path / "refused"
    with pytest.raises(UserError, match=match):
        _fit(
            ["--arch", "resnet8", "--dataset", dataset, "--steps", "1", "--output-dir", str(out), *extra],
            tmp_path,
            monkeypatch,
        )
    assert not out.exists()


def test_bad_folders_are_refused_in_one_line_and_nothing_is_written(tmp_path, monkeypatch):
    _refused(f"folder:{tmp_path / 'missing'}", "is not a directory", tmp_path, monkeypatch)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no classes here")
    _refused(f"folder:{tmp_path / 'empty'}", "has no class folders", tmp_path, monkeypatch, ["--val-split", "0.2"])
    root = _folder(tmp_path / "hollow", per_class=4)
    (root / "void").mkdir()
    (root / "void" / "notes.txt").write_text("not an image")
    _refused(f"folder:{root}", r"class folder .*void has no images", tmp_path, monkeypatch, ["--val-split", "0.2"])
    single = _folder(tmp_path / "single", classes={"apple": (200, 30, 30)}, per_class=4)
    _refused(f"folder:{single}", "one class folder .*at least two", tmp_path, monkeypatch, ["--val-split", "0.2"])
    broken = _folder(tmp_path / "broken", per_class=4)
    (broken / "leaf" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    _refused(f"folder:{broken}", r"cannot decode image .*leaf/bad\.jpg", tmp_path, monkeypatch, ["--val-split", "0.2"])
    flat = _folder(tmp_path / "flat", per_class=4)
    _refused(f"folder:{flat}", "no val/ or test/ folder.*--val-split", tmp_path, monkeypatch)
    rng = np.random.default_rng(2)
    for split, names in (("train", ("apple", "leaf")), ("test", ("apple", "sky"))):
        for name in names:
            _write_images(tmp_path / "mixed" / split / name, COLOURS[name], 3, rng)
    _refused(f"folder:{tmp_path / 'mixed'}", "differ from those of", tmp_path, monkeypatch)
    _write_images(tmp_path / "noval" / "val" / "apple", COLOURS["apple"], 3, rng)
    _refused(f"folder:{tmp_path / 'noval'}", "but no train/ folder", tmp_path, monkeypatch)


def test_held_out_is_stratified_and_deterministic():
    paths = [f"{c}/{i}.png" for c in "abc" for i in range(10)]
    labels = [ord(p[0]) - ord("a") for p in paths]
    (kept, _), (out, out_labels) = folder.held_out(paths, labels, 0.2)
    assert len(kept) == 24 and sorted(out_labels) == [0, 0, 1, 1, 2, 2]
    assert out == ["a/8.png", "a/9.png", "b/8.png", "b/9.png", "c/8.png", "c/9.png"]


def test_tune_searches_on_a_folder(tmp_path, monkeypatch, float32_policy):
    from trainers import tune

    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    root = _folder(tmp_path / "photos", per_class=8)
    result = tune.main(
        [
            "--family",
            "cifar",
            "--tuner",
            "random",
            "--max-trials",
            "1",
            "--dataset",
            f"folder:{root}",
            "--val-split",
            "0.25",
            "--n-min",
            "1",
            "--n-max",
            "1",
            "--width",
            "0.25",
            "--batch-size",
            "6",
            "--epochs",
            "1",
            "--precision",
            "float32",
        ]
    )
    directory = tmp_path / "runs" / "tune-cifar-folder-photos-random"
    assert (directory / "trials.csv").exists() and result["best"]["val_accuracy"] is not None
    run = json.loads((directory / "trials" / f"trial_{result['best']['trial']}" / "result.json").read_text())["run_dir"]
    config = json.loads((tmp_path / run / "config.json").read_text())
    assert config["class_names"] == ["apple", "leaf", "sky"]
    assert config["data"]["test_split"] == "held-out" and config["data"]["num_test"] == 6  # 25% of 24, stratified
