"""Benchmark a bundle on this machine: load time, ms and CPU per window, GFLOP/s, memory, the hop a
CPU budget allows here, and estimates for a Raspberry Pi 4 and 5 from their published peaks.

Each precision is measured in its own fresh process, so its peak memory is its own, and the
precisions are measured one after the other in one run, so their ratio is a fair comparison.
The budget run streams a recording in a fresh process too (a child running :func:`_stream_child`,
the code of `humwatch stream`), so the CPU time /proc reports for it is the monitor's alone.
Timing refuses to start while other processes keep the cores busy (or says so with allow_busy).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np

from edge.core.audio import AudioError
from edge.core.bundle import BundleError, load_bundle
from edge.core.proc import cpu_ticks, memory_mb, process_cpu_sec, timed
from edge.engine.classifier import Classifier
from edge.engine.detector import Detector
from edge.engine.pacing import HopPlanner
from edge.engine.stream import stream_file

# Published peaks (the cpufp benchmark), GFLOP/s or GOP/s with all four cores.
PI_PEAKS = {
    "pi4": {"board": "Raspberry Pi 4 (4x Cortex-A72)", "fp32": 47.9, "int8": 47.9},  # no int8 dot-product
    "pi5": {"board": "Raspberry Pi 5 (4x Cortex-A76)", "fp32": 153.5, "int8": 614.0},
}
PI_CORES = 4
# The share of a CPU's peak onnxruntime reaches on this model: measured on the workstation as about
# 80 % of onnxruntime's own MatMul peak; the estimates assume a Pi does as well.
PEAK_EFFICIENCY = 0.8
BUSY_CORES = 0.25  # other processes using more than this many cores spoil the timing


class BenchError(RuntimeError):
    """The benchmark cannot run or give clean figures; the message says why."""


class BusyMachine(BenchError):
    """Other processes keep the cores busy; the message names the busiest."""


def other_load(seconds: float = 1.0) -> tuple[float, list[tuple[str, int, float]]]:
    """(cores used by other processes over `seconds`, the busiest [(name, pid, cores)])."""
    before = cpu_ticks()
    time.sleep(seconds)
    after = cpu_ticks()
    hertz = os.sysconf("SC_CLK_TCK")
    usage = [(name, pid, (total - before[pid][1]) / hertz / seconds) for pid, (name, total) in after.items()
             if pid in before and pid != os.getpid()]
    usage.sort(key=lambda row: -row[2])
    return sum(row[2] for row in usage), usage[:3]


def check_quiet(allow_busy: bool) -> str | None:
    """None when the machine is quiet; else raise BusyMachine, or with allow_busy return a note."""
    cores, busiest = other_load()
    if cores <= BUSY_CORES:
        return None
    names = ", ".join(f"{name} (pid {pid}, {share:.1f} cores)" for name, pid, share in busiest if share > 0.05)
    note = f"other processes use {cores:.1f} cores: {names}"
    if not allow_busy:
        raise BusyMachine(f"{note}; timings would be wrong. Stop them, or pass --allow-busy to time anyway (and say so)")
    return note


def measure(bundle_dir: Path, precision: str, threads: int | None, windows: int, budget: float, seed: int = 0) -> dict:
    """Measured in the calling process: run it in a fresh one (see :func:`bench`)."""
    classifier, load_sec, _ = timed(lambda: Classifier(load_bundle(bundle_dir), precision, threads))
    bundle = classifier.bundle
    audio = (np.random.default_rng(seed).standard_normal((windows, bundle.window.window_samples)) * 0.05).astype(np.float32)
    classifier.predict(audio[:1])  # warm-up: first run allocates
    timings, cpu = [], []
    for window in audio:
        _, wall_sec, cpu_sec = timed(classifier.predict, window[None])
        timings.append(wall_sec)
        cpu.append(cpu_sec)
    p50, p95 = np.percentile(timings, [50, 95])
    gflop = bundle.manifest.gflop_per_window[precision]
    cpu_sec = float(np.median(cpu))
    return {
        "precision": precision,
        "threads": classifier.sessions[0].get_session_options().intra_op_num_threads,
        "windows": windows,
        "load_sec": load_sec,
        "p50_ms": 1000 * float(p50),
        "p95_ms": 1000 * float(p95),
        "cpu_ms": 1000 * cpu_sec,
        "gflop": gflop,
        "gflops": gflop / float(p50),
        "hop_here_sec": HopPlanner(None, cpu_sec, budget).hop_sec,
        **{f"{pi}_hop_est_sec": pi_hop(gflop, precision, pi, budget) for pi in PI_PEAKS},
        "realtime_factor": float(p50) / bundle.window.hop_sec,  # share of real time at the default hop
        "peak_rss_mb": memory_mb("VmHWM"),
        "model_mb": sum(path.stat().st_size for path in bundle.graph_paths(precision).values()) / 1e6,
    }


def pi_hop(gflop: float, precision: str, pi: str, budget: float) -> float:
    """Estimated hop on a Pi: a window takes gflop / (peak x PEAK_EFFICIENCY) on all four cores."""
    peak = PI_PEAKS[pi]["int8" if precision == "int8" else "fp32"]
    cpu_sec = PI_CORES * gflop / (peak * PEAK_EFFICIENCY)
    return HopPlanner(None, cpu_sec, budget, cores=PI_CORES).hop_sec


def bench(bundle_dir: Path, precisions: list[str], threads: int | None, windows: int, budget: float) -> list[dict]:
    context = multiprocessing.get_context("spawn")
    results = []
    for precision in precisions:
        with context.Pool(1) as pool:
            results.append(pool.apply(measure, (bundle_dir, precision, threads, windows, budget)))
    return results


def _stream_child(sender, bundle_dir: Path, audio: Path, hop: str, budget: float, precision: str | None,
                  realtime: bool) -> None:
    """In the child process: `humwatch stream` over `audio`, each hop's line sent to the parent, then
    None (or the error's message)."""
    try:
        detector = Detector.from_bundle(bundle_dir, precision, hop, budget)
        for line in stream_file(detector, audio, realtime=realtime):
            sender.send(line.to_json())
        sender.send(None)
    except (AudioError, BundleError, ValueError) as error:
        sender.send(str(error))
    finally:
        sender.close()


def _stream(bundle_dir: Path, audio: Path, hop: str, budget: float, precision: str | None,
            realtime: bool = False) -> tuple[list[dict], float, float]:
    """Stream a recording in a fresh process: (its lines, its CPU seconds from /proc, wall seconds)."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_stream_child, args=(sender, bundle_dir, audio, hop, budget, precision, realtime))
    started = time.monotonic()
    child.start()
    sender.close()
    cpu_sec, wall_sec, lines = 0.0, 0.0, []
    try:
        while (message := receiver.recv()) is not None:  # each line is also a moment to read the child's CPU time
            if isinstance(message, str):
                raise BenchError(f"--budget-run {audio}: {message}")
            lines.append(message)
            cpu_sec, wall_sec = process_cpu_sec(child.pid), time.monotonic() - started
    except EOFError:
        raise BenchError(f"--budget-run {audio}: the streaming process ended early (exit code {child.exitcode})") from None
    finally:
        child.join()
    return lines, cpu_sec, wall_sec


def budget_run(bundle_dir: Path, audio: Path, budget: float, precision: str | None) -> dict:
    """`stream --realtime --hop auto --cpu-budget` over a recording: CPU time / wall time from /proc
    against the budget, and its debounced decisions against hop 1.5 s away from state changes."""
    bundle = load_bundle(bundle_dir)
    decision = bundle.decision_for(precision or bundle.default_precision)
    auto, cpu_sec, wall_sec = _stream(bundle_dir, audio, "auto", budget, precision, realtime=True)
    reference, _, _ = _stream(bundle_dir, audio, "1.5", budget, precision)
    changes = [b["t"] for a, b in zip(reference, reference[1:]) if a["debounced_status"] != b["debounced_status"]]
    compared = agreeing = 0
    for line in auto:
        if any(abs(line["t"] - change) <= decision.median_sec for change in changes):
            continue  # within one median span of a change the two hops may switch at different moments
        before = [r for r in reference if r["t"] <= line["t"]]
        if before:
            compared += 1
            agreeing += before[-1]["debounced_status"] == line["debounced_status"]
    cores = os.cpu_count() or 1
    return {
        "cores": cores, "cpu_budget": budget, "hop_sec": sorted({line["hop_sec"] for line in auto}),
        "cpu_over_wall": cpu_sec / wall_sec, "limit": budget * cores + 0.05, "within_budget": cpu_sec / wall_sec <= budget * cores + 0.05,
        "hops_compared": compared, "hops_agreeing": agreeing, "changes_at_1_5_sec": changes,
    }
