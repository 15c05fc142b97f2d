"""``polyp`` phantom: a colonoscopy frame with one or two polyps (Kvasir-SEG-like), binary."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from fewlabel.data.phantoms.common import (
    fast_noise,
    fourier_shape,
    fov_mask,
    radial_boundary,
    smoothstep,
    to_uint8,
)
from fewlabel.data.phantoms.registry import PhantomPair, register_phantom

# base colours (RGB in [0, 1]) before lighting
_POLYP_COLOURS = {
    "mucosa": (0.86, 0.45, 0.38),
    "fold_shadow": (0.45, 0.15, 0.12),
    "vessel": (0.58, 0.12, 0.13),
    "polyp": (0.88, 0.50, 0.42),
    "pit": (0.62, 0.26, 0.22),
    "box": (0.05, 0.30, 0.12),
}


def _polyp_blob(
    rng: np.random.Generator, cy: float, cx: float, radius: float, size: tuple[int, int]
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray, np.ndarray]:
    """One polyp outline in its bounding patch: (patch slices, signed depth px, height in [0, 1], inside).

    The outline is an ellipse with a random radial Fourier perturbation (a lobulated blob); the
    height is a dome, flatter (sessile) or more peaked (pedunculated-looking) at random.
    """
    h, w = size
    aspect = rng.uniform(0.7, 1.0)
    theta = rng.uniform(0.0, np.pi)
    amp, phase = fourier_shape(rng, 5, rng.uniform(0.06, 0.22), decay=1.0)
    reach = radius * (1.0 + float(amp.sum())) * 1.35 + 3.0
    y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 2)
    x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 2)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    c, s_ = math.cos(theta), math.sin(theta)
    u = (dx * c + dy * s_) / radius
    v = (-dx * s_ + dy * c) / (radius * aspect)
    rho = np.sqrt(u * u + v * v)
    bound = radial_boundary(u, v, rho, amp, phase)
    depth = (bound - rho) * (radius * aspect)  # ~ signed distance to the outline, px
    t = np.clip(rho / bound, 0.0, 1.0)
    height = (1.0 - t * t) ** rng.uniform(0.35, 0.8)
    return (slice(y0, y1), slice(x0, x1)), depth, height.astype(np.float32), depth > 0


@dataclass(frozen=True)
class _PolypVideo:
    """What ``style_rng`` draws for one patient / video.

    Attributes:
        fov: ``(H, W)`` float32 soft field of view in [0, 1] (see :func:`fov_mask`).
        col: base colours (keys of ``_POLYP_COLOURS``), ``(3, 1, 1)`` float32 RGB in [0, 1].
        vessel_density: in [0.3, 1].
        gain: ``(3, 1, 1)`` float32 light tint times exposure, about [0.8, 1.1].
        has_box, box_w, box_h: whether frames carry the scope-guide box in their lower-left corner, its size in px.
    """

    fov: np.ndarray
    col: dict[str, np.ndarray]
    vessel_density: float
    gain: np.ndarray
    has_box: bool
    box_w: float
    box_h: float


def _polyp_video(style_rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: tuple[int, int]) -> _PolypVideo:
    """Draw one patient / video (see :class:`_PolypVideo`) from the ``(H, W)`` pixel grids ``yy``, ``xx``."""
    h, w = size
    col = {k: np.asarray(v, np.float32).reshape(3, 1, 1) for k, v in _POLYP_COLOURS.items()}
    fov = fov_mask(style_rng, yy, xx, size)
    for key in ("mucosa", "polyp", "vessel"):
        col[key] = np.clip(col[key] * (1.0 + style_rng.normal(0.0, 0.05, (3, 1, 1))), 0.0, 1.0).astype(np.float32)
    polyp_shift = style_rng.uniform(-1.0, 1.0)  # < 0: redder than the mucosa, > 0: paler
    if polyp_shift < 0:
        col["polyp"] = col["polyp"] * (1.0 + 0.2 * polyp_shift * np.array([0.0, 1.0, 1.0], np.float32).reshape(3, 1, 1))
    else:
        pale = np.array([0.95, 0.78, 0.72], np.float32).reshape(3, 1, 1)
        col["polyp"] = col["polyp"] + (pale - col["polyp"]) * (0.6 * polyp_shift)
    vessel_density = style_rng.uniform(0.3, 1.0)
    tint = np.array([1.0, style_rng.uniform(0.92, 1.0), style_rng.uniform(0.88, 1.0)], np.float32)
    gain = (tint * style_rng.uniform(0.9, 1.1)).reshape(3, 1, 1)
    has_box = style_rng.random() < 0.3
    box_w, box_h = style_rng.uniform(0.2, 0.28) * w, style_rng.uniform(0.22, 0.3) * h
    return _PolypVideo(fov, col, vessel_density, gain, has_box, box_w, box_h)


class _Noises(NamedTuple):
    """Unit-std ``(H, W)`` float32 noises of one frame, by correlation length."""

    fine: np.ndarray
    mid: np.ndarray
    coarse: np.ndarray


class _Lumen(NamedTuple):
    """The colon wall around the lumen, before lighting.

    Attributes:
        img: ``(3, H, W)`` float32 RGB, about [0, 1]; the later steps paint into it in place.
        shade: ``(H, W)`` float32 shading of the wall, about [0, 1.2].
        crest: ``(H, W)`` float32 fold crests, in [0, 1].
        far: ``(H, W)`` float32 depth, in [0, 1]: 0 deep in the lumen, 1 near the scope.
    """

    img: np.ndarray
    shade: np.ndarray
    crest: np.ndarray
    far: np.ndarray


def _polyp_lumen(
    rng: np.random.Generator, video: _PolypVideo, yy: np.ndarray, xx: np.ndarray, noise: _Noises
) -> _Lumen:
    """Draw the lumen (a dark tunnel, possibly off-frame) and the haustral folds around it."""
    h, w = yy.shape
    m = float(min(h, w))
    col, fine, mid, coarse = video.col, noise.fine, noise.mid, noise.coarse
    angle = rng.uniform(0.0, 2 * np.pi)
    dist = rng.uniform(0.05, 0.65) * m
    ly, lx = (h - 1) / 2 + dist * math.sin(angle), (w - 1) / 2 + dist * math.cos(angle)
    ecc = rng.uniform(0.7, 1.0)
    ry, rx = (yy - ly) / m, (xx - lx) / (m * ecc)
    r = np.sqrt(ry * ry + rx * rx)
    phi = np.arctan2(ry, rx)
    r *= 1.0 + 0.1 * np.cos(2 * phi + rng.uniform(0.0, 2 * np.pi)) + 0.04 * coarse
    lumen_r = rng.uniform(0.08, 0.18)
    period = rng.uniform(0.2, 0.35)
    wobble = rng.uniform(0.3, 1.0) * np.cos(phi + rng.uniform(0.0, 2 * np.pi))
    wobble += 0.4 * np.cos(3 * phi + rng.uniform(0.0, 2 * np.pi))
    phase = 2 * np.pi * r / period + wobble + 0.25 * mid + rng.uniform(0.0, 2 * np.pi)
    crest = 0.5 + 0.5 * np.cos(phase)
    fold_shadow = smoothstep(0.75, 1.0, np.sin(phase - 0.4))  # thin shadow on the lumen side of a fold
    far = smoothstep(0.0, 0.55, r / 1.2)  # depth: light falls off into the lumen
    lumen = np.exp(-np.square(r / lumen_r))
    fold_amp = rng.uniform(0.08, 0.2)
    shade = (0.4 + 0.6 * far) * (1.0 - fold_amp + 2 * fold_amp * crest) * (1.0 - 0.85 * lumen)
    shade *= (1.0 - 0.3 * fold_shadow * far) * (1.0 + 0.05 * mid + 0.04 * fine)
    img = col["mucosa"] * shade
    img += (col["fold_shadow"] - col["mucosa"]) * (0.35 * fold_shadow * far * shade)
    return _Lumen(img, shade, crest, far)


def _paint_vessels(
    rng: np.random.Generator, video: _PolypVideo, wall: _Lumen, noise: _Noises, s: float
) -> None:
    """Paint vessels into ``wall.img`` in place: thin dark-red branching lines, patchy and faint.

    The lines are ridges of band-limited noise, fading into the lumen with ``wall.far``.
    """
    size = wall.far.shape
    mid, coarse = noise.mid, noise.coarse
    main = np.exp(-np.square(fast_noise(rng, size, 4.0 * s) / 0.03))
    small = np.exp(-np.square(fast_noise(rng, size, 1.6 * s) / 0.04)) * smoothstep(0.2, 1.2, mid)
    vessels = np.clip(main + 0.8 * small, 0.0, 1.0) * smoothstep(0.3, 1.3, coarse + 0.5 * mid)
    vessels *= (0.45 * video.vessel_density) * wall.far
    wall.img[...] += (video.col["vessel"] * wall.shade - wall.img) * vessels


def _polyp_centre(rng: np.random.Generator, video: _PolypVideo, size: tuple[int, int]) -> tuple[float, float]:
    """Draw a polyp centre ``(y, x)`` in px: inside the field of view and off the box (30 tries, then the centre)."""
    h, w = size
    for _ in range(30):
        cy = (h - 1) / 2 + rng.uniform(-0.3, 0.3) * h
        cx = (w - 1) / 2 + rng.uniform(-0.3, 0.3) * w
        in_box = video.has_box and cx < video.box_w + 2 and cy > h - video.box_h - 2
        if video.fov[int(cy), int(cx)] > 0.5 and not in_box:
            return cy, cx
    return (h - 1) / 2, (w - 1) / 2


def _polyp_polyps(
    rng: np.random.Generator, video: _PolypVideo, wall: _Lumen, noise: _Noises
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one or two polyps and paint them into ``wall.img`` in place.

    Each is a lobulated blob (:func:`_polyp_blob`) with a pit-pattern texture, shaded as a dome lit
    from the scope (Lambertian, and a specular lobe), with a contact shadow around its base.

    Returns:
        ``(mask, glint_boost)``: ``(H, W)`` bool union of the polyps, ``(H, W)`` float32 >= 0
        specular strength of the polyps' glints.
    """
    size = wall.far.shape
    m = float(min(size))
    img, far, col, fine, mid = wall.img, wall.far, video.col, noise.fine, noise.mid
    n_polyps = 1 if rng.random() < 0.8 else 2
    mask = np.zeros(size, bool)
    glint_boost = np.zeros(size, np.float32)
    lx_, ly_ = rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6)  # the light comes from the scope, tilted
    light_norm = math.sqrt(lx_ * lx_ + ly_ * ly_ + 1.0)
    for k in range(n_polyps):
        radius = max(4.0, rng.uniform(0.09, 0.22) * m * (0.6 if k else 1.0))
        cy, cx = _polyp_centre(rng, video, size)
        (sy, sx), depth, height, inside = _polyp_blob(rng, cy, cx, radius, size)
        alpha = np.clip(depth + 0.5, 0.0, 1.0)
        # Lambertian shading of the dome (height 0.6 radius) and a specular lobe
        gy, gx = np.gradient(height * np.float32(0.6 * radius))
        ndotl = (1.0 - gx * lx_ - gy * ly_) / (np.sqrt(gx * gx + gy * gy + 1.0) * light_norm)
        lit = 0.3 + 0.8 * np.clip(ndotl, 0.0, 1.0)
        pits = np.exp(-np.square(fine[sy, sx] / 0.2)) * 0.3
        surface = col["polyp"] * (lit * (1.0 + 0.08 * mid[sy, sx]) * (0.6 + 0.4 * far[sy, sx]))
        surface += (col["pit"] * lit - surface) * pits
        outside = np.maximum(-depth, 0.0)
        contact = 0.45 * np.exp(-outside / max(0.12 * radius, 1.0)) * (depth <= 0)
        patch = img[:, sy, sx] * (1.0 - contact)
        img[:, sy, sx] = patch + (surface - patch) * alpha
        spec = np.clip(ndotl, 0.0, 1.0) ** 60 * alpha * (0.7 + 0.6 * fine[sy, sx])
        np.maximum(glint_boost[sy, sx], 3.5 * spec, out=glint_boost[sy, sx])
        mask[sy, sx] |= inside
    return mask, glint_boost


def _polyp_light(
    rng: np.random.Generator,
    video: _PolypVideo,
    wall: _Lumen,
    noise: _Noises,
    glint_boost: np.ndarray,
    mask: np.ndarray,
    s: float,
) -> np.ndarray:
    """Light ``wall.img`` (in place): vignetting from the scope, wet glints, gain, the box, noise, black outside.

    ``mask`` is cleared under the box and outside the field of view, in place.

    Returns:
        the ``(H, W, 3)`` uint8 RGB frame, slightly blurred above 224 px.
    """
    h, w = size = wall.far.shape
    m = float(min(h, w))
    img, fov, fine, mid, coarse = wall.img, video.fov, noise.fine, noise.mid, noise.coarse
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yn, xn = (yy - (h - 1) / 2) / m, (xx - (w - 1) / 2) / m
    r2 = yn * yn + xn * xn
    light = (1.1 - 0.55 * r2) * fov
    glints = fine + 0.9 * wall.crest * wall.far * smoothstep(0.0, 1.5, mid) + glint_boost
    highlight = smoothstep(2.4, 2.9, glints) * fov
    img *= light
    img += highlight * (np.array([1.0, 0.98, 0.95], np.float32).reshape(3, 1, 1) - img)
    img *= video.gain
    if video.has_box:  # the scope-guide box: dark with a green map inside
        bx, by = int(video.box_w), int(h - video.box_h)
        inner = (0.5 + 0.5 * smoothstep(-0.2, 0.6, coarse[by:, :bx])) * video.col["box"]
        img[:, by:, :bx] = inner
        img[:, by : by + max(1, int(s)), :bx] = 0.02
        img[:, by:, bx - max(1, int(s)) : bx] = 0.02
        mask[by:, :bx] = False
    img += rng.standard_normal(size, dtype=np.float32) * 0.012
    image = to_uint8(img).transpose(1, 2, 0)
    image = cv2.GaussianBlur(np.ascontiguousarray(image), (0, 0), 0.5 * s) if s > 1.0 else np.ascontiguousarray(image)
    mask &= fov >= 0.5
    return image


@register_phantom("polyp", num_classes=2, class_names=("background", "polyp"), modality="endoscopy")
def _polyp(rng: np.random.Generator, style_rng: np.random.Generator, size: tuple[int, int]) -> PhantomPair:
    """Colonoscopy frame: pink mucosa with folds and vessels, dark lumen, one or two raised polyps.

    ``style_rng`` draws one *patient / video*: field of view (circle or rounded rectangle with
    black corners), mucosa and polyp colours, vessel density, light tint and exposure, and the
    scope-guide box some frames carry in their lower-left corner. ``rng`` draws one *frame*: the
    lumen (a dark tunnel, possibly off-frame) with haustral folds around it, the vessels, and the
    polyps: always at least one (one in ~80 % of frames, two otherwise), each a lobulated blob,
    slightly paler or redder than the mucosa, with a pit-pattern texture, shaded as a dome lit
    from the scope, a contact shadow around its base and specular glints. Light falls off from
    the centre (vignetting) and outside the field of view the frame is black. The mask is the
    union of the polyps inside the field of view (and outside the box).

    The steps below draw from ``rng`` in this order; changing it changes every frame.
    """
    h, w = size
    s = float(np.sqrt(h * w) / 224.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    video = _polyp_video(style_rng, yy, xx, size)
    noise = _Noises(fast_noise(rng, size, 1.2 * s), fast_noise(rng, size, 3.5 * s), fast_noise(rng, size, 12.0 * s))
    wall = _polyp_lumen(rng, video, yy, xx, noise)
    _paint_vessels(rng, video, wall, noise, s)
    mask, glint_boost = _polyp_polyps(rng, video, wall, noise)
    image = _polyp_light(rng, video, wall, noise, glint_boost, mask, s)
    return image, mask.astype(np.uint8)
