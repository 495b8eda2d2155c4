"""The table of networks behind ``trainers/summary.py``: each registered
network's depth, parameters, FLOPs and total stride, measured on the model built
at its natural size, beside the paper's numbers where the paper gives them, and
timm's for the bag-of-tricks networks (the paper has none for them)."""

from __future__ import annotations

import json

import resnet_keras

COLUMNS = [
    ("network", "network"),
    ("input", "input"),
    ("block", "block"),
    ("depth", "depth"),
    ("shortcut", "shortcut"),
    ("tweaks", "tweaks"),
    ("params", "params (learned)"),
    ("paper_params", "paper params"),
    ("timm_params", "timm params"),
    ("keras_backbone_params", "Keras count, no head"),
    ("paper_keras_backbone_params", "PAPER.md Keras count"),
    ("flops", "FLOPs (mult-adds)"),
    ("paper_flops", "paper FLOPs"),
    ("timm_flops", "timm FLOPs"),
    ("total_stride", "total stride"),
    ("paper_error", "paper error %"),
]


def summarize(name: str) -> dict:
    """One network's numbers, measured on the model built at its natural size."""
    spec = resnet_keras.resolve_spec(name)
    model = resnet_keras.get_model(name, num_classes=spec.default_num_classes)
    paper = resnet_keras.PAPER_NUMBERS.get(name, {})
    timm = resnet_keras.TIMM_NUMBERS.get(name, {})
    return {
        "network": name,
        "input": "x".join(str(d) for d in spec.default_input_shape),
        "block": spec.block,
        "depth": spec.depth,
        "shortcut": spec.default_shortcut or "none",
        "tweaks": spec.tweaks,
        "params": resnet_keras.count_params(model, trainable_only=True),
        "keras_backbone_params": resnet_keras.count_params(model, head=False),
        "flops": resnet_keras.count_flops(model),
        "total_stride": spec.total_stride,
        "paper_params": paper["params_m"] * 1e6 if "params_m" in paper else None,
        "paper_keras_backbone_params": paper.get("keras_backbone_params"),
        "paper_flops": paper.get("flops"),
        "paper_error": paper.get("error"),
        "timm_params": timm.get("params"),
        "timm_flops": timm.get("flops"),
    }


def _format(key, value):
    if value is None:
        return ""
    if "keras" in key:
        return f"{value:,}"
    if key.endswith("params"):
        return f"{value / 1e6:.3f}M" if value >= 1e4 else str(value)
    if key.endswith("flops"):
        return f"{value / 1e9:.3f}G" if value >= 1e8 else f"{value / 1e6:.1f}M"
    return str(value)


def render(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    header = [title for _, title in COLUMNS]
    body = [[_format(key, row[key]) for key, _ in COLUMNS] for row in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in [header, *body])


NOTES = """\
params (learned): trainable weights, as the paper counts its CIFAR networks.
Keras count, no head: count_params() without the classifier, BN moving statistics included,
  as PAPER.md's Keras reference counts (ImageNet backbones).
paper params: the paper's CIFAR counts (Section 4.2), in millions as the paper rounds them.
PAPER.md Keras count: the exact Keras reference counts of the ImageNet backbones.
FLOPs: multiply-adds of one image through convolutions and dense layers (the paper's Table 1 measure).
paper error: CIFAR-10 test error (Table 6) or ImageNet top-1 10-crop error (Tables 2-4).
tweaks: the bag-of-tricks tweaks (He et al. 2019, arXiv:1812.01187): B the v1.5 bottleneck,
  C the deep stem, D the average-pooled projection shortcut.
timm params, timm FLOPs: timm's published figures for those networks at 224x224 (parameters with
  the classifier; GMACs), not the 2015 paper's."""


def network_table(names=None) -> list[dict]:
    """One row per network of ``names`` (default: every registered one)."""
    return [summarize(name) for name in names or resnet_keras.list_models()]
