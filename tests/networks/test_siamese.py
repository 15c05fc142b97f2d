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


def _vit_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network("vit_unet", in_channels=3, out_channels=1, img_size=32, patch_size=8, hidden_size=32,
                         mlp_dim=64, num_heads=2, num_layers=2, base_channels=4)


def test_dino_on_a_vit_trains_the_vit_with_its_class_token():
    net = _vit_unet()
    model = SiameseEncoder(net, "dino", **SMALL_HEADS)
    assert model.encoder is net.vit and model.feature_dim == 32
    views = _views(2)
    torch.testing.assert_close(model.features(views), net.vit.forward_features(views)[:, 0])
    loss = SiameseLoss("dino", output_dim=model.output_dim)(model(views))
    loss.backward()
    assert net.vit.patch_embed.proj.weight.grad is not None and net.inc[0].weight.grad is None


@pytest.mark.parametrize("method", ["mae", "simmim"])
def test_masked_image_loss_is_on_the_masked_patches_only(method):
    from lightly.models.utils import patchify

    from fewlabel.losses import MaskedImageLoss
    from fewlabel.networks import MaskedImageModel

    net = _vit_unet()
    model = MaskedImageModel(net, method, image_size=(32, 32), decoder_dim=16, decoder_depth=1, decoder_heads=2)
    assert model.backbone.vit is net.vit  # the segmentation network's own ViT
    images = _views(1)
    # 16 patches + the class token; keep the class token and patches 1-4, mask the other 12
    idx_keep = torch.tensor([[0, 1, 2, 3, 4]] * 2)
    idx_mask = torch.tensor([list(range(5, 17))] * 2)
    out = model(images, idx_keep=idx_keep, idx_mask=idx_mask)
    patches = patchify(images, 8)
    assert out["prediction"].shape == out["target"].shape == (2, 12, 8 * 8 * 3)
    torch.testing.assert_close(out["target"], patches[:, 4:])  # exactly the masked patches' pixels
    loss = MaskedImageLoss(method)(out)
    expected = ((out["prediction"] - patches[:, 4:]) ** 2).mean() if method == "mae" else \
        (out["prediction"] - patches[:, 4:]).abs().mean()
    torch.testing.assert_close(loss, expected)
    # the kept patches' pixels do not enter the loss: changing them leaves the target unchanged
    changed = images.clone()
    changed[:, :, :8, :] = 0.5  # the first patch row: patches 0-3 (tokens 1-4), all kept
    torch.testing.assert_close(model(changed, idx_keep=idx_keep, idx_mask=idx_mask)["target"], out["target"])
    # drawn masks: the methods' ratios
    drawn = model(images)
    assert drawn["target"].shape[1] == (12 if method == "mae" else 10)
