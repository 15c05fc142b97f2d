"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def median_seconds(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up; ``sync`` waits for the device."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def save_result(name: str, result: dict) -> Path:
    """Write ``result`` as ``benchmarks/results/<name>.json``, print and return the path."""
    import json
    from pathlib import Path

    out = Path(__file__).resolve().parent / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out}")
    return out


def warn_if_loaded(threads: int) -> None:
    """Say so when other processes keep the CPUs busy: with more torch threads than idle cores, OpenMP's
    barriers wait for descheduled threads, and models made of many small operations slow down many-fold
    (on this 2-core machine: tiny SAM 2 ~60x with 2 threads next to one busy process, not with 1)."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if threads > 1 and load > 0.5:
        print(f"note: 1-min load average {load:.1f} on {cores} cores before the run: other processes compete for "
              f"the CPUs; with {threads} torch threads small-operation workloads can slow down many-fold. Compare "
              "with --threads 1.", flush=True)
