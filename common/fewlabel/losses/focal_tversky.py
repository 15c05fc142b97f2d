"""Focal-Tversky loss (Abraham & Khan, ISBI 2019) and the pixel losses MedSASS ablates.

All losses here accept targets that contain ``ignore_index``: those pixels take no part in the
loss, and an image whose pixels are all ignored is left out of the batch mean. That is how an
image without a usable pseudo-label (a constant image has no Otsu split) is excluded without
breaking the batch. A batch with nothing left to learn from gives a zero loss that still has a
graph (never NaN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import FocalLoss, TverskyLoss
from monai.networks import one_hot
from torch.nn.modules.loss import _Loss

__all__ = ["FocalTverskyLoss", "MaskedFocalLoss", "MaskedCrossEntropyLoss", "LOSSES", "build_loss"]


def _split_ignore(
    input: torch.Tensor, target: torch.Tensor, ignore_index: int | None, to_onehot_y: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(target without ignored values, valid-pixel mask (B, 1, *spatial) float)``."""
    if target.shape[1] != 1 and (to_onehot_y or ignore_index is not None and target.shape[1] != input.shape[1]):
        raise ValueError(f"expected a (B, 1, ...) label map, got target shape {tuple(target.shape)}")
    if ignore_index is None:
        valid = torch.ones_like(target[:, :1], dtype=input.dtype)
    else:
        valid = (target != ignore_index).all(dim=1, keepdim=True).to(input.dtype)
        target = torch.where(target == ignore_index, torch.zeros_like(target), target)
    if to_onehot_y:
        n = input.shape[1]
        if n == 1:
            raise ValueError("to_onehot_y needs a multi-channel prediction; use sigmoid=True for 1 channel")
        if target.max() >= n or target.min() < 0:
            raise ValueError(
                f"label values must be in [0, {n - 1}] (or ignore_index), got [{target.min()}, {target.max()}]"
            )
        target = one_hot(target.long(), num_classes=n)
    return target.to(input.dtype), valid


def _activate(input: torch.Tensor, sigmoid: bool, softmax: bool) -> torch.Tensor:
    if sigmoid and softmax:
        raise ValueError("sigmoid and softmax are exclusive")
    if sigmoid:
        return torch.sigmoid(input.float())
    if softmax:
        return torch.softmax(input.float(), dim=1)
    return input.float()


def _masked_image_mean(per_image: torch.Tensor, image_valid: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_image`` (B,) over valid images; 0 (with a graph through ``anchor``) if none."""
    n = image_valid.sum()
    if n == 0:
        return anchor.sum() * 0.0
    return (per_image * image_valid).sum() / n


class FocalTverskyLoss(_Loss):
    """Focal-Tversky loss: ``mean_c (1 - TI_c) ** (1 / gamma)``.

    The Tversky index of class ``c`` is ``TI = TP / (TP + alpha * FN + beta * FP)`` with soft
    counts over an image's pixels (Abraham & Khan's notation: ``alpha`` weighs false negatives).
    ``gamma > 1`` focuses the loss on images whose TI is low; ``gamma = 1`` is the Tversky loss
    and ``alpha = beta = 0.5, gamma = 1`` the Dice loss. The Tversky index is MONAI's
    :class:`monai.losses.TverskyLoss`; this adds the focal exponent and ignored pixels.

    Args:
        alpha: weight of false negatives (paper default 0.7).
        beta: weight of false positives (paper default 0.3).
        gamma: focal parameter; the exponent is ``1 / gamma`` (paper default 4/3).
        include_background: with multi-channel outputs, whether channel 0 counts.
        sigmoid / softmax: activation applied to ``input`` (logits) first.
        to_onehot_y: convert a ``(B, 1, ...)`` class-index target to one-hot.
        ignore_index: target value whose pixels are ignored (``None``: none are).
        smooth_nr / smooth_dr: added to the index's numerator / denominator.
        batch: sum counts over the whole batch before the index (one TI per class).
        reduction: ``"mean"`` (over valid images and classes), ``"sum"`` or ``"none"`` (``(B, C)``).

    Shapes: ``input`` ``(B, C, *spatial)`` logits or probabilities; ``target`` ``(B, 1, *spatial)``
    class indices (with ``to_onehot_y``) or ``(B, C, *spatial)`` in [0, 1]. Returns a scalar in
    [0, 1] for ``"mean"``.
    """

    def __init__(
        self, alpha: float = 0.7, beta: float = 0.3, gamma: float = 4.0 / 3.0, include_background: bool = True,
        sigmoid: bool = False, softmax: bool = False, to_onehot_y: bool = False, ignore_index: int | None = -1,
        smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, batch: bool = False, reduction: str = "mean",
    ) -> None:
        super().__init__(reduction=reduction)
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.gamma = gamma
        self.sigmoid, self.softmax, self.to_onehot_y = sigmoid, softmax, to_onehot_y
        self.ignore_index = ignore_index
        self.batch = batch
        self.include_background = include_background
        # MONAI's TverskyLoss names the false-positive weight alpha and the false-negative weight beta.
        self.tversky = TverskyLoss(
            include_background=include_background, alpha=beta, beta=alpha, smooth_nr=smooth_nr,
            smooth_dr=smooth_dr, batch=batch, reduction="none",
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target, valid = _split_ignore(input, target, self.ignore_index, self.to_onehot_y)
        prob = _activate(input, self.sigmoid, self.softmax) * valid
        target = target * valid
        one_minus_ti = self.tversky(prob, target).flatten(1 if not self.batch else 0)  # (B, C) or (C,)
        focal = one_minus_ti.clamp_min(0).pow(1.0 / self.gamma)
        if self.reduction == "none":
            return focal
        if self.batch:
            out = focal.mean()
        else:
            image_valid = valid.flatten(1).amax(1)
            out = _masked_image_mean(focal.mean(1), image_valid, input)
            if self.reduction == "sum":
                out = out * image_valid.sum()
        return out


class MaskedFocalLoss(_Loss):
    """Focal loss (Lin et al.) averaged over non-ignored pixels; MONAI's :class:`~monai.losses.FocalLoss` per pixel.

    Args:
        gamma: focusing parameter (default 2).
        alpha: optional class-balancing weight of the positive class.
        use_softmax: softmax over channels (multi-class) instead of per-channel sigmoid.
        to_onehot_y: convert a ``(B, 1, ...)`` class-index target to one-hot.
        ignore_index: target value to ignore.

    Shapes as :class:`FocalTverskyLoss`; ``input`` must be logits. Returns a scalar.
    """

    def __init__(
        self, gamma: float = 2.0, alpha: float | None = None, use_softmax: bool = False, to_onehot_y: bool = False,
        ignore_index: int | None = -1,
    ) -> None:
        super().__init__()
        self.focal = FocalLoss(gamma=gamma, alpha=alpha, use_softmax=use_softmax, reduction="none")
        self.to_onehot_y, self.ignore_index = to_onehot_y, ignore_index

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target, valid = _split_ignore(input, target, self.ignore_index, self.to_onehot_y)
        per_pixel = self.focal(input.float(), target).sum(1, keepdim=True) * valid
        n = valid.sum()
        return per_pixel.sum() / n if n > 0 else input.sum() * 0.0


class MaskedCrossEntropyLoss(_Loss):
    """Cross-entropy over non-ignored pixels: binary (1 output channel, logits) or multi-class.

    Args:
        ignore_index: target value to ignore.
        weight: optional per-class weights (multi-class only).

    Shapes: ``input`` ``(B, C, *spatial)`` logits; ``target`` ``(B, 1, *spatial)`` class indices
    (or 0/1 for C = 1). Returns a scalar.
    """

    def __init__(self, ignore_index: int | None = -1, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.shape[1] == 1:
            target, valid = _split_ignore(input, target, self.ignore_index, False)
            per_pixel = F.binary_cross_entropy_with_logits(input.float(), target, reduction="none") * valid
            n = valid.sum()
            return per_pixel.sum() / n if n > 0 else input.sum() * 0.0
        t = target[:, 0].long()
        if self.ignore_index is None:
            return F.cross_entropy(input.float(), t, weight=self.weight)
        if (t != self.ignore_index).sum() == 0:
            return input.sum() * 0.0
        return F.cross_entropy(input.float(), t, weight=self.weight, ignore_index=self.ignore_index)


LOSSES = ("focal_tversky", "tversky", "focal", "cross_entropy")


def build_loss(name: str = "focal_tversky", num_classes: int = 1, ignore_index: int | None = -1, **kwargs) -> _Loss:
    """Build one of the losses MedSASS ablates (its Table 4 and Appendix B.1) by name.

    Args:
        name: ``"focal_tversky"`` (default), ``"tversky"`` (focal-Tversky with gamma 1),
            ``"focal"`` or ``"cross_entropy"``.
        num_classes: network output channels; 1 means a binary sigmoid output, more a softmax.
        ignore_index: target value excluded from the loss.
        kwargs: passed to the loss class (e.g. ``alpha``, ``beta``, ``gamma``).
    """
    binary = num_classes == 1
    if name in ("focal_tversky", "tversky"):
        if name == "tversky":
            kwargs["gamma"] = 1.0
        return FocalTverskyLoss(
            sigmoid=binary, softmax=not binary, to_onehot_y=not binary, ignore_index=ignore_index, **kwargs
        )
    if name == "focal":
        return MaskedFocalLoss(use_softmax=not binary, to_onehot_y=not binary, ignore_index=ignore_index, **kwargs)
    if name in ("cross_entropy", "bce", "ce"):
        return MaskedCrossEntropyLoss(ignore_index=ignore_index, **kwargs)
    raise ValueError(f"unknown loss '{name}', expected one of {LOSSES}")
