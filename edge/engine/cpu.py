"""What this CPU is, as far as int8 arithmetic cares: its model, its int8 instructions, and whether
onnxruntime must be told to keep int8 products exact here.

onnxruntime's x86 int8 kernels multiply uint8 activations by int8 weights. Without VNNI they sum
the products in pairs in saturating 16-bit registers, which on humwatch's encoder moved int8 vs
fp32 from max |Δprob| 0.005 (arm64: exact 32-bit sums) to 0.04. ``session.x64quantprecision``
switches x86 to exact uint8 x uint8 kernels; with VNNI the fast kernels are already exact (and the
exact ones 2.3× slower), and ARM ignores the option.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import onnxruntime as ort

PRECISE_INT8 = "session.x64quantprecision"  # onnxruntime's session config key
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")  # x86: exact uint8 x int8 sums in 32 bits
# The flags int8 speed and exactness depend on (x86 /proc/cpuinfo "flags", ARM "Features").
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", *VNNI_FLAGS, "amx_int8", "asimd", "asimddp", "i8mm", "sve")
CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo() -> dict[str, str]:
    """The first value of each field of /proc/cpuinfo (empty where there is none)."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), value.strip())
    return fields


def cpu_flags() -> set[str]:
    """This CPU's feature flags (x86 "flags", ARM "Features"); empty where /proc/cpuinfo is missing."""
    info = _cpuinfo()
    return set((info.get("flags") or info.get("features") or "").split())


def precise_int8() -> bool:
    """Whether sessions here need ``session.x64quantprecision``: every CPU but an x86 one with VNNI
    (the option only acts on x86; where the flags cannot be read it errs on the exact side)."""
    return not set(VNNI_FLAGS) & cpu_flags()


def describe() -> dict[str, str | int]:
    """Where a measurement ran: architecture, CPU model, int8-relevant flags, onnxruntime version
    and the int8 kernel mode this machine's sessions use (bundle.json ``measured_on``)."""
    info, flags = _cpuinfo(), cpu_flags()
    model = info.get("model name") or info.get("model") or info.get("cpu part") or platform.processor() or "unknown"
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")
    if not x86:
        kernels = "exact 32-bit sums (ARM and other non-x86 kernels)"
    elif precise_int8():
        kernels = f"exact: uint8 x uint8 ({PRECISE_INT8}=1; without VNNI uint8 x int8 pairs saturate at 16 bits)"
    else:
        kernels = "exact: uint8 x int8 with VNNI (32-bit sums)"
    return {"machine": platform.machine(), "cpu": model, "cpu_count": os.cpu_count() or 1,
            "int8_flags": " ".join(flag for flag in INT8_FLAGS if flag in flags) or "none",
            "onnxruntime": ort.__version__, PRECISE_INT8: "1" if precise_int8() else "0", "int8_kernels": kernels}
