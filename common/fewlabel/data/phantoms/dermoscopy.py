"""``dermoscopy`` phantom: a pigmented skin lesion under a dermatoscope, binary."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from fewlabel.data.phantoms.common import fourier_shape, radial_boundary, smooth_noise, smoothstep, to_uint8
from fewlabel.data.phantoms.registry import PhantomPair, register_phantom


@dataclass(frozen=True)
class _DermStyle:
    """What ``style_rng`` draws for one patient: skin tone, pigment, hair, dermatoscope.

    Attributes:
        skin, light_brown, dark_brown, blue_grey, hair_colour: ``(3,)`` float32 RGB in [0, 1].
        hair_density: in [0, 1] (squared uniform: most patients have few hairs).
        hair_width: hair blur sigma, px.
        fov: field-of-view radius over the half-diagonal, in [0.8, 0.95].
    """

    skin: np.ndarray
    light_brown: np.ndarray
    dark_brown: np.ndarray
    blue_grey: np.ndarray
    hair_colour: np.ndarray
    hair_density: float
    hair_width: float
    fov: float


def _derm_style(style_rng: np.random.Generator, s: float) -> _DermStyle:
    """Draw one patient's appearance (see :class:`_DermStyle`); ``s`` is the image scale, ``sqrt(H W) / 224``."""
    tone = style_rng.uniform(0.0, 1.0)
    skin = np.array([0.93 - 0.25 * tone, 0.74 - 0.28 * tone, 0.66 - 0.30 * tone], np.float32)
    skin *= style_rng.uniform(0.93, 1.05, 3).astype(np.float32)
    pigment = style_rng.uniform(0.0, 1.0)
    light_brown = np.array([0.72, 0.50, 0.36], np.float32) * (1.0 - 0.2 * pigment)
    dark_brown = np.array([0.38, 0.22, 0.15], np.float32) * (1.0 - 0.35 * pigment)
    blue_grey = np.array([0.45, 0.45, 0.50], np.float32)
    hair_colour = np.array([0.10, 0.07, 0.05], np.float32) * style_rng.uniform(0.6, 1.6)
    hair_density = style_rng.uniform(0.0, 1.0) ** 2
    hair_width = style_rng.uniform(0.5, 0.9) * s
    fov = style_rng.uniform(0.80, 0.95)  # field-of-view radius / half-diagonal
    return _DermStyle(skin, light_brown, dark_brown, blue_grey, hair_colour, hair_density, hair_width, fov)


def _derm_skin(
    rng: np.random.Generator, style: _DermStyle, yy: np.ndarray, xx: np.ndarray, s: float
) -> np.ndarray:
    """``(H, W, 3)`` float32 RGB skin, about [0, 1]: multiplicative texture, reddish blotches, illumination gradient."""
    h, w = size = yy.shape
    m = float(min(h, w))
    img = np.broadcast_to(style.skin, (h, w, 3)).copy()
    tex = 0.035 * smooth_noise(rng, size, 8.0 * s) + 0.02 * smooth_noise(rng, size, 1.5 * s)
    img *= 1.0 + tex[..., None]
    redness = np.clip(smooth_noise(rng, size, 20.0 * s), 0, None)[..., None]
    img *= 1.0 - 0.05 * redness * np.array([0.0, 1.0, 0.8], np.float32)
    gdir = rng.uniform(0, 2 * np.pi)
    gradient = ((yy - h / 2) * math.sin(gdir) + (xx - w / 2) * math.cos(gdir)) / m
    img *= (1.0 + 0.08 * gradient)[..., None]
    return img


def _derm_lesion_shape(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, s: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the lesion outline: an ellipse with a radial Fourier perturbation and a finely irregular border.

    Returns:
        ``(mask, alpha, interior)``, each ``(H, W)``: bool lesion mask; float32 coverage in [0, 1]
        with a logistic edge; float32 position inside, in [0, 1] (0 at the border, 1 at the centre).
    """
    h, w = size = yy.shape
    m = float(min(h, w))
    cy = h / 2 + rng.uniform(-0.1, 0.1) * h
    cx = w / 2 + rng.uniform(-0.1, 0.1) * w
    radius = rng.uniform(0.14, 0.3) * m
    aspect = rng.uniform(0.65, 1.0)
    theta = rng.uniform(0, np.pi)
    amp, phase = fourier_shape(rng, 7, rng.uniform(0.15, 0.4), decay=0.9)
    dy, dx = yy - cy, xx - cx
    u = (dx * math.cos(theta) + dy * math.sin(theta)) / radius
    v = (-dx * math.sin(theta) + dy * math.cos(theta)) / (radius * aspect)
    rho = np.sqrt(u * u + v * v)
    bound = radial_boundary(u, v, rho, amp, phase)
    # small-scale irregularity of the border
    bound = bound * (1.0 + 0.04 * smooth_noise(rng, size, 3.0 * s))
    depth = (bound - rho) * radius * aspect  # ~ signed distance, px
    mask = depth > 0
    alpha = 0.5 + 0.5 * np.tanh(depth / (2.0 * rng.uniform(1.0, 3.5) * s))  # logistic edge
    interior = np.clip(1.0 - rho / np.maximum(bound, 1e-3), 0.0, 1.0)
    return mask, alpha, interior


def _derm_lesion_colour(
    rng: np.random.Generator, style: _DermStyle, interior: np.ndarray, s: float
) -> np.ndarray:
    """``(H, W, 3)`` float32 RGB of the lesion, in [0, 1]: variegated browns and blue-grey, a pigment network.

    The colour is a softmax mixture of light brown / dark brown / blue-grey, darker towards the
    centre; the pigment network is the zero crossings of band-limited noise (a reticular pattern).
    """
    size = interior.shape
    f1 = smooth_noise(rng, size, 10.0 * s) + 1.5 * interior - 0.3
    f2 = smooth_noise(rng, size, 14.0 * s) - 1.0
    weights = np.stack([np.zeros_like(f1), f1, f2], -1) * 2.5  # softmax over the three colours
    weights = np.exp(weights - weights.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    lesion = weights @ np.stack([style.light_brown, style.dark_brown, style.blue_grey])
    net = np.abs(smooth_noise(rng, size, 2.0 * s)) < 0.25
    lesion *= 1.0 - 0.18 * net[..., None] * rng.uniform(0.3, 1.0)
    lesion *= 1.0 + 0.05 * smooth_noise(rng, size, 1.5 * s)[..., None]
    return lesion


def _derm_hairs(rng: np.random.Generator, style: _DermStyle, img: np.ndarray, s: float) -> np.ndarray:
    """Draw hairs over ``img`` (``(H, W, 3)`` float32): curved strands from border to border, blurred polylines."""
    h, w = size = img.shape[:2]
    n_hairs = int(rng.poisson(0.5 + 6.0 * style.hair_density))
    if not n_hairs:
        return img
    canvas = np.zeros(size, np.float32)
    n_pts = 4 * (h + w)
    t = np.linspace(0.0, 1.0, n_pts, dtype=np.float32)[:, None]
    for _ in range(n_hairs):
        a, b = rng.uniform(0, 1, 2), rng.uniform(0, 1, 2)
        a[int(rng.integers(2))] = float(rng.integers(2))  # start on a border
        b[int(rng.integers(2))] = float(rng.integers(2))
        c = (a + b) / 2 + rng.normal(0.0, 0.15, 2)  # gently curved
        pts = ((1 - t) ** 2 * a + 2 * (1 - t) * t * c + t**2 * b) * np.array([h - 1, w - 1], np.float32)
        wiggle = rng.uniform(0.0, 2.0) * s * np.sin(2 * np.pi * rng.uniform(2, 6) * t[:, 0] + rng.uniform(0, 6.3))
        pts[:, 1] += wiggle
        iy, ix = np.rint(pts[:, 0]).astype(int), np.rint(pts[:, 1]).astype(int)
        ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        canvas[iy[ok], ix[ok]] = rng.uniform(0.6, 1.0)
    hair_width = style.hair_width
    hair = ndi.gaussian_filter(canvas, hair_width, truncate=3.0) * (np.sqrt(2 * np.pi) * hair_width * 1.1)
    hair = np.clip(hair, 0.0, 1.0)[..., None]
    return img * (1.0 - hair) + style.hair_colour * hair


def _derm_dermatoscope(
    rng: np.random.Generator, style: _DermStyle, img: np.ndarray, yy: np.ndarray, xx: np.ndarray, s: float
) -> np.ndarray:
    """The dermatoscope: radial fall-off, dark circular corners, slight blur and noise; ``(H, W, 3)`` uint8 RGB."""
    h, w = yy.shape
    fov = style.fov
    r = np.sqrt((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / (0.5 * np.hypot(h, w))
    vignette = (1.0 - 0.25 * (r / fov) ** 2) * (1.0 - smoothstep(fov - 0.02, fov + 0.03, r))
    img = img * vignette[..., None] + 0.02 * (1.0 - vignette[..., None])
    img = ndi.gaussian_filter(img, (0.5 * s, 0.5 * s, 0), truncate=3.0)
    img += 0.012 * rng.standard_normal(img.shape, dtype=np.float32)
    return to_uint8(img)


@register_phantom("dermoscopy", num_classes=2, class_names=("background", "lesion"), modality="dermoscopy")
def _dermoscopy(rng: np.random.Generator, style_rng: np.random.Generator, size: tuple[int, int]) -> PhantomPair:
    """Skin with texture and dermatoscope vignetting, one brown variegated lesion, a few hairs.

    ``style_rng`` draws the patient (:func:`_derm_style`), ``rng`` the image: the steps below draw
    from it in this order; changing it changes every image.
    """
    h, w = size
    s = float(np.sqrt(h * w) / 224.0)
    style = _derm_style(style_rng, s)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = _derm_skin(rng, style, yy, xx, s)
    mask, alpha, interior = _derm_lesion_shape(rng, yy, xx, s)
    lesion = _derm_lesion_colour(rng, style, interior, s)
    img = img * (1.0 - alpha[..., None]) + lesion * alpha[..., None]
    img = _derm_hairs(rng, style, img, s)
    return _derm_dermatoscope(rng, style, img, yy, xx, s), mask.astype(np.uint8)
