"""TotalSegmentator (Wasserthal et al. 2023) → datalist of one organ's masks for (a random subset of) its subjects.

Expected layout (the v1 / v2 Zenodo release, as its zip unpacks)::

    SRC_DIR/
      meta.csv                        optional; ';'-separated, columns include image_id and split
                                      (train / val / test), e.g. "s0000;...;train"
      s0000/ct.nii.gz                 CT volume in HU
      s0000/segmentations/liver.nii.gz   binary mask (0/1) of one structure; one file per structure
      s0001/...

``SRC_DIR`` may also be the folder above it when the zip unpacked into a folder of its own whose
name starts with ``Totalsegmentator`` (e.g. ``Totalsegmentator_dataset_v201/``). Subject folders
are the ``s<digits>`` folders; the label of each item is ``segmentations/<organ>.nii.gz``.

Many TotalSegmentator scans do not show the liver (head, neck, leg, thorax-only scans): their
liver mask is all zeros. With ``require_organ`` (default) such subjects are dropped; only the masks
are read for that, with nibabel, never the CT volumes.

Use (PolyCL, Ward et al. 2025, section 4.1): 200 randomly selected scans for cross-domain
evaluation, i.e. ``num_scans=200`` with every selected scan in ``testing`` (``fractions=None``).
Given ``fractions``, the selected scans are split at random by scan; ``split="official"`` uses
``meta.csv``'s ``split`` column instead.

Selection: subjects are visited in an order shuffled with ``seed``; with ``require_organ`` those
with an empty mask are skipped, and the first ``num_scans`` kept -- a seeded uniform random subset
of the subjects that show the organ, found without reading every mask when ``num_scans`` is set.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.data.adapters.lits import make_datalist, split_scans
from fewlabel.errors import DataError

__all__ = ["build_totalsegmentator", "TOTALSEGMENTATOR_SPLITS", "organ_present"]

logger = logging.getLogger("fewlabel.data")

#: ``meta.csv`` split values -> datalist keys.
TOTALSEGMENTATOR_SPLITS = {"train": "training", "val": "validation", "test": "testing"}
_NAME = "TotalSegmentator"
_SUBJECT = re.compile(r"^s\d+$")
_LAYOUT = (
    "Expected the TotalSegmentator release: SRC_DIR/s<NNNN>/ct.nii.gz and SRC_DIR/s<NNNN>/segmentations/<organ>.nii.gz "
    "(and optionally SRC_DIR/meta.csv); SRC_DIR may also hold a single Totalsegmentator_dataset*/ folder with them."
)


def _subjects(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _SUBJECT.match(p.name))


def _find_root(src: Path) -> Path:
    """The folder holding the ``s<NNNN>`` subject folders."""
    nested = (p for p in src.iterdir() if p.is_dir() and p.name.lower().startswith("totalsegmentator"))
    candidates = [src, *sorted(nested)]
    for candidate in candidates:
        if _subjects(candidate):
            return candidate
    raise DataError(f"No TotalSegmentator subject folders (s<NNNN>/) under {src}: looked in "
                    f"{', '.join(str(c) for c in candidates)}. {_LAYOUT}")


def _items(root: Path, organ: str) -> list[dict[str, Any]]:
    items = []
    for subject in _subjects(root):
        ct, mask = subject / "ct.nii.gz", subject / "segmentations" / f"{organ}.nii.gz"
        if not ct.is_file():
            raise DataError(f"TotalSegmentator subject {subject} has no CT: expected {ct}. {_LAYOUT}")
        if not mask.is_file():
            raise DataError(f"TotalSegmentator subject {subject} has no '{organ}' mask: expected {mask}. Check "
                            f"organ (a file name in segmentations/, e.g. 'liver', 'spleen'). {_LAYOUT}")
        items.append({"image": str(ct.resolve()), "label": str(mask.resolve()), "scan": subject.name,
                      "patient": subject.name})
    return items


def organ_present(mask_path: str | os.PathLike) -> bool:
    """Whether the NIfTI mask at ``mask_path`` has any non-zero voxel (only that file is read).

    Raises:
        DataError: the file cannot be read as NIfTI.
    """
    import nibabel as nib

    try:
        data = np.asanyarray(nib.load(os.fspath(mask_path)).dataobj)
    except Exception as e:  # nibabel raises several types for truncated / foreign files
        raise DataError(f"cannot read mask {mask_path}: {e}. The file is truncated or not NIfTI; "
                        "re-download the subject or remove it.") from e
    return bool(np.any(data))


def _read_meta(root: Path, src: Path) -> dict[str, str]:
    """``{subject: datalist split}`` from ``meta.csv``'s ``image_id`` and ``split`` columns."""
    path = next((p for p in (root / "meta.csv", src / "meta.csv") if p.is_file()), root / "meta.csv")
    if not path.is_file():
        raise DataError(f"split='official' needs {path} (the release's meta.csv with image_id and split columns); "
                        "it is not there. Restore it, or use split='random'.")
    text = path.read_text(encoding="utf-8-sig")
    header = text.splitlines()[0] if text.strip() else ""
    reader = csv.DictReader(io.StringIO(text), delimiter=";" if ";" in header else ",")
    fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
    if "image_id" not in fields or "split" not in fields:
        raise DataError(f"{path} has no image_id and split columns (it has: {sorted(fields)}); expected the "
                        "release's ';'-separated meta.csv.")
    splits: dict[str, str] = {}
    for row in reader:
        subject, value = (row[fields["image_id"]] or "").strip(), (row[fields["split"]] or "").strip().lower()
        if not subject:
            continue
        if value not in TOTALSEGMENTATOR_SPLITS:
            raise DataError(f"{path}: subject {subject} has split '{value}'; expected one of "
                            f"{sorted(TOTALSEGMENTATOR_SPLITS)}.")
        splits[subject] = TOTALSEGMENTATOR_SPLITS[value]
    return splits


def _select(items: list[dict[str, Any]], num_scans: int | None, require_organ: bool, organ: str,
            seed: int) -> list[dict[str, Any]]:
    """Visit ``items`` in seeded random order; keep those with the organ (if required) until ``num_scans``."""
    if num_scans is not None and (int(num_scans) != num_scans or num_scans < 1):
        raise ValueError(f"num_scans must be a positive integer or None, got {num_scans!r}")
    target = len(items) if num_scans is None else int(num_scans)
    kept: list[int] = []
    checked = 0
    for i in np.random.default_rng(seed).permutation(len(items)):
        if len(kept) >= target:
            break
        checked += 1
        if not require_organ or organ_present(items[i]["label"]):
            kept.append(int(i))
    if require_organ:
        logger.info("%s: dropped %d of the %d subjects checked whose '%s' mask is empty%s", _NAME,
                    checked - len(kept), checked, organ,
                    f" (stopped once {target} were kept)" if checked < len(items) else "")
        if not kept:
            raise DataError(f"No TotalSegmentator subject has a non-empty '{organ}' mask ({checked} checked).")
    if num_scans is not None and len(kept) < num_scans:
        logger.warning("%s: num_scans=%d but only %d subjects%s are available; all are used", _NAME, num_scans,
                       len(kept), f" with a '{organ}' mask" if require_organ else "")
    return [items[i] for i in sorted(kept)]


def build_totalsegmentator(
    src_dir: str | os.PathLike,
    num_scans: int | None = None,
    fractions: Sequence[float] | None = None,
    split: str = "random",
    require_organ: bool = True,
    organ: str = "liver",
    seed: int = 0,
    **_: Any,
) -> dict[str, Any]:
    """Build the TotalSegmentator datalist for one organ: CT and organ mask referenced in place.

    Args:
        src_dir: the unpacked release (see the module docstring).
        num_scans: keep a seeded random subset of this many subjects (paper: 200); None keeps all.
        fractions: with ``split="random"``: None puts every kept subject in ``testing``
            (cross-domain evaluation, the paper's use); a ``(training, validation, testing)``
            tuple summing to 1 splits them at random by subject.
        split: ``"random"`` (above) or ``"official"``: each kept subject goes where ``meta.csv``'s
            ``split`` column says (train / val / test).
        require_organ: drop subjects whose ``<organ>`` mask is empty (logged).
        organ: the structure, i.e. the mask file name in ``segmentations/`` without ``.nii.gz``.
        seed: seed of the subset and of the random split; the same seed and files give the same datalist.
        **_: other options (e.g. ``out_dir``) are accepted and ignored.

    Returns:
        A datalist dict: ``name`` ``"TotalSegmentator"``, ``labels`` ``{"0": "background",
        "1": organ}``, ``organ_labels`` ``[1]``, and ``training`` / ``validation`` / ``testing``
        items ``{"image", "label", "scan", "patient"}`` (absolute paths; ``scan`` and ``patient``
        are the subject folder name, e.g. ``"s0011"``).

    Raises:
        DataError: ``src_dir`` is missing or holds no subject folder, a subject lacks ``ct.nii.gz``
            or the organ mask, a mask is unreadable, no subject shows the organ, or
            ``split="official"`` and ``meta.csv`` is missing, malformed or lacks a kept subject.
        ValueError: ``split``, ``num_scans`` or ``fractions`` is invalid, or ``fractions`` is
            given with ``split="official"``.
    """
    if split not in ("random", "official"):
        raise ValueError(f"split must be 'random' or 'official', got {split!r}")
    if split == "official" and fractions is not None:
        raise ValueError("fractions and split='official' exclude each other: the official split is meta.csv's.")
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise DataError(f"TotalSegmentator source folder not found: {src}. {_LAYOUT}")
    root = _find_root(src)
    items = _items(root, organ)
    official = _read_meta(root, src) if split == "official" else None  # fail early, before reading masks
    selected = _select(items, num_scans, require_organ, organ, seed)
    if official is None:
        parts = split_scans(selected, fractions, seed=seed)
    else:
        missing = [item["scan"] for item in selected if item["scan"] not in official]
        if missing:
            raise DataError(f"meta.csv under {root} has no row for subject(s) {missing[:5]}; "
                            "use the meta.csv of the same release, or split='random'.")
        parts = [[item for item in selected if official[item["scan"]] == key]
                 for key in TOTALSEGMENTATOR_SPLITS.values()]
    datalist = make_datalist(_NAME, {"0": "background", "1": organ}, (1,), parts)
    logger.info("%s datalist from %s (%s split, seed %d): %d of %d subjects; %d training, %d validation, %d testing",
                _NAME, root, split, seed, len(selected), len(items), *(len(p) for p in parts))
    return datalist
