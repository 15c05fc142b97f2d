"""COVID-QU-Ex chest X-ray lung (or infection) segmentation → datalist, keeping the official split.

The Kaggle archive holds two subsets, each with its own official Train/Val/Test split:

- ``subset="infection"`` (default): *COVID-19 Infection Segmentation Data*, 5,826 radiographs
  (2,913 COVID-19, 1,457 non-COVID, 1,456 normal) with lung masks and infection masks (all-zero
  for the non-COVID and normal images). The SAM knowledge-mining paper (section 3, "COVID-QU-Ex
  Dataset") uses this subset's lung masks: ``target="lung"``, the default.
- ``subset="lung"``: *Lung Segmentation Data*, 33,920 radiographs with lung masks.

The SAM knowledge-mining paper reports 3,962 image-mask pairs split 1,864 / 1,166 / 932; the
adapter lists every image of the subset's official Train / Val / Test folders, so its training
list is larger than the paper's (the paper does not say which 1,864 it kept; the bundles'
``labelled_fraction`` picks the labelled part of training). MedSASS's X-ray data is another
release, the COVID-19 Radiography Database (:mod:`fewlabel.data.adapters.covid_radiography`).

Expected layout (as the Kaggle archive unpacks)::

    SRC_DIR/Lung Segmentation Data/Lung Segmentation Data/
      Train/  COVID-19/  images/covid_1.png        lung masks/covid_1.png
              Non-COVID/ images/...                lung masks/...
              Normal/    images/...                lung masks/...
      Val/    (same)
      Test/   (same)
    SRC_DIR/Infection Segmentation Data/Infection Segmentation Data/
      Train/  COVID-19/  images/...   lung masks/...   infection masks/...
              (Non-COVID, Normal, Val, Test likewise)

``SRC_DIR`` may also be the inner ``<subset> Segmentation Data`` folder, or any folder that
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

__all__ = ["build_covid_qu_ex", "COVID_QU_EX_CLASSES", "COVID_QU_EX_SPLITS", "COVID_QU_EX_SUBSETS"]

logger = logging.getLogger("fewlabel.data")

COVID_QU_EX_CLASSES = ("COVID-19", "Non-COVID", "Normal")
#: datalist split -> official folder
COVID_QU_EX_SPLITS = {"training": "Train", "validation": "Val", "testing": "Test"}
#: ``subset`` option -> the archive's folder name
COVID_QU_EX_SUBSETS = {"lung": "Lung Segmentation Data", "infection": "Infection Segmentation Data"}
#: ``target`` option -> (mask folder, label name)
_TARGETS = {"lung": ("lung masks", "lung"), "infection": ("infection masks", "infection")}
_IMAGE_DIR = "images"
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _layout(subset: str = "lung", mask_dir: str = "lung masks") -> str:
    folder = COVID_QU_EX_SUBSETS[subset]
    return (
        f"Expected the COVID-QU-Ex {subset} segmentation layout: "
        f"SRC_DIR/{folder}/{folder}/{{Train,Val,Test}}/"
        f"{{COVID-19,Non-COVID,Normal}}/{{images,{mask_dir}}}/<name>.png "
        f"(SRC_DIR may also be the inner '{folder}' folder or the folder holding Train/Val/Test)."
    )


def _find_root(src: Path, subset: str = "lung") -> Path:
    """The folder that holds Train/Val/Test."""
    folder = COVID_QU_EX_SUBSETS[subset]
    candidates = [src, src / folder, src / folder / folder]
    for candidate in candidates:
        if (candidate / "Train").is_dir():
            return candidate
    raise DataError(
        f"COVID-QU-Ex split folders not found under {src}: looked for "
        f"{', '.join(str(c / 'Train') for c in candidates)}. {_layout(subset)}"
    )


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())


def build_covid_qu_ex(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    classes: str | Iterable[str] | None = None,
    subset: str = "infection",
    target: str = "lung",
) -> dict[str, Any]:
    """Build the COVID-QU-Ex segmentation datalist from the published folders.

    Args:
        src_dir: the unpacked download (see the module docstring for accepted levels).
        out_dir: unused (files are referenced in place); accepted for a uniform signature.
        classes: restrict to some of ``"COVID-19"``, ``"Non-COVID"``, ``"Normal"``
            (default: all three; only the chosen category folders need to exist).
        subset: ``"infection"`` (COVID-19 Infection Segmentation Data, the SAM knowledge-mining
            paper's data, default) or ``"lung"`` (Lung Segmentation Data).
        target: which masks are the labels: ``"lung"`` (``lung masks/``, default) or
            ``"infection"`` (``infection masks/``, only in the infection subset).

    Returns:
        A datalist dict with labels ``{"0": "background", "1": "lung"}`` (or ``"infection"``).

    Raises:
        DataError: ``src_dir``, a split/category/``images``/mask folder is missing, or an image
            has no mask of the same stem.
        ValueError: ``classes`` names an unknown category, or unknown ``subset`` / ``target``.
    """
    del out_dir
    if subset not in COVID_QU_EX_SUBSETS:
        raise ValueError(f"unknown COVID-QU-Ex subset '{subset}'; choose from {list(COVID_QU_EX_SUBSETS)}")
    if target not in _TARGETS:
        raise ValueError(f"unknown COVID-QU-Ex target '{target}'; choose from {list(_TARGETS)}")
    if target == "infection" and subset != "infection":
        raise ValueError("infection masks exist only in the infection subset: pass subset='infection'")
    mask_dir_name, label_name = _TARGETS[target]
    layout = _layout(subset, mask_dir_name)
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise DataError(f"COVID-QU-Ex source folder not found: {src}. {layout}")
    if classes is None:
        chosen = list(COVID_QU_EX_CLASSES)
    else:
        chosen = [classes] if isinstance(classes, str) else list(classes)
        unknown = [c for c in chosen if c not in COVID_QU_EX_CLASSES]
        if unknown or not chosen:
            raise ValueError(f"unknown COVID-QU-Ex class(es) {unknown}; choose from {list(COVID_QU_EX_CLASSES)}")
    root = _find_root(src, subset)

    datalist: dict[str, Any] = {
        "name": "COVID-QU-Ex" if subset == "lung" else "COVID-QU-Ex infection segmentation data",
        "labels": {"0": "background", "1": label_name},
        "training": [],
        "validation": [],
        "testing": [],
    }
    for split, folder in COVID_QU_EX_SPLITS.items():
        split_dir = root / folder
        if not split_dir.is_dir():
            raise DataError(f"COVID-QU-Ex split folder not found: {split_dir}. {layout}")
        items = []
        for category in chosen:
            image_dir = split_dir / category / _IMAGE_DIR
            mask_dir = split_dir / category / mask_dir_name
            for needed in (image_dir, mask_dir):
                if not needed.is_dir():
                    raise DataError(f"COVID-QU-Ex folder not found: {needed}. {layout}")
            masks = {p.stem: p for p in _images_in(mask_dir)}
            for image in _images_in(image_dir):
                mask = masks.get(image.stem)
                if mask is None:
                    raise DataError(
                        f"COVID-QU-Ex image {image} has no mask: expected {mask_dir / image.name}. {layout}"
                    )
                items.append({
                    "image": str(image.resolve()),
                    "label": str(mask.resolve()),
                    "patient": f"{category}_{image.stem}",
                })
        datalist[split] = items
    if not any(datalist[s] for s in COVID_QU_EX_SPLITS):
        raise DataError(f"No images found in the {_IMAGE_DIR}/ folders under {root}. {layout}")

    logger.info(
        "COVID-QU-Ex %s datalist (%s labels) from %s (%s): %d training, %d validation, %d testing items",
        subset, target, root, ", ".join(chosen),
        len(datalist["training"]), len(datalist["validation"]), len(datalist["testing"]),
    )
    return datalist
