"""Metrics: per-class IoU / Dice reports (per image or over the test set); Dice / Hausdorff per volume or per
slice (PolyCL); landmark precision, Dice and G (P2ILF). Their report handlers are in :mod:`fewlabel.handlers`."""

from typing import Any

from .landmarks import (
    LANDMARK_NAMES,
    LandmarkScores,
    format_landmark_table,
    format_stage_table,
    landmark_dice,
    landmark_precision,
    symmetric_distance,
)
from .report import SegmentationScores, format_table
from .volume import VolumeScores, format_volume_table, slice_scores, volume_scores
from fewlabel.moved import lazy_reexports

__all__ = [
    "SegmentationScores",
    "format_table",
    "VolumeScores",
    "format_volume_table",
    "volume_scores",
    "slice_scores",
    "LANDMARK_NAMES",
    "LandmarkScores",
    "symmetric_distance",
    "landmark_precision",
    "landmark_dice",
    "format_stage_table",
    "format_landmark_table",
]

# the report handlers (ignite) live in fewlabel.handlers; they stay importable from here
__getattr__ = lazy_reexports(__name__, {
    "SegmentationReport": "fewlabel.handlers.segmentation_report",
    "VolumeReport": "fewlabel.handlers.volume_report",
})
