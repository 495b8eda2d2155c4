"""--precision auto on CPUs: the bf16 kind from the CPU's flags, capped by
ONEDNN_MAX_CPU_ISA as oneDNN caps itself, and the rule docs/benchmarks.md measured."""

import pytest

from trainers.core import hardware
from trainers.core.errors import UserError

AMX = {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
AVX512_BF16 = {"avx512f", "avx512_bf16"}
AVX512 = {"avx512f", "avx2"}


@pytest.mark.parametrize(
    "flags, environ, kind",
    [
        (AMX, {}, "amx"),
        (AVX512_BF16, {}, "avx512_bf16"),
        (AVX512, {}, None),
        (set(), {}, None),
        (AMX, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, "avx512_bf16"),
        (AMX, {"ONEDNN_MAX_CPU_ISA": "avx512_core"}, None),
        (AMX, {"DNNL_MAX_CPU_ISA": "AVX2"}, None),
        (AMX, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "amx"),
        (AMX, {"ONEDNN_MAX_CPU_ISA": "ALL"}, "amx"),
        (AVX512, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, None),
    ],
)
def test_bf16_kind_from_flags_and_the_isa_cap(flags, environ, kind):
    assert hardware.cpu_bf16_kind(flags, environ) == kind


@pytest.mark.parametrize(
    "flags, vendor, policy",
    [
        (AMX, "GenuineIntel", "mixed_bfloat16"),
        (AVX512_BF16, "AuthenticAMD", "mixed_bfloat16"),
        (AVX512_BF16, "GenuineIntel", "float32"),
        (AVX512, "AuthenticAMD", "float32"),
        (set(), "", "float32"),
    ],
)
def test_auto_follows_the_measured_rule_on_cpus(monkeypatch, flags, vendor, policy):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: set(flags))
    monkeypatch.setattr(hardware, "cpu_vendor", lambda: vendor)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    chosen, why = hardware.resolve_precision("auto")
    assert chosen == policy and why
    assert hardware.resolve_precision("float32") == ("float32", "asked for")
    with pytest.raises(UserError, match="expected one of"):
        hardware.resolve_precision("bf16")


def test_an_isa_cap_below_amx_turns_auto_to_float32_on_this_kind_of_intel_cpu(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: set(AMX))
    monkeypatch.setattr(hardware, "cpu_vendor", lambda: "GenuineIntel")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert hardware.resolve_precision("auto")[0] == "float32"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert hardware.resolve_precision("auto")[0] == "mixed_bfloat16"
