"""Grad-CAM (resnet_keras.explain, predict.py --explain): on a network whose
answer depends on one known image region, the map lights that region; the
overlays are written for a run directory, a .keras file and shipped weights;
an exported model is refused in one line."""

import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import resnet_keras
from resnet_keras.explain import grad_cam
from trainers import predict
from trainers.core.errors import UserError

SIZE, SQUARE = 32, 10
NAMES = ["red square", "blue square"]


def squares(n, seed):
    """Grey noise with one 10x10 square at a random place: red (class 0) or
    blue (class 1). Only the square's pixels tell the classes apart, and it
    moves, so a map that lights it follows the evidence, not a fixed place."""
    rng = np.random.default_rng(seed)
    images = rng.integers(90, 160, size=(n, SIZE, SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, 2, size=n)
    corners = rng.integers(0, SIZE - SQUARE, size=(n, 2))
    for image, label, (row, col) in zip(images, labels, corners):
        image[row : row + SQUARE, col : col + SQUARE] = (240, 30, 30) if label == 0 else (30, 30, 240)
    return images, labels, corners


@pytest.fixture(scope="module")
def square_model():
    """A half-width ResNet-20 trained to tell the two squares apart (three epochs reach 100% here)."""
    keras.utils.set_random_seed(0)
    model = resnet_keras.get_model("resnet20", num_classes=2, input_shape=(SIZE, SIZE, 3), width=0.5, seed=0)
    model.compile(
        keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    images, labels, _ = squares(1024, seed=0)
    model.fit(images, labels, batch_size=64, epochs=3, verbose=0)
    return model


def test_the_map_lights_the_region_that_decides_the_class(square_model):
    images, labels, corners = squares(16, seed=1)
    heat, classes, probabilities = grad_cam(square_model, images)
    assert heat.shape == (16, SIZE, SIZE) and heat.min() >= 0 and heat.max() <= 1
    np.testing.assert_array_equal(classes, labels)  # the network learnt the task; the map explains right answers
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    for h, (row, col) in zip(heat, corners):
        inside = np.zeros_like(h, bool)
        inside[row : row + SQUARE, col : col + SQUARE] = True
        # The map has the last stage's resolution, one cell per 4 pixels here: the peak lies on the square
        # or within half a cell of it.
        near = np.zeros_like(h, bool)
        near[max(row - 2, 0) : row + SQUARE + 2, max(col - 2, 0) : col + SQUARE + 2] = True
        peak_row, peak_col = np.unravel_index(h.argmax(), h.shape)
        assert near[peak_row, peak_col], ((peak_row, peak_col), (row, col))
        assert h[inside].mean() > 1.1 * h[~inside].mean()
    # Over all images the square holds most of the map though it is a tenth of the picture.
    share = np.mean([h[r : r + SQUARE, c : c + SQUARE].sum() / h.sum() for h, (r, c) in zip(heat, corners)])
    assert share > 0.15, share


def test_a_named_class_is_explained_and_a_missing_layer_is_named(square_model):
    images, _, _ = squares(2, seed=2)
    _, classes, _ = grad_cam(square_model, images, class_index=1)
    assert list(classes) == [1, 1]
    with pytest.raises(ValueError, match="no layer 'nope'"):
        grad_cam(square_model, images, layer="nope")
    plain = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no 'avg_pool' layer"):
        grad_cam(plain, images)


def _image_files(tmp_path, count):
    images, labels, _ = squares(count, seed=3)
    files = []
    for i, image in enumerate(images):
        path = tmp_path / f"photo{i}.png"
        tf.io.write_file(str(path), tf.io.encode_png(image.astype(np.uint8)))
        files.append(str(path))
    return files, labels


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_predict_explain_writes_an_overlay_per_image(square_model, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    square_model.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"class_names": NAMES, "family": "cifar"}))
    files, labels = _image_files(tmp_path, 3)
    # Two images of one name from different folders get two overlays, not one overwritten.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "photo0.png").write_bytes(pathlib.Path(files[0]).read_bytes())
    files.append(str(tmp_path / "other" / "photo0.png"))
    out = tmp_path / "cams"
    for model in (run, run / "model.keras"):
        results = predict.main(["--model", str(model), "--explain", "--explain-dir", str(out), *files])
        printed = capsys.readouterr().out
        assert [r["top"][0][0] for r in results[:3]] == [NAMES[i] for i in labels]
        overlays = [r["explained"] for r in results]
        assert len(set(overlays)) == 4 and overlays[3].endswith("photo0-2.gradcam.png")
        for overlay in overlays:
            assert f"(Grad-CAM: {overlay})" in printed
            assert _is_png(out / overlay.split("/")[-1])
        # The ranking is the one predict.py prints without --explain.
        plain = predict.main(["--model", str(model), *files])
        for a, b in zip(plain, results):
            assert [name for name, _ in a["top"]] == [name for name, _ in b["top"]]
            np.testing.assert_allclose([p for _, p in a["top"]], [p for _, p in b["top"]], atol=1e-5)


def test_explain_works_on_shipped_weights(tmp_path):
    files, _ = _image_files(tmp_path, 1)
    results = predict.main(
        ["--model", "weights:resnet20/cifar10", "--explain", "--explain-dir", str(tmp_path / "cams"), *files]
    )
    assert _is_png(tmp_path / "cams" / "photo0.gradcam.png") and len(results[0]["top"]) == 5


def test_exported_models_and_stray_flags_are_refused_in_one_line(tmp_path):
    files, _ = _image_files(tmp_path, 1)
    tflite = tmp_path / "run" / "export" / "model.tflite"
    tflite.parent.mkdir(parents=True)
    tflite.write_bytes(b"not read: refused before loading")
    (tmp_path / "run" / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"is a TFLite model, which keeps only the forward pass.*--model .*run"):
        predict.main(["--model", str(tflite), "--explain", *files])
    saved = tmp_path / "sm"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")
    with pytest.raises(UserError, match="is a SavedModel, which keeps only the forward pass"):
        predict.main(["--model", str(saved), "--explain", *files])
    with pytest.raises(UserError, match="--explain-dir is where --explain draws"):
        predict.main(["--model", "weights:resnet20/cifar10", "--explain-dir", str(tmp_path), *files])
    assert not (tmp_path / "cams").exists()
