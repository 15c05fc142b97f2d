"""Kvasir-SEG (polyp segmentation, Jha et al. 2020) → datalist with a seeded random 80/10/10 split.

Expected layout (as ``kvasir-seg.zip`` unpacks)::

    SRC_DIR/Kvasir-SEG/
      images/cju0qkwl35piu0993l0dewei2.jpg     RGB frame (332 x 487 to 1920 x 1072)
      masks/cju0qkwl35piu0993l0dewei2.jpg      its mask, same name and size
      kavsir_bboxes.json                       (ignored)

``SRC_DIR`` may also be the ``Kvasir-SEG`` folder itself (any folder holding ``images/`` and
``masks/``). Images are matched to masks by file stem; any of PNG, JPEG, TIFF or BMP is read.

Masks: the release stores them as JPEG, whose compression leaves grey values around the polyp
edge and specks of 1-20 in the background, so they are not binary. They are thresholded when
read (mean over the colour channels ``>= threshold``, 128 by default) and, by default, written
as binary 0/1 uint8 PNGs (class indices, as :class:`fewlabel.transforms.LoadLabel2Dd` reads
them) to ``OUT_DIR/masks/<stem>.png``. A mask already written from the same file (same size and
modification time) with the same threshold is not written again (a PNG text chunk records
that). With ``write_masks=False`` nothing is written and the datalist points at the JPEG masks;
they must then be thresholded on loading, e.g. ``LoadImage2Dd(keys="label", channels=1,
channel_policy="convert")`` (grey in [0, 1]) followed by ``AsDiscreted(keys="label",
threshold=0.5)``. Reading them as class indices would turn the JPEG noise into foreground.

Split: the paper's random 80 % / 10 % / 10 % (training / validation / testing), seeded. The
release has no patient or video ids, so every image is its own group (``patient`` is the file
stem); the labelled / unlabelled split of the training part is the bundle's job
(:func:`fewlabel.data.split_labelled`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from fewlabel.data.adapters.stamped_masks import is_current, source_stamp, write_stamped_png
from fewlabel.data.datalist import split_by_group
from fewlabel.errors import DataError

__all__ = ["build_kvasir_seg", "KVASIR_SEG_FRACTIONS", "read_kvasir_mask"]

logger = logging.getLogger("fewlabel.data")

#: The paper's (training, validation, testing) shares.
KVASIR_SEG_FRACTIONS = (0.8, 0.1, 0.1)
_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
_STAMP_KEY = "fewlabel-kvasir-seg"
_SPLITS = ("training", "validation", "testing")

_LAYOUT = (
    "Expected the Kvasir-SEG release: SRC_DIR/Kvasir-SEG/images/<name>.jpg and SRC_DIR/Kvasir-SEG/masks/<name>.jpg "
    "(SRC_DIR may also be the Kvasir-SEG folder itself)."
)


def _find_root(src: Path) -> Path:
    """The folder holding ``images/`` and ``masks/``."""
    candidates = [src, src / "Kvasir-SEG", src / "kvasir-seg"]
    for candidate in candidates:
        if (candidate / "images").is_dir() and (candidate / "masks").is_dir():
            return candidate
    raise DataError(
        f"Kvasir-SEG images/ and masks/ folders not found under {src}: looked in "
        f"{', '.join(str(c) for c in candidates)}. {_LAYOUT}"
    )


def _files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in _SUFFIXES}


def _image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` from the file header (no pixel decoding)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}. The file is truncated or not an image; remove it.") from e
    return h, w


def read_kvasir_mask(path: str | os.PathLike, threshold: int = 128) -> np.ndarray:
    """Read a (JPEG) Kvasir-SEG mask as a binary ``(H, W)`` uint8 array of 0/1.

    Args:
        path: the mask file (grey or RGB, 8 bit).
        threshold: a pixel is foreground when the mean of its channels is ``>= threshold`` (0-255).

    Raises:
        DataError: the file is missing or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Kvasir-SEG mask not found: {path}. {_LAYOUT}")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read mask {path}: {e}. The file is truncated or not an image; remove it.") from e
    grey = arr.astype(np.float32).mean(axis=-1) if arr.ndim == 3 else arr.astype(np.float32)
    return (grey >= threshold).astype(np.uint8)


def build_kvasir_seg(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    fractions: Sequence[float] = KVASIR_SEG_FRACTIONS,
    seed: int = 0,
    write_masks: bool = True,
    threshold: int = 128,
    force: bool = False,
) -> dict[str, Any]:
    """Build the Kvasir-SEG datalist: images referenced in place, masks binarised to PNG, seeded split.

    Args:
        src_dir: the unpacked release (see the module docstring for accepted levels).
        out_dir: where the binary masks go (``OUT_DIR/masks/<stem>.png``); default
            ``<Kvasir-SEG folder>/fewlabel_masks``.
        fractions: ``(training, validation, testing)`` shares summing to 1 (paper: 0.8/0.1/0.1).
        seed: split seed; the same seed and files give the same split.
        write_masks: write thresholded PNG masks (default); False references the JPEG masks in
            place (they must be thresholded when loaded, see the module docstring).
        threshold: foreground threshold of the mask's channel mean, in 1..255.
        force: rewrite every mask even when an up-to-date one exists.

    Returns:
        A datalist dict with labels ``{"0": "background", "1": "polyp"}``; items
        ``{"image", "label", "patient"}`` with ``patient`` the file stem.

    Raises:
        DataError: ``src_dir``, ``images/`` or ``masks/`` is missing, there is no image, an image
            has no mask of the same stem, their sizes differ, or a file cannot be read.
        ValueError: ``fractions`` or ``threshold`` out of range.
    """
    if len(tuple(fractions)) != 3:
        raise ValueError(f"fractions must be (training, validation, testing), got {list(fractions)}")
    if not 1 <= int(threshold) <= 255:
        raise ValueError(f"threshold must be in 1..255, got {threshold}")
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise DataError(f"Kvasir-SEG source folder not found: {src}. {_LAYOUT}")
    root = _find_root(src)
    images, masks = _files(root / "images"), _files(root / "masks")
    if not images:
        raise DataError(f"No image files in {root / 'images'}. {_LAYOUT}")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        logger.warning("Kvasir-SEG: %d masks have no image and are ignored (e.g. %s)", len(orphans), masks[orphans[0]])
    out = Path(out_dir).expanduser() if out_dir is not None else root / "fewlabel_masks"

    items: list[dict[str, Any]] = []
    written = 0
    for stem, image in images.items():
        mask_file = masks.get(stem)
        if mask_file is None:
            raise DataError(
                f"Kvasir-SEG image {image} has no mask: expected {root / 'masks' / image.name} (same name). {_LAYOUT}"
            )
        size = _image_size(image)
        label: Path = mask_file
        if write_masks:
            label = out / "masks" / f"{stem}.png"
            stamp = source_stamp(mask_file, threshold=int(threshold))
            if force or not is_current(label, _STAMP_KEY, stamp):
                mask = read_kvasir_mask(mask_file, threshold)
                if mask.shape != size:
                    raise DataError(
                        f"Kvasir-SEG mask {mask_file} is {mask.shape[0]}x{mask.shape[1]} but its image {image} is "
                        f"{size[0]}x{size[1]}; re-export the mask at the image's size or remove the pair."
                    )
                write_stamped_png(mask, label, _STAMP_KEY, stamp)
                written += 1
        elif _image_size(mask_file) != size:
            raise DataError(
                f"Kvasir-SEG mask {mask_file} and image {image} differ in size; re-export the mask or remove the pair."
            )
        items.append({"image": str(image.resolve()), "label": str(label.resolve()), "patient": stem})

    parts = split_by_group(items, tuple(float(f) for f in fractions), seed=seed)
    datalist: dict[str, Any] = {"name": "Kvasir-SEG", "labels": {"0": "background", "1": "polyp"}}
    datalist.update(dict(zip(_SPLITS, parts)))
    logger.info(
        "Kvasir-SEG datalist from %s (seed %d): %d training, %d validation, %d testing items; %d masks written to %s",
        root, seed, *(len(p) for p in parts), written, out / "masks" if write_masks else "(none: JPEG masks in place)",
    )
    return datalist
