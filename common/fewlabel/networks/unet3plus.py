"""UNet 3+ (Huang et al., "UNet 3+: A full-scale connected UNet for medical image segmentation",
ICASSP 2020) on a pluggable segmentation_models_pytorch encoder, one of the five SLiPPA architectures.

Mapping onto the original (which used its own five-level VGG-style encoder, levels at H, H/2, ..., H/16):
here the encoder is any ``smp.encoders.get_encoder`` name (default ``resnet34``, as SLiPPA uses) at depth 5.
Its five feature maps ``e1..e5`` at H/2, H/4, H/8, H/16 and H/32 play the roles of the original's
``X_En^1..X_En^5`` (``e5`` is the bottleneck); the full-resolution input the encoder also returns is
not a learned feature and is not used. The four decoder stages therefore sit at H/16, H/8, H/4 and
H/2, and the logits of the last one are upsampled bilinearly by 2 to the input size.

Decoder stage ``i`` (scale H/2^i, i = 4, 3, 2, 1) aggregates five inputs, each through a
``3x3 conv - BN - ReLU`` to ``cat_channels`` (64) channels, brought to the stage's scale:

* the shallower encoder features ``e_j`` (j < i), max-pooled down by ``2^(i-j)``;
* the same-scale encoder feature ``e_i``;
* the deeper decoder features ``d_j`` (i < j < 5) and the bottleneck ``e5``, upsampled bilinearly.

The ``5 x 64 = 320`` concatenated channels are fused by a ``3x3 conv - BN - ReLU`` (320 -> 320).
An encoder stage with no channels (e.g. the H/2 stage of ``mit_b*`` and timm ConvNeXt encoders)
is left out of the aggregation (its stages then concatenate 4 x 64 channels).

Deep supervision (optional): ``3x3 conv`` side heads map the bottleneck and the decoder stages
``d4, d3, d2`` to classes, upsampled bilinearly to the input size; the main output comes from
``d1`` through :attr:`UNet3Plus.segmentation_head`. The classification-guided module of the
paper is not implemented.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torch.nn.functional as F
from segmentation_models_pytorch.base import initialization as smp_init

__all__ = ["ConvBNReLU", "FullScaleDecoder", "UNet3Plus", "check_input_size"]

ENCODER_DEPTH = 5


def check_input_size(x: torch.Tensor, multiple: int, network: str) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, C, H, W)`` with H and W positive multiples of ``multiple``.

    The message names the network and the nearest valid size to resize or pad to. Skipped while
    tracing (a trace is recorded for one valid size); compiles with ``torch.jit.script`` (where the
    error surfaces as ``torch.jit.Error`` with the same message).
    """
    if torch.jit.is_tracing():
        return
    if x.dim() != 4:
        raise ValueError(f"{network} expects a (B, C, H, W) image batch, got {x.dim()} dimensions.")
    h, w = x.shape[2], x.shape[3]
    if h % multiple != 0 or w % multiple != 0 or h == 0 or w == 0:
        new_h = max(multiple, (h + multiple - 1) // multiple * multiple)
        new_w = max(multiple, (w + multiple - 1) // multiple * multiple)
        raise ValueError(
            f"{network} input height and width must be positive multiples of {multiple} (the encoder "
            f"downsamples 5 times), got {h} x {w}; resize or pad the image, e.g. to {new_h} x {new_w}."
        )


def encoder_output_stride(encoder: nn.Module) -> int:
    """The total downsampling of an smp encoder (``2 ** depth`` = 32 at depth 5 unless it uses dilation)."""
    return int(getattr(encoder, "output_stride", 2**ENCODER_DEPTH))


class ConvBNReLU(nn.Sequential):
    """``kxk convolution (no bias) -> BatchNorm -> ReLU``; keeps H and W: (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class _Resample(nn.Module):
    """Bring a feature map to the scale of ``target``: max-pooling by ``factor`` (a shallower feature,
    ``factor > 1``), nothing (same scale, ``factor == 1``) or bilinear upsampling (deeper, ``factor == 0``)."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.mode = 0 if factor > 1 else (1 if factor == 1 else 2)
        self.pool = nn.MaxPool2d(factor, factor, ceil_mode=True) if factor > 1 else nn.Identity()

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.mode == 0:
            return self.pool(x)
        if self.mode == 1:
            return x
        return F.interpolate(x, size=(target.shape[2], target.shape[3]), mode="bilinear", align_corners=False)


class _FullScaleStage(nn.Module):
    """One UNet 3+ decoder stage: resample each input to this scale, ``3x3 conv-BN-ReLU`` it to
    ``cat_channels``, concatenate and fuse with a ``3x3 conv-BN-ReLU`` to ``out_channels``.

    ``sources`` lists, for each input of :meth:`forward`, ``(channels, factor)``: a factor > 1
    max-pools a shallower feature down by it, 1 marks the same-scale feature, 0 a deeper one
    (upsampled bilinearly to the stage's size).
    """

    def __init__(self, sources: Sequence[tuple[int, int]], cat_channels: int, out_channels: int) -> None:
        super().__init__()
        self.resample = nn.ModuleList([_Resample(f) for _, f in sources])
        self.convs = nn.ModuleList([ConvBNReLU(c, cat_channels) for c, _ in sources])
        self.fuse = ConvBNReLU(cat_channels * len(sources), out_channels)

    def forward(self, inputs: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """``inputs``: tensors in the order of ``sources``; ``target``: a tensor at this stage's scale."""
        resampled: list[torch.Tensor] = []
        for i, resample in enumerate(self.resample):
            resampled.append(resample(inputs[i], target))
        parts: list[torch.Tensor] = []
        for i, conv in enumerate(self.convs):
            parts.append(conv(resampled[i]))
        return self.fuse(torch.cat(parts, dim=1))


class FullScaleDecoder(nn.Module):
    """The UNet 3+ decoder over five encoder features ``e1..e5`` (scales H/2 .. H/32).

    Args:
        encoder_channels: channels of ``e1..e5`` (0 marks an empty stage, left out of the aggregation).
        cat_channels: channels each input is mapped to before concatenation (paper: 64).
        fused_channels: channels of each decoder stage output (paper: 5 x 64 = 320);
            defaults to ``cat_channels * 5``.

    Forward: ``features`` = ``[e1, e2, e3, e4, e5]`` -> ``[d1, d2, d3, d4]`` (finest first),
    ``d_i`` of shape ``(B, fused_channels, H/2^i, W/2^i)``.
    """

    def __init__(
        self, encoder_channels: Sequence[int], cat_channels: int = 64, fused_channels: int | None = None
    ) -> None:
        super().__init__()
        enc = [int(c) for c in encoder_channels]
        if len(enc) != ENCODER_DEPTH:
            raise ValueError(f"expected {ENCODER_DEPTH} encoder feature channels, got {len(enc)}: {enc}")
        if enc[-1] <= 0:
            raise ValueError(f"the deepest encoder feature must have channels, got {enc}")
        fused = cat_channels * ENCODER_DEPTH if fused_channels is None else fused_channels
        self.fused_channels = fused
        self.encoder_channels = enc
        stages: list[nn.Module] = []
        plan: list[list[tuple[str, int]]] = []  # per stage: which tensors feed it ("e" or "d", index)
        for i in range(ENCODER_DEPTH - 1, 0, -1):  # decoder stages at scales 4, 3, 2, 1
            sources: list[tuple[int, int]] = []
            names: list[tuple[str, int]] = []
            for j in range(1, i + 1):  # shallower and same-scale encoder features
                if enc[j - 1] > 0:
                    sources.append((enc[j - 1], 2 ** (i - j)))
                    names.append(("e", j))
            for j in range(i + 1, ENCODER_DEPTH):  # deeper decoder stages
                sources.append((fused, 0))
                names.append(("d", j))
            sources.append((enc[-1], 0))  # the bottleneck
            names.append(("e", ENCODER_DEPTH))
            stages.append(_FullScaleStage(sources, cat_channels, fused))
            plan.append(names)
        self.stages = nn.ModuleList(stages)
        self.depth = ENCODER_DEPTH
        # flattened plan (TorchScript-friendly): kind 0 = encoder feature, 1 = decoder feature; scale index
        self._plan_kind: list[list[int]] = [[0 if k == "e" else 1 for k, _ in names] for names in plan]
        self._plan_index: list[list[int]] = [[j for _, j in names] for names in plan]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        decoded: dict[int, torch.Tensor] = {}
        for s, stage in enumerate(self.stages):
            scale = self.depth - 1 - s
            inputs: list[torch.Tensor] = []
            kinds, indices = self._plan_kind[s], self._plan_index[s]
            for k in range(len(kinds)):
                j = indices[k]
                inputs.append(features[j - 1] if kinds[k] == 0 else decoded[j])
            decoded[scale] = stage(inputs, features[scale - 1])
        return [decoded[i] for i in range(1, self.depth)]


class UNet3Plus(nn.Module):
    """UNet 3+ with full-scale skip connections on a pluggable smp encoder (see the module docstring).

    Args:
        encoder_name: any ``smp.encoders.get_encoder_names()`` entry; default ``"resnet34"`` (SLiPPA).
            Built with ``weights=None`` (nothing is downloaded): load ImageNet weights you have on disk
            with :func:`fewlabel.networks.transfer.load_pretrained` (``part="encoder"``).
        in_channels: channels of the input image.
        classes: channels of the output logits (K classes, or 1 for binary).
        cat_channels: channels each of the five inputs of a decoder stage is mapped to (paper: 64);
            the stage output has ``5 * cat_channels`` (320).
        deep_supervision: add side heads on the bottleneck and decoder stages ``d4, d3, d2``.

    Attributes:
        encoder: the smp encoder (state-dict prefix ``encoder.``).
        decoder: :class:`FullScaleDecoder`.
        segmentation_head: the ``3x3`` convolution mapping ``d1`` to ``classes`` logits.
        side_heads: deep-supervision ``3x3`` convolutions for ``d2, d3, d4, e5`` (empty without it).

    Forward:
        ``x``: ``(B, in_channels, H, W)`` float image (normalised as the encoder expects), H and W
        positive multiples of 32. In ``eval()`` mode or without deep supervision, returns one
        ``(B, classes, H, W)`` float tensor of logits in (-inf, inf) (no activation). In training
        mode with ``deep_supervision=True``, returns ``[main, side_d2, side_d3, side_d4, side_e5]``:
        five ``(B, classes, H, W)`` logit tensors, the main output first, then from fine to coarse
        (the list :class:`monai.losses.DeepSupervisionLoss` takes).

    Raises:
        ValueError: in ``forward`` when H or W is not a multiple of 32 (the message gives the size to pad to).

    Export: ``torch.jit.trace`` in ``eval()`` mode (the trace records the single main output) and
    ``torch.jit.script`` (whose forward is typed ``Union[Tensor, List[Tensor]]``).
    """

    def __init__(
        self,
        encoder_name: str = "resnet34",
        in_channels: int = 3,
        classes: int = 1,
        cat_channels: int = 64,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        if classes < 1 or in_channels < 1 or cat_channels < 1:
            raise ValueError(
                f"in_channels, classes and cat_channels must be >= 1, got {in_channels}, {classes}, {cat_channels}."
            )
        self.encoder = smp.encoders.get_encoder(
            encoder_name, in_channels=in_channels, depth=ENCODER_DEPTH, weights=None
        )
        enc_channels = list(self.encoder.out_channels)[1:]
        self.size_multiple = encoder_output_stride(self.encoder)
        self.decoder = FullScaleDecoder(enc_channels, cat_channels)
        fused = self.decoder.fused_channels
        self.segmentation_head = nn.Conv2d(fused, classes, kernel_size=3, padding=1)
        self.deep_supervision = deep_supervision
        side_in = [fused] * (ENCODER_DEPTH - 2) + [enc_channels[-1]] if deep_supervision else []
        self.side_heads = nn.ModuleList([nn.Conv2d(c, classes, kernel_size=3, padding=1) for c in side_in])
        smp_init.initialize_decoder(self.decoder)
        smp_init.initialize_head(self.segmentation_head)
        smp_init.initialize_head(self.side_heads)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, list[torch.Tensor]]:  # noqa: UP007 (TorchScript)
        check_input_size(x, self.size_multiple, "UNet3Plus")
        size = (x.shape[2], x.shape[3])
        features = self.encoder(x)[1:]
        decoded = self.decoder(features)  # d1, d2, d3, d4
        main = F.interpolate(self.segmentation_head(decoded[0]), size=size, mode="bilinear", align_corners=False)
        if not (self.training and self.deep_supervision):
            return main
        deeper = decoded[1:]  # d2, d3, d4, then the bottleneck e5
        deeper.append(features[-1])
        outputs = [main]
        for i, head in enumerate(self.side_heads):
            outputs.append(F.interpolate(head(deeper[i]), size=size, mode="bilinear", align_corners=False))
        return outputs
