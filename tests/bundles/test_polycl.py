"""The PolyCL bundle end to end on CT phantoms: pre-training S / O / M (and the SimCLR / SupCon baselines),
fine-tuning from the pre-trained encoder, per-volume evaluation with SAM refinement and SAM 2 propagation,
and inference to NIfTI and DICOM SEG -- with tiny SAM / SAM 2 models saved to files and loaded like real ones."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import ConfigWorkflow

from testlib import REPO
from fewlabel.data import load_ct_volume, load_datalist
from fewlabel.errors import CheckpointError
from fewlabel.protocols import PROTOCOLS, run_stage
from fewlabel.sam import tiny_sam2_checkpoint, tiny_sam_checkpoint

BUNDLE = "polycl_liver_ct_segmentation"
CONFIGS = REPO / "bundles" / BUNDLE / "configs"
DATA = {"num_scans": 6, "shape": [24, 40, 36], "seed": 0, "dicom_testing": True}
SMALL = {"image_size": [32, 32], "channels": [8, 16, 32], "num_workers": 0, "demo_kwargs": DATA, "slice_batch": 8}


def _root_cause(error: BaseException) -> BaseException:
    """MONAI's config parser wraps errors raised in expressions; the original is at the end of the chain."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Pre-train S, O and M, fine-tune from M: the protocol's training stages, once for the module."""
    out = tmp_path_factory.mktemp("polycl")
    models = out / "models"
    tiny = {"sam_model_type": "tiny", "sam_checkpoint": tiny_sam_checkpoint(str(models / "tiny_sam.pt")),
            "sam2_config": "tiny", "sam2_checkpoint": tiny_sam2_checkpoint(str(models / "tiny_sam2.pt"))}
    stages = [s for s in PROTOCOLS[BUNDLE] if "evaluate.json" not in s.configs]
    assert [s.name for s in stages] == ["pretrain_S", "pretrain_O", "pretrain_M", "finetune"]
    for stage in stages:
        run_stage(BUNDLE, stage.configs, ckpt_dir=str(models), output_dir=str(out / stage.name), epochs=1,
                  batch_size=4, pretrain_batch_size=6, **SMALL, **stage.overrides)
    return out, models, tiny


def test_pretraining_writes_one_encoder_per_strategy_and_fine_tuning_starts_from_it(run):
    out, models, _ = run
    for method in "SOM":
        state = torch.load(models / f"pretrained_{method}.pt", map_location="cpu", weights_only=True)
        assert any(k.startswith("encoder.") for k in state) and "projection.0.weight" in state
        assert state["projection.0.weight"].shape[0] == 256  # g: one fully connected layer to 256-d
    assert (models / "model.pt").is_file()
    # the fine-tuning network starts from PolyCL-O's encoder, with a fresh decoder
    wf = ConfigWorkflow(config_file=str(CONFIGS / "train.json"), workflow_type="train", ckpt_dir=str(models),
                        output_dir=str(out / "check"), pretrain_method="O", from_pretrained=True, **SMALL)
    wf.initialize()
    net = wf.parser.get_parsed_content("network")
    pre = torch.load(models / "pretrained_O.pt", map_location="cpu", weights_only=True)
    for key, value in net.state_dict().items():
        if key.startswith("encoder."):
            assert torch.equal(value.cpu(), pre[key]), key
    with pytest.raises(Exception) as err:  # strict: a missing pre-trained file names itself and the fix
        bad = ConfigWorkflow(config_file=str(CONFIGS / "train.json"), workflow_type="train", ckpt_dir=str(out / "none"),
                             output_dir=str(out / "check2"), from_pretrained=True, **SMALL)
        bad.initialize()
        bad.parser.get_parsed_content("network")
    cause = _root_cause(err.value)
    assert isinstance(cause, CheckpointError)
    assert "pretrained_M.pt" in str(cause) and "pretrain.json" in str(cause)


@pytest.mark.parametrize("extra", [["pretrain_simclr.json"], ["pretrain_simclr.json", "pretrain_supcon.json"]],
                         ids=["simclr", "supcon"])
def test_contrastive_baselines_pretrain(run, extra, tmp_path):
    _, models, _ = run
    run_stage(BUNDLE, ("train.json", "pretrain.json", *extra), ckpt_dir=str(tmp_path), output_dir=str(tmp_path / "o"),
              epochs=1, pretrain_batch_size=6, **SMALL)
    name = "supcon" if "pretrain_supcon.json" in extra else "simclr"
    state = torch.load(tmp_path / f"pretrained_{name}.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("encoder.") for k in state)


@pytest.mark.parametrize("refine,propagate,prompt", [("none", "none", "prediction"), ("sam", "none", "prediction"),
                                                     ("none", "sam2", "prediction"), ("sam", "sam2", "ground_truth")])
def test_evaluation_per_volume_with_sam_and_sam2(run, refine, propagate, prompt):
    out, models, tiny = run
    dest = out / f"eval_{refine}_{propagate}_{prompt}"
    run_stage(BUNDLE, ("train.json", "evaluate.json"), ckpt_dir=str(models), output_dir=str(dest), refine=refine,
              propagate=propagate, sam2_prompt=prompt, **SMALL, **tiny)
    metrics = json.loads((dest / "metrics.json").read_text())
    testing = load_datalist(run_stage_datalist(), "testing")
    assert metrics["num_volumes"] == len(testing) >= 1
    assert [r["volume"] for r in metrics["per_volume"]] == [Path(it["image"]).name for it in testing]
    assert 0.0 <= metrics["mean_dice"] <= 1.0
    assert (dest / "metrics.md").is_file() and (dest / "metrics.png").is_file()
    # the paper's released protocol by default, Hausdorff in mm from the volumes' headers
    assert (metrics["protocol"], metrics["distance_unit"]) == ("slice_2d", "mm")
    assert metrics["num_slices"] >= metrics["num_volumes"]


def run_stage_datalist() -> str:
    from fewlabel.bundle import resolve_datalist

    return resolve_datalist("", demo="ct", demo_kwargs=DATA)


def test_sam_steps_without_weights_name_the_file(run, tmp_path):
    _, models, _ = run
    with pytest.raises(Exception) as err:
        run_stage(BUNDLE, ("train.json", "evaluate.json"), ckpt_dir=str(models), output_dir=str(tmp_path),
                  propagate="sam2", sam2_checkpoint=str(tmp_path / "sam2.1_hiera_tiny.pt"), **SMALL)
    cause = _root_cause(err.value)
    assert isinstance(cause, CheckpointError) and "sam2.1_hiera_tiny.pt" in str(cause)


def test_inference_writes_nifti_with_the_input_geometry_and_dicom_seg_for_dicom_series(run, tmp_path):
    _, models, tiny = run
    run_stage(BUNDLE, ("inference.json",), ckpt_path=str(models / "model.pt"), output_dir=str(tmp_path),
              refine="sam", propagate="sam2", image_size=[32, 32], channels=[8, 16, 32], demo_kwargs=DATA, **tiny)
    testing = load_datalist(run_stage_datalist(), "testing")
    assert testing and all(Path(it["image"]).is_dir() for it in testing)  # the demo's testing scans are DICOM
    for item in testing:
        stem = Path(item["image"]).name
        seg_nii = nib.load(str(tmp_path / f"{stem}_seg.nii.gz"))
        source_affine = load_ct_volume(item["image"]).meta["original_affine"]  # the series as stored
        assert np.allclose(seg_nii.affine, np.asarray(source_affine), atol=1e-4)
        label = nib.load(item["label"])  # the phantom's label: the same voxel grid, stored in another order
        assert seg_nii.shape == label.shape
        assert np.allclose(nib.as_closest_canonical(seg_nii).affine, nib.as_closest_canonical(label).affine, atol=1e-4)
        assert set(np.unique(np.asarray(seg_nii.dataobj))) <= {0, 1}
        seg = hd.seg.segread(str(tmp_path / f"{stem}_seg.dcm"))
        source = pydicom.dcmread(next(Path(item["image"]).glob("*.dcm")), stop_before_pixels=True)
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
        assert seg.StudyInstanceUID == source.StudyInstanceUID
        assert seg.get_segment_description(1).SegmentLabel == "Liver"


def test_quick_demo_reports_every_row_and_writes_predictions(tmp_path):
    from fewlabel.demo import run_demo

    summary = run_demo(BUNDLE, output_dir=tmp_path, quick=True)
    assert set(summary["rows"]) == {"supervised", "polycl_S", "polycl_O", "polycl_M", "polycl_M_sam", "polycl_M_sam2"}
    assert all(0.0 <= row["dice"] <= 1.0 for row in summary["rows"].values())
    assert any(name.endswith("_seg.dcm") for name in summary["predictions"])
    assert (tmp_path / BUNDLE / "table.md").read_text().count("\n") == 8
    from PIL import Image

    with Image.open(summary["figure"]) as picture:  # three slices side by side
        assert picture.format == "PNG" and picture.width > 2 * picture.height
    from labelserverlib import _serve_demo

    served = _serve_demo(BUNDLE, tmp_path, tmp_path / "serve")  # `make label-server` after `make demo`
    assert served.demo and served.weights == tmp_path / BUNDLE / "models" / "polycl_M.pt"


def test_multi_gpu_pretraining_shards_the_triplets_over_two_processes(tmp_path):
    """``multi_gpu_pretrain.json`` under torchrun (gloo on CPU here): each rank takes its share of the triples."""
    import os
    import subprocess
    import sys

    files = [str(CONFIGS / n) for n in ("train.json", "pretrain.json", "multi_gpu_pretrain.json")]
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "monai.bundle", "run",
            "--config_file", json.dumps(files), "--meta_file", str(CONFIGS / "metadata.json"),
            "--logging_file", str(CONFIGS / "logging.conf"), "--ckpt_dir", str(tmp_path / "models"),
            "--output_dir", str(tmp_path / "out"), "--epochs", "1", "--pretrain_batch_size", "4"]
    for k, v in SMALL.items():
        args += [f"--{k}", json.dumps(v)]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    state = torch.load(tmp_path / "models" / "pretrained_M.pt", map_location="cpu", weights_only=True)
    assert state and not any(k.startswith("module.") for k in state), "saved the DDP wrapper's keys"
    iterations = [line for line in proc.stdout.splitlines() if "Iter:" in line]
    from fewlabel.data import cache_ct_slices, slice_tables
    from fewlabel.engines import TripletSampler

    records = cache_ct_slices(load_datalist(run_stage_datalist(), "training"), size=(32, 32), progress=False,
                              organ_labels=[1, 2])
    per_rank = -(-len(TripletSampler(*slice_tables(records), "M")) // 2)  # half the anchors per rank
    steps = per_rank // 4 if per_rank % 4 == 1 else -(-per_rank // 4)  # a last batch of one is dropped
    assert iterations and f"Iter: 1/{steps}" in iterations[0]
