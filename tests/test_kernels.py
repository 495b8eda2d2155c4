"""Importing resnet_keras turns TensorFlow's oneDNN kernels on (TensorFlow leaves
AVX2-only CPUs on Eigen, 1.7-1.9x slower to train here: docs/benchmarks.md)
unless the user chose otherwise. That runs record their kernels is in test_fit.py."""

import os
import subprocess
import sys

import pytest

PROBE = ("import os, resnet_keras; from trainers.common import cpu_kernels; "
         "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], cpu_kernels())")  # fmt: skip
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _probe(**env):
    clean = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, "TF_CPP_MIN_LOG_LEVEL": "2", **env}, cwd=ROOT,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.split()


@pytest.mark.parametrize("env, expected", [({}, ["1", "oneDNN"]), ({"TF_ENABLE_ONEDNN_OPTS": "0"}, ["0", "Eigen"])])
def test_import_turns_onednn_on_unless_the_user_said_no(env, expected):
    assert _probe(**env) == expected

