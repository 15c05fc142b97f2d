"""Pseudo-labels computed on the training device, as a MONAI ``prepare_batch``.

:class:`ThresholdPseudoLabels` is MedSASS's self-supervision: the batch's images move to the
device, each gets a per-image threshold (Otsu by default, batched), and the binary map replaces
the label. Images without a usable split (constant images) get ``ignore_index`` everywhere, so
losses from :mod:`fewlabel.losses` leave them out; they are counted and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import PrepareBatch

from fewlabel.transforms.threshold import threshold_masks

__all__ = ["ThresholdPseudoLabels", "PseudoLabelStatsHandler"]

logger = logging.getLogger("fewlabel.engines")


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

    Use it as the trainer's ``prepare_batch``; :class:`PseudoLabelStatsHandler` logs its counts.
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



class PseudoLabelStatsHandler:
    """Ignite handler: after each epoch, log how many images a pseudo-label ``prepare_batch`` left
    out of the loss and put their share in ``engine.state.metrics["pseudo_label_skipped"]``.

    Args:
        pseudo_labels: the trainer's :class:`ThresholdPseudoLabels` (anything with ``seen``,
            ``skipped`` and ``method`` attributes).
    """

    def __init__(self, pseudo_labels: ThresholdPseudoLabels) -> None:
        self.pseudo_labels = pseudo_labels

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.report)

    def reset(self, engine: Engine) -> None:
        self.pseudo_labels.seen = self.pseudo_labels.skipped = 0

    def report(self, engine: Engine) -> None:
        pl = self.pseudo_labels
        engine.state.metrics["pseudo_label_skipped"] = pl.skipped / max(pl.seen, 1)
        if pl.skipped:
            logger.warning(
                "epoch %d: %d of %d images had no %s split (constant or one-class) and were left out of the loss",
                engine.state.epoch, pl.skipped, pl.seen, pl.method,
            )
