"""Shared fixtures: every test writes its cache and outputs under pytest's tmp folders.

Shared helpers (``REPO``, ``BUNDLES``, PNG reading and writing) are in ``testlib.py``."""

from __future__ import annotations

import os

import pytest
import torch

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
