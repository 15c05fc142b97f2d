"""Image/label loading errors, overlays, the on-device pseudo-label batch and the metrics report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from PIL import Image

from fewlabel.data import list_images
from fewlabel.engines import CheckpointLoader, PseudoLabelStatsHandler, ThresholdPseudoLabels
from fewlabel.errors import CheckpointError, DataError
from fewlabel.metrics import SegmentationReport, SegmentationScores
from fewlabel.transforms import CheckSameSize2Dd, LoadImage2D, LoadLabel2D, SaveMask2Dd, overlay_mask


@pytest.fixture
def pngs(tmp_path):
    rgb = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((20, 30), 255, np.uint8)])).save(tmp_path / "rgba.png")
    raw = (tmp_path / "rgb.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(raw[: len(raw) // 2])
    Image.fromarray((rgb[..., 0] > 128).astype(np.uint8) * 255).save(tmp_path / "mask255.png")
    Image.fromarray(np.full((20, 30), 7, np.uint8)).save(tmp_path / "label7.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small_label.png")
    return tmp_path


def test_load_image_shapes_ranges_and_alpha(pngs):
    img = LoadImage2D(channels=3)(pngs / "rgb.png")
    assert img.shape == (3, 20, 30) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    assert img.meta["filename_or_obj"].endswith("rgb.png")
    assert LoadImage2D(channels=3)(pngs / "rgba.png").shape == (3, 20, 30)
    assert LoadImage2D(channels=1)(pngs / "gray.png").shape == (1, 20, 30)


def test_channel_mismatch_is_an_error_naming_the_file_or_converted(pngs):
    with pytest.raises(DataError, match=r"gray\.png is a grayscale image.*RGB"):
        LoadImage2D(channels=3)(pngs / "gray.png")
    with pytest.raises(DataError, match=r"rgb\.png is a RGB image.*grayscale"):
        LoadImage2D(channels=1)(pngs / "rgb.png")
    assert LoadImage2D(channels=3, channel_policy="convert")(pngs / "gray.png").shape == (3, 20, 30)
    assert LoadImage2D(channels=1, channel_policy="convert")(pngs / "rgb.png").shape == (1, 20, 30)


def test_truncated_and_missing_files_name_the_file(pngs):
    with pytest.raises(DataError, match=r"truncated\.png"):
        LoadImage2D()(pngs / "truncated.png")
    with pytest.raises(DataError, match=r"nothere\.png"):
        LoadImage2D()(pngs / "nothere.png")


def test_labels_binary_and_out_of_range(pngs):
    lab = LoadLabel2D(binary=True)(pngs / "mask255.png")
    assert set(lab.unique().tolist()) <= {0.0, 1.0} and lab.shape == (1, 20, 30)
    with pytest.raises(DataError, match=r"label7\.png has values \[7\.0\] outside the classes 0\.\.1"):
        LoadLabel2D(num_classes=2)(pngs / "label7.png")
    d = {"image": LoadImage2D()(pngs / "rgb.png"), "label": LoadLabel2D()(pngs / "small_label.png")}
    with pytest.raises(DataError, match=r"rgb\.png is 20x30.*small_label\.png is 10x10"):
        CheckSameSize2Dd(keys=["image", "label"])(d)


def test_list_images_errors(tmp_path, pngs):
    assert len(list_images(pngs)) >= 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        list_images(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        list_images(tmp_path / "nope")


def test_save_mask_writes_mask_and_overlay(pngs, tmp_path):
    img = LoadImage2D()(pngs / "rgb.png")
    pred = img[:1].clone()
    pred[:] = 0
    pred[:, 5:10, 5:20] = 1
    SaveMask2Dd(keys="pred", output_dir=tmp_path / "out")({"pred": pred})
    mask = np.asarray(Image.open(tmp_path / "out" / "rgb_mask.png"))
    assert mask.shape == (20, 30) and set(np.unique(mask)) == {0, 255} and (mask == 255).sum() == 75
    over = np.asarray(Image.open(tmp_path / "out" / "rgb_overlay.png"))
    assert over.shape == (20, 30, 3)
    assert np.array_equal(overlay_mask(np.zeros((4, 4)), np.zeros((4, 4))), np.zeros((4, 4, 3), np.uint8))


def test_pseudo_label_batch_marks_constant_images_and_counts_them():
    images = torch.rand(3, 3, 16, 16)
    images[2] = 0.25
    pb = ThresholdPseudoLabels()
    engine = Engine(lambda e, b: None)
    stats = PseudoLabelStatsHandler(pb)
    stats.attach(engine)
    x, y = pb({"image": images, "label": torch.zeros(3, 1, 16, 16)}, device="cpu")
    assert x.shape == images.shape and y.shape == (3, 1, 16, 16)
    assert set(y[:2].unique().tolist()) == {0.0, 1.0} and (y[2] == -1).all()
    assert pb.skipped == 1 and pb.seen == 3
    stats.report(engine)
    assert engine.state.metrics["pseudo_label_skipped"] == pytest.approx(1 / 3)
    _, y_val = ThresholdPseudoLabels(ignore_index=None)({"image": images})
    assert (y_val[2] == 0).all()


def test_scores_and_report(tmp_path):
    label = torch.zeros(2, 1, 8, 8)
    label[:, :, 2:6, 2:6] = 1
    pred = torch.zeros(2, 1, 8, 8)
    pred[:, :, 2:6, 2:4] = 1
    s = SegmentationScores(["background", "nuclei"])
    s.update(pred, label)
    r = s.compute()
    assert r["per_class"]["nuclei"]["iou"] == pytest.approx(0.5)
    assert r["per_class"]["nuclei"]["dice"] == pytest.approx(2 / 3)
    assert r["per_class"]["background"]["iou"] == pytest.approx(48 / 56)
    assert r["mean_iou_foreground"] == pytest.approx(0.5)
    # an image where the class is absent from both is left out, not counted as 0 or 1
    s.update(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    assert s.compute()["per_class"]["nuclei"]["iou"] == pytest.approx(0.5)

    engine = Engine(lambda e, b: {"pred": list(pred), "label": list(label)})
    report = SegmentationReport(tmp_path, ["background", "nuclei"], name="m")
    report.attach(engine)
    engine.run([0], max_epochs=1)
    assert json.loads((tmp_path / "m.json").read_text())["per_class"]["nuclei"]["iou"] == pytest.approx(0.5)
    assert "| nuclei | 0.5000 |" in (tmp_path / "m.md").read_text()
    assert engine.state.metrics["m_mean_iou_foreground"] == pytest.approx(0.5)


def test_missing_bundle_weights_point_at_large_files_yml():
    from testlib import REPO
    from fewlabel.engines import missing_weights_message

    msg = missing_weights_message(REPO / "bundles" / "medsass_binary_segmentation" / "models" / "model.pt")
    assert "large_files.yml" in msg and "models/model.pt" in msg and "configs/train.json" in msg


def test_checkpoint_loader_errors_name_the_file(tmp_path):
    net = torch.nn.Conv2d(1, 1, 1)
    engine = Engine(lambda e, b: None)
    with pytest.raises(CheckpointError, match=r"model\.pt.*Train the bundle first"):
        CheckpointLoader(load_path=str(tmp_path / "model.pt"), load_dict={"model": net}).attach(engine)
    torch.save({"model": torch.nn.Conv2d(2, 1, 1).state_dict()}, tmp_path / "other.pt")
    loader = CheckpointLoader(load_path=str(tmp_path / "other.pt"), load_dict={"model": net})
    with pytest.raises(CheckpointError, match=r"other\.pt.*another network_def"):
        loader(engine)


def test_underrepresented_classes_from_training_pixel_shares(tmp_path):
    from fewlabel.data import class_pixel_shares
    from fewlabel.metrics import format_table

    lab = np.zeros((20, 20), np.uint8)
    lab[:10] = 1
    lab[0, 0] = 2  # class 2: 1 pixel of 400 -> 0.25 %
    Image.fromarray(lab).save(tmp_path / "l.png")
    names = ["background", "liver", "duct"]
    shares = class_pixel_shares([{"image": "x", "label": str(tmp_path / "l.png")}], names, cache=tmp_path / "s.json")
    assert shares == pytest.approx({"background": 200 / 400, "liver": 199 / 400, "duct": 1 / 400})
    assert class_pixel_shares([{"label": str(tmp_path / "l.png")}], names, cache=tmp_path / "s.json") == shares
    scores = SegmentationScores(names, class_shares=shares)
    t = torch.from_numpy(lab.astype(np.float32))[None, None]
    p = t.clone()
    p[0, 0, 0, 0] = 0  # misses the duct pixel
    scores.update(p, t)
    r = scores.compute()
    assert r["underrepresented"] == ["duct"] and r["mean_iou_underrepresented"] == 0.0
    assert "| under-represented | 1 | 0.0000" in format_table(r)


def test_save_mask_with_palette_writes_colour_codes(pngs, tmp_path):
    pred = LoadImage2D()(pngs / "rgb.png")[:1].clone()
    pred[:] = 0
    pred[:, :5] = 2
    palette = [[0, 0, 0], [255, 0, 0], [0, 250, 200]]
    SaveMask2Dd(keys="pred", output_dir=tmp_path / "o", num_classes=3, palette=palette)({"pred": pred})
    mask = np.asarray(Image.open(tmp_path / "o" / "rgb_mask.png"))
    assert mask.shape == (20, 30, 3) and (mask[:5] == [0, 250, 200]).all() and (mask[5:] == 0).all()
    with pytest.raises(ValueError, match="palette"):
        SaveMask2Dd(keys="pred", output_dir=tmp_path, num_classes=4, palette=palette)
