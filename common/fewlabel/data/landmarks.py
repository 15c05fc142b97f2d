"""Liver landmarks drawn from contour annotations into label masks (SLiPPA, P2ILF, L3D).

Laparoscopic liver landmark datasets annotate each landmark as a *contour*: an open polyline of
image points ``(x, y)`` in pixels. Three landmarks are annotated (Ali et al. 2025, P2ILF;
Pei et al. 2024, L3D) and give the classes of every SLiPPA mask (:data:`LANDMARK_CLASSES`)::

    0 background
    1 silhouette   the liver's occluding contour (its outline against other tissue)
    2 ridge        the anterior ridge (inferior margin) crossing the liver surface
    3 ligament     the falciform ligament

Masks are drawn as the P2ILF evaluation draws its ground truth: each contour with
``cv2.polylines(isClosed=False)``, ``lineType=cv2.LINE_8`` (no anti-aliasing, which would blur
the class labels) and ``thickness`` 12 px at the native 1920 x 1080. A training pipeline then
resizes the drawn mask (nearest neighbour); nothing here resizes.

Drawing rules (the same for every dataset adapter):

- **Precedence**: where the curves of two classes overlap, the higher class index wins. Contours
  are drawn class by class in :data:`DRAW_ORDER` (silhouette, then ridge, then ligament on
  top), whatever their order in the annotation file; within a class, in the given order. The
  ligament is drawn last because it is the thinnest and rarest landmark (0.2 % of P2ILF's
  pixels, the paper's Table 1) and would otherwise vanish where it meets the silhouette.
  :func:`draw_landmark_masks` draws one mask per landmark instead, with no precedence, for
  evaluation.
- **Coordinates** are multiplied by ``scale`` and rounded to the nearest integer pixel; pixel
  ``(x, y)`` is column ``x``, row ``y`` and its centre has integer coordinates. ``thickness``
  is in pixels of the *output* mask (it is not multiplied by ``scale``): to draw a 1920-wide
  annotation into a 416-wide mask, pass ``scale=416 / 1920`` and, e.g.,
  ``thickness=max(2, round(12 * 416 / 1920))``. OpenCV draws a thick line as the set of pixels
  within about ``thickness / 2`` of the segment, with round ends.
- **Points outside the image** are allowed: drawing clips the lines at the image border (so a
  curve leaving and re-entering the frame is drawn correctly). Coordinates beyond
  ``+-2**28`` px are clamped before drawing (they only occur in broken files).
- **Short contours**: a contour of one point is drawn as a dot of diameter ``thickness``
  (the round end of a zero-length line); a contour of no points is skipped.
- **NaN or infinite coordinates** raise :class:`~fewlabel.errors.DataError` naming ``source``
  (the annotation file), since they mean a broken annotation.

Class names are matched case-insensitively, with ``_`` and ``-`` read as spaces, against
:data:`LANDMARK_SYNONYMS` (``"Ridge"``, ``"Silhouette"``, ``"Ligament"``,
``"falciform ligament"``, ``"falciform"``, L3D's typo ``"rigde"``...); see
:func:`landmark_class`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, PngImagePlugin

from fewlabel.errors import DataError

__all__ = [
    "LANDMARK_CLASSES",
    "LANDMARK_SYNONYMS",
    "DRAW_ORDER",
    "Contour",
    "landmark_class",
    "draw_landmark_mask",
    "draw_landmark_masks",
    "landmark_labels",
    "save_label_png",
    "label_png_is_current",
]

#: Class names in label-index order.
LANDMARK_CLASSES = ("background", "silhouette", "ridge", "ligament")

#: Accepted names (after lower-casing, ``_``/``-`` -> space and whitespace collapsing) -> class index.
LANDMARK_SYNONYMS: Mapping[str, int] = {
    "silhouette": 1,
    "silhouettes": 1,
    "liver silhouette": 1,
    "occluding contour": 1,
    "ridge": 2,
    "ridges": 2,
    "rigde": 2,  # a typo found in L3D's label files (handled the same way by the SLiPPA code)
    "anterior ridge": 2,
    "liver ridge": 2,
    "ligament": 3,
    "ligaments": 3,
    "falciform": 3,
    "falciform ligament": 3,
    "ligament falciform": 3,
}

#: Classes in drawing order: a later class overwrites an earlier one where they overlap.
DRAW_ORDER = (1, 2, 3)

#: One annotated contour: (class index 1..3 or class name, points (N, 2) as (x, y) pixels).
Contour = tuple[int | str, np.ndarray | Sequence[Sequence[float]]]

# coordinates are clamped to +-_FAR px (a far-away point only changes where a clipped line
# enters the image by a negligible angle), keeping them well inside int32 for OpenCV
_FAR = float(2**28)


def _normalise_name(name: str) -> str:
    return " ".join(str(name).strip().lower().replace("_", " ").replace("-", " ").split())


def landmark_class(label: int | str | np.integer) -> int:
    """Class index (1 silhouette, 2 ridge, 3 ligament) of a landmark given by index or name.

    Args:
        label: an integer in ``1..3`` (``numpy`` integers too), a name or synonym from
            :data:`LANDMARK_SYNONYMS` (any case; ``_`` and ``-`` count as spaces), or a digit
            string ``"1"``..``"3"``.

    Raises:
        ValueError: anything else (including 0, background, which is not a landmark); the
            message lists the accepted names.
    """
    if isinstance(label, (bool, np.bool_)):
        raise ValueError(f"Landmark class must be an index 1..3 or a name, got {label!r}.")
    if isinstance(label, (int, np.integer)):
        index = int(label)
    else:
        key = _normalise_name(label)
        if key in LANDMARK_SYNONYMS:
            return LANDMARK_SYNONYMS[key]
        if not key.isdigit():
            raise ValueError(
                f"Unknown landmark class {label!r}; expected one of "
                f"{', '.join(repr(n) for n in sorted(LANDMARK_SYNONYMS))} (any case) or an index 1..3."
            )
        index = int(key)
    if not 1 <= index < len(LANDMARK_CLASSES):
        raise ValueError(
            f"Landmark class index must be 1..{len(LANDMARK_CLASSES) - 1} "
            f"({', '.join(f'{i} {n}' for i, n in enumerate(LANDMARK_CLASSES) if i)}), got {index}."
        )
    return index


def landmark_labels() -> dict[str, str]:
    """The datalist ``"labels"`` map ``{"0": "background", "1": "silhouette", ...}``."""
    return {str(i): name for i, name in enumerate(LANDMARK_CLASSES)}


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (H, W), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive (H, W), got {size!r}")
    return h, w


def _prepared(
    contours: Iterable[Contour], scale: float, source: str
) -> list[tuple[int, np.ndarray]]:
    """``[(class index, int32 (N, 1, 2) pixel points), ...]`` for the non-empty contours."""
    out: list[tuple[int, np.ndarray]] = []
    for i, contour in enumerate(contours):
        try:
            label, points = contour
        except (TypeError, ValueError):
            raise ValueError(
                f"{source}: contour {i} must be a (class, points) pair, got {type(contour).__name__}."
            ) from None
        index = landmark_class(label)
        try:
            pts = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise DataError(f"{source}: contour {i} ({LANDMARK_CLASSES[index]}) has non-numeric points ({e}).") from e
        if pts.size == 0:
            continue
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(
                f"{source}: contour {i} ({LANDMARK_CLASSES[index]}) points must have shape (N, 2) as (x, y), "
                f"got {pts.shape}."
            )
        if not np.isfinite(pts).all():
            bad = int((~np.isfinite(pts)).any(axis=1).sum())
            raise DataError(
                f"{source}: contour {i} ({LANDMARK_CLASSES[index]}) has {bad} point(s) with NaN or infinite "
                "coordinates. Fix or remove those points in the annotation file."
            )
        pts = np.clip(np.rint(pts * float(scale)), -_FAR, _FAR).astype(np.int32)
        if len(pts) == 1:  # a dot: the round end of a zero-length line
            pts = np.repeat(pts, 2, axis=0)
        out.append((index, pts.reshape(-1, 1, 2)))
    return out


def _check_drawing_args(thickness: int, scale: float) -> int:
    if isinstance(thickness, bool) or int(thickness) != thickness or int(thickness) < 1:
        raise ValueError(f"thickness must be a positive integer (pixels), got {thickness!r}")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    return int(thickness)


def draw_landmark_mask(
    contours: Iterable[Contour],
    size: Sequence[int],
    thickness: int = 12,
    scale: float = 1.0,
    source: str | os.PathLike = "<contours>",
) -> np.ndarray:
    """Draw landmark contours into one class-index mask (higher class on top).

    Args:
        contours: ``(label, points)`` pairs: ``label`` a class index 1..3 or a name accepted by
            :func:`landmark_class`; ``points`` ``(N, 2)`` as ``(x, y)`` pixels of the annotated
            image (floats accepted).
        size: ``(H, W)`` of the mask.
        thickness: line thickness in pixels of the mask (12 = the P2ILF evaluation at 1920 x 1080).
        scale: factor applied to the point coordinates before drawing.
        source: named in error messages (the annotation file).

    Returns:
        ``(H, W)`` uint8 with values in ``0..3`` (:data:`LANDMARK_CLASSES`); where curves of two
        classes overlap the later class of :data:`DRAW_ORDER` wins (ligament > ridge >
        silhouette).

    Raises:
        ValueError: unknown class, points not of shape ``(N, 2)``, bad ``size``, ``thickness``
            or ``scale``.
        DataError: NaN / infinite or non-numeric coordinates (the message names ``source``).
    """
    h, w = _check_size(size)
    thickness = _check_drawing_args(thickness, scale)
    prepared = _prepared(contours, scale, str(source))
    mask = np.zeros((h, w), np.uint8)
    for cls in DRAW_ORDER:
        lines = [pts for index, pts in prepared if index == cls]
        if lines:
            cv2.polylines(mask, lines, isClosed=False, color=int(cls), thickness=thickness, lineType=cv2.LINE_8)
    return mask


def draw_landmark_masks(
    contours: Iterable[Contour],
    size: Sequence[int],
    thickness: int = 12,
    scale: float = 1.0,
    source: str | os.PathLike = "<contours>",
) -> np.ndarray:
    """Draw one binary mask per landmark, without precedence (for evaluation).

    Same arguments and errors as :func:`draw_landmark_mask`.

    Returns:
        ``(3, H, W)`` bool: channel ``k`` is landmark class ``k + 1`` (silhouette, ridge,
        ligament). A pixel can be in several channels where curves cross.
    """
    h, w = _check_size(size)
    thickness = _check_drawing_args(thickness, scale)
    prepared = _prepared(contours, scale, str(source))
    masks = np.zeros((len(LANDMARK_CLASSES) - 1, h, w), np.uint8)
    for cls in DRAW_ORDER:
        lines = [pts for index, pts in prepared if index == cls]
        if lines:
            cv2.polylines(masks[cls - 1], lines, isClosed=False, color=1, thickness=thickness, lineType=cv2.LINE_8)
    return masks.astype(bool)


# ---------------------------------------------------------------------------------------------
# label PNGs that know what they were drawn from (shared by the P2ILF and L3D adapters)
# ---------------------------------------------------------------------------------------------

_STAMP_KEY = "fewlabel-landmarks"


def save_label_png(mask: np.ndarray, path: str | os.PathLike, stamp: Mapping[str, Any]) -> Path:
    """Write a class-index mask as an 8-bit grey PNG carrying ``stamp`` in a text chunk.

    ``stamp`` records what the mask was drawn from (source file size and modification time,
    thickness...), so :func:`label_png_is_current` can skip redrawing it. Written atomically
    (temporary file, then rename), parents created.

    Args:
        mask: ``(H, W)`` uint8 class indices.
        path: the PNG to write.
        stamp: JSON-serialisable mapping.

    Returns:
        ``path``.
    """
    path = Path(path)
    array = np.asarray(mask)
    if array.ndim != 2 or array.dtype != np.uint8:
        raise ValueError(f"mask must be (H, W) uint8, got {array.shape} {array.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text(_STAMP_KEY, json.dumps(dict(stamp), sort_keys=True))
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(tmp, format="PNG", pnginfo=info, compress_level=1)
    os.replace(tmp, path)
    return path


def label_png_is_current(path: str | os.PathLike, stamp: Mapping[str, Any]) -> bool:
    """Whether ``path`` exists and was written by :func:`save_label_png` with this ``stamp``.

    Only the PNG header and text chunks are read (no pixel decoding).
    """
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with Image.open(path) as im:
            written = im.info.get(_STAMP_KEY)
    except (OSError, ValueError):
        return False
    return written == json.dumps(dict(stamp), sort_keys=True)
