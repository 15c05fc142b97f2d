"""Where fewlabel writes data it generates (demo phantoms) and caches."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(*parts: str) -> Path:
    """Return ``$FEWLABEL_CACHE/<parts>`` (default ``~/.cache/fewlabel``), created if missing."""
    root = Path(os.environ.get("FEWLABEL_CACHE", Path.home() / ".cache" / "fewlabel")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
