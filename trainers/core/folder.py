"""Image folders as datasets: ``--dataset folder:PATH``.

PATH holds one subfolder per class (its name is the class name), either
directly or inside split folders::

    PATH/cat/*.jpg, PATH/dog/*.png, ...                 one split; --val-split holds out a part
    PATH/train/cat/..., PATH/val/cat/... (or test/)      the splits as given

The files are indexed by Keras' ``image_dataset_from_directory`` (shuffle off,
nothing decoded): it is maintained with Keras, walks the class folders the
same way on every platform, sorts class names, and knows the formats
``tf.io.decode_image`` reads (JPEG, PNG, BMP, GIF). Its own pipeline resizes
every image to one size, so only its index (``file_paths``, ``class_names``)
is used; the images then go through this project's pipeline (the family's
augmentation, the in-memory cache, sharding, the per-pixel mean). Every file
is decoded once when the dataset is described, so a file that cannot be read
stops the run before anything is written, with its name; with
``skip_bad=True`` (``--skip-bad-images``) such files are left out and listed
instead, unless more than ``max_bad_fraction`` of the folder's files are bad.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pathlib

import keras
import tensorflow as tf

from trainers.core.errors import UserError

PREFIX = "folder:"
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}
FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# --skip-bad-images: the largest fraction of a folder's files that may fail to decode (--max-bad-fraction).
MAX_BAD_FRACTION = 0.05


@dataclasses.dataclass
class FolderData:
    root: str
    class_names: list
    # split -> (paths, labels); "train" always, "val" and "test" where their folders exist.
    splits: dict
    total_bytes: int
    # skip_bad: (path, split, reason) of every file left out because it does not decode; None otherwise.
    skipped: list | None = None


def is_folder(dataset: str | None) -> bool:
    return bool(dataset) and dataset.startswith(PREFIX)


def _index(directory: pathlib.Path) -> tuple[list[str], list[int], list[str]]:
    """(paths, labels, class names) of one split folder, by Keras' indexer."""

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # "Found N files belonging to K classes."
            ds = keras.utils.image_dataset_from_directory(
                str(directory), labels="inferred", shuffle=False, batch_size=None, image_size=(8, 8)
            )
    except ValueError as error:
        raise UserError(f"{directory}: no images in class folders ({error})") from None
    class_names = list(ds.class_names)
    labels = []
    for path in ds.file_paths:
        labels.append(class_names.index(pathlib.Path(path).relative_to(directory).parts[0]))
    return list(ds.file_paths), labels, class_names


def index_folder(
    dataset: str, check_decoding: bool = True, skip_bad: bool = False, max_bad_fraction: float | None = None
) -> FolderData:
    """Indexes ``folder:PATH``; a :class:`UserError` for a path that does not
    exist, no class folders, a class folder without images, fewer than two
    classes, splits whose class names differ, or a file that does not decode.

    ``skip_bad``: every file is decoded, and those that fail are left out and
    listed in ``FolderData.skipped`` as (path, split, reason); refused instead
    (one line naming the count and the fraction) when more than
    ``max_bad_fraction`` (default ``MAX_BAD_FRACTION``) of all the folder's
    files fail, when all of them do, or when a class folder is left with none."""
    root = pathlib.Path(os.path.expanduser(dataset[len(PREFIX) :])).resolve()
    if not root.is_dir():
        raise UserError(f"--dataset {dataset}: {root} is not a directory")
    found = {split: [root / name for name in names if (root / name).is_dir()] for split, names in SPLIT_FOLDERS.items()}
    if any(len(v) > 1 for v in found.values()):
        raise UserError(f"{root} has both val/ and validation/; keep one")
    split_dirs = {split: dirs[0] for split, dirs in found.items() if dirs}
    if split_dirs and "train" not in split_dirs:
        raise UserError(f"{root} has {', '.join(d.name + '/' for d in split_dirs.values())} but no train/ folder")
    if not split_dirs:
        split_dirs = {"train": root}
    splits, names = {}, None
    for split, directory in split_dirs.items():
        classes = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise UserError(f"{directory} has no class folders (one subfolder of images per class)")
        paths, labels, class_names = _index(directory)
        empty = [c for i, c in enumerate(class_names) if i not in set(labels)]
        if empty:
            raise UserError(f"class folder {directory / empty[0]} has no images ({', '.join(FORMATS)})")
        if names is not None and class_names != names:
            raise UserError(
                f"the class folders of {directory} ({', '.join(class_names)}) differ from those of "
                f"{split_dirs['train']} ({', '.join(names)})"
            )
        names = class_names
        splits[split] = (paths, labels)
    if len(names) < 2:
        raise UserError(f"{split_dirs['train']} has one class folder ({names[0]}); a classifier needs at least two")
    skipped = None
    if skip_bad:
        splits, skipped = _without_bad_images(splits, split_dirs, names, max_bad_fraction)
    elif check_decoding:
        for paths, _ in splits.values():
            check_images(paths)
    total = sum(os.path.getsize(p) for paths, _ in splits.values() for p in paths)
    return FolderData(root=str(root), class_names=names, splits=splits, total_bytes=total, skipped=skipped)


def _without_bad_images(splits: dict, split_dirs: dict, names: list, max_bad_fraction: float | None):
    """``splits`` less the files that do not decode, and those files as
    (path, split, reason); a :class:`UserError` where too many are bad."""
    limit = MAX_BAD_FRACTION if max_bad_fraction is None else max_bad_fraction
    skipped = [(path, split, reason) for split, (paths, _) in splits.items() for path, reason in find_bad_images(paths)]
    files = sum(len(paths) for paths, _ in splits.values())
    root = split_dirs["train"] if len(split_dirs) == 1 else split_dirs["train"].parent
    if skipped and len(skipped) == files:
        path, _, reason = skipped[0]
        raise UserError(f"none of the {files:,} files of {root} decodes (the first, {path}: {reason})")
    if len(skipped) / files > limit:
        path, _, reason = skipped[0]
        raise UserError(
            f"{len(skipped):,} of {files:,} files of {root} do not decode ({len(skipped) / files:.1%}), more than "
            f"--max-bad-fraction {limit:g} allows; the first: {path} ({reason})"
        )
    bad = {path for path, _, _ in skipped}
    kept = {}
    for split, (paths, labels) in splits.items():
        pairs = [(p, y) for p, y in zip(paths, labels) if p not in bad]
        left = {y for _, y in pairs}
        for label, name in enumerate(names):
            if label not in left:
                raise UserError(f"class folder {split_dirs[split] / name} has no image that decodes (all were skipped)")
        kept[split] = ([p for p, _ in pairs], [y for _, y in pairs])
    return kept, skipped


def find_bad_images(paths) -> list[tuple[str, str]]:
    """(path, reason) of every file of ``paths`` that cannot be read or decoded, in order."""
    bad = []
    for path in paths:
        try:
            tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except tf.errors.OpError as error:
            bad.append((path, _reason(error)))
    return bad


def _reason(error) -> str:
    """TensorFlow's message for a file, in one line, without its function-node prefix and op suffix."""
    lines = (getattr(error, "message", None) or str(error)).strip().splitlines()
    line = lines[0] if lines else ""
    line = (line.split("}}")[-1].strip() or line).split(" [Op:")[0].strip()
    return line or type(error).__name__


def check_images(paths) -> None:
    """Decodes every file once; a :class:`UserError` naming the first that fails."""

    for path in paths:
        try:
            tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.PermissionDeniedError) as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"cannot decode image {path}: {message}") from None


def held_out(paths, labels, fraction: float):
    """(kept, held out): the last ``fraction`` of each class's files (sorted
    order), so both parts hold every class in proportion."""
    kept, out = ([], []), ([], [])
    for label in sorted(set(labels)):
        mine = [p for p, y in zip(paths, labels) if y == label]
        n_out = int(round(fraction * len(mine)))
        for i, path in enumerate(mine):
            part = out if i >= len(mine) - n_out else kept
            part[0].append(path)
            part[1].append(label)
    return kept, out
