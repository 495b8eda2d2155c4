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
stops the run before anything is written, with its name.
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


@dataclasses.dataclass
class FolderData:
    root: str
    class_names: list
    # split -> (paths, labels); "train" always, "val" and "test" where their folders exist.
    splits: dict
    total_bytes: int


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


def index_folder(dataset: str, check_decoding: bool = True) -> FolderData:
    """Indexes ``folder:PATH``; a :class:`UserError` for a path that does not
    exist, no class folders, a class folder without images, fewer than two
    classes, splits whose class names differ, or a file that does not decode."""
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
    if check_decoding:
        for paths, _ in splits.values():
            check_images(paths)
    total = sum(os.path.getsize(p) for paths, _ in splits.values() for p in paths)
    return FolderData(root=str(root), class_names=names, splits=splits, total_bytes=total)


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
