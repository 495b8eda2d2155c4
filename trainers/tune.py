"""Keras Tuner search over depth, width, shortcut, learning rate and weight decay.

    python trainers/tune.py --family cifar --tuner random --max-trials 6 --epochs 2 --data-dir ../shared/tensorflow_datasets
    python trainers/tune.py --family cifar --tuner hyperband --max-epochs 4 --n-min 3 --n-max 9 --width 0.5 1.0
    python trainers/tune.py --family imagenet --tuner bayesian --max-trials 10 --max-flops 2e9 --dataset synthetic --image-size 64

The hypermodel only samples: its ``build(hp)`` picks a depth and width and calls
``resnet_keras.get_model``. Every trial trains through ``trainers.core.train.train``,
the code behind ``fit.py`` (same data pipeline, recipe, precision, strategy), on
the training split less a validation split (``--val-split``, default 0.1); the
objective is the best validation accuracy, never the test split. Candidates over
``--max-params`` or ``--max-flops`` are rejected before training. Started again
with the same command and directory, a search continues where it stopped.

Results in the search directory (default saved_models/tune-<family>-<dataset>-<tuner>/):
trials.csv, best.json, pareto.png (validation error against FLOPs, the Pareto
front marked), and a run directory per trial.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import pathlib
import sys
import time

from trainers.core.common import PRECISIONS, STRATEGIES, UserError, run_main, split_cpu, write_json_atomic, read_json  # noqa: E402
from trainers.core.common import global_dtype_policy, save_figure_atomic, write_failed, write_text_atomic  # noqa: E402
from trainers.core import runlock  # noqa: E402
from trainers.core.compat import make_keras_tuner_saves_atomic, quiet_keras_tuner_failed_trials  # noqa: E402

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
        for name, low, high in (("n", self.n_min, self.n_max), ("stage", self.stage_min, self.stage_max),
                                ("lr", self.lr_min, self.lr_max), ("wd", self.wd_min, self.wd_max)):  # fmt: skip
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
            depths = [hp.Int(f"stage{i + 2}", self.stage_min, self.stage_max, default=min(max(2, self.stage_min), self.stage_max))
                      for i in range(4)]  # fmt: skip
            values.update(arch="resnet18" if block == "basic" else "resnet50", stage_depths=depths)
        else:
            values.update(arch=hp.Choice("arch", list(self.imagenet_archs), default=self.imagenet_archs[0]), stage_depths=None)
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
    import keras_tuner as kt

    import resnet_keras

    class ResNetHyperModel(kt.HyperModel):
        """Samples the space and calls resnet_keras.get_model; nothing else."""

        def build(self, hp):
            values = space.sample(hp)
            model = resnet_keras.get_model(
                values["arch"], num_classes=num_classes, input_shape=(image_size, image_size, 3),
                shortcut=values["shortcut"], width=values["width"], stage_depths=values["stage_depths"], seed=seed,
            )  # fmt: skip
            self.last_cost = cost(model)
            over = over_budget(self.last_cost, max_params, max_flops)
            if over:
                raise kt.errors.FailedTrialError(f"rejected before training: {over}")
            return model

    return ResNetHyperModel()


def cost(model) -> dict:
    import resnet_keras

    return {"params": resnet_keras.count_params(model, trainable_only=True), "flops": resnet_keras.count_flops(model)}


def over_budget(c, max_params, max_flops) -> str | None:
    if max_params is not None and c["params"] > max_params:
        return f"{c['params']:,} parameters > --max-params {max_params:,.0f}"
    if max_flops is not None and c["flops"] > max_flops:
        return f"{c['flops']:,} FLOPs > --max-flops {max_flops:,.0f}"
    return None


def make_tuner(kind, hypermodel, *, base_config, strategy, directory, project, max_trials, max_epochs, seed, epochs):
    """A Keras Tuner whose trials train through trainers.core.train.train."""
    import keras_tuner as kt

    from trainers.core.train import TrainingError, train

    class TrainThroughFit:
        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            trial_dir = pathlib.Path(self.get_trial_dir(trial.trial_id))
            record = {"trial": trial.trial_id, "values": {k: v for k, v in hp.values.items() if not k.startswith("tuner/")}}
            started = time.time()
            try:
                with self.distribution_strategy.scope():
                    model = self.hypermodel.build(hp)
            except kt.errors.FailedTrialError as error:
                write_json_atomic(trial_dir / "result.json", {**record, **self.hypermodel.last_cost, "status": "rejected",
                                                              "reason": str(error)})  # fmt: skip
                print(f"trial {trial.trial_id}: {record['values']} -> {error}", flush=True)
                raise
            values = space_values(hp, hypermodel)
            trial_epochs = hp.values.get("tuner/epochs", epochs)
            config = {**base_config, **values, "epochs": trial_epochs, "output_dir": str(trial_dir / "run"), "verbose": 0}
            try:
                result = train(config, model=model, strategy=strategy)
            except TrainingError as error:
                # A candidate that diverges (a non-finite loss, validation figure, weight or BN statistic) is a result
                # of the search: recorded as failed with its reason, and the search goes on.
                reason = str(error).split(";")[0]
                write_json_atomic(trial_dir / "result.json", {
                    **record, **cost(model), "status": "failed", "epochs": trial_epochs, "reason": reason,
                    "seconds": time.time() - started, "run_dir": str(trial_dir / "run"),
                })  # fmt: skip
                print(f"trial {trial.trial_id}: {record['values']} -> failed: {reason}", flush=True)
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
            write_json_atomic(trial_dir / "result.json", {
                **record, **cost(model), "status": "completed", "epochs": trial_epochs, "val_accuracy": accuracy,
                "seconds": time.time() - started, "run_dir": result["run_dir"],
            })  # fmt: skip
            print(f"trial {trial.trial_id}: {record['values']} -> validation accuracy {accuracy:.4f}", flush=True)
            return {"val_accuracy": accuracy}

    common = dict(
        hypermodel=hypermodel, objective=kt.Objective("val_accuracy", "max"), directory=str(directory),
        project_name=project, overwrite=False, seed=seed, distribution_strategy=strategy,
        max_consecutive_failed_trials=100,
    )  # fmt: skip
    if kind == "random":
        cls, extra = kt.RandomSearch, {"max_trials": max_trials}
    elif kind == "bayesian":
        cls, extra = kt.BayesianOptimization, {"max_trials": max_trials}
    else:
        cls, extra = kt.Hyperband, {"max_epochs": max_epochs, "factor": 3, "hyperband_iterations": 1}
    tuner_cls = type(f"{cls.__name__}ThroughFit", (TrainThroughFit, cls), {})
    make_keras_tuner_saves_atomic()  # a killed search must leave oracle.json whole
    quiet_keras_tuner_failed_trials()  # run_trial prints one line for a rejected or failed trial, not a traceback
    try:
        return tuner_cls(**common, **extra)
    except json.JSONDecodeError as error:
        raise UserError(f"the saved search state under {pathlib.Path(directory) / project} is unreadable ({error}); "
                        "it cannot be resumed: remove that directory or choose another --directory") from None


def space_values(hp, hypermodel):
    """The sampled get_model arguments and recipe values of ``hp`` (again:
    sampling is deterministic for given values)."""
    return {k: v for k, v in hypermodel_space(hypermodel).sample(hp).items()}


def hypermodel_space(hypermodel):
    return hypermodel.space


# ------------------------------------------------------------------ results
COLUMNS = ("trial", "status", "arch", "stage_depths", "width", "shortcut", "lr", "weight_decay", "epochs", "params",
           "flops", "val_accuracy", "seconds", "reason")  # fmt: skip


def collect(search_dir: pathlib.Path, space: Space, hypermodel) -> list[dict]:
    import keras_tuner as kt

    rows = []
    for path in sorted(search_dir.glob("trial_*/result.json")):
        r = json.loads(path.read_text())
        hp = kt.HyperParameters()
        for key, value in r["values"].items():
            hp.Fixed(key, value)
        sampled = space.sample(hp)
        rows.append({
            "trial": r["trial"], "status": r["status"], "arch": sampled["arch"],
            "stage_depths": "-".join(map(str, sampled["stage_depths"])) if sampled["stage_depths"] else "",
            "width": sampled["width"], "shortcut": sampled["shortcut"], "lr": sampled["lr"],
            "weight_decay": sampled["weight_decay"], "epochs": r.get("epochs"), "params": r.get("params"),
            "flops": r.get("flops"), "val_accuracy": r.get("val_accuracy"), "seconds": r.get("seconds"),
            "reason": r.get("reason", ""),
        })  # fmt: skip
    return rows


def pareto_front(rows) -> set:
    done = [r for r in rows if r["status"] == "completed" and r["val_accuracy"] is not None]
    front = set()
    for r in done:
        dominated = any(
            o["flops"] <= r["flops"] and o["val_accuracy"] >= r["val_accuracy"]
            and (o["flops"] < r["flops"] or o["val_accuracy"] > r["val_accuracy"])
            for o in done
        )  # fmt: skip
        if not dominated:
            front.add(r["trial"])
    return front


def write_results(search_dir: pathlib.Path, rows, title):
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
        ax.scatter(r["flops"] / 1e6, 100 * (1 - r["val_accuracy"]), s=40 if on else 20, color="C3" if on else "C0",
                   zorder=3 if on else 2)  # fmt: skip
        ax.annotate(f"{r['arch']} w{r['width']:g} {r['shortcut']}", (r["flops"] / 1e6, 100 * (1 - r["val_accuracy"])),
                    fontsize=6, xytext=(3, 3), textcoords="offset points")  # fmt: skip
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
        body.append([
            r["trial"] + ("*" if r["trial"] in front else ""), r["status"],
            r["arch"] + (f"[{r['stage_depths']}]" if r["stage_depths"] else ""), f"{r['width']:g}", r["shortcut"],
            f"{r['lr']:.3g}", f"{r['weight_decay']:.2g}", str(r["epochs"] or ""),
            f"{r['params']:,}" if r["params"] else "", f"{r['flops'] / 1e6:.1f}" if r["flops"] else "",
            f"{100 * r['val_accuracy']:.2f}%" if r["val_accuracy"] is not None else "n/a",
            f"{r['seconds']:.0f}" if r["seconds"] else "",
        ])  # fmt: skip
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


# -------------------------------------------------------------------- main
def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", required=True, help="cifar (6n+2 networks) or imagenet (stage depths)")
    p.add_argument("--tuner", default="random", help=f"one of {', '.join(TUNERS)} (default random)")
    p.add_argument("--max-trials", type=int, default=10, help="trials of random and bayesian search (default 10)")
    p.add_argument("--max-epochs", type=int, default=9, help="hyperband: most epochs a trial trains (default 9)")
    p.add_argument("--epochs", type=float, default=2, help="epochs per trial, random and bayesian (default 2)")
    p.add_argument("--n-min", type=int, default=3, help="cifar: smallest n of 6n+2 (default 3, ResNet-20)")
    p.add_argument("--n-max", type=int, default=18, help="cifar: largest n of 6n+2 (default 18, ResNet-110)")
    p.add_argument("--arch", nargs="+", default=list(IMAGENET_ARCHS), help="imagenet: the paper's networks to choose from")
    p.add_argument("--free-depths", action="store_true", help="imagenet: any blocks per stage instead of the paper's")
    p.add_argument("--stage-min", type=int, default=1, help="imagenet --free-depths: fewest blocks per stage")
    p.add_argument("--stage-max", type=int, default=8, help="imagenet --free-depths: most blocks per stage")
    p.add_argument("--width", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.5, 2.0], help="width multipliers")
    p.add_argument("--shortcut", nargs="+", help="shortcut options to try (default all, the paper's first)")
    p.add_argument("--lr-min", type=float, default=0.01)
    p.add_argument("--lr-max", type=float, default=0.3, help="learning rate range, log-uniform (default 0.01-0.3)")
    p.add_argument("--wd-min", type=float, default=1e-5)
    p.add_argument("--wd-max", type=float, default=1e-3, help="weight decay range, log-uniform (default 1e-5-1e-3)")
    p.add_argument("--max-params", type=float, help="reject candidates with more learned parameters, before training")
    p.add_argument("--max-flops", type=float, help="reject candidates with more multiply-adds per image, before training")
    p.add_argument("--dataset", help="as fit.py (default cifar10 / imagenette/160px-v2; 'synthetic' needs no data)")
    p.add_argument("--data-dir", help="TFDS data dir (default $TFDS_DATA_DIR)")
    p.add_argument("--image-size", type=int, help="as fit.py")
    p.add_argument("--val-split", type=float, default=0.1, help="validation fraction of the training split (default 0.1)")
    p.add_argument("--batch-size", type=int, help="as fit.py")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--strategy", default="auto", choices=STRATEGIES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--directory", help="search directory (default saved_models/tune-<family>-<dataset>-<tuner>)")
    p.add_argument("--synthetic-train", type=int, default=4096, help="as fit.py")
    p.add_argument("--export-best", action="store_true",
                   help="then retrain the best configuration on the full training split with fit.py's recipe")
    p.add_argument("--export-epochs", type=float, help="epochs of that retraining (default: the recipe's)")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.family not in FAMILIES:
        raise UserError(f"--family {args.family!r}; expected one of {', '.join(FAMILIES)}")
    if args.tuner not in TUNERS:
        raise UserError(f"--tuner {args.tuner!r}; expected one of {', '.join(TUNERS)}")
    if args.max_trials < 1 or args.max_epochs < 1 or not (math.isfinite(args.epochs) and args.epochs > 0):
        raise UserError("--max-trials, --max-epochs and --epochs must be positive (and finite)")
    if args.export_epochs is not None and not (math.isfinite(args.export_epochs) and args.export_epochs > 0):
        raise UserError(f"--export-epochs {args.export_epochs}; expected a positive number of epochs")
    if not 0 <= args.seed < 2**32:
        raise UserError(f"--seed {args.seed}; expected an integer in [0, 2**32)")
    if args.synthetic_train < 1:
        raise UserError(f"--synthetic-train {args.synthetic_train}; expected an integer >= 1")
    for flag, value in (("--max-params", args.max_params), ("--max-flops", args.max_flops)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UserError(f"{flag} {value:g}; expected a positive budget")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}; expected a positive integer")
    if not 0 < args.val_split < 1:
        raise UserError(f"--val-split {args.val_split}: the search needs a validation split carved from training, in (0, 1)")
    space = Space(
        family=args.family, n_min=args.n_min, n_max=args.n_max, imagenet_archs=tuple(args.arch),
        free_depths=args.free_depths, stage_min=args.stage_min, stage_max=args.stage_max,
        widths=tuple(args.width), shortcuts=tuple(args.shortcut) if args.shortcut else None,
        lr_min=args.lr_min, lr_max=args.lr_max, wd_min=args.wd_min, wd_max=args.wd_max,
    )  # fmt: skip
    with global_dtype_policy():  # search sets --precision's policy globally: put it back after
        return search(space, args)


def search(space: Space, args) -> dict:
    import keras

    import resnet_keras
    from trainers.core import data as data_lib
    from trainers.core.common import resolve_precision
    from trainers.core.distributed import make_strategy
    from trainers.core.train import DEFAULT_DATASET, dataset_slug, runs_root

    dataset = args.dataset or DEFAULT_DATASET[space.family]
    image_size = {"cifar": 32, "imagenet": 224}[space.family] if args.image_size is None else args.image_size
    smallest = space.smallest()
    stride = resnet_keras.resolve_spec(smallest["arch"]).total_stride
    if image_size < stride:
        raise UserError(f"--image-size {image_size} is too small for the {space.family} networks: their total stride "
                        f"is {stride}")  # fmt: skip
    info = data_lib.describe(dataset, data_dir=args.data_dir, family=space.family, image_size=image_size,
                             val_split=args.val_split, seed=args.seed, synthetic_train=args.synthetic_train)  # fmt: skip
    policy, _ = resolve_precision(args.precision)
    keras.config.set_dtype_policy(policy)  # before the tuner builds any model
    strategy = make_strategy(args.strategy)

    probe = resnet_keras.get_model(smallest["arch"], num_classes=info.num_classes, input_shape=(image_size, image_size, 3),
                                   width=min(space.widths), stage_depths=smallest["stage_depths"])  # fmt: skip
    over = over_budget(cost(probe), args.max_params, args.max_flops)
    if over:
        raise UserError(f"no candidate fits the budget: even the smallest ({smallest['arch']}, width "
                        f"{min(space.widths)}) has {over}")  # fmt: skip

    directory = pathlib.Path(args.directory or runs_root() / f"tune-{space.family}-{dataset_slug(dataset)}-{args.tuner}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_failed(directory, error) from None
    # One search per directory: a second tune.py on it stops at once.
    with runlock.acquire(directory, what="search directory", hint="wait for it to end or choose another --directory"):
        return _search(args, directory, space, dataset, image_size, info, strategy)


def _search(args, directory, space, dataset, image_size, info, strategy):
    import keras_tuner as kt

    from trainers.core.train import train

    spec = {"space": dataclasses.asdict(space), "tuner": args.tuner, "dataset": dataset, "image_size": image_size,
            "val_split": args.val_split, "epochs": args.epochs, "max_epochs": args.max_epochs, "seed": args.seed,
            "max_params": args.max_params, "max_flops": args.max_flops}  # fmt: skip
    spec_path = directory / "search.json"
    if spec_path.exists() and read_json(spec_path, "search settings") != json.loads(json.dumps(spec)):
        raise UserError(f"{directory} holds a search with other settings; rerun the same command to resume it, "
                        "or choose another --directory")  # fmt: skip
    write_json_atomic(spec_path, spec)

    base_config = {"dataset": dataset, "data_dir": args.data_dir, "image_size": image_size, "val_split": args.val_split,
                   "batch_size": args.batch_size, "precision": args.precision, "strategy": args.strategy,
                   "seed": args.seed, "synthetic_train": args.synthetic_train, "backup_every": 1000}  # fmt: skip
    hypermodel = make_hypermodel(space, num_classes=info.num_classes, image_size=image_size, seed=args.seed,
                                 max_params=args.max_params, max_flops=args.max_flops)  # fmt: skip
    hypermodel.space = space
    tuner = make_tuner(args.tuner, hypermodel, base_config=base_config, strategy=strategy, directory=directory,
                       project="trials", max_trials=args.max_trials, max_epochs=args.max_epochs, seed=args.seed,
                       epochs=args.epochs)  # fmt: skip
    try:
        tuner.search(verbose=0)
    except kt.errors.FatalError as stop:
        if isinstance(getattr(stop, "error", None), UserError):
            raise stop.error from None  # e.g. SIGTERM: exit 75, and the same command resumes the same trial
        raise

    search_dir = directory / "trials"
    rows = collect(search_dir, space, hypermodel)
    title = f"{args.tuner} search, {space.family} networks on {dataset}" + (" (SYNTHETIC DATA)" if info.synthetic else "")
    best, front = write_results(directory, rows, title)
    print(render(rows, front))
    print(f"written: {directory}/trials.csv, best.json, pareto.png")
    result = {"directory": str(directory), "rows": rows, "best": best}
    if args.export_best:
        if best is None:
            raise UserError("no completed trial to retrain")
        config = {**base_config, "arch": best["arch"], "width": best["width"], "shortcut": best["shortcut"],
                  "lr": best["lr"], "weight_decay": best["weight_decay"], "val_split": 0.0,
                  "stage_depths": [int(d) for d in best["stage_depths"].split("-")] if best["stage_depths"] else None,
                  "epochs": args.export_epochs}  # fmt: skip
        result["export"] = train(config)
    return result


if __name__ == "__main__":
    run_main(main)
