"""Batches of frames with different sizes: pad each key to the batch's largest size, with its own value.

MONAI's ``pad_list_data_collate`` pads every key with one value. A segmentation batch needs two: the
image's pad is black (0) and the label's must be a value the loss ignores, or the padded border would
train as a class (m2caiSeg's class 0 is the black area outside the field of view, a real class).
:class:`PadCollate` pads with a value per key (MONAI ``SpatialPad``, at the end of each spatial axis,
as ``pad_list_data_collate(method="end")``) and then collates with MONAI's ``list_data_collate``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import list_data_collate
from monai.transforms import SpatialPad
from monai.utils import convert_to_dst_type

__all__ = ["PadCollate", "IGNORE_LABEL"]

#: Label value of padded pixels: the default ``ignore_index`` of :func:`fewlabel.losses.build_loss`.
IGNORE_LABEL = -1


class PadCollate:
    """Collate dict items whose arrays differ in spatial size, padding each to the batch's largest.

    Args:
        pad_values: pad value per key; keys not named get ``default_value``. Default
            ``{"label": IGNORE_LABEL}``: padded label pixels are left out of the loss.
        default_value: pad value of the other keys (images: 0, black).

    Called with a list of dicts (channel-first arrays ``(C, *spatial)``), it returns the batch
    :func:`monai.data.list_data_collate` makes of them, every array ``(B, C, *max_spatial)``. Items of
    one size pass unchanged; lists of dicts (from ``num_samples`` crops) are flattened first.
    """

    def __init__(self, pad_values: Mapping[str, float] | None = None, default_value: float = 0.0) -> None:
        self.pad_values = dict({"label": IGNORE_LABEL} if pad_values is None else pad_values)
        self.default_value = float(default_value)

    def __call__(self, batch: Sequence[Any]) -> Any:
        items = [x for b in batch for x in (b if isinstance(b, list) else [b])]
        if items and isinstance(items[0], Mapping):
            items = [dict(it) for it in items]
            for key in items[0]:
                arrays = [it.get(key) for it in items]
                if not all(isinstance(a, (torch.Tensor, np.ndarray)) and a.ndim >= 2 for a in arrays):
                    continue
                sizes = {tuple(a.shape[1:]) for a in arrays}
                if len(sizes) < 2:
                    continue
                largest = [max(s[i] for s in sizes) for i in range(len(next(iter(sizes))))]
                pad = SpatialPad(largest, method="end", value=self.pad_values.get(key, self.default_value))
                for it in items:  # same type out as in (a plain tensor stays plain: no metadata added)
                    it[key] = convert_to_dst_type(pad(it[key]), it[key])[0]
        return list_data_collate(items)

    def __repr__(self) -> str:
        return f"PadCollate(pad_values={self.pad_values}, default_value={self.default_value})"
