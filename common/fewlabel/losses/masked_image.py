"""The loss of masked image modelling (MAE: MSE, SimMIM: L1) over the masked patches only."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MaskedImageLoss"]


class MaskedImageLoss(nn.Module):
    """Mean squared (``"mae"``) or absolute (``"simmim"``) error between predicted and true masked patches.

    Takes the output of :class:`fewlabel.networks.MaskedImageModel`, ``{"prediction": p, "target": t}`` with
    ``p`` and ``t`` ``(B, M, D)`` (only the ``M`` masked patches: the visible ones never enter the loss), as the
    trainer's ``y_pred``; the target argument is unused. Returns a float scalar >= 0.
    """

    def __init__(self, method: str = "mae") -> None:
        super().__init__()
        method = str(method).lower()
        if method not in ("mae", "simmim"):
            raise ValueError(f"pretrain_method must be 'mae' or 'simmim', got '{method}'")
        self.method = method

    def forward(self, outputs: Mapping[str, torch.Tensor], target: object = None) -> torch.Tensor:
        p, t = outputs["prediction"], outputs["target"]
        if p.shape != t.shape:
            raise ValueError(f"prediction {tuple(p.shape)} and target {tuple(t.shape)} differ in shape")
        return F.mse_loss(p, t) if self.method == "mae" else F.l1_loss(p, t)
