"""Training recipes: optimizer, weight decay, learning-rate schedule, length.

``paper`` follows PAPER.md. CIFAR: SGD momentum 0.9, weight decay 1e-4 with
Caffe's meaning (the gradient of every weight gets 1e-4 * w added before the
momentum update, which is not Keras' decoupled ``weight_decay``), batch 128,
learning rate 0.1 divided by 10 at 32k and 48k iterations, 64k iterations; for
ResNet-110 and deeper a warm-up at 0.01 for the first 400 iterations.
ImageNet: batch 256, learning rate 0.1 divided by 10 when the validation error
plateaus, 60e4 iterations of batch 256 (120 epochs of ImageNet's 1.28M images).
"""

from __future__ import annotations

import dataclasses
import math

import keras

from trainers.common import UserError

RECIPES = ("paper",)


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    # Piecewise-constant schedule in iterations of `batch_size` (CIFAR), or
    # "plateau" (ImageNet: divide by 10 when validation error stops improving).
    schedule: str
    total_steps: int | None = None  # CIFAR: the paper's 64k iterations
    total_epochs: int | None = None  # ImageNet: the paper's 120 epochs
    milestones: tuple[int, ...] = ()
    warmup_steps: int = 0
    warmup_lr: float = 0.0
    plateau_patience: int = 5


def paper_recipe(family: str, depth: int) -> Recipe:
    if family == "cifar":
        deep = depth >= 110  # ResNet-110 (and 1202, trained as 110 was)
        return Recipe(
            name="paper", batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4, schedule="step",
            total_steps=64_000, milestones=(32_000, 48_000),
            warmup_steps=400 if deep else 0, warmup_lr=0.01 if deep else 0.0,
        )  # fmt: skip
    # The paper gives no patience; 5 epochs is a common reading of "plateaus".
    return Recipe(
        name="paper", batch_size=256, lr=0.1, momentum=0.9, weight_decay=1e-4, schedule="plateau",
        total_epochs=120, plateau_patience=5,
    )  # fmt: skip


def get_recipe(name: str, family: str, depth: int) -> Recipe:
    if name not in RECIPES:
        raise UserError(f"--recipe {name!r}; expected one of {', '.join(RECIPES)}")
    return paper_recipe(family, depth)


def resolve_schedule(recipe: Recipe, *, batch_size: int, steps_per_epoch: int, epochs=None, steps=None,
                     lr=None, weight_decay=None) -> dict:
    """The run's concrete schedule, in iterations of the run's batch.

    The recipe's length is kept in epochs when the batch differs from the
    recipe's, and the learning rate scales linearly with the batch (Goyal et
    al. 2017) unless ``lr`` is given. ``epochs`` or ``steps`` shortens (or
    lengthens) the run, and every milestone moves in proportion."""
    if epochs is not None and steps is not None:
        raise UserError("give --epochs or --steps, not both")
    for flag, value in (("--epochs", epochs), ("--steps", steps)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}; expected a positive number")
    base_lr = recipe.lr * batch_size / recipe.batch_size if lr is None else lr
    if not base_lr > 0 or not math.isfinite(base_lr):
        raise UserError(f"--lr {lr}; expected a positive number")
    wd = recipe.weight_decay if weight_decay is None else weight_decay
    if not wd >= 0:
        raise UserError(f"--weight-decay {weight_decay}; expected a number >= 0")

    # The recipe's own length, in this run's iterations.
    if recipe.total_steps is not None:
        recipe_steps = round(recipe.total_steps * recipe.batch_size / batch_size)
    else:
        recipe_steps = recipe.total_epochs * steps_per_epoch
    if steps is not None:
        total = int(steps)
    elif epochs is not None:
        total = int(round(epochs * steps_per_epoch))
    else:
        total = recipe_steps
    ratio = total / recipe_steps
    schedule = {
        "recipe": recipe.name,
        "kind": recipe.schedule,
        "total_steps": total,
        "steps_per_epoch": steps_per_epoch,
        "epochs": total / steps_per_epoch,
        "batch_size": batch_size,
        "lr": base_lr,
        "momentum": recipe.momentum,
        "weight_decay": wd,
        "weight_decay_meaning": "Caffe/L2: gradient += weight_decay * w, before momentum",
        "scaled_by": ratio,
    }
    if recipe.schedule == "step":
        scale = recipe.batch_size / batch_size * ratio
        boundaries, values = [], []
        if recipe.warmup_steps:
            boundaries.append(max(1, round(recipe.warmup_steps * scale)))
            values.append(recipe.warmup_lr * base_lr / recipe.lr)
        lr_now = base_lr
        for milestone in recipe.milestones:
            boundaries.append(max(1, round(milestone * scale)))
            values.append(lr_now)
            lr_now /= 10
        values.append(lr_now)
        schedule.update(boundaries=boundaries, values=values)
    else:
        schedule.update(plateau_factor=0.1, plateau_patience=recipe.plateau_patience)
    return schedule


def learning_rate(schedule: dict):
    if schedule["kind"] == "step":
        return keras.optimizers.schedules.PiecewiseConstantDecay(schedule["boundaries"], schedule["values"])
    return schedule["lr"]


def describe_schedule(schedule: dict) -> str:
    lines = [
        f"recipe {schedule['recipe']}: {schedule['total_steps']} iterations of batch {schedule['batch_size']} "
        f"({schedule['epochs']:.2f} epochs of {schedule['steps_per_epoch']} steps)"
        + (f", the paper's length x {schedule['scaled_by']:.4g}" if schedule["scaled_by"] != 1 else ""),
        f"  SGD momentum {schedule['momentum']}, weight decay {schedule['weight_decay']:g} (Caffe meaning)",
    ]
    if schedule["kind"] == "step":
        start = 0
        for boundary, value in zip([*schedule["boundaries"], schedule["total_steps"]], schedule["values"]):
            lines.append(f"  lr {value:g} for iterations [{start}, {boundary})")
            start = boundary
    else:
        lines.append(
            f"  lr {schedule['lr']:g}, divided by 10 when validation error has not improved for "
            f"{schedule['plateau_patience']} epochs"
        )
    return "\n".join(lines)


@keras.saving.register_keras_serializable(package="resnet_keras_trainers")
class CaffeSGD(keras.optimizers.SGD):
    """SGD with momentum whose weight decay has the paper's (Caffe's) meaning:
    ``g += weight_decay * w`` before the momentum update, for every trainable
    weight. Keras' own ``SGD(weight_decay=...)`` instead shrinks weights apart
    from the gradient (decoupled), which with momentum is a different recipe."""

    def __init__(self, learning_rate=0.1, momentum=0.9, l2_decay=1e-4, **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        self.l2_decay = float(l2_decay)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2_decay:
            decay = keras.ops.cast(self.l2_decay, variable.dtype)
            gradient = gradient + decay * keras.ops.cast(variable, gradient.dtype)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2_decay": self.l2_decay}
