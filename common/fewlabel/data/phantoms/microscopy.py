"""``nuclei`` phantom: fluorescence microscopy (DAPI-stained nuclei), binary."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from fewlabel.data.phantoms.common import _fourier_shape, _radial_boundary, _smooth_noise, _to_uint8
from fewlabel.data.phantoms.registry import _Pair, register_phantom


@register_phantom("nuclei", num_classes=2, class_names=("background", "nucleus"), modality="microscopy")
def _nuclei(rng: np.random.Generator, style_rng: np.random.Generator, size: tuple[int, int]) -> _Pair:
    """DAPI-like fluorescence: dim uneven background, 15-60 bright textured nuclei, blur, shot noise."""
    h, w = size
    s = float(np.sqrt(h * w) / 224.0)
    # patient / slide appearance
    tint = np.array([style_rng.uniform(0.12, 0.35), style_rng.uniform(0.30, 0.55), 1.0], np.float32)
    gain = style_rng.uniform(0.75, 1.0)
    background = style_rng.uniform(0.04, 0.09)
    blur = style_rng.uniform(0.7, 1.3) * s
    photons = style_rng.uniform(40.0, 160.0)  # photon count of a fully bright pixel
    mean_radius = style_rng.uniform(7.0, 10.0)
    texture_amp = style_rng.uniform(0.15, 0.3)
    dim_share = style_rng.uniform(0.1, 0.25)  # share of dim (out-of-focus, low-DNA) nuclei

    n = int(rng.integers(15, 61))
    radii = (np.clip(rng.normal(mean_radius, 2.5, n), 4.0, 14.0) * s).tolist()
    centres = np.empty((n, 2), np.float32)
    for i in range(n):  # a few touch or overlap a previous nucleus
        if i > 0 and rng.random() < 0.3:
            j = int(rng.integers(i))
            angle = rng.uniform(0, 2 * np.pi)
            dist = (radii[i] + radii[j]) * rng.uniform(0.75, 1.05)
            centres[i] = centres[j] + dist * np.array([np.sin(angle), np.cos(angle)])
        else:
            centres[i] = rng.uniform([-0.02 * h, -0.02 * w], [1.02 * h, 1.02 * w])
    dim = rng.random(n) < dim_share
    brightness = (np.where(dim, rng.uniform(0.15, 0.35, n), rng.uniform(0.5, 1.0, n)) * gain).tolist()
    aspect = rng.uniform(0.6, 1.0, n).tolist()
    theta = rng.uniform(0, np.pi, n).tolist()

    signal = np.zeros(size, np.float32)
    mask = np.zeros(size, bool)
    edge = 1.0  # anti-aliasing width, px
    for i in range(n):
        r = radii[i]
        amp, phase = _fourier_shape(rng, 4, rng.uniform(0.05, 0.25))
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
        bound = _radial_boundary(u, v, rho, amp, phase)
        depth = (bound - rho) * r * aspect[i]  # ~ signed distance to the boundary, px
        inside = depth > 0
        if not inside.any():
            continue
        alpha = np.clip(depth / edge + 0.5, 0.0, 1.0)
        dome = 0.8 + 0.2 * np.sqrt(np.clip(1.0 - rho / bound, 0.0, 1.0))
        value = brightness[i] * alpha * dome
        np.maximum(signal[y0:y1, x0:x1], value, out=signal[y0:y1, x0:x1])
        mask[y0:y1, x0:x1] |= inside

    # chromatin texture (fine) and nucleoli-like darker spots
    chromatin = _smooth_noise(rng, size, 1.2 * s)
    nucleoli = np.clip(_smooth_noise(rng, size, 2.0 * s) - 1.2, 0.0, None)
    texture = 1.0 + texture_amp * chromatin - 0.25 * nucleoli
    signal *= texture
    uneven = background * (1.0 + 0.35 * _smooth_noise(rng, size, 45.0 * s)) + 0.015 * np.clip(
        _smooth_noise(rng, size, 6.0 * s), 0, None
    )
    img = np.clip(signal + uneven, 0.0, None)
    img = ndi.gaussian_filter(img, blur, truncate=3.0)
    img = rng.poisson(img * photons).astype(np.float32) / photons  # shot noise
    img += 0.01 * rng.standard_normal(size, dtype=np.float32)  # read noise
    rgb = img[..., None] * tint
    return _to_uint8(rgb), mask.astype(np.uint8)
