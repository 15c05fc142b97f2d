"""Checkpoint loading with errors a user can act on: MONAI's ``CheckpointLoader`` handler, checked at attach time."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader as _MonaiCheckpointLoader

from fewlabel.errors import CheckpointError

__all__ = ["CheckpointLoader", "missing_weights_message"]


def missing_weights_message(path: str | os.PathLike) -> str:
    """Explain where a missing weights file comes from (training, or the bundle's large_files.yml)."""
    path = Path(path)
    hint = ""
    for parent in path.resolve().parents:
        large = parent / "large_files.yml"
        if large.is_file():
            entry = next((line.strip() for line in large.read_text().splitlines() if path.name in line), None)
            hint = f" The bundle's {large} lists it" + (f" ({entry})" if entry else "") + "; download it there, or"
            break
    return (
        f"weights file not found: {path}.{hint} Train the bundle first (configs/train.json saves it), "
        "or pass ckpt_path=<your weights file>."
    )


class CheckpointLoader(_MonaiCheckpointLoader):
    """MONAI's :class:`~monai.handlers.CheckpointLoader` (``weights_only`` loading, ``map_location``)
    that fails at attach time, naming the file, when the checkpoint is missing, unreadable or made
    for another network."""

    def attach(self, engine: Engine) -> None:
        if not os.path.isfile(self.load_path):
            raise CheckpointError(missing_weights_message(self.load_path))
        super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        try:
            super().__call__(engine)
        except (RuntimeError, KeyError, EOFError, torch.serialization.pickle.UnpicklingError) as e:
            detail = " ".join(str(e).split())
            detail = detail if len(detail) < 400 else detail[:400] + " ..."
            raise CheckpointError(
                f"cannot load {self.load_path} into {', '.join(self.load_dict)}: the file is corrupt or was saved from "
                f"another network_def (architecture, encoder, channels). Details: {detail}"
            ) from e
