"""The entry points (fit, evaluate, export, predict, tune, reproduce, ...) and
the code they share.

TensorFlow chooses between its oneDNN and its Eigen CPU kernels once, when it is
first imported, and ``resnet_keras`` turns oneDNN on where TensorFlow would pick
Eigen (AVX2-only CPUs). Every entry point imports this package before
TensorFlow, so importing ``resnet_keras`` here puts all of them on the same
kernels. (Until 2026-12-02 only fit.py and summary.py imported it first:
reproduce.py trained Figure 4's ResNet-18 on Eigen at 20.5 images/s at 64 px on
the AMD EPYC, against 62 images/s for the same run through fit.py.)
"""

import resnet_keras  # noqa: F401
