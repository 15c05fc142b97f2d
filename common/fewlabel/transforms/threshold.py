"""Batched, on-device intensity thresholding: the self-supervision signal of MedSASS.

MedSASS (Singh & Cirrone) converts each image to grayscale and binarises it with a threshold
computed *per image* (Otsu); the binary map is the network's target. The thresholding methods
the paper ablates (its Table 3) are all here, computed for a whole ``(B, C, H, W)`` batch at
once on the batch's device:

- ``"otsu"``: Otsu (1979), maximal between-class variance of a ``nbins`` histogram.
- ``"ght"``: Barron's Generalized Histogram Thresholding (ECCV 2020), which contains Otsu and
  minimum-error thresholding as special cases.
- ``"adaptive_mean"`` / ``"adaptive_gaussian"``: a per-pixel threshold, the (Gaussian-weighted)
  mean of a ``block_size`` neighbourhood minus ``offset`` (as OpenCV's ``adaptiveThreshold``).

A constant image has no split. Such images are reported as *invalid* (``valid[b] = False``):
the pseudo-label engine leaves them out of the loss (see :mod:`fewlabel.engines.pseudo_labels`).
No function here returns NaN for finite input.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

__all__ = [
    "METHODS",
    "to_grayscale",
    "batch_histogram",
    "otsu_threshold",
    "ght_threshold",
    "adaptive_threshold",
    "threshold_masks",
    "ThresholdMask",
    "ThresholdMaskd",
]

METHODS = ("otsu", "ght", "adaptive_mean", "adaptive_gaussian")
Polarity = Literal["bright", "dark", "minority"]

# ITU-R BT.601 luma, the weights of OpenCV's cvtColor(RGB2GRAY) that the paper's Algorithm 1 uses.
_LUMA = (0.299, 0.587, 0.114)


def to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """Convert a batch to one channel.

    Args:
        images: ``(B, C, H, W)`` with C = 1 (returned as float), 3 (RGB, BT.601 luma) or 4 (RGBA,
            alpha dropped). Any intensity range.

    Returns:
        ``(B, 1, H, W)`` float tensor in the input's intensity units.

    Raises:
        ValueError: for other shapes or channel counts.
    """
    if images.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(images.shape)}")
    images = images.float()
    c = images.shape[1]
    if c == 1:
        return images
    if c in (3, 4):
        w = torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images[:, :3] * w).sum(dim=1, keepdim=True)
    raise ValueError(f"cannot convert {c}-channel images to grayscale: expected 1 (gray), 3 (RGB) or 4 (RGBA)")


def _flat_gray(images: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, H*W)`` grayscale values, NaN/Inf rejected."""
    gray = to_grayscale(images).flatten(1)
    _check_finite(gray, gray.amin(dim=1), gray.amax(dim=1))
    return gray


def _check_finite(gray: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
    """Raise for rows of ``gray`` ``(B, N)`` holding NaN or Inf, given their minima and maxima ``(B,)``.

    ``amin`` / ``amax`` propagate NaN and an infinite value is a row's minimum or maximum, so the
    ``(B,)`` extremes decide finiteness without a pass over every pixel; only a batch that fails
    is scanned to name its bad images.
    """
    if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
        bad = (~torch.isfinite(gray)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"images {bad} of the batch contain NaN or Inf; thresholds are undefined")


def _histogram(
    gray: torch.Tensor, nbins: int, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts and bin centres of :func:`batch_histogram` given the rows' minima and maxima ``(B,)``.

    One ``torch.bincount`` over the whole batch (image ``b``'s bins offset by ``b * nbins``) rather
    than a per-row scatter: a single pass over ``B * N`` int32 indices with no ``(B, N)`` tensor of ones.
    The bin index of a value is computed with the same two float operations as before
    (``(v - lo) * (1 / width)``, truncated), so every count is unchanged.
    """
    b = gray.shape[0]
    width = (hi - lo) / nbins
    inv = torch.where(width > 0, 1.0 / width, torch.zeros_like(width))
    # values are >= lo, so truncation is floor; the maximum lands in the last bin
    scaled = torch.sub(gray, lo[:, None])
    scaled.mul_(inv[:, None])
    # int32: values lie in [0, nbins]; the lower clamp only matters for a range so small (< ~1e-36) that
    # 1 / width overflows to inf, whose NaN / inf products would otherwise give negative indices
    idx = scaled.to(torch.int32).clamp_(0, nbins - 1)
    del scaled
    idx += torch.arange(0, b * nbins, nbins, device=gray.device, dtype=torch.int32)[:, None]
    # integer counts: exact in any order
    counts = torch.bincount(idx.flatten(), minlength=b * nbins).view(b, nbins).to(gray.dtype)
    steps = torch.arange(nbins, device=gray.device, dtype=gray.dtype) + 0.5
    centers = lo[:, None] + steps[None, :] * width[:, None]
    return counts, centers


def batch_histogram(gray: torch.Tensor, nbins: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Histogram of each row of ``gray`` over that row's own [min, max], all rows at once.

    Args:
        gray: ``(B, N)`` finite values.
        nbins: number of equal-width bins.

    Returns:
        ``(counts, centers, lo)``: ``counts`` ``(B, nbins)`` float pixel counts, ``centers``
        ``(B, nbins)`` bin centres in input units, ``lo`` ``(B,)`` row minima. A constant row
        puts all its pixels in bin 0, whose centre is the constant value.
    """
    lo = gray.amin(dim=1)
    counts, centers = _histogram(gray, nbins, lo, gray.amax(dim=1))
    return counts, centers, lo


def _class_moments(counts: torch.Tensor, values: torch.Tensor):
    """Cumulative weights, means and scatter of the two classes for every split position.

    Split position ``i`` (0 .. nbins-2) puts bins ``<= i`` in class 0 and ``> i`` in class 1.
    Returns ``(w0, w1, mu0, mu1, d0, d1)``, each ``(B, nbins - 1)``; ``d`` are the classes'
    sums of squared deviations from their means. Weights are clipped away from 0.
    """
    eps = torch.finfo(counts.dtype).tiny
    c0 = counts.cumsum(1)
    total = c0[:, -1:]
    s0 = (counts * values).cumsum(1)
    q0 = (counts * values * values).cumsum(1)
    w0 = c0[:, :-1].clamp_min(eps)
    w1 = (total - c0[:, :-1]).clamp_min(eps)
    s1 = s0[:, -1:] - s0[:, :-1]
    q1 = q0[:, -1:] - q0[:, :-1]
    mu0 = s0[:, :-1] / w0
    mu1 = s1 / w1
    d0 = (q0[:, :-1] - w0 * mu0 * mu0).clamp_min(0)
    d1 = (q1 - w1 * mu1 * mu1).clamp_min(0)
    return w0, w1, mu0, mu1, d0, d1


def otsu_threshold(images: torch.Tensor, nbins: int = 256) -> torch.Tensor:
    """Otsu's threshold of every image of a batch, computed on the batch's device.

    Each image is converted to grayscale (:func:`to_grayscale`); its histogram over its own
    intensity range gets ``nbins`` bins; the threshold is the bin centre that maximises the
    between-class variance ``w0 * w1 * (mu0 - mu1)^2``. Pixels ``> threshold`` are the bright
    class. Agrees with ``skimage.filters.threshold_otsu`` to within one bin.

    Args:
        images: ``(B, C, H, W)`` with C in {1, 3, 4}, any finite intensity range.
        nbins: histogram bins.

    Returns:
        ``(B,)`` thresholds in the images' intensity units. A constant image's threshold is its
        value (nothing lies above it).
    """
    gray = to_grayscale(images).flatten(1)
    lo, hi = gray.amin(dim=1), gray.amax(dim=1)
    _check_finite(gray, lo, hi)
    counts, centers = _histogram(gray, nbins, lo, hi)
    w0, w1, mu0, mu1, _, _ = _class_moments(counts, centers)
    between = w0 * w1 * (mu0 - mu1) ** 2
    idx = between.argmax(dim=1, keepdim=True)
    thr = centers.gather(1, idx).squeeze(1)
    constant = hi <= lo
    return torch.where(constant, lo, thr)


def ght_threshold(
    images: torch.Tensor,
    nbins: int = 256,
    nu: float = 0.0,
    tau: float = 0.0,
    kappa: float = 0.0,
    omega: float = 0.5,
) -> torch.Tensor:
    """Barron's Generalized Histogram Threshold of every image of a batch.

    GHT maximises, over split positions, the log-posterior of a two-class model whose class
    variances have a scaled-inverse-chi-squared prior (``nu`` pseudo-counts at variance
    ``tau^2``) and whose class weights have a beta prior (``kappa`` pseudo-counts, mode
    ``omega``)::

        v_k = (p_k nu tau^2 + d_k) / (p_k nu + w_k)
        f   = sum_k [ -d_k / v_k - w_k log v_k + 2 (w_k + kappa omega_k) log w_k ]

    with ``w_k`` the class pixel counts, ``p_k = w_k / N``, ``d_k`` the classes' sums of squared
    deviations, ``omega_0 = omega`` and ``omega_1 = 1 - omega``. With ``nu = kappa = 0`` it is
    minimum-error thresholding (Kittler & Illingworth); as ``nu`` grows it tends to Otsu.
    Histogram values are in units of bins, so ``tau`` is in bins too. The defaults are those of
    Barron's paper's reference settings (the MedSASS paper does not state its own).

    Args:
        images: ``(B, C, H, W)``, C in {1, 3, 4}.
        nbins: histogram bins.
        nu, tau, kappa, omega: GHT hyper-parameters (``nu, tau, kappa >= 0``, ``omega`` in [0, 1]).

    Returns:
        ``(B,)`` thresholds in the images' intensity units; pixels ``> threshold`` are bright.
    """
    if nu < 0 or tau < 0 or kappa < 0 or not 0.0 <= omega <= 1.0:
        raise ValueError(f"GHT needs nu, tau, kappa >= 0 and omega in [0, 1]; got {nu}, {tau}, {kappa}, {omega}")
    gray = _flat_gray(images).double()
    counts, centers, lo = batch_histogram(gray, nbins)
    x = torch.arange(nbins, device=gray.device, dtype=gray.dtype).expand_as(counts)
    w0, w1, _, _, d0, d1 = _class_moments(counts, x)
    n = counts.sum(1, keepdim=True)
    p0, p1 = w0 / n, w1 / n
    eps = torch.finfo(gray.dtype).eps
    v0 = ((p0 * nu * tau**2 + d0) / (p0 * nu + w0)).clamp_min(eps)
    v1 = ((p1 * nu * tau**2 + d1) / (p1 * nu + w1)).clamp_min(eps)
    f0 = -d0 / v0 - w0 * v0.log() + 2 * (w0 + kappa * omega) * w0.log()
    f1 = -d1 / v1 - w1 * v1.log() + 2 * (w1 + kappa * (1 - omega)) * w1.log()
    score = f0 + f1
    # splits that leave a class empty are not splits
    occupied = (counts.cumsum(1)[:, :-1] > 0) & (counts.cumsum(1)[:, :-1] < n)
    score = torch.where(occupied, score, torch.full_like(score, -math.inf))
    idx = score.argmax(dim=1, keepdim=True)
    thr = centers.gather(1, idx).squeeze(1)
    constant = gray.amax(dim=1) <= lo
    return torch.where(constant, lo, thr).to(images.dtype if images.is_floating_point() else torch.float32)


def adaptive_threshold(
    images: torch.Tensor, method: str = "adaptive_mean", block_size: int = 11, offset: float = 2.0 / 255
) -> torch.Tensor:
    """Per-pixel adaptive threshold map (the local mean, or Gaussian-weighted mean, minus ``offset``).

    Like OpenCV's ``adaptiveThreshold`` (replicated borders; the Gaussian's sigma is
    ``0.3 * ((block_size - 1) * 0.5 - 1) + 0.8``), but on float images of any range and for a whole batch.

    Args:
        images: ``(B, C, H, W)``, C in {1, 3, 4}.
        method: ``"adaptive_mean"`` or ``"adaptive_gaussian"``.
        block_size: odd neighbourhood side, >= 3.
        offset: subtracted from the local mean, in intensity units (default: two 8-bit grey
            levels of an image scaled to [0, 1], OpenCV's usual ``C = 2``).

    Returns:
        ``(B, 1, H, W)`` thresholds; pixels ``> threshold`` are bright.
    """
    if block_size < 3 or block_size % 2 == 0:
        raise ValueError(f"block_size must be odd and >= 3, got {block_size}")
    gray = to_grayscale(images)
    pad = block_size // 2
    padded = F.pad(gray, (pad, pad, pad, pad), mode="replicate")
    if method == "adaptive_mean":
        local = F.avg_pool2d(padded, block_size, stride=1)
    elif method == "adaptive_gaussian":
        sigma = 0.3 * ((block_size - 1) * 0.5 - 1) + 0.8
        r = torch.arange(block_size, device=gray.device, dtype=gray.dtype) - pad
        g = torch.exp(-(r**2) / (2 * sigma**2))
        g = g / g.sum()
        local = F.conv2d(padded, g.view(1, 1, 1, -1))
        local = F.conv2d(local, g.view(1, 1, -1, 1))
    else:
        raise ValueError(f"unknown adaptive method '{method}', expected 'adaptive_mean' or 'adaptive_gaussian'")
    return local - offset


def threshold_masks(
    images: torch.Tensor,
    method: str = "otsu",
    polarity: Polarity = "bright",
    min_range: float = 1e-2,
    nbins: int = 256,
    **method_kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary pseudo-label masks of a batch and which images have a usable split.

    Args:
        images: ``(B, C, H, W)``, C in {1, 3, 4}, finite, on any device.
        method: one of :data:`METHODS`.
        polarity: which side is foreground: ``"bright"`` (pixels above the threshold, as in the
            paper), ``"dark"`` (below), or ``"minority"`` (whichever side has fewer pixels, per image).
        min_range: images whose grayscale intensity range (max - min) is below this are
            constant for our purpose; in the images' units (bundles feed images in [0, 1]).
        nbins: histogram bins of the global methods.
        method_kwargs: passed to :func:`ght_threshold` or :func:`adaptive_threshold`.

    Returns:
        ``(masks, valid)``: ``masks`` ``(B, 1, H, W)`` float in {0, 1}; ``valid`` ``(B,)`` bool,
        False for constant images and for images whose split leaves one class empty.
        Invalid images get an all-zero mask.
    """
    if method not in METHODS:
        raise ValueError(f"unknown thresholding method '{method}', expected one of {METHODS}")
    if polarity not in ("bright", "dark", "minority"):
        raise ValueError(f"unknown polarity '{polarity}', expected 'bright', 'dark' or 'minority'")
    gray = to_grayscale(images)
    flat = _flat_gray(images)
    rng = flat.amax(dim=1) - flat.amin(dim=1)
    if method == "otsu":
        thr = otsu_threshold(images, nbins=nbins).view(-1, 1, 1, 1)
    elif method == "ght":
        thr = ght_threshold(images, nbins=nbins, **method_kwargs).view(-1, 1, 1, 1)
    else:
        thr = adaptive_threshold(images, method=method, **method_kwargs)
    bright = gray > thr
    if polarity == "dark":
        fg = ~bright
    elif polarity == "minority":
        frac = bright.flatten(1).float().mean(1)
        fg = torch.where((frac <= 0.5).view(-1, 1, 1, 1), bright, ~bright)
    else:
        fg = bright
    frac = fg.flatten(1).float().mean(1)
    valid = (rng >= min_range) & (frac > 0) & (frac < 1)
    masks = (fg & valid.view(-1, 1, 1, 1)).float()
    return masks, valid


class ThresholdMask(Transform):
    """Array transform: one channel-first image ``(C, H, W)`` -> its binary pseudo-label ``(1, H, W)``.

    The per-image twin of :func:`threshold_masks` for transform pipelines (e.g. scoring Otsu's own
    masks against ground truth in an evaluation). A constant image gives an all-zero mask.

    Args:
        method, polarity, min_range, nbins, method_kwargs: see :func:`threshold_masks`.
    """

    def __init__(
        self, method: str = "otsu", polarity: Polarity = "bright", min_range: float = 1e-2, nbins: int = 256,
        **method_kwargs,
    ) -> None:
        self.method = method
        self.polarity = polarity
        self.min_range = min_range
        self.nbins = nbins
        self.method_kwargs = method_kwargs

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img_t = torch.as_tensor(img)
        masks, _ = threshold_masks(
            img_t[None], self.method, self.polarity, self.min_range, self.nbins, **self.method_kwargs
        )
        return masks[0]


class ThresholdMaskd(MapTransform):
    """Dictionary-based twin of :class:`ThresholdMask`: writes the mask of ``keys`` to ``output_key``.

    Args:
        keys: the image key (one key).
        output_key: where the ``(1, H, W)`` mask goes (default ``"<key>_threshold"``).
        other args: see :class:`ThresholdMask`.
    """

    def __init__(
        self, keys: KeysCollection, output_key: str | None = None, method: str = "otsu",
        polarity: Polarity = "bright", min_range: float = 1e-2, nbins: int = 256, allow_missing_keys: bool = False,
        **method_kwargs,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_key = output_key
        self.op = ThresholdMask(method, polarity, min_range, nbins, **method_kwargs)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key or f"{key}_threshold"] = self.op(d[key])
        return d
