"""MedSASS evaluation: the threshold baseline uses the thresholding method being evaluated (Table 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from testlib import REPO

BUNDLE = REPO / "bundles" / "medsass_binary_segmentation"


def _image() -> torch.Tensor:
    """A 3x32x32 image in [0, 1] with a brightness ramp and a brighter disc: global and local thresholds differ."""
    yy, xx = np.mgrid[:32, :32].astype(np.float32)
    img = 0.6 * xx / 31 + 0.3 * (((yy - 16) ** 2 + (xx - 10) ** 2) < 36)
    return torch.from_numpy(np.repeat(img[None], 3, 0).clip(0, 1))


@pytest.mark.parametrize("method", ["adaptive_mean", "adaptive_gaussian", "ght", "otsu"])
def test_threshold_baseline_uses_the_evaluated_method(method, tmp_path):
    from fewlabel.transforms import ThresholdMask

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / n) for n in ("train.json", "evaluate.json")])
    parser.update({"threshold_method": method, "output_dir": str(tmp_path)})
    post = parser.get_parsed_content("validate#postprocessing")
    image = _image()
    out = post({"image": image, "pred": torch.zeros(1, 32, 32), "label": torch.zeros(1, 32, 32)})
    expected = ThresholdMask(method)(image)
    assert torch.equal(torch.as_tensor(out["threshold_mask"]), torch.as_tensor(expected))
    if method != "otsu":  # not Otsu's mask: the cell compares against its own method
        assert not torch.equal(torch.as_tensor(out["threshold_mask"]), torch.as_tensor(ThresholdMask("otsu")(image)))
    handlers = parser["validate#handlers"]
    baseline = next(i for i, h in enumerate(handlers) if h.get("name") == "threshold_baseline")
    assert method in parser.get_parsed_content(f"validate#handlers#{baseline}#title")


def test_table3_sweep_passes_the_method_to_the_evaluation_stage(tmp_path):
    from fewlabel.sweep.spec import load_spec

    spec = load_spec(BUNDLE / "sweeps" / "table3_thresholding.yaml")
    stage = next(s for s in spec.stages if s.name == "zero_label")
    methods = {r.stage_overrides(stage)["threshold_method"] for r in spec.runs(tmp_path)}
    assert methods == {"adaptive_mean", "adaptive_gaussian", "ght", "otsu"}


def test_threshold_baseline_takes_the_methods_settings(tmp_path):
    from fewlabel.transforms import ThresholdMask

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / n) for n in ("train.json", "evaluate.json")])
    parser.update({"threshold_method": "adaptive_mean", "polarity": "dark",
                   "threshold_kwargs": {"block_size": 5}, "output_dir": str(tmp_path)})
    image = _image()
    out = parser.get_parsed_content("validate#postprocessing")({"image": image, "pred": torch.zeros(1, 32, 32)})
    expected = ThresholdMask("adaptive_mean", "dark", block_size=5)(image)
    assert torch.equal(torch.as_tensor(out["threshold_mask"]), torch.as_tensor(expected))
    assert not torch.equal(torch.as_tensor(expected), torch.as_tensor(ThresholdMask("adaptive_mean", "dark")(image)))
