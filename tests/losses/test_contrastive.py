"""PolyCL's contrastive loss (equation 4: anchor / positive / negative, cosine similarity, tau = 1/M) and the
supervised contrastive (SupCon, L_out) baseline, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from fewlabel.losses import NTXentLoss, PolyCLLoss, SupConLoss, contrastive_loss


def _eq4(pos: float, neg: float, tau: float) -> float:
    """Equation 4 for one anchor, from its two cosine similarities."""
    return -math.log(math.exp(pos / tau) / (math.exp(pos / tau) + math.exp(neg / tau)))


# ---------------------------------------------------------------------------------------------
# PolyCL, equation 4
# ---------------------------------------------------------------------------------------------


def test_polycl_equals_equation_4_by_hand_in_2d_with_tau_one_over_m():
    # anchor 0: cos(a, p) = 0.6, cos(a, n) = -0.8; anchor 1 (not unit length): cos(a, p) = 1, cos(a, n) = 0
    anchor = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    positive = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    negative = torch.tensor([[-0.8, 0.6], [3.0, 0.0]])
    tau = 1 / 2  # M = 2 anchors
    l0 = -math.log(math.exp(0.6 / tau) / (math.exp(0.6 / tau) + math.exp(-0.8 / tau)))
    l1 = -math.log(math.exp(1.0 / tau) / (math.exp(1.0 / tau) + math.exp(0.0 / tau)))
    expected = (l0 + l1) / 2  # mean over the anchors
    loss = PolyCLLoss()
    assert loss.temperature is None
    assert loss(anchor, positive, negative).item() == pytest.approx(expected, rel=1e-6)
    assert PolyCLLoss(temperature=0.5)(anchor, positive, negative).item() == pytest.approx(expected, rel=1e-6)
    per_anchor = PolyCLLoss(reduction="none")(anchor, positive, negative)
    assert per_anchor.shape == (2,) and per_anchor.dtype == torch.float32
    assert per_anchor.tolist() == pytest.approx([l0, l1], rel=1e-6)
    assert PolyCLLoss(reduction="sum")(anchor, positive, negative).item() == pytest.approx(l0 + l1, rel=1e-6)
    # the other anchor's negative is NOT a negative: with it (cos(a0, n1) = 0) anchor 0's loss would differ
    with_other = -math.log(math.exp(0.6 / tau) / (math.exp(0.6 / tau) + math.exp(-0.8 / tau) + math.exp(0.0 / tau)))
    assert per_anchor[0].item() != pytest.approx(with_other, rel=1e-3)
    # neither are the other anchors / positives (SimCLR-style in-batch negatives)
    in_batch = contrastive_loss(anchor, positive, negative[:, None], tau, in_batch=True)
    assert loss(anchor, positive, negative).item() != pytest.approx(in_batch.item(), rel=1e-3)


def test_polycl_equals_equation_4_by_hand_in_3d_and_tau_follows_the_batch_size():
    # |a| = |p| = |n| = 3 for row 0: cos(a, p) = (2 + 2 + 4) / 9 = 8/9, cos(a, n) = (2 - 4 + 2) / 9 = 0
    # row 1: cos((0,0,5), (0,3,4)) = 20 / 25 = 4/5, cos((0,0,5), (0,0,-1)) = -1
    # row 2: cos((1,0,0), (1,1,0)) = 1/sqrt(2), negative = the anchor itself: cos = 1 (a hard negative)
    anchor = torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    positive = torch.tensor([[2.0, 1.0, 2.0], [0.0, 3.0, 4.0], [1.0, 1.0, 0.0]])
    negative = torch.tensor([[2.0, -2.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    tau = 1 / 3  # M = 3
    l0 = -math.log(math.exp((8 / 9) / tau) / (math.exp((8 / 9) / tau) + math.exp(0.0 / tau)))
    l1 = -math.log(math.exp((4 / 5) / tau) / (math.exp((4 / 5) / tau) + math.exp(-1.0 / tau)))
    c = 1 / math.sqrt(2)
    l2 = -math.log(math.exp(c / tau) / (math.exp(c / tau) + math.exp(1.0 / tau)))
    loss = PolyCLLoss()
    assert loss(anchor, positive, negative).item() == pytest.approx((l0 + l1 + l2) / 3, rel=1e-6)
    # the same rows in a minibatch of M = 1: tau = 1
    single = -math.log(math.exp(8 / 9) / (math.exp(8 / 9) + math.exp(0.0)))
    assert loss(anchor[:1], positive[:1], negative[:1]).item() == pytest.approx(single, rel=1e-6)
    # M = 2: tau = 1/2
    two = (_eq4(8 / 9, 0.0, 0.5) + _eq4(4 / 5, -1.0, 0.5)) / 2
    assert loss(anchor[:2], positive[:2], negative[:2]).item() == pytest.approx(two, rel=1e-6)
    # an explicit temperature overrides 1/M
    fixed = PolyCLLoss(temperature=0.25)
    assert fixed(anchor[:1], positive[:1], negative[:1]).item() == pytest.approx(_eq4(8 / 9, 0.0, 0.25), rel=1e-6)
    assert "1/M" in repr(loss) and "0.25" in repr(fixed)


def test_polycl_tau_default_is_one_over_the_batch_size_for_random_batches():
    g = torch.Generator().manual_seed(0)
    for m in (1, 4, 20):
        a, p, n = (torch.randn(m, 8, generator=g) for _ in range(3))
        assert PolyCLLoss()(a, p, n).item() == pytest.approx(PolyCLLoss(temperature=1 / m)(a, p, n).item(), rel=1e-6)
        assert PolyCLLoss()(a, p, n).item() != pytest.approx(PolyCLLoss(temperature=0.1)(a, p, n).item(), rel=1e-3)


def test_polycl_is_invariant_to_the_embedding_scale_and_dtype():
    g = torch.Generator().manual_seed(1)
    a, p, n = (torch.randn(5, 16, generator=g) for _ in range(3))
    loss = PolyCLLoss()
    ref = loss(a, p, n).item()
    row_scale = torch.rand(5, 1, generator=g) * 10 + 0.1  # a different positive scale per row and per input
    assert loss(3.0 * a, 0.01 * p, row_scale * n).item() == pytest.approx(ref, rel=1e-5)
    assert loss(a * row_scale, p, n).item() == pytest.approx(ref, rel=1e-5)
    half = loss(a.half(), p.half(), n.half())
    assert half.dtype == torch.float32 and half.item() == pytest.approx(ref, rel=1e-2)
    # a small temperature does not overflow (log-sum-exp): cos / tau up to 1000
    assert torch.isfinite(PolyCLLoss(temperature=1e-3)(a, a, -a))


def test_polycl_gradient_reaches_anchor_positive_and_negative():
    g = torch.Generator().manual_seed(2)
    a, p, n = (torch.randn(4, 6, generator=g).requires_grad_() for _ in range(3))
    PolyCLLoss()(a, p, n).backward()
    for x in (a, p, n):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # descending the gradient pulls the positive towards the anchor and pushes the negative away
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity
        step = 0.05
        before_p, before_n = cos(a, p).mean(), cos(a, n).mean()
        after_p, after_n = cos(a, p - step * p.grad).mean(), cos(a, n - step * n.grad).mean()
    assert after_p > before_p and after_n < before_n


def test_polycl_errors():
    a = torch.randn(2, 3)
    loss = PolyCLLoss()
    with pytest.raises(ValueError, match="same"):
        loss(a, torch.randn(2, 4), a)
    with pytest.raises(ValueError, match="same"):
        loss(a, a, torch.randn(3, 3))
    with pytest.raises(ValueError, match="2-D"):
        loss(a, a, torch.randn(2, 1, 3))  # equation 4 has one negative per anchor
    with pytest.raises(ValueError, match="2-D"):
        loss(a[0], a[0], a[0])
    with pytest.raises(ValueError, match="empty"):
        loss(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError, match="empty"):
        loss(torch.zeros(2, 0), torch.zeros(2, 0), torch.zeros(2, 0))
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = a.clone()
        x[1, 2] = bad
        with pytest.raises(ValueError, match="non-finite"):
            loss(a, a, x)
    with pytest.raises(ValueError, match="floating"):
        loss(a.long(), a.long(), a.long())
    for t in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            PolyCLLoss(temperature=t)
    with pytest.raises(ValueError, match="reduction"):
        PolyCLLoss(reduction="max")


# ---------------------------------------------------------------------------------------------
# SupCon (Khosla et al. 2020, L_out)
# ---------------------------------------------------------------------------------------------


def test_supcon_equals_l_out_by_hand():
    # unit vectors: z0.z1 = 0.6, z0.z2 = 0, z0.z3 = -0.8, z1.z2 = 0.8, z1.z3 = 0, z2.z3 = 0.6
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.8, 0.6]])
    labels = torch.tensor([0, 0, 0, 1])
    t = 0.5
    # anchor 0: P = {1, 2}, A = {1, 2, 3}
    d0 = math.exp(0.6 / t) + math.exp(0.0 / t) + math.exp(-0.8 / t)
    l0 = -((0.6 / t - math.log(d0)) + (0.0 / t - math.log(d0))) / 2
    # anchor 1: P = {0, 2}, A = {0, 2, 3}
    d1 = math.exp(0.6 / t) + math.exp(0.8 / t) + math.exp(0.0 / t)
    l1 = -((0.6 / t - math.log(d1)) + (0.8 / t - math.log(d1))) / 2
    # anchor 2: P = {0, 1}, A = {0, 1, 3}
    d2 = math.exp(0.0 / t) + math.exp(0.8 / t) + math.exp(0.6 / t)
    l2 = -((0.0 / t - math.log(d2)) + (0.8 / t - math.log(d2))) / 2
    # anchor 3: label 1 met once, no positive: left out of the mean
    loss = SupConLoss(temperature=t)
    assert loss(z, labels).item() == pytest.approx((l0 + l1 + l2) / 3, rel=1e-6)
    assert loss(5.0 * z, labels).item() == pytest.approx((l0 + l1 + l2) / 3, rel=1e-6)  # cosine: scale-free
    per_anchor = SupConLoss(temperature=t, reduction="none")(z, labels)
    assert per_anchor.shape == (4,) and per_anchor.tolist() == pytest.approx([l0, l1, l2, 0.0], rel=1e-6, abs=1e-7)
    assert SupConLoss(temperature=t, reduction="sum")(z, labels).item() == pytest.approx(l0 + l1 + l2, rel=1e-6)
    # L_out, not L_in: the 1/|P| average is outside the log
    l0_in = -math.log((math.exp(0.6 / t) / d0 + math.exp(0.0 / t) / d0) / 2)
    assert per_anchor[0].item() != pytest.approx(l0_in, rel=1e-3)
    # bool labels (organ present / absent) work like integers
    assert loss(z, labels.bool()).item() == pytest.approx((l0 + l1 + l2) / 3, rel=1e-6)
    assert SupConLoss().temperature == 0.1


def test_supcon_with_two_views_per_label_is_nt_xent():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    for t in (0.1, 0.5):
        expected = NTXentLoss(temperature=t)(z1, z2).item()
        views = torch.stack([z1, z2], dim=1)  # (B, V=2, D)
        assert SupConLoss(temperature=t)(views).item() == pytest.approx(expected, rel=1e-5)  # labels=None
        assert SupConLoss(temperature=t)(views, torch.tensor([4, 3, 2, 1, 0])).item() == pytest.approx(
            expected, rel=1e-5
        )
        # (2N, D) rows whose labels pair row i with row i + N
        stacked, labels = torch.cat([z1, z2]), torch.arange(5).repeat(2)
        assert SupConLoss(temperature=t)(stacked, labels).item() == pytest.approx(expected, rel=1e-5)
    per_view = SupConLoss(reduction="none")(torch.stack([z1, z2], dim=1))
    assert per_view.shape == (5, 2)


def test_supcon_gradient_and_degenerate_batches():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(6, 2, 4, generator=g).requires_grad_()
    SupConLoss()(z, torch.tensor([0, 1, 0, 1, 1, 2])).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # no anchor with a positive (one view, all labels different): 0, attached to the graph, finite gradient
    for n in (1, 3):
        x = torch.randn(n, 4, generator=g).requires_grad_()
        out = SupConLoss()(x, torch.arange(n))
        assert out.item() == 0.0 and out.requires_grad
        out.backward()
        assert torch.isfinite(x.grad).all()


def test_supcon_errors():
    z = torch.randn(3, 4)
    loss = SupConLoss()
    with pytest.raises(ValueError, match=r"\(B, D\) or \(B, V, D\)"):
        loss(torch.randn(4), torch.arange(4))
    with pytest.raises(ValueError, match=r"\(B, D\) or \(B, V, D\)"):
        loss(torch.randn(2, 2, 2, 2), torch.arange(2))
    with pytest.raises(ValueError, match="labels must be a"):
        loss(z, torch.arange(4))
    with pytest.raises(ValueError, match="labels must be a"):
        loss(z, torch.arange(3)[:, None])
    with pytest.raises(ValueError, match="integer or bool"):
        loss(z, torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="two views"):
        loss(z)  # labels=None needs (B, V >= 2, D)
    with pytest.raises(ValueError, match="empty"):
        loss(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        loss(torch.zeros(3, 0, 4), torch.arange(3))
    bad = z.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        loss(bad, torch.arange(3))
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(temperature=None)
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(temperature=0.0)
    with pytest.raises(ValueError, match="reduction"):
        SupConLoss(reduction="max")
