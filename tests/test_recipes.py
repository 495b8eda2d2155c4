import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainers.core import recipes
from trainers.core.errors import UserError


def _schedule(arch_depth=20, family="cifar", **kwargs):
    recipe = recipes.get_recipe("paper", family, arch_depth)
    kwargs.setdefault("batch_size", recipe.batch_size)
    kwargs.setdefault("steps_per_epoch", 390)
    return recipes.resolve_schedule(recipe, **kwargs)


def test_paper_cifar_recipe_is_the_papers():
    s = _schedule()
    assert s.total_steps == 64_000 and s.boundaries == (32_000, 48_000)
    np.testing.assert_allclose(s.values, [0.1, 0.01, 0.001])
    assert (s.momentum, s.weight_decay, s.batch_size) == (0.9, 1e-4, 128)


def test_resnet110_warms_up_at_0_01():
    s = _schedule(110)
    assert s.boundaries == (400, 32_000, 48_000)
    np.testing.assert_allclose(s.values, [0.01, 0.1, 0.01, 0.001])
    assert _schedule(56).boundaries == (32_000, 48_000)


def test_shorter_runs_scale_every_milestone():
    s = _schedule(110, epochs=3)  # 1170 iterations: x 1170/64000
    assert s.total_steps == 1170
    assert s.boundaries == (round(400 * 1170 / 64000), 585, round(48_000 * 1170 / 64000))
    assert _schedule(steps=640).boundaries == (320, 480)


def test_another_batch_keeps_the_epochs_and_scales_the_lr():
    s = _schedule(batch_size=256)
    assert s.total_steps == 32_000 and s.boundaries == (16_000, 24_000)
    np.testing.assert_allclose(s.values, [0.2, 0.02, 0.002])
    np.testing.assert_allclose(_schedule(batch_size=256, lr=0.1).values, [0.1, 0.01, 0.001])


def test_imagenet_recipe_divides_on_plateau():
    s = _schedule(34, "imagenet", steps_per_epoch=100)
    assert s.kind == "plateau" and s.lr == 0.1 and s.batch_size == 256
    assert s.total_steps == 120 * 100 and s.plateau_factor == 0.1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, "--epochs 0"),
        ({"lr": -1.0}, "--lr -1.0"),
        ({"weight_decay": -1e-4}, "--weight-decay"),
        ({"epochs": 1, "steps": 10}, "not both"),
    ],
)
def test_bad_schedules_are_refused(kwargs, match):
    with pytest.raises(UserError, match=match):
        _schedule(**kwargs)
    with pytest.raises(UserError, match="--recipe 'cosine'"):
        recipes.get_recipe("cosine", "cifar", 20)


def test_caffe_weight_decay_goes_through_momentum():
    """Two steps of CaffeSGD equal the paper's rule computed by hand:
    v <- m v - lr (g + wd w); w <- w + v."""
    lr, momentum, wd = 0.1, 0.9, 0.01
    w0 = np.array([1.0, -2.0, 3.0], np.float32)
    grads = [np.array([0.5, 0.5, -1.0], np.float32), np.array([-0.2, 0.1, 0.3], np.float32)]
    variable = keras.Variable(w0)
    optimizer = recipes.CaffeSGD(learning_rate=lr, momentum=momentum, l2_decay=wd)
    w, v = w0.astype(np.float64), np.zeros(3)
    for g in grads:
        optimizer.apply_gradients([(tf.constant(g), variable)])
        v = momentum * v - lr * (g + wd * w)
        w = w + v
    np.testing.assert_allclose(variable.numpy(), w, rtol=1e-6)
    # Keras' own SGD(weight_decay=...) is decoupled: not the same numbers.
    other = keras.Variable(w0)
    decoupled = keras.optimizers.SGD(learning_rate=lr, momentum=momentum, weight_decay=wd)
    for g in grads:
        decoupled.apply_gradients([(tf.constant(g), other)])
    assert not np.allclose(other.numpy(), w, rtol=1e-6)
    assert recipes.CaffeSGD.from_config(optimizer.get_config()).l2_decay == wd


def test_fast_recipe_warms_up_then_decays_by_cosine_to_zero():
    recipe = recipes.get_recipe("fast", "cifar", 20)
    s = recipes.resolve_schedule(recipe, batch_size=128, steps_per_epoch=390)
    assert s.total_steps == 30 * 390 and s.warmup_steps == 2 * 390
    assert s.nesterov and s.label_smoothing == 0.0 and s.weight_decay == 5e-4
    assert s.weight_decay_on == "kernels" and not s.zero_init_residual
    lr = recipes.learning_rate(s)
    at = lambda step: float(lr(step))  # noqa: E731
    np.testing.assert_allclose(at(0), 0.02, rtol=1e-5)
    np.testing.assert_allclose(at(390), 0.11, rtol=1e-5)  # half-way up
    np.testing.assert_allclose(at(780), 0.2, rtol=1e-5)  # the peak
    middle = 780 + (30 * 390 - 780) // 2
    np.testing.assert_allclose(at(middle), 0.1, rtol=1e-3)  # cosine: half the peak half-way down
    assert at(30 * 390) < 1e-6
    # Shorter runs keep the shape; another batch scales the peak.
    s = recipes.resolve_schedule(recipe, batch_size=256, steps_per_epoch=195, epochs=3)
    assert s.total_steps == 585 and s.warmup_steps == 39 and s.lr == 0.4
    with pytest.raises(UserError, match="ImageNet networks only"):
        recipes.resolve_schedule(recipe, batch_size=128, steps_per_epoch=390, augment="rrc")


def test_fast_imagenet_recipe_for_short_runs():
    """Imagenette: 147 steps of batch 64 per epoch; 5 epochs of a 20-epoch recipe."""
    recipe = recipes.get_recipe("fast", "imagenet", 34)
    s = recipes.resolve_schedule(recipe, batch_size=64, steps_per_epoch=147, epochs=5)
    assert s.kind == "cosine" and s.total_steps == 735 and s.warmup_steps == round(147 * 5 / 20)
    assert s.augment == "rrc" and s.label_smoothing == 0.1 and s.nesterov
    assert s.weight_decay == 5e-5 and s.weight_decay_on == "kernels" and s.zero_init_residual
    assert s.lr == recipes.FAST_IMAGENET_LR == 0.4
    lr = recipes.learning_rate(s)
    np.testing.assert_allclose(float(lr(s.warmup_steps)), recipes.FAST_IMAGENET_LR, rtol=1e-5)
    assert float(lr(735)) < 1e-6
    full = recipes.resolve_schedule(recipe, batch_size=64, steps_per_epoch=147)
    assert full.total_steps == 20 * 147 and full.warmup_steps == 147
    # Overrides: the paper's augmentation, no smoothing; bad values are refused.
    s = recipes.resolve_schedule(recipe, batch_size=64, steps_per_epoch=147, augment="scale", label_smoothing=0.0)
    assert s.augment == "scale" and s.label_smoothing == 0.0 and s.zero_init_residual
    off = recipes.resolve_schedule(recipe, batch_size=64, steps_per_epoch=147, zero_init_residual=False)
    assert not off.zero_init_residual
    for kwargs, match in (({"augment": "mixup"}, "--augment 'mixup'"), ({"label_smoothing": 1.0}, "--label-smoothing")):
        with pytest.raises(UserError, match=match):
            recipes.resolve_schedule(recipe, batch_size=64, steps_per_epoch=147, **kwargs)
    assert "random-resized crops" in recipes.describe_schedule(dataclasses.replace(s, augment="rrc"))


def test_shortened_imagenet_paper_recipe_steps_at_the_papers_milestones():
    """Below its 120 epochs the plateau rule becomes drops at 25% and 50% of
    the run (Figure 4's drops near 15e4 and 30e4 of 60e4 iterations)."""
    s = _schedule(34, "imagenet", steps_per_epoch=36, epochs=20)
    assert s.kind == "step" and s.shortened_from == "plateau" and s.total_steps == 720
    assert s.boundaries == (180, 360)
    np.testing.assert_allclose(s.values, [0.1, 0.01, 0.001])
    lr = recipes.learning_rate(s)
    np.testing.assert_allclose([float(lr(179)), float(lr(181)), float(lr(361))], [0.1, 0.01, 0.001], rtol=1e-6)
    assert "25% and 50%" in recipes.describe_schedule(s)
    # At its full length (or longer) it stays the plateau rule.
    assert _schedule(34, "imagenet", steps_per_epoch=36, epochs=120).kind == "plateau"
    assert _schedule(34, "imagenet", steps_per_epoch=36).augment == "scale"


def test_kernels_only_weight_decay_leaves_vectors_alone():
    kernel = keras.Variable(np.ones((3, 3), np.float32))
    gamma = keras.Variable(np.ones((3,), np.float32))
    opt = recipes.CaffeSGD(learning_rate=1.0, momentum=0.0, l2_decay=0.1, kernels_only=True)
    opt.apply_gradients([(np.zeros((3, 3), np.float32), kernel), (np.zeros((3,), np.float32), gamma)])
    np.testing.assert_allclose(kernel.numpy(), 0.9)  # w -= lr * (0 + 0.1 w)
    np.testing.assert_allclose(gamma.numpy(), 1.0)


def test_label_smoothing_loss_matches_the_formula():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], np.float32)
    labels = np.array([0, 1])
    loss = recipes.SparseCrossentropy(label_smoothing=0.3)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    target = np.full((2, 3), 0.1)
    target[[0, 1], labels] = 0.8  # 1 - 0.3 + 0.3/3
    np.testing.assert_allclose(float(loss(labels, logits)), (-(target * log_p).sum(-1)).mean(), rtol=1e-5)
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    np.testing.assert_allclose(
        float(recipes.SparseCrossentropy()(labels, logits)), float(plain(labels, logits)), rtol=1e-5
    )


def test_a_schedule_is_typed_and_written_as_the_dict_config_json_has_always_held():
    common = (
        "recipe kind total_steps steps_per_epoch epochs batch_size lr momentum nesterov weight_decay "
        "weight_decay_meaning weight_decay_on label_smoothing augment zero_init_residual scaled_by"
    ).split()
    fast = recipes.get_recipe("fast", "cifar", 20)
    kinds = {
        "step": (_schedule(), ["boundaries", "values"]),
        "cosine": (
            recipes.resolve_schedule(fast, batch_size=128, steps_per_epoch=390),
            ["warmup_steps", "warmup_start"],
        ),
        "plateau": (_schedule(34, "imagenet", steps_per_epoch=36), ["plateau_factor", "plateau_patience"]),
        "shortened": (
            _schedule(34, "imagenet", steps_per_epoch=36, epochs=20),
            ["shortened_from", "boundaries", "values"],
        ),
    }
    for name, (schedule, own) in kinds.items():
        as_dict = schedule.to_dict()
        assert list(as_dict) == common + own, name
        assert json.loads(json.dumps(as_dict)) == as_dict  # plain JSON: lists, not tuples
        assert (as_dict["total_steps"], as_dict["lr"]) == (schedule.total_steps, schedule.lr)
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.lr = 1.0
