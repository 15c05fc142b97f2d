"""The ViT-small U-Net of MedSASS (Singh & Cirrone, Appendix A.1 and Figure 5 of the paper).

A Vision Transformer and the contracting path of a U-Net both read the image; a
ViT-Convolution (VC) block turns the ViT tokens into a feature map of the U-Net bottleneck's
size and fuses it there; the U-Net's expanding path decodes the result into logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.utils import ensure_tuple_rep
from timm.models.vision_transformer import VisionTransformer

__all__ = ["DoubleConv", "Down", "Up", "ViTConvBlock", "ViTUNet"]


class DoubleConv(nn.Sequential):
    """Two ``3x3 convolution (padding 1, no bias) -> BatchNorm -> ReLU`` layers; keeps H and W.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        mid_channels: channels between the two convolutions; defaults to ``out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None) -> None:
        mid = out_channels if mid_channels is None else mid_channels
        super().__init__(
            nn.Conv2d(in_channels, mid, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """Downsampling block: 2x2 max-pooling then :class:`DoubleConv`; (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))


class Up(nn.Module):
    """Upsampling block: x2 upsampling, concatenation with the skip, :class:`DoubleConv`.

    Args:
        in_channels: channels of the upsampled input plus the skip, after concatenation.
        out_channels: channels of the output.
        bilinear: ``True``: bilinear upsampling (no weights), the input keeps its
            ``in_channels // 2`` channels; ``False``: a 2x2 transposed convolution that halves them.

    Forward: ``x`` (B, C_x, h, w) and ``skip`` (B, C_s, 2h, 2w) -> (B, out_channels, 2h, 2w),
    with ``C_x + C_s == in_channels`` after upsampling.
    """

    def __init__(self, in_channels: int, out_channels: int, bilinear: bool = True) -> None:
        super().__init__()
        self.up: nn.Module
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = DoubleConv(in_channels, out_channels, in_channels // 2)
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class ViTConvBlock(nn.Module):
    """The ViT-Convolution (VC) block: ViT tokens -> bottleneck feature map, fused into the bottleneck.

    Steps, in order (the paper: "a convolution layer (kernel size 1, no padding) and a linear
    layer ... preceded and followed by a resize operation"):

    1. resize in: tokens (B, h*w, hidden) -> grid (B, hidden, h, w) -> bilinear resampling to the
       bottleneck's (Hb, Wb) (from H/patch_size to H/16; skipped when equal);
    2. ``conv``: 1x1 convolution, no padding, hidden -> C channels;
    3. ``linear``: linear layer over the channels, C -> C (applied channels-last);
    4. resize out: back to a channels-first (B, C, Hb, Wb) feature map;
    5. fusion with the bottleneck (B, C, Hb, Wb): ``"add"`` sums the two; ``"concat"``
       concatenates them and maps 2C -> C with the 1x1 convolution ``fuse``.

    Resampling, the 1x1 convolution and the linear layer are all affine maps over channels
    with resampling weights that sum to 1, so they commute: resampling first (as here) gives
    the same result as resampling last, up to rounding, and is cheaper.

    Args:
        hidden_size: channels of the ViT tokens.
        channels: channels C of the U-Net bottleneck.
        fusion: ``"add"`` or ``"concat"``.
    """

    def __init__(self, hidden_size: int, channels: int, fusion: str = "add") -> None:
        super().__init__()
        if fusion not in ("add", "concat"):
            raise ValueError(f"fusion must be 'add' or 'concat', got {fusion!r}.")
        self.use_concat = fusion == "concat"
        self.conv = nn.Conv2d(hidden_size, channels, kernel_size=1, padding=0)
        self.linear = nn.Linear(channels, channels)
        self.fuse: nn.Module = nn.Conv2d(2 * channels, channels, kernel_size=1) if self.use_concat else nn.Identity()

    def forward(self, tokens: torch.Tensor, grid_h: int, grid_w: int, bottleneck: torch.Tensor) -> torch.Tensor:
        """tokens: (B, grid_h*grid_w, hidden); bottleneck: (B, C, Hb, Wb) -> (B, C, Hb, Wb)."""
        size = (bottleneck.shape[2], bottleneck.shape[3])
        feat = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], grid_h, grid_w)
        if grid_h != size[0] or grid_w != size[1]:
            feat = F.interpolate(feat, size=size, mode="bilinear", align_corners=False)
        feat = self.conv(feat)
        feat = self.linear(feat.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if self.use_concat:
            return self.fuse(torch.cat([bottleneck, feat], dim=1))
        return bottleneck + feat


class ViTUNet(nn.Module):
    """
    The ViT-small U-Net of MedSASS: "Singh and Cirrone, Exploring Intrinsic Properties of Medical
    Images for Self-Supervised Binary Semantic Segmentation" (Appendix A.1, Figure 5). A 2D U-Net with
    four downsampling and
    four upsampling blocks whose bottleneck is joined by a Vision Transformer through a
    ViT-Convolution (VC) block.

    Data flow (Figure 5's drawing is not available; this is the reading implemented)::

        x --+--> ViT ---------------------------> tokens (B, (H/p)*(W/p), hidden)
            |                                          |
            +--> inc -> down1 -> down2 -> down3 -> down4 -> VC(tokens, bottleneck) -> x5
                  |x1     |x2      |x3      |x4                                       |
        logits <- outc <- up4 <--- up3 <--- up2 <--- up1 <----------------------------+
                        (each up block takes the skip x4, x3, x2, x1 of its level)

    * the ViT is timm's :class:`timm.models.vision_transformer.VisionTransformer` built
      directly (never downloaded): conv patch embedding, class token, learnable position
      embedding, ``qkv_bias=True``, pre-norm blocks, final LayerNorm, no head - the ViT-S/8 layout
      of DINO, so a user's ``vit_small_patch8_224`` state dict loads into ``net.vit``. Its final
      LayerNorm patch tokens (class token dropped) feed the VC block. For inputs other than
      ``img_size`` the position embedding is resampled to the token grid (``dynamic_img_size``).
      (MONAI's ``monai.networks.nets.ViT`` would need ``einops``, which is not a dependency.)
    * DC / down / up blocks follow the original U-Net: ``3x3 conv - BN - ReLU`` twice;
      max-pool + DC; bilinear (or transposed-convolution) x2 upsampling, concatenation with the
      skip, DC. Channels: ``c, 2c, 4c, 8c`` and ``16c // f`` at the bottleneck (``f = 2`` when
      ``bilinear`` else 1), with ``c = base_channels``.
    * VC (see :class:`ViTConvBlock`): tokens -> grid -> bilinear resampling from ``H/p`` to
      ``H/16`` -> 1x1 conv (hidden -> bottleneck channels) -> linear over channels -> fused into
      the bottleneck, by addition (``fusion="add"``) or by concatenation + 1x1 conv
      (``fusion="concat"``).

    The encoder is the ViT, ``inc``, ``down1``..``down4`` and the VC block (state-dict prefixes in
    :attr:`encoder_prefixes`, weights in :meth:`encoder_state_dict`); the decoder is
    ``up1``..``up4`` and ``outc``.

    Export: the network compiles with ``torch.jit.script`` (the scripted module accepts any valid
    input size; its size error surfaces as ``torch.jit.Error`` with the same message). It also
    works with ``torch.jit.trace``, but a trace is fixed to the input size it was traced with.

    Args:
        in_channels: channels of the input image (3 for RGB, 1 for grey). Defaults to 3.
        out_channels: channels of the output logits (1 for binary segmentation). Defaults to 1.
        img_size: (H, W) or one int the ViT's position embedding is built for; the size
            pre-training uses. Must be a multiple of ``lcm(16, patch_size)``. Defaults to 224.
        patch_size: ViT patch size p. Defaults to 8 (ViT-small/8).
        hidden_size: ViT latent dimension. Defaults to 384.
        mlp_dim: ViT MLP dimension. Defaults to 1536.
        num_heads: ViT attention heads; must divide ``hidden_size``. Defaults to 6.
        num_layers: ViT transformer blocks. Defaults to 12.
        base_channels: channels of the first U-Net level. Defaults to 64.
        fusion: how the VC output joins the bottleneck: ``"add"`` (default) or ``"concat"``.
        bilinear: bilinear upsampling (default, as in the paper) or transposed convolutions.

    Forward:
        ``x``: (B, in_channels, H, W) float image, any value range (normalised as in training);
        H and W multiples of ``lcm(16, patch_size)`` (16 for p = 8), not necessarily ``img_size``.
        Returns (B, out_channels, H, W) float logits in (-inf, inf), no activation applied
        (use sigmoid for binary, softmax for multi-class probabilities).

    Raises:
        ValueError: in ``__init__`` for a bad ``fusion``, ``img_size`` or ``hidden_size``/``num_heads``
            pair; in ``forward`` when H or W
            is not a multiple of ``lcm(16, patch_size)``.

    Examples::

        # the paper's configuration, 3-channel 224 x 224 input, binary logits
        >>> net = ViTUNet(in_channels=3, out_channels=1)
        >>> net(torch.rand(2, 3, 224, 224)).shape
        torch.Size([2, 1, 224, 224])

        # encoder-only transfer into another instance
        >>> other = ViTUNet()
        >>> other.load_state_dict(net.encoder_state_dict(), strict=False)
    """

    encoder_prefixes: tuple[str, ...] = ("vit.", "inc.", "down1.", "down2.", "down3.", "down4.", "vc.")

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 8,
        hidden_size: int = 384,
        mlp_dim: int = 1536,
        num_heads: int = 6,
        num_layers: int = 12,
        base_channels: int = 64,
        fusion: str = "add",
        bilinear: bool = True,
    ) -> None:
        super().__init__()
        self.size_multiple = 16 * patch_size // math.gcd(16, patch_size)
        img_hw = ensure_tuple_rep(img_size, 2)
        if any(s <= 0 or s % self.size_multiple for s in img_hw):
            raise ValueError(
                f"img_size {tuple(img_hw)} must be positive multiples of {self.size_multiple} "
                f"(16 for the four 2x poolings and patch_size={patch_size})."
            )
        self.patch_size = patch_size

        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}.")
        self.vit = VisionTransformer(
            img_size=img_hw,
            patch_size=patch_size,
            in_chans=in_channels,
            num_classes=0,
            global_pool="",
            embed_dim=hidden_size,
            depth=num_layers,
            num_heads=num_heads,
            mlp_ratio=mlp_dim / hidden_size,
            qkv_bias=True,
            class_token=True,
            dynamic_img_size=True,
        )
        self.num_prefix_tokens = self.vit.num_prefix_tokens

        c = base_channels
        factor = 2 if bilinear else 1
        self.inc = DoubleConv(in_channels, c)
        self.down1 = Down(c, 2 * c)
        self.down2 = Down(2 * c, 4 * c)
        self.down3 = Down(4 * c, 8 * c)
        self.down4 = Down(8 * c, 16 * c // factor)
        self.vc = ViTConvBlock(hidden_size, 16 * c // factor, fusion)
        self.up1 = Up(16 * c, 8 * c // factor, bilinear)
        self.up2 = Up(8 * c, 4 * c // factor, bilinear)
        self.up3 = Up(4 * c, 2 * c // factor, bilinear)
        self.up4 = Up(2 * c, c, bilinear)
        self.outc = nn.Conv2d(c, out_channels, kernel_size=1, padding=0)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The state-dict entries of the encoder (keys start with one of :attr:`encoder_prefixes`)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(self.encoder_prefixes)}

    def vit_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """ViT patch features after the final LayerNorm, class token dropped:
        (B, in_channels, H, W) -> (B, (H/p)*(W/p), hidden_size)."""
        return self.vit.forward_features(x)[:, self.num_prefix_tokens :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        m = self.size_multiple
        if h % m != 0 or w % m != 0 or h == 0 or w == 0:
            raise ValueError(
                f"ViTUNet input height and width must be positive multiples of {m} "
                f"(16 for the four 2x poolings and patch_size={self.patch_size}), got {h} x {w}; "
                f"resize or pad the image, e.g. to {max(m, (h + m - 1) // m * m)} x {max(m, (w + m - 1) // m * m)}."
            )
        tokens = self.vit_tokens(x)
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.vc(tokens, h // self.patch_size, w // self.patch_size, self.down4(x4))
        y = self.up1(x5, x4)
        y = self.up2(y, x3)
        y = self.up3(y, x2)
        y = self.up4(y, x1)
        return self.outc(y)
