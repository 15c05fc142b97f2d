"""The encoder-decoder networks of PolyCL (Ward, Moseley & Imran, MELBA 2025), built from scratch.

PolyCL pre-trains an encoder ``f`` contrastively, then adds a decoder and fine-tunes the whole
network with Dice on a few labelled CT slices (1-channel, 256 x 256). Section 4 of the paper:
the network follows Haque et al. (2021), a U-Net-like encoder-decoder with LeakyReLU (slope
0.2) and instance normalisation between the convolutions; ``f`` ends in global average pooling
and one fully connected layer ``g`` gives 256-d embeddings; three encoder backbones are compared:
U-Net, ResU-Net and TransUNet. Here:

* :class:`PolyCLEncoder` (``block="unet"`` or ``"resunet"``): ``len(channels)`` stages at
  ``H, H/2, ..., H/2**(n-1)``; every stage but the first starts with 2x2 **max-pooling** (as in
  the original U-Net: downsampling has no weights, so every stage is a pure "two-conv" block);
  a stage is ``conv3x3 -> InstanceNorm -> LeakyReLU(0.2)`` twice (``"unet"``), or the same with
  the second activation after the sum with a ``1x1 conv -> InstanceNorm`` shortcut
  (``"resunet"``, ResNet-style);
* :class:`TransUNetEncoder`: the same CNN stages for all but the deepest level; the deepest
  level max-pools, embeds every pixel as a token (``1x1`` convolution, TransUNet's patch size 1
  on the CNN feature map), adds a learned positional embedding, runs a pre-norm
  :class:`torch.nn.TransformerEncoder` and reshapes the tokens back to a map (``conv3x3 ->
  InstanceNorm -> LeakyReLU`` to ``channels[-1]``). The defaults are small (width 128, depth 2,
  4 heads) so that it runs on a CPU; the paper's TransUNet is R50-ViT-B/16 (ResNet-50 stem,
  ``embed_dim=768, depth=12, num_heads=12, mlp_ratio=4``): set those knobs (and wider
  ``channels``) to approach it. No weights are downloaded: everything starts random;
* :class:`PolyCLUNet`: ``encoder`` (one of the two) + a decoder mirroring it (2x2 transposed
  convolution, concatenation with the U-Net skip, the encoder's two-conv block) + the ``1x1``
  convolution :attr:`PolyCLUNet.segmentation_head` to logits.

The encoders follow the contract the rest of :mod:`fewlabel` expects from an smp encoder:
``forward(x)`` returns the feature maps shallow to deep and ``out_channels`` holds their
channels (unlike smp, the input itself is not the first entry). So
:class:`fewlabel.networks.ContrastiveEncoder` wraps ``PolyCLUNet(...)`` for pre-training
(global average pooling of the deepest map, then its projection head), and
``fewlabel.networks.load_pretrained(net, ckpt, part="encoder")`` copies the ``encoder.*``
weights of such a checkpoint into a fresh :class:`PolyCLUNet`.

Instance normalisation needs more than one pixel per map in training: the deepest map is
``H / 2**(len(channels) - 1)`` wide, so train on inputs of at least twice the size multiple
(32 x 32 with the default five stages).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "BACKBONES", "ConvBlock", "ResConvBlock", "PolyCLEncoder", "TransUNetEncoder", "PolyCLDecoder", "PolyCLUNet",
    "build_polycl_unet",
]

#: the encoder backbones of the paper, as :class:`PolyCLUNet` names them
BACKBONES = ("unet", "resunet", "transunet")

NEGATIVE_SLOPE = 0.2


def _conv_in_lrelu(in_channels: int, out_channels: int) -> list[nn.Module]:
    """``conv3x3 (no bias: the norm removes it) -> InstanceNorm (affine) -> LeakyReLU(0.2)``."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.InstanceNorm2d(out_channels, affine=True),
        nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
    ]


class ConvBlock(nn.Sequential):
    """U-Net block: ``conv3x3 -> InstanceNorm -> LeakyReLU(0.2)`` twice; (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(*_conv_in_lrelu(in_channels, out_channels), *_conv_in_lrelu(out_channels, out_channels))


class ResConvBlock(nn.Module):
    """ResU-Net block: ``LReLU(IN(conv(LReLU(IN(conv(x))))) + shortcut(x))``, shortcut ``conv1x1 -> IN``
    (the identity when the channels agree); (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_in_lrelu(in_channels, out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm2d(out_channels, affine=True),
        )
        self.shortcut: nn.Module = (
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
                nn.InstanceNorm2d(out_channels, affine=True),
            )
            if in_channels != out_channels
            else nn.Identity()
        )
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


_BLOCKS: dict[str, type[nn.Module]] = {"unet": ConvBlock, "resunet": ResConvBlock}


def _block(kind: str) -> type[nn.Module]:
    if kind not in _BLOCKS:
        raise ValueError(f"block must be one of {tuple(_BLOCKS)}, got '{kind}'")
    return _BLOCKS[kind]


def _check_channels(channels: Sequence[int], minimum: int = 2) -> tuple[int, ...]:
    out = tuple(int(c) for c in channels)
    if len(out) < minimum or min(out) < 1:
        raise ValueError(f"channels must be at least {minimum} positive ints (one per stage), got {tuple(channels)}")
    return out


def _init_convs(module: nn.Module) -> None:
    """He initialisation for LeakyReLU(0.2) on every (transposed) convolution, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class _CNNStages(nn.Module):
    """The CNN stages shared by both encoders; forward -> list of maps at H, H/2, ... (shallow to deep)."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], block: str) -> None:
        super().__init__()
        make = _block(block)
        stages = []
        prev = int(in_channels)
        for i, c in enumerate(channels):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if i > 0 else []
            stages.append(nn.Sequential(*layers, make(prev, c)))
            prev = c
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features: list[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class PolyCLEncoder(nn.Module):
    """PolyCL's U-Net (``block="unet"``) or ResU-Net (``block="resunet"``) encoder ``f``.

    Args:
        in_channels: image channels (1 for CT slices).
        channels: channels of the stages, shallow to deep; stage ``i`` runs at ``H / 2**i``.
        block: ``"unet"`` (:class:`ConvBlock`) or ``"resunet"`` (:class:`ResConvBlock`).

    Attributes:
        out_channels: ``channels`` as a tuple (the channels of the maps ``forward`` returns).
        size_multiple: ``2**(len(channels) - 1)``; H and W must be multiples of it.

    Forward: (B, in_channels, H, W) -> ``[(B, channels[i], H / 2**i, W / 2**i) for i]``.
    """

    def __init__(
        self, in_channels: int = 1, channels: Sequence[int] = (32, 64, 128, 256, 512), block: str = "unet",
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.out_channels: tuple[int, ...] = _check_channels(channels)
        self.in_channels = int(in_channels)
        self.block = block
        self.size_multiple = 2 ** (len(self.out_channels) - 1)
        self.body = _CNNStages(in_channels, self.out_channels, block)
        _init_convs(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)


class TransUNetEncoder(nn.Module):
    """TransUNet-style encoder: CNN stages, then a Transformer on the deepest level's pixels.

    Levels ``0 .. n-2`` are the :class:`PolyCLEncoder` stages (``channels[:-1]``, ``cnn_block``);
    level ``n-1`` (``H / 2**(n-1)``) is 2x2 max-pooling -> ``1x1`` convolution to ``embed_dim``
    (one token per pixel) -> + learned positional embedding -> ``depth`` pre-norm Transformer
    layers (GELU MLP, ``num_heads`` heads) -> LayerNorm -> tokens reshaped to a map -> ``conv3x3
    -> InstanceNorm -> LeakyReLU(0.2)`` to ``channels[-1]``.

    The positional embedding is a ``(1, embed_dim, h, w)`` parameter for the token grid of
    ``img_size`` (``h = img_size / 2**(n-1)``); other input sizes resample it bilinearly.

    Args:
        in_channels: image channels.
        channels: channels of the levels, shallow to deep (at least 2).
        img_size: the (H, W) or one int the positional embedding is sized for (256: the paper's slices).
        embed_dim, depth, num_heads, mlp_ratio, dropout: the Transformer (defaults small for CPU
            use; R50-ViT-B/16 of the paper: 768, 12, 12, 4.0, 0.1).
        cnn_block: block of the CNN levels, ``"unet"`` or ``"resunet"``.

    Attributes:
        out_channels, size_multiple: as in :class:`PolyCLEncoder`.

    Forward: (B, in_channels, H, W) -> ``[(B, channels[i], H / 2**i, W / 2**i) for i]``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        img_size: int | Sequence[int] = 256,
        embed_dim: int = 128,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        cnn_block: str = "unet",
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.out_channels: tuple[int, ...] = _check_channels(channels)
        self.in_channels = int(in_channels)
        self.size_multiple = 2 ** (len(self.out_channels) - 1)
        hw = (int(img_size), int(img_size)) if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        if len(hw) != 2 or min(hw) < 1 or hw[0] % self.size_multiple or hw[1] % self.size_multiple:
            raise ValueError(f"img_size {img_size} must be positive multiples of {self.size_multiple} (H, W)")
        if depth < 1 or embed_dim < 1 or num_heads < 1 or embed_dim % num_heads:
            raise ValueError(
                f"need depth >= 1 and embed_dim divisible by num_heads, got depth={depth}, "
                f"embed_dim={embed_dim}, num_heads={num_heads}"
            )
        self.img_size = hw
        self.cnn = _CNNStages(in_channels, self.out_channels[:-1], cnn_block)
        self.pool = nn.MaxPool2d(2)
        self.patch_embed = nn.Conv2d(self.out_channels[-2], embed_dim, kernel_size=1)
        grid = (hw[0] // self.size_multiple, hw[1] // self.size_multiple)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid[0], grid[1]))
        layer = nn.TransformerEncoderLayer(
            embed_dim, num_heads, dim_feedforward=max(1, int(round(embed_dim * mlp_ratio))), dropout=dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)
        self.to_map = nn.Sequential(*_conv_in_lrelu(embed_dim, self.out_channels[-1]))
        _init_convs(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.cnn(x)
        tokens = self.patch_embed(self.pool(features[-1]))  # (B, D, h, w)
        b, d, h, w = tokens.shape
        pos = self.pos_embed
        if pos.shape[2] != h or pos.shape[3] != w:
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        seq = (tokens + pos).flatten(2).transpose(1, 2)  # (B, h*w, D)
        seq = self.norm(self.transformer(seq))
        deep = self.to_map(seq.transpose(1, 2).reshape(b, d, h, w))
        features.append(deep)
        return features


class _UpStage(nn.Module):
    """2x2 transposed convolution (C_in -> C_skip) -> concat with the skip -> block(2 C_skip -> C_skip).
    (B, C_in, h, w), skip (B, C_skip, 2h, 2w) -> (B, C_skip, 2h, 2w)."""

    def __init__(self, in_channels: int, skip_channels: int, block: str) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, skip_channels, kernel_size=2, stride=2)
        self.block = _block(block)(2 * skip_channels, skip_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class PolyCLDecoder(nn.Module):
    """The decoder mirroring a PolyCL encoder: one :class:`_UpStage` per skip, deep to shallow.

    Args:
        encoder_channels: the encoder's ``out_channels`` (shallow to deep).
        block: ``"unet"`` or ``"resunet"`` (the two-conv block of every stage).

    Forward: the encoder's features ``[e0, ..., e_{n-1}]`` -> (B, encoder_channels[0], H, W).
    """

    def __init__(self, encoder_channels: Sequence[int], block: str = "unet") -> None:
        super().__init__()
        enc = _check_channels(encoder_channels)
        self.stages = nn.ModuleList(
            [_UpStage(enc[i + 1], enc[i], block) for i in reversed(range(len(enc) - 1))]
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        n = len(features)
        for i, stage in enumerate(self.stages):
            x = stage(x, features[n - 2 - i])
        return x


class PolyCLUNet(nn.Module):
    """PolyCL's segmentation network: a U-Net / ResU-Net / TransUNet encoder, its mirror decoder with
    U-Net skips, and a ``1x1`` convolution to logits.

    Args:
        in_channels: image channels (1 for CT).
        out_channels: output channels (1 for a binary sigmoid output, K classes otherwise).
        backbone: ``"unet"``, ``"resunet"`` or ``"transunet"`` (the paper's three).
        channels: encoder channels, shallow to deep; H and W must be multiples of
            ``2**(len(channels) - 1)`` (16 by default).
        transformer: keyword arguments of :class:`TransUNetEncoder` (``img_size``, ``embed_dim``,
            ``depth``, ``num_heads``, ``mlp_ratio``, ``dropout``, ``cnn_block``); ``transunet`` only.

    Attributes:
        encoder: :class:`PolyCLEncoder` or :class:`TransUNetEncoder` (state-dict keys ``encoder.*``,
            what encoder-only transfer copies).
        decoder: :class:`PolyCLDecoder` (``resunet`` blocks for the ResU-Net, U-Net blocks otherwise).
        segmentation_head: the final ``1x1`` convolution (what ``part="all_but_head"`` leaves fresh).

    Forward: (B, in_channels, H, W) -> (B, out_channels, H, W) logits.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        backbone: str = "unet",
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        transformer: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        key = backbone.lower().replace("-", "").replace("_", "")
        if key not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got '{backbone}'")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        if transformer and key != "transunet":
            raise ValueError(f"transformer options are for backbone='transunet' only, got backbone='{backbone}'")
        self.backbone = key
        self.encoder: nn.Module
        if key == "transunet":
            self.encoder = TransUNetEncoder(in_channels, channels, **(transformer or {}))
            block = str((transformer or {}).get("cnn_block", "unet"))
        else:
            self.encoder = PolyCLEncoder(in_channels, channels, block=key)
            block = key
        enc_channels: tuple[int, ...] = self.encoder.out_channels  # type: ignore[assignment]
        self.num_downsamplings = len(enc_channels) - 1
        self.size_multiple = 2 ** self.num_downsamplings
        self.decoder = PolyCLDecoder(enc_channels, block)
        self.segmentation_head = nn.Conv2d(enc_channels[0], int(out_channels), kernel_size=1)
        _init_convs(self.decoder)

    def check_input_size(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is (B, C, H, W) with H and W positive multiples of ``size_multiple``
        (skipped while tracing; under ``torch.jit.script`` the error is a ``torch.jit.Error`` with the same text)."""
        if torch.jit.is_tracing():
            return
        if x.dim() != 4:
            raise ValueError(f"PolyCLUNet expects a (B, C, H, W) image batch, got {x.dim()} dimensions.")
        m = self.size_multiple
        n = self.num_downsamplings
        h, w = x.shape[2], x.shape[3]
        if h % m != 0 or w % m != 0 or h == 0 or w == 0:
            raise ValueError(
                f"PolyCLUNet input height and width must be positive multiples of {m} (the encoder has "
                f"{n + 1} stages, downsampling {n} times), got {h} x {w}; "
                f"resize or pad the image, e.g. to {max(m, (h + m - 1) // m * m)} x {max(m, (w + m - 1) // m * m)}."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_size(x)
        return self.segmentation_head(self.decoder(self.encoder(x)))


def build_polycl_unet(
    backbone: str = "unet", in_channels: int = 1, out_channels: int = 1, **kwargs: Any,
) -> PolyCLUNet:
    """Build a :class:`PolyCLUNet` (for :func:`fewlabel.networks.build_network`).

    Args:
        backbone: ``"unet"``, ``"resunet"`` or ``"transunet"`` (``-``/``_`` ignored, any case).
        in_channels, out_channels: image and output channels.
        kwargs: ``channels``, and for ``transunet`` the :class:`TransUNetEncoder` options either
            flat (``img_size=256, depth=4``) or as ``transformer={...}``.

    Returns:
        The network; (B, in_channels, H, W) -> (B, out_channels, H, W) logits.
    """
    transformer = dict(kwargs.pop("transformer", None) or {})
    for name in ("img_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "dropout", "cnn_block"):
        if name in kwargs:
            transformer[name] = kwargs.pop(name)
    if kwargs.keys() - {"channels"}:
        raise ValueError(f"unknown PolyCLUNet options {sorted(kwargs.keys() - {'channels'})}")
    return PolyCLUNet(in_channels, out_channels, backbone=backbone, transformer=transformer or None, **kwargs)
