"""The commands (``python trainers/fit.py ...``) and, in ``trainers.core``, the
library they share.

Importing this package imports ``resnet_keras`` first, before TensorFlow:
TensorFlow picks its CPU kernels (oneDNN or Eigen) once, at import, and
``resnet_keras`` turns oneDNN on where TensorFlow would pick the slower Eigen,
so every command runs on the same kernels. The import runs quietly
(:mod:`trainers.core.quiet`): TensorFlow's C++ start-up notes are not shown
unless ``TF_CPP_MIN_LOG_LEVEL`` asks for them.
"""

from trainers.core.quiet import import_quietly

import_quietly("resnet_keras")
