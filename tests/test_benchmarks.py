"""The benchmark scripts run and report what docs/benchmarks.md quotes. Their
figures are never asserted here: speed is measured by running them."""

import json

import keras
import numpy as np
import pytest

import resnet_keras
from benchmarks import model_throughput


# A benchmark's smoke test of 60 s or more: the slow tier, so that the test command stays under 20 minutes on 2 cores.
@pytest.mark.slow
def test_model_throughput_runs_alternated_rounds_and_writes_json(tmp_path, float32_policy):
    out = tmp_path / "result.json"
    args = [
        "--pair",
        "resnet20",
        "--batch-size",
        "4",
        "--rounds",
        "2",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--precision",
        "float32",
        "mixed_bfloat16",
        "--xla",
        "off",
        "--modes",
        "train",
    ]
    results = model_throughput.main([*args, "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    pair = results["pairs"]["resnet20"]
    assert pair["batch_size"] == 4 and pair["image_size"] == 32
    rounds = pair["train"]["per_round"]
    models = ["resnet_keras", "handwritten", "handwritten_symmetric"]
    assert list(rounds) == [f"{m}|{p}|no-xla" for p in ("float32", "mixed_bfloat16") for m in models]
    assert all(len(speeds) == 2 and min(speeds) > 0 for speeds in rounds.values())
    assert pair["train"]["best_round"] == {k: max(v) for k, v in rounds.items()}
    ratios = pair["train"]["ratios"]
    assert set(ratios) == {
        "resnet_keras/handwritten|float32|no-xla",
        "resnet_keras/handwritten_symmetric|float32|no-xla",
        "resnet_keras/handwritten|mixed_bfloat16|no-xla",
        "resnet_keras/handwritten_symmetric|mixed_bfloat16|no-xla",
        "resnet_keras|mixed_bfloat16|no-xla/float32|no-xla",
    }
    per_round = [a / b for a, b in zip(rounds["resnet_keras|float32|no-xla"], rounds["handwritten|float32|no-xla"])]
    ratio = ratios["resnet_keras/handwritten|float32|no-xla"]
    assert ratio["min"] == min(per_round) and ratio["max"] == max(per_round)
    assert ratio["min"] <= ratio["median"] <= ratio["max"]
    assert keras.config.dtype_policy().name == "float32"  # restored after building the variants


def test_symmetric_reference_is_the_same_network_but_for_padding():
    reference = model_throughput.handwritten_resnet20((32, 32, 3), 10)
    symmetric = model_throughput.handwritten_resnet20((32, 32, 3), 10, symmetric_padding=True)
    assert reference.count_params() == symmetric.count_params()
    pads = [layer for layer in symmetric.layers if isinstance(layer, keras.layers.ZeroPadding2D)]
    assert len(pads) == 2  # the two stride-2 convolutions, at the starts of stages 2 and 3
    resnet56 = model_throughput.handwritten_resnet20((32, 32, 3), 10, n=9)
    ours = resnet_keras.get_model("resnet56", num_classes=10)
    trainable = lambda m: sum(int(np.prod(w.shape)) for w in m.trainable_weights)  # noqa: E731
    assert trainable(resnet56) == trainable(ours) == 853_018  # the paper: 0.85M


def test_model_throughput_rejects_bad_counts():
    with pytest.raises(SystemExit, match="--rounds must be at least 1, got 0"):
        model_throughput.main(["--rounds", "0"])


# A benchmark's smoke test of 55 s or more: the slow tier, so that the test command stays under 20 minutes on 2 cores.
@pytest.mark.slow
def test_input_pipeline_benchmark_runs_both_ways_and_both_paths(tmp_path, float32_policy, monkeypatch):
    from benchmarks import input_pipeline
    from trainers.core import data

    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "pipeline.json"
    results = input_pipeline.main(
        [
            "--dataset",
            "synthetic",
            "--synthetic-train",
            "320",
            "--arch",
            "resnet8",
            "--batch-size",
            "16",
            "--steps",
            "12",
            "--rounds",
            "2",
            "--pipeline-batches",
            "5",
            "--precision",
            "float32",
            "--json",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert set(results["pipeline"]["images_per_second"]) == {"autotune", "fixed", "fixed+batched"}
    assert all(len(v) == 2 and min(v) > 0 for v in results["pipeline"]["images_per_second"].values())
    speeds = results["fit"]["images_per_second"]
    assert len(speeds["end_to_end"]) == len(speeds["model_only"]) == 2 and min(speeds["model_only"]) > 0
    ratio = results["fit"]["ratio_end_to_end_over_model_only"]
    assert ratio["min"] <= ratio["median"] <= ratio["max"]
    assert data.USE_AUTOTUNE is False and data.BATCHED_CIFAR_AUGMENTATION  # the project's settings are restored

    # --pipeline-threads: one end-to-end variant per value, each built with its value.
    seen, finish = [], data._finish
    monkeypatch.setattr(data, "_finish", lambda ds: seen.append(data.PIPELINE_INTRA_OP_THREADS) or finish(ds))
    results = input_pipeline.main(
        [
            "--dataset",
            "synthetic",
            "--synthetic-train",
            "320",
            "--arch",
            "resnet8",
            "--batch-size",
            "16",
            "--steps",
            "12",
            "--rounds",
            "1",
            "--skip",
            "pipeline",
            "--precision",
            "float32",
            "--pipeline-threads",
            "0",
            "2",
        ]
    )
    assert set(results["fit"]["images_per_second"]) == {"end_to_end_threads0", "end_to_end_threads2", "model_only"}
    assert {"ratio_end_to_end_threads0_over_model_only", "ratio_end_to_end_threads2_over_model_only"} <= set(
        results["fit"]
    )
    assert 0 in seen and 2 in seen and data.PIPELINE_INTRA_OP_THREADS == 1


def test_tflite_latency_benchmark_times_every_format(tmp_path, float32_policy):
    from benchmarks import tflite_latency

    results = tflite_latency.main(
        ["--arch", "resnet8", "--images", "3", "--calibration", "4", "--rounds", "2", "--threads", "1"]
    )
    assert set(results["ms_per_image"]) == {f"{f}|1" for f in tflite_latency.TFLITE_FORMATS}
    assert all(v["min"] > 0 and len(v["rounds"]) == 2 for v in results["ms_per_image"].values())
    assert results["sizes_bytes"]["tflite-int8"] < results["sizes_bytes"]["tflite"] / 3


def test_wallclock_compares_runs_at_the_first_runs_time(tmp_path):
    from benchmarks import wallclock

    def run(name, recipe, epoch_seconds, test_errors):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"recipe": recipe}))
        rows = ["epoch,iterations,error,test_error,epoch_seconds"]
        rows += [f"{i + 1},{100 * (i + 1)},0.5,{e},{s}" for i, (s, e) in enumerate(zip(epoch_seconds, test_errors))]
        (d / "history.csv").write_text("\n".join(rows) + "\n")
        return d

    fast = run("fast", "fast", [60, 60], [0.3, 0.2])
    paper = run("paper", "paper", [50, 50, 50, 50], [0.5, 0.4, 0.35, 0.3])
    table = wallclock.main(
        [str(fast), str(paper), "--out", str(tmp_path / "plot.png"), "--json", str(tmp_path / "t.json")]
    )
    assert (tmp_path / "plot.png").stat().st_size > 0
    assert json.loads((tmp_path / "t.json").read_text())["runs"] == table
    assert table[0]["test_error_at_reference_time"] == 0.2 and table[0]["minutes"] == 2.0
    assert table[1]["test_error_at_reference_time"] == 0.4  # 100 s done by 120 s, not 150 s
    assert table[1]["best_test_error"] == 0.3 and table[1]["epochs"] == 4
    (paper / "config.json").write_text('{"recipe": ')  # cut short
    with pytest.raises(SystemExit, match="cannot read .*config.json"):
        wallclock.main([str(fast), str(paper)])
    with pytest.raises(SystemExit, match="has no history.csv"):
        wallclock.main([str(tmp_path)])


# A benchmark's smoke test of 20 s or more: the slow tier, so that the test command stays under 20 minutes on 2 cores.
@pytest.mark.slow
def test_bf16_shapes_benchmark_covers_every_width_and_batch(float32_policy):
    from benchmarks import bf16_shapes

    results = bf16_shapes.main(
        [
            "--arch",
            "resnet8",
            "--widths",
            "1",
            "2",
            "--batch-sizes",
            "4",
            "8",
            "--rounds",
            "1",
            "--steps",
            "1",
            "--warmup",
            "1",
        ]
    )
    assert [(r["width"], r["batch"]) for r in results["rows"]] == [(1, 4), (1, 8), (2, 4), (2, 8)]
    assert results["rows"][2]["channels"] == [32, 64, 128]
    assert results["rows"][2]["flops"] > 3 * results["rows"][0]["flops"]  # about 4x: width squared
    assert all(r["float32"] > 0 and r["bf16"] > 0 for r in results["rows"])


def test_jpeg_cost_measures_distortion_and_fits_the_runs(tmp_path):
    from benchmarks import jpeg_cost
    from trainers.core.errors import UserError

    def run(name, quality, error, **identity):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(
            json.dumps({"arch": "resnet20", "recipe": "fast", "epochs": 5, **identity, "jpeg_quality": quality})
        )
        (d / "metrics.json").write_text(json.dumps({"test_top1_error": error}))
        return str(d)

    runs = [run("as_is", None, 0.20), run("q50", 50, 0.22), run("q20", 20, 0.24)]
    out = tmp_path / "jpeg.json"
    result = jpeg_cost.main(
        ["--dataset", "synthetic", "--images", "16", "--qualities", "90", "--runs", *runs, "--json", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    mse = {row["quality"]: row["mse"] for row in result["distortion"]}
    assert set(mse) == {90, 50, 20} and 0 < mse[90] < mse[50] < mse[20]  # the runs' qualities are measured too
    by_quality = {r["jpeg_quality"]: r["added_mse"] for r in result["runs"]}
    assert by_quality == {None: 0.0, 50: mse[50], 20: mse[20]}
    # The fitted line goes through the (added MSE, error) points it was given.
    fit = result["fit"]
    predicted = [fit["intercept"] + fit["slope_per_mse"] * by_quality[q] for q in (None, 50, 20)]
    assert max(abs(p - e) for p, e in zip(predicted, (0.20, 0.22, 0.24))) < 0.01
    assert fit["copy_cost_points"] == pytest.approx(100 * fit["slope_per_mse"] * 65.0)
    with pytest.raises(UserError, match="differ in more than --jpeg-quality"):
        jpeg_cost.main(["--dataset", "synthetic", "--images", "4", "--runs", runs[0], run("other", 50, 0.3, seed=1)])
    with pytest.raises(UserError, match="not a finished fit.py run"):
        jpeg_cost.main(["--dataset", "synthetic", "--images", "4", "--runs", str(tmp_path)])


# A benchmark's smoke test of 40 s or more: the slow tier, so that the test command stays under 20 minutes on 2 cores.
@pytest.mark.slow
def test_layer_variants_undo_each_change_and_keep_the_network(tmp_path):
    from benchmarks import layer_variants

    model = resnet_keras.get_model("resnet50", num_classes=10, input_shape=(64, 64, 3), stage_depths=(1, 1, 1, 1))
    assert layer_variants.applicable(model) == {"bn", "conv"}
    assert layer_variants.applicable(resnet_keras.get_model("resnet8", num_classes=10)) == {"bn", "slice"}
    before = layer_variants.undo(model, {"bn", "conv"})
    kinds = {type(layer).__name__ for layer in before.layers}
    assert "FusedBatchNormalization" not in kinds and "MatmulConv2D" not in kinds
    assert {"BatchNormalization", "Conv2D"} <= kinds
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(
        before.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-4, atol=1e-4
    )

    small = resnet_keras.get_model("resnet8", num_classes=10, input_shape=(16, 16, 3))
    sliced = layer_variants.undo(small, {"slice"})
    images = images[:, :16, :16]
    np.testing.assert_array_equal(sliced.predict(images, verbose=0), small.predict(images, verbose=0))

    out = tmp_path / "variants.json"
    results = layer_variants.main(
        [
            "--arch",
            "resnet20",
            "--precision",
            "float32",
            "--batch-size",
            "2",
            "--rounds",
            "1",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--json",
            str(out),
        ]
    )
    arch = json.loads(out.read_text())["archs"]["resnet20"]
    assert set(arch["per_round"]) == {"current|float32", "keras_bn|float32", "strided_slice|float32", "before|float32"}
    assert arch == json.loads(json.dumps(results["archs"]["resnet20"]))


def test_profile_steps_sums_op_time_by_type_and_layer(tmp_path):
    from benchmarks import profile_steps

    out = tmp_path / "profile.json"
    results = profile_steps.main(
        [
            "--arch",
            "resnet20",
            "--precision",
            "float32",
            "--batch-size",
            "4",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--top-layers",
            "3",
            "--json",
            str(out),
        ]
    )
    profile = json.loads(out.read_text())["profiles"][0]
    assert profile == json.loads(json.dumps(results["profiles"][0]))
    types = {row["name"]: row for row in profile["by_op_type"]}
    assert any("Conv2D" in name for name in types)  # convolutions, forward and backward, are in the trace
    assert sum(row["share"] for row in profile["by_op_type"]) == pytest.approx(1.0)
    kinds = {row["name"] for row in profile["by_layer_kind"]}
    assert {"conv", "batchnorm"} <= kinds
    assert (
        profile_steps.op_scope(
            "gradient_tape/resnet20_1/conv2_block1_1_bn_1/FusedBatchNormGradV3", {"conv2_block1_1_bn"}
        )
        == "conv2_block1_1_bn"
    )
    assert profile_steps.layer_kind("conv3_block1_0_zeropad") == "option A shortcut"
    with pytest.raises(SystemExit, match="--steps must be at least 1"):
        profile_steps.main(["--steps", "0"])


def test_transfer_writes_a_whole_folder_and_the_runs_it_compares(tmp_path, capsys):
    from benchmarks import transfer
    from trainers.core import folder
    from trainers.core.errors import UserError

    rng = np.random.default_rng(0)
    examples = [(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), i % 3) for i in range(30)]
    picked = list(transfer.first_per_class(iter(examples), 2, 3))
    assert [label for _, label in picked] == [0, 1, 2, 0, 1, 2]
    manifest = {"dataset": "cifar10", "per_class": 2, "test_per_class": 1}
    root = tmp_path / "root"
    data = transfer.write_folder({"train": picked, "test": picked[:3]}, ["a", "b", "c"], root / "data", manifest)
    assert sorted(p.name for p in (data / "train").iterdir()) == ["a", "b", "c"]
    assert len(list((data / "train" / "a").glob("*.png"))) == 2 and not list(root.glob(".data.tmp-*"))
    indexed = folder.index_folder(f"folder:{data}")  # what fit.py --dataset folder:DATA reads
    assert indexed.class_names == ["a", "b", "c"]
    assert len(indexed.splits["train"][0]) == 6 and len(indexed.splits["test"][0]) == 3
    with pytest.raises(UserError, match="was not written by this script with these settings"):
        transfer.write_folder({}, [], data, {**manifest, "per_class": 5})
    # The folder is there: the dry run prints the three runs and trains nothing.
    transfer.main(
        [
            "--root",
            str(root),
            "--source",
            str(tmp_path / "src"),
            "--per-class",
            "2",
            "--test-per-class",
            "1",
            "--epochs",
            "3",
            "--dry-run",
        ]
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if "fit.py" in line]
    assert len(lines) == 3 and all(f"folder:{data}" in line for line in lines)
    assert "--recipe fast" in lines[0] and "--init-from" in lines[1] and "--freeze-epochs 5" in lines[2]
    assert not (root / "transfer.json").exists() and not (root / "scratch").exists()


# A benchmark's smoke test of 50 s or more: the slow tier, so that the test command stays under 20 minutes on 2 cores.
@pytest.mark.slow
def test_onednn_benchmark_runs_each_setting_in_its_own_process(tmp_path):
    from benchmarks import onednn

    out = tmp_path / "onednn.json"
    results = onednn.main(
        [
            "--arch",
            "resnet8",
            "--image-size",
            "16",
            "--batch-size",
            "4",
            "--rounds",
            "2",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--modes",
            "train",
            "inference",
            "--json",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert [(r["case"], r["mode"]) for r in results["rows"]] == [
        ("resnet8@16px/b4", "train"),
        ("resnet8@16px/b4", "inference"),
    ]
    for row in results["rows"]:
        assert row["onednn"]["median"] > 0 and row["eigen"]["median"] > 0
        assert row["ratio"]["min"] <= row["ratio"]["median"] <= row["ratio"]["max"]
    with pytest.raises(SystemExit, match="--arch needs --image-size and --batch-size"):
        onednn.main(["--arch", "resnet8"])


def test_conv_gradients_checks_each_shape_against_float64(tmp_path):
    from benchmarks import conv_gradients

    out = tmp_path / "conv.json"
    results = conv_gradients.main(["--runs", "1", "--shapes", "4", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert [r["shape"] for r in results["rows"]][1:] == [
        "1x1 stride 2 valid, 8 px, 8->8",
        "1x1 stride 2 valid, 8 px, 16->16",
        "1x1 stride 1 valid, 8 px, 5->6",
    ]
    for row in results["rows"][1:]:  # shapes both kernel libraries get right
        assert row["wrong_runs"] == 0 and max(row["worst_error"].values()) < 1e-5
    with pytest.raises(SystemExit, match="--runs must be at least 1, got 0"):
        conv_gradients.main(["--runs", "0"])


# The slow tier too (about 40 s): a benchmark's smoke test, not the recipes' own test (test_recipe_changes.py).
@pytest.mark.slow
def test_recipe_cost_times_each_variant_against_the_baseline_and_the_flip(tmp_path):
    from benchmarks import recipe_cost

    policy = keras.config.dtype_policy().name
    out = tmp_path / "cost.json"
    args = ["--variants", "resnet18d+lamb", "--image-size", "32", "--batch-size", "4", "--eval-batch", "3"]
    results = recipe_cost.main([*args, "--rounds", "2", "--steps", "1", "--warmup", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    train = results["train"]
    assert list(train) == ["resnet18d", "resnet18d+lamb"]  # the baseline is timed whatever --variants says
    assert "ratio_to_baseline" not in train["resnet18d"] and train["resnet18d+lamb"]["optimizer"] == "lamb"
    for row in train.values():
        assert len(row["per_round"]) == 2
        assert row["seconds_per_epoch"]["median"] == pytest.approx(9408 / row["images_per_second"]["median"])
    ratio = train["resnet18d+lamb"]["ratio_to_baseline"]
    assert ratio["min"] <= ratio["median"] <= ratio["max"]
    views = results["evaluation"]["views"]
    assert [views[v]["model_images_per_call"] for v in ("single", "flip")] == [3, 6]

    def numbers(value):
        if isinstance(value, dict):
            return [n for v in value.values() for n in numbers(v)]
        if isinstance(value, list):
            return [n for v in value for n in numbers(v)]
        return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []

    figures = numbers(results)
    assert len(figures) > 40 and all(n > 0 for n in figures)
    assert keras.config.dtype_policy().name == policy  # put back after building the variants
    with pytest.raises(SystemExit, match="--warmup must be at least 0, got -1"):
        recipe_cost.main(["--warmup", "-1"])


def _torch_for_imagenet_parity():
    """The PyTorch interpreter benchmarks/imagenet_parity.py would use, or the reason it cannot."""
    from benchmarks import imagenet_parity

    python = imagenet_parity.torch_python(None)
    reason = imagenet_parity.probe(python, ["torch", "torchvision", "numpy"])
    return python, reason


# A benchmark's smoke test of 20 s or more (13 s alone, 23 s beside another test): the slow tier, so that the test
# command stays under 20 minutes on 2 cores. Skipped without a PyTorch interpreter (CI has none).
@pytest.mark.slow
def test_imagenet_parity_compares_pth_and_safetensors_of_a_torchvision_network(tmp_path, float32_policy):
    from benchmarks import imagenet_parity

    python, reason = _torch_for_imagenet_parity()
    if reason is not None:
        pytest.skip(f"no PyTorch interpreter with torchvision (not a dependency of the project): {reason}")
    out = tmp_path / "parity"
    args = ["--networks", "torchvision:resnet18", "--image-size", "64", "--images", "2", "--out", str(out)]
    assert imagenet_parity.main([*args, "--torch-python", python]) == 0
    result = json.loads((out / "parity.json").read_text())
    assert [p.name for p in out.iterdir()] == ["parity.json"]  # the weights, logits and images removed
    assert [(r["file"], r["result"]) for r in result["rows"]] == [("pth", "PASS"), ("safetensors", "PASS")]
    for row in result["rows"]:
        assert row["spec"] == "torchvision:resnet18.IMAGENET1K_V1" and row["arch"] == "resnet18"
        assert row["tensors_loaded"] == 102 and row["num_batches_tracked_ignored"] == 20 and row["files_identical"]
        assert row["max_rel_diff"] <= 1e-4 and row["top1_agreement"] == 1.0
    assert result["all_pass"] and result["images"] == {"count": 2, "size": 64, "seed": 0, "dtype": "uint8 RGB"}
    assert keras.config.dtype_policy().name == "float32"


def test_imagenet_parity_refuses_unknown_networks_and_skips_keras_hub_it_cannot_import(tmp_path, float32_policy):
    import importlib.util

    from benchmarks import imagenet_parity

    with pytest.raises(SystemExit, match="needs a tag.*resnet50.a1_in1k"):  # the right spellings are listed
        imagenet_parity.main(["--networks", "timm:resnet50"])
    with pytest.raises(SystemExit, match="no =PATH here"):
        imagenet_parity.main(["--networks", "timm:resnet50.a1_in1k=/tmp/x.safetensors"])
    if importlib.util.find_spec("keras_hub") is not None:
        pytest.skip("keras_hub imports in this environment, so nothing is skipped")
    out = tmp_path / "parity"
    missing = tmp_path / "no-keras-hub"
    args = ["--networks", "keras-hub:resnet_vd_50_imagenet", "--keras-hub-path", str(missing), "--out", str(out)]
    assert imagenet_parity.main(args) == 1  # nothing compared
    result = json.loads((out / "parity.json").read_text())
    (row,) = result["rows"]
    assert row["result"] == "SKIP" and row["builder"] == "resnet_vd_50" and row["arch"] == "resnet50d"
    assert "keras_hub does not import" in row["reason"] and "No module named 'keras_hub'" in row["reason"]
    assert result["skipped"] == 1 and not result["all_pass"]


def test_imagenet_parity_compare_fails_on_distance_and_forgives_top1_ties():
    from benchmarks import imagenet_parity

    theirs = np.array([[1.0, 5.0, 2.0], [3.0, 0.0, 3.0 + 1e-7]])
    row = imagenet_parity.compare(theirs + 1e-5, theirs, 1e-4)
    assert row["result"] == "PASS" and row["max_rel_diff"] == pytest.approx(2e-6)
    flipped = theirs.copy()
    flipped[1, 0] += 3e-7  # the second image's two best logits swap: a tie at this precision
    row = imagenet_parity.compare(flipped, theirs, 1e-4)
    assert row["result"] == "PASS" and row["top1_agreement"] == 0.5 and row["top1_disagreements_at_ties"] == 1
    assert imagenet_parity.compare(theirs * 1.01, theirs, 1e-4)["result"] == "FAIL"
    assert imagenet_parity.compare(theirs[:1], theirs, 1e-4)["result"] == "FAIL"


def test_unbalanced_cuts_the_classes_and_reports_each_mode_over_seeds(tmp_path, capsys):
    from benchmarks import transfer, unbalanced
    from trainers.core.errors import UserError

    assert unbalanced.cut_counts([963, 955, 10, 1], full=0, keep=0.1) == [963, 96, 1, 1]
    # Encoded JPEG bytes are written as they are: the folder holds the dataset's own files.
    jpeg = bytes(transfer_jpeg())
    manifest = {"dataset": unbalanced.DATASET, "full_class": 0, "keep": 0.1, "class_names": ["a", "b"]}
    manifest["train_counts"] = [2, 1]
    root = tmp_path / "root"
    data = transfer.write_folder({"train": [(jpeg, 0), (jpeg, 0), (jpeg, 1)]}, ["a", "b"], root / "data", manifest)
    assert [p.read_bytes() == jpeg for p in sorted((data / "train" / "a").iterdir())] == [True, True]
    # Two seeds of "none", one of "weights" finished (figures made up for the arithmetic), "sampling" not run.
    # The per-class recalls are those of the run's report: class "a" is the one kept whole.
    figures = {
        "none-s0": (0.80, 0.60, 0.55, "b", 0.20, {"a": 1.0, "b": 0.20}),
        "none-s1": (0.70, 0.50, 0.45, "b", 0.10, {"a": 0.9, "b": 0.10}),
        "weights-s0": (0.75, 0.70, 0.68, "a", 0.50, {"a": 0.5, "b": 0.90}),
    }
    for name, (top1, balanced, f1, worst, recall, recalls) in figures.items():
        (root / name / "report").mkdir(parents=True)
        metrics = {"test_top1_error": 1 - top1, "balanced_accuracy": balanced, "macro_f1": f1}
        metrics.update(worst_class=worst, worst_class_recall=recall, wall_seconds=60.0)
        (root / name / "metrics.json").write_text(json.dumps(metrics))
        rows = [{"class": c, "recall": r} for c, r in recalls.items()]
        (root / name / "report" / "report.json").write_text(json.dumps({"per_class": rows}))
    report = unbalanced.main(["--root", str(root), "--report-only"])
    none, weights, sampling = (report["modes"][m] for m in ("none", "weights", "sampling"))
    assert none["runs"] == 2 and none["balanced_accuracy"]["mean"] == pytest.approx(0.55)
    assert none["worst_class_recall"]["std"] == pytest.approx(np.std([0.2, 0.1], ddof=1))
    assert weights["runs"] == 1 and weights["macro_f1"] == {"mean": 0.68, "std": None}
    assert sampling["runs"] == 0 and sampling["top1"]["mean"] is None
    assert none["full_class_recall"]["mean"] == pytest.approx(0.95) and none["cut_classes_recall"][
        "mean"
    ] == pytest.approx(0.15)
    assert weights["full_class_recall"]["mean"] == 0.5 and weights["cut_classes_recall"]["mean"] == 0.9
    printed = capsys.readouterr().out
    assert "| `none` | 2 | 75.00% ± 7.07 | 55.00% ± 7.07 |" in printed and "| `sampling` | 0 | not run" in printed
    assert "| 95.00% ± 7.07 | 15.00% ± 7.07 | b |" in printed
    assert json.loads((root / "unbalanced.json").read_text())["train_counts"] == [2, 1]
    assert "--class-balance sampling --seed 1" in " ".join(report["commands"]["sampling-s1"])
    # Seed by seed: a run cut short leaves one comparable run of every mode first.
    assert list(report["commands"]) == [f"{m}-s{s}" for s in (0, 1) for m in ("none", "weights", "sampling")]
    (root / "none-s1" / "report" / "report.json").write_text(json.dumps({"per_class": [{"class": "b", "recall": 1}]}))
    with pytest.raises(UserError, match="none-s1's report has no recall for 'a', the class kept whole"):
        unbalanced.main(["--root", str(root), "--report-only"])
    (root / "none-s1" / "metrics.json").write_text(json.dumps({"test_top1_error": 0.3, "wall_seconds": 1.0}))
    with pytest.raises(UserError, match="no per-class figures"):
        unbalanced.main(["--root", str(root), "--report-only"])
    with pytest.raises(UserError, match="--keep 0.0; expected a share"):
        unbalanced.main(["--root", str(root), "--keep", "0"])


def transfer_jpeg():
    import tensorflow as tf

    return tf.io.encode_jpeg(np.full((8, 8, 3), 120, np.uint8)).numpy()


def test_inference_benchmark_times_ours_and_says_why_torch_is_missing(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the export extra (pip install -e '.[export]') is not installed")
    from benchmarks import inference

    variants = ["tflite-int8", "onnx-float32", "savedmodel-eigen", "torch-eager"]
    args = ["--network", "resnet20", "--rounds", "2", "--calls", "2", "--warmup", "1", "--batch", "3", "--no-torch"]
    args += ["--variants", *variants, "--work", str(tmp_path / "work"), "--json", str(tmp_path / "r.json")]
    report = inference.main(args)
    folder = tmp_path / "work" / "resnet20"
    # Only the formats the variants run are written, each under its final name.
    written = ["model.weights.h5", "model_float32.onnx", "model_int8.tflite", "savedmodel"]
    assert sorted(p.name for p in folder.iterdir()) == written
    result = report["networks"]["resnet20"]
    for variant in ("tflite-int8", "onnx-float32", "savedmodel-eigen"):
        row = result["variants"][variant]
        assert row["batch1_ms"]["median"] > 0 and row["batch_images_per_s"]["min"] > 0
    # The SavedModel child ran TensorFlow's Eigen kernels, whatever this process's TensorFlow runs; the others none.
    assert [r["savedmodel-eigen"]["tf_kernels"] for r in result["rounds"]] == ["Eigen", "Eigen"]
    assert result["rounds"][0]["onnx-float32"]["tf_kernels"] is None
    assert result["variants"]["torch-eager"]["why_missing"] == "torch not found"
    assert result["ours_best_over_torch_best"] == {"batch1_latency": None, "batch_throughput": None}
    first = result["rounds"][0]
    fastest = min(("onnx-float32", "savedmodel-eigen"), key=lambda v: first[v]["batch1_ms"])  # int8 is not float
    assert result["best_per_round"][0]["ours"]["batch1"] == fastest
    assert json.loads((tmp_path / "r.json").read_text())["torch"]["reason"] == "not run: --no-torch"
    printed = capsys.readouterr().out
    assert "| torch-eager (torch not found) | float | missing | missing |" in printed
    assert "ours-best / torch-best float, batch-1 latency: missing (a side has no result)" in printed
