"""Scoring a folder of landmark predictions made elsewhere (SLiPPA Table 2) with the bundle's evaluation:
scores computed by hand on hand-made masks, the file names and formats accepted, the errors that name
the file, and the bundle's score_predictions.json end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fewlabel.engines import PredictionFolderScorer
from fewlabel.errors import DataError
from fewlabel.handlers import LandmarkEvaluation
from testlib import REPO, write_png

BUNDLE = REPO / "bundles" / "slippa_liver_landmark_segmentation"
CLASSES = ["background", "silhouette", "ridge", "ligament"]
COLOURS = json.loads((BUNDLE / "configs" / "score_predictions.json").read_text())["prediction_colours"]
H, W = 20, 40


def _frames(root: Path) -> dict:
    """Two frames of patient4 with ground truth and predictions; see the test for the scores they give."""
    gt1, gt2 = np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)
    gt1[5, 5:25] = 1        # silhouette, 20 px
    gt1[12, 10:20] = 2      # ridge, 10 px; no ligament
    gt2[3, 0:10] = 1        # silhouette, 10 px; no ridge
    gt2[15, 20:30] = 3      # ligament, 10 px
    p1, p2 = np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)
    p1[5, 5:25] = 1         # silhouette exactly
    p1[12, 10:15] = 2       # the first half of the ridge
    p2[8, 0:4] = 2          # a ridge where the ground truth has none; the silhouette missed
    p2[15, 20:35] = 3       # the ligament and 5 px beyond it
    items = []
    for stem, gt in (("f01", gt1), ("f02", gt2)):
        image = write_png(root / "images" / f"{stem}.png", np.full((H, W, 3), 90, np.uint8))
        label = write_png(root / "masks" / "patient4" / f"{stem}.png", gt)
        items.append({"image": str(image), "label": str(label), "patient": "patient4"})
    preds = root / "predictions"
    write_png(preds / "f01.png", p1)                                          # grey class indices
    write_png(preds / "patient4" / "f02_mask.png", np.asarray(COLOURS, np.uint8)[p2])  # the bundle's colour masks
    return {"items": items, "preds": preds}


def _evaluation(out: Path) -> LandmarkEvaluation:
    return LandmarkEvaluation(out, CLASSES, postprocessor=None, stage="predictions", examples=0)


def test_scores_equal_a_computation_by_hand(tmp_path):
    data = _frames(tmp_path)
    res = PredictionFolderScorer(data["items"], data["preds"], _evaluation(tmp_path / "out"), colours=COLOURS).run()
    per = res["raw"]["per_landmark"]
    # silhouette: frame 1 exact (P 1, D 1, G 0), frame 2 missed (P 0, D 0, G 1)
    assert per["silhouette"]["precision"] == pytest.approx(0.5)
    assert per["silhouette"]["dice"] == pytest.approx(0.5)
    assert per["silhouette"]["G"] == pytest.approx(0.5)
    # ridge: frame 1 only (frame 2's ground truth has none: left out, the P2ILF evaluation). 5 of 10 px
    # predicted: P 1, D 2*5/15; G: the 5 unpredicted px are 1..5 px from the prediction, all within
    # d_max = 10, so no miss: (1+2+3+4+5) / (2 |C| d_max) = 15 / 200
    assert per["ridge"]["num_scored"] == 1
    assert per["ridge"]["precision"] == pytest.approx(1.0)
    assert per["ridge"]["dice"] == pytest.approx(2 * 5 / 15)
    assert per["ridge"]["G"] == pytest.approx(15 / 200)
    # ligament: frame 2 only. 15 px predicted, 10 right: P 10/15, D 20/25; the 5 extra px are 1..5 px
    # from the ground truth (inside the tolerance, no false positive): G = 15 / 200
    assert per["ligament"]["num_scored"] == 1
    assert per["ligament"]["precision"] == pytest.approx(10 / 15)
    assert per["ligament"]["dice"] == pytest.approx(0.8)
    assert per["ligament"]["G"] == pytest.approx(15 / 200)
    assert res["mean_precision"] == pytest.approx((0.5 + 1 + 10 / 15) / 3)
    assert res["mean_dice"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert res["mean_G"] == pytest.approx((0.5 + 0.075 + 0.075) / 3)
    assert res["num_images"] == 2 and res["stage"] == "predictions"
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["mean_dice"] == pytest.approx(res["mean_dice"])
    assert "ridge" in (tmp_path / "out" / "metrics.md").read_text()


def test_scored_frames_of_absent_landmarks_follow_the_evaluation_settings(tmp_path):
    data = _frames(tmp_path)
    evaluation = LandmarkEvaluation(tmp_path / "out", CLASSES, stage="predictions", examples=0, empty_gt="score",
                                    false_alarm="one")
    per = PredictionFolderScorer(data["items"], data["preds"], evaluation, colours=COLOURS).run()["raw"]["per_landmark"]
    # ridge: frame 2's false alarm now counts (P 0, D 0, G 1); ligament: frame 1's correct absence (P 0, D 1, G 0)
    assert per["ridge"]["num_scored"] == 2 and per["ridge"]["G"] == pytest.approx((0.075 + 1) / 2)
    assert per["ligament"]["dice"] == pytest.approx((1 + 0.8) / 2)
    assert per["ligament"]["precision"] == pytest.approx((0 + 10 / 15) / 2)


def test_a_missing_prediction_names_the_frame_and_the_names_looked_for(tmp_path):
    data = _frames(tmp_path)
    (data["preds"] / "f01.png").unlink()
    with pytest.raises(DataError) as info:
        PredictionFolderScorer(data["items"], data["preds"], _evaluation(tmp_path / "out"), colours=COLOURS).run()
    msg = str(info.value)
    assert "1 of 2" in msg and data["items"][0]["label"] in msg and "f01_mask.png" in msg
    assert not (tmp_path / "out" / "metrics.json").exists()  # nothing is scored from a partial folder


def test_a_prediction_of_the_wrong_size_names_the_file(tmp_path):
    data = _frames(tmp_path)
    small = write_png(data["preds"] / "f01.png", np.zeros((H // 2, W // 2), np.uint8))
    with pytest.raises(DataError) as info:
        PredictionFolderScorer(data["items"], data["preds"], _evaluation(tmp_path / "out"), colours=COLOURS).run()
    assert str(small) in str(info.value) and f"{H}x{W}" in str(info.value)


def test_values_that_are_no_class_and_colour_masks_without_colours_are_errors(tmp_path):
    data = _frames(tmp_path)
    with pytest.raises(DataError, match="colour image"):
        PredictionFolderScorer(data["items"], data["preds"], _evaluation(tmp_path / "out")).run()
    bad = write_png(data["preds"] / "f01.png", np.full((H, W), 255, np.uint8))
    with pytest.raises(DataError) as info:
        PredictionFolderScorer(data["items"], data["preds"], _evaluation(tmp_path / "out"), colours=COLOURS).run()
    assert str(bad) in str(info.value) and "0..3" in str(info.value)


def test_p2ilf_contour_xml_predictions_are_drawn_as_the_ground_truth(tmp_path):
    from fewlabel.data.landmarks import draw_landmark_mask

    gt = draw_landmark_mask([(2, np.array([[5.0, 10.0], [30.0, 10.0]]))], (H, W), thickness=3)
    image = write_png(tmp_path / "f09.png", np.zeros((H, W, 3), np.uint8))
    label = write_png(tmp_path / "gt" / "f09.png", gt)
    preds = tmp_path / "predictions"
    preds.mkdir()
    (preds / "f09.xml").write_text("<contours><contour><contourType>Ridge</contourType><imagePoints>"
                                   "<x>5,30</x><y>10,10</y></imagePoints></contour></contours>")
    res = PredictionFolderScorer([{"image": str(image), "label": str(label)}], preds, _evaluation(tmp_path / "out"),
                                 thickness=3).run()
    ridge = res["raw"]["per_landmark"]["ridge"]
    assert (ridge["precision"], ridge["dice"], ridge["G"]) == (1.0, 1.0, 0.0)
    assert math.isnan(res["raw"]["per_landmark"]["silhouette"]["dice"])


def test_the_colours_are_those_the_bundles_inference_writes():
    inference = json.loads((BUNDLE / "configs" / "inference.json").read_text())
    assert COLOURS == inference["class_colours"]


def test_score_predictions_config_scores_a_folder_with_evaluate_json_settings(tmp_path):
    from fewlabel.protocols import run_stage

    data = _frames(tmp_path)
    dataset = tmp_path / "p2ilf"
    dataset.mkdir()
    (dataset / "datalist.json").write_text(json.dumps({"training": data["items"], "validation": data["items"],
                                                       "testing": data["items"]}))
    out = tmp_path / "scores"
    run_stage(BUNDLE.name, ["train.json", "finetune.json", "evaluate.json", "score_predictions.json"],
              finetune_dataset_dir=str(dataset), predictions_root=str(tmp_path), method="predictions",
              output_dir=str(out))
    res = json.loads((out / "metrics.json").read_text())
    assert res["settings"]["empty_gt"] == "skip" and res["settings"]["tolerance"] == "strict"
    assert res["mean_dice"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert "post" not in res  # predictions are scored as given


def test_table2_spec_reports_each_prediction_folder_as_a_row(tmp_path):
    """The Table 2 sweep on two hand-made folders: one the ground truth itself, one scored by hand above."""
    import shutil

    import yaml

    from fewlabel.sweep.execute import execute_run
    from fewlabel.sweep.report import make_report
    from fewlabel.sweep.spec import load_spec

    data = _frames(tmp_path)
    for item in data["items"]:  # a method that predicts the ground truth exactly
        shutil.copy(item["label"], (tmp_path / "perfect").mkdir(exist_ok=True) or tmp_path / "perfect")
    dataset = tmp_path / "p2ilf"
    dataset.mkdir()
    (dataset / "datalist.json").write_text(json.dumps({"training": [], "validation": [], "testing": data["items"]}))
    raw = yaml.safe_load((BUNDLE / "sweeps" / "table2_prediction_folders.yaml").read_text())
    assert raw["reproduces"] == ["Table 2"] and {c["method"] for c in raw["cells"]} == {"BHL", "NCT", "UCL", "VIP",
                                                                                          "VOR"}
    raw["cells"] = [{"method": "predictions"}, {"method": "perfect"}]
    raw["overrides"] = {"predictions_root": str(tmp_path), "finetune_dataset_dir": str(dataset)}
    spec = load_spec(raw)
    run_dir = tmp_path / "sweep"
    run_dir.mkdir()
    (run_dir / "sweep.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    for run in spec.runs(run_dir):
        execute_run(run)
    text = make_report(run_dir).read_text()
    rows = {line.split("|")[1].strip(): [c.strip(" *") for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| predictions") or line.startswith("| perfect")}
    header = next(line for line in text.splitlines() if "P ridge" in line)
    cols = [c.strip() for c in header.strip().strip("|").split("|")]
    got = {m: dict(zip(cols, r)) for m, r in rows.items()}
    assert got["perfect"]["P̄"] == "1.00" and got["perfect"]["D̄"] == "1.00" and got["perfect"]["Ḡ"] == "0.00"
    assert got["predictions"]["P̄"] == f"{(0.5 + 1 + 10 / 15) / 3:.2f}"
    assert got["predictions"]["D ridge"] == f"{2 * 5 / 15:.2f}" and got["predictions"]["G silhouette"] == "0.50"
