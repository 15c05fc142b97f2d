"""Documented options that every bundle must honour from its configs (README bad-input table, bundle docs):

- ``--channel_policy`` / ``--image_channels`` in every 2D bundle's inference, train, evaluate (and SAM mining's
  one-time mining, SLiPPA's video): a grey image in an RGB bundle is an error naming the file and
  ``--channel_policy convert`` by default, and is segmented with ``convert``; ``--image_channels 1`` builds a
  1-channel network and loads grey images as they are;
- ``--nonfinite replace`` (top-level key) reaches the 2D loader and PolyCL's CT window;
- SAM mining's ``--multimask_output`` reaches the SAM call (inference, evaluation, mining);
- ``--sam_model_type vit_l`` alone makes ``sam_checkpoint`` the ViT-L file of ``large_files.yml`` (SAM mining,
  PolyCL; PolyCL's ``sam2_checkpoint`` follows ``sam2_config``), and a missing file is named with its entry.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, run
from PIL import Image

from testlib import REPO
from fewlabel.data import write_ct_phantom
from fewlabel.errors import CheckpointError, DataError
from fewlabel.sam import SamPrompt, tiny_sam_checkpoint

SURGICAL = "surgical_semiseg_laparoscopy_segmentation"
SLIPPA = "slippa_liver_landmark_segmentation"
SAM_MINING = "sam_mining_polyp_segmentation"
MEDSASS = "medsass_binary_segmentation"
CT = "polycl_liver_ct_segmentation"
BUNDLES_2D = [SURGICAL, SLIPPA, SAM_MINING, MEDSASS]
# (configs merged, preprocessing id) of every 2D stage that loads image files
STAGES_2D = {
    "inference": (["inference.json"], "preprocessing"),
    "train": (["train.json"], "train#preprocessing"),
    "evaluate": (["train.json", "evaluate.json"], "validate#preprocessing"),
}


def _configs(bundle: str, names: list[str]) -> list[str]:
    return [str(REPO / "bundles" / bundle / "configs" / n) for n in names]


def _smoke(bundle: str) -> dict:
    smoke = json.loads((REPO / "bundles" / bundle / "configs" / "smoke.json").read_text())
    return {k: v for k, v in smoke.items() if k in ("image_size", "channels", "encoder_name")}


def _parser(bundle: str, names: list[str], **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(_configs(bundle, names))
    parser.update({**_smoke(bundle), **overrides})
    return parser


def _cause(excinfo: pytest.ExceptionInfo, kind: type[BaseException]) -> BaseException:
    """The fewlabel error behind MONAI's config-evaluation wrapping."""
    e: BaseException | None = excinfo.value
    while e is not None and not isinstance(e, kind):
        e = e.__cause__ or e.__context__
    assert e is not None, f"no {kind.__name__} in the chain of {excinfo.value!r}"
    return e


def _data_error(transform, item: dict) -> str:
    """The message of the DataError ``transform(item)`` raises (MONAI's Compose wraps it in a RuntimeError)."""
    with pytest.raises(Exception) as excinfo:
        transform(item)
    return str(_cause(excinfo, DataError))


def _grey(path: Path, size=(40, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, size).astype(np.uint8)).save(path)
    return path


def _item(path: Path) -> dict:
    label = path.with_name(path.stem + "_label.png")
    Image.fromarray(np.zeros(np.asarray(Image.open(path)).shape[:2], np.uint8)).save(label)
    return {"image": str(path), "label": str(label)}


# --------------------------------------------------------------------------------------------
# channel_policy / image_channels
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", list(STAGES_2D))
@pytest.mark.parametrize("bundle", BUNDLES_2D)
def test_grey_image_is_an_error_naming_it_by_default_and_converted_on_request(bundle, stage, tmp_path):
    names, key = STAGES_2D[stage]
    item = _item(_grey(tmp_path / "grey.png"))
    msg = _data_error(_parser(bundle, names).get_parsed_content(key), item)
    assert str(tmp_path / "grey.png") in msg and "--channel_policy convert" in msg
    out = _parser(bundle, names, channel_policy="convert").get_parsed_content(key)(item)
    assert tuple(out["image"].shape) == (3, *_smoke(bundle)["image_size"])
    grey = np.asarray(Image.open(item["image"]), np.float32) / 255
    channels = out["image"] if stage == "inference" else None
    if channels is not None:  # no random augmentation: the grey value is repeated in R, G and B
        assert torch.equal(channels[0], channels[1]) and torch.equal(channels[1], channels[2])
        assert abs(float(channels.mean()) - float(grey.mean())) < 0.02


@pytest.mark.parametrize("bundle", BUNDLES_2D)
def test_image_channels_1_builds_a_grey_network_and_takes_grey_images(bundle, tmp_path):
    item = _item(_grey(tmp_path / "grey.png"))
    parser = _parser(bundle, ["inference.json"], image_channels=1)
    x = parser.get_parsed_content("preprocessing")(item)["image"]
    assert x.shape[0] == 1
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        y = net(x.as_tensor()[None])
    y = y[0] if isinstance(y, (list, tuple)) else y
    assert y.shape[-2:] == x.shape[-2:]
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(rgb)
    assert "--channel_policy convert" in _data_error(parser.get_parsed_content("preprocessing"), {"image": str(rgb)})


def test_surgical_pretraining_reconstructs_as_many_channels_as_it_reads():
    parser = _parser(SURGICAL, ["train.json", "pretrain.json"], image_channels=1)
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)


@pytest.mark.parametrize("bundle", BUNDLES_2D)
def test_bundle_inference_segments_a_grey_image_with_channel_policy_convert(bundle, tmp_path):
    folder = tmp_path / "data"
    _grey(folder / "grey.png")
    ckpt = tmp_path / "model.pt"
    net = _parser(bundle, ["inference.json"]).get_parsed_content("network_def")
    torch.save({"model": net.state_dict()}, ckpt)
    out = tmp_path / "out"
    run(config_file=_configs(bundle, ["inference.json"])[0], dataset_dir=str(folder), output_dir=str(out),
        ckpt_path=str(ckpt), channel_policy="convert", **_smoke(bundle))
    written = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert any("grey" in name for name in written), written


def test_sam_mining_one_time_mining_honours_channel_policy(tmp_path):
    models = tmp_path / "models"
    item = {"image": str(_grey(tmp_path / "unlabelled" / "grey.png"))}

    def mine(**extra):
        parser = _parser(SAM_MINING, ["train.json", "mine.json"], from_supervised=False, mining_schedule="one_time",
                         sam_model_type="tiny", sam_checkpoint=tiny_sam_checkpoint(models / "tiny_sam.pt"),
                         output_dir=str(tmp_path / "mine"), device="cpu", **extra)
        parser["unlabelled_files"] = [item]
        parser.get_parsed_content("mine_once")  # the stage's initialize step: mines once
        return parser.get_parsed_content("pseudo_files")

    with pytest.raises(Exception) as excinfo:
        mine()
    assert item["image"] in str(_cause(excinfo, DataError))
    pseudo = mine(channel_policy="convert")
    assert [p["image"] for p in pseudo] == [item["image"]] and Path(pseudo[0]["label"]).is_file()


def test_slippa_video_honours_image_channels_and_channel_policy(tmp_path):
    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    for k in range(2):
        writer.write(np.full((48, 64, 3), 40 * k + 60, np.uint8))
    writer.release()

    def video_run(**extra):
        parser = _parser(SLIPPA, ["inference.json", "video.json"], video_path=str(video), image_channels=1,
                         ckpt_path=None, output_dir=str(tmp_path / "out"), device="cpu", amp=False, **extra)
        parser.get_parsed_content("run")

    with pytest.raises(Exception) as excinfo:
        video_run()
    err = _cause(excinfo, DataError)
    assert str(video) in str(err) and "--channel_policy convert" in str(err)
    video_run(channel_policy="convert")
    assert json.loads((tmp_path / "out" / "clip_landmarks.json").read_text())["frames"]


# --------------------------------------------------------------------------------------------
# nonfinite
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", list(STAGES_2D))
@pytest.mark.parametrize("bundle", BUNDLES_2D)
def test_nonfinite_replace_reaches_the_2d_loader(bundle, stage, tmp_path):
    names, key = STAGES_2D[stage]
    arr = np.random.default_rng(0).random((40, 48)).astype(np.float32)
    arr[3, 4], arr[5, 6], arr[7, 8] = np.nan, np.inf, -np.inf
    path = tmp_path / "float.tif"
    Image.fromarray(arr, mode="F").save(path)
    item = _item(path)
    msg = _data_error(_parser(bundle, names, image_channels=1).get_parsed_content(key), item)
    assert str(path) in msg and "--nonfinite replace" in msg
    out = _parser(bundle, names, image_channels=1, nonfinite="replace").get_parsed_content(key)(item)["image"]
    assert out.shape[0] == 1 and bool(torch.isfinite(out).all())
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


@pytest.mark.parametrize("bundle", BUNDLES_2D)
def test_bundle_inference_segments_a_float_image_with_nan_under_nonfinite_replace(bundle, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    arr = np.random.default_rng(0).random((40, 48)).astype(np.float32)
    arr[3:6, 4:9] = np.nan
    Image.fromarray(arr, mode="F").save(folder / "float.tif")
    ckpt = tmp_path / "model.pt"
    net = _parser(bundle, ["inference.json"], image_channels=1).get_parsed_content("network_def")
    torch.save({"model": net.state_dict()}, ckpt)
    out = tmp_path / "out"
    run(config_file=_configs(bundle, ["inference.json"])[0], dataset_dir=str(folder), output_dir=str(out),
        ckpt_path=str(ckpt), image_channels=1, nonfinite="replace", **_smoke(bundle))
    written = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert any(name.startswith("float") and "overlay" in name for name in written), written


def _nan_volume(folder: Path) -> Path:
    ph = write_ct_phantom(folder / "scan.nii.gz", shape=(12, 24, 20))
    img = nib.load(str(ph.image))
    arr = np.asarray(img.dataobj).astype(np.float32)
    arr[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine), str(ph.image))
    return Path(ph.image), Path(ph.label)


@pytest.mark.parametrize("stage", ["inference", "evaluate"])
def test_nonfinite_replace_reaches_the_ct_window(stage, tmp_path):
    image, label = _nan_volume(tmp_path)
    names, key = (["inference.json"], "preprocessing") if stage == "inference" else (
        ["train.json", "evaluate.json"], "validate#preprocessing")
    item = {"image": str(image), "label": str(label)}
    msg = _data_error(_parser(CT, names).get_parsed_content(key), item)
    assert str(image) in msg and "--nonfinite replace" in msg
    out = _parser(CT, names, nonfinite="replace").get_parsed_content(key)(item)["image"]
    assert bool(torch.isfinite(out).all())


def test_nonfinite_is_a_top_level_key_of_ct_training():
    for value in ("error", "replace"):
        load = _parser(CT, ["train.json"], nonfinite=value).get_parsed_content("load")
        windows = [t for t in load if type(t).__name__ == "CTWindowd"]
        assert windows and all(t.window.nonfinite == value for t in windows)


# --------------------------------------------------------------------------------------------
# SAM options
# --------------------------------------------------------------------------------------------


class _DecoderCalls:
    """Records ``multimask_output`` of every call to a SAM mask decoder."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        self.calls: list[bool] = []
        original = decoder.forward

        def forward(*args, **kwargs):
            self.calls.append(bool(kwargs["multimask_output"]))
            return original(*args, **kwargs)

        decoder.forward = forward


def _sam_overrides(tmp_path: Path, multimask: bool | None) -> dict:
    extra = {} if multimask is None else {"multimask_output": multimask}
    return {"sam_model_type": "tiny", "sam_checkpoint": tiny_sam_checkpoint(tmp_path / "tiny_sam.pt"),
            "device": "cpu", "inference_mode": "accurate", **extra}


class _Centre(torch.nn.Module):
    """A student that predicts a square in the middle of the image (so SAM gets a prompt)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full((x.shape[0], 1, *x.shape[-2:]), -5.0)
        h, w = x.shape[-2:]
        out[..., h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 5.0
        return out


@pytest.mark.parametrize("names,key", [(["inference.json"], "inferer"),
                                       (["train.json", "evaluate.json"], "validate#inferer")])
@pytest.mark.parametrize("multimask", [None, True])
def test_multimask_output_reaches_the_sam_call_of_accurate_inference(names, key, multimask, tmp_path):
    inferer = _parser(SAM_MINING, names, **_sam_overrides(tmp_path, multimask)).get_parsed_content(key)
    calls = _DecoderCalls(inferer.teacher.sam.mask_decoder)
    out = inferer(torch.rand(1, 3, 64, 64), _Centre())
    assert out.shape == (1, 1, 64, 64)
    assert calls.calls == [bool(multimask)]  # default (None): single-mask output, as documented


@pytest.mark.parametrize("multimask", [False, True])
def test_multimask_output_reaches_the_mining_teacher(multimask, tmp_path):
    parser = _parser(SAM_MINING, ["train.json", "mine.json"], **_sam_overrides(tmp_path, multimask))
    teacher = parser.get_parsed_content("teacher")
    calls = _DecoderCalls(teacher.sam.mask_decoder)
    emb = teacher.embed(torch.rand(1, 3, 64, 64))
    teacher.predict(emb, [SamPrompt(box=torch.tensor([10.0, 10.0, 40.0, 40.0]))], (64, 64))
    assert calls.calls == [multimask]


def _bundle_copy(bundle: str, tmp_path: Path) -> Path:
    """An empty bundle folder holding only the bundle's large_files.yml (no weights in it, ever)."""
    root = tmp_path / bundle
    root.mkdir()
    shutil.copy(REPO / "bundles" / bundle / "large_files.yml", root / "large_files.yml")
    return root


SAM_FILES = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_h": "sam_vit_h_4b8939.pth"}


@pytest.mark.parametrize("model_type", list(SAM_FILES))
@pytest.mark.parametrize("names,key", [(["inference.json"], "inferer"), (["train.json"], None),
                                       (["train.json", "evaluate.json"], "validate#inferer"),
                                       (["train.json", "mine.json"], "teacher")])
def test_sam_model_type_alone_picks_its_checkpoint_and_names_the_large_files_entry(names, key, model_type, tmp_path):
    root = _bundle_copy(SAM_MINING, tmp_path)
    parser = _parser(SAM_MINING, names, bundle_root=str(root), sam_model_type=model_type, device="cpu",
                     inference_mode="accurate")
    expected = root / "models" / SAM_FILES[model_type]
    assert Path(parser.get_parsed_content("sam_checkpoint")) == expected
    if key is None:
        return
    with pytest.raises(Exception) as excinfo:
        parser.get_parsed_content(key)
    msg = str(_cause(excinfo, CheckpointError))
    assert str(expected) in msg and str(root / "large_files.yml") in msg
    assert f"entry 'models/{SAM_FILES[model_type]}'" in msg and "dl.fbaipublicfiles.com" in msg


@pytest.mark.parametrize("names,key", [(["inference.json"], "inferer"),
                                       (["train.json", "evaluate.json"], "validate#inferer")])
@pytest.mark.parametrize("model_type", ["vit_l", "vit_h"])
def test_polycl_sam_model_type_alone_picks_its_checkpoint(names, key, model_type, tmp_path):
    root = _bundle_copy(CT, tmp_path)
    parser = _parser(CT, names, bundle_root=str(root), sam_model_type=model_type, refine="sam", device="cpu")
    expected = root / "models" / SAM_FILES[model_type]
    assert Path(parser.get_parsed_content("sam_checkpoint")) == expected
    with pytest.raises(Exception) as excinfo:
        parser.get_parsed_content(key)
    msg = str(_cause(excinfo, CheckpointError))
    assert str(expected) in msg and f"entry 'models/{SAM_FILES[model_type]}'" in msg


@pytest.mark.parametrize("config,name", [("sam2.1_hiera_t", "sam2.1_hiera_tiny.pt"),
                                         ("sam2.1_hiera_l", "sam2.1_hiera_large.pt")])
def test_polycl_sam2_config_alone_picks_its_checkpoint(config, name, tmp_path):
    pytest.importorskip("sam2")
    root = _bundle_copy(CT, tmp_path)
    parser = _parser(CT, ["inference.json"], bundle_root=str(root), sam2_config=config, propagate="sam2",
                     device="cpu")
    assert Path(parser.get_parsed_content("sam2_checkpoint")) == root / "models" / name
    with pytest.raises(Exception) as excinfo:
        parser.get_parsed_content("inferer")
    msg = str(_cause(excinfo, CheckpointError))
    assert str(root / "models" / name) in msg and f"entry 'models/{name}'" in msg


def test_an_explicit_sam_checkpoint_wins_over_the_model_type_default(tmp_path):
    ckpt = tiny_sam_checkpoint(tmp_path / "mine.pt")
    parser = _parser(SAM_MINING, ["inference.json"], sam_model_type="vit_l", sam_checkpoint=ckpt)
    assert parser.get_parsed_content("sam_checkpoint") == ckpt
