"""The recipe changes tried toward the Imagenette leaderboard (issue 38), each a
flag of fit.py: --lr-schedule flat-cosine, --optimizer adamw/lamb, --mixup, and
the network's tweaks (--stem, --shortcut-downsample, --blur-pool). Their
schedules are checked offline, their optimizers on one step, and one tiny run
trains with all of them."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainers import fit
from trainers.core import data, recipes
from trainers.core.config import ARCH_TWEAKS, IDENTITY_KEYS, RunConfig, record_identity
from trainers.core.errors import UserError

FAST = recipes.get_recipe("fast", "imagenet", 18)


def _fast(**kwargs):
    kwargs.setdefault("batch_size", 64)
    kwargs.setdefault("steps_per_epoch", 147)
    kwargs.setdefault("epochs", 5)
    return recipes.resolve_schedule(FAST, **kwargs)


# ------------------------------------------------------------ flat-cosine
def test_flat_cosine_warms_up_holds_the_peak_then_anneals_over_the_last_quarter():
    s = _fast(lr_schedule="flat-cosine")
    assert (s.kind, s.total_steps, s.warmup_steps, s.flat_until) == ("flat-cosine", 735, 37, 551)
    assert s.flat_until == round(recipes.FLAT_FRACTION * 735)
    rate = recipes.learning_rate(s)
    at = {step: float(rate(step)) for step in (0, 18, 37, 300, 551, 643, 734, 735)}
    assert at[0] == pytest.approx(0.04) and at[18] == pytest.approx(0.04 + 0.36 * 18 / 37, rel=1e-5)
    assert at[37] == at[300] == at[551] == pytest.approx(0.4)
    assert at[643] == pytest.approx(0.2, rel=1e-2)  # half-way through the anneal: half the peak
    assert 0 < at[734] < 1e-4 and at[735] == pytest.approx(0.0, abs=1e-7)
    anneal = [float(rate(step)) for step in range(551, 736)]
    assert all(a >= b for a, b in zip(anneal, anneal[1:]))
    again = recipes.WarmupFlatCosine.from_config(rate.get_config())
    assert [float(again(t)) for t in (0, 100, 600)] == [float(rate(t)) for t in (0, 100, 600)]
    lines = recipes.describe_schedule(s)
    assert "lr 0.4 held over iterations [37, 551)" in lines and "[551, 735)" in lines


def test_flat_cosine_record_and_cosine_on_a_recipe_that_steps():
    as_dict = _fast(lr_schedule="flat-cosine").to_dict()
    assert as_dict["kind"] == "flat-cosine" and as_dict["flat_until"] == 551
    assert "optimizer" not in as_dict and "mixup" not in as_dict  # SGD without mixup records what it always did
    paper = recipes.resolve_schedule(recipes.get_recipe("paper", "cifar", 20), batch_size=128, steps_per_epoch=390)
    cosine = recipes.resolve_schedule(
        recipes.get_recipe("paper", "cifar", 20), batch_size=128, steps_per_epoch=390, lr_schedule="cosine"
    )
    assert paper.kind == "step" and cosine.kind == "cosine" and cosine.warmup_steps == 0
    assert float(recipes.learning_rate(cosine)(0)) == pytest.approx(0.1)
    assert _fast(lr_schedule="cosine") == _fast()  # the fast recipe's own schedule, asked for by name


# -------------------------------------------------------------- optimizers
def test_adaptive_optimizers_bring_their_own_learning_rate_and_decoupled_decay():
    s = _fast(optimizer="adamw")
    assert (s.optimizer, s.lr, s.weight_decay, s.momentum, s.nesterov) == ("adamw", 3e-3, 1e-2, None, None)
    assert s.betas == recipes.ADAPTIVE_BETAS and s.weight_decay_meaning == recipes.DECOUPLED_DECAY_MEANING
    assert _fast(optimizer="adamw", batch_size=128).lr == pytest.approx(6e-3)  # linear in the batch
    given = _fast(optimizer="lamb", lr=0.02, weight_decay=0.0)
    assert (given.lr, given.weight_decay) == (0.02, 0.0)
    as_dict = s.to_dict()
    assert as_dict["optimizer"] == "adamw" and as_dict["betas"] == [0.9, 0.99] and "mixup" not in as_dict
    assert "AdamW betas 0.9/0.99, weight decay 0.01 (decoupled) on kernels" in recipes.describe_schedule(s)
    assert _fast(optimizer="sgd") == _fast()


@pytest.mark.parametrize("name, kind", [("adamw", keras.optimizers.AdamW), ("lamb", keras.optimizers.Lamb)])
def test_adaptive_optimizers_decay_kernels_only(name, kind):
    """With a zero gradient, one step of decoupled decay shrinks a kernel by
    lr x weight_decay and leaves a vector (a BN scale, a bias) alone."""
    s = _fast(optimizer=name, lr=0.1, weight_decay=0.5, lr_schedule="cosine", epochs=100)
    kernel = keras.Variable(np.ones((3, 3, 2, 2), "float32"))
    vector = keras.Variable(np.ones((2,), "float32"))
    optimizer = recipes.make_optimizer(s, [kernel, vector])
    assert isinstance(optimizer, kind)
    optimizer.apply_gradients([(tf.zeros_like(kernel), kernel), (tf.zeros_like(vector), vector)])
    lr0 = float(recipes.learning_rate(s)(0))
    np.testing.assert_allclose(kernel.numpy(), 1 - lr0 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(vector.numpy(), 1.0)


def test_sgd_is_still_caffe_sgd():
    optimizer = recipes.make_optimizer(_fast(), [])
    assert isinstance(optimizer, recipes.CaffeSGD) and optimizer.nesterov and optimizer.kernels_only


# ------------------------------------------------------------------- mixup
def test_mixup_mixes_images_and_labels_with_one_weight():
    images = tf.random.stateless_uniform((6, 4, 4, 3), (1, 2), maxval=255.0)
    labels = tf.constant([0, 1, 2, 0, 1, 2], tf.int64)
    mixed, targets = data.mix_batch(images, labels, 0.4, tf.constant([7, 3], tf.int64), 3)
    targets = targets.numpy()
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    lam = targets[0, 0]  # image 0 (label 0) is mixed with image 5 (label 2)
    assert 0 < lam < 1 and targets[0, 2] == pytest.approx(1 - lam)
    np.testing.assert_allclose(mixed.numpy(), lam * images.numpy() + (1 - lam) * images.numpy()[::-1], rtol=1e-5)
    again, _ = data.mix_batch(images, labels, 0.4, tf.constant([7, 3], tf.int64), 3)
    np.testing.assert_array_equal(again.numpy(), mixed.numpy())  # a stateless draw: a resumed run mixes alike


def test_mixup_weights_follow_beta_alpha_alpha():
    labels = tf.constant([0, 1], tf.int64)
    images = tf.zeros((2, 1, 1, 1))
    lams = [float(data.mix_batch(images, labels, 0.2, tf.constant([0, i], tf.int64), 2)[1][0, 0]) for i in range(2000)]
    # Beta(0.2, 0.2): mean 1/2, variance 1/(4 (2 alpha + 1)) = 0.1786, most draws near 0 or 1.
    assert np.mean(lams) == pytest.approx(0.5, abs=0.03)
    assert np.var(lams) == pytest.approx(0.25 / 1.4, rel=0.1)
    assert np.mean([min(x, 1 - x) < 0.1 for x in lams]) > 0.5


def test_a_mixup_pipeline_yields_probability_vectors():
    info = data.describe(
        "synthetic", data_dir=None, family="cifar", image_size=32, val_split=0.0, seed=0, synthetic_train=64
    )
    images, targets = next(iter(data.train_pipeline(info, batch_size=8, seed=0, mixup=0.2)))
    assert images.shape == (8, 32, 32, 3) and targets.shape == (8, 10) and targets.dtype == tf.float32
    np.testing.assert_allclose(targets.numpy().sum(axis=1), 1.0, rtol=1e-6)
    plain_images, labels = next(iter(data.train_pipeline(info, batch_size=8, seed=0)))
    assert labels.shape == (8,)


# -------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"optimizer": "adam"}, "--optimizer 'adam'; expected one of sgd, adamw, lamb"),
        ({"lr_schedule": "linear"}, "--lr-schedule 'linear'; expected one of cosine, flat-cosine"),
        ({"mixup": -0.2}, "--mixup -0.2; expected an alpha >= 0"),
        ({"mixup": math.nan}, "--mixup nan"),
    ],
)
def test_bad_recipe_changes_are_refused(kwargs, match):
    with pytest.raises(UserError, match=match.replace("(", r"\(").replace(")", r"\)")):
        _fast(**kwargs)


def test_bad_network_tweaks_are_refused_in_one_line():
    with pytest.raises(UserError, match="stem='deep' applies to ImageNet networks only"):
        RunConfig(arch="resnet20", stem="deep")
    with pytest.raises(SystemExit):  # argparse names the choices
        fit.build_parser().parse_args(["--arch", "resnet18", "--blur-pool", "some"])


# ---------------------------------------------------------------- one run
def test_a_run_with_every_change_trains_and_records_them(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_KERAS_RUNS", str(tmp_path / "runs"))
    run_dir = tmp_path / "run"
    args = [
        "--arch",
        "resnet18",
        "--dataset",
        "synthetic",
        "--image-size",
        "32",
        "--synthetic-train",
        "64",
        "--synthetic-test",
        "32",
        "--batch-size",
        "16",
        "--recipe",
        "fast",
        "--steps",
        "8",
        "--precision",
        "float32",
        "--verbose",
        "0",
        "--optimizer",
        "adamw",
        "--lr-schedule",
        "flat-cosine",
        "--mixup",
        "0.2",
        "--stem",
        "deep",
        "--shortcut-downsample",
        "avgpool",
        "--output-dir",
        str(run_dir),
    ]
    metrics = fit.main(args)
    assert metrics["iterations"] == 8 and 0 <= metrics["test_top1_error"] <= 1
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["optimizer"], config["lr_schedule"], config["mixup"]) == ("adamw", "flat-cosine", 0.2)
    assert (config["stem"], config["shortcut_downsample"], config["blur_pool"]) == ("deep", "avgpool", None)
    schedule = config["schedule"]
    assert (schedule["kind"], schedule["optimizer"], schedule["mixup"], schedule["flat_until"]) == (
        "flat-cosine",
        "adamw",
        0.2,
        6,
    )
    model = keras.models.load_model(run_dir / "model.keras")
    assert model.get_layer("conv1_1_conv") is not None  # the deep stem
    assert any(layer.name.endswith("_0_pool") for layer in model.layers)  # ResNet-D's pooled shortcuts


def test_the_changes_are_part_of_a_runs_identity_and_old_records_still_match():
    base = RunConfig(arch="resnet18", recipe="fast")
    changes = ({"optimizer": "adamw"}, {"lr_schedule": "flat-cosine"}, {"mixup": 0.2}, {"blur_pool": "stem"})
    for change in changes:
        assert RunConfig(arch="resnet18", recipe="fast", **change).identity() != base.identity()
    assert RunConfig(arch="resnet50", bottleneck_version="v1.5").identity() != RunConfig(arch="resnet50").identity()
    # A config.json written before these settings existed lacks them: it resumes with a command that sets none.
    # (Issue 40's class_balance is in the identity too, at its end; skipping bad files is not.)
    added = [*ARCH_TWEAKS, "optimizer", "lr_schedule", "mixup", "class_balance"]
    assert set(added) <= set(IDENTITY_KEYS) and IDENTITY_KEYS[-1] == "class_balance"
    later = [*added, "skip_bad_images", "max_bad_fraction"]
    old_record = {key: value for key, value in base.resolved().to_dict().items() if key not in later}
    assert record_identity(old_record) == base.identity()
