"""Medical Segmentation Decathlon Task03_Liver (Antonelli et al. 2022) → datalist of (a random subset of) its scans.

Expected layout (as ``Task03_Liver.tar`` unpacks)::

    SRC_DIR/Task03_Liver/
      dataset.json                  {"training": [{"image": "./imagesTr/liver_0.nii.gz",
                                                   "label": "./labelsTr/liver_0.nii.gz"}, ...], ...}
      imagesTr/liver_0.nii.gz       CT volume in HU
      labelsTr/liver_0.nii.gz       its label: 0 background, 1 liver, 2 cancer
      imagesTs/...                  unlabelled test scans (ignored)

``SRC_DIR`` may also be the ``Task03_Liver`` folder itself. The pairs are read from
``dataset.json``'s ``training`` list (paths relative to its folder); without ``dataset.json``,
``imagesTr/`` and ``labelsTr/`` files are paired by name. The ``._*`` AppleDouble files the
archive ships beside every volume are ignored.

Use (PolyCL, Ward et al. 2025, section 4.1): 30 randomly selected scans for cross-domain
evaluation, i.e. ``num_scans=30`` with every selected scan in ``testing`` (``fractions=None``).
Given ``fractions``, the selected scans are split at random by scan instead.

Caution: the Decathlon took its liver task from LiTS (131 labelled + 70 test scans), so
Task03_Liver's labelled scans are the LiTS training scans, and a model trained on a LiTS split has
seen most of them (and its validation/testing scans are among them too). The adapter does not
remove that overlap; the scan ids (``liver_<N>``) are kept as in the release.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fewlabel.data.adapters.lits import make_datalist, nifti_stem, select_scans, split_scans
from fewlabel.errors import DataError

__all__ = ["build_msd_liver", "MSD_LIVER_LABELS"]

logger = logging.getLogger("fewlabel.data")

MSD_LIVER_LABELS = {"0": "background", "1": "liver", "2": "cancer"}
_NAME = "MSD-Task03_Liver"
_LAYOUT = (
    "Expected the Medical Segmentation Decathlon Task03_Liver release: SRC_DIR/Task03_Liver/dataset.json with "
    "imagesTr/liver_<N>.nii.gz and labelsTr/liver_<N>.nii.gz (SRC_DIR may also be the Task03_Liver folder itself)."
)


def _is_volume(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith((".nii", ".nii.gz"))


def _find_root(src: Path) -> Path:
    """The folder holding ``dataset.json`` or ``imagesTr/``."""
    candidates = [src, src / "Task03_Liver"]
    for candidate in candidates:
        if (candidate / "dataset.json").is_file() or (candidate / "imagesTr").is_dir():
            return candidate
    raise DataError(f"MSD Task03_Liver dataset.json or imagesTr/ not found under {src}: looked in "
                    f"{', '.join(str(c) for c in candidates)}. {_LAYOUT}")


def _item(image: Path, label: Path) -> dict[str, Any]:
    scan = nifti_stem(image)
    return {"image": str(image.resolve()), "label": str(label.resolve()), "scan": scan, "patient": scan}


def _pairs_from_json(root: Path) -> list[dict[str, Any]]:
    path = root / "dataset.json"
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}. Restore it from the release, or delete it to pair "
                        f"imagesTr/ and labelsTr/ by file name.") from e
    entries = content.get("training") if isinstance(content, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "image" in e and "label" in e for e in entries):
        raise DataError(f"{path} has no 'training' list of {{'image', 'label'}} entries. {_LAYOUT}")
    items = []
    for entry in entries:
        image, label = root / str(entry["image"]), root / str(entry["label"])
        if image.name.startswith("._"):
            continue
        for key, file in (("image", image), ("label", label)):
            if not file.is_file():
                raise DataError(f"{key} {file} listed in {path} does not exist. {_LAYOUT}")
        items.append(_item(image, label))
    return items


def _pairs_by_name(root: Path) -> list[dict[str, Any]]:
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DataError(f"MSD Task03_Liver folder {folder} not found (and no dataset.json in {root}). {_LAYOUT}")
    images = {p.name: p for p in sorted(images_dir.iterdir()) if _is_volume(p)}
    labels = {p.name: p for p in sorted(labels_dir.iterdir()) if _is_volume(p)}
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise DataError(f"MSD label {labels[orphans[0]]} has no image: expected {images_dir / orphans[0]}. {_LAYOUT}")
    items = []
    for name, image in images.items():
        if name not in labels:
            raise DataError(f"MSD image {image} has no label: expected {labels_dir / name}. {_LAYOUT}")
        items.append(_item(image, labels[name]))
    return items


def build_msd_liver(
    src_dir: str | os.PathLike,
    num_scans: int | None = None,
    fractions: Sequence[float] | None = None,
    seed: int = 0,
    **_: Any,
) -> dict[str, Any]:
    """Build the MSD Task03_Liver datalist: a seeded random subset of the labelled scans, in place.

    Args:
        src_dir: the ``Task03_Liver`` folder or its parent (see the module docstring).
        num_scans: keep a seeded random subset of this many scans (paper: 30); None keeps all.
        fractions: None puts every kept scan in ``testing`` (cross-domain evaluation, the paper's
            use); a ``(training, validation, testing)`` tuple summing to 1 splits them at random by scan.
        seed: seed of the subset and of the split; the same seed and files give the same datalist.
        **_: other options (e.g. ``out_dir``) are accepted and ignored.

    Returns:
        A datalist dict: ``name`` ``"MSD-Task03_Liver"``, ``labels`` ``{"0": "background",
        "1": "liver", "2": "cancer"}``, ``organ_labels`` ``[1, 2]``, and ``training`` /
        ``validation`` / ``testing`` items ``{"image", "label", "scan", "patient"}`` (absolute
        paths; ``scan`` and ``patient`` are the file name without suffix, e.g. ``"liver_0"``).

    Raises:
        DataError: ``src_dir`` is missing or has neither ``dataset.json`` nor ``imagesTr/``,
            ``dataset.json`` is unreadable or lists a missing file, an image has no label (or the
            reverse), or there is no scan.
        ValueError: ``num_scans`` or ``fractions`` is invalid.
    """
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise DataError(f"MSD Task03_Liver source folder not found: {src}. {_LAYOUT}")
    root = _find_root(src)
    from_json = (root / "dataset.json").is_file()
    items = _pairs_from_json(root) if from_json else _pairs_by_name(root)
    if not items:
        raise DataError(f"No labelled MSD Task03_Liver scans in {root}. {_LAYOUT}")
    selected = select_scans(items, num_scans, seed=seed, dataset=_NAME)
    parts = split_scans(selected, fractions, seed=seed)
    datalist = make_datalist(_NAME, MSD_LIVER_LABELS, (1, 2), parts)
    logger.info("%s datalist from %s (%s, seed %d): %d of %d scans; %d training, %d validation, %d testing",
                _NAME, root, "dataset.json" if from_json else "paired by name", seed, len(selected), len(items),
                *(len(p) for p in parts))
    return datalist
