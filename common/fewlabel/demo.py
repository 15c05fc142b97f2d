"""Demos: each bundle's stages run on its demo data through ``monai.bundle``, with a short budget.

``fewlabel demo BUNDLE`` (or ``make demo`` for all) calls :func:`run_demo`. Every stage is an
ordinary ``monai.bundle run`` of the bundle's own configs with a few overrides, so what a demo
shows is what a user gets from the same configs on real data.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fewlabel.bundle import bundle_root, load_protocol, resolve_datalist
from fewlabel.demo_figure import ct_figure, overlay_figure
from fewlabel.data import load_datalist
from fewlabel.data.ct import ct_output_stem
from fewlabel.errors import DataError
from fewlabel.protocols import PROTOCOLS, run_protocol
from fewlabel.stage_log import StageLog

__all__ = ["DEMOS", "run_demo", "ihc_nuclear_image"]

logger = logging.getLogger("fewlabel.demo")

#: the name of the picture each demo writes into its output folder
FIGURE = "demo_output.png"


def _served(out: Path, weights: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The summary's record of the weights ``fewlabel label-server`` serves for this bundle when it has no
    ``models/model.pt`` (see :func:`fewlabel.label_server.app.demo_weights`): the file, relative to the
    demo's folder, and the settings its inference needs."""
    return {"weights": weights.relative_to(out).as_posix(),
            "overrides": json.loads(json.dumps(overrides, default=str))}


def _title(text: str, quick: bool) -> str:
    return f"{text}\n(--quick: one epoch per stage, the masks mean little)" if quick else text


def ihc_nuclear_image(path: str | Path) -> Path:
    """Write the nuclear (haematoxylin) stain of scikit-image's immunohistochemistry image as a
    fluorescence-like picture (bright nuclei on dark, blue), the modality the demo model learns.

    The stain is separated by colour deconvolution (``skimage.color.rgb2hed``); this is how a
    bright-field slide is commonly turned into a nuclear channel.
    """
    from skimage import data
    from skimage.color import rgb2hed

    hed = rgb2hed(data.immunohistochemistry())
    h = hed[..., 0]
    lo, hi = np.percentile(h, (1, 99.5))
    h = np.clip((h - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.stack([0.25 * h, 0.45 * h, h], axis=-1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
    return path


def _medsass(out: Path, quick: bool, log: StageLog) -> dict[str, Any]:
    bundle = "medsass_binary_segmentation"
    # Short-budget settings: many small images, so BatchNorm statistics settle within ~120 iterations.
    demo_data = {"num_patients": 16, "images_per_patient": 8, "size": [128, 128]}
    common = {"image_size": [96, 96], "num_workers": 0, "demo_kwargs": demo_data}
    if quick:
        common |= {"encoder_name": "resnet18", "image_size": [64, 64],
                   "demo_kwargs": {"num_patients": 4, "images_per_patient": 3, "size": [64, 64]}}
    budget = {"epochs": 1 if quick else 12, "batch_size": 8, "learning_rate": 0.001, "patience": 12}
    t0 = time.time()
    run_protocol(bundle, out, run=log.stage, **common, **budget)  # pretrain -> zero_label evaluation
    t_pre = time.time() - t0
    net = json.loads((out / "zero_label" / "metrics.json").read_text())
    otsu = json.loads((out / "zero_label" / "threshold_baseline.json").read_text())
    real = ihc_nuclear_image(out / "real_image" / "immunohistochemistry_nuclear.png")
    # the network is fully convolutional: run the 512 px image at the scale its nuclei had in training
    infer = {k: v for k, v in common.items() if k not in ("num_workers", "demo_kwargs")}
    infer["image_size"] = [64, 64] if quick else [320, 320]
    log.stage(bundle, ["inference.json"], dataset_dir=str(real.parent), ckpt_path=str(out / "models" / "pretrained.pt"),
              output_dir=str(out / "predictions"), **infer)
    iou_net = net["per_class"]["foreground"]["iou"]
    iou_otsu = otsu["per_class"]["foreground"]["iou"]
    summary = {
        "protocol_seconds": round(t_pre, 1),
        "zero_label_iou": iou_net,
        "otsu_iou": iou_otsu,
        "difference": iou_net - iou_otsu,
        "metrics": str(out / "zero_label" / "metrics.json"),
        "baseline": str(out / "zero_label" / "threshold_baseline.json"),
        "overlays": sorted(str(p) for p in (out / "predictions").glob("*_overlay.png")),
        "label_server": _served(out, out / "models" / "pretrained.pt",
                                {k: v for k, v in common.items() if k in ("encoder_name", "image_size")}),
    }
    summary["figure"] = str(overlay_figure(summary["overlays"], out / FIGURE, _title(
        "MedSASS demo: zero-label prediction on a real IHC image (no label used)", quick)))
    log.say(
        f"\nMedSASS demo: zero-label IoU of the pre-trained network {iou_net:.3f}; Otsu's own masks {iou_otsu:.3f} "
        f"(difference {iou_net - iou_otsu:+.3f}); pre-training and evaluation took {t_pre:.0f} s.\n"
        f"  metrics:  {summary['metrics']}\n  baseline: {summary['baseline']}\n"
        f"  overlays: {out / 'predictions'} ({len(summary['overlays'])} real-image overlay)\n"
    )
    return summary


def _surgical(out: Path, quick: bool, log: StageLog) -> dict[str, Any]:
    bundle = "surgical_semiseg_laparoscopy_segmentation"
    # few labelled and many unlabelled videos of the laparoscopic phantom; a small encoder and
    # small frames so the demo fits a few CPU minutes (the paper: ResNet-101, 480x854)
    demo_data = {"num_patients": 12, "images_per_patient": 6, "size": [96, 160], "unlabelled_fraction": 0.75}
    common = {"encoder_name": "resnet18", "image_size": [96, 160], "num_workers": 0, "demo_kwargs": demo_data,
              "batch_size": 8}
    budget = {"pretrain": 12, "finetune": 20}
    if quick:
        common |= {"image_size": [64, 64], "demo_kwargs": {**demo_data, "num_patients": 4, "size": [64, 64]}}
        budget = {"pretrain": 1, "finetune": 1}
    datalist = resolve_datalist("", demo="laparoscopy", demo_kwargs=common["demo_kwargs"])
    t0 = time.time()
    log.stage(bundle, ["train.json", "pretrain.json"], ckpt_dir=str(out / "models"), output_dir=str(out / "pretrain"),
              epochs=budget["pretrain"], **common)
    results = {}
    for init, extra in (("pretrained", {"from_pretrained": True}), ("random_init", {"from_pretrained": False})):
        ckpt = out / "models" / f"{init}_finetuned.pt"
        log.stage(bundle, ["train.json"], ckpt_dir=str(out / "models"), ckpt_name=ckpt.name,
                  output_dir=str(out / f"finetune_{init}"), epochs=budget["finetune"], **common, **extra)
        log.stage(bundle, ["train.json", "evaluate.json"], ckpt_dir=str(out / "models"), ckpt_name=ckpt.name,
                  output_dir=str(out / f"evaluate_{init}"), **common)
        results[init] = json.loads((out / f"evaluate_{init}" / "metrics.json").read_text())
    log.stage(
        bundle,
        ["inference.json"],
        ckpt_path=str(out / "models" / "pretrained_finetuned.pt"),
        output_dir=str(out / "predictions"),
        **{k: v for k, v in common.items() if k not in ("num_workers", "batch_size")},
    )
    summary = {
        "seconds": round(time.time() - t0, 1),
        "labelled_training_frames": len(load_datalist(datalist, "training")),
        "unlabelled_frames": len(load_datalist(datalist, "unlabelled")),
        "miou_pretrained": results["pretrained"]["mean_iou"],
        "miou_random_init": results["random_init"]["mean_iou"],
        "miou_underrepresented_pretrained": results["pretrained"].get("mean_iou_underrepresented"),
        "miou_underrepresented_random_init": results["random_init"].get("mean_iou_underrepresented"),
        "metrics": {k: str(out / f"evaluate_{k}" / "metrics.md") for k in results},
        "overlays": str(out / "predictions"),
        "label_server": _served(out, out / "models" / "pretrained_finetuned.pt",
                                {k: v for k, v in common.items() if k in ("encoder_name", "image_size")}),
    }
    summary["figure"] = str(overlay_figure((out / "predictions").glob("*_overlay.png"), out / FIGURE, _title(
        "SurgicalSemiSeg demo: test frames, predicted classes (pre-trained + fine-tuned)", quick)))
    log.say(
        f"\nSurgicalSemiSeg demo: mIoU after masked-denoising pre-training + fine-tuning "
        f"{summary['miou_pretrained']:.3f}; "
        f"random initialisation, same labels and budget {summary['miou_random_init']:.3f} "
        f"({summary['labelled_training_frames']} labelled, {summary['unlabelled_frames']} unlabelled frames; "
        f"{summary['seconds']:.0f} s).\n"
        f"  tables:   {summary['metrics']['pretrained']}\n            {summary['metrics']['random_init']}\n"
        f"  overlays: {summary['overlays']}\n"
    )
    return summary


def write_demo_video(frames: list[str | Path], path: str | Path, fps: float = 10.0) -> Path:
    """Write image files as a video (MJPG in an AVI container, which every OpenCV build can encode)."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = cv2.imread(str(frames[0]))
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for f in frames:
        img = cv2.imread(str(f))
        writer.write(cv2.resize(img, (w, h)) if img.shape[:2] != (h, w) else img)
    writer.release()
    return path


def _slippa(out: Path, quick: bool, log: StageLog) -> dict[str, Any]:
    bundle = "slippa_liver_landmark_segmentation"
    # phantom frames at 270x480 (a quarter of P2ILF's 1080p, contours drawn 3 px wide, d_max scaled to 2.5 px);
    # a ResNet-18 U-Net at 160x288 so both stages fit a few CPU minutes (the paper: ResNet-34 at 320x416)
    stage1 = {"num_patients": 12, "images_per_patient": 6, "size": [270, 480], "seed": 0}
    stage2 = {"num_patients": 8, "images_per_patient": 5, "size": [270, 480], "seed": 1}
    common = {"encoder_name": "resnet18", "image_size": [160, 288], "num_workers": 0, "demo_kwargs": stage1,
              "finetune_demo_kwargs": stage2, "gt_thickness": 3, "d_max": 2.5, "batch_size": 8}
    budget = {"stage1": 8, "finetune": 8}
    if quick:
        stage1 = {**stage1, "num_patients": 4, "images_per_patient": 2, "size": [72, 128]}
        stage2 = {**stage2, "num_patients": 4, "images_per_patient": 2, "size": [72, 128]}
        common |= {"image_size": [64, 96], "demo_kwargs": stage1, "finetune_demo_kwargs": stage2, "gt_thickness": 2,
                   "batch_size": 2}
        budget = {"stage1": 1, "finetune": 1}
    t0 = time.time()
    models = str(out / "models")
    log.stage(bundle, ["train.json"], ckpt_dir=models, output_dir=str(out / "stage1"), epochs=budget["stage1"],
              learning_rate=0.002, **common)
    log.stage(bundle, ["train.json", "finetune.json"], ckpt_dir=models, output_dir=str(out / "finetune"),
              epochs=budget["finetune"], learning_rate=0.001, **common)
    for name, extra in (("evaluate_stage1", {"ckpt_name": "stage1.pt", "eval_stage": "init"}), ("evaluate", {})):
        log.stage(bundle, ["train.json", "finetune.json", "evaluate.json"], ckpt_dir=models, output_dir=str(out / name),
                  **common, **extra)
    t_train = time.time() - t0
    from fewlabel.handlers.landmark_evaluation import stage_table

    table = stage_table({"demo (UNet, ResNet-18)": {"init": out / "evaluate_stage1" / "metrics.json",
                                                  "tune": out / "evaluate" / "metrics.json"}})
    (out / "table.md").write_text(table + "\n")
    infer = {k: common[k] for k in ("encoder_name", "image_size")} | {"demo_kwargs": stage2,
                                                                     "thickness": common["gt_thickness"]}
    log.stage(
        bundle,
        ["inference.json"],
        ckpt_path=str(out / "models" / "model.pt"),
        output_dir=str(out / "predictions"),
        **infer,
    )
    frames = [it["image"] for it in load_datalist(resolve_datalist("", demo="liver_landmarks", demo_kwargs=stage2),
                                                  "testing")]
    video = write_demo_video(frames, out / "video" / "demo_frames.avi", fps=5.0)
    log.stage(bundle, ["inference.json", "video.json"], ckpt_path=str(out / "models" / "model.pt"),
              output_dir=str(out / "video"), video_path=str(video), **infer)
    tuned = json.loads((out / "evaluate" / "metrics.json").read_text())
    init = json.loads((out / "evaluate_stage1" / "metrics.json").read_text())
    video_json = json.loads((out / "video" / "demo_frames_landmarks.json").read_text())
    summary = {
        "seconds": round(time.time() - t0, 1),
        "training_seconds": round(t_train, 1),
        "init": init["raw"]["mean"],
        "tune": tuned["raw"]["mean"],
        "post": tuned["post"]["mean"],
        "postprocess_ms": tuned.get("postprocess_ms"),
        "video_fps": video_json["timing_ms"]["fps_end_to_end"],
        "table": str(out / "table.md"),
        "predictions": str(out / "predictions"),
        "video": str(out / "video"),
        "label_server": _served(out, out / "models" / "model.pt", {k: common[k] for k in ("encoder_name", "image_size")}
                                | {"thickness": common["gt_thickness"]}),
    }
    summary["figure"] = str(overlay_figure((out / "predictions").glob("*_overlay.png"), out / FIGURE, _title(
        "SLiPPA demo: test frames, predicted landmarks (fine-tuned, post-processed)", quick)))
    log.say(
        f"\nSLiPPA demo (phantom data, {summary['seconds']:.0f} s): mean over the three landmarks, "
        f"test frames\n\n{table}\n"
        f"  (P precision, D Dice, G symmetric distance, lower is better; init = stage 1, tune = fine-tuned,\n"
        f"   post = fine-tuned + post-processing)\n"
        f"  masks, overlays, point lists: {summary['predictions']}\n"
        f"  overlay video + per-frame JSON: {summary['video']} "
        f"({summary['video_fps']:.1f} fps end to end on this machine)\n"
    )
    return summary


def _sam_mining(out: Path, quick: bool, log: StageLog) -> dict[str, Any]:
    bundle = "sam_mining_polyp_segmentation"
    # colonoscopy phantoms, 75 % of the training frames labelled; a ResNet-18 U-Net++ at 96x96 and a tiny
    # SAM with random weights (saved to a file and loaded like a real checkpoint) so it fits a few CPU minutes
    data = {"num_patients": 40, "images_per_patient": 1, "size": [120, 150], "seed": 0}
    common = {"encoder_name": "resnet18", "image_size": [96, 96], "num_workers": 0, "demo_kwargs": data,
              "batch_size": 8, "labelled_fraction": 0.75}
    epochs = {"supervised": 25, "mining": 6}
    if quick:
        data = {**data, "num_patients": 10, "size": [64, 80]}
        common |= {"image_size": [64, 64], "demo_kwargs": data, "batch_size": 4}
        epochs = {"supervised": 1, "mining": 1}
    from fewlabel.sam import tiny_sam_checkpoint

    models = out / "models"
    sam = {"sam_model_type": "tiny", "sam_checkpoint": tiny_sam_checkpoint(models / "tiny_sam.pt")}
    t0 = time.time()
    rows = {}
    for name, configs, extra in (
        ("supervised", ["train.json"], {"epochs": epochs["supervised"], "learning_rate": 1e-3}),
        ("one_time", ["train.json", "mine.json"], {"mining_schedule": "one_time", "ckpt_name": "one_time.pt",
                                                   "epochs": epochs["mining"], "learning_rate": 1e-3, **sam}),
        ("continuous", ["train.json", "mine.json"], {"epochs": epochs["mining"], "learning_rate": 1e-3, **sam}),
    ):
        t = time.time()
        log.stage(bundle, configs, ckpt_dir=str(models), output_dir=str(out / name), **common, **extra)
        ckpt = extra.get("ckpt_name", "supervised.pt" if name == "supervised" else "model.pt")
        log.stage(bundle, ["train.json", "evaluate.json"], ckpt_dir=str(models), ckpt_name=ckpt,
                  output_dir=str(out / f"evaluate_{name}"), **common)
        scores = json.loads((out / f"evaluate_{name}" / "metrics.json").read_text())
        rows[name] = {"iou": scores["per_class"]["polyp"]["iou"], "dice": scores["per_class"]["polyp"]["dice"],
                      "seconds": round(time.time() - t, 1)}
    infer = {k: common[k] for k in ("encoder_name", "image_size", "demo_kwargs")}
    for mode in ("fast", "accurate"):
        log.stage(bundle, ["inference.json"], ckpt_path=str(models / "model.pt"), inference_mode=mode,
                  output_dir=str(out / f"predictions_{mode}"), **infer, **sam)
    labels = {"supervised": "Supervised training on labelled data (75 %)",
              "one_time": "One-time pseudo-label generation", "continuous": "Continuous pseudo-label generation"}
    table = "\n".join(
        ["| Method | IoU (polyp) | Dice (polyp) | stage time (s) |", "|---|---|---|---|"]
        + [f"| {labels[k]} | {v['iou']:.3f} | {v['dice']:.3f} | {v['seconds']:.0f} |" for k, v in rows.items()]
    )
    (out / "table.md").write_text(table + "\n")
    summary = {"seconds": round(time.time() - t0, 1), "stages": rows, "table": str(out / "table.md"),
               "predictions": {m: str(out / f"predictions_{m}") for m in ("fast", "accurate")},
               "teacher": "tiny SAM with random weights (demo only)",
               "label_server": _served(out, models / "model.pt", {k: common[k] for k in ("encoder_name", "image_size")}
                                       | sam)}
    summary["figure"] = str(overlay_figure((out / "predictions_fast").glob("*_overlay.png"), out / FIGURE, _title(
        "SAM mining demo: test frames, the student alone (fast mode)", quick)))
    log.say(f"\nSAM knowledge-mining demo (phantom data, {summary['seconds']:.0f} s): test frames\n\n{table}\n\n"
          "  The teacher here is a TINY SAM WITH RANDOM WEIGHTS (no checkpoint can be downloaded): its pseudo-labels\n"
          "  mean nothing, so this run shows the pipeline (supervised -> one-time -> continuous mining -> both\n"
          "  inference modes), not the method's gain. Pass --sam_checkpoint with SAM / MedSAM weights for real runs.\n"
          f"  predictions (fast: student only; accurate: student -> SAM): {out / 'predictions_fast'}, "
          f"{out / 'predictions_accurate'}\n")
    return summary


def _polycl(out: Path, quick: bool, log: StageLog) -> dict[str, Any]:
    bundle = "polycl_liver_ct_segmentation"
    # abdominal CT phantoms (HU, liver in part of each scan; testing scans as DICOM series), a narrow PolyCL
    # U-Net at 64x64, 30 % of the training slices labelled; tiny SAM and SAM 2 with random weights, saved to
    # files and loaded like real checkpoints
    data = {"num_scans": 10, "shape": [40, 96, 96], "seed": 0, "dicom_testing": True}
    common = {"image_size": [64, 64], "channels": [16, 32, 64, 128], "num_workers": 0, "demo_kwargs": data,
              "slice_batch": 16}
    epochs = {"pretrain": 8, "finetune": 30}
    if quick:
        data = {**data, "num_scans": 6, "shape": [24, 40, 36]}
        common |= {"image_size": [32, 32], "channels": [8, 16, 32], "demo_kwargs": data}
        epochs = {"pretrain": 1, "finetune": 1}
    from fewlabel.sam import tiny_sam2_checkpoint, tiny_sam_checkpoint

    models = out / "models"
    sam = {"sam_model_type": "tiny", "sam_checkpoint": tiny_sam_checkpoint(models / "tiny_sam.pt"),
           "sam2_config": "tiny", "sam2_checkpoint": tiny_sam2_checkpoint(models / "tiny_sam2.pt")}
    # more, smaller steps than the paper's (batch 10, lr 1e-3) so that a few CPU minutes train something
    finetune = {"epochs": epochs["finetune"], "label_fraction": 0.3, "batch_size": 4, "learning_rate": 3e-3}
    t0 = time.time()
    rows: dict[str, dict[str, Any]] = {}

    def evaluate(name: str, ckpt: str, **extra: Any) -> None:
        log.stage(bundle, ["train.json", "evaluate.json"], ckpt_dir=str(models), ckpt_name=ckpt,
                  output_dir=str(out / f"evaluate_{name}"), **common, **sam, **extra)
        scores = json.loads((out / f"evaluate_{name}" / "metrics.json").read_text())
        rows[name] = {"dice": scores["mean_dice"], "hausdorff": scores["mean_hausdorff"],
                      "volumes": scores["num_volumes"]}

    t = time.time()
    log.stage(bundle, ["train.json"], ckpt_dir=str(models), output_dir=str(out / "supervised"), **common,
              **finetune, from_pretrained=False, ckpt_name="supervised.pt")
    evaluate("supervised", "supervised.pt")
    rows["supervised"]["seconds"] = round(time.time() - t, 1)
    for method in ("S", "O", "M"):
        t = time.time()
        log.stage(
            bundle,
            ["train.json", "pretrain.json"],
            ckpt_dir=str(models),
            output_dir=str(out / f"pretrain_{method}"),
            **common,
            pretrain_method=method,
            epochs=epochs["pretrain"],
            pretrain_learning_rate=1e-3,
        )
        log.stage(bundle, ["train.json"], ckpt_dir=str(models), output_dir=str(out / f"finetune_{method}"), **common,
                  **finetune, pretrain_method=method, from_pretrained=True, ckpt_name=f"polycl_{method}.pt")
        evaluate(f"polycl_{method}", f"polycl_{method}.pt")
        rows[f"polycl_{method}"]["seconds"] = round(time.time() - t, 1)
    evaluate("polycl_M_sam", "polycl_M.pt", refine="sam")
    evaluate("polycl_M_sam2", "polycl_M.pt", propagate="sam2")
    infer = {k: common[k] for k in ("image_size", "channels", "demo_kwargs")}
    log.stage(bundle, ["inference.json"], ckpt_path=str(models / "polycl_M.pt"), output_dir=str(out / "predictions"),
              **infer)
    labels = {"supervised": "Supervised (random init)", "polycl_S": "PolyCL-S", "polycl_O": "PolyCL-O",
              "polycl_M": "PolyCL-M", "polycl_M_sam": "PolyCL-M + SAM (tiny, random)",
              "polycl_M_sam2": "PolyCL-M + SAM 2 (tiny, random)"}

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    table = "\n".join(["| Model | Dice | Hausdorff (voxels) | stage time (s) |", "|---|---|---|---|"]
                      + [f"| {labels[k]} | {f(v['dice'])} | {f(v['hausdorff'])} | {v.get('seconds', '')} |"
                         for k, v in rows.items()])
    (out / "table.md").write_text(table + "\n")
    written = sorted(p.name for p in (out / "predictions").iterdir())
    summary = {"seconds": round(time.time() - t0, 1), "rows": rows, "table": str(out / "table.md"),
               "predictions": written, "sam": "tiny SAM and SAM 2 with random weights (demo only)",
               "label_server": _served(out, models / "polycl_M.pt", {k: common[k] for k in ("image_size", "channels")})}
    first = load_datalist(resolve_datalist("", demo="ct", demo_kwargs=data), "testing")[0]
    summary["figure"] = str(ct_figure(
        first["image"], out / "predictions" / f"{ct_output_stem(first['image'])}_seg.nii.gz", first.get("label"),
        out / FIGURE, _title("PolyCL demo: a testing CT volume, predicted liver (red), reference (green)", quick)))
    log.say(f"\nPolyCL demo (CT phantoms, {summary['seconds']:.0f} s): testing volumes, middle 30 % of the slices\n\n"
          f"{table}\n\n"
          "  SAM and SAM 2 here are TINY MODELS WITH RANDOM WEIGHTS (no checkpoint can be downloaded): their masks\n"
          "  mean nothing, so those rows show the pipeline runs, not the method's gain. Pass --sam_checkpoint /\n"
          "  --sam2_checkpoint with real weights for real runs.\n"
          f"  predictions (NIfTI; DICOM SEG for the DICOM inputs): {out / 'predictions'}: {', '.join(written)}\n")
    return summary


#: hand-made demos: ``demo(out, quick, log)`` runs its stages through ``log``, prints its summary with
#: ``log.say`` and returns it
DEMOS: dict[str, Callable[[Path, bool, StageLog], dict[str, Any]]] = {
    "medsass_binary_segmentation": _medsass,
    "surgical_semiseg_laparoscopy_segmentation": _surgical,
    "slippa_liver_landmark_segmentation": _slippa,
    "sam_mining_polyp_segmentation": _sam_mining,
    "polycl_liver_ct_segmentation": _polycl,
}


def _protocol_demo(bundle: str, out: Path, quick: bool, log: StageLog) -> dict[str, Any]:
    """A bundle without a hand-made demo: its protocol on its own demo data (``quick``: ``smoke.json`` sizes)."""
    root = Path(bundle_root(bundle))
    smoke = root / "configs" / "smoke.json"
    overrides = json.loads(smoke.read_text()) if quick and smoke.is_file() else {}
    t0 = time.time()
    last = run_protocol(bundle, out, run=log.stage, **overrides)
    metrics_file = last / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    summary = {"bundle": root.name, "stages": [s.name for s in load_protocol(bundle)], "seconds": time.time() - t0,
               "metrics_file": str(metrics_file) if metrics else None,
               **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
    log.say(f"\n{root.name} demo ({summary['seconds']:.0f} s): stages {', '.join(summary['stages'])}; "
          f"metrics of the last stage: {metrics_file if metrics else 'none written'}\n")
    return summary


def demo_bundles() -> list[str]:
    """Bundles ``fewlabel demo`` runs: those with a hand-made demo, then any other bundle with a protocol."""
    return list(DEMOS) + [b for b in PROTOCOLS if b not in DEMOS]


def run_demo(bundle: str, output_dir: str | Path = "outputs/demo", quick: bool = False,
             verbose: bool = False) -> dict[str, Any]:
    """Run one bundle's demo; outputs go to ``output_dir/<bundle>``; returns its summary (also saved as JSON).

    The five bundles of this repository have hand-made demos (summaries, pictures); any other bundle
    (a name or folder, see :func:`fewlabel.bundle.bundle_root`) runs its ``configs/protocol.json``.
    Each stage's output goes to ``output_dir/<bundle>/logs/<NN>_<stage>.log`` and the terminal shows
    one progress line per stage and the summary, which names the logs (:class:`~fewlabel.stage_log.StageLog`;
    a failing stage shows the end of its log and raises :class:`~fewlabel.stage_log.StageError`);
    ``verbose`` prints all output instead and writes no logs.
    """
    if bundle in DEMOS:
        name, run = bundle, DEMOS[bundle]
    else:
        try:
            name = Path(bundle_root(bundle)).name
            load_protocol(bundle)
        except (FileNotFoundError, DataError) as e:
            raise ValueError(f"no demo for '{bundle}': {e}; hand-made demos exist for {sorted(DEMOS)}") from e

        def run(out: Path, quick: bool, log: StageLog) -> dict[str, Any]:
            return _protocol_demo(bundle, out, quick, log)
    out = Path(output_dir).resolve() / name
    out.mkdir(parents=True, exist_ok=True)
    with StageLog(out / "logs", title=name, verbose=verbose) as log:
        summary = run(out, quick, log)
        if not verbose:
            summary["logs"] = [str(p) for p in log.logs]
            log.say(f"  logs:     {out / 'logs'} ({len(log.logs)} stages, <NN>_<stage>.log; other output: "
                    f"{log.other_log.name})\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
