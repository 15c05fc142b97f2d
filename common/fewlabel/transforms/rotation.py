"""Random rotation whose new corners get a chosen value per key (e.g. the background class).

MONAI's :class:`~monai.transforms.RandRotated` fills the area a rotation brings into the frame
with zeros (``padding_mode="zeros"``). For an image that is black, right for a laparoscopic frame
whose outside of the circular field of view is black. For a label map it is class 0, which is
background only when the class table puts background first: the SurgicalSemiSeg in-house table
(``fewlabel/data/class_tables/surgical_semiseg_inhouse.json``, the paper's Table 3 order) has
``abdominal wall`` at 0 and ``background`` at 1, so zero padding would teach the network that the
black corners are abdominal wall. :class:`RandRotateFilld` rotates ``x - fill`` and adds ``fill``
back, so the new corners are ``fill`` and every other value is unchanged (nearest interpolation)
or interpolated exactly as before (bilinear: interpolation is affine, and the weights sum to 1).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import RandRotated

__all__ = ["RandRotateFilld", "background_index"]


def background_index(class_names: Sequence[str], name: str = "background") -> int:
    """Index of the background class in ``class_names`` (0 when no class is called ``name``).

    Args:
        class_names: the bundle's classes in label-index order.
        name: the background class's name (compared case-insensitively).
    """
    lowered = [str(c).strip().lower() for c in class_names]
    return lowered.index(name.lower()) if name.lower() in lowered else 0


class RandRotateFilld(RandRotated):
    """:class:`monai.transforms.RandRotated` with a fill value per key for the area rotated in.

    Args:
        keys: keys of the ``(C, H, W)`` arrays to rotate (one shared random angle).
        fill: value of the new corners, one per key or one for all (e.g. ``[0, background_label]``
            for ``["image", "label"]``); 0 gives MONAI's zero padding.
        kwargs: :class:`~monai.transforms.RandRotated` arguments (``range_x``, ``prob``, ``mode``,
            ``allow_missing_keys``, ...). ``padding_mode`` must be ``"zeros"``, which the fill is
            built on; it is the default here (MONAI's own default is ``"border"``).

    Raises:
        ValueError: a ``padding_mode`` other than ``"zeros"``, or ``fill`` of the wrong length.
    """

    def __init__(self, keys: KeysCollection, fill: float | Sequence[float] = 0.0, **kwargs: Any) -> None:
        padding = kwargs.setdefault("padding_mode", "zeros")
        modes = padding if isinstance(padding, (list, tuple)) else [padding]
        if any(str(getattr(m, "value", m)) != "zeros" for m in modes):
            raise ValueError(f"RandRotateFilld needs padding_mode 'zeros' (the fill is built on it), got {padding!r}")
        super().__init__(keys, **kwargs)
        values = [fill] * len(self.keys) if isinstance(fill, (int, float)) else list(fill)
        if len(values) != len(self.keys):
            raise ValueError(f"fill has {len(values)} values for {len(self.keys)} keys {list(self.keys)}")
        self.fill = {k: float(v) for k, v in zip(self.keys, values)}

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        shifted = [k for k, v in self.fill.items() if v != 0.0 and k in d]
        for k in shifted:
            d[k] = d[k] - self.fill[k]
        out = super().__call__(d, lazy=lazy)
        for k in shifted:
            out[k] = out[k] + self.fill[k]
        return out
