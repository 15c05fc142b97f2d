"""L3D → datalist of liver-landmark masks, keeping the dataset's official train / val / test split.

L3D (Pei et al., MICCAI 2024, released with D2GPLand) has 1,152 laparoscopic frames from 39
patients annotated with the three liver landmarks, officially split 921 / 122 / 109
(train / val / test). **No copy of the data was available when this adapter was written: the
layout below is assumed**, from public code that reads the release (the SLiPPA authors'
``prepare.py`` / ``utils/mask.py`` and D2GPLand's ``utils/dataset.py``), and made tolerant so
that a re-packed copy works too::

    SRC_DIR/Train/images/<stem>.jpg        frames (jpg / png / tif / bmp; 1920 x 1080, a few 3840 x 2160)
    SRC_DIR/Train/labels/<stem>.json       LabelMe contours of that frame (same stem)
    SRC_DIR/Val/...   SRC_DIR/Test/...     (other folders, e.g. depth maps, are ignored)

What is accepted exactly:

- **Split folders** (any case): ``train`` / ``training`` → training, ``val`` / ``valid`` /
  ``validation`` → validation, ``test`` / ``testing`` → testing; directly in ``SRC_DIR`` or in
  its only sub-folder that holds them. At least one must exist; two folders for one split are
  an error.
- **Images**: the files of ``images/`` (or ``imgs/``, ``image/``) inside the split folder, or,
  when there is no such folder, the image files directly in the split folder.
- **Annotations**, per image, matched by file stem (``annotation="auto"`` takes the first
  found, in this order; ``"json"`` / ``"png"`` only that kind):

  1. *LabelMe JSON* ``<stem>.json`` in ``labels/``, ``annotations/``, ``json/``, the images
     folder or the split folder: ``{"shapes": [{"label": ..., "points": [[x, y], ...],
     "shape_type": ...}, ...]}`` with optional ``imageHeight`` / ``imageWidth`` (checked
     against the image). Shapes of type ``linestrip``, ``line``, ``polygon``, ``point``
     (or none) are drawn as **open** polylines (a polygon's closing edge is not drawn:
     landmarks are curves); other shape types and unknown labels are skipped with a warning.
     Labels are matched case-insensitively with synonyms (``ridge``, L3D's typo ``rigde``,
     ``silhouette``, ``ligament``, ``falciform ligament``...; see
     :func:`fewlabel.data.landmarks.landmark_class`).
  2. *Label PNG* ``<stem>.png`` in ``masks/`` or ``labels/``: a grey image with class values
     0..3 (0 background, 1 silhouette, 2 ridge, 3 ligament); an RGB image whose three
     channels are equal is read as grey, and so is a palette image's index without
     ``colour_table``. Given ``colour_table`` (4 classes in that order, see
     :func:`~fewlabel.data.adapters.colour_masks.load_class_table`), RGB and palette images
     are colour masks converted with it (grey images are still read as class values).

  A frame without annotation is left out with a warning (counted in the log).
- **Patient**: the first group (or the whole match) of ``patient_regex`` searched in the
  image's stem; the default ``^([^_]+)`` takes the text before the first ``_`` (the whole stem
  if it has none). A stem the regex does not match is an error. A patient found in two
  splits is reported with a warning (the official split is kept as it is).

Masks (``0`` background, ``1`` silhouette, ``2`` ridge, ``3`` ligament; open polylines with
``cv2.LINE_8``, ``thickness`` 12 px, ligament over ridge over silhouette) are drawn at the
image's native size (read from its header) into ``OUT_DIR/masks/<split>/<stem>.png`` (split =
``train`` / ``val`` / ``test``); label PNGs are converted into the same place. A mask already
written from the same source file with the same options is not redrawn. As L3D mixes 1080p
and 4K frames, ``thickness_at_width=1920`` makes the line thickness proportional to the
image width (12 px at 1920, 24 px at 3840) instead of constant.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fewlabel.data.adapters.colour_masks import (
    ClassTableLike,
    colour_mask_to_index,
    load_class_table,
    read_colour_mask,
)
from fewlabel.data.datalist import IMAGE_SUFFIXES
from fewlabel.data.landmarks import (
    LANDMARK_CLASSES,
    draw_landmark_mask,
    label_png_is_current,
    landmark_class,
    landmark_labels,
    save_label_png,
)
from fewlabel.errors import DataError

__all__ = ["build_l3d", "read_labelme_contours", "L3D_SPLIT_FOLDERS", "L3D_DEFAULT_PATIENT_REGEX"]

logger = logging.getLogger("fewlabel.data")

#: Split folder name (lower case) -> datalist split.
L3D_SPLIT_FOLDERS = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "testing",
    "testing": "testing",
}
_SHORT = {"training": "train", "validation": "val", "testing": "test"}

#: Default patient regex: the text before the first ``_`` of the image stem.
L3D_DEFAULT_PATIENT_REGEX = r"^([^_]+)"

_LAYOUT = (
    "Expected (assumed L3D layout) SRC_DIR/Train/images/<stem>.jpg with SRC_DIR/Train/labels/<stem>.json (LabelMe "
    "contours) or a label PNG SRC_DIR/Train/masks/<stem>.png, and likewise Val/ and Test/."
)
_IMAGE_DIRS = ("images", "imgs", "image")
_JSON_DIRS = ("labels", "annotations", "json")
_PNG_DIRS = ("masks", "labels")
_OPEN_SHAPES = {None, "", "linestrip", "line", "polyline", "polygon", "point"}
_MASK_VERSION = 1


def read_labelme_contours(
    path: str | os.PathLike,
) -> tuple[list[tuple[int, np.ndarray]], list[str], tuple[int, int] | None]:
    """Parse one LabelMe JSON file of landmark contours.

    Args:
        path: the JSON file.

    Returns:
        ``(contours, skipped, size)``: ``contours`` a list of ``(class index 1..3, points
        (N, 2) float64 (x, y) pixels)``; ``skipped`` a description of each shape left out
        (unknown label or shape type); ``size`` ``(imageHeight, imageWidth)`` when the file
        gives them, else ``None``.

    Raises:
        DataError: the file is missing, not JSON, not a LabelMe annotation (no ``shapes``
            list), or a shape's points are not a list of ``[x, y]`` numbers.
    """
    path = Path(path)
    expected = (
        'expected LabelMe JSON: {"shapes": [{"label": "ridge", "points": [[x, y], ...], "shape_type": "linestrip"}]}'
    )
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise DataError(f"L3D annotation not found: {path}.") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"L3D annotation {path} is not valid JSON ({e}); {expected}.") from e
    shapes = content.get("shapes") if isinstance(content, dict) else None
    if not isinstance(shapes, list):
        raise DataError(f"L3D annotation {path} has no \"shapes\" list; {expected}.")
    contours: list[tuple[int, np.ndarray]] = []
    skipped: list[str] = []
    for i, shape in enumerate(shapes):
        if not isinstance(shape, dict):
            raise DataError(f"L3D annotation {path}: shape {i} is not an object; {expected}.")
        label, kind = shape.get("label"), shape.get("shape_type")
        kind = kind.lower() if isinstance(kind, str) else kind
        if kind not in _OPEN_SHAPES:
            skipped.append(f"shape_type {kind!r}")
            continue
        try:
            index = landmark_class(label) if isinstance(label, (str, int)) else None
        except ValueError:
            index = None
        if index is None:
            skipped.append(f"label {label!r}")
            continue
        try:
            points = np.asarray(shape.get("points", []), dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise DataError(f"L3D annotation {path}: shape {i} ({label}) has non-numeric points ({e}).") from e
        if points.size and (points.ndim != 2 or points.shape[1] != 2):
            raise DataError(
                f"L3D annotation {path}: shape {i} ({label}) points must be [[x, y], ...], got shape {points.shape}."
            )
        contours.append((index, points.reshape(-1, 2)))
    size = None
    if isinstance(content.get("imageHeight"), int) and isinstance(content.get("imageWidth"), int):
        size = (int(content["imageHeight"]), int(content["imageWidth"]))
    return contours, skipped, size


def _find_splits(src: Path) -> dict[str, Path]:
    def splits_in(folder: Path) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for p in sorted(folder.iterdir()):
            split = L3D_SPLIT_FOLDERS.get(p.name.lower()) if p.is_dir() else None
            if split is None:
                continue
            if split in found:
                raise DataError(f"L3D: two folders hold the {split} split: {found[split]} and {p}. Keep one.")
            found[split] = p
        return found

    found = splits_in(src)
    if found:
        return found
    wrappers = [w for w in (p for p in sorted(src.iterdir()) if p.is_dir()) if splits_in(w)]
    if len(wrappers) == 1:
        return splits_in(wrappers[0])
    raise DataError(f"No L3D split folders (train/, val/, test/) in {src}. {_LAYOUT}")


def _first_dir(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """The sub-folders of ``folder`` named (any case) like one of ``names``, in that order."""
    children = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    return [children[n] for n in names if n in children]


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return int(im.size[1]), int(im.size[0])
    except (OSError, ValueError) as e:
        raise DataError(f"Cannot read the image header of {path}: {e}") from e


def _read_label_png(path: Path, table: list[dict[str, Any]] | None, tolerance: int | None) -> np.ndarray:
    """A label PNG as (H, W) uint8 class indices 0..3 (see the module docstring)."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            array = np.asarray(im)
    except (OSError, ValueError) as e:
        raise DataError(f"Cannot read label PNG {path}: {e}") from e
    if table is not None and mode not in ("1", "L", "I", "I;16"):  # colours (RGB, or palette entries)
        index = colour_mask_to_index(read_colour_mask(path), table, path, tolerance=tolerance)
    else:
        if array.ndim == 3:
            rgb = array[..., :3]
            if not (rgb == rgb[..., :1]).all():
                raise DataError(
                    f"L3D label {path} is a colour image; pass colour_table=[{{\"name\": \"background\", \"rgb\": "
                    "[0, 0, 0]}, {\"name\": \"silhouette\", ...}, {\"name\": \"ridge\", ...}, {\"name\": "
                    "\"ligament\", ...}] (or a JSON file of it) to convert its colours to classes."
                )
            array = rgb[..., 0]
        if array.ndim != 2 or not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            raise DataError(f"L3D label {path} has shape {array.shape} and dtype {array.dtype}; expected a grey image.")
        index = array
    top = int(index.max(initial=0))
    if top >= len(LANDMARK_CLASSES) or int(index.min(initial=0)) < 0:
        raise DataError(
            f"L3D label {path} has values up to {top}; expected class indices 0..{len(LANDMARK_CLASSES) - 1} "
            f"({', '.join(f'{i} {n}' for i, n in enumerate(LANDMARK_CLASSES))}). For colour masks pass colour_table."
        )
    return index.astype(np.uint8)


def _annotation(
    stem: str, split_dir: Path, image_dir: Path, annotation: str
) -> tuple[str, Path] | None:
    if annotation in ("auto", "json"):
        for folder in [*_first_dir(split_dir, _JSON_DIRS), image_dir, split_dir]:
            candidate = folder / f"{stem}.json"
            if candidate.is_file():
                return "json", candidate
    if annotation in ("auto", "png"):
        for folder in _first_dir(split_dir, _PNG_DIRS):
            if folder == image_dir:
                continue
            candidate = folder / f"{stem}.png"
            if candidate.is_file():
                return "png", candidate
    return None


def build_l3d(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    thickness: int = 12,
    patient_regex: str = L3D_DEFAULT_PATIENT_REGEX,
    annotation: str = "auto",
    colour_table: ClassTableLike | None = None,
    tolerance: int | None = 0,
    thickness_at_width: int | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Build the L3D landmark datalist, keeping the official train / val / test split.

    Args:
        src_dir: the unpacked dataset (split folders; the assumed layout is in the module
            docstring).
        out_dir: where masks go, as ``out_dir/masks/<train|val|test>/<stem>.png`` (uint8,
            values 0..3); default ``<src_dir>/fewlabel_masks``.
        thickness: line thickness in pixels for contour annotations (12 as in P2ILF's
            evaluation at 1920 x 1080).
        patient_regex: regular expression searched in each image stem; its first group (or the
            whole match) is the patient. Default: the text before the first ``_``.
        annotation: ``"auto"`` (LabelMe JSON if present, else a label PNG), ``"json"`` or
            ``"png"``.
        colour_table: class table of colour label PNGs (background, silhouette, ridge,
            ligament, in that order); ``None``: label PNGs hold class indices.
        tolerance: colour tolerance with ``colour_table`` (see
            :func:`~fewlabel.data.adapters.colour_masks.colour_mask_to_index`).
        thickness_at_width: when given, the thickness scales with the image width:
            ``max(1, round(thickness * W / thickness_at_width))`` (e.g. 1920).
        force: redraw every mask even if it is up to date.

    Returns:
        A datalist dict (``name``, ``labels``, ``training``, ``validation``, ``testing``);
        items ``{"image", "label", "patient"}`` with absolute paths.

    Raises:
        DataError: missing or duplicate split folders, no images, a JSON that is not a LabelMe
            annotation, a label PNG with values outside 0..3 or colours without a table,
            a size mismatch between image and annotation, a stem ``patient_regex`` does not
            match, or NaN coordinates. Frames without annotation, unknown labels and
            unsupported shape types are left out with a warning instead.
    """
    if annotation not in ("auto", "json", "png"):
        raise ValueError(f"annotation must be 'auto', 'json' or 'png', got {annotation!r}")
    if thickness_at_width is not None and int(thickness_at_width) < 1:
        raise ValueError(f"thickness_at_width must be a positive width in pixels, got {thickness_at_width!r}")
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise DataError(f"L3D folder not found: {src}. {_LAYOUT}")
    out = (Path(out_dir).expanduser() if out_dir is not None else src / "fewlabel_masks").resolve()
    pattern = re.compile(patient_regex)
    table = None
    if colour_table is not None:
        table = load_class_table(colour_table)
        if len(table) != len(LANDMARK_CLASSES):
            raise DataError(
                f"colour_table has {len(table)} classes; L3D masks need {len(LANDMARK_CLASSES)} "
                f"({', '.join(LANDMARK_CLASSES)}, in that order)."
            )
    splits = _find_splits(src)
    datalist: dict[str, Any] = {
        "name": "L3D (liver landmarks)",
        "labels": landmark_labels(),
        "training": [],
        "validation": [],
        "testing": [],
    }
    stats = {"unannotated": 0, "skipped_shapes": 0, "drawn": 0, "up_to_date": 0}
    for split, split_dir in splits.items():
        image_dirs = _first_dir(split_dir, _IMAGE_DIRS)
        image_dir = image_dirs[0] if image_dirs else split_dir
        images = sorted(
            p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            and not p.name.startswith(".")
        )
        if not images:
            raise DataError(f"No images in {image_dir}. {_LAYOUT}")
        seen: dict[str, Path] = {}
        missing: list[str] = []
        for image in images:
            if image.stem in seen:
                raise DataError(f"L3D: two images share the stem '{image.stem}': {seen[image.stem]} and {image}.")
            seen[image.stem] = image
            found = _annotation(image.stem, split_dir, image_dir, annotation)
            if found is None:
                missing.append(image.name)
                continue
            match = pattern.search(image.stem)
            if match is None:
                raise DataError(
                    f"patient_regex {patient_regex!r} does not match the name of {image}; pass a patient_regex that "
                    "finds the patient in every image name."
                )
            patient = match.group(1) if pattern.groups else match.group(0)
            kind, source = found
            target = out / "masks" / _SHORT[split] / f"{image.stem}.png"
            _convert(image, kind, source, target, thickness, thickness_at_width, table, tolerance, force, stats)
            datalist[split].append({"image": str(image.resolve()), "label": str(target), "patient": patient})
        if missing:
            stats["unannotated"] += len(missing)
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            logger.warning(
                "L3D: %d frame(s) in %s have no annotation (%s) and are left out: %s",
                len(missing), image_dir, "LabelMe JSON or label PNG" if annotation == "auto" else annotation, shown,
            )
    if not any(datalist[s] for s in ("training", "validation", "testing")):
        raise DataError(f"No annotated frames found in {src}. {_LAYOUT}")

    patients = {s: {it["patient"] for it in datalist[s]} for s in ("training", "validation", "testing")}
    shared = sorted((patients["training"] & patients["validation"]) | (patients["training"] & patients["testing"])
                    | (patients["validation"] & patients["testing"]))
    if shared:
        logger.warning(
            "L3D: %d patient id(s) occur in more than one split (%s); kept as the release splits them. Check "
            "patient_regex=%r if these are not patients.",
            len(shared), ", ".join(shared[:5]) + (" ..." if len(shared) > 5 else ""), patient_regex,
        )
    logger.info(
        "L3D datalist from %s: %d training, %d validation, %d testing frames of %d patients; %d frame(s) without "
        "annotation left out, %d shape(s) skipped; %d mask(s) written, %d up to date.",
        src, len(datalist["training"]), len(datalist["validation"]), len(datalist["testing"]),
        len(set().union(*patients.values())), stats["unannotated"], stats["skipped_shapes"], stats["drawn"],
        stats["up_to_date"],
    )
    return datalist


def _convert(
    image: Path,
    kind: str,
    source: Path,
    target: Path,
    thickness: int,
    thickness_at_width: int | None,
    table: list[dict[str, Any]] | None,
    tolerance: int | None,
    force: bool,
    stats: dict[str, int],
) -> None:
    """Write the mask of ``image`` from its annotation ``source`` to ``target`` unless up to date."""
    size = _image_size(image)
    if thickness_at_width is not None:
        thickness = max(1, round(thickness * size[1] / int(thickness_at_width)))
    info = source.stat()
    stamp: dict[str, Any] = {
        "version": _MASK_VERSION,
        "source": source.name,
        "source_bytes": info.st_size,
        "source_mtime_ns": info.st_mtime_ns,
        "size": list(size),
    }
    if kind == "json":
        stamp["thickness"] = int(thickness)
    elif table is not None:
        stamp["colour_table"] = [c["rgb"] for c in table]
        stamp["tolerance"] = tolerance
    if not force and label_png_is_current(target, stamp):
        stats["up_to_date"] += 1
        return
    if kind == "json":
        contours, skipped, declared = read_labelme_contours(source)
        if declared is not None and declared != size:
            raise DataError(
                f"L3D annotation {source} was made on a {declared[0]} x {declared[1]} (H x W) image but {image} is "
                f"{size[0]} x {size[1]}; the contour coordinates would not fit. Use the original image."
            )
        if skipped:
            stats["skipped_shapes"] += len(skipped)
            logger.warning("L3D: %s: skipped %d shape(s): %s", source, len(skipped), ", ".join(sorted(set(skipped))))
        mask = draw_landmark_mask(contours, size, thickness=thickness, source=source)
    else:
        mask = _read_label_png(source, table, tolerance)
        if mask.shape != size:
            raise DataError(
                f"L3D label {source} is {mask.shape[0]} x {mask.shape[1]} (H x W) but its image {image} is "
                f"{size[0]} x {size[1]}; they must have the same size."
            )
    save_label_png(mask, target, stamp)
    stats["drawn"] += 1
