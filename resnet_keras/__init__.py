"""resnet_keras: the networks of He et al., "Deep Residual Learning for Image
Recognition" (2015), in Keras 3.

Importing this package registers its serializable pieces, so a saved model
loads with ``keras.models.load_model(path)`` in Keras' default safe mode.
"""

import os as _os

# TensorFlow chooses, once, when it is first imported, between its oneDNN and its
# Eigen CPU kernels (TF_ENABLE_ONEDNN_OPTS). Left unset it picks oneDNN only on
# CPUs with AVX-512 VNNI, AVX-512 BF16 or AMX, so an AVX2-only CPU trains these
# networks far slower on Eigen (benchmarks/onednn.py measures it; docs/benchmarks.md
# has the figures). Importing this package first turns oneDNN on; an explicit
# TF_ENABLE_ONEDNN_OPTS=0 is kept, and a TensorFlow imported earlier keeps its choice.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from resnet_keras.applications import copy_applications_weights, from_applications
from resnet_keras.blocks import SHORTCUTS
from resnet_keras.cost import count_flops, count_params
from resnet_keras.folding import fold_batchnorm
from resnet_keras.layers import (
    BinomialBlur,
    FusedBatchNormalization,
    InputNormalization,
    MatmulConv2D,
    ReflectPadding2D,
    get_normalization,
    zero_pad_shortcut,
)
from resnet_keras.models import get_model
from resnet_keras.ported.classes import imagenet_class_names, imagenet_wnids
from resnet_keras.ported.load import load_imagenet
from resnet_keras.pretrained import list_weights
from resnet_keras.specs import (
    ARCHITECTURES,
    BLUR_POOLS,
    BOTTLENECK_VERSIONS,
    PAPER_NUMBERS,
    SHORTCUT_DOWNSAMPLES,
    STEMS,
    TIMM_NUMBERS,
    ArchSpec,
    list_models,
    resolve_spec,
)

__version__ = "0.1.0"

import sys as _sys

# Keras builds and loads functional graphs with a recursive walk, several Python
# frames per layer (keras.src.ops.function._build_map_helper); resnet1202 has
# 4,211 layers, past Python's default limit of 1,000 frames.
_sys.setrecursionlimit(max(_sys.getrecursionlimit(), 20_000))


__all__ = [
    "ARCHITECTURES",
    "BLUR_POOLS",
    "BOTTLENECK_VERSIONS",
    "PAPER_NUMBERS",
    "SHORTCUTS",
    "SHORTCUT_DOWNSAMPLES",
    "STEMS",
    "TIMM_NUMBERS",
    "ArchSpec",
    "BinomialBlur",
    "FusedBatchNormalization",
    "InputNormalization",
    "MatmulConv2D",
    "ReflectPadding2D",
    "copy_applications_weights",
    "count_flops",
    "fold_batchnorm",
    "count_params",
    "from_applications",
    "get_model",
    "get_normalization",
    "imagenet_class_names",
    "imagenet_wnids",
    "list_models",
    "list_weights",
    "load_imagenet",
    "resolve_spec",
    "zero_pad_shortcut",
]
