"""Losses: focal-Tversky and the pixel losses the papers ablate, all with ignored pixels; SLiPPA's composite loss;
contrastive losses (NT-Xent, InfoNCE with explicit positives/negatives)."""

from .composite import (
    CLASS_WEIGHT_SCHEMES,
    LOSS_PRESETS,
    TABLE3_CANDIDATES,
    Candidate,
    CompositeLoss,
    cached_class_weights,
    class_weights,
    pixel_counts,
)
from .contrastive import NTXentLoss, contrastive_loss
from .focal_tversky import LOSSES, FocalTverskyLoss, MaskedCrossEntropyLoss, MaskedFocalLoss, build_loss

__all__ = [
    "LOSSES",
    "FocalTverskyLoss",
    "MaskedCrossEntropyLoss",
    "MaskedFocalLoss",
    "build_loss",
    "CompositeLoss",
    "Candidate",
    "LOSS_PRESETS",
    "TABLE3_CANDIDATES",
    "CLASS_WEIGHT_SCHEMES",
    "class_weights",
    "pixel_counts",
    "cached_class_weights",
    "NTXentLoss",
    "contrastive_loss",
]
