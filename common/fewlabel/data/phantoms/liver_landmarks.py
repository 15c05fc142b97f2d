"""``liver_landmarks`` phantom: a laparoscopic liver frame with its landmarks as thin curves (SLiPPA), 4 classes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fewlabel.data.landmarks import LANDMARK_CLASSES, draw_landmark_mask
from fewlabel.data.phantoms.common import (
    bezier,
    fast_noise,
    fov_mask,
    polyline_distance,
    smoothstep,
    to_uint8,
)
from fewlabel.data.phantoms.registry import PhantomPair, register_phantom

# base colours (RGB in [0, 1]) before lighting
_LIVER_COLOURS = {
    "liver": (0.56, 0.20, 0.14),
    "liver_dark": (0.36, 0.10, 0.08),
    "tissue": (0.50, 0.26, 0.22),
    "fat": (0.76, 0.55, 0.28),
    "ligament": (0.90, 0.76, 0.66),
}


@dataclass(frozen=True)
class _LiverVideo:
    """What ``style_rng`` draws for one patient / video.

    Attributes:
        fov: ``(H, W)`` float32 soft field of view in [0, 1] (see :func:`fov_mask`).
        col: base colour of each tissue (keys of ``_LIVER_COLOURS``), ``(3, 1, 1)`` float32 RGB in [0, 1].
        gain: ``(3, 1, 1)`` float32 light tint times exposure, about [0.7, 1.15].
        fat_share: offset of the fat share of the tissue below the liver, in [-0.4, 0.3].
    """

    fov: np.ndarray
    col: dict[str, np.ndarray]
    gain: np.ndarray
    fat_share: float


def _liver_video(style_rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: tuple[int, int]) -> _LiverVideo:
    """Draw one patient / video (see :class:`_LiverVideo`) from the ``(H, W)`` pixel grids ``yy``, ``xx``."""
    # colours as (3, 1, 1): the image is built channel-first, which NumPy broadcasts much faster
    col = {k: np.asarray(v, np.float32).reshape(3, 1, 1) for k, v in _LIVER_COLOURS.items()}
    fov = fov_mask(style_rng, yy, xx, size)
    for key in col:
        col[key] = np.clip(col[key] * (1.0 + style_rng.normal(0.0, 0.06, (3, 1, 1))), 0.0, 1.0).astype(np.float32)
    tint = np.array([1.0, style_rng.uniform(0.9, 0.97), style_rng.uniform(0.82, 0.95)], np.float32)
    gain = (tint * style_rng.uniform(0.9, 1.15)).reshape(3, 1, 1)
    fat_share = style_rng.uniform(-0.4, 0.3)
    return _LiverVideo(fov, col, gain, fat_share)


_FADE = 0.12  # the crease fades out over 2 * _FADE of u at both ends of the ridge


@dataclass(frozen=True)
class _LiverLayout:
    """One frame's geometry, in layout coordinates (u along the liver edge, v downwards, units of ``min(H, W)``).

    Attributes:
        size: ``(H, W)``.
        roll: camera roll, radians in [-0.35, 0.35].
        u, v: ``(H, W)`` float32 layout coordinates of each pixel.
        reach: ``|u|`` covering the whole frame.
        sil: parameters of the liver's lower edge (the silhouette), see :meth:`edge_v`.
        gap: parameters of the ridge's height above the edge, see :meth:`ridge_gap`.
        has_sil, has_ridge, has_lig: whether silhouette, ridge and falciform ligament are drawn.
        ridge_u: ``(start, end)`` of the ridge along u.
    """

    size: tuple[int, int]
    roll: float
    u: np.ndarray
    v: np.ndarray
    reach: float
    sil: tuple[float, float, float, float, float, float]
    gap: tuple[float, float, float, float]
    has_sil: bool
    has_ridge: bool
    has_lig: bool
    ridge_u: tuple[float, float]

    def to_xy(self, cu: np.ndarray, cv: np.ndarray) -> np.ndarray:
        """(K,) layout u, v -> (K, 2) pixel (x, y)."""
        h, w = self.size
        m = float(min(h, w))
        cr, sr = math.cos(self.roll), math.sin(self.roll)
        return np.stack([(cr * cu - sr * cv) * m + (w - 1) / 2, (sr * cu + cr * cv) * m + (h - 1) / 2], axis=1)

    def edge_v(self, cu: np.ndarray) -> np.ndarray:
        """v of the liver's lower edge at ``cu``: a parabola with a gentle wave."""
        sil = self.sil
        return sil[0] + sil[1] * cu + sil[2] * cu * cu + sil[3] * np.sin(sil[4] * cu + sil[5])

    def ridge_gap(self, cu: np.ndarray) -> np.ndarray:
        """Height of the ridge above the lower edge at ``cu``, about [0.05, 0.45]."""
        gap = self.gap
        return gap[0] + gap[1] * cu + gap[2] * np.sin(gap[3] * cu)


def _liver_layout(rng: np.random.Generator, yn: np.ndarray, xn: np.ndarray, size: tuple[int, int]) -> _LiverLayout:
    """Draw one frame's camera roll, liver edge, ridge and which landmarks it shows (see :class:`_LiverLayout`).

    ``yn``, ``xn`` are the ``(H, W)`` pixel coordinates about the centre in units of ``min(H, W)``.
    """
    h, w = size
    m = float(min(h, w))
    roll = rng.uniform(-0.35, 0.35)
    cr, sr = math.cos(roll), math.sin(roll)
    u = cr * xn + sr * yn
    v = -sr * xn + cr * yn
    reach = 0.5 * math.hypot(h, w) / m + 0.1  # |u| covering the whole frame
    sil = (rng.uniform(0.05, 0.3), rng.uniform(-0.25, 0.25), rng.uniform(-0.3, 0.3), rng.uniform(0.0, 0.03),
           rng.uniform(2.0, 6.0), rng.uniform(0.0, 2 * np.pi))
    gap = (rng.uniform(0.15, 0.32), rng.uniform(-0.08, 0.08), rng.uniform(0.0, 0.02), rng.uniform(3.0, 7.0))
    has_sil = rng.random() < 0.95
    has_ridge = rng.random() < 0.92
    has_lig = rng.random() < 0.72
    ridge_u = (rng.uniform(-1.2, -0.3) * reach, rng.uniform(0.3, 1.2) * reach)
    return _LiverLayout(size, roll, u, v, reach, sil, gap, has_sil, has_ridge, has_lig, ridge_u)


def _liver_surface(
    video: _LiverVideo, lay: _LiverLayout, fine: np.ndarray, mid: np.ndarray, coarse: np.ndarray, s: float
) -> tuple[np.ndarray, np.ndarray]:
    """The unlit scene: tissue below the liver edge, the liver surface above it with the ridge's crease.

    ``fine``, ``mid``, ``coarse`` are ``(H, W)`` unit-std noises.

    Returns:
        ``(img, liver)``: ``(3, H, W)`` float32 RGB, about [0, 1]; ``(H, W)`` float32 liver coverage in [0, 1].
    """
    m = float(min(lay.size))
    col, u, v, sil = video.col, lay.u, lay.v, lay.sil
    e = lay.edge_v(u)
    slope = np.sqrt(1.0 + (sil[1] + 2.0 * sil[2] * u) ** 2)
    d_edge = (e + (0.0 if lay.has_sil else 3.0) - v) * (m / slope)  # ~ signed distance to the lower edge, px
    liver = np.clip(d_edge + 0.5, 0.0, 1.0)  # absent silhouette: the liver fills the view

    # ---- tissue below the edge: darker, further away, reddish with yellowish fat
    fat = smoothstep(0.0, 1.0, coarse * 0.6 + video.fat_share + 0.3 * fine)
    below = np.maximum(-d_edge, 0.0)
    t_shade = (0.48 + 0.12 * np.minimum(below / (0.25 * m), 1.0)) * (1.0 + 0.1 * fine + 0.06 * mid)
    t_shade *= 1.0 - 0.5 * np.exp(below / (-0.02 * m))  # shadow under the edge
    tissue = (col["tissue"] + (col["fat"] - col["tissue"]) * fat) * t_shade

    # ---- liver surface: mottled parenchyma, rounded towards its edge, crease at the ridge
    l_shade = 1.0 + 0.06 * mid + 0.08 * coarse + 0.04 * fine
    above = np.maximum(d_edge, 0.0)
    l_shade *= 1.0 - 0.2 * np.exp(above / (-0.03 * m))  # the surface turns away at the edge...
    surface = col["liver"] * l_shade
    surface += 0.12 * np.exp(-np.square(above / max(1.2 * s, 0.8) - 1.0))  # ...which catches a thin reflection
    if lay.has_ridge:
        ridge_u = lay.ridge_u
        window = smoothstep(ridge_u[0], ridge_u[0] + 2 * _FADE, u) * (
            1.0 - smoothstep(ridge_u[1] - 2 * _FADE, ridge_u[1], u)
        )
        d_ridge = (v - e + lay.ridge_gap(u)) * m  # > 0 below the ridge (inferior facet)
        facet = np.clip(d_ridge / max(0.6 * s, 0.5) + 0.5, 0.0, 1.0)
        facet *= window * (1.0 - 0.3 * np.clip(d_ridge / (0.25 * m), 0.0, 1.0))
        crest = np.exp(-np.square(d_ridge / max(1.2 * s, 0.8))) * window
        surface += (col["liver_dark"] - col["liver"]) * (facet * l_shade)
        surface += np.array([0.2, 0.15, 0.14], np.float32).reshape(3, 1, 1) * crest
    return tissue + (surface - tissue) * liver, liver


def _liver_edge_contours(lay: _LiverLayout) -> list[tuple[int, np.ndarray]]:
    """``(class, (K, 2) pixel (x, y))`` of the silhouette (1) and the ridge (2) where present.

    The ridge is cut where its crease is visible: its fading ends are left out.
    """
    contours: list[tuple[int, np.ndarray]] = []
    t = np.linspace(-lay.reach, lay.reach, 96, dtype=np.float32)
    if lay.has_sil:
        contours.append((1, lay.to_xy(t, lay.edge_v(t))))
    if lay.has_ridge:
        tr = np.linspace(lay.ridge_u[0] + _FADE, lay.ridge_u[1] - _FADE, 64, dtype=np.float32)
        contours.append((2, lay.to_xy(tr, lay.edge_v(tr) - lay.ridge_gap(tr))))
    return contours


def _liver_ligament_curve(rng: np.random.Generator, lay: _LiverLayout) -> np.ndarray:
    """Draw the falciform ligament's centre line, from near the edge up to the ridge: ``(16, 2)`` pixel (x, y)."""
    has_sil, has_ridge, ridge_u = lay.has_sil, lay.has_ridge, lay.ridge_u
    u0 = rng.uniform(-0.35, 0.35)
    v0 = float(lay.edge_v(np.float32(u0))) - rng.uniform(0.02, 0.05) if has_sil else rng.uniform(0.15, 0.45)
    u1 = u0 + rng.uniform(-0.1, 0.1)
    if has_ridge and ridge_u[0] + _FADE < u1 < ridge_u[1] - _FADE:
        v1 = float(lay.edge_v(np.float32(u1)) - lay.ridge_gap(np.float32(u1))) + rng.uniform(0.0, 0.02)
    else:
        v1 = v0 - rng.uniform(0.15, 0.3)
    v1 = min(v1, v0 - 0.08)
    bend = rng.normal(0.0, 0.04)
    ctrl = [np.array(p, np.float32) for p in ((u0, v0), ((u0 + u1) / 2 + bend, (v0 + v1) / 2), (u1, v1))]
    curve = bezier(*ctrl, n=16)
    return lay.to_xy(curve[:, 0], curve[:, 1])


def _paint_ligament(
    img: np.ndarray, lig_xy: np.ndarray, video: _LiverVideo, lay: _LiverLayout, yy: np.ndarray, xx: np.ndarray
) -> None:
    """Paint the ligament into the ``(3, H, W)`` ``img`` in place: a pale raised band with a shadow beside it."""
    h, w = lay.size
    m = float(min(h, w))
    cr, sr = math.cos(lay.roll), math.sin(lay.roll)
    half = max(0.0065 * m, 0.9)
    pts_yx = lig_xy[:, ::-1].astype(np.float32)
    pad = 4 * half + 2
    y0, y1 = max(0, int(pts_yx[:, 0].min() - pad)), min(h, int(pts_yx[:, 0].max() + pad + 1))
    x0, x1 = max(0, int(pts_yx[:, 1].min() - pad)), min(w, int(pts_yx[:, 1].max() + pad + 1))
    if y0 >= y1 or x0 >= x1:
        return
    sy, sx = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
    dist, _ = polyline_distance(sy, sx, pts_yx)
    shift = 1.6 * half
    dshadow, _ = polyline_distance(sy - shift * cr, sx + shift * sr, pts_yx)
    band = np.clip(half - dist + 0.5, 0.0, 1.0)
    dome = np.sqrt(np.clip(1.0 - dist / (half + 0.5), 0.0, 1.0))
    shadow = np.clip(1.3 * half - dshadow + 0.5, 0.0, 1.0) * (1.0 - band)
    patch = img[:, y0:y1, x0:x1] * (1.0 - 0.35 * shadow)
    pale = video.col["ligament"] * (0.8 + 0.2 * dome)
    img[:, y0:y1, x0:x1] = patch + (pale - patch) * band


def _liver_light(
    rng: np.random.Generator,
    img: np.ndarray,
    video: _LiverVideo,
    liver: np.ndarray,
    yn: np.ndarray,
    xn: np.ndarray,
    noises: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """Light the ``(3, H, W)`` scene (in place): camera-mounted source, wet glints on the liver, gain, noise.

    Returns:
        the ``(H, W, 3)`` uint8 RGB image (not contiguous).
    """
    fine, mid, coarse = noises
    fov = video.fov
    r2 = np.square(yn / 0.75) + np.square(xn / 0.95)
    light = (1.05 - 0.5 * r2 + 0.05 * coarse) * fov
    glints = mid + 0.3 * fine + 1.2 * np.exp(r2 / -0.2)  # small wet glints, clustered, mostly near the centre
    highlight = smoothstep(2.3, 2.8, glints) * smoothstep(0.0, 0.8, coarse) * (liver * fov)
    img *= light
    img += highlight * (np.array([1.0, 0.97, 0.93], np.float32).reshape(3, 1, 1) - img)
    img *= video.gain
    img += rng.standard_normal(fov.shape, dtype=np.float32) * 0.012 + 0.01 * (1.0 - fov)
    return to_uint8(img).transpose(1, 2, 0)


@register_phantom("liver_landmarks", num_classes=4, class_names=LANDMARK_CLASSES, modality="laparoscopy")
def _liver_landmarks(rng: np.random.Generator, style_rng: np.random.Generator, size: tuple[int, int]) -> PhantomPair:
    """Laparoscopic liver frame with silhouette, ridge and falciform ligament as thin curves.

    ``style_rng`` draws one *patient / video*: field of view (circle or rounded rectangle, black
    corners), tissue colours, light tint and exposure. ``rng`` draws one *frame*: camera roll,
    the liver's lower edge (the **silhouette**, against darker tissue below it), the **ridge**
    crossing the liver's anterior surface above it (a crease: bright crest line, darker
    inferior facet between ridge and silhouette), and the shorter **falciform ligament** (a
    pale, slightly raised band with a shadow, running from near the silhouette up to the
    ridge), plus mottled texture, shading, specular highlights and sensor noise. Landmarks are
    sometimes absent: silhouette in ~5 % of frames (the liver fills the view), ridge ~8 %,
    ligament ~28 % (or outside the field of view). The mask has the landmark curves drawn with
    :func:`~fewlabel.data.landmarks.draw_landmark_mask` at thickness
    ``max(2, round(12 * W / 1920))`` (the P2ILF 12 px at 1920 px, scaled), cut to the field of
    view, so landmarks cover a few percent of the pixels.

    The steps below draw from ``rng`` in this order; changing it changes every frame.
    """
    h, w = size
    m = float(min(h, w))
    s = float(np.sqrt(h * w) / 224.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yn, xn = (yy - (h - 1) / 2) / m, (xx - (w - 1) / 2) / m
    video = _liver_video(style_rng, yy, xx, size)
    lay = _liver_layout(rng, yn, xn, size)
    fine = fast_noise(rng, size, 1.3 * s)
    mid = fast_noise(rng, size, 3.0 * s)
    coarse = fast_noise(rng, size, 9.0 * s)
    img, liver = _liver_surface(video, lay, fine, mid, coarse, s)
    contours = _liver_edge_contours(lay)
    if lay.has_lig:
        lig_xy = _liver_ligament_curve(rng, lay)
        contours.append((3, lig_xy))
        _paint_ligament(img, lig_xy, video, lay, yy, xx)
    image = _liver_light(rng, img, video, liver, yn, xn, (fine, mid, coarse))
    mask = draw_landmark_mask(contours, size, thickness=max(2, round(12 * w / 1920)), source="liver_landmarks phantom")
    mask[video.fov < 0.5] = 0
    return np.ascontiguousarray(image), mask
