"""Loading and saving 2D images and label maps with checks that name the file at fault.

Arrays are channel-first in natural order: ``(C, H, W)`` (row = y, column = x), returned as
:class:`monai.data.MetaTensor` with ``filename_or_obj`` and ``spatial_shape`` in their meta, so
MONAI's spatial transforms record themselves and ``Invertd`` can map predictions back to the
original size.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from PIL import Image

from fewlabel.arguments import as_bool
from fewlabel.data.files import atomic_write
from fewlabel.errors import DataError

__all__ = [
    "CHANNEL_POLICIES",
    "NONFINITE_POLICIES",
    "DEFAULT_MAX_PIXELS",
    "mask_output_name",
    "overlay_output_name",
    "read_image_2d",
    "LoadImage2D",
    "LoadImage2Dd",
    "LoadLabel2D",
    "LoadLabel2Dd",
    "CheckSameSize2Dd",
    "SaveMask2Dd",
    "overlay_mask",
]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

#: ``channel_policy`` values of :class:`LoadImage2D` (a bundle's ``--channel_policy``).
CHANNEL_POLICIES = ("error", "convert")
#: ``nonfinite`` values of :class:`LoadImage2D` and :class:`fewlabel.transforms.CTWindow` (a bundle's ``--nonfinite``).
NONFINITE_POLICIES = ("error", "replace")
#: default ``max_pixels`` of :func:`read_image_2d` / :class:`LoadImage2D`: width x height checked from the file's
#: header before any pixel is decoded (50 megapixels: about 600 MB as float32 RGB)
DEFAULT_MAX_PIXELS = 50_000_000

# Pillow modes read as they are: grey (+ alpha), RGB (+ alpha) and single-channel 16/32-bit integer or float;
# every other mode (palette, CMYK, YCbCr, 1-bit, ...) is converted to RGB / RGBA / L first
_KEEP_MODES = {"L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "F"}
# Pillow's decompression-bomb guard is a process-wide setting; it is lifted (under this lock) only to read the
# header of an image over Pillow's own limit, so that our check can name its size
_PIL_LIMIT_LOCK = threading.Lock()


def _replace_nonfinite(arr: np.ndarray) -> np.ndarray:
    """NaN -> 0, +Inf / -Inf -> the largest / smallest finite value of the image (1 / 0 when there is none)."""
    finite = arr[np.isfinite(arr)]
    hi, lo = (float(finite.max()), float(finite.min())) if finite.size else (1.0, 0.0)
    return np.nan_to_num(arr, nan=0.0, posinf=hi, neginf=lo)


def _check_finite(arr: np.ndarray, source: str, nonfinite: str) -> np.ndarray:
    if arr.dtype.kind != "f" or np.isfinite(arr).all():
        return arr
    if nonfinite == "replace":
        return _replace_nonfinite(arr)
    n_nan = int(np.isnan(arr).sum())
    raise DataError(
        f"image {source} contains {n_nan} NaN and {int((~np.isfinite(arr)).sum()) - n_nan} infinite value(s); fix or "
        "remove it from the datalist, or pass --nonfinite replace (NaN -> 0, infinities -> the image's finite range)."
    )


def mask_output_name(source: str | os.PathLike) -> str:
    """File name of the mask :class:`SaveMask2Dd` writes for the input ``source``: ``<stem>_mask.png``.

    The one naming rule shared with :func:`fewlabel.data.list_images`, which refuses a folder where two
    inputs (``case1.png``, ``case1.jpg``) would write the same mask.
    """
    return f"{Path(os.fspath(source)).stem}_mask.png"


def overlay_output_name(source: str | os.PathLike) -> str:
    """File name of the overlay :class:`SaveMask2Dd` writes for the input ``source``: ``<stem>_overlay.png``."""
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
    return _check_finite(arr, path, nonfinite)


def _scale_to_unit(arr: np.ndarray) -> np.ndarray:
    """Integer images -> [0, 1] by their dtype's range; float images kept as they are."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype.kind in "ui":
        return arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    return arr.astype(np.float32)


def _frame_array(frame: np.ndarray | torch.Tensor, nonfinite: str = "error") -> np.ndarray:
    """A frame in memory, ``(H, W)`` or channel-last ``(H, W, C)`` as image files and OpenCV give it."""
    source = str(getattr(frame, "meta", {}).get("filename_or_obj") or "in-memory frame")
    arr = frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] > 4) or arr.size == 0:
        raise DataError(f"{source}: a frame must be (H, W) or channel-last (H, W, C) with C <= 4, got shape "
                        f"{arr.shape}.")
    return _check_finite(arr, source, nonfinite)


def _unit_float_chw(arr: np.ndarray) -> np.ndarray:
    """``(H, W)`` / ``(H, W, C)`` -> contiguous ``(C, H, W)`` float32 in [0, 1] (see :func:`_scale_to_unit`).

    One float32 allocation (cast straight into channel-first order, then scaled in place), so a large
    image costs its file's pixels plus one float32 copy.
    """
    chw = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    out = chw.astype(np.float32, order="C")
    if arr.dtype.kind in "ui" and arr.dtype != np.bool_:
        out /= float(np.iinfo(arr.dtype).max)
    return out


class LoadImage2D(Transform):
    """Load a 2D image as ``(channels, H, W)`` float32 in [0, 1] (integer files scaled by their dtype).

    Args:
        channels: channels the network expects: 1 (grayscale) or 3 (RGB).
        channel_policy: what to do when the file has other channels: ``"error"`` (default: a
            :class:`~fewlabel.errors.DataError` naming the file) or ``"convert"`` (gray is
            repeated to RGB, RGB is turned to BT.601 luma). An alpha channel is always dropped
            first: grey + alpha counts as grayscale, RGBA (and palette images with transparency) as RGB.
            Every 2D bundle exposes it as ``--channel_policy`` (with ``--image_channels``).
        nonfinite: NaN / Inf pixels of a float image: ``"error"`` (default, naming the file) or
            ``"replace"`` (see :func:`read_image_2d`); a bundle's ``--nonfinite``.
        max_pixels: refuse files with more pixels (width x height, checked from the header before
            decoding) with a :class:`~fewlabel.errors.DataError` naming the file, its size and the fix;
            default :data:`DEFAULT_MAX_PIXELS` (50 megapixels), ``None``: no limit. Frames already in
            memory are not checked.

    The input is a file path, or a frame already in memory: an ``(H, W)`` / channel-last
    ``(H, W, C)`` array or tensor (a MetaTensor's ``filename_or_obj`` is kept), scaled the same way.

    Returns a :class:`~monai.data.MetaTensor` whose meta holds ``filename_or_obj`` and ``spatial_shape``.
    """

    def __init__(self, channels: int = 3, channel_policy: str = "error", nonfinite: str = "error",
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels (image_channels) must be 1 or 3, got {channels}")
        if channel_policy not in CHANNEL_POLICIES:
            raise ValueError(f"channel_policy must be one of {CHANNEL_POLICIES}, got '{channel_policy}'")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got '{nonfinite}'")
        if max_pixels is not None and (isinstance(max_pixels, bool) or int(max_pixels) < 1):
            raise ValueError(f"max_pixels must be a positive number of pixels or None, got {max_pixels!r}")
        self.channels = channels
        self.channel_policy = channel_policy
        self.nonfinite = nonfinite
        self.max_pixels = None if max_pixels is None else int(max_pixels)

    def __call__(self, path: str | os.PathLike | np.ndarray | torch.Tensor) -> MetaTensor:
        if isinstance(path, (np.ndarray, torch.Tensor)):  # a frame in memory (video, MONAI Deploy)
            arr = _frame_array(path, self.nonfinite)
            path = str(getattr(path, "meta", {}).get("filename_or_obj") or "in-memory frame")
        else:
            arr = read_image_2d(path, self.nonfinite, self.max_pixels)
        if arr.ndim == 3 and arr.shape[-1] in (2, 4):  # drop alpha: grey + alpha is grey, RGBA is RGB
            arr = arr[..., :-1] if arr.shape[-1] == 4 else arr[..., 0]
        have = 1 if arr.ndim == 2 else arr.shape[-1]
        if have != self.channels:
            if self.channel_policy == "error":
                kind = {1: "grayscale", 3: "RGB"}.get(have, f"{have}-channel")
                want = {1: "grayscale", 3: "RGB"}[self.channels]
                raise DataError(
                    f"{path} is a {kind} image but this bundle expects {want} input ({self.channels} channels). "
                    f"Convert the file, or pass --channel_policy convert (channel_policy='convert': "
                    f"{'gray repeated to RGB' if have == 1 else 'RGB to luma'}), or train with "
                    f"--image_channels {have} instead."
                )
            if have == 1:
                arr = np.broadcast_to(arr[..., None], arr.shape + (3,))
            else:
                arr = _scale_to_unit(arr[..., :3]) @ _LUMA
        chw = _unit_float_chw(arr)
        meta = {"filename_or_obj": os.fspath(path), "spatial_shape": np.array(chw.shape[1:])}
        return MetaTensor(torch.from_numpy(chw), meta=meta)


class LoadLabel2D(Transform):
    """Load a 2D label map as ``(1, H, W)`` float32 class indices.

    Args:
        num_classes: valid indices are ``0 .. num_classes - 1``; other values raise a
            :class:`~fewlabel.errors.DataError` naming the file and the values found.
        binary: map every non-zero value to 1 (for 0/255 masks); RGB masks are reduced to
            "any channel non-zero".
        max_pixels: refuse larger files (see :class:`LoadImage2D`).

    An alpha channel (grey + alpha, RGBA) is dropped: it holds no class.
    """

    def __init__(self, num_classes: int = 2, binary: bool = False,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.num_classes = num_classes
        self.binary = binary
        self.max_pixels = max_pixels

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        arr = read_image_2d(path, max_pixels=self.max_pixels)
        if arr.ndim == 3 and arr.shape[-1] in (2, 4):  # an alpha channel holds no class
            arr = arr[..., :-1] if arr.shape[-1] == 4 else arr[..., 0]
        if arr.ndim == 3:
            if not self.binary:
                raise DataError(
                    f"label map {path} has {arr.shape[-1]} channels; expected a single-channel map of class indices "
                    "(colour-coded masks need a class table: see `fewlabel datalist`)."
                )
            arr = arr.any(axis=-1)
        if self.binary:
            arr = arr > 0
        arr = arr.astype(np.float32)
        if arr.size and (arr.max() >= self.num_classes or arr.min() < 0 or (arr != np.round(arr)).any()):
            found = np.unique(arr)[:10].tolist()
            raise DataError(
                f"label map {path} has values {found} outside the classes 0..{self.num_classes - 1}. "
                "Check the class table, or use binary=True for 0/255 masks."
            )
        meta = {"filename_or_obj": os.fspath(path), "spatial_shape": np.array(arr.shape)}
        return MetaTensor(torch.from_numpy(arr[None]), meta=meta)


class _LoadD(MapTransform):
    def __init__(self, keys: KeysCollection, loader: Transform, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, as_bool(allow_missing_keys, "allow_missing_keys"))
        self.loader = loader

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


class LoadImage2Dd(_LoadD):
    """Dictionary-based twin of :class:`LoadImage2D` (same arguments, ``max_pixels`` included)."""

    def __init__(self, keys: KeysCollection, channels: int = 3, channel_policy: str = "error",
                 nonfinite: str = "error", allow_missing_keys: bool = False,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        super().__init__(keys, LoadImage2D(channels, channel_policy, nonfinite, max_pixels), allow_missing_keys)


class LoadLabel2Dd(_LoadD):
    """Dictionary-based twin of :class:`LoadLabel2D`."""

    def __init__(self, keys: KeysCollection, num_classes: int = 2, binary: bool = False,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, LoadLabel2D(num_classes, as_bool(binary, "binary")), allow_missing_keys)


class CheckSameSize2Dd(MapTransform):
    """Raise a :class:`~fewlabel.errors.DataError` naming both files when the keys' spatial sizes differ."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, as_bool(allow_missing_keys, "allow_missing_keys"))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        shapes = {k: tuple(d[k].shape[-2:]) for k in keys}
        if len(set(shapes.values())) > 1:
            names = {k: getattr(d[k], "meta", {}).get("filename_or_obj", k) for k in keys}
            listing = ", ".join(f"{names[k]} is {shapes[k][0]}x{shapes[k][1]}" for k in keys)
            raise DataError(f"image and label sizes differ: {listing}. Re-export the label at the image's size.")
        return d


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


class SaveMask2Dd(MapTransform):
    """Write a predicted ``(1, H, W)`` class map as ``<stem>_mask.png`` and an overlay ``<stem>_overlay.png``.

    Both files are named by :func:`mask_output_name` / :func:`overlay_output_name` and written through
    :func:`fewlabel.data.files.atomic_write` (a killed run leaves no half-written file that looks finished).
    The mask PNG holds class indices, scaled by ``255 // (num_classes - 1)`` so a binary mask is
    0/255 and visible in any viewer (``scale=False`` keeps raw indices); with ``palette`` it is an
    RGB picture with each class in its colour (a dataset's colour code). The overlay is drawn on
    the original image file (read from the prediction's ``filename_or_obj`` meta), so the
    prediction must already be at the original size (use ``Invertd`` before this).

    Args:
        keys: prediction key(s).
        output_dir: folder for the PNGs (created).
        num_classes: number of classes including background.
        overlay: also write the overlay picture.
        scale: scale indices for viewing (see above).
        palette: optional ``(num_classes, 3)`` RGB colours: writes colour-coded masks and uses
            them in the overlay.
    """

    def __init__(self, keys: KeysCollection, output_dir: str | os.PathLike, num_classes: int = 2,
                 overlay: bool = True, scale: bool = True, palette: list[list[int]] | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.num_classes = num_classes
        self.overlay = overlay
        self.scale = scale
        self.palette = None if palette is None else np.asarray(palette, dtype=np.uint8)
        if self.palette is not None and self.palette.shape != (num_classes, 3):
            raise ValueError(f"palette must have {num_classes} RGB colours, got shape {self.palette.shape}")

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for key in self.key_iterator(d):
            pred = d[key]
            src = getattr(pred, "meta", {}).get("filename_or_obj")
            if isinstance(src, (list, tuple)):
                src = src[0]
            source = str(src) if src else f"{key}_{id(pred)}"
            mask = np.asarray(torch.as_tensor(pred).detach().cpu()).reshape(pred.shape[-2:]).round().astype(np.uint8)
            if self.palette is not None:
                picture = self.palette[np.minimum(mask, self.num_classes - 1)]
            else:
                factor = 255 // max(self.num_classes - 1, 1) if self.scale else 1
                picture = (mask * factor).astype(np.uint8)
            self._write_png(picture, self.output_dir / mask_output_name(source))
            if self.overlay and src and os.path.isfile(str(src)):
                # drawing only: the loader checked the file (and its size)
                image = read_image_2d(str(src), nonfinite="replace", max_pixels=None)
                if image.ndim == 3 and image.shape[-1] in (2, 4):
                    image = image[..., :-1] if image.shape[-1] == 4 else image[..., 0]
                if image.shape[:2] == mask.shape:
                    img01 = _scale_to_unit(image)
                    self._write_png(overlay_mask(img01, mask, palette=self.palette),
                                    self.output_dir / overlay_output_name(source))
        return d

    @staticmethod
    def _write_png(picture: np.ndarray, path: Path) -> None:
        """Write whole or not at all: a run killed mid-write leaves no half-written result."""
        with atomic_write(path) as tmp:
            Image.fromarray(picture).save(tmp, format="PNG")
