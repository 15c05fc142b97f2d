"""SLiPPA bundle: the five architectures from the config, stage 1 -> stage 2 -> evaluate -> infer -> video on
demo data, the evaluation handler at the original resolution, and the user-facing outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from testlib import REPO, write_png

BUNDLE = REPO / "bundles" / "slippa_liver_landmark_segmentation"
NAME = BUNDLE.name
SMOKE = json.loads((BUNDLE / "configs" / "smoke.json").read_text())
ARCHS = ["unet", "unetplusplus", "unet3plus", "deeplabv3plus", "resunetplusplus"]


def _parser(*names: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / n) for n in names])
    parser.update(overrides)
    return parser


@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_is_selectable_in_train_and_inference(arch):
    for names in (("train.json",), ("inference.json",)):
        net = _parser(*names, arch=arch, encoder_name="resnet18").get_parsed_content("network_def", instantiate=True)
        with torch.no_grad():
            out = net.eval()(torch.rand(1, 3, 64, 96))
        assert out.shape == (1, 4, 64, 96), (arch, names)


@pytest.mark.parametrize("arch", ARCHS)
def test_one_training_step_per_architecture(arch, tmp_path):
    from fewlabel.protocols import run_stage

    run_stage(NAME, ["train.json"], **{**SMOKE, "arch": arch, "deep_supervision": arch == "unet3plus"},
              ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "out"))
    state = torch.load(tmp_path / "models" / "stage1.pt", map_location="cpu", weights_only=True)
    assert state and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_finetune_without_stage1_checkpoint_names_it(tmp_path):
    from fewlabel.errors import CheckpointError
    from fewlabel.protocols import run_stage

    with pytest.raises(Exception) as info:  # monai.bundle wraps it in a RuntimeError naming the config expression
        run_stage(NAME, ["train.json", "finetune.json"], **SMOKE, ckpt_dir=str(tmp_path / "models"),
                  output_dir=str(tmp_path / "out"))
    chain, e = [], info.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    errors = [e for e in chain if isinstance(e, CheckpointError)]
    assert errors and "stage1.pt" in str(errors[0]) and "pretrain" not in str(errors[0])


def _write_video(frames, path):
    import cv2

    first = cv2.imread(str(frames[0]))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, first.shape[1::-1])
    for f in frames:
        writer.write(cv2.imread(str(f)))
    writer.release()
    return path


def test_stage1_stage2_evaluate_infer_and_video_end_to_end(tmp_path):
    import cv2

    from fewlabel.bundle import resolve_datalist
    from fewlabel.data import load_datalist
    from fewlabel.engines import stage_table
    from fewlabel.protocols import PROTOCOLS, run_protocol, run_stage

    out = run_protocol(NAME, tmp_path, **SMOKE)
    assert [s.name for s in PROTOCOLS[NAME]] == ["stage1", "finetune", "evaluate_stage1", "evaluate"]
    assert (tmp_path / "models" / "stage1.pt").is_file() and (tmp_path / "models" / "model.pt").is_file()

    metrics = json.loads((out / "metrics.json").read_text())
    init = json.loads((tmp_path / "evaluate_stage1" / "metrics.json").read_text())
    assert init["stage"] == "init" and metrics["stage"] == "tune"
    test_items = load_datalist(resolve_datalist("", demo="liver_landmarks", demo_kwargs=SMOKE["finetune_demo_kwargs"]),
                               "testing")
    for res in (metrics["raw"], metrics["post"]):
        assert res["num_images"] == len(test_items)
        assert set(res["per_landmark"]) == {"silhouette", "ridge", "ligament"}
        for vals in res["per_landmark"].values():
            assert set(vals) >= {"precision", "dice", "G"}
    assert set(metrics["postprocess_ms"]) >= {"skeleton", "rdp"}
    assert "| ridge" in (out / "metrics.md").read_text()
    table = stage_table(
        {"smoke": {"init": tmp_path / "evaluate_stage1" / "metrics.json", "tune": out / "metrics.json"}}
    )
    assert table.count("|") > 10 and "smoke" in table

    infer = {k: SMOKE[k] for k in ("encoder_name", "image_size")} | {"demo_kwargs": SMOKE["finetune_demo_kwargs"],
                                                                   "thickness": 2}
    run_stage(NAME, ["inference.json"], ckpt_path=str(tmp_path / "models" / "model.pt"),
              output_dir=str(tmp_path / "pred"), **infer)
    for item in test_items:
        stem = Path(item["image"]).stem
        h, w = cv2.imread(item["image"]).shape[:2]
        mask = cv2.imread(str(tmp_path / "pred" / f"{stem}_mask.png"))
        assert mask.shape[:2] == (h, w), "masks are written at the frame's own size"
        assert (tmp_path / "pred" / f"{stem}_overlay.png").is_file()
        record = json.loads((tmp_path / "pred" / f"{stem}_landmarks.json").read_text())
        assert (record["height"], record["width"]) == (h, w)
        assert set(record["landmarks"]) == {"silhouette", "ridge", "ligament"}
        for curves in record["landmarks"].values():
            for curve in curves:
                pts = np.asarray(curve)
                assert pts.ndim == 2 and pts.shape[1] == 2
                assert (pts[:, 0] > -1).all() and (pts[:, 0] < w).all() and (pts[:, 1] < h).all()

    video = _write_video([it["image"] for it in test_items], tmp_path / "clip.avi")
    run_stage(NAME, ["inference.json", "video.json"], ckpt_path=str(tmp_path / "models" / "model.pt"),
              output_dir=str(tmp_path / "video"), video_path=str(video), **infer)
    per_frame = json.loads((tmp_path / "video" / "clip_landmarks.json").read_text())
    assert [f["frame"] for f in per_frame["frames"]] == list(range(len(test_items)))
    written = next((tmp_path / "video").glob("clip_overlay.*"))
    cap = cv2.VideoCapture(str(written))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(test_items)
    cap.release()


def test_video_command_errors_name_the_file(tmp_path):
    from fewlabel.engines import run_video
    from fewlabel.errors import DataError
    from fewlabel.postprocess import LandmarkPostprocessor

    net = torch.nn.Conv2d(3, 4, 1)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    for path in (tmp_path / "missing.mp4", bad):
        with pytest.raises(DataError, match=path.name):
            run_video(path, net, (32, 32), ["background", "silhouette", "ridge", "ligament"], LandmarkPostprocessor(),
                      tmp_path / "out")


class _Engine:
    """The two fields of an evaluator's state that LandmarkEvaluation reads."""

    def __init__(self, batch, output):
        self.state = type("S", (), {"batch": batch, "output": output})()


def test_evaluation_scores_at_the_original_resolution(tmp_path):
    from fewlabel.data.landmarks import draw_landmark_mask
    from fewlabel.engines import LandmarkEvaluation

    names = ["background", "silhouette", "ridge", "ligament"]
    full = draw_landmark_mask([(1, np.array([[10, 100], [180, 110]])), (2, np.array([[20, 40], [170, 60]]))],
                              (128, 192), thickness=3)
    small = np.asarray(torch.nn.functional.interpolate(torch.from_numpy(full)[None, None].float(), size=(64, 96),
                                                       mode="nearest"))[0]
    batch = [{"label_full": torch.from_numpy(full)[None], "image": torch.ones(3, 64, 96)}]
    handler = LandmarkEvaluation(tmp_path, names, postprocessor=None, d_max=10.0)
    handler.update(_Engine(batch, [{"pred": torch.from_numpy(full)[None]}]))
    exact = handler.results()
    assert exact["per_class"]["ridge"]["dice"] == pytest.approx(1.0)
    assert exact["per_class"]["ridge"]["G"] == pytest.approx(0.0)
    # a prediction at half size is brought back to 128x192 before scoring: close, not exact
    handler.reset()
    handler.update(_Engine(batch, [{"pred": torch.from_numpy(small)}]))
    half = handler.results()
    assert 0.5 < half["per_class"]["ridge"]["dice"] <= 1.0 and half["per_class"]["ridge"]["G"] < 0.5
    handler.write()
    assert json.loads((tmp_path / "metrics.json").read_text())["num_images"] == 1


def test_saved_point_lists_are_in_frame_pixels(tmp_path):
    from fewlabel.transforms import SaveLandmarksd
    from monai.data import MetaTensor

    frame = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
    src = write_png(tmp_path / "frame.png", frame)
    pred = MetaTensor(torch.zeros(1, 32, 48), meta={"filename_or_obj": str(src)})
    paths = {"ridge": [np.array([[4.0, 10.0], [40.0, 10.0]])], "silhouette": [], "ligament": []}
    SaveLandmarksd("pred", tmp_path / "out", ["background", "silhouette", "ridge", "ligament"], thickness=1)(
        {"pred": pred, "pred_paths": paths})
    record = json.loads((tmp_path / "out" / "frame_landmarks.json").read_text())
    assert (record["height"], record["width"]) == (64, 96)
    # pixel centres map to pixel centres: x' = (x + 0.5) * 2 - 0.5
    assert record["landmarks"]["ridge"][0] == [[8.5, 20.5], [80.5, 20.5]]
    from testlib import read_png

    mask = read_png(tmp_path / "out" / "frame_mask.png")
    assert mask.shape[:2] == (64, 96) and (mask[20, 10:80] == 2).all()


def test_evaluation_settings_come_from_evaluate_json(tmp_path):
    """evaluate.json's empty-case settings default to the P2ILF team evaluation and reach the handler."""
    cfg = json.loads((BUNDLE / "configs" / "evaluate.json").read_text())
    assert (cfg["tolerance"], cfg["empty_gt"], cfg["correct_absence"], cfg["false_alarm"]) == (
        "strict", "skip", "p2ilf", "formula")
    parser = _parser("train.json", "evaluate.json", output_dir=str(tmp_path), empty_gt="score", tolerance="inclusive")
    handlers = parser["validate#handlers"]
    index = next(i for i, h in enumerate(handlers) if h["_target_"].endswith("LandmarkEvaluation"))
    handler = parser.get_parsed_content(f"validate#handlers#{index}")
    assert handler.settings == {"empty_gt": "score", "correct_absence": "p2ilf", "false_alarm": "formula",
                                "tolerance": "inclusive"}
    # a frame with a predicted ligament and none in the ground truth: G by the P2ILF formula, |B| / |I|
    names = ["background", "silhouette", "ridge", "ligament"]
    gt = np.zeros((1, 40, 50), np.int64)
    gt[0, 10, 5:45] = 1
    pred = gt.copy()
    pred[0, 30, 10:20] = 3
    handler.update(_Engine([{"label_full": torch.from_numpy(gt)}], [{"pred": torch.from_numpy(pred)}]))
    res = handler.results()
    assert res["settings"]["empty_gt"] == "score" and res["raw"]["empty_gt"] == "score"
    raw = res["raw"]["per_landmark"]  # (post-processing culls a ligament below every other landmark)
    assert raw["ligament"]["G"] == pytest.approx(10 / (40 * 50))
    assert raw["ridge"]["dice"] == pytest.approx(1.0)  # a correct absence: D = 1 (P2ILF code)
    from fewlabel.handlers import LandmarkEvaluation

    with pytest.raises(ValueError, match="false_alarm must be one of"):
        LandmarkEvaluation(tmp_path, names, false_alarm="flat")


@pytest.mark.parametrize("stage", [["train.json"], ["train.json", "finetune.json"]])
def test_lr_scheduler_cuts_after_three_epochs_of_stagnation(stage):
    """ "x0.2 after three epochs of stagnation": PyTorch's patience 2 (train, fine-tune and multi-GPU)."""
    parser = _parser(*stage, **SMOKE, from_stage1=False)
    scheduler = parser.get_parsed_content("lr_scheduler")
    assert scheduler.patience == 2 and scheduler.factor == pytest.approx(0.2) and scheduler.mode == "max"
    lr0 = scheduler.optimizer.param_groups[0]["lr"]
    scheduler.step(0.5)  # the best so far
    for epoch in range(1, 4):  # three epochs without gain: the third one cuts the learning rate
        assert scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(lr0), epoch
        scheduler.step(0.5)
    assert scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(0.2 * lr0)
    multi = _parser(*stage, "multi_gpu_train.json")
    assert multi.get_parsed_content("lr_scheduler#patience") == 2
