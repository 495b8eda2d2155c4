"""What this machine is and what runs fastest on it: the CPU (as
/proc/cpuinfo names it), TensorFlow's CPU kernels, the precision ``--precision
auto`` picks, and a CPU split into logical devices."""

from __future__ import annotations

import contextlib
import os

import keras
import tensorflow as tf

from trainers.core.errors import UserError

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
    "SSE41": None,
    "AVX": None,
    "AVX2": None,
    "AVX2_VNNI": None,
    "AVX2_VNNI_2": None,
    "AVX512_CORE": None,
    "AVX512_CORE_VNNI": None,
    "AVX512_CORE_BF16": "avx512_bf16",
    "AVX10_1_512": "avx512_bf16",
    "AVX512_CORE_FP16": "avx512_bf16",
}


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


@contextlib.contextmanager
def global_dtype_policy(policy: str | None = None):
    """Sets Keras' global dtype policy to ``policy`` (if given) inside the
    block, and puts back the one it found on leaving, however it is left."""

    previous = keras.config.dtype_policy()
    try:
        if policy is not None:
            keras.config.set_dtype_policy(policy)
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def split_cpu(replicas: int) -> None:
    """Splits the CPU into ``replicas`` logical devices, so MirroredStrategy can
    be exercised without GPUs. Must run before TensorFlow touches a device."""

    if replicas <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError as error:
        raise UserError(f"--cpu-replicas must be set before TensorFlow starts: {error}") from None
