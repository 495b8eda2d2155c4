"""The settings of a training run, typed: :class:`RunConfig`.

Each setting's default is written here once, and each value is checked here
once, when a config is made (as ``resnet_keras.specs.ArchSpec`` checks an
architecture). ``None`` stands for "the default" everywhere, as it does on the
command line: a field whose default is a value takes that value, and the
settings whose default depends on the network or on another setting (the
dataset, the image size, the recipe) are filled by :meth:`RunConfig.resolved`.

What a run derives while it runs (the strategy, the data, the schedule, its
directory) is not a setting: it lives on the trainer's run object
(``trainers.core.train``), which writes config.json as these settings, resolved,
followed by what it derived.
"""

from __future__ import annotations

import dataclasses
import math

import resnet_keras
from trainers.core import folder, sources
from trainers.core.balance import MODES as BALANCE_MODES
from trainers.core.errors import UserError

DEFAULT_DATASET = {"cifar": "cifar10", "imagenet": "imagenette/160px-v2"}

# Settings that decide what a run computes: a run directory is resumed only by
# a config with the same values (resolved, as config.json records them).
IDENTITY_KEYS = (
    "arch",
    "dataset",
    "image_size",
    "epochs",
    "steps",
    "batch_size",
    "recipe",
    "lr",
    "weight_decay",
    "shortcut",
    "width",
    "stage_depths",
    "precision",
    "jit_compile",
    "sync_bn",
    "seed",
    "val_split",
    "jpeg_quality",
    "augment",
    "label_smoothing",
    "zero_init_residual",
    "init_from",
    "freeze_epochs",
    "stem",
    "shortcut_downsample",
    "blur_pool",
    "bottleneck_version",
    "optimizer",
    "lr_schedule",
    "mixup",
    "class_balance",
)
# The architecture table's tweaks a run may set for its network (get_model's overrides).
ARCH_TWEAKS = ("stem", "shortcut_downsample", "blur_pool", "bottleneck_version")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One training run's settings (``trainers/fit.py``'s flags, by field name).

    ``None`` is the default: for ``dataset``, ``image_size`` and ``recipe`` one
    that :meth:`resolved` fills from the network (and ``init_from``); for
    ``epochs``/``steps``, ``batch_size``, ``lr``, ``weight_decay``,
    ``label_smoothing``, ``augment`` and ``zero_init_residual`` the recipe's;
    for ``shortcut`` the network's.
    """

    arch: str | None = None  # required: None is refused, naming the networks
    dataset: str | None = None  # TFDS name, "folder:PATH" or "synthetic"; None: DEFAULT_DATASET of the family
    data_dir: str | None = None
    image_size: int | None = None  # None: the network's (32 CIFAR, 224 ImageNet)
    epochs: float | None = None  # the run's length in epochs or iterations (not both); None: the recipe's
    steps: int | None = None
    batch_size: int | None = None  # the global batch
    recipe: str | None = None  # None: paper, or finetune with init_from
    lr: float | None = None
    weight_decay: float | None = None
    shortcut: str | None = None
    width: float = 1.0
    stage_depths: tuple[int, ...] | None = None  # blocks per stage, instead of the network's (a list becomes a tuple)
    precision: str = "auto"
    jit_compile: bool = False
    strategy: str = "auto"
    sync_bn: bool = False
    output_dir: str | None = None  # None: a new saved_models/<arch>-<dataset>-<timestamp>, or the unfinished one
    seed: int = 0
    val_split: float = 0.0  # fraction of the training split held out for validation; 0: validate on the test split
    resume: bool = True  # False: never resume an unfinished run of the same settings
    backup_every: int = 200  # iterations between backups
    log_every: int = 20  # iterations between steps.csv rows
    steps_per_execution: int = 1
    verbose: int = 2  # 0 silent, 1 progress bar, 2 a line per epoch
    synthetic_train: int = 4096  # the synthetic dataset's training images
    synthetic_test: int = 1024
    synthetic_classes: int = 10
    jpeg_quality: int | None = None
    augment: str | None = None
    label_smoothing: float | None = None
    zero_init_residual: bool | None = None
    init_from: str | None = None  # trained weights to start from (resolved to an absolute path)
    freeze_epochs: float | None = None  # with init_from: epochs that train the classifier alone (0: None)
    # The network's tweaks (None: the architecture table's for arch): get_model's overrides.
    stem: str | None = None
    shortcut_downsample: str | None = None
    blur_pool: str | None = None
    bottleneck_version: str | None = None
    # Changes to the recipe (None: the recipe's): recipes.OPTIMIZERS, recipes.LR_SCHEDULES, mixup's alpha.
    optimizer: str | None = None
    lr_schedule: str | None = None
    mixup: float | None = None
    # Unbalanced classes (balance.MODES; None: "none", as config.json records it) and image folders' bad files:
    # with skip_bad_images they are left out and listed, unless more than max_bad_fraction are (None: 0.05).
    class_balance: str | None = None
    skip_bad_images: bool = False
    max_bad_fraction: float | None = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if getattr(self, field.name) is None and field.default is not None:
                object.__setattr__(self, field.name, field.default)
        if isinstance(self.stage_depths, list):
            object.__setattr__(self, "stage_depths", tuple(self.stage_depths))
        if self.arch is None:
            raise UserError("--arch is required; known: " + ", ".join(resnet_keras.list_models()))
        try:
            spec = resnet_keras.resolve_spec(self.arch)
        except ValueError as error:
            raise UserError(str(error)) from None
        freeze = self.freeze_epochs
        if freeze is not None:
            if not (isinstance(freeze, (int, float)) and math.isfinite(freeze) and freeze >= 0):
                raise UserError(f"--freeze-epochs {freeze}; expected a number of epochs >= 0")
            if freeze and not self.init_from:
                raise UserError("--freeze-epochs needs --init-from: it trains a new classifier on a trained backbone")
        if self.class_balance is not None and self.class_balance not in BALANCE_MODES:
            raise UserError(f"--class-balance {self.class_balance!r}; expected one of {', '.join(BALANCE_MODES)}")
        bad = self.max_bad_fraction
        if bad is not None:
            if isinstance(bad, bool) or not (isinstance(bad, (int, float)) and 0 <= bad <= 1):
                raise UserError(f"--max-bad-fraction {bad}; expected a fraction in [0, 1]")
            if not self.skip_bad_images:
                raise UserError(
                    "--max-bad-fraction needs --skip-bad-images: without it the first bad file stops the run"
                )
        if self.skip_bad_images and not folder.is_folder(self.dataset):
            raise UserError(
                f"--skip-bad-images applies to --dataset folder:PATH only, not {self.dataset or 'the default dataset'}"
                " (a TFDS dataset's files are checked when it is prepared)"
            )
        tweaks = self.arch_tweaks()
        if tweaks:
            try:
                spec = spec.with_tweaks(**tweaks)
            except (TypeError, ValueError) as error:
                raise UserError(f"{self.arch}: {error}") from None
        size = spec.default_input_shape[0] if self.image_size is None else self.image_size
        if not isinstance(size, int) or size < spec.total_stride:
            raise UserError(
                f"--image-size {size} is too small for {self.arch!r}: its total stride is {spec.total_stride}"
            )
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**32):
            raise UserError(f"--seed {self.seed}; expected an integer in [0, 2**32)")
        # Whatever the dataset: a count below these is no dataset (tune.py always refused it; fit.py did only with
        # --dataset synthetic).
        for key, low in (("synthetic_classes", 2), ("synthetic_train", 1), ("synthetic_test", 1)):
            if getattr(self, key) < low:
                raise UserError(f"--{key.replace('_', '-')} {getattr(self, key)}; expected an integer >= {low}")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size}; expected a positive integer")
        for key in ("backup_every", "log_every", "steps_per_execution"):
            if getattr(self, key) < 1:
                raise UserError(f"--{key.replace('_', '-')} {getattr(self, key)}; expected a positive integer")

    # ------------------------------------------------------------ derived
    def arch_tweaks(self) -> dict:
        """The tweaks this run sets for its network, as ``get_model``'s keyword arguments."""
        return {key: getattr(self, key) for key in ARCH_TWEAKS if getattr(self, key) is not None}

    @property
    def spec(self) -> resnet_keras.ArchSpec:
        return resnet_keras.resolve_spec(self.arch)

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def depth(self) -> int:
        return self.spec.depth

    def resolved(self) -> RunConfig:
        """This config with the defaults that need no data filled in: the
        family's dataset and image size, recipe ``finetune`` with ``init_from``
        (else ``paper``), ``init_from`` as an absolute path (shipped weights,
        ``weights:ARCH/NAME``, are a name, not a path), ``freeze_epochs`` 0 as
        None, ``class_balance`` "none" as None (what a record written before
        the setting lacks), ``max_bad_fraction`` 0.05 with ``skip_bad_images``.
        What config.json records and :meth:`identity` compares."""
        init_from = self.init_from
        if init_from:
            init_from = sources.absolute_source(init_from)
        return dataclasses.replace(
            self,
            dataset=self.dataset or DEFAULT_DATASET[self.family],
            image_size=self.spec.default_input_shape[0] if self.image_size is None else self.image_size,
            recipe=self.recipe or ("finetune" if self.init_from else "paper"),
            init_from=init_from,
            freeze_epochs=self.freeze_epochs or None,
            class_balance=None if self.class_balance == "none" else self.class_balance,
            max_bad_fraction=(
                (folder.MAX_BAD_FRACTION if self.max_bad_fraction is None else self.max_bad_fraction)
                if self.skip_bad_images
                else None
            ),
        )

    def identity(self) -> dict:
        """The settings that decide what the run computes, resolved and in
        config.json's form: an unfinished run directory is resumed only by a
        config whose identity is its record's (:func:`record_identity`)."""
        record = self.resolved().to_dict()
        return {key: record[key] for key in IDENTITY_KEYS}

    # ------------------------------------------------------------ as a dict
    @classmethod
    def defaults(cls) -> dict:
        """Each setting's default (None: resolved from the network, the recipe or another setting)."""
        return {field.name: field.default for field in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, settings: dict) -> RunConfig:
        """The config of a dict of settings by field name; a name that is no
        setting is refused (``ValueError``: a caller's mistake, not the user's)."""
        unknown = set(settings) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        return cls(**settings)

    def to_dict(self) -> dict:
        """Every setting by name, in field order, in JSON's types (stage depths a list)."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}


def record_identity(record: dict) -> dict:
    """The identity (:meth:`RunConfig.identity`) of a config.json record as
    any version of the trainer wrote it: a setting it lacks counts as None."""
    return {key: record.get(key) for key in IDENTITY_KEYS}
