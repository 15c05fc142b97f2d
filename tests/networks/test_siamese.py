"""BYOL, SimSiam and DINO pre-training of a segmentation encoder on lightly: the teacher follows the EMA rule,
SimSiam's target is the stopped gradient, the losses are the methods' own, the encoder is the network's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fewlabel.handlers import cosine_momentum
from fewlabel.losses import SiameseLoss
from fewlabel.networks import SiameseEncoder, build_network

SMALL_HEADS = {"projection_dim": 16, "hidden_dim": 32, "prediction_hidden_dim": 8, "bottleneck_dim": 8}


def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network("unet", encoder_name="resnet18", in_channels=3, out_channels=1)


def _views(b: int = 3) -> torch.Tensor:
    return torch.rand(2 * b, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", ["byol", "dino"])
def test_momentum_teacher_follows_the_ema_rule_after_a_step(method):
    net = _network()
    model = SiameseEncoder(net, method, **SMALL_HEADS)
    loss_fn = SiameseLoss(method, output_dim=model.output_dim)
    # the teacher starts as a copy and gets no gradient
    for a, b in zip(model.encoder.parameters(), model.momentum_encoder.parameters()):
        assert torch.equal(a, b) and not b.requires_grad
    teacher_before = [p.detach().clone() for p in model.momentum_encoder.parameters()]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = loss_fn(model(_views()))
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in model.momentum_encoder.parameters())
    online = [p.detach().clone() for p in model.encoder.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(online, teacher_before)), "the step changed the encoder"
    m = 0.9
    model.update_momentum(m)
    for new, old, w in zip(model.momentum_encoder.parameters(), teacher_before, online):
        torch.testing.assert_close(new, m * old + (1 - m) * w)
    # the encoder trained is the segmentation network's own
    assert model.encoder is net.encoder


def test_simsiam_target_is_the_stopped_projection():
    model = SiameseEncoder(_network(), "simsiam", **SMALL_HEADS).eval()
    assert not hasattr(model, "momentum_encoder")
    out = model(_views())
    z = model.projection(model.features(_views()))
    torch.testing.assert_close(torch.cat(out["teacher"]), z)
    assert not out["teacher"][0].requires_grad and out["student"][0].requires_grad
    torch.testing.assert_close(torch.cat(out["student"]), model.prediction(z))


def test_byol_and_simsiam_loss_is_the_symmetric_negative_cosine():
    g = torch.Generator().manual_seed(2)
    s = [torch.randn(4, 8, generator=g) for _ in range(2)]
    t = [torch.randn(4, 8, generator=g) for _ in range(2)]
    expected = 0.5 * (-F.cosine_similarity(s[0], t[1]).mean() - F.cosine_similarity(s[1], t[0]).mean())
    for method in ("byol", "simsiam"):
        torch.testing.assert_close(SiameseLoss(method)({"student": s, "teacher": t}), expected)


def test_dino_loss_is_the_cross_entropy_between_views():
    g = torch.Generator().manual_seed(3)
    s = [torch.randn(4, 8, generator=g) for _ in range(2)]
    t = [torch.randn(4, 8, generator=g) for _ in range(2)]
    loss = SiameseLoss("dino", output_dim=8, teacher_temp=0.04, student_temp=0.1)
    # the centre starts at zero: teacher view i against student view j != i
    terms = [-(F.softmax(t[i] / 0.04, -1) * F.log_softmax(s[j] / 0.1, -1)).sum(-1).mean()
             for i in range(2) for j in range(2) if i != j]
    torch.testing.assert_close(loss({"student": s, "teacher": t}), sum(terms) / 2)


def test_cosine_momentum_matches_lightly():
    from lightly.utils.scheduler import cosine_schedule

    for step in (0, 1, 7, 19):
        assert cosine_momentum(step, 20, 0.996, 1.0) == pytest.approx(cosine_schedule(step, 20, 0.996, 1.0))
    assert cosine_momentum(0, 20, 0.99) == pytest.approx(0.99) and cosine_momentum(19, 20, 0.99) == pytest.approx(1.0)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="pretrain_method"):
        SiameseEncoder(_network(), "mocov3")
    with pytest.raises(ValueError, match="two stacked views"):
        SiameseEncoder(_network(), "simsiam", **SMALL_HEADS)(torch.rand(3, 3, 32, 32))
    with pytest.raises(ValueError, match="momentum"):
        SiameseEncoder(_network(), "byol", **SMALL_HEADS).update_momentum(1.5)
