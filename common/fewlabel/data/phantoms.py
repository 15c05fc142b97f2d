"""Deterministic procedural demo phantoms (image + ground-truth mask) and demo datasets.

No machine this project runs on can download the real datasets, so every bundle can run on
phantoms instead: small synthetic images that look like the modality (so a network trained on
them learns something plausible) and come with an exact ground truth.

Each kind of phantom is a generator registered with :func:`register_phantom`; new modalities
slot in by registering another generator, without editing this module::

    @register_phantom("fundus", num_classes=2, class_names=("background", "optic_disc"), modality="fundus")
    def _fundus(rng, style_rng, size):
        ...
        return image, mask  # (H, W, 3) uint8 RGB, (H, W) uint8 class indices

:func:`make_phantom` draws one image; :func:`write_demo_dataset` writes a whole dataset (PNG
images, PNG label maps and a MONAI datalist with patient-level splits) into the cache folder.

Registered kinds: ``nuclei`` (fluorescence microscopy), ``dermoscopy``, ``xray`` (chest
radiograph lungs), all binary, ``laparoscopy`` (8 classes: the merged CholecSeg8k classes of
a laparoscopic cholecystectomy frame, see :data:`LAPAROSCOPY_CLASSES`), ``liver_landmarks``
(4 classes: background, silhouette, ridge, falciform ligament drawn as thin curves on a
laparoscopic liver frame, see :data:`fewlabel.data.landmarks.LANDMARK_CLASSES`), and ``polyp``
(binary: a colonoscopy frame with folds, vessels, glints and always one or two polyps).

Randomness comes only from ``np.random.default_rng``: the same ``(kind, seed, size)`` always
gives byte-identical arrays.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.draw import polygon as draw_polygon

from fewlabel.data.adapters.cholecseg8k import CHOLECSEG8K_CLASSES
from fewlabel.data.cache import cache_dir
from fewlabel.data.datalist import save_datalist, split_by_group, split_labelled
from fewlabel.data.landmarks import LANDMARK_CLASSES, draw_landmark_mask
from fewlabel.errors import DataError

__all__ = [
    "PHANTOMS",
    "PHANTOM_VERSION",
    "register_phantom",
    "phantom_info",
    "make_phantom",
    "write_demo_dataset",
    "LAPAROSCOPY_CLASSES",
]

#: Bumped whenever a generator's output changes, so cached demo datasets are regenerated.
PHANTOM_VERSION = 1

#: Signature of a phantom generator: ``(rng, style_rng, (H, W)) -> (image, mask)``. ``rng`` draws
#: the content of this one image, ``style_rng`` the appearance shared by a patient's images.
PhantomGenerator = Callable[[np.random.Generator, np.random.Generator, tuple[int, int]], tuple[np.ndarray, np.ndarray]]

_Pair = tuple[np.ndarray, np.ndarray]

#: Registered generators, by kind.
PHANTOMS: dict[str, PhantomGenerator] = {}
_INFO: dict[str, dict[str, Any]] = {}

_MIN_SIZE = 32


def register_phantom(
    name: str, num_classes: int, class_names: tuple[str, ...], modality: str
) -> Callable[[PhantomGenerator], PhantomGenerator]:
    """Decorator registering a phantom generator under ``name`` in :data:`PHANTOMS`.

    The decorated function is called as ``fn(rng, style_rng, (H, W))`` with two
    ``np.random.Generator``: ``rng`` for the content of the image, ``style_rng`` for the
    appearance that all images of one patient share (stain, skin tone, exposure...). It must
    use no other source of randomness and return ``(image, mask)``: ``image`` of shape
    ``(H, W, 3)``, dtype uint8 (RGB); ``mask`` of shape ``(H, W)``, dtype uint8, with values in
    ``[0, num_classes - 1]``.

    Args:
        name: the kind, as passed to :func:`make_phantom`.
        num_classes: number of classes of the mask, background included.
        class_names: one name per class, index 0 first (usually ``"background"``).
        modality: free text, e.g. ``"microscopy"``, ``"dermoscopy"``, ``"xray"``.

    Raises:
        ValueError: ``name`` is already registered, or ``class_names`` does not have
            ``num_classes`` entries.
    """
    if name in PHANTOMS:
        raise ValueError(f"A phantom named '{name}' is already registered.")
    class_names = tuple(class_names)
    if num_classes < 2 or len(class_names) != num_classes:
        raise ValueError(
            f"Phantom '{name}': num_classes={num_classes} needs as many class_names (got {class_names})."
        )

    def decorator(fn: PhantomGenerator) -> PhantomGenerator:
        PHANTOMS[name] = fn
        _INFO[name] = {"num_classes": int(num_classes), "class_names": class_names, "modality": str(modality)}
        return fn

    return decorator


def _check_kind(kind: str) -> None:
    if kind not in PHANTOMS:
        raise ValueError(f"Unknown phantom kind '{kind}'; known kinds: {', '.join(sorted(PHANTOMS))}.")


def phantom_info(kind: str) -> dict[str, Any]:
    """Metadata of a registered phantom kind.

    Returns:
        ``{"num_classes": int, "class_names": tuple[str, ...], "modality": str}``.

    Raises:
        ValueError: unknown ``kind`` (the message lists the known kinds).
    """
    _check_kind(kind)
    info = _INFO[kind]
    return {"num_classes": info["num_classes"], "class_names": tuple(info["class_names"]), "modality": info["modality"]}


def make_phantom(
    kind: str, seed: int, size: tuple[int, int] = (224, 224), *, style_seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one phantom image and its ground-truth mask.

    Args:
        kind: a key of :data:`PHANTOMS` (``"nuclei"``, ``"dermoscopy"``, ``"xray"``, ...).
        seed: non-negative integer; the same ``(kind, seed, size, style_seed)`` gives
            byte-identical arrays, another seed another image.
        size: ``(H, W)`` in pixels, each at least 32. Structures scale with the image size.
        style_seed: seed of the appearance shared by one patient's images (staining, skin tone,
            exposure, anatomy proportions); defaults to ``seed``.

    Returns:
        ``(image, mask)``: ``image`` of shape ``(H, W, 3)``, dtype uint8, RGB in [0, 255];
        ``mask`` of shape ``(H, W)``, dtype uint8, class indices in ``[0, num_classes - 1]``
        (see :func:`phantom_info`).

    Raises:
        ValueError: unknown ``kind``, negative seed or invalid ``size``.
    """
    _check_kind(kind)
    size = _check_size(size)
    seed = _check_seed(seed, "seed")
    style_seed = seed if style_seed is None else _check_seed(style_seed, "style_seed")
    rng = np.random.default_rng([seed, 0])
    style_rng = np.random.default_rng([style_seed, 1])
    image, mask = PHANTOMS[kind](rng, style_rng, size)
    num_classes = _INFO[kind]["num_classes"]
    if (
        image.shape != (*size, 3)
        or image.dtype != np.uint8
        or mask.shape != size
        or mask.dtype != np.uint8
        or int(mask.max(initial=0)) >= num_classes
    ):
        raise RuntimeError(
            f"Phantom generator '{kind}' returned image {image.shape} {image.dtype} and mask {mask.shape} "
            f"{mask.dtype}; expected ({size[0]}, {size[1]}, 3) uint8 and ({size[0]}, {size[1]}) uint8 < {num_classes}."
        )
    return image, mask


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (H, W), got {size!r}") from None
    if h < _MIN_SIZE or w < _MIN_SIZE:
        raise ValueError(f"size must be at least ({_MIN_SIZE}, {_MIN_SIZE}), got {size!r}")
    return h, w


def _check_seed(seed: int, name: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {seed!r}")
    return int(seed)


# ---------------------------------------------------------------------------------------------
# shared helpers (all vectorised)
# ---------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-correlated noise of correlation length ``sigma`` px, zero mean, unit std, float32.

    Large ``sigma`` is filtered on a coarse grid and upsampled, so the cost does not grow with it.
    """
    h, w = shape
    f = max(1, int(sigma // 3))
    ch, cw = -(-h // f) + 2, -(-w // f) + 2
    noise = rng.standard_normal((ch, cw), dtype=np.float32)
    noise = ndi.gaussian_filter(noise, sigma / f, mode="wrap", truncate=3.0)
    if f > 1:
        noise = ndi.zoom(noise, f, order=1, mode="nearest")
    noise = noise[f : f + h, f : f + w] if noise.shape[0] >= h + f and noise.shape[1] >= w + f else noise[:h, :w]
    noise = noise - noise.mean()
    return (noise / (noise.std() + 1e-8)).astype(np.float32)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _fourier_shape(
    rng: np.random.Generator, n_harmonics: int, amplitude: float, decay: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Random radial perturbation ``1 + sum_k a_k cos(k phi + p_k)``, ``k = 2..n_harmonics + 1``."""
    k = np.arange(2, n_harmonics + 2, dtype=np.float32)
    amp = amplitude * rng.uniform(0.3, 1.0, n_harmonics).astype(np.float32) / k**decay
    phase = rng.uniform(0, 2 * np.pi, n_harmonics).astype(np.float32)
    return amp, phase


def _radial_boundary(u: np.ndarray, v: np.ndarray, rho: np.ndarray, amp: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """``1 + sum_k a_k cos(k phi + p_k)`` with ``phi = atan2(v, u)``, by the angle-addition recurrence."""
    inv = 1.0 / np.maximum(rho, 1e-6)
    c1, s1 = u * inv, v * inv
    ck, sk = c1 * c1 - s1 * s1, 2.0 * c1 * s1  # cos 2phi, sin 2phi
    out = np.ones_like(u)
    for a, p in zip(amp.tolist(), phase.tolist()):
        out += (a * math.cos(p)) * ck - (a * math.sin(p)) * sk
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
    return out


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# nuclei: fluorescence microscopy (DAPI)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# dermoscopy: pigmented skin lesion
# ---------------------------------------------------------------------------------------------


@register_phantom("dermoscopy", num_classes=2, class_names=("background", "lesion"), modality="dermoscopy")
def _dermoscopy(rng: np.random.Generator, style_rng: np.random.Generator, size: tuple[int, int]) -> _Pair:
    """Skin with texture and dermatoscope vignetting, one brown variegated lesion, a few hairs."""
    h, w = size
    m = float(min(h, w))
    s = float(np.sqrt(h * w) / 224.0)
    # patient appearance: skin tone, pigment, hair
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

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    # skin: multiplicative texture, reddish blotches, illumination gradient
    img = np.broadcast_to(skin, (h, w, 3)).copy()
    tex = 0.035 * _smooth_noise(rng, size, 8.0 * s) + 0.02 * _smooth_noise(rng, size, 1.5 * s)
    img *= 1.0 + tex[..., None]
    redness = np.clip(_smooth_noise(rng, size, 20.0 * s), 0, None)[..., None]
    img *= 1.0 - 0.05 * redness * np.array([0.0, 1.0, 0.8], np.float32)
    gdir = rng.uniform(0, 2 * np.pi)
    gradient = ((yy - h / 2) * math.sin(gdir) + (xx - w / 2) * math.cos(gdir)) / m
    img *= (1.0 + 0.08 * gradient)[..., None]

    # lesion: ellipse with radial Fourier perturbation
    cy = h / 2 + rng.uniform(-0.1, 0.1) * h
    cx = w / 2 + rng.uniform(-0.1, 0.1) * w
    radius = rng.uniform(0.14, 0.3) * m
    aspect = rng.uniform(0.65, 1.0)
    theta = rng.uniform(0, np.pi)
    amp, phase = _fourier_shape(rng, 7, rng.uniform(0.15, 0.4), decay=0.9)
    dy, dx = yy - cy, xx - cx
    u = (dx * math.cos(theta) + dy * math.sin(theta)) / radius
    v = (-dx * math.sin(theta) + dy * math.cos(theta)) / (radius * aspect)
    rho = np.sqrt(u * u + v * v)
    bound = _radial_boundary(u, v, rho, amp, phase)
    # small-scale irregularity of the border
    bound = bound * (1.0 + 0.04 * _smooth_noise(rng, size, 3.0 * s))
    depth = (bound - rho) * radius * aspect  # ~ signed distance, px
    mask = depth > 0
    alpha = 0.5 + 0.5 * np.tanh(depth / (2.0 * rng.uniform(1.0, 3.5) * s))  # logistic edge
    interior = np.clip(1.0 - rho / np.maximum(bound, 1e-3), 0.0, 1.0)

    # colour variegation: mixture of light brown / dark brown / blue-grey, darker towards centre
    f1 = _smooth_noise(rng, size, 10.0 * s) + 1.5 * interior - 0.3
    f2 = _smooth_noise(rng, size, 14.0 * s) - 1.0
    weights = np.stack([np.zeros_like(f1), f1, f2], -1) * 2.5  # softmax over the three colours
    weights = np.exp(weights - weights.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    lesion = weights @ np.stack([light_brown, dark_brown, blue_grey])
    # pigment network: zero crossings of band-limited noise form a reticular pattern
    net = np.abs(_smooth_noise(rng, size, 2.0 * s)) < 0.25
    lesion *= 1.0 - 0.18 * net[..., None] * rng.uniform(0.3, 1.0)
    lesion *= 1.0 + 0.05 * _smooth_noise(rng, size, 1.5 * s)[..., None]
    img = img * (1.0 - alpha[..., None]) + lesion * alpha[..., None]

    # hairs: curved strands from border to border, rendered as blurred polylines
    n_hairs = int(rng.poisson(0.5 + 6.0 * hair_density))
    if n_hairs:
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
        hair = ndi.gaussian_filter(canvas, hair_width, truncate=3.0) * (np.sqrt(2 * np.pi) * hair_width * 1.1)
        hair = np.clip(hair, 0.0, 1.0)[..., None]
        img = img * (1.0 - hair) + hair_colour * hair

    # dermatoscope: radial fall-off and dark circular corners
    r = np.sqrt((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / (0.5 * np.hypot(h, w))
    vignette = (1.0 - 0.25 * (r / fov) ** 2) * (1.0 - _smoothstep(fov - 0.02, fov + 0.03, r))
    img = img * vignette[..., None] + 0.02 * (1.0 - vignette[..., None])
    img = ndi.gaussian_filter(img, (0.5 * s, 0.5 * s, 0), truncate=3.0)
    img += 0.012 * rng.standard_normal(img.shape, dtype=np.float32)
    return _to_uint8(img), mask.astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# xray: postero-anterior chest radiograph
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# laparoscopy: laparoscopic cholecystectomy frame (CholecSeg8k classes merged to 8)
# ---------------------------------------------------------------------------------------------

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
    return _smooth_noise(rng, (grid, grid), sigma)


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


def _polyline_distance(
    py: np.ndarray, px: np.ndarray, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distance from pixels ``(py, px)`` (broadcastable) to a polyline, and the arc parameter in [0, 1].

    ``points`` is ``(K, 2)`` in (y, x). Vectorised over pixels, looped over the K - 1 segments.
    """
    best = np.full(np.broadcast(py, px).shape, np.inf, np.float32)
    arc = np.zeros_like(best)
    seg = np.diff(points, axis=0)
    lengths = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(lengths)])
    total = max(float(cum[-1]), 1e-6)
    for k in range(len(seg)):
        dy, dx = float(seg[k, 0]), float(seg[k, 1])
        l2 = max(dy * dy + dx * dx, 1e-9)
        ry, rx = py - float(points[k, 0]), px - float(points[k, 1])
        t = np.clip((ry * dy + rx * dx) / l2, 0.0, 1.0)
        d = np.hypot(ry - t * dy, rx - t * dx)
        closer = d < best
        best = np.where(closer, d, best)
        arc = np.where(closer, (cum[k] + t * lengths[k]) / total, arc)
    return best, arc


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 10) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
    return ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).astype(np.float32)


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
            dist, arc = _polyline_distance(yy, xx, np.stack([tip, end]).astype(np.float32))
            width = 0.5 * w1 * (0.75 - 0.45 * arc)
            jaw = dist <= width
            tipmask |= jaw
            metal = np.where(jaw, 0.62 + 0.3 * (1.0 - dist / np.maximum(width, 1e-3)), metal)
    else:  # L-hook electrocautery
        hook_len = rng.uniform(0.08, 0.12) * m
        bend = inward + rng.choice([-1.0, 1.0]) * math.pi / 2
        p1 = tip + hook_len * direction
        p2 = p1 + 0.45 * hook_len * np.array([math.sin(bend), math.cos(bend)])
        dist, _ = _polyline_distance(yy, xx, np.stack([tip, p1, p2]).astype(np.float32))
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


@register_phantom("laparoscopy", num_classes=8, class_names=LAPAROSCOPY_CLASSES, modality="endoscopy")
def _laparoscopy(rng: np.random.Generator, style_rng: np.random.Generator, size: tuple[int, int]) -> _Pair:
    """Laparoscopic cholecystectomy frame: circular field of view, liver, gallbladder, instruments.

    ``style_rng`` draws one *video*: the endoscope's field of view, the anatomy (layout of
    abdominal wall, liver, fat, gastrointestinal tract, gallbladder, cystic duct, vessels and
    connective strands, in world coordinates), tissue colours, lighting and the two trocar ports
    with their instruments. ``rng`` draws one *frame* of it: camera motion (shift, zoom, roll),
    small tissue motion, instrument positions and jaw opening, blood spots, specular highlights
    and sensor noise. Class sizes are skewed as in CholecSeg8k: misc (thin ducts and vessels)
    is well under 1% of the pixels, the gallbladder a few percent.
    """
    h, w = size
    m = float(min(h, w))
    s = float(np.sqrt(h * w) / 224.0)
    col = {k: np.asarray(v, np.float32) for k, v in _LAP_COLOURS.items()}

    # ---- the video: endoscope, anatomy, colours, ports
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
    grid = 160
    f_liver = _world_noise(style_rng, grid, 6.0)
    f_wall = _world_noise(style_rng, grid, 5.0)
    f_gi = _world_noise(style_rng, grid, 5.0)
    f_tex = _world_noise(style_rng, grid, 1.6)
    f_tex2 = _world_noise(style_rng, grid, 2.5)
    f_depth = _world_noise(style_rng, grid, 12.0)

    # ---- the frame: camera motion, tissue motion
    roll = float(np.clip(rng.normal(0.0, 0.08), -0.2, 0.2))
    zoom = rng.uniform(0.9, 1.12)
    shift = rng.uniform(-0.07, 0.07, 2).tolist()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yn, xn = (yy - (h - 1) / 2) / m, (xx - (w - 1) / 2) / m
    cr, sr = math.cos(roll), math.sin(roll)
    u = (cr * xn - sr * yn) / zoom + shift[0]
    v = (sr * xn + cr * yn) / zoom + shift[1]
    # layout coordinates: the anatomy is tilted per video
    ca, sa = math.cos(layout_angle), math.sin(layout_angle)
    lu = ca * u - sa * v
    lv = sa * u + ca * v
    breathe = rng.normal(0.0, 0.012)
    at = _world_sampler(grid, u, v)

    def world_to_pixel(points: np.ndarray) -> np.ndarray:
        """(K, 2) layout (u, v) -> pixel (y, x)."""
        wu = ca * points[:, 0] + sa * points[:, 1]
        wv = -sa * points[:, 0] + ca * points[:, 1]
        wu, wv = (wu - shift[0]) * zoom, (wv - shift[1]) * zoom
        pxn = cr * wu + sr * wv
        pyn = -sr * wu + cr * wv
        return np.stack([pyn * m + (h - 1) / 2, pxn * m + (w - 1) / 2], axis=1).astype(np.float32)

    # ---- regions, in painter's order
    label = np.full(size, 4, np.uint8)  # fat fills what nothing else covers
    gi = ((lu - gi_c[0]) / gi_r[0]) ** 2 + ((lv - gi_c[1] - breathe) / gi_r[1]) ** 2 + 0.35 * at(f_gi) < 1.0
    gi2 = ((lu - gi_c[0] * 0.6) / (gi_r[0] * 0.7)) ** 2 + ((lv - gi_c[1] - 0.2) / gi_r[1]) ** 2 < 1.0
    label[gi | gi2] = 3
    liver_line = liver_b[0] + liver_b[1] * lu + liver_b[2] * lu * lu + breathe
    liver = lv + 0.06 * at(f_liver) < liver_line
    label[liver] = 2
    wall_line = wall_b[0] + wall_b[1] * lu
    wall = lv + 0.05 * at(f_wall) < wall_line
    label[wall] = 1

    # gallbladder: pear-shaped, emerging from under the liver edge, pulled a little per frame
    gb_v = liver_b[0] + liver_b[1] * gb_u + liver_b[2] * gb_u * gb_u
    gbc = np.array([gb_u, gb_v], np.float32) + rng.normal(0.0, 0.015, 2).astype(np.float32)
    ga = gb_angle + rng.normal(0.0, 0.05)
    du, dv = lu - gbc[0], lv - gbc[1]
    ga_u = du * math.cos(ga) + dv * math.sin(ga)
    ga_v = -du * math.sin(ga) + dv * math.cos(ga)
    tpos = np.clip(ga_u / gb_axes[0], -1.5, 1.5)
    half_w = gb_axes[1] * (1.0 - 0.35 * np.clip(tpos, 0.0, 1.0)) * (1.0 + 0.15 * np.clip(-tpos, 0.0, 1.0))
    gallbladder = (ga_u / gb_axes[0]) ** 2 + (ga_v / half_w) ** 2 < 1.0
    label[gallbladder] = 6

    # misc: cystic duct from the gallbladder neck, connective strands / vessels, blood
    misc_colour = np.zeros((h, w, 3), np.float32)
    misc = np.zeros(size, bool)
    neck = gbc + 0.92 * gb_axes[0] * np.array([math.cos(ga), math.sin(ga)], np.float32)
    d_dir = np.array([math.cos(ga), math.sin(ga)], np.float32)
    d_mid = neck + 0.5 * duct_len * d_dir + duct_bend
    d_end = neck + duct_len * (d_dir + 0.6 * np.array([-d_dir[1], d_dir[0]], np.float32))
    curves = [(np.stack([neck, d_mid, d_end]), duct_w, col["duct"])]
    for start, bend, delta, width, is_vessel in strands:
        p0 = neck + start * np.array([0.5, 0.3], np.float32)
        p2 = p0 + np.array([0.18, 0.06], np.float32) * np.sign(start + 1e-3) + delta
        curves.append((np.stack([p0, (p0 + p2) / 2 + bend * 0.5, p2]), width, col["vessel" if is_vessel else "tissue"]))
    for ctrl, width, colour in curves:
        pts = world_to_pixel(_bezier(*ctrl.astype(np.float32)))
        half = max(width * m * zoom, 0.6)
        y0 = max(0, int(pts[:, 0].min() - half - 2))
        y1 = min(h, int(pts[:, 0].max() + half + 3))
        x0 = max(0, int(pts[:, 1].min() - half - 2))
        x1 = min(w, int(pts[:, 1].max() + half + 3))
        if y0 >= y1 or x0 >= x1:
            continue
        dist, _ = _polyline_distance(yy[y0:y1, x0:x1], xx[y0:y1, x0:x1], pts)
        hit = dist <= half
        # the duct and strands run over fat and gallbladder, behind the liver edge
        hit &= label[y0:y1, x0:x1] != 2
        shade = (0.8 + 0.2 * np.sqrt(np.clip(1.0 - dist / half, 0.0, 1.0)))[..., None]
        misc[y0:y1, x0:x1] |= hit
        misc_colour[y0:y1, x0:x1] = np.where(hit[..., None], colour * shade, misc_colour[y0:y1, x0:x1])
    if rng.random() < 0.35:  # a small pool of blood near the gallbladder neck
        centre = world_to_pixel((neck + rng.normal(0.0, 0.06, 2).astype(np.float32))[None])[0]
        rad = rng.uniform(0.015, 0.03) * m * zoom
        blood = (yy - centre[0]) ** 2 + ((xx - centre[1]) / 1.4) ** 2 < rad * rad
        blood &= label != 1
        misc |= blood
        misc_colour[blood] = col["blood"]
    label[misc] = 7

    # ---- tissue appearance
    tex = at(f_tex)
    tex2 = at(f_tex2)
    img = np.empty((h, w, 3), np.float32)
    fibres = np.clip(_world_sampler(grid, u, v, 1.0, 5.0)(f_tex), 0.0, None)[..., None]
    wall_c = col["wall"] * (1.0 + 0.08 * tex2[..., None]) * (1.0 - 0.35 * fibres) + col["wall_fibre"] * 0.35 * fibres
    liver_c = col["liver"] * (1.0 + 0.10 * tex2[..., None] + 0.05 * tex[..., None])
    septa = (0.55 * np.exp(-((tex2 / 0.09) ** 2)))[..., None]  # thin septa between fat lobules
    fat_c = col["fat"] * (1.0 + 0.07 * tex[..., None]) * (1.0 - septa) + col["fat_septa"] * septa
    folds = 0.5 + 0.5 * np.sin(40.0 * lv + 3.0 * tex2)
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
    img *= (1.0 + 0.12 * at(f_depth))[..., None]

    # specular highlights on wet tissue (move with the light, i.e. per frame)
    wet = np.array([0.0, 0.3, 1.0, 0.7, 0.35, 0.0, 1.0, 0.6], np.float32)[label]
    light = np.exp(-(((yy - fov_c[0]) ** 2 + (xx - fov_c[1]) ** 2) / (0.55 * fov_r) ** 2))
    blobs = _smooth_noise(rng, size, 3.0 * s) + 0.6 * _smooth_noise(rng, size, 1.2 * s)
    highlight = _smoothstep(2.65, 3.5, blobs + 1.2 * light) * wet
    highlight = np.clip(ndi.gaussian_filter(highlight, 0.8 * s, truncate=2.0) * 1.3, 0.0, 1.0)

    # ---- instruments, drawn on top in image space
    n_tools = 1 if rng.random() < 0.4 else 2
    first = int(rng.integers(2))
    tools = np.zeros(size, bool)
    for k in range(n_tools):
        port = (first + k) % 2
        cover, grey = _lap_instrument(
            rng, yy, xx, fov_c, fov_r, ports[port], port_kind[port], shaft_shade[port], m
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
    img = img * (1.0 - highlight[..., None]) + highlight[..., None] * np.array([1.0, 1.0, 0.96], np.float32)

    # ---- endoscope: warm light, vignetting, circular field of view
    r = np.sqrt((yy - fov_c[0]) ** 2 + (xx - fov_c[1]) ** 2)
    inside = r < fov_r
    vignette = 1.0 - 0.55 * (r / fov_r) ** 2
    edge = np.clip(fov_r - r + 0.5, 0.0, 1.0)
    img = img * (tint * exposure) * (vignette * edge)[..., None]
    label[~inside] = 0
    img = ndi.gaussian_filter(img, (0.6 * s, 0.6 * s, 0), truncate=2.0)
    img += 0.01 * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.where(inside[..., None], img, 0.012 + 0.008 * img)
    img = np.clip(img, 0.0, 1.0) ** (1 / 1.1)
    return _to_uint8(img), label


# ---------------------------------------------------------------------------------------------
# liver_landmarks: laparoscopic liver frame with its three landmarks as thin curves (SLiPPA)
# ---------------------------------------------------------------------------------------------

# base colours (RGB in [0, 1]) before lighting
_LIVER_COLOURS = {
    "liver": (0.56, 0.20, 0.14),
    "liver_dark": (0.36, 0.10, 0.08),
    "tissue": (0.50, 0.26, 0.22),
    "fat": (0.76, 0.55, 0.28),
    "ligament": (0.90, 0.76, 0.66),
}


def _fov_mask(style_rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Soft field of view in [0, 1]: a circle or a rounded rectangle, black corners outside."""
    h, w = size
    m = float(min(h, w))
    cy, cx = (h - 1) / 2 + style_rng.uniform(-0.02, 0.02) * m, (w - 1) / 2 + style_rng.uniform(-0.02, 0.02) * m
    if style_rng.random() < 0.5:  # circular scope image
        radius = style_rng.uniform(0.68, 0.78) * 0.5 * math.hypot(h, w)
        depth = radius - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    else:  # rounded rectangle filling most of the frame
        inset = style_rng.uniform(0.0, 0.03) * m
        corner = style_rng.uniform(0.15, 0.3) * m
        hy, hx = (h - 1) / 2 - inset - corner, (w - 1) / 2 - inset - corner
        qy = np.maximum(np.abs(yy - cy) - hy, 0.0)
        qx = np.maximum(np.abs(xx - cx) - hx, 0.0)
        depth = corner - np.sqrt(qy * qy + qx * qx)
        depth = np.minimum(depth, np.minimum(hy + corner - np.abs(yy - cy), hx + corner - np.abs(xx - cx)))
    return np.clip(depth + 0.5, 0.0, 1.0).astype(np.float32)


def _fast_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Like :func:`_smooth_noise` (zero mean, unit std, float32, correlation length ``sigma`` px), with OpenCV.

    Filtered on a grid ``sigma // 2`` times coarser than the image, then bilinearly upsampled.
    """
    h, w = shape
    f = max(1, int(sigma // 2))
    ch, cw = -(-h // f) + 1, -(-w // f) + 1
    noise = rng.standard_normal((ch, cw), dtype=np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma / f, borderType=cv2.BORDER_REFLECT)
    if f > 1:
        noise = cv2.resize(noise, (cw * f, ch * f), interpolation=cv2.INTER_LINEAR)
    noise = noise[:h, :w]
    return (noise - noise.mean()) / (noise.std() + 1e-8)


@register_phantom("liver_landmarks", num_classes=4, class_names=LANDMARK_CLASSES, modality="laparoscopy")
def _liver_landmarks(rng: np.random.Generator, style_rng: np.random.Generator, size: tuple[int, int]) -> _Pair:
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
    """
    h, w = size
    m = float(min(h, w))
    s = float(np.sqrt(h * w) / 224.0)
    # colours as (3, 1, 1): the image is built channel-first, which NumPy broadcasts much faster
    col = {k: np.asarray(v, np.float32).reshape(3, 1, 1) for k, v in _LIVER_COLOURS.items()}

    # ---- patient / video
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fov = _fov_mask(style_rng, yy, xx, size)
    for key in col:
        col[key] = np.clip(col[key] * (1.0 + style_rng.normal(0.0, 0.06, (3, 1, 1))), 0.0, 1.0).astype(np.float32)
    tint = np.array([1.0, style_rng.uniform(0.9, 0.97), style_rng.uniform(0.82, 0.95)], np.float32)
    gain = (tint * style_rng.uniform(0.9, 1.15)).reshape(3, 1, 1)
    fat_share = style_rng.uniform(-0.4, 0.3)

    # ---- frame: camera roll; layout coordinates (u along the liver edge, v downwards), units of m
    roll = rng.uniform(-0.35, 0.35)
    cr, sr = math.cos(roll), math.sin(roll)
    yn, xn = (yy - (h - 1) / 2) / m, (xx - (w - 1) / 2) / m
    u = cr * xn + sr * yn
    v = -sr * xn + cr * yn
    reach = 0.5 * math.hypot(h, w) / m + 0.1  # |u| covering the whole frame

    def to_xy(cu: np.ndarray, cv: np.ndarray) -> np.ndarray:
        """(K,) layout u, v -> (K, 2) pixel (x, y)."""
        return np.stack([(cr * cu - sr * cv) * m + (w - 1) / 2, (sr * cu + cr * cv) * m + (h - 1) / 2], axis=1)

    sil = (rng.uniform(0.05, 0.3), rng.uniform(-0.25, 0.25), rng.uniform(-0.3, 0.3), rng.uniform(0.0, 0.03),
           rng.uniform(2.0, 6.0), rng.uniform(0.0, 2 * np.pi))
    gap = (rng.uniform(0.15, 0.32), rng.uniform(-0.08, 0.08), rng.uniform(0.0, 0.02), rng.uniform(3.0, 7.0))

    def edge_v(cu: np.ndarray) -> np.ndarray:
        return sil[0] + sil[1] * cu + sil[2] * cu * cu + sil[3] * np.sin(sil[4] * cu + sil[5])

    def ridge_gap(cu: np.ndarray) -> np.ndarray:
        return gap[0] + gap[1] * cu + gap[2] * np.sin(gap[3] * cu)

    has_sil = rng.random() < 0.95
    has_ridge = rng.random() < 0.92
    has_lig = rng.random() < 0.72
    ridge_u = (rng.uniform(-1.2, -0.3) * reach, rng.uniform(0.3, 1.2) * reach)
    fade = 0.12  # the crease fades out over 2 * fade of u at both ends of the ridge

    fine = _fast_noise(rng, size, 1.3 * s)
    mid = _fast_noise(rng, size, 3.0 * s)
    coarse = _fast_noise(rng, size, 9.0 * s)

    e = edge_v(u)
    slope = np.sqrt(1.0 + (sil[1] + 2.0 * sil[2] * u) ** 2)
    d_edge = (e + (0.0 if has_sil else 3.0) - v) * (m / slope)  # ~ signed distance to the lower edge, px
    liver = np.clip(d_edge + 0.5, 0.0, 1.0)  # absent silhouette: the liver fills the view

    # ---- tissue below the edge: darker, further away, reddish with yellowish fat
    fat = _smoothstep(0.0, 1.0, coarse * 0.6 + fat_share + 0.3 * fine)
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
    if has_ridge:
        window = _smoothstep(ridge_u[0], ridge_u[0] + 2 * fade, u) * (
            1.0 - _smoothstep(ridge_u[1] - 2 * fade, ridge_u[1], u)
        )
        d_ridge = (v - e + ridge_gap(u)) * m  # > 0 below the ridge (inferior facet)
        facet = np.clip(d_ridge / max(0.6 * s, 0.5) + 0.5, 0.0, 1.0)
        facet *= window * (1.0 - 0.3 * np.clip(d_ridge / (0.25 * m), 0.0, 1.0))
        crest = np.exp(-np.square(d_ridge / max(1.2 * s, 0.8))) * window
        surface += (col["liver_dark"] - col["liver"]) * (facet * l_shade)
        surface += np.array([0.2, 0.15, 0.14], np.float32).reshape(3, 1, 1) * crest
    img = tissue + (surface - tissue) * liver

    # ---- landmark curves (x, y) for the mask
    contours: list[tuple[int, np.ndarray]] = []
    t = np.linspace(-reach, reach, 96, dtype=np.float32)
    if has_sil:
        contours.append((1, to_xy(t, edge_v(t))))
    if has_ridge:  # where the crease is visible: its fading ends are left out
        tr = np.linspace(ridge_u[0] + fade, ridge_u[1] - fade, 64, dtype=np.float32)
        contours.append((2, to_xy(tr, edge_v(tr) - ridge_gap(tr))))

    # ---- falciform ligament: pale raised band from near the edge up to the ridge, with a shadow
    if has_lig:
        u0 = rng.uniform(-0.35, 0.35)
        v0 = float(edge_v(np.float32(u0))) - rng.uniform(0.02, 0.05) if has_sil else rng.uniform(0.15, 0.45)
        u1 = u0 + rng.uniform(-0.1, 0.1)
        if has_ridge and ridge_u[0] + fade < u1 < ridge_u[1] - fade:
            v1 = float(edge_v(np.float32(u1)) - ridge_gap(np.float32(u1))) + rng.uniform(0.0, 0.02)
        else:
            v1 = v0 - rng.uniform(0.15, 0.3)
        v1 = min(v1, v0 - 0.08)
        bend = rng.normal(0.0, 0.04)
        ctrl = [np.array(p, np.float32) for p in ((u0, v0), ((u0 + u1) / 2 + bend, (v0 + v1) / 2), (u1, v1))]
        curve = _bezier(*ctrl, n=16)
        lig_xy = to_xy(curve[:, 0], curve[:, 1])
        contours.append((3, lig_xy))
        half = max(0.0065 * m, 0.9)
        pts_yx = lig_xy[:, ::-1].astype(np.float32)
        pad = 4 * half + 2
        y0, y1 = max(0, int(pts_yx[:, 0].min() - pad)), min(h, int(pts_yx[:, 0].max() + pad + 1))
        x0, x1 = max(0, int(pts_yx[:, 1].min() - pad)), min(w, int(pts_yx[:, 1].max() + pad + 1))
        if y0 < y1 and x0 < x1:
            sy, sx = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
            dist, _ = _polyline_distance(sy, sx, pts_yx)
            shift = 1.6 * half
            dshadow, _ = _polyline_distance(sy - shift * cr, sx + shift * sr, pts_yx)
            band = np.clip(half - dist + 0.5, 0.0, 1.0)
            dome = np.sqrt(np.clip(1.0 - dist / (half + 0.5), 0.0, 1.0))
            shadow = np.clip(1.3 * half - dshadow + 0.5, 0.0, 1.0) * (1.0 - band)
            patch = img[:, y0:y1, x0:x1] * (1.0 - 0.35 * shadow)
            pale = col["ligament"] * (0.8 + 0.2 * dome)
            img[:, y0:y1, x0:x1] = patch + (pale - patch) * band

    # ---- light: camera-mounted source (bright centre), specular highlights on the wet liver, noise
    r2 = np.square(yn / 0.75) + np.square(xn / 0.95)
    light = (1.05 - 0.5 * r2 + 0.05 * coarse) * fov
    glints = mid + 0.3 * fine + 1.2 * np.exp(r2 / -0.2)  # small wet glints, clustered, mostly near the centre
    highlight = _smoothstep(2.3, 2.8, glints) * _smoothstep(0.0, 0.8, coarse) * (liver * fov)
    img *= light
    img += highlight * (np.array([1.0, 0.97, 0.93], np.float32).reshape(3, 1, 1) - img)
    img *= gain
    img += rng.standard_normal(size, dtype=np.float32) * 0.012 + 0.01 * (1.0 - fov)
    image = _to_uint8(img).transpose(1, 2, 0)

    mask = draw_landmark_mask(contours, size, thickness=max(2, round(12 * w / 1920)), source="liver_landmarks phantom")
    mask[fov < 0.5] = 0
    return np.ascontiguousarray(image), mask


# ---------------------------------------------------------------------------------------------
# polyp: colonoscopy frame with one or two polyps (SAM knowledge mining, Kvasir-SEG-like)
# ---------------------------------------------------------------------------------------------

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
    amp, phase = _fourier_shape(rng, 5, rng.uniform(0.06, 0.22), decay=1.0)
    reach = radius * (1.0 + float(amp.sum())) * 1.35 + 3.0
    y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 2)
    x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 2)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    c, s_ = math.cos(theta), math.sin(theta)
    u = (dx * c + dy * s_) / radius
    v = (-dx * s_ + dy * c) / (radius * aspect)
    rho = np.sqrt(u * u + v * v)
    bound = _radial_boundary(u, v, rho, amp, phase)
    depth = (bound - rho) * (radius * aspect)  # ~ signed distance to the outline, px
    t = np.clip(rho / bound, 0.0, 1.0)
    height = (1.0 - t * t) ** rng.uniform(0.35, 0.8)
    return (slice(y0, y1), slice(x0, x1)), depth, height.astype(np.float32), depth > 0


@register_phantom("polyp", num_classes=2, class_names=("background", "polyp"), modality="endoscopy")
def _polyp(rng: np.random.Generator, style_rng: np.random.Generator, size: tuple[int, int]) -> _Pair:
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
    """
    h, w = size
    m = float(min(h, w))
    s = float(np.sqrt(h * w) / 224.0)
    col = {k: np.asarray(v, np.float32).reshape(3, 1, 1) for k, v in _POLYP_COLOURS.items()}

    # ---- patient / video
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fov = _fov_mask(style_rng, yy, xx, size)
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

    # ---- frame: lumen and haustral folds around it
    fine = _fast_noise(rng, size, 1.2 * s)
    mid = _fast_noise(rng, size, 3.5 * s)
    coarse = _fast_noise(rng, size, 12.0 * s)
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
    fold_shadow = _smoothstep(0.75, 1.0, np.sin(phase - 0.4))  # thin shadow on the lumen side of a fold
    far = _smoothstep(0.0, 0.55, r / 1.2)  # depth: light falls off into the lumen
    lumen = np.exp(-np.square(r / lumen_r))
    fold_amp = rng.uniform(0.08, 0.2)
    shade = (0.4 + 0.6 * far) * (1.0 - fold_amp + 2 * fold_amp * crest) * (1.0 - 0.85 * lumen)
    shade *= (1.0 - 0.3 * fold_shadow * far) * (1.0 + 0.05 * mid + 0.04 * fine)
    img = col["mucosa"] * shade
    img += (col["fold_shadow"] - col["mucosa"]) * (0.35 * fold_shadow * far * shade)

    # ---- vessels: thin dark-red branching lines (ridges of band-limited noise), patchy and faint
    main = np.exp(-np.square(_fast_noise(rng, size, 4.0 * s) / 0.03))
    small = np.exp(-np.square(_fast_noise(rng, size, 1.6 * s) / 0.04)) * _smoothstep(0.2, 1.2, mid)
    vessels = np.clip(main + 0.8 * small, 0.0, 1.0) * _smoothstep(0.3, 1.3, coarse + 0.5 * mid)
    vessels *= (0.45 * vessel_density) * far
    img += (col["vessel"] * shade - img) * vessels

    # ---- polyps: always at least one, inside the field of view and off the box
    n_polyps = 1 if rng.random() < 0.8 else 2
    mask = np.zeros(size, bool)
    glint_boost = np.zeros(size, np.float32)
    lx_, ly_ = rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6)  # the light comes from the scope, tilted
    light_norm = math.sqrt(lx_ * lx_ + ly_ * ly_ + 1.0)
    for k in range(n_polyps):
        radius = max(4.0, rng.uniform(0.09, 0.22) * m * (0.6 if k else 1.0))
        for _ in range(30):
            cy = (h - 1) / 2 + rng.uniform(-0.3, 0.3) * h
            cx = (w - 1) / 2 + rng.uniform(-0.3, 0.3) * w
            in_box = has_box and cx < box_w + 2 and cy > h - box_h - 2
            if fov[int(cy), int(cx)] > 0.5 and not in_box:
                break
        else:  # the centre is always in the field of view and off the box
            cy, cx = (h - 1) / 2, (w - 1) / 2
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

    # ---- light: vignetting from the scope, specular glints on wet surfaces, noise, black outside
    yn, xn = (yy - (h - 1) / 2) / m, (xx - (w - 1) / 2) / m
    r2 = yn * yn + xn * xn
    light = (1.1 - 0.55 * r2) * fov
    glints = fine + 0.9 * crest * far * _smoothstep(0.0, 1.5, mid) + glint_boost
    highlight = _smoothstep(2.4, 2.9, glints) * fov
    img *= light
    img += highlight * (np.array([1.0, 0.98, 0.95], np.float32).reshape(3, 1, 1) - img)
    img *= gain
    if has_box:  # the scope-guide box: dark with a green map inside
        bx, by = int(box_w), int(h - box_h)
        inner = (0.5 + 0.5 * _smoothstep(-0.2, 0.6, coarse[by:, :bx])) * col["box"]
        img[:, by:, :bx] = inner
        img[:, by : by + max(1, int(s)), :bx] = 0.02
        img[:, by:, bx - max(1, int(s)) : bx] = 0.02
        mask[by:, :bx] = False
    img += rng.standard_normal(size, dtype=np.float32) * 0.012
    image = _to_uint8(img).transpose(1, 2, 0)
    image = cv2.GaussianBlur(np.ascontiguousarray(image), (0, 0), 0.5 * s) if s > 1.0 else np.ascontiguousarray(image)
    mask &= fov >= 0.5
    return image, mask.astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# demo datasets
# ---------------------------------------------------------------------------------------------


def _image_seeds(seed: int, patient: int, k: int) -> tuple[int, int]:
    """(content seed, style seed) of image ``k`` of ``patient``: patients share the style seed."""
    content = int(np.random.SeedSequence([seed, patient, k]).generate_state(1)[0])
    style = int(np.random.SeedSequence([seed, patient]).generate_state(1)[0])
    return content, style


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path, compress_level=1)


def _is_complete(datalist_path: Path, params: dict[str, Any]) -> bool:
    if not datalist_path.is_file():
        return False
    try:
        content = json.loads(datalist_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(content, dict) and content.get("phantom") == params


def write_demo_dataset(
    kind: str,
    root: str | os.PathLike | None = None,
    num_patients: int = 8,
    images_per_patient: int = 4,
    size: tuple[int, int] = (224, 224),
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    unlabelled_fraction: float = 0.0,
) -> Path:
    """Write a demo dataset of phantoms (PNG images and labels) with a MONAI datalist.

    Layout::

        root/
          images/<patient>_<k>.png     (H, W, 3) uint8 RGB
          labels/<patient>_<k>.png     (H, W) uint8 class indices (0 = background)
          datalist.json                "training" / "validation" / "testing" split by patient
                                       (+ "unlabelled" with ``unlabelled_fraction > 0``)

    Each item of the datalist is ``{"image", "label", "patient"}``; the file also has ``"name"``,
    ``"labels"`` (``{"0": "background", "1": ...}``) and ``"phantom"`` (the parameters it was
    generated with). All images of a patient share their appearance (stain, skin tone,
    exposure), so a patient-level split means something.

    The dataset is cached: when ``root/datalist.json`` was already written with the same
    parameters it is returned without regenerating anything. Writing is atomic: the files are
    generated in a temporary sibling folder that is renamed into place when complete.

    Args:
        kind: a registered phantom kind (see :data:`PHANTOMS`).
        root: output folder; default ``cache_dir("demo", "<kind>-<hash of the parameters>")``
            (under ``$FEWLABEL_CACHE``, default ``~/.cache/fewlabel``). An existing folder must be
            empty or hold a demo dataset written by this function (which is then replaced).
        num_patients: number of patients (groups of the split), at least 1.
        images_per_patient: images per patient, at least 1.
        size: ``(H, W)`` of every image.
        seed: seed of the whole dataset (images and split).
        fractions: shares of ``(training, validation, testing)``, summing to 1.
        unlabelled_fraction: share in [0, 1) of the *training* patients whose images go to an
            ``"unlabelled"`` list instead, as ``{"image", "patient"}`` items (no ``"label"`` key,
            and no label file is written for them), for semi-/self-supervised training. The
            split is by patient (video): no patient is both labelled and unlabelled, and at
            least one training patient stays labelled. 0 (the default) writes no
            ``"unlabelled"`` list and keeps the cache key of the datasets written before this
            option existed.

    Returns:
        Path of ``datalist.json``.

    Raises:
        ValueError: unknown ``kind`` or invalid parameters.
        DataError: ``root`` exists, is not empty and holds no demo dataset.
    """
    _check_kind(kind)
    size = _check_size(size)
    seed = _check_seed(seed, "seed")
    if int(num_patients) < 1 or int(images_per_patient) < 1:
        raise ValueError(f"num_patients and images_per_patient must be >= 1, got {num_patients}, {images_per_patient}")
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be (training, validation, testing) >= 0 summing to 1, got {fractions}")
    unlabelled_fraction = float(unlabelled_fraction)
    if not 0.0 <= unlabelled_fraction < 1.0:
        raise ValueError(f"unlabelled_fraction must be in [0, 1), got {unlabelled_fraction}")
    params = {
        "kind": kind,
        "num_patients": int(num_patients),
        "images_per_patient": int(images_per_patient),
        "size": list(size),
        "seed": seed,
        "fractions": list(fractions),
        "version": PHANTOM_VERSION,
    }
    if unlabelled_fraction > 0:  # only then, so that existing cache keys stay valid
        params["unlabelled_fraction"] = unlabelled_fraction
    if root is None:
        digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
        root = cache_dir("demo", f"{kind}-{digest}")
    root = Path(root).expanduser()
    datalist_path = root / "datalist.json"
    if _is_complete(datalist_path, params):
        return datalist_path

    info = phantom_info(kind)
    items = []
    seeds: dict[str, tuple[int, int]] = {}
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for p in range(int(num_patients)):
            patient = f"p{p:03d}"
            for k in range(int(images_per_patient)):
                name = f"{patient}_{k}.png"
                items.append({"image": f"images/{name}", "label": f"labels/{name}", "patient": patient})
                seeds[f"images/{name}"] = _image_seeds(seed, p, k)
        # the split depends on the items only, so it is decided before any file is written
        training, validation, testing = split_by_group(items, fractions, seed=seed)
        unlabelled: list[dict[str, Any]] = []
        if unlabelled_fraction > 0:
            training, unlabelled = split_labelled(training, 1.0 - unlabelled_fraction, seed=seed)
        no_label = {item["image"] for item in unlabelled}
        for item in items:
            content_seed, style_seed = seeds[item["image"]]
            image, mask = make_phantom(kind, content_seed, size, style_seed=style_seed)
            _save_png(image, tmp / item["image"])
            if item["image"] not in no_label:
                _save_png(mask, tmp / item["label"])
        datalist = {
            "name": f"fewlabel demo: {kind} phantoms",
            "labels": {str(i): n for i, n in enumerate(info["class_names"])},
            "phantom": params,
            "training": training,
            "validation": validation,
            "testing": testing,
        }
        if unlabelled_fraction > 0:
            datalist["unlabelled"] = unlabelled
        save_datalist(datalist, tmp / "datalist.json")
        _move_into_place(tmp, root, params)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return datalist_path


def _move_into_place(tmp: Path, root: Path, params: dict[str, Any]) -> None:
    """Rename the complete dataset ``tmp`` to ``root``, replacing an empty folder or an old demo dataset."""
    if root.is_dir() and not any(root.iterdir()):
        try:
            root.rmdir()
        except OSError:  # another writer got there first
            pass
    try:
        os.replace(tmp, root)
        return
    except OSError:
        pass
    if _is_complete(root / "datalist.json", params):  # a concurrent call finished the same dataset
        return
    old = root / "datalist.json"
    try:
        is_demo = "phantom" in json.loads(old.read_text())
    except (OSError, json.JSONDecodeError, TypeError):
        is_demo = False
    if not is_demo:
        raise DataError(
            f"Cannot write the demo dataset into {root}: the folder exists, is not empty and holds no demo "
            "dataset. Pass an empty or new folder as root, or leave root unset to use the cache folder."
        )
    trash = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
    os.replace(root, trash / root.name)
    os.replace(tmp, root)
    shutil.rmtree(trash, ignore_errors=True)
