"""SurgicalSemiSeg pieces outside the transform: denoising batches, the mask search, the demo."""

from __future__ import annotations

import json

import pytest
import torch

from fewlabel.engines import DenoisingPairs
from fewlabel.transforms import MaskCorruption, mask_ratio


BUNDLE = "surgical_semiseg_laparoscopy_segmentation"


def test_denoising_pairs_corrupt_inputs_and_keep_clean_targets():
    images = torch.rand(4, 3, 64, 96)
    inputs, targets = DenoisingPairs(MaskCorruption(ratio=0.4, patch_size=16))({"image": images}, device="cpu")
    assert torch.equal(targets, images)
    masked = (inputs != images).any(dim=1, keepdim=True).float()
    assert ((masked.flatten(1).mean(1) - 0.4).abs() <= 0.011).all()
    assert (inputs[masked.expand_as(inputs) > 0] == 0).all()  # black fill
    same, _ = DenoisingPairs(MaskCorruption(ratio=0.0))({"image": images}, device="cpu")
    assert torch.equal(same, images)
    assert mask_ratio(torch.ones(2, 1, 8, 8)).tolist() == [0.0, 0.0]


@pytest.mark.slow
def test_quick_surgical_demo_reports_both_initialisations(tmp_path):
    from fewlabel.cli import demo

    demo(BUNDLE, output_dir=str(tmp_path), quick=True)
    summary = json.loads((tmp_path / BUNDLE / "summary.json").read_text())
    assert 0 <= summary["miou_pretrained"] <= 1 and 0 <= summary["miou_random_init"] <= 1
    assert summary["labelled_training_frames"] > 0 and summary["unlabelled_frames"] > 0
    assert list((tmp_path / BUNDLE / "predictions").glob("*_overlay.png"))
