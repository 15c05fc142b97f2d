"""PolyCL pre-training through MONAI's ``SupervisedTrainer``: triplets of CT slices.

PolyCL (Ward et al., MELBA 2025, section 3.1) pre-trains an encoder on (anchor, positive,
negative) slice triplets chosen by strategy S, O or M
(:func:`fewlabel.data.select_examples`). The pieces a bundle config wires together:

- :class:`TripletSampler`, the ``DataLoader``'s sampler: every epoch it draws a fresh positive and
  negative for every anchor slice from a seeded generator (the draw of epoch ``e`` depends only on
  ``seed`` and ``e``) and yields ``(anchor, positive, negative)`` index triples in a shuffled
  order. Anchors for which the strategy has no valid positive or negative are left out; they are
  the same every epoch (validity depends only on the slice table), counted in :attr:`skipped`
  and logged once.
- :class:`TripletDataset`: wraps a slice dataset (e.g. MONAI ``Dataset`` over
  :func:`~fewlabel.data.ct_slices.cache_ct_slices` records with a loading transform) and turns an
  index triple into ``{"anchor", "positive", "negative"}`` images plus the anchor's record fields.
- :class:`TripletBatch`, the trainer's ``prepare_batch``: stacks the three ``(B, C, H, W)`` image
  batches into one ``(3B, C, H, W)`` batch (anchors, then positives, then negatives) so that the
  encoder runs once; :class:`fewlabel.losses.PolyCLLoss` splits the ``(3B, D)`` projections again.
- :class:`SupConPairs`: the SupCon baseline's ``prepare_batch``: SimCLR's two augmented views of
  each slice and the slice's organ flag (or scan id) as the label for
  :class:`fewlabel.losses.SupConLoss`.

The network is :class:`fewlabel.engines.simclr.ContrastiveEncoder` with ``projection_dim=256,
hidden_dim=0`` (the paper's ``g``: global average pooling, one fully connected layer).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler

from fewlabel.data.contrastive_selection import select_examples
from fewlabel.engines.simclr import SimCLRPairs

__all__ = ["TripletSampler", "TripletDataset", "TripletBatch", "SupConPairs"]

logger = logging.getLogger("fewlabel")

TRIPLET_KEYS = ("anchor", "positive", "negative")


class TripletSampler(Sampler):
    """Yield ``(anchor, positive, negative)`` slice-index triples, drawn afresh every epoch.

    Args:
        scan_ids: ``(N,)`` scan id of every slice (``S(s)``).
        has_organ: ``(N,)`` organ flags (``T(s)``); may be None for strategy ``"S"``.
        strategy: ``"S"``, ``"O"`` or ``"M"`` (see :func:`fewlabel.data.select_examples`).
        seed: the draw of epoch ``e`` uses ``numpy.random.default_rng([seed, e])``.
        shuffle: visit the anchors in a random order each epoch (else in index order).
        m_negative: strategy M's negative: ``"same_scan"`` (eq. 3) or ``"other_scan"`` (authors' code).
        num_replicas, rank: data-parallel sharding (default: from ``torch.distributed`` when it is
            initialised, else one replica). Every replica draws the same triples and takes every
            ``num_replicas``-th of them; the list is padded by repetition to a multiple of
            ``num_replicas`` so that all replicas run the same number of steps.

    Epochs. Each ``iter()`` uses the draw of :attr:`epoch` (starting at 0) and then advances it by one
    (ignite creates one iterator per epoch); ``set_epoch(e)`` sets the epoch the next iterator uses
    (as ``DistributedSampler.set_epoch``; a resumed run restores it).

    Raises:
        ValueError: no anchor has a valid positive and negative (the message says why, e.g. a
            single scan for strategy S, or no slice with the organ for O / M).
    """

    def __init__(
        self,
        scan_ids: Sequence[Any] | np.ndarray,
        has_organ: Sequence[bool] | np.ndarray | None,
        strategy: str = "M",
        seed: int = 0,
        shuffle: bool = True,
        m_negative: str = "same_scan",
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        self.scan_ids = np.asarray(scan_ids)
        self.has_organ = None if has_organ is None else np.asarray(has_organ)
        self.strategy = str(strategy)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.m_negative = m_negative
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"rank must be in [0, num_replicas), got rank={rank}, num_replicas={num_replicas}")
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        probe = select_examples(self.scan_ids, self.has_organ, self.strategy, np.random.default_rng(self.seed),
                                m_negative=self.m_negative)
        self.anchors = probe.anchor
        self.skipped = probe.skipped
        n = len(self.scan_ids)
        if len(self.anchors) == 0:
            raise ValueError(
                f"PolyCL-{self.strategy}: none of the {n} slices has a valid positive and negative "
                f"({_why_empty(self.strategy, self.scan_ids, self.has_organ)}). Use more scans, another strategy, "
                "or m_negative='other_scan' for M."
            )
        if self.skipped:
            logger.info("PolyCL-%s: %d of %d anchor slices have no valid positive or negative and are skipped "
                        "(the same slices every epoch).", self.strategy, self.skipped, n)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the draw of ``epoch`` for the next iteration (as ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": e}``: the draw the next iterator uses (all the sampler's randomness follows from it)."""
        return {"epoch": int(self.epoch)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.set_epoch(int(state["epoch"]))

    def triplets(self, epoch: int) -> np.ndarray:
        """``(K, 3)`` int64 triples of ``epoch`` for this replica (the order they are yielded in)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        order = rng.permutation(len(self.anchors)) if self.shuffle else np.arange(len(self.anchors))
        anchors = self.anchors[order]
        trip = select_examples(self.scan_ids, self.has_organ, self.strategy, rng, anchors=anchors,
                               m_negative=self.m_negative)
        table = np.stack([trip.anchor, trip.positive, trip.negative], axis=1)
        total = -(-len(table) // self.num_replicas) * self.num_replicas
        if total > len(table):
            table = np.concatenate([table, table[: total - len(table)]])
        return table[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        epoch = self.epoch
        self.epoch += 1
        yield from self.triplets(epoch).tolist()

    def __len__(self) -> int:
        return -(-len(self.anchors) // self.num_replicas)


def _why_empty(strategy: str, scan_ids: np.ndarray, has_organ: np.ndarray | None) -> str:
    scans = len(set(scan_ids.tolist()))
    if has_organ is None:
        return f"{scans} scan(s), no organ flags"
    return f"{scans} scan(s), {int(np.sum(has_organ))} slice(s) with the organ and {int(np.sum(~has_organ))} without"


class TripletDataset(TorchDataset):
    """Index triples -> ``{"anchor", "positive", "negative"}`` images, for :class:`TripletSampler`.

    Args:
        dataset: a dataset of slices whose items are dicts with an image under ``image_key``
            (e.g. MONAI ``Dataset(records, transform)``).
        image_key: the image key of ``dataset``'s items.
        keep_keys: fields of the anchor's item copied into the output (e.g. ``"scan"``,
            ``"has_organ"``), when present.

    ``__getitem__((a, p, n))`` returns ``{"anchor": dataset[a][image_key], "positive": ...,
    "negative": ..., "index": (a, p, n), **anchor fields}``; an int ``i`` returns ``dataset[i]``.
    """

    def __init__(self, dataset: Any, image_key: str = "image",
                 keep_keys: Sequence[str] = ("scan", "slice", "has_organ")) -> None:
        self.dataset = dataset
        self.image_key = image_key
        self.keep_keys = tuple(keep_keys)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int | Sequence[int]) -> dict[str, Any]:
        if isinstance(index, (int, np.integer)):
            return self.dataset[int(index)]
        a, p, n = (int(i) for i in index)
        items = [self.dataset[i] for i in (a, p, n)]
        out: dict[str, Any] = {k: item[self.image_key] for k, item in zip(TRIPLET_KEYS, items)}
        out["index"] = torch.tensor([a, p, n])
        for key in self.keep_keys:
            if key in items[0] and items[0][key] is not None:
                out[key] = items[0][key]
        return out


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
