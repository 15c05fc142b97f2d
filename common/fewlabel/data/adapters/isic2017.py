"""ISIC-2017 Part 1 (lesion segmentation) → datalist, keeping the official split.

Expected layout (the six official archives unpacked side by side)::

    SRC_DIR/
      ISIC-2017_Training_Data/ISIC_0000000.jpg            (+ *_superpixels.png, metadata .csv: ignored)
      ISIC-2017_Training_Part1_GroundTruth/ISIC_0000000_segmentation.png
      ISIC-2017_Validation_Data/...
      ISIC-2017_Validation_Part1_GroundTruth/...
      ISIC-2017_Test_v2_Data/...
      ISIC-2017_Test_v2_Part1_GroundTruth/...

A folder unpacked one level too deep (``ISIC-2017_Training_Data/ISIC-2017_Training_Data/``) is
accepted. The masks are the published 0/255 PNGs, referenced in place (nothing is written).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fewlabel.errors import DataError

__all__ = ["build_isic2017", "ISIC2017_FOLDERS"]

logger = logging.getLogger("fewlabel.data")

#: datalist split -> (image folder, ground-truth folder) of the official release.
ISIC2017_FOLDERS = {
    "training": ("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth"),
    "validation": ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth"),
    "testing": ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth"),
}

_LAYOUT = (
    "Expected the official ISIC-2017 layout: SRC_DIR/ISIC-2017_Training_Data/ISIC_0000000.jpg, "
    "SRC_DIR/ISIC-2017_Training_Part1_GroundTruth/ISIC_0000000_segmentation.png, and likewise "
    "ISIC-2017_Validation_Data, ISIC-2017_Validation_Part1_GroundTruth, ISIC-2017_Test_v2_Data, "
    "ISIC-2017_Test_v2_Part1_GroundTruth."
)

_IMAGE_RE = re.compile(r"^(ISIC_\d+)\.(jpe?g|png)$", re.IGNORECASE)


def _official_folder(src: Path, name: str) -> Path:
    folder = src / name
    if not folder.is_dir():
        raise DataError(f"ISIC-2017 folder not found: {folder}. {_LAYOUT}")
    nested = folder / name  # archive unpacked into a folder of its own name
    if nested.is_dir():
        folder = nested
    return folder


def build_isic2017(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    splits: Iterable[str] = ("training", "validation", "testing"),
) -> dict[str, Any]:
    """Build the ISIC-2017 lesion-segmentation datalist from the official folders.

    Args:
        src_dir: folder holding the six official ``ISIC-2017_*`` folders.
        out_dir: unused (the published files are referenced in place); accepted so every
            adapter has the same signature.
        splits: which official parts to read (any of ``"training"``, ``"validation"``,
            ``"testing"``); the others are left empty and their folders need not exist.

    Returns:
        A datalist dict; ``patient`` is the image id (``ISIC_0000000``).

    Raises:
        DataError: ``src_dir`` or a needed folder is missing, a folder holds no images, or an
            image has no ``*_segmentation.png`` mask.
    """
    del out_dir
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise DataError(f"ISIC-2017 source folder not found: {src}. {_LAYOUT}")
    splits = [splits] if isinstance(splits, str) else list(splits)
    unknown = [s for s in splits if s not in ISIC2017_FOLDERS]
    if unknown:
        raise ValueError(f"unknown ISIC-2017 split(s) {unknown}; choose from {list(ISIC2017_FOLDERS)}")

    datalist: dict[str, Any] = {
        "name": "ISIC-2017",
        "labels": {"0": "background", "1": "lesion"},
        "training": [],
        "validation": [],
        "testing": [],
    }
    for split in splits:
        image_name, gt_name = ISIC2017_FOLDERS[split]
        image_dir = _official_folder(src, image_name)
        gt_dir = _official_folder(src, gt_name)
        items = []
        for path in sorted(image_dir.iterdir()):
            match = _IMAGE_RE.match(path.name)
            if not match or not path.is_file():
                continue  # *_superpixels.png, metadata CSV, stray files
            image_id = match.group(1)
            mask = gt_dir / f"{image_id}_segmentation.png"
            if not mask.is_file():
                raise DataError(
                    f"ISIC-2017 image {path} has no mask: expected {mask}. {_LAYOUT}"
                )
            items.append({"image": str(path.resolve()), "label": str(mask.resolve()), "patient": image_id})
        if not items:
            raise DataError(f"No ISIC_*.jpg images found in {image_dir}. {_LAYOUT}")
        datalist[split] = items

    logger.info(
        "ISIC-2017 datalist from %s: %d training, %d validation, %d testing items",
        src, len(datalist["training"]), len(datalist["validation"]), len(datalist["testing"]),
    )
    return datalist
