"""PolyCL's triplets of CT slices as data: a sampler of (anchor, positive, negative) index triples and
the dataset that turns a triple into three images.

PolyCL (Ward et al., MELBA 2025, section 3.1) pre-trains an encoder on slice triplets chosen by
strategy S, O or M (:func:`fewlabel.data.select_examples`). :class:`TripletSampler` draws them
afresh every epoch; :class:`TripletDataset` loads them; the trainer's ``prepare_batch`` is
:class:`fewlabel.engines.TripletBatch`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler

from fewlabel.data.contrastive_selection import select_examples

__all__ = ["TRIPLET_KEYS", "TripletSampler", "TripletDataset"]

logger = logging.getLogger("fewlabel")

#: Keys of a :class:`TripletDataset` item's three images.
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
