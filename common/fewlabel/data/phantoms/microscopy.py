"""``nuclei`` phantom: fluorescence microscopy (DAPI-stained nuclei), binary."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from fewlabel.data.phantoms.common import fourier_shape, radial_boundary, smooth_noise, to_uint8
from fewlabel.data.phantoms.registry import PhantomPair, register_phantom



@dataclass(frozen=True)
class _Slide:
    """What ``style_rng`` draws for one patient / slide: stain, microscope and nucleus statistics.

    Attributes:
        tint: ``(3,)`` float32 RGB of the stain, blue-dominant, in [0.12, 1].
        gain: nucleus brightness gain, [0.75, 1]; background: background level, [0.04, 0.09].
        blur: optical blur sigma, px; photons: photon count of a fully bright pixel, [40, 160].
        mean_radius: mean nucleus radius at 224 px, [7, 10]; texture_amp: chromatin texture, [0.15, 0.3].
        dim_share: share of dim (out-of-focus, low-DNA) nuclei, [0.1, 0.25].
    """

    tint: np.ndarray
    gain: float
    background: float
    blur: float
    photons: float
    mean_radius: float
    texture_amp: float
    dim_share: float


def _slide(style_rng: np.random.Generator, s: float) -> _Slide:
    """Draw one slide (see :class:`_Slide`); ``s`` is the image scale, ``sqrt(H W) / 224``."""
    tint = np.array([style_rng.uniform(0.12, 0.35), style_rng.uniform(0.30, 0.55), 1.0], np.float32)
    return _Slide(
        tint=tint,
        gain=style_rng.uniform(0.75, 1.0),
        background=style_rng.uniform(0.04, 0.09),
        blur=style_rng.uniform(0.7, 1.3) * s,
        photons=style_rng.uniform(40.0, 160.0),
        mean_radius=style_rng.uniform(7.0, 10.0),
        texture_amp=style_rng.uniform(0.15, 0.3),
        dim_share=style_rng.uniform(0.1, 0.25),
    )


class _Nuclei(NamedTuple):
    """Where the nuclei are and how they look.

    Attributes:
        centres: ``(n, 2)`` float32 (y, x) px, up to 2 % outside the image.
        radii: n radii, px; brightness: n values in [0.1, 1]; aspect: n minor / major axis ratios in
            [0.6, 1]; theta: n orientations in [0, pi) (lists of Python floats).
    """

    centres: np.ndarray
    radii: list[float]
    brightness: list[float]
    aspect: list[float]
    theta: list[float]


def _place_nuclei(rng: np.random.Generator, slide: _Slide, size: tuple[int, int], s: float) -> _Nuclei:
    """Draw 15-60 nuclei over (and a little beyond) the image; about 30 % touch or overlap an earlier one."""
    h, w = size
    n = int(rng.integers(15, 61))
    radii = (np.clip(rng.normal(slide.mean_radius, 2.5, n), 4.0, 14.0) * s).tolist()
    centres = np.empty((n, 2), np.float32)
    for i in range(n):  # a few touch or overlap a previous nucleus
        if i > 0 and rng.random() < 0.3:
            j = int(rng.integers(i))
            angle = rng.uniform(0, 2 * np.pi)
            dist = (radii[i] + radii[j]) * rng.uniform(0.75, 1.05)
            centres[i] = centres[j] + dist * np.array([np.sin(angle), np.cos(angle)])
        else:
            centres[i] = rng.uniform([-0.02 * h, -0.02 * w], [1.02 * h, 1.02 * w])
    dim = rng.random(n) < slide.dim_share
    brightness = (np.where(dim, rng.uniform(0.15, 0.35, n), rng.uniform(0.5, 1.0, n)) * slide.gain).tolist()
    aspect = rng.uniform(0.6, 1.0, n).tolist()
    theta = rng.uniform(0, np.pi, n).tolist()
    return _Nuclei(centres, radii, brightness, aspect, theta)


def _draw_nuclei(rng: np.random.Generator, nuclei: _Nuclei, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise the nuclei: lobulated ellipses, anti-aliased, slightly domed.

    Returns:
        ``(signal, mask)``: ``(H, W)`` float32 fluorescence in [0, 1] and ``(H, W)`` bool nucleus mask.
    """
    h, w = size
    centres, radii, brightness, aspect, theta = nuclei
    signal = np.zeros(size, np.float32)
    mask = np.zeros(size, bool)
    edge = 1.0  # anti-aliasing width, px
    for i in range(len(radii)):
        r = radii[i]
        amp, phase = fourier_shape(rng, 4, rng.uniform(0.05, 0.25))
        reach = r * (1.0 + amp.sum()) + 2.0
        y0, y1 = max(0, int(centres[i, 0] - reach)), min(h, int(centres[i, 0] + reach) + 2)
        x0, x1 = max(0, int(centres[i, 1] - reach)), min(w, int(centres[i, 1] + reach) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - centres[i, 0]
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - centres[i, 1]
        u = (dx * math.cos(theta[i]) + dy * math.sin(theta[i])) / r
        v = (-dx * math.sin(theta[i]) + dy * math.cos(theta[i])) / (r * aspect[i])
        rho = np.sqrt(u * u + v * v)
        bound = radial_boundary(u, v, rho, amp, phase)
        depth = (bound - rho) * r * aspect[i]  # ~ signed distance to the boundary, px
        inside = depth > 0
        if not inside.any():
            continue
        alpha = np.clip(depth / edge + 0.5, 0.0, 1.0)
        dome = 0.8 + 0.2 * np.sqrt(np.clip(1.0 - rho / bound, 0.0, 1.0))
        value = brightness[i] * alpha * dome
        np.maximum(signal[y0:y1, x0:x1], value, out=signal[y0:y1, x0:x1])
        mask[y0:y1, x0:x1] |= inside
    return signal, mask


def _image_slide(rng: np.random.Generator, slide: _Slide, signal: np.ndarray, s: float) -> np.ndarray:
    """Image the ``(H, W)`` ``signal``: chromatin texture, uneven background, blur, shot and read noise.

    Returns:
        the ``(H, W, 3)`` uint8 RGB image in the slide's tint.
    """
    size = signal.shape
    # chromatin texture (fine) and nucleoli-like darker spots
    chromatin = smooth_noise(rng, size, 1.2 * s)
    nucleoli = np.clip(smooth_noise(rng, size, 2.0 * s) - 1.2, 0.0, None)
    texture = 1.0 + slide.texture_amp * chromatin - 0.25 * nucleoli
    signal *= texture
    uneven = slide.background * (1.0 + 0.35 * smooth_noise(rng, size, 45.0 * s)) + 0.015 * np.clip(
        smooth_noise(rng, size, 6.0 * s), 0, None
    )
    img = np.clip(signal + uneven, 0.0, None)
    img = ndi.gaussian_filter(img, slide.blur, truncate=3.0)
    img = rng.poisson(img * slide.photons).astype(np.float32) / slide.photons  # shot noise
    img += 0.01 * rng.standard_normal(size, dtype=np.float32)  # read noise
    rgb = img[..., None] * slide.tint
    return to_uint8(rgb)


@register_phantom("nuclei", num_classes=2, class_names=("background", "nucleus"), modality="microscopy")
def _nuclei(rng: np.random.Generator, style_rng: np.random.Generator, size: tuple[int, int]) -> PhantomPair:
    """DAPI-like fluorescence: dim uneven background, 15-60 bright textured nuclei, blur, shot noise.

    ``style_rng`` draws the slide (:func:`_slide`), ``rng`` the image: the steps below draw from it
    in this order; changing it changes every image.
    """
    s = float(np.sqrt(size[0] * size[1]) / 224.0)
    slide = _slide(style_rng, s)
    nuclei = _place_nuclei(rng, slide, size, s)
    signal, mask = _draw_nuclei(rng, nuclei, size)
    return _image_slide(rng, slide, signal, s), mask.astype(np.uint8)
