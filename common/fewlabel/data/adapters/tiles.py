"""Whole-slide images + masks → non-overlapping PNG tiles + a slide-grouped datalist.

Made for the Dermatomyositis dataset (1408 x 1876 TIFF slides, DAPI channel), usable for any
folder of large images with same-stem masks. Expected layout::

    SRC_DIR/
      images/slide_01.tif      (.tif / .tiff / .png)
      masks/slide_01.tif       same stem (+ ``mask_suffix``), any of those extensions

Output::

    OUT_DIR/images/slide_01_r00_c00.png     uint8 (grayscale, or RGB for RGB slides)
    OUT_DIR/labels/slide_01_r00_c00.png     uint8 0/1

Tiles of one slide (or one patient, with ``group_by="patient"``) never land in two splits.

Defaults follow the MedSASS paper: 480 x 480 tiles, border tiles kept and zero-padded
(``pad=True``). A 1408 x 1876 Dermatomyositis slide then gives 3 x 4 = 12 tiles, and the
198 slides 198 x 12 = 2376 tiles, the total the paper reports (1656 / 240 / 480 for its
70/10/20 split). ``pad=False`` drops the incomplete border tiles instead: 2 x 3 = 6 whole
tiles per slide, 1188 in all.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fewlabel.data.adapters.tissuenet import rescale_to_uint8
from fewlabel.data.datalist import split_by_group
from fewlabel.errors import DataError

__all__ = ["build_tiles", "tile_grid", "SLIDE_SUFFIXES"]

logger = logging.getLogger("fewlabel.data")

SLIDE_SUFFIXES = (".tif", ".tiff", ".png")


def _layout(images_dir: str, masks_dir: str) -> str:
    return (
        f"Expected SRC_DIR/{images_dir}/<slide>.tif and SRC_DIR/{masks_dir}/<slide>.tif "
        f"(same stem; .tif, .tiff or .png)."
    )


def tile_grid(height: int, width: int, tile_size: int, pad: bool = False) -> tuple[int, int]:
    """Rows and columns of ``tile_size`` tiles cut from a ``height`` x ``width`` image.

    Incomplete border tiles are dropped, or kept (to be zero-padded) with ``pad=True``.
    """
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if pad:
        return math.ceil(height / tile_size), math.ceil(width / tile_size)
    return height // tile_size, width // tile_size


def _read_array(path: Path, palette_to_rgb: bool) -> np.ndarray:
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            try:
                import tifffile
            except ImportError:  # pragma: no cover - tifffile comes with scikit-image
                tifffile = None
            if tifffile is not None:
                return np.asarray(tifffile.imread(path))
        with Image.open(path) as im:
            if palette_to_rgb and im.mode in ("P", "PA"):
                im = im.convert("RGB")
            return np.asarray(im)
    except (OSError, ValueError) as e:
        raise DataError(f"Cannot read {path}: {e}") from e


def _channel_axis(shape: tuple[int, ...]) -> int:
    """The channel axis of a 3-D array: whichever of the first/last axes is smaller."""
    return 2 if shape[2] <= shape[0] else 0


def _image_plane(array: np.ndarray, path: Path, channel: int | None) -> np.ndarray:
    """A 2-D (grayscale) or H x W x 3 (RGB) uint8 array from a slide read from ``path``."""
    array = np.squeeze(array)
    if array.ndim == 3:
        axis = _channel_axis(array.shape)
        n = array.shape[axis]
        if channel is not None:
            if not -n <= channel < n:
                raise DataError(
                    f"Slide {path} has {n} channels (shape {array.shape}); channel={channel} is out of range."
                )
            array = np.take(array, channel, axis=axis)
        elif n in (3, 4):
            array = np.moveaxis(array, axis, 2)[..., :3]
        else:
            raise DataError(
                f"Slide {path} has {n} channels (shape {array.shape}); pass channel=INDEX to pick one "
                "(e.g. the DAPI channel)."
            )
    elif array.ndim != 2:
        raise DataError(f"Slide {path} has shape {array.shape}; expected H x W or H x W x C.")
    if array.dtype != np.uint8:
        array = rescale_to_uint8(array, channel_axis=2 if array.ndim == 3 else None)
    return array


def _mask_plane(array: np.ndarray, path: Path) -> np.ndarray:
    array = np.squeeze(array)
    if array.ndim == 3:
        array = np.any(array > 0, axis=_channel_axis(array.shape))
    elif array.ndim != 2:
        raise DataError(f"Mask {path} has shape {array.shape}; expected H x W (or H x W x C).")
    return (array > 0).astype(np.uint8)


def _list_files(folder: Path, what: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in SLIDE_SUFFIXES or not path.is_file():
            continue
        if path.stem in files:
            raise DataError(f"Two {what} files share the stem '{path.stem}': {files[path.stem]} and {path}.")
        files[path.stem] = path
    return files


def _pad_to(array: np.ndarray, height: int, width: int) -> np.ndarray:
    pads = [(0, height - array.shape[0]), (0, width - array.shape[1])] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pads) if any(p[1] for p in pads) else array


def build_tiles(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    tile_size: int = 480,
    pad: bool = True,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    group_by: str = "slide",
    patient_regex: str | None = None,
    seed: int = 0,
    images_dir: str = "images",
    masks_dir: str = "masks",
    mask_suffix: str = "",
    channel: int | None = None,
    name: str = "tiles",
    foreground: str = "foreground",
) -> dict[str, Any]:
    """Tile whole-slide images and masks and split the tiles by slide (or patient).

    Args:
        src_dir: folder holding ``images_dir`` and ``masks_dir``.
        out_dir: where tiles go; defaults to ``<src_dir>/fewlabel_tiles``.
        tile_size: side of the square, non-overlapping tiles.
        pad: keep incomplete border tiles, zero-padded (default, the paper's 12 tiles per
            1408 x 1876 slide); False drops them (6 whole tiles per such slide).
        fractions: training / validation / testing shares of tiles, summing to 1.
        group_by: ``"slide"`` (each slide is a group) or ``"patient"`` (the id that
            ``patient_regex`` finds in the slide's stem).
        patient_regex: regular expression searched in each stem; its first group (or the
            whole match) is the patient id. Default: the whole stem.
        seed: seed of the group shuffle; same seed and files give the same split.
        images_dir, masks_dir: names of the two sub-folders.
        mask_suffix: the mask of ``<stem>.tif`` is ``<stem><mask_suffix>.*`` (e.g. ``"_mask"``).
        channel: channel index to keep from multi-channel slides (e.g. the DAPI channel);
            RGB slides are kept as RGB when not given.
        name, foreground: the datalist's ``name`` and label-1 name.

    Returns:
        A datalist dict; each item also has ``"slide"`` (the slide's stem).

    Raises:
        DataError: a folder is missing or empty, an image has no mask, image and mask sizes
            differ, a stem does not match ``patient_regex``, or a slide cannot be read.
        ValueError: bad ``fractions``, ``group_by`` or ``tile_size``.
    """
    if group_by not in ("slide", "patient"):
        raise ValueError(f"group_by must be 'slide' or 'patient', got {group_by!r}")
    if len(fractions) != 3:
        raise ValueError(f"fractions must give training/validation/testing shares, got {list(fractions)}")
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    pattern = re.compile(patient_regex) if patient_regex else None
    src = Path(src_dir).expanduser()
    layout = _layout(images_dir, masks_dir)
    if not src.is_dir():
        raise DataError(f"Slide source folder not found: {src}. {layout}")
    image_root, mask_root = src / images_dir, src / masks_dir
    for folder in (image_root, mask_root):
        if not folder.is_dir():
            raise DataError(f"Folder not found: {folder}. {layout}")
    images = _list_files(image_root, "image")
    if not images:
        raise DataError(f"No .tif/.tiff/.png slides in {image_root}. {layout}")
    masks = _list_files(mask_root, "mask")

    pairs = []
    for stem, image_path in images.items():
        mask_path = masks.get(stem + mask_suffix)
        if mask_path is None:
            raise DataError(
                f"Slide {image_path} has no mask: expected {mask_root / (stem + mask_suffix)}"
                f"{{{','.join(SLIDE_SUFFIXES)}}}. {layout}"
            )
        if pattern is None:
            patient = stem
        else:
            match = pattern.search(stem)
            if match is None:
                raise DataError(f"patient_regex {patient_regex!r} does not match the name of slide {image_path}.")
            patient = match.group(1) if pattern.groups else match.group(0)
        pairs.append((stem, image_path, mask_path, patient))

    out = Path(out_dir).expanduser() if out_dir is not None else src / "fewlabel_tiles"
    tile_image_dir, tile_label_dir = out / "images", out / "labels"
    tile_image_dir.mkdir(parents=True, exist_ok=True)
    tile_label_dir.mkdir(parents=True, exist_ok=True)

    items: list[dict[str, Any]] = []
    for stem, image_path, mask_path, patient in pairs:
        image = _image_plane(_read_array(image_path, True), image_path, channel)
        mask = _mask_plane(_read_array(mask_path, False), mask_path)
        if image.shape[:2] != mask.shape:
            raise DataError(
                f"Slide {image_path} is {image.shape[1]}x{image.shape[0]} (WxH) but its mask {mask_path} is "
                f"{mask.shape[1]}x{mask.shape[0]}; they must have the same size."
            )
        rows, cols = tile_grid(*mask.shape, tile_size, pad)
        if rows * cols == 0:
            logger.warning("Slide %s (%dx%d) is smaller than one %d px tile: no tiles (pad=True keeps it).",
                           image_path, mask.shape[1], mask.shape[0], tile_size)
            continue
        if pad:
            image = _pad_to(image, rows * tile_size, cols * tile_size)
            mask = _pad_to(mask, rows * tile_size, cols * tile_size)
        for r in range(rows):
            for c in range(cols):
                window = (slice(r * tile_size, (r + 1) * tile_size), slice(c * tile_size, (c + 1) * tile_size))
                tile_name = f"{stem}_r{r:02d}_c{c:02d}.png"
                for array, folder in ((image, tile_image_dir), (mask, tile_label_dir)):
                    Image.fromarray(np.ascontiguousarray(array[window])).save(folder / tile_name, compress_level=1)
                items.append({
                    "image": str((tile_image_dir / tile_name).resolve()),
                    "label": str((tile_label_dir / tile_name).resolve()),
                    "patient": patient,
                    "slide": stem,
                })
    if not items:
        raise DataError(f"No {tile_size} px tiles could be cut from the slides in {image_root} (try pad=True).")

    training, validation, testing = split_by_group(items, fractions, seed=seed, group_key=group_by)
    datalist = {
        "name": name,
        "labels": {"0": "background", "1": foreground},
        "training": training,
        "validation": validation,
        "testing": testing,
    }
    for split in ("training", "validation", "testing"):
        logger.info(
            "%s %s: %d tiles from %d slides", name, split, len(datalist[split]),
            len({item["slide"] for item in datalist[split]}),
        )
    return datalist
