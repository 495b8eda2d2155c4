"""The benchmark scripts run and report what docs/benchmarks.md quotes. Their
figures are never asserted here: speed is measured by running them."""

import json

import keras
import pytest

from benchmarks import model_throughput


def test_model_throughput_runs_alternated_rounds_and_writes_json(tmp_path, float32_policy):
    out = tmp_path / "result.json"
    args = ["--pair", "resnet20", "--batch-size", "4", "--rounds", "2", "--steps", "2", "--warmup", "1"]
    results = model_throughput.main([*args, "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    pair = results["pairs"]["resnet20"]
    assert pair["batch_size"] == 4 and pair["image_size"] == 32
    for mode in ("train", "inference"):
        rounds = pair[mode]["per_round"]
        assert list(rounds) == ["resnet_keras", "handwritten", "handwritten_symmetric"]
        assert all(len(speeds) == 2 and min(speeds) > 0 for speeds in rounds.values())
        assert list(pair[mode]["ratios"]) == ["handwritten", "handwritten_symmetric"]
        for name, ratio in pair[mode]["ratios"].items():
            per_round = [ours / ref for ours, ref in zip(rounds["resnet_keras"], rounds[name])]
            assert ratio["min"] == min(per_round) and ratio["max"] == max(per_round)
            assert ratio["min"] <= ratio["median"] <= ratio["max"]


def test_symmetric_reference_is_the_same_network_but_for_padding():
    reference = model_throughput.handwritten_resnet20((32, 32, 3), 10)
    symmetric = model_throughput.handwritten_resnet20((32, 32, 3), 10, symmetric_padding=True)
    assert reference.count_params() == symmetric.count_params()
    pads = [layer for layer in symmetric.layers if isinstance(layer, keras.layers.ZeroPadding2D)]
    assert len(pads) == 2  # the two stride-2 convolutions, at the starts of stages 2 and 3


def test_model_throughput_rejects_bad_counts():
    with pytest.raises(SystemExit, match="--rounds must be at least 1, got 0"):
        model_throughput.main(["--rounds", "0"])
