"""Drawing helpers shared by the phantom generators: smooth noise, soft steps, radial shapes, curves, fields of view.

All are vectorised NumPy / SciPy / OpenCV and draw randomness only from the generator they are given.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "smooth_noise",
    "fast_noise",
    "smoothstep",
    "fourier_shape",
    "radial_boundary",
    "to_uint8",
    "polyline_distance",
    "bezier",
    "fov_mask",
]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
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


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step of ``x``: 0 below ``edge0``, 1 above ``edge1``, smooth in between (same shape as ``x``)."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def fourier_shape(
    rng: np.random.Generator, n_harmonics: int, amplitude: float, decay: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Random radial perturbation ``1 + sum_k a_k cos(k phi + p_k)``, ``k = 2..n_harmonics + 1``."""
    k = np.arange(2, n_harmonics + 2, dtype=np.float32)
    amp = amplitude * rng.uniform(0.3, 1.0, n_harmonics).astype(np.float32) / k**decay
    phase = rng.uniform(0, 2 * np.pi, n_harmonics).astype(np.float32)
    return amp, phase


def radial_boundary(u: np.ndarray, v: np.ndarray, rho: np.ndarray, amp: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """``1 + sum_k a_k cos(k phi + p_k)`` with ``phi = atan2(v, u)``, by the angle-addition recurrence."""
    inv = 1.0 / np.maximum(rho, 1e-6)
    c1, s1 = u * inv, v * inv
    ck, sk = c1 * c1 - s1 * s1, 2.0 * c1 * s1  # cos 2phi, sin 2phi
    out = np.ones_like(u)
    for a, p in zip(amp.tolist(), phase.tolist()):
        out += (a * math.cos(p)) * ck - (a * math.sin(p)) * sk
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
    return out


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Intensities in [0, 1] (clipped) to uint8 in [0, 255], rounded to nearest."""
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def polyline_distance(
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


def bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 10) -> np.ndarray:
    """``(n, 2)`` float32 points of the quadratic Bezier curve with ``(2,)`` control points ``p0, p1, p2``."""
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
    return ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).astype(np.float32)


def fov_mask(style_rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: tuple[int, int]) -> np.ndarray:
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


def fast_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Like :func:`smooth_noise` (zero mean, unit std, float32, correlation length ``sigma`` px), with OpenCV.

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
