"""The shape of the project: thin commands over an installed library.

Every command in trainers/ is `build_parser()` + `main(argv=None)` over
trainers.core and resnet_keras; no command imports another; no file edits
sys.path; a command starts quietly (no TensorFlow C++ start-up log)."""

import ast
import importlib
import os
import pathlib
import subprocess
import sys

import pytest

from trainers.core import quiet

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMMANDS = sorted(p for p in (ROOT / "trainers").glob("*.py") if p.name != "__init__.py")
COMMAND_NAMES = {p.stem for p in COMMANDS}
LIBRARY = sorted((ROOT / "trainers" / "core").glob("*.py"))


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file, as dotted names
    (``from trainers import fit`` counts as ``trainers.fit``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_there_are_commands_and_a_library():
    assert {"fit", "evaluate", "predict", "export", "tune", "reproduce", "compare", "runs"} <= COMMAND_NAMES
    assert {"train", "data", "recipes", "sources"} <= {p.stem for p in LIBRARY}


@pytest.mark.parametrize("path", COMMANDS + LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_command_is_imported_by_another_file(path):
    commands = {f"trainers.{name}" for name in COMMAND_NAMES}
    assert not imported_modules(path) & commands


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: p.name)
def test_a_command_is_a_parser_and_a_main(path):
    tree = ast.parse(path.read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "build_parser" in functions and "main" in functions
    main_args = functions["main"].args
    assert [a.arg for a in main_args.args] == ["argv"] and len(main_args.defaults) == 1
    assert ast.get_docstring(tree), "a command says what it does and how to call it"
    guards = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    assert len(guards) == 1, "nothing runs at import time but the __main__ guard"


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: p.name)
def test_a_command_imports_and_gives_its_help(path):
    module = importlib.import_module(f"trainers.{path.stem}")
    assert module.build_parser().format_help().startswith("usage: ")


def test_no_file_edits_sys_path():
    offenders = []
    for folder in ("trainers", "benchmarks", "tests", "resnet_keras"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and ast.unparse(node).startswith("sys.path."):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders


# ------------------------------------------------------------------ quiet start
START_UP_LOG = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796585819.763919    2645 port.cc:153] oneDNN custom operations are on. You may see slightly different
I0000 00:00:1796585819.764219    2645 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not
I0000 00:00:1796585819.921517    2645 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available
To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow.
W0000 00:00:1796585820.000001    2645 some_file.cc:1] a warning
E0000 00:00:1796585826.903752    2645 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: (303)
E0000 00:00:1796585826.903753    2645 loader.cc:10] could not load libsomething.so: a real problem
2026-12-06 19:34:11.123456: W tensorflow/core/framework/op.cc:1] an old-style warning
/path/x.py:1: UserWarning: a Python warning
"""


def test_the_start_up_log_is_hidden_and_real_errors_are_kept():
    kept = quiet.keep_lines(START_UP_LOG, level=2)
    assert kept == [
        "E0000 00:00:1796585826.903753    2645 loader.cc:10] could not load libsomething.so: a real problem\n",
        "/path/x.py:1: UserWarning: a Python warning\n",
    ]


def test_a_lower_log_level_shows_more():
    assert quiet.keep_lines(START_UP_LOG, level=0) == START_UP_LOG.splitlines(keepends=True)
    at_one = "".join(quiet.keep_lines(START_UP_LOG, level=1))
    assert "a warning" in at_one and "old-style warning" in at_one and "cuInit" in at_one
    assert "oneDNN" not in at_one and "To enable" not in at_one
    assert quiet.keep_lines(START_UP_LOG, level=3) == ["/path/x.py:1: UserWarning: a Python warning\n"]
    assert quiet.log_level({"TF_CPP_MIN_LOG_LEVEL": "x"}) == 0 and quiet.log_level({}) == 2


def _summary(env_update):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(env_update)
    return subprocess.run(
        [sys.executable, str(ROOT / "trainers" / "summary.py"), "--arch", "resnet20"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_a_command_starts_quietly_unless_asked():
    quiet_run = _summary({})
    assert quiet_run.returncode == 0 and quiet_run.stdout.startswith(" network")
    assert quiet_run.stderr == ""
    loud = _summary({"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert loud.returncode == 0 and "oneDNN custom operations are on" in loud.stderr
