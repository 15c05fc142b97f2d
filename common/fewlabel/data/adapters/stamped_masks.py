"""Mask PNGs an adapter derives from a dataset's own files, written once and rewritten only when the source changes.

Each written PNG carries a *stamp* in a text chunk (under the adapter's key): the source file's path, size
in bytes and modification time, plus the settings that shaped the mask. A rebuild compares stamps and
skips masks that are current.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

__all__ = ["source_stamp", "is_current", "write_stamped_png"]


def source_stamp(source: Path, **settings: Any) -> str:
    """The stamp of a mask made from ``source`` with ``settings`` (JSON-serialisable values)."""
    st = source.stat()
    return json.dumps(
        {"source": str(source.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, **settings},
        sort_keys=True,
    )


def is_current(target: Path, key: str, stamp: str) -> bool:
    """Whether ``target`` is a readable PNG whose ``key`` text chunk equals ``stamp``."""
    if not target.is_file():
        return False
    try:
        with Image.open(target) as im:
            return im.info.get(key) == stamp
    except (OSError, ValueError):
        return False


def write_stamped_png(mask: np.ndarray | Image.Image, target: Path, key: str, stamp: str) -> None:
    """Atomic write of a ``(H, W)`` uint8 mask (array or PIL image) as PNG carrying ``stamp`` under ``key``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text(key, stamp)
    image = mask if isinstance(mask, Image.Image) else Image.fromarray(mask)
    tmp = target.with_name(f".{target.name}.tmp")
    image.save(tmp, format="PNG", pnginfo=info, compress_level=1)
    os.replace(tmp, target)
