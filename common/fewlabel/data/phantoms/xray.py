"""``xray`` phantom: a postero-anterior chest radiograph with the lung fields as the mask, binary."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import polygon as draw_polygon

from fewlabel.data.phantoms.common import smooth_noise, smoothstep, to_uint8
from fewlabel.data.phantoms.registry import PhantomPair, register_phantom


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


@dataclass(frozen=True)
class _XrayPatient:
    """What ``style_rng`` draws for one patient: build, lung proportions, heart size, exposure, ribs.

    Attributes:
        lung_w, lung_h: lung width / height scale, about [0.92, 1.06].
        heart_scale: in [0.9, 1.15].
        exposure: density gain, in [0.85, 1.1].
        rib_spacing: in image heights, [0.065, 0.08]; rib_curve: lateral droop of the ribs, [0.22, 0.3].
        body_half: half width of the trunk at the shoulders, in thorax widths, [0.43, 0.48].
    """

    lung_w: float
    lung_h: float
    heart_scale: float
    exposure: float
    rib_spacing: float
    rib_curve: float
    body_half: float


def _xray_patient(style_rng: np.random.Generator) -> _XrayPatient:
    """Draw one patient (see :class:`_XrayPatient`)."""
    return _XrayPatient(
        lung_w=style_rng.uniform(0.92, 1.06),
        lung_h=style_rng.uniform(0.93, 1.05),
        heart_scale=style_rng.uniform(0.9, 1.15),
        exposure=style_rng.uniform(0.85, 1.1),
        rib_spacing=style_rng.uniform(0.065, 0.08),
        rib_curve=style_rng.uniform(0.22, 0.30),
        body_half=style_rng.uniform(0.43, 0.48),
    )


@dataclass(frozen=True)
class _Thorax:
    """One image's thorax coordinates.

    Attributes:
        size: ``(H, W)``.
        ww: the thorax width in px, ``min(H, W)`` (the thorax keeps its proportions in wide images).
        u, v: ``(H, W)`` float32 coordinates: ``u`` across in thorax widths (0.5 at the image centre), ``v`` down
            in image heights, [0, 1).
        d: ``(H, W)`` float32 distance from the midline, in thorax widths.
        breath: inspiration depth, in [-0.02, 0.02]; shift: ``[du, dv]`` position of the patient, each +-0.02.
    """

    size: tuple[int, int]
    ww: float
    u: np.ndarray
    v: np.ndarray
    d: np.ndarray
    breath: float
    shift: list[float]


def _thorax(rng: np.random.Generator, size: tuple[int, int]) -> _Thorax:
    """Draw this image's inspiration depth and patient position; see :class:`_Thorax`."""
    h, w = size
    breath = rng.uniform(-0.02, 0.02)
    shift = rng.uniform(-0.02, 0.02, 2).tolist()
    ww = float(min(w, h))  # the thorax keeps its proportions in wide images
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    v, u = yy / h, 0.5 + (xx - w / 2) / ww
    d = np.abs(u - 0.5 - shift[0])  # distance from the midline, in widths
    return _Thorax(size, ww, u, v, d, breath, shift)


def _place_lung(outline: np.ndarray, mirror: bool, patient: _XrayPatient, thorax: _Thorax) -> np.ndarray:
    """``outline`` (``_RIGHT_LUNG``) scaled to the patient, breathing, mirrored for the left lung, shifted."""
    o = outline.copy()
    o[:, 1] = 0.13 + (o[:, 1] - 0.13) * (patient.lung_h + thorax.breath * (o[:, 1] > 0.6))
    o[:, 0] = 0.5 + (o[:, 0] - 0.5) * patient.lung_w
    if mirror:
        o[:, 0] = 1.0 - o[:, 0]
        o[:, 1] = np.where(o[:, 1] > 0.6, o[:, 1] + 0.015, o[:, 1])  # left hemidiaphragm lower
    return o + np.asarray(thorax.shift, np.float32)


def _xray_lungs(
    rng: np.random.Generator, patient: _XrayPatient, thorax: _Thorax, s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the heart and the two lungs.

    Returns:
        ``(heart, lungs)``: ``(H, W)`` bool; the heart shadow hides the medial lower left lung.
    """
    h = thorax.size[0]
    u, v, ww, shift, breath = thorax.u, thorax.v, thorax.ww, thorax.shift, thorax.breath
    heart_c = (0.565 + shift[0], 0.665 + shift[1] + 0.5 * breath)
    heart_r = (0.155 * patient.heart_scale, 0.14 * patient.heart_scale)
    ht = rng.uniform(-0.25, -0.05)
    hu, hv = (u - heart_c[0]) * ww, (v - heart_c[1]) * h
    heart_u = (hu * math.cos(ht) + hv * math.sin(ht)) / (heart_r[0] * ww)
    heart_v = (-hu * math.sin(ht) + hv * math.cos(ht)) / (heart_r[1] * h)
    heart = heart_u**2 + heart_v**2 < 1.0
    right = _lung_mask(rng, _place_lung(_RIGHT_LUNG, False, patient, thorax), thorax.size, ww, 2.5 * s)
    left = _lung_mask(rng, _place_lung(_RIGHT_LUNG, True, patient, thorax), thorax.size, ww, 2.5 * s)
    return heart, (right | left) & ~heart


def _xray_soft_tissue(
    rng: np.random.Generator, patient: _XrayPatient, thorax: _Thorax, lungs: np.ndarray, s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Density of the trunk (neck widening to the shoulders, soft edge) and of the aerated lungs.

    Returns:
        ``(density, body)``: ``(H, W)`` float32, density about [0, 0.7] (before bones), body coverage in [0, 1].
    """
    size, v, d, ww, shift = thorax.size, thorax.v, thorax.d, thorax.ww, thorax.shift
    half = (0.09 + (patient.body_half - 0.09) * smoothstep(0.0, 0.2, v - shift[1]) ** 0.7
            - 0.03 * smoothstep(0.75, 1.0, v))
    body = 1.0 - smoothstep(half - 0.02, half + 0.01, d)
    density = body * (0.55 + 0.12 * v + 0.04 * smooth_noise(rng, size, 20.0 * s))

    # aerated lung: darker away from its borders, hilar vessels and markings
    dist = ndi.distance_transform_edt(lungs).astype(np.float32)
    depth = 1.0 - np.exp(-dist / (0.045 * ww))
    vessels = np.exp(-((smooth_noise(rng, size, 3.0 * s) / 0.25) ** 2))  # branching lines
    markings = (0.06 * vessels + 0.015 * smooth_noise(rng, size, 1.0 * s)) * (1.0 - 0.5 * depth)
    hila = np.exp(-(((d - 0.09) / 0.07) ** 2 + ((v - 0.45 - shift[1]) / 0.10) ** 2))
    density -= lungs * (0.42 * depth - markings - 0.12 * hila * depth)
    return density, body


def _add_bones(density: np.ndarray, patient: _XrayPatient, thorax: _Thorax) -> None:
    """Add the ribs and clavicles to ``density`` (``(H, W)`` float32) in place.

    Ribs: posterior arcs (rising off the spine, curving down laterally) and fainter anterior ones,
    hidden behind the mediastinum.
    """
    d, rib_spacing = thorax.d, patient.rib_spacing
    dn = np.clip(d / 0.42, 0.0, 1.3)
    vs = thorax.v - thorax.shift[1]
    cage = (1.0 - smoothstep(0.9, 1.02, dn)) * smoothstep(0.08, 0.16, vs) * (1.0 - smoothstep(0.68, 0.8, vs))
    phase = (vs + 0.08 * dn - patient.rib_curve * dn**2) / (rib_spacing * (1.0 + 0.5 * vs))
    posterior = smoothstep(0.3, 0.7, np.cos(2 * np.pi * phase))
    phase_a = (vs - 0.16 * np.clip(1.0 - dn, 0.0, None) ** 1.5) / (1.4 * rib_spacing)
    anterior = smoothstep(0.55, 0.85, np.cos(2 * np.pi * phase_a))
    anterior *= smoothstep(0.2, 0.45, dn) * (1.0 - smoothstep(0.55, 0.7, vs))
    behind = 1.0 - np.exp(-((d / 0.07) ** 4))  # hidden behind the mediastinum
    density += cage * behind * (0.12 * posterior + 0.05 * anterior)
    clav = np.exp(-(((vs - 0.11 - 0.06 * (dn - 0.2) ** 2 + 0.03 * dn) / 0.014) ** 2))
    clav *= smoothstep(0.08, 0.15, dn) * (1.0 - smoothstep(0.75, 0.95, dn))
    density += 0.15 * clav


def _add_mediastinum(
    density: np.ndarray, patient: _XrayPatient, thorax: _Thorax, body: np.ndarray, heart: np.ndarray, s: float
) -> None:
    """Add mediastinum, spine with vertebrae, heart and aortic knob, and subtract the gastric bubble, in place."""
    u, v, d, shift = thorax.u, thorax.v, thorax.d, thorax.shift
    medi = np.exp(-((d / (0.055 + 0.02 * smoothstep(0.2, 0.5, v))) ** 6))
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * (v - shift[1]) / (0.75 * patient.rib_spacing))
    density += body * (0.14 * medi + 0.03 * np.exp(-((d / 0.035) ** 2)) * vert)
    density += 0.04 * ndi.gaussian_filter(heart.astype(np.float32), 3.0 * s, truncate=3.0)
    knob = np.exp(-(((u - 0.56 - shift[0]) / 0.03) ** 2 + ((v - 0.26 - shift[1]) / 0.03) ** 2))
    density += 0.06 * knob
    gastric = np.exp(-(((u - 0.68 - shift[0]) / 0.05) ** 2 + ((v - 0.84 - shift[1] - thorax.breath) / 0.025) ** 2))
    density -= 0.15 * gastric * body


def _xray_film(rng: np.random.Generator, density: np.ndarray, exposure: float, s: float) -> np.ndarray:
    """Expose, blur and add noise to ``(H, W)`` ``density``: ``(H, W, 3)`` uint8 grey radiograph."""
    img = np.clip(density * exposure, 0.0, 1.0) ** 1.1
    img = ndi.gaussian_filter(img, 0.8 * s, truncate=3.0)
    img += 0.015 * rng.standard_normal(density.shape, dtype=np.float32) + 0.02
    gray = to_uint8(img)
    return np.repeat(gray[..., None], 3, axis=-1)


@register_phantom("xray", num_classes=2, class_names=("background", "lung"), modality="xray")
def _xray(rng: np.random.Generator, style_rng: np.random.Generator, size: tuple[int, int]) -> PhantomPair:
    """PA chest radiograph: body, dark lung fields, ribs, clavicles, spine, mediastinum, heart.

    ``style_rng`` draws the patient (:func:`_xray_patient`), ``rng`` the image: the steps below
    draw from it in this order; changing it changes every image.
    """
    s = float(np.sqrt(size[0] * size[1]) / 224.0)
    patient = _xray_patient(style_rng)
    thorax = _thorax(rng, size)
    heart, lungs = _xray_lungs(rng, patient, thorax, s)
    density, body = _xray_soft_tissue(rng, patient, thorax, lungs, s)
    _add_bones(density, patient, thorax)
    _add_mediastinum(density, patient, thorax, body, heart, s)
    return _xray_film(rng, density, patient.exposure, s), lungs.astype(np.uint8)
