"""SAM knowledge mining's loss: ``mean_labelled(Dice + k BCE) + lambda * mean_pseudo(Dice + k BCE)`` and the
mining targets layout (masks + a role channel)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fewlabel.losses.mining import ROLE_EXCLUDED, ROLE_LABELLED, ROLE_PSEUDO, MiningLoss, pack_targets, unpack_targets


def _dice_bce(logits: torch.Tensor, target: torch.Tensor, k: float = 0.2) -> float:
    """Hand-written Dice + k BCE of one image."""
    p = torch.sigmoid(logits.double())
    t = target.double()
    dice = 1 - (2 * (p * t).sum() + 1e-5) / (p.sum() + t.sum() + 1e-5)
    bce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()
    return float(dice + k * bce)


def test_mining_loss_weights_follow_the_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 1, 8, 8, generator=g)
    masks = (torch.rand(6, 1, 8, 8, generator=g) > 0.6).float()
    per = [_dice_bce(logits[i], masks[i]) for i in range(6)]
    loss = MiningLoss()
    assert (loss.k, loss.lam) == (0.2, 0.25)

    lab = torch.full((6,), ROLE_LABELLED)
    assert loss(logits, pack_targets(masks, lab)).item() == pytest.approx(np.mean(per), rel=1e-5)
    assert loss(logits, masks).item() == pytest.approx(np.mean(per), rel=1e-5)  # plain labels: all labelled
    pse = torch.full((6,), ROLE_PSEUDO)
    assert loss(logits, pack_targets(masks, pse)).item() == pytest.approx(0.25 * np.mean(per), rel=1e-5)
    # mixed: each group is averaged over its own count (B = 2, B' = 3), not over the batch
    roles = torch.tensor([ROLE_LABELLED, ROLE_PSEUDO, ROLE_LABELLED, ROLE_PSEUDO, ROLE_PSEUDO, ROLE_EXCLUDED])
    expected = (per[0] + per[2]) / 2 + 0.25 * (per[1] + per[3] + per[4]) / 3
    assert loss(logits, pack_targets(masks, roles)).item() == pytest.approx(expected, rel=1e-5)
    assert loss(logits, masks, roles=roles).item() == pytest.approx(expected, rel=1e-5)
    assert loss.last["n_labelled"] == 2 and loss.last["n_pseudo"] == 3

    # the excluded image drops out: its prediction changes nothing and gets no gradient
    x = logits.clone().requires_grad_(True)
    changed = logits.clone()
    changed[5] = 10 * torch.randn(1, 8, 8, generator=g)
    assert loss(changed, pack_targets(masks, roles)).item() == pytest.approx(expected, rel=1e-5)
    loss(x, pack_targets(masks, roles)).backward()
    assert x.grad[5].abs().sum() == 0 and x.grad[0].abs().sum() > 0

    # nothing valid: zero with a graph, never NaN; empty target and empty prediction: finite
    y = logits.clone().requires_grad_(True)
    nothing = loss(y, pack_targets(masks, torch.full((6,), ROLE_EXCLUDED)))
    nothing.backward()
    assert nothing.item() == 0.0 and torch.isfinite(y.grad).all()
    empty = loss(torch.full((2, 1, 8, 8), -30.0), torch.zeros(2, 1, 8, 8))
    assert torch.isfinite(empty) and empty.item() < 1e-3
    assert torch.equal(unpack_targets(pack_targets(masks, roles))[1], roles)
