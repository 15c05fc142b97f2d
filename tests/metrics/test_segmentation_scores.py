"""Dataset-level IoU / Dice (one confusion matrix over the test set) beside the per-image mean."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from fewlabel.handlers import SegmentationReport
from fewlabel.metrics import SegmentationScores, format_table

NAMES = ["background", "liver", "tool"]


def _maps() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 4x4 images where the per-image mean and the dataset-level IoU differ.

    Image 0: liver 2 px in the label, both predicted (and 2 background px predicted liver).
    Image 1: liver 8 px in the label, 4 predicted; one tool pixel, predicted as background.
    """
    label = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    pred = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    label[0, 0, 0, :2] = 1
    pred[0, 0, 0, :4] = 1
    label[1, 0, :2, :] = 1
    pred[1, 0, 0, :] = 1
    label[1, 0, 3, 3] = 2
    return pred, label


def _by_hand() -> dict[str, dict[str, float]]:
    pred, label = _maps()
    cm = np.zeros((3, 3), np.int64)  # [ground truth, prediction]
    for t, p in zip(label.flatten().tolist(), pred.flatten().tolist()):
        cm[t, p] += 1
    out = {}
    for c, name in enumerate(NAMES):
        tp, fp, fn = cm[c, c], cm[:, c].sum() - cm[c, c], cm[c, :].sum() - cm[c, c]
        out[name] = {"iou": tp / (tp + fp + fn), "dice": 2 * tp / (2 * tp + fp + fn)}
    return out, cm


def test_dataset_iou_is_one_confusion_matrix_over_all_images():
    pred, label = _maps()
    hand, cm = _by_hand()
    # by hand: liver TP = 2 + 4, FP = 2 + 0, FN = 0 + 4 -> IoU 6 / 12; background TP = 12 + 7, FP = 0 + 5,
    # FN = 2 + 0 -> 19 / 26; tool TP 0, FN 1 -> 0
    assert hand["liver"]["iou"] == pytest.approx(0.5) and hand["background"]["iou"] == pytest.approx(19 / 26)
    s = SegmentationScores(NAMES, average="dataset")
    for i in range(2):  # two batches: the matrix accumulates across updates
        s.update(pred[i:i + 1], label[i:i + 1])
    r = s.compute()
    assert r["average"] == "dataset"
    assert r["confusion_matrix"] == cm.tolist()
    for name in NAMES:
        assert r["per_class"][name]["iou"] == pytest.approx(hand[name]["iou"])
        assert r["per_class"][name]["dice"] == pytest.approx(hand[name]["dice"])
    assert r["mean_iou"] == pytest.approx(np.mean([hand[n]["iou"] for n in NAMES]))  # background included
    assert r["mean_iou_foreground"] == pytest.approx((hand["liver"]["iou"] + hand["tool"]["iou"]) / 2)
    assert r["mean_dice"] == pytest.approx(np.mean([hand[n]["dice"] for n in NAMES]))
    # the per-image mean differs and stays available under its own key:
    # liver 2/4 and 4/8 -> 0.5 either way, but background (12/14, 7/12) -> 0.7143 != 19/26
    per_image_bg = (12 / 14 + 7 / 12) / 2
    assert r["per_class"]["background"]["iou_per_image"] == pytest.approx(per_image_bg)
    assert r["per_class"]["background"]["iou_per_image"] != pytest.approx(r["per_class"]["background"]["iou"])
    assert r["mean_iou_per_image"] != pytest.approx(r["mean_iou"])
    # the per-image protocol reports the per-image figure as the main key, and the dataset one beside it
    p = SegmentationScores(NAMES)
    p.update(pred, label)
    rp = p.compute()
    assert rp["average"] == "per_image"
    assert rp["mean_iou"] == pytest.approx(r["mean_iou_per_image"])
    assert rp["mean_iou_dataset"] == pytest.approx(r["mean_iou"])
    assert rp["per_class"]["liver"]["iou_aggregate"] == pytest.approx(0.5)  # old name of iou_dataset
    assert "over the test set" in format_table(r) and "per-image mean" in format_table(rp)


def test_dataset_average_of_underrepresented_classes_and_bad_option():
    pred, label = _maps()
    hand, _ = _by_hand()
    s = SegmentationScores(NAMES, class_shares={"background": 0.7, "liver": 0.295, "tool": 0.005},
                           average="dataset")
    s.update(pred, label)
    r = s.compute()
    assert r["underrepresented"] == ["tool"]
    assert r["mean_iou_underrepresented"] == pytest.approx(hand["tool"]["iou"])
    with pytest.raises(ValueError, match="average must be one of"):
        SegmentationScores(NAMES, average="micro")


def test_report_handler_takes_the_protocol(tmp_path):
    pred, label = _maps()
    hand, _ = _by_hand()
    engine = Engine(lambda e, b: {"pred": list(pred), "label": list(label)})
    SegmentationReport(tmp_path, NAMES, name="m", average="dataset").attach(engine)
    engine.run([0], max_epochs=1)
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["average"] == "dataset"
    assert result["per_class"]["background"]["iou"] == pytest.approx(hand["background"]["iou"])
    assert engine.state.metrics["m_mean_iou"] == pytest.approx(np.mean([hand[n]["iou"] for n in NAMES]))
    assert "m_mean_iou_per_image" in engine.state.metrics


def test_surgical_semiseg_evaluate_json_defaults_to_the_papers_protocol():
    from testlib import REPO

    cfg = json.loads((REPO / "bundles" / "surgical_semiseg_laparoscopy_segmentation" / "configs"
                      / "evaluate.json").read_text())
    assert cfg["metrics_average"] == "dataset"
    report = [h for h in cfg["validate#handlers"] if h["_target_"].endswith("SegmentationReport")][0]
    assert report["average"] == "@metrics_average"
