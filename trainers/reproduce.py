"""Reproduce the paper's CIFAR-10 findings on this project's networks.

    python trainers/reproduce.py figure7 RUN_DIR [RUN_DIR ...] [--out DIR]

``figure7``: the standard deviation of each 3x3 layer's response (after BN,
before the ReLU or the addition) on the run's test images, for every run
given (fit.py run directories of plain and residual networks), drawn by layer
index and sorted by magnitude (``figure7.png``), with the numbers in
``figure7.json``. The statistic is defined in :mod:`trainers.responses`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainers.common import UserError, load_keras_model, run_main, write_json_atomic  # noqa: E402


def _run_model(run_dir: pathlib.Path):
    config_path, model_path = run_dir / "config.json", run_dir / "model.keras"
    if not config_path.exists() or not model_path.exists():
        raise UserError(f"{run_dir} is not a finished fit.py run (it needs config.json and model.keras)")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as error:
        raise UserError(f"cannot read {config_path}: {error}") from None
    return config, load_keras_model(model_path)


def figure7(args) -> dict:
    from trainers import data as data_lib
    from trainers import responses

    rows = []
    for run_dir in args.runs:
        config, model = _run_model(run_dir)
        image_size = model.input_shape[1]
        info = data_lib.describe_run(config, image_size, args.data_dir)
        batches = data_lib.eval_pipeline(info, "test", args.batch_size, seed=config.get("seed", 0))
        if args.max_images:
            batches = batches.unbatch().take(args.max_images).batch(args.batch_size)
        stds = responses.response_stds(model, batches.as_numpy_iterator())
        rows.append({"run": str(run_dir), "arch": config.get("arch"), "dataset": config.get("dataset"),
                     "synthetic": info.synthetic, "layers": list(stds), "std": list(stds.values())})  # fmt: skip
        print(f"{config.get('arch')} ({run_dir}): {len(stds)} layers, response std "
              f"{min(stds.values()):.3f} .. {max(stds.values()):.3f}, mean {sum(stds.values()) / len(stds):.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"runs": rows}
    write_json_atomic(args.out / "figure7.json", result)
    _plot_figure7(rows, args.out / "figure7.png")
    print(f"written: {args.out / 'figure7.png'}, {args.out / 'figure7.json'}")
    return result


def _plot_figure7(rows, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_index, by_size) = plt.subplots(2, 1, figsize=(7, 6), dpi=110)
    for i, row in enumerate(rows):
        style = "--" if str(row["arch"]).startswith("plain") else "-"
        label = row["arch"] + (" (synthetic data)" if row["synthetic"] else "")
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
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f7 = sub.add_parser("figure7", help="response std of each 3x3 layer of trained runs")
    f7.add_argument("runs", nargs="+", type=pathlib.Path, help="fit.py run directories")
    f7.add_argument("--out", type=pathlib.Path, default=pathlib.Path("saved_models/reproduce"),
                    help="where figure7.png and figure7.json go (default saved_models/reproduce)")  # fmt: skip
    f7.add_argument("--data-dir", help="TFDS data dir (default: the run's, or $TFDS_DATA_DIR)")
    f7.add_argument("--batch-size", type=int, default=250)
    f7.add_argument("--max-images", type=int, default=0, help="use only the first N test images (0: all)")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}; expected a positive integer")
    return figure7(args)


if __name__ == "__main__":
    run_main(main)
