"""Former home of :class:`fewlabel.handlers.LandmarkEvaluation` (an ignite handler); the names stay importable
from here."""

from fewlabel.handlers.landmark_evaluation import LandmarkEvaluation, stage_table

__all__ = ["LandmarkEvaluation", "stage_table"]
