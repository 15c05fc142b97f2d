"""MONAI transforms loading and saving 2D images and label maps, with checks that name the file at fault.

They wrap the readers and writers of :mod:`fewlabel.data.image_2d` (as ``monai.transforms.io`` wraps
``monai.data.image_reader``); the names moved there (``read_image_2d``, ``overlay_mask``,
``mask_output_name``, ...) are still importable from here.

Arrays are channel-first in natural order: ``(C, H, W)`` (row = y, column = x), returned as
:class:`monai.data.MetaTensor` with ``filename_or_obj`` and ``spatial_shape`` in their meta, so
MONAI's spatial transforms record themselves and ``Invertd`` can map predictions back to the
original size.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from fewlabel.arguments import as_bool
from fewlabel.data.image_2d import (
    DEFAULT_MAX_PIXELS,
    NONFINITE_POLICIES,
    frame_array,
    mask_output_name,
    overlay_mask,
    overlay_output_name,
    read_image_2d,
    scale_to_unit,
    unit_float_chw,
    write_png,
)
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
            arr = frame_array(path, self.nonfinite)
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
                arr = scale_to_unit(arr[..., :3]) @ _LUMA
        chw = unit_float_chw(arr)
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


class SaveMask2Dd(MapTransform):
    """Write a predicted ``(1, H, W)`` class map as ``<stem>_mask.png`` and an overlay ``<stem>_overlay.png``.

    Both files are named by :func:`mask_output_name` / :func:`overlay_output_name` and written by
    :func:`fewlabel.data.image_2d.write_png` (a killed run leaves no half-written file that looks finished).
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
            write_png(picture, self.output_dir / mask_output_name(source))
            if self.overlay and src and os.path.isfile(str(src)):
                # drawing only: the loader checked the file (and its size)
                image = read_image_2d(str(src), nonfinite="replace", max_pixels=None)
                if image.ndim == 3 and image.shape[-1] in (2, 4):
                    image = image[..., :-1] if image.shape[-1] == 4 else image[..., 0]
                if image.shape[:2] == mask.shape:
                    img01 = scale_to_unit(image)
                    write_png(overlay_mask(img01, mask, palette=self.palette),
                              self.output_dir / overlay_output_name(source))
        return d
