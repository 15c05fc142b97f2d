"""Ignite handlers, one per module: checkpoint loading with actionable errors, the pseudo-label counts of
the pseudo-labelling engines, the segmentation / volume report writers, P2ILF's landmark evaluation and
the training state a crashed run resumes from, and MONAI's checkpoint saver writing whole files only."""

from .atomic_checkpoint_saver import AtomicCheckpointSaver
from .checkpoint_loader import CheckpointLoader, missing_weights_message
from .landmark_evaluation import LandmarkEvaluation, stage_table
from .pseudo_label_stats import MINING_STATS, MiningStatsHandler, PseudoLabelStatsHandler
from .report import ReportHandler, example_arrays, save_examples
from .segmentation_report import SegmentationReport
from .training_state import TrainingState
from .volume_report import VolumeReport
from .momentum_update import MomentumUpdate, cosine_momentum

__all__ = [
    "MomentumUpdate",
    "cosine_momentum",
    "AtomicCheckpointSaver",
    "CheckpointLoader",
    "missing_weights_message",
    "PseudoLabelStatsHandler",
    "MiningStatsHandler",
    "MINING_STATS",
    "ReportHandler",
    "example_arrays",
    "save_examples",
    "SegmentationReport",
    "VolumeReport",
    "TrainingState",
    "LandmarkEvaluation",
    "stage_table",
]
