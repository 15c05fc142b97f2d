"""The bundle contract of DESIGN.md, checked for every folder in ``bundles/``.

A new bundle is covered by adding its folder. Besides the Model Zoo files, each bundle provides
``configs/smoke.json``: overrides that make its networks tiny and its runs one short epoch, which
these tests (and ``fewlabel demo --quick``) merge on top of the real configs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from monai.bundle import (ConfigParser, ConfigWorkflow, ckpt_export, onnx_export, run, verify_metadata,
                          verify_net_in_out)

from testlib import BUNDLES, REPO

SCHEMA = Path(__file__).with_name("meta_schema_20240725.json")
REQUIRED_FILES = [
    "configs/metadata.json", "configs/train.json", "configs/inference.json", "configs/evaluate.json",
    "configs/multi_gpu_train.json", "configs/logging.conf", "configs/smoke.json", "docs/README.md",
    "docs/data_license.txt", "LICENSE", "large_files.yml",
]
INFER_KEYS = ["bundle_root", "device", "network_def", "network", "inferer", "preprocessing", "postprocessing",
              "dataset_dir", "dataset", "evaluator", "output_dir"]

ids = [b.name for b in BUNDLES]
pytestmark = pytest.mark.parametrize("bundle", BUNDLES, ids=ids)


def _cfg(bundle: Path, *names: str) -> list[str]:
    return [str(bundle / "configs" / n) for n in names]


def _smoke(bundle: Path) -> dict:
    return json.loads((bundle / "configs" / "smoke.json").read_text())


def _stages(bundle: Path) -> tuple[list, tuple[str, ...]]:
    """The bundle's training stages in protocol order, and the config files its evaluation merges."""
    from fewlabel.protocols import PROTOCOLS

    stages = PROTOCOLS.get(bundle.name, ())
    train = [s for s in stages if "evaluate.json" not in s.configs]
    evaluate = [s.configs for s in stages if "evaluate.json" in s.configs and not s.overrides]
    return train, (evaluate[-1] if evaluate else ("train.json", "evaluate.json"))


def _predictions(folder: Path) -> list[Path]:
    """What an inference run wrote: 2D bundles ``<stem>_mask.png``, CT bundles ``<stem>_seg.nii.gz``."""
    return sorted(folder.glob("*_mask.png")) + sorted(folder.glob("*_seg.nii.gz"))


def _run(bundle: Path, configs: list[str], **overrides) -> None:
    run(config_file=configs, meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"), **overrides)


def test_layout_and_name(bundle):
    missing = [f for f in REQUIRED_FILES if not (bundle / f).is_file()]
    assert not missing, f"{bundle.name} lacks {missing}"
    assert bundle.name.endswith("_segmentation"), "MONAI Label takes the task type from the folder name"


def test_metadata_validates_against_schema(bundle):
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    jsonschema.validate(meta, json.loads(SCHEMA.read_text()))
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))
    fmt = meta["network_data_format"]
    assert meta["required_packages_version"]
    assert fmt["inputs"]["image"]["channel_def"] and fmt["outputs"]["pred"]["channel_def"]


def test_configs_are_short_readable_json_without_hard_coded_paths(bundle):
    for path in sorted((bundle / "configs").glob("*.json")):
        text = path.read_text()
        json.loads(text)
        for bad in ("/work/", "/home/", "/root/", "/tmp/", "C:\\\\"):
            assert bad not in text, f"{path.name} hard-codes a path ({bad})"


def test_properties_of_train_and_inference(bundle, tmp_path):
    overrides = {**_smoke(bundle), "ckpt_dir": str(tmp_path), "output_dir": str(tmp_path)}
    train = ConfigWorkflow(config_file=_cfg(bundle, "train.json"), workflow_type="train",
                           meta_file=_cfg(bundle, "metadata.json")[0], logging_file=_cfg(bundle, "logging.conf")[0],
                           **overrides)
    train.initialize()
    assert train.check_properties() == []

    def save_weights(workflow):  # the checkpoint a stage writes, which a later stage may start from
        net = workflow.parser.get_parsed_content("network_def", instantiate=True)
        torch.save({"model": net.state_dict()}, tmp_path / workflow.parser.get_parsed_content("ckpt_name"))

    save_weights(train)
    for stage_def in _stages(bundle)[0]:
        stage = ConfigWorkflow(config_file=_cfg(bundle, *stage_def.configs), workflow_type="train",
                               meta_file=_cfg(bundle, "metadata.json")[0], **overrides, **stage_def.overrides)
        stage.initialize()
        assert stage.check_properties() == [], stage_def.name
        save_weights(stage)
    parser = ConfigParser()
    parser.read_config(_cfg(bundle, "inference.json"))
    assert [k for k in INFER_KEYS if k not in parser] == []
    torch.save({"model": parser.get_parsed_content("network_def", instantiate=True).state_dict()}, tmp_path / "m.pt")
    infer = ConfigWorkflow(config_file=_cfg(bundle, "inference.json"), workflow_type="infer",
                           meta_file=_cfg(bundle, "metadata.json")[0], ckpt_path=str(tmp_path / "m.pt"),
                           output_dir=str(tmp_path / "pred"))
    infer.initialize()
    assert infer.check_properties() == []


@pytest.mark.parametrize("where", ["repo_root", "bundle_folder"])
def test_bundle_root_resolves_from_repo_root_and_bundle_folder(bundle, where, monkeypatch):
    monkeypatch.chdir(REPO if where == "repo_root" else bundle)
    for name in ("train.json", "inference.json"):
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / name))
        assert Path(parser.get_parsed_content("bundle_root")) == bundle.resolve()


def test_verify_net_in_out(bundle):
    verify_net_in_out(net_id="network_def", meta_file=_cfg(bundle, "metadata.json")[0],
                      config_file=_cfg(bundle, "inference.json")[0], device="cpu", n=1, any=1)


#: bundles whose default network cannot be scripted (smp's UNet++ indexes a ModuleDict with f-strings):
#: exported by tracing at the metadata's input shape (``--use_trace true``), as their docs say
TRACED = {"sam_mining_polyp_segmentation"}


def _export_args(bundle: Path, tmp_path: Path, suffix: str) -> tuple[torch.nn.Module, dict, torch.Tensor]:
    """The inference network with random weights saved as a checkpoint, the export arguments, an input."""
    parser = ConfigParser()
    parser.read_config(_cfg(bundle, "inference.json"))
    net = parser.get_parsed_content("network_def", instantiate=True).eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    export = dict(
        net_id="network_def",
        filepath=str(tmp_path / f"model.{suffix}"),
        ckpt_file=str(tmp_path / "model.pt"),
        meta_file=_cfg(bundle, "metadata.json")[0],
        config_file=_cfg(bundle, "inference.json")[0],
        use_trace=bundle.name in TRACED,
    )
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["inputs"]["image"]
    return net, export, torch.rand(1, meta["num_channels"], *meta["spatial_shape"])


def test_ckpt_export_matches_eager(bundle, tmp_path):
    """``monai.bundle ckpt_export``: TorchScript (scripted, or traced where the docs say so) with the
    metadata and the inference config embedded, giving the eager network's output."""
    net, export, x = _export_args(bundle, tmp_path, "ts")
    ckpt_export(**export)
    extra = {"metadata.json": "", "inference.json": ""}
    ts = torch.jit.load(export["filepath"], _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == json.loads(
        (bundle / "configs" / "metadata.json").read_text())["version"]
    assert "network_def" in json.loads(extra["inference.json"])
    with torch.no_grad():
        assert torch.allclose(ts(x), net(x), atol=1e-5)
    docs = (bundle / "docs" / "README.md").read_text()
    assert f"default network is {'traced' if bundle.name in TRACED else 'scripted'}" in docs


def test_onnx_export_matches_eager(bundle, tmp_path):
    """``monai.bundle onnx_export``: a valid ONNX graph whose onnxruntime output equals the eager network's."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    net, export, x = _export_args(bundle, tmp_path, "onnx")
    onnx_export(**export)
    onnx.checker.check_model(export["filepath"])
    session = ort.InferenceSession(export["filepath"], providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = net(x).numpy()
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(ref).max())))


@pytest.mark.slow
def test_train_then_infer_then_evaluate_on_demo_data(bundle, tmp_path):
    smoke = _smoke(bundle)
    ckpt_dir = tmp_path / "models"
    # the training stages of the bundle's protocol (e.g. pretrain.json, or stage 1 then finetune.json) in
    # order, as a user would run them; then plain train.json unless a stage already was
    train_stages, eval_configs = _stages(bundle)
    for stage in train_stages:
        _run(bundle, _cfg(bundle, *stage.configs), **smoke, **stage.overrides, ckpt_dir=str(ckpt_dir),
             output_dir=str(tmp_path / stage.name))
    if not any(s.configs == ("train.json",) and not s.overrides for s in train_stages):
        _run(bundle, _cfg(bundle, "train.json"), **smoke, ckpt_dir=str(ckpt_dir), output_dir=str(tmp_path / "train"))
    ckpt = ckpt_dir / "model.pt"
    assert ckpt.is_file()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state = state.get("model", state)  # ignite saves a single object as its bare state dict
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())

    _run(bundle, _cfg(bundle, "inference.json"), **{k: v for k, v in smoke.items() if k != "epochs"},
         ckpt_dir=str(ckpt_dir), ckpt_path=str(ckpt), output_dir=str(tmp_path / "pred"))  # nothing in the bundle
    written = _predictions(tmp_path / "pred")
    assert written, "inference wrote no predictions"

    _run(bundle, _cfg(bundle, *eval_configs), **smoke, ckpt_dir=str(ckpt_dir), output_dir=str(tmp_path / "eval"))
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] > 0 and 0.0 <= metrics.get("mean_iou", metrics.get("mean_dice")) <= 1.0
    assert (tmp_path / "eval" / "metrics.md").is_file()
    # a few (image, ground truth, prediction) for sweep reports' overlay grids: 2D, same size, class indices
    with np.load(tmp_path / "eval" / "metrics_examples.npz") as ex:
        assert "image_0" in ex.files
        for i in range(len([f for f in ex.files if f.startswith("image_")])):
            image, label, pred = ex[f"image_{i}"], ex[f"label_{i}"], ex[f"pred_{i}"]
            assert image.shape[:2] == label.shape == pred.shape and image.ndim in (2, 3)
            assert 0.0 <= image.min() and image.max() <= 1.0
            classes = json.loads((bundle / "configs" / "metadata.json").read_text())[
                "network_data_format"]["outputs"]["pred"]["channel_def"]
            assert label.max() < max(2, len(classes)) and pred.max() < max(2, len(classes))


@pytest.mark.slow
def test_cli_run_from_the_bundle_folder(bundle, tmp_path):
    """``python -m monai.bundle run`` from the bundle folder, with the relative config path a user types."""
    parser = ConfigParser()
    parser.read_config(_cfg(bundle, "inference.json"))
    torch.save({"model": parser.get_parsed_content("network_def", instantiate=True).state_dict()}, tmp_path / "m.pt")
    smoke = {k: v for k, v in _smoke(bundle).items() if k in ("image_size", "demo_kwargs")}
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
            "--ckpt_path", str(tmp_path / "m.pt"), "--output_dir", str(tmp_path / "pred")]
    for k, v in smoke.items():
        args += [f"--{k}", json.dumps(v)]
    proc = subprocess.run(args, cwd=bundle, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _predictions(tmp_path / "pred")


@pytest.mark.slow
def test_multi_gpu_config_trains_with_two_processes(bundle, tmp_path):
    """``multi_gpu_train.json`` under torchrun: gloo on CPU processes here, NCCL on GPUs; each rank draws its
    own part of the training data."""
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "monai.bundle", "run",
            "--config_file", json.dumps(_cfg(bundle, "train.json", "multi_gpu_train.json")),
            "--meta_file", _cfg(bundle, "metadata.json")[0], "--logging_file", _cfg(bundle, "logging.conf")[0],
            "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval")]
    for k, v in {**_smoke(bundle), "epochs": 2, "batch_size": 2}.items():
        args += [f"--{k}", json.dumps(v)]
    # a last config records which samples each rank draws in epoch 1 (before the trainer runs)
    record = tmp_path / "record.json"
    imports = json.loads((bundle / "configs" / "train.json").read_text()).get("imports", [])
    record.write_text(json.dumps({"imports": imports + ["$import _rank_recorder"],
                                  "run": [f"$_rank_recorder.attach(@train#trainer, '{tmp_path / 'ranks'}')",
                                          "$@train#trainer.run()"]}))
    args[args.index("--config_file") + 1] = json.dumps(
        _cfg(bundle, "train.json", "multi_gpu_train.json") + [str(record)]
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    ranks = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    n = ranks[0]["dataset_len"]
    a, b = set(ranks[0]["indices"]), set(ranks[1]["indices"])
    assert len(ranks[0]["indices"]) == len(ranks[1]["indices"]), "ranks must run the same number of steps"
    assert a | b == set(range(n)), "some training samples were drawn by no rank"
    # disjoint, except the at most world_size - 1 samples repeated to give both ranks the same length
    assert len(a & b) <= 2 * -(-n // 2) - n, f"ranks drew the same samples: {sorted(a & b)[:10]}"
    parser = ConfigParser()
    parser.read_config(_cfg(bundle, "train.json"))
    state = torch.load(tmp_path / "models" / parser["ckpt_name"], map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state.get("model", state)), "saved the DDP wrapper's keys"


@pytest.mark.slow
def test_same_seed_gives_identical_weights(bundle, tmp_path):
    """Determinism: ``train.json`` twice with the same seed on the CPU gives the same weights, bit for bit."""
    smoke = {**_smoke(bundle), "epochs": 2}
    parser = ConfigParser()
    parser.read_config(_cfg(bundle, "train.json"))
    name = f"resume_{parser['ckpt_name']}"  # the final state of the run (TrainingState), network included
    states = []
    for run_id in ("a", "b"):
        _run(bundle, _cfg(bundle, "train.json"), **smoke, ckpt_dir=str(tmp_path / run_id),
             output_dir=str(tmp_path / f"out_{run_id}"))
        states.append(torch.load(tmp_path / run_id / name, map_location="cpu", weights_only=True)["network"])
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0]), "the same seed gave different weights"


@pytest.mark.slow
def test_every_training_stage_runs_with_two_processes(bundle, tmp_path):
    """Pre-training / mining stages under torchrun too: with the bundle's ``multi_gpu_pretrain.json`` when the
    stage is a contrastive pre-training that has one, else with ``multi_gpu_train.json``."""
    stages = _stages(bundle)[0]  # in protocol order: a stage may start from an earlier one's checkpoint
    if all(s.configs == ("train.json",) for s in stages):
        pytest.skip(f"{bundle.name} has no training stage besides train.json (covered above)")
    models = tmp_path / "models"
    for stage in stages:
        extra = "multi_gpu_pretrain.json" if "pretrain.json" in stage.configs and \
            (bundle / "configs" / "multi_gpu_pretrain.json").is_file() else "multi_gpu_train.json"
        args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "monai.bundle", "run",
                "--config_file", json.dumps(_cfg(bundle, *stage.configs, extra)),
                "--meta_file", _cfg(bundle, "metadata.json")[0], "--logging_file", _cfg(bundle, "logging.conf")[0],
                "--ckpt_dir", str(models), "--output_dir", str(tmp_path / stage.name)]
        for k, v in {**_smoke(bundle), "epochs": 1, "batch_size": 2, **stage.overrides}.items():
            args += [f"--{k}", json.dumps(v)]
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=dict(os.environ))
        assert proc.returncode == 0, f"{stage.name}: " + (proc.stdout + proc.stderr)[-3000:]
        parser = ConfigParser()
        parser.read_config(_cfg(bundle, *stage.configs))
        parser.update(stage.overrides)
        ckpt = models / parser.get_parsed_content("ckpt_name")
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        assert not any(k.startswith("module.") for k in state.get("model", state)), f"{stage.name}: DDP keys saved"
        for pseudo in (tmp_path / stage.name).rglob("pseudo_datalist.json"):  # one-time mining, split over ranks
            items = json.loads(pseudo.read_text())["training"]
            labels = [it["label"] for it in items]
            assert items and len(set(labels)) == len(labels), "two items share a pseudo-label file"
            assert all(Path(pseudo.parent / lab).is_file() for lab in labels)
            assert not list(pseudo.parent.glob(".*.rank*")), "a rank's part file was left behind"
