"""What a live monitor costs: several sources in one process against one process per source
(`bench-monitors`), and one monitor as a user runs it, audits included (`bench-live`).

Each configuration runs in fresh processes (multiprocessing spawn) for `seconds` of real time: N
monitors in one process (an Assembly of N monitors sharing one model, as a settings file's
[[monitor]] tables give it) or N processes of one monitor each, running side by side. Every monitor
has its own source: a recording played in real time at its own rate, in 0.1 s chunks from a thread
of its own (as a microphone delivers audio), or the --source the user names (a camera's URL).
Each process reports its peak resident memory (VmHWM, the load included: what must fit in RAM),
its resident memory at the end and its median over the run (sampled every second: the steady
size), the CPU seconds it used while its monitors ran (every thread and the audit's teacher
processes counted, as /proc's utime + stime; loading and the warm-up left out), the longest hop
delay (lag) and the audio dropped, and what its /metrics said its CPU share was.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

from edge.core.audio import AudioFile
from edge.core.proc import memory_mb, own_cpu_sec
from edge.monitor.live import AudioCallback
from edge.monitor.settings import LiveSettings

CHUNK_SEC = 0.1
PLAYER_RATE = 48_000  # the synthesized recording's rate: a USB microphone's


class PlayerSource:
    """A recording played in real time, looped, as a microphone would deliver it (an AudioSource)."""

    def __init__(self, audio: np.ndarray, rate: int) -> None:
        self.audio, self.rate = audio, rate
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, callback: AudioCallback) -> int:
        self._stop.clear()
        self._thread = threading.Thread(target=self._play, args=(callback,), name="player", daemon=True)
        self._thread.start()
        return self.rate

    def _play(self, callback: AudioCallback) -> None:
        step, started = int(CHUNK_SEC * self.rate), time.monotonic()
        for index in range(sys.maxsize):
            if self._stop.wait(max(0.0, started + index * CHUNK_SEC - time.monotonic())):
                return
            start = index * step % len(self.audio)
            callback(self.audio[start : start + step], False)

    def check(self) -> None:
        pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def recording(path: Path | None, seed: int = 0) -> tuple[np.ndarray, int]:
    """(mono float32 audio, its rate): the file at its own rate, or 30 s of quiet noise at 48 kHz."""
    if path is None:
        rng = np.random.default_rng(seed)
        return (rng.standard_normal(30 * PLAYER_RATE) * 0.05).astype(np.float32), PLAYER_RATE
    audio = AudioFile(path)
    return np.concatenate(list(audio.native_chunks())), audio.sample_rate


def _child(sender, settings: list[LiveSettings], audio_path: Path | None, seconds: float) -> None:
    """In a fresh process: run the monitors for `seconds`, then send what it cost."""
    from edge.monitor.assembly import Assembly, open_settings_source

    try:
        sys.stdout = open(os.devnull, "w")  # the monitors' lines and warnings are not the benchmark's output
        logging.disable(logging.WARNING)  # (drops are counted instead)
        audio, rate = recording(audio_path) if settings[0].source is None else (None, None)
        assembly = Assembly(settings, open_source=(lambda each: PlayerSource(audio, rate)) if audio is not None
                            else open_settings_source)
        lines = {monitor.name: [] for monitor in assembly.monitors}
        for monitor in assembly.monitors:
            monitor.outputs.add(lambda line, name=monitor.name: lines[name].append(line), "bench")
        assembly.start()
        threading.Timer(seconds, assembly.stop).start()
        cpu_before, started, rss = own_cpu_sec(), time.monotonic(), []
        sampler = threading.Thread(target=_sample_rss, args=(rss, started + seconds), daemon=True)
        sampler.start()
        assembly.run()
        cpu_sec, wall_sec = own_cpu_sec() - cpu_before, time.monotonic() - started
        served = _served_cpu_share(assembly.server) if assembly.server is not None else None
        hops = [line for each in lines.values() for line in each]
        auditors = [monitor.detector.auditor for monitor in assembly.monitors if monitor.detector.auditor is not None]
        sender.send({"peak_rss_mb": memory_mb("VmHWM"), "rss_end_mb": memory_mb("VmRSS"), "cpu_sec": cpu_sec,
                     "steady_rss_mb": float(np.median(rss)) if rss else memory_mb("VmRSS"),
                     "wall_sec": wall_sec, "dropped_sec": sum(monitor.monitor.dropped_sec for monitor in assembly.monitors),
                     "max_lag_sec": max((line.lag_sec or 0.0 for line in hops), default=None),
                     "audits": sum(auditor.audits for auditor in auditors),
                     "teacher_process_peak_mb": max((getattr(auditor, "teacher_process_peak_mb", None) or 0.0
                                                     for auditor in auditors), default=None) or None,
                     "metrics_cpu_share": served,
                     "lines": [len(each) for each in lines.values()],
                     "hop_sec": sorted({line.hop_sec for line in hops})})
    except Exception as error:  # the parent says which configuration failed and why
        sender.send(f"{type(error).__name__}: {error}")
    finally:
        sender.close()


def _sample_rss(samples: list[float], until: float) -> None:
    """Resident memory every second until `until` (the steady size is their median)."""
    while time.monotonic() < until:
        time.sleep(1.0)
        samples.append(memory_mb("VmRSS"))


def _served_cpu_share(server) -> float | None:
    """The humwatch_cpu_share the monitor's /metrics says (None where it has none)."""
    found = re.search(r"^humwatch_cpu_share (\S+)$", server.metrics(), re.MULTILINE)
    return float(found.group(1)) if found else None


def run_processes(settings: list[list[LiveSettings]], audio: Path | None, seconds: float) -> list[dict]:
    """One fresh process per list of monitor settings, all at once; what each reported."""
    context = multiprocessing.get_context("spawn")
    pipes, children = [], []
    for monitors in settings:
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=_child, args=(sender, monitors, audio, seconds))
        child.start()
        sender.close()
        pipes.append(receiver)
        children.append(child)
    results = []
    try:
        for receiver, child in zip(pipes, children):
            try:
                result = receiver.recv()
            except EOFError:
                child.join()
                result = f"the process ended early (exit code {child.exitcode})"
            if isinstance(result, str):
                raise RuntimeError(f"a benchmark process failed: {result}")
            results.append(result)
    finally:
        for child in children:
            child.join()
    return results


def monitor_settings(base: LiveSettings, count: int) -> list[LiveSettings]:
    return [dataclasses.replace(base, name=f"source {index + 1}") for index in range(count)]


def bench_monitors(base: LiveSettings, precisions: list[str | None], counts: list[int], seconds: float,
                   audio: Path | None) -> list[dict]:
    """Per precision: one monitor alone, then each further count N in one process and in N processes;
    x_one_source compares each with the one monitor alone."""
    rows = []
    for precision in precisions:
        settings = dataclasses.replace(base, precision=precision)
        alone = None
        for count in sorted({1, *counts}):
            layouts = [("one process", [monitor_settings(settings, count)])]
            if count > 1:
                layouts.append((f"{count} processes", [monitor_settings(settings, 1) for _ in range(count)]))
            for layout, processes in layouts:
                results = run_processes(processes, audio, seconds)
                row = {
                    "precision": precision or "(default)", "sources": count, "layout": layout,
                    "peak_rss_mb": round(sum(r["peak_rss_mb"] for r in results), 1),
                    "per_process_mb": [round(r["peak_rss_mb"], 1) for r in results],
                    "rss_end_mb": round(sum(r["rss_end_mb"] for r in results), 1),  # resident at the end, after the load
                    "cpu_pct_of_a_core": round(100 * sum(r["cpu_sec"] / r["wall_sec"] for r in results), 2),
                    "lines_per_source": min(n for r in results for n in r["lines"]),
                    "dropped_sec": round(sum(r["dropped_sec"] for r in results), 1),  # inference fell behind
                    "hop_sec": sorted({hop for r in results for hop in r["hop_sec"]}),
                }
                alone = alone or row["peak_rss_mb"]
                row["x_one_source"] = round(row["peak_rss_mb"] / alone, 2)
                rows.append(row)
    return rows


def live_configurations(base: LiveSettings, bundle_precisions: tuple[str, ...], audit_every_sec: float,
                        teachers: list[str | None]) -> list[tuple[str, LiveSettings]]:
    """(name, settings) of what `bench-live` compares: the student alone, the student audited by each
    teacher, then each BEATs precision deciding alone."""
    configurations = []
    if "student" in bundle_precisions:
        student = dataclasses.replace(base, precision="student")
        configurations.append(("student", dataclasses.replace(student, audit=dataclasses.replace(base.audit, every_sec=0))))
        for teacher in teachers:
            audit = dataclasses.replace(base.audit, every_sec=audit_every_sec,
                                        **({"teacher": teacher} if teacher else {}))
            configurations.append((f"student, audit by {teacher or 'the default teacher'}",
                                   dataclasses.replace(student, audit=audit)))
    configurations += [(precision, dataclasses.replace(base, precision=precision))
                       for precision in ("int8", "fp32") if precision in bundle_precisions]
    return configurations


def free_port() -> int:
    """A loopback port free now (each bench-live monitor serves its page there in turn)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bench_live(configurations: list[tuple[str, LiveSettings]], seconds: float, audio: Path | None) -> list[dict]:
    """One monitor per configuration, each in a fresh process, one after the other; ratios against the first."""
    rows = []
    for name, settings in configurations:
        result = run_processes([[settings]], audio, seconds)[0]
        cpu = 100 * result["cpu_sec"] / result["wall_sec"]
        served = result["metrics_cpu_share"]
        rows.append({
            "monitor": name, "steady_rss_mb": round(result["steady_rss_mb"], 1), "peak_rss_mb": round(result["peak_rss_mb"], 1),
            "teacher_process_peak_mb": result["teacher_process_peak_mb"] and round(result["teacher_process_peak_mb"], 1),
            "cpu_pct_of_a_core": round(cpu, 2),
            "metrics_cpu_pct_of_a_core": None if served is None else round(100 * served * (os.cpu_count() or 1), 2),
            "max_lag_sec": result["max_lag_sec"], "dropped_sec": round(result["dropped_sec"], 1),
            "audits": result["audits"], "hops": result["lines"][0], "hop_sec": result["hop_sec"],
        })
    first = rows[0]
    for row in rows:
        row["x_steady_rss"] = round(row["steady_rss_mb"] / first["steady_rss_mb"], 2)
        row["x_cpu"] = round(row["cpu_pct_of_a_core"] / first["cpu_pct_of_a_core"], 2) if first["cpu_pct_of_a_core"] else None
    return rows


def summary(rows: list[dict]) -> list[str]:
    """Per precision and count: the memory of N sources in one process against one, and against N processes."""
    lines = []
    for row in rows:
        if row["layout"] == "one process" and row["sources"] > 1:
            apart = next(r for r in rows if r["precision"] == row["precision"] and r["sources"] == row["sources"]
                         and r["layout"] != "one process")
            lines.append(f"{row['precision']}: {row['sources']} sources in one process peak at {row['peak_rss_mb']:.0f} MB, "
                         f"{row['x_one_source']:.2f}x one source (goal: under 1.3x); {row['sources']} processes "
                         f"{apart['peak_rss_mb']:.0f} MB ({apart['x_one_source']:.2f}x)")
    return lines
