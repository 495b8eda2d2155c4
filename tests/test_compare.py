"""trainers/compare.py: two models on the same images, a paired test."""

import json
import math

import keras
import pytest

import resnet_keras
from trainers import compare, evaluate
from trainers.core.errors import UserError
from trainers.core.evaluation import mcnemar_exact, paired_difference


def _brute_force_p(only_a, only_b):
    """Two-sided binomial test at 1/2 by enumeration: the probability of every
    split of the n disagreements at least as far from n/2 as the observed one."""
    n = only_a + only_b
    far = abs(only_a - n / 2)
    return min(1.0, sum(math.comb(n, k) for k in range(n + 1) if abs(k - n / 2) >= far) / 2**n)


@pytest.mark.parametrize("only_a, only_b", [(0, 10), (10, 0), (3, 9), (10, 20), (111, 132), (7, 7), (40, 41)])
def test_mcnemar_exact_matches_the_binomial_enumeration(only_a, only_b):
    assert mcnemar_exact(only_a, only_b) == pytest.approx(_brute_force_p(only_a, only_b), rel=1e-12)


def test_mcnemar_and_interval_edge_cases():
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == 1.0
    assert paired_difference(0, 0, 100) == (0.0, 0.0, 0.0)
    # 30 images only B gets right, 10 only A, of 1000: +2 points, se = sqrt(40 - 400/1000) / 1000.
    diff, low, high = paired_difference(10, 30, 1000)
    se = math.sqrt(40 - 0.4) / 1000
    assert (
        diff == pytest.approx(0.02)
        and low == pytest.approx(0.02 - 1.96 * se)
        and high == pytest.approx(0.02 + 1.96 * se)
    )


def _saved(tmp_path, name, seed, size=32):
    keras.utils.set_random_seed(seed)
    model = resnet_keras.get_model("resnet8", num_classes=10, input_shape=(size, size, 3))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    return path


def test_two_models_on_the_same_synthetic_images(tmp_path, capsys):
    a, b = _saved(tmp_path, "a", 1), _saved(tmp_path, "b", 2)
    out = tmp_path / "compare.json"
    result = compare.main([str(a), str(b), "--dataset", "synthetic", "--batch-size", "128", "--output", str(out)])
    n = result["images"]
    assert n == 1024 and result["view"] == "original" and result["synthetic"]
    counts = [result[k] for k in ("both_right", "only_a_right", "only_b_right", "both_wrong")]
    assert sum(counts) == n and min(counts) >= 0
    assert result["accuracy_a"] == pytest.approx((result["both_right"] + result["only_a_right"]) / n)
    assert result["accuracy_b"] == pytest.approx((result["both_right"] + result["only_b_right"]) / n)
    # Each accuracy is the one evaluate.py gives the same model on the same split.
    alone = evaluate.main([str(b), "--dataset", "synthetic", "--batch-size", "128"])
    assert 1 - alone["top1_error"] == pytest.approx(result["accuracy_b"])
    low, high = result["difference_95_interval"]
    assert low <= result["difference_b_minus_a"] <= high
    assert result["mcnemar_exact_p"] == pytest.approx(mcnemar_exact(result["only_a_right"], result["only_b_right"]))
    assert json.loads(out.read_text()) == result  # strict JSON, the same figures
    printed = capsys.readouterr().out
    assert "[SYNTHETIC DATA]" in printed and "McNemar's exact test" in printed

    # A model against itself: no disagreement, no difference.
    same = compare.main([str(a), str(a), "--dataset", "synthetic", "--batch-size", "256"])
    assert same["only_a_right"] == same["only_b_right"] == 0
    assert same["difference_b_minus_a"] == 0 and same["mcnemar_exact_p"] == 1.0


def test_what_cannot_be_paired_is_one_line(tmp_path):
    a, small = _saved(tmp_path, "a", 1), _saved(tmp_path, "small", 1, size=16)
    with pytest.raises(UserError, match="a paired comparison needs the same images"):
        compare.main([str(a), str(small), "--dataset", "synthetic"])
    with pytest.raises(UserError, match="--batch-size 0"):
        compare.main([str(a), str(a), "--dataset", "synthetic", "--batch-size", "0"])
    with pytest.raises(UserError, match="its folder does not exist"):
        compare.main([str(a), str(a), "--dataset", "synthetic", "--output", str(tmp_path / "no" / "c.json")])
    with pytest.raises(UserError, match="--dataset is required"):
        compare.main([str(a), str(a)])
