"""Files written whole or not at all: every write goes to a temporary name
in the same folder and is renamed over the target, so a reader (or a killed
run) never sees half a file; JSON is strict (no NaN)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pathlib

from trainers.core.errors import UserError, write_failed

ROOT = pathlib.Path(__file__).resolve().parents[2]


def tmp_name(path: pathlib.Path) -> pathlib.Path:
    # Keep the suffix: Keras picks the format of a saved model from it.
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def write_text_atomic(path, text: str) -> None:
    """Writes ``text`` under a temporary name, then renames it over ``path``, so
    a reader (or a killed run) never sees half a file."""
    path = pathlib.Path(path)
    tmp = tmp_name(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        remove_quietly(tmp)
        raise write_failed(path, error) from None


def read_json(path, what: str = "file"):
    """The JSON in ``path``, or one line saying it is unreadable or corrupt."""
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text())
    except OSError as error:
        raise UserError(f"cannot read the {what} {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise UserError(f"the {what} {path} is not valid JSON (corrupt or cut short? {error})") from None


def remove_quietly(path: pathlib.Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def strict(value):
    """``value`` with every non-finite float (NaN, infinity) replaced by None:
    what strict JSON readers accept, and what an unknown figure is."""
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def finite_or_none(value) -> float | None:
    """``value`` as a float where it is a finite number, else None (a figure a
    JSON file lacks, misspells or holds as null)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def runs_root() -> pathlib.Path:
    """Where runs land without --output-dir: saved_models/ of the repository, or
    $RESNET_KERAS_RUNS (tests point it at a temporary directory)."""
    return pathlib.Path(os.environ.get("RESNET_KERAS_RUNS") or ROOT / "saved_models")


def write_json_atomic(path, data) -> None:
    """Strict JSON (non-finite numbers become null), written atomically."""
    text = json.dumps(strict(data), indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    write_text_atomic(path, text + "\n")


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, pathlib.Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {value!r}")


def write_csv_atomic(path, rows: list[dict]) -> None:
    fields = []
    for row in rows:
        fields += [key for key in row if key not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def read_csv_rows(path) -> list[dict]:
    """The rows of a CSV file as dicts; [] where the file does not exist."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def save_figure_atomic(fig, path) -> None:
    """Saves a matplotlib figure under a temporary name, renames it over
    ``path`` and closes the figure."""
    import matplotlib.pyplot as plt  # here, not at the top: only the commands that draw need matplotlib loaded

    path = pathlib.Path(path)
    tmp = tmp_name(path)
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    except OSError as error:
        remove_quietly(tmp)
        raise write_failed(path, error) from None
    finally:
        plt.close(fig)
