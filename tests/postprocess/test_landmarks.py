"""SLiPPA landmark post-processing: each step on hand-made masks, the pipeline, the MONAI transforms,
and agreement with the straightforward baseline of ``benchmarks/_landmark_baseline.py``."""

from __future__ import annotations

import logging
import sys

import cv2
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from fewlabel.postprocess import (
    CurveTracer,
    FragmentConnector,
    LandmarkPostprocess,
    LandmarkPostprocessd,
    LandmarkPostprocessor,
    LandmarkResult,
    connect_fragments,
    draw_paths,
    field_of_view,
    rdp,
    remove_outside_fov,
    remove_stray_ligament,
    sample_points,
    skeletonize,
    trace_paths,
)

from testlib import REPO  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
import _landmark_baseline as baseline  # noqa: E402

EIGHT = np.ones((3, 3), bool)


def n_components(mask: np.ndarray) -> int:
    return ndi.label(mask, structure=EIGHT)[1]


def polyline(shape, points_xy, thickness, value=1, dtype=np.uint8) -> np.ndarray:
    out = np.zeros(shape, dtype)
    cv2.polylines(out, [np.asarray(points_xy, np.int32).reshape(-1, 1, 2)], False, value, thickness)
    return out


def distances(a_points: np.ndarray, b_points: np.ndarray) -> np.ndarray:
    """Distance of each point of ``a`` to the nearest point of ``b``."""
    return cKDTree(np.asarray(b_points, float)).query(np.asarray(a_points, float))[0]


def dist_to_polyline(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Distance of each point to a polyline (min over its segments)."""
    p = points[:, None, :].astype(float)
    a, b = poly[:-1][None].astype(float), poly[1:][None].astype(float)
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1).min(axis=1)


def disk_image(h=120, w=160, r=50, dtype=np.uint8):
    yy, xx = np.mgrid[0:h, 0:w]
    disk = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= r * r
    img = np.zeros((h, w, 3), np.uint8)
    img[disk] = (190, 90, 80)
    return img, disk


# ---------------------------------------------------------------------------------------------
# field of view
# ---------------------------------------------------------------------------------------------


def test_fov_of_a_bright_disk_is_the_disk_and_other_layouts_agree():
    img, disk = disk_image()
    fov = field_of_view(img, margin=0)
    iou = (fov & disk).sum() / (fov | disk).sum()
    assert iou > 0.98
    # the same frame as float [0, 1], channel-first, float [0, 255] and a tensor gives the same map
    for other in (img / 255.0, np.moveaxis(img, -1, 0), img.astype(np.float32),
                  torch.from_numpy(np.moveaxis(img, -1, 0).copy())):
        assert np.array_equal(field_of_view(other, margin=0), fov)


def test_fov_margin_erodes_the_rim_and_fills_dark_tissue_inside():
    img, disk = disk_image()
    img[55:65, 75:85] = 0  # a dark instrument tip inside the view stays in it
    fov0 = field_of_view(img, margin=0)
    assert fov0[55:65, 75:85].all()
    fov3 = field_of_view(img, margin=3)
    yy, xx = np.mgrid[0:120, 0:160]
    r = np.hypot(yy - 60, xx - 80)
    assert fov3[r <= 46].all() and not fov3[r > 48].any()
    assert fov3.sum() < fov0.sum()


def test_fov_all_bright_and_all_dark_frames_keep_everything(caplog):
    bright = np.full((40, 50, 3), 200, np.uint8)
    assert field_of_view(bright, margin=3).all()  # the image border is not a dark rim
    with caplog.at_level(logging.WARNING, logger="fewlabel.postprocess"):
        dark = field_of_view(np.zeros((40, 50, 3), np.uint8))
    assert dark.all()
    assert any("dark" in r.getMessage() for r in caplog.records)


def test_fov_bad_images_raise():
    img, _ = disk_image()
    bad = img / 255.0
    bad[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        field_of_view(bad)
    with pytest.raises(ValueError, match="negative"):
        field_of_view(img / 255.0 - 0.5)
    with pytest.raises(ValueError, match="shape"):
        field_of_view(np.zeros((5, 6, 7, 3)))


def test_remove_outside_fov_zeroes_only_outside():
    img, disk = disk_image()
    labels = np.zeros(disk.shape, np.uint8)
    labels[2:5, 2:5] = 1  # corner: outside
    labels[58:62, 70:90] = 2  # centre: inside
    out = remove_outside_fov(labels, field_of_view(img))
    assert out.dtype == labels.dtype
    assert not out[2:5, 2:5].any() and (out[58:62, 70:90] == 2).all()
    with pytest.raises(ValueError, match="share"):
        remove_outside_fov(labels, disk[:-1])


# ---------------------------------------------------------------------------------------------
# stray ligament
# ---------------------------------------------------------------------------------------------


def _landmark_scene() -> np.ndarray:
    lab = np.zeros((100, 120), np.uint8)
    lab[40:43, 10:110] = 1  # silhouette
    lab[60:63, 20:100] = 2  # ridge
    return lab


def test_ligament_above_and_below_both_is_removed_between_is_kept():
    lab = _landmark_scene()
    lab[10:20, 50:53] = 3  # above both: stray
    lab[45:58, 60:63] = 3  # between: kept
    lab[80:90, 30:33] = 3  # below both: stray
    out = remove_stray_ligament(lab)
    assert not (out[10:20, 50:53] == 3).any() and not (out[80:90, 30:33] == 3).any()
    assert (out[45:58, 60:63] == 3).all()
    assert np.array_equal(out[(lab == 1) | (lab == 2)], lab[(lab == 1) | (lab == 2)])
    assert not (lab == out).all() and (lab[10:20, 50:53] == 3).all()  # input untouched


def test_ligament_reaching_into_the_band_or_within_margin_is_kept():
    lab = _landmark_scene()
    lab[20:45, 5:8] = 3  # starts above, reaches the silhouette's rows: kept whole
    lab[33:38, 100:103] = 3  # 2 rows above the silhouette
    out = remove_stray_ligament(lab, margin=0)
    assert (out[20:45, 5:8] == 3).all()
    assert not (out[33:38, 100:103] == 3).any()
    assert (remove_stray_ligament(lab, margin=3)[33:38, 100:103] == 3).all()


def test_ligament_alone_is_kept_and_empty_is_empty():
    lab = np.zeros((30, 30), np.uint8)
    assert not remove_stray_ligament(lab).any()
    lab[2:6, 2:6] = 3
    assert np.array_equal(remove_stray_ligament(lab), lab)


# ---------------------------------------------------------------------------------------------
# joining fragments
# ---------------------------------------------------------------------------------------------


def test_broken_curve_with_a_6px_gap_is_joined_and_a_wider_gap_is_not():
    m = np.zeros((40, 100), bool)
    m[18:21, 10:40] = True
    m[18:21, 46:80] = True  # columns 40..45 empty: a 6 px gap
    assert n_components(m) == 2
    joined = connect_fragments(m, max_gap=10)
    assert n_components(joined) == 1
    assert joined[m].all()  # nothing removed
    added = joined & ~m
    assert added[:, 40:46].all(axis=1).any()  # a bridge across the gap ...
    assert not added[:, :38].any() and not added[:, 48:].any()  # ... and nothing beyond its round ends
    assert n_components(connect_fragments(m, max_gap=6)) == 2  # closest centres are 7 px apart
    wide = np.zeros((40, 100), bool)
    wide[18:21, 10:40] = True
    wide[18:21, 60:80] = True  # 20 px gap
    assert np.array_equal(connect_fragments(wide, max_gap=10), wide)


def test_connect_joins_chains_without_redundant_links():
    m = np.zeros((60, 60), bool)
    for r, c in ((10, 10), (10, 20), (20, 15)):  # three dots, each pair within max_gap
        m[r - 1: r + 2, c - 1: c + 2] = True
    joined = connect_fragments(m, max_gap=15, thickness=1)
    assert n_components(joined) == 1
    # a minimum spanning forest: two links, no triangle (no enclosed hole)
    assert not (ndi.binary_fill_holes(joined) & ~joined).any()


def test_connect_handles_empty_and_single_masks():
    assert not connect_fragments(np.zeros((10, 10), bool)).any()
    one = np.zeros((10, 10), bool)
    one[3:6, 3:6] = True
    assert np.array_equal(connect_fragments(one), one)
    with pytest.raises(ValueError):
        connect_fragments(np.zeros((2, 3, 4), bool))


# ---------------------------------------------------------------------------------------------
# skeleton
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("thickness", [3, 7, 11])
def test_thick_curve_becomes_a_one_pixel_wide_connected_curve(thickness):
    m = polyline((80, 120), [[10, 60], [40, 20], [80, 30], [110, 65]], thickness).astype(bool)
    sk = skeletonize(m)
    assert sk.any() and not (sk & ~m).any()
    assert n_components(sk) == 1
    block = sk[:-1, :-1] & sk[1:, :-1] & sk[:-1, 1:] & sk[1:, 1:]
    assert not block.any()  # no full 2x2 block: one pixel wide
    assert sk.sum() < m.sum() / (thickness - 1)


def test_skeleton_of_a_bar_is_its_centre_line_and_of_a_blob_a_small_curve():
    bar = np.zeros((30, 60), bool)
    bar[10:19, 5:55] = True
    sk = skeletonize(bar)
    rows = np.nonzero(sk)[0]
    assert np.median(rows) == 14 and n_components(sk) == 1
    yy, xx = np.mgrid[0:40, 0:40]
    blob = np.hypot(yy - 20, xx - 20) <= 12
    sk = skeletonize(blob)
    assert n_components(sk) == 1 and 0 < sk.sum() <= 10
    assert not skeletonize(np.zeros((5, 5), bool)).any()


# ---------------------------------------------------------------------------------------------
# tracing
# ---------------------------------------------------------------------------------------------


def _s_curve() -> np.ndarray:
    x = np.arange(10, 150)
    y = 40 + 25 * np.sin((x - 10) / 140 * 2 * np.pi)
    return skeletonize(polyline((80, 160), np.stack([x, y], 1), 5).astype(bool))


def test_trace_orders_an_s_curve_from_end_to_end():
    sk = _s_curve()
    paths = trace_paths(sk)
    assert len(paths) == 1
    p = paths[0]
    steps = np.abs(np.diff(p, axis=0)).max(axis=1)
    assert (steps == 1).all()  # consecutive points 8-adjacent, no repeats
    assert len(np.unique(p, axis=0)) == len(p) == sk.sum()  # every pixel once
    # the two ends are the curve's ends (pixels with one neighbour), the raster-first one first
    nb = ndi.convolve(sk.astype(int), EIGHT.astype(int), mode="constant") - 1
    ends = sorted(map(tuple, np.argwhere(sk & (nb == 1))))
    assert len(ends) == 2
    assert tuple(p[0]) == ends[0] and tuple(p[-1]) == ends[1]
    assert sorted([p[0, 1], p[-1, 1]])[0] < 20 and sorted([p[0, 1], p[-1, 1]])[1] > 140
    assert (p[:, 1] == np.sort(p[:, 1])[:: 1 if p[0, 1] < p[-1, 1] else -1]).all()  # monotone along x


def test_trace_keeps_long_branches_attached_and_prunes_spurs():
    sk = np.zeros((60, 100), bool)
    sk[30, 5:95] = True  # main curve
    sk[31:50, 50] = True  # a 19 px branch
    sk[25:30, 20] = True  # a 5 px spur
    paths = trace_paths(sk, min_branch=10)
    assert len(paths) == 2
    main, branch = paths
    assert len(main) == 90 and (main[:, 0] == 30).all()
    assert tuple(branch[0]) == (30, 50) and tuple(branch[-1]) == (49, 50)  # starts at the junction
    assert len(trace_paths(sk, min_branch=None)) == 1
    assert len(trace_paths(sk, min_branch=3)) == 3


def test_trace_opens_a_closed_loop_at_one_pixel():
    ring = np.zeros((50, 50), np.uint8)
    cv2.circle(ring, (25, 25), 15, 1, 1)
    sk = skeletonize(ring.astype(bool))
    paths = trace_paths(sk)
    assert len(paths) == 1
    p = paths[0]
    assert len(p) == sk.sum()
    assert (np.abs(np.diff(p, axis=0)).max(axis=1) == 1).all()
    assert np.abs(p[0] - p[-1]).max() == 1  # the ends meet where the loop was opened


def test_trace_empty_and_single_pixel():
    assert trace_paths(np.zeros((10, 10), bool)) == []
    one = np.zeros((10, 10), bool)
    one[4, 5] = True
    (p,) = trace_paths(one)
    assert p.tolist() == [[4, 5]]
    assert trace_paths(one, min_length=2) == []


# ---------------------------------------------------------------------------------------------
# RDP
# ---------------------------------------------------------------------------------------------


def _random_walk(n=400, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(0, 1, (n, 2)), axis=0)


def test_rdp_keeps_endpoints_and_removes_collinear_points():
    line = np.stack([np.arange(50), 2 * np.arange(50) + 3], axis=1)
    out = rdp(line, 0.0)
    assert out.tolist() == [line[0].tolist(), line[-1].tolist()]
    assert out.dtype == line.dtype
    corner = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [3, 1], [3, 2], [3, 3]])
    assert rdp(corner, 0.0).tolist() == [[0, 0], [3, 0], [3, 3]]


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 3.0, 10.0])
def test_rdp_every_removed_point_is_within_epsilon(epsilon):
    pts = _random_walk()
    out, idx = rdp(pts, epsilon, return_indices=True)
    assert idx[0] == 0 and idx[-1] == len(pts) - 1 and np.array_equal(out, pts[idx])
    assert dist_to_polyline(pts, out).max() <= epsilon + 1e-9
    # a hairpin: points beyond the segment's end are still covered
    hairpin = np.array([[0, 0], [10, 0], [20, 0], [30, 0], [25, 0.2], [15, 0.2]], float)
    assert dist_to_polyline(hairpin, rdp(hairpin, epsilon)).max() <= epsilon + 1e-9


def test_rdp_larger_epsilon_never_keeps_more_points():
    pts = _random_walk(seed=1)
    kept = [set(rdp(pts, e, return_indices=True)[1].tolist()) for e in (0.1, 0.5, 1, 2, 4, 8, 16)]
    for small, large in zip(kept, kept[1:]):
        assert large <= small


def test_rdp_long_contour_does_not_recurse_and_bad_input_raises():
    pts = _random_walk(n=50_000, seed=2)
    out = rdp(pts, 2.0)
    assert 2 < len(out) < len(pts)
    assert rdp(pts[:2], 1.0).shape == (2, 2) and rdp(np.zeros((0, 2)), 1.0).shape == (0, 2)
    with pytest.raises(ValueError):
        rdp(pts, -1)
    with pytest.raises(ValueError):
        rdp(np.zeros((5, 3)), 1)
    with pytest.raises(ValueError):
        rdp(np.array([[0, 0], [np.nan, 1], [2, 2]]), 1)


# ---------------------------------------------------------------------------------------------
# drawing and sampling
# ---------------------------------------------------------------------------------------------


def test_draw_paths_orders_and_thickness():
    rc = [np.array([[10, 5], [10, 25]])]
    thin = draw_paths(rc, (20, 30), thickness=1)
    assert thin.sum() == 21 and thin[10, 5:26].all()
    assert np.array_equal(draw_paths([rc[0][:, ::-1]], (20, 30), 1, order="xy"), thin)
    thick = draw_paths(rc, (20, 30), thickness=5)
    assert thick[8:13, 10].all() and not thick[5, 10] and not thick[15, 10]
    assert draw_paths([np.array([[3, 3]])], (8, 8), 3).sum() > 1  # a single point is a dot
    assert not draw_paths([], (8, 8), 3).any()


def test_sample_points_even_arc_length_with_ends():
    path = np.array([[0, 0], [0, 10], [10, 10]], float)  # length 20
    pts = sample_points(path, num_points=5)
    assert np.allclose(pts, [[0, 0], [0, 5], [0, 10], [5, 10], [10, 10]])
    pts = sample_points(path, spacing=3)  # ceil(20 / 3) + 1 = 8 samples, spacing 20 / 7
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    assert len(pts) == 8 and np.allclose(pts[[0, -1]], path[[0, -1]]) and seg.max() <= 3
    assert np.allclose(sample_points(np.array([[1, 2], [1, 2]]), num_points=3), [[1, 2]] * 3)
    assert sample_points(np.zeros((0, 2)), spacing=1).shape == (0, 2)
    with pytest.raises(ValueError):
        sample_points(path, spacing=1, num_points=3)


# ---------------------------------------------------------------------------------------------
# pipeline
# ---------------------------------------------------------------------------------------------


def _frame():
    """A 120x160 frame: circular view, a silhouette arc with a gap, a ridge crossing it, a ligament
    between them, a stray ligament blob above, a speck outside the view."""
    img, disk = disk_image(r=75)
    lab = np.zeros(disk.shape, np.uint8)
    lab |= polyline(disk.shape, [[20, 80], [50, 45], [78, 38]], 5, 1)
    lab |= polyline(disk.shape, [[86, 38], [110, 45], [140, 80]], 5, 1)  # gap of ~6 px at the top
    ridge = polyline(disk.shape, [[30, 60], [80, 75], [130, 60]], 4, 1).astype(bool)
    lab[ridge] = 2  # crosses the silhouette near both ends (ridge wins in the label map)
    lab[polyline(disk.shape, [[95, 50], [98, 66]], 3, 1).astype(bool)] = 3
    cv2.circle(lab, (60, 12), 3, 3, -1)  # stray ligament above everything
    lab[1:4, 1:4] = 1  # speck in the dark corner
    return lab, img


def test_pipeline_culls_joins_and_keeps_classes_separate():
    lab, img = _frame()
    pp = LandmarkPostprocessor(curves=CurveTracer(thickness=3))
    res = pp(lab, img)
    assert isinstance(res, LandmarkResult)
    assert res.masks.shape == (3, *lab.shape) and res.masks.dtype == bool
    assert res.labels.shape == lab.shape and res.labels.dtype == np.uint8
    sil, ridge, lig = res.masks
    assert not sil[:6, :6].any()  # outside the field of view
    assert not lig[5:20, 50:70].any() and lig[52:64, 93:101].any()  # stray blob culled, real one kept
    assert len(res.paths["silhouette"]) == 1 and n_components(sil) == 1  # the gap is joined
    overlap = sil & ridge
    assert overlap.any()  # crossing curves stay in both masks
    assert (res.labels[overlap] == 2).all()  # the label map: higher class wins
    assert set(res.timings) >= {"fov", "ligament", "connect", "skeleton", "trace", "rdp", "draw", "total"}
    assert all(v >= 0 for v in res.timings.values())


def test_pipeline_paths_are_xy_and_scale_to_the_original_frame():
    lab = np.zeros((64, 96), np.uint8)
    lab[29:32, 10:81] = 1  # a horizontal silhouette on row 30, columns 10..80
    res = LandmarkPostprocessor(fov=False, curves=CurveTracer(rdp_epsilon=None))(lab)
    (path,) = res.paths["silhouette"]
    assert path.dtype == np.float64 and path.shape[1] == 2
    assert np.abs(path[:, 1] - 30).max() <= 1 and np.median(path[:, 1]) == 30  # y = row
    assert path[:, 0].min() <= 12 and path[:, 0].max() >= 78  # x = column
    assert res.paths["ridge"] == [] and res.paths["ligament"] == []
    sx, sy = 1920 / 96, 1080 / 64
    scaled_post = LandmarkPostprocessor(fov=False, curves=CurveTracer(rdp_epsilon=None), scale=(sx, sy))
    scaled = scaled_post(lab).paths["silhouette"][0]
    assert np.allclose(scaled, (path + 0.5) * [sx, sy] - 0.5)


def test_pipeline_empty_input_gives_empty_output():
    img, _ = disk_image()
    for image in (img, None):
        res = LandmarkPostprocessor()(np.zeros((120, 160), np.uint8), image)
        assert not res.masks.any() and not res.labels.any()
        assert res.paths == {"silhouette": [], "ridge": [], "ligament": []}


def test_pipeline_steps_switch_off():
    lab, img = _frame()
    raw = LandmarkPostprocessor(fov=False, ligament=False, connect=False, curves=False)(lab, img)
    assert np.array_equal(raw.masks, np.stack([lab == k for k in (1, 2, 3)]))
    assert all(v == [] for v in raw.paths.values())
    assert set(raw.timings) == {"total"}
    no_rdp = LandmarkPostprocessor(curves=CurveTracer(rdp_epsilon=None, thickness=1))(lab, img)
    for paths in no_rdp.paths.values():
        for p in paths:
            assert np.abs(np.diff(p, axis=0)).max() == 1  # the traced chain, not simplified
    with_rdp = LandmarkPostprocessor(curves=CurveTracer(rdp_epsilon=1.0))(lab, img)
    assert len(with_rdp.paths["silhouette"][0]) < len(no_rdp.paths["silhouette"][0])
    for name, paths in no_rdp.paths.items():  # the frame's curves, simplified together, as one by one
        assert len(paths) == len(with_rdp.paths[name])
        for raw, simple in zip(paths, with_rdp.paths[name]):
            assert np.array_equal(rdp(raw, 1.0), simple)


def test_pipeline_bad_input_raises():
    pp = LandmarkPostprocessor()
    with pytest.raises(ValueError, match="shape"):
        pp(np.zeros((2, 3, 10, 10), np.uint8))
    with pytest.raises(ValueError, match="out of range"):
        pp(np.full((10, 10), 4, np.uint8))
    with pytest.raises(ValueError, match="out of range"):
        pp(np.full((10, 10), -1, np.int64))
    with pytest.raises(ValueError, match="integer"):
        pp(np.full((10, 10), 0.5))
    img, _ = disk_image()
    img = img / 255.0
    img[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pp(np.zeros((120, 160), np.uint8), img)


# ---------------------------------------------------------------------------------------------
# MONAI transforms
# ---------------------------------------------------------------------------------------------


def test_dict_transform_round_trips_a_label_tensor():
    lab, img = _frame()
    pred = MetaTensor(torch.from_numpy(lab[None].astype(np.float32)), meta={"filename_or_obj": "frame.png"})
    image = torch.from_numpy(np.moveaxis(img, -1, 0) / 255.0).float()
    out = LandmarkPostprocessd(keys="pred", image_key="image")({"pred": pred, "image": image})
    expected = LandmarkPostprocessor()(lab, img)
    assert isinstance(out["pred"], MetaTensor) and out["pred"].meta["filename_or_obj"] == "frame.png"
    assert out["pred"].shape == (1, *lab.shape) and out["pred"].dtype == torch.float32
    assert np.array_equal(out["pred"][0].numpy(), expected.labels)
    assert out["pred_landmarks"].dtype == torch.bool and np.array_equal(out["pred_landmarks"].numpy(), expected.masks)
    assert set(out["pred_paths"]) == {"silhouette", "ridge", "ligament"}
    assert all(np.allclose(a, b) for a, b in zip(out["pred_paths"]["silhouette"], expected.paths["silhouette"]))


def test_dict_transform_round_trips_a_one_hot_tensor():
    lab, img = _frame()
    onehot = torch.from_numpy(np.stack([lab == k for k in range(4)]).astype(np.float32))
    out = LandmarkPostprocessd(keys="pred", image_key=None)({"pred": onehot})
    expected = LandmarkPostprocessor()(lab)
    assert out["pred"].shape == (4, *lab.shape) and out["pred"].dtype == torch.float32
    assert np.array_equal(out["pred"][1:].numpy().astype(bool), expected.masks)
    assert np.array_equal(out["pred"][0].numpy().astype(bool), ~expected.masks.any(axis=0))
    both = expected.masks[0] & expected.masks[1]
    assert both.any() and (out["pred"][1:3, torch.from_numpy(both)] == 1).all()  # overlap kept in both channels


def test_transforms_reject_probabilities_and_missing_image():
    probs = torch.softmax(torch.randn(4, 16, 16), dim=0)
    with pytest.raises(ValueError, match="one-hot"):
        LandmarkPostprocessd(image_key=None)({"pred": probs})
    with pytest.raises(KeyError, match="image"):
        LandmarkPostprocessd()({"pred": torch.zeros(1, 16, 16)})
    arr = LandmarkPostprocess(fov=False)(np.zeros((1, 16, 16), np.int64))
    assert isinstance(arr, np.ndarray) and arr.shape == (1, 16, 16) and arr.dtype == np.int64


# ---------------------------------------------------------------------------------------------
# agreement with the baseline
# ---------------------------------------------------------------------------------------------


def _far_points_only_at_ends(path: np.ndarray, reference: np.ndarray, tol: float = 1.5) -> bool:
    """Points of ``path`` farther than ``tol`` from ``reference`` form at most a prefix and a suffix."""
    far = distances(path, reference) > tol
    if not far.any():
        return True
    near = np.flatnonzero(~far)
    return bool(near.size) and not far[near[0]: near[-1] + 1].any()


def test_baseline_agrees_on_fov_ligament_and_connect():
    img, _ = disk_image(h=60, w=80, r=28)
    for margin in (0, 2):
        assert np.array_equal(baseline.field_of_view(img, margin=margin), field_of_view(img, margin=margin))
    lab = _landmark_scene()
    lab[10:20, 50:53] = 3
    lab[45:58, 60:63] = 3
    assert np.array_equal(baseline.remove_stray_ligament(lab), remove_stray_ligament(lab))
    m = polyline((60, 90), [[5, 30], [25, 12], [40, 10]], 3).astype(bool)
    m |= polyline((60, 90), [[47, 12], [60, 20], [75, 35]], 3).astype(bool)  # 7 px from the first
    m |= polyline((60, 90), [[70, 55], [85, 58]], 3).astype(bool)  # ~18 px from the second
    a, b = connect_fragments(m, max_gap=12), baseline.connect_fragments(m, max_gap=12)
    assert n_components(a) == n_components(b) == 2
    assert distances(np.argwhere(a), np.argwhere(b)).max() <= 1 and distances(np.argwhere(b), np.argwhere(a)).max() <= 1


def test_baseline_agrees_on_skeleton_trace_and_rdp():
    m = polyline((70, 110), [[8, 50], [35, 15], [70, 20], [100, 55]], 7).astype(bool)
    sk, sk_base = skeletonize(m), baseline.skeletonize(m)
    # the textbook rules give a subset within a pixel; scikit-image's table keeps the ends longer
    assert distances(np.argwhere(sk_base), np.argwhere(sk)).max() <= 1
    (path,) = trace_paths(sk)
    assert _far_points_only_at_ends(path, np.argwhere(sk_base))
    # same skeleton in: same paths and the same RDP points out
    for skel in (sk, _s_curve()):
        ours, theirs = trace_paths(skel), baseline.trace_paths(skel)
        assert len(ours) == len(theirs)
        for p, q in zip(ours, theirs):
            assert distances(p, q).max() <= 1 and distances(q, p).max() <= 1
            assert np.array_equal(rdp(p, 1.0), baseline.rdp(p, 1.0))
            assert np.array_equal(rdp(p, 3.0), baseline.rdp(p, 3.0))


def test_baseline_pipeline_gives_the_same_curves():
    lab, img = _frame()
    ours = LandmarkPostprocessor()(lab, img)
    theirs = baseline.postprocess(lab, img)
    assert isinstance(theirs, LandmarkResult)
    for k, name in enumerate(("silhouette", "ridge", "ligament")):
        assert len(ours.paths[name]) == len(theirs.paths[name])
        a, b = np.argwhere(ours.masks[k]), np.argwhere(theirs.masks[k])
        assert distances(b, a).max() <= 1  # every baseline pixel within a pixel of ours
        for p, q in zip(ours.paths[name], theirs.paths[name]):
            dense_p = sample_points(p, spacing=0.5)
            dense_q = sample_points(q, spacing=0.5)
            assert distances(dense_q, dense_p).max() <= 1.5
            assert _far_points_only_at_ends(dense_p, dense_q)


@pytest.mark.timeout(30)
def test_trace_paths_of_a_thick_blob_ends_and_uses_every_pixel():
    """Thick input with min_branch=1: every round traces at least one pixel, so the rounds end."""
    blob = np.zeros((24, 24), bool)
    blob[4:20, 6:18] = True
    paths = trace_paths(blob, min_branch=1)
    traced = {tuple(p) for path in paths for p in path.tolist()}
    assert traced == {tuple(p) for p in np.argwhere(blob).tolist()}


@pytest.mark.timeout(30)
def test_trace_paths_stops_when_a_round_traces_nothing(monkeypatch):
    import fewlabel.postprocess.landmarks as lm

    real = lm._longest_paths
    calls = []

    def no_branch_paths(rr, cc, shape):
        calls.append(rr.size)
        paths, comp = real(rr, cc, shape)
        return (paths if len(calls) == 1 else []), comp  # the main paths, then never a branch

    monkeypatch.setattr(lm, "_longest_paths", no_branch_paths)
    blob = np.zeros((12, 12), bool)
    blob[2:10, 3:9] = True
    with pytest.raises(RuntimeError, match="48-pixel skeleton"):
        trace_paths(blob, min_branch=1)


def test_the_postprocessor_is_composed_of_steps_that_switch_off_alike():
    lab = np.zeros((40, 60), np.uint8)
    lab[10, 5:20] = 1
    lab[10, 26:45] = 1  # one silhouette broken by a 6 px gap
    off = LandmarkPostprocessor(fov=False, connect=FragmentConnector(enabled=False))
    assert off.connect is None and LandmarkPostprocessor(connect="false").connect is None
    assert len(off(lab).paths["silhouette"]) == 2  # the gap stays open
    joined = LandmarkPostprocessor(fov=False, connect=FragmentConnector(max_gap=8))(lab)
    assert len(joined.paths["silhouette"]) == 1
    assert len(LandmarkPostprocessor(fov=False, connect=FragmentConnector(max_gap=4))(lab).paths["silhouette"]) == 2
    with pytest.raises(ValueError, match="thickness must be >= 1"):
        CurveTracer(thickness=0)
