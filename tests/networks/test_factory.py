"""Network factory, MedSASS U-Net, encoder-only freezing and encoder transfer."""

from __future__ import annotations

import pytest
import torch

from fewlabel.errors import CheckpointError
from fewlabel.networks import (
    build_network,
    encoder_state_dict,
    freeze_non_encoder,
    init_from_pretrained,
    load_pretrained,
    prepare_pretraining,
    trainable_parameters,
)


def test_medsass_unet_matches_paper_description():
    net = build_network("medsass_unet").eval()
    assert net.encoder._depth == 3
    assert [b.conv2[0].out_channels for b in net.decoder.blocks] == [256, 128, 64]
    assert type(net.decoder.blocks[0].attention2.attention).__name__ == "SCSEModule"  # channel attention
    # the stages a depth-3 encoder never runs hold no weights
    assert not any(k.startswith(("encoder.layer3", "encoder.layer4")) for k in net.state_dict())
    with torch.no_grad():
        assert net(torch.rand(2, 3, 64, 64)).shape == (2, 1, 64, 64)


@pytest.mark.parametrize("arch", ["unet", "unetplusplus", "deeplabv3plus"])
def test_factory_builds_smp_architectures_without_downloads(arch):
    net = build_network(arch, encoder_name="resnet18", in_channels=1, out_channels=3).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 64, 64)).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network("segformer-xxl")


def test_encoder_only_pretraining_freezes_everything_but_the_encoder():
    net = prepare_pretraining(build_network("medsass_unet", encoder_name="resnet18"), "encoder")
    names = {n for n, p in net.named_parameters() if p.requires_grad}
    assert names and all(n.startswith("encoder.") for n in names)
    assert sum(p.numel() for p in trainable_parameters(net)) == sum(
        v.numel() for k, v in net.named_parameters() if k.startswith("encoder.")
    )
    before = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("decoder.") and v.is_floating_point()}
    opt = torch.optim.SGD(trainable_parameters(net), lr=0.1)
    net(torch.rand(2, 3, 32, 32)).mean().backward()
    opt.step()
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" not in k and "num_batches" not in k)


def test_encoder_transfer_copies_exactly_the_encoder(tmp_path):
    torch.manual_seed(0)
    src = build_network("medsass_unet", encoder_name="resnet18")
    torch.save({"model": src.state_dict()}, tmp_path / "pretrained.pt")
    torch.manual_seed(1)
    dst = build_network("medsass_unet", encoder_name="resnet18")
    fresh = {k: v.clone() for k, v in dst.state_dict().items()}
    init_from_pretrained(dst, tmp_path / "pretrained.pt", mode="encoder", policy=True)
    for k, v in dst.state_dict().items():
        if k.startswith("encoder."):
            assert torch.equal(v, src.state_dict()[k]), k
        elif v.is_floating_point() and v.numel() > 1 and "running" not in k:
            assert torch.equal(v, fresh[k]), k  # decoder keeps its own initialisation
    init_from_pretrained(dst, tmp_path / "pretrained.pt", mode="end_to_end", policy=True)
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in dst.state_dict().items())
    assert set(encoder_state_dict(dst)) == {k for k in dst.state_dict() if k.startswith("encoder.")}


def test_transfer_errors_name_the_file(tmp_path):
    net = build_network("medsass_unet", encoder_name="resnet18")
    with pytest.raises(CheckpointError, match="missing.pt"):
        init_from_pretrained(net, tmp_path / "missing.pt", policy=True)
    assert init_from_pretrained(net, tmp_path / "missing.pt", policy="auto") is net  # auto: random init
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(CheckpointError, match="trunc.pt"):
        init_from_pretrained(net, tmp_path / "trunc.pt", policy=True)
    torch.save(build_network("medsass_unet", encoder_name="resnet34").state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt.*another network_def"):
        load_pretrained(net, tmp_path / "other.pt", part="encoder")


@pytest.mark.parametrize("arch,kwargs", [("medsass_unet", {}), ("medsass_unet", {"encoder_name": "resnet18"}),
                                         ("vit_unet", {"img_size": 64, "num_layers": 2})])
def test_every_parameter_gets_a_gradient(arch, kwargs):
    """Unused parameters break DistributedDataParallel (multi_gpu_train.json) and bloat checkpoints."""
    net = build_network(arch, **kwargs)
    net(torch.rand(2, 3, 64, 64)).mean().backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []


def test_freeze_needs_a_known_encoder():
    with pytest.raises(ValueError, match="encoder"):
        freeze_non_encoder(torch.nn.Conv2d(1, 1, 1))


def test_all_but_head_transfer_keeps_every_weight_except_the_final_layer(tmp_path):
    """SurgicalSemiSeg fine-tuning: a 3-channel reconstruction model becomes a K-class segmenter."""
    torch.manual_seed(0)
    src = build_network("deeplabv3plus", encoder_name="resnet18", out_channels=3)
    torch.save(src.state_dict(), tmp_path / "denoiser.pt")
    torch.manual_seed(1)
    dst = build_network("deeplabv3plus", encoder_name="resnet18", out_channels=8)
    fresh_head = {k: v.clone() for k, v in dst.state_dict().items() if k.startswith("segmentation_head.")}
    init_from_pretrained(dst, tmp_path / "denoiser.pt", mode="all_but_head", policy=True)
    for k, v in dst.state_dict().items():
        if k.startswith("segmentation_head."):
            assert torch.equal(v, fresh_head[k]) and v.shape[0] == 8, k
        else:
            assert torch.equal(v, src.state_dict()[k]), k
    with pytest.raises(CheckpointError, match="denoiser.pt"):
        init_from_pretrained(build_network("unet", encoder_name="resnet18", out_channels=8), tmp_path / "denoiser.pt",
                             mode="all_but_head", policy=True)


def test_imagenet_backbone_state_dict_loads_as_published(tmp_path):
    """A torchvision ResNet state dict (bare keys, with its classifier) loads into any smp-encoder network."""
    import torchvision

    from fewlabel.errors import CheckpointError
    from fewlabel.networks import build_network

    backbone = torchvision.models.resnet18(weights=None)
    torch.save(backbone.state_dict(), tmp_path / "resnet18.pth")
    for arch in ("unet", "unet3plus"):
        net = build_network(arch, 3, 4, encoder_name="resnet18", encoder_weights_path=tmp_path / "resnet18.pth")
        assert torch.equal(net.encoder.layer4[1].conv2.weight, backbone.layer4[1].conv2.weight)
        assert torch.equal(net.encoder.conv1.weight, backbone.conv1.weight)
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(CheckpointError, match="resnet34.pth"):
        build_network("unet", 3, 4, encoder_name="resnet18", encoder_weights_path=tmp_path / "resnet34.pth")
    with pytest.raises(CheckpointError, match="missing.pth"):
        build_network("unet", 3, 4, encoder_name="resnet18", encoder_weights_path=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unet3plus only"):
        build_network("unet", 3, 4, encoder_name="resnet18", deep_supervision=True)
