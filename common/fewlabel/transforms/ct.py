"""CT transforms: loading a volume, HU window-levelling, and keeping the middle axial slices.

PolyCL's input (Ward et al., MELBA 2025, section 4.2): window width 400 HU, level 40 HU, values
scaled 0 - 1, and only the middle 30 % of each scan's slices. A typical volume pipeline::

    Compose([
        LoadCTVolumed("image"), LoadCTVolumed("label", dtype=None),
        KeepMiddleSlicesd(["image", "label"], fraction=0.3),
        CTWindowd("image", width=400, level=40),
    ])

Volumes are channel-first ``(C, X, Y, Z)`` with the axial axis last, as
:func:`fewlabel.data.ct.load_ct_volume` returns them (see that module for the axis convention).
:class:`KeepMiddleSlices` is a MONAI crop: it updates the affine and records itself, so
``Invertd`` pads predictions back to the full scan.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import Crop, Cropd, MapTransform, Transform
from monai.utils import TransformBackends, convert_data_type, convert_to_dst_type

from fewlabel.arguments import as_bool, as_optional
from fewlabel.data.ct import UNEVEN_SPACING, as_ct_volume, load_ct_volume, middle_bounds
from fewlabel.errors import DataError
from fewlabel.data.image_2d import NONFINITE_POLICIES

__all__ = [
    "NotHUWarning",
    "NONFINITE_POLICIES",
    "CTWindow",
    "CTWindowd",
    "KeepMiddleSlices",
    "KeepMiddleSlicesd",
    "LoadCTVolume",
    "LoadCTVolumed",
    "LoadCTSlice",
    "LoadCTSliced",
]


class NotHUWarning(UserWarning):
    """A volume given to :class:`CTWindow` does not look like Hounsfield units."""


def _source(img: object) -> str:
    """The file a (Meta)Tensor came from, for messages."""
    meta = getattr(img, "meta", None)
    name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    if isinstance(name, (list, tuple)):
        name = name[0] if name else None
    return f"{name}" if name else "the input volume (no file name in its meta)"


class CTWindow(Transform):
    """Window-level a CT volume in HU and scale the window to [0, 1].

    ``out = clip((hu - (level - width / 2)) / width, 0, 1)``: ``level - width / 2`` and below map
    to 0, ``level`` to 0.5, ``level + width / 2`` and above to 1. The default (width 400, level
    40, i.e. -160 .. 240 HU) is PolyCL's abdominal soft-tissue window.

    Args:
        width: window width in HU (> 0).
        level: window centre in HU.
        nonfinite: NaN / +-Inf voxels: ``"error"`` (default) raises a
            :class:`~fewlabel.errors.DataError` naming the file (from the MetaTensor's
            ``filename_or_obj``) and counting them; ``"replace"`` sets NaN to ``fill_value`` HU
            (default -1000, air, so 0 after windowing), +Inf to 1 and -Inf to 0.
        fill_value: HU value for NaN voxels with ``nonfinite="replace"``.
        check_hu: warn (:class:`NotHUWarning`, never an error: the input may legitimately be
            odd) when the volume does not look like HU: all values within [0, 1] ("already
            normalised?") or no negative value at all (air is about -1000 HU; "is the DICOM
            Rescale Intercept applied?"). The warning names the file.

    Input: array or tensor of any shape (e.g. ``(1, X, Y, Z)`` or ``(1, H, W)``) in HU, any
    real dtype. Output: same shape and container type (MetaTensor meta kept), float32 in [0, 1].
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, width: float = 400.0, level: float = 40.0, nonfinite: str = "error",
                 fill_value: float = -1000.0, check_hu: bool = True) -> None:
        if not (math.isfinite(width) and width > 0):
            raise ValueError(f"width must be a positive number of HU, got {width!r}")
        if not math.isfinite(level):
            raise ValueError(f"level must be a finite number of HU, got {level!r}")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        if not math.isfinite(fill_value):
            raise ValueError(f"fill_value must be finite, got {fill_value!r}")
        self.width = float(width)
        self.level = float(level)
        self.nonfinite = nonfinite
        self.fill_value = float(fill_value)
        self.check_hu = check_hu

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_data_type(img, torch.Tensor, wrap_sequence=True)[0]
        if isinstance(x, MetaTensor):
            x = x.as_tensor()
        if not (x.is_floating_point() or x.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                                                     torch.bool)):
            raise DataError(f"{_source(img)}: cannot window a volume of dtype {x.dtype}; expected real HU values.")
        x = x.to(torch.float32) if x.dtype != torch.float64 else x
        if x.is_floating_point():
            finite = torch.isfinite(x)
            if not bool(finite.all()):
                n_nan = int(torch.isnan(x).sum())
                n_inf = int((~finite).sum()) - n_nan
                if self.nonfinite == "error":
                    raise DataError(
                        f"{_source(img)} holds {n_nan} NaN and {n_inf} infinite voxel(s) of {x.numel()}; "
                        "fix or remove the file, or pass --nonfinite replace (CTWindow(nonfinite='replace')) "
                        f"to set NaN to {self.fill_value:g} HU and clip infinities."
                    )
                x = torch.nan_to_num(x, nan=self.fill_value, posinf=self.level + self.width,
                                     neginf=self.level - self.width)
        if self.check_hu and x.numel():
            lo, hi = float(x.min()), float(x.max())
            if lo >= 0.0 and hi <= 1.0:
                warnings.warn(
                    f"{_source(img)} has values in [{lo:g}, {hi:g}]: it looks already normalised, not in HU; "
                    f"the {self.width:g}/{self.level:g} HU window will map it to about "
                    f"{(0.5 - self.level / self.width):.2f}. Window the raw HU volume instead.",
                    NotHUWarning, stacklevel=2,
                )
            elif lo >= 0.0:
                warnings.warn(
                    f"{_source(img)} has no negative values (min {lo:g}): CT in HU has air at about -1000. "
                    "If it is raw DICOM stored values, apply RescaleSlope / RescaleIntercept first.",
                    NotHUWarning, stacklevel=2,
                )
        lower = self.level - self.width / 2.0
        out = ((x - lower) / self.width).clamp_(0.0, 1.0).to(torch.float32)
        return convert_to_dst_type(out, img, dtype=torch.float32)[0]


class CTWindowd(MapTransform):
    """Dictionary-based twin of :class:`CTWindow` (apply it to the image key(s) only, not labels)."""

    backend = CTWindow.backend

    def __init__(self, keys: KeysCollection, width: float = 400.0, level: float = 40.0, nonfinite: str = "error",
                 fill_value: float = -1000.0, check_hu: bool = True, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, as_bool(allow_missing_keys, "allow_missing_keys"))
        self.window = CTWindow(width, level, nonfinite, fill_value, as_bool(check_hu, "check_hu"))

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.window(d[key])
        return d


class KeepMiddleSlices(Crop):
    """Keep the middle ``fraction`` of the slices along one spatial axis (default the last, axial one).

    The kept indices are :func:`fewlabel.data.ct.middle_slices` of that axis' size: count
    ``fraction * n`` rounded by ``rounding`` (at least 1), block centred, starting at
    ``(n - count) // 2``. It is a MONAI crop: the MetaTensor's affine is moved to the first kept
    slice, the crop is recorded, and :meth:`inverse` (``Invertd``) pads back with zeros.

    Args:
        fraction: share of slices kept, in (0, 1] (PolyCL: 0.3).
        axis: spatial axis to cut (channel excluded): -1 (default) is the last spatial axis,
            the axial one under :func:`~fewlabel.data.ct.load_ct_volume`'s convention.
        rounding: ``"half_up"`` (default), ``"floor"`` or ``"ceil"``.
        lazy: MONAI lazy resampling flag.

    Input ``(C, *spatial)`` array or tensor; output a tensor (MetaTensor when tracking meta)
    ``(C, ..., count, ...)``.
    """

    def __init__(self, fraction: float = 0.3, axis: int = -1, rounding: str = "half_up", lazy: bool = False) -> None:
        super().__init__(lazy=lazy)
        middle_bounds(1, fraction, rounding)  # validate
        self.fraction = float(fraction)
        self.axis = int(axis)
        self.rounding = rounding

    def slices_for(self, spatial_shape: Sequence[int], source: str = "the input volume") -> tuple[slice, ...]:
        """The crop of :meth:`__call__` for an image of ``spatial_shape``: one slice per spatial axis."""
        nd = len(spatial_shape)
        if not -nd <= self.axis < nd:
            raise ValueError(f"axis {self.axis} is out of range for {nd} spatial dimensions")
        ax = self.axis % nd
        n = int(spatial_shape[ax])
        if n < 1:
            raise DataError(f"{source} has no slices along spatial axis {ax} (shape {tuple(spatial_shape)}).")
        start, stop = middle_bounds(n, self.fraction, self.rounding)
        out = [slice(None)] * nd
        out[ax] = slice(start, stop)
        return tuple(out)

    def __call__(self, img: NdarrayOrTensor, lazy: bool | None = None) -> torch.Tensor:  # type: ignore[override]
        spatial = img.peek_pending_shape() if isinstance(img, MetaTensor) else img.shape[1:]
        return super().__call__(img, self.slices_for(spatial, _source(img)), lazy=lazy)  # type: ignore[arg-type]


class KeepMiddleSlicesd(Cropd):
    """Dictionary-based twin of :class:`KeepMiddleSlices`; every key is cut at the same indices.

    Raises:
        DataError: the keys differ in size along the axis (e.g. an image and a label of
            different scans); the message names their files.
    """

    def __init__(self, keys: KeysCollection, fraction: float = 0.3, axis: int = -1, rounding: str = "half_up",
                 allow_missing_keys: bool = False, lazy: bool = False) -> None:
        super().__init__(keys, KeepMiddleSlices(fraction, axis, rounding, lazy=lazy), allow_missing_keys, lazy=lazy)

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict[Hashable, torch.Tensor]:
        sizes = {}
        for key in self.key_iterator(dict(data)):
            img = data[key]
            spatial = img.peek_pending_shape() if isinstance(img, MetaTensor) else img.shape[1:]
            if not -len(spatial) <= self.cropper.axis < len(spatial):
                raise ValueError(
                    f"axis {self.cropper.axis} is out of range for key '{key}' of shape {tuple(img.shape)}")
            sizes[key] = int(spatial[self.cropper.axis])
        if len(set(sizes.values())) > 1:
            listing = ", ".join(f"{_source(data[k])} ('{k}') has {n}" for k, n in sizes.items())
            raise DataError(f"the volumes differ in slices along axis {self.cropper.axis}: {listing}. "
                            "Image and label must be the same scan.")
        return super().__call__(data, lazy=lazy)


class LoadCTVolume(Transform):
    """Transform form of :func:`fewlabel.data.ct.load_ct_volume`: path (NIfTI or DICOM folder) -> ``(1, X, Y, Z)``.

    A volume already in memory (a MetaTensor with an ``affine``, as MONAI Deploy's
    ``MonaiBundleInferenceOperator`` passes it) goes through :func:`fewlabel.data.ct.as_ct_volume`
    instead: same orientation and dtype, no file read.

    Args:
        axcodes: orientation (default ``"RAS"``: axial axis last, inferior -> superior); None keeps
            the stored order.
        dtype: output dtype (default float32, HU); ``None`` keeps the file's (use it for labels).
        uneven_spacing: a DICOM series with a missing slice or uneven slice spacing is refused
            (``"error"``, default) or interpolated onto an even grid (``"resample"``, recorded in
            the meta as ``resampled_slices``); see :func:`~fewlabel.data.ct.load_ct_volume`.
    """

    def __init__(self, axcodes: str | None = "RAS", dtype: np.dtype | type | None = np.float32,
                 uneven_spacing: str = "error") -> None:
        if uneven_spacing not in UNEVEN_SPACING:
            raise ValueError(f"uneven_spacing must be one of {UNEVEN_SPACING}, got {uneven_spacing!r}")
        self.axcodes = axcodes
        self.dtype = dtype
        self.uneven_spacing = uneven_spacing

    def __call__(self, path: str | os.PathLike | MetaTensor) -> MetaTensor:
        if isinstance(path, MetaTensor):  # already read (e.g. by MONAI Deploy's DICOMSeriesToVolumeOperator)
            return as_ct_volume(path, axcodes=self.axcodes, dtype=self.dtype)
        return load_ct_volume(path, axcodes=self.axcodes, dtype=self.dtype, uneven_spacing=self.uneven_spacing)


class LoadCTVolumed(MapTransform):
    """Dictionary-based twin of :class:`LoadCTVolume`."""

    def __init__(self, keys: KeysCollection, axcodes: str | None = "RAS", dtype: np.dtype | type | None = np.float32,
                 allow_missing_keys: bool = False, uneven_spacing: str = "error") -> None:
        super().__init__(keys, as_bool(allow_missing_keys, "allow_missing_keys"))
        self.loader = LoadCTVolume(as_optional(axcodes, "axcodes"), as_optional(dtype, "dtype"), uneven_spacing)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])  # type: ignore[arg-type]
        return d


class LoadCTSlice(Transform):
    """Read one slice of a slice stack written by :func:`fewlabel.data.ct_slices.cache_ct_slices`.

    ``__call__(path, index)`` memory-maps the ``(Z, H, W)`` ``.npy`` stack and returns slice
    ``index`` as a ``(1, H, W)`` float32 :class:`~monai.data.MetaTensor` (HU for image stacks,
    0 / 1 for organ masks), with ``filename_or_obj`` ``"<stack>#<index>"`` in its meta.

    Raises:
        DataError: the stack is missing, unreadable or truncated, or ``index`` is out of range
            (the message names the stack and says to delete it so that it is rebuilt).
    """

    def __call__(self, path: str | os.PathLike, index: int) -> MetaTensor:
        try:
            stack = np.load(os.fspath(path), mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read the slice stack {path}: {e}. Delete it (and its .json) to have it "
                            "rebuilt from the CT volume.") from e
        if stack.ndim != 3 or not 0 <= int(index) < stack.shape[0]:
            raise DataError(f"slice stack {path} has shape {stack.shape}; slice {index} is not in it. Delete the "
                            "stack to have it rebuilt.")
        arr = np.array(stack[int(index)], dtype=np.float32)[None]
        return MetaTensor(torch.from_numpy(arr), meta={"filename_or_obj": f"{os.fspath(path)}#{int(index)}"})


class LoadCTSliced(MapTransform):
    """Dictionary-based twin of :class:`LoadCTSlice`: replace each key's stack path by its slice ``data[index_key]``.

    Use ``keys=["image", "label"]`` on the records of :func:`~fewlabel.data.ct_slices.cache_ct_slices`
    (``allow_missing_keys=True`` for unlabelled slices).
    """

    def __init__(self, keys: KeysCollection, index_key: str = "index", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, as_bool(allow_missing_keys, "allow_missing_keys"))
        self.index_key = index_key
        self.loader = LoadCTSlice()

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key], int(d[self.index_key]))  # type: ignore[arg-type]
        return d
