"""Engine pieces: prepare-batch functions that make targets on the device, checkpoint handling."""

from .denoising import DenoisingPairs
from .checkpoint import CheckpointLoader, missing_weights_message
from .pseudo_labels import PseudoLabelStatsHandler, ThresholdPseudoLabels

__all__ = ["DenoisingPairs", "CheckpointLoader", "PseudoLabelStatsHandler", "ThresholdPseudoLabels", "missing_weights_message"]
