"""What does JPEG compression cost? The CIFAR-10 copy here is itself JPEG-q75,
and the official pixels are not here to compare with, so this measures the
cost of one *more* compression of known size and reads the copy's own from it.

1. distortion: for each quality, the mean squared error and PSNR (against the
   stored images) that ``--jpeg-quality Q`` adds, on ``--images`` test images;
2. with run directories of ``fit.py`` runs that differ only in
   ``--jpeg-quality``: their test error against the distortion each added,
   and the straight line through them, extrapolated to the distortion the copy
   itself carries against the official images (``--copy-mse``; about 65 from
   ../shared/README.md's "PSNR about 30 dB").

    python benchmarks/jpeg_cost.py --data-dir ../shared/tensorflow_datasets \\
        --runs saved_models/jpeg-copy-5ep saved_models/jpeg-q50-5ep saved_models/jpeg-q20-5ep
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]

import numpy as np
import tensorflow as tf

from trainers.core import data as data_lib
from trainers.core.errors import UserError, run_main
from trainers.core.files import write_json_atomic

QUALITIES = (95, 90, 75, 50, 30, 20, 10)


def distortion(images: np.ndarray, quality: int) -> dict:
    """Mean squared error and PSNR (dB, peak 255) that re-encoding at
    ``quality`` adds to ``images`` (uint8, N x H x W x 3)."""
    out = np.stack([data_lib.recompress_jpeg(tf.constant(image), quality).numpy() for image in images])
    mse = float(np.mean((out.astype(np.float64) - images.astype(np.float64)) ** 2))
    return {"quality": quality, "mse": mse, "psnr_db": 10 * np.log10(255.0**2 / mse) if mse else float("inf")}


def read_run(run_dir: pathlib.Path) -> dict:
    try:
        config = json.loads((run_dir / "config.json").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{run_dir} is not a finished fit.py run ({error})") from None
    if "test_top1_error" not in metrics:
        raise UserError(f"{run_dir / 'metrics.json'} has no test_top1_error")
    return {
        "run": str(run_dir),
        "jpeg_quality": config.get("jpeg_quality"),
        "test_error": metrics["test_top1_error"],
        "identity": {k: config.get(k) for k in ("arch", "dataset", "recipe", "epochs", "seed", "precision")},
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cifar10", help="TFDS name, or 'synthetic'")
    p.add_argument("--data-dir", help="TFDS data dir (default: $TFDS_DATA_DIR)")
    p.add_argument("--images", type=int, default=500, help="test images to measure distortion on")
    p.add_argument("--qualities", type=int, nargs="+", default=list(QUALITIES))
    p.add_argument("--runs", type=pathlib.Path, nargs="*", default=[], help="fit.py runs differing in --jpeg-quality")
    p.add_argument(
        "--copy-mse",
        type=float,
        default=65.0,
        help="distortion of the stored images against the originals (CIFAR-10 copy: PSNR about 30 dB)",
    )
    p.add_argument("--json", type=pathlib.Path)
    args = p.parse_args(argv)
    if args.images < 1 or not all(1 <= q <= 100 for q in args.qualities):
        raise UserError("--images must be positive and every --qualities value in [1, 100]")

    info = data_lib.describe(args.dataset, data_dir=args.data_dir, family="cifar", image_size=32, val_split=0.0, seed=0)
    images = np.stack([image.numpy() for image, _ in data_lib.raw_dataset(info, "test", seed=0).take(args.images)])
    runs = [read_run(r) for r in args.runs]
    qualities = sorted(set(args.qualities) | {r["jpeg_quality"] for r in runs if r["jpeg_quality"]}, reverse=True)
    table = [distortion(images, q) for q in qualities]
    print(f"distortion added to {len(images)} {args.dataset} test images")
    print(f"{'quality':>7s} {'MSE':>8s} {'PSNR dB':>8s}")
    for row in table:
        print(f"{row['quality']:7d} {row['mse']:8.1f} {row['psnr_db']:8.1f}")
    result = {"dataset": args.dataset, "images": len(images), "distortion": table}

    if runs:
        if len({json.dumps(r["identity"], sort_keys=True) for r in runs}) != 1:
            raise UserError(
                "the runs differ in more than --jpeg-quality: "
                + "; ".join(f"{r['run']}: {r['identity']}" for r in runs)
            )
        added = {row["quality"]: row["mse"] for row in table}
        for r in runs:
            r["added_mse"] = added[r["jpeg_quality"]] if r["jpeg_quality"] else 0.0
        print(f"\n{'run':40s} {'quality':>7s} {'added MSE':>9s} {'test error':>10s}")
        for r in sorted(runs, key=lambda r: r["added_mse"]):
            print(
                f"{r['run'][-40:]:40s} {str(r['jpeg_quality'] or 'as is'):>7s} {r['added_mse']:9.1f} "
                f"{100 * r['test_error']:9.2f}%"
            )
        result["runs"] = runs
        if len({r["added_mse"] for r in runs}) >= 2:
            slope, intercept = np.polyfit([r["added_mse"] for r in runs], [r["test_error"] for r in runs], 1)
            copy_cost = slope * args.copy_mse
            print(
                f"\nline through the runs: test error {100 * intercept:.2f}% + {100 * slope:.4f} points per unit of "
                f"added MSE; the copy's own {args.copy_mse:g} MSE would then cost {100 * copy_cost:.2f} points "
                "(the official images: that much lower error, if the line holds down to them)"
            )
            result["fit"] = {
                "slope_per_mse": float(slope),
                "intercept": float(intercept),
                "copy_mse": args.copy_mse,
                "copy_cost_points": float(100 * copy_cost),
            }
    if args.json:
        write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    run_main(main)
