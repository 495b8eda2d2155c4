"""Input pipelines: TFDS datasets and a built-in synthetic dataset, with the
paper's augmentation and evaluation views, through ``tf.data``.

Every random choice is a *stateless* op seeded by (run seed, element index), so
a pipeline gives the same batches under any distribution strategy and any
degree of parallelism.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from resnet_keras.ported.classes import readable_class_names
from trainers.core import folder
from trainers.core.errors import UserError

SYNTHETIC = "synthetic"
AUTOTUNE = tf.data.AUTOTUNE
# tf.data's autotuner gives every iterator an optimization thread, and
# destroying the iterator (each time fit or evaluate returns) waits for that
# thread's current sleep: 0.3 to 4 s here (docs/benchmarks.md, "The stall at
# the end of fit"). The pipelines therefore use fixed parallelism and turn the
# autotuner off, unless this is set to True (the benchmark compares both).
USE_AUTOTUNE = False
PREFETCH_BATCHES = 2
# Threads one op of the input pipeline may use (0: TensorFlow's default, the
# shared intra-op pool that the training step's kernels also use). With 1 the
# pipeline's ops stop queueing work in front of the step's: fit.py end to end
# went from 0.914 to 0.959 of model-only steps (docs/benchmarks.md).
PIPELINE_INTRA_OP_THREADS = 1
# CIFAR-style augmentation on whole batches (random draws still per element).
BATCHED_CIFAR_AUGMENTATION = True


def _parallel():
    return AUTOTUNE if USE_AUTOTUNE else max(2, os.cpu_count() or 2)


def _prefetch():
    return AUTOTUNE if USE_AUTOTUNE else PREFETCH_BATCHES


def _finish(ds: tf.data.Dataset) -> tf.data.Dataset:
    """The last step of every pipeline: prefetch, the autotuner's setting, and
    (``PIPELINE_INTRA_OP_THREADS``) how many threads each of the pipeline's ops
    may use."""
    ds = ds.prefetch(_prefetch())
    options = tf.data.Options()
    if not USE_AUTOTUNE:
        options.autotune.enabled = False
    if PIPELINE_INTRA_OP_THREADS:
        options.threading.max_intra_op_parallelism = PIPELINE_INTRA_OP_THREADS
    return ds.with_options(options)


# AlexNet-style "PCA" colour augmentation (Krizhevsky et al. 2012), with the
# eigenvalues and eigenvectors of ImageNet RGB pixels in [0, 1] as published
# with fb.resnet.torch; scaled to [0, 255] here. Standard deviation 0.1.
PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
PCA_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]], np.float32)
PCA_STD = 0.1
# ImageNet: the shorter side is drawn in [256, 480] for a 224 crop; evaluation
# resizes it to 256. Other crop sizes scale these proportionally.
SCALE_RANGE = (256, 480)
EVAL_RESIZE = 256
# Decoded images are cached in memory when they fit in this many bytes.
CACHE_LIMIT_BYTES = 4 * 2**30
# Decoded RGB over JPEG bytes: about 13 for Imagenette's 160 px photographs
# (76 MB of JPEG, 1.0 GB decoded); 16 leaves a margin.
JPEG_EXPANSION = 16


@dataclasses.dataclass
class DataInfo:
    """What a run needs to know about its data."""

    name: str
    style: str  # "cifar" (pad-crop-flip) or "imagenet" (scale, crop, flip, colour)
    image_size: int
    num_classes: int
    class_names: list
    num_train: int
    num_val: int
    num_test: int
    test_split: str
    data_dir: str | None
    synthetic: bool
    # Re-encode every image as JPEG at this quality after decoding (an
    # experiment knob: what does compression cost?); None leaves pixels alone.
    jpeg_quality: int | None = None
    # An image folder (``folder:PATH``): split -> (file paths, labels), and the
    # bytes of its files; None for TFDS and synthetic data.
    files: dict | None = None
    folder_bytes: int = 0
    # ``--skip-bad-images``: (path, split, reason) of every file of the folder
    # left out because it does not decode; None without the flag.
    skipped: list | None = None


# ----------------------------------------------------------------- synthetic
def synthetic_arrays(num_examples: int, image_size: int, num_classes: int, seed: int, offset: int = 0):
    """Images (uint8, N x S x S x 3) and labels of the built-in dataset.

    Each class is a prototype: a colour pattern made of three random sinusoidal
    gratings, drawn from ``seed`` alone. An example is its class's prototype,
    circularly shifted by up to a quarter of the image, with random contrast
    and Gaussian pixel noise. Learnable (a CNN with global pooling is nearly
    shift-invariant), but not from the mean colour alone. ``offset`` picks a
    disjoint range of examples (the test split), with the same prototypes.
    """
    classes = np.random.default_rng([seed, 0])
    yy, xx = np.meshgrid(np.arange(image_size), np.arange(image_size), indexing="ij")
    prototypes = np.zeros((num_classes, image_size, image_size, 3), np.float32)
    for c in range(num_classes):
        for _ in range(3):
            angle = classes.uniform(0, np.pi)
            cycles = classes.uniform(1.0, 4.0)
            phase = classes.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * cycles * (xx * np.cos(angle) + yy * np.sin(angle)) / image_size + phase)
            prototypes[c] += wave[..., None] * classes.uniform(-1, 1, 3)
    prototypes /= np.abs(prototypes).max(axis=(1, 2, 3), keepdims=True)

    examples = np.random.default_rng([seed, 1, offset])
    labels = examples.integers(0, num_classes, num_examples).astype(np.int64)  # first: synthetic_labels
    images = np.empty((num_examples, image_size, image_size, 3), np.uint8)
    max_shift = max(1, image_size // 4)
    for i, label in enumerate(labels):
        dy, dx = examples.integers(-max_shift, max_shift + 1, 2)
        pattern = np.roll(prototypes[label], (dy, dx), axis=(0, 1))
        contrast = examples.uniform(40, 90)
        noisy = 128 + contrast * pattern + examples.normal(0, 40, pattern.shape)
        images[i] = np.clip(noisy, 0, 255).astype(np.uint8)
    return images, labels


def synthetic_labels(num_examples: int, num_classes: int, seed: int, offset: int = 0) -> np.ndarray:
    """The labels of :func:`synthetic_arrays` without its images (the same
    generator's first draw)."""
    return np.random.default_rng([seed, 1, offset]).integers(0, num_classes, num_examples).astype(np.int64)


# ---------------------------------------------------------------------- TFDS
def resolve_data_dir(data_dir: str | None) -> str:
    if data_dir:
        return os.path.abspath(os.path.expanduser(data_dir))
    if os.environ.get("TFDS_DATA_DIR"):
        return os.path.abspath(os.path.expanduser(os.environ["TFDS_DATA_DIR"]))
    return os.path.expanduser("~/tensorflow_datasets")


def tfds_builder(name: str, data_dir: str):
    """The prepared TFDS builder for ``name`` in ``data_dir``, or a
    :class:`UserError` saying where it looked and how to fix it."""

    how = (
        f"This project never downloads during a run. Prepare it where a network is reachable "
        f"(`tfds build {name} --data_dir DIR`), copy DIR here, and pass --data-dir DIR or set TFDS_DATA_DIR; "
        f"or use --dataset synthetic"
    )
    unreadable = [
        p
        for p in (data_dir, os.path.join(data_dir, name.split("/")[0]))
        if os.path.isdir(p) and not os.access(p, os.R_OK | os.X_OK)
    ]
    if unreadable:
        raise UserError(
            f"the data dir {unreadable[0]} cannot be read (permission denied); dataset {name!r} "
            "is there but this user may not list or open it"
        )
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except PermissionError as error:
        raise UserError(f"dataset {name!r} in {data_dir} cannot be read: {error}") from None
    except Exception as error:  # DatasetNotFoundError, bad config names, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(f"dataset {name!r} is not a TFDS dataset ({type(error).__name__}: {first}). {how}") from None
    if not builder.is_prepared():
        raise UserError(f"dataset {name!r} is not present in the data dir {data_dir}. {how}")
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise UserError(f"dataset {name!r} has no 'image' and 'label' features; it cannot train a classifier")
    return builder


DECODE_SCAN_BYTES = 2 * 2**30  # the largest dataset whose images are decoded one by one to find a broken one
DATA_ERRORS = ("DataLossError", "InvalidArgumentError", "NotFoundError", "PermissionDeniedError", "UnknownError")


def _tf_message(line: str) -> str:
    """TensorFlow's error line without its function-node prefix and op suffix."""
    line = line.split("}}")[-1].strip() or line
    return line.split(" [Op:")[0].strip()


def explain_data_error(error, dataset: str, data_dir) -> UserError | None:
    """One line for a failure to read a dataset (a truncated or corrupt record
    file, an unreadable file, an image that does not decode), naming the file
    and its split; None when ``error`` is not about reading data. On a TFDS
    dataset every record file is read through once to find the broken one."""
    if type(error).__name__ not in DATA_ERRORS:
        return None
    message = (getattr(error, "message", None) or str(error)).strip().splitlines()[0]
    message = _tf_message(message)
    decoding = any(word in message.lower() for word in ("decode", "jpeg", "png", "gif", "bmp", "image"))
    if type(error).__name__ == "InvalidArgumentError" and not decoding:
        return None  # a shape or value error of the model, not the data
    if dataset == SYNTHETIC:
        return None
    if dataset.startswith("folder:"):
        return UserError(
            f"--dataset {dataset}: a file could not be read or decoded during the run ({message}); "
            "it changed since the run checked it"
        )

    try:
        builder = tfds.builder(dataset, data_dir=resolve_data_dir(data_dir))
        splits = {name: [str(p) for p in split.filepaths] for name, split in builder.info.splits.items()}
    except Exception:  # noqa: BLE001 (the dataset itself is unreadable: say what TensorFlow said)
        return UserError(f"reading {dataset!r} failed: {message}")
    again = "prepare the dataset again (`tfds build`) or copy it anew. Nothing of the run was changed"
    for name, paths in splits.items():
        for path in paths:
            try:
                for _ in tf.data.TFRecordDataset(path):
                    pass
            except tf.errors.OpError as found:
                why = _tf_message((found.message or str(found)).strip().splitlines()[0])
                return UserError(f"the {name} split of {dataset!r} is unreadable: {path} ({why}); {again}")
    if decoding:  # every record reads: find the image that does not decode (decoding all is slow on big sets)
        size = sum(os.path.getsize(path) for paths in splits.values() for path in paths)
        if size > DECODE_SCAN_BYTES:
            return UserError(
                f"an image of {dataset!r} does not decode ({message}); its {size / 2**30:.1f} GiB of "
                f"records are not searched for it (over {DECODE_SCAN_BYTES / 2**30:.0f} GiB). {again}"
            )
        for name, paths in splits.items():
            for path in paths:
                index = _undecodable_record(path)
                if index is not None:
                    return UserError(
                        f"the {name} split of {dataset!r} holds an image that does not decode: record "
                        f"{index} of {path} ({message}); {again}"
                    )
    return UserError(f"reading {dataset!r} failed: {message}")


def _undecodable_record(path: str):
    """The index of the first record of a TFDS record file whose ``image``
    does not decode, or None."""
    for index, record in enumerate(tf.data.TFRecordDataset(path)):
        example = tf.train.Example.FromString(record.numpy())
        feature = example.features.feature.get("image")
        if feature is None or not feature.bytes_list.value:
            continue
        try:
            tf.io.decode_image(feature.bytes_list.value[0], channels=3, expand_animations=False)
        except tf.errors.OpError:
            return index
    return None


def describe(
    dataset: str,
    *,
    data_dir,
    family: str,
    image_size: int,
    val_split: float,
    seed: int,
    synthetic_classes: int = 10,
    synthetic_train: int = 4096,
    synthetic_test: int = 1024,
    jpeg_quality: int | None = None,
    skip_bad_images: bool = False,
    max_bad_fraction: float | None = None,
) -> DataInfo:
    """Resolves a dataset name into a :class:`DataInfo` (no pixels are read,
    except that an image folder's files are each decoded once).

    ``skip_bad_images`` (image folders): files that do not decode are left out
    and listed in ``DataInfo.skipped`` instead of stopping the run, unless more
    than ``max_bad_fraction`` of the folder's files are bad
    (:func:`trainers.core.folder.index_folder`)."""
    if not 0.0 <= val_split < 1.0:
        raise UserError(f"--val-split {val_split}; expected a fraction in [0, 1)")
    if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
        raise UserError(f"--jpeg-quality {jpeg_quality}; expected an integer in [1, 100]")
    if dataset == SYNTHETIC:
        num_val = int(round(val_split * synthetic_train))
        return DataInfo(
            name=SYNTHETIC,
            style=family,
            image_size=image_size,
            num_classes=synthetic_classes,
            class_names=[f"synthetic_{i}" for i in range(synthetic_classes)],
            num_train=synthetic_train - num_val,
            num_val=num_val,
            num_test=synthetic_test,
            test_split="test",
            data_dir=None,
            synthetic=True,
            jpeg_quality=jpeg_quality,
        )
    if folder.is_folder(dataset):
        return _describe_folder(
            dataset,
            family=family,
            image_size=image_size,
            val_split=val_split,
            jpeg_quality=jpeg_quality,
            skip_bad_images=skip_bad_images,
            max_bad_fraction=max_bad_fraction,
        )
    data_dir = resolve_data_dir(data_dir)
    builder = tfds_builder(dataset, data_dir)
    splits = builder.info.splits
    if "train" not in splits:
        raise UserError(f"dataset {dataset!r} has no 'train' split (it has {', '.join(splits)})")
    test_split = "test" if "test" in splits else "validation" if "validation" in splits else None
    if test_split is None:
        raise UserError(f"dataset {dataset!r} has neither a 'test' nor a 'validation' split to evaluate on")
    total = splits["train"].num_examples
    num_val = int(round(val_split * total))
    label = builder.info.features["label"]
    return DataInfo(
        name=dataset,
        style=family,
        image_size=image_size,
        num_classes=label.num_classes,
        # Imagenette's labels are ImageNet wnids: shown, recorded and exported by their names ("tench").
        class_names=readable_class_names(label.names),
        num_train=total - num_val,
        num_val=num_val,
        num_test=splits[test_split].num_examples,
        test_split=test_split,
        data_dir=data_dir,
        synthetic=False,
        jpeg_quality=jpeg_quality,
    )


def _describe_folder(
    dataset, *, family, image_size, val_split, jpeg_quality, skip_bad_images=False, max_bad_fraction=None
) -> DataInfo:
    data = folder.index_folder(dataset, skip_bad=skip_bad_images, max_bad_fraction=max_bad_fraction)
    train, val = data.splits["train"], None
    if val_split > 0:
        train, val = folder.held_out(*train, val_split)
        if not val[0] or not train[0]:
            raise UserError(f"--val-split {val_split} leaves no images on one side of {dataset}")
    if "test" in data.splits:
        test, test_split = data.splits["test"], "test"
    elif "val" in data.splits:
        test, test_split = data.splits["val"], "validation"
    elif val is not None:  # one folder: the held-out part is what runs are evaluated on
        test, test_split, val = val, "held-out", None
    else:
        raise UserError(
            f"{data.root} has no val/ or test/ folder to evaluate on: pass --val-split F to hold out a "
            "fraction F of each class"
        )
    files = {"train": train, "test": test}
    if val is not None:
        files["val"] = val
    return DataInfo(
        name=dataset,
        style=family,
        image_size=image_size,
        num_classes=len(data.class_names),
        class_names=data.class_names,
        num_train=len(train[0]),
        num_val=len(val[0]) if val else 0,
        num_test=len(test[0]),
        test_split=test_split,
        data_dir=data.root,
        synthetic=False,
        jpeg_quality=jpeg_quality,
        files=files,
        folder_bytes=data.total_bytes,
        skipped=data.skipped,
    )


def describe_run(config: dict, image_size: int, data_dir=None) -> DataInfo:
    """The :class:`DataInfo` of a finished run's dataset, from its config.json."""
    return describe(
        config["dataset"],
        data_dir=data_dir or config.get("data_dir"),
        family=config.get("family", "cifar"),
        image_size=image_size,
        val_split=config.get("val_split", 0.0),
        seed=config.get("seed", 0),
        synthetic_classes=config.get("synthetic_classes", 10),
        synthetic_train=config.get("synthetic_train", 4096),
        synthetic_test=config.get("synthetic_test", 1024),
        jpeg_quality=config.get("jpeg_quality"),
        skip_bad_images=bool(config.get("skip_bad_images")),
        max_bad_fraction=config.get("max_bad_fraction"),
    )


def _tfds_split(info: DataInfo, which: str) -> str:
    if which == "test":
        return info.test_split
    if which == "train":
        return "train" if info.num_val == 0 else f"train[:{info.num_train}]"
    return f"train[{info.num_train}:]"


def recompress_jpeg(image, quality: int):
    """``image`` (uint8 HxWx3) encoded as JPEG at ``quality`` and decoded again."""
    encoded = tf.io.encode_jpeg(image, quality=quality, chroma_downsampling=True)
    return tf.ensure_shape(tf.io.decode_jpeg(encoded, channels=3), image.shape)


def raw_dataset(info: DataInfo, which: str, seed: int) -> tf.data.Dataset:
    """(image uint8 HxWx3, label int64) pairs of a split: "train", "val" or "test".
    Decoding runs in parallel; decoded images are cached in memory when small."""
    ds, decode = _source(info, which, seed)
    if decode is _identity:
        return ds
    return ds.map(decode, num_parallel_calls=_parallel())


def _identity(example):
    return example


def _decode_file(example):
    """An image file (JPEG, PNG, BMP, GIF; grey or RGBA become RGB) and its label."""
    image = tf.io.decode_image(tf.io.read_file(example["path"]), channels=3, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3]), example["label"]


def _decode_tfds(example):
    image = tf.io.decode_image(example["image"], channels=3, expand_animations=False)
    return image, tf.cast(example["label"], tf.int64)


def _source(info: DataInfo, which: str, seed: int):
    """The split's elements and the function that turns one into an (image,
    label) pair: decoded pairs (and the identity) for the synthetic set and for
    splits small enough to cache decoded in memory; otherwise encoded TFDS
    examples and their decoder, so a pipeline can shuffle and shard before it
    pays for decoding. With ``info.jpeg_quality`` the decoder also re-encodes
    (before the cache, so once per image)."""
    if which not in ("train", "val", "test"):
        raise ValueError(which)
    if which == "val" and info.num_val == 0:
        raise UserError("no validation split: pass --val-split greater than 0")
    if info.synthetic:
        ds = tf.data.Dataset.from_tensor_slices(_synthetic_split(info, which, seed))
        if info.jpeg_quality is not None:
            ds = ds.map(functools.partial(_recompress_pair, quality=info.jpeg_quality)).cache()
        return ds, _identity

    if info.files is not None:
        paths, labels = info.files[which]
        ds = tf.data.Dataset.from_tensor_slices({"path": list(paths), "label": tf.constant(labels, tf.int64)})
        if which == "train":  # the files come class by class; shuffle buffers may be smaller than the split
            ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=False)
        decode = _folder_decoder(info)
        if _folder_fits_in_memory(info, len(paths)):
            return ds.map(decode, num_parallel_calls=_parallel()).cache(), _identity
        return ds, decode

    ds = _tfds_examples(info, which, seed)
    decode = _tfds_decoder(info)
    if _tfds_fits_in_memory(info, which):
        return ds.map(decode, num_parallel_calls=_parallel()).cache(), _identity
    return ds, decode


def _synthetic_split(info: DataInfo, which: str, seed: int):
    """(images, labels) arrays of a split of the synthetic dataset."""
    count = {"train": info.num_train + info.num_val, "test": info.num_test}["test" if which == "test" else "train"]
    images, labels = synthetic_arrays(
        count, info.image_size, info.num_classes, seed=seed, offset=1 if which == "test" else 0
    )
    if which == "train":
        images, labels = images[: info.num_train], labels[: info.num_train]
    elif which == "val":
        images, labels = images[info.num_train :], labels[info.num_train :]
    return images, labels


def _folder_decoder(info: DataInfo):
    if info.jpeg_quality is None:
        return _decode_file
    return lambda example: _recompress_pair(*_decode_file(example), info.jpeg_quality)


def _folder_fits_in_memory(info: DataInfo, count: int) -> bool:
    """Whether ``count`` of an image folder's files fit in the in-memory cache decoded (estimated)."""
    total_files = sum(len(v[0]) for v in info.files.values())
    return JPEG_EXPANSION * info.folder_bytes * count / max(1, total_files) <= CACHE_LIMIT_BYTES


def _tfds_examples(info: DataInfo, which: str, seed: int) -> tf.data.Dataset:
    """A TFDS split's examples, images left encoded."""
    return tfds.load(
        info.name,
        split=_tfds_split(info, which),
        data_dir=info.data_dir,
        download=False,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )


def _tfds_decoder(info: DataInfo):
    if info.jpeg_quality is None:
        return _decode_tfds
    return functools.partial(_decode_recompressed, quality=info.jpeg_quality)


def _tfds_fits_in_memory(info: DataInfo, which: str) -> bool:
    count = {"train": info.num_train, "val": info.num_val, "test": info.num_test}[which]
    return decoded_bytes(tfds.builder(info.name, data_dir=info.data_dir), count) <= CACHE_LIMIT_BYTES


# ------------------------------------------------------- unbalanced classes
def train_class_counts(info: DataInfo, seed: int) -> np.ndarray:
    """Images per class of the training split (less ``--val-split``'s hold-out),
    as an int64 array of ``info.num_classes``. Free for image folders and the
    synthetic set (their labels are known); a TFDS split's labels are read once
    (its images are not decoded)."""
    if info.synthetic:
        labels = synthetic_labels(info.num_train + info.num_val, info.num_classes, seed)[: info.num_train]
    elif info.files is not None:
        labels = np.asarray(info.files["train"][1], np.int64)
    else:
        ds = _tfds_examples(info, "train", seed).map(lambda example: example["label"], num_parallel_calls=_parallel())
        labels = np.concatenate(
            [np.zeros(0, np.int64), *[b.astype(np.int64) for b in ds.batch(8192).as_numpy_iterator()]]
        )
    return np.bincount(labels, minlength=info.num_classes).astype(np.int64)


def check_even_sampling(info: DataInfo) -> None:
    """Refuses even class sampling where it would read a TFDS split once per
    class per pass: a split too large for the in-memory cache (the per-class
    streams filter the split's records; cached, that happens once)."""
    if info.synthetic or info.files is not None or _tfds_fits_in_memory(info, "train"):
        return
    raise UserError(
        f"--class-balance sampling on {info.name!r}: its training split does not fit the in-memory cache "
        f"({CACHE_LIMIT_BYTES / 2**30:.0f} GiB decoded), and each class's stream would read all its records "
        f"again on every pass ({info.num_classes} classes); use --class-balance weights"
    )


CLASS_SEED_BITS = 20  # the per-class shuffle seeds: (seed << CLASS_SEED_BITS) + class


def balanced_source(info: DataInfo, seed: int):
    """The training split as an endless stream that draws each class with
    probability 1/K, and the function that decodes an element (as
    :func:`_source`'s).

    One stream per class, each its class's images shuffled anew on every pass
    (seeded by ``seed`` and the class) and repeated, merged by
    ``tf.data.Dataset.sample_from_datasets`` with equal weights and ``seed``:
    the same sequence on every build, so every worker of a multi-worker job
    walks the same one (:func:`train_pipeline`'s sharding). A small class's
    images therefore come back more often within an epoch, a large class's
    less. Per class: image folders and the synthetic set by their labels
    (nothing is read twice); a TFDS split by ``filter`` on its records, which
    reads the split once per class when the cache fills (a split that does not
    fit the cache is refused by :func:`check_even_sampling`)."""
    classes = info.num_classes
    if info.synthetic:
        images, labels = _synthetic_split(info, "train", seed)
        parts = [tf.data.Dataset.from_tensor_slices((images[labels == c], labels[labels == c])) for c in range(classes)]
        if info.jpeg_quality is not None:
            recompress = functools.partial(_recompress_pair, quality=info.jpeg_quality)
            parts = [part.map(recompress).cache() for part in parts]
        decode = _identity
    elif info.files is not None:
        paths, labels = info.files["train"]
        paths, labels = np.asarray(paths, dtype=object), np.asarray(labels, np.int64)
        parts = [
            tf.data.Dataset.from_tensor_slices(
                {"path": tf.constant(list(paths[labels == c]), tf.string), "label": tf.constant(labels[labels == c])}
            )
            for c in range(classes)
        ]
        decode = _folder_decoder(info)
        if _folder_fits_in_memory(info, len(paths)):
            parts = [part.map(decode, num_parallel_calls=_parallel()).cache() for part in parts]
            decode = _identity
    else:
        check_even_sampling(info)
        examples = _tfds_examples(info, "train", seed)
        parts = [
            examples.filter(lambda example, c=c: tf.equal(tf.cast(example["label"], tf.int64), c))
            for c in range(classes)
        ]
        decode = _tfds_decoder(info)
        parts = [part.map(decode, num_parallel_calls=_parallel()).cache() for part in parts]
        decode = _identity
    buffer = min(info.num_train, 50_000)
    streams = [
        part.shuffle(buffer, seed=(seed << CLASS_SEED_BITS) + c, reshuffle_each_iteration=True).repeat()
        for c, part in enumerate(parts)
    ]
    return tf.data.Dataset.sample_from_datasets(streams, weights=[1.0 / classes] * classes, seed=seed), decode


def decoded_bytes(builder, count: int) -> float:
    """An upper estimate of ``count`` decoded images of a TFDS dataset: exact
    for a fixed image shape; for images of varying size (Imagenette, ImageNet),
    ``JPEG_EXPANSION`` times the encoded bytes per image of its train split."""
    shape = builder.info.features["image"].shape
    if None not in shape:
        return count * math.prod(shape)
    try:
        split = builder.info.splits["train"]
    except KeyError:  # no split information (TFDS' mock data)
        return math.inf
    if not split.num_examples or not split.num_bytes:
        return math.inf
    return count * JPEG_EXPANSION * split.num_bytes / split.num_examples


def _recompress_pair(image, label, quality):
    return recompress_jpeg(image, quality), label


def _decode_recompressed(example, quality):
    return _recompress_pair(*_decode_tfds(example), quality)


# -------------------------------------------------------------- augmentation
def _seeds(seed, index, n):
    """``n`` independent stateless seeds for element ``index``."""
    base = tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])
    return tf.random.experimental.stateless_split(base, num=n)


def _resize_shorter(image, shorter):
    shape = tf.shape(image)[:2]
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(shorter, tf.float32) / tf.minimum(h, w)
    size = tf.cast(tf.round(tf.stack([h * scale, w * scale])), tf.int32)
    return tf.image.resize(tf.cast(image, tf.float32), tf.maximum(size, shorter), method="bilinear", antialias=True)


def _scaled(value, image_size):
    return int(round(value * image_size / 224))


def scale_range(image_size: int) -> tuple[int, int]:
    """The range of the shorter side in ImageNet-style training: [256, 480] for
    a 224 crop, in proportion for other crop sizes."""
    return _scaled(SCALE_RANGE[0], image_size), _scaled(SCALE_RANGE[1], image_size)


def train_view(image, index, seed, style, image_size, augment="scale"):
    """The training augmentation, as float32 pixels in [0, 255].

    cifar: pad 4 pixels on every side (zeros), random crop back to the image
    size, random horizontal flip (Section 4.2).
    imagenet, ``augment="scale"`` (the paper's): shorter side random in
    [256, 480] (scaled by image_size / 224), random image_size crop, random
    flip, PCA colour noise (Section 3.4).
    imagenet, ``augment="rrc"`` (not the paper's): a random crop of 35-100% of
    the image's area and aspect ratio in [3/4, 4/3], resized to image_size,
    random flip."""
    crop_seed, flip_seed, scale_seed, colour_seed = tf.unstack(_seeds(seed, index, 4))
    if style == "cifar":
        image = tf.image.resize_with_crop_or_pad(image, image_size + 8, image_size + 8)
        image = tf.image.stateless_random_crop(image, [image_size, image_size, 3], seed=crop_seed)
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
        return tf.cast(image, tf.float32)
    if augment == "rrc":
        image = random_resized_crop(image, image_size, crop_seed)
        return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    if augment != "scale":
        raise ValueError(f"augment {augment!r}; expected 'scale' or 'rrc'")
    low, high = scale_range(image_size)
    shorter = tf.random.stateless_uniform([], scale_seed, minval=low, maxval=high + 1, dtype=tf.int32)
    image = _resize_shorter(image, shorter)
    image = tf.image.stateless_random_crop(image, [image_size, image_size, 3], seed=crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    alpha = tf.random.stateless_normal([3], colour_seed, stddev=PCA_STD)
    shift = tf.linalg.matvec(tf.constant(PCA_EIGVEC), alpha * PCA_EIGVAL) * 255.0
    return tf.clip_by_value(image + shift, 0.0, 255.0)


RRC_AREA = (0.35, 1.0)
RRC_ASPECT = (3 / 4, 4 / 3)


def random_resized_crop(image, image_size, seed):
    """A box of ``RRC_AREA`` of the image's area and aspect ratio in
    ``RRC_ASPECT`` (the whole image when ten draws all fail), resized to
    ``image_size`` square: float32."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=RRC_ASPECT,
        area_range=RRC_AREA,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, size)
    crop = tf.image.resize(tf.cast(crop, tf.float32), [image_size, image_size], method="bilinear", antialias=True)
    return tf.ensure_shape(crop, [image_size, image_size, 3])


def eval_view(image, style, image_size):
    """The evaluation view: cifar, the image itself; imagenet, the centre crop
    of the image resized to shorter side 256 (scaled by image_size / 224)."""
    if style == "cifar":
        image = tf.cast(image, tf.float32)
        shape = tf.shape(image)
        if image.shape[0] != image_size or image.shape[1] != image_size:
            image = tf.cond(
                tf.logical_and(tf.equal(shape[0], image_size), tf.equal(shape[1], image_size)),
                lambda: image,
                lambda: tf.image.resize(image, [image_size, image_size], antialias=True),
            )
        return tf.ensure_shape(image, [image_size, image_size, 3])
    image = _resize_shorter(image, _scaled(EVAL_RESIZE, image_size))
    return tf.ensure_shape(tf.image.resize_with_crop_or_pad(image, image_size, image_size), [image_size, image_size, 3])


def ten_crop_views(image, image_size):
    """The paper's 10-crop test: four corners and centre of the image resized to
    shorter side 256 (scaled), and their flips: (10, S, S, 3) float32."""
    image = _resize_shorter(image, _scaled(EVAL_RESIZE, image_size))
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    s = image_size
    offsets = [(0, 0), (0, w - s), (h - s, 0), (h - s, w - s), ((h - s) // 2, (w - s) // 2)]
    crops = [tf.image.crop_to_bounding_box(image, y, x, s, s) for y, x in offsets]
    crops += [tf.image.flip_left_right(c) for c in crops]
    return tf.ensure_shape(tf.stack(crops), [10, s, s, 3])


# ----------------------------------------------------------------- pipelines
def train_pipeline(
    info: DataInfo,
    batch_size: int,
    seed: int,
    shard: tuple[int, int] = (0, 1),
    chunks: int = 1,
    augment: str = "scale",
    mixup: float = 0.0,
    sample_evenly: bool = False,
) -> tf.data.Dataset:
    """Endless shuffled, augmented, batched training data.

    Under a strategy with several replicas, build it inside
    ``strategy.distribute_datasets_from_function`` with the per-replica batch
    (see :func:`distributed_train_data`): consecutive batches then go to the
    replicas in turn, so the global batch holds the same images as without
    distribution.

    ``shard=(index, count)`` and ``chunks``: for one of ``count`` input
    pipelines (one per worker) feeding ``chunks`` replicas in all. Every
    pipeline walks the same shuffled sequence (same seed) and keeps the
    per-replica batches that belong to its own replicas, *before* decoding
    and augmentation, so each worker decodes and augments only its share, and
    the global batch of iteration t holds exactly the images (and the
    augmentation) that one process with the whole batch would use.

    ``mixup`` > 0: each batch is mixed with itself reversed (:func:`mix_batch`),
    and its labels become probability vectors over the classes.

    ``sample_evenly`` (``--class-balance sampling``): the images are drawn
    class by class with equal probability (:func:`balanced_source`) instead of
    as a shuffled pass over the split; everything after (the element counter
    that seeds each image's augmentation, the sharding, mixup) is the same."""
    index, count = shard
    if sample_evenly:
        ds, decode = balanced_source(info, seed)
    else:
        ds, decode = _source(info, "train", seed)
        ds = ds.shuffle(min(info.num_train, 50_000), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate()  # a global element counter: the seed of each element's augmentation
    if count > 1:
        per_pipeline = chunks // count
        ds = ds.filter(lambda i, example: (i // batch_size) % chunks // per_pipeline == index)

    if info.style == "cifar" and BATCHED_CIFAR_AUGMENTATION:
        # The random draws per element (seeded by its global index, as
        # before); the padding, cropping and flipping on whole batches, which
        # costs a fraction of the per-image ops (docs/benchmarks.md).
        def draws(i, example):
            image, label = decode(example)
            image = _cifar_size(image, info.image_size)  # image folders: photographs of any size
            u = tf.random.stateless_uniform([3], tf.stack([tf.cast(seed, tf.int64), tf.cast(i, tf.int64)]))
            return image, label, u

        ds = ds.map(draws, num_parallel_calls=_parallel()).batch(batch_size, drop_remainder=True)
        ds = ds.map(
            lambda images, labels, u: (cifar_batch_view(images, u, info.image_size), labels),
            num_parallel_calls=_parallel(),
        )
        return _finish(_mixed(ds, mixup, seed, info.num_classes))

    def view(i, example):
        image, label = decode(example)
        return train_view(image, i, seed, info.style, info.image_size, augment), label

    ds = ds.map(view, num_parallel_calls=_parallel())
    return _finish(_mixed(ds.batch(batch_size, drop_remainder=True), mixup, seed, info.num_classes))


MIXUP_SEED_TAG = 0x6D6978  # "mix": keeps mixup's draws apart from the per-image augmentation's


def mix_batch(images, labels, alpha, seed, num_classes):
    """mixup (Zhang et al., ICLR 2018) of one batch: ``lam`` drawn from
    Beta(alpha, alpha) (as two Gamma draws), the batch mixed with itself in
    reverse order, ``lam x + (1 - lam) x[::-1]``, and the labels as
    ``lam y + (1 - lam) y[::-1]`` over one-hot vectors. ``seed`` is a
    stateless seed (shape (2,)), so a resumed run mixes as the first did.
    (``keras.layers.MixUp`` does the same from a stateful generator, whose
    draws a resumed run would not repeat.)"""
    a, b = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    x = tf.random.stateless_gamma([], a, alpha=alpha)
    y = tf.random.stateless_gamma([], b, alpha=alpha)
    lam = x / (x + y)
    targets = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
    mixed = lam * images + (1.0 - lam) * tf.reverse(images, axis=[0])
    return mixed, lam * targets + (1.0 - lam) * tf.reverse(targets, axis=[0])


def _mixed(ds: tf.data.Dataset, alpha: float, seed: int, num_classes: int) -> tf.data.Dataset:
    if not alpha:
        return ds

    def mix(b, batch):
        images, labels = batch
        batch_seed = tf.stack([tf.cast(seed, tf.int64) + MIXUP_SEED_TAG, tf.cast(b, tf.int64)])
        return mix_batch(images, labels, float(alpha), batch_seed, num_classes)

    return ds.enumerate().map(mix, num_parallel_calls=_parallel())


def one_hot_labels(ds: tf.data.Dataset, num_classes: int) -> tf.data.Dataset:
    """Evaluation data with its labels as one-hot vectors: what a run trained
    on mixup's probability-vector labels evaluates with."""
    return ds.map(lambda images, labels: (images, tf.one_hot(tf.cast(labels, tf.int32), num_classes)))


def _cifar_size(image, image_size):
    """A uint8 image resized to image_size x image_size where it is not already
    (CIFAR-style data of another size: image folders)."""
    if tuple(image.shape[:2]) == (image_size, image_size):
        return image
    shape = tf.shape(image)

    def resize():
        resized = tf.image.resize(image, [image_size, image_size], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    same = tf.logical_and(tf.equal(shape[0], image_size), tf.equal(shape[1], image_size))
    return tf.ensure_shape(tf.cond(same, lambda: image, resize), [image_size, image_size, 3])


def cifar_batch_view(images, u, image_size, pad=4):
    """The paper's CIFAR augmentation on a batch: zero-pad ``pad`` pixels on
    every side, crop back at the offsets ``floor(u[:, :2] * (2 pad + 1))``, flip
    where ``u[:, 2] < 0.5``. ``images`` uint8 (B, S, S, 3), ``u`` (B, 3) uniform
    in [0, 1); returns float32 pixels."""
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.minimum(tf.cast(tf.floor(u[:, :2] * (2 * pad + 1)), tf.int32), 2 * pad)
    span = tf.range(image_size)
    rows = offsets[:, :1] + span[None]  # (B, S)
    cols = offsets[:, 1:] + span[None]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)  # (B, S, S + 2 pad, 3)
    out = tf.gather(out, cols, axis=2, batch_dims=1)  # (B, S, S, 3)
    out = tf.where((u[:, 2] < 0.5)[:, None, None, None], tf.reverse(out, axis=[2]), out)
    return tf.cast(out, tf.float32)


def eval_pipeline(info: DataInfo, which: str, batch_size: int, seed: int = 0) -> tf.data.Dataset:
    ds = raw_dataset(info, which, seed)
    ds = ds.map(
        lambda image, label: (eval_view(image, info.style, info.image_size), label), num_parallel_calls=_parallel()
    )
    return _shard_by_data(_finish(ds.batch(batch_size)))


def _shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Under MultiWorkerMirroredStrategy, Keras distributes evaluation data
    itself; this says to split it by batches (the TFDS test splits here are
    single files, which file-level sharding cannot split)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def ten_crop_pipeline(info: DataInfo, which: str, batch_size: int) -> tf.data.Dataset:
    ds = raw_dataset(info, which, 0)
    ds = ds.map(lambda image, label: (ten_crop_views(image, info.image_size), label), num_parallel_calls=_parallel())
    return _finish(ds.batch(batch_size))


def flip_views(image, style, image_size):
    """The single evaluation view and its mirror image: (2, S, S, 3) float32 (test-time flip)."""
    view = eval_view(image, style, image_size)
    return tf.stack([view, tf.image.flip_left_right(view)])


def flip_pipeline(info: DataInfo, which: str, batch_size: int, seed: int = 0) -> tf.data.Dataset:
    ds = raw_dataset(info, which, seed)
    ds = ds.map(
        lambda image, label: (flip_views(image, info.style, info.image_size), label), num_parallel_calls=_parallel()
    )
    return _finish(ds.batch(batch_size))


def pixel_mean(info: DataInfo, seed: int, max_images: int = 50_000) -> np.ndarray:
    """Per-pixel mean (H x W x 3, float64) of the training split's evaluation
    view, as the paper subtracts; from at most ``max_images`` images."""
    ds = raw_dataset(info, "train", seed).take(max_images)
    ds = ds.map(lambda image, label: eval_view(image, info.style, info.image_size), num_parallel_calls=_parallel())
    total, count = np.zeros((info.image_size, info.image_size, 3), np.float64), 0
    for batch in ds.batch(1024).prefetch(2).as_numpy_iterator():
        total += batch.sum(axis=0, dtype=np.float64)
        count += len(batch)
    if count == 0:
        raise UserError(f"the training split of {info.name!r} is empty")
    return total / count


def distributed_train_data(
    strategy,
    info: DataInfo,
    global_batch: int,
    seed: int,
    augment: str = "scale",
    mixup: float = 0.0,
    sample_evenly: bool = False,
):
    """Training data for ``strategy``: the plain pipeline with one replica;
    otherwise one pipeline per input worker (its own shard, see
    :func:`train_pipeline`), built fresh by
    ``distribute_datasets_from_function``. (Letting Keras call
    ``experimental_distribute_dataset`` instead rewrites the dataset to rebatch
    it, which re-creates the shuffle's seed generator: the order of the images
    would then depend on the strategy.)"""
    if strategy.num_replicas_in_sync == 1:
        return train_pipeline(info, global_batch, seed, augment=augment, mixup=mixup, sample_evenly=sample_evenly)
    replicas = strategy.num_replicas_in_sync

    def dataset_fn(context):
        return train_pipeline(
            info,
            context.get_per_replica_batch_size(global_batch),
            seed,
            shard=(context.input_pipeline_id, context.num_input_pipelines),
            chunks=replicas,
            augment=augment,
            mixup=mixup,
            sample_evenly=sample_evenly,
        )

    return strategy.distribute_datasets_from_function(dataset_fn)
