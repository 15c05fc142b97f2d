"""Metrics: per-class IoU / Dice reports from MONAI's metric functions; per-volume Dice / Hausdorff (PolyCL);
landmark precision, Dice and G (P2ILF)."""

from .landmarks import (
    LANDMARK_NAMES,
    LandmarkScores,
    format_landmark_table,
    format_stage_table,
    landmark_dice,
    landmark_precision,
    symmetric_distance,
)
from .report import SegmentationReport, SegmentationScores, format_table
from .volume import VolumeReport, VolumeScores, format_volume_table, volume_scores

__all__ = [
    "SegmentationReport",
    "SegmentationScores",
    "format_table",
    "VolumeReport",
    "VolumeScores",
    "format_volume_table",
    "volume_scores",
    "LANDMARK_NAMES",
    "LandmarkScores",
    "symmetric_distance",
    "landmark_precision",
    "landmark_dice",
    "format_stage_table",
    "format_landmark_table",
]
