"""Pseudo-labels computed on the training device, as a MONAI ``prepare_batch``.

:class:`ThresholdPseudoLabels` is MedSASS's self-supervision: the batch's images move to the
device, each gets a per-image threshold (Otsu by default, batched), and the binary map replaces
the label. Images without a usable split (constant images) get ``ignore_index`` everywhere, so
losses from :mod:`fewlabel.losses` leave them out; they are counted and logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.engines.utils import PrepareBatch

from fewlabel.handlers.pseudo_label_stats import PseudoLabelStatsHandler
from fewlabel.transforms.threshold import threshold_masks

__all__ = ["ThresholdPseudoLabels", "PseudoLabelStatsHandler"]

class ThresholdPseudoLabels(PrepareBatch):
    """``prepare_batch`` that returns ``(images, threshold masks)`` computed on ``device``.

    Args:
        method: thresholding method (:data:`fewlabel.transforms.threshold.METHODS`), default Otsu.
        polarity: ``"bright"`` (paper), ``"dark"`` or ``"minority"``; see :func:`threshold_masks`.
        min_range: grayscale range below which an image counts as constant (images in [0, 1]).
        ignore_index: value written into the targets of invalid images; ``None`` keeps their
            all-zero mask (e.g. for a validation metric against the pseudo-labels).
        image_key: key of the images in the batch dict.
        method_kwargs: extra arguments of the method (GHT's ``nu``..., adaptive ``block_size``...).

    Use it as the trainer's ``prepare_batch``; :class:`fewlabel.handlers.PseudoLabelStatsHandler` logs its counts.
    """

    def __init__(
        self, method: str = "otsu", polarity: str = "bright", min_range: float = 1e-2, ignore_index: int | None = -1,
        image_key: str = "image", **method_kwargs: Any,
    ) -> None:
        self.method, self.polarity, self.min_range = method, polarity, min_range
        self.ignore_index = ignore_index
        self.image_key = image_key
        self.method_kwargs = method_kwargs
        self.seen = 0
        self.skipped = 0

    def __call__(
        self, batchdata: Mapping[str, torch.Tensor], device: str | torch.device | None = None,
        non_blocking: bool = False, **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images = batchdata[self.image_key]
        if isinstance(images, torch.Tensor):
            images = images.to(device=device, non_blocking=non_blocking, **kwargs)
        masks, valid = threshold_masks(images, self.method, self.polarity, self.min_range, **self.method_kwargs)
        if self.ignore_index is not None:
            masks = torch.where(valid.view(-1, 1, 1, 1), masks, torch.full_like(masks, float(self.ignore_index)))
        self.seen += len(valid)
        self.skipped += int((~valid).sum())
        return images, masks
