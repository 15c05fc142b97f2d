"""Dataset statistics: the share of pixels each class has in a set of label maps."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["class_pixel_shares"]


def class_pixel_shares(
    items: Sequence[dict[str, Any]], class_names: Sequence[str], cache: str | os.PathLike | None = None,
) -> dict[str, float]:
    """Share of all labelled pixels that each class has, over the ``label`` files of ``items``.

    Used to find the under-represented classes (the SurgicalSemiSeg paper: under 1 % of the training
    pixels). Label files are read with :class:`fewlabel.transforms.LoadLabel2D`, so bad files stop
    with an error naming them.

    Args:
        items: datalist items; those without ``label`` are skipped.
        class_names: names in class-index order.
        cache: optional JSON file; reused when it was computed from the same files (paths and
            modification times), rewritten otherwise.

    Returns:
        ``{class name: share in [0, 1]}``, summing to 1 (all zeros if no labels).
    """
    from fewlabel.transforms.io import LoadLabel2D

    files = sorted(str(it["label"]) for it in items if "label" in it)
    key = {f: os.path.getmtime(f) for f in files if os.path.exists(f)}
    if cache is not None and Path(cache).is_file():
        cached = json.loads(Path(cache).read_text())
        if cached.get("files") == key and cached.get("classes") == list(class_names):
            return cached["shares"]
    counts = np.zeros(len(class_names), dtype=np.int64)
    loader = LoadLabel2D(num_classes=len(class_names))
    for f in files:
        counts += np.bincount(np.asarray(loader(f)).astype(np.int64).ravel(), minlength=len(class_names))
    total = counts.sum()
    shares = {n: float(c / total) if total else 0.0 for n, c in zip(class_names, counts)}
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        Path(cache).write_text(json.dumps({"classes": list(class_names), "files": key, "shares": shares}, indent=1))
    return shares
