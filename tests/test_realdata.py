"""Training on the real CIFAR-10 copy (JPEG-q75) of ../shared/tensorflow_datasets.
Runs where TFDS_DATA_DIR holds a prepared cifar10 (.ci/run sets it); skipped
with the reason otherwise."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from _realdata import DATA_DIR, requires

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = requires("cifar10")


@pytest.mark.slow
def test_resnet20_paper_recipe_160_iterations_reach_30_percent(tmp_path):
    """160 iterations of batch 64 (0.2 epoch; lr 0.05 for batch 64, the milestones scaled to 80 and 120) clear
    the 10% of chance by a wide margin (docs/setup.md has the accuracy measured, and why the test is this short:
    the whole suite must stay under 20 minutes on 2 cores).
    Slow (about 140 s); in the default run fit.py learns real photographs in test_realdata_imagenette.py, and
    test_shipped_resnet20_reaches_its_manifest_accuracy_on_the_cifar10_copy reads this copy's test split."""
    run_dir = tmp_path / "resnet20-cifar10"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "trainers" / "fit.py"),
            "--arch",
            "resnet20",
            "--steps",
            "160",
            "--batch-size",
            "64",
            "--data-dir",
            DATA_DIR,
            "--output-dir",
            str(run_dir),
            "--backup-every",
            "1000",
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["dataset"] == "cifar10" and not metrics["synthetic"] and metrics["iterations"] == 160
    print(f"resnet20, paper recipe, 160 iterations: test accuracy {100 * (1 - metrics['test_top1_error']):.2f}%")
    assert 1 - metrics["test_top1_error"] >= 0.30


def test_shipped_resnet20_reaches_its_manifest_accuracy_on_the_cifar10_copy(float32_policy):
    import resnet_keras
    from resnet_keras import pretrained
    from trainers.core import data
    from trainers.core.evaluation import score

    entry = pretrained.find_weights("resnet20", "cifar10")
    model = resnet_keras.get_model("resnet20", num_classes=10, weights="cifar10")
    info = data.describe("cifar10", data_dir=DATA_DIR, family="cifar", image_size=32, val_split=0.0, seed=0)
    top1, _, count = score(model, data.eval_pipeline(info, "test", 500), k=5)
    print(f"shipped resnet20 'cifar10': {100 * top1 / count:.2f}% (manifest {100 * entry['test_accuracy']:.2f}%)")
    assert count == 10_000 and abs(top1 / count - entry["test_accuracy"]) <= 0.001
