"""reproduce.py figure4: the paper's Figure 4 (plain-18/34, ResNet-18/34 on
ImageNet photographs) drawn and judged from finished runs."""

import csv
import json

import pytest

from trainers import reproduce
from trainers.core import reproduction


def _finished_run(run_dir, train_errors, val_errors):
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text("{}")
    with open(run_dir / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["epoch", "iterations", "error", "test_error"])
        writer.writeheader()
        for epoch, (train, val) in enumerate(zip(train_errors, val_errors), 1):
            writer.writerow({"epoch": epoch, "iterations": 100 * epoch, "error": train, "test_error": val})


def test_figure4_skips_finished_runs_and_says_whether_depth_pays(tmp_path, capsys):
    root = tmp_path / "fig4"
    # The paper's pattern: plain-34 worse than plain-18, ResNet-34 better than ResNet-18.
    _finished_run(root / "plain18", [0.8, 0.5, 0.30], [0.7, 0.5, 0.35])
    _finished_run(root / "plain34", [0.8, 0.6, 0.40], [0.75, 0.55, 0.42])
    _finished_run(root / "resnet18", [0.7, 0.4, 0.25], [0.6, 0.4, 0.30])
    _finished_run(root / "resnet34", [0.7, 0.35, 0.20], [0.6, 0.35, 0.26])
    result = reproduce.main(["figure4", "--root", str(root), "--epochs", "3"])
    assert result["plain34_worse_than_plain18"] and result["plain34_trains_worse_than_plain18"]
    assert result["resnet34_better_than_resnet18"]
    assert result["runs"]["plain34"] == {"epochs": 3, "train_error": 0.40, "val_error": 0.42, "best_val_error": 0.42}
    assert (root / "figure4.png").stat().st_size > 10_000
    assert json.loads((root / "figure4.json").read_text()) == result
    out = capsys.readouterr().out
    assert out.count("finished, skipped") == 4 and "resnet34 better than resnet18: yes" in out
    # Without config.json the split's size, and so the noise, is unknown, and said so.
    margin = result["margins"]["resnet34_vs_resnet18"]
    assert {k: margin[k] for k in ("val_error_points", "two_standard_errors_points", "beyond_noise")} == {
        "val_error_points": pytest.approx(-4.0),
        "two_standard_errors_points": None,
        "beyond_noise": None,
    }
    assert "noise is unknown" in out
    # Without the models, no paired test either, and that is said.
    assert margin["paired"] is None and margin["paired_why"].startswith("no ") and "model.keras" in margin["paired_why"]
    assert "not paired: no " in out

    # The other way round is reported as it is.
    _finished_run(tmp_path / "other" / "plain18", [0.5], [0.5])
    _finished_run(tmp_path / "other" / "plain34", [0.4], [0.45])
    _finished_run(tmp_path / "other" / "resnet18", [0.3], [0.3])
    _finished_run(tmp_path / "other" / "resnet34", [0.35], [0.32])
    result = reproduce.main(["figure4", "--root", str(tmp_path / "other")])
    assert not result["plain34_worse_than_plain18"] and not result["resnet34_better_than_resnet18"]


def test_a_resumed_run_is_drawn_at_its_iterations_not_its_epoch_count(tmp_path):
    """A run resumed from the backup at iteration 1400 (147 iterations an
    epoch) logs its next 'epochs' at iterations 1547 and 1694."""
    run_dir = tmp_path / "resnet18"
    _finished_run(run_dir, [0.5] * 9, [0.5] * 9)
    with open(run_dir / "history.csv", "a", newline="") as f:
        csv.writer(f).writerows([[10, 1547, 0.4, 0.4], [11, 1694, 0.3, 0.3]])
    rows = reproduction.read_csv_rows(run_dir / "history.csv")
    assert reproduction.epochs_of(run_dir, rows)[:2] == [1.0, 2.0]  # no config.json: the first row's length, 100
    (run_dir / "config.json").write_text(json.dumps({"schedule": {"steps_per_epoch": 147}}))
    epochs = reproduction.epochs_of(run_dir, rows)
    assert [round(e, 3) for e in epochs[-2:]] == [round(1547 / 147, 3), round(1694 / 147, 3)]
    assert epochs[0] == 100 / 147


def test_a_margin_within_the_sampling_noise_is_called_so(tmp_path, capsys):
    """Figure 4 on Imagenette at 48 px, 10 epochs (docs/imagenet.md): ResNet-34
    25.12% against ResNet-18 25.50% on 3,925 validation images is 0.38 points,
    inside two standard errors (1.96 points); plain-34 72.23% against plain-18
    50.24% is far outside them."""
    root = tmp_path / "fig4"
    for arch, val in (("plain18", 0.5024), ("plain34", 0.7223), ("resnet18", 0.2550), ("resnet34", 0.2512)):
        _finished_run(root / arch, [val], [val])
        (root / arch / "config.json").write_text(json.dumps({"data": {"num_test": 3925}}))
    result = reproduce.main(["figure4", "--root", str(root), "--epochs", "1"])
    assert result["resnet34_better_than_resnet18"] and result["validation_images"] == 3925
    near = result["margins"]["resnet34_vs_resnet18"]
    assert near["val_error_points"] == pytest.approx(-0.38) and not near["beyond_noise"]
    assert near["two_standard_errors_points"] == pytest.approx(200 * ((0.255 * 0.745 + 0.2512 * 0.7488) / 3925) ** 0.5)
    far = result["margins"]["plain34_vs_plain18"]
    assert far["val_error_points"] == pytest.approx(21.99) and far["beyond_noise"]
    out = capsys.readouterr().out
    assert (
        "resnet34 better than resnet18: yes (0.38 points of validation error, within the sampling noise of 3,925" in out
    )
    assert "plain34 worse than plain18: yes (21.99 points of validation error, beyond" in out
    json.loads((root / "figure4.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))


def test_figure4_pairs_the_runs_on_the_same_images_where_their_models_are_there(tmp_path, capsys):
    """With each run's config.json and model.keras, the verdicts come with
    trainers/compare.py's paired test: both models scored image by image."""
    import keras

    import resnet_keras

    root = tmp_path / "fig4"
    for seed, (arch, val) in enumerate((("plain18", 0.9), ("plain34", 0.91), ("resnet18", 0.88), ("resnet34", 0.87))):
        _finished_run(root / arch, [val], [val])
        (root / arch / "config.json").write_text(
            json.dumps(
                {"dataset": "synthetic", "family": "cifar", "seed": 0, "synthetic_test": 512, "data": {"num_test": 512}}
            )
        )
        keras.utils.set_random_seed(seed)
        resnet_keras.get_model("resnet8", num_classes=10, input_shape=(32, 32, 3)).save(root / arch / "model.keras")
    result = reproduce.main(["figure4", "--root", str(root), "--epochs", "1"])
    for pair in ("plain34_vs_plain18", "resnet34_vs_resnet18"):
        paired = result["margins"][pair]["paired"]
        assert result["margins"][pair]["paired_why"] is None
        assert paired["images"] == 512 and paired["synthetic"]
        assert sum(paired[k] for k in ("both_right", "only_a_right", "only_b_right", "both_wrong")) == 512
        assert 0 < paired["mcnemar_exact_p"] <= 1
    assert json.loads((root / "figure4.json").read_text()) == result
    assert capsys.readouterr().out.count("paired on the same images") == 2
