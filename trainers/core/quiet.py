"""A quiet start: TensorFlow's C++ start-up log kept off a user's terminal.

``import tensorflow`` writes notes from C++ to stderr before absl's logging is
set up ("oneDNN custom operations are on", "Could not find cuda drivers",
"This TensorFlow binary is optimized ..."), and listing devices on a machine
without a GPU adds "failed call to cuInit". ``TF_CPP_MIN_LOG_LEVEL`` does not
reach the first ones, and to a new user on a CPU they read like failures. So
the import and the device listing run with file descriptor 2 captured; then
every captured line is written out except the C++ log lines below the level
asked for (``TF_CPP_MIN_LOG_LEVEL``, default 2: errors only) and the CUDA
errors that only say there is no GPU. Python's own output, warnings and any
other error pass unchanged; if the import fails, everything is written out.
``TF_CPP_MIN_LOG_LEVEL=0`` shows the whole log.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile

# absl's prefix ("I0000 00:00:1796585819.763919    2645 port.cc:153] ...") and
# TensorFlow's older one ("2026-12-06 19:34:11.123456: I tensorflow/...").
_PREFIX = re.compile(r"^(?:([IWEF])\d{4} \d\d:\d\d:[\d.]+\s+\d+ |\d{4}-\d\d-\d\d [\d:.]+: ([IWEF]) )")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
# Errors that only say this machine has no usable GPU, which a CPU run expects.
_NO_GPU = (
    "failed call to cuInit",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "Unable to register cuSPARSE factory",
)
_ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def log_level(environ=None) -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as a number (default 2); an unreadable value counts as 0, show all."""
    value = (os.environ if environ is None else environ).get("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return int(value)
    except ValueError:
        return 0


def keep_lines(text: str, level: int) -> list[str]:
    """The lines of captured stderr ``text`` a user should see at ``level``.
    A line without a log prefix follows the log line it continues; any other
    line (Python's output) is kept."""
    kept, keep_previous = [], True
    for line in text.splitlines(keepends=True):
        match = _PREFIX.match(line)
        if match:
            severity = _SEVERITY[match.group(1) or match.group(2)]
            keep_previous = severity >= level and not (level >= 2 and any(s in line for s in _NO_GPU))
            keep = keep_previous
        elif line.rstrip("\n") == _ABSL_BANNER:
            keep = level == 0
        elif line.startswith((" ", "\t", "To enable the following instructions")):
            keep = keep_previous  # the rest of a multi-line log entry
        else:
            keep, keep_previous = True, True
        if keep:
            kept.append(line)
    return kept


def import_quietly(module: str) -> None:
    """Imports ``module`` (which imports TensorFlow) and lists TensorFlow's
    devices with stderr captured, then writes out what :func:`keep_lines`
    keeps. Does nothing where TensorFlow is already imported."""
    if "tensorflow" in sys.modules:
        importlib.import_module(module)
        return
    # TensorFlow's own default, 0, would show its INFO and WARNING lines after the start too.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    level = log_level()
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            importlib.import_module(module)
            import tensorflow as tf

            tf.config.list_physical_devices()  # CUDA's start-up errors are written here
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            lines = text.splitlines(keepends=True) if failed else keep_lines(text, level)
            sys.stderr.write("".join(lines))
            sys.stderr.flush()
