"""The shape of a checkout, in numbers a reader feels: how big the commands and
the training library are, the longest function, how many files edit sys.path,
how many functions load a trained model, how many defaults of fit.py's settings
are written twice, and how long the README and its paragraphs are.

    python benchmarks/code_shape.py                  # this checkout
    python benchmarks/code_shape.py --root /tmp/old  # another (e.g. a clone at an older commit)
    python benchmarks/code_shape.py --json shape.json

Definitions (the closing note of issue 37 compares two checkouts with them):
- commands: ``trainers/*.py`` but ``__init__.py``; library: ``trainers/core/`` where it exists,
  else the files of ``trainers/`` without a ``__main__`` guard; lines are physical lines.
- longest function: the most lines of one ``def`` in trainers/ (nested functions count in their parent), also
  leaving out the argparse ``build_parser`` functions (one ``add_argument`` call per flag).
- import-path edits: calls that insert into or append to Python's import path list
  (``sys``'s ``path``) in trainers/, benchmarks/, tests/.
- model loaders: functions in trainers/ that call ``load_keras_model``, ``keras.models.load_model``,
  ``.load_weights`` or ``find_weights`` (each a way a trained model gets loaded).
- defaults written twice: fit.py flags whose default is written in its parser and again in the
  library (a ``DEFAULTS`` dict, or a dataclass field of the same name).
- README: lines, words, and the words of the longest prose paragraph (blocks between blank lines,
  tables, code, headings and lists left out).
"""

from __future__ import annotations

import argparse
import ast
import json
import pathlib
import re

from trainers.core.errors import UserError, run_main
from trainers.core.files import write_json_atomic

LOADER_CALLS = ("load_keras_model", "keras.models.load_model", ".load_weights", "find_weights")


def _has_main_guard(tree) -> bool:
    return any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)


def _files(root: pathlib.Path):
    trainers = root / "trainers"
    commands, library = [], []
    for path in sorted(trainers.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        if path.parent == trainers and _has_main_guard(tree):
            commands.append(path)
        else:
            library.append(path)
    return commands, library


def _lines(paths) -> int:
    return sum(len(p.read_text().splitlines()) for p in paths)


def _functions(paths):
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


def _longest_function(root, paths, skip=()):
    functions = [(path, node) for path, node in _functions(paths) if node.name not in skip]
    path, node = max(functions, key=lambda pn: pn[1].end_lineno - pn[1].lineno + 1)
    return {"lines": node.end_lineno - node.lineno + 1, "where": f"{path.relative_to(root)}:{node.name}"}


def _sys_path_edits(root) -> int:
    """Calls of ``insert``/``append`` on ``sys.path`` (read from the syntax tree, so a
    mention in a string or a comment, as here, does not count)."""
    count = 0
    for folder in ("trainers", "benchmarks", "tests"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                func = node.func if isinstance(node, ast.Call) else None
                if isinstance(func, ast.Attribute) and func.attr in ("insert", "append"):
                    target = func.value
                    if (
                        isinstance(target, ast.Attribute)
                        and target.attr == "path"
                        and ast.unparse(target) == "sys.path"
                    ):
                        count += 1
    return count


def _model_loaders(root, paths) -> list[str]:
    found = []
    for path, node in _functions(paths):
        calls = {ast.unparse(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}
        if any(c == name or c.endswith(name) for c in calls for name in LOADER_CALLS):
            found.append(f"{path.relative_to(root)}:{node.name}")
    # A function nested in a loader is the same loader.
    return sorted(set(found))


def _parser_defaults(fit: pathlib.Path) -> dict:
    defaults = {}
    for node in ast.walk(ast.parse(fit.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            flag = next(
                (a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")), None
            )
            for kw in node.keywords:
                if flag and kw.arg == "default" and not (isinstance(kw.value, ast.Constant) and kw.value.value is None):
                    defaults[flag[2:].replace("-", "_")] = ast.unparse(kw.value)
    return defaults


def _library_defaults(paths) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "DEFAULTS" for t in node.targets):
                if isinstance(node.value, ast.Dict):
                    names |= {
                        k.value
                        for k, v in zip(node.value.keys, node.value.values)
                        if isinstance(k, ast.Constant) and not (isinstance(v, ast.Constant) and v.value is None)
                    }
            if isinstance(node, ast.ClassDef) and any("dataclass" in ast.unparse(d) for d in node.decorator_list):
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and item.value is not None and isinstance(item.target, ast.Name):
                        names.add(item.target.id)
    return names


def _paragraphs(text: str) -> list[int]:
    words, block, in_code = [], [], False
    for line in [*text.splitlines(), ""]:
        if line.strip().startswith("```"):
            in_code = not in_code
            block = []
            continue
        if in_code:
            continue
        if not line.strip():
            if block:
                words.append(len(" ".join(block).split()))
            block = []
        elif not re.match(r"\s*(\||#|[-*] |\d+\. |<)", line):
            block.append(line)
        else:
            if block:
                words.append(len(" ".join(block).split()))
            block = []
    return words


def measure(root: pathlib.Path) -> dict:
    commands, library = _files(root)
    readme = (root / "README.md").read_text()
    parser = _parser_defaults(root / "trainers" / "fit.py")
    twice = sorted(set(parser) & _library_defaults(library))
    loaders = _model_loaders(root, commands + library)
    return {
        "root": str(root),
        "commands": {"files": len(commands), "lines": _lines(commands)},
        "library": {"files": len(library), "lines": _lines(library)},
        "longest_function": _longest_function(root, commands + library),
        "longest_function_but_parsers": _longest_function(root, commands + library, skip=("build_parser",)),
        "sys_path_edits": _sys_path_edits(root),
        "model_loaders": loaders,
        "model_loader_files": sorted({name.split(":")[0] for name in loaders}),
        "fit_defaults_written_twice": twice,
        "readme": {
            "lines": len(readme.splitlines()),
            "words": len(readme.split()),
            "longest_paragraph_words": max(_paragraphs(readme), default=0),
        },
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parents[1])
    parser.add_argument("--json", type=pathlib.Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    root = args.root.expanduser().resolve()
    if not (root / "trainers").is_dir() or not (root / "README.md").is_file():
        raise UserError(f"--root {root}: not a checkout of this project (no trainers/ or README.md)")
    shape = measure(root)
    print(json.dumps(shape, indent=2))
    if args.json:
        write_json_atomic(args.json, shape)
    return shape


if __name__ == "__main__":
    run_main(main)
