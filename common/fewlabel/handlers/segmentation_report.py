"""Per-class IoU / Dice report of an evaluation run (:class:`fewlabel.metrics.SegmentationScores`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from ignite.engine import Engine

from fewlabel.handlers.report import ReportHandler
from fewlabel.metrics.report import SegmentationScores, format_table

__all__ = ["SegmentationReport"]


class SegmentationReport(ReportHandler):
    """Ignite handler: score every iteration's predictions and write ``<name>.json`` / ``<name>.md`` at the end.

    Args:
        output_dir: folder for the report files (created).
        class_names: class names, background first.
        output_transform: maps ``engine.state.output`` to ``(pred, label)`` class-index maps;
            default ``from_engine(["pred", "label"])``.
        name: file stem and the key prefix in ``engine.state.metrics`` (``<name>_mean_iou`` ...).
        title: heading of the Markdown table.
        class_shares, underrepresented_below: see :class:`SegmentationScores`.
        average: what ``iou`` / ``dice`` / ``mean_iou`` ... report: ``"per_image"`` (mean of per-image
            scores) or ``"dataset"`` (one confusion matrix over all images; SurgicalSemiSeg's protocol);
            the other stays under ``*_per_image`` / ``*_dataset`` (see :class:`SegmentationScores`).
        examples: how many (image, label, prediction) to keep in ``<name>_examples.npz`` for
            pictures (sweep reports' overlay grids); 0 keeps none.
    """

    metric_keys = ("mean_iou", "mean_dice", "mean_iou_foreground", "mean_dice_foreground", "mean_iou_underrepresented",
                   "mean_iou_per_image", "mean_iou_dataset")

    def __init__(
        self, output_dir: str | os.PathLike, class_names: Sequence[str],
        output_transform: Callable | None = None, name: str = "metrics", title: str = "",
        class_shares: dict[str, float] | None = None, underrepresented_below: float = 0.01, examples: int = 4,
        average: str = "per_image",
    ) -> None:
        super().__init__(output_dir, SegmentationScores(class_names, class_shares, underrepresented_below, average),
                         output_transform, name, title, examples)

    def _update(self, engine: Engine) -> None:
        pred, label = self.output_transform(engine.state.output)
        self.scores.update(pred, label)

    def _table(self, result: dict[str, Any]) -> str:
        return format_table(result, self.title)
