"""Corruptions and targets of the classic pretext tasks the SurgicalSemiSeg paper compares with (Tables 1-2, 4-9).

- :class:`GreyCorruption`: colourisation (Zhang et al. 2016) as a pixel-level generation task: the network sees the
  grey (BT.601 luma) image repeated over the colour channels and learns to give back the colour image. It has the
  interface of :class:`fewlabel.transforms.MaskCorruption`, so :class:`fewlabel.engines.DenoisingPairs` and the
  denoising autoencoder's MSE loss run it unchanged.
- :func:`rotate_batch`: rotation prediction (Gidaris et al. 2018): each image turned by a random multiple of 90
  degrees, the multiple being the class to predict (:class:`fewlabel.engines.RotationBatch` uses it).
"""

from __future__ import annotations

import torch
from monai.transforms import Transform

from fewlabel.transforms.batched import grey

__all__ = ["GreyCorruption", "rotate_batch", "centre_square"]


class GreyCorruption(Transform):
    """Array transform: ``x -> (luma(x) repeated over the C channels, ones mask)``, the colourisation input.

    Call on a float tensor ``(B, C, H, W)`` (or one image ``(C, H, W)``) in [0, 1] with C = 3 (RGB); returns
    ``(grey, masks)``: ``grey`` of the input's shape, dtype and device (every channel the BT.601 luma, in [0, 1]),
    ``masks`` ``(B, 1, H, W)`` float32 ones (no pixel is hidden: every pixel lost its colour). A 1-channel image
    has no colour to learn: it is an error.
    """

    def __call__(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        single = img.ndim == 3
        x = img[None] if single else img
        if x.ndim != 4 or not x.is_floating_point():
            raise ValueError(f"expected float images (B, C, H, W) or (C, H, W), got {tuple(img.shape)} {img.dtype}")
        if x.shape[1] != 3:
            raise ValueError(f"colourisation needs RGB images (3 channels), got {x.shape[1]}: set image_channels 3")
        out = grey(x).expand_as(x).contiguous()
        masks = torch.ones((x.shape[0], 1, *x.shape[2:]), dtype=torch.float32, device=x.device)
        return (out[0], masks[0]) if single else (out, masks)


def centre_square(images: torch.Tensor) -> torch.Tensor:
    """The centre ``s x s`` crop of ``(B, C, H, W)`` images, ``s = min(H, W)`` (so all rotations keep the shape)."""
    h, w = images.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return images[..., top:top + s, left:left + s]


def rotate_batch(images: torch.Tensor, quarter_turns: torch.Tensor) -> torch.Tensor:
    """Turn image ``i`` of ``(B, C, S, S)`` square images by ``quarter_turns[i]`` x 90 degrees (counter-clockwise).

    Args:
        images: ``(B, C, S, S)``; non-square images must be cropped first (:func:`centre_square`).
        quarter_turns: ``(B,)`` integers in {0, 1, 2, 3}.
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square images (B, C, S, S), got {tuple(images.shape)}: crop them first")
    turns = quarter_turns.to("cpu").long().tolist()
    if len(turns) != images.shape[0] or any(k not in (0, 1, 2, 3) for k in turns):
        raise ValueError(f"quarter_turns must be {images.shape[0]} values in 0..3, got {turns}")
    return torch.stack([torch.rot90(img, k, dims=(-2, -1)) for img, k in zip(images, turns)])
