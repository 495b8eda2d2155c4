"""What every entry point shares: the user-error type, atomic file writes, the
choice of precision and of distribution strategy."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import pathlib
import sys


class UserError(Exception):
    """A problem with what the user asked for. Entry points print its message
    alone (no traceback) and exit with status 2."""


class OutputError(UserError):
    """A file could not be written (no space, no permission); the previous
    file, if any, is kept. Exit status 4."""

    exit_code = 4


def write_failed(path, error: OSError) -> OutputError:
    why = error.strerror or str(error)
    return OutputError(f"could not write {path}: {why}; the previous file, if any, is kept as it was")


def run_main(main, argv=None):
    """Calls ``main(argv)``; a :class:`UserError` becomes one line on stderr and
    its ``exit_code`` (2 for bad input, 3 for a failed run)."""
    try:
        main(argv)
    except UserError as error:
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())  # one line, always
        print(f"error: {message}", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 2))
    sys.exit(0)


# ---------------------------------------------------------------- atomic writes
def _tmp_name(path: pathlib.Path) -> pathlib.Path:
    # Keep the suffix: Keras picks the format of a saved model from it.
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def write_text_atomic(path, text: str) -> None:
    """Writes ``text`` under a temporary name, then renames it over ``path``, so
    a reader (or a killed run) never sees half a file."""
    path = pathlib.Path(path)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        _remove_quietly(tmp)
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


def _remove_quietly(path: pathlib.Path) -> None:
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
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    tmp = _tmp_name(path)
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    except OSError as error:
        _remove_quietly(tmp)
        raise write_failed(path, error) from None
    finally:
        plt.close(fig)


@contextlib.contextmanager
def global_dtype_policy(policy: str | None = None):
    """Sets Keras' global dtype policy to ``policy`` (if given) inside the
    block, and puts back the one it found on leaving, however it is left."""
    import keras

    previous = keras.config.dtype_policy()
    try:
        if policy is not None:
            keras.config.set_dtype_policy(policy)
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def float32_clone(model):
    """``model`` rebuilt with float32 layers (every layer's dtype policy
    dropped, built under the float32 policy) and the same weights. Mixed
    precision keeps float32 weights, so nothing is rounded: only the
    computation of the copy changes."""
    import keras

    with global_dtype_policy("float32"):
        config = model.get_config()
        for layer in config["layers"]:
            layer["config"].pop("dtype", None)
        clone = keras.Model.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


def save_model_atomic(model, path) -> None:
    """Saves ``model`` as a ``.keras`` file under a temporary name, then renames.

    What is saved is the network alone (architecture and weights, no optimizer
    or compile state), with float32 layers whatever precision trained it
    (:func:`float32_clone`), so the file loads and runs at full speed anywhere
    ``resnet_keras`` is imported, without the trainers' optimizer class."""
    path = pathlib.Path(path)
    tmp = _tmp_name(path)
    clone = float32_clone(model)
    try:
        clone.save(tmp)
        os.replace(tmp, path)
    except OSError as error:
        raise write_failed(path, error) from None
    finally:
        _remove_quietly(tmp)


def load_keras_model(path):
    """A ``.keras`` model loaded in Keras' default safe mode (``resnet_keras``
    registers what it needs), or a :class:`UserError` saying why not."""
    import keras

    import resnet_keras  # noqa: F401  (registers what the model needs to load in safe mode)

    path = pathlib.Path(path)
    if not path.exists():
        raise UserError(f"no model at {path}")
    import zipfile

    if path.is_file() and path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not a .keras model: not a zip archive ({path.stat().st_size} bytes; corrupt or "
                        "cut short?)")  # fmt: skip
    try:
        return keras.models.load_model(path)
    except Exception as error:
        why = f"{type(error).__name__}: {error}".strip().splitlines()[0]
        raise UserError(f"{path} is not a loadable .keras model ({why})") from None


# ------------------------------------------------------------------- precision
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def cpuinfo() -> dict[str, str]:
    """The fields of the first processor in /proc/cpuinfo (``{}`` where it cannot be read)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the end of the first processor's block
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_flags() -> set[str]:
    return set(cpuinfo().get("flags", "").split())


# oneDNN's ONEDNN_MAX_CPU_ISA caps the instruction sets it uses; each value
# names the best bf16 path it leaves (values as in oneDNN's documentation).
_ISA_BF16 = {
    "SSE41": None, "AVX": None, "AVX2": None, "AVX2_VNNI": None, "AVX2_VNNI_2": None,
    "AVX512_CORE": None, "AVX512_CORE_VNNI": None,
    "AVX512_CORE_BF16": "avx512_bf16", "AVX10_1_512": "avx512_bf16",
    "AVX512_CORE_FP16": "avx512_bf16",
}  # fmt: skip


def cpu_bf16_kind(flags=None, environ=None) -> str | None:
    """The CPU's best bf16 arithmetic, as oneDNN will use it: ``"amx"`` (AMX-BF16
    tiles), ``"avx512_bf16"`` (AVX-512 BF16 dot products, no AMX) or ``None``
    (no bf16 instructions: bf16 would be emulated). ``ONEDNN_MAX_CPU_ISA``
    (or ``DNNL_MAX_CPU_ISA``), when set, caps it as it caps oneDNN."""
    flags = cpu_flags() if flags is None else set(flags)
    environ = os.environ if environ is None else environ
    kind = "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else None
    cap = (environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    if kind and cap in _ISA_BF16:
        capped = _ISA_BF16[cap]
        kind = None if capped is None else ("avx512_bf16" if kind == "amx" else kind)
    return kind


def cpu_vendor() -> str:
    """``vendor_id`` of /proc/cpuinfo (``GenuineIntel``, ``AuthenticAMD``, ...), or ``""``."""
    return cpuinfo().get("vendor_id", "")


def cpu_name() -> str:
    """The CPU in one line, precise enough to tell two machines apart (the
    model name alone often is not: "Intel(R) Xeon(R) Processor @ 2.80GHz"
    stands for several generations): vendor, family and model numbers, the
    model name, the logical CPUs this process may use, and the instruction sets
    that decide the speed here (AVX-512, AVX-512 BF16, AMX). ``"unknown CPU"``
    where /proc/cpuinfo cannot be read."""
    info = cpuinfo()
    if not info:
        return "unknown CPU"
    flags = set(info.get("flags", "").split())
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 0
    ident = [info.get("vendor_id", "")]
    ident.append(f"family {info['cpu family']}" if "cpu family" in info else "")
    ident.append(f"model {info['model']}" if "model" in info else "")
    ident = " ".join(x for x in ident if x)
    name = info.get("model name", "")
    return f"{ident}, {name}, {cpus} CPUs" + (f" ({', '.join(isa)})" if isa else "")


def run_cpus(rows) -> list[str]:
    """The CPUs a run's epochs ran on, in order, from its ``history.csv`` rows
    (rows from before that column existed count as "not recorded")."""
    return list(dict.fromkeys(row.get("cpu") or "not recorded" for row in rows))


def cpu_kernels() -> str:
    """Which CPU kernels this process's TensorFlow runs: "oneDNN", "Eigen" (its
    choice is made once, at import: resnet_keras turns oneDNN on unless
    TF_ENABLE_ONEDNN_OPTS=0), or "unknown" where TensorFlow does not say."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return "unknown"
    return "oneDNN" if _pywrap_util_port.IsMklEnabled() else "Eigen"


def cpu_precision(kind, vendor) -> tuple[str, str]:
    """What ``--precision auto`` picks on a CPU of bf16 ``kind`` and ``vendor``, and
    why, by the measurements in docs/benchmarks.md ("Which precision is
    fastest"): bf16 pays with AMX tiles, and with AVX-512 BF16 on AMD CPUs; on
    Intel CPUs with AVX-512 BF16 but no AMX, oneDNN's bf16 convolutions run
    below its float32 ones; without bf16 instructions bf16 is emulated."""
    if kind == "amx":
        return "mixed_bfloat16", "CPU with AMX-BF16 (bf16 measured 1.7-1.8x float32)"
    if kind == "avx512_bf16" and vendor == "AuthenticAMD":
        return "mixed_bfloat16", "AMD CPU with AVX-512 BF16 (bf16 measured faster than float32)"
    if kind == "avx512_bf16":
        return "float32", "CPU with AVX-512 BF16 but no AMX (bf16 measured slower than float32 on Intel)"
    return "float32", "CPU without bfloat16 instructions (bf16 would be emulated)"


def resolve_precision(precision: str) -> tuple[str, str]:
    """The Keras dtype policy for ``--precision``, and why it was chosen.

    ``auto``: ``mixed_float16`` on GPUs with tensor cores (compute capability
    7.0 or more), float32 on other GPUs; on CPUs, by :func:`cpu_precision` for
    the CPU's bf16 kind (:func:`cpu_bf16_kind`) and vendor."""
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision, "asked for"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        if tuple(capability) >= (7, 0):
            return "mixed_float16", f"GPU with compute capability {capability[0]}.{capability[1]} (tensor cores)"
        return "float32", "GPU without tensor cores"
    return cpu_precision(cpu_bf16_kind(), cpu_vendor())


# -------------------------------------------------------------------- strategy
STRATEGIES = ("auto", "mirrored", "multi-worker", "one-device")


def split_cpu(replicas: int) -> None:
    """Splits the CPU into ``replicas`` logical devices, so MirroredStrategy can
    be exercised without GPUs. Must run before TensorFlow touches a device."""
    import tensorflow as tf

    if replicas <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError as error:
        raise UserError(f"--cpu-replicas must be set before TensorFlow starts: {error}") from None
