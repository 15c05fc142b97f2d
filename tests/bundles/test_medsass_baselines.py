"""MedSASS's self-supervised baselines on lightly (BYOL, SimSiam, DINO of the ResNet U-Net's encoder; DINO, MAE,
SimMIM of the ViT U-Net's ViT) on the bundle's demo data: one epoch of pre-training, the encoder transferred exactly
into the same U-Net, zero-label evaluation, and their sweep rows."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import ConfigWorkflow

from testlib import REPO
from fewlabel.protocols import run_stage

BUNDLE = "medsass_binary_segmentation"
CONFIGS = REPO / "bundles" / BUNDLE / "configs"
SMOKE = json.loads((CONFIGS / "smoke.json").read_text())
HEADS = {"ssl_network#projection_dim": 32, "ssl_network#hidden_dim": 64}
SMALL_VIT = {"arch": "vit_unet", "network_def#hidden_size": 64, "network_def#mlp_dim": 128, "network_def#num_heads": 2,
             "network_def#num_layers": 2}
DECODER = {"mim_network#decoder_dim": 32, "mim_network#decoder_depth": 1, "mim_network#decoder_heads": 2}
CASES = {  # method -> (pre-training configs, overrides)
    "byol": ("pretrain_siamese.json", HEADS),
    "simsiam": ("pretrain_siamese.json", HEADS),
    "dino": ("pretrain_siamese.json", HEADS),
    "dino_vit": ("pretrain_siamese.json", {**HEADS, **SMALL_VIT, "pretrain_method": "dino"}),
    "mae": ("pretrain_masked_image.json", {**SMALL_VIT, **DECODER}),
    "simmim": ("pretrain_masked_image.json", {**SMALL_VIT, **DECODER}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_baseline_pretrains_and_its_encoder_transfers_exactly(case, tmp_path):
    config, extra = CASES[case]
    extra = {"pretrain_method": case, **extra}
    network = {k: v for k, v in extra.items() if k in SMALL_VIT}  # what every stage needs to build the same network
    models, out = tmp_path / "models", tmp_path / "out"
    run_stage(BUNDLE, ("train.json", "pretrain_encoder.json", config), ckpt_dir=str(models),
              output_dir=str(out / "pretrain"), **SMOKE, **extra)
    saved = torch.load(models / "pretrained.pt", map_location="cpu", weights_only=True)
    trained = torch.load(models / "resume_pretrained.pt", map_location="cpu", weights_only=True)["network"]
    prefix = "vit." if network else "encoder."
    encoder_keys = [k for k in saved if k.startswith(prefix)]
    # the wrapper trained the network's own encoder: its tensors are the saved network's
    wrapper_prefix = "backbone.vit." if config == "pretrain_masked_image.json" else "encoder."
    trained_encoder = {k.removeprefix(wrapper_prefix): v for k, v in trained.items() if k.startswith(wrapper_prefix)}
    assert encoder_keys and all(torch.equal(saved[k], trained_encoder[k.removeprefix(prefix)]) for k in encoder_keys)
    # the training moved the encoder away from its seeded start; the decoder stays at it
    fresh = ConfigWorkflow(config_file=[str(CONFIGS / "train.json")], meta_file=str(CONFIGS / "metadata.json"),
                           workflow_type="train", **SMOKE, **network)
    fresh.initialize()
    start = fresh.parser.get_parsed_content("network_def").state_dict()
    assert any(not torch.equal(saved[k], start[k]) for k in encoder_keys if saved[k].is_floating_point())
    decoder = ("up", "outc.") if network else ("decoder.",)
    assert all(torch.equal(saved[k], v) for k, v in start.items() if k.startswith(decoder))
    # fine-tuning (encoder-only transfer, as MedSASS-E) starts with the pre-trained encoder, tensor by tensor
    finetune = ConfigWorkflow(config_file=[str(CONFIGS / "train.json")], meta_file=str(CONFIGS / "metadata.json"),
                              workflow_type="train", ckpt_dir=str(models), pretrain_mode="encoder",
                              from_pretrained=True, **SMOKE, **network)
    finetune.initialize()
    net = finetune.parser.get_parsed_content("network").state_dict()
    assert all(torch.equal(net[k].cpu(), saved[k]) for k in encoder_keys)
    # the zero-label evaluation reads the same file, as for MedSASS-E
    run_stage(BUNDLE, ("train.json", "evaluate.json"), ckpt_dir=str(models), output_dir=str(out / "zero_label"),
              ckpt_name="pretrained.pt", **SMOKE, **network)
    metrics = json.loads((out / "zero_label" / "metrics.json").read_text())
    assert 0.0 <= metrics["mean_iou"] <= 1.0


def test_tables_1_2_spec_runs_the_baselines_beside_medsass(tmp_path):
    from fewlabel.sweep.spec import load_spec

    spec = load_spec(REPO / "bundles" / BUNDLE / "sweeps" / "tables1_2_backbones.yaml")
    by_method: dict[str, set] = {}
    for run in spec.runs(tmp_path):
        stages = [s.name for s in run.active_stages()]
        method = run.params["pretrain_method"]
        by_method.setdefault(method, set()).add(run.params["arch"])
        pretrain = {"medsass": "pretrain", "mae": "pretrain_masked_image", "simmim": "pretrain_masked_image"}.get(
            method, "pretrain_siamese")
        assert stages == [pretrain, "zero_label"]
        if method != "medsass":
            stage = next(s for s in run.stages if s.name == pretrain)
            assert run.stage_overrides(stage)["pretrain_method"] == method
            assert stage.configs[1] == "pretrain_encoder.json"
    assert by_method["medsass"] == {"medsass_unet", "vit_unet"}
    for method in ("byol", "simsiam"):
        assert by_method[method] == {"medsass_unet"}
    assert by_method["dino"] == {"medsass_unet", "vit_unet"}
    assert by_method["mae"] == by_method["simmim"] == {"vit_unet"}
