r"""Test error against wall-clock time for finished (or running) fit.py runs,
from their history.csv: a plot and a table.

    python benchmarks/wallclock.py saved_models/resnet20-fast-30ep saved_models/resnet20-paper-30ep \
        --out docs/fast_vs_paper.png

Time is the sum of each epoch's seconds (training and the evaluations at its
end), as the run recorded them, so a resumed run counts only the time it
trained. The table gives each run's final and best test error, its length, its
total time, and the test error each run had reached at the time the first
run finished ("at the same wall time").
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

from trainers.core.files import save_figure_atomic, write_json_atomic


def load(run_dir: pathlib.Path) -> dict:
    history = run_dir / "history.csv"
    if not history.exists():
        raise SystemExit(f"error: {run_dir} has no history.csv (not a fit.py run directory?)")
    with open(history) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"error: {history} is empty")
    if not {"epoch", "error", "test_error", "epoch_seconds"} <= set(rows[0]):
        raise SystemExit(f"error: {history} lacks the columns epoch, error, test_error, epoch_seconds")
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: cannot read {run_dir / 'config.json'}: {error}") from None
    seconds, elapsed = [], 0.0
    for row in rows:
        elapsed += float(row["epoch_seconds"])
        seconds.append(elapsed)
    return {
        "name": run_dir.name,
        "recipe": config.get("recipe"),
        "epochs": [int(r["epoch"]) for r in rows],
        "seconds": seconds,
        "test_error": [float(r["test_error"]) for r in rows],
        "train_error": [float(r["error"]) for r in rows],
        "finished": (run_dir / "metrics.json").exists(),
    }


def error_at(run: dict, seconds: float):
    """The test error of the last epoch finished by ``seconds`` (None before the first)."""
    done = [e for s, e in zip(run["seconds"], run["test_error"]) if s <= seconds * 1.0001]
    return done[-1] if done else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=pathlib.Path)
    p.add_argument("--labels", nargs="+", help="a label per run (default: recipe and directory name)")
    p.add_argument("--out", type=pathlib.Path, help="write the plot here (PNG)")
    p.add_argument("--json", type=pathlib.Path, help="write the table here (JSON)")
    args = p.parse_args(argv)
    runs = [load(r) for r in args.runs]
    labels = args.labels or [f"{r['recipe']} ({r['name']})" for r in runs]
    if len(labels) != len(runs):
        raise SystemExit("error: give one --labels entry per run")
    reference = runs[0]["seconds"][-1]
    print(
        f"{'run':40s} {'epochs':>6s} {'minutes':>8s} {'final err':>9s} {'best err':>9s} "
        f"{'err at ' + format(reference / 60, '.0f') + ' min':>12s}"
    )
    table = []
    for label, run in zip(labels, runs):
        at = error_at(run, reference)
        row = {
            "label": label,
            "epochs": run["epochs"][-1],
            "minutes": run["seconds"][-1] / 60,
            "final_test_error": run["test_error"][-1],
            "best_test_error": min(run["test_error"]),
            "test_error_at_reference_time": at,
            "finished": run["finished"],
        }
        table.append(row)
        print(
            f"{label:40s} {row['epochs']:6d} {row['minutes']:8.1f} {100 * row['final_test_error']:8.2f}% "
            f"{100 * row['best_test_error']:8.2f}% {'' if at is None else format(100 * at, '.2f') + '%':>12s}"
        )
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4), dpi=110)
        for i, (label, run) in enumerate(zip(labels, runs)):
            minutes = [s / 60 for s in run["seconds"]]
            ax.plot(minutes, [100 * e for e in run["test_error"]], lw=2, color=f"C{i}", label=f"{label}: test")
            ax.plot(
                minutes,
                [100 * e for e in run["train_error"]],
                lw=0.8,
                color=f"C{i}",
                ls="--",
                label=f"{label}: training",
            )
        ax.set_xlabel("wall-clock minutes on this machine")
        ax.set_ylabel("error (%)")
        ax.set_ylim(0, 60)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure_atomic(fig, args.out)
    if args.json:
        write_json_atomic(args.json, {"reference_seconds": reference, "runs": table})
    return table


if __name__ == "__main__":
    main()
    sys.exit(0)
