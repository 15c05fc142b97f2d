"""SAM knowledge-mining bundle: supervised -> one-time -> continuous -> evaluate -> fast and accurate
inference on demo data with a tiny SAM saved to a file; the frozen teacher inside the bundle's own
mining stage; the accurate inferer; errors for a missing teacher checkpoint and bad options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.inferers import SimpleInferer
from PIL import Image

from testlib import REPO

from fewlabel.data import load_datalist
from fewlabel.errors import CheckpointError
from fewlabel.protocols import PROTOCOLS, run_stage
from fewlabel.sam import (
    NO_PROMPT_LOGIT,
    SamRefineInferer,
    build_inferer,
    build_sam_teacher,
    build_tiny_sam,
    make_prompts,
    tiny_sam_checkpoint,
)

BUNDLE = REPO / "bundles" / "sam_mining_polyp_segmentation"
NAME = BUNDLE.name
SMOKE = {k: v for k, v in json.loads((BUNDLE / "configs" / "smoke.json").read_text()).items()
         if k not in ("sam_checkpoint", "sam_model_type")}


def _chain(e: BaseException) -> list[BaseException]:
    out = []
    while e is not None:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The bundle's protocol on smoke-sized demo data: every stage's output folder and the models folder."""
    root = tmp_path_factory.mktemp("sam_mining")
    models = root / "models"
    sam = {"sam_model_type": "tiny", "sam_checkpoint": tiny_sam_checkpoint(models / "tiny_sam.pt")}
    for stage in PROTOCOLS[NAME]:
        extra = sam if "mine.json" in stage.configs else {}
        run_stage(NAME, stage.configs, **SMOKE, **extra, **stage.overrides, ckpt_dir=str(models),
                  output_dir=str(root / stage.name))
    return root, sam


def test_protocol_runs_supervised_then_one_time_then_continuous_and_evaluates_each(trained):
    root, _ = trained
    for name in ("supervised.pt", "one_time.pt", "model.pt"):
        state = torch.load(root / "models" / name, map_location="cpu", weights_only=True)
        assert state and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), name
    # one-time mining wrote a pseudo-label per unlabelled image, in the image's own size, 0/1
    datalist = root / "one_time" / "pseudo_labels" / "pseudo_datalist.json"
    pseudo = json.loads(datalist.read_text())
    items = load_datalist(datalist, "training")
    assert items and pseudo["mining"]["schedule"] == "one_time"
    for it in items:
        mask = np.asarray(Image.open(it["label"]))
        image = np.asarray(Image.open(it["image"]))
        assert mask.shape == image.shape[:2] and set(np.unique(mask)) <= {0, 1}
        assert it["is_labelled"] == 0 and it["valid"] in (0, 1)
    for stage in ("evaluate_supervised", "evaluate_one_time", "evaluate"):
        metrics = json.loads((root / stage / "metrics.json").read_text())
        assert metrics["num_images"] > 0 and 0.0 <= metrics["per_class"]["polyp"]["dice"] <= 1.0


@pytest.mark.parametrize("mode", ["fast", "accurate"])
def test_inference_modes_write_masks_at_the_original_size(trained, mode):
    root, sam = trained
    infer = {k: SMOKE[k] for k in ("encoder_name", "image_size", "demo_kwargs")}
    out = root / f"pred_{mode}"
    run_stage(NAME, ["inference.json"], **infer, **sam, ckpt_path=str(root / "models" / "model.pt"),
              inference_mode=mode, output_dir=str(out))
    masks = sorted(out.glob("*_mask.png"))
    assert masks
    # the switch picks the inferer in inference.json and in evaluate.json alike
    expected = SamRefineInferer if mode == "accurate" else SimpleInferer
    for names, key in ((("inference.json",), "inferer"), (("train.json", "evaluate.json"), "validate#inferer")):
        parser = ConfigParser()
        parser.read_config([str(BUNDLE / "configs" / n) for n in names])
        parser.update({**sam, "inference_mode": mode})
        assert type(parser.get_parsed_content(key)) is expected, names
    size = tuple(SMOKE["demo_kwargs"]["size"])
    for m in masks:
        arr = np.asarray(Image.open(m))
        assert arr.shape == size and set(np.unique(arr)) <= {0, 255}  # binary masks are written 0 / 255


def test_the_bundle_teacher_stays_frozen_through_a_mining_epoch(tmp_path):
    """Build the mining stage from the configs, run its trainer for an epoch: SAM's weights do not
    change, get no gradient and are not in the optimizer."""
    models = tmp_path / "models"
    run_stage(NAME, ["train.json"], **SMOKE, ckpt_dir=str(models), output_dir=str(tmp_path / "sup"))
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / n) for n in ("train.json", "mine.json")])
    parser.update({**SMOKE, "ckpt_dir": str(models), "output_dir": str(tmp_path / "mine"), "sam_model_type": "tiny",
                   "sam_checkpoint": tiny_sam_checkpoint(models / "tiny_sam.pt")})
    parser.parse()
    teacher = parser.get_parsed_content("teacher")
    trainer = parser.get_parsed_content("train#trainer")
    optimizer = parser.get_parsed_content("optimizer")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = [p.detach().clone() for p in trainer.network.parameters()]
    assert trainer.prepare_batch.teacher is teacher
    parser.get_parsed_content("initialize")  # determinism, early stopping's trainer
    trainer.run()
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    optimised = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in teacher.parameters()}
    assert any(not torch.equal(a, b) for a, b in zip(student_before, trainer.network.parameters()))
    assert teacher.cache.stats()["misses"] > 0  # the teacher was consulted, through its cache


def test_mining_without_the_sam_checkpoint_names_the_file(tmp_path):
    models = tmp_path / "models"
    run_stage(NAME, ["train.json"], **SMOKE, ckpt_dir=str(models), output_dir=str(tmp_path / "sup"))
    missing = tmp_path / "weights" / "sam_vit_b_01ec64.pth"
    with pytest.raises(Exception) as info:
        run_stage(NAME, ["train.json", "mine.json"], **SMOKE, ckpt_dir=str(models), output_dir=str(tmp_path / "mine"),
                  sam_checkpoint=str(missing))
    errors = [e for e in _chain(info.value) if isinstance(e, CheckpointError)]
    assert errors and str(missing) in str(errors[0]) and "large_files.yml" in str(errors[0])


def test_mining_without_the_supervised_checkpoint_says_which_stage_to_run(tmp_path):
    with pytest.raises(Exception) as info:
        run_stage(NAME, ["train.json", "mine.json"], **SMOKE, ckpt_dir=str(tmp_path / "models"),
                  output_dir=str(tmp_path / "mine"), sam_model_type="tiny",
                  sam_checkpoint=tiny_sam_checkpoint(tmp_path / "tiny_sam.pt"))
    errors = [e for e in _chain(info.value) if isinstance(e, CheckpointError)]
    assert errors and "supervised.pt" in str(errors[0]) and "train.json" in str(errors[0])


class _ConstantStudent(torch.nn.Module):
    """Logits: a fixed blob (positive inside, negative outside) where ``keep`` is True, else -10 everywhere (empty)."""

    def __init__(self, blob: torch.Tensor, keep: torch.Tensor) -> None:
        super().__init__()
        self.blob, self.keep = blob, keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blob = self.blob[None, None].expand(x.shape[0], 1, -1, -1)
        return torch.where(self.keep.view(-1, 1, 1, 1), blob, torch.full_like(blob, -10.0))


def test_accurate_inferer_returns_sam_logits_for_the_student_prompts(tmp_path):
    teacher = build_sam_teacher(tiny_sam_checkpoint(tmp_path / "tiny.pt"), "tiny")
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(40.0), indexing="ij")
    blob = 4.0 - ((yy - 20) ** 2 + (xx - 15) ** 2) / 16.0
    student = _ConstantStudent(blob, torch.tensor([True, False]))  # image 1: nothing above 0.5 -> no prompt
    images = torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(0))
    inferer = SamRefineInferer(teacher, num_points=2, seed=0)
    out = inferer(images, student)
    assert out.shape == (2, 1, 48, 40) and out.dtype == torch.float32
    prompts = make_prompts(torch.sigmoid(student(images))[:, 0], 2, 0.5, torch.Generator().manual_seed(0))
    assert prompts[1] is None
    expected = teacher.predict(teacher.embed(images[:1]), prompts[:1], (48, 40))
    assert torch.allclose(out[:1], expected, atol=1e-5)
    assert torch.all(out[1] == NO_PROMPT_LOGIT) and inferer.no_prompt == 1


def test_build_inferer_modes_and_errors(tmp_path):
    assert isinstance(build_inferer("fast", None), SimpleInferer)  # no checkpoint needed for the student alone
    with pytest.raises(ValueError, match="inference_mode"):
        build_inferer("precise")
    with pytest.raises(ValueError, match="sam_checkpoint"):
        build_inferer("accurate", None)
    with pytest.raises(CheckpointError, match="nowhere.pth"):
        build_inferer("accurate", tmp_path / "nowhere.pth")
    path = tiny_sam_checkpoint(tmp_path / "tiny.pt")
    inferer = build_inferer("accurate", path, "tiny", num_points=5, prompt_mode="box")
    assert isinstance(inferer, SamRefineInferer) and inferer.num_points == 5 and inferer.mode == "box"


def test_tiny_sam_checkpoint_is_written_once(tmp_path):
    path = tmp_path / "sub" / "tiny.pt"
    assert tiny_sam_checkpoint(path, seed=0) == str(path)
    stamp = path.stat().st_mtime_ns
    tiny_sam_checkpoint(path, seed=1)  # an existing file is kept as it is
    assert path.stat().st_mtime_ns == stamp
    kept = build_sam_teacher(path, "tiny").sam.state_dict()  # still the seed-0 weights
    assert all(torch.equal(v, build_tiny_sam(seed=0).state_dict()[k]) for k, v in kept.items())


def test_simclr_pretraining_then_the_supervised_stage_starts_from_its_encoder(tmp_path):
    models = tmp_path / "models"
    run_stage(NAME, ["train.json", "pretrain.json"], **SMOKE, ckpt_dir=str(models), output_dir=str(tmp_path / "simclr"))
    simclr = torch.load(models / "simclr.pt", map_location="cpu", weights_only=True)
    simclr = simclr.get("model", simclr)
    assert any(k.startswith("projection.") for k in simclr)
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update({**SMOKE, "ckpt_dir": str(models), "from_simclr": True})
    student = parser.get_parsed_content("network_init")
    for k, v in student.encoder.state_dict().items():
        assert torch.equal(v, simclr[f"encoder.{k}"]), k
    parser.update({"ckpt_dir": str(tmp_path / "elsewhere")})  # asked for, but missing: a clear error
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("network_init", lazy=False)
    errors = [e for e in _chain(info.value) if isinstance(e, CheckpointError)]
    assert errors and "simclr.pt" in str(errors[0]) and "pretrain.json" in str(errors[0])


def _references(node, target: str) -> list[dict]:
    """Every dict in a raw config tree whose ``_target_`` ends with ``target``."""
    found = []
    if isinstance(node, dict):
        if str(node.get("_target_", "")).endswith(target):
            found.append(node)
        for value in node.values():
            found += _references(value, target)
    elif isinstance(node, list):
        for value in node:
            found += _references(value, target)
    return found


def test_grey_xray_channel_keys_exist_and_reach_every_stage():
    """COVID-QU-Ex (grey X-ray, Table 2) runs from a sweep spec that sets ``channel_policy: convert`` (or
    ``image_channels: 1``): both keys must be top-level keys of every stage's merged configs (protocol stages,
    SimCLR pre-training, inference) and every image loader, the mining step and the student must read them."""
    stage_configs = [list(stage.configs) for stage in PROTOCOLS[NAME]]
    stage_configs += [["train.json", "pretrain.json"], ["inference.json"]]
    for names in stage_configs:
        parser = ConfigParser()
        parser.read_config([str(BUNDLE / "configs" / n) for n in names])
        config = parser.get()
        for key in ("image_channels", "channel_policy"):
            assert key in config, f"{names}: no top-level '{key}' for a sweep spec to set"
        assert config["network_def"]["in_channels"] == "@image_channels", names
        loaders = _references(config, "LoadImage2Dd")
        assert loaders, names
        for loader in loaders:
            assert loader["channels"] == "@image_channels" and loader["channel_policy"] == "@channel_policy", names
        if "mine.json" in names:
            miner = config["pseudo_miner"]
            assert miner["channels"] == "@image_channels" and miner["channel_policy"] == "@channel_policy"
