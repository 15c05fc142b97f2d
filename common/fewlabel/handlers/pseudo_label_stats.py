"""Per-epoch counts of the images a pseudo-labelling ``prepare_batch`` left out of the loss.

One handler serves both pseudo-labelling engines: MedSASS's threshold pseudo-labels
(:class:`fewlabel.engines.ThresholdPseudoLabels`: constant images have no split) and SAM
knowledge mining (:class:`fewlabel.engines.MinedBatches`: an empty student prediction gives no
prompt, hence no pseudo-label). :class:`MiningStatsHandler` is the handler with SAM mining's
settings.
"""

from __future__ import annotations

import logging
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["PseudoLabelStatsHandler", "MiningStatsHandler", "MINING_STATS"]

# the logger of the engines this handler came from, so log lines read as before
logger = logging.getLogger("fewlabel.engines")

#: :class:`PseudoLabelStatsHandler` settings of SAM knowledge mining (what :class:`MiningStatsHandler` passes).
MINING_STATS: dict[str, Any] = {
    "count_key": "pseudo_label_no_prompt",
    "images": "unlabelled images",
    "reason": "no pseudo-label (empty student prediction: no prompt)",
    "log_every_epoch": True,
}


class PseudoLabelStatsHandler:
    """Ignite handler: per epoch, count the images a pseudo-label ``prepare_batch`` left out of the loss.

    At each epoch start the counters ``seen`` / ``skipped`` of ``pseudo_labels`` are reset (with its
    ``reset_counts()`` when it has one); at its end ``engine.state.metrics["pseudo_label_skipped"]``
    gets the share ``skipped / seen`` and, with ``count_key``, ``engine.state.metrics[count_key]``
    the number ``skipped``. The counts are logged, with the teacher's embedding-cache hits and
    misses when ``pseudo_labels.teacher`` has a cache.

    Args:
        pseudo_labels: the trainer's ``prepare_batch`` (anything with ``seen`` and ``skipped``
            counters): :class:`fewlabel.engines.ThresholdPseudoLabels` or
            :class:`fewlabel.engines.MinedBatches`.
        count_key: metric name of the number of left-out images (SAM mining:
            ``"pseudo_label_no_prompt"``); None records the share only.
        images: what the counted images are, in the log message (``"images"``, ``"unlabelled images"``).
        reason: what the left-out images lacked, in the log message; default
            ``"no <method> split (constant or one-class)"`` with ``pseudo_labels.method``.
        log_every_epoch: log the counts every epoch that saw images (a warning when all were left
            out, else info); False (default) logs a warning only in epochs that left images out.
    """

    def __init__(self, pseudo_labels: Any, count_key: str | None = None, images: str = "images",
                 reason: str | None = None, log_every_epoch: bool = False) -> None:
        self.pseudo_labels = pseudo_labels
        self.count_key = count_key
        self.images = images
        self.reason = reason
        self.log_every_epoch = bool(log_every_epoch)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.report)

    def reset(self, engine: Engine) -> None:
        reset_counts = getattr(self.pseudo_labels, "reset_counts", None)
        if callable(reset_counts):
            reset_counts()
        else:
            self.pseudo_labels.seen = self.pseudo_labels.skipped = 0

    def report(self, engine: Engine) -> None:
        seen, skipped = int(self.pseudo_labels.seen), int(self.pseudo_labels.skipped)
        if self.count_key is not None:
            engine.state.metrics[self.count_key] = skipped
        engine.state.metrics["pseudo_label_skipped"] = skipped / max(seen, 1)
        if not seen or not (skipped or self.log_every_epoch):
            return
        reason = self.reason or f"no {self.pseudo_labels.method} split (constant or one-class)"
        cache = getattr(getattr(self.pseudo_labels, "teacher", None), "cache", None)
        extra = f"; SAM embedding cache {cache.stats()}" if cache is not None else ""
        log = logger.warning if skipped == seen or not self.log_every_epoch else logger.info
        log("epoch %d: %d of %d %s had %s and were left out of the loss%s",
            engine.state.epoch, skipped, seen, self.images, reason, extra)


class MiningStatsHandler(PseudoLabelStatsHandler):
    """:class:`PseudoLabelStatsHandler` with SAM knowledge mining's settings (:data:`MINING_STATS`).

    Records ``engine.state.metrics["pseudo_label_no_prompt"]`` (unlabelled images without a
    pseudo-label: empty student prediction, hence no prompt) and ``["pseudo_label_skipped"]``
    (their share of the unlabelled images seen), and logs both every epoch.

    Args:
        mined: the trainer's :class:`fewlabel.engines.MinedBatches` (anything with ``seen``,
            ``skipped``, ``reset_counts``).
    """

    def __init__(self, mined: Any) -> None:
        super().__init__(mined, **MINING_STATS)

    @property
    def mined(self) -> Any:
        """The ``prepare_batch`` whose counts are reported (the name of the former mining handler)."""
        return self.pseudo_labels
