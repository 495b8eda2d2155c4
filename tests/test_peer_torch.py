"""benchmarks/peer_torch.py runs, alternates and reports without torch (CI has
none); its figures are never asserted. Torch itself is only needed by the last
test, which is skipped where this interpreter cannot import it."""

import json
import sys

import pytest

from benchmarks import peer_torch

OURS = ["resnet_keras|float32", "resnet_keras|mixed_bfloat16"]
TORCH = [name for name in peer_torch.VARIANTS if name.startswith("torch|")]


# A benchmark's smoke test of 70 s or more: the slow tier, so that the test command stays under 20 minutes on 2 cores.
@pytest.mark.slow
def test_without_torch_measures_ours_alone_and_writes_strict_json(tmp_path, capsys):
    out = tmp_path / "peer.json"
    results = peer_torch.main(
        [
            "--no-torch",
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
            "--no-ceiling",
            "--json",
            str(out),
        ]
    )
    text = out.read_text()
    assert json.loads(text) == json.loads(json.dumps(results))
    assert "NaN" not in text and "Infinity" not in text
    assert results["torch"]["python"] is None and results["ceiling"] is None
    pair = results["pairs"]["resnet20"]
    assert pair["batch_size"] == 4 and pair["rounds"] == 2
    assert pair["orders"] == [OURS, OURS[::-1]]  # the order rotates from round to round
    variants = pair["variants"]
    for name in OURS:
        v = variants[name]
        assert v["status"] == "ok" and len(v["per_round"]) == 2 and min(v["per_round"]) > 0
        assert v["images_per_second"] > 0 and v["best_round"] == max(v["per_round"])
        assert v["forward_flops_per_image"] == 2 * 40_551_040 and v["training_gflops"] > 0
        assert v["fraction_of_ceiling"] is None  # no ceiling measured
        assert [len(s) for s in v["step_seconds"]] == [2, 2]
    for name in TORCH:
        v = variants[name]
        assert v["status"] == "not run: --no-torch"
        assert v["images_per_second"] is None and v["per_round"] == [None, None]
    assert pair["ratios"]["ours_best/torch_best"] is None
    assert all(r is None for r in pair["ratios"].values()) and len(pair["ratios"]) == 5
    assert "Traceback" not in capsys.readouterr().out


def test_ceiling_child_measures_both_precisions():
    command = [
        sys.executable,
        peer_torch.__file__,
        "--child",
        "ceiling",
        "--ceiling-conv",
        "2",
        "8",
        "16",
        "--ceiling-matmul",
        "64",
    ]
    ceiling, why = peer_torch.run_child(command, "ceiling", timeout=300)
    assert why is None
    for kind in ("conv", "matmul", "best"):
        assert ceiling[kind]["bfloat16"] > 0 and ceiling[kind]["float32"] > 0
    assert ceiling["best"]["float32"] == max(ceiling["conv"]["float32"], ceiling["matmul"]["float32"])


def test_failing_child_is_one_line_and_null(capsys):
    command = [sys.executable, peer_torch.__file__, "--child", "keras", "nosuch", "float32", "--batch-size", "2"]
    result, why = peer_torch.run_child(command, "nosuch resnet_keras|float32", timeout=300)
    assert result is None and why.startswith("exit 1: error: unknown pair 'nosuch'")
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"nosuch resnet_keras|float32: failed ({why})"]


def test_parent_alternates_reports_failures_and_takes_ratios_per_round(tmp_path, monkeypatch, capsys):
    """Fake children (no TensorFlow, no torch): fixed step times per variant and
    round, one variant that fails in round 2."""
    monkeypatch.setattr(
        peer_torch,
        "find_torch",
        lambda args: {
            "python": sys.executable,
            "version": "fake",
            "torchvision": None,
            "default_threads": 1,
            "interop_threads": 1,
            "cpu_capability": "fake",
            "mkldnn": True,
        },
    )
    calls = []
    seconds = {
        "resnet_keras|float32": 0.1,
        "resnet_keras|mixed_bfloat16": 0.05,
        "torch|float32|contiguous": 0.2,
        "torch|float32|channels_last": 0.25,
        "torch|bf16|contiguous": 0.1,
        "torch|bf16|channels_last": 0.08,
    }

    def fake_command(variant, pair, args, torch_python):
        calls.append(variant)
        r = sum(1 for c in calls if c == variant)  # this variant's round, from 1
        if variant == "torch|bf16|channels_last" and r == 2:
            return [
                sys.executable,
                "-c",
                "import sys; sys.stderr.write('warming\\nRuntimeError: boom\\n'); sys.exit(3)",
            ]
        step = seconds[variant] * (1 if r == 1 else 2)  # the machine halves its speed in round 2
        result = {"step_seconds": [step, step * 3, step], "warmup_seconds": 0.0, "multiply_adds_per_image": 1000}
        line = peer_torch.RESULT_PREFIX + json.dumps(result)
        return [sys.executable, "-c", f"print({line!r})"]

    monkeypatch.setattr(peer_torch, "child_command", fake_command)
    out = tmp_path / "fake.json"
    results = peer_torch.main(
        ["--pair", "resnet20", "--batch-size", "8", "--rounds", "2", "--no-ceiling", "--json", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    printed = capsys.readouterr().out
    assert "torch|bf16|channels_last: failed (exit 3: RuntimeError: boom)" in printed and "Traceback" not in printed
    pair = results["pairs"]["resnet20"]
    assert pair["orders"][1] == pair["orders"][0][1:] + pair["orders"][0][:1]
    v = pair["variants"]
    assert v["resnet_keras|float32"]["per_round"] == pytest.approx([80.0, 40.0])  # 8 images / median step
    assert v["resnet_keras|float32"]["training_gflops"] == pytest.approx(3 * 2000 * 60.0 / 1e9)
    failed = v["torch|bf16|channels_last"]
    assert failed["status"] == "failed: exit 3: RuntimeError: boom" and failed["images_per_second"] is None
    ratios = pair["ratios"]
    # Best of ours: mixed_bfloat16 (160, 80); best of torch without the failed variant: bf16 contiguous (80, 40).
    assert ratios["ours_best/torch_best"]["per_round"] == pytest.approx([2.0, 2.0])
    winners = ratios["ours_best/torch_best"]["best_variants"]
    assert winners[0] == ["resnet_keras|mixed_bfloat16", "torch|bf16|contiguous"]
    assert ratios["resnet_keras|float32/torch|float32|channels_last"]["median"] == pytest.approx(2.5)
    assert ratios["resnet_keras|mixed_bfloat16/torch|bf16|channels_last"] is None
    precision = {name: spec[1] for name, spec in peer_torch.VARIANTS.items()}
    assert set(ratios) == {"ours_best/torch_best"} | {
        f"{o}/{t}" for o in OURS for t in TORCH if precision[o] == precision[t]
    }


def test_bad_counts_exit_with_one_line():
    with pytest.raises(SystemExit, match="--steps must be at least 1, got 0"):
        peer_torch.main(["--steps", "0"])


def test_torch_cifar_network_matches_ours():
    torch = pytest.importorskip("torch")
    model = peer_torch.build_torch_model("resnet20")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 269_722
    assert peer_torch.torch_multiply_adds(model, 32) == 40_551_040  # resnet_keras.count_flops of resnet20
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
