"""What a process costs: CPU seconds and memory as Linux's /proc reports them, and the time of a call.

One home for these readings, so the benchmarks, the audit and the pacing count the same way.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np


def _stat(text: str) -> tuple[str, int]:
    """(command name, user + system clock ticks) from a /proc/<pid>/stat line."""
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return name, int(fields[11]) + int(fields[12])


def cpu_ticks() -> dict[int, tuple[str, int]]:
    """{pid: (name, CPU clock ticks so far)} of every process this user may read."""
    ticks = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ticks[int(entry.name)] = _stat((entry / "stat").read_text())
            except OSError:  # it ended meanwhile
                continue
    return ticks


def process_cpu_sec(pid: int) -> float:
    """CPU seconds (user + system, every thread) a process has used so far; OSError once it is gone."""
    return _stat(Path(f"/proc/{pid}/stat").read_text())[1] / os.sysconf("SC_CLK_TCK")


def own_cpu_sec() -> float:
    """CPU seconds (user + system, every thread) this process used so far, with its children that
    ended (the audit's teacher processes): what /proc's utime + stime of both say."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def memory_mb(field: str = "VmRSS") -> float:
    """This process's memory from /proc/self/status: VmRSS (resident now) or VmHWM (its peak)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024


def timed(function: Callable, *args) -> tuple[object, float, float]:
    """(function(*args), wall seconds, process CPU seconds: every thread counted) of one call."""
    start, cpu_start = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - start, time.process_time() - cpu_start


def median_sec(function: Callable[[], object], repeats: int, cpu: bool = False) -> float:
    """Median wall (or, with cpu, process CPU) seconds of `repeats` calls after one untimed warm-up."""
    function()
    return float(np.median([timed(function)[2 if cpu else 1] for _ in range(repeats)]))
