"""Masked image modelling of a network's ViT: MAE and SimMIM, on lightly (MedSASS Table 2 and Figure 2 baselines).

:class:`MaskedImageModel` wraps the timm ``VisionTransformer`` of a network (``network.vit``: the ViT-small of
MedSASS's :class:`fewlabel.networks.vit_unet.ViTUNet`, shared, not copied) in lightly's
``MaskedVisionTransformerTIMM`` and adds the method's decoder:

- ``mae`` (He et al. 2022): the encoder sees only the kept patches; lightly's ``MAEDecoderTIMM`` (a small
  transformer) fills in mask tokens and predicts the pixels of the masked patches; loss MSE.
- ``simmim`` (Xie et al. 2022): the encoder sees every patch, masked ones replaced by a learnt mask token; a linear
  layer predicts the masked patches' pixels; loss L1.

Either way the loss (:class:`fewlabel.losses.MaskedImageLoss`) compares predictions and pixels of the *masked*
patches only. Saving ``network`` afterwards gives the whole segmentation network with the pre-trained ViT, which
encoder-only fine-tuning and the zero-label evaluation read as for MedSASS (E).
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["MaskedImageModel", "MASKED_IMAGE_METHODS"]

MASKED_IMAGE_METHODS = ("mae", "simmim")
_DEFAULT_RATIO = {"mae": 0.75, "simmim": 0.6}  # the methods' papers (and lightly's examples)


class MaskedImageModel(nn.Module):
    """MAE or SimMIM around ``network.vit``.

    Args:
        network: a network with a timm ``VisionTransformer`` as ``network.vit`` (pre-trained in place).
        method: ``"mae"`` or ``"simmim"``.
        image_size: ``(H, W)`` of the training images, square (the decoder's position embeddings are made for it).
        mask_ratio: share of patches masked, in (0, 1); None: 0.75 for MAE, 0.6 for SimMIM.
        decoder_dim, decoder_depth, decoder_heads: MAE's decoder (lightly's defaults 512, 8, 16).

    ``forward(images)`` takes ``(B, C, H, W)`` images and returns ``{"prediction": p, "target": t}``, both
    ``(B, M, patch_size**2 * C)``: the predicted and true pixels of the ``M`` masked patches of each image.
    """

    def __init__(
        self,
        network: nn.Module,
        method: str = "mae",
        image_size: tuple[int, int] | list[int] = (224, 224),
        mask_ratio: float | None = None,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
    ) -> None:
        super().__init__()
        from lightly.models.modules import MAEDecoderTIMM, MaskedVisionTransformerTIMM  # seconds: only when used

        method = str(method).lower()
        if method not in MASKED_IMAGE_METHODS:
            raise ValueError(f"pretrain_method must be one of {MASKED_IMAGE_METHODS}, got '{method}'")
        vit = getattr(network, "vit", None)
        if vit is None or not hasattr(vit, "patch_embed"):
            raise ValueError(f"{type(network).__name__} has no timm ViT as `vit`: MAE / SimMIM need arch vit_unet")
        self.method = method
        self.mask_ratio = float(_DEFAULT_RATIO[method] if mask_ratio is None else mask_ratio)
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        h, w = (int(s) for s in image_size)
        self.patch_size = int(vit.patch_embed.patch_size[0])
        if h != w or h % self.patch_size:
            raise ValueError(f"image_size must be square and a multiple of the patch size {self.patch_size}, "
                             f"got {h} x {w}")
        self.num_patches = (h // self.patch_size) ** 2
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        in_chans = int(vit.patch_embed.proj.in_channels)
        embed_dim = int(vit.embed_dim)
        if method == "mae":
            self.backbone = MaskedVisionTransformerTIMM(vit=vit)
            self.decoder: nn.Module = MAEDecoderTIMM(
                num_patches=self.num_patches, patch_size=self.patch_size, in_chans=in_chans, embed_dim=embed_dim,
                decoder_embed_dim=int(decoder_dim), decoder_depth=int(decoder_depth),
                decoder_num_heads=int(decoder_heads), num_prefix_tokens=self.num_prefix_tokens,
            )
        else:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.backbone = MaskedVisionTransformerTIMM(vit=vit, mask_token=self.mask_token)
            self.decoder = nn.Linear(embed_dim, self.patch_size**2 * in_chans)

    def forward(self, images: torch.Tensor, idx_keep: torch.Tensor | None = None,
                idx_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Predict the masked patches; ``idx_keep`` / ``idx_mask`` (token indices, prefix tokens first) are drawn
        with lightly's ``random_token_mask`` (torch's global generator) unless given."""
        from lightly.models import utils

        b, _, h, w = images.shape
        if (h // self.patch_size) * (w // self.patch_size) != self.num_patches:
            raise ValueError(f"images of {h} x {w} do not give the {self.num_patches} patches this model was built for")
        seq = self.num_patches + self.num_prefix_tokens
        if idx_keep is None or idx_mask is None:
            idx_keep, idx_mask = utils.random_token_mask(size=(b, seq), mask_ratio=self.mask_ratio,
                                                         device=images.device)
        if self.method == "mae":
            encoded = self.backbone.encode(images, idx_keep=idx_keep)
            embedded = self.decoder.embed(encoded)
            tokens = utils.repeat_token(self.decoder.mask_token, (b, seq))
            tokens = utils.set_at_index(tokens, idx_keep, embedded.type_as(tokens))
            prediction = self.decoder.predict(utils.get_at_index(self.decoder.decode(tokens), idx_mask))
        else:
            encoded = self.backbone.encode(images, idx_mask=idx_mask)
            prediction = self.decoder(utils.get_at_index(encoded, idx_mask))
        patches = utils.patchify(images, self.patch_size)
        target = utils.get_at_index(patches, idx_mask - self.num_prefix_tokens)
        return {"prediction": prediction, "target": target}
