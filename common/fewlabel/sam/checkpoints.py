"""Default file names of the SAM and SAM 2 checkpoints, and the ``large_files.yml`` entry of a missing one.

A bundle's ``sam_checkpoint`` defaults to ``<bundle>/models/<official file of sam_model_type>``
(:func:`sam_checkpoint_path`), so ``--sam_model_type vit_l`` alone looks for
``models/sam_vit_l_0b3195.pth``; ``sam2_checkpoint`` follows ``sam2_config`` the same way
(:func:`sam2_checkpoint_path`). With ``sam_model_type="auto"`` the default is whichever
official SAM file is in ``models/`` and the model type is read from the file
(:mod:`fewlabel.sam.model_type`). An explicit ``--sam_checkpoint PATH`` always wins. The names are
Meta's release names (``segment-anything`` and ``sam2`` READMEs), the ones each bundle's
``large_files.yml`` lists.

This module imports neither ``segment_anything`` nor ``sam2``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = [
    "SAM2_CHECKPOINT_FILES",
    "SAM_CHECKPOINT_FILES",
    "large_files_entry",
    "large_files_hint",
    "sam2_checkpoint_path",
    "sam_checkpoint_path",
]

#: Official SAM checkpoint file of each ``sam_model_type`` (``"default"`` is ViT-H, as in ``segment_anything``).
SAM_CHECKPOINT_FILES: dict[str, str] = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
    "default": "sam_vit_h_4b8939.pth",
}

#: Official SAM 2 / SAM 2.1 checkpoint file of each ``sam2_config``.
SAM2_CHECKPOINT_FILES: dict[str, str] = {
    "sam2.1_hiera_t": "sam2.1_hiera_tiny.pt",
    "sam2.1_hiera_s": "sam2.1_hiera_small.pt",
    "sam2.1_hiera_b+": "sam2.1_hiera_base_plus.pt",
    "sam2.1_hiera_l": "sam2.1_hiera_large.pt",
    "sam2_hiera_t": "sam2_hiera_tiny.pt",
    "sam2_hiera_s": "sam2_hiera_small.pt",
    "sam2_hiera_b+": "sam2_hiera_base_plus.pt",
    "sam2_hiera_l": "sam2_hiera_large.pt",
}


def _default_path(bundle_root: str | os.PathLike, name: str | None, models_dir: str) -> str | None:
    return None if name is None else str(Path(bundle_root) / models_dir / name)


def sam_checkpoint_path(bundle_root: str | os.PathLike, model_type: str, models_dir: str = "models") -> str | None:
    """``<bundle_root>/<models_dir>/<official SAM file of model_type>`` (the configs' ``sam_checkpoint`` default).

    Args:
        bundle_root: the bundle folder.
        model_type: ``vit_b`` / ``vit_l`` / ``vit_h`` / ``default`` (ViT-H); ``auto``: the first
            official file (ViT-B, ViT-L, ViT-H) that is in ``models_dir``, else the ViT-B path (so a
            missing file is named with its ``large_files.yml`` entry); ``tiny`` (test models) and
            unknown types have no release file and give None (pass ``sam_checkpoint`` then).
        models_dir: folder of the weights inside the bundle.
    """
    if model_type == "auto":
        paths = [Path(bundle_root) / models_dir / SAM_CHECKPOINT_FILES[t] for t in ("vit_b", "vit_l", "vit_h")]
        return str(next((p for p in paths if p.is_file()), paths[0]))
    return _default_path(bundle_root, SAM_CHECKPOINT_FILES.get(model_type), models_dir)


def sam2_checkpoint_path(bundle_root: str | os.PathLike, config: str, models_dir: str = "models") -> str | None:
    """``<bundle_root>/<models_dir>/<official SAM 2 file of config>`` (the configs' ``sam2_checkpoint`` default).

    ``config`` is a key of :data:`SAM2_CHECKPOINT_FILES`; ``tiny`` and ``.yaml`` paths give None.
    """
    return _default_path(bundle_root, SAM2_CHECKPOINT_FILES.get(config), models_dir)


def large_files_entry(path: str | os.PathLike) -> tuple[Path, dict[str, Any] | None] | None:
    """The ``large_files.yml`` above ``path`` and its entry for that file (matched by path, else by file name).

    Returns:
        ``(large_files.yml, entry or None)``, or None when no folder above ``path`` holds a ``large_files.yml``.
    """
    import yaml

    path = Path(path).resolve()
    for parent in path.parents:
        large = parent / "large_files.yml"
        if not large.is_file():
            continue
        try:
            entries = (yaml.safe_load(large.read_text()) or {}).get("large_files") or []
        except (yaml.YAMLError, AttributeError):
            return large, None
        entries = [e for e in entries if isinstance(e, dict) and e.get("path")]
        same_path = [e for e in entries if (parent / str(e["path"])).resolve() == path]
        same_name = [e for e in entries if Path(str(e["path"])).name == path.name]
        return large, (same_path or same_name or [None])[0]
    return None


def large_files_hint(path: str | os.PathLike, fallback: str) -> str:
    """Where to get a missing weights file: its ``large_files.yml`` entry (path, url, note), or ``fallback``."""
    found = large_files_entry(path)
    if found is None:
        return fallback
    large, entry = found
    if entry is None:
        return f"{large} (no entry for {Path(path).name}: add one, or pass the file's path)"
    url = f": {entry['url']}" if entry.get("url") else ""
    note = f" [{entry['note']}]" if entry.get("note") else ""
    return f"{large}, entry '{entry['path']}'{url}{note}"
