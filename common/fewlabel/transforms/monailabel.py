"""The last post-processing step of a bundle served by MONAI Label (``configs/monailabel_inference.json``).

MONAI Label's bundle task runs a bundle's ``postprocessing`` (minus ``SaveImaged``), appends its own
``Restored`` step and writes ``pred`` with ITK. Both expect MONAI's image convention, which the
bundles here do not use for 2D frames:

- a 2D label map is ``(x, y)``, that is ``(W, H)``: the writer transposes it before writing, and
  ``Restored`` compares its size with the image meta's ``spatial_shape`` in that order (and
  resizes when they differ);
- a 3D label map lies in the voxel order of the file, and is written with the file's affine
  (``original_affine``);
- the writer keeps the array's dtype, and PNG takes only ``uint8`` / ``uint16``.

:class:`MonaiLabelOutput` turns a bundle's class-index map (``(1, H, W)`` for frames, ``(1, X, Y, Z)``
in RAS order for CT volumes, see :func:`~fewlabel.data.ct.load_ct_volume`) into that, so the label
file MONAI Label returns is the map ``python -m monai.bundle run`` computes (before its saver).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Resize, Transform

from fewlabel.data.segmentation_writers import restore_original_orientation

__all__ = ["MonaiLabelOutput", "MonaiLabelOutputd"]

_DTYPES = ("uint8", "uint16")  # what ITK writes to PNG as well as NIfTI


def _numpy(t: torch.Tensor) -> np.ndarray:
    return (t.as_tensor() if isinstance(t, MetaTensor) else t).detach().cpu().numpy()


class MonaiLabelOutput(Transform):
    """Turn a class-index map into the array MONAI Label's writer expects.

    Args:
        dtype: ``"uint8"`` (up to 255 classes) or ``"uint16"``.

    Call with ``pred``: ``(1, H, W)`` (2D) or ``(1, X, Y, Z)`` (3D) class indices, float or int. A 2D
    map at another size than ``spatial_size`` (the image's ``(H, W)``; a bundle without ``Invertd``,
    such as SLiPPA) is resized to it by nearest neighbour, as MONAI Label's ``Restored`` would. A 3D
    map must carry the geometry of the loaded volume (``affine``, ``original_affine``): as a
    MetaTensor after ``Invertd``, or through ``reference`` (the loaded volume or its meta).

    Returns:
        numpy array of ``dtype``: 2D ``(W, H)``; 3D ``(1, X', Y', Z')`` in the file's voxel order
        (MONAI Label writes it with the volume's ``original_affine``).

    Raises:
        ValueError: ``pred`` is not ``(1, H, W)`` / ``(1, X, Y, Z)``, holds values that are not whole
            numbers in ``[0, max of dtype]``, or (3D) carries no geometry or does not fit it.
    """

    def __init__(self, dtype: str = "uint8") -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
        self.dtype = dtype

    def _check_values(self, t: torch.Tensor) -> None:
        if t.numel() == 0:
            return
        top = np.iinfo(np.dtype(self.dtype)).max
        lo, hi = float(t.min()), float(t.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > top or bool((t != t.round()).any()):
            raise ValueError(
                f"the prediction is not a class-index map for {self.dtype} (values {lo:g} .. {hi:g}): "
                "MonaiLabelOutput must come after the bundle's argmax / threshold step."
            )

    def __call__(self, pred: torch.Tensor | np.ndarray, spatial_size: Sequence[int] | None = None) -> np.ndarray:
        t = pred if isinstance(pred, torch.Tensor) else torch.as_tensor(np.asarray(pred))
        if t.ndim not in (3, 4) or t.shape[0] != 1:
            raise ValueError(f"expected a (1, H, W) or (1, X, Y, Z) class-index map, got shape {tuple(t.shape)}.")
        if t.dtype == torch.bool:
            t = t.to(torch.uint8)
        self._check_values(t)
        if t.ndim == 3:
            if spatial_size is not None and tuple(int(s) for s in spatial_size) != tuple(t.shape[1:]):
                t = Resize([int(s) for s in spatial_size], mode="nearest")(t.to(torch.float32))
            return np.ascontiguousarray(_numpy(t[0]).T).astype(self.dtype)
        return np.ascontiguousarray(_numpy(restore_original_orientation(t))).astype(self.dtype)


class MonaiLabelOutputd(MapTransform):
    """Dictionary-based twin of :class:`MonaiLabelOutput`.

    For 2D the map is brought to the image's original size (its meta ``spatial_shape``), and that
    ``spatial_shape`` is then stated as ``(W, H)``, the order in which MONAI Label's ``Restored``
    compares it with the prediction (otherwise it would resize the map). A 3D prediction takes its
    geometry from its own meta (keep ``Invertd`` before this step).

    Args:
        keys: the prediction key(s), usually ``"pred"``.
        ref_key: the image key whose meta ``Restored`` reads.
        dtype: see :class:`MonaiLabelOutput`.
    """

    def __init__(self, keys: KeysCollection = "pred", ref_key: str = "image", dtype: str = "uint8",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key
        self.converter = MonaiLabelOutput(dtype)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref = d.get(self.ref_key)
        size = None
        if isinstance(ref, MetaTensor) and ref.meta.get("spatial_shape") is not None:
            size = [int(s) for s in np.asarray(ref.meta["spatial_shape"]).reshape(-1)]
        for key in self.key_iterator(d):
            is_2d = getattr(d[key], "ndim", 0) == 3
            d[key] = self.converter(d[key], spatial_size=size if is_2d and size and len(size) == 2 else None)
            if is_2d and isinstance(ref, MetaTensor):
                ref.meta["spatial_shape"] = np.asarray(d[key].shape)
        return d
