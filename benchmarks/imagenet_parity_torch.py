"""The PyTorch side of ``benchmarks/imagenet_parity.py`` (run by it, not by hand).

    TORCH_PYTHON -m benchmarks.imagenet_parity_torch --dir DIR

Reads ``DIR/torch_request.json`` (the networks, the seed) and ``DIR/images.npy`` (uint8, N x S x S x 3, RGB),
written by the parent. For each network: builds it with torchvision (``torchvision.models.<name>(weights=None)``) or
timm (``timm.create_model(name, pretrained=False)``), its weights drawn from a seeded generator (the libraries' own
initializers) and then every BatchNorm's statistics and affine parameters redrawn, so that no BN is the identity
(running_mean ~ N(0, 0.1), running_var ~ U(0.5, 2), weight ~ U(0.5, 1.5), bias ~ N(0, 0.1)); saves its state dict
as ``KEY.pth`` (``torch.save``) and, where the ``safetensors`` package is installed, ``KEY.safetensors``; and writes
``KEY.logits.npy``: float32 logits in eval mode of the images as the source's transforms give them to the network
(``pixels / 255``, then the request's mean and std per channel). ``torch_result.json`` (strict JSON) lists what was
written. Every file is written under a temporary name and renamed.

Only the standard library, numpy and torch (+ torchvision / timm / safetensors) here: this runs under the PyTorch
interpreter, which has neither TensorFlow nor this project's dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import numpy as np


def _replace(path: pathlib.Path, write):
    """``write(temporary path)``, then the temporary file renamed to ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json(path: pathlib.Path, data: dict):
    _replace(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n"))


def _save_npy(path: pathlib.Path, array: np.ndarray):
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to a path
        np.save(f, array)


def build(library: str, builder: str):
    """The source's network, its classifier of 1000 classes, no pretrained weights (nothing downloaded)."""
    if library == "torchvision":
        import torchvision

        return getattr(torchvision.models, builder)(weights=None)
    if library == "timm":
        import timm

        return timm.create_model(builder, pretrained=False)
    raise SystemExit(f"error: unknown library {library!r} in the request; expected torchvision or timm")


def randomize_batchnorm(model, generator) -> int:
    """Redraws every BatchNorm's running statistics, weight and bias (so eval-mode BN is no identity and timm's
    zero-initialized last BN of each block is not zero); returns how many BN layers there were."""
    import torch

    count = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                count += 1
    return count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, help="the parent's folder: torch_request.json, images.npy")
    args = parser.parse_args(argv)
    run_dir = pathlib.Path(args.dir)

    import torch

    try:
        import safetensors
        import safetensors.torch
    except ImportError:
        safetensors = None

    request = json.loads((run_dir / "torch_request.json").read_text())
    images = np.load(run_dir / "images.npy")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise SystemExit(
            f"error: {run_dir / 'images.npy'} holds {images.dtype} {images.shape}, not N x S x S x 3 uint8"
        )
    torch.set_num_threads(os.cpu_count() or 1)
    pixels = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(torch.float32) / 255.0

    versions = {"torch": torch.__version__, "safetensors": getattr(safetensors, "__version__", None)}
    written = {}
    for index, network in enumerate(request["networks"]):
        key, library, builder = network["key"], network["library"], network["builder"]
        torch.manual_seed(request["seed"] + index)
        model = build(library, builder)
        versions[library] = __import__(library).__version__
        bn_layers = randomize_batchnorm(model, torch.Generator().manual_seed(request["seed"] + 1000 + index))
        model.eval()
        state = model.state_dict()
        pth = run_dir / f"{key}.pth"
        _replace(pth, lambda tmp: torch.save(state, tmp))
        st = None
        if safetensors is not None:
            st = run_dir / f"{key}.safetensors"
            tensors = {name: tensor.contiguous() for name, tensor in state.items()}
            _replace(st, lambda tmp: safetensors.torch.save_file(tensors, str(tmp), metadata={"format": "pt"}))
        mean = torch.tensor(network["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(network["std"], dtype=torch.float32).view(1, 3, 1, 1)
        with torch.inference_mode():
            logits = model((pixels - mean) / std).to(torch.float32).numpy()
        logits_path = run_dir / f"{key}.logits.npy"
        _replace(logits_path, lambda tmp: _save_npy(tmp, logits))
        written[key] = {
            "library": library,
            "builder": builder,
            "pth": pth.name,
            "safetensors": None if st is None else st.name,
            "logits": logits_path.name,
            "state_dict_keys": len(state),
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "batchnorm_layers": bn_layers,
        }
        print(f"  torch: {library} {builder}: {len(state)} tensors, logits {tuple(logits.shape)}", flush=True)
    _write_json(run_dir / "torch_result.json", {"versions": versions, "networks": written})
    return 0


if __name__ == "__main__":
    sys.exit(main())
