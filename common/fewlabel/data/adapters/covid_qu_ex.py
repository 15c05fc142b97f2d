"""COVID-QU-Ex chest X-ray lung segmentation → datalist, keeping the official split.

Expected layout (as the Kaggle archive unpacks)::

    SRC_DIR/Lung Segmentation Data/Lung Segmentation Data/
      Train/  COVID-19/  images/covid_1.png        lung masks/covid_1.png
              Non-COVID/ images/...                lung masks/...
              Normal/    images/...                lung masks/...
      Val/    (same)
      Test/   (same)

``SRC_DIR`` may also be the inner ``Lung Segmentation Data`` folder, or any folder that
directly holds ``Train``/``Val``/``Test``. Masks are the published 0/255 PNGs, referenced in
place (nothing is written). The release has no patient ids, so ``patient`` is
``"<category>_<stem>"``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fewlabel.errors import DataError

__all__ = ["build_covid_qu_ex", "COVID_QU_EX_CLASSES", "COVID_QU_EX_SPLITS"]

logger = logging.getLogger("fewlabel.data")

COVID_QU_EX_CLASSES = ("COVID-19", "Non-COVID", "Normal")
#: datalist split -> official folder
COVID_QU_EX_SPLITS = {"training": "Train", "validation": "Val", "testing": "Test"}
_IMAGE_DIR, _MASK_DIR = "images", "lung masks"
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}

_LAYOUT = (
    "Expected the COVID-QU-Ex lung segmentation layout: "
    "SRC_DIR/Lung Segmentation Data/Lung Segmentation Data/{Train,Val,Test}/"
    "{COVID-19,Non-COVID,Normal}/{images,lung masks}/<name>.png "
    "(SRC_DIR may also be the inner 'Lung Segmentation Data' folder or the folder holding Train/Val/Test)."
)


def _find_root(src: Path) -> Path:
    """The folder that holds Train/Val/Test."""
    candidates = [
        src,
        src / "Lung Segmentation Data",
        src / "Lung Segmentation Data" / "Lung Segmentation Data",
    ]
    for candidate in candidates:
        if (candidate / "Train").is_dir():
            return candidate
    raise DataError(
        f"COVID-QU-Ex split folders not found under {src}: looked for "
        f"{', '.join(str(c / 'Train') for c in candidates)}. {_LAYOUT}"
    )


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())


def build_covid_qu_ex(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    classes: str | Iterable[str] | None = None,
) -> dict[str, Any]:
    """Build the COVID-QU-Ex lung-segmentation datalist from the published folders.

    Args:
        src_dir: the unpacked download (see the module docstring for accepted levels).
        out_dir: unused (files are referenced in place); accepted for a uniform signature.
        classes: restrict to some of ``"COVID-19"``, ``"Non-COVID"``, ``"Normal"``
            (default: all three; only the chosen category folders need to exist).

    Returns:
        A datalist dict with labels ``{"0": "background", "1": "lung"}``.

    Raises:
        DataError: ``src_dir``, a split/category/``images``/``lung masks`` folder is missing,
            or an image has no mask of the same stem.
        ValueError: ``classes`` names an unknown category.
    """
    del out_dir
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise DataError(f"COVID-QU-Ex source folder not found: {src}. {_LAYOUT}")
    if classes is None:
        chosen = list(COVID_QU_EX_CLASSES)
    else:
        chosen = [classes] if isinstance(classes, str) else list(classes)
        unknown = [c for c in chosen if c not in COVID_QU_EX_CLASSES]
        if unknown or not chosen:
            raise ValueError(f"unknown COVID-QU-Ex class(es) {unknown}; choose from {list(COVID_QU_EX_CLASSES)}")
    root = _find_root(src)

    datalist: dict[str, Any] = {
        "name": "COVID-QU-Ex",
        "labels": {"0": "background", "1": "lung"},
        "training": [],
        "validation": [],
        "testing": [],
    }
    for split, folder in COVID_QU_EX_SPLITS.items():
        split_dir = root / folder
        if not split_dir.is_dir():
            raise DataError(f"COVID-QU-Ex split folder not found: {split_dir}. {_LAYOUT}")
        items = []
        for category in chosen:
            image_dir = split_dir / category / _IMAGE_DIR
            mask_dir = split_dir / category / _MASK_DIR
            for needed in (image_dir, mask_dir):
                if not needed.is_dir():
                    raise DataError(f"COVID-QU-Ex folder not found: {needed}. {_LAYOUT}")
            masks = {p.stem: p for p in _images_in(mask_dir)}
            for image in _images_in(image_dir):
                mask = masks.get(image.stem)
                if mask is None:
                    raise DataError(
                        f"COVID-QU-Ex image {image} has no mask: expected {mask_dir / image.name}. {_LAYOUT}"
                    )
                items.append({
                    "image": str(image.resolve()),
                    "label": str(mask.resolve()),
                    "patient": f"{category}_{image.stem}",
                })
        datalist[split] = items
    if not any(datalist[s] for s in COVID_QU_EX_SPLITS):
        raise DataError(f"No images found in the {_IMAGE_DIR}/ folders under {root}. {_LAYOUT}")

    logger.info(
        "COVID-QU-Ex datalist from %s (%s): %d training, %d validation, %d testing items",
        root, ", ".join(chosen), len(datalist["training"]), len(datalist["validation"]), len(datalist["testing"]),
    )
    return datalist
