"""Where the tests that need real data find it: TFDS_DATA_DIR (.ci/run points
it at ../shared/tensorflow_datasets). Without the dataset they skip, saying why."""

import os
import pathlib

import pytest

DATA_DIR = os.environ.get("TFDS_DATA_DIR", "")


def prepared(name: str) -> bool:
    """Whether DATA_DIR holds a prepared TFDS dataset ``name`` (e.g. "imagenette/160px-v2")."""
    return bool(DATA_DIR) and any(pathlib.Path(DATA_DIR, name).glob("*/dataset_info.json"))


def requires(name: str) -> list:
    """The marks of a test module that needs the prepared dataset ``name``."""
    return [
        pytest.mark.realdata,
        pytest.mark.skipif(
            not prepared(name),
            reason=f"no prepared {name} in TFDS_DATA_DIR={DATA_DIR!r} (set it to ../shared/tensorflow_datasets)",
        ),
    ]
