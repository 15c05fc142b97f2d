"""PolyCL evaluation protocols: 2D per slice (the released code) and 3D per volume; distance units."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from fewlabel.handlers import VolumeReport
from fewlabel.metrics import VolumeScores
from fewlabel.metrics.volume import format_volume_table, slice_scores


def _volume() -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 12, 12, 3): slice 0 both empty; slice 1 label 4x4, prediction the same shifted 2 columns right;
    slice 2 label 2x2, prediction empty."""
    label = torch.zeros(1, 12, 12, 3)
    pred = torch.zeros(1, 12, 12, 3)
    label[0, 2:6, 2:6, 1] = 1
    pred[0, 2:6, 4:8, 1] = 1
    label[0, 8:10, 8:10, 2] = 1
    return pred, label


def test_slice_2d_is_the_released_code_by_hand():
    pred, label = _volume()
    # Dice (2 |P∩T| + 1) / (|P| + |T| + 1): empty slice 1/1; shifted square (2*8 + 1) / 33; missed 1 / 5
    dice = [1.0, 17 / 33, 1 / 5]
    # directed Hausdorff from the prediction's boundary to the label's: the farthest predicted pixel
    # (column 7) is 2 columns from the label's boundary (column 5); only slice 1 has both
    per_slice = slice_scores(pred, label)
    assert [d for d, _ in per_slice] == pytest.approx(dice)
    assert [h for _, h in per_slice] == [None, pytest.approx(2.0), None]
    # the same in millimetres with 0.5 mm pixels (the slice spacing is ignored in 2D)
    assert slice_scores(pred, label, spacing=(0.5, 0.5, 5.0))[1][1] == pytest.approx(1.0)

    scores = VolumeScores(protocol="slice_2d")
    scores.update(pred, label, "a")
    scores.update(label.clone(), label, "b")  # perfect: Dice 1 on all three slices, Hausdorff 0 on two
    r = scores.compute()
    assert (r["protocol"], r["distance_unit"], r["hausdorff_directed"]) == ("slice_2d", "pixel", True)
    assert r["num_slices"] == 6 and r["num_volumes"] == 2
    assert r["mean_dice"] == pytest.approx(np.mean(dice + [1.0, 1.0, 1.0]))  # over slices, not volumes
    assert r["mean_hausdorff"] == pytest.approx((2.0 + 0.0 + 0.0) / 3)
    assert r["hausdorff_undefined"] == 3  # slices 0 and 2 of "a", slice 0 of "b"
    assert r["per_volume"][0]["dice"] == pytest.approx(np.mean(dice))
    assert "2D per slice" in format_volume_table(r) and "pixel" in format_volume_table(r)


def test_volume_3d_differs_and_states_its_protocol():
    pred, label = _volume()
    r3 = VolumeScores(protocol="volume_3d")
    r3.update(pred, label, "a")
    res = r3.compute()
    assert (res["protocol"], res["distance_unit"], res["hausdorff_directed"]) == ("volume_3d", "voxel", False)
    # 3D Dice: |P∩T| = 8, |P| = 16, |T| = 20
    assert res["mean_dice"] == pytest.approx(2 * 8 / 36)
    assert res["num_slices"] is None and "3D per volume" in format_volume_table(res)
    with pytest.raises(ValueError, match="protocol must be one of"):
        VolumeScores(protocol="2d")


def test_mixed_units_are_an_error():
    pred, label = _volume()
    scores = VolumeScores(protocol="slice_2d")
    scores.update(pred, label, "with_header", spacing=(0.7, 0.7, 2.0))
    scores.update(pred, label, "without")
    with pytest.raises(ValueError, match=r"\['without'\] have no voxel spacing"):
        scores.compute()


def test_report_reads_millimetres_from_the_label_header(tmp_path):
    pred, label = _volume()
    affine = torch.diag(torch.tensor([0.5, 0.5, 4.0, 1.0], dtype=torch.float64))
    label_mt = MetaTensor(label, affine=affine, meta={"filename_or_obj": "/data/scan7.nii.gz"})
    engine = Engine(lambda e, b: [{"pred": pred, "label": label_mt}])
    VolumeReport(tmp_path, protocol="slice_2d", plot=False).attach(engine)
    engine.run([0], max_epochs=1)
    r = json.loads((tmp_path / "metrics.json").read_text())
    assert (r["protocol"], r["distance_unit"]) == ("slice_2d", "mm")
    assert r["mean_hausdorff"] == pytest.approx(1.0)  # 2 pixels of 0.5 mm
    # without a header (or with spacing null) the unit is pixels, and the report says so
    engine = Engine(lambda e, b: [{"pred": pred, "label": label_mt}])
    VolumeReport(tmp_path / "px", protocol="slice_2d", spacing=None, plot=False).attach(engine)
    engine.run([0], max_epochs=1)
    r = json.loads((tmp_path / "px" / "metrics.json").read_text())
    assert r["distance_unit"] == "pixel" and r["mean_hausdorff"] == pytest.approx(2.0)
    assert "Hausdorff in pixel" in (tmp_path / "px" / "metrics.md").read_text()


def test_polycl_evaluate_json_defaults_to_the_released_protocol():
    from testlib import REPO

    cfg = json.loads((REPO / "bundles" / "polycl_liver_ct_segmentation" / "configs" / "evaluate.json").read_text())
    assert (cfg["eval_protocol"], cfg["hausdorff_spacing"]) == ("slice_2d", "auto")
    report = next(h for h in cfg["validate#handlers"] if h["_target_"].endswith("VolumeReport"))
    assert (report["protocol"], report["spacing"]) == ("@eval_protocol", "@hausdorff_spacing")
