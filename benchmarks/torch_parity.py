"""Accuracy parity: the same ResNet-20, recipe and images trained in PyTorch.

    python benchmarks/torch_parity.py --data-dir ../shared/tensorflow_datasets --recipe fast --epochs 10 \\
        --output-dir ~/resnet-runs/table6/torch-resnet20-fast-e10 --keras-run ~/resnet-runs/table6/resnet20-fast-e10

Is a test accuracy of ours below the paper's the implementation or the data?
This trains the option-A CIFAR ResNet as akamaster/pytorch_resnet_cifar10
writes it (``benchmarks/peer_torch.py``'s, kaiming-normal convolutions and
linear layer) in PyTorch float32, on the same CIFAR-10 copy, with what
``trainers/fit.py`` does for the recipe mirrored step for step: the
learning rate of every iteration (``trainers/core/recipes.py``'s schedule, the
same formula as Keras' schedules; a test checks it), SGD (Nesterov where the
recipe says) momentum 0.9, weight decay with Caffe's meaning on the same
weights (conv and linear kernels for ``fast``, every weight for ``paper``),
batch 128 with the last partial batch of each epoch dropped, BN momentum 0.1
(Keras' 0.9) and epsilon 1e-5, the per-pixel mean of the training images
subtracted, 4 zero pixels of padding on the uint8 image, a random crop and a
random flip per image (the same arithmetic as ``trainers/core/data.py``'s
``cifar_batch_view``; a test checks it), no label smoothing. What differs:
the random draws (initial weights, order, crops), float32 here against the
project's mixed bf16 on CPUs, and Keras folding the learning rate into the
momentum buffer (PyTorch does not; the two agree while the rate is constant).

The parent (this project's interpreter) writes the decoded images once to
``OUTPUT_DIR/images.npz`` and the run's settings to ``parity.json``, then runs
the training under the PyTorch interpreter (``--torch-python``, else
``$TORCH_PYTHON``, else ``~/torch-venv/bin/python``; PyTorch is not a
dependency of the project: ``python3 -m venv ~/torch-venv &&
~/torch-venv/bin/pip install torch``). The child checkpoints after every epoch
(temporary name, then rename) and the same command resumes it; it writes
``history.csv`` and ``result.json`` (strict JSON). With ``--keras-run`` the
parent prints the two runs' final and best test accuracies side by side. A
truncated or foreign file in the run directory (``images.npz``,
``checkpoint.pt``, the JSON files) ends the run with one line naming it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]

# Module level: the standard library and numpy only (the PyTorch interpreter has
# neither TensorFlow nor this project's dependencies).


def learning_rate_at(schedule: dict, step: int) -> float:
    """The learning rate of iteration ``step`` (0-based) under a schedule of
    ``trainers.core.recipes.resolve_schedule``: what ``recipes.learning_rate``'s
    Keras schedule returns at that optimizer iteration."""
    kind = schedule["kind"]
    if kind == "step":
        for boundary, value in zip(schedule["boundaries"], schedule["values"]):
            if step <= boundary:  # PiecewiseConstantDecay: values[i] while step <= boundaries[i]
                return float(value)
        return float(schedule["values"][-1])
    if kind == "cosine":
        warmup, target, total = schedule["warmup_steps"], schedule["lr"], schedule["total_steps"]
        if warmup and step < warmup:
            start = schedule["warmup_start"]
            return start + (target - start) * step / warmup
        decay_steps = total - warmup
        progress = min(step - warmup, decay_steps) / decay_steps
        return target * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"schedule kind {kind!r} is not mirrored here")


def batch_view(images: np.ndarray, u: np.ndarray, pad: int = 4) -> np.ndarray:
    """``trainers.core.data.cifar_batch_view`` in numpy: uint8 (B, S, S, 3) images
    zero-padded by ``pad``, cropped at ``floor(u[:, :2] * (2 pad + 1))``,
    flipped where ``u[:, 2] < 0.5``; float32 (B, S, S, 3)."""
    b, s = images.shape[0], images.shape[1]
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = np.minimum(np.floor(u[:, :2] * (2 * pad + 1)).astype(np.int64), 2 * pad)
    rows = offsets[:, :1] + np.arange(s)[None]  # (B, S)
    cols = offsets[:, 1:] + np.arange(s)[None]
    out = padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, S, S, 3)
    flip = u[:, 2] < 0.5
    out[flip] = out[flip][:, :, ::-1]
    return out.astype(np.float32)


def _write_json(path: pathlib.Path, data: dict):
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _load(path: pathlib.Path, loader):
    """``loader(path)``, or one line naming a file that is truncated or not of its format."""
    try:
        return loader(path)
    except Exception as error:  # noqa: BLE001 -- zip, pickle, JSON and I/O errors alike
        raise SystemExit(
            f"error: {path} is unreadable ({type(error).__name__}: {error}); "
            "delete it and rerun the same command, which writes it again"
        ) from None


def _read_json(path: pathlib.Path) -> dict:
    return _load(path, lambda p: json.loads(p.read_text()))


def _read_images(path: pathlib.Path) -> dict:
    def read(p):
        with np.load(p) as data:  # every array read here, so a truncated member fails now
            return {key: data[key] for key in ("x_train", "y_train", "x_test", "y_test", "pixel_mean")}

    return _load(path, read)


def _finite_or_none(value):
    return float(value) if value is not None and math.isfinite(value) else None


# --------------------------------------------------------------------- child


def child(run_dir: pathlib.Path):
    import torch
    import torch.nn.functional as F

    from benchmarks.peer_torch import cifar_resnet_torch

    settings = _read_json(run_dir / "parity.json")
    schedule = settings["schedule"]
    data = _read_images(run_dir / "images.npz")
    x_train, y_train = data["x_train"], data["y_train"].astype(np.int64)
    x_test, y_test = data["x_test"], data["y_test"].astype(np.int64)
    mean = data["pixel_mean"].astype(np.float32)  # (S, S, 3)
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(settings["seed"])

    model = cifar_resnet_torch((settings["depth"] - 2) // 6, settings["num_classes"])
    model = model.to(memory_format=torch.channels_last)
    kernels_only = schedule["weight_decay_on"] == "kernels"
    decayed = [p for p in model.parameters() if p.dim() > 1 or not kernels_only]
    others = [p for p in model.parameters() if p.dim() <= 1 and kernels_only]
    groups = [{"params": decayed, "weight_decay": schedule["weight_decay"]}]
    if others:
        groups.append({"params": others, "weight_decay": 0.0})
    optimizer = torch.optim.SGD(
        groups, lr=learning_rate_at(schedule, 0), momentum=schedule["momentum"], nesterov=bool(schedule["nesterov"])
    )

    batch, per_epoch, total = schedule["batch_size"], schedule["steps_per_epoch"], schedule["total_steps"]
    epochs = math.ceil(total / per_epoch)
    checkpoint = run_dir / "checkpoint.pt"
    history_path = run_dir / "history.csv"
    history, step, epoch = [], 0, 0
    if checkpoint.exists():
        state = _load(checkpoint, lambda p: torch.load(p, weights_only=False))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        np_state, torch_state, history = state["numpy_rng"], state["torch_rng"], state["history"]
        step, epoch = state["step"], state["epoch"]
        torch.set_rng_state(torch_state)
        print(f"resumed from epoch {epoch} (iteration {step})", flush=True)
    rng = np.random.default_rng(settings["seed"])
    if checkpoint.exists():
        rng.bit_generator.state = np_state

    def to_tensor(images):
        x = torch.from_numpy(np.ascontiguousarray((images - mean).transpose(0, 3, 1, 2)))
        return x.contiguous(memory_format=torch.channels_last)

    def evaluate():
        model.eval()
        correct, loss_sum = 0, 0.0
        with torch.no_grad():
            for start in range(0, len(x_test), 500):
                logits = model(to_tensor(x_test[start : start + 500].astype(np.float32)))
                labels = torch.from_numpy(y_test[start : start + 500])
                loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
                correct += (logits.argmax(1) == labels).sum().item()
        model.train()
        return correct / len(x_test), loss_sum / len(x_test)

    model.train()
    while epoch < epochs:
        began = time.perf_counter()
        order = rng.permutation(len(x_train))
        seen = correct = 0
        loss_sum = 0.0
        for b in range(per_epoch):
            if step >= total:
                break
            index = order[b * batch : (b + 1) * batch]
            images = batch_view(x_train[index], rng.random((len(index), 3)))
            labels = torch.from_numpy(y_train[index])
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(schedule, step)
            logits = model(to_tensor(images))
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            if not math.isfinite(value):
                raise SystemExit(f"error: the training loss became non-finite at iteration {step}")
            loss_sum += value * len(index)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(index)
            step += 1
        seconds = time.perf_counter() - began
        test_accuracy, test_loss = evaluate()
        epoch += 1
        history.append(
            {
                "epoch": epoch,
                "iterations": step,
                "lr": learning_rate_at(schedule, step - 1),
                "loss": loss_sum / seen,
                "accuracy": correct / seen,
                "test_loss": test_loss,
                "test_accuracy": test_accuracy,
                "epoch_seconds": seconds,
            }
        )
        print(
            f"epoch {epoch}/{epochs}: loss {loss_sum / seen:.4f}, accuracy {correct / seen:.4f}, "
            f"test accuracy {test_accuracy:.4f}, {seconds:.0f} s",
            flush=True,
        )
        tmp = run_dir / f".checkpoint.pt.tmp-{os.getpid()}"
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "epoch": epoch,
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "history": history,
            },
            tmp,
        )
        os.replace(tmp, checkpoint)
        tmp = run_dir / f".history.csv.tmp-{os.getpid()}"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
        os.replace(tmp, history_path)

    final = history[-1]
    best = max(history, key=lambda row: row["test_accuracy"])
    _write_json(
        run_dir / "result.json",
        {
            "framework": f"torch {torch.__version__}",
            "precision": "float32",
            "channels_last": True,
            "threads": torch.get_num_threads(),
            "iterations": step,
            "epochs": epoch,
            "final_test_accuracy": _finite_or_none(final["test_accuracy"]),
            "best_test_accuracy": _finite_or_none(best["test_accuracy"]),
            "best_epoch": best["epoch"],
            "final_train_accuracy": _finite_or_none(final["accuracy"]),
            "train_minutes": sum(row["epoch_seconds"] for row in history) / 60,
        },
    )


# -------------------------------------------------------------------- parent


def export_images(run_dir: pathlib.Path, data_dir, dataset: str = "cifar10"):
    """The copy's decoded training and test images, once, as ``images.npz``."""
    target = run_dir / "images.npz"
    if target.exists():
        return
    from trainers.core import data as data_lib

    info = data_lib.describe(dataset, data_dir=data_dir, family="cifar", image_size=32, val_split=0.0, seed=0)
    arrays = {}
    for which in ("train", "test"):
        images, labels = [], []
        for x, y in data_lib.raw_dataset(info, which, 0).batch(1000).as_numpy_iterator():
            images.append(x)
            labels.append(y)
        arrays[f"x_{which}"], arrays[f"y_{which}"] = np.concatenate(images), np.concatenate(labels)
    arrays["pixel_mean"] = arrays["x_train"].astype(np.float64).mean(axis=0)
    tmp = run_dir / f".images.tmp-{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, target)


def settings_for(args) -> dict:
    from trainers.core import recipes

    depth = int(args.arch.removeprefix("resnet"))
    recipe = recipes.get_recipe(args.recipe, "cifar", depth)
    steps_per_epoch = 50_000 // recipe.batch_size
    schedule = recipes.resolve_schedule(
        recipe, batch_size=recipe.batch_size, steps_per_epoch=steps_per_epoch, epochs=args.epochs
    )
    if schedule.label_smoothing or schedule.zero_init_residual:
        raise SystemExit("error: this recipe's label smoothing / zero-initialized BN are not mirrored")
    return {
        "arch": args.arch,
        "depth": depth,
        "num_classes": 10,
        "recipe": args.recipe,
        "epochs": args.epochs,
        "seed": args.seed,
        "schedule": schedule.to_dict(),
    }


def keras_figures(run: pathlib.Path):
    """(final, best) test accuracy of one of fit.py's runs, from its history.csv."""
    try:
        with open(run / "history.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as error:
        raise SystemExit(f"error: --keras-run {run}: no fit.py history to compare with ({error.strerror})") from None
    errors = [float(row["test_error"]) for row in rows if row.get("test_error") not in (None, "")]
    if not errors:
        return None, None
    return 1.0 - errors[-1], 1.0 - min(errors)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True, help="the PyTorch run's directory (resumed if it exists)")
    parser.add_argument("--data-dir", help="TFDS data dir holding cifar10 (default: $TFDS_DATA_DIR)")
    parser.add_argument("--arch", default="resnet20", choices=[f"resnet{d}" for d in (20, 32, 44, 56, 110)])
    parser.add_argument("--recipe", default="fast", choices=("fast", "paper"))
    parser.add_argument("--epochs", type=float, help="the run's length (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keras-run", help="a fit.py run of the same recipe and length to compare with")
    parser.add_argument(
        "--torch-python", help="interpreter with torch (default: $TORCH_PYTHON, ~/torch-venv/bin/python)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    run_dir = pathlib.Path(args.output_dir).expanduser()
    if args.child:
        return child(run_dir)
    if args.epochs is not None and not (math.isfinite(args.epochs) and args.epochs >= 1):
        raise SystemExit(f"error: --epochs {args.epochs}; expected a number >= 1")
    python = args.torch_python or os.environ.get("TORCH_PYTHON") or os.path.expanduser("~/torch-venv/bin/python")
    probe = (
        subprocess.run([python, "-c", "import torch, numpy"], capture_output=True, text=True)
        if os.path.exists(python)
        else None
    )
    if probe is None or probe.returncode != 0:
        raise SystemExit(
            f"error: {python} cannot import torch and numpy; install them in a venv of their own "
            "(python3 -m venv ~/torch-venv && ~/torch-venv/bin/pip install torch numpy) "
            "and pass --torch-python"
        )
    settings = settings_for(args)
    run_dir.mkdir(parents=True, exist_ok=True)
    settings_path = run_dir / "parity.json"
    if settings_path.exists():
        old = _read_json(settings_path)
        if old != settings:
            raise SystemExit(
                f"error: {run_dir} holds a run of other settings ({settings_path}); use another --output-dir"
            )
    else:
        _write_json(settings_path, settings)
    from trainers.core.errors import UserError

    try:
        export_images(run_dir, args.data_dir)
    except UserError as error:  # a missing data dir or dataset, unreadable records
        raise SystemExit(f"error: {error}") from None
    if not (run_dir / "result.json").exists():
        done = subprocess.run(
            [python, "-m", "benchmarks.torch_parity", "--child", "--output-dir", str(run_dir)], cwd=ROOT
        )
        if done.returncode != 0:
            raise SystemExit(done.returncode)
    result = _read_json(run_dir / "result.json")
    rows = [("torch float32 (akamaster-style)", result["final_test_accuracy"], result["best_test_accuracy"])]
    if args.keras_run:
        rows.append(("resnet_keras (fit.py)", *keras_figures(pathlib.Path(args.keras_run).expanduser())))
    print(f"{args.arch}, recipe {args.recipe}, {settings['schedule']['total_steps']} iterations:")
    for name, final, best in rows:
        fmt = lambda v: f"{100 * v:.2f}%" if v is not None else "n/a (no test figure)"  # noqa: E731
        print(f"  {name:34s} final {fmt(final)}, best epoch {fmt(best)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
