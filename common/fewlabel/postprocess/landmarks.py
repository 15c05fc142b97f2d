"""Landmark post-processing of SLiPPA: predicted label maps -> clean curves and ordered point lists.

SLiPPA (Borgars et al., section 3.1) post-processes the label maps its network predicts for three thin
liver landmarks (classes: 0 background, 1 silhouette, 2 ridge, 3 falciform ligament) by

1. culling known false positives: pixels outside the laparoscope's field of view
   (:func:`field_of_view`, :func:`remove_outside_fov`) and ligament predictions above or below both
   the ridge and the silhouette (:func:`remove_stray_ligament`);
2. skeletonising each landmark with Zhang & Suen's thinning (:func:`skeletonize`);
3. smoothing the contours with Ramer-Douglas-Peucker (:func:`rdp`), on the skeleton traced into
   ordered polylines (:func:`trace_paths`);
4. dilating the centre line for evaluation or sampling it into points (:func:`draw_paths`,
   :func:`sample_points`).

The paper does not say how a skeleton becomes the ordered contour RDP needs, nor what happens to a
landmark broken into pieces by the network; here fragments of one landmark closer than ``max_gap``
are first joined by straight lines (:func:`connect_fragments`, an optional step that is not in the
paper), and each skeleton component is traced along its longest path (:func:`trace_paths`).

Every step is a public function on NumPy arrays and can be used alone; :class:`LandmarkPostprocessor`
chains them (each step switchable) and :class:`LandmarkPostprocess` / :class:`LandmarkPostprocessd`
wrap it as MONAI transforms. Each landmark class is processed on its own binary mask: classes are
never merged, so curves that cross keep their pixels in both masks.

Conventions: images are indexed ``(row, col)``; "above" means a smaller row index. Array-level
functions use ``(row, col)`` points; the point lists :class:`LandmarkPostprocessor` returns are
``(x, y) = (col, row)`` pixel coordinates (origin at the centre of the top-left pixel), the order a
3D-2D registration step consumes. Steps use 8-connectivity for landmark pixels (4 for background).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type
from scipy import ndimage as ndi
from scipy import sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize as _skimage_skeletonize

from fewlabel.arguments import as_bool, as_int, as_optional
from fewlabel.data.landmarks import LANDMARK_CLASSES

__all__ = [
    "CLASS_NAMES",
    "field_of_view",
    "remove_outside_fov",
    "remove_stray_ligament",
    "connect_fragments",
    "skeletonize",
    "trace_paths",
    "rdp",
    "draw_paths",
    "sample_points",
    "LandmarkResult",
    "FieldOfViewCull",
    "LigamentCull",
    "FragmentConnector",
    "CurveTracer",
    "LandmarkPostprocessor",
    "LandmarkPostprocess",
    "LandmarkPostprocessd",
]

logger = logging.getLogger("fewlabel.postprocess")

#: SLiPPA's classes, index = label value (P2ILF / L3D label maps).
CLASS_NAMES = LANDMARK_CLASSES

_SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    """NumPy view/copy of an array or tensor (tensors on any device are moved to the CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_mask(binary: Any, name: str = "mask") -> np.ndarray:
    """``(H, W)`` array of any numeric/bool dtype -> bool ``(H, W)``; ValueError otherwise."""
    arr = _to_numpy(binary)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2D (H, W) array, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return arr != 0


def _check_labels(labels: Any, num_classes: int = 256) -> np.ndarray:
    """Validate a label map: ``(H, W)`` (or ``(1, H, W)``) integer values in ``[0, num_classes)``.

    Returns the map as ``(H, W)`` uint8 (no copy when it already is). Float maps are accepted when
    all values are integers (MONAI tensors are often float after ``AsDiscrete``).
    """
    arr = _to_numpy(labels)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(
            f"labels must be an (H, W) map of class indices, got shape {arr.shape}; for a (C, H, W) one-hot "
            "or probability map take argmax over the channels first (or use LandmarkPostprocess)"
        )
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError("labels contain NaN or Inf")
        if arr.size and not np.array_equal(arr, np.round(arr)):
            raise ValueError("labels must be integer class indices; got non-integer values (probabilities? "
                             "take argmax over the channels first)")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"labels must be an integer array, got dtype {arr.dtype}")
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"labels out of range: values in [{lo}, {hi}] but {num_classes} classes "
                             f"(expected 0 .. {num_classes - 1})")
    return arr.astype(np.uint8, copy=False)


# ----------------------------------------------------------------------------------------------
# 1. field of view
# ----------------------------------------------------------------------------------------------


def _brightness(image: Any) -> np.ndarray:
    """Per-pixel brightness in [0, 1]: the maximum over the colour channels (HSV value)."""
    arr = _to_numpy(image)
    if arr.ndim == 3:
        if arr.shape[-1] in (1, 3, 4):
            hwc = arr
        elif arr.shape[0] in (1, 3, 4):
            hwc = np.moveaxis(arr, 0, -1)
        else:
            raise ValueError(f"image must be (H, W, 3) or (3, H, W) (1 or 4 channels also accepted), "
                             f"got shape {arr.shape}")
        if hwc.shape[-1] == 4:
            hwc = hwc[..., :3]  # drop alpha
    elif arr.ndim == 2:
        hwc = arr[..., None]
    else:
        raise ValueError(f"image must be (H, W, 3), (3, H, W) or (H, W), got shape {arr.shape}")
    if hwc.dtype.kind not in "fiub":
        raise ValueError(f"image must be numeric, got dtype {hwc.dtype}")
    v = hwc[..., 0]
    for c in range(1, hwc.shape[-1]):  # a loop of np.maximum is much faster than max over a short last axis
        v = np.maximum(v, hwc[..., c])
    if hwc.dtype == np.uint8:
        return v.astype(np.float32) / 255.0
    if hwc.dtype == np.uint16:
        return v.astype(np.float32) / 65535.0
    v = v.astype(np.float32)
    if hwc.dtype.kind == "f" and not np.isfinite(hwc).all():
        raise ValueError("image contains NaN or Inf: the field of view is undefined")
    hi = float(v.max(initial=0.0))
    if float(hwc.min(initial=0)) < 0:
        raise ValueError(f"image has negative values (min {float(hwc.min()):.3g}): field_of_view needs intensities in "
                         "[0, 1] or [0, 255]; pass the image before intensity normalisation")
    if hi > 255.0:
        raise ValueError(f"image values up to {hi:.3g}: field_of_view needs intensities in [0, 1] or [0, 255]")
    if hi > 1.0:  # float image in [0, 255] (what monai LoadImage gives before ScaleIntensity)
        v = v / 255.0
    return v


def _disk(radius: int) -> np.ndarray:
    """Euclidean digital disk ``x^2 + y^2 <= r^2`` as a uint8 structuring element."""
    r = np.arange(-radius, radius + 1)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius).astype(np.uint8)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a bool mask: background pixels not 4-connected to the image border."""
    h, w = mask.shape
    pad = np.zeros((h + 2, w + 2), np.uint8)
    pad[1:-1, 1:-1] = mask
    cv2.floodFill(pad, None, (0, 0), 2, flags=4)
    return pad[1:-1, 1:-1] != 2


def field_of_view(
    image: Any, threshold: float = 0.1, margin: int = 2, min_fraction: float = 0.01
) -> np.ndarray:
    """The laparoscope's visible area: the frame without its dark border and corners.

    Steps: brightness (the maximum over R, G, B) ``> threshold``; the largest 8-connected bright
    component; its holes filled (dark tissue, shadows and instruments inside the view stay in);
    eroded by a Euclidean disk of radius ``margin`` px (the vignetted rim, where networks predict
    spurious curves). The image border itself is not treated as dark: a view that fills the frame,
    or is cut by its top and bottom edges, is not eroded there.

    Args:
        image: ``(H, W, 3)`` or ``(3, H, W)`` (1 or 4 channels, and ``(H, W)`` grey, also accepted),
            as NumPy array or tensor on any device. ``uint8`` in [0, 255], ``uint16``, or float in
            [0, 1]; float images with a maximum above 1 are taken to be in [0, 255].
        threshold: brightness in [0, 1] above which a pixel is inside the view.
        margin: erosion radius in pixels (0: none).
        min_fraction: a view smaller than this fraction of the frame is not trusted.

    Returns:
        ``(H, W)`` bool, True inside the view. A frame that is entirely bright gives an all-True map.
        A frame with (almost) nothing above ``threshold`` (dark frame, lens covered), or whose view is
        smaller than ``min_fraction`` of it, also gives an all-True map, with a logged warning: the
        field of view is then unknown and predictions are never all wiped out because of it.

    Raises:
        ValueError: wrong shape, NaN/Inf, negative or out-of-range intensities, bad arguments.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if not 0.0 <= min_fraction < 1.0:
        raise ValueError(f"min_fraction must be in [0, 1), got {min_fraction}")
    v = _brightness(image)
    h, w = v.shape
    everything = np.ones((h, w), bool)
    bright = (v > threshold).astype(np.uint8)
    n, cc = cv2.connectedComponents(bright, connectivity=8)
    if n <= 1:
        logger.warning("field_of_view: no pixel brighter than %.3g (dark frame?): keeping the whole frame", threshold)
        return everything
    biggest = 1 + int(np.argmax(np.bincount(cc.ravel(), minlength=n)[1:]))
    fov = _fill_holes(cc == biggest)
    if margin > 0:
        fov = cv2.erode(fov.view(np.uint8), _disk(int(margin)), borderType=cv2.BORDER_CONSTANT,
                        borderValue=1).astype(bool)
    if fov.sum() < min_fraction * h * w:
        logger.warning("field_of_view: the bright area is %.2f%% of the frame (< %.2f%%): keeping the whole frame",
                       100.0 * fov.mean(), 100.0 * min_fraction)
        return everything
    return fov


def remove_outside_fov(mask: Any, fov: Any) -> np.ndarray:
    """Zero every pixel of ``mask`` outside the field of view.

    Args:
        mask: ``(H, W)`` label map or binary mask, or ``(C, H, W)`` stack of them, any dtype.
        fov: ``(H, W)`` bool, True inside the view (:func:`field_of_view`).

    Returns:
        A copy of ``mask`` (same dtype) with 0 outside the view.

    Raises:
        ValueError: when the spatial shapes differ.
    """
    m = _to_numpy(mask)
    f = _check_mask(fov, "fov")
    if m.ndim not in (2, 3) or m.shape[-2:] != f.shape:
        raise ValueError(f"mask {m.shape} and field of view {f.shape} must share their (H, W)")
    return np.where(f, m, np.zeros((), m.dtype))


# ----------------------------------------------------------------------------------------------
# 2. stray ligament
# ----------------------------------------------------------------------------------------------


def remove_stray_ligament(
    labels: Any, ligament: int = 3, others: Sequence[int] = (1, 2), margin: int = 0
) -> np.ndarray:
    """Cull ligament components lying entirely above or entirely below both other landmarks.

    The falciform ligament runs between the ridge and the silhouette; SLiPPA culls "ligament
    predictions above/below both the ridge and silhouette". Here: let ``top`` and ``bottom`` be the
    first and last rows holding a pixel of any class in ``others`` (the union of ridge and
    silhouette). Each 8-connected ligament component whose lowest row is above ``top - margin``, or
    whose highest row is below ``bottom + margin``, is set to background. A component that
    reaches into the band ``[top - margin, bottom + margin]`` is kept whole.

    When no pixel of ``others`` is present the ligament cannot be judged and is kept.

    Args:
        labels: ``(H, W)`` class indices (any integer dtype; ``(1, H, W)`` accepted).
        ligament: class index of the ligament.
        others: class indices of the reference landmarks (silhouette, ridge).
        margin: tolerance in pixels (>= 0): a component must be more than ``margin`` rows
            outside the band to be removed.

    Returns:
        ``(H, W)`` uint8 label map, a copy of ``labels`` with the stray components set to 0.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if not all(0 <= int(c) < 256 for c in (ligament, *others)):
        raise ValueError(f"class indices must be in [0, 255], got ligament={ligament}, others={tuple(others)}")
    lab = _check_labels(labels).copy()
    lig = lab == ligament
    if not lig.any():
        return lab
    is_other = np.zeros(256, bool)
    is_other[[int(o) for o in others]] = True
    rows = np.flatnonzero(is_other[lab].any(axis=1))
    if rows.size == 0:
        return lab
    top, bottom = int(rows[0]) - margin, int(rows[-1]) + margin
    lig_rows = np.flatnonzero(lig.any(axis=1))
    if lig_rows[0] >= top and lig_rows[-1] <= bottom:
        return lab  # every ligament pixel is inside the band
    r0, r1 = lig_rows[0], lig_rows[-1] + 1
    cols = np.flatnonzero(lig[r0:r1].any(axis=0))
    c0, c1 = cols[0], cols[-1] + 1
    crop = np.ascontiguousarray(lig[r0:r1, c0:c1])
    _, cc = cv2.connectedComponents(crop.view(np.uint8), connectivity=8)
    for k, sl in enumerate(ndi.find_objects(cc), start=1):
        y0, y1 = r0 + sl[0].start, r0 + sl[0].stop - 1
        if y1 < top or y0 > bottom:
            lab[r0:r1, c0:c1][cc == k] = 0
    return lab


# ----------------------------------------------------------------------------------------------
# 3. joining fragments
# ----------------------------------------------------------------------------------------------


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> bool:
        ri, rj = self.find(i), self.find(j)
        if ri == rj:
            return False
        self.parent[max(ri, rj)] = min(ri, rj)
        return True


_Pair = tuple[float, int, int, np.ndarray, np.ndarray]


def _closest_pairs(binary: np.ndarray, max_gap: float) -> tuple[int, list[_Pair]]:
    """Closest pixel pair between every two 8-connected components at most ``max_gap`` apart.

    Only boundary pixels (with a background 8-neighbour) can be closest to another component, so the
    search runs on them: one KD-tree per component, queried with the other components' boundary
    pixels inside its bounding box grown by ``max_gap``.

    Returns ``(num_components, [(distance, i, j, pixel_in_i, pixel_in_j), ...])`` with ``i < j``
    component labels (1-based) and ``(row, col)`` pixels.
    """
    u8 = binary.view(np.uint8)
    n, cc = cv2.connectedComponents(u8, connectivity=8)
    if n <= 2:
        return n - 1, []
    boundary = binary & ~cv2.erode(u8, np.ones((3, 3), np.uint8)).astype(bool)
    rr, cols = np.nonzero(boundary)
    comp = cc[rr, cols]
    order = np.argsort(comp, kind="stable")
    rr, cols, comp = rr[order], cols[order], comp[order]
    pts = np.stack([rr, cols], axis=1).astype(np.float64)
    starts = np.searchsorted(comp, np.arange(1, n + 1))
    pairs = []
    for i in range(1, n - 1):
        s, e = starts[i - 1], starts[i]
        own = pts[s:e]
        later = slice(e, None)  # components j > i: each pair is searched once
        r0, c0 = own.min(axis=0) - max_gap
        r1, c1 = own.max(axis=0) + max_gap
        cand = pts[later]
        sel = np.flatnonzero((cand[:, 0] >= r0) & (cand[:, 0] <= r1) & (cand[:, 1] >= c0) & (cand[:, 1] <= c1))
        if sel.size == 0:
            continue
        d, idx = cKDTree(own).query(cand[sel], k=1, distance_upper_bound=max_gap + 1e-9)
        ok = np.isfinite(d)
        if not ok.any():
            continue
        sel, d, idx = sel[ok], d[ok], idx[ok]
        cj = comp[e:][sel]
        o = np.lexsort((d, cj))  # per other component, its closest pixel first (ties: raster order)
        first = o[np.r_[True, cj[o][1:] != cj[o][:-1]]]
        for f in first:
            pairs.append((float(d[f]), i, int(cj[f]), own[idx[f]].astype(np.int64), cand[sel[f]].astype(np.int64)))
    return n - 1, pairs


def connect_fragments(binary: Any, max_gap: float = 12.0, thickness: int = 3) -> np.ndarray:
    """Join the fragments of ONE landmark that lie at most ``max_gap`` px apart.

    Networks often predict a thin landmark as a dashed curve. Every two 8-connected components whose
    closest pixels are at most ``max_gap`` apart (Euclidean distance between pixel centres: two
    fragments separated by ``g`` background pixels along a row are ``g + 1`` apart) are candidate
    links; the links are accepted shortest first, skipping those between components already joined
    (Kruskal's minimum spanning forest), so no redundant links or loops are added. Each accepted
    link is a straight line between the two closest pixels, ``thickness`` px wide.

    Closest pixels are found with KD-trees (:class:`scipy.spatial.cKDTree`) on boundary pixels.

    Args:
        binary: ``(H, W)`` mask of one landmark (bool or 0/1).
        max_gap: largest distance in pixels that is bridged (0 switches the step off).
        thickness: line width of the bridges in pixels (>= 1).

    Returns:
        ``(H, W)`` bool mask: the input plus the bridges.
    """
    m = _check_mask(binary, "binary")
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    if thickness < 1:
        raise ValueError(f"thickness must be >= 1, got {thickness}")
    m = np.ascontiguousarray(m)
    if max_gap == 0 or not m.any():
        return m.copy()
    n, pairs = _closest_pairs(m, float(max_gap))
    out = m.astype(np.uint8)
    if not pairs:
        return out.astype(bool)
    uf = _UnionFind(n + 1)
    for _, i, j, p, q in sorted(pairs, key=lambda t: (t[0], t[1], t[2])):
        if uf.union(i, j):
            cv2.line(out, (int(p[1]), int(p[0])), (int(q[1]), int(q[0])), 1, int(thickness), cv2.LINE_8)
    return out.astype(bool)


# ----------------------------------------------------------------------------------------------
# 4. skeleton
# ----------------------------------------------------------------------------------------------


def skeletonize(binary: Any) -> np.ndarray:
    """Thin a mask to one-pixel-wide curves with Zhang & Suen's algorithm.

    Uses :func:`skimage.morphology.skeletonize`, which on 2D images defaults to ``method="zhang"``,
    documented by scikit-image as Zhang & Suen, "A fast parallel algorithm for thinning digital
    patterns", Commun. ACM 27(3), 1984 (the reference SLiPPA cites, [20]). Checked for
    scikit-image 0.26: its compiled core runs Zhang-Suen's two alternating parallel sub-iterations
    until no pixel changes, deciding each deletion from a 256-entry look-up table of 3x3
    neighbourhoods. That table is not exactly the paper's conditions: it differs in 25 of the 256
    neighbourhoods, where it also deletes "staircase" corner pixels (so the result is one pixel
    wide with no redundant 4-connected corners and no 2x2 block) and spares some two-pixel ends the
    textbook rules erode (textbook Zhang-Suen shortens each curve end by up to about half the
    stroke width, more on thin diagonal strokes). So this is Zhang-Suen's scheme with
    scikit-image's refinements; ``benchmarks/_landmark_baseline.py`` has the textbook rules.
    Each 8-connected component is thinned inside its own bounding box (the same result, less work
    on a mostly empty frame).

    Args:
        binary: ``(H, W)`` mask (bool or 0/1).

    Returns:
        ``(H, W)`` bool skeleton, a subset of the mask, each input component kept connected.
        Small blobs shrink to a few pixels.
    """
    m = np.ascontiguousarray(_check_mask(binary, "binary"))
    out = np.zeros(m.shape, bool)
    if not m.any():
        return out
    _, cc = cv2.connectedComponents(m.view(np.uint8), connectivity=8)
    h, w = m.shape
    for k, (rs, cs) in enumerate(ndi.find_objects(cc), start=1):
        y0, y1, x0, x1 = max(rs.start - 1, 0), min(rs.stop + 1, h), max(cs.start - 1, 0), min(cs.stop + 1, w)
        crop = cc[y0:y1, x0:x1] == k
        out[y0:y1, x0:x1] |= _skimage_skeletonize(crop)
    return out


# ----------------------------------------------------------------------------------------------
# 5. tracing
# ----------------------------------------------------------------------------------------------


def _index_image(rr: np.ndarray, cc: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(H + 2, W + 2)`` int32 image holding each pixel's index (-1 elsewhere), padded by one."""
    index = np.full((shape[0] + 2, shape[1] + 2), -1, np.int32)
    index[rr + 1, cc + 1] = np.arange(rr.size, dtype=np.int32)
    return index


_N8 = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_N8_STEP = np.array([_SQRT2 if dr and dc else 1.0 for dr, dc in _N8])


def _pixel_graph(rr: np.ndarray, cc: np.ndarray, shape: tuple[int, int]) -> sparse.csr_matrix:
    """Undirected 8-neighbour graph of the given pixels, edges weighted by step length (1 or sqrt 2).

    Built directly in CSR form: row ``i`` lists the neighbours of pixel ``i`` in a fixed order.
    """
    n = rr.size
    index = _index_image(rr, cc, shape)
    nb = np.stack([index[rr + 1 + dr, cc + 1 + dc] for dr, dc in _N8], axis=1)  # (n, 8), -1: none
    valid = nb >= 0
    indptr = np.zeros(n + 1, np.int32)
    np.cumsum(valid.sum(axis=1), out=indptr[1:])
    data = np.broadcast_to(_N8_STEP, nb.shape)[valid]
    return sparse.csr_matrix((data, nb[valid], indptr), shape=(n, n))


def _argmax_per_group(values: np.ndarray, group: np.ndarray, ngroups: int) -> np.ndarray:
    """Index of the largest value of each group (ties: the smallest index)."""
    order = np.lexsort((np.arange(values.size), -values, group))
    return order[np.searchsorted(group[order], np.arange(ngroups))]


def _longest_paths(rr: np.ndarray, cc: np.ndarray, shape: tuple[int, int]) -> tuple[list[np.ndarray], np.ndarray]:
    """Longest geodesic path of every 8-connected component of the pixels ``(rr, cc)``.

    Double sweep of Dijkstra: from any pixel, the farthest pixel ``a`` is an end of a longest path in
    a tree; the farthest pixel from ``a`` is the other end. (Exact on trees, which thinned curves are
    once their loops are cut; the geodesic through a staircase corner is the same either way.)
    Returns the paths as index arrays into ``rr`` / ``cc`` (component order: raster order of their
    first pixel) and the component label of every pixel.
    """
    graph = _pixel_graph(rr, cc, shape)
    ncomp, comp = csgraph.connected_components(graph, directed=True, connection="strong")  # symmetric graph
    first = np.unique(comp, return_index=True)[1]
    d0 = csgraph.dijkstra(graph, directed=True, indices=first, min_only=True)
    a = _argmax_per_group(d0, comp, ncomp)
    d1, pred, _ = csgraph.dijkstra(graph, directed=True, indices=a, min_only=True, return_predecessors=True)
    b = _argmax_per_group(d1, comp, ncomp)
    back = pred.tolist()
    paths = []
    for ai, bi in zip(a.tolist(), b.tolist()):
        chain = [bi]
        while chain[-1] != ai:
            chain.append(back[chain[-1]])
        paths.append(np.asarray(chain[::-1], np.int64))
    return paths, comp


def _cut_loops(skel: np.ndarray, max_rounds: int = 8) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Open every closed loop of a skeleton at one pixel.

    A loop encloses a hole (background not 4-connected to the border). For each hole, the pixel
    just above its top-left pixel is a skeleton pixel on the loop; removing it opens the loop (for
    a loop thicker than one pixel there, the next round cuts again).
    """
    skel = skel.copy()
    cuts: list[tuple[int, int]] = []
    for _ in range(max_rounds):
        holes = _fill_holes(skel) & ~skel
        if not holes.any():
            break
        n, hl = cv2.connectedComponents(holes.view(np.uint8), connectivity=4)
        for k, (rs, _cs) in enumerate(ndi.find_objects(hl), start=1):
            y = rs.start
            x = int(np.argmax(hl[y] == k))
            if skel[y - 1, x]:
                skel[y - 1, x] = False
                cuts.append((y - 1, x))
    return skel, cuts


_N4_FIRST = ((-1, 0), (0, -1), (0, 1), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1))


def _junction(index: np.ndarray, used: np.ndarray, r: int, c: int) -> int:
    """Index of a used pixel 8-adjacent to ``(r, c)`` (``index`` padded by one; 4-neighbours
    preferred), or -1."""
    for dr, dc in _N4_FIRST:
        j = index[r + 1 + dr, c + 1 + dc]
        if j >= 0 and used[j]:
            return int(j)
    return -1


def trace_paths(
    skeleton: Any, min_branch: int | None = 10, min_length: int = 1
) -> list[np.ndarray]:
    """Order a skeleton into polylines, each running from one end of a curve to the other.

    For every 8-connected component, the longest path between two of its pixels (geodesic length,
    diagonal steps counting sqrt 2) is returned; it starts at whichever of its two ends comes first
    in raster order (smaller row, then smaller column). Pixels left over are side branches: each
    8-connected group of them with at least ``min_branch`` pixels is traced the same way, as an
    extra path that starts at the pixel where it leaves the curve it hangs on (so drawing it keeps
    it attached), and so on for branches of branches; groups with fewer pixels (spurs of thinning,
    blobs) are pruned. Closed loops are opened at one pixel (the one above the enclosed hole's
    top-left pixel): the path goes round the loop and ends next to where it began.

    Args:
        skeleton: ``(H, W)`` one-pixel-wide mask (:func:`skeletonize`); thicker input is traced
            too, but only along one geodesic per component.
        min_branch: smallest side branch (in pixels) returned as its own path; ``None`` returns
            only the longest path of each component.
        min_length: main paths with fewer points are dropped (1: keep all, single pixels included).

    Returns:
        List of ``(N, 2)`` int64 ``(row, col)`` arrays, consecutive points 8-adjacent: the main
        paths, longest first, then the branches. Empty list for an empty skeleton.
    """
    skel = np.ascontiguousarray(_check_mask(skeleton, "skeleton"))
    if min_branch is not None and min_branch < 1:
        raise ValueError(f"min_branch must be >= 1 or None, got {min_branch}")
    rows = np.flatnonzero(skel.any(axis=1))
    if rows.size == 0:
        return []
    cols = np.flatnonzero(skel[rows[0]: rows[-1] + 1].any(axis=0))
    r0, c0 = int(rows[0]), int(cols[0])
    crop = skel[r0: rows[-1] + 1, c0: cols[-1] + 1]  # work in the skeleton's bounding box
    cut_skel, cuts = _cut_loops(crop)
    rr, cc = np.nonzero(cut_skel)
    shape = crop.shape
    mains = []
    main_paths, _ = _longest_paths(rr, cc, shape)
    for p in main_paths:
        if (rr[p[-1]], cc[p[-1]]) < (rr[p[0]], cc[p[0]]):
            p = p[::-1]
        mains.append(p)
    used = np.zeros(rr.size, bool)
    for p in mains:
        used[p] = True
    branches: list[np.ndarray] = []
    if min_branch is not None:
        index = _index_image(rr, cc, shape)
        # each round marks at least one pixel used (every path holds a pixel), so rr.size + 1 rounds end it
        for _ in range(rr.size + 1):
            rest = np.flatnonzero(~used)
            if rest.size < min_branch:
                break
            _, comp = csgraph.connected_components(
                _pixel_graph(rr[rest], cc[rest], shape), directed=True, connection="strong")
            nodes = rest[np.bincount(comp)[comp] >= min_branch]
            if nodes.size == 0:
                break  # the nodes of small groups stay unused: pruned
            sub_paths, _ = _longest_paths(rr[nodes], cc[nodes], shape)
            for p in sub_paths:
                p = nodes[p]
                j0 = _junction(index, used, int(rr[p[0]]), int(cc[p[0]]))
                j1 = _junction(index, used, int(rr[p[-1]]), int(cc[p[-1]]))
                if j0 < 0 and j1 >= 0:  # start the branch where it leaves the curve
                    p, j0 = p[::-1], j1
                used[p] = True
                branches.append(np.concatenate([[j0], p]) if j0 >= 0 else p)
        else:
            raise RuntimeError(f"trace_paths: side branches of a {rr.size}-pixel skeleton not traced in "
                               f"{rr.size + 1} rounds; please report this skeleton.")
    paths = [np.stack([rr[p], cc[p]], axis=1).astype(np.int64) for p in mains]
    # re-attach the pixel each loop was opened at, at the path end next to it
    for r, c in cuts:
        for i, q in enumerate(paths):
            if max(abs(q[-1, 0] - r), abs(q[-1, 1] - c)) == 1:
                paths[i] = np.vstack([q, [[r, c]]])
                break
            if max(abs(q[0, 0] - r), abs(q[0, 1] - c)) == 1:
                paths[i] = np.vstack([[[r, c]], q])
                break
    paths = [p for p in paths if len(p) >= min_length]
    paths.sort(key=len, reverse=True)
    paths += [np.stack([rr[p], cc[p]], axis=1).astype(np.int64) for p in branches]
    offset = np.array([r0, c0], np.int64)
    return [p + offset for p in paths]


# ----------------------------------------------------------------------------------------------
# 6. Ramer-Douglas-Peucker
# ----------------------------------------------------------------------------------------------


def _segment_distance(q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each point ``q[i]`` to the segment ``[a[i], b[i]]`` (all ``(K, 2)`` float64).

    Where the point projects inside the segment this is the perpendicular distance to the line
    through ``a`` and ``b``, from the cross product (exactly 0 for collinear integer points); beyond
    the segment's ends it is the distance to the nearer end; for ``a == b`` the distance to ``a``.
    """
    ab = b - a
    ap = q - a
    len2 = ab[:, 0] * ab[:, 0] + ab[:, 1] * ab[:, 1]
    cross = np.abs(ap[:, 0] * ab[:, 1] - ap[:, 1] * ab[:, 0])
    d = np.divide(cross, np.sqrt(len2), out=np.hypot(ap[:, 0], ap[:, 1]), where=len2 > 0)
    t = ap[:, 0] * ab[:, 0] + ap[:, 1] * ab[:, 1]
    before, after = t < 0, t > len2
    if before.any():
        d[before] = np.hypot(ap[before, 0], ap[before, 1])
    if after.any():
        bq = q[after] - b[after]
        d[after] = np.hypot(bq[:, 0], bq[:, 1])
    return d


def rdp(points: Any, epsilon: float, return_indices: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Simplify an ordered polyline with the Ramer-Douglas-Peucker algorithm.

    The four steps of SLiPPA's section 3.1: connect the first and last points; compute every other
    point's distance to that line; if the largest distance exceeds ``epsilon``, keep that point and
    split the curve there; repeat on both sub-curves. The repetition is iterative, on a work stack
    of pending sub-curves (no recursion, so long contours cannot hit Python's recursion limit):
    all sub-curves pending at one time are handled in a single vectorised pass (distances of all
    their points at once, maximum per sub-curve with ``np.maximum.reduceat``), which gives the same
    result as handling them one by one, since each sub-curve's split depends on that sub-curve only.

    Distances are to the *segment* between the two points: the perpendicular distance to the line
    wherever the point projects inside the segment (nearly always on a traced curve), the distance
    to the nearer end otherwise. This guarantees that every removed point lies within ``epsilon``
    of the simplified polyline (a hairpin can leave a point near the line but far beyond the
    segment). Ties go to the first point. The kept sets are nested: a larger ``epsilon`` never keeps
    a point a smaller one drops.

    Args:
        points: ``(N, 2)`` ordered points (any real dtype; ``(row, col)`` or ``(x, y)``).
        epsilon: tolerance in the points' units, >= 0 (0 removes exactly collinear points only).
        return_indices: also return the indices of the kept points.

    Returns:
        ``(M, 2)`` kept points in their original order and dtype (first and last always kept;
        ``M = N`` for ``N <= 2``), and with ``return_indices`` the ``(M,)`` int64 indices.
    """
    arr = _to_numpy(points)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"points must be an (N, 2) array, got shape {arr.shape}")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon}")
    p = arr.astype(np.float64)
    if not np.isfinite(p).all():
        raise ValueError("points contain NaN or Inf")
    kept = _rdp_keep(p, np.array([0]), np.array([len(p)]), float(epsilon))
    out = arr[kept].copy()
    return (out, kept) if return_indices else out


def _rdp_keep(p: np.ndarray, path_starts: np.ndarray, path_stops: np.ndarray, epsilon: float) -> np.ndarray:
    """RDP on several polylines at once: ``p`` ``(N, 2)`` float64 holds them back to back, polyline
    ``i`` being ``p[path_starts[i]: path_stops[i]]``. Returns the sorted indices of the kept points.

    The work stack starts with one sub-curve per polyline; each pass takes every pending sub-curve,
    splits those whose farthest point is beyond ``epsilon`` and pushes the halves.
    """
    keep = np.zeros(len(p), bool)
    nonempty = path_stops > path_starts
    keep[path_starts[nonempty]] = True
    keep[path_stops[nonempty] - 1] = True
    starts, ends = path_starts[nonempty].astype(np.int64), path_stops[nonempty].astype(np.int64) - 1
    while starts.size:
        inner = ends - starts - 1
        busy = inner > 0
        starts, ends, inner = starts[busy], ends[busy], inner[busy]
        if not starts.size:
            break
        seg = np.repeat(np.arange(starts.size), inner)  # sub-curve of each interior point
        offsets = np.cumsum(inner) - inner
        idx = np.arange(seg.size) - offsets[seg] + starts[seg] + 1
        d = _segment_distance(p[idx], p[starts[seg]], p[ends[seg]])
        dmax = np.maximum.reduceat(d, offsets)
        at_max = np.flatnonzero(d == dmax[seg])
        first = at_max[np.r_[True, seg[at_max][1:] != seg[at_max][:-1]]]  # first maximum of each sub-curve
        split = dmax > epsilon
        mid = idx[first][split]
        keep[mid] = True
        starts, ends = np.concatenate([starts[split], mid]), np.concatenate([mid, ends[split]])
    return np.flatnonzero(keep)


def _rdp_many(paths: Sequence[np.ndarray], epsilon: float) -> list[np.ndarray]:
    """:func:`rdp` of each of several ``(N, 2)`` paths, all simplified in the same passes (the
    per-pass cost is mostly fixed overhead, so batching a frame's curves saves most of it)."""
    if not paths:
        return []
    lengths = np.array([len(q) for q in paths])
    stops = np.cumsum(lengths)
    starts = stops - lengths
    kept = _rdp_keep(np.concatenate(paths).astype(np.float64), starts, stops, float(epsilon))
    owner = np.searchsorted(stops, kept, side="right")
    return [paths[i][kept[owner == i] - starts[i]] for i in range(len(paths))]


# ----------------------------------------------------------------------------------------------
# 7. drawing and sampling
# ----------------------------------------------------------------------------------------------


def draw_paths(
    paths: Sequence[Any], shape: Sequence[int], thickness: int = 1, order: Literal["rc", "xy"] = "rc"
) -> np.ndarray:
    """Draw polylines into a mask (the dilated centre line SLiPPA evaluates).

    Args:
        paths: ``(N, 2)`` point arrays; float coordinates are rounded to the nearest pixel.
        shape: ``(H, W)`` of the mask.
        thickness: line width in pixels (>= 1); a single-point path becomes a disk of that width.
        order: ``"rc"`` for ``(row, col)`` points (:func:`trace_paths`), ``"xy"`` for ``(x, y)``
            (the point lists of :class:`LandmarkPostprocessor`).

    Returns:
        ``(H, W)`` bool mask; parts outside the frame are clipped.
    """
    if order not in ("rc", "xy"):
        raise ValueError(f"order must be 'rc' or 'xy', got {order!r}")
    if thickness < 1:
        raise ValueError(f"thickness must be >= 1, got {thickness}")
    h, w = (int(s) for s in shape)
    out = np.zeros((h, w), np.uint8)
    lines = []
    for path in paths:
        pts = _to_numpy(path).astype(np.float64)
        if pts.size == 0:
            continue
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"each path must be an (N, 2) array, got shape {pts.shape}")
        if not np.isfinite(pts).all():
            raise ValueError("path contains NaN or Inf")
        xy = np.round(pts if order == "xy" else pts[:, ::-1]).astype(np.int32)
        if len(xy) == 1:
            cv2.circle(out, (int(xy[0, 0]), int(xy[0, 1])), int(thickness) // 2, 1, -1)
        else:
            lines.append(xy.reshape(-1, 1, 2))
    if lines:
        cv2.polylines(out, lines, isClosed=False, color=1, thickness=int(thickness), lineType=cv2.LINE_8)
    return out.astype(bool)


def sample_points(path: Any, spacing: float | None = None, num_points: int | None = None) -> np.ndarray:
    """Resample a polyline at evenly spaced arc length, both ends included.

    Give exactly one of ``spacing`` (the largest allowed distance along the curve between
    consecutive samples: the curve of length ``L`` gets ``ceil(L / spacing) + 1`` samples, evenly
    spaced, so the actual spacing is ``<= spacing``) or ``num_points`` (>= 2 samples).

    Args:
        path: ``(N, 2)`` ordered points (either axis order; the output keeps it).
        spacing: arc length between samples, > 0.
        num_points: number of samples, >= 2.

    Returns:
        ``(M, 2)`` float64 points along the polyline, first and last equal to the path's ends.
        An empty path gives ``(0, 2)``; a path of zero length (one point, or repeated points) gives
        that point once (with ``spacing``) or ``num_points`` times.
    """
    if (spacing is None) == (num_points is None):
        raise ValueError("give exactly one of spacing or num_points")
    if spacing is not None and not (math.isfinite(spacing) and spacing > 0):
        raise ValueError(f"spacing must be > 0, got {spacing}")
    if num_points is not None and int(num_points) < 2:
        raise ValueError(f"num_points must be >= 2, got {num_points}")
    pts = _to_numpy(path).astype(np.float64)
    if pts.size == 0:
        return np.zeros((0, 2))
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"path must be an (N, 2) array, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("path contains NaN or Inf")
    seg = np.hypot(*np.diff(pts, axis=0).T)
    keep = np.r_[True, seg > 0]  # drop repeated points: arc length must increase
    pts, seg = pts[keep], seg[seg > 0]
    arc = np.r_[0.0, np.cumsum(seg)]
    total = float(arc[-1])
    if total == 0.0:
        return np.repeat(pts[:1], 1 if spacing is not None else int(num_points), axis=0)
    m = int(num_points) if num_points is not None else int(math.ceil(total / spacing - 1e-9)) + 1
    m = max(m, 2)
    s = np.linspace(0.0, total, m)
    return np.stack([np.interp(s, arc, pts[:, 0]), np.interp(s, arc, pts[:, 1])], axis=1)


# ----------------------------------------------------------------------------------------------
# 8. the pipeline
# ----------------------------------------------------------------------------------------------


@dataclass
class LandmarkResult:
    """Output of :class:`LandmarkPostprocessor` for one frame.

    Attributes:
        masks: ``(C - 1, H, W)`` bool, one mask per landmark class (1 .. C-1), processed separately:
            where curves of two classes overlap the pixels are in both masks.
        labels: ``(H, W)`` uint8 label map of the masks, for saving. Classes are painted in index
            order, so where masks overlap the higher class index wins (ligament over ridge over
            silhouette: the rarest landmark keeps its pixels).
        paths: ``{class_name: [(N, 2) float64 arrays]}``, every landmark class present (empty list
            when none), each array an ordered curve in ``(x, y)`` pixel coordinates (x = column,
            y = row), scaled by the post-processor's ``scale``. Empty lists when the skeleton step is off.
        timings: ``{step: seconds}`` (``time.perf_counter``) of the steps that ran, summed over
            classes, plus ``"total"``.
        fov: the ``(H, W)`` field of view used, or ``None`` when the step did not run.
    """

    masks: np.ndarray
    labels: np.ndarray
    paths: dict[str, list[np.ndarray]]
    timings: dict[str, float] = field(default_factory=dict)
    fov: np.ndarray | None = None


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    return cv2.resize(mask.view(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)


class FieldOfViewCull:
    """Post-processing step: labels outside the frame's field of view become background.

    Args:
        threshold, margin: see :func:`field_of_view`.
        enabled: ``False`` switches the step off (a bundle's ``postprocess#fov``).
    """

    def __init__(self, threshold: float = 0.1, margin: int = 2, enabled: bool = True) -> None:
        self.threshold, self.margin = float(threshold), int(margin)
        self.enabled = as_bool(enabled, "fov")

    def __call__(self, labels: np.ndarray, image: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(H, W)`` uint8 labels and the frame -> ``(culled labels, (H, W) bool field of view)``.

        An image of another size gives a field of view resized to the labels (nearest neighbour)."""
        fov = _resize_mask(field_of_view(image, self.threshold, self.margin), labels.shape)
        return np.where(fov, labels, np.uint8(0)), fov


class LigamentCull:
    """Post-processing step: stray ligament components are culled (:func:`remove_stray_ligament`).

    Args:
        ligament_class: class index of the ligament.
        reference_classes: classes the ligament must lie between (silhouette, ridge).
        margin: tolerance in pixels.
        enabled: ``False`` switches the step off (a bundle's ``postprocess#ligament``).
    """

    def __init__(self, ligament_class: int = 3, reference_classes: Sequence[int] = (1, 2), margin: int = 0,
                 enabled: bool = True) -> None:
        self.ligament_class = int(ligament_class)
        self.reference_classes = tuple(int(c) for c in reference_classes)
        self.margin = int(margin)
        self.enabled = as_bool(enabled, "ligament")

    def check_classes(self, class_names: Sequence[str]) -> None:
        """Raise ``ValueError`` if a class this step uses is not a landmark of ``class_names``."""
        for c in (self.ligament_class, *self.reference_classes):
            if not 0 < c < len(class_names):
                raise ValueError(f"ligament step: class {c} is not a landmark of {tuple(class_names)}")

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        """``(H, W)`` uint8 labels -> the same without stray ligament components."""
        return remove_stray_ligament(labels, self.ligament_class, self.reference_classes, self.margin)


class FragmentConnector:
    """Post-processing step: fragments of one landmark are joined (:func:`connect_fragments`).

    Args:
        max_gap: largest gap bridged, in pixels.
        thickness: width of the bridges in pixels.
        enabled: ``False`` switches the step off (a bundle's ``postprocess#connect``).
    """

    def __init__(self, max_gap: float = 12.0, thickness: int = 3, enabled: bool = True) -> None:
        self.max_gap, self.thickness = float(max_gap), int(thickness)
        self.enabled = as_bool(enabled, "connect")

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        """``(H, W)`` bool mask of one landmark -> the joined mask."""
        return connect_fragments(mask, self.max_gap, self.thickness)


class CurveTracer:
    """Post-processing steps: thin a landmark to its centre line, trace it, simplify it, draw it back.

    Args:
        min_branch: side branches with at least this many pixels become paths of their own
            (``None``: only the longest path of each component); min_length: shortest path kept
            (:func:`trace_paths`).
        rdp_epsilon: RDP tolerance in pixels (:func:`rdp`); ``None`` switches simplification off.
        thickness: width in pixels of the curves drawn back (1: the bare centre line).
        enabled: ``False`` switches all four steps off (a bundle's ``postprocess#skeleton``): the
            post-processor then returns the culled (and joined) masks and no point lists.

    Raises:
        ValueError: ``rdp_epsilon < 0`` or ``thickness < 1``.
    """

    def __init__(self, min_branch: int | None = 10, min_length: int = 1, rdp_epsilon: float | None = 1.0,
                 thickness: int = 3, enabled: bool = True) -> None:
        self.min_branch = as_optional(min_branch, "min_branch", as_int)
        self.min_length = int(min_length)
        rdp_epsilon = as_optional(rdp_epsilon, "rdp_epsilon", lambda v, k: float(v))
        if rdp_epsilon is not None and not rdp_epsilon >= 0:
            raise ValueError(f"rdp_epsilon must be >= 0 or None, got {rdp_epsilon}")
        self.rdp_epsilon = rdp_epsilon
        if int(thickness) < 1:
            raise ValueError(f"thickness must be >= 1, got {thickness}")
        self.thickness = int(thickness)
        self.enabled = as_bool(enabled, "skeleton")

    def trace(self, mask: np.ndarray) -> list[np.ndarray]:
        """``(H, W)`` bool mask -> ordered ``(N, 2)`` int64 ``(row, col)`` paths of its centre line."""
        return trace_paths(skeletonize(mask), self.min_branch, self.min_length)

    def simplify(self, paths: Sequence[np.ndarray]) -> list[np.ndarray]:
        """RDP-simplified ``paths`` (all together; unchanged when ``rdp_epsilon`` is ``None``)."""
        return list(paths) if self.rdp_epsilon is None else _rdp_many(paths, self.rdp_epsilon)

    def draw(self, paths: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
        """``(H, W)`` bool mask of ``paths`` drawn ``thickness`` px wide."""
        return draw_paths(paths, shape, self.thickness)


def _step(value: Any, default: Callable[[], Any], name: str) -> Any:
    """A post-processing step from a config value: a step object, ``True`` (defaults), ``False`` / ``None`` (off)."""
    if value is None or isinstance(value, (bool, str, int, np.bool_)):
        return default() if as_bool(value if value is not None else False, name) else None
    return value if getattr(value, "enabled", True) else None


class LandmarkPostprocessor:
    """SLiPPA's post-processing of one predicted label map, composed of switchable steps.

    Steps, in order (timings keys in brackets): the field of view is computed from the image and
    labels outside it are set to background [``fov``: :class:`FieldOfViewCull`]; stray ligament
    components are culled [``ligament``: :class:`LigamentCull`]; then for each landmark class
    separately: fragments are joined [``connect``: :class:`FragmentConnector`], thinned
    [``skeleton``], traced into ordered paths [``trace``], simplified [``rdp``] and drawn back
    [``draw``] (the last four: :class:`CurveTracer`).

    Args:
        class_names: names of the classes, index 0 = background (default SLiPPA's four).
        fov, ligament, connect, curves: each step as an object of its class, ``True`` for the
            step with its defaults, or ``False`` / ``None`` (or an object with ``enabled=False``)
            for off. The field-of-view step is skipped when no image is given.
        scale: map the point lists to another resolution: a factor, or ``(sx, sy)`` (e.g. network
            416x320 -> frame 1920x1080: ``(1920 / 416, 1080 / 320)``). Pixel centres map to pixel
            centres, ``x' = (x + 0.5) * sx - 0.5``, as resizing does. ``None``: network pixels.
            Masks and labels stay at the label map's size.

    Attributes:
        fov, ligament, connect, curves: the steps that run (``None`` for a step switched off).

    Call with ``(labels, image=None)``: ``labels`` ``(H, W)`` class indices (integer, or float
    holding integers; ``(1, H, W)`` accepted), ``image`` the frame (see :func:`field_of_view`).
    Returns a :class:`LandmarkResult`.
    """

    def __init__(
        self,
        class_names: Sequence[str] = CLASS_NAMES,
        fov: FieldOfViewCull | bool | None = True,
        ligament: LigamentCull | bool | None = True,
        connect: FragmentConnector | bool | None = True,
        curves: CurveTracer | bool | None = True,
        scale: float | Sequence[float] | None = None,
    ) -> None:
        self.class_names = tuple(str(c) for c in class_names)
        if len(self.class_names) < 2:
            raise ValueError(f"class_names needs the background and at least one landmark, got {self.class_names}")
        self.num_classes = len(self.class_names)
        self.fov: FieldOfViewCull | None = _step(fov, FieldOfViewCull, "fov")
        self.ligament: LigamentCull | None = _step(ligament, LigamentCull, "ligament")
        if self.ligament is not None:
            self.ligament.check_classes(self.class_names)
        self.connect: FragmentConnector | None = _step(connect, FragmentConnector, "connect")
        self.curves: CurveTracer | None = _step(curves, CurveTracer, "curves")
        scale = as_optional(scale, "scale")
        if scale is None:
            self.scale = None
        else:
            s = np.broadcast_to(np.asarray(scale, np.float64), (2,))
            if not (np.isfinite(s).all() and (s > 0).all()):
                raise ValueError(f"scale must be positive, got {scale}")
            self.scale = (float(s[0]), float(s[1]))

    def _to_xy(self, path_rc: np.ndarray) -> np.ndarray:
        xy = path_rc[:, ::-1].astype(np.float64)
        if self.scale is not None:
            xy = (xy + 0.5) * np.asarray(self.scale) - 0.5
        return xy

    def __call__(self, labels: Any, image: Any = None) -> LandmarkResult:
        t_start = time.perf_counter()
        lab = _check_labels(labels, self.num_classes)
        h, w = lab.shape
        timings: dict[str, float] = {}
        fov_mask = None
        if self.fov is not None and image is not None:
            t0 = time.perf_counter()
            lab, fov_mask = self.fov(lab, image)
            timings["fov"] = time.perf_counter() - t0
        if self.ligament is not None:
            t0 = time.perf_counter()
            lab = self.ligament(lab)
            timings["ligament"] = time.perf_counter() - t0
        curves = self.curves
        steps = ["connect"] if self.connect is not None else []
        if curves is not None:
            steps += ["skeleton", "trace"] + (["rdp"] if curves.rdp_epsilon is not None else []) + ["draw"]
        timings.update({s: 0.0 for s in steps})
        masks = np.zeros((self.num_classes - 1, h, w), bool)
        traced: dict[int, list[np.ndarray]] = {}
        pad = (self.connect.thickness if self.connect is not None else 3) + 2
        for k in range(1, self.num_classes):
            full = lab == k
            rows = np.flatnonzero(full.any(axis=1))
            if rows.size == 0:
                continue
            # work inside the class's bounding box, grown by what a bridge can stick out
            cols = np.flatnonzero(full[rows[0]: rows[-1] + 1].any(axis=0))
            y0, y1 = max(int(rows[0]) - pad, 0), min(int(rows[-1]) + pad + 1, h)
            x0, x1 = max(int(cols[0]) - pad, 0), min(int(cols[-1]) + pad + 1, w)
            m = full[y0:y1, x0:x1]
            if self.connect is not None:
                t0 = time.perf_counter()
                m = self.connect(m)
                timings["connect"] += time.perf_counter() - t0
            if curves is None:
                masks[k - 1, y0:y1, x0:x1] = m
                continue
            t0 = time.perf_counter()
            skel = skeletonize(m)
            t1 = time.perf_counter()
            offset = np.array([y0, x0], np.int64)
            traced[k] = [q + offset for q in trace_paths(skel, curves.min_branch, curves.min_length)]
            timings["skeleton"] += t1 - t0
            timings["trace"] += time.perf_counter() - t1
        if curves is not None and curves.rdp_epsilon is not None and traced:
            t0 = time.perf_counter()  # all curves of the frame simplified together
            simple = iter(curves.simplify([q for k in traced for q in traced[k]]))
            traced = {k: [next(simple) for _ in traced[k]] for k in traced}
            timings["rdp"] += time.perf_counter() - t0
        paths: dict[str, list[np.ndarray]] = {name: [] for name in self.class_names[1:]}
        for k, lines in traced.items():
            t0 = time.perf_counter()
            masks[k - 1] = curves.draw(lines, (h, w))
            timings["draw"] += time.perf_counter() - t0
            paths[self.class_names[k]] = [self._to_xy(q) for q in lines]
        out_labels = np.zeros((h, w), np.uint8)
        for k in range(1, self.num_classes):
            out_labels[masks[k - 1]] = k
        timings["total"] = time.perf_counter() - t_start
        return LandmarkResult(masks=masks, labels=out_labels, paths=paths, timings=timings, fov=fov_mask)


# ----------------------------------------------------------------------------------------------
# 9. MONAI transforms
# ----------------------------------------------------------------------------------------------


def _pred_to_labels(pred: Any, num_classes: int) -> tuple[np.ndarray, str]:
    """Prediction -> ``(H, W)`` labels and its layout: ``"hw"``, ``"label"`` (1, H, W) or ``"onehot"``."""
    arr = _to_numpy(pred)
    if arr.ndim == 2:
        return arr, "hw"
    if arr.ndim == 3 and arr.shape[0] == 1:
        return arr[0], "label"
    if arr.ndim == 3 and arr.shape[0] == num_classes:
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError("prediction contains NaN or Inf")
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"a ({num_classes}, H, W) prediction must be one-hot (values 0/1); for probabilities "
                             "or logits apply AsDiscrete(argmax=True) first")
        return arr.argmax(axis=0), "onehot"
    raise ValueError(f"prediction must be (H, W), (1, H, W) class indices or ({num_classes}, H, W) one-hot, "
                     f"got shape {arr.shape}")


def _result_to_pred(res: LandmarkResult, layout: str, like: Any) -> Any:
    if layout == "onehot":
        out = np.concatenate([~res.masks.any(axis=0, keepdims=True), res.masks]).astype(np.float32)
    elif layout == "label":
        out = res.labels[None]
    else:
        out = res.labels
    if isinstance(like, (torch.Tensor, np.ndarray)):
        return convert_to_dst_type(out, like)[0]
    return out


def _image_for_fov(image: Any) -> np.ndarray | None:
    return None if image is None else _to_numpy(image)


class LandmarkPostprocess(Transform):
    """Array transform: a predicted label map -> the post-processed one, same layout and type.

    Accepts ``(1, H, W)`` (or ``(H, W)``) class indices, or a ``(C, H, W)`` one-hot map with ``C`` the
    post-processor's number of classes, as NumPy array or tensor on any device (processed on the
    CPU). Returns the same layout, type, dtype and device (MetaTensors keep their metadata):

    - class indices: :attr:`LandmarkResult.labels` (where landmarks overlap, the higher class wins);
    - one-hot: channel 0 = pixels in no landmark, channel ``k`` = the mask of landmark ``k``; where
      two landmarks overlap a pixel is 1 in both channels (no information is lost).

    Args:
        postprocessor: the :class:`LandmarkPostprocessor` to run; if ``None``, one is built from ``kwargs``.
        kwargs: :class:`LandmarkPostprocessor` arguments.

    Call with ``(img, image=None)``: ``image`` is the frame, for the field-of-view step.
    """

    def __init__(self, postprocessor: LandmarkPostprocessor | None = None, **kwargs: Any) -> None:
        if postprocessor is not None and kwargs:
            raise ValueError("give either a postprocessor or its arguments, not both")
        self.postprocessor = postprocessor if postprocessor is not None else LandmarkPostprocessor(**kwargs)

    def __call__(self, img: Any, image: Any = None) -> Any:
        labels, layout = _pred_to_labels(img, self.postprocessor.num_classes)
        res = self.postprocessor(labels, _image_for_fov(image))
        return _result_to_pred(res, layout, img)


class LandmarkPostprocessd(MapTransform):
    """Dictionary twin of :class:`LandmarkPostprocess`, for a bundle's ``postprocessing``.

    For each key (default ``"pred"``): replaces ``d[key]`` with the post-processed prediction in the
    layout it came in (``(1, H, W)`` class indices or ``(C, H, W)`` one-hot, see
    :class:`LandmarkPostprocess`; same type, dtype and device), and adds

    - ``d[landmarks_key]`` (default ``"<key>_landmarks"``): ``(C - 1, H, W)`` bool tensor of the
      per-landmark masks (on the prediction's device), overlapping curves kept in both;
    - ``d[paths_key]`` (default ``"<key>_paths"``): ``{class_name: [(N, 2) float64 (x, y) arrays]}``.

    Args:
        keys: prediction key(s).
        image_key: key of the frame used for the field of view (``(3, H, W)`` in [0, 1] or [0, 255]);
            ``None`` skips the field-of-view step. A named key missing from the data is an error.
        landmarks_key, paths_key: output keys (only for a single key, or ``None`` for the defaults).
        postprocessor: the :class:`LandmarkPostprocessor`; ``None`` builds one from ``kwargs``.
        allow_missing_keys: skip prediction keys that are absent.
        kwargs: :class:`LandmarkPostprocessor` arguments.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        image_key: str | None = "image",
        landmarks_key: str | None = None,
        paths_key: str | None = None,
        postprocessor: LandmarkPostprocessor | None = None,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) > 1 and (landmarks_key or paths_key):
            raise ValueError("landmarks_key / paths_key can only be set for a single prediction key")
        self.image_key = image_key
        self.landmarks_key = landmarks_key
        self.paths_key = paths_key
        self.op = LandmarkPostprocess(postprocessor, **kwargs)

    @property
    def postprocessor(self) -> LandmarkPostprocessor:
        return self.op.postprocessor

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = None
        if self.image_key is not None:
            if self.image_key not in d:
                raise KeyError(f"LandmarkPostprocessd: no '{self.image_key}' in the data for the field of view; "
                               "pass image_key=None to skip that step")
            image = _image_for_fov(d[self.image_key])
        for key in self.key_iterator(d):
            pred = d[key]
            labels, layout = _pred_to_labels(pred, self.postprocessor.num_classes)
            res = self.postprocessor(labels, image)
            d[key] = _result_to_pred(res, layout, pred)
            device = pred.device if isinstance(pred, torch.Tensor) else None
            d[self.landmarks_key or f"{key}_landmarks"] = torch.as_tensor(res.masks, device=device)
            d[self.paths_key or f"{key}_paths"] = res.paths
        return d
