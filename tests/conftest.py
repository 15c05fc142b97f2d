"""Shared fixtures: every test writes its cache and outputs under pytest's tmp folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _fewlabel_cache(tmp_path_factory, monkeypatch):
    """Demo data is generated once per session into a temporary cache, never into the home folder."""
    cache = tmp_path_factory.getbasetemp() / "fewlabel-cache"
    monkeypatch.setenv("FEWLABEL_CACHE", str(cache))
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def write_png(path, array):
    """Write ``array`` as a PNG at ``path`` (parents created); returns the path."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def read_png(path):
    """Read an image file into a NumPy array."""
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path))
