"""Process start: ``import monai`` and resolving each bundle's trainer, against ``python -c "import torch"``.

Every sweep stage and every ``python -m monai.bundle run`` starts Python and MONAI afresh. Measured
in fresh processes (wall time of the whole process, interpreter start included):

- baseline ``python -c "import torch"``;
- ``python -c "import monai"`` (MONAI imports all its submodules, and every package installed in its
  namespace: with the MONAI Deploy SDK in the environment that is ``monai.deploy``, Holoscan,
  highdicom; ``monai_deploy_s`` is their share, from ``-X importtime``);
- per bundle, ``import monai`` plus what ``monai.bundle run`` does before its first iteration: read
  ``train.json`` (with ``smoke.json``, so networks are small and building them is not the figure)
  and resolve ``train#trainer``. ``optional_loaded`` lists the heavy optional packages this pulled in
  (Ray, SAM 2, ONNX, ...), which should be none but what the bundle uses.

Ratios are to the ``import torch`` baseline of the same run. Saves
``benchmarks/results/process_start.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _timing import save_result

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = ("ray", "sam2", "onnx", "onnxruntime", "holoscan", "monai.deploy", "segment_anything", "highdicom",
            "hydra", "matplotlib", "optuna", "tensorboard", "mlflow")
_RESOLVE = """
import sys, json, os
import monai
from monai.bundle import ConfigParser
configs = os.path.join({repo!r}, "bundles", {bundle!r}, "configs")
parser = ConfigParser()
parser.read_config([os.path.join(configs, "train.json"), os.path.join(configs, "smoke.json")])
parser.get_parsed_content("train#trainer", instantiate=True)
print("LOADED " + json.dumps([m for m in {optional!r} if m in sys.modules]))
"""


def _run(code: str, env: dict[str, str], repeats: int, extra: tuple[str, ...] = ()) -> tuple[float, str, str]:
    """Median wall seconds of ``python [extra] -c code`` over ``repeats`` fresh processes; last stdout, stderr."""
    times, out, err = [], "", ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, *extra, "-c", code], capture_output=True, text=True, env=env,
                              cwd=REPO)
        times.append(time.perf_counter() - t0)
        if proc.returncode:
            raise RuntimeError(f"python -c {code[:200]!r} failed:\n{proc.stderr[-3000:]}")
        out, err = proc.stdout, proc.stderr
    return statistics.median(times), out, err


def _deploy_share(importtime: str) -> float:
    """Seconds that ``monai.deploy`` (and what it pulls in first) adds to ``import monai``, from ``-X importtime``
    (a lower bound: modules it shares with MONAI count where they are first imported)."""
    total = 0.0
    for line in importtime.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cumulative, name = line.split("|")
        # direct children of ``monai`` are indented by 2 spaces; count the monai.deploy ones
        if name.startswith("   ") and not name.startswith("    ") and name.strip().startswith("monai.deploy"):
            total += int(cumulative) / 1e6
    return total


def main() -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundles", default="", help="comma-separated bundle names (default: all)")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per figure (median; default 3)")
    args = p.parse_args()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "common"),
                                                                   os.environ.get("PYTHONPATH", "")])))
    bundles = [b for b in args.bundles.split(",") if b] or sorted(
        d.name for d in (REPO / "bundles").iterdir() if (d / "configs" / "train.json").is_file())
    torch_s, _, _ = _run("import torch", env, args.repeats)
    monai_s, _, _ = _run("import monai", env, args.repeats)
    _, _, importtime = _run("import monai", env, 1, ("-X", "importtime"))
    out: dict[str, Any] = {
        "baseline": 'python -c "import torch" (fresh process)', "baseline_s": torch_s,
        "import_monai_s": monai_s, "import_monai_ratio": monai_s / torch_s,
        "monai_deploy_s": _deploy_share(importtime), "repeats": args.repeats, "bundles": {},
    }
    print(f"import torch {torch_s:.2f} s; import monai {monai_s:.2f} s ({monai_s / torch_s:.1f}x), of which "
          f"monai.deploy {out['monai_deploy_s']:.2f} s", flush=True)
    for b in bundles:
        code = _RESOLVE.format(repo=str(REPO), bundle=b, optional=OPTIONAL)
        try:
            s, stdout, _ = _run(code, env, args.repeats)
        except RuntimeError as e:
            out["bundles"][b] = {"error": str(e)[-2000:]}
            print(f"{b}: failed\n{e}")
            continue
        loaded = json.loads(next(x for x in stdout.splitlines() if x.startswith("LOADED "))[len("LOADED "):])
        out["bundles"][b] = {"import_monai_and_resolve_trainer_s": s, "ratio": s / torch_s, "optional_loaded": loaded}
        print(f"{b}: import monai + resolve train#trainer {s:.2f} s ({s / torch_s:.1f}x import torch); "
              f"optional packages loaded: {', '.join(loaded) or 'none'}", flush=True)
    save_result("process_start", out)
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
