"""Importing resnet_keras turns TensorFlow's oneDNN kernels on (TensorFlow leaves
AVX2-only CPUs on Eigen, 1.7-1.9x slower to train here: docs/benchmarks.md)
unless the user chose otherwise, and every entry point (trainers/*.py) imports it before TensorFlow.
That runs record their kernels is in test_fit.py."""

import os
import subprocess
import sys

import pytest

PROBE = (
    "import os, resnet_keras; from trainers.core.hardware import cpu_kernels; "
    "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], cpu_kernels())"
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _probe(**env):
    clean = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


@pytest.mark.parametrize("env, expected", [({}, ["1", "oneDNN"]), ({"TF_ENABLE_ONEDNN_OPTS": "0"}, ["0", "Eigen"])])
def test_import_turns_onednn_on_unless_the_user_said_no(env, expected):
    assert _probe(**env) == expected


ENTRY_PROBE = """
import os, runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
from trainers.core.hardware import cpu_kernels
print("RESULT", cpu_kernels())
"""


def test_every_entry_point_runs_on_the_kernels_resnet_keras_chose():
    # TensorFlow chooses its kernels at its first import: an entry point that imported it before resnet_keras
    # stayed on Eigen (reproduce.py trained Figure 4's networks 3x slower than fit.py on an AVX2-only CPU).
    scripts = sorted(
        p
        for p in os.listdir(os.path.join(ROOT, "trainers"))
        if p.endswith(".py") and "__main__" in open(os.path.join(ROOT, "trainers", p)).read()
    )
    assert {"fit.py", "evaluate.py", "export.py", "predict.py", "tune.py", "reproduce.py"} <= set(scripts)
    clean = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env = {**clean, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = {
        s: subprocess.Popen(
            [sys.executable, "-c", ENTRY_PROBE, os.path.join("trainers", s)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for s in scripts
    }
    kernels = {
        s: [line.split()[1] for line in p.communicate(timeout=300)[0].splitlines() if line.startswith("RESULT")]
        for s, p in procs.items()
    }
    assert kernels == {s: ["oneDNN"] for s in scripts}
