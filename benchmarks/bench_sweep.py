"""A sweep on a local Ray instance against the same runs one after another without Ray (baseline).

Both execute the same runs (MedSASS smoke training + evaluation, ``--cells`` learning rates x two seeds)
with :func:`fewlabel.sweep.execute_run`, i.e. the same ``monai.bundle run`` subprocesses with one
torch thread each; the sweep runs ``--parallel`` of them at once. Reported: wall times, their ratio,
and Ray's fixed cost (start of the local instance and shut-down).

    python benchmarks/bench_sweep.py [--cells 2] [--parallel 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _timing import save_result

from fewlabel.sweep import execute_run, load_spec, run_sweep


def _spec(cells: int) -> dict:
    return {"name": "bench", "bundle": "medsass_binary_segmentation", "seeds": [0, 1],
            "stages": [{"name": "train", "configs": ["train.json", "smoke.json"]},
                       {"name": "evaluate", "configs": ["train.json", "smoke.json", "evaluate.json"]}],
            "grid": {"learning_rate": [10.0 ** -(3 + i) for i in range(cells)]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("FEWLABEL_CACHE", str(Path(tmp) / "cache"))
        spec = load_spec(_spec(args.cells))
        execute_run(spec.runs(Path(tmp) / "warmup")[0], threads=1)  # demo data written, files cached
        runs = spec.runs(Path(tmp) / "serial")
        t0 = time.perf_counter()
        for run in runs:
            execute_run(run, threads=1)
        serial = time.perf_counter() - t0
        assert all((r.folder / "done.json").is_file() for r in runs)

        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local instance, as fewlabel sweep starts
        t0 = time.perf_counter()
        ray.init(
            address="local",
            num_cpus=args.parallel,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        ray_start = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_sweep(spec, Path(tmp) / "ray", cpus_per_run=1, report=False, progress=False)
        sweep = time.perf_counter() - t0
        t0 = time.perf_counter()
        ray.shutdown()
        ray_stop = time.perf_counter() - t0
    n = len(runs)
    result = {
        "runs": n,
        "parallel": args.parallel,
        "cpu_count": os.cpu_count(),
        "baseline_serial_seconds": round(serial, 1),
        "baseline_seconds_per_run": round(serial / n, 1),
        "sweep_seconds": round(sweep, 1),
        "ray_start_seconds": round(ray_start, 1),
        "ray_stop_seconds": round(ray_stop, 1),
        "serial_over_sweep": round(serial / sweep, 2),
        "serial_over_sweep_with_ray_start_stop": round(serial / (sweep + ray_start + ray_stop), 2),
    }
    print(result)
    save_result("sweep", result)


if __name__ == "__main__":
    main()
