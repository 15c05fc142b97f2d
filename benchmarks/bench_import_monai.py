"""``python -c "import monai"`` with the MONAI Deploy SDK installed beside MONAI and without, in the same run.

With the SDK (``monai.deploy``) in MONAI's namespace, every ``import monai`` imports it and Holoscan
(MONAI imports every ``monai.*`` package it finds) and Holoscan prints a stack-size warning. fewlabel
keeps the SDK in an environment of its own (:mod:`fewlabel.deploy.env`); this measures what that
saves every ``python -m monai.bundle run``, demo stage and test process. The two interpreters:

- this one (the main environment), and
- with the SDK: the deploy environment (built on first use), or, where this environment still has
  the SDK installed (made before the deploy extra left ``make setup``), this one, and then a throwaway
  virtual environment layered on it with its own MONAI without ``monai.deploy`` is the one without.

Both have the same torch, MONAI version and packages otherwise. Median wall time of fresh processes
(interpreter start included) and CPU time (user + system, less sensitive to other jobs on the machine);
``ratio`` / ``cpu_ratio`` are with / without. Saves ``benchmarks/results/import_monai.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _timing import save_result

REPO = Path(__file__).resolve().parents[1]
CODE = "import sys, monai; print('HOLOSCAN' if 'holoscan' in sys.modules else 'NO HOLOSCAN')"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _once(python: str, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds and CPU seconds (user + system) of one fresh ``python -c CODE``, and its output."""
    t0, c0 = time.perf_counter(), _cpu()
    proc = subprocess.run([python, "-c", CODE], capture_output=True, text=True, env=env, cwd=REPO)
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    if proc.returncode:
        raise RuntimeError(f"{python} -c 'import monai' failed:\n{proc.stderr[-3000:]}")
    return seconds, cpu, proc.stdout + proc.stderr


def _without_sdk(tmp: Path) -> str:
    """A virtual environment layered on this one with its own MONAI (same version), without ``monai.deploy``."""
    from fewlabel.deploy.env import deploy_requirements
    from fewlabel.envs import base_site_dirs, env_python, layer_on, pip_install

    env_dir = tmp / "without_deploy"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    layer_on(env_dir, base_site_dirs())
    pip_install(env_dir, ["--no-deps", "--ignore-installed", *deploy_requirements()["monai"]], "benchmark")
    return str(env_python(env_dir))


def main() -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="fresh processes per figure (median; default 5)")
    args = p.parse_args()
    from fewlabel.deploy.env import ensure_deploy_env, env_python, has_deploy_sdk

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "common"),
                                                                   os.environ.get("PYTHONPATH", "")])))
    with tempfile.TemporaryDirectory(prefix="bench_import_monai_") as tmp:
        if has_deploy_sdk():
            with_sdk, without_sdk = sys.executable, _without_sdk(Path(tmp))
            setup = "this environment has the SDK; without: a throwaway environment layered on it, own MONAI"
        else:
            with_sdk, without_sdk = str(env_python(ensure_deploy_env())), sys.executable
            setup = "this environment has no SDK; with: the deploy environment (fewlabel.deploy.env)"
        # one warm-up each, then alternate, so that a change of machine load hits both alike
        w_out, n_out = _once(with_sdk, env)[2], _once(without_sdk, env)[2]
        w_runs, n_runs = [], []
        for _ in range(args.repeats):
            w_runs.append(_once(with_sdk, env)[:2])
            n_runs.append(_once(without_sdk, env)[:2])

    def side(python: str, runs: list[tuple[float, float]], text: str) -> dict[str, Any]:
        return {"python": python, "seconds": statistics.median(r[0] for r in runs),
                "cpu_seconds": statistics.median(r[1] for r in runs), "all": runs,
                "holoscan_imported": "NO HOLOSCAN" not in text, "stack_size_warning": "stack size" in text}

    w, n = side(with_sdk, w_runs, w_out), side(without_sdk, n_runs, n_out)
    out = {"setup": setup, "repeats": args.repeats, "with_deploy": w, "without_deploy": n,
           "ratio": w["seconds"] / n["seconds"], "cpu_ratio": w["cpu_seconds"] / n["cpu_seconds"],
           "load_average": os.getloadavg()[0]}
    print(f"import monai: with the deploy SDK {w['seconds']:.2f} s wall, {w['cpu_seconds']:.2f} s CPU (Holoscan "
          f"imported: {w['holoscan_imported']}, stack-size warning: {w['stack_size_warning']}); without "
          f"{n['seconds']:.2f} s wall, {n['cpu_seconds']:.2f} s CPU (Holoscan imported: {n['holoscan_imported']}, "
          f"warning: {n['stack_size_warning']}); ratio {out['ratio']:.2f}x wall, {out['cpu_ratio']:.2f}x CPU; 1-min "
          f"load {out['load_average']:.1f} ({setup})", flush=True)
    save_result("import_monai", out)
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
