"""Top-1 and top-5 error of a trained model on a dataset's test split.

    python trainers/evaluate.py saved_models/resnet20-cifar10-20261124-101500
    python trainers/evaluate.py RUN_DIR --which best
    python trainers/evaluate.py model.keras --dataset imagenette/160px-v2 --ten-crop
    python trainers/evaluate.py RUN_DIR --all-views     # centre crop and 10-crop side by side
    python trainers/evaluate.py weights:resnet20/cifar10  # weights shipped with the package, on their dataset

A run directory supplies the dataset, image size and seed from its config.json
(the synthetic dataset included); a bare .keras file needs --dataset. Results
are printed and written as JSON (default: RUN_DIR/eval-<which>-<split>[-10crop|-views].json).

Views: the single centre crop at the training size (CIFAR: the image itself),
which is what fast.ai's Imagenette leaderboard reports, and the paper's 10-crop
(Tables 2-4): four corners and the centre of the image resized to shorter side
256 (scaled to the training size), and their flips, softmax averaged.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from trainers.core.common import UserError, load_keras_model, run_main, write_failed, write_json_atomic, read_json  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a run directory, a .keras file, or weights:ARCH/NAME (shipped with the package)")
    p.add_argument("--which", choices=("final", "best"), default="final",
                   help="in a run directory: model.keras (final, default) or best.keras")
    p.add_argument("--dataset", help="TFDS dataset name or 'synthetic' (default: the run's)")
    p.add_argument("--data-dir", help="TFDS data dir (default: the run's, $TFDS_DATA_DIR, ~/tensorflow_datasets)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="test: the dataset's test split (its 'validation' split where it has no 'test')")
    p.add_argument("--ten-crop", action="store_true",
                   help="average the softmax over the paper's 10 crops (corners, centre, flips) of the image "
                   "resized to shorter side 256 (scaled to the model's input size)")
    p.add_argument("--all-views", action="store_true",
                   help="report the centre crop (or CIFAR's original view) and the 10-crop side by side")
    p.add_argument("--batch-size", type=int, default=100, help="images per batch (default 100)")
    p.add_argument("--output", help="JSON file to write (default: in the run directory, or next to the model)")
    return p


def load_target(model_arg: str, which: str = "final"):
    """(model, model_path, config, out_dir) for a run directory (its
    ``model.keras`` or ``best.keras`` and its config.json) or a .keras file
    (an empty config, written beside it), or weights shipped with the package,
    ``weights:ARCH/NAME`` (their manifest's dataset and class names; results
    under saved_models/shipped-ARCH-NAME/)."""
    from trainers.export import SHIPPED_PREFIX, load_shipped

    if str(model_arg).startswith(SHIPPED_PREFIX):
        if which == "best":
            raise UserError(f"--which best: {model_arg} is one set of weights (the manifest says which epoch)")
        from trainers.core.train import runs_root

        model, config, path = load_shipped(str(model_arg))
        return model, path, config, runs_root() / ("shipped-" + config["shipped"].replace("/", "-"))
    target = pathlib.Path(model_arg).expanduser().resolve()
    config = {}
    if target.is_dir():
        config_path = target / "config.json"
        if not config_path.exists():
            raise UserError(f"{target} is not a run directory (no config.json)")
        config = read_json(config_path, "run configuration")
        model_path = target / ("best.keras" if which == "best" else "model.keras")
        out_dir = target
    else:
        model_path, out_dir = target, target.parent
    return load_keras_model(model_path), model_path, config, out_dir


def dataset_for(model, config: dict, dataset: str | None, data_dir: str | None):
    """The DataInfo ``model`` is evaluated on: ``dataset`` (default the run's)
    read as the run read it (its family, validation hold-out and seed) where it
    is the run's own, at the model's input size."""
    from trainers.core import data as data_lib

    dataset = dataset or config.get("dataset")
    if dataset is None:
        raise UserError("--dataset is required when evaluating a .keras file outside a run directory")
    image_size = model.input_shape[1]
    if image_size is None:
        raise UserError("the model has a variable input size; evaluate it at a fixed size")
    family = config.get("family") or ("cifar" if image_size <= 64 else "imagenet")
    same_data = dataset == config.get("dataset")
    info = data_lib.describe(
        dataset, data_dir=data_dir or (config.get("data_dir") if same_data else None), family=family,
        image_size=image_size, val_split=config.get("val_split", 0.0) if same_data else 0.0,
        seed=config.get("seed", 0), synthetic_classes=config.get("synthetic_classes", 10),
        synthetic_train=config.get("synthetic_train", 4096), synthetic_test=config.get("synthetic_test", 1024),
        jpeg_quality=config.get("jpeg_quality") if same_data else None,
    )  # fmt: skip
    if info.num_classes != model.output_shape[-1]:
        raise UserError(f"the model has {model.output_shape[-1]} outputs but {dataset!r} has {info.num_classes} classes")
    return info


def single_view(info) -> str:
    """The name of the one-view evaluation: CIFAR's image itself, or the centre crop."""
    return "original" if info.style == "cifar" else "centre crop"


def view_pipeline(info, view: str, split: str, batch_size: int, seed: int = 0):
    from trainers.core import data as data_lib

    if view == "10-crop":
        return data_lib.ten_crop_pipeline(info, split, batch_size)
    return data_lib.eval_pipeline(info, split, batch_size, seed=seed)


def evaluate(args) -> dict:
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}; expected a positive integer")
    model, model_path, config, out_dir = load_target(args.model, args.which)
    info = dataset_for(model, config, args.dataset, args.data_dir)
    dataset, image_size = info.name, info.image_size

    k = min(5, info.num_classes)
    if args.ten_crop and args.all_views:
        raise UserError("give --ten-crop or --all-views, not both")
    single = single_view(info)
    views = [single, "10-crop"] if args.all_views else ["10-crop" if args.ten_crop else single]
    scores = {}
    for view in views:
        ds = view_pipeline(info, view, args.split, args.batch_size, seed=config.get("seed", 0))
        top1, topk, count = score(model, ds, ten_crop=view == "10-crop", k=k)
        if count == 0:
            raise UserError(f"the {args.split} split of {dataset!r} is empty")
        scores[view] = {"images": count, "top1_error": 1 - top1 / count, f"top{k}_error": 1 - topk / count}
    result = {
        "model": str(model_path),
        "dataset": info.name,
        "synthetic": info.synthetic,
        "split": info.test_split if args.split == "test" else "val",
        "image_size": image_size,
    }
    if args.all_views:
        result["views"] = scores
    else:
        result.update(view=views[0], **scores[views[0]])
    suffix = "-views" if args.all_views else "-10crop" if args.ten_crop else ""
    name = f"eval-{args.which if config else model_path.stem}-{args.split}{suffix}.json"
    output = pathlib.Path(args.output) if args.output else out_dir / name
    if not args.output and not out_dir.exists():  # shipped weights: their results folder under saved_models/
        try:
            out_dir.mkdir(parents=True)
        except OSError as error:
            raise write_failed(out_dir, error) from None
    write_json_atomic(output, result)
    tag = " [SYNTHETIC DATA]" if info.synthetic else ""
    for view, figures in scores.items():
        print(
            f"{model_path.name} on {info.name} {result['split']} ({view} at {image_size}px, {figures['images']} "
            f"images){tag}: top-1 error {100 * figures['top1_error']:.2f}% (accuracy "
            f"{100 * (1 - figures['top1_error']):.2f}%), top-{k} error {100 * figures[f'top{k}_error']:.2f}%"
        )  # fmt: skip
    print(f"written: {output}")
    return result


def score(model, ds, *, ten_crop: bool, k: int, per_image: list | None = None) -> tuple[int, int, int]:
    """Top-1 hits, top-k hits and images of ``model`` on ``ds``. With
    ``per_image``, appends (label, top-1 class) for every image, in order."""
    import keras
    import numpy as np

    top1 = topk = count = 0
    for images, labels in ds.as_numpy_iterator():
        if ten_crop:
            n = images.shape[0]
            logits = model.predict_on_batch(images.reshape((-1,) + images.shape[2:]))
            probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits)).reshape(n, 10, -1).mean(axis=1)
        else:
            probs = keras.ops.convert_to_numpy(model.predict_on_batch(images))
        ranked = np.argsort(-probs, axis=-1)[:, :k]
        if per_image is not None:
            per_image.extend(zip(labels.tolist(), ranked[:, 0].tolist()))
        top1 += int(np.sum(ranked[:, 0] == labels))
        topk += int(np.sum(np.any(ranked == labels[:, None], axis=-1)))
        count += len(labels)
    return top1, topk, count


def main(argv=None):
    return evaluate(build_parser().parse_args(argv))


if __name__ == "__main__":
    run_main(main)
