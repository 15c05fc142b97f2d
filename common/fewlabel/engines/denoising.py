"""Masked denoising pre-training (SurgicalSemiSeg) as a MONAI ``prepare_batch``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.engines.utils import PrepareBatch

__all__ = ["DenoisingPairs"]


class DenoisingPairs(PrepareBatch):
    """``prepare_batch`` returning ``(corrupted images, clean images)``, corrupted on the device.

    The batch's images move to ``device`` and ``corruption`` (e.g.
    :class:`fewlabel.transforms.masking.MaskCorruption`, a callable ``(B, C, H, W) -> (corrupted,
    masks)``) is applied there, one mask per image; the network then learns to predict the clean
    image (equation 1 of the SurgicalSemiSeg paper, with an MSE loss over all pixels).

    Args:
        corruption: the corruption callable.
        image_key: key of the images in the batch dict.
    """

    def __init__(self, corruption: Any, image_key: str = "image") -> None:
        self.corruption = corruption
        self.image_key = image_key

    def __call__(
        self, batchdata: Mapping[str, torch.Tensor], device: str | torch.device | None = None,
        non_blocking: bool = False, **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        clean = batchdata[self.image_key].to(device=device, non_blocking=non_blocking, **kwargs)
        with torch.no_grad():
            corrupted, _ = self.corruption(clean)
        return corrupted, clean
