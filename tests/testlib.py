"""Helpers the tests share (imported as ``from testlib import ...``; ``tests/`` is on pytest's path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: the repository root and its bundle folders
REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


def write_png(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as a PNG at ``path`` (parents created); returns the path."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def read_png(path: Path) -> np.ndarray:
    """Read an image file into a NumPy array."""
    from PIL import Image

    return np.asarray(Image.open(path))
