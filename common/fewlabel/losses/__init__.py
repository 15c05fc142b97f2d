"""Losses: focal-Tversky and the pixel losses the papers ablate, all with ignored pixels."""

from .focal_tversky import LOSSES, FocalTverskyLoss, MaskedCrossEntropyLoss, MaskedFocalLoss, build_loss

__all__ = ["LOSSES", "FocalTverskyLoss", "MaskedCrossEntropyLoss", "MaskedFocalLoss", "build_loss"]
