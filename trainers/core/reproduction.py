"""The paper's findings on this project's networks, behind
``trainers/reproduce.py`` (whose docstring says what each figure and table
shows): Figure 4 and Figure 6 train plain and residual twins and draw their
curves, Table 6 lists the finished runs beside the paper's errors, Figure 7
draws the response statistics of trained runs."""

from __future__ import annotations

import collections
import json
import pathlib
import statistics

import resnet_keras
from trainers.core import data as data_lib
from trainers.core import responses
from trainers.core.errors import UserError
from trainers.core.evaluation import paired, paired_words
from trainers.core.files import read_csv_rows, runs_root, save_figure_atomic, write_csv_atomic, write_json_atomic
from trainers.core.sources import load_trained
from trainers.core.train import train


def _read_json(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path}: {error}") from None


def _run_model(run_dir: pathlib.Path):
    """(config, model) of a finished fit.py run directory."""
    config_path, model_path = run_dir / "config.json", run_dir / "model.keras"
    if not config_path.exists() or not model_path.exists():
        raise UserError(f"{run_dir} is not a finished fit.py run (it needs config.json and model.keras)")
    trained = load_trained(run_dir)
    return trained.config, trained.model


PAPER_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}  # Table 6, ResNets (%)
# akamaster/pytorch_resnet_cifar10 (PyTorch, option A, 200 epochs): its best epoch's test error (%).
AKAMASTER_BEST_ERROR = {20: 8.27, 32: 7.37, 44: 6.90, 56: 6.61, 110: 6.32, 1202: 6.18}


def _depths(text: str) -> list[int]:
    try:
        depths = [int(d) for d in text.split(",") if d.strip()]
    except ValueError:
        raise UserError(f"--depths {text!r}; expected comma-separated depths such as 20,32,44,56") from None
    bad = [d for d in depths if d < 8 or (d - 2) % 6]
    if not depths or bad:
        raise UserError(f"--depths {text!r}: CIFAR depths are 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...)")
    return depths


def figure6(
    *, depths, recipe, epochs, root, dataset, data_dir, precision, backup_every, seed, image_size, synthetic_train
) -> dict:
    """Trains plain-d and ResNet-d for each of ``depths`` (comma-separated) into
    ``root`` and draws figure6.png (see :mod:`trainers.reproduce`)."""
    depth_list = _depths(depths)
    asked = epochs
    epochs = asked if asked is not None else FIGURE6_EPOCHS[recipe]
    if not epochs > 0:
        raise UserError(f"--epochs {asked}; expected a positive number of epochs")
    suffix = "" if recipe == "paper" else f"-{recipe}"  # the paper's runs keep their earlier folder names
    root = root or runs_root() / "reproduce" / f"figure6-{dataset.replace('/', '_')}{suffix}-e{epochs:g}"
    common = {
        "dataset": dataset,
        "data_dir": data_dir,
        "epochs": epochs,
        "recipe": recipe,
        "precision": precision,
        "seed": seed,
        "verbose": 0,
        "synthetic_train": synthetic_train,
        "backup_every": backup_every,
    }
    if image_size:
        common["image_size"] = image_size
    runs = _train_runs([f"{kind}{depth}" for kind in ("plain", "resnet") for depth in depth_list], root, common)
    _plot_figure6(runs, root / "figure6.png", f"{dataset}, {recipe} recipe, {epochs:g} epochs")
    print(f"written: {root / 'figure6.png'}")
    return {"root": str(root), "recipe": recipe, "epochs": epochs, "runs": {arch: str(d) for arch, d in runs.items()}}


# figure6's length by recipe where --epochs is not given: the paper's 64k iterations of batch 128 (164 epochs of
# 50,000 images, its milestones at 82 and 123), or the fast recipe's own 30 epochs.
FIGURE6_EPOCHS = {"paper": 164.1, "fast": 30.0}
FIGURE4_ARCHS = ("resnet18", "resnet34", "plain18", "plain34")  # the residual ones first: they are reported alone too


def _train_runs(archs, root: pathlib.Path, common: dict) -> dict:
    """Trains each network into root/<arch> (finished runs skipped, unfinished
    ones resumed); returns {arch: run_dir}."""
    runs = {}
    for arch in archs:
        run_dir = root / arch
        runs[arch] = run_dir
        if (run_dir / "metrics.json").exists():
            _check_finished(run_dir, common)
            print(f"{arch}: finished, skipped ({run_dir})")
            continue
        print(f"{arch}: {'resuming' if (run_dir / 'config.json').exists() else 'training'} ({run_dir})", flush=True)
        train({**common, "arch": arch, "output_dir": str(run_dir)})
    return runs


def _check_finished(run_dir: pathlib.Path, common: dict) -> None:
    """A finished run is reused only if it was trained with the recipe and
    length asked for: a figure must not mix budgets. A run trained without
    --epochs (the recipe's own length) stands for the recipe's default."""
    if not (run_dir / "config.json").exists():  # not a fit.py run directory: nothing to compare with
        return
    config = _read_json(run_dir / "config.json")
    recipe, epochs = config.get("recipe"), config.get("epochs")
    wanted_recipe, wanted_epochs = common.get("recipe", "paper"), common.get("epochs")
    if recipe is None or (epochs is None and wanted_recipe == recipe and wanted_epochs == FIGURE6_EPOCHS.get(recipe)):
        return
    if recipe != wanted_recipe or (
        epochs is not None and wanted_epochs is not None and abs(float(epochs) - float(wanted_epochs)) > 1e-9
    ):
        ran = f"{recipe} recipe, {'its own length' if epochs is None else f'{float(epochs):g} epochs'}"
        raise UserError(
            f"{run_dir} is a finished run of the {ran}; this figure asks for the {wanted_recipe} recipe, "
            f"{float(wanted_epochs):g} epochs: choose another --root"
        )


def figure4(
    *, recipe, epochs, image_size, root, dataset, data_dir, precision, backup_every, seed, synthetic_train
) -> dict:
    """Trains plain-18/34 and ResNet-18/34 into ``root``, judges the paper's
    Figure 4 findings and draws figure4.png (see :mod:`trainers.reproduce`)."""
    root = root or runs_root() / "reproduce" / (
        f"figure4-{dataset.replace('/', '_')}-{recipe}-{image_size}px-e{epochs:g}"
    )
    common = {
        "dataset": dataset,
        "data_dir": data_dir,
        "epochs": epochs,
        "recipe": recipe,
        "image_size": image_size,
        "precision": precision,
        "seed": seed,
        "verbose": 0,
        "synthetic_train": synthetic_train,
        "backup_every": backup_every,
    }
    runs = _train_runs(FIGURE4_ARCHS, root, common)
    summary = {}
    for arch, run_dir in runs.items():
        rows = read_csv_rows(run_dir / "history.csv")
        if not rows:
            raise UserError(f"{run_dir} has no history.csv rows")
        summary[arch] = {
            "epochs": len(rows),
            "train_error": float(rows[-1]["error"]),
            "val_error": float(rows[-1]["test_error"]),
            "best_val_error": min(float(r["test_error"]) for r in rows),
        }
    num_val = _num_evaluated(runs["resnet18"])
    result = {
        "root": str(root),
        "recipe": recipe,
        "image_size": image_size,
        "epochs": epochs,
        "dataset": dataset,
        "runs": summary,
        "plain34_worse_than_plain18": summary["plain34"]["val_error"] > summary["plain18"]["val_error"],
        "plain34_trains_worse_than_plain18": summary["plain34"]["train_error"] > summary["plain18"]["train_error"],
        "resnet34_better_than_resnet18": summary["resnet34"]["val_error"] < summary["resnet18"]["val_error"],
        "validation_images": num_val,
        "margins": {
            f"{deep}_vs_{shallow}": _margin(summary[shallow]["val_error"], summary[deep]["val_error"], num_val)
            for shallow, deep in (("plain18", "plain34"), ("resnet18", "resnet34"))
        },
    }
    for shallow, deep in (("plain18", "plain34"), ("resnet18", "resnet34")):
        result["margins"][f"{deep}_vs_{shallow}"].update(_paired(runs[shallow], runs[deep], data_dir))
    _plot_figure4(runs, root / "figure4.png", f"{dataset}, {recipe} recipe, {image_size}px")
    write_json_atomic(root / "figure4.json", result)
    print(f"{'network':10s} {'epochs':>6s} {'train err':>9s} {'val err':>8s} {'best val':>8s}")
    for arch, r in summary.items():
        print(
            f"{arch:10s} {r['epochs']:6d} {100 * r['train_error']:8.2f}% {100 * r['val_error']:7.2f}% "
            f"{100 * r['best_val_error']:7.2f}%"
        )
    for key, pair in (
        ("plain34_trains_worse_than_plain18", None),
        ("plain34_worse_than_plain18", "plain34_vs_plain18"),
        ("resnet34_better_than_resnet18", "resnet34_vs_resnet18"),
    ):
        print(
            f"{key.replace('_', ' ')}: {'yes' if result[key] else 'no'}"
            + (f" ({_margin_words(result['margins'][pair], num_val)})" if pair else "")
        )
        if pair and result["margins"][pair]["paired"]:
            print(
                f"  paired on the same images, {pair.split('_vs_')[0]} minus {pair.split('_vs_')[1]} in accuracy: "
                f"{paired_words(result['margins'][pair]['paired'])}"
            )
        elif pair:
            print(f"  not paired: {result['margins'][pair]['paired_why']}")
    print(f"written: {root / 'figure4.png'}, {root / 'figure4.json'}")
    return result


def _num_evaluated(run_dir: pathlib.Path) -> int | None:
    """How many images a run's validation errors are measured on (its
    config.json's test split size), or None where the run does not say."""
    config = run_dir / "config.json"
    if not config.exists():
        return None
    n = (_read_json(config).get("data") or {}).get("num_test")
    return int(n) if n else None


def _margin(shallow_error: float, deep_error: float, n: int | None) -> dict:
    """How far the deeper network's validation error is from the shallower
    one's, in points (positive: the deeper is worse), against the sampling
    noise of two error rates each measured on n images: two standard errors
    of their difference, sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n), treating the
    two as independent samples (conservative: both see the same images)."""
    points = 100 * (deep_error - shallow_error)
    if not n:
        return {"val_error_points": points, "two_standard_errors_points": None, "beyond_noise": None}
    noise = 200 * ((shallow_error * (1 - shallow_error) + deep_error * (1 - deep_error)) / n) ** 0.5
    return {"val_error_points": points, "two_standard_errors_points": noise, "beyond_noise": abs(points) > noise}


def _paired(shallow_dir: pathlib.Path, deep_dir: pathlib.Path, data_dir) -> dict:
    """The two runs' final models scored image by image on the validation
    images (``trainers/compare.py``: A the shallower, B the deeper), or why
    not: the unpaired noise above treats the two error rates as independent;
    the paired test uses that both runs saw the same images."""
    missing = [
        str(d / name)
        for d in (shallow_dir, deep_dir)
        for name in ("config.json", "model.keras")
        if not (d / name).exists()
    ]
    if missing:
        return {"paired": None, "paired_why": f"no {', '.join(missing)}"}
    (config_a, model_a), (config_b, model_b) = _run_model(shallow_dir), _run_model(deep_dir)
    return {"paired": paired(model_a, config_a, model_b, config_b, data_dir=data_dir), "paired_why": None}


def _margin_words(margin: dict, n: int | None) -> str:
    words = f"{abs(margin['val_error_points']):.2f} points of validation error"
    if margin["beyond_noise"] is None:
        return words + "; the sampling noise is unknown: the runs' config.json does not give the split's size"
    where = "beyond" if margin["beyond_noise"] else "within"
    noise = margin["two_standard_errors_points"]
    return words + f", {where} the sampling noise of {n:,} images: 2 standard errors are {noise:.2f} points"


def _plain_and_residual(runs: dict, path: pathlib.Path, draw, *, xlabel: str, ylabel: str, suffix: str = "") -> None:
    """The paper's layout of Figures 4 and 6: plain networks left, ResNets
    right, one colour per depth. ``draw(ax, colour, arch, rows, label)`` draws
    one run from its history.csv rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110, sharey=True)
    for ax, kind, name in ((axes[0], "plain", "plain networks"), (axes[1], "resnet", "ResNets")):
        for i, arch in enumerate(a for a in runs if a.startswith(kind)):
            rows = read_csv_rows(runs[arch] / "history.csv")
            if rows:
                draw(ax, f"C{i}", arch, rows, arch.replace("resnet", "ResNet-").replace("plain", "plain-"))
        ax.set_title(f"{name} ({suffix})" if suffix else name, fontsize=9 if suffix else None)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(ylabel)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure_atomic(fig, path)


def epochs_of(run_dir: pathlib.Path, rows: list) -> list:
    """Each history.csv row's position in epochs, from its iteration: a run
    resumed from a backup between epoch ends goes on in 'epochs' of the same
    length that end elsewhere (iterations 1547, 1694, ... for a resume at 1400
    with 147 iterations an epoch), so the row's epoch count is not its place."""
    config = run_dir / "config.json"
    per_epoch = None
    if config.exists():
        per_epoch = (_read_json(config).get("schedule") or {}).get("steps_per_epoch")
    if not per_epoch:
        per_epoch = int(rows[0]["iterations"]) / int(rows[0]["epoch"])
    return [int(r["iterations"]) / per_epoch for r in rows]


def _plot_figure4(runs: dict, path: pathlib.Path, title: str) -> None:
    def draw(ax, colour, arch, rows, label):
        epochs = epochs_of(runs[arch], rows)
        ax.plot(epochs, [100 * float(r["error"]) for r in rows], color=colour, lw=0.8, ls="--")
        ax.plot(
            epochs, [100 * float(r["test_error"]) for r in rows], color=colour, lw=2.2, marker="o", ms=3, label=label
        )

    _plain_and_residual(
        runs, path, draw, xlabel="epochs", ylabel="error (%): training thin dashed, validation bold", suffix=title
    )


def _plot_figure6(runs: dict, path: pathlib.Path, title: str) -> None:
    def draw(ax, colour, arch, rows, label):
        train_its, train_err = _training_curve(runs[arch], rows)
        ax.plot(train_its, train_err, color=colour, lw=0.7, alpha=0.9)
        ax.plot(
            [int(r["iterations"]) for r in rows],
            [100 * float(r["test_error"]) for r in rows],
            color=colour,
            lw=2.2,
            marker="o",
            ms=3,
            label=label,
        )

    _plain_and_residual(
        runs, path, draw, xlabel="iterations", ylabel="error (%): training thin, test bold", suffix=title
    )


def _training_curve(run_dir: pathlib.Path, rows: list[dict], window: int = 5) -> tuple[list, list]:
    """The thin line of Figure 6: training error (%) against iterations, from
    steps.csv (means over the logging interval, smoothed over ``window`` rows)
    where the run has one, else the epoch means of history.csv."""
    steps = read_csv_rows(run_dir / "steps.csv")
    if steps:
        errors = [100 * float(r["train_error"]) for r in steps]
        smoothed = [
            sum(errors[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(errors))
        ]
        return [int(r["iterations"]) for r in steps], smoothed
    return [int(r["iterations"]) for r in rows], [100 * float(r["error"]) for r in rows]


def table6(*, root) -> list[dict]:
    """Table 6 for the finished runs under ``root``: printed, and written as
    root/table6.csv."""
    if root is None or not root.is_dir():
        raise UserError(f"--root {root}: no such directory (the figure6 command's --root)")
    rows = []
    for run_dir in sorted(p.parent for p in root.glob("*/metrics.json")):
        config, metrics = _read_json(run_dir / "config.json"), _read_json(run_dir / "metrics.json")
        history = read_csv_rows(run_dir / "history.csv")
        try:
            arch = config["arch"]
            model = resnet_keras.get_model(
                arch, num_classes=config["data"]["num_classes"], input_shape=(config["image_size"],) * 2 + (3,)
            )
            test_error = 100 * metrics["test_top1_error"]
            train_error = 100 * float(history[-1]["error"]) if history else None
            tested = [(int(r["epoch"]), 100 * float(r["test_error"])) for r in history if r.get("test_error")]
            best_epoch, best_error = min(tested, key=lambda t: t[1]) if tested else (None, None)
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(f"{run_dir} is not a finished fit.py run ({type(error).__name__}: {error})") from None
        depth = resnet_keras.resolve_spec(arch).depth
        rows.append(
            {
                "run": run_dir.name,
                "arch": arch,
                "depth": depth,
                "params": resnet_keras.count_params(model, trainable_only=True),
                "flops": resnet_keras.count_flops(model),
                "recipe": config.get("recipe", "paper"),
                "jpeg_quality": config.get("jpeg_quality"),  # images re-encoded once more (--jpeg-quality)
                "epochs": metrics.get("epochs", config.get("epochs")),  # as trained (a --steps run has no --epochs)
                "iterations": metrics.get("iterations"),
                "train_error": train_error,
                "test_error": test_error,
                "best_test_error": best_error,
                "best_epoch": best_epoch,
                "paper_error": PAPER_ERROR.get(depth) if arch.startswith("resnet") else None,
                "akamaster_best_error": AKAMASTER_BEST_ERROR.get(depth) if arch.startswith("resnet") else None,
            }
        )
    if not rows:
        raise UserError(f"no finished runs under {root}")
    rows.sort(key=lambda r: (not r["arch"].startswith("plain"), r["depth"], r["run"]))
    width = max(len("run"), *(len(r["run"]) for r in rows))
    print(
        f"{'run':{width}s} {'network':12s} {'params':>9s} {'FLOPs':>12s} {'recipe':>8s} {'epochs':>7s} "
        f"{'train err':>9s} {'final err':>9s} "
        f"{'best err (epoch)':>16s} {'paper':>6s} {'akamaster best':>14s}"
    )

    def pct(value):
        return "n/a" if value is None else f"{value:.2f}%"

    for r in rows:
        best = "n/a" if r["best_test_error"] is None else f"{r['best_test_error']:.2f}% ({r['best_epoch']})"
        epochs = "n/a" if r["epochs"] is None else f"{r['epochs']:.4g}"
        recipe = r["recipe"] if r["jpeg_quality"] is None else f"{r['recipe']}/q{r['jpeg_quality']}"
        print(
            f"{r['run']:{width}s} {r['arch']:12s} {r['params']:9,d} {r['flops']:12,d} {recipe:>8s} {epochs:>7s} "
            f"{pct(r['train_error']):>9s} "
            f"{pct(r['test_error']):>9s} {best:>16s} {pct(r['paper_error']):>6s} "
            f"{pct(r['akamaster_best_error']):>14s}"
        )
    write_csv_atomic(root / "table6.csv", rows)
    print(f"written: {root / 'table6.csv'}")
    return rows


def figure7(*, runs, out, data_dir, batch_size, max_images) -> dict:
    """Figure 7's response statistics of the fit.py run directories ``runs``,
    drawn into out/figure7.png with the numbers in out/figure7.json."""
    if batch_size < 1 or max_images < 0:
        raise UserError(
            f"--batch-size {batch_size} --max-images {max_images}; expected a positive "
            "batch size and a non-negative number of images"
        )
    rows = []
    for run_dir in runs:
        config, model = _run_model(run_dir)
        image_size = model.input_shape[1]
        info = data_lib.describe_run(config, image_size, data_dir)
        batches = data_lib.eval_pipeline(info, "test", batch_size, seed=config.get("seed", 0))
        if max_images:
            batches = batches.unbatch().take(max_images).batch(batch_size)
        stds = responses.response_stds(model, batches.as_numpy_iterator())
        rows.append(
            {
                "run": str(run_dir),
                "arch": config.get("arch"),
                "dataset": config.get("dataset"),
                "synthetic": info.synthetic,
                "layers": list(stds),
                "std": list(stds.values()),
                "bn_scale": list(responses.bn_scales(model, list(stds)).values()),
            }
        )
        print(
            f"{config.get('arch')} ({run_dir}): {len(stds)} layers, response std "
            f"{min(stds.values()):.3f} .. {max(stds.values()):.3f}, mean {sum(stds.values()) / len(stds):.3f}, "
            f"median {statistics.median(stds.values()):.3f}; "
            f"BN scale (mean |gamma|) {min(rows[-1]['bn_scale']):.3f} .. {max(rows[-1]['bn_scale']):.3f}"
        )
    out = out or runs_root() / "reproduce"
    out.mkdir(parents=True, exist_ok=True)
    _label_runs(rows)
    result = {"runs": rows, "residual_vs_plain": _compare_responses(rows)}
    for c in result["residual_vs_plain"]:
        print(
            f"{c['resnet']} has the smaller response at {c['smaller']} of {c['layers']} layer indices than {c['plain']}"
        )
    write_json_atomic(out / "figure7.json", result)
    _plot_figure7(rows, out / "figure7.png")
    print(f"written: {out / 'figure7.png'}, {out / 'figure7.json'}")
    return result


def _label_runs(rows: list[dict]) -> None:
    """Each row's ``label``: its network's name, or where two runs train the
    same network (a 30-epoch and a 64k-iteration ResNet-20), the name and the
    run's last two path parts."""
    counts = collections.Counter(row["arch"] for row in rows)
    for row in rows:
        run = pathlib.Path(row["run"])
        row["label"] = str(row["arch"]) if counts[row["arch"]] == 1 else f"{row['arch']} ({run.parent.name}/{run.name})"


def _compare_responses(rows: list[dict]) -> list[dict]:
    """For each ResNet given with its plain twin (plainD for resnetD: the one
    in the same parent directory, or the only one where the ResNet is the only
    run of its network): at how many layer indices the ResNet's response std
    is the smaller."""
    pairs = []
    for row in rows:
        arch = str(row["arch"])
        if not arch.startswith("resnet"):
            continue
        twins = [r for r in rows if r["arch"] == arch.replace("resnet", "plain", 1)]
        siblings = [r for r in twins if pathlib.Path(r["run"]).parent == pathlib.Path(row["run"]).parent]
        if siblings or sum(r["arch"] == arch for r in rows) > 1:
            twins = siblings  # of two ResNet-20 runs, the plain-20 beside one is that one's twin only
        if len(twins) == 1 and len(twins[0]["std"]) == len(row["std"]):
            smaller = sum(r < p for r, p in zip(row["std"], twins[0]["std"]))
            pairs.append(
                {"resnet": row["label"], "plain": twins[0]["label"], "smaller": smaller, "layers": len(row["std"])}
            )
    return pairs


def _plot_figure7(rows, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_index, by_size) = plt.subplots(2, 1, figsize=(7, 6), dpi=110)
    for i, row in enumerate(rows):
        style = "--" if str(row["arch"]).startswith("plain") else "-"
        label = row["label"] + (" (synthetic data)" if row["synthetic"] else "")
        x = range(1, len(row["std"]) + 1)
        by_index.plot(x, row["std"], style, color=f"C{i}", lw=1.2, label=label)
        by_size.plot(x, sorted(row["std"], reverse=True), style, color=f"C{i}", lw=1.2, label=label)
    by_index.set_xlabel("layer index (original)")
    by_size.set_xlabel("layer index (sorted by magnitude)")
    for ax in (by_index, by_size):
        ax.set_ylabel("std")
        ax.grid(alpha=0.3)
    by_index.legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, path)
