"""Losses: focal-Tversky and the pixel losses the papers ablate, all with ignored pixels; SLiPPA's composite loss;
contrastive losses: InfoNCE with explicit positives/negatives (``contrastive_loss``), SimCLR's NT-Xent on lightly
(``NTXentLoss``), PolyCL's anchor/positive/negative loss of its equation 4 (``PolyCLLoss``, tau = 1/M by default) and
the supervised contrastive baseline (``SupConLoss``, Khosla et al. 2020, L_out; lightly 1.6 has none); the
self-supervised baselines without negatives (``SiameseLoss``: BYOL, SimSiam, DINO, lightly's); SAM knowledge mining's
labelled + pseudo-labelled loss (``MiningLoss``)."""

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
from .contrastive import NTXentLoss, PolyCLLoss, SupConLoss, contrastive_loss
from .mining import MiningLoss, dice_bce_per_image, pack_targets, unpack_targets
from .focal_tversky import LOSSES, FocalTverskyLoss, MaskedCrossEntropyLoss, MaskedFocalLoss, build_loss
from .siamese import SiameseLoss
from .masked_image import MaskedImageLoss

__all__ = [
    "MaskedImageLoss",
    "SiameseLoss",
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
    "PolyCLLoss",
    "SupConLoss",
    "contrastive_loss",
    "MiningLoss",
    "dice_bce_per_image",
    "pack_targets",
    "unpack_targets",
]
