"""Metrics: per-class IoU / Dice reports from MONAI's metric functions."""

from .report import SegmentationReport, SegmentationScores, format_table

__all__ = ["SegmentationReport", "SegmentationScores", "format_table"]
