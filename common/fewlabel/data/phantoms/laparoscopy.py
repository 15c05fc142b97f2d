"""``laparoscopy`` phantom: a laparoscopic cholecystectomy frame, 8 classes (CholecSeg8k merged)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from fewlabel.data.adapters.cholecseg8k import CHOLECSEG8K_CLASSES
from fewlabel.data.phantoms.common import bezier, polyline_distance, smooth_noise, smoothstep, to_uint8
from fewlabel.data.phantoms.registry import PhantomPair, register_phantom

__all__ = ["LAPAROSCOPY_CLASSES"]

#: Classes of the laparoscopy phantom: the 8 classes CholecSeg8k is merged into (Silva et al.
#: 2022, as used by the SurgicalSemiSeg paper).
LAPAROSCOPY_CLASSES = CHOLECSEG8K_CLASSES

# base colours (RGB in [0, 1]) before lighting
_LAP_COLOURS = {
    "wall": (0.80, 0.47, 0.44),
    "wall_fibre": (0.93, 0.80, 0.76),
    "liver": (0.45, 0.11, 0.08),
    "gi": (0.88, 0.52, 0.54),
    "fat": (0.92, 0.74, 0.38),
    "fat_septa": (0.78, 0.46, 0.28),
    "gallbladder": (0.60, 0.66, 0.34),
    "duct": (0.86, 0.80, 0.60),
    "vessel": (0.50, 0.10, 0.12),
    "blood": (0.40, 0.02, 0.02),
    "tissue": (0.93, 0.84, 0.80),
}


def _world_noise(rng: np.random.Generator, grid: int, sigma: float) -> np.ndarray:
    """Unit-std smooth noise on a ``grid`` x ``grid`` lattice over the world square [-1.5, 1.5]^2."""
    return smooth_noise(rng, (grid, grid), sigma)


_WORLD_HALF = 1.5


def _world_sampler(
    grid: int, u: np.ndarray, v: np.ndarray, su: float = 1.0, sv: float = 1.0
) -> Callable[[np.ndarray], np.ndarray]:
    """Bilinear lookup of ``grid`` x ``grid`` world fields at world coordinates ``(u * su, v * sv)``.

    The lattice indices and weights are computed once; the returned function applies them to a
    field (wrapping at the borders of the world square).
    """
    scale = (grid - 1) / (2 * _WORLD_HALF)
    x = (u * su + _WORLD_HALF) * scale
    y = (v * sv + _WORLD_HALF) * scale
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    x0 = x0.astype(np.intp) % grid
    y0 = y0.astype(np.intp) % grid
    x1, y1 = (x0 + 1) % grid, (y0 + 1) % grid
    i00, i01, i10, i11 = y0 * grid + x0, y0 * grid + x1, y1 * grid + x0, y1 * grid + x1
    w00, w01, w10, w11 = (1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy

    def sample(field: np.ndarray) -> np.ndarray:
        flat = field.ravel()
        return flat[i00] * w00 + flat[i01] * w01 + flat[i10] * w10 + flat[i11] * w11

    return sample


def _lap_instrument(
    rng: np.random.Generator,
    yy: np.ndarray,
    xx: np.ndarray,
    centre: tuple[float, float],
    radius: float,
    port_angle: float,
    kind: str,
    shade: float,
    m: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One instrument entering the field of view at ``port_angle``: (coverage mask, grey intensity).

    The shaft is a tapered cylinder (perspective) from outside the circle to a tip point; a
    grasper ends in two jaws, an L-hook in a thin bent wire. Shading across the shaft gives the
    metallic look (a specular stripe on a darker cylinder).
    """
    angle = port_angle + rng.normal(0.0, 0.14)
    entry = np.array(
        [centre[0] + 1.15 * radius * math.sin(angle), centre[1] + 1.15 * radius * math.cos(angle)], np.float32
    )
    inward = math.atan2(centre[0] - entry[0], centre[1] - entry[1]) + rng.normal(0.0, 0.22)
    direction = np.array([math.sin(inward), math.cos(inward)], np.float32)
    length = (0.15 + rng.uniform(0.45, 1.05)) * radius
    tip = entry + length * direction
    w0 = rng.uniform(0.085, 0.12) * m  # full width at the entry
    w1 = 0.72 * w0

    # shaft coordinates: t along (0 at entry, 1 at tip), c across (-1..1)
    ey, ex, dy, dx = (float(a) for a in (*entry, *direction))
    ry, rx = yy - ey, xx - ex
    along = ry * dy + rx * dx
    across = -ry * dx + rx * dy
    t = along / length
    half = 0.5 * (w0 + (w1 - w0) * np.clip(t, 0.0, 1.0))
    c = across / half
    shaft = (t >= 0.0) & (t <= 1.0) & (np.abs(c) <= 1.0)
    stripe = rng.uniform(-0.5, 0.5)
    cyl = np.sqrt(np.clip(1.0 - c * c, 0.0, 1.0))
    grey = shade * (0.45 + 0.55 * cyl) + 0.55 * np.exp(-(((c - stripe) / 0.18) ** 2))
    # darker insulation ring near the tip
    grey = np.where((t > 0.9) & (t <= 1.0), grey * 0.55, grey)
    cover = shaft.copy()

    # tip: jaws or hook, lighter metal
    metal = np.zeros_like(grey)
    tipmask = np.zeros_like(shaft)
    if kind == "grasper":
        opening = rng.uniform(0.08, 0.45)
        jaw_len = rng.uniform(0.11, 0.16) * m
        for sign in (-1.0, 1.0):
            a = inward + sign * opening / 2
            end = tip + jaw_len * np.array([math.sin(a), math.cos(a)])
            dist, arc = polyline_distance(yy, xx, np.stack([tip, end]).astype(np.float32))
            width = 0.5 * w1 * (0.75 - 0.45 * arc)
            jaw = dist <= width
            tipmask |= jaw
            metal = np.where(jaw, 0.62 + 0.3 * (1.0 - dist / np.maximum(width, 1e-3)), metal)
    else:  # L-hook electrocautery
        hook_len = rng.uniform(0.08, 0.12) * m
        bend = inward + rng.choice([-1.0, 1.0]) * math.pi / 2
        p1 = tip + hook_len * direction
        p2 = p1 + 0.45 * hook_len * np.array([math.sin(bend), math.cos(bend)])
        dist, _ = polyline_distance(yy, xx, np.stack([tip, p1, p2]).astype(np.float32))
        width = max(0.018 * m, 0.8)
        wire = dist <= width
        tipmask |= wire
        metal = np.where(wire, 0.55 + 0.35 * (1.0 - dist / width), metal)
    cover |= tipmask
    grey = np.where(tipmask & ~shaft, metal, grey)
    return cover, grey.astype(np.float32)


def _shift_down_right(a: np.ndarray, k: int) -> np.ndarray:
    """``a`` moved ``k`` px down and right, edges repeated."""
    out = np.empty_like(a)
    out[k:, k:] = a[:-k, :-k]
    out[:k, k:] = a[:1, :-k]
    out[:, :k] = out[:, k : k + 1]
    return out


_GRID = 160  # side of the world-noise lattices


@dataclass(frozen=True)
class _LapVideo:
    """What ``style_rng`` draws for one video; lengths in units of ``min(H, W)`` unless said otherwise.

    Attributes:
        fov_r, fov_c: radius and centre ``(y, x)`` of the circular field of view, px.
        tint, exposure: ``(3,)`` RGB gain of the warm light in (0.8, 1] and the exposure, ~[0.9, 1.15].
        col: base colour of each tissue (keys of ``_LAP_COLOURS``), ``(3,)`` float32 RGB in [0, 1].
        layout_angle: tilt of the anatomy, radians.
        wall_b, liver_b: lower border of the abdominal wall (``v = b0 + b1 u``) and of the liver
            (``v = b0 + b1 u + b2 u^2``) in layout coordinates.
        gi_c, gi_r: centre and radii of the gastrointestinal tract ellipse.
        gb_u, gb_axes, gb_angle: gallbladder position along the liver edge, half axes, long-axis angle.
        duct_bend, duct_len, duct_w: cystic duct: ``(2,)`` bend of its mid point, length, half width.
        strands: ``(start, bend, delta, half width, is_vessel)`` of each connective strand or vessel.
        ports, port_kind, shaft_shade: angle of the two trocar ports, instrument kind and shaft grey.
        fields: unit-std ``(_GRID, _GRID)`` float32 world noise: ``liver``, ``wall``, ``gi`` (organ
            borders), ``tex``, ``tex2`` (textures), ``depth`` (shading).
    """

    fov_r: float
    fov_c: tuple[float, float]
    tint: np.ndarray
    exposure: float
    col: dict[str, np.ndarray]
    layout_angle: float
    wall_b: tuple[float, float]
    liver_b: tuple[float, float, float]
    gi_c: tuple[float, float]
    gi_r: tuple[float, float]
    gb_u: float
    gb_axes: tuple[float, float]
    gb_angle: float
    duct_bend: np.ndarray
    duct_len: float
    duct_w: float
    strands: list[tuple[np.ndarray, np.ndarray, np.ndarray, float, int]]
    ports: tuple[float, float]
    port_kind: tuple[str, str]
    shaft_shade: tuple[float, float]
    fields: dict[str, np.ndarray]


def _lap_video(style_rng: np.random.Generator, size: tuple[int, int]) -> _LapVideo:
    """Draw one video (see :class:`_LapVideo`): endoscope, colours, anatomy layout, ports, world noise."""
    h, w = size
    m = float(min(h, w))
    col = {k: np.asarray(v, np.float32) for k, v in _LAP_COLOURS.items()}
    fov_r = style_rng.uniform(0.70, 0.76) * 0.5 * math.hypot(h, w)
    fov_c = ((h - 1) / 2 + style_rng.uniform(-0.02, 0.02) * m, (w - 1) / 2 + style_rng.uniform(-0.02, 0.02) * m)
    tint = np.array([1.0, style_rng.uniform(0.88, 0.97), style_rng.uniform(0.82, 0.95)], np.float32)
    exposure = style_rng.uniform(0.9, 1.15)
    for key in col:
        col[key] = np.clip(col[key] * (1.0 + style_rng.normal(0.0, 0.06, 3)), 0.0, 1.0).astype(np.float32)
    layout_angle = style_rng.uniform(-0.6, 0.6)
    wall_b = (style_rng.uniform(-0.42, -0.22), style_rng.uniform(-0.3, 0.3))
    liver_b = (style_rng.uniform(0.02, 0.16), style_rng.uniform(-0.3, 0.3), style_rng.uniform(-0.5, 0.3))
    gi_c = (float(style_rng.choice([-1.0, 1.0])) * style_rng.uniform(0.2, 0.45), style_rng.uniform(0.38, 0.55))
    gi_r = (style_rng.uniform(0.16, 0.24), style_rng.uniform(0.08, 0.12))
    gb_u = style_rng.uniform(-0.22, 0.22)
    gb_axes = (style_rng.uniform(0.13, 0.18), style_rng.uniform(0.06, 0.085))
    gb_angle = style_rng.uniform(0.9, 2.2)  # long axis, pointing down from under the liver
    duct_bend = style_rng.normal(0.0, 0.08, 2)
    duct_len = style_rng.uniform(0.12, 0.2)
    duct_w = style_rng.uniform(0.006, 0.0095)
    n_strands = int(style_rng.integers(2, 5))
    strands = [
        (style_rng.uniform(-0.3, 0.3, 2), style_rng.normal(0.0, 0.1, 2), style_rng.uniform(-0.1, 0.1, 2),
         style_rng.uniform(0.0025, 0.0045), int(style_rng.integers(2)))
        for _ in range(n_strands)
    ]
    ports = (style_rng.uniform(-1.1, 0.5), style_rng.uniform(2.6, 4.2))  # right / left side of the view
    port_kind = ("grasper" if style_rng.random() < 0.5 else "hook", "grasper")
    shaft_shade = (style_rng.uniform(0.25, 0.55), style_rng.uniform(0.25, 0.55))
    fields = {}
    for name, sigma in (("liver", 6.0), ("wall", 5.0), ("gi", 5.0), ("tex", 1.6), ("tex2", 2.5), ("depth", 12.0)):
        fields[name] = _world_noise(style_rng, _GRID, sigma)
    return _LapVideo(fov_r, fov_c, tint, exposure, col, layout_angle, wall_b, liver_b, gi_c, gi_r, gb_u, gb_axes,
                     gb_angle, duct_bend, duct_len, duct_w, strands, ports, port_kind, shaft_shade, fields)


@dataclass(frozen=True)
class _LapCamera:
    """One frame's view of the video's world.

    Attributes:
        size: ``(H, W)``.
        yy, xx: ``(H, W)`` float32 pixel row / column.
        u, v: ``(H, W)`` world coordinates of each pixel (units of ``min(H, W)``, about [-0.8, 0.8]).
        lu, lv: ``(H, W)`` layout coordinates: ``(u, v)`` rotated by the video's layout angle.
        roll, zoom, shift: the camera motion (radians, ~[0.9, 1.12], ``[du, dv]`` in world units).
        layout_angle: the video's anatomy tilt, radians.
        breathe: vertical tissue motion of this frame, world units (~ +-0.012).
        at: bilinear lookup of a ``(_GRID, _GRID)`` world field at ``(u, v)``, giving ``(H, W)``.
    """

    size: tuple[int, int]
    yy: np.ndarray
    xx: np.ndarray
    u: np.ndarray
    v: np.ndarray
    lu: np.ndarray
    lv: np.ndarray
    roll: float
    zoom: float
    shift: list[float]
    layout_angle: float
    breathe: float
    at: Callable[[np.ndarray], np.ndarray]

    def world_to_pixel(self, points: np.ndarray) -> np.ndarray:
        """(K, 2) layout (u, v) -> pixel (y, x)."""
        h, w = self.size
        m = float(min(h, w))
        ca, sa = math.cos(self.layout_angle), math.sin(self.layout_angle)
        cr, sr = math.cos(self.roll), math.sin(self.roll)
        wu = ca * points[:, 0] + sa * points[:, 1]
        wv = -sa * points[:, 0] + ca * points[:, 1]
        wu, wv = (wu - self.shift[0]) * self.zoom, (wv - self.shift[1]) * self.zoom
        pxn = cr * wu + sr * wv
        pyn = -sr * wu + cr * wv
        return np.stack([pyn * m + (h - 1) / 2, pxn * m + (w - 1) / 2], axis=1).astype(np.float32)


def _lap_camera(rng: np.random.Generator, video: _LapVideo, size: tuple[int, int]) -> _LapCamera:
    """Draw one frame's camera motion (roll, zoom, shift) and tissue motion (breathing); see :class:`_LapCamera`."""
    h, w = size
    m = float(min(h, w))
    roll = float(np.clip(rng.normal(0.0, 0.08), -0.2, 0.2))
    zoom = rng.uniform(0.9, 1.12)
    shift = rng.uniform(-0.07, 0.07, 2).tolist()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yn, xn = (yy - (h - 1) / 2) / m, (xx - (w - 1) / 2) / m
    cr, sr = math.cos(roll), math.sin(roll)
    u = (cr * xn - sr * yn) / zoom + shift[0]
    v = (sr * xn + cr * yn) / zoom + shift[1]
    # layout coordinates: the anatomy is tilted per video
    ca, sa = math.cos(video.layout_angle), math.sin(video.layout_angle)
    lu = ca * u - sa * v
    lv = sa * u + ca * v
    breathe = rng.normal(0.0, 0.012)
    at = _world_sampler(_GRID, u, v)
    return _LapCamera(size, yy, xx, u, v, lu, lv, roll, zoom, shift, video.layout_angle, breathe, at)


def _lap_organs(video: _LapVideo, cam: _LapCamera) -> np.ndarray:
    """``(H, W)`` uint8 label of the large regions, in painter's order: fat (4), GI tract (3), liver (2), wall (1)."""
    lu, lv, at, breathe = cam.lu, cam.lv, cam.at, cam.breathe
    gi_c, gi_r, liver_b, wall_b, fields = video.gi_c, video.gi_r, video.liver_b, video.wall_b, video.fields
    label = np.full(cam.size, 4, np.uint8)  # fat fills what nothing else covers
    gi = ((lu - gi_c[0]) / gi_r[0]) ** 2 + ((lv - gi_c[1] - breathe) / gi_r[1]) ** 2 + 0.35 * at(fields["gi"]) < 1.0
    gi2 = ((lu - gi_c[0] * 0.6) / (gi_r[0] * 0.7)) ** 2 + ((lv - gi_c[1] - 0.2) / gi_r[1]) ** 2 < 1.0
    label[gi | gi2] = 3
    liver_line = liver_b[0] + liver_b[1] * lu + liver_b[2] * lu * lu + breathe
    liver = lv + 0.06 * at(fields["liver"]) < liver_line
    label[liver] = 2
    wall_line = wall_b[0] + wall_b[1] * lu
    wall = lv + 0.05 * at(fields["wall"]) < wall_line
    label[wall] = 1
    return label


def _lap_gallbladder(
    rng: np.random.Generator, video: _LapVideo, cam: _LapCamera, label: np.ndarray
) -> tuple[np.ndarray, float]:
    """Paint the gallbladder (6) into ``label``: pear-shaped, from under the liver edge, pulled a little per frame.

    Returns:
        its centre ``(2,)`` float32 and long-axis angle (radians), in layout coordinates.
    """
    liver_b, gb_u, gb_axes = video.liver_b, video.gb_u, video.gb_axes
    gb_v = liver_b[0] + liver_b[1] * gb_u + liver_b[2] * gb_u * gb_u
    gbc = np.array([gb_u, gb_v], np.float32) + rng.normal(0.0, 0.015, 2).astype(np.float32)
    ga = video.gb_angle + rng.normal(0.0, 0.05)
    du, dv = cam.lu - gbc[0], cam.lv - gbc[1]
    ga_u = du * math.cos(ga) + dv * math.sin(ga)
    ga_v = -du * math.sin(ga) + dv * math.cos(ga)
    tpos = np.clip(ga_u / gb_axes[0], -1.5, 1.5)
    half_w = gb_axes[1] * (1.0 - 0.35 * np.clip(tpos, 0.0, 1.0)) * (1.0 + 0.15 * np.clip(-tpos, 0.0, 1.0))
    gallbladder = (ga_u / gb_axes[0]) ** 2 + (ga_v / half_w) ** 2 < 1.0
    label[gallbladder] = 6
    return gbc, ga


def _lap_misc(
    rng: np.random.Generator, video: _LapVideo, cam: _LapCamera, label: np.ndarray, gbc: np.ndarray, ga: float
) -> tuple[np.ndarray, np.ndarray]:
    """Paint the misc class (7) into ``label``: cystic duct from the gallbladder neck, strands / vessels, blood.

    Returns:
        ``(misc, misc_colour)``: ``(H, W)`` bool where misc was drawn, ``(H, W, 3)`` float32 its colour in [0, 1].
    """
    h, w = cam.size
    m = float(min(h, w))
    yy, xx, zoom, col, duct_len = cam.yy, cam.xx, cam.zoom, video.col, video.duct_len
    misc_colour = np.zeros((h, w, 3), np.float32)
    misc = np.zeros(cam.size, bool)
    neck = gbc + 0.92 * video.gb_axes[0] * np.array([math.cos(ga), math.sin(ga)], np.float32)
    d_dir = np.array([math.cos(ga), math.sin(ga)], np.float32)
    d_mid = neck + 0.5 * duct_len * d_dir + video.duct_bend
    d_end = neck + duct_len * (d_dir + 0.6 * np.array([-d_dir[1], d_dir[0]], np.float32))
    curves = [(np.stack([neck, d_mid, d_end]), video.duct_w, col["duct"])]
    for start, bend, delta, width, is_vessel in video.strands:
        p0 = neck + start * np.array([0.5, 0.3], np.float32)
        p2 = p0 + np.array([0.18, 0.06], np.float32) * np.sign(start + 1e-3) + delta
        curves.append((np.stack([p0, (p0 + p2) / 2 + bend * 0.5, p2]), width, col["vessel" if is_vessel else "tissue"]))
    for ctrl, width, colour in curves:
        pts = cam.world_to_pixel(bezier(*ctrl.astype(np.float32)))
        half = max(width * m * zoom, 0.6)
        y0 = max(0, int(pts[:, 0].min() - half - 2))
        y1 = min(h, int(pts[:, 0].max() + half + 3))
        x0 = max(0, int(pts[:, 1].min() - half - 2))
        x1 = min(w, int(pts[:, 1].max() + half + 3))
        if y0 >= y1 or x0 >= x1:
            continue
        dist, _ = polyline_distance(yy[y0:y1, x0:x1], xx[y0:y1, x0:x1], pts)
        hit = dist <= half
        # the duct and strands run over fat and gallbladder, behind the liver edge
        hit &= label[y0:y1, x0:x1] != 2
        shade = (0.8 + 0.2 * np.sqrt(np.clip(1.0 - dist / half, 0.0, 1.0)))[..., None]
        misc[y0:y1, x0:x1] |= hit
        misc_colour[y0:y1, x0:x1] = np.where(hit[..., None], colour * shade, misc_colour[y0:y1, x0:x1])
    if rng.random() < 0.35:  # a small pool of blood near the gallbladder neck
        centre = cam.world_to_pixel((neck + rng.normal(0.0, 0.06, 2).astype(np.float32))[None])[0]
        rad = rng.uniform(0.015, 0.03) * m * zoom
        blood = (yy - centre[0]) ** 2 + ((xx - centre[1]) / 1.4) ** 2 < rad * rad
        blood &= label != 1
        misc |= blood
        misc_colour[blood] = col["blood"]
    label[misc] = 7
    return misc, misc_colour


def _lap_tissue(
    video: _LapVideo, cam: _LapCamera, label: np.ndarray, misc: np.ndarray, misc_colour: np.ndarray, s: float
) -> np.ndarray:
    """``(H, W, 3)`` float32 RGB (about [0, 1]) of the tissues: textured colour per class, rounded organs, depth."""
    h, w = cam.size
    col, at, fields = video.col, cam.at, video.fields
    tex = at(fields["tex"])
    tex2 = at(fields["tex2"])
    img = np.empty((h, w, 3), np.float32)
    fibres = np.clip(_world_sampler(_GRID, cam.u, cam.v, 1.0, 5.0)(fields["tex"]), 0.0, None)[..., None]
    wall_c = col["wall"] * (1.0 + 0.08 * tex2[..., None]) * (1.0 - 0.35 * fibres) + col["wall_fibre"] * 0.35 * fibres
    liver_c = col["liver"] * (1.0 + 0.10 * tex2[..., None] + 0.05 * tex[..., None])
    septa = (0.55 * np.exp(-((tex2 / 0.09) ** 2)))[..., None]  # thin septa between fat lobules
    fat_c = col["fat"] * (1.0 + 0.07 * tex[..., None]) * (1.0 - septa) + col["fat_septa"] * septa
    folds = 0.5 + 0.5 * np.sin(40.0 * cam.lv + 3.0 * tex2)
    gi_c_img = col["gi"] * (0.85 + 0.15 * folds[..., None])
    gb_c = col["gallbladder"] * (1.0 + 0.06 * tex2[..., None])
    for cls, colour in ((1, wall_c), (2, liver_c), (3, gi_c_img), (4, fat_c), (6, gb_c)):
        sel = label == cls
        img[sel] = colour[sel]
    img[misc] = misc_colour[misc]

    # rounded organs: darker towards their borders (cheap ambient occlusion)
    for cls, depth in ((2, 0.25), (6, 0.3), (3, 0.25)):
        inside = ndi.gaussian_filter((label == cls).astype(np.float32), 4.0 * s, truncate=2.0)
        img *= (1.0 - depth * (1.0 - inside) * (label == cls))[..., None]
    img *= (1.0 + 0.12 * at(fields["depth"]))[..., None]
    return img


def _lap_highlights(
    rng: np.random.Generator, video: _LapVideo, cam: _LapCamera, label: np.ndarray, s: float
) -> np.ndarray:
    """``(H, W)`` float32 in [0, 1]: specular highlights on wet tissue, near the light (they move per frame)."""
    fov_c, fov_r = video.fov_c, video.fov_r
    wet = np.array([0.0, 0.3, 1.0, 0.7, 0.35, 0.0, 1.0, 0.6], np.float32)[label]
    light = np.exp(-(((cam.yy - fov_c[0]) ** 2 + (cam.xx - fov_c[1]) ** 2) / (0.55 * fov_r) ** 2))
    blobs = smooth_noise(rng, cam.size, 3.0 * s) + 0.6 * smooth_noise(rng, cam.size, 1.2 * s)
    highlight = smoothstep(2.65, 3.5, blobs + 1.2 * light) * wet
    return np.clip(ndi.gaussian_filter(highlight, 0.8 * s, truncate=2.0) * 1.3, 0.0, 1.0)


def _lap_instruments(
    rng: np.random.Generator,
    video: _LapVideo,
    cam: _LapCamera,
    img: np.ndarray,
    highlight: np.ndarray,
    label: np.ndarray,
    s: float,
) -> np.ndarray:
    """Draw one or two instruments on top, with soft shadows, and the highlights on the tissue left visible.

    ``label`` gets the instruments (5) in place; ``highlight`` is cleared under them in place.

    Returns:
        the ``(H, W, 3)`` float32 RGB image (about [0, 1]).
    """
    m = float(min(cam.size))
    n_tools = 1 if rng.random() < 0.4 else 2
    first = int(rng.integers(2))
    tools = np.zeros(cam.size, bool)
    for k in range(n_tools):
        port = (first + k) % 2
        cover, grey = _lap_instrument(
            rng, cam.yy, cam.xx, video.fov_c, video.fov_r, video.ports[port], video.port_kind[port],
            video.shaft_shade[port], m
        )
        # soft shadow on the tissue beside the instrument
        shadow = ndi.gaussian_filter(cover.astype(np.float32), 5.0 * s, truncate=2.0)
        shadow = _shift_down_right(shadow, max(1, int(round(3.0 * s))))
        img *= (1.0 - 0.45 * shadow * ~cover)[..., None]
        highlight *= ~cover
        metal = grey[..., None] * np.array([0.95, 0.97, 1.0], np.float32)
        img = np.where(cover[..., None], metal, img)
        tools |= cover
    label[tools] = 5
    return img * (1.0 - highlight[..., None]) + highlight[..., None] * np.array([1.0, 1.0, 0.96], np.float32)


def _lap_endoscope(
    rng: np.random.Generator, video: _LapVideo, cam: _LapCamera, img: np.ndarray, label: np.ndarray, s: float
) -> np.ndarray:
    """Warm light, vignetting, the circular field of view (``label`` set to 0 outside it, in place), blur, noise.

    Returns:
        the ``(H, W, 3)`` uint8 RGB frame.
    """
    fov_c, fov_r = video.fov_c, video.fov_r
    r = np.sqrt((cam.yy - fov_c[0]) ** 2 + (cam.xx - fov_c[1]) ** 2)
    inside = r < fov_r
    vignette = 1.0 - 0.55 * (r / fov_r) ** 2
    edge = np.clip(fov_r - r + 0.5, 0.0, 1.0)
    img = img * (video.tint * video.exposure) * (vignette * edge)[..., None]
    label[~inside] = 0
    img = ndi.gaussian_filter(img, (0.6 * s, 0.6 * s, 0), truncate=2.0)
    img += 0.01 * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.where(inside[..., None], img, 0.012 + 0.008 * img)
    img = np.clip(img, 0.0, 1.0) ** (1 / 1.1)
    return to_uint8(img)


@register_phantom("laparoscopy", num_classes=8, class_names=LAPAROSCOPY_CLASSES, modality="endoscopy")
def _laparoscopy(rng: np.random.Generator, style_rng: np.random.Generator, size: tuple[int, int]) -> PhantomPair:
    """Laparoscopic cholecystectomy frame: circular field of view, liver, gallbladder, instruments.

    ``style_rng`` draws one *video*: the endoscope's field of view, the anatomy (layout of
    abdominal wall, liver, fat, gastrointestinal tract, gallbladder, cystic duct, vessels and
    connective strands, in world coordinates), tissue colours, lighting and the two trocar ports
    with their instruments. ``rng`` draws one *frame* of it: camera motion (shift, zoom, roll),
    small tissue motion, instrument positions and jaw opening, blood spots, specular highlights
    and sensor noise. Class sizes are skewed as in CholecSeg8k: misc (thin ducts and vessels)
    is well under 1% of the pixels, the gallbladder a few percent.

    The steps below draw from ``rng`` in this order; changing it changes every frame.
    """
    s = float(np.sqrt(size[0] * size[1]) / 224.0)
    video = _lap_video(style_rng, size)
    cam = _lap_camera(rng, video, size)
    label = _lap_organs(video, cam)
    gbc, ga = _lap_gallbladder(rng, video, cam, label)
    misc, misc_colour = _lap_misc(rng, video, cam, label, gbc, ga)
    img = _lap_tissue(video, cam, label, misc, misc_colour, s)
    highlight = _lap_highlights(rng, video, cam, label, s)
    img = _lap_instruments(rng, video, cam, img, highlight, label, s)
    return _lap_endoscope(rng, video, cam, img, label, s), label
