"""MONAI's ``CheckpointSaver`` whose files are written whole or not at all."""

from __future__ import annotations

from typing import Any

from monai.handlers import CheckpointSaver

__all__ = ["AtomicCheckpointSaver"]


class AtomicCheckpointSaver(CheckpointSaver):
    """``monai.handlers.CheckpointSaver`` (same arguments) writing each file atomically.

    MONAI's saver writes ``torch.save`` straight into the final file (ignite's ``DiskSaver`` with
    ``atomic=False``), so a run killed while it saves leaves a truncated ``model.pt`` where the
    previous whole one was: a MONAI Label server then serves, or refuses to start on, a broken file.
    Here each file is written to a temporary file in the same folder and moved over the old one
    (``os.replace``), readable by group and others as before; a run killed during the write leaves
    the previous file as it was. A fixed file name (``key_metric_filename``, ``final_filename``) is
    never removed first (MONAI deletes it before each save): the new file replaces it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            handler = getattr(checkpoint, "save_handler", None)
            if handler is None:
                continue
            if not hasattr(handler, "_atomic"):
                raise TypeError(f"{type(handler).__name__} (ignite's DiskSaver expected) has no atomic mode; "
                                "this ignite version is not supported by AtomicCheckpointSaver")
            handler._atomic = True
            if getattr(handler, "filename", None) is not None:
                # a fixed file name (``key_metric_filename``, ``final_filename``): MONAI removes the old
                # file before it writes the new one, which replaces it here anyway
                handler.remove = _keep


def _keep(filename: str) -> None:
    """The ``remove`` of a save handler with a fixed file name: the next save replaces the file."""
