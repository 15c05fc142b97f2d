"""``xray`` phantom: a postero-anterior chest radiograph with the lung fields as the mask, binary."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import polygon as draw_polygon

from fewlabel.data.phantoms.common import _smooth_noise, _smoothstep, _to_uint8
from fewlabel.data.phantoms.registry import _Pair, register_phantom


# Outline of the right lung (image left) in (x / W, y / H), apex first, clockwise.
_RIGHT_LUNG = np.array(
    [
        (0.40, 0.15), (0.34, 0.12), (0.27, 0.16), (0.21, 0.25), (0.17, 0.37), (0.14, 0.50),
        (0.125, 0.63), (0.12, 0.74), (0.13, 0.82), (0.17, 0.80), (0.24, 0.75), (0.31, 0.71),
        (0.38, 0.69), (0.44, 0.69), (0.455, 0.58), (0.455, 0.45), (0.445, 0.32), (0.43, 0.21),
    ],
    np.float32,
)


def _lung_mask(
    rng: np.random.Generator, outline: np.ndarray, size: tuple[int, int], width: float, smooth: float
) -> np.ndarray:
    """Rasterise a jittered, smoothed lung outline given in (x / width about the centre, y / H)."""
    h, w = size
    pts = outline + rng.normal(0.0, 0.005, outline.shape).astype(np.float32)
    rr, cc = draw_polygon(pts[:, 1] * h, (pts[:, 0] - 0.5) * width + w / 2, shape=size)
    raster = np.zeros(size, np.float32)
    raster[rr, cc] = 1.0
    return ndi.gaussian_filter(raster, smooth, truncate=3.0) > 0.5


@register_phantom("xray", num_classes=2, class_names=("background", "lung"), modality="xray")
def _xray(rng: np.random.Generator, style_rng: np.random.Generator, size: tuple[int, int]) -> _Pair:
    """PA chest radiograph: body, dark lung fields, ribs, clavicles, spine, mediastinum, heart."""
    h, w = size
    s = float(np.sqrt(h * w) / 224.0)
    # patient: build, lung proportions, heart size, exposure
    lung_w = style_rng.uniform(0.92, 1.06)
    lung_h = style_rng.uniform(0.93, 1.05)
    heart_scale = style_rng.uniform(0.9, 1.15)
    exposure = style_rng.uniform(0.85, 1.1)
    rib_spacing = style_rng.uniform(0.065, 0.08)
    rib_curve = style_rng.uniform(0.22, 0.30)
    body_half = style_rng.uniform(0.43, 0.48)
    # this image: inspiration depth, position
    breath = rng.uniform(-0.02, 0.02)
    shift = rng.uniform(-0.02, 0.02, 2).tolist()

    ww = float(min(w, h))  # the thorax keeps its proportions in wide images
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    v, u = yy / h, 0.5 + (xx - w / 2) / ww
    d = np.abs(u - 0.5 - shift[0])  # distance from the midline, in widths

    def place(outline: np.ndarray, mirror: bool) -> np.ndarray:
        o = outline.copy()
        o[:, 1] = 0.13 + (o[:, 1] - 0.13) * (lung_h + breath * (o[:, 1] > 0.6))
        o[:, 0] = 0.5 + (o[:, 0] - 0.5) * lung_w
        if mirror:
            o[:, 0] = 1.0 - o[:, 0]
            o[:, 1] = np.where(o[:, 1] > 0.6, o[:, 1] + 0.015, o[:, 1])  # left hemidiaphragm lower
        return o + np.asarray(shift, np.float32)

    heart_c = (0.565 + shift[0], 0.665 + shift[1] + 0.5 * breath)
    heart_r = (0.155 * heart_scale, 0.14 * heart_scale)
    ht = rng.uniform(-0.25, -0.05)
    hu, hv = (u - heart_c[0]) * ww, (v - heart_c[1]) * h
    heart_u = (hu * math.cos(ht) + hv * math.sin(ht)) / (heart_r[0] * ww)
    heart_v = (-hu * math.sin(ht) + hv * math.cos(ht)) / (heart_r[1] * h)
    heart = heart_u**2 + heart_v**2 < 1.0
    right = _lung_mask(rng, place(_RIGHT_LUNG, False), size, ww, 2.5 * s)
    left = _lung_mask(rng, place(_RIGHT_LUNG, True), size, ww, 2.5 * s)
    lungs = (right | left) & ~heart  # the heart shadow hides the medial lower left lung

    # body outline: neck widening to the shoulders, soft edge
    half = 0.09 + (body_half - 0.09) * _smoothstep(0.0, 0.2, v - shift[1]) ** 0.7 - 0.03 * _smoothstep(0.75, 1.0, v)
    body = 1.0 - _smoothstep(half - 0.02, half + 0.01, d)
    density = body * (0.55 + 0.12 * v + 0.04 * _smooth_noise(rng, size, 20.0 * s))

    # aerated lung: darker away from its borders, hilar vessels and markings
    dist = ndi.distance_transform_edt(lungs).astype(np.float32)
    depth = 1.0 - np.exp(-dist / (0.045 * ww))
    vessels = np.exp(-((_smooth_noise(rng, size, 3.0 * s) / 0.25) ** 2))  # branching lines
    markings = (0.06 * vessels + 0.015 * _smooth_noise(rng, size, 1.0 * s)) * (1.0 - 0.5 * depth)
    hila = np.exp(-(((d - 0.09) / 0.07) ** 2 + ((v - 0.45 - shift[1]) / 0.10) ** 2))
    density -= lungs * (0.42 * depth - markings - 0.12 * hila * depth)

    # ribs: posterior arcs (rising off the spine, curving down laterally) and fainter anterior ones
    dn = np.clip(d / 0.42, 0.0, 1.3)
    vs = v - shift[1]
    cage = (1.0 - _smoothstep(0.9, 1.02, dn)) * _smoothstep(0.08, 0.16, vs) * (1.0 - _smoothstep(0.68, 0.8, vs))
    phase = (vs + 0.08 * dn - rib_curve * dn**2) / (rib_spacing * (1.0 + 0.5 * vs))
    posterior = _smoothstep(0.3, 0.7, np.cos(2 * np.pi * phase))
    phase_a = (vs - 0.16 * np.clip(1.0 - dn, 0.0, None) ** 1.5) / (1.4 * rib_spacing)
    anterior = _smoothstep(0.55, 0.85, np.cos(2 * np.pi * phase_a))
    anterior *= _smoothstep(0.2, 0.45, dn) * (1.0 - _smoothstep(0.55, 0.7, vs))
    behind = 1.0 - np.exp(-((d / 0.07) ** 4))  # hidden behind the mediastinum
    density += cage * behind * (0.12 * posterior + 0.05 * anterior)
    # clavicles
    clav = np.exp(-(((vs - 0.11 - 0.06 * (dn - 0.2) ** 2 + 0.03 * dn) / 0.014) ** 2))
    clav *= _smoothstep(0.08, 0.15, dn) * (1.0 - _smoothstep(0.75, 0.95, dn))
    density += 0.15 * clav

    # mediastinum, spine with vertebrae, heart, aortic knob, gastric bubble
    medi = np.exp(-((d / (0.055 + 0.02 * _smoothstep(0.2, 0.5, v))) ** 6))
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * (v - shift[1]) / (0.75 * rib_spacing))
    density += body * (0.14 * medi + 0.03 * np.exp(-((d / 0.035) ** 2)) * vert)
    density += 0.04 * ndi.gaussian_filter(heart.astype(np.float32), 3.0 * s, truncate=3.0)
    knob = np.exp(-(((u - 0.56 - shift[0]) / 0.03) ** 2 + ((v - 0.26 - shift[1]) / 0.03) ** 2))
    density += 0.06 * knob
    gastric = np.exp(-(((u - 0.68 - shift[0]) / 0.05) ** 2 + ((v - 0.84 - shift[1] - breath) / 0.025) ** 2))
    density -= 0.15 * gastric * body

    img = np.clip(density * exposure, 0.0, 1.0) ** 1.1
    img = ndi.gaussian_filter(img, 0.8 * s, truncate=3.0)
    img += 0.015 * rng.standard_normal(size, dtype=np.float32) + 0.02
    gray = _to_uint8(img)
    return np.repeat(gray[..., None], 3, axis=-1), lungs.astype(np.uint8)
