"""Figure 7's layer responses: which layers, and their standard deviations
against a direct computation."""

import json

import keras
import numpy as np
import pytest

import resnet_keras
from trainers import responses


def _randomize_bn(model, seed=0):
    # Away from initial values, so that BN's offsets and scales matter.
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2.0, gamma.shape), rng.normal(0, 1, beta.shape),
                               rng.normal(0, 0.5, mean.shape), rng.uniform(0.5, 2.0, var.shape)])  # fmt: skip


@pytest.mark.parametrize("arch, shortcut", [("resnet8", "B"), ("plain8", None)])
def test_response_layers_are_the_bns_after_3x3_convolutions(arch, shortcut):
    model = resnet_keras.get_model(arch, num_classes=10, **({"shortcut": shortcut} if shortcut else {}))
    names = responses.response_layers(model)
    # conv1, then two 3x3 layers in each of the 3 stages' one block; the 1x1 projection's BN is not one.
    assert len(names) == 7 and names[0] == "conv1_bn"
    assert all(model.get_layer(n).__class__.__name__ == "BatchNormalization" for n in names)
    assert not any("_0_" in n for n in names)


def test_response_std_matches_a_direct_computation_at_any_batch_size():
    model = resnet_keras.get_model("resnet8", num_classes=10, input_shape=(16, 16, 3))
    _randomize_bn(model)
    images = np.random.default_rng(1).uniform(0, 255, (10, 16, 16, 3)).astype("float32")
    names = responses.response_layers(model)
    batched = responses.response_stds(model, [images[:3], images[3:7], images[7:]])
    whole = responses.response_stds(model, [(images, np.zeros(10))])
    for name in names:
        out = keras.Model(model.input, model.get_layer(name).output)(images, training=False)
        out = np.asarray(keras.ops.convert_to_numpy(out), np.float64)
        direct = out.reshape(-1, out.shape[-1]).std(axis=0).mean()
        assert batched[name] == pytest.approx(direct, rel=1e-6)
        assert whole[name] == pytest.approx(direct, rel=1e-6)
    assert len(set(round(v, 6) for v in batched.values())) == len(names)  # layers differ


def test_figure7_reads_trained_runs_and_draws_them(tmp_path, float32_policy):
    from trainers import data, fit, reproduce
    from trainers.common import UserError, load_keras_model

    runs = []
    for arch in ("plain8", "resnet8"):
        run_dir = tmp_path / arch
        fit.main(["--arch", arch, "--dataset", "synthetic", "--image-size", "16", "--synthetic-train", "256",
                  "--steps", "8", "--batch-size", "32", "--precision", "float32", "--verbose", "0",
                  "--output-dir", str(run_dir)])  # fmt: skip
        runs.append(run_dir)
    result = reproduce.main(["figure7", *map(str, runs), "--out", str(tmp_path / "fig"), "--batch-size", "100"])
    assert (tmp_path / "fig" / "figure7.png").stat().st_size > 0
    assert json.loads((tmp_path / "fig" / "figure7.json").read_text()) == json.loads(json.dumps(result))
    # Computed from the trained weights, on the run's own test images.
    for run_dir, row in zip(runs, result["runs"]):
        model = load_keras_model(run_dir / "model.keras")
        config = json.loads((run_dir / "config.json").read_text())
        images = np.concatenate([x for x, _ in data.eval_pipeline(data.describe_run(config, 16), "test", 64).as_numpy_iterator()])
        direct = responses.response_stds(model, [images])
        assert row["layers"] == list(direct) and row["std"] == pytest.approx(list(direct.values()), rel=1e-6)
        assert row["synthetic"] is True and len(row["std"]) == 7
    with pytest.raises(UserError, match="not a finished fit.py run"):
        reproduce.main(["figure7", str(tmp_path / "fig")])


def test_figure6_trains_each_network_once_and_resumes_without_rerunning(tmp_path, float32_policy):
    from trainers import reproduce
    from trainers.common import UserError

    root = tmp_path / "f6"
    args = ["figure6", "--depths", "8,14", "--epochs", "1", "--dataset", "synthetic", "--synthetic-train", "256",
            "--image-size", "16", "--precision", "float32", "--root", str(root)]  # fmt: skip
    result = reproduce.main(args)
    assert set(result["runs"]) == {"plain8", "plain14", "resnet8", "resnet14"}
    assert (root / "figure6.png").stat().st_size > 0
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("*/metrics.json")}
    assert len(stamps) == 4
    # An unfinished run (here: its result removed) is trained again; finished ones are not touched.
    (root / "resnet14" / "metrics.json").unlink()
    (root / "resnet14" / "model.keras").unlink()
    reproduce.main(args)
    for path, stamp in stamps.items():
        if path.parent.name != "resnet14":
            assert path.stat().st_mtime_ns == stamp
    assert (root / "resnet14" / "metrics.json").exists()
    rows = reproduce.main(["table6", "--root", str(root)])
    assert [r["arch"] for r in rows] == ["plain8", "plain14", "resnet8", "resnet14"]
    assert rows[0]["params"] == rows[2]["params"]  # option A: plain and residual have the same parameters
    assert rows[3]["paper_error"] is None and (root / "table6.csv").exists()
    with pytest.raises(UserError, match="6n\\+2"):
        reproduce.main(["figure6", "--depths", "21"])
