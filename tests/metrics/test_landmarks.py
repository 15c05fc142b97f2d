"""Landmark precision, Dice and the symmetric distance G (SLiPPA equation 4), their summaries and tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fewlabel.metrics import (
    LandmarkScores,
    format_landmark_table,
    format_stage_table,
    landmark_dice,
    landmark_precision,
    symmetric_distance,
)


def _line(shape, row, cols):
    m = np.zeros(shape, bool)
    m[row, cols[0]:cols[1]] = True
    return m


def _brute_force_g(b: np.ndarray, c: np.ndarray, d_max: float, strict: bool = True) -> float:
    """Equation 4 straight from its definitions, with pairwise distances (small images only)."""
    pb, pc = np.argwhere(b).astype(float), np.argwhere(c).astype(float)
    dist = np.sqrt(((pb[:, None] - pc[None]) ** 2).sum(-1))  # |B| x |C|
    within = (lambda d: d < d_max) if strict else (lambda d: d <= d_max)
    in_q = within(dist.min(1))
    fn = ~within(dist.min(0))
    match = 0.0
    if in_q.any():
        sub = dist[in_q][:, ~fn]
        match = sub.min(1).sum() + sub.min(0).sum()
    return match / (2 * len(pc) * d_max) + (~in_q).sum() / (b.size - 2 * len(pc) * d_max) + fn.sum() / len(pc)


def test_identical_maps_score_zero():
    gt = _line((32, 32), 10, (3, 25))
    assert symmetric_distance(gt, gt.copy()) == 0.0


def test_hand_computed_shift_by_one_pixel():
    # 20x20 image, ground truth: 5 pixels of row 10 (cols 5..9); prediction: row 11, same columns.
    # Every predicted pixel is 1 px from the ground truth and vice versa: no FP, no FN.
    # G = (5 * 1 + 5 * 1) / (2 * |C| * d_max) = 10 / (2 * 5 * 10) = 0.1
    gt = _line((20, 20), 10, (5, 10))
    pred = _line((20, 20), 11, (5, 10))
    assert symmetric_distance(pred, gt, d_max=10) == pytest.approx(0.1)


def test_hand_computed_case_with_false_positive_and_false_negative():
    # 20x20, d_max = 10. GT: row 10 cols 5..9 plus an isolated pixel (19, 0): |C| = 6.
    # Prediction: row 10 cols 6..10 plus an isolated pixel (0, 19).
    # - (0, 19) is sqrt(10^2 + 10^2) = 14.1 px from the nearest GT pixel (10, 9): FP, |FP| = 1.
    # - GT pixel (19, 0) is sqrt(9^2 + 6^2) = 10.8 px from the nearest prediction (10, 6): FN, |FN| = 1.
    # - matched pixels: predictions (10, 6..9) lie on the GT (0 each), (10, 10) is 1 px away -> sum 1;
    #   GT (10, 6..9) lie on the prediction, (10, 5) is 1 px away -> sum 1.
    # G = 2 / (2 * 6 * 10) + 1 / (400 - 2 * 6 * 10) + 1 / 6 = 0.016667 + 0.003571 + 0.166667 = 0.186905
    gt = _line((20, 20), 10, (5, 10))
    gt[19, 0] = True
    pred = _line((20, 20), 10, (6, 11))
    pred[0, 19] = True
    expected = 2 / 120 + 1 / 280 + 1 / 6
    assert symmetric_distance(pred, gt, d_max=10) == pytest.approx(expected)
    assert expected == pytest.approx(0.186905, abs=1e-6)


def test_g_grows_with_displacement_then_fp_fn_terms_take_over():
    # a 40 px line shifted vertically by s px (s <= d_max): every pixel matched at distance s,
    # G = (40 s + 40 s) / (2 * 40 * 10) = s / 10
    gt = _line((64, 64), 20, (10, 50))
    g = {s: symmetric_distance(_line((64, 64), 20 + s, (10, 50)), gt, d_max=10) for s in (1, 3, 6, 10, 12)}
    assert g[1] < g[3] < g[6] < g[10]
    for s in (1, 3, 6):
        assert g[s] == pytest.approx(s / 10)
    # 12 px > d_max: all 40 predicted pixels are FP and all 40 GT pixels FN; no matched term
    assert g[12] == pytest.approx(40 / (64 * 64 - 2 * 40 * 10) + 40 / 40)
    # exactly d_max away is a miss in the P2ILF code (< d_max matches): the same 40 FP + 40 FN
    assert g[10] == pytest.approx(g[12])
    # matched at <= d_max on request: G = 10 / 10, below the all-missed score
    inclusive = symmetric_distance(_line((64, 64), 30, (10, 50)), gt, d_max=10, tolerance="inclusive")
    assert inclusive == pytest.approx(1.0) and inclusive < g[12]


def test_g_agrees_with_a_brute_force_implementation_of_the_definitions():
    rng = np.random.default_rng(0)
    for _ in range(20):
        b = rng.random((24, 30)) < 0.03
        c = rng.random((24, 30)) < 0.03
        if not b.any() or not c.any():
            continue
        for d_max in (2.0, 5.0):
            assert symmetric_distance(b, c, d_max) == pytest.approx(_brute_force_g(b, c, d_max))
            assert symmetric_distance(b, c, d_max, tolerance="inclusive") == pytest.approx(
                _brute_force_g(b, c, d_max, strict=False))


def test_g_edge_cases():
    empty = np.zeros((16, 16), bool)
    gt = _line((16, 16), 5, (2, 12))
    assert symmetric_distance(empty, empty) == 0.0
    assert math.isnan(symmetric_distance(empty, empty, both_empty=math.nan))
    assert symmetric_distance(empty, gt) == 1.0
    # a false alarm: the P2ILF code's formula, |B| / |I| = 10 / 256 (flat 1.0 on request)
    assert symmetric_distance(gt, empty) == pytest.approx(10 / 256)
    assert symmetric_distance(gt, empty, false_alarm="one") == 1.0
    with pytest.raises(ValueError, match="tolerance must be one of"):
        symmetric_distance(gt, gt, tolerance="<=")
    # a 1x20 image, d_max 2, GT cols 0..4: |I| - 2 |C| d_max = 20 - 20 = 0 -> the FP term uses |I|;
    # the prediction adds one pixel at col 19 (15 px away: FP): G = 1 / 20
    gt = np.zeros((1, 20), bool)
    gt[0, :5] = True
    pred = gt.copy()
    pred[0, 19] = True
    assert symmetric_distance(pred, gt, d_max=2) == pytest.approx(1 / 20)


def test_g_inputs_torch_and_shape_checks():
    gt = _line((20, 20), 10, (5, 10))
    pred = _line((20, 20), 11, (5, 10))
    assert symmetric_distance(torch.from_numpy(pred), torch.from_numpy(gt).to(torch.uint8)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="shape"):
        symmetric_distance(pred, gt[:, :10])
    with pytest.raises(ValueError, match="2D"):
        symmetric_distance(pred[None], gt[None])
    with pytest.raises(ValueError, match="d_max"):
        symmetric_distance(pred, gt, d_max=0)


def test_precision_and_dice_on_hand_made_masks():
    gt = np.zeros((6, 6), bool)
    gt[2, 0:5] = True  # 5 pixels
    pred = np.zeros((6, 6), bool)
    pred[2, 2:5] = True  # 3 on the GT
    pred[4, 4] = True  # 1 false positive
    assert landmark_precision(pred, gt) == pytest.approx(3 / 4)
    assert landmark_dice(pred, gt) == pytest.approx(2 * 3 / (4 + 5))
    empty = np.zeros_like(gt)
    assert math.isnan(landmark_precision(empty, empty)) and math.isnan(landmark_dice(empty, empty))
    assert landmark_precision(empty, gt) == 0.0 and landmark_dice(empty, gt) == 0.0  # missed landmark
    assert landmark_precision(pred, empty) == 0.0 and landmark_dice(pred, empty) == 0.0  # false alarm
    with pytest.raises(ValueError, match="shape"):
        landmark_dice(pred, gt[:3])


def test_landmark_scores_means_skip_nan(tmp_path):
    h, w = 20, 20
    scores = LandmarkScores(("silhouette", "ridge", "ligament"), d_max=10, empty_gt="score", correct_absence="nan")
    # image 0: silhouette perfect, ridge shifted 1 px, ligament absent from both (NaN: left out)
    gt0 = np.zeros((3, h, w), bool)
    gt0[0] = _line((h, w), 3, (2, 18))
    gt0[1] = _line((h, w), 10, (5, 10))
    pred0 = gt0.copy()
    pred0[1] = _line((h, w), 11, (5, 10))
    scores.add(pred0, gt0)
    # image 1 as a label map: silhouette (class 1) missed, ridge (2) perfect, ligament (3) perfect
    gt1 = np.zeros((h, w), np.int64)
    gt1[3, 2:18] = 1
    gt1[10, 5:10] = 2
    gt1[15, 5:10] = 3
    pred1 = gt1.copy()
    pred1[gt1 == 1] = 0
    rec = scores.add(torch.from_numpy(pred1), torch.from_numpy(gt1), num_classes=4, image_id="p4_1")
    assert rec["silhouette"] == {"precision": 0.0, "dice": 0.0, "G": 1.0}
    assert math.isnan(scores.per_image[0]["ligament"]["dice"]) and scores.per_image[1]["image"] == "p4_1"

    s = scores.summary()
    assert s["num_images"] == 2 and s["d_max"] == 10
    assert s["per_landmark"]["silhouette"] == pytest.approx(
        {"precision": 0.5, "dice": 0.5, "G": 0.5, "num_scored": 2})
    assert s["per_landmark"]["ridge"]["G"] == pytest.approx(0.05)  # (0.1 + 0) / 2
    assert s["per_landmark"]["ridge"]["dice"] == pytest.approx(0.5)  # (0 + 1) / 2: a 1 px shift misses a thin line
    assert s["per_landmark"]["ligament"] == pytest.approx({"precision": 1.0, "dice": 1.0, "G": 0.0, "num_scored": 1})
    assert s["mean"]["dice"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert s["mean"]["G"] == pytest.approx((0.5 + 0.05 + 0.0) / 3)

    saved = json.loads(scores.save(tmp_path / "scores.json").read_text())
    assert saved["summary"]["mean"]["G"] == pytest.approx(s["mean"]["G"])
    assert saved["per_image"][0]["ligament"]["dice"] is None  # NaN written as null


def test_landmark_scores_skip_empty_gt_and_bad_input():
    gt = np.zeros((1, 8, 8), bool)
    pred = np.ones((1, 8, 8), bool)
    scored = LandmarkScores(["ridge"], empty_gt="score", false_alarm="one")
    scored.add(pred, gt)
    assert scored.summary()["mean"] == {"precision": 0.0, "dice": 0.0, "G": 1.0}
    skipped = LandmarkScores(["ridge"])  # the default, as the P2ILF team evaluation
    skipped.add(pred, gt)
    assert all(math.isnan(v) for v in skipped.summary()["mean"].values())
    three = LandmarkScores()
    with pytest.raises(ValueError, match="2 masks"):
        three.add(np.zeros((2, 8, 8), bool), np.zeros((2, 8, 8), bool))
    with pytest.raises(ValueError, match="outside"):
        three.add(np.full((8, 8), 4), np.zeros((8, 8), int))
    with pytest.raises(ValueError, match="shape"):
        three.add(np.zeros((8, 8), int), np.zeros((8, 9), int))


def _summary(p, d, g):
    return {"mean": {"precision": p, "dice": d, "G": g}}


def test_stage_table_layout_and_bold_best():
    results = {
        "1": {"init": _summary(0.39, 0.22, 0.69), "tune": _summary(0.35, 0.37, 0.47),
              "post": _summary(0.45, 0.37, 0.44)},
        "2": {"init": _summary(0.41, 0.29, 0.54), "tune": _summary(0.38, 0.40, 0.40),
              "post": _summary(0.48, 0.43, 0.39)},
        "3": {"init": _summary(0.35, 0.281, 0.59)},  # not fine-tuned yet
    }
    lines = format_stage_table(results).strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["Candidate",
                      "P̄_init ↑", "D̄_init ↑", "Ḡ_init ↓",
                      "P̄_tune ↑", "D̄_tune ↑", "Ḡ_tune ↓",
                      "P̄_post ↑", "D̄_post ↑", "Ḡ_post ↓"]
    rows = {r.strip("|").split("|")[0].strip(): [c.strip() for c in r.strip("|").split("|")[1:]] for r in lines[2:]}
    assert list(rows) == ["1", "2", "3"]
    # highest P and D, lowest G in bold
    assert rows["2"][:3] == ["**0.41**", "**0.29**", "**0.54**"]
    assert rows["1"][:3] == ["0.39", "0.22", "0.69"]
    assert rows["3"][:3] == ["0.35", "0.28", "0.59"]
    assert rows["1"][3:6] == ["0.35", "0.37", "0.47"]
    assert rows["2"][6:] == ["**0.48**", "**0.43**", "**0.39**"]
    assert rows["3"][3:] == ["–"] * 6
    # only the chosen metrics and stages, in the order given
    small = format_stage_table(results, metrics=("G",), stages=("post", "init")).splitlines()[0]
    assert [c.strip() for c in small.strip("|").split("|")] == ["Candidate", "Ḡ_post ↓", "Ḡ_init ↓"]
    with pytest.raises(ValueError, match="unknown metrics"):
        format_stage_table(results, metrics=("recall",))


def test_landmark_table_rows_in_table_2_order():
    summary = {
        "per_landmark": {n: {"precision": p, "dice": 0.5, "G": 0.4}
                         for n, p in (("silhouette", 0.46), ("ridge", 0.24), ("ligament", float("nan")))},
        "mean": {"precision": 0.35, "dice": 0.5, "G": 0.4}, "num_images": 30, "d_max": 10.0,
    }
    table = format_landmark_table(summary)
    rows = [r for r in table.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["ridge", "ligament", "silhouette", "**mean**"]
    assert rows[0].split("|")[2].strip() == "0.24" and rows[1].split("|")[2].strip() == "–"
    assert "30 images" in table and "d_max = 10 px" in table


def _p2ilf_simplified_by_hand(pred: np.ndarray, gt: np.ndarray, d_max: float) -> float:
    """The P2ILF team evaluation's G (``computeScoreFrancoisSimplified``) from its definition, in its own
    units (pixels): distances to the whole other set capped at ``d_max``, a pixel matched when closer than
    ``d_max``, 0 / 0 = 0 (the code's epsilon)."""
    pa, pb = np.argwhere(pred).astype(float), np.argwhere(gt).astype(float)

    def nearest(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if len(y) == 0:
            return np.full(len(x), float(d_max))
        return np.minimum(np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1)).min(1), d_max)

    def div(a: float, b: float) -> float:
        return 0.0 if a == 0 else a / b

    d_ab, d_ba = nearest(pa, pb), nearest(pb, pa)
    match = d_ab[d_ab < d_max].sum() + d_ba[d_ba < d_max].sum()
    miss_a, miss_b, n_gt = (d_ab >= d_max).sum(), (d_ba >= d_max).sum(), len(pb)
    return div(match, 2.0 * n_gt) + div(d_max * miss_b, n_gt) + div(d_max * miss_a, pred.size - 2 * d_max * n_gt)


def test_g_is_the_p2ilf_code_divided_by_d_max_on_every_case():
    # the official score is d_max times equation 4; the empty cases come out of the same formula
    h, w, d_max = 20, 24, 5.0
    empty = np.zeros((h, w), bool)
    gt = _line((h, w), 10, (3, 15))
    near = _line((h, w), 12, (4, 18))
    near[0, 23] = True  # a far false positive
    at_d_max = _line((h, w), 15, (3, 15))  # exactly d_max away: a miss in the official code
    for pred, truth in [(near, gt), (at_d_max, gt), (gt, empty), (empty, gt), (empty, empty)]:
        official = _p2ilf_simplified_by_hand(pred, truth, d_max)
        assert symmetric_distance(pred, truth, d_max) * d_max == pytest.approx(official), (pred.sum(), truth.sum())
    # by hand: a 12-pixel false alarm on a 480-pixel frame -> official 5 * 12 / 480 = 0.125, here 12 / 480
    assert symmetric_distance(gt, empty, d_max) == pytest.approx(12 / 480)


def test_empty_cases_follow_the_p2ilf_team_evaluation():
    h, w = 16, 20
    gt = np.zeros((2, h, w), bool)  # ridge present, ligament absent from the ground truth
    gt[0] = _line((h, w), 4, (2, 18))
    false_alarm = gt.copy()
    false_alarm[1] = _line((h, w), 10, (5, 13))  # 8 predicted ligament pixels where there is none
    names = ("ridge", "ligament")

    # default: the frame without a ligament is left out of the ligament's means ("NA"), whatever was predicted
    default = LandmarkScores(names)
    default.add(false_alarm, gt)
    default.add(gt, gt)
    s = default.summary()
    assert s["per_landmark"]["ligament"]["num_scored"] == 0 and math.isnan(s["per_landmark"]["ligament"]["G"])
    assert s["mean"]["dice"] == pytest.approx(1.0)  # the ridge alone
    assert (s["empty_gt"], s["correct_absence"], s["false_alarm"], s["tolerance"]) == (
        "skip", "p2ilf", "formula", "strict")

    # scored: a false alarm P = D = 0, G = |B| / |I| = 8 / 320; a correct absence P = 0, D = 1, G = 0 (the
    # per-frame code: precision() returns 0 when TP + FP = 0, DSC = 1 when both are empty); both enter the mean
    scored = LandmarkScores(names, empty_gt="score")
    assert scored.add(false_alarm, gt)["ligament"] == pytest.approx({"precision": 0.0, "dice": 0.0, "G": 8 / 320})
    assert scored.add(gt, gt)["ligament"] == {"precision": 0.0, "dice": 1.0, "G": 0.0}
    lig = scored.summary()["per_landmark"]["ligament"]
    assert lig == pytest.approx({"precision": 0.0, "dice": 0.5, "G": 4 / 320, "num_scored": 2})
    # today's alternatives: a correct absence left out, a false alarm scored 1.0
    old = LandmarkScores(names, empty_gt="score", correct_absence="nan", false_alarm="one")
    old.add(false_alarm, gt)
    old.add(gt, gt)
    assert old.summary()["per_landmark"]["ligament"] == pytest.approx(
        {"precision": 0.0, "dice": 0.0, "G": 1.0, "num_scored": 1})
    with pytest.raises(ValueError, match="correct_absence must be one of"):
        LandmarkScores(names, correct_absence="one")
