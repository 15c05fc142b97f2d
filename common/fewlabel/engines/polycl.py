"""PolyCL pre-training through MONAI's ``SupervisedTrainer``: triplets of CT slices.

PolyCL (Ward et al., MELBA 2025, section 3.1) pre-trains an encoder on (anchor, positive,
negative) slice triplets chosen by strategy S, O or M
(:func:`fewlabel.data.select_examples`). The pieces a bundle config wires together:

- :class:`fewlabel.data.TripletSampler`, the ``DataLoader``'s sampler: every epoch it draws a
  fresh positive and negative for every anchor slice from a seeded generator (the draw of epoch
  ``e`` depends only on ``seed`` and ``e``) and yields ``(anchor, positive, negative)`` index
  triples in a shuffled order. Anchors for which the strategy has no valid positive or negative
  are left out; they are the same every epoch (validity depends only on the slice table), counted
  in ``skipped`` and logged once.
- :class:`fewlabel.data.TripletDataset`: wraps a slice dataset (e.g. MONAI ``Dataset`` over
  :func:`~fewlabel.data.ct_slices.cache_ct_slices` records with a loading transform) and turns an
  index triple into ``{"anchor", "positive", "negative"}`` images plus the anchor's record fields.
- :class:`TripletBatch`, the trainer's ``prepare_batch``: stacks the three ``(B, C, H, W)`` image
  batches into one ``(3B, C, H, W)`` batch (anchors, then positives, then negatives) so that the
  encoder runs once; :class:`fewlabel.losses.PolyCLLoss` splits the ``(3B, D)`` projections again.
- :class:`SupConPairs`: the SupCon baseline's ``prepare_batch``: SimCLR's two augmented views of
  each slice and the slice's organ flag (or scan id) as the label for
  :class:`fewlabel.losses.SupConLoss`.

The network is :class:`fewlabel.networks.ContrastiveEncoder` with ``projection_dim=256,
hidden_dim=0`` (the paper's ``g``: global average pooling, one fully connected layer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch

from fewlabel.data.triplets import TRIPLET_KEYS, TripletDataset, TripletSampler
from fewlabel.engines.simclr import SimCLRPairs

__all__ = ["TripletSampler", "TripletDataset", "TripletBatch", "SupConPairs"]


class TripletBatch(PrepareBatch):
    """``prepare_batch`` for triplets: ``(cat([anchors, positives, negatives]), None)`` on ``device``.

    Input: a collated batch of :class:`TripletDataset` items (three ``(B, C, H, W)`` images).
    Output: ``(3B, C, H, W)`` float images, rows ``[0, B)`` the anchors, ``[B, 2B)`` their positives,
    ``[2B, 3B)`` their negatives; no target (:class:`fewlabel.losses.PolyCLLoss` needs none).
    """

    def __call__(
        self, batchdata: Mapping[str, Any], device: str | torch.device | None = None,
        non_blocking: bool = False, **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        parts = []
        for key in TRIPLET_KEYS:
            x = batchdata[key]
            x = x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)
            parts.append(x)
        shapes = {tuple(p.shape) for p in parts}
        if len(shapes) != 1 or parts[0].ndim != 4:
            raise ValueError(f"anchor, positive and negative must be (B, C, H, W) batches of one shape, got {shapes}")
        return torch.cat(parts).to(device=device, non_blocking=non_blocking, **kwargs).float(), None


class SupConPairs(SimCLRPairs):
    """SupCon baseline ``prepare_batch``: two augmented views of each slice and its label, repeated for both.

    Returns ``(views, labels)``: ``views`` ``(2B, C, H, W)`` as :class:`SimCLRPairs`, ``labels``
    ``(2B,)`` int64, the ``label_key`` value of image ``i`` at rows ``i`` and ``B + i`` -- what
    :class:`fewlabel.losses.SupConLoss` takes for ``(2B, D)`` projections.

    Args:
        label_key: the batch key holding each slice's label: ``"has_organ"`` (default, organ
            presence, PolyCL-O's information) or ``"scan"`` (scan ids, strings mapped to integers).
        kwargs: the augmentation options of :class:`SimCLRPairs`.
    """

    def __init__(self, label_key: str = "has_organ", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label_key = label_key

    def __call__(
        self, batchdata: Mapping[str, Any], device: str | torch.device | None = None,
        non_blocking: bool = False, **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        views, _ = super().__call__(batchdata, device, non_blocking, **kwargs)
        if self.label_key not in batchdata:
            raise KeyError(f"SupConPairs needs '{self.label_key}' in the batch (the slice records' field); "
                           f"the batch has {sorted(batchdata)}")
        raw = batchdata[self.label_key]
        if isinstance(raw, torch.Tensor):
            labels = raw.long().flatten()
        else:
            values = list(raw)
            codes = {v: i for i, v in enumerate(sorted(set(map(str, values))))}
            labels = torch.tensor([codes[str(v)] for v in values], dtype=torch.long)
        return views, labels.repeat(2).to(views.device)
