"""Training recipes: optimizer, weight decay, learning-rate schedule, length.

``paper`` follows PAPER.md. CIFAR: SGD momentum 0.9, weight decay 1e-4 with
Caffe's meaning (the gradient of every weight gets 1e-4 * w added before the
momentum update, which is not Keras' decoupled ``weight_decay``), batch 128,
learning rate 0.1 divided by 10 at 32k and 48k iterations, 64k iterations; for
ResNet-110 and deeper a warm-up at 0.01 for the first 400 iterations.
ImageNet: batch 256, learning rate 0.1 divided by 10 when the validation error
plateaus, 60e4 iterations of batch 256 (120 epochs of ImageNet's 1.28M images),
the scale augmentation. Shortened (``--epochs``/``--steps`` below its 120
epochs), the plateau rule becomes the step milestones the paper's runs ended
up with: the drops of its Figure 4 fall near 15e4 and 30e4 of 60e4 iterations,
so at 25% and 50% of the run's length. A patience scaled with the length would
be 0 epochs below 24 epochs, and the plateau rule reads the validation split,
which here is the split reported.

``fast`` (*not the paper's*). CIFAR: 30 epochs of batch 128, SGD with
Nesterov momentum 0.9, a linear warm-up over 2 epochs to 0.2 then cosine decay
to 0, weight decay 5e-4 (Caffe meaning) on convolution and dense kernels only
(not on BN scales and offsets or biases). Label smoothing and a zero-initialized
last BN per residual branch (Goyal et al. 2017) are supported by the Recipe but
off: with them ResNet-20 underfit in 30 epochs. Its measured accuracy and wall
time are in docs/benchmarks.md. ImageNet family (for short runs at 128 px on
Imagenette; docs/imagenet.md has what was measured): 20 epochs of batch 64,
SGD with Nesterov momentum 0.9, a linear warm-up over 1 epoch (scaled with the
length) to a peak learning rate of 0.4, then cosine decay to 0, the last BN
of every residual branch starting at gamma = 0, weight decay 5e-5 on kernels,
label smoothing 0.1, random-resized crops (area 35-100%, aspect 3/4-4/3)
instead of the scale augmentation.
"""

from __future__ import annotations

import dataclasses
import math

import keras

from trainers.core.errors import UserError

RECIPES = ("paper", "fast", "finetune")
AUGMENTS = ("scale", "rrc")
OPTIMIZERS = ("sgd", "adamw", "lamb")
# The learning-rate schedules a run may ask for instead of its recipe's
# (``--lr-schedule``): "cosine" (warm-up, then cosine decay to 0) and
# "flat-cosine" (warm-up, the peak held flat, then cosine decay to 0 over the
# run's last ``1 - FLAT_FRACTION``), the schedule of the fast.ai Imagenette
# leaderboard's entries (fastai's ``fit_flat_cos``).
LR_SCHEDULES = ("cosine", "flat-cosine")
FLAT_FRACTION = 0.75  # fastai's fit_flat_cos default: the anneal starts at 75% of the run
# The adaptive optimizers' own defaults, at the recipe's batch (scaled
# linearly with the batch like SGD's): Adam-style steps are about lr in size
# whatever the gradient's scale, so SGD's 0.4 is no guide. Their weight decay
# is decoupled (w -= lr * weight_decay * w each step, Loshchilov and Hutter
# 2019), so its size is not comparable to the Caffe L2 decay of SGD either.
ADAPTIVE_DEFAULTS = {
    "adamw": {"lr": 3e-3, "weight_decay": 1e-2},
    "lamb": {"lr": 1e-2, "weight_decay": 1e-2},
}
ADAPTIVE_BETAS = (0.9, 0.99)  # beta_2 0.99, not 0.999: a second moment that follows a short run's changes
OPTIMIZER_NAMES = {"sgd": "SGD", "adamw": "AdamW", "lamb": "LAMB"}
FAST_IMAGENET_LR = 0.4
AUGMENT_NAMES = {
    "scale": "scale (shorter side in [256, 480] for 224, scaled; crop, flip, PCA colour)",
    "rrc": "random-resized crops (area 35-100%, aspect 3/4-4/3; flip)",
}


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
    # "cosine" schedules: a linear warm-up over this many epochs, from
    # warmup_lr x lr to lr, then cosine decay to 0.
    warmup_epochs: float = 0.0
    nesterov: bool = False
    label_smoothing: float = 0.0
    decay_kernels_only: bool = False  # weight decay on conv/dense kernels only
    zero_init_residual: bool = False  # the last BN of each residual branch starts at gamma = 0
    # ImageNet family: "scale" (the paper's shorter side in [256, 480], scaled)
    # or "rrc" (random-resized crops); None for CIFAR (pad, crop, flip).
    augment: str | None = None
    # "plateau" schedules shortened below the recipe's length: step milestones
    # at these fractions of the run.
    shortened_milestones: tuple[float, ...] = ()
    optimizer: str = "sgd"  # "sgd" (CaffeSGD), or one of ADAPTIVE_DEFAULTS
    mixup: float = 0.0  # mixup's alpha (Zhang et al. 2018); 0: off


def paper_recipe(family: str, depth: int) -> Recipe:
    if family == "cifar":
        deep = depth >= 110  # ResNet-110 (and 1202, trained as 110 was)
        return Recipe(
            name="paper",
            batch_size=128,
            lr=0.1,
            momentum=0.9,
            weight_decay=1e-4,
            schedule="step",
            total_steps=64_000,
            milestones=(32_000, 48_000),
            warmup_steps=400 if deep else 0,
            warmup_lr=0.01 if deep else 0.0,
        )
    # The paper gives no patience; 5 epochs is a common reading of "plateaus".
    return Recipe(
        name="paper",
        batch_size=256,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="plateau",
        total_epochs=120,
        plateau_patience=5,
        augment="scale",
        shortened_milestones=(0.25, 0.5),
    )


def fast_recipe(family: str, depth: int) -> Recipe:
    if family != "cifar":
        return Recipe(
            name="fast",
            batch_size=64,
            lr=FAST_IMAGENET_LR,
            momentum=0.9,
            weight_decay=5e-5,
            schedule="cosine",
            total_epochs=20,
            warmup_epochs=1,
            warmup_lr=0.1,
            nesterov=True,
            label_smoothing=0.1,
            decay_kernels_only=True,
            augment="rrc",
            zero_init_residual=True,
        )
    return Recipe(
        name="fast",
        batch_size=128,
        lr=0.2,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="cosine",
        total_epochs=30,
        warmup_epochs=2,
        warmup_lr=0.1,
        nesterov=True,
        label_smoothing=0.0,
        decay_kernels_only=True,
        zero_init_residual=False,
    )


def finetune_recipe(family: str, depth: int) -> Recipe:
    """Short and gentle, for networks that start from trained weights
    (``--init-from``): 10 epochs, a peak learning rate a tenth of the fast
    recipe's, no warm-up, cosine decay to 0."""
    batch = 128 if family == "cifar" else 64
    return Recipe(
        name="finetune",
        batch_size=batch,
        lr=0.02,
        momentum=0.9,
        weight_decay=5e-5,
        schedule="cosine",
        total_epochs=10,
        warmup_epochs=0,
        warmup_lr=1.0,
        nesterov=True,
        label_smoothing=0.0,
        decay_kernels_only=True,
        augment=None if family == "cifar" else "rrc",
    )


def get_recipe(name: str, family: str, depth: int) -> Recipe:
    if name not in RECIPES:
        raise UserError(f"--recipe {name!r}; expected one of {', '.join(RECIPES)}")
    if name == "fast":
        return fast_recipe(family, depth)
    if name == "finetune":
        return finetune_recipe(family, depth)
    return paper_recipe(family, depth)


WEIGHT_DECAY_MEANING = "Caffe/L2: gradient += weight_decay * w, before momentum"
DECOUPLED_DECAY_MEANING = "decoupled: w -= lr * weight_decay * w, apart from the gradient"
# Schedule's fields that only some kinds of schedule have: None elsewhere, and
# then not in its dict.
_KIND_FIELDS = (
    "shortened_from",
    "boundaries",
    "values",
    "warmup_steps",
    "warmup_start",
    "flat_until",
    "plateau_factor",
    "plateau_patience",
)
# Changes to the recipes that earlier versions did not have: in the dict only
# where a run makes them, so a run without them records what it always did.
_CHANGE_FIELDS = {"optimizer": "sgd", "betas": None, "mixup": 0.0}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A recipe resolved for one run (:func:`resolve_schedule`), in iterations
    of the run's batch. config.json records it as :meth:`to_dict`."""

    recipe: str
    # "step" (piecewise constant), "cosine", "flat-cosine" or "plateau" (divided by 10 when validation stalls)
    kind: str
    total_steps: int
    steps_per_epoch: int
    epochs: float  # total_steps in epochs
    batch_size: int
    lr: float  # the initial learning rate (cosine: the peak, after the warm-up)
    momentum: float | None  # SGD's; None for the adaptive optimizers (their betas instead)
    nesterov: bool | None
    weight_decay: float
    weight_decay_on: str  # "kernels" or "all trainable weights"
    label_smoothing: float
    augment: str | None  # the ImageNet networks' training crops ("scale", "rrc"); None for CIFAR
    zero_init_residual: bool
    scaled_by: float  # total_steps / the recipe's own length
    weight_decay_meaning: str = WEIGHT_DECAY_MEANING
    # "step", and "plateau" shortened into steps (shortened_from "plateau"): the
    # learning rate is values[i] up to iteration boundaries[i], then values[-1].
    shortened_from: str | None = None
    boundaries: tuple[int, ...] | None = None
    values: tuple[float, ...] | None = None
    # "cosine": linear from warmup_start to lr over warmup_steps, then cosine decay to 0.
    # "flat-cosine": the same warm-up, lr held until iteration flat_until, then cosine decay to 0.
    warmup_steps: int | None = None
    warmup_start: float | None = None
    flat_until: int | None = None
    # "plateau": lr x plateau_factor after plateau_patience epochs without improvement.
    plateau_factor: float | None = None
    plateau_patience: int | None = None
    optimizer: str = "sgd"  # "sgd" (CaffeSGD: momentum, nesterov) or "adamw"/"lamb" (betas)
    betas: tuple[float, float] | None = None
    mixup: float = 0.0  # alpha of mixup's Beta(alpha, alpha); 0: off

    def to_dict(self) -> dict:
        """The schedule as config.json's ``"schedule"`` (the dict earlier
        versions resolved): a kind's fields only where the kind has them, the
        newer recipe changes only where the run makes them."""
        fields = dataclasses.asdict(self)
        skip = ("weight_decay_meaning", *_KIND_FIELDS, *_CHANGE_FIELDS)
        order = [name for name in fields if name not in skip]
        order.insert(order.index("weight_decay_on"), "weight_decay_meaning")
        order += [name for name in _KIND_FIELDS if fields[name] is not None]
        order += [name for name, default in _CHANGE_FIELDS.items() if fields[name] != default]
        return {name: list(fields[name]) if isinstance(fields[name], tuple) else fields[name] for name in order}


def resolve_schedule(
    recipe: Recipe,
    *,
    batch_size: int,
    steps_per_epoch: int,
    epochs=None,
    steps=None,
    lr=None,
    weight_decay=None,
    label_smoothing=None,
    augment=None,
    zero_init_residual=None,
    optimizer=None,
    lr_schedule=None,
    mixup=None,
) -> Schedule:
    """The run's concrete schedule, in iterations of the run's batch.

    The recipe's length is kept in epochs when the batch differs from the
    recipe's, and the learning rate scales linearly with the batch (Goyal et
    al. 2017) unless ``lr`` is given. ``epochs`` or ``steps`` shortens (or
    lengthens) the run, and every milestone moves in proportion; a plateau
    schedule shortened below its length becomes the recipe's
    ``shortened_milestones``. ``label_smoothing``, ``augment``,
    ``zero_init_residual``, ``optimizer``, ``lr_schedule`` and ``mixup``
    override the recipe's; an adaptive optimizer brings its own default
    learning rate and (decoupled) weight decay (``ADAPTIVE_DEFAULTS``)."""
    if epochs is not None and steps is not None:
        raise UserError("give --epochs or --steps, not both")
    for flag, value in (("--epochs", epochs), ("--steps", steps)):
        if value is not None and not (math.isfinite(value) and value >= 1):
            raise UserError(f"{flag} {value}; expected a positive number")
    optimizer = optimizer or recipe.optimizer
    if optimizer not in OPTIMIZERS:
        raise UserError(f"--optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
    if lr_schedule is not None and lr_schedule not in LR_SCHEDULES:
        raise UserError(f"--lr-schedule {lr_schedule!r}; expected one of {', '.join(LR_SCHEDULES)}")
    mix = recipe.mixup if mixup is None else mixup
    if not (isinstance(mix, (int, float)) and math.isfinite(mix) and mix >= 0):
        raise UserError(f"--mixup {mixup}; expected an alpha >= 0 (0: off; 0.2 is common)")
    own = ADAPTIVE_DEFAULTS.get(optimizer) if optimizer != recipe.optimizer else None
    recipe_lr = own["lr"] if own else recipe.lr
    base_lr = recipe_lr * batch_size / recipe.batch_size if lr is None else lr
    if not base_lr > 0 or not math.isfinite(base_lr):
        raise UserError(f"--lr {lr}; expected a positive number")
    wd = (own["weight_decay"] if own else recipe.weight_decay) if weight_decay is None else weight_decay
    if not wd >= 0:
        raise UserError(f"--weight-decay {weight_decay}; expected a number >= 0")
    smoothing = recipe.label_smoothing if label_smoothing is None else label_smoothing
    if not 0 <= smoothing < 1:
        raise UserError(f"--label-smoothing {label_smoothing}; expected a number in [0, 1)")
    if augment is not None and recipe.augment is None:
        raise UserError("--augment applies to the ImageNet networks only (the CIFAR ones pad, crop and flip)")
    if augment is not None and augment not in AUGMENTS:
        raise UserError(f"--augment {augment!r}; expected one of {', '.join(AUGMENTS)}")

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
    schedule = dict(
        recipe=recipe.name,
        kind=recipe.schedule,
        total_steps=total,
        steps_per_epoch=steps_per_epoch,
        epochs=total / steps_per_epoch,
        batch_size=batch_size,
        lr=base_lr,
        momentum=recipe.momentum if optimizer == "sgd" else None,
        nesterov=recipe.nesterov if optimizer == "sgd" else None,
        weight_decay=wd,
        weight_decay_meaning=WEIGHT_DECAY_MEANING if optimizer == "sgd" else DECOUPLED_DECAY_MEANING,
        weight_decay_on="kernels" if recipe.decay_kernels_only else "all trainable weights",
        label_smoothing=smoothing,
        augment=augment or recipe.augment,
        zero_init_residual=recipe.zero_init_residual if zero_init_residual is None else bool(zero_init_residual),
        scaled_by=ratio,
        optimizer=optimizer,
        betas=ADAPTIVE_BETAS if optimizer != "sgd" else None,
        mixup=float(mix),
    )
    kind = lr_schedule or recipe.schedule
    if kind != recipe.schedule:
        schedule["kind"] = kind
    if kind == "step":
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
        schedule.update(boundaries=tuple(boundaries), values=tuple(values))
    elif kind in LR_SCHEDULES:
        warmup = max(0, min(total - 1, round(recipe.warmup_epochs * steps_per_epoch * ratio)))
        schedule.update(warmup_steps=warmup, warmup_start=recipe.warmup_lr * base_lr)
        if kind == "flat-cosine":
            schedule.update(flat_until=max(warmup, min(total - 1, round(FLAT_FRACTION * total))))
    elif total < recipe_steps and recipe.shortened_milestones:
        # Shortened: the milestones the paper's plateau runs ended up with.
        boundaries = [max(1, round(f * total)) for f in recipe.shortened_milestones]
        schedule.update(
            kind="step",
            shortened_from="plateau",
            boundaries=tuple(boundaries),
            values=tuple(base_lr / 10**i for i in range(len(boundaries) + 1)),
        )
    else:
        schedule.update(plateau_factor=0.1, plateau_patience=recipe.plateau_patience)
    return Schedule(**schedule)


def learning_rate(schedule: Schedule):
    if schedule.kind == "flat-cosine":
        return WarmupFlatCosine(
            peak=schedule.lr,
            warmup_start=schedule.warmup_start,
            warmup_steps=schedule.warmup_steps,
            flat_until=schedule.flat_until,
            total_steps=schedule.total_steps,
        )
    if schedule.kind == "step":
        return keras.optimizers.schedules.PiecewiseConstantDecay(list(schedule.boundaries), list(schedule.values))
    if schedule.kind == "cosine":
        warmup = schedule.warmup_steps
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=schedule.warmup_start if warmup else schedule.lr,
            decay_steps=schedule.total_steps - warmup,
            alpha=0.0,
            warmup_target=schedule.lr if warmup else None,
            warmup_steps=warmup,
        )
    return schedule.lr


def describe_schedule(schedule: Schedule) -> str:
    s = schedule
    lines = [
        f"recipe {s.recipe}: {s.total_steps} iterations of batch {s.batch_size} "
        f"({s.epochs:.2f} epochs of {s.steps_per_epoch} steps)"
        + (f", the {s.recipe} recipe's length x {s.scaled_by:.4g}" if s.scaled_by != 1 else ""),
        (
            f"  SGD {'Nesterov ' if s.nesterov else ''}momentum {s.momentum}, weight decay "
            f"{s.weight_decay:g} (Caffe meaning) on {s.weight_decay_on}"
            if s.optimizer == "sgd"
            else f"  {OPTIMIZER_NAMES[s.optimizer]} betas {s.betas[0]}/{s.betas[1]}, weight decay "
            f"{s.weight_decay:g} (decoupled) on {s.weight_decay_on}"
        )
        + (f", label smoothing {s.label_smoothing:g}" if s.label_smoothing else "")
        + (f", augmentation {AUGMENT_NAMES[s.augment]}" if s.augment else "")
        + (", residual branches' last BN gamma = 0 at start" if s.zero_init_residual else "")
        + (f", mixup alpha {s.mixup:g}" if s.mixup else ""),
    ]
    if s.kind in LR_SCHEDULES:
        if s.warmup_steps:
            lines.append(f"  lr {s.warmup_start:g} -> {s.lr:g} linearly over iterations [0, {s.warmup_steps})")
        anneal = s.warmup_steps
        if s.kind == "flat-cosine":
            anneal = s.flat_until
            lines.append(f"  lr {s.lr:g} held over iterations [{s.warmup_steps}, {anneal})")
        lines.append(f"  lr {s.lr:g} -> 0 by cosine over iterations [{anneal}, {s.total_steps})")
    elif s.kind == "step":
        if s.shortened_from == "plateau":
            lines.append(
                "  the plateau rule, shortened: step milestones at "
                + " and ".join(f"{b / s.total_steps:.0%}" for b in s.boundaries)
                + " of the run (where the paper's ImageNet runs dropped)"
            )
        start = 0
        for boundary, value in zip([*s.boundaries, s.total_steps], s.values):
            lines.append(f"  lr {value:g} for iterations [{start}, {boundary})")
            start = boundary
    else:
        lines.append(
            f"  lr {s.lr:g}, divided by 10 when validation error has not improved for {s.plateau_patience} epochs"
        )
    return "\n".join(lines)


@keras.saving.register_keras_serializable(package="resnet_keras_trainers")
class WarmupFlatCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``warmup_start`` to ``peak`` over ``warmup_steps``,
    ``peak`` held until ``flat_until``, then cosine decay to 0 at
    ``total_steps``: the "flat-cosine" schedule (``LR_SCHEDULES``)."""

    def __init__(self, peak, warmup_start, warmup_steps, flat_until, total_steps):
        self.peak = float(peak)
        self.warmup_start = float(warmup_start)
        self.warmup_steps = int(warmup_steps)
        self.flat_until = int(flat_until)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        warm = self.warmup_start + (self.peak - self.warmup_start) * step / max(1, self.warmup_steps)
        progress = ops.clip((step - self.flat_until) / max(1, self.total_steps - self.flat_until), 0.0, 1.0)
        anneal = 0.5 * self.peak * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warm, anneal)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_start": self.warmup_start,
            "warmup_steps": self.warmup_steps,
            "flat_until": self.flat_until,
            "total_steps": self.total_steps,
        }


def make_optimizer(schedule: Schedule, variables) -> keras.optimizers.Optimizer:
    """The run's optimizer, with its learning-rate schedule and weight decay.
    ``variables``: the model's trainable variables (the adaptive optimizers
    are told which ones their decoupled decay skips: BN scales and offsets and
    biases, the vectors, where the schedule decays kernels only)."""
    rate = learning_rate(schedule)
    kernels_only = schedule.weight_decay_on == "kernels"
    if schedule.optimizer == "sgd":
        return CaffeSGD(
            learning_rate=rate,
            momentum=schedule.momentum,
            l2_decay=schedule.weight_decay,
            nesterov=schedule.nesterov,
            kernels_only=kernels_only,
        )
    kind = {"adamw": keras.optimizers.AdamW, "lamb": keras.optimizers.Lamb}[schedule.optimizer]
    beta_1, beta_2 = schedule.betas
    optimizer = kind(
        learning_rate=rate, weight_decay=schedule.weight_decay or None, beta_1=beta_1, beta_2=beta_2, epsilon=1e-6
    )
    if kernels_only and schedule.weight_decay:
        optimizer.exclude_from_weight_decay(var_list=[v for v in variables if len(v.shape) < 2])
    return optimizer


@keras.saving.register_keras_serializable(package="resnet_keras_trainers")
class CaffeSGD(keras.optimizers.SGD):
    """SGD with momentum whose weight decay has the paper's (Caffe's) meaning:
    ``g += weight_decay * w`` before the momentum update, for every trainable
    weight. Keras' own ``SGD(weight_decay=...)`` instead shrinks weights apart
    from the gradient (decoupled), which with momentum is a different recipe."""

    def __init__(self, learning_rate=0.1, momentum=0.9, l2_decay=1e-4, kernels_only=False, **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        self.l2_decay = float(l2_decay)
        self.kernels_only = bool(kernels_only)

    def update_step(self, gradient, variable, learning_rate):
        # Kernels are the weights of rank 2 or more (convolutions, dense);
        # BN scales and offsets and biases are vectors.
        if self.l2_decay and not (self.kernels_only and len(variable.shape) < 2):
            decay = keras.ops.cast(self.l2_decay, variable.dtype)
            gradient = gradient + decay * keras.ops.cast(variable, gradient.dtype)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2_decay": self.l2_decay, "kernels_only": self.kernels_only}


@keras.saving.register_keras_serializable(package="resnet_keras_trainers")
class SparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits against integer labels, with optional label
    smoothing (the target puts ``1 - s + s/K`` on the true class and ``s/K`` on
    every other), which Keras' sparse loss does not offer."""

    def __init__(self, label_smoothing=0.0, name="sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        ops = keras.ops
        logits = ops.cast(y_pred, "float32")
        log_probs = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
        classes = ops.shape(logits)[-1]
        labels = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), classes, dtype="float32")
        s = self.label_smoothing
        if s:
            labels = labels * (1.0 - s) + s / ops.cast(classes, "float32")
        return -ops.sum(labels * log_probs, axis=-1)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}
