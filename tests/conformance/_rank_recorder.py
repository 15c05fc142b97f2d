"""Loaded by the multi-GPU conformance test inside each torchrun process (``PYTHONPATH`` holds this folder):
records which training samples the rank's data loader draws in the first epoch."""

from __future__ import annotations

import json
from pathlib import Path

import torch.distributed as dist
from ignite.engine import Engine, Events


def attach(trainer: Engine, out_dir: str) -> None:
    """At the first epoch's start (after MONAI sets the sampler's epoch) write ``rank<r>.json`` with the
    dataset indices this rank's sampler yields and the dataset length."""

    def record(engine: Engine) -> None:
        loader = engine.data_loader
        rank = dist.get_rank() if dist.is_initialized() else 0
        indices = [int(i) if not isinstance(i, (tuple, list)) else int(i[0]) for i in loader.sampler]
        path = Path(out_dir) / f"rank{rank}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rank": rank, "world": dist.get_world_size() if dist.is_initialized() else 1,
                                    "indices": indices, "dataset_len": len(loader.dataset),
                                    "sampler": type(loader.sampler).__name__}))

    trainer.add_event_handler(Events.EPOCH_STARTED(once=1), record)
