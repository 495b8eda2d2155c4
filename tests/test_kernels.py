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


# An entry point is stopped where it first imports TensorFlow, and says whether TF_ENABLE_ONEDNN_OPTS is set
# then: TensorFlow reads it at that import, once, and the test above shows what "1" gives. Stopping there costs a
# Python start, not a TensorFlow one (twelve TensorFlow starts took 45 s of the test command, 100 s beside another
# test).
ENTRY_PROBE = """
import importlib.abc, os, runpy, sys


class AtTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            os.write(1, f"RESULT {os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}\\n".encode())
            os._exit(0)
        return None


if "tensorflow" in sys.modules:
    os.write(1, b"RESULT imported-before-the-probe\\n")
    os._exit(0)
sys.meta_path.insert(0, AtTensorFlow())
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
os.write(1, b"RESULT tensorflow-never-imported\\n")
"""


def _entry_probes(paths):
    """What ENTRY_PROBE finds for each script: TF_ENABLE_ONEDNN_OPTS at its first TensorFlow import."""
    clean = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env = {**clean, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = {
        path: subprocess.Popen(
            [sys.executable, "-c", ENTRY_PROBE, path],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for path in paths
    }
    return {
        path: [line.split()[1] for line in p.communicate(timeout=300)[0].splitlines() if line.startswith("RESULT")]
        for path, p in procs.items()
    }


def test_every_entry_point_imports_tensorflow_after_resnet_keras_chose_its_kernels(tmp_path):
    # TensorFlow chooses its kernels at its first import: an entry point that imported it before resnet_keras
    # stayed on Eigen (reproduce.py trained Figure 4's networks 3x slower than fit.py on an AVX2-only CPU).
    scripts = sorted(
        p
        for p in os.listdir(os.path.join(ROOT, "trainers"))
        if p.endswith(".py") and "__main__" in open(os.path.join(ROOT, "trainers", p)).read()
    )
    assert {"fit.py", "evaluate.py", "export.py", "predict.py", "tune.py", "reproduce.py"} <= set(scripts)
    # The probe tells that mistake apart: a script importing TensorFlow first finds the variable unset.
    wrong = tmp_path / "wrong.py"
    wrong.write_text("import tensorflow\nimport trainers\n")
    found = _entry_probes([str(wrong), *(os.path.join("trainers", s) for s in scripts)])
    assert found.pop(str(wrong)) == ["unset"]
    assert found == {os.path.join("trainers", s): ["1"] for s in scripts}
