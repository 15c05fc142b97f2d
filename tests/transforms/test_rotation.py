"""Random rotation: the corners a rotation brings in are background in the label, whatever index the
class table gives background (SurgicalSemiSeg's in-house table has it at 1), and black in the image."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import RandRotated

from testlib import REPO
from fewlabel.data.adapters.colour_masks import load_class_table
from fewlabel.transforms import RandRotateFilld, background_index

CONFIGS = REPO / "bundles" / "surgical_semiseg_laparoscopy_segmentation" / "configs"
TEN_DEGREES = (0.17, 0.17453)  # radians: always close to the paper's largest rotation


def _data(h: int = 48, w: int = 80, cls: int = 5) -> dict[str, torch.Tensor]:
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.2  # no black pixel
    return {"image": image, "label": torch.full((1, h, w), float(cls))}


def _corners(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x[..., 0, 0], x[..., 0, -1], x[..., -1, 0], x[..., -1, -1]])


def test_fill_values_for_the_new_corners_and_nothing_else() -> None:
    rot = RandRotateFilld(["image", "label"], fill=[0, 1], range_x=TEN_DEGREES, prob=1.0,
                          mode=["bilinear", "nearest"])
    rot.set_random_state(0)
    out = rot(_data())
    label = out["label"]
    assert torch.all(_corners(label) == 1)  # background (index 1), not class 0
    assert set(label.unique().tolist()) == {1.0, 5.0}  # nearest: no value in between
    assert label[0, 24, 40] == 5  # the middle keeps its class
    assert torch.all(_corners(out["image"]) == 0)  # the image's new corners are black
    # the image is rotated exactly as MONAI's RandRotated does it (fill 0 there)
    ref = RandRotated(["image", "label"], range_x=TEN_DEGREES, prob=1.0, mode=["bilinear", "nearest"],
                      padding_mode="zeros")
    ref.set_random_state(0)
    expected = ref(_data())
    assert torch.allclose(torch.as_tensor(out["image"]), torch.as_tensor(expected["image"]), atol=1e-6)
    assert torch.all(_corners(expected["label"]) == 0)  # what plain zero padding would have said


def test_fill_checks() -> None:
    with pytest.raises(ValueError, match="padding_mode"):
        RandRotateFilld(["image", "label"], fill=[0, 1], padding_mode="border")
    with pytest.raises(ValueError, match="2 values"):
        RandRotateFilld(["image"], fill=[0, 1])
    assert background_index(["abdominal wall", "Background", "liver"]) == 1
    assert background_index(["tissue", "tool"]) == 0


def _rotated_label(class_names: list[str] | None) -> tuple[int, torch.Tensor]:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    if class_names is not None:
        parser["class_names"] = class_names
    parser["augment#0#range_x"] = list(TEN_DEGREES)
    rotation = parser.get_parsed_content("augment")[0]
    rotation.set_random_state(3)
    data = _data(cls=len(parser.get_parsed_content("class_names")) - 1)
    return parser.get_parsed_content("background_label"), rotation(data)["label"]


def test_inhouse_table_rotation_pads_labels_with_its_background() -> None:
    names = [c["name"] for c in load_class_table("surgical_semiseg_inhouse")]
    assert names[1] == "background"  # the table keeps the paper's (alphabetical) order
    background, label = _rotated_label(names)
    assert background == 1
    assert torch.all(_corners(label) == 1) and not torch.any(label == 0)  # never "abdominal wall"


def test_bundle_default_classes_pad_with_background_zero() -> None:
    background, label = _rotated_label(None)
    assert background == 0
    assert torch.all(_corners(label) == 0)
