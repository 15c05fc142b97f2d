"""Build segmentation networks by name, so configs can switch architectures with one string.

Architectures come from segmentation_models_pytorch (``unet``, ``unetplusplus``,
``deeplabv3plus``) with a pluggable encoder, or from ``fewlabel.networks``: ``unet3plus`` and
``resunetplusplus`` (also pluggable smp encoders), ``medsass_unet`` and ``vit_unet``. Names are
matched case-insensitively, ignoring ``-`` and ``_``, with ``+`` read as ``plus``: ``"UNet3+"``,
``"unet_3plus"``, ``"ResUNet++"`` and ``"resunet++"`` all work. Encoder weights are off by
default: nothing is ever downloaded. To start from ImageNet weights you have on disk, pass
``encoder_weights_path`` (a state dict of the encoder).
"""

from __future__ import annotations

import os
from typing import Any

import segmentation_models_pytorch as smp
import torch.nn as nn

from fewlabel.arguments import as_bool, as_optional

__all__ = ["ARCHITECTURES", "build_network", "medsass_unet"]

_SMP = {"unet": smp.Unet, "unetplusplus": smp.UnetPlusPlus, "deeplabv3plus": smp.DeepLabV3Plus}


def medsass_unet(
    in_channels: int = 3, out_channels: int = 1, encoder_name: str = "resnet50",
    decoder_channels: tuple[int, ...] = (256, 128, 64), decoder_attention_type: str | None = "scse",
) -> nn.Module:
    """The CNN U-Net of MedSASS (Appendix A.1): ResNet-50 encoder, encoder and decoder depth 3,
    decoder channels 256/128/64, channel (squeeze-excitation) attention in the decoder blocks.

    Input ``(B, in_channels, H, W)`` with H, W multiples of 8; output ``(B, out_channels, H, W)`` logits.
    """
    depth = len(decoder_channels)
    net = smp.Unet(
        encoder_name=encoder_name, encoder_weights=None, encoder_depth=depth,
        decoder_channels=tuple(decoder_channels), decoder_attention_type=decoder_attention_type,
        in_channels=in_channels, classes=out_channels,
    )
    # smp keeps modules that never run here; drop their weights so checkpoints hold only what is
    # used and DistributedDataParallel sees no unused parameters. The ResNet stages a shallow
    # encoder skips by depth:
    for stage in range(depth, 5):  # layer k runs only when depth >= k + 1
        if hasattr(net.encoder, f"layer{stage}"):
            setattr(net.encoder, f"layer{stage}", nn.Identity())
    # the last decoder block has no skip connection, so its skip attention never runs
    net.decoder.blocks[-1].attention1 = nn.Identity()
    return net


def _unet3plus(**kwargs: Any) -> nn.Module:
    from fewlabel.networks.unet3plus import UNet3Plus

    return UNet3Plus(**kwargs)


def _resunetplusplus(**kwargs: Any) -> nn.Module:
    from fewlabel.networks.resunetpp import ResUNetPlusPlus

    return ResUNetPlusPlus(**kwargs)


def _vit_unet(**kwargs: Any) -> nn.Module:
    from fewlabel.networks.vit_unet import ViTUNet

    return ViTUNet(**kwargs)


def _polycl(backbone: str, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
    from fewlabel.networks.polycl import build_polycl_unet

    return build_polycl_unet(backbone, in_channels, out_channels, **kwargs)


ARCHITECTURES = (*_SMP, "unet3plus", "resunetplusplus", "medsass_unet", "vit_unet", "polycl_unet", "polycl_resunet",
                 "polycl_transunet")


def build_network(
    arch: str, in_channels: int = 3, out_channels: int = 1, encoder_name: str | None = None,
    encoder_weights_path: str | os.PathLike | None = None, **kwargs: Any,
) -> nn.Module:
    """Build a network by architecture name.

    Args:
        arch: one of :data:`ARCHITECTURES`.
        in_channels: input image channels.
        out_channels: output channels (1 for a binary sigmoid output, K classes otherwise).
        encoder_name: encoder of the CNN architectures (any ``smp.encoders.get_encoder_names()``);
            default ``resnet34`` for the smp ones, ``unet3plus`` and ``resunetplusplus``,
            ``resnet50`` for ``medsass_unet``; not used by ``polycl_*`` (PolyCL's own encoders:
            ``polycl_unet``, ``polycl_resunet``, ``polycl_transunet``, see :mod:`fewlabel.networks.polycl`).
        encoder_weights_path: optional local weights for the encoder (e.g. ImageNet weights a user
            downloaded: a torchvision/timm backbone state dict, or a network's ``encoder.*`` weights);
            loaded with :func:`fewlabel.networks.transfer.load_encoder_weights`. ``None`` or ``""``:
            random initialisation.
        kwargs: passed to the architecture. ``deep_supervision=False`` is accepted (and ignored) by
            every architecture, so a config can carry the key whatever ``arch`` is; ``True`` only
            by ``unet3plus``.

    Returns:
        The network; its forward maps ``(B, in_channels, H, W)`` to ``(B, out_channels, H, W)`` logits.
    """
    key = arch.lower().replace("-", "").replace("_", "").replace("+", "plus")
    encoder_weights_path = as_optional(encoder_weights_path, "encoder_weights_path")
    if "deep_supervision" in kwargs:
        kwargs["deep_supervision"] = as_bool(kwargs["deep_supervision"], "deep_supervision")
    if key != "unet3plus" and "deep_supervision" in kwargs:
        if kwargs.pop("deep_supervision"):
            raise ValueError(f"deep_supervision is available for unet3plus only, not '{arch}'")
    if key in ("unet", "unetplusplus", "deeplabv3plus"):
        net = _SMP[key](encoder_name=encoder_name or "resnet34", encoder_weights=None, in_channels=in_channels,
                        classes=out_channels, **kwargs)
    elif key in ("unet3plus", "resunetplusplus"):
        build = _unet3plus if key == "unet3plus" else _resunetplusplus
        net = build(encoder_name=encoder_name or "resnet34", in_channels=in_channels, classes=out_channels, **kwargs)
    elif key == "medsassunet":
        net = medsass_unet(in_channels, out_channels, encoder_name=encoder_name or "resnet50", **kwargs)
    elif key == "vitunet":
        net = _vit_unet(in_channels=in_channels, out_channels=out_channels, **kwargs)
    elif key in ("polyclunet", "polyclresunet", "polycltransunet"):
        if encoder_name:
            raise ValueError(f"'{arch}' has its own encoder (fewlabel.networks.polycl); encoder_name is not used, "
                             f"got '{encoder_name}'")
        net = _polycl(key.removeprefix("polycl"), in_channels, out_channels, **kwargs)
    else:
        raise ValueError(f"unknown architecture '{arch}', expected one of {ARCHITECTURES}")
    if encoder_weights_path:
        from fewlabel.networks.transfer import load_encoder_weights

        load_encoder_weights(net, encoder_weights_path)
    return net
