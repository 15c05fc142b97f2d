"""Focal-Tversky and the ablated losses: values, gradients, ignored images."""

from __future__ import annotations

import pytest
import torch

from fewlabel.losses import FocalTverskyLoss, build_loss


def _soft_counts(p, t):
    return (p * t).sum(), ((1 - p) * t).sum(), (p * (1 - t)).sum()


def test_focal_tversky_matches_definition():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1, 8, 8, generator=g)
    target = (torch.rand(1, 1, 8, 8, generator=g) > 0.5).float()
    p = torch.sigmoid(logits)
    tp, fn, fp = _soft_counts(p, target)
    ti = (tp + 1e-5) / (tp + 0.7 * fn + 0.3 * fp + 1e-5)  # alpha weighs false negatives
    expected = (1 - ti) ** (1 / (4 / 3))
    got = FocalTverskyLoss(sigmoid=True)(logits, target)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_alpha_penalises_false_negatives_more():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    miss = torch.zeros(1, 1, 4, 4)  # predicts nothing: all false negatives
    extra = torch.ones(1, 1, 4, 4)  # predicts everything: all false positives
    loss = FocalTverskyLoss(gamma=1.0)
    assert loss(miss, target) > loss(extra, target)


@pytest.mark.parametrize("name", ["focal_tversky", "tversky", "focal", "cross_entropy"])
def test_losses_ignore_marked_images_and_give_gradients(name):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 1, 8, 8, generator=g, requires_grad=True)
    target = (torch.rand(3, 1, 8, 8, generator=g) > 0.5).float()
    loss = build_loss(name)
    marked = target.clone()
    marked[1] = -1
    full = loss(logits, marked)
    subset = loss(logits[[0, 2]], target[[0, 2]])
    assert full.item() == pytest.approx(subset.item(), rel=1e-5)
    full.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0


@pytest.mark.parametrize("name", ["focal_tversky", "tversky", "focal", "cross_entropy"])
def test_all_ignored_batch_is_zero_not_nan(name):
    logits = torch.randn(2, 1, 4, 4, requires_grad=True)
    value = build_loss(name)(logits, torch.full((2, 1, 4, 4), -1.0))
    assert value.item() == 0 and value.requires_grad
    value.backward()


def test_perfect_prediction_scores_zero_and_multiclass_works():
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    assert build_loss()((target * 2 - 1) * 50, target).item() == pytest.approx(0, abs=1e-4)
    labels = torch.randint(0, 3, (2, 1, 8, 8))
    logits = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2).float() * 50
    for name in ("focal_tversky", "cross_entropy"):
        assert build_loss(name, num_classes=3)(logits, labels).item() == pytest.approx(0, abs=1e-3)
    with pytest.raises(ValueError, match="label values"):
        build_loss("focal_tversky", num_classes=3)(logits, labels + 3)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("dice++")
