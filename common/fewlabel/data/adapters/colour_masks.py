"""Colour-coded segmentation masks → class-index maps, and an adapter for any such dataset.

Many surgical datasets publish their ground truth as RGB images in which each class has one
colour (m2caiSeg, the SurgicalSemiSeg in-house set, CholecSeg8k's ``*_color_mask.png``). A
*class table* says which colour is which class, in class-index order::

    [{"name": "background", "rgb": [0, 0, 0]}, {"name": "liver", "rgb": [255, 0, 0]}, ...]

stored as JSON, either as that list or as ``{"name": ..., "classes": [...]}`` (extra keys such
as ``"description"`` are kept). Tables shipped with the package live in
``fewlabel/data/class_tables/`` and can be given by name (see :func:`shipped_class_tables`);
``surgical_semiseg_inhouse`` is the 20-class table of the SurgicalSemiSeg paper (Table 3).

:func:`colour_mask_to_index` converts one mask. A colour that matches no class is an error that
names the file and the colours found (never a silent class 0); ``tolerance`` accepts colours a
few levels off (JPEG-compressed or anti-aliased masks), ``tolerance=None`` snaps every pixel to
the nearest class colour.

:func:`build_colour_masks` is the adapter for "a folder of images and a folder of colour masks
plus a class table"::

    SRC_DIR/images/<stem>.jpg|png|...     the frames
    SRC_DIR/masks/<stem><mask_suffix>.png the colour masks, same stem

It writes index PNGs to ``OUT_DIR/labels/<stem>.png`` and splits by group (video or patient,
found in the stem by ``group_regex``; default: each image is its own group).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fewlabel.data.datalist import IMAGE_SUFFIXES, split_by_group
from fewlabel.errors import DataError

__all__ = [
    "ClassTableLike",
    "load_class_table",
    "shipped_class_tables",
    "table_colours",
    "table_labels",
    "colour_mask_to_index",
    "read_colour_mask",
    "build_colour_masks",
]

logger = logging.getLogger("fewlabel.data")

#: A class table, a path to its JSON file, or the name of a shipped table.
ClassTableLike = str | os.PathLike | Sequence[Mapping[str, Any]]

_SHIPPED = "class_tables"


def _shipped_dir() -> Path:
    return Path(str(resources.files("fewlabel.data").joinpath(_SHIPPED)))


def shipped_class_tables() -> list[str]:
    """Names of the class tables that ship with the package (``fewlabel/data/class_tables/*.json``)."""
    folder = _shipped_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def load_class_table(table: ClassTableLike) -> list[dict[str, Any]]:
    """Read and check a class table.

    Args:
        table: a list of ``{"name", "rgb"}`` dicts in class-index order; or the path of a JSON
            file holding such a list or ``{"classes": [...]}``; or the name of a shipped table
            (e.g. ``"surgical_semiseg_inhouse"``).

    Returns:
        A new list of dicts, each with ``"name"`` (str) and ``"rgb"`` (list of 3 ints in
        [0, 255]) plus any other keys the table had.

    Raises:
        DataError: the file is missing or not JSON, or the table is empty, has more than 256
            classes, an entry without a name or a valid colour, or two classes with one name or
            one colour (which would make masks ambiguous). The message names the file.
    """
    source = "class table"
    if isinstance(table, (str, os.PathLike)):
        path = Path(table).expanduser()
        if not path.is_file() and isinstance(table, str) and table in shipped_class_tables():
            path = _shipped_dir() / f"{table}.json"
        if not path.is_file():
            shipped = ", ".join(shipped_class_tables()) or "none"
            raise DataError(
                f"Class table not found: {path}. Pass a JSON file of [{{\"name\": ..., \"rgb\": [r, g, b]}}, ...] "
                f"in class-index order, or the name of a shipped table ({shipped})."
            )
        source = str(path)
        try:
            content = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"Class table {path} is not valid JSON: {e}") from e
        entries = content.get("classes") if isinstance(content, dict) else content
    else:
        entries = table
    if not isinstance(entries, Sequence) or isinstance(entries, (str, bytes)) or not entries:
        raise DataError(
            f"{source}: expected a non-empty list of {{\"name\", \"rgb\"}} entries (or {{\"classes\": [...]}})."
        )
    if len(entries) > 256:
        raise DataError(f"{source}: {len(entries)} classes do not fit a uint8 label map (at most 256).")
    out: list[dict[str, Any]] = []
    names: dict[str, int] = {}
    colours: dict[tuple[int, ...], int] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise DataError(f"{source}: entry {i} has no \"name\" (got {entry!r}).")
        rgb = entry.get("rgb", entry.get("color", entry.get("colour")))
        try:
            rgb = [int(c) for c in rgb]
            ok = len(rgb) == 3 and all(0 <= c <= 255 for c in rgb)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise DataError(f"{source}: class {i} ({entry['name']!r}) needs \"rgb\": [r, g, b] in 0..255, got {rgb!r}.")
        name, key = entry["name"], tuple(rgb)
        if name in names:
            raise DataError(f"{source}: classes {names[name]} and {i} are both named {name!r}.")
        if key in colours:
            raise DataError(
                f"{source}: classes {colours[key]} ({out[colours[key]]['name']!r}) and {i} ({name!r}) share the "
                f"colour {list(key)}; a mask could not tell them apart."
            )
        names[name], colours[key] = i, i
        item = {k: v for k, v in entry.items() if k not in ("color", "colour")}
        item["rgb"] = rgb
        out.append(item)
    return out


def table_colours(table: ClassTableLike) -> np.ndarray:
    """``(C, 3)`` uint8 array of the class colours, in class-index order."""
    return np.array([c["rgb"] for c in load_class_table(table)], np.uint8)


def table_labels(table: ClassTableLike) -> dict[str, str]:
    """The datalist ``"labels"`` map ``{"0": name, "1": ...}`` of a class table."""
    return {str(i): c["name"] for i, c in enumerate(load_class_table(table))}


def _as_rgb(mask: np.ndarray, path: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 2:  # grey levels: r = g = b
        mask = np.repeat(mask[..., None], 3, axis=-1)
    if mask.ndim != 3 or mask.shape[-1] not in (3, 4):
        raise DataError(f"Mask {path} has shape {mask.shape}; expected an RGB image (H, W, 3).")
    if mask.dtype != np.uint8:
        if np.issubdtype(mask.dtype, np.integer) and mask.min(initial=0) >= 0 and mask.max(initial=0) <= 255:
            mask = mask.astype(np.uint8)
        else:
            raise DataError(f"Mask {path} has dtype {mask.dtype} with values outside 0..255; expected 8-bit RGB.")
    return mask[..., :3]


def colour_mask_to_index(
    rgb_mask: np.ndarray,
    table: ClassTableLike,
    path_for_errors: str | os.PathLike = "<array>",
    tolerance: int | None = 0,
    max_off_palette: float | None = None,
) -> np.ndarray:
    """Convert a colour-coded mask to a uint8 class-index map.

    Vectorised: the distinct colours of the mask are matched once, then mapped back.

    Args:
        rgb_mask: ``(H, W, 3)`` (or ``(H, W, 4)``, alpha ignored; or ``(H, W)`` grey) uint8.
        table: a class table (see :func:`load_class_table`); class ``i`` has colour
            ``table[i]["rgb"]``.
        path_for_errors: the mask's file, named in error messages.
        tolerance: largest per-channel difference (Chebyshev distance) at which a colour
            still counts as a class colour; the nearest class colour wins. ``0`` (default):
            exact colours only. ``None``: every colour goes to the nearest class colour.
        max_off_palette: when given, the largest share of pixels whose colour is not exactly a
            class colour; above it the mask is rejected (a sign of a wrong class table, or of a
            photo passed as a mask), whatever ``tolerance`` says.

    Returns:
        ``(H, W)`` uint8 class indices.

    Raises:
        DataError: a colour matches no class (the message names the file and lists up to 5
            unknown colours with their pixel counts), too many pixels are off the palette, or
            the array is not an 8-bit RGB image.
    """
    path = str(path_for_errors)
    classes = load_class_table(table)
    colours = np.array([c["rgb"] for c in classes], np.int32)
    rgb = _as_rgb(rgb_mask, path)
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    unique, inverse, counts = np.unique(codes.ravel(), return_inverse=True, return_counts=True)
    urgb = np.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], axis=1)
    dist = np.abs(urgb[:, None, :] - colours[None, :, :]).max(axis=-1)  # (U, C) Chebyshev
    nearest = dist.argmin(axis=1)
    best = dist[np.arange(len(unique)), nearest]
    if max_off_palette is not None:
        off = counts[best > 0].sum() / max(codes.size, 1)
        if off > max_off_palette:
            raise DataError(
                f"Mask {path}: {off:.1%} of the pixels are not exactly a class colour (at most "
                f"{max_off_palette:.0%} allowed). Is the class table right for this dataset, and is this file a "
                "colour mask rather than an image?"
            )
    known = np.ones(len(unique), bool) if tolerance is None else best <= int(tolerance)
    if not known.all():
        bad = np.nonzero(~known)[0]
        order = bad[np.argsort(-counts[bad], kind="stable")][:5]
        listed = ", ".join(f"{tuple(int(c) for c in urgb[i])} x {int(counts[i])} px" for i in order)
        more = f" and {len(bad) - len(order)} more" if len(bad) > len(order) else ""
        raise DataError(
            f"Mask {path} has {int(counts[bad].sum())} pixels whose colour matches no class of the table "
            f"(tolerance {tolerance}): {listed}{more}. Class colours: "
            + ", ".join(f"{c['name']}={tuple(c['rgb'])}" for c in classes)
            + ". Fix the class table, or pass tolerance=N (or None to snap to the nearest class colour) "
            "for masks whose colours are a few levels off."
        )
    return nearest.astype(np.uint8)[inverse].reshape(codes.shape)


def read_colour_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file as ``(H, W, 3)`` uint8 RGB (palette images are expanded).

    Raises:
        DataError: the file is missing or cannot be decoded.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode in ("P", "PA", "L", "LA", "1", "RGBA", "CMYK", "YCbCr", "HSV"):
                im = im.convert("RGB")
            array = np.asarray(im)
    except FileNotFoundError as e:
        raise DataError(f"Mask file not found: {path}") from e
    except (OSError, ValueError) as e:
        raise DataError(f"Cannot read mask {path}: {e}") from e
    return _as_rgb(array, str(path))


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (OSError, ValueError) as e:
        raise DataError(f"Cannot read image {path}: {e}") from e


def _save_index_png(index: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(index).save(path, compress_level=1)


def group_from_stem(stem: str, pattern: re.Pattern[str] | None, regex: str | None, path: Path) -> str:
    """The group (video / patient) of a file: ``pattern`` searched in ``stem`` (first group or match)."""
    if pattern is None:
        return stem
    match = pattern.search(stem)
    if match is None:
        raise DataError(f"group_regex {regex!r} does not match the name of {path}.")
    return match.group(1) if pattern.groups else match.group(0)


def build_colour_masks(
    src_dir: str | os.PathLike,
    class_table: ClassTableLike,
    images_dir: str = "images",
    masks_dir: str = "masks",
    out_dir: str | os.PathLike | None = None,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    group_regex: str | None = None,
    seed: int = 0,
    mask_suffix: str = "",
    tolerance: int | None = 0,
    name: str | None = None,
) -> dict[str, Any]:
    """Datalist for any dataset of images with colour-coded masks, given its class table.

    Args:
        src_dir: folder holding ``images_dir`` and ``masks_dir``.
        class_table: the class table (list, JSON path or shipped name, see
            :func:`load_class_table`); class ``i`` of the output is entry ``i``.
        images_dir, masks_dir: the two sub-folders (files directly inside them).
        out_dir: where index PNGs go (``out_dir/labels/<stem>.png``); default
            ``<src_dir>/fewlabel_masks``.
        fractions: training / validation / testing shares, summing to 1 (split by group).
        group_regex: regular expression searched in each image stem; its first group (or the
            whole match) is the video / patient. Default: every image is its own group. E.g.
            ``r"^(video\\d+)"`` for ``video12_000340.png``.
        seed: seed of the group shuffle.
        mask_suffix: the mask of ``<stem>.jpg`` is ``<stem><mask_suffix>.<ext>`` (e.g. ``"_gt"``).
        tolerance: see :func:`colour_mask_to_index`.
        name: the datalist's ``"name"`` (default: the table's name or the folder's).

    Returns:
        A datalist dict with ``"labels"`` from the table and items ``{"image", "label", "patient"}``.

    Raises:
        DataError: a folder is missing or empty, an image has no mask, sizes differ, a stem
            does not match ``group_regex``, or a mask has a colour the table does not know.
    """
    src = Path(src_dir).expanduser()
    layout = (
        f"Expected SRC_DIR/{images_dir}/<stem>.<png|jpg|...> and SRC_DIR/{masks_dir}/<stem>{mask_suffix}.png "
        "(colour-coded masks; one colour per class of the class table)."
    )
    if not src.is_dir():
        raise DataError(f"Source folder not found: {src}. {layout}")
    classes = load_class_table(class_table)
    if len(fractions) != 3:
        raise ValueError(f"fractions must give training/validation/testing shares, got {list(fractions)}")
    pattern = re.compile(group_regex) if group_regex else None
    image_root, mask_root = src / images_dir, src / masks_dir
    for folder in (image_root, mask_root):
        if not folder.is_dir():
            raise DataError(f"Folder not found: {folder}. {layout}")
    images = sorted(p for p in image_root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {image_root}. {layout}")
    masks: dict[str, Path] = {}
    for p in sorted(mask_root.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in masks:
                raise DataError(f"Two mask files share the stem '{p.stem}': {masks[p.stem]} and {p}.")
            masks[p.stem] = p

    out = Path(out_dir).expanduser() if out_dir is not None else src / "fewlabel_masks"
    items: list[dict[str, Any]] = []
    for image in images:
        mask_path = masks.get(image.stem + mask_suffix)
        if mask_path is None:
            expected = mask_root / (image.stem + mask_suffix)
            raise DataError(f"Image {image} has no mask: expected {expected}.png. {layout}")
        group = group_from_stem(image.stem, pattern, group_regex, image)
        index = colour_mask_to_index(read_colour_mask(mask_path), classes, mask_path, tolerance=tolerance)
        if _image_size(image) != index.shape:
            raise DataError(
                f"Image {image} is {_image_size(image)} (H, W) but its mask {mask_path} is {index.shape}; "
                "they must have the same size."
            )
        label = out / "labels" / f"{image.stem}.png"
        _save_index_png(index, label)
        items.append({"image": str(image.resolve()), "label": str(label.resolve()), "patient": group})

    training, validation, testing = split_by_group(items, fractions, seed=seed)
    table_name = None
    if isinstance(class_table, (str, os.PathLike)):
        table_name = Path(class_table).stem
    datalist = {
        "name": name or table_name or src.name,
        "labels": {str(i): c["name"] for i, c in enumerate(classes)},
        "training": training,
        "validation": validation,
        "testing": testing,
    }
    logger.info(
        "Colour-mask datalist from %s: %d classes, %d groups; %d training, %d validation, %d testing items",
        src, len(classes), len({it["patient"] for it in items}), len(training), len(validation), len(testing),
    )
    return datalist
