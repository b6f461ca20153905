"""Python under qemu-user on an emulated x86 CPU without AVX-512 or VNNI (Haswell): what torch and
onnxruntime compute on a user's older CPU, on this machine."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys

import pytest

HASWELL = "Haswell-v4"
HASWELL_FLAGS = "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt avx f16c fma bmi1 bmi2 avx2"  # /proc/cpuinfo's, to match


def run_on_haswell(code: str, *args: str, timeout: float = 600) -> str:
    """`python -c code args` on the emulated Haswell; its stdout (the test fails with its stderr if it fails)."""
    qemu = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
    if platform.machine() != "x86_64" or not qemu:
        pytest.skip("needs an x86_64 host with qemu-user (apt-get install qemu-user-static; .ci/run does)")
    result = subprocess.run([qemu, "-cpu", HASWELL, sys.executable, "-c", code, *args], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout
