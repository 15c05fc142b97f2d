"""Data pipeline: images per second of each bundle's training data path vs its training step's.

For each bundle the main training stage (``train.json``; ``smoke.json`` on top unless ``--full``) is
built as ``monai.bundle run`` builds it (``_trainer.py``), and on its own data loader (the train
transforms, the dataset's cache where the config has one, the loader's workers, collation):

- **pipeline** (measured): iterating the loader and the trainer's ``prepare_batch`` with the network
  replaced by a no-op (nothing is computed on the batch), in images per second
  (``pipeline_images_per_s``; ``loader_images_per_s``: the loader alone, without ``prepare_batch``,
  which computes pseudo-labels or augments on the device in some bundles);
- **step** (baseline): the bare training step (``prepare_batch``, forward, loss, backward, optimizer
  step) over the same loader, in images per second.

One warm-up epoch runs first (caches filled, workers started once); each figure is the fastest of
``--rounds`` runs of ``--epochs`` epochs. Goal (issue 23): ``ratio = pipeline / step >= 2``: the
loader keeps the step busy. Saves ``benchmarks/results/data_pipeline.json`` (``_full`` with ``--full``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from _trainer import STAGE, bare_loop, batch_size, load_trainer, sync
from _trainer import main as trainer_main


def child(bundle: str, full: bool, epochs: int, rounds: int, threads: int) -> dict[str, Any]:
    _, trainer, _ = load_trainer(bundle, full, epochs, threads)
    loader, device = trainer.data_loader, trainer.state.device
    bare = bare_loop(trainer)

    def pipeline(with_prepare: bool) -> float:
        images = 0
        t0 = time.perf_counter()
        for _ in range(epochs):
            for batchdata in loader:
                if with_prepare:
                    batch = trainer.prepare_batch(batchdata, device, trainer.non_blocking, **trainer.to_kwargs)
                    images += int(batch[0].shape[0])
                else:
                    images += batch_size(batchdata)
        sync()
        return images / (time.perf_counter() - t0)

    original, counted = trainer.prepare_batch, []

    def counting(batchdata: Any, *args: Any, **kwargs: Any) -> Any:
        batch = original(batchdata, *args, **kwargs)
        counted.append(int(batch[0].shape[0]))
        return batch

    bare(1)  # warm-up: caches, workers, allocator, lazy imports
    step_ips, pipe_ips, load_ips = [], [], []
    for _ in range(rounds):
        counted.clear()
        trainer.prepare_batch = counting  # the images the step sees
        t0 = time.perf_counter()
        bare(epochs)
        step_ips.append(sum(counted) / (time.perf_counter() - t0))
        trainer.prepare_batch = original
        pipe_ips.append(pipeline(True))
        load_ips.append(pipeline(False))
    step, pipe = max(step_ips), max(pipe_ips)
    return {"bundle": bundle, "stage": STAGE, "size": "full" if full else "smoke", "epochs": epochs,
            "device": str(device), "dataset": type(loader.dataset).__name__, "loader": type(loader).__name__,
            "num_workers": int(getattr(loader, "num_workers", 0)), "batch_size": loader.batch_size,
            "step_images_per_s": step, "pipeline_images_per_s": pipe, "loader_images_per_s": max(load_ips),
            "ratio": pipe / step}


def main() -> dict[str, Any]:
    def report(name: str, r: dict[str, Any]) -> None:
        print(f"{name}: pipeline {r['pipeline_images_per_s']:.1f} images/s (loader alone "
              f"{r['loader_images_per_s']:.1f}; {r['dataset']}, {r['num_workers']} workers) vs step "
              f"{r['step_images_per_s']:.1f} images/s -> {r['ratio']:.1f}x", flush=True)

    return trainer_main(__file__, __doc__.splitlines()[0], child, "data_pipeline",
                        {"baseline": "bare training step (prepare_batch, forward, loss, backward, step), images/s",
                         "measured": "the bundle's loader and prepare_batch with the network a no-op, images/s",
                         "goal_ratio": 2.0},
                        report)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
