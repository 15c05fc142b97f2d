"""Run every ``benchmarks/bench_*.py`` (or those named), then collect their ratios in one JSON.

Each benchmark writes its own ``benchmarks/results/<name>.json`` with its figures and the baseline
they are measured against. This script then writes ``benchmarks/results/summary.json``: every ratio
(a number under a key with the word ``ratio``, ``share`` or ``speedup``; goals left out) of every
result file this run wrote, by benchmark and path, with the ``baseline`` named nearest to it (in the
same object or the closest one above), and the benchmarks that failed. Usage:
``python benchmarks/run.py [bench_otsu bench_data_pipeline ...]`` (``make bench`` runs them all);
exits with 1 if one failed.
"""

from __future__ import annotations

import json
import runpy
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def ratios(obj: Any, path: str = "", baseline: str | None = None) -> list[dict[str, Any]]:
    """``{"path", "value", "baseline"}`` of every ratio in a result (see the module docstring)."""
    out: list[dict[str, Any]] = []
    if isinstance(obj, dict):
        baseline = obj.get("baseline", baseline) if isinstance(obj.get("baseline"), str) else baseline
        for key, value in obj.items():
            sub = f"{path}/{key}" if path else str(key)
            words = str(key).split("_")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and words[0] != "goal" and (
                    {"ratio", "share", "speedup"} & set(words)):
                out.append({"path": sub, "value": value, "baseline": baseline})
            else:
                out.extend(ratios(value, sub, baseline))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out.extend(ratios(value, f"{path}[{i}]", baseline))
    return out


def summary(since: float, failed: dict[str, str]) -> dict[str, Any]:
    """The ratios of every result file written since ``since`` (this run), and the failures."""
    out: dict[str, Any] = {"results": {}, "failed": failed}
    for f in sorted(RESULTS.glob("*.json")):
        if f.name == "summary.json" or f.stat().st_mtime < since:
            continue
        try:
            out["results"][f.stem] = ratios(json.loads(f.read_text()))
        except json.JSONDecodeError as e:
            out["results"][f.stem] = [{"error": str(e)}]
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))  # the benchmarks share benchmarks/_timing.py and _trainer.py
    names = sys.argv[1:] or sorted(p.stem for p in HERE.glob("bench_*.py"))
    start = time.time()
    failed: dict[str, str] = {}
    for name in names:
        print(f"== {name}", flush=True)
        sys.argv = [str(HERE / f"{name}.py")]  # each benchmark parses its own (default) arguments
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
        except (Exception, SystemExit) as e:  # one failing benchmark does not stop the others
            if isinstance(e, SystemExit) and not e.code:
                continue
            failed[name] = "".join(traceback.format_exception_only(type(e), e)).strip()
            print(f"{name} failed: {failed[name]}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary(start, failed), indent=2))
    print(f"saved {RESULTS / 'summary.json'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)
