"""Writes ``resnet_keras/ported/imagenet_classes.tsv``: the 1000 ImageNet-1k classes, one line per class index,
``wnid<TAB>name``.

    ~/torch-venv/bin/python benchmarks/make_imagenet_classes.py            # writes the file, prints its sha256
    ~/torch-venv/bin/python benchmarks/make_imagenet_classes.py --check    # compares with the vendored file

The names are torchvision's ``torchvision.models._meta._IMAGENET_CATEGORIES`` (1000 unique readable names, index =
class id; "crane bird" and "maillot tank suit" disambiguate the two names WordNet repeats), the wnids timm's
``timm/data/_info/imagenet_synsets.txt`` (the 1000 sorted wnids, byte-identical to TFDS's imagenet2012
``labels.txt``). Both sources use the sorted-wnid class order, so line i pairs the same class.

Nothing is typed by hand and neither package is imported: the names are read from ``_meta.py``'s source with
``ast.literal_eval`` (no torch runs), the wnids from the text file, both located through ``importlib``'s finder
(or given with ``--torchvision-meta`` / ``--timm-synsets``). Each is refused unless its sha256 is the one pinned
below (torchvision 0.29.1's list, as ``"\\n".join(names) + "\\n"``; timm 1.0.31's file; /tmp/issue39-facts.md
section 6), so a changed source cannot slip in. ``resnet_keras/ported/classes.py`` pins the written file's sha256.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import pathlib
import sys

NAMES_SHA256 = "ee4fa67b1dd46919ef87529b70e25bdd1ec9ebd350de3ad426e6640eb70320a1"
WNIDS_SHA256 = "70002b0ff5de60a3a17a82dbfcff291931f96225ddf941ad2e182fc39e183d15"
OUTPUT = pathlib.Path(__file__).resolve().parent.parent / "resnet_keras" / "ported" / "imagenet_classes.tsv"


def _package_dir(name: str) -> pathlib.Path:
    spec = importlib.util.find_spec(name)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{name} is not installed in {sys.executable}; run this with ~/torch-venv/bin/python or pass its file")
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def read_names(meta: pathlib.Path) -> list[str]:
    """``_IMAGENET_CATEGORIES`` of torchvision's ``models/_meta.py``, read from its source (nothing executed)."""
    tree = ast.parse(meta.read_text(encoding="utf-8"), filename=str(meta))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "_IMAGENET_CATEGORIES" for t in targets):
            names = ast.literal_eval(node.value)
            break
    else:
        sys.exit(f"{meta} has no _IMAGENET_CATEGORIES assignment")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        sys.exit(f"{meta}: _IMAGENET_CATEGORIES is not a list of strings")
    digest = hashlib.sha256(("\n".join(names) + "\n").encode("utf-8")).hexdigest()
    if digest != NAMES_SHA256:
        sys.exit(f"refused: {meta}'s _IMAGENET_CATEGORIES has sha256 {digest}, not the pinned {NAMES_SHA256}")
    return names


def read_wnids(path: pathlib.Path) -> list[str]:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WNIDS_SHA256:
        sys.exit(f"refused: {path} has sha256 {digest}, not the pinned {WNIDS_SHA256}")
    return data.decode("ascii").splitlines()


def table(names: list[str], wnids: list[str]) -> bytes:
    if len(names) != 1000 or len(wnids) != 1000 or len(set(names)) != 1000:
        sys.exit(f"expected 1000 unique names and 1000 wnids, got {len(set(names))} and {len(wnids)}")
    if wnids != sorted(wnids):
        sys.exit("the wnids are not in sorted order, the class order every source uses")
    for text in (*names, *wnids):
        if not text or text != text.strip() or any(c in text for c in "\t\r\n"):
            sys.exit(f"{text!r} cannot be a field of a tab-separated line")
    return "".join(f"{wnid}\t{name}\n" for wnid, name in zip(wnids, names)).encode("utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torchvision-meta", type=pathlib.Path, help="torchvision's models/_meta.py")
    parser.add_argument("--timm-synsets", type=pathlib.Path, help="timm's data/_info/imagenet_synsets.txt")
    parser.add_argument("--output", type=pathlib.Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="compare with --output instead of writing it")
    args = parser.parse_args(argv)
    meta = args.torchvision_meta or _package_dir("torchvision") / "models" / "_meta.py"
    synsets = args.timm_synsets or _package_dir("timm") / "data" / "_info" / "imagenet_synsets.txt"
    data = table(read_names(meta), read_wnids(synsets))
    digest = hashlib.sha256(data).hexdigest()
    if args.check:
        if not args.output.exists() or args.output.read_bytes() != data:
            print(f"{args.output} differs from what the sources give (sha256 {digest})")
            return 1
        print(f"{args.output} is what the sources give (sha256 {digest})")
        return 0
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(args.output)
    print(f"wrote {args.output}: 1000 classes, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
