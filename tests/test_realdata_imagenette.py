"""An ImageNet network on real photographs: Imagenette (160 px) of
../shared/tensorflow_datasets. Runs where TFDS_DATA_DIR holds a prepared
imagenette/160px-v2 (.ci/run sets it); skipped with the reason otherwise."""

import json

from _realdata import DATA_DIR, requires

pytestmark = requires("imagenette/160px-v2")


def test_resnet18_fast_recipe_learns_imagenette_above_chance(tmp_path, monkeypatch, capsys, float32_policy):
    """60 iterations of batch 64 (0.4 epoch) at 32 px, random-resized crops,
    the fast recipe at a peak learning rate of 0.05 (its warm-up is 3
    iterations at this length): validation top-1 above the 10% of chance
    (docs/setup.md has the accuracy and time measured, and the longer
    settings tried), and a complete run directory. fit.py's command, in this
    process (a process of its own only added TensorFlow's start)."""
    from trainers import fit

    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    run_dir = tmp_path / "resnet18-imagenette"
    fit.main(
        [
            "--arch",
            "resnet18",
            "--recipe",
            "fast",
            "--image-size",
            "32",
            "--steps",
            "60",
            "--lr",
            "0.05",
            "--data-dir",
            DATA_DIR,
            "--output-dir",
            str(run_dir),
            "--backup-every",
            "1000",
        ]
    )
    assert "random-resized crops" in capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["dataset"] == "imagenette/160px-v2" and not metrics["synthetic"] and metrics["iterations"] == 60
    config = json.loads((run_dir / "config.json").read_text())
    assert config["status"] == "finished" and config["data"]["num_train"] == 9469
    assert config["data"]["num_test"] == 3925 and config["data"]["test_split"] == "validation"
    accuracy = 1 - metrics["test_top1_error"]
    print(f"resnet18, fast recipe, lr 0.05, 32 px, 60 iterations: validation accuracy {100 * accuracy:.2f}%")
    assert accuracy >= 0.16
    for name in ("model.keras", "best.keras", "history.csv", "steps.csv", "curves.png", "pixel_mean.npy", "logs"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "backup").exists()
    assert not list(run_dir.glob(".*tmp*"))
