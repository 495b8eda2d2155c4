"""The one door for trained models: :func:`load_trained` reads whatever a user
can point a command at and returns the network with what is known about it.

Sources:

- a fit.py run directory: its ``model.keras`` (``which="final"``) or
  ``best.keras`` (``which="best"``), and its config.json;
- a ``.keras`` file, inside a run directory or not (class names, dataset and
  family from the run's config.json beside it, where there is one);
- a ``.weights.h5`` file of a network of this library (``model.save_weights``,
  or a shipped file), loaded into a network shaped like ``like``;
- a ``keras.applications`` ResNet50/101/152 weights file (``.h5``, with or
  without its top), only with ``like`` (a resnet50/101/152 of this library);
- ``weights:ARCH/NAME``: weights shipped in the package (``resnet_keras.pretrained``);
- ``SOURCE:NAME[=PATH]``: published ImageNet weights from torchvision, timm or
  keras-hub (``torchvision:resnet34``, ``timm:resnet50d.ra2_in1k``,
  ``keras-hub:resnet_18_imagenet``), converted into this library's network
  (``resnet_keras.load_imagenet``), with the 1000 ImageNet class names.

Every source that cannot be read is refused here, in one line (:class:`UserError`).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import zipfile
from typing import Any

import h5py
import keras

import resnet_keras
from resnet_keras import pretrained
from resnet_keras.ported import catalog
from resnet_keras.ported.classes import readable_class_names
from trainers.core.errors import UserError, write_failed
from trainers.core.files import read_json, remove_quietly, runs_root, tmp_name
from trainers.core.hardware import global_dtype_policy

SHIPPED_PREFIX = "weights:"
KINDS = ("run", "keras", "weights", "applications", "shipped", "imagenet")
MODEL_FILES = {"final": "model.keras", "best": "best.keras"}
APPLICATION_DEPTHS = {50: "ResNet50", 101: "ResNet101", 152: "ResNet152"}
CLASSIFIER = "logits"
READS = (
    "a run directory of fit.py, a .keras file, a .weights.h5 or keras.applications .h5 file (loaded into a "
    "network, as --init-from does), weights:ARCH/NAME (shipped with the package) or ImageNet weights spelled "
    "SOURCE:NAME[=PATH] (torchvision:resnet34, timm:resnet50d.ra2_in1k, keras-hub:resnet_18_imagenet)"
)


@dataclasses.dataclass(frozen=True)
class Trained:
    """A trained network and what is known about it.

    ``kind``: one of :data:`KINDS`. ``path``: the file read. ``run_dir``: the
    fit.py run it belongs to, or None. ``config``: that run's config.json ({}
    where there is none; for shipped weights, their manifest entry's arch,
    dataset, family, class names, image size and ``shipped: "ARCH/NAME"``).
    ``which``: "final" or "best" for a run's model.keras or best.keras, None
    for any other file. ``image_size``: the network's input size (None where
    it takes any size)."""

    model: Any
    source: str | os.PathLike
    kind: str
    path: pathlib.Path
    run_dir: pathlib.Path | None
    config: dict
    class_names: list[str] | None
    dataset: str | None
    family: str
    image_size: int | None
    which: str | None


def is_shipped(source) -> bool:
    """Whether ``source`` names weights shipped with the package (``weights:ARCH/NAME``)."""
    return str(source).startswith(SHIPPED_PREFIX)


def is_ported(source) -> bool:
    """Whether ``source`` names published ImageNet weights (``SOURCE:NAME[=PATH]``, ``resnet_keras.ported``)."""
    prefix, colon, _ = str(source).partition(":")
    return bool(colon) and prefix in catalog.SOURCES


def is_named(source) -> bool:
    """Whether ``source`` is a name (shipped or published weights), not a path."""
    return is_shipped(source) or is_ported(source)


def named_results_dir(trained: Trained) -> pathlib.Path:
    """Where results about named weights go (never the package, never a
    download cache): saved_models/shipped-ARCH-NAME or saved_models/SOURCE-NAME."""
    if trained.kind == "shipped":
        return runs_root() / ("shipped-" + trained.config["shipped"].replace("/", "-"))
    spec = trained.config["imagenet"]["spec"].partition("=")[0]
    return runs_root() / spec.replace(":", "-").replace("/", "-")


def absolute_source(source: str) -> str:
    """``source`` with its path made absolute (a run resumed from another
    directory reads the same file); names stay names, ``=PATH`` is resolved."""
    if is_shipped(source):
        return source
    if is_ported(source):
        name, equals, path = source.partition("=")
        return name + equals + (str(pathlib.Path(path).expanduser().resolve()) if equals else "")
    return str(pathlib.Path(source).expanduser().resolve())


def load_trained(source, *, which: str = "final", like=None) -> Trained:
    """The trained network ``source`` points at (see the module's docstring).

    ``which``: in a run directory, "final" (model.keras) or "best"
    (best.keras); other sources are one network and ignore it. ``like``: the
    network a ``.weights.h5`` or keras.applications ``.h5`` file is loaded
    into (its name is the architecture, its input shape the input); other
    sources ignore it."""
    if which not in MODEL_FILES:
        raise UserError(f"which={which!r}; expected 'final' or 'best'")
    if is_shipped(source):
        return _shipped(source)
    if is_ported(source):
        return _ported(source, like)
    path = pathlib.Path(source).expanduser().resolve()
    if not path.exists():
        raise UserError(f"no model at {path}: no such file or directory")
    if path.is_dir():
        return _run(source, path, which)
    if path.suffix == ".keras":
        return _keras_file(source, path)
    if path.name.endswith(".weights.h5"):
        return _weights_file(source, path, like)
    if path.suffix == ".h5":
        return _applications_file(source, path, like)
    raise UserError(f"{path}: not a trained model; expected {READS}")


# ------------------------------------------------------------------ sources
def _run(source, path: pathlib.Path, which: str) -> Trained:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UserError(f"{path} is not a run directory (no config.json)")
    config = _read_config(config_path)
    model_path = path / MODEL_FILES[which]
    if not model_path.exists():
        raise UserError(f"no model at {model_path}: the run has no {model_path.name} (has it finished?)")
    return _trained(load_keras_model(model_path), source, "run", model_path, path, config, which)


def _keras_file(source, path: pathlib.Path) -> Trained:
    model = load_keras_model(path)  # the file named is checked first, then the run's config.json beside it
    config_path = path.parent / "config.json"
    run_dir = path.parent if config_path.is_file() else None
    config = _read_config(config_path) if run_dir else {}
    which = {name: key for key, name in MODEL_FILES.items()}.get(path.name) if run_dir else None
    return _trained(model, source, "keras", path, run_dir, config, which)


def _weights_file(source, path: pathlib.Path, like) -> Trained:
    if like is None:
        raise UserError(
            f"{path} holds weights only, not a network: start a run from it with fit.py --init-from, or "
            "load it with model.load_weights() into the network resnet_keras.get_model() builds"
        )
    try:
        classes = _weights_h5_classes(path)
    except OSError as error:
        raise UserError(f"{path}: not a readable weights file ({error})") from None
    arch = like.name
    try:
        model = resnet_keras.get_model(arch, num_classes=classes or 1, input_shape=like.input_shape[1:])
        if classes is None:
            model = resnet_keras.models.headless(model)
        model.load_weights(path)
    except (ValueError, KeyError) as error:
        # Keras' message: a summary line ending in ':', then the first layer's detail.
        lines = [line.split(" Target variable:")[0].strip() for line in str(error).splitlines() if line.strip()][:2]
        raise UserError(f"{path}: these weights do not fit {arch!r} ({' '.join(lines)})") from None
    family = resnet_keras.resolve_spec(arch).family
    return _trained(model, source, "weights", path, None, {}, None, family=family)


def _applications_file(source, path: pathlib.Path, like) -> Trained:
    if like is None:
        raise UserError(
            f"{path}: a keras.applications weights file (.h5) holds weights only; it is read into a "
            "resnet50/101/152 of this library, as fit.py --init-from does"
        )
    try:
        spec = resnet_keras.resolve_spec(like.name)
    except ValueError:
        spec = None
    application = APPLICATION_DEPTHS.get(spec.depth) if spec and spec.block == "bottleneck" else None
    if application is None:
        raise UserError(f"{path}: a keras.applications weights file fits resnet50/101/152 only, not {like.name!r}")
    top = "notop" not in path.name
    try:
        model = getattr(keras.applications, application)(
            weights=str(path),
            include_top=top,
            input_shape=None if top else like.input_shape[1:],
            classifier_activation=None,
        )
    except Exception as error:  # noqa: BLE001 (Keras raises several kinds for a foreign file)
        why = f"{type(error).__name__}: {error}".splitlines()[0]
        raise UserError(f"{path}: not {application} weights ({why})") from None
    return _trained(model, source, "applications", path, None, {}, None, family="imagenet")


def _shipped(source) -> Trained:
    """The network ``get_model`` builds with the package's shipped weights, and
    the class names and dataset of their manifest entry."""
    spec = str(source)
    arch, _, name = spec[len(SHIPPED_PREFIX) :].partition("/")
    if not arch or not name:
        raise UserError(f"{spec!r}: shipped weights are named weights:ARCH/NAME, e.g. weights:resnet20/cifar10")
    try:
        entry = pretrained.find_weights(arch, name)
        build = entry["build"]
        model = resnet_keras.get_model(
            arch,
            num_classes=build["num_classes"],
            input_shape=tuple(build["input_shape"]),
            shortcut=build["shortcut"],
            width=build["width"],
            stage_depths=tuple(build["stage_depths"]),
            bottleneck_version=build["bottleneck_version"],
            normalization=build["normalization"],
            # Weights shipped before a tweak existed record none: the row's.
            stem=build.get("stem"),
            shortcut_downsample=build.get("shortcut_downsample"),
            blur_pool=build.get("blur_pool"),
            weights=name,
        )
        path = pretrained.verified_path(entry)
    except ValueError as error:
        raise UserError(str(error)) from None
    config = {
        "arch": arch,
        "dataset": entry["tfds_name"],
        "family": entry["family"],
        "class_names": entry["class_names"],
        "image_size": build["input_shape"][0],
        "shipped": f"{arch}/{name}",
    }
    return _trained(model, source, "shipped", path, None, config, None)


def _ported(source, like) -> Trained:
    """Published ImageNet weights, converted into this library's network: at
    ``like``'s input size where given (``--init-from``), else the source's own
    evaluation size, so the network has a fixed input as the commands expect."""
    try:
        entry = catalog.parse(str(source))
        size = like.input_shape[1] if like is not None and like.input_shape[1] else entry.eval_size
        model, info = resnet_keras.load_imagenet(entry, input_shape=(size, size, 3))
    except ValueError as error:
        raise UserError(str(error)) from None
    config = {
        "arch": entry.arch,
        "dataset": "imagenet2012",
        "family": "imagenet",
        "class_names": info["class_names"],
        "image_size": size,
        "imagenet": {
            "spec": info["spec"],
            "file": str(info["file"]),
            "check": info["check"],
            "sha256": info.get("sha256"),
            "published_top1": entry.top1,
            "network": {"arch": entry.arch, **entry.model_options},
            "mean": [float(v) for v in info["mean"]],
            "std": [float(v) for v in info["std"]],
        },
    }
    return _trained(model, source, "imagenet", pathlib.Path(info["file"]), None, config, None, family="imagenet")


# ------------------------------------------------------------------ helpers
def _read_config(path: pathlib.Path) -> dict:
    config = read_json(path, "run configuration")  # unreadable or corrupt: one line
    if not isinstance(config, dict):
        raise UserError(f"the run configuration {path} is not a JSON object")
    return config


def _family(image_size) -> str:
    """The data family of a network known only by its input size, as evaluation reads it."""
    return "cifar" if image_size is not None and image_size <= 64 else "imagenet"


def _trained(model, source, kind, path, run_dir, config, which, family=None) -> Trained:
    names = config.get("class_names")
    # readable_class_names: a run recorded before wnids were named reads like a new one (and fine-tunes like it).
    class_names = readable_class_names(names) if isinstance(names, list) and names else None
    outputs = model.output_shape[-1]
    if class_names and outputs != len(class_names):
        raise UserError(
            f"{path} has {outputs} outputs but {len(class_names)} class names "
            f"(in {(run_dir or path.parent) / 'config.json'})"
        )
    image_size = model.input_shape[1]
    return Trained(
        model=model,
        source=source,
        kind=kind,
        path=path,
        run_dir=run_dir,
        config=config,
        class_names=class_names,
        dataset=config.get("dataset"),
        family=family or config.get("family") or _family(image_size),
        image_size=image_size,
        which=which,
    )


def _weights_h5_classes(path: pathlib.Path):
    """The class count of a Keras 3 ``.weights.h5`` file of a library network
    (the bias of its classifier, the one Dense layer), or None when it has no
    classifier. Keras files a layer's weights under its class's name
    (``layers/dense``), not the layer's own (``logits``)."""
    with h5py.File(path, "r") as f:
        for name in (CLASSIFIER, "dense"):
            group = f.get(f"layers/{name}/vars")
            if group is not None and "1" in group:
                return int(group["1"].shape[0])
    return None


# ------------------------------------------------------------- .keras files
def float32_clone(model):
    """``model`` rebuilt with float32 layers (every layer's dtype policy
    dropped, built under the float32 policy) and the same weights. Mixed
    precision keeps float32 weights, so nothing is rounded: only the
    computation of the copy changes."""

    with global_dtype_policy("float32"):
        config = model.get_config()
        for layer in config["layers"]:
            layer["config"].pop("dtype", None)
        clone = keras.Model.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


def save_model_atomic(model, path) -> None:
    """Saves ``model`` as a ``.keras`` file under a temporary name, then renames.

    What is saved is the network alone (architecture and weights, no optimizer
    or compile state), with float32 layers whatever precision trained it
    (:func:`float32_clone`), so the file loads and runs at full speed anywhere
    ``resnet_keras`` is imported, without the trainers' optimizer class."""
    path = pathlib.Path(path)
    tmp = tmp_name(path)
    clone = float32_clone(model)
    try:
        clone.save(tmp)
        os.replace(tmp, path)
    except OSError as error:
        raise write_failed(path, error) from None
    finally:
        remove_quietly(tmp)


def load_keras_model(path):
    """A ``.keras`` model loaded in Keras' default safe mode (``resnet_keras``
    registers what it needs), or a :class:`UserError` saying why not."""

    path = pathlib.Path(path)
    if not path.exists():
        raise UserError(f"no model at {path}")

    if path.is_file() and path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise UserError(
            f"{path} is not a .keras model: not a zip archive ({path.stat().st_size} bytes; corrupt or cut short?)"
        )
    try:
        return keras.models.load_model(path)
    except Exception as error:
        why = f"{type(error).__name__}: {error}".strip().splitlines()[0]
        raise UserError(f"{path} is not a loadable .keras model ({why})") from None
