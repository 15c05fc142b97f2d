"""A placeholder label for items without one, so that labelled and unlabelled items collate together."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["PlaceholderLabeld"]


class PlaceholderLabeld(MapTransform):
    """Give an item without a label an all-zero ``(1, H, W)`` one of its image's size, so batches collate.

    Put it last in the preprocessing of a mixed dataset (after resizing). Items that have the
    key are unchanged. The placeholder is never learnt from: the item's ``is_labelled`` flag is 0.

    Args:
        keys: label key(s) to fill in.
        ref_key: the image key whose spatial size the placeholder takes.
    """

    def __init__(self, keys: KeysCollection = "label", ref_key: str = "image") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.ref_key = ref_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.keys:
            if key not in d:
                ref = d[self.ref_key]
                d[key] = torch.zeros_like(ref[:1], dtype=torch.float32)
        return d
