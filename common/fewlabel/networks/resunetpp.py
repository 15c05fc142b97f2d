"""ResUNet++ (Jha et al., "ResUNet++: An advanced architecture for medical image segmentation",
IEEE ISM 2019) on a pluggable segmentation_models_pytorch encoder, one of the five SLiPPA architectures.

How it maps onto the original. ResUNet++ had its own residual encoder: a stem and three
strided residual units (16, 32, 64, 128 channels at H, H/2, H/4, H/8), each followed by a
squeeze-and-excitation (SE) block, an ASPP bridge at H/8, three decoder stages and an output
ASPP. SLiPPA equips every architecture with a ResNet-34 encoder, so here:

* **encoder**: any ``smp.encoders.get_encoder`` name at depth 5 (default ``resnet34``); its
  features ``e1..e5`` at H/2 .. H/32 replace the original's residual units (the
  full-resolution input the encoder also returns is not used);
* **squeeze-excitation**: the SE block that ended each original encoder unit is applied to each
  encoder feature after the encoder (global average pool -> FC ``C -> C/r`` -> ReLU -> FC
  ``C/r -> C`` -> sigmoid -> channel scaling, r = 8); the re-weighted features are the skips;
* **ASPP bridge** on the SE-weighted deepest feature ``e5`` (H/32): parallel ``3x3`` convolutions
  with dilation 1, 6, 12, 18, each followed by BatchNorm, summed, then a ``1x1`` convolution;
* **decoder**: four stages (H/16, H/8, H/4, H/2; skips ``e4..e1``) instead of three, each:
  attention block -> x2 nearest upsampling -> concatenation with the skip -> residual block
  ``BN-ReLU-conv3x3-BN-ReLU-conv3x3`` + ``1x1 conv-BN`` projection shortcut;
* **attention block** as in ResUNet++: the skip ``g`` (``BN-ReLU-conv3x3``, then 2x2 max-pooling
  to the decoder's scale) and the decoder feature ``x`` (``BN-ReLU-conv3x3``) are summed, passed
  through ``BN-ReLU-conv3x3``, and the result multiplies ``x`` element-wise. As in the authors'
  implementation, no sigmoid bounds the attention map; the skip itself reaches the stage
  unchanged through the concatenation;
* **output**: an output ASPP (``head_channels``, 16 as in the original) at H/2, the ``1x1``
  convolution :attr:`ResUNetPlusPlus.segmentation_head` to classes, and bilinear upsampling by 2
  to the input size (the original needs none: its last stage is at full resolution).

An encoder stage with no channels (e.g. the H/2 stage of ``mit_b*`` and timm ConvNeXt encoders)
gives its decoder stage no skip: that stage is upsampling and a residual block only.
"""

from __future__ import annotations

from collections.abc import Sequence

import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torch.nn.functional as F
from segmentation_models_pytorch.base import initialization as smp_init

from fewlabel.networks.unet3plus import ENCODER_DEPTH, check_input_size, encoder_output_stride

__all__ = ["ASPP", "AttentionBlock", "ResidualBlock", "ResUNetPlusPlus", "ResUNetPlusPlusDecoder", "SqueezeExcitation"]


def _bn_relu_conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """Pre-activation unit ``BN -> ReLU -> conv``; (B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2),
    )


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(FC(ReLU(FC(avgpool(x)))))``, FCs ``C -> max(1, C // r) -> C``.

    Forward: (B, C, H, W) -> (B, C, H, W), each channel scaled by a weight in (0, 1).
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}.")
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc(x.mean(dim=(2, 3)))
        return x * w[:, :, None, None]


class ASPP(nn.Module):
    """ResUNet++'s atrous spatial pyramid pooling: ``3x3`` convolutions with dilations ``(1, *rates)``,
    each followed by BatchNorm, summed, then a ``1x1`` convolution.

    Forward: (B, C_in, H, W) -> (B, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        dilations = (1, *(int(r) for r in rates))
        if any(d < 1 for d in dilations):
            raise ValueError(f"ASPP rates must be >= 1, got {tuple(rates)}.")
        self.branches = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 3, padding=d, dilation=d), nn.BatchNorm2d(out_channels)
                )
                for d in dilations
            ]
        )
        self.project = nn.Conv2d(out_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        y = outs[0]
        for out in outs[1:]:
            y = y + out
        return self.project(y)


class ResidualBlock(nn.Module):
    """ResUNet residual unit: ``BN-ReLU-conv3x3-BN-ReLU-conv3x3`` plus a ``1x1 conv-BN`` projection shortcut.

    Forward: (B, C_in, H, W) -> (B, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_bn_relu_conv(in_channels, out_channels), _bn_relu_conv(out_channels, out_channels))
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class AttentionBlock(nn.Module):
    """ResUNet++ attention: ``x * conv(BN-ReLU(pool(conv(BN-ReLU(g))) + conv(BN-ReLU(x))))``.

    Args:
        skip_channels: channels of the encoder skip ``g`` (at twice the decoder's resolution).
        channels: channels of the decoder feature ``x`` (and of the attention map).

    Forward: ``g`` (B, skip_channels, 2h, 2w), ``x`` (B, channels, h, w) -> (B, channels, h, w):
    ``x`` weighted element-wise by an (unbounded) attention map computed from both.
    """

    def __init__(self, skip_channels: int, channels: int) -> None:
        super().__init__()
        self.skip_conv = _bn_relu_conv(skip_channels, channels)
        self.pool = nn.MaxPool2d(2, 2)
        self.x_conv = _bn_relu_conv(channels, channels)
        self.attn_conv = _bn_relu_conv(channels, channels)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        attn = self.attn_conv(self.pool(self.skip_conv(g)) + self.x_conv(x))
        return attn * x


class _DecoderStage(nn.Module):
    """attention(skip, x) -> x2 nearest upsampling -> concat with skip -> residual block.
    (B, C_in, h, w), skip (B, C_skip, 2h, 2w) -> (B, C_out, 2h, 2w)."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.attention = AttentionBlock(skip_channels, in_channels)
        self.block = ResidualBlock(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.attention(skip, x), size=(skip.shape[2], skip.shape[3]), mode="nearest")
        return self.block(torch.cat([x, skip], dim=1))


class _NoSkipStage(nn.Module):
    """A decoder stage whose encoder stage is empty: x2 nearest upsampling -> residual block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = ResidualBlock(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(F.interpolate(x, size=(skip.shape[2], skip.shape[3]), mode="nearest"))


class ResUNetPlusPlusDecoder(nn.Module):
    """Everything of ResUNet++ between the encoder and the final ``1x1`` convolution.

    Args:
        encoder_channels: channels of ``e1..e5`` (0 marks an empty stage: no SE, no skip).
        decoder_channels: output channels of the four decoder stages (H/16, H/8, H/4, H/2).
        bridge_channels: output channels of the ASPP bridge on ``e5``.
        head_channels: output channels of the output ASPP.
        se_reduction: SE channel reduction ratio r.
        aspp_rates: dilation rates of the ASPP branches besides the plain ``3x3`` one.

    Forward: ``[e1, ..., e5]`` -> (B, head_channels, H/2, W/2).
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int] = (256, 128, 64, 32),
        bridge_channels: int = 256,
        head_channels: int = 16,
        se_reduction: int = 8,
        aspp_rates: Sequence[int] = (6, 12, 18),
    ) -> None:
        super().__init__()
        enc = [int(c) for c in encoder_channels]
        dec = [int(c) for c in decoder_channels]
        if len(enc) != ENCODER_DEPTH or enc[-1] <= 0:
            raise ValueError(f"expected {ENCODER_DEPTH} encoder feature channels, the last > 0, got {enc}")
        if len(dec) != ENCODER_DEPTH - 1 or min(dec) < 1:
            raise ValueError(f"decoder_channels must be {ENCODER_DEPTH - 1} positive ints (H/16 .. H/2), got {dec}")
        if bridge_channels < 1 or head_channels < 1:
            raise ValueError(f"bridge_channels and head_channels must be >= 1, got {bridge_channels}, {head_channels}")
        self.se = nn.ModuleList([SqueezeExcitation(c, se_reduction) if c > 0 else nn.Identity() for c in enc])
        self.bridge = ASPP(enc[-1], bridge_channels, aspp_rates)
        ins = [bridge_channels, *dec[:-1]]
        skips = enc[-2::-1]  # e4, e3, e2, e1
        self.stages = nn.ModuleList(
            [_DecoderStage(i, s, o) if s > 0 else _NoSkipStage(i, o) for i, s, o in zip(ins, skips, dec)]
        )
        self.output_aspp = ASPP(dec[-1], head_channels, aspp_rates)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for i, se in enumerate(self.se):
            skips.append(se(features[i]))
        x = self.bridge(skips[-1])
        for k, stage in enumerate(self.stages):
            x = stage(x, skips[len(skips) - 2 - k])
        return self.output_aspp(x)


class ResUNetPlusPlus(nn.Module):
    """ResUNet++ on a pluggable smp encoder (see the module docstring for the mapping onto the paper).

    Args:
        encoder_name: any ``smp.encoders.get_encoder_names()`` entry; default ``"resnet34"`` (SLiPPA).
            Built with ``weights=None`` (nothing is downloaded): load ImageNet weights you have on disk
            with :func:`fewlabel.networks.transfer.load_pretrained` (``part="encoder"``).
        in_channels: channels of the input image.
        classes: channels of the output logits (K classes, or 1 for binary).
        decoder_channels: channels of the four decoder stages, coarse to fine. Defaults to (256, 128, 64, 32).
        bridge_channels: channels of the ASPP bridge. Defaults to 256.
        head_channels: channels of the output ASPP. Defaults to 16 (as in the original).
        se_reduction: squeeze-excitation reduction ratio. Defaults to 8 (as in the original).
        aspp_rates: ASPP dilation rates besides rate 1. Defaults to (6, 12, 18) (as in the original).

    Attributes:
        encoder: the smp encoder (state-dict prefix ``encoder.``).
        decoder: :class:`ResUNetPlusPlusDecoder` (SE, bridge, decoder stages, output ASPP).
        segmentation_head: the final ``1x1`` convolution to ``classes``.

    Forward:
        ``x``: ``(B, in_channels, H, W)`` float image (normalised as the encoder expects), H and W
        positive multiples of 32. Returns ``(B, classes, H, W)`` float logits in (-inf, inf), no activation.

    Raises:
        ValueError: in ``forward`` when H or W is not a multiple of 32 (the message gives the size to pad to).

    Export: works with ``torch.jit.trace`` in ``eval()`` mode and with ``torch.jit.script``.
    """

    def __init__(
        self,
        encoder_name: str = "resnet34",
        in_channels: int = 3,
        classes: int = 1,
        decoder_channels: Sequence[int] = (256, 128, 64, 32),
        bridge_channels: int = 256,
        head_channels: int = 16,
        se_reduction: int = 8,
        aspp_rates: Sequence[int] = (6, 12, 18),
    ) -> None:
        super().__init__()
        if classes < 1 or in_channels < 1:
            raise ValueError(f"in_channels and classes must be >= 1, got {in_channels}, {classes}.")
        self.encoder = smp.encoders.get_encoder(
            encoder_name, in_channels=in_channels, depth=ENCODER_DEPTH, weights=None
        )
        self.size_multiple = encoder_output_stride(self.encoder)
        self.decoder = ResUNetPlusPlusDecoder(
            list(self.encoder.out_channels)[1:], decoder_channels, bridge_channels, head_channels, se_reduction,
            aspp_rates,
        )
        self.segmentation_head = nn.Conv2d(head_channels, classes, kernel_size=1)
        smp_init.initialize_decoder(self.decoder)
        smp_init.initialize_head(self.segmentation_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.size_multiple, "ResUNetPlusPlus")
        size = (x.shape[2], x.shape[3])
        features = self.encoder(x)[1:]
        logits = self.segmentation_head(self.decoder(features))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
