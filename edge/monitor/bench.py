"""Benchmark a bundle: load time, ms per window (p50 / p95), real-time factor, peak memory.

Each precision is measured in its own fresh process, so its peak memory is its own, and the
precisions are measured one after the other in one run, so their ratio is a fair comparison.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from pathlib import Path

import numpy as np

from edge.core.bundle import load_bundle
from edge.monitor.runtime import Classifier


def measure(bundle_dir: Path, precision: str, threads: int | None, windows: int, seed: int = 0) -> dict:
    """Measured in the calling process: run it in a fresh one (see :func:`bench`)."""
    started = time.perf_counter()
    bundle = load_bundle(bundle_dir)
    classifier = Classifier(bundle, precision, threads)
    load_sec = time.perf_counter() - started
    audio = (np.random.default_rng(seed).standard_normal((windows, bundle.window.window_samples)) * 0.05).astype(np.float32)
    classifier.predict(audio[:1])  # warm-up: first run allocates
    timings = []
    for window in audio:
        start = time.perf_counter()
        classifier.predict(window[None])
        timings.append((time.perf_counter() - start) * 1000)
    p50, p95 = np.percentile(timings, [50, 95])
    return {
        "precision": precision,
        "threads": classifier.encoder.get_session_options().intra_op_num_threads,
        "windows": windows,
        "load_sec": load_sec,
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "real_time_factor": float(p50) / 1000 / bundle.window.hop_sec,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "encoder_mb": classifier.bundle.graph_paths(precision)["encoder"].stat().st_size / 1e6,
    }


def bench(bundle_dir: Path, precisions: list[str], threads: int | None, windows: int) -> list[dict]:
    context = multiprocessing.get_context("spawn")
    results = []
    for precision in precisions:
        with context.Pool(1) as pool:
            results.append(pool.apply(measure, (bundle_dir, precision, threads, windows)))
    return results
