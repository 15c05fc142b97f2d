"""PolyCL's U-Net / ResU-Net / TransUNet segmentation networks (fewlabel.networks.polycl)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from fewlabel.engines.simclr import ContrastiveEncoder
from fewlabel.networks import load_pretrained
from fewlabel.networks.polycl import (
    BACKBONES,
    PolyCLEncoder,
    PolyCLUNet,
    ResConvBlock,
    TransUNetEncoder,
    build_polycl_unet,
)

# small widths keep the CPU tests fast; the structure (5 stages, 4 downsamplings) is the default one
CH = (4, 8, 16, 32, 64)
TINY_VIT = {"img_size": 64, "embed_dim": 32, "depth": 1, "num_heads": 2}


def make(backbone: str, seed: int = 0, out_channels: int = 2) -> PolyCLUNet:
    torch.manual_seed(seed)
    kw = {"transformer": dict(TINY_VIT)} if backbone == "transunet" else {}
    return PolyCLUNet(1, out_channels, backbone=backbone, channels=CH, **kw)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_output_shape(backbone: str) -> None:
    net = make(backbone).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 1, 64, 64))
    assert y.shape == (2, 2, 64, 64) and y.dtype == torch.float32 and torch.isfinite(y).all()


def test_non_multiple_size_is_a_clear_error() -> None:
    net = make("unet").eval()
    with pytest.raises(ValueError, match=r"multiples of 16.*60 x 72.*64 x 80"):
        net(torch.randn(1, 1, 60, 72))
    with pytest.raises(ValueError, match="B, C, H, W"):
        net(torch.randn(1, 64, 64))


@pytest.mark.parametrize(
    "encoder",
    [PolyCLEncoder(1, CH, "unet"), PolyCLEncoder(3, (4, 8, 16), "resunet"), TransUNetEncoder(1, CH, **TINY_VIT)],
    ids=["unet", "resunet-3-stages", "transunet"],
)
def test_encoder_out_channels_match_features(encoder: nn.Module) -> None:
    x = torch.randn(2, encoder.in_channels, 64, 64)
    feats = encoder.eval()(x)
    assert isinstance(encoder.out_channels, tuple)
    assert [f.shape[1] for f in feats] == list(encoder.out_channels)
    assert [tuple(f.shape[2:]) for f in feats] == [(64 // 2**i, 64 // 2**i) for i in range(len(feats))]
    assert encoder.size_multiple == 2 ** (len(feats) - 1)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_instance_norm_and_leaky_relu(backbone: str) -> None:
    net = make(backbone)
    for part in (net.encoder, net.decoder):
        mods = list(part.modules())
        assert any(isinstance(m, nn.InstanceNorm2d) for m in mods)
        lrelus = [m for m in mods if isinstance(m, nn.LeakyReLU)]
        assert lrelus and all(m.negative_slope == 0.2 for m in lrelus)
        assert not any(isinstance(m, (nn.BatchNorm2d, nn.ReLU)) for m in mods)
    n_res = sum(isinstance(m, ResConvBlock) for m in net.modules())
    assert (n_res > 0) == (backbone == "resunet")


@pytest.mark.parametrize("backbone", BACKBONES)
def test_contrastive_checkpoint_encoder_transfer(backbone: str, tmp_path) -> None:
    pre = make(backbone, seed=1)
    wrapper = ContrastiveEncoder(pre, projection_dim=256)
    assert wrapper(torch.randn(2, 1, 64, 64)).shape == (2, 256)
    ckpt = tmp_path / "pretrained.pt"
    torch.save({"model": wrapper.state_dict()}, ckpt)

    fresh = make(backbone, seed=2)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    load_pretrained(fresh, ckpt, part="encoder")
    after, source = fresh.state_dict(), pre.state_dict()
    enc_keys = [k for k in after if k.startswith("encoder.")]
    assert enc_keys and all(torch.equal(after[k], source[k]) for k in enc_keys)
    others = [k for k in after if not k.startswith("encoder.")]
    assert others and all(torch.equal(after[k], before[k]) for k in others)
    assert any(not torch.equal(before[k], source[k]) for k in enc_keys)  # the seeds did differ


@pytest.mark.parametrize("backbone", BACKBONES)
def test_gradients_reach_every_parameter(backbone: str) -> None:
    net = make(backbone).train()
    net(torch.randn(2, 1, 32, 32)).square().mean().backward()  # deepest maps 2 x 2: instance norm can train
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("backbone", BACKBONES)
def test_torchscript_scripting_matches_eager(backbone: str) -> None:
    net = make(backbone).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(torch.jit.Error, match="multiples of 16"):
        scripted(torch.randn(1, 1, 40, 40))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_deterministic_init(backbone: str) -> None:
    a, b, c = make(backbone, seed=3), make(backbone, seed=3), make(backbone, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_transunet_resamples_positional_embedding_for_other_sizes() -> None:
    net = make("transunet").eval()  # positional embedding built for 64 x 64 (a 4 x 4 token grid)
    assert tuple(net.encoder.pos_embed.shape) == (1, 32, 4, 4)
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 48)).shape == (1, 2, 32, 48)


def test_builder() -> None:
    net = build_polycl_unet("Trans-UNet", 1, 3, channels=(4, 8, 16), img_size=32, embed_dim=16, num_heads=2,
                            depth=1)
    assert isinstance(net.encoder, TransUNetEncoder) and net.size_multiple == 4
    assert net.encoder.transformer.num_layers == 1
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 3, 32, 32)
    default = build_polycl_unet("res_unet")
    assert isinstance(default.encoder, PolyCLEncoder) and default.encoder.block == "resunet"
    assert default.encoder.out_channels == (32, 64, 128, 256, 512) and default.size_multiple == 16
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_polycl_unet("swinunet")
    with pytest.raises(ValueError, match="unknown PolyCLUNet options"):
        build_polycl_unet("unet", encoder_name="resnet34")
    with pytest.raises(ValueError, match="transunet' only"):
        build_polycl_unet("unet", depth=4)
    with pytest.raises(ValueError, match="img_size"):
        TransUNetEncoder(1, CH, img_size=40)
    with pytest.raises(ValueError, match="block must be one of"):
        PolyCLEncoder(1, CH, block="vgg")


@pytest.mark.parametrize("arch", ["polycl_unet", "polycl_resunet", "polycl_transunet"])
def test_factory_builds_each_polycl_backbone_by_name(arch):
    from fewlabel.networks import build_network

    net = build_network(arch, in_channels=1, out_channels=2, channels=(8, 16, 32))
    with torch.no_grad():
        assert net.eval()(torch.rand(1, 1, 32, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(ValueError, match="encoder_name"):
        build_network(arch, in_channels=1, out_channels=1, encoder_name="resnet34")


def test_contrastive_encoder_with_one_linear_layer_is_polycl_g():
    from fewlabel.engines.simclr import ContrastiveEncoder
    from fewlabel.networks import build_network

    wrapper = ContrastiveEncoder(build_network("polycl_unet", 1, 1, channels=(8, 16, 32)), projection_dim=256,
                                 hidden_dim=0)
    assert [type(m) for m in wrapper.projection] == [torch.nn.Linear]
    assert wrapper.projection[0].in_features == 32 and wrapper.projection[0].out_features == 256
    assert wrapper(torch.rand(3, 1, 32, 32)).shape == (3, 256)
