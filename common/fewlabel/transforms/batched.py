"""Batched random augmentation of ``(B, C, H, W)`` tensors on their device, drawn from a CPU generator.

The engines augment whole batches after they reach the device (:class:`fewlabel.engines.MinedBatches`
after its pseudo-labels, :class:`fewlabel.engines.SimCLRPairs` for its two views). Every draw comes
from a CPU :class:`torch.Generator`, so a seed gives the same augmentation on any device.

- geometry applied identically to images and masks: :func:`draw_geometry` draws one
  :class:`GeometricParams` per item (transpose, quarter turns, flips, optional small affine),
  :func:`apply_geometry` applies it (bilinear for images, nearest for masks);
- photometry of images in [0, 1]: :func:`random_colour_jitter` (brightness, contrast,
  saturation), :func:`grey` (BT.601 luma) and :func:`gaussian_blur` (one sigma per image);
- :func:`draw_uniform` and :func:`draw_bernoulli`: the per-item draws the augmentations use;
- :class:`PairedBatchAugmentation`: both steps as one configurable object with its own generator
  (what :class:`fewlabel.engines.MinedBatches` applies to images and their (pseudo-)labels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from fewlabel.random_state import generator_state, set_generator_state

__all__ = [
    "PairedBatchAugmentation",
    "GeometricParams",
    "draw_geometry",
    "apply_geometry",
    "random_colour_jitter",
    "grey",
    "gaussian_blur",
    "draw_uniform",
    "draw_bernoulli",
]

_LUMA = (0.299, 0.587, 0.114)


def draw_uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    """``(n,)`` float32 uniform draws on the CPU."""
    return low + (high - low) * torch.rand(n, generator=generator)


def draw_bernoulli(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """``(n,)`` bool draws on the CPU, each True with probability ``p``."""
    return torch.rand(n, generator=generator) < p


def grey(images: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of ``(B, 3, H, W)`` images as ``(B, 1, H, W)``; 1-channel images are returned as they are."""
    if images.shape[1] == 1:
        return images
    w = torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * w).sum(1, keepdim=True)


def random_colour_jitter(
    images: torch.Tensor,
    generator: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    prob: float = 0.8,
) -> torch.Tensor:
    """Per-image random brightness, contrast and saturation (torchvision's ``ColorJitter`` factors).

    Each image is jittered with probability ``prob``; its factors are drawn uniformly from
    ``[1 - x, 1 + x]`` for ``x`` = ``brightness``, ``contrast``, ``saturation``: brightness
    scales the pixels, contrast blends with the image's mean grey level, saturation with the
    pixel's grey level (3-channel images only). Draws come from ``generator`` (on the CPU), so
    the result does not depend on the images' device.

    Args:
        images: ``(B, C, H, W)`` float in [0, 1].
        generator: a CPU :class:`torch.Generator`.

    Returns:
        ``(B, C, H, W)`` in [0, 1], same dtype and device.
    """
    b = images.shape[0]
    on = draw_bernoulli(b, prob, generator)
    factors = []
    for strength in (brightness, contrast, saturation):
        if strength < 0:
            raise ValueError(f"jitter strengths must be >= 0, got {strength}")
        f = draw_uniform(b, max(0.0, 1.0 - strength), 1.0 + strength, generator)
        f = torch.where(on, f, torch.ones_like(f))
        # a step that cannot change anything is skipped, so zero strengths give the images back exactly
        factors.append(None if strength == 0 or not on.any() else f.to(images.device, images.dtype).view(b, 1, 1, 1))
    fb, fc, fs = factors
    x = images
    if fb is not None:
        x = x * fb
    if fc is not None:
        mean = grey(x).mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * fc + mean
    if fs is not None and x.shape[1] == 3:
        g = grey(x)
        x = (x - g) * fs + g
    return x.clamp(0.0, 1.0)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` (px) per image; ``sigma = 0`` leaves an image unchanged."""
    b, c, h, w = images.shape
    radius = int(min(math.ceil(3.0 * float(sigma.max())), (min(h, w) - 1) // 2))
    if radius < 1:
        return images
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    s = sigma.float().clamp_min(1e-6)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None] / s) ** 2)
    kernel = torch.where(sigma[:, None] > 0, kernel, (offsets[None] == 0).float())
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(images.device, images.dtype)
    kernel = kernel.repeat_interleave(c, dim=0)  # (B * C, k)
    x = images.reshape(1, b * c, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=b * c)
    return x.reshape(b, c, h, w)


class GeometricParams:
    """Per-item geometric transform: transpose, then ``rot90`` by ``k`` quarter turns, then flips, then affine.

    Attributes (all on the CPU): ``transpose`` ``(B,)`` bool, ``k`` ``(B,)`` int64 in 0..3,
    ``hflip`` / ``vflip`` ``(B,)`` bool, ``theta`` ``(B, 2, 3)`` float32 affine (output to input,
    normalised coordinates, as :func:`torch.nn.functional.affine_grid`) or None.
    """

    def __init__(self, transpose: torch.Tensor, k: torch.Tensor, hflip: torch.Tensor, vflip: torch.Tensor,
                 theta: torch.Tensor | None) -> None:
        self.transpose, self.k, self.hflip, self.vflip, self.theta = transpose, k, hflip, vflip, theta

    def __len__(self) -> int:
        return int(self.k.shape[0])


def draw_geometry(
    batch_size: int,
    square: bool,
    generator: torch.Generator,
    flip_prob: float = 0.5,
    transpose_prob: float = 0.5,
    rot90_prob: float = 0.5,
    affine_prob: float = 0.0,
    rotate_range: float = 15.0,
    scale_range: float = 0.1,
    translate_range: float = 0.05,
) -> GeometricParams:
    """Draw one :class:`GeometricParams` per item (the paper's flips, rotation and transpose, each p = 0.5).

    Args:
        batch_size: items to draw for.
        square: whether the images are square; if not, transpose and odd quarter turns are off.
        generator: CPU generator of the draws.
        flip_prob: probability of each of the horizontal and vertical flips.
        transpose_prob: probability of swapping rows and columns.
        rot90_prob: probability of a rotation by 1, 2 or 3 quarter turns (uniform).
        affine_prob: probability of an extra small affine (rotation in ``+-rotate_range`` degrees,
            isotropic scale in ``1 +- scale_range``, translation in ``+-translate_range`` of the
            size), resampled (bilinear for images, nearest for masks, zero padding).
    """
    b, g = int(batch_size), generator
    transpose = (torch.rand(b, generator=g) < transpose_prob) & square
    rotate = torch.rand(b, generator=g) < rot90_prob
    k = torch.where(rotate, torch.randint(1, 4, (b,), generator=g), torch.zeros(b, dtype=torch.long))
    if not square:
        k = torch.where(k % 2 == 1, torch.zeros_like(k), k)
    hflip = torch.rand(b, generator=g) < flip_prob
    vflip = torch.rand(b, generator=g) < flip_prob
    theta = None
    if affine_prob > 0:
        on = torch.rand(b, generator=g) < affine_prob
        angle = torch.deg2rad((2 * torch.rand(b, generator=g) - 1) * rotate_range) * on
        scale = torch.where(on, 1.0 + (2 * torch.rand(b, generator=g) - 1) * scale_range, torch.ones(b))
        shift = (2 * torch.rand(b, 2, generator=g) - 1) * translate_range * 2 * on[:, None]  # normalised units
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    return GeometricParams(transpose, k, hflip, vflip, theta)


def apply_geometry(x: torch.Tensor, params: GeometricParams, mode: str = "bilinear") -> torch.Tensor:
    """Apply per-item geometric transforms to ``(B, C, H, W)`` ``x`` (same params -> same motion).

    Args:
        x: images or masks on any device.
        params: from :func:`draw_geometry` (``len(params) == B``).
        mode: resampling of the affine step: ``"bilinear"`` (images) or ``"nearest"`` (masks);
            the other steps are exact index permutations.

    Returns:
        ``(B, C, H, W)``, same dtype and device.
    """
    if x.ndim != 4 or x.shape[0] != len(params):
        raise ValueError(f"expected (B={len(params)}, C, H, W), got {tuple(x.shape)}")
    dev = x.device

    def pick(flag: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(flag.to(dev).view(-1, 1, 1, 1), a, b)

    if params.transpose.any():
        x = pick(params.transpose, x.transpose(-1, -2), x)
    if (params.k > 0).any():
        out = x
        for k in (1, 2, 3):
            if (params.k == k).any():
                out = pick(params.k == k, torch.rot90(x, k, dims=(-2, -1)), out)
        x = out
    if params.hflip.any():
        x = pick(params.hflip, x.flip(-1), x)
    if params.vflip.any():
        x = pick(params.vflip, x.flip(-2), x)
    if params.theta is not None:
        on = (params.theta - torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])).abs().flatten(1).amax(1) > 0
        if on.any():
            grid = F.affine_grid(params.theta.to(dev, torch.float32), list(x.shape), align_corners=False)
            moved = F.grid_sample(x.float(), grid, mode=mode, padding_mode="zeros", align_corners=False).to(x.dtype)
            x = pick(on, moved, x)
    return x


class PairedBatchAugmentation:
    """Random geometry applied alike to images and their masks, then colour jitter of the images.

    One :class:`GeometricParams` per item (:func:`draw_geometry`) moves image and mask together
    (bilinear / nearest), then :func:`random_colour_jitter` changes the images only. Every draw comes
    from this object's CPU generator (seeded by ``seed``), so a seed gives the same augmentation on any
    device, and :meth:`state_dict` lets an interrupted run continue the same stream.

    Args:
        flip_prob, transpose_prob, rot90_prob, affine_prob: step probabilities in [0, 1]
            (:func:`draw_geometry`); 0 disables a step. Transpose and odd quarter turns are skipped for
            non-square images.
        rotate_range, scale_range, translate_range: the small affine's ranges (degrees, fraction of
            scale, fraction of the size).
        brightness, contrast, saturation: jitter strengths (:func:`random_colour_jitter`).
        colour_prob: probability that an image is jittered.
        seed: seed of the generator.

    Raises:
        ValueError: a probability outside [0, 1].
    """

    def __init__(
        self,
        flip_prob: float = 0.5,
        transpose_prob: float = 0.5,
        rot90_prob: float = 0.5,
        affine_prob: float = 0.0,
        rotate_range: float = 15.0,
        scale_range: float = 0.1,
        translate_range: float = 0.05,
        brightness: float = 0.1,
        contrast: float = 0.1,
        saturation: float = 0.0,
        colour_prob: float = 0.5,
        seed: int = 0,
    ) -> None:
        probabilities = {"flip_prob": flip_prob, "transpose_prob": transpose_prob, "rot90_prob": rot90_prob,
                         "affine_prob": affine_prob, "colour_prob": colour_prob}
        for name, p in probabilities.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.geometry = {"flip_prob": flip_prob, "transpose_prob": transpose_prob, "rot90_prob": rot90_prob,
                         "affine_prob": affine_prob, "rotate_range": rotate_range, "scale_range": scale_range,
                         "translate_range": translate_range}
        self.jitter = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "prob": colour_prob}
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment ``(B, C, H, W)`` images in [0, 1] and their ``(B, K, H, W)`` masks (same ``B, H, W``).

        Returns:
            ``(images, masks)``: same shapes, dtypes and device; no autograd graph.
        """
        if images.ndim != 4 or masks.ndim != 4 or images.shape[0] != masks.shape[0] \
                or images.shape[-2:] != masks.shape[-2:]:
            raise ValueError(f"masks {tuple(masks.shape)} do not fit images {tuple(images.shape)}")
        b, _, h, w = images.shape
        with torch.no_grad():
            params = draw_geometry(b, h == w, self.generator, **self.geometry)
            images = apply_geometry(images, params, "bilinear")
            masks = apply_geometry(masks, params, "nearest")
            images = random_colour_jitter(images, self.generator, **self.jitter)
        return images, masks

    def state_dict(self) -> dict[str, Any]:
        """The generator's state (:func:`fewlabel.random_state.generator_state`)."""
        return {"generator": generator_state(self.generator)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        set_generator_state(self.generator, state["generator"], "PairedBatchAugmentation.generator")
