"""The one pseudo-label counting handler, with MedSASS's and SAM mining's settings: the metrics it records and
the lines it logs are those of the two handlers it replaced."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine, Events

from fewlabel.engines import ThresholdPseudoLabels
from fewlabel.engines.sam_mining import MiningStatsHandler as MiningStatsFromEngines
from fewlabel.handlers import MINING_STATS, MiningStatsHandler, PseudoLabelStatsHandler


class Counts:
    """A pseudo-labelling prepare_batch reduced to its counters (what MinedBatches exposes)."""

    def __init__(self, per_epoch: list[tuple[int, int]]) -> None:
        self.per_epoch = per_epoch
        self.seen = self.skipped = 0
        self.resets = 0

    def reset_counts(self) -> None:
        self.seen = self.skipped = 0
        self.resets += 1


def _run(handler: PseudoLabelStatsHandler, source: Counts, epochs: int) -> list[dict[str, float]]:
    """Run ``epochs`` one-iteration epochs; every epoch adds that epoch's (seen, skipped); return the metrics."""
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    recorded: list[dict[str, float]] = []

    @engine.on(Events.ITERATION_COMPLETED)
    def _count(e: Engine) -> None:
        seen, skipped = source.per_epoch[e.state.epoch - 1]
        source.seen += seen
        source.skipped += skipped

    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: recorded.append(dict(e.state.metrics)))
    engine.run([0], max_epochs=epochs)
    return recorded


def test_threshold_settings_record_the_share_only_and_warn_only_when_images_were_left_out(caplog):
    images = torch.rand(3, 1, 16, 16)
    images[2] = 0.25  # constant: no Otsu split
    pb = ThresholdPseudoLabels()
    engine = Engine(lambda e, b: pb({"image": images}, device="cpu"))
    PseudoLabelStatsHandler(pb).attach(engine)
    with caplog.at_level(logging.INFO, logger="fewlabel.engines"):
        engine.run([0, 1], max_epochs=2)
    assert engine.state.metrics == {"pseudo_label_skipped": pytest.approx(2 / 6)}
    assert pb.seen == 6 and pb.skipped == 2  # reset at the epoch start: the second epoch's counts only
    warnings = [r for r in caplog.records if r.name == "fewlabel.engines"]
    assert [r.levelno for r in warnings] == [logging.WARNING, logging.WARNING]
    assert warnings[1].getMessage() == (
        "epoch 2: 2 of 6 images had no otsu split (constant or one-class) and were left out of the loss"
    )

    caplog.clear()
    quiet = ThresholdPseudoLabels()
    engine = Engine(lambda e, b: quiet({"image": images[:2]}, device="cpu"))
    PseudoLabelStatsHandler(quiet).attach(engine)
    with caplog.at_level(logging.INFO, logger="fewlabel.engines"):
        engine.run([0], max_epochs=1)
    assert engine.state.metrics == {"pseudo_label_skipped": 0.0}
    assert not [r for r in caplog.records if r.name == "fewlabel.engines"]


def test_mining_settings_record_the_count_and_log_every_epoch(caplog):
    source = Counts([(4, 1), (4, 4), (0, 0)])
    with caplog.at_level(logging.INFO, logger="fewlabel.engines"):
        metrics = _run(MiningStatsHandler(source), source, 3)
    assert source.resets == 3
    assert metrics == [
        {"pseudo_label_no_prompt": 1, "pseudo_label_skipped": 0.25},
        {"pseudo_label_no_prompt": 4, "pseudo_label_skipped": 1.0},
        {"pseudo_label_no_prompt": 0, "pseudo_label_skipped": 0.0},
    ]
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "fewlabel.engines"]
    assert logged == [  # nothing for the epoch that saw no unlabelled image
        (logging.INFO, "epoch 1: 1 of 4 unlabelled images had no pseudo-label (empty student prediction: no prompt) "
                       "and were left out of the loss"),
        (logging.WARNING, "epoch 2: 4 of 4 unlabelled images had no pseudo-label (empty student prediction: "
                          "no prompt) and were left out of the loss"),
    ]


def test_mining_handler_is_the_one_class_with_mining_settings():
    source = Counts([(5, 2)])
    handler = MiningStatsHandler(source)
    assert MiningStatsFromEngines is MiningStatsHandler and isinstance(handler, PseudoLabelStatsHandler)
    assert handler.mined is source
    other = Counts([(5, 2)])
    explicit = PseudoLabelStatsHandler(other, **MINING_STATS)
    assert _run(handler, source, 1) == _run(explicit, other, 1) == [
        {"pseudo_label_no_prompt": 2, "pseudo_label_skipped": 0.4}
    ]
