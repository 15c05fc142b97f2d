"""sam_model_type="auto": the SAM type (ViT-B/L/H) follows the checkpoint's tensor shapes (PolyCL's default).

Real ViT-L/H models are never built: state dicts are made up with the released shapes (meta tensors,
or small files with only the keys the check reads) and ``sam_model_registry`` is replaced by a recorder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from testlib import REPO

import fewlabel.sam.teacher as teacher_module
from fewlabel.errors import CheckpointError
from fewlabel.sam import (
    SAM_CHECKPOINT_FILES,
    SAM_ENCODER_SHAPES,
    build_sam_teacher,
    build_tiny_sam,
    infer_sam_model_type,
    sam_checkpoint_path,
    sam_model_type_of,
    save_tiny_sam,
)

POLYCL = REPO / "bundles" / "polycl_liver_ct_segmentation"


def _encoder(width: int, depth: int, device: str = "meta") -> dict[str, torch.Tensor]:
    """The image-encoder keys of a SAM state dict, with the released shapes."""
    sd = {"image_encoder.patch_embed.proj.weight": torch.empty(width, 3, 16, 16, device=device),
          "image_encoder.pos_embed": torch.empty(1, 64, 64, width, device=device)}
    for i in range(depth):
        sd[f"image_encoder.blocks.{i}.norm1.weight"] = torch.empty(width, device=device)
        sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"] = torch.empty(27, width // 16, device=device)
    sd["mask_decoder.iou_token.weight"] = torch.empty(1, 256, device=device)
    return sd


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
def test_type_is_read_from_width_and_depth(model_type):
    width, depth = SAM_ENCODER_SHAPES[model_type]
    assert sam_model_type_of(_encoder(width, depth)) == model_type
    assert infer_sam_model_type(_encoder(width, depth), "x.pth") == model_type


def test_shapes_of_no_released_type_are_an_error_naming_the_file():
    assert SAM_ENCODER_SHAPES == {"vit_b": (768, 12), "vit_l": (1024, 24), "vit_h": (1280, 32)}
    assert sam_model_type_of(_encoder(1280, 12)) is None  # ViT-H width, ViT-B depth: neither
    assert sam_model_type_of({"encoder.conv1.weight": torch.empty(64, 3, 7, 7, device="meta")}) is None
    with pytest.raises(CheckpointError) as err:
        infer_sam_model_type(_encoder(1280, 12), "/models/odd_sam.pth")
    msg = str(err.value)
    assert "/models/odd_sam.pth" in msg and "1280 wide with 12 blocks" in msg and "vit_h 1280 wide / 32 blocks" in msg
    with pytest.raises(CheckpointError, match=r"resnet\.pth.*not a SAM image encoder"):
        infer_sam_model_type({"encoder.conv1.weight": torch.zeros(1)}, "resnet.pth")
    with pytest.raises(CheckpointError, match=r"list\.pth.*state dict"):
        infer_sam_model_type([1, 2], "list.pth")


@pytest.fixture()
def recorder(monkeypatch):
    """Replace segment_anything's registry: record which type was built, return a tiny SAM."""
    built: list[str] = []

    def builder(name):
        def build(checkpoint=None):
            assert checkpoint is None
            built.append(name)
            return build_tiny_sam()
        return build

    monkeypatch.setattr(teacher_module, "sam_model_registry", {t: builder(t) for t in ("vit_b", "vit_l", "vit_h")})
    return built


@pytest.mark.parametrize("wrap", ["plain", "model", "ddp"])
def test_auto_builds_the_checkpoints_type_not_vit_b(tmp_path, recorder, wrap):
    sd = _encoder(1280, 32, device="cpu")
    payload = {"plain": sd, "model": {"model": sd, "epoch": 3},
               "ddp": {f"module.{k}": v for k, v in sd.items()}}[wrap]
    path = tmp_path / "sam_vit_h_4b8939.pth"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as err:  # the made-up file holds the encoder keys only
        build_sam_teacher(path, "auto")
    assert recorder == ["vit_h"]  # built as ViT-H, not as the old default ViT-B
    assert "model_type 'vit_h'" in str(err.value) and str(path) in str(err.value)
    recorder.clear()
    with pytest.raises(CheckpointError, match="looks like a SAM 'vit_h'"):
        build_sam_teacher(path, "vit_b")  # an explicit type is kept, and a mismatch is named
    assert recorder == ["vit_b"]


def test_auto_on_a_tiny_file_and_on_a_foreign_file(tmp_path):
    teacher = build_sam_teacher(save_tiny_sam(tmp_path / "tiny.pt"), "auto")
    assert teacher.model_type == "tiny"
    foreign = tmp_path / "resnet50.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, foreign)
    with pytest.raises(CheckpointError, match=r"resnet50\.pth.*cannot tell|cannot tell.*resnet50\.pth"):
        build_sam_teacher(foreign, "auto")


def test_auto_default_checkpoint_is_the_official_file_present(tmp_path):
    models = tmp_path / "models"
    assert sam_checkpoint_path(tmp_path, "auto") == str(models / SAM_CHECKPOINT_FILES["vit_b"])  # none: ViT-B named
    models.mkdir()
    (models / SAM_CHECKPOINT_FILES["vit_h"]).write_bytes(b"")
    assert sam_checkpoint_path(tmp_path, "auto") == str(models / SAM_CHECKPOINT_FILES["vit_h"])
    assert sam_checkpoint_path(tmp_path, "vit_l") == str(models / SAM_CHECKPOINT_FILES["vit_l"])  # explicit wins


@pytest.mark.parametrize("config", ["inference.json", "evaluate.json"])
def test_polycl_configs_default_to_auto(tmp_path, config):
    raw = json.loads((POLYCL / "configs" / config).read_text())
    assert raw["sam_model_type"] == "auto"
    (tmp_path / "models").mkdir()
    vit_h = tmp_path / "models" / SAM_CHECKPOINT_FILES["vit_h"]
    vit_h.write_bytes(b"")
    parser = ConfigParser()
    names = ["inference.json"] if config == "inference.json" else ["train.json", "evaluate.json"]
    parser.read_config([str(POLYCL / "configs" / n) for n in names])
    parser["bundle_root"] = str(tmp_path)
    assert Path(parser.get_parsed_content("sam_checkpoint")) == vit_h  # only ViT-H downloaded: it is used


def test_polycl_auto_without_weights_names_the_vit_b_file_and_its_large_files_entry(tmp_path):
    import shutil

    shutil.copy(POLYCL / "large_files.yml", tmp_path / "large_files.yml")
    parser = ConfigParser()
    parser.read_config([str(POLYCL / "configs" / "inference.json")])
    parser.update({"bundle_root": str(tmp_path), "refine": "sam", "device": "cpu"})
    expected = tmp_path / "models" / SAM_CHECKPOINT_FILES["vit_b"]
    with pytest.raises(Exception) as excinfo:
        parser.get_parsed_content("inferer")
    error = excinfo.value
    while error is not None and not isinstance(error, CheckpointError):
        error = error.__cause__ or error.__context__
    assert error is not None, excinfo.value
    assert str(expected) in str(error) and "entry 'models/sam_vit_b_01ec64.pth'" in str(error)
