"""Parity of ported ImageNet weights: the source's network and ours, loaded from the same file, give the same logits.

    python -m benchmarks.imagenet_parity                                   # every network below
    python -m benchmarks.imagenet_parity --networks torchvision:resnet18 --image-size 64
    python -m benchmarks.imagenet_parity --torch-python ~/torch-venv/bin/python --keras-hub-path /tmp/kh \\
        --out /tmp/parity --keep-files

A check of ``resnet_keras.ported`` (readers, mapping, catalog), not a benchmark of speed: nothing is timed.

torchvision resnet18/34/50/101/152 and timm resnet18/34/50/50d: a PyTorch child (``benchmarks/imagenet_parity_torch.py``
under ``--torch-python``, else ``$TORCH_PYTHON``, else ``~/torch-venv/bin/python``; PyTorch is not a dependency of
this project: ``python3 -m venv ~/torch-venv && ~/torch-venv/bin/pip install torch torchvision timm safetensors``)
builds each network with seeded random weights and every BatchNorm's statistics and affine parameters redrawn
(running_mean ~ N(0, 0.1), running_var ~ U(0.5, 2), weight ~ U(0.5, 1.5), bias ~ N(0, 0.1): no BN is the identity),
saves its state dict as a ``torch.save`` .pth and as .safetensors (or the .pth alone, without the safetensors package
there, and this parent writes the .safetensors from it), and computes float32 eval-mode logits of the same raw images
(a seeded batch of uint8 RGB images, ``images.npy``, made here) normalized as the source's transforms do:
``pixels / 255``, then the catalog entry's mean and std.

keras-hub (no PyTorch): a child of this interpreter, with ``--keras-hub-path`` (else ``$KERAS_HUB_PATH``) put in front
of ``PYTHONPATH``, builds ``keras_hub.models.ResNetBackbone`` with the configuration of each preset's network (v1
resnet_18 and resnet_50: the 7x7 stem, basic_block / bottleneck_block; resnet_vd_50: the 32-32-64 3x3 stem,
bottleneck_block_vd), random weights, BN redrawn as above, a ``ResNetImageClassifier`` head (``predictions``) and a
``ResNetImageConverter`` with the preset's normalization (scale 1/255/std, offset -mean/std; for vd in the old
mean/variance spelling keras-hub's vd conversion script used), saves it with ``save_to_preset``, loads the preset
back with ``keras_hub.models.ImageClassifier.from_preset`` and computes the logits of the reloaded classifier on its
converter's output (its image_size is the images' size, so the resize is the identity). keras-hub imports without its
heavy dependencies (tensorflow-text, kagglehub, sentencepiece) but needs ``regex`` and ``tokenizers``:
``pip install --no-deps --target /tmp/kh keras-hub regex tokenizers``. Where it does not import, its rows are
skipped, with the reason.

This interpreter then reads each PyTorch file with ``resnet_keras.ported.readers.read_weights_file``, builds the
catalog entry's network with ``catalog.build`` (which puts the mean and std into the model: it takes the raw pixels)
and loads it with ``mapping.load_torch_state_dict``; a keras-hub preset folder goes through the library's
``load_imagenet("keras-hub:NAME=FOLDER")`` (where ``resnet_keras.ported.load`` has it; else its ``model.weights.h5``
and ``task.weights.h5`` are read here with ``readers.read_keras_weights_h5``, each layer by its ``name`` attribute,
and loaded with ``mapping.load_keras_hub_weights``). Each runs under the float32 dtype policy, and it compares:
max relative difference (max |ours - theirs| / max |theirs|), max absolute difference and top-1 agreement. A row
passes when the relative difference is at most ``--tolerance`` (1e-4) and the top-1 classes agree (a disagreement
where the source's two best logits are closer than twice the absolute difference, a tie at this precision, is
reported but does not fail).

The weights are random: an entry's tag (``torchvision:resnet50`` = IMAGENET1K_V2, ``timm:resnet50d.ra2_in1k``, ...)
chooses only the network and its normalization, never trained values. ``--networks`` takes any catalog spelling
(``SOURCE:NAME``) whose network the children can build.

``--out DIR`` (default: a new temporary folder) holds the files and ``parity.json`` (strict JSON, written atomically);
without ``--keep-files`` only ``parity.json`` is left there. Prints a table; exits 1 when a row fails or nothing was
compared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from trainers.core.files import remove_quietly, tmp_name, write_json_atomic

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]

DEFAULT_NETWORKS = (
    "torchvision:resnet18",
    "torchvision:resnet34",
    "torchvision:resnet50",
    "torchvision:resnet101",
    "torchvision:resnet152",
    "timm:resnet18.a1_in1k",
    "timm:resnet34.a1_in1k",
    "timm:resnet50.a1_in1k",
    "timm:resnet50d.ra2_in1k",
    "keras-hub:resnet_18_imagenet",
    "keras-hub:resnet_50_imagenet",
    "keras-hub:resnet_vd_50_imagenet",
)
TOLERANCE = 1e-4
NUM_CLASSES = 1000
TORCH_INSTALL_HINT = (
    "python3 -m venv ~/torch-venv && ~/torch-venv/bin/pip install torch torchvision timm safetensors, "
    "then pass --torch-python ~/torch-venv/bin/python"
)
KERAS_HUB_INSTALL_HINT = (
    "pip install --no-deps --target /tmp/kh keras-hub regex tokenizers, then pass --keras-hub-path /tmp/kh"
)
RANDOM_NOTE = (
    "random weights with redrawn BN statistics: the tag chooses only the network and its normalization, "
    "not trained values"
)


def _replace(path: pathlib.Path, write):
    """``write(temporary path)``, then the temporary file renamed to ``path``
    (the project's temporary names: :func:`trainers.core.files.tmp_name`)."""
    tmp = tmp_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        remove_quietly(tmp)


def _save_npy(path: pathlib.Path, array: np.ndarray):
    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to the temporary name
            np.save(f, array)

    _replace(path, write)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# ------------------------------------------------------------------------------------------------ what to compare


def keras_hub_config(arch: str) -> dict:
    """keras-hub ``ResNetBackbone`` arguments of our network ``arch``: v1 (7x7 stem) or vd (deep stem, average-pooled
    projections), as its presets and conversion scripts build them."""
    from resnet_keras.specs import resolve_spec

    spec = resolve_spec(arch)
    vd = spec.stem != "standard"
    return {
        "input_conv_filters": [32, 32, 64] if vd else [64],
        "input_conv_kernel_sizes": [3, 3, 3] if vd else [7],
        "stackwise_num_filters": [64, 128, 256, 512],
        "stackwise_num_blocks": [int(d) for d in spec.stage_depths],
        "stackwise_num_strides": [1, 2, 2, 2],
        "block_type": f"{spec.block}_block" + ("_vd" if vd else ""),
        "use_pre_activation": False,
    }


def resolve(specs) -> list[dict]:
    """The networks to compare, one per source network (a second tag of the same network is dropped)."""
    from resnet_keras.ported import catalog

    networks, seen = [], set()
    for spec in specs:
        try:
            entry = catalog.parse(spec)
        except ValueError as error:
            raise SystemExit(f"error: --networks {error}") from None
        if entry.path is not None:
            raise SystemExit(f"error: --networks {spec!r}: no =PATH here, the files are made with random weights")
        if entry.source == "torchvision":
            builder, tag = entry.arch, entry.name.split(".", 1)[1]
        elif entry.source == "timm":
            builder, tag = entry.name.split(".", 1)
        else:
            config = keras_hub_config(entry.arch)
            vd = config["block_type"].endswith("_vd")
            builder, tag = f"resnet_{'vd_' if vd else ''}{entry.arch.removeprefix('resnet').rstrip('d')}", entry.name
        key = f"{entry.source}-{builder}"
        if key in seen:
            continue
        seen.add(key)
        network = {
            "spec": entry.spec,
            "source": entry.source,
            "library": entry.source,
            "builder": builder,
            "tag": tag,
            "arch": entry.arch,
            "key": key,
            "mean": list(entry.mean),
            "std": list(entry.std),
        }
        if entry.source == "keras-hub":
            network["config"] = config
        networks.append(network)
    return networks


def make_images(seed: int, count: int, size: int) -> np.ndarray:
    """A fixed batch of raw RGB images: uint8, count x size x size x 3."""
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------------ PyTorch side


def torch_python(flag: str | None) -> str:
    return flag or os.environ.get("TORCH_PYTHON") or os.path.expanduser("~/torch-venv/bin/python")


def probe(python: str, modules, env=None) -> str | None:
    """None when ``python`` imports ``modules``, else the reason (the error's last line)."""
    if not os.path.exists(python):
        return f"{python} does not exist"
    done = subprocess.run(
        [python, "-c", f"import {', '.join(modules)}"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {done.returncode}"


def run_torch(python: str, out: pathlib.Path, networks: list[dict], seed: int) -> dict:
    libraries = sorted({n["library"] for n in networks})
    reason = probe(python, ["torch", "numpy", *libraries])
    if reason is not None:
        raise SystemExit(
            f"error: {python} cannot import torch, numpy, {', '.join(libraries)} ({reason}); {TORCH_INSTALL_HINT}"
        )
    fields = ("key", "library", "builder", "mean", "std")
    write_json_atomic(
        out / "torch_request.json", {"seed": seed, "networks": [{f: n[f] for f in fields} for n in networks]}
    )
    done = subprocess.run([python, "-m", "benchmarks.imagenet_parity_torch", "--dir", str(out)], cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"error: the PyTorch child failed (exit status {done.returncode})")
    return json.loads((out / "torch_result.json").read_text())


# ---------------------------------------------------------------------------------------------------- keras-hub side


def keras_hub_env(path: str | None) -> dict:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p)
    return env


def _randomize_keras_batchnorm(model, rng) -> int:
    import keras

    count = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = int(layer.gamma.shape[0])
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n),
                    rng.normal(0.0, 0.1, n),
                    rng.normal(0.0, 0.1, n),
                    rng.uniform(0.5, 2.0, n),
                ]
            )
            count += 1
    return count


def keras_hub_child(out: pathlib.Path) -> int:
    """Builds, saves as presets and runs the keras-hub networks of ``keras_hub_request.json`` (under the interpreter
    of this project with keras-hub importable)."""
    import keras
    import keras_hub

    keras.config.set_dtype_policy("float32")
    request = json.loads((out / "keras_hub_request.json").read_text())
    images = np.load(out / "images.npy")
    size = images.shape[1:3]
    written = {}
    for index, network in enumerate(request["networks"]):
        key, config = network["key"], network["config"]
        keras.utils.set_random_seed(request["seed"] + index)
        rng = np.random.default_rng(request["seed"] + 1000 + index)
        backbone = keras_hub.models.ResNetBackbone(**config, image_shape=(None, None, 3))
        mean, std = network["mean"], network["std"]
        if config["block_type"].endswith("_vd"):  # as tools/checkpoint_conversion/convert_resnet_vd_checkpoints.py
            converter = keras_hub.layers.ResNetImageConverter(
                height=int(size[0]), width=int(size[1]), mean=mean, variance=[s * s for s in std], scale=1 / 255
            )
        else:  # as utils/timm/preset_loader.py makes it from timm's pretrained_cfg
            converter = keras_hub.layers.ResNetImageConverter(
                image_size=tuple(int(s) for s in size),
                scale=[1 / 255 / s for s in std],
                offset=[-m / s for m, s in zip(mean, std)],
            )
        preprocessor = keras_hub.models.ResNetImageClassifierPreprocessor(image_converter=converter)
        classifier = keras_hub.models.ResNetImageClassifier(
            backbone=backbone, num_classes=NUM_CLASSES, preprocessor=preprocessor
        )
        bn_layers = _randomize_keras_batchnorm(backbone, rng)
        kernel, bias = classifier.output_dense.get_weights()
        classifier.output_dense.set_weights([kernel, rng.normal(0.0, 0.1, bias.shape)])
        logits = np.asarray(classifier(converter(images), training=False))

        folder = out / key
        tmp = out / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        classifier.save_to_preset(str(tmp))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)

        reloaded = keras_hub.models.ImageClassifier.from_preset(str(folder))
        reloaded_logits = np.asarray(reloaded(reloaded.preprocessor.image_converter(images), training=False))
        _save_npy(out / f"{key}.logits.npy", reloaded_logits.astype(np.float32))
        written[key] = {
            "preset": folder.name,
            "files": sorted(p.name for p in folder.iterdir()),
            "logits": f"{key}.logits.npy",
            "backbone_parameters": int(backbone.count_params()),
            "batchnorm_layers": bn_layers,
            "reload_max_abs_diff": _finite(float(np.max(np.abs(reloaded_logits - logits)))),
            "image_converter": {
                "scale": list(reloaded.preprocessor.image_converter.scale),
                "offset": list(reloaded.preprocessor.image_converter.offset),
            },
        }
        print(f"  keras-hub: {network['builder']} ({config['block_type']}) saved as a preset", flush=True)
        keras.backend.clear_session()
    write_json_atomic(
        out / "keras_hub_result.json",
        {"versions": {"keras_hub": keras_hub.__version__, "keras": keras.__version__}, "networks": written},
    )
    return 0


def run_keras_hub(path: str | None, out: pathlib.Path, networks: list[dict], seed: int) -> tuple[dict | None, str]:
    """(the child's result, "") or (None, why keras-hub was skipped)."""
    env = keras_hub_env(path)
    reason = probe(sys.executable, ["keras_hub"], env=env)
    if reason is not None:
        where = f"with {path} on PYTHONPATH" if path else "(no --keras-hub-path / $KERAS_HUB_PATH given)"
        return None, f"keras_hub does not import {where}: {reason}; {KERAS_HUB_INSTALL_HINT}"
    fields = ("key", "builder", "config", "mean", "std")
    write_json_atomic(
        out / "keras_hub_request.json", {"seed": seed, "networks": [{f: n[f] for f in fields} for n in networks]}
    )
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.imagenet_parity", "--keras-hub-child", "--out", str(out)], cwd=ROOT, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"error: the keras-hub child failed (exit status {done.returncode})")
    return json.loads((out / "keras_hub_result.json").read_text()), ""


def read_keras_hub_preset(folder: pathlib.Path) -> dict:
    """keras-hub layer name -> arrays, from a preset folder's model.weights.h5 (backbone) and task.weights.h5 (head),
    each layer named by its ``name`` attribute."""
    from resnet_keras.ported import readers

    layers = {}
    for file_name in ("model.weights.h5", "task.weights.h5"):
        for group, name, arrays in readers.read_keras_weights_h5(folder / file_name):
            if name is None:
                raise SystemExit(f"error: {folder / file_name}: layers/{group} has no name attribute")
            if name in layers:
                raise SystemExit(f"error: {folder}: two layers named {name!r}")
            layers[name] = arrays
    return layers


# ------------------------------------------------------------------------------------------------------ comparison


def compare(ours: np.ndarray, theirs: np.ndarray, tolerance: float) -> dict:
    """Max relative and absolute differences and top-1 agreement of two logits arrays (N x classes)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        return {"result": "FAIL", "reason": f"logits of shape {ours.shape} against {theirs.shape}"}
    diff = np.abs(ours - theirs)
    max_abs, scale = float(np.max(diff)), float(np.max(np.abs(theirs)))
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    agree = np.argmax(ours, axis=1) == np.argmax(theirs, axis=1)
    top2 = np.sort(theirs, axis=1)[:, -2:]
    ties = (top2[:, 1] - top2[:, 0]) <= 2 * max_abs
    ok = math.isfinite(rel) and rel <= tolerance and bool(np.all(agree | ties))
    return {
        "max_rel_diff": _finite(rel),
        "max_abs_diff": _finite(max_abs),
        "max_abs_reference": _finite(scale),
        "top1_agreement": float(np.mean(agree)),
        "top1_disagreements_at_ties": int(np.sum(~agree & ties)),
        "result": "PASS" if ok else "FAIL",
    }


def _predict(model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model(images.astype(np.float32), training=False))


def check_torch(network: dict, out: pathlib.Path, produced: dict, images, tolerance) -> list[dict]:
    from resnet_keras.ported import catalog, mapping, readers

    entry = catalog.parse(network["spec"])
    reference = np.load(out / produced["logits"])
    paths = {"pth": out / produced["pth"]}
    converted_here = produced.get("safetensors") is None
    if converted_here:  # the torch interpreter had no safetensors: written here from the .pth's tensors
        import safetensors.numpy

        st = out / f"{network['key']}.safetensors"
        # np.array, not np.ascontiguousarray, which makes the 0-d num_batches_tracked 1-d
        tensors = {k: np.array(v, order="C") for k, v in readers.read_torch_zip(paths["pth"]).items()}
        _replace(st, lambda tmp: safetensors.numpy.save_file(tensors, str(tmp), metadata={"format": "pt"}))
        paths["safetensors"] = st
    else:
        paths["safetensors"] = out / produced["safetensors"]

    states = {kind: readers.read_weights_file(path) for kind, path in paths.items()}
    pth, st = states["pth"], states["safetensors"]
    identical = set(pth) == set(st) and all(np.array_equal(pth[k], st[k]) for k in pth)
    rows = []
    for kind, path in paths.items():
        model = catalog.build(entry)
        report = mapping.load_torch_state_dict(model, states[kind], source_name=path.name)
        row = {
            **_row_head(network),
            "file": kind + (" (written here from the .pth)" if kind == "safetensors" and converted_here else ""),
            "file_name": path.name,
            "tensors_loaded": report["tensors"],
            "parameters_loaded": report["parameters"],
            "num_batches_tracked_ignored": report["ignored"],
            "files_identical": identical,
            **compare(_predict(model, images), reference, tolerance),
        }
        if not identical:  # one state dict in two formats: the readers disagree
            row["result"] = "FAIL"
            row["reason"] = "the .pth and the .safetensors read as different tensors"
        rows.append(row)
        del model
    return rows


def load_keras_hub_preset(entry, folder: pathlib.Path):
    """(our model holding the preset's weights, the mapping's report, how it was loaded). Through the library's
    ``resnet_keras.ported.load.load_imagenet`` (``keras-hub:NAME=FOLDER``: the preset's config checked, its layers
    resolved, its image converter compared with the catalog's normalization) where the library has it, else
    read here (:func:`read_keras_hub_preset`) and assigned with ``mapping.load_keras_hub_weights``."""
    from resnet_keras.ported import catalog, mapping

    try:
        from resnet_keras.ported.load import load_imagenet
    except ImportError:
        load_imagenet = None
    if load_imagenet is not None:
        model, info = load_imagenet(f"{entry.source}:{entry.name}={folder}")
        how = f"load_imagenet: layers {info.get('names_resolved')}; normalization from {info.get('normalization_from')}"
        return model, info["loaded"], how
    model = catalog.build(entry)
    report = mapping.load_keras_hub_weights(model, read_keras_hub_preset(folder), source_name=folder.name)
    return (
        model,
        report,
        "readers.read_keras_weights_h5 (layers by their name attribute) + mapping.load_keras_hub_weights",
    )


def check_keras_hub(network: dict, out: pathlib.Path, produced: dict, images, tolerance) -> list[dict]:
    from resnet_keras.ported import catalog

    entry = catalog.parse(network["spec"])
    folder = out / produced["preset"]
    model, report, how = load_keras_hub_preset(entry, folder)
    row = {
        **_row_head(network),
        "file": "preset (model + task .weights.h5)",
        "file_name": folder.name,
        "loaded_by": how,
        "tensors_loaded": report["tensors"],
        "parameters_loaded": report["parameters"],
        "preset_reload_max_abs_diff": produced["reload_max_abs_diff"],
        **compare(_predict(model, images), np.load(out / produced["logits"]), tolerance),
    }
    return [row]


def _row_head(network: dict) -> dict:
    return {key: network[key] for key in ("source", "builder", "tag", "spec", "arch")}


# ------------------------------------------------------------------------------------------------------------ output


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.2e}"


def table(rows: list[dict], tolerance: float) -> str:
    header = ("source", "network", "tag", "ours", "file", "max rel diff", "max abs diff", "top-1", f"<= {tolerance:g}")
    lines = []
    for row in rows:
        if row["result"] == "SKIP":
            cells = (row["source"], row["builder"], row["tag"], row["arch"], "-", "-", "-", "-", "SKIP")
        else:
            top1 = "n/a" if row.get("top1_agreement") is None else f"{100 * row['top1_agreement']:.0f}%"
            file = row["file"].split(" ")[0]
            cells = (
                row["source"],
                row["builder"],
                row["tag"],
                row["arch"],
                file,
                _number(row.get("max_rel_diff")),
                _number(row.get("max_abs_diff")),
                top1,
                row["result"],
            )
        lines.append(cells)
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *(fmt(cells) for cells in lines)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--networks",
        nargs="+",
        metavar="SOURCE:NAME",
        help=f"catalog spellings to compare (default: {' '.join(DEFAULT_NETWORKS)})",
    )
    parser.add_argument(
        "--torch-python",
        help="interpreter with torch, torchvision, timm (default: $TORCH_PYTHON, ~/torch-venv/bin/python)",
    )
    parser.add_argument(
        "--keras-hub-path", help="a folder to put in front of PYTHONPATH for keras_hub (default: $KERAS_HUB_PATH)"
    )
    parser.add_argument("--out", help="folder for the files and parity.json (default: a new temporary folder)")
    parser.add_argument("--image-size", type=int, default=224, help="side of the square images (default 224)")
    parser.add_argument("--images", type=int, default=4, help="how many images (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the images and the weights (default 0)")
    parser.add_argument(
        "--tolerance", type=float, default=TOLERANCE, help=f"max relative difference (default {TOLERANCE:g})"
    )
    parser.add_argument("--keep-files", action="store_true", help="keep the weights, presets, images and logits")
    parser.add_argument("--keras-hub-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.keras_hub_child:
        return keras_hub_child(pathlib.Path(args.out))
    if args.image_size < 32:
        raise SystemExit(f"error: --image-size must be at least 32 (the networks' stride), got {args.image_size}")
    if args.images < 1:
        raise SystemExit(f"error: --images must be at least 1, got {args.images}")
    if not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise SystemExit(f"error: --tolerance must be a positive number, got {args.tolerance}")

    networks = resolve(args.networks or DEFAULT_NETWORKS)
    out = pathlib.Path(args.out).expanduser() if args.out else pathlib.Path(tempfile.mkdtemp(prefix="imagenet-parity-"))
    out.mkdir(parents=True, exist_ok=True)
    images = make_images(args.seed, args.images, args.image_size)
    _save_npy(out / "images.npy", images)

    torch_networks = [n for n in networks if n["source"] != "keras-hub"]
    hub_networks = [n for n in networks if n["source"] == "keras-hub"]
    versions = {}
    torch_result = hub_result = None
    hub_skip = ""
    if torch_networks:
        python = torch_python(args.torch_python)
        print(f"PyTorch child ({python}): {len(torch_networks)} network(s)", flush=True)
        torch_result = run_torch(python, out, torch_networks, args.seed)
        versions.update(torch_result["versions"])
    if hub_networks:
        path = args.keras_hub_path or os.environ.get("KERAS_HUB_PATH")
        print(f"keras-hub child: {len(hub_networks)} network(s)", flush=True)
        hub_result, hub_skip = run_keras_hub(path, out, hub_networks, args.seed)
        if hub_result is not None:
            versions.update(hub_result["versions"])
        else:
            print(f"  skipped: {hub_skip}", flush=True)

    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    rows = []
    try:
        for network in networks:
            print(f"ours: {network['spec']} -> {network['arch']}", flush=True)
            if network["source"] == "keras-hub":
                if hub_result is None:
                    rows.append({**_row_head(network), "result": "SKIP", "reason": hub_skip})
                    continue
                rows += check_keras_hub(network, out, hub_result["networks"][network["key"]], images, args.tolerance)
            else:
                rows += check_torch(network, out, torch_result["networks"][network["key"]], images, args.tolerance)
            keras.backend.clear_session()
    finally:
        keras.config.set_dtype_policy(previous)
    versions["keras"] = keras.__version__

    compared = [r for r in rows if r["result"] != "SKIP"]
    failed = [r for r in rows if r["result"] == "FAIL"]
    result = {
        "note": RANDOM_NOTE,
        "tolerance": args.tolerance,
        "dtype_policy": "float32",
        "images": {"count": args.images, "size": args.image_size, "seed": args.seed, "dtype": "uint8 RGB"},
        "versions": versions,
        "rows": rows,
        "passed": len(compared) - len(failed),
        "failed": len(failed),
        "skipped": len(rows) - len(compared),
        "all_pass": bool(compared) and not failed,
    }
    if not args.keep_files:  # what this run wrote there, nothing else
        made = ["images.npy", "torch_request.json", "torch_result.json", "keras_hub_request.json"]
        made += ["keras_hub_result.json"]
        for network in networks:
            key = network["key"]
            made += [f"{key}.pth", f"{key}.safetensors", f"{key}.logits.npy", key]
        for name in made:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    write_json_atomic(out / "parity.json", result)

    print(f"\n{args.images} images of {args.image_size}x{args.image_size}, float32; {RANDOM_NOTE}.")
    print(table(rows, args.tolerance))
    for row in rows:
        if row.get("reason"):
            print(f"{row['spec']}: {row['result']}: {row['reason']}")
    counts = f"{len(compared) - len(failed)} passed, {len(failed)} failed, {len(rows) - len(compared)} skipped"
    print(f"\n{counts}; {out / 'parity.json'}")
    if not compared:
        print("error: nothing was compared", file=sys.stderr)
    return 0 if result["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
