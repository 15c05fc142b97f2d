"""Run every ``benchmarks/bench_*.py`` and collect their JSON results in ``benchmarks/results/``."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    sys.path.insert(0, str(HERE))  # the benchmarks share benchmarks/_timing.py
    names = sys.argv[1:] or sorted(p.stem for p in HERE.glob("bench_*.py"))
    for name in names:
        print(f"== {name}", flush=True)
        sys.argv = [str(HERE / f"{name}.py")]  # each benchmark parses its own (default) arguments
        runpy.run_path(sys.argv[0], run_name="__main__")
