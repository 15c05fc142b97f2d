"""A bundle's main training stage as ``monai.bundle run`` builds it, and a bare PyTorch loop over the same parts.

Shared by ``bench_engine_overhead.py`` and ``bench_data_pipeline.py``; each bundle runs in a child process
(``run_children``) so that one bundle's imports, threads and caches do not colour another's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
THREADS = max(1, min(2, os.cpu_count() or 1))  # as tests/conftest.py
STAGE = "train.json"  # each bundle's main training stage


def load_trainer(bundle: str, full: bool, epochs: int, threads: int) -> tuple[Any, Any, list[Any]]:
    """``(workflow, trainer, handlers)``: ``train.json`` (+ ``smoke.json`` unless ``full``) initialised as
    ``monai.bundle run`` does (``ConfigWorkflow.initialize``: training state attached), with every
    ``train#handlers`` entry except ``ValidationHandler`` (validation is its own cost, not the engine's)."""
    import torch
    from monai.bundle import ConfigParser, ConfigWorkflow

    torch.set_num_threads(threads)
    configs = REPO / "bundles" / bundle / "configs"
    files = [os.fspath(configs / STAGE)] + ([] if full else [os.fspath(configs / "smoke.json")])
    raw = ConfigParser()
    raw.read_config(files)
    handlers = [h for h in raw["train#handlers"]
                if not (isinstance(h, dict) and str(h.get("_target_", "")).endswith("ValidationHandler"))]
    out_dir = tempfile.mkdtemp(prefix="fewlabel-bench-")
    wf = ConfigWorkflow(config_file=files, workflow_type="train",
                        **{"train#handlers": handlers, "epochs": epochs, "output_dir": out_dir,
                           "ckpt_dir": os.path.join(out_dir, "models")})
    wf.initialize()
    return wf, wf.parser.get_parsed_content("train#trainer"), handlers


def sync() -> None:
    """Wait for the GPU (nothing on the CPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bare_loop(trainer: Any) -> Callable[[int], int]:
    """``bare(n_epochs) -> iterations``: what ``SupervisedTrainer._iteration`` does (``prepare_batch``,
    ``zero_grad``, forward through the inferer, ``loss.mean()``, ``backward``, ``step``; autocast and the grad
    scaler when the trainer uses AMP) over the trainer's loader, and nothing else."""
    import contextlib

    import torch

    net, opt, loader, device = trainer.network, trainer.optimizer, trainer.data_loader, trainer.state.device

    def bare(n_epochs: int) -> int:
        steps = 0
        net.train()
        for _ in range(n_epochs):
            for batchdata in loader:
                batch = trainer.prepare_batch(batchdata, device, trainer.non_blocking, **trainer.to_kwargs)
                inputs, targets = batch[0], batch[1]
                args, kwargs = (batch[2], batch[3]) if len(batch) == 4 else ((), {})
                opt.zero_grad(set_to_none=trainer.optim_set_to_none)
                ctx = torch.autocast(**trainer.amp_kwargs) if trainer.amp else contextlib.nullcontext()
                with ctx:
                    loss = trainer.loss_function(trainer.inferer(inputs, net, *args, **kwargs), targets).mean()
                if trainer.amp and trainer.scaler is not None:
                    trainer.scaler.scale(loss).backward()
                    trainer.scaler.step(opt)
                    trainer.scaler.update()
                else:
                    loss.backward()
                    opt.step()
                steps += 1
        sync()
        return steps

    return bare


def batch_size(batchdata: Any) -> int:
    """Images in a collated batch: the first dimension of its first tensor."""
    import torch

    if isinstance(batchdata, torch.Tensor):
        return int(batchdata.shape[0])
    values = batchdata.values() if isinstance(batchdata, dict) else batchdata
    for v in values:
        n = batch_size(v) if isinstance(v, (dict, list, tuple, torch.Tensor)) else 0
        if n:
            return n
    return 0


def bundle_names(selected: str) -> list[str]:
    """The comma-separated ``selected`` names, or every bundle with a ``train.json``."""
    return [b for b in selected.split(",") if b] or sorted(
        d.name for d in (REPO / "bundles").iterdir() if (d / "configs" / STAGE).is_file())


def run_children(script: str, names: list[str], args: list[str],
                 report: Callable[[str, dict[str, Any]], None]) -> dict[str, Any]:
    """Run ``script --child NAME *args`` per bundle; collect the JSON each prints after ``RESULT``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "common"),
                                                                   os.environ.get("PYTHONPATH", "")])))
    out: dict[str, Any] = {}
    for name in names:
        proc = subprocess.run([sys.executable, script, "--child", name, *args], capture_output=True, text=True,
                              env=env, cwd=REPO)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            out[name] = {"error": (proc.stderr or proc.stdout)[-2000:]}
            print(f"{name}: failed\n{proc.stderr[-2000:]}", flush=True)
            continue
        out[name] = json.loads(line[len("RESULT "):])
        report(name, out[name])
    return out


def main(script: str, description: str, child: Callable[..., dict[str, Any]], result: str, header: dict[str, Any],
         report: Callable[[str, dict[str, Any]], None]) -> dict[str, Any]:
    """The command line both benchmarks share: per bundle ``child(bundle, full, epochs, rounds, threads)`` in
    its own process (``--child``), reported with ``report``; saves ``header`` plus ``{"bundles": ...}`` as
    ``results/<result>.json`` (``_full`` with ``--full``)."""
    from _timing import save_result, warn_if_loaded

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--bundles", default="", help="comma-separated bundle names (default: all)")
    p.add_argument("--full", action="store_true", help="the bundles' full-size networks and loaders (no smoke.json)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per timed run (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="timed runs of each kind (the fastest counts; default 3)")
    p.add_argument("--threads", type=int, default=THREADS, help=f"torch.set_num_threads (default {THREADS})")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.full, args.epochs, args.rounds, args.threads)))
        return {}
    warn_if_loaded(args.threads)
    out = {**header, "threads": args.threads}
    out["bundles"] = run_children(script, bundle_names(args.bundles),
                                  ["--epochs", str(args.epochs), "--rounds", str(args.rounds), "--threads",
                                   str(args.threads)] + (["--full"] if args.full else []), report)
    save_result(result + ("_full" if args.full else ""), out)
    return out
