"""Engine overhead and data pipeline: each bundle's ``SupervisedTrainer`` vs a bare PyTorch loop.

For each bundle the main training stage (``train.json``; ``smoke.json`` on top unless ``--full``) is
initialised as ``monai.bundle run`` does (``ConfigWorkflow``: its ``initialize`` steps, so the
training-state handlers are attached). Then, in the same process, on the same data loader, network,
loss, optimizer, inferer and ``prepare_batch``:

- **engine**: ``trainer.run()`` for ``--epochs`` epochs, with every handler of ``train#handlers``
  except ``ValidationHandler`` (validation is its own cost, not the engine's) and those the
  ``initialize`` steps attach (checkpoints, training state);
- **bare** (baseline): a ``for`` loop over the loader doing what ``SupervisedTrainer._iteration``
  does (``prepare_batch``, ``zero_grad``, forward through the inferer, ``loss.mean()``,
  ``backward``, ``step``; autocast and the grad scaler when the trainer uses AMP) and nothing else.

One warm-up epoch of the bare loop runs first; then engine and bare alternate ``--rounds`` times
and the fastest run of each is compared (on a shared machine other processes only ever add time).
Goal (issue 23): ``ratio = engine / bare <= 1.05``.

Data pipeline, on the same loader: images per second of iterating it (the train transforms, their
cache and collation; ``loader_images_per_s``) and of iterating it through ``prepare_batch`` with the
network a no-op (``loader_and_prepare_batch_images_per_s``; some bundles compute pseudo-labels
there), against the bare step's images per second. Goal: ``pipeline_ratio >= 2``.

Saves ``benchmarks/results/engine_overhead.json`` (``_full`` with ``--full``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _timing import save_result, warn_if_loaded

REPO = Path(__file__).resolve().parents[1]
THREADS = max(1, min(2, os.cpu_count() or 1))  # as tests/conftest.py
# bundle -> its main training stage's config (the protocol's main stage)
STAGE = "train.json"


def child(bundle: str, full: bool, epochs: int, rounds: int, threads: int) -> dict[str, Any]:
    import contextlib

    import torch
    from monai.bundle import ConfigParser, ConfigWorkflow

    torch.set_num_threads(threads)
    configs = REPO / "bundles" / bundle / "configs"
    files = [os.fspath(configs / STAGE)] + ([] if full else [os.fspath(configs / "smoke.json")])
    raw = ConfigParser()
    raw.read_config(files)
    handlers = [h for h in raw["train#handlers"]
                if not (isinstance(h, dict) and str(h.get("_target_", "")).endswith("ValidationHandler"))]
    out_dir = tempfile.mkdtemp(prefix="fewlabel-engine-")
    wf = ConfigWorkflow(config_file=files, workflow_type="train",
                        **{"train#handlers": handlers, "epochs": epochs, "output_dir": out_dir})
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    net, opt, loader = trainer.network, trainer.optimizer, trainer.data_loader
    device = trainer.state.device

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

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

    bare(1)  # warm-up: caches, allocator, lazy imports
    engine_s, bare_s = [], []
    steps = 0
    for r in range(rounds):
        trainer.state.max_epochs = epochs * (r + 1)  # ignite continues from the epoch it reached
        t0 = time.perf_counter()
        trainer.run()
        sync()
        engine_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        steps = bare(epochs)
        bare_s.append(time.perf_counter() - t0)
    e, b = min(engine_s), min(bare_s)  # the least disturbed run of each: other processes only ever add time

    # data pipeline: the loader (train transforms, collate) and prepare_batch with the network a no-op
    def pipeline(with_prepare: bool) -> tuple[float, int]:
        images = 0
        t0 = time.perf_counter()
        for _ in range(epochs):
            for batchdata in loader:
                if with_prepare:
                    batch = trainer.prepare_batch(batchdata, device, trainer.non_blocking, **trainer.to_kwargs)
                    images += int(batch[0].shape[0])
                else:
                    images += _batch_size(batchdata)
        sync()
        return time.perf_counter() - t0, images

    load_s, load_images = min((pipeline(False) for _ in range(rounds)), key=lambda r: r[0])
    prep_s, prep_images = min((pipeline(True) for _ in range(rounds)), key=lambda r: r[0])
    step_ips = prep_images / b
    return {"bundle": bundle, "stage": STAGE, "size": "full" if full else "smoke", "epochs": epochs,
            "iterations_per_run": steps, "device": str(device), "amp": bool(trainer.amp),
            "handlers": [str(h.get("_target_")) for h in handlers if isinstance(h, dict)],
            "engine_s": e, "bare_s": b, "ratio": e / b, "engine_runs_s": engine_s, "bare_runs_s": bare_s,
            "per_iteration_overhead_ms": 1e3 * (e - b) / max(steps, 1),
            "step_images_per_s": step_ips, "loader_images_per_s": load_images / load_s,
            "loader_and_prepare_batch_images_per_s": prep_images / prep_s,
            "pipeline_ratio": (prep_images / prep_s) / step_ips}


def _batch_size(batchdata: Any) -> int:
    """Images in a collated batch: the first dimension of its first tensor."""
    import torch

    if isinstance(batchdata, torch.Tensor):
        return int(batchdata.shape[0])
    values = batchdata.values() if isinstance(batchdata, dict) else batchdata
    for v in values:
        n = _batch_size(v) if isinstance(v, (dict, list, tuple, torch.Tensor)) else 0
        if n:
            return n
    return 0


def main() -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundles", default="", help="comma-separated bundle names (default: all)")
    p.add_argument("--full", action="store_true", help="the bundles' full-size networks (no smoke.json)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per timed run (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="alternating engine / bare runs (median; default 3)")
    p.add_argument("--threads", type=int, default=THREADS, help=f"torch.set_num_threads (default {THREADS})")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.full, args.epochs, args.rounds, args.threads)))
        return {}
    names = [b for b in args.bundles.split(",") if b] or sorted(
        d.name for d in (REPO / "bundles").iterdir() if (d / "configs" / STAGE).is_file())
    warn_if_loaded(args.threads)
    out: dict[str, Any] = {"baseline": "bare PyTorch loop: prepare_batch, zero_grad, forward, loss, backward, step",
                           "measured": "the bundle's SupervisedTrainer.run() with its handlers (no validation)",
                           "goal_ratio": 1.05, "threads": args.threads, "bundles": {}}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "common"),
                                                                   os.environ.get("PYTHONPATH", "")])))
    for name in names:
        cmd = [sys.executable, __file__, "--child", name, "--epochs", str(args.epochs), "--rounds", str(args.rounds),
               "--threads", str(args.threads)] + (["--full"] if args.full else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            out["bundles"][name] = {"error": (proc.stderr or proc.stdout)[-2000:]}
            print(f"{name}: failed\n{proc.stderr[-2000:]}", flush=True)
            continue
        r = json.loads(line[len("RESULT "):])
        out["bundles"][name] = r
        print(f"{name}: engine {r['engine_s']:.2f} s vs bare {r['bare_s']:.2f} s over {r['iterations_per_run']} "
              f"iterations -> {r['ratio']:.3f}x ({r['per_iteration_overhead_ms']:.1f} ms/iteration); data pipeline "
              f"{r['loader_and_prepare_batch_images_per_s']:.1f} images/s vs step {r['step_images_per_s']:.1f} "
              f"-> {r['pipeline_ratio']:.1f}x", flush=True)
    save_result("engine_overhead" + ("_full" if args.full else ""), out)
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
