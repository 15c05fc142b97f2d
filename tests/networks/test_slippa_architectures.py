"""The five SLiPPA architectures by name: UNet, UNet++, DeepLabV3+ (smp) and UNet3+, ResUNet++ (fewlabel)."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss

from fewlabel.networks import (
    ARCHITECTURES,
    ResUNetPlusPlus,
    UNet3Plus,
    build_network,
    encoder_prefixes,
    encoder_state_dict,
    head_prefixes,
)

SLIPPA = ["unet", "unetplusplus", "deeplabv3plus", "unet3plus", "resunetplusplus"]
NEW = {"unet3plus": UNet3Plus, "resunetplusplus": ResUNetPlusPlus}


def _build(arch: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    encoder = kwargs.pop("encoder_name", "resnet18")
    return build_network(arch, in_channels=3, out_channels=4, encoder_name=encoder, **kwargs)


def _head_params(net: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in net.named_parameters() if n.startswith(head_prefixes(net))]


@pytest.mark.parametrize("arch", SLIPPA)
def test_output_shape_and_gradients_reach_encoder_and_head(arch):
    net = _build(arch).train()
    x = torch.rand(2, 3, 64, 96)
    y = net(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 4, 64, 96) and y.dtype == torch.float32
    target = torch.randint(0, 4, (2, 1, 64, 96))
    DiceCELoss(to_onehot_y=True, softmax=True)(y, target).backward()
    first_conv = net.encoder.conv1.weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    head = _head_params(net)
    assert head and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in head)


@pytest.mark.parametrize("arch", sorted(NEW))
def test_slippa_training_size_with_resnet34(arch):
    net = build_network(arch, in_channels=3, out_channels=4).eval()  # default encoder: resnet34
    assert type(net.encoder).__name__ == "ResNetEncoder" and len(net.encoder.layer1) == 3  # ResNet-34: 3-4-6-3
    with torch.no_grad():
        y = net(torch.rand(1, 3, 320, 416))
    assert y.shape == (1, 4, 320, 416) and torch.isfinite(y).all()


def test_unet3plus_deep_supervision_outputs_and_loss():
    net = _build("unet3plus", deep_supervision=True, cat_channels=16).train()
    x = torch.rand(2, 3, 64, 64)
    outs = net(x)
    assert isinstance(outs, list) and len(outs) == 5  # main + bottleneck + d4, d3, d2
    assert all(o.shape == (2, 4, 64, 64) for o in outs)
    # the main output comes first: the same weights without deep supervision give exactly it
    plain = _build("unet3plus", deep_supervision=False, cat_channels=16).train()
    missing, unexpected = plain.load_state_dict(net.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("side_heads.") for k in unexpected)
    torch.testing.assert_close(plain(x), outs[0])

    loss = DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True))(outs, torch.randint(0, 4, (2, 1, 64, 64)))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.side_heads.parameters())
    assert net.encoder.conv1.weight.grad.abs().sum() > 0

    net.eval()
    with torch.no_grad():
        y = net(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 4, 64, 64)
    assert len(plain.side_heads) == 0  # no side heads (and no unused weights) without it


@pytest.mark.parametrize("arch", sorted(NEW))
def test_encoder_weights_path_loads_exactly_the_encoder(arch, tmp_path):
    src = _build(arch, seed=0)
    assert encoder_prefixes(src) == ("encoder.",) and head_prefixes(src) == ("segmentation_head.",)
    assert src.segmentation_head.out_channels == 4  # the head is the layer that maps to the classes
    torch.save(encoder_state_dict(src), tmp_path / "encoder.pt")
    fresh = _build(arch, seed=1)
    loaded = _build(arch, seed=1, encoder_weights_path=tmp_path / "encoder.pt")
    for k, v in loaded.state_dict().items():
        if k.startswith("encoder."):
            assert torch.equal(v, src.state_dict()[k]), k
        else:
            assert torch.equal(v, fresh.state_dict()[k]), k  # the decoder keeps its own initialisation
    decoder = [k for k in loaded.state_dict() if k.startswith("decoder.")]
    assert any(not torch.equal(loaded.state_dict()[k], src.state_dict()[k]) for k in decoder)


@pytest.mark.parametrize("arch", sorted(NEW))
@pytest.mark.parametrize("size", [(63, 96), (64, 80)])
def test_input_size_not_multiple_of_32_is_a_clear_error(arch, size):
    net = _build(arch).eval()
    h, w = size
    with pytest.raises(ValueError, match=rf"{NEW[arch].__name__}.*multiples of 32.*got {h} x {w}.*e\.g\. to 64 x 96"):
        net(torch.rand(1, 3, h, w))


@pytest.mark.parametrize(
    "alias, cls",
    [
        ("unet3plus", UNet3Plus), ("unet3+", UNet3Plus), ("UNet3+", UNet3Plus), ("unet_3plus", UNet3Plus),
        ("resunetplusplus", ResUNetPlusPlus), ("resunet++", ResUNetPlusPlus), ("ResUNet++", ResUNetPlusPlus),
    ],
)
def test_aliases_resolve(alias, cls):
    assert type(build_network(alias, encoder_name="resnet18")) is cls


def test_architectures_lists_the_new_names():
    assert {"unet3plus", "resunetplusplus"} <= set(ARCHITECTURES)
    with pytest.raises(ValueError, match="unknown architecture 'resunet\\+\\+\\+'"):
        build_network("resunet+++")


@pytest.mark.parametrize("arch", sorted(NEW))
def test_trace_and_script_match_eager(arch):
    net = _build(arch, **({"deep_supervision": True} if arch == "unet3plus" else {})).eval()
    x = torch.rand(1, 3, 32, 32)
    other = torch.rand(1, 3, 32, 64)
    with torch.no_grad():
        expected, expected_other = net(x), net(other)
        traced = torch.jit.trace(net, x, check_trace=False)  # checked below, against eager, at two sizes
        torch.testing.assert_close(traced(x), expected)
        torch.testing.assert_close(traced(other), expected_other)  # the trace is not tied to one size
        scripted = torch.jit.script(net)  # what `monai.bundle ckpt_export` does by default
        torch.testing.assert_close(scripted(x), expected)
    with pytest.raises(torch.jit.Error, match="multiples of 32"):
        scripted(torch.rand(1, 3, 50, 32))


@pytest.mark.parametrize("arch", sorted(NEW))
def test_encoder_with_an_empty_stage_works(arch):
    # mit_b0 (SegFormer) returns no feature at H/2: that scale gets no skip
    net = _build(arch, encoder_name="mit_b0").eval()
    assert net.encoder.out_channels[1] == 0
    with torch.no_grad():
        assert net(torch.rand(1, 3, 64, 64)).shape == (1, 4, 64, 64)
