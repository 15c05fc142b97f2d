"""The SAM knowledge-mining loss and the mining targets layout it reads.

SAM knowledge mining (paper, section 2.5) trains the student on
``L = mean_labelled(Dice + k BCE) + lambda * mean_unlabelled(Dice + k BCE vs pseudo-labels)``.
The trainer's loss receives ``(B, C + 1, H, W)`` targets (:func:`pack_targets`): the masks, then
one channel holding each image's *role*, constant over the image: :data:`ROLE_LABELLED`,
:data:`ROLE_PSEUDO` or :data:`ROLE_EXCLUDED` (an unlabelled image without a pseudo-label).
:class:`MiningLoss` reads it; :func:`unpack_targets` splits it. The engine that makes these
targets is :class:`fewlabel.engines.MinedBatches`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch.nn.modules.loss import _Loss

__all__ = [
    "ROLE_EXCLUDED",
    "ROLE_LABELLED",
    "ROLE_PSEUDO",
    "pack_targets",
    "unpack_targets",
    "dice_bce_per_image",
    "MiningLoss",
]

#: Role of an unlabelled image without a pseudo-label (left out of the loss).
ROLE_EXCLUDED = 0
#: Role of a labelled image (ground truth).
ROLE_LABELLED = 1
#: Role of an unlabelled image with a SAM pseudo-label.
ROLE_PSEUDO = 2


def pack_targets(masks: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` masks + ``(B,)`` roles -> ``(B, C + 1, H, W)`` float32 targets (roles last, constant)."""
    if masks.ndim != 4 or roles.shape != (masks.shape[0],):
        raise ValueError(f"expected (B, C, H, W) masks and (B,) roles, got {tuple(masks.shape)}, {tuple(roles.shape)}")
    b, _, h, w = masks.shape
    role_map = roles.to(masks.device, torch.float32).view(b, 1, 1, 1).expand(b, 1, h, w)
    return torch.cat([masks.float(), role_map], dim=1)


def unpack_targets(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C + 1, H, W)`` targets -> ``(masks (B, C, H, W) float32, roles (B,) int64)``."""
    if targets.ndim != 4 or targets.shape[1] < 2:
        raise ValueError(f"expected (B, C + 1, H, W) mining targets, got {tuple(targets.shape)}")
    roles = targets[:, -1].flatten(1).amax(1).round().long()
    return targets[:, :-1].float(), roles


def dice_bce_per_image(
    logits: torch.Tensor, target: torch.Tensor, k: float = 0.2, dice: DiceLoss | None = None
) -> torch.Tensor:
    """``Dice + k * BCE`` of each image (paper, section 2.5), from logits.

    Args:
        logits: ``(B, C, H, W)`` logits (sigmoid per channel; C = 1 for the method's binary task).
        target: ``(B, C, H, W)`` in {0, 1}.
        k: BCE weight.
        dice: the soft Dice loss to use (default MONAI's ``DiceLoss(sigmoid=True)``, smooth 1e-5).

    Returns:
        ``(B,)`` float32 >= 0: soft Dice loss (mean over channels) + ``k`` * mean pixel BCE.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape")
    dice = dice or DiceLoss(sigmoid=True, reduction="none")
    x, t = logits.float(), target.float()
    d = dice(x, t).flatten(1).mean(1)
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none").flatten(1).mean(1)
    return d + k * bce


class MiningLoss(_Loss):
    """The SAM knowledge-mining loss: ``mean_labelled(Dice + k BCE) + lambda * mean_pseudo(Dice + k BCE)``.

    Each image's ``Dice + k BCE`` is computed on its own (logits in, sigmoid inside); labelled
    images are averaged over their count ``B``, pseudo-labelled ones over theirs ``B'`` and
    down-weighted by ``lambda``; images with role :data:`ROLE_EXCLUDED` (no pseudo-label) take
    no part. A group absent from the batch contributes nothing: a batch with no valid
    pseudo-label is the supervised loss alone, a batch of pseudo-labels only is ``lambda`` times
    their mean. A batch with nothing to learn from gives 0 with a graph. The value is never NaN
    (Dice is smoothed; BCE is computed from logits).

    Args:
        k: BCE weight (paper: 0.2).
        lam: weight of the pseudo-label term (paper: 0.25).
        smooth_nr, smooth_dr: Dice smoothing (MONAI's ``DiceLoss``).

    Call as ``loss(logits, targets)`` with ``targets`` either the ``(B, C + 1, H, W)`` mining
    layout (:func:`pack_targets`) or a plain ``(B, C, H, W)`` label (all images labelled), or
    ``loss(logits, masks, roles=roles)`` with explicit ``(B,)`` roles. Returns a float32 scalar.
    After each call ``self.last`` holds the detached terms and counts (``labelled``, ``pseudo``,
    ``n_labelled``, ``n_pseudo``) for logging.
    """

    def __init__(self, k: float = 0.2, lam: float = 0.25, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5) -> None:
        super().__init__()
        if k < 0 or lam < 0:
            raise ValueError(f"k and lam must be >= 0, got k={k}, lam={lam}")
        self.k, self.lam = float(k), float(lam)
        self.dice = DiceLoss(sigmoid=True, reduction="none", smooth_nr=smooth_nr, smooth_dr=smooth_dr)
        self.last: dict[str, torch.Tensor] = {}

    def forward(self, input: torch.Tensor, target: torch.Tensor, roles: torch.Tensor | None = None) -> torch.Tensor:
        if input.ndim != 4:
            raise ValueError(f"expected (B, C, H, W) logits, got {tuple(input.shape)}")
        if roles is None:
            if target.shape[1] == input.shape[1] + 1:
                target, roles = unpack_targets(target)
            elif target.shape[1] == input.shape[1]:
                roles = torch.full((input.shape[0],), ROLE_LABELLED, dtype=torch.long, device=input.device)
            else:
                raise ValueError(
                    f"targets must have {input.shape[1]} channels (labels) or {input.shape[1] + 1} (labels + role), "
                    f"got {tuple(target.shape)}"
                )
        roles = torch.as_tensor(roles, device=input.device).long().view(-1)
        if roles.numel() != input.shape[0]:
            raise ValueError(f"got {roles.numel()} roles for {input.shape[0]} images")
        per_image = dice_bce_per_image(input, target.to(input.device), self.k, self.dice)
        labelled = (roles == ROLE_LABELLED).float()
        pseudo = (roles == ROLE_PSEUDO).float()
        n_l, n_p = labelled.sum(), pseudo.sum()
        zero = input.sum().float() * 0.0  # keeps a graph when a group is empty
        term_l = (per_image * labelled).sum() / n_l if n_l > 0 else zero
        term_p = (per_image * pseudo).sum() / n_p if n_p > 0 else zero
        self.last = {"labelled": term_l.detach(), "pseudo": term_p.detach(), "n_labelled": n_l.detach(),
                     "n_pseudo": n_p.detach()}
        return term_l + self.lam * term_p

    def extra_repr(self) -> str:
        return f"k={self.k}, lam={self.lam}"
