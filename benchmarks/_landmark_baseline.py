"""Straightforward reference implementation of SLiPPA's landmark post-processing.

The same steps and rules as :mod:`fewlabel.postprocess.landmarks`, written the direct way a first
implementation would take, so the benchmark can time ``fewlabel`` against it and the tests can
check that both give the same curves:

- connected components by a breadth-first search over pixels in Python (8-connectivity for
  landmarks, 4 for background), per-component loops over pixel lists;
- the field of view's erosion stamps a disk around every dark pixel that touches the view;
- the gap between two fragments is the minimum of the full pairwise distance matrix of their
  pixels, for every pair of fragments;
- Zhang & Suen's thinning as the paper states it: two sub-iterations over the foreground pixels,
  each pixel's 8 neighbours read one by one in Python;
- tracing by Dijkstra with a ``heapq`` over pixel neighbours (double sweep), branches recursively;
- Ramer-Douglas-Peucker recursive, distances in a Python loop.

Drawing (``cv2.line`` / ``cv2.polylines``) is the same library call in both. Known differences
that stay within about a pixel: scikit-image's Zhang-Suen look-up table also removes the
"staircase" corner pixels that the textbook rules leave; ties between equally close pixel pairs may
be broken differently; closed loops are opened at their first pixel in raster order (fewlabel: the
pixel above the enclosed hole).
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque

import cv2
import numpy as np

from fewlabel.postprocess import CLASS_NAMES, LandmarkResult

__all__ = [
    "label_components",
    "field_of_view",
    "remove_stray_ligament",
    "connect_fragments",
    "skeletonize",
    "trace_paths",
    "rdp",
    "draw_paths",
    "postprocess",
]

N8 = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
N4 = ((-1, 0), (0, -1), (0, 1), (1, 0))


def label_components(mask: np.ndarray, neighbours=N8) -> list[list[tuple[int, int]]]:
    """Connected components of a bool mask by BFS; each a list of ``(row, col)`` in visiting order,
    components in raster order of their first pixel."""
    h, w = mask.shape
    seen = np.zeros((h, w), bool)
    comps = []
    for r in range(h):
        for c in range(w):
            if not mask[r, c] or seen[r, c]:
                continue
            seen[r, c] = True
            queue = deque([(r, c)])
            pixels = []
            while queue:
                y, x = queue.popleft()
                pixels.append((y, x))
                for dy, dx in neighbours:
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
            comps.append(pixels)
    return comps


# -- 1. field of view ---------------------------------------------------------------------------


def field_of_view(image: np.ndarray, threshold: float = 0.1, margin: int = 2, min_fraction: float = 0.01) -> np.ndarray:
    """``(H, W, 3)`` uint8 or float [0, 1] image -> bool field of view (largest bright component,
    holes filled, eroded by a disk of radius ``margin``); all True when nothing usable is bright."""
    img = np.asarray(image)
    v = img.max(axis=-1).astype(np.float64)
    if img.dtype == np.uint8:
        v /= 255.0
    h, w = v.shape
    bright = v > threshold
    comps = label_components(bright)
    if not comps:
        return np.ones((h, w), bool)
    biggest = max(comps, key=len)
    fov = np.zeros((h, w), bool)
    for r, c in biggest:
        fov[r, c] = True
    # holes: background pixels a 4-connected flood from the border does not reach
    outside = np.zeros((h, w), bool)
    queue = deque()
    for r in range(h):
        for c in (0, w - 1):
            if not fov[r, c] and not outside[r, c]:
                outside[r, c] = True
                queue.append((r, c))
    for c in range(w):
        for r in (0, h - 1):
            if not fov[r, c] and not outside[r, c]:
                outside[r, c] = True
                queue.append((r, c))
    while queue:
        y, x = queue.popleft()
        for dy, dx in N4:
            ny, nx = y + dy, x + dx
            if 0 <= ny < h and 0 <= nx < w and not fov[ny, nx] and not outside[ny, nx]:
                outside[ny, nx] = True
                queue.append((ny, nx))
    fov = ~outside
    if margin > 0:
        disk = [(dy, dx) for dy in range(-margin, margin + 1) for dx in range(-margin, margin + 1)
                if dy * dy + dx * dx <= margin * margin]
        eroded = fov.copy()
        for r in range(h):
            for c in range(w):
                if fov[r, c]:
                    continue
                if not any(0 <= r + dy < h and 0 <= c + dx < w and fov[r + dy, c + dx] for dy, dx in N8):
                    continue  # dark pixel that touches no view pixel
                for dy, dx in disk:
                    ny, nx = r + dy, c + dx
                    if 0 <= ny < h and 0 <= nx < w:
                        eroded[ny, nx] = False
        fov = eroded
    if fov.sum() < min_fraction * h * w:
        return np.ones((h, w), bool)
    return fov


# -- 2. stray ligament --------------------------------------------------------------------------


def remove_stray_ligament(labels: np.ndarray, ligament: int = 3, others=(1, 2), margin: int = 0) -> np.ndarray:
    lab = np.array(labels, np.uint8)
    h, w = lab.shape
    top, bottom = None, None
    for r in range(h):
        for c in range(w):
            if lab[r, c] in others:
                top = r if top is None else top
                bottom = r
    if top is None:
        return lab
    for comp in label_components(lab == ligament):
        rows = [r for r, _ in comp]
        if max(rows) < top - margin or min(rows) > bottom + margin:
            for r, c in comp:
                lab[r, c] = 0
    return lab


# -- 3. joining fragments -----------------------------------------------------------------------


def connect_fragments(binary: np.ndarray, max_gap: float = 12.0, thickness: int = 3) -> np.ndarray:
    m = np.asarray(binary, bool)
    comps = label_components(m)
    out = m.astype(np.uint8)
    if len(comps) < 2 or max_gap <= 0:
        return out.astype(bool)
    arrays = [np.array(sorted(cp), np.float64) for cp in comps]  # raster order inside each fragment
    edges = []
    for i in range(len(comps)):
        for j in range(i + 1, len(comps)):
            a, b = arrays[i], arrays[j]
            d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))  # full pairwise matrix
            k = int(np.argmin(d))
            ia, ib = divmod(k, len(b))
            if d[ia, ib] <= max_gap:
                edges.append((float(d[ia, ib]), i, j, a[ia].astype(int), b[ib].astype(int)))
    parent = list(range(len(comps)))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for _, i, j, p, q in sorted(edges, key=lambda e: (e[0], e[1], e[2])):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
            cv2.line(out, (int(p[1]), int(p[0])), (int(q[1]), int(q[0])), 1, int(thickness), cv2.LINE_8)
    return out.astype(bool)


# -- 4. Zhang-Suen ------------------------------------------------------------------------------


def skeletonize(binary: np.ndarray) -> np.ndarray:
    """Zhang & Suen (1984), the textbook rules, in pure Python."""
    h, w = binary.shape
    img = np.zeros((h + 2, w + 2), np.uint8)
    img[1:-1, 1:-1] = np.asarray(binary, bool)
    pixels = [(r, c) for r in range(1, h + 1) for c in range(1, w + 1) if img[r, c]]
    changed = True
    while changed:
        changed = False
        for step in (0, 1):
            delete = []
            for r, c in pixels:
                # P2 .. P9: N, NE, E, SE, S, SW, W, NW
                p = (img[r - 1, c], img[r - 1, c + 1], img[r, c + 1], img[r + 1, c + 1],
                     img[r + 1, c], img[r + 1, c - 1], img[r, c - 1], img[r - 1, c - 1])
                b = sum(p)
                if b < 2 or b > 6:
                    continue
                a = sum(1 for k in range(8) if p[k] == 0 and p[(k + 1) % 8] == 1)
                if a != 1:
                    continue
                if step == 0 and (p[0] * p[2] * p[4] or p[2] * p[4] * p[6]):
                    continue
                if step == 1 and (p[0] * p[2] * p[6] or p[0] * p[4] * p[6]):
                    continue
                delete.append((r, c))
            for r, c in delete:
                img[r, c] = 0
            if delete:
                changed = True
                gone = set(delete)
                pixels = [px for px in pixels if px not in gone]
    return img[1:-1, 1:-1].astype(bool)


# -- 5. tracing ---------------------------------------------------------------------------------


def _dijkstra(start, nodes: set) -> tuple[dict, dict]:
    dist = {start: 0.0}
    pred = {start: None}
    heap = [(0.0, start)]
    while heap:
        d, u = heapq.heappop(heap)
        if d > dist[u]:
            continue
        for dy, dx in N8:
            v = (u[0] + dy, u[1] + dx)
            if v in nodes:
                nd = d + (math.sqrt(2.0) if dy and dx else 1.0)
                if nd < dist.get(v, math.inf):
                    dist[v] = nd
                    pred[v] = u
                    heapq.heappush(heap, (nd, v))
    return dist, pred


def _longest(nodes: set) -> list:
    start = min(nodes)
    dist, _ = _dijkstra(start, nodes)
    a = min(nodes, key=lambda p: (-dist[p], p))
    dist, pred = _dijkstra(a, nodes)
    b = min(nodes, key=lambda p: (-dist[p], p))
    chain = [b]
    while chain[-1] != a:
        chain.append(pred[chain[-1]])
    return chain[::-1]


def _branches(rest: set, used: set, min_branch: int, out: list) -> None:
    """Recursively trace the leftover groups of at least ``min_branch`` pixels."""
    if len(rest) < min_branch:
        return
    mask_pixels = sorted(rest)
    groups, seen = [], set()
    for p in mask_pixels:
        if p in seen:
            continue
        seen.add(p)
        queue, group = deque([p]), []
        while queue:
            u = queue.popleft()
            group.append(u)
            for dy, dx in N8:
                v = (u[0] + dy, u[1] + dx)
                if v in rest and v not in seen:
                    seen.add(v)
                    queue.append(v)
        groups.append(set(group))
    for g in groups:
        if len(g) < min_branch:
            continue
        path = _longest(g)

        def joint(p):
            for dy, dx in N4 + tuple(d for d in N8 if d[0] and d[1]):  # 4-neighbours first
                q = (p[0] + dy, p[1] + dx)
                if q in used:
                    return q
            return None

        j0, j1 = joint(path[0]), joint(path[-1])
        if j0 is None and j1 is not None:
            path, j0 = path[::-1], j1
        used.update(path)
        out.append(([j0] if j0 is not None else []) + path)
        _branches(g - set(path), used, min_branch, out)


def trace_paths(skeleton: np.ndarray, min_branch: int | None = 10, min_length: int = 1) -> list[np.ndarray]:
    mains, branches = [], []
    for comp in label_components(np.asarray(skeleton, bool)):
        nodes = set(comp)
        degree = {p: sum((p[0] + dy, p[1] + dx) in nodes for dy, dx in N8) for p in nodes}
        cut = None
        if len(nodes) > 2 and all(d >= 2 for d in degree.values()):  # a closed loop: open it
            cut = min(nodes)
            nodes = nodes - {cut}
        path = _longest(nodes)
        if path[-1] < path[0]:
            path = path[::-1]
        if cut is not None:
            if max(abs(path[-1][0] - cut[0]), abs(path[-1][1] - cut[1])) == 1:
                path = path + [cut]
            elif max(abs(path[0][0] - cut[0]), abs(path[0][1] - cut[1])) == 1:
                path = [cut] + path
        if len(path) >= min_length:
            mains.append(path)
        if min_branch is not None:
            _branches(nodes - set(path), set(path), min_branch, branches)
    mains.sort(key=len, reverse=True)
    return [np.array(p, np.int64).reshape(-1, 2) for p in mains + branches]


# -- 6. RDP -------------------------------------------------------------------------------------


def _seg_dist(p, a, b) -> float:
    abx, aby = b[0] - a[0], b[1] - a[1]
    apx, apy = p[0] - a[0], p[1] - a[1]
    len2 = abx * abx + aby * aby
    if len2 == 0:
        return math.hypot(apx, apy)
    t = (apx * abx + apy * aby) / len2
    if t < 0:
        return math.hypot(apx, apy)
    if t > 1:
        return math.hypot(p[0] - b[0], p[1] - b[1])
    return abs(apx * aby - apy * abx) / math.sqrt(len2)


def rdp(points, epsilon: float) -> np.ndarray:
    """Recursive Ramer-Douglas-Peucker (distances to the segment, as fewlabel)."""
    pts = [tuple(map(float, p)) for p in np.asarray(points)]

    def rec(s: int, e: int) -> list[int]:
        best, idx = -1.0, -1
        for i in range(s + 1, e):
            d = _seg_dist(pts[i], pts[s], pts[e])
            if d > best:
                best, idx = d, i
        if idx < 0 or best <= epsilon:
            return [s, e]
        return rec(s, idx)[:-1] + rec(idx, e)

    if len(pts) <= 2:
        return np.asarray(points).copy()
    return np.asarray(points)[rec(0, len(pts) - 1)]


# -- 7. drawing ---------------------------------------------------------------------------------


def draw_paths(paths, shape, thickness: int = 1) -> np.ndarray:
    out = np.zeros(tuple(shape), np.uint8)
    for p in paths:
        xy = np.round(np.asarray(p, np.float64)[:, ::-1]).astype(np.int32)
        if len(xy) == 1:
            cv2.circle(out, (int(xy[0, 0]), int(xy[0, 1])), int(thickness) // 2, 1, -1)
        elif len(xy) > 1:
            cv2.polylines(out, [xy.reshape(-1, 1, 2)], False, 1, int(thickness), cv2.LINE_8)
    return out.astype(bool)


# -- the pipeline -------------------------------------------------------------------------------


def postprocess(labels: np.ndarray, image: np.ndarray | None = None, class_names=CLASS_NAMES, fov: bool = True,
                fov_threshold: float = 0.1, fov_margin: int = 2, ligament: bool = True, ligament_class: int = 3,
                reference_classes=(1, 2), ligament_margin: int = 0, connect: bool = True, max_gap: float = 12.0,
                connect_thickness: int = 3, skeleton: bool = True, min_branch: int | None = 10, min_length: int = 1,
                rdp_epsilon: float | None = 1.0, thickness: int = 3) -> LandmarkResult:
    """The baseline pipeline, same arguments and result as ``fewlabel.postprocess.LandmarkPostprocessor``."""
    t_start = time.perf_counter()
    lab = np.array(labels, np.uint8)
    h, w = lab.shape
    timings: dict[str, float] = {}
    fov_mask = None
    if fov and image is not None:
        t0 = time.perf_counter()
        fov_mask = field_of_view(image, fov_threshold, fov_margin)
        lab[~fov_mask] = 0
        timings["fov"] = time.perf_counter() - t0
    if ligament:
        t0 = time.perf_counter()
        lab = remove_stray_ligament(lab, ligament_class, reference_classes, ligament_margin)
        timings["ligament"] = time.perf_counter() - t0
    steps = (["connect"] if connect else []) + (
        ["skeleton", "trace"] + (["rdp"] if rdp_epsilon is not None else []) + ["draw"] if skeleton else [])
    timings.update({s: 0.0 for s in steps})
    masks = np.zeros((len(class_names) - 1, h, w), bool)
    paths: dict[str, list[np.ndarray]] = {}
    for k in range(1, len(class_names)):
        m = lab == k
        paths[class_names[k]] = []
        if not m.any():
            continue
        if connect:
            t0 = time.perf_counter()
            m = connect_fragments(m, max_gap, connect_thickness)
            timings["connect"] += time.perf_counter() - t0
        if not skeleton:
            masks[k - 1] = m
            continue
        t0 = time.perf_counter()
        skel = skeletonize(m)
        t1 = time.perf_counter()
        traced = trace_paths(skel, min_branch, min_length)
        t2 = time.perf_counter()
        timings["skeleton"] += t1 - t0
        timings["trace"] += t2 - t1
        if rdp_epsilon is not None:
            traced = [rdp(p, rdp_epsilon) for p in traced]
            timings["rdp"] += time.perf_counter() - t2
        t3 = time.perf_counter()
        masks[k - 1] = draw_paths(traced, (h, w), thickness)
        timings["draw"] += time.perf_counter() - t3
        paths[class_names[k]] = [p[:, ::-1].astype(np.float64) for p in traced]
    out = np.zeros((h, w), np.uint8)
    for k in range(1, len(class_names)):
        out[masks[k - 1]] = k
    timings["total"] = time.perf_counter() - t_start
    return LandmarkResult(masks=masks, labels=out, paths=paths, timings=timings, fov=fov_mask)
