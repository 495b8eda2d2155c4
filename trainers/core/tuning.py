"""Keras Tuner search over depth, width, shortcut, learning rate and weight
decay: the library behind ``trainers/tune.py`` (which says what a search does
and writes).

:class:`Space` is what is searched, :class:`SearchSettings` how (tuner, trials,
epochs, budgets), and a :class:`~trainers.core.config.RunConfig` (from
:func:`base_config`) what every trial trains with; :func:`search` runs it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import pathlib
import time

import keras
import keras_tuner as kt

import resnet_keras
from trainers.core import data as data_lib
from trainers.core import runlock
from trainers.core import train as trainer
from trainers.core.compat import make_keras_tuner_saves_atomic, quiet_keras_tuner_failed_trials
from trainers.core.config import RunConfig
from trainers.core.distributed import make_strategy
from trainers.core.errors import UserError, write_failed
from trainers.core.files import read_json, save_figure_atomic, write_json_atomic, write_text_atomic
from trainers.core.hardware import global_dtype_policy, resolve_precision

FAMILIES = ("cifar", "imagenet")
TUNERS = ("random", "bayesian", "hyperband")
IMAGENET_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
SHORTCUTS = ("A", "B", "C")


@dataclasses.dataclass(frozen=True)
class Space:
    """The search space. Every range is [min, max]; min == max fixes a value.

    cifar: n in 6n+2 (default 3..18: ResNet-20 to ResNet-110).
    imagenet: one of the paper's stage depths (resnet18..152), or with
    ``free_depths`` any blocks per stage in [stage_min, stage_max] with basic or
    bottleneck blocks.
    """

    family: str = "cifar"
    n_min: int = 3
    n_max: int = 18
    imagenet_archs: tuple = IMAGENET_ARCHS
    free_depths: bool = False
    stage_min: int = 1
    stage_max: int = 8
    widths: tuple = (0.5, 0.75, 1.0, 1.5, 2.0)
    shortcuts: tuple | None = None  # default: the paper's (A for CIFAR, B for ImageNet) and the others
    lr_min: float = 0.01
    lr_max: float = 0.3
    wd_min: float = 1e-5
    wd_max: float = 1e-3

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise UserError(f"--family {self.family!r}; expected one of {', '.join(FAMILIES)}")
        for name, low, high in (
            ("n", self.n_min, self.n_max),
            ("stage", self.stage_min, self.stage_max),
            ("lr", self.lr_min, self.lr_max),
            ("wd", self.wd_min, self.wd_max),
        ):
            if not low <= high:
                raise UserError(f"--{name}-min {low} > --{name}-max {high}: an empty range")
            if not low > 0:
                raise UserError(f"--{name}-min {low}; expected a positive value")
        if not self.widths or any(not w > 0 for w in self.widths):
            raise UserError(f"--width {list(self.widths)}; expected positive multipliers")
        unknown = [a for a in self.imagenet_archs if a not in IMAGENET_ARCHS]
        if unknown or not self.imagenet_archs:
            raise UserError(f"--arch {unknown or []}; expected some of {', '.join(IMAGENET_ARCHS)}")
        if self.shortcuts is not None and (not self.shortcuts or set(self.shortcuts) - set(SHORTCUTS)):
            raise UserError(f"--shortcut {list(self.shortcuts)}; expected some of {', '.join(SHORTCUTS)}")

    @property
    def shortcut_choices(self) -> tuple:
        if self.shortcuts:
            return tuple(self.shortcuts)
        first = "A" if self.family == "cifar" else "B"
        return (first, *[s for s in SHORTCUTS if s != first])

    def sample(self, hp) -> dict:
        """Declares the hyperparameters on ``hp`` and returns get_model's arguments."""
        values = {}
        if self.family == "cifar":
            default_n = min(max(3, self.n_min), self.n_max)
            n = hp.Int("n", self.n_min, self.n_max, default=default_n)
            values.update(arch=f"resnet{6 * n + 2}", stage_depths=None)
        elif self.free_depths:
            block = hp.Choice("block", ["basic", "bottleneck"], default="basic")
            default_depth = min(max(2, self.stage_min), self.stage_max)
            depths = [hp.Int(f"stage{i + 2}", self.stage_min, self.stage_max, default=default_depth) for i in range(4)]
            values.update(arch="resnet18" if block == "basic" else "resnet50", stage_depths=depths)
        else:
            arch = hp.Choice("arch", list(self.imagenet_archs), default=self.imagenet_archs[0])
            values.update(arch=arch, stage_depths=None)
        default_width = 1.0 if 1.0 in self.widths else self.widths[0]
        values["width"] = hp.Choice("width", list(self.widths), default=default_width)
        values["shortcut"] = hp.Choice("shortcut", list(self.shortcut_choices), default=self.shortcut_choices[0])
        values["lr"] = _float(hp, "lr", self.lr_min, self.lr_max, 0.1)
        values["weight_decay"] = _float(hp, "weight_decay", self.wd_min, self.wd_max, 1e-4)
        return values

    def smallest(self) -> dict:
        """get_model's arguments of the cheapest candidate (for the budget check)."""
        if self.family == "cifar":
            return {"arch": f"resnet{6 * self.n_min + 2}", "stage_depths": None}
        if self.free_depths:
            return {"arch": "resnet18", "stage_depths": [self.stage_min] * 4}
        return {"arch": min(self.imagenet_archs, key=IMAGENET_ARCHS.index), "stage_depths": None}


def _float(hp, name, low, high, default):
    if low == high:
        return hp.Fixed(name, low)
    return hp.Float(name, low, high, sampling="log", default=min(max(default, low), high))


# ------------------------------------------------------------------ tuner
def make_hypermodel(space: Space, *, num_classes, image_size, seed, max_params=None, max_flops=None):
    class ResNetHyperModel(kt.HyperModel):
        """Samples the space and calls resnet_keras.get_model; nothing else."""

        def build(self, hp):
            values = space.sample(hp)
            model = resnet_keras.get_model(
                values["arch"],
                num_classes=num_classes,
                input_shape=(image_size, image_size, 3),
                shortcut=values["shortcut"],
                width=values["width"],
                stage_depths=values["stage_depths"],
                seed=seed,
            )
            self.last_cost = cost(model)
            over = over_budget(self.last_cost, max_params, max_flops)
            if over:
                raise kt.errors.FailedTrialError(f"rejected before training: {over}")
            return model

    return ResNetHyperModel()


def cost(model) -> dict:
    return {"params": resnet_keras.count_params(model, trainable_only=True), "flops": resnet_keras.count_flops(model)}


def over_budget(c, max_params, max_flops) -> str | None:
    if max_params is not None and c["params"] > max_params:
        return f"{c['params']:,} parameters > --max-params {max_params:,.0f}"
    if max_flops is not None and c["flops"] > max_flops:
        return f"{c['flops']:,} FLOPs > --max-flops {max_flops:,.0f}"
    return None


class _TrainThroughFit:
    """Mixed into a Keras Tuner class by :func:`make_tuner`: each trial trains
    through :func:`trainers.core.train.train` (``base_config`` with the trial's
    network, recipe values, epochs and run directory, under ``run_strategy``),
    and its outcome is written to the trial's result.json."""

    base_config: RunConfig
    run_strategy: object
    default_epochs: float

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        trial_dir = pathlib.Path(self.get_trial_dir(trial.trial_id))
        sampled = {k: v for k, v in hp.values.items() if not k.startswith("tuner/")}
        record = {"trial": trial.trial_id, "values": sampled}
        started = time.time()
        try:
            with self.distribution_strategy.scope():
                model = self.hypermodel.build(hp)
        except kt.errors.FailedTrialError as error:
            result = {**self.hypermodel.last_cost, "status": "rejected", "reason": str(error)}
            write_json_atomic(trial_dir / "result.json", {**record, **result})
            print(f"trial {trial.trial_id}: {sampled} -> {error}", flush=True)
            raise
        trial_epochs = hp.values.get("tuner/epochs", self.default_epochs)
        config = dataclasses.replace(
            self.base_config,
            **space_values(hp, self.hypermodel),
            epochs=trial_epochs,
            output_dir=str(trial_dir / "run"),
            verbose=0,
        )
        ran = {"epochs": trial_epochs}
        try:
            result = trainer.train(config, model=model, strategy=self.run_strategy)
        except trainer.TrainingError as error:
            # A candidate that diverges (a non-finite loss, validation figure, weight or BN statistic) is a result
            # of the search: recorded as failed with its reason, and the search goes on.
            reason = str(error).split(";")[0]
            ran.update(status="failed", reason=reason, seconds=time.time() - started, run_dir=str(trial_dir / "run"))
            write_json_atomic(trial_dir / "result.json", {**record, **cost(model), **ran})
            print(f"trial {trial.trial_id}: {sampled} -> failed: {reason}", flush=True)
            raise kt.errors.FailedTrialError(reason) from None
        except UserError as error:
            # Anything else the trainer refuses (SIGTERM's Preempted, a write that failed, unreadable data, a
            # locked directory) ends the search, as it would end fit.py: Keras Tuner would otherwise count it as
            # one invalid trial and start the next. FatalError is the one exception it lets through; _search
            # re-raises the trainer's own error from it.
            stop = kt.errors.FatalError(str(error))
            stop.error = error
            raise stop from None
        accuracy = result["best_val_accuracy"]
        ran.update(status="completed", val_accuracy=accuracy, seconds=time.time() - started, run_dir=result["run_dir"])
        write_json_atomic(trial_dir / "result.json", {**record, **cost(model), **ran})
        print(f"trial {trial.trial_id}: {sampled} -> validation accuracy {accuracy:.4f}", flush=True)
        return {"val_accuracy": accuracy}


def make_tuner(kind, hypermodel, *, base_config, strategy, directory, project, max_trials, max_epochs, seed, epochs):
    """A Keras Tuner of ``kind`` whose trials train through trainers.core.train.train:
    ``base_config`` (a :class:`RunConfig`) with each trial's network, recipe
    values, epochs and run directory."""
    common = dict(
        hypermodel=hypermodel,
        objective=kt.Objective("val_accuracy", "max"),
        directory=str(directory),
        project_name=project,
        overwrite=False,
        seed=seed,
        distribution_strategy=strategy,
        max_consecutive_failed_trials=100,
    )
    if kind == "random":
        cls, extra = kt.RandomSearch, {"max_trials": max_trials}
    elif kind == "bayesian":
        cls, extra = kt.BayesianOptimization, {"max_trials": max_trials}
    else:
        cls, extra = kt.Hyperband, {"max_epochs": max_epochs, "factor": 3, "hyperband_iterations": 1}
    settings = {"base_config": base_config, "run_strategy": strategy, "default_epochs": epochs}
    tuner_cls = type(f"{cls.__name__}ThroughFit", (_TrainThroughFit, cls), settings)
    make_keras_tuner_saves_atomic()  # a killed search must leave oracle.json whole
    quiet_keras_tuner_failed_trials()  # run_trial prints one line for a rejected or failed trial, not a traceback
    try:
        return tuner_cls(**common, **extra)
    except json.JSONDecodeError as error:
        raise UserError(
            f"the saved search state under {pathlib.Path(directory) / project} is unreadable ({error}); "
            "it cannot be resumed: remove that directory or choose another --directory"
        ) from None


def space_values(hp, hypermodel):
    """The sampled get_model arguments and recipe values of ``hp`` (again:
    sampling is deterministic for given values)."""
    return {k: v for k, v in hypermodel_space(hypermodel).sample(hp).items()}


def hypermodel_space(hypermodel):
    return hypermodel.space


# ------------------------------------------------------------------ results
COLUMNS = (
    "trial",
    "status",
    "arch",
    "stage_depths",
    "width",
    "shortcut",
    "lr",
    "weight_decay",
    "epochs",
    "params",
    "flops",
    "val_accuracy",
    "seconds",
    "reason",
)


def collect(search_dir: pathlib.Path, space: Space, hypermodel) -> list[dict]:
    rows = []
    for path in sorted(search_dir.glob("trial_*/result.json")):
        r = json.loads(path.read_text())
        hp = kt.HyperParameters()
        for key, value in r["values"].items():
            hp.Fixed(key, value)
        sampled = space.sample(hp)
        rows.append(
            {
                "trial": r["trial"],
                "status": r["status"],
                "arch": sampled["arch"],
                "stage_depths": "-".join(map(str, sampled["stage_depths"])) if sampled["stage_depths"] else "",
                "width": sampled["width"],
                "shortcut": sampled["shortcut"],
                "lr": sampled["lr"],
                "weight_decay": sampled["weight_decay"],
                "epochs": r.get("epochs"),
                "params": r.get("params"),
                "flops": r.get("flops"),
                "val_accuracy": r.get("val_accuracy"),
                "seconds": r.get("seconds"),
                "reason": r.get("reason", ""),
            }
        )
    return rows


def pareto_front(rows) -> set:
    done = [r for r in rows if r["status"] == "completed" and r["val_accuracy"] is not None]
    front = set()
    for r in done:
        dominated = any(
            o["flops"] <= r["flops"]
            and o["val_accuracy"] >= r["val_accuracy"]
            and (o["flops"] < r["flops"] or o["val_accuracy"] > r["val_accuracy"])
            for o in done
        )
        if not dominated:
            front.add(r["trial"])
    return front


def write_results(search_dir: pathlib.Path, rows, title):
    # Here, not at the top: only the result files need matplotlib, and its backend is chosen before pyplot loads.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(search_dir / "trials.csv", buffer.getvalue())
    done = [r for r in rows if r["status"] == "completed" and r["val_accuracy"] is not None]
    best = max(done, key=lambda r: r["val_accuracy"]) if done else None
    write_json_atomic(search_dir / "best.json", {"best": best, "trials": len(rows), "completed": len(done)})

    front = pareto_front(rows)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for r in done:
        on = r["trial"] in front
        ax.scatter(
            r["flops"] / 1e6,
            100 * (1 - r["val_accuracy"]),
            s=40 if on else 20,
            color="C3" if on else "C0",
            zorder=3 if on else 2,
        )
        ax.annotate(
            f"{r['arch']} w{r['width']:g} {r['shortcut']}",
            (r["flops"] / 1e6, 100 * (1 - r["val_accuracy"])),
            fontsize=6,
            xytext=(3, 3),
            textcoords="offset points",
        )
    pts = sorted((r["flops"] / 1e6, 100 * (1 - r["val_accuracy"])) for r in done if r["trial"] in front)
    if pts:
        ax.plot(*zip(*pts), color="C3", lw=1, label="Pareto front")
        ax.legend()
    ax.set_xscale("log")
    # Plain numbers on the log axis: the default minor labels (3x10^0 ...) overlap.
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("FLOPs (millions of multiply-adds per image)")
    ax.set_ylabel("validation error (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure_atomic(fig, search_dir / "pareto.png")
    return best, front


def render(rows, front) -> str:
    header = ["trial", "status", "network", "width", "sc", "lr", "wd", "ep", "params", "MFLOPs", "val acc", "s"]
    body = []
    for r in rows:
        body.append(
            [
                r["trial"] + ("*" if r["trial"] in front else ""),
                r["status"],
                r["arch"] + (f"[{r['stage_depths']}]" if r["stage_depths"] else ""),
                f"{r['width']:g}",
                r["shortcut"],
                f"{r['lr']:.3g}",
                f"{r['weight_decay']:.2g}",
                str(r["epochs"] or ""),
                f"{r['params']:,}" if r["params"] else "",
                f"{r['flops'] / 1e6:.1f}" if r["flops"] else "",
                f"{100 * r['val_accuracy']:.2f}%" if r["val_accuracy"] is not None else "n/a",
                f"{r['seconds']:.0f}" if r["seconds"] else "",
            ]
        )
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(x, widths)) for x in [header, *body]]
    # Why a trial has no validation accuracy: rejected by the budget before training, or diverged.
    for r in rows:
        if r["status"] != "completed" and r["reason"]:
            reason = r["reason"] if r["reason"].startswith(r["status"]) else f"{r['status']}: {r['reason']}"
            lines.append(f"trial {r['trial']}: {reason}")
    if front:
        lines.append("* on the Pareto front of validation error against FLOPs")
    else:
        lines.append("no completed trial: no Pareto front, no best configuration")
    return "\n".join(lines)


# ------------------------------------------------------------------ search
VAL_SPLIT = 0.1  # the trials' validation split: the objective is never the test split
TRIAL_BACKUP_EVERY = 1000  # trials are short: a backup every 1000 iterations


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """How a search runs: the tuner and its trials, the budget a candidate
    must fit, the search directory, and the retraining of the best."""

    tuner: str = "random"
    max_trials: int = 10  # random and bayesian
    max_epochs: int = 9  # hyperband: the most epochs a trial trains
    epochs: float = 2  # epochs per trial, random and bayesian
    max_params: float | None = None  # candidates with more learned parameters are rejected before training
    max_flops: float | None = None  # ... or with more multiply-adds per image
    directory: str | None = None  # None: saved_models/tune-<family>-<dataset>-<tuner>
    export_best: bool = False  # then retrain the best configuration on the full training split
    export_epochs: float | None = None  # None: the recipe's length

    def __post_init__(self):
        if self.tuner not in TUNERS:
            raise UserError(f"--tuner {self.tuner!r}; expected one of {', '.join(TUNERS)}")
        if self.max_trials < 1 or self.max_epochs < 1 or not (math.isfinite(self.epochs) and self.epochs > 0):
            raise UserError("--max-trials, --max-epochs and --epochs must be positive (and finite)")
        if self.export_epochs is not None and not (math.isfinite(self.export_epochs) and self.export_epochs > 0):
            raise UserError(f"--export-epochs {self.export_epochs}; expected a positive number of epochs")
        for flag, value in (("--max-params", self.max_params), ("--max-flops", self.max_flops)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UserError(f"{flag} {value:g}; expected a positive budget")


def base_config(space: Space, **settings) -> RunConfig:
    """The settings every trial trains with (``settings``: RunConfig's, by
    name; None is the default), resolved: the trials replace its network
    (the space's smallest until then), width, shortcut, learning rate, weight
    decay, epochs and run directory."""
    smallest = space.smallest()
    spec = resnet_keras.resolve_spec(smallest["arch"])
    image_size = settings.get("image_size")
    if image_size is None:
        image_size = spec.default_input_shape[0]
    if image_size < spec.total_stride:
        raise UserError(
            f"--image-size {image_size} is too small for the {space.family} networks: their total stride "
            f"is {spec.total_stride}"
        )
    val_split = VAL_SPLIT if settings.get("val_split") is None else settings["val_split"]
    if not 0 < val_split < 1:
        raise UserError(f"--val-split {val_split}: the search needs a validation split carved from training, in (0, 1)")
    settings = {**settings, "image_size": image_size, "val_split": val_split, "backup_every": TRIAL_BACKUP_EVERY}
    return RunConfig.from_dict({**settings, **smallest}).resolved()


def search(space: Space, base: RunConfig, settings: SearchSettings) -> dict:
    """Runs (or resumes) the search; returns its directory, the table's rows,
    the best row, and with ``export_best`` the retraining's metrics."""
    with global_dtype_policy():  # the search sets --precision's policy globally: put it back after
        return _search_in_policy(space, base, settings)


def _search_in_policy(space: Space, base: RunConfig, settings: SearchSettings) -> dict:
    info = data_lib.describe(
        base.dataset,
        data_dir=base.data_dir,
        family=space.family,
        image_size=base.image_size,
        val_split=base.val_split,
        seed=base.seed,
        synthetic_classes=base.synthetic_classes,
        synthetic_train=base.synthetic_train,
        synthetic_test=base.synthetic_test,
        skip_bad_images=base.skip_bad_images,
        max_bad_fraction=base.max_bad_fraction,
    )
    policy, _ = resolve_precision(base.precision)
    keras.config.set_dtype_policy(policy)  # before the tuner builds any model
    strategy = make_strategy(base.strategy)

    smallest = space.smallest()
    probe = resnet_keras.get_model(
        smallest["arch"],
        num_classes=info.num_classes,
        input_shape=(base.image_size, base.image_size, 3),
        width=min(space.widths),
        stage_depths=smallest["stage_depths"],
    )
    over = over_budget(cost(probe), settings.max_params, settings.max_flops)
    if over:
        raise UserError(
            f"no candidate fits the budget: even the smallest ({smallest['arch']}, width "
            f"{min(space.widths)}) has {over}"
        )

    name = f"tune-{space.family}-{trainer.dataset_slug(base.dataset)}-{settings.tuner}"
    directory = pathlib.Path(settings.directory or trainer.runs_root() / name)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_failed(directory, error) from None
    # One search per directory: a second tune.py on it stops at once.
    with runlock.acquire(directory, what="search directory", hint="wait for it to end or choose another --directory"):
        return _search(space, base, settings, directory, info, strategy)


def _search(space, base, settings, directory, info, strategy):
    spec = {
        "space": dataclasses.asdict(space),
        "tuner": settings.tuner,
        "dataset": base.dataset,
        "image_size": base.image_size,
        "val_split": base.val_split,
        "epochs": settings.epochs,
        "max_epochs": settings.max_epochs,
        "seed": base.seed,
        "max_params": settings.max_params,
        "max_flops": settings.max_flops,
    }
    if base.class_balance:  # only where set: a search directory written before the setting still resumes
        spec["class_balance"] = base.class_balance
    spec_path = directory / "search.json"
    if spec_path.exists() and read_json(spec_path, "search settings") != json.loads(json.dumps(spec)):
        raise UserError(
            f"{directory} holds a search with other settings; rerun the same command to resume it, "
            "or choose another --directory"
        )
    write_json_atomic(spec_path, spec)

    hypermodel = make_hypermodel(
        space,
        num_classes=info.num_classes,
        image_size=base.image_size,
        seed=base.seed,
        max_params=settings.max_params,
        max_flops=settings.max_flops,
    )
    hypermodel.space = space
    tuner = make_tuner(
        settings.tuner,
        hypermodel,
        base_config=base,
        strategy=strategy,
        directory=directory,
        project="trials",
        max_trials=settings.max_trials,
        max_epochs=settings.max_epochs,
        seed=base.seed,
        epochs=settings.epochs,
    )
    try:
        tuner.search(verbose=0)
    except kt.errors.FatalError as stop:
        if isinstance(getattr(stop, "error", None), UserError):
            raise stop.error from None  # e.g. SIGTERM: exit 75, and the same command resumes the same trial
        raise

    search_dir = directory / "trials"
    rows = collect(search_dir, space, hypermodel)
    title = f"{settings.tuner} search, {space.family} networks on {base.dataset}" + (
        " (SYNTHETIC DATA)" if info.synthetic else ""
    )
    best, front = write_results(directory, rows, title)
    print(render(rows, front))
    print(f"written: {directory}/trials.csv, best.json, pareto.png")
    result = {"directory": str(directory), "rows": rows, "best": best}
    if settings.export_best:
        if best is None:
            raise UserError("no completed trial to retrain")
        stage_depths = [int(d) for d in best["stage_depths"].split("-")] if best["stage_depths"] else None
        config = dataclasses.replace(
            base,
            arch=best["arch"],
            width=best["width"],
            shortcut=best["shortcut"],
            lr=best["lr"],
            weight_decay=best["weight_decay"],
            val_split=0.0,
            stage_depths=stage_depths,
            epochs=settings.export_epochs,
        )
        result["export"] = trainer.train(config)
    return result
