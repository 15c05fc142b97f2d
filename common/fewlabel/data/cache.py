"""Where fewlabel writes data it generates (demo phantoms) and caches."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["cache_dir", "rank_zero_first"]


def cache_dir(*parts: str) -> Path:
    """Return ``$FEWLABEL_CACHE/<parts>`` (default ``~/.cache/fewlabel``), created if missing."""
    root = Path(os.environ.get("FEWLABEL_CACHE", Path.home() / ".cache" / "fewlabel")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def rank_zero_first() -> Iterator[None]:
    """Under ``torch.distributed`` (more than one process), rank 0 runs the block first and the other ranks
    after it has finished, so that a cache or a demo dataset is written by one process and read by the
    others; a no-op otherwise."""
    import torch.distributed as dist

    on = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if on and dist.get_rank() != 0:
        dist.barrier()
    try:
        yield
    finally:
        if on and dist.get_rank() == 0:
            dist.barrier()
