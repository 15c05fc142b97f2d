"""Tests of fewlabel.networks.vit_unet: the MedSASS ViT-small U-Net."""

from __future__ import annotations

import warnings

import pytest
import torch

from fewlabel.networks.vit_unet import ViTUNet

SMALL = dict(img_size=64, num_layers=2, hidden_size=96, num_heads=3, mlp_dim=192, base_channels=8)


def small_net(**kwargs) -> ViTUNet:
    torch.manual_seed(0)
    return ViTUNet(**{**SMALL, **kwargs}).eval()


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(), (2, 3, 64, 64)),  # the size the position embedding was built for
        (dict(), (1, 3, 32, 96)),  # other sizes: position embedding resampled
        (dict(in_channels=1, out_channels=3), (2, 1, 48, 64)),
        (dict(patch_size=16), (1, 3, 80, 64)),
        (dict(patch_size=4, img_size=32), (1, 3, 16, 32)),
        (dict(bilinear=False), (1, 3, 64, 32)),
    ],
)
def test_output_shape(kwargs, shape):
    net = small_net(**kwargs)
    with torch.no_grad():
        out = net(torch.rand(*shape))
    out_channels = kwargs.get("out_channels", 1)
    assert out.shape == (shape[0], out_channels, shape[2], shape[3])
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("fusion", ["add", "concat"])
def test_fusion_modes(fusion):
    net = small_net(fusion=fusion)
    has_fuse_conv = any(k.startswith("vc.fuse.") for k in net.state_dict())
    assert has_fuse_conv == (fusion == "concat")
    with torch.no_grad():
        assert net(torch.rand(2, 3, 64, 64)).shape == (2, 1, 64, 64)


def test_bad_fusion_raises():
    with pytest.raises(ValueError, match="fusion"):
        small_net(fusion="multiply")


@pytest.mark.parametrize("size", [(64, 60), (40, 64)])
def test_bad_input_size_raises(size):
    net = small_net()
    with pytest.raises(ValueError, match="multiples of 16"):
        net(torch.rand(1, 3, *size))


def test_bad_size_names_patch_multiple():
    # patch 32 with four 2x poolings needs multiples of lcm(16, 32) = 32
    net = small_net(patch_size=32)
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.rand(1, 3, 48, 64))
    with pytest.raises(ValueError, match="img_size"):
        ViTUNet(**{**SMALL, "img_size": 72})


def test_encoder_state_dict():
    net = small_net()
    enc = net.encoder_state_dict()
    full = net.state_dict()
    assert all(k.startswith(ViTUNet.encoder_prefixes) for k in enc)
    assert set(enc) == {k for k in full if k.startswith(net.encoder_prefixes)}
    for prefix in (
        "vit.patch_embed.",
        "vit.blocks.",
        "vit.pos_embed",
        "inc.",
        "down1.",
        "down4.",
        "vc.conv.",
        "vc.linear.",
    ):
        assert any(k.startswith(prefix) for k in enc), prefix
    assert not any(k.startswith(("up1.", "up2.", "up3.", "up4.", "outc.")) for k in enc)
    assert any(k.startswith("up4.") for k in full) and any(k.startswith("outc.") for k in full)
    # encoder transfer: the encoder weights load into a fresh network, the decoder stays
    other = ViTUNet(**SMALL)
    missing, unexpected = other.load_state_dict(enc, strict=False)
    assert not unexpected
    assert missing and all(k.startswith(("up", "outc")) for k in missing)
    assert torch.equal(other.vit.pos_embed, net.vit.pos_embed)


def test_gradients_reach_vit():
    net = small_net().train()
    net(torch.rand(2, 3, 64, 64)).square().mean().backward()
    for name in ("patch_embed.proj.weight", "pos_embed", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight"):
        grad = net.vit.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_vit_branch_changes_output():
    # train mode: BatchNorm uses batch statistics; untrained eval-mode BN shrinks every signal
    net = small_net().train()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
        # random, not constant: a constant shift over channels is removed by the final LayerNorm
        weight = net.vit.blocks[-1].mlp.fc2.weight
        weight.add_(torch.randn_like(weight))
        after = net(x)
    assert not torch.allclose(before, after, atol=1e-3)


@pytest.mark.parametrize("fusion", ["add", "concat"])
def test_torchscript_matches_eager(fusion):
    net = small_net(fusion=fusion)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(net)
    with torch.no_grad():
        for shape in [(2, 3, 64, 64), (1, 3, 32, 48)]:  # scripted keeps working on other sizes
            x = torch.rand(*shape)
            assert torch.allclose(scripted(x), net(x), atol=1e-5)


def test_paper_configuration():
    torch.manual_seed(0)
    net = ViTUNet().eval()  # ViT-small/8 (384, 1536, 6 heads, 12 blocks), base 64, 224 x 224
    n_vit = sum(p.numel() for p in net.vit.parameters())
    n_all = sum(p.numel() for p in net.parameters())
    assert 21.5e6 < n_vit < 21.9e6  # ViT-S/8 without head: about 21.7 M
    assert 38e6 < n_all < 41e6  # + U-Net (bilinear, 64 base channels, ~17.3 M) + VC
    with torch.no_grad():
        out = net(torch.rand(1, 3, 224, 224))
    assert out.shape == (1, 1, 224, 224)
    assert torch.isfinite(out).all()
