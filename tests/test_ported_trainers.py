"""Issue 39 through the commands: published ImageNet weights (``SOURCE:NAME=PATH``) as ``fit.py --init-from`` on an
image folder, as ``predict.py --model`` with the ImageNet class names, and refused where they do not fit. No
network and no torch: the weights are a timm-named ``.safetensors`` file synthesized from a network of ours
(``test_ported_fetch.torch_state``)."""

import json

import keras
import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file
from test_folder import _folder
from test_ported_fetch import torch_state

import resnet_keras
from resnet_keras.ported import catalog
from trainers import evaluate, export, fit, predict
from trainers.core import exporting, finetune
from trainers.core.errors import UserError
from trainers.core.sources import load_trained

SPEC = "timm:resnet18.a1_in1k"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """timm's resnet18 (1000 classes) with random weights, as model.safetensors."""
    model = catalog.build(catalog.parse(SPEC), input_shape=(64, 64, 3), seed=5)
    path = tmp_path_factory.mktemp("timm") / "model.safetensors"
    save_file(torch_state(model), path, metadata={"format": "pt"})
    return path


def test_init_from_published_weights_fine_tunes_a_folder(tmp_path, monkeypatch, weights, float32_policy):
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    root = _folder(tmp_path / "photos", per_class=6)
    run = tmp_path / "run"
    spec = f"{SPEC}={weights}"
    args = ["--arch", "resnet18", "--dataset", f"folder:{root}", "--val-split", "0.3", "--image-size", "64"]
    args += ["--init-from", spec]
    args += ["--batch-size", "8", "--steps", "2", "--precision", "float32", "--verbose", "0", "--output-dir", str(run)]
    fit.main(args)
    config = json.loads((run / "config.json").read_text())
    init = config["init"]
    assert init["kind"] == "published ImageNet weights" and init["classifier"] == "new"
    assert init["layers_copied"] > 40 and init["normalization"].startswith(f"source ({spec}'s mean")
    assert config["init_from"] == spec  # a name with an absolute path: the same command resumes it anywhere
    # The run's network takes raw pixels with the source's normalization (ImageNet mean and std on 0-255).
    model = keras.models.load_model(run / "model.keras")
    normalization = resnet_keras.get_normalization(model)
    entry = catalog.parse(SPEC)
    np.testing.assert_allclose(normalization.mean.numpy()[0, 0], entry.mean_255, rtol=1e-6)
    np.testing.assert_allclose(normalization.std.numpy()[0, 0], entry.std_255, rtol=1e-6)


def test_init_from_published_weights_refuses_another_network(tmp_path, monkeypatch, weights, float32_policy):
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    root = _folder(tmp_path / "photos", per_class=4)
    args = ["--arch", "resnet18", "--dataset", f"folder:{root}", "--val-split", "0.5", "--image-size", "64"]
    args += ["--init-from", f"{SPEC}={weights}", "--steps", "1", "--batch-size", "2", "--precision", "float32"]
    args += ["--verbose", "0", "--output-dir", str(tmp_path / "run")]
    with pytest.raises(UserError, match=r"holds a resnet18 .* differs at pool1_blur .*train --arch resnet18"):
        fit.main([*args, "--blur-pool", "stem"])
    assert not (tmp_path / "run").exists()  # a failed start leaves nothing behind


def test_a_v1_bottleneck_is_not_a_v1_5_one():
    """Names and shapes agree between ResNet-50 v1 and v1.5 (the stride moves between same-shaped convolutions):
    the check compares strides, and names the flag that builds the weights' network."""
    v15 = resnet_keras.get_model("resnet50", num_classes=10, input_shape=(64, 64, 3), bottleneck_version="v1.5")
    v1 = resnet_keras.get_model("resnet50", num_classes=10, input_shape=(64, 64, 3))
    network = {"arch": "resnet50", "bottleneck_version": "v1.5"}
    finetune._check_same_network(v15, v15, "torchvision:resnet50", network)  # the same network passes
    with pytest.raises(UserError, match=r"differs at conv3_block1_1_conv .*--arch resnet50 --bottleneck-version v1.5"):
        finetune._check_same_network(v1, v15, "torchvision:resnet50", network)


def test_predict_prints_imagenet_names(tmp_path, weights, capsys):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(photo)
    results = predict.main(["--model", f"{SPEC}={weights}", str(photo), "--top", "3"])
    names = set(resnet_keras.imagenet_class_names())
    out = capsys.readouterr().out
    assert len(results) == 1 and "photo.jpg" in out
    printed = [line for line in out.splitlines() if "%" in line]
    assert printed and all(any(name in line for name in names) for line in printed[:3])


def test_published_weights_have_no_best_epoch(weights):
    with pytest.raises(UserError, match="one set of weights"):
        evaluate.main([f"{SPEC}={weights}", "--which", "best"])


def test_export_carries_the_imagenet_names(tmp_path, weights):
    # The file is checked against the Keras network here, on 8 images, rather than by export's own check, which
    # for published weights draws synthetic images of all 1000 classes at 224 px first (19 s of 31 here).
    out = tmp_path / "export"
    args = ["--format", "tflite", "--output", str(out), "--check-samples", "0", "--latency-samples", "0"]
    export.main([f"{SPEC}={weights}", *args])
    labels = (out / "model_float32.labels.txt").read_text().splitlines()
    assert labels == resnet_keras.imagenet_class_names() and labels[0] == "tench"
    network = load_trained(f"{SPEC}={weights}").model
    run, _, _ = exporting.tflite_runner((out / "model_float32.tflite").read_bytes())
    images = np.random.default_rng(0).integers(0, 256, (8, *network.input_shape[1:]), dtype=np.uint8)
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(network(images.astype("float32"))))
    got = np.stack([run(image) for image in images])
    assert np.array_equal(got.argmax(-1), expected.argmax(-1)) and np.abs(got - expected).max() < 1e-4
