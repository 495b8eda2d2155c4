"""The run-directory table behind ``trainers/runs.py``: one row per fit.py run
directory, finished or not, from its files alone (config.json, metrics.json,
best.json, history.csv, the backup's metadata, evaluate.py's 10-crop)."""

from __future__ import annotations

import json
import pathlib

from trainers.core import runlock
from trainers.core.errors import UserError
from trainers.core.files import finite_or_none, read_csv_rows, strict
from trainers.core.hardware import run_cpus

COLUMNS = (
    ("run", "run"),
    ("arch", "network"),
    ("dataset", "dataset"),
    ("recipe", "recipe"),
    ("image_size", "size"),
    ("epochs", "epochs"),
    ("status", "status"),
    ("top1", "top-1"),
    ("best_top1", "best epoch"),
    ("ten_crop_top1", "10-crop"),
    ("images_per_second", "images/s"),
    ("wall_minutes", "wall (min)"),
    ("precision", "precision"),
    ("cpus", "CPUs"),
)


class Unreadable(Exception):
    pass


def _load(path: pathlib.Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise Unreadable(f"{path.name}: {error}") from None


def _optional(path: pathlib.Path):
    return _load(path) if path.exists() else None


def find_runs(paths) -> list[pathlib.Path]:
    """The run directories at or below ``paths``, each once, in path order."""
    found = []
    for given in paths:
        root = pathlib.Path(given).expanduser()
        if not root.exists():
            raise UserError(f"{given} does not exist")
        if (root / "config.json").is_file():
            candidates = [root]
        elif root.is_dir():
            candidates = sorted(p.parent for p in root.rglob("config.json") if "backup" not in p.parent.parts)
        else:
            raise UserError(f"{given} is not a run directory nor a folder of them (no config.json)")
        found += [c for c in candidates if c not in found]
    if not found:
        where = ", ".join(map(str, paths))
        raise UserError(f"no run directories (a folder with config.json, as fit.py writes) under {where}")
    return found


def ten_crop(run_dir: pathlib.Path):
    """The final model's 10-crop top-1 accuracy on the test split, where evaluate.py wrote it."""
    views = _optional(run_dir / "eval-final-test-views.json")
    if views and "10-crop" in views.get("views", {}):
        return 1 - views["views"]["10-crop"]["top1_error"]
    single = _optional(run_dir / "eval-final-test-10crop.json")
    if single and "top1_error" in single:
        return 1 - single["top1_error"]
    return None


def describe(run_dir: pathlib.Path, label: str) -> dict:
    """One row for ``run_dir``. Figures that are missing are None; ``why``
    says, per column, why."""
    row = {key: None for key, _ in COLUMNS}
    row["run"], row["why"] = label, {}
    try:
        config = _load(run_dir / "config.json")
        metrics = _optional(run_dir / "metrics.json")
        best = _optional(run_dir / "best.json")
        backup = _optional(run_dir / "backup" / "training_metadata.json")
        tc = ten_crop(run_dir)
    except Unreadable as error:
        row["status"] = f"unreadable ({error})"
        return row
    history = read_csv_rows(run_dir / "history.csv")
    schedule = config.get("schedule") or {}
    data = config.get("data") or {}
    row.update(
        arch=config.get("arch"),
        dataset=data.get("name") or config.get("dataset"),
        recipe=config.get("recipe"),
        image_size=data.get("image_size") or config.get("image_size"),
        epochs=finite_or_none(schedule.get("epochs") or config.get("epochs")),
        precision=config.get("resolved_precision") or config.get("precision"),
    )
    total = schedule.get("total_steps")
    if metrics is not None:
        row["status"] = "finished"
        error, wall = finite_or_none(metrics.get("test_top1_error")), finite_or_none(metrics.get("wall_seconds"))
        row["top1"] = 1 - error if error is not None else None
        row["images_per_second"] = finite_or_none(metrics.get("train_images_per_second"))
        row["wall_minutes"] = wall / 60 if wall is not None else None
        if row["top1"] is None:
            row["why"]["top1"] = "no finite test error in metrics.json"
        row["cpus"] = metrics.get("cpus")
        if row["images_per_second"] is None:
            row["why"]["images_per_second"] = "too few steady-state steps"
    else:
        saved = [finite_or_none(r.get("iterations")) for r in history] + [
            finite_or_none((backup or {}).get("iterations"))
        ]
        done = int(max([n for n in saved if n is not None], default=0))
        pid = runlock.live_holder(run_dir)
        state = f"training now (process {pid})" if pid else "stopped, resumes from its backup" if backup else "stopped"
        row["status"] = f"{state}, saved at iteration {done}" + (f" of {total}" if total else "")
        row["why"]["top1"] = "not finished"
        if history:
            rates = [finite_or_none(r.get("images_per_second")) for r in history]
            rates = [r for r in rates if r is not None]
            row["images_per_second"] = sum(rates) / len(rates) if rates else None
            row["wall_minutes"] = sum(finite_or_none(r.get("epoch_seconds")) or 0 for r in history) / 60
        if row["images_per_second"] is None:
            row["why"]["images_per_second"] = "no epoch timed yet"
    if row["cpus"] is None:
        cpus = run_cpus(history)
        row["cpus"] = cpus or None
        if not cpus:
            row["why"]["cpus"] = "no epoch yet"
    if best and finite_or_none(best.get("value")) is not None:
        row["best_top1"] = float(best["value"])
    else:
        row["why"]["best_top1"] = "no validated epoch"
    if tc is not None:
        row["ten_crop_top1"] = tc
    else:
        row["why"]["ten_crop_top1"] = "not evaluated" if metrics is not None else "not finished"
    if row["wall_minutes"] is None:
        row["why"]["wall_minutes"] = "no epoch yet"
    return row


def cell(row, key) -> str:
    value = row.get(key)
    if value is None:
        return row["why"].get(key, "-")
    if key in ("top1", "best_top1", "ten_crop_top1"):
        return f"{100 * value:.2f}%"
    if key == "images_per_second":
        return f"{value:.1f}"
    if key == "wall_minutes":
        return f"{value:.1f}"
    if key == "epochs":
        return f"{value:g}"
    if key == "cpus":
        return "; ".join(value)
    return str(value)


def render(rows, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(strict(rows), indent=2, allow_nan=False)
    header = [title for _, title in COLUMNS]
    body = [[cell(r, key) for key, _ in COLUMNS] for r in rows]
    if fmt == "markdown":
        right = {"size", "epochs", "top-1", "best epoch", "10-crop", "images/s", "wall (min)"}
        rule = "|" + "|".join("---:" if h in right else "---" for h in header) + "|"
        lines = ["| " + " | ".join(header) + " |", rule]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in b) + " |" for b in body]
        return "\n".join(lines)
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(x, widths)).rstrip() for x in [header, *body])


def _label(run_dir: pathlib.Path, roots) -> str:
    for root in roots:
        root = pathlib.Path(root).expanduser()
        try:
            relative = run_dir.relative_to(root)
        except ValueError:
            continue
        return str(relative) if str(relative) != "." else run_dir.name
    return str(run_dir)


def run_table(paths, fmt: str = "text") -> tuple[list[dict], str]:
    """The rows for the run directories at or below ``paths``, and the table
    rendered as ``fmt`` (text, markdown, json)."""
    rows = [describe(run, _label(run, paths)) for run in find_runs(paths)]
    return rows, render(rows, fmt)


def unreadable(rows) -> str | None:
    """One line naming the run directories that could not be read, or None."""
    bad = [r["run"] for r in rows if str(r["status"]).startswith("unreadable")]
    if not bad:
        return None
    return f"{len(bad)} run director{'y' if len(bad) == 1 else 'ies'} could not be read: {', '.join(bad)}"
