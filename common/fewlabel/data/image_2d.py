"""Reading 2D images (PNG / JPEG / TIFF / BMP) and writing 2D results, with checks that name the file at fault.

The reader and writer functions that :mod:`fewlabel.transforms.io` wraps as MONAI transforms (as
``monai.data.image_reader`` is to ``monai.transforms.io``):

- :func:`read_image_2d`: a file -> ``(H, W)`` / ``(H, W, C)`` array as stored, size checked from the
  header before decoding, NaN / Inf refused or replaced (:func:`check_finite`);
- :func:`frame_array`: the same checks for a frame already in memory;
- :func:`scale_to_unit` / :func:`unit_float_chw`: integer pixels -> float32 in [0, 1] (channel-last /
  channel-first);
- :func:`overlay_mask` and :func:`write_png`: the overlay picture of a mask and the atomic PNG writer,
  with :func:`mask_output_name` / :func:`overlay_output_name`, the one naming rule of 2D results.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fewlabel.data.files import atomic_write
from fewlabel.errors import DataError

__all__ = [
    "NONFINITE_POLICIES",
    "DEFAULT_MAX_PIXELS",
    "replace_nonfinite",
    "check_finite",
    "mask_output_name",
    "overlay_output_name",
    "read_image_2d",
    "scale_to_unit",
    "frame_array",
    "unit_float_chw",
    "overlay_mask",
    "write_png",
]

#: ``nonfinite`` values of :func:`read_image_2d`, :class:`fewlabel.transforms.LoadImage2D` and
#: :class:`fewlabel.transforms.CTWindow` (a bundle's ``--nonfinite``).
NONFINITE_POLICIES = ("error", "replace")
#: default ``max_pixels`` of :func:`read_image_2d` / :class:`fewlabel.transforms.LoadImage2D`: width x height
#: checked from the file's header before any pixel is decoded (50 megapixels: about 600 MB as float32 RGB)
DEFAULT_MAX_PIXELS = 50_000_000

# Pillow modes read as they are: grey (+ alpha), RGB (+ alpha) and single-channel 16/32-bit integer or float;
# every other mode (palette, CMYK, YCbCr, 1-bit, ...) is converted to RGB / RGBA / L first
_KEEP_MODES = {"L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "F"}
# Pillow's decompression-bomb guard is a process-wide setting; it is lifted (under this lock) only to read the
# header of an image over Pillow's own limit, so that our check can name its size
_PIL_LIMIT_LOCK = threading.Lock()


def replace_nonfinite(arr: np.ndarray) -> np.ndarray:
    """NaN -> 0, +Inf / -Inf -> the largest / smallest finite value of the image (1 / 0 when there is none)."""
    finite = arr[np.isfinite(arr)]
    hi, lo = (float(finite.max()), float(finite.min())) if finite.size else (1.0, 0.0)
    return np.nan_to_num(arr, nan=0.0, posinf=hi, neginf=lo)


def check_finite(arr: np.ndarray, source: str, nonfinite: str) -> np.ndarray:
    """Check an image array for NaN / Inf.

    Returns ``arr`` unchanged when it is not float or all finite; otherwise, with ``nonfinite="replace"``,
    the :func:`replace_nonfinite` copy.

    Raises:
        DataError: NaN / Inf found and ``nonfinite="error"``; names ``source``, the counts and the fix.
    """
    if arr.dtype.kind != "f" or np.isfinite(arr).all():
        return arr
    if nonfinite == "replace":
        return replace_nonfinite(arr)
    n_nan = int(np.isnan(arr).sum())
    raise DataError(
        f"image {source} contains {n_nan} NaN and {int((~np.isfinite(arr)).sum()) - n_nan} infinite value(s); fix or "
        "remove it from the datalist, or pass --nonfinite replace (NaN -> 0, infinities -> the image's finite range)."
    )


def mask_output_name(source: str | os.PathLike) -> str:
    """File name of the mask written for the input ``source``: ``<stem>_mask.png``.

    Used by :class:`fewlabel.transforms.SaveMask2Dd`; the one naming rule shared with
    :func:`fewlabel.data.list_images`, which refuses a folder where two inputs (``case1.png``,
    ``case1.jpg``) would write the same mask.
    """
    return f"{Path(os.fspath(source)).stem}_mask.png"


def overlay_output_name(source: str | os.PathLike) -> str:
    """File name of the overlay written for ``source``: ``<stem>_overlay.png`` (see :func:`mask_output_name`)."""
    return f"{Path(os.fspath(source)).stem}_overlay.png"


def _too_large(path: str, size: tuple[int, int], max_pixels: int) -> DataError:
    w, h = size
    return DataError(
        f"image {path} is {w}x{h} pixels ({w * h:,}), over the limit of {max_pixels:,} pixels (max_pixels) that "
        "keeps loading within memory. Resize the image (e.g. to a few thousand pixels a side), or raise the "
        "limit: --max_pixels <larger> (a key of every 2D bundle's inference.json; max_pixels of LoadImage2Dd), "
        "or None for no limit."
    )


def _open_header(path: str, max_pixels: int | None) -> Image.Image:
    """``Image.open`` (reads the header only) with ``max_pixels`` checked before any pixel is decoded."""
    try:
        im = Image.open(path)
    except Image.DecompressionBombError:
        with _PIL_LIMIT_LOCK:  # over Pillow's own guard: read the header again without it, to check our limit
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = old
    w, h = im.size
    if max_pixels is not None and w * h > max_pixels:
        im.close()
        raise _too_large(path, (w, h), max_pixels)
    if w < 1 or h < 1:
        im.close()
        raise DataError(f"image {path} has no pixels ({w}x{h}); re-export it or remove it from the input.")
    return im


def _read_error(path: str, e: Exception) -> DataError:
    """The reason a file could not be read, in words, with the fix."""
    if isinstance(e, PermissionError):
        return DataError(f"cannot read image {path}: permission denied. Make it readable (chmod +r) or remove it.")
    if isinstance(e, Image.UnidentifiedImageError):
        try:
            empty = os.path.getsize(path) == 0
        except OSError:
            empty = False
        what = "an empty file" if empty else "not an image file Pillow can read"
        return DataError(
            f"cannot read image {path}: it is {what} (PNG, JPEG, TIFF and BMP are read). The file is damaged or "
            "of another kind: re-export it, or remove it from the input folder / datalist."
        )
    if isinstance(e, MemoryError):
        return DataError(f"not enough memory to decode image {path}; resize it, or lower max_pixels to refuse it.")
    reason = "truncated" if "truncat" in str(e).lower() else "damaged"
    return DataError(
        f"cannot read image {path}: the file is {reason} ({type(e).__name__}: {e}). Re-export it, or remove it from "
        "the input folder / datalist."
    )


def read_image_2d(path: str | os.PathLike, nonfinite: str = "error",
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a PNG / JPEG / TIFF / BMP file into ``(H, W)`` or ``(H, W, C)`` (any dtype).

    Grey and grey + alpha stay ``(H, W)`` / ``(H, W, 2)``, RGB and RGBA ``(H, W, 3)`` / ``(H, W, 4)``;
    palette images become RGB (RGBA when the palette has transparency), CMYK / YCbCr RGB, 1-bit grey.

    Args:
        path: the image file.
        nonfinite: NaN / Inf pixels of a float image (TIFF): ``"error"`` (default) or
            ``"replace"`` (NaN -> 0, +Inf / -Inf -> the image's largest / smallest finite value).
        max_pixels: refuse images with more pixels (width x height, read from the header before any pixel
            is decoded), so a huge or malicious file cannot exhaust memory; ``None``: no limit.

    Raises:
        DataError: the file is missing, unreadable, truncated, not an image, over ``max_pixels``, or holds
            NaN/Inf (with ``nonfinite="error"``); the message names the file and the fix.
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
    if max_pixels is not None and (isinstance(max_pixels, bool) or int(max_pixels) < 1):
        raise ValueError(f"max_pixels must be a positive number of pixels or None, got {max_pixels!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DataError(f"{path} is a folder, not an image file. Point the datalist at the image files in it.")
    if not os.path.isfile(path):
        raise DataError(f"image file not found: {path}. Check dataset_dir and the datalist.")
    try:
        with _open_header(path, max_pixels) as im:
            im.load()
            if im.mode not in _KEEP_MODES:
                alpha = "A" in im.mode or (im.mode == "P" and "transparency" in im.info)
                im = im.convert("RGBA" if alpha else ("L" if im.mode == "1" else "RGB"))
            arr = np.asarray(im)
    except DataError:
        raise
    except Exception as e:  # Pillow raises many types on broken files (OSError, SyntaxError, struct.error, ...)
        raise _read_error(path, e) from e
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise DataError(f"cannot read image {path}: decoded to an array of shape {arr.shape}; re-export it.")
    return check_finite(arr, path, nonfinite)


def scale_to_unit(arr: np.ndarray) -> np.ndarray:
    """Integer images -> float32 in [0, 1] by their dtype's range; bool -> 0 / 1; float images kept (as float32).

    Any shape; the result has the shape of ``arr``.
    """
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype.kind in "ui":
        return arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    return arr.astype(np.float32)


def frame_array(frame: np.ndarray | torch.Tensor, nonfinite: str = "error") -> np.ndarray:
    """A frame in memory, ``(H, W)`` or channel-last ``(H, W, C)`` as image files and OpenCV give it.

    Returns it as a NumPy array (dtype kept), NaN / Inf handled by :func:`check_finite` with ``nonfinite``.

    Raises:
        DataError: another shape, ``C > 4``, no pixels, or NaN / Inf with ``nonfinite="error"``; names the
            frame's ``filename_or_obj`` (a MetaTensor's meta) or "in-memory frame".
    """
    source = str(getattr(frame, "meta", {}).get("filename_or_obj") or "in-memory frame")
    arr = frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] > 4) or arr.size == 0:
        raise DataError(f"{source}: a frame must be (H, W) or channel-last (H, W, C) with C <= 4, got shape "
                        f"{arr.shape}.")
    return check_finite(arr, source, nonfinite)


def unit_float_chw(arr: np.ndarray) -> np.ndarray:
    """``(H, W)`` / ``(H, W, C)`` -> contiguous ``(C, H, W)`` float32 in [0, 1] (see :func:`scale_to_unit`).

    One float32 allocation (cast straight into channel-first order, then scaled in place), so a large
    image costs its file's pixels plus one float32 copy.
    """
    chw = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    out = chw.astype(np.float32, order="C")
    if arr.dtype.kind in "ui" and arr.dtype != np.bool_:
        out /= float(np.iinfo(arr.dtype).max)
    return out


# colour of class k in overlays and colour-coded masks (class 0 is not drawn in overlays)
_PALETTE = np.array(
    [[0, 0, 0], [255, 64, 64], [64, 200, 64], [64, 128, 255], [255, 200, 0], [200, 64, 255], [0, 220, 220],
     [255, 128, 0], [128, 128, 128], [255, 128, 200]], dtype=np.uint8,
)


def overlay_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45,
                 palette: np.ndarray | None = None) -> np.ndarray:
    """Blend class colours over an image and outline each region.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)``, uint8 or float in [0, 1]; an alpha channel (``(H, W, 2)``,
            ``(H, W, 4)``) is dropped.
        mask: ``(H, W)`` class indices (0 = background, not drawn).
        alpha: opacity of the fill.
        palette: ``(K, 3)`` uint8 class colours; default a fixed palette of distinct colours.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    if image.ndim == 3 and image.shape[-1] in (2, 4):  # grey + alpha, RGBA: the alpha is not drawn
        image = image[..., :-1] if image.shape[-1] == 4 else image[..., 0]
    img = image.astype(np.float32)
    if img.max() <= 1.0:
        img = img * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    mask = mask.astype(np.int64)
    pal = _PALETTE if palette is None else np.asarray(palette, dtype=np.uint8)
    colours = pal[mask % len(pal)].astype(np.float32)
    fg = (mask > 0)[..., None]
    out = np.where(fg, (1 - alpha) * img + alpha * colours, img)
    # outline: pixels whose right or lower neighbour has another class
    edge = np.zeros(mask.shape, bool)
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:-1, :] |= mask[:-1, :] != mask[1:, :]
    edge &= mask > 0
    out[edge] = colours[edge]
    return np.clip(out, 0, 255).astype(np.uint8)



def write_png(picture: np.ndarray, path: str | os.PathLike) -> Path:
    """Write ``picture`` (``(H, W)`` or ``(H, W, 3)`` uint8) as a PNG, whole or not at all.

    Written through :func:`fewlabel.data.files.atomic_write`: a run killed mid-write leaves no
    half-written file that looks finished. Returns ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    with atomic_write(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
    return path
