"""SurgicalSemiSeg's pre-training baselines on the demo data: rotation prediction, SimCLR (encoder only) and
colourisation (whole network) pre-train for one epoch, and fine-tuning starts from exactly their weights."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import ConfigWorkflow

from testlib import REPO
from fewlabel.protocols import run_stage

BUNDLE = "surgical_semiseg_laparoscopy_segmentation"
CONFIGS = REPO / "bundles" / BUNDLE / "configs"
SMOKE = json.loads((CONFIGS / "smoke.json").read_text())

BASELINES = {  # configs after train.json, and what fine-tuning takes from the pre-trained network
    "rotation": (("pretrain_encoder.json", "pretrain_rotation.json"), "encoder"),
    "simclr": (("pretrain_encoder.json", "pretrain_simclr.json"), "encoder"),
    "colourisation": (("pretrain.json", "variants/colourisation.json"), "all_but_head"),
}


@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_pretrains_and_fine_tuning_starts_from_it(name, tmp_path):
    configs, transfer = BASELINES[name]
    models = tmp_path / "models"
    run_stage(BUNDLE, ("train.json", *configs), ckpt_dir=str(models), output_dir=str(tmp_path / "pretrain"),
              **{**SMOKE, "batch_size": 4})
    saved = torch.load(models / "pretrained.pt", map_location="cpu", weights_only=True)
    finetune = ConfigWorkflow(config_file=[str(CONFIGS / "train.json")], meta_file=str(CONFIGS / "metadata.json"),
                              workflow_type="train", ckpt_dir=str(models), from_pretrained=True, transfer=transfer,
                              **SMOKE)
    finetune.initialize()
    net = finetune.parser.get_parsed_content("network").state_dict()
    fresh = ConfigWorkflow(config_file=[str(CONFIGS / "train.json")], meta_file=str(CONFIGS / "metadata.json"),
                           workflow_type="train", **SMOKE)
    fresh.initialize()
    start = fresh.parser.get_parsed_content("network_def").state_dict()
    moved = [k for k in net if k.startswith("encoder.") and net[k].is_floating_point()
             and not torch.equal(saved[k], start[k])]
    assert moved, "pre-training changed no encoder weight"
    copied = [k for k in net if k.startswith("encoder.")]
    if transfer == "all_but_head":
        copied = [k for k in net if not k.startswith("segmentation_head.")]
    assert all(torch.equal(net[k].cpu(), saved[k]) for k in copied)


def test_imagenet_initialisation_reads_a_local_backbone_file(tmp_path):
    import torchvision

    from fewlabel.errors import CheckpointError

    backbone = torchvision.models.resnet18(weights=None).state_dict()  # the layout torchvision publishes
    path = tmp_path / "imagenet_resnet18.pth"
    torch.save(backbone, path)
    configs = [str(CONFIGS / "train.json"), str(CONFIGS / "variants" / "imagenet.json")]
    default = ConfigWorkflow(config_file=configs, meta_file=str(CONFIGS / "metadata.json"), workflow_type="train",
                             **SMOKE)
    assert default.parser.get_parsed_content("imagenet_weights").endswith("/models/imagenet_resnet18.pth")
    wf = ConfigWorkflow(config_file=configs, meta_file=str(CONFIGS / "metadata.json"), workflow_type="train",
                        imagenet_weights=str(path), **SMOKE)
    wf.initialize()
    net = wf.parser.get_parsed_content("network").state_dict()
    assert all(torch.equal(net["encoder." + k].cpu(), v) for k, v in backbone.items() if not k.startswith("fc."))
    missing = ConfigWorkflow(config_file=configs, meta_file=str(CONFIGS / "metadata.json"), workflow_type="train",
                             imagenet_weights=str(tmp_path / "absent.pth"), **SMOKE)
    with pytest.raises(Exception) as err:
        missing.initialize()
    cause = err.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, CheckpointError) and "absent.pth" in str(cause)
