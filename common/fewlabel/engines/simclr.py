"""SimCLR pre-training of a segmentation network's encoder through MONAI's ``SupervisedTrainer``.

SAM knowledge mining can start its student from an encoder pre-trained with SimCLR (Chen et al.
2020) on the labelled and unlabelled images together (paper, sections 2.3 and 3.1). The pieces
a bundle needs:

- :class:`SimCLRPairs`, the trainer's ``prepare_batch``: moves the batch's images to the device
  and draws two random augmented views of each there (random resized crop, flips, colour
  jitter, grey-scale, Gaussian blur; seeded), returned stacked as ``(2B, C, H, W)`` (first
  views, then second views) with no target;
- :class:`fewlabel.networks.ContrastiveEncoder`, the trainer's ``network``: runs the segmentation network's
  ``encoder``, average-pools its deepest feature map and projects it with SimCLR's two-layer
  MLP head to ``projection_dim`` features;
- :class:`fewlabel.losses.NTXentLoss`, the trainer's ``loss_function``: NT-Xent over the
  ``2B`` projections (it splits them into the two views itself).

Its state dict holds the encoder under ``encoder.*`` (and the head under ``projection.*``), so a
checkpoint of it loads into a fresh student with
``fewlabel.networks.load_pretrained(student, ckpt, part="encoder")``; the head is dropped.

A config sketch::

    "network": {"_target_": "fewlabel.networks.ContrastiveEncoder", "network": "@network_def"},
    "prepare_batch": {"_target_": "fewlabel.engines.simclr.SimCLRPairs", "seed": "@seed"},
    "loss": {"_target_": "fewlabel.losses.NTXentLoss", "temperature": 0.1}

The augmentations act on images in [0, 1] (the range :class:`fewlabel.transforms.LoadImage2Dd`
gives) and keep them there; 1-channel images skip the saturation and grey-scale steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch

from fewlabel.networks.contrastive import ContrastiveEncoder
from fewlabel.random_state import generator_state, set_generator_state
from fewlabel.transforms.batched import draw_bernoulli, draw_uniform, gaussian_blur, grey, random_colour_jitter

# the batched augmentations live in fewlabel.transforms.batched; the old names stay importable from here
_gaussian_blur = gaussian_blur

__all__ = ["SimCLRPairs", "ContrastiveEncoder", "random_colour_jitter", "grey"]

class SimCLRPairs(PrepareBatch):
    """``prepare_batch`` returning two random augmented views of every image, made on the device.

    For each image two views are drawn independently: a random resized crop (area share in
    ``crop_scale``, aspect ratio in ``crop_ratio``) resampled to the input size, horizontal and
    vertical flips (each with ``flip_prob``), colour jitter (:func:`fewlabel.transforms.random_colour_jitter`, with
    ``colour_prob``), grey-scale (``grey_prob``) and Gaussian blur (``blur_prob``, sigma in
    ``blur_sigma`` pixels). SimCLR's own values are crop scale 0.08-1, jitter 0.8, blur sigma
    0.1-2 at 224 px; the defaults here are milder, for medical images whose colour carries
    meaning.

    Args:
        seed: seed of the augmentation draws (a CPU generator: the same seed gives the same views
            on any device).
        image_key: key of the images in the batch dict.
        crop_scale, crop_ratio: random-resized-crop area share and aspect-ratio range.
        flip_prob: probability of each of the two flips.
        brightness, contrast, saturation, colour_prob: colour jitter (:func:`fewlabel.transforms.random_colour_jitter`).
        grey_prob: probability of converting a (3-channel) view to grey.
        blur_prob, blur_sigma: Gaussian blur probability and sigma range (px).

    Returns (from ``__call__``):
        ``(views, None)``: ``views`` ``(2B, C, H, W)`` float in [0, 1] on ``device``, rows
        ``i`` and ``B + i`` the two views of image ``i``; no target (the loss needs none).
    """

    def __init__(
        self,
        seed: int = 0,
        image_key: str = "image",
        crop_scale: Sequence[float] = (0.2, 1.0),
        crop_ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
        flip_prob: float = 0.5,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        colour_prob: float = 0.8,
        grey_prob: float = 0.2,
        blur_prob: float = 0.5,
        blur_sigma: Sequence[float] = (0.1, 2.0),
    ) -> None:
        lo, hi = (float(v) for v in crop_scale)
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {tuple(crop_scale)}")
        rlo, rhi = (float(v) for v in crop_ratio)
        if not 0.0 < rlo <= rhi:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {tuple(crop_ratio)}")
        for name, p in (("flip_prob", flip_prob), ("colour_prob", colour_prob), ("grey_prob", grey_prob),
                        ("blur_prob", blur_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.image_key = image_key
        self.crop_scale, self.crop_ratio = (lo, hi), (rlo, rhi)
        self.flip_prob = float(flip_prob)
        self.jitter = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "prob": colour_prob}
        self.grey_prob = float(grey_prob)
        self.blur_prob = float(blur_prob)
        self.blur_sigma = tuple(float(v) for v in blur_sigma)

    def state_dict(self) -> dict[str, Any]:
        """The augmentation generator's state, to resume a run (:class:`fewlabel.handlers.TrainingState`)."""
        return {"generator": generator_state(self.generator)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        set_generator_state(self.generator, state["generator"], f"{type(self).__name__}.generator")

    def view(self, images: torch.Tensor) -> torch.Tensor:
        """One random augmented view of each of ``images`` ``(B, C, H, W)`` in [0, 1] (on their device)."""
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(f"expected (B, C, H, W) float images in [0, 1], got {tuple(images.shape)} {images.dtype}")
        b, c, h, w = images.shape
        g = self.generator
        # random resized crop + flips as one affine resampling (normalised coordinates, [-1, 1])
        area = draw_uniform(b, *self.crop_scale, g)
        log_ratio = draw_uniform(b, math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]), g)
        ratio = torch.exp(log_ratio)
        sx = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
        sy = torch.sqrt(area / ratio).clamp(max=1.0)
        tx = (1.0 - sx) * (2.0 * torch.rand(b, generator=g) - 1.0)
        ty = (1.0 - sy) * (2.0 * torch.rand(b, generator=g) - 1.0)
        fx = torch.where(draw_bernoulli(b, self.flip_prob, g), -1.0, 1.0)
        fy = torch.where(draw_bernoulli(b, self.flip_prob, g), -1.0, 1.0)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = sx * fx, tx
        theta[:, 1, 1], theta[:, 1, 2] = sy * fy, ty
        grid = F.affine_grid(theta.to(images.device, images.dtype), [b, c, h, w], align_corners=False)
        x = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        x = random_colour_jitter(x, g, **self.jitter)
        if c == 3:
            to_grey = draw_bernoulli(b, self.grey_prob, g).to(x.device).view(b, 1, 1, 1)
            x = torch.where(to_grey, grey(x).expand(-1, 3, -1, -1), x)
        sigma = torch.where(draw_bernoulli(b, self.blur_prob, g), draw_uniform(b, *self.blur_sigma, g), torch.zeros(b))
        x = gaussian_blur(x, sigma)
        return x.clamp(0.0, 1.0)

    def __call__(
        self, batchdata: Mapping[str, Any], device: str | torch.device | None = None,
        non_blocking: bool = False, **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        images = batchdata[self.image_key]
        images = images.as_tensor() if isinstance(images, MetaTensor) else torch.as_tensor(images)
        images = images.to(device=device, non_blocking=non_blocking, **kwargs).float()
        with torch.no_grad():
            views = torch.cat([self.view(images), self.view(images)], dim=0)
        return views, None
