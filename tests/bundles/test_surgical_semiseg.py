"""SurgicalSemiSeg at each dataset's own frame size: pad to the network's stride, crop back, never resize."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from PIL import Image

from testlib import inference_checkpoint
from fewlabel.bundle import bundle_root
from fewlabel.data import IGNORE_LABEL, PadCollate, save_datalist
from fewlabel.engines import DivisiblePadInferer, network_stride
from fewlabel.losses import build_loss
from fewlabel.networks import build_network
from fewlabel.protocols import run_stage

BUNDLE = "surgical_semiseg_laparoscopy_segmentation"
ROOT = Path(bundle_root(BUNDLE))
ODD_SIZES = [(334, 596), (335, 597)]  # m2caiSeg's frame size, and one that no stride divides


def _frames(folder: Path, sizes, seed: int = 0, labels: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    items = []
    for i, (h, w) in enumerate(sizes):
        folder.mkdir(parents=True, exist_ok=True)
        image = folder / f"frame{i}_{h}x{w}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(image)
        item = {"image": str(image), "patient": f"video{i}"}
        if labels:
            label = folder / f"frame{i}_{h}x{w}_label.png"
            index = np.zeros((h, w), np.uint8)
            index[h // 3:, : w // 2] = 2
            index[: h // 4, w // 2:] = 5
            Image.fromarray(index).save(label)
            item["label"] = str(label)
        items.append(item)
    return items


def test_network_stride_and_padded_inference_give_the_input_size():
    net = build_network(arch="deeplabv3plus", encoder_name="resnet18", in_channels=3, out_channels=4).eval()
    assert network_stride(net) == 16
    assert network_stride(build_network(arch="unetplusplus", encoder_name="resnet18", in_channels=3,
                                        out_channels=4)) == 32
    inferer = DivisiblePadInferer()
    for h, w in ODD_SIZES:
        x = torch.rand(2, 3, h, w)
        with torch.no_grad():
            out = inferer(x, net)
            # the network ran on the frame padded with black at the bottom / right, cropped back
            expected = net(F.pad(x, [0, (-w) % 16, 0, (-h) % 16]))[..., :h, :w]
        assert out.shape == (2, 4, h, w)
        assert torch.allclose(out, expected, atol=1e-5)
    with torch.no_grad():  # sizes that are multiples already go to the network as they are
        x = torch.rand(1, 3, 64, 96)
        assert torch.equal(inferer(x, net), net(x))


def test_pad_collate_pads_labels_with_the_loss_ignore_value():
    rng = np.random.default_rng(0)
    items = [{"image": torch.rand(3, h, w), "label": torch.from_numpy(rng.integers(0, 4, (1, h, w))).float()}
             for h, w in ODD_SIZES]
    batch = PadCollate()(items)
    assert batch["image"].shape == (2, 3, 335, 597) and batch["label"].shape == (2, 1, 335, 597)
    assert (batch["image"][0, :, 334:, :] == 0).all() and (batch["image"][0, :, :, 596:] == 0).all()
    assert (batch["label"][0, :, 334:, :] == IGNORE_LABEL).all()
    assert (batch["label"][0, :, :, 596:] == IGNORE_LABEL).all()
    assert torch.equal(batch["label"][1], items[1]["label"])  # the largest frame is unchanged
    # the padded pixels do not count: the loss of the padded batch is the loss over the frames' own pixels
    logits = torch.randn(2, 4, 335, 597)
    loss = build_loss("cross_entropy", num_classes=4)(logits, batch["label"])
    own = torch.cat([
        F.cross_entropy(logits[i:i + 1, :, :h, :w], items[i]["label"][None, 0].long(), reduction="none").flatten()
        for i, (h, w) in enumerate(ODD_SIZES)])
    assert torch.allclose(loss, own.mean(), atol=1e-5)
    # equal sizes: MONAI's own collate, nothing padded
    same = PadCollate()([items[0], items[0]])
    assert same["label"].shape == (2, 1, 334, 596) and (same["label"] >= 0).all()


def test_inference_returns_the_input_size_at_odd_sizes(tmp_path):
    folder = tmp_path / "frames"
    _frames(folder, ODD_SIZES)
    ckpt = inference_checkpoint(ROOT, tmp_path / "model.pt")
    run_stage(BUNDLE, ["inference.json"], dataset_dir=str(folder), ckpt_path=str(ckpt),
              output_dir=str(tmp_path / "out"), encoder_name="resnet18")
    for h, w in ODD_SIZES:
        mask = Image.open(next((tmp_path / "out").glob(f"*_{h}x{w}_mask.png")))
        assert mask.size == (w, h)


def test_monai_label_pipeline_returns_the_input_size(tmp_path):
    """MONAI Label's bundle task runs the config's preprocessing, inferer and postprocessing."""
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / "inference.json"), str(ROOT / "configs" / "monailabel_inference.json")])
    parser.update({"encoder_name": "resnet18", "device": "cpu"})
    pre, post = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("postprocessing")
    inferer, network = parser.get_parsed_content("inferer"), parser.get_parsed_content("network").eval()
    for item in _frames(tmp_path, ODD_SIZES):
        data = pre({"image": item["image"]})
        with torch.no_grad():
            data["pred"] = inferer(data["image"][None], network)[0]
        out = post(data)
        h, w = (int(s) for s in Path(item["image"]).stem.split("_")[1].split("x"))
        # MONAI Label's writer takes a 2D map as (W, H) and transposes it: the frame's own size
        assert tuple(out["pred"].shape) == (w, h)
        assert [int(v) for v in out["image"].meta["spatial_shape"]] == [w, h]


def test_resize_stays_an_option(tmp_path):
    folder = tmp_path / "frames"
    _frames(folder, ODD_SIZES[:1])
    ckpt = inference_checkpoint(ROOT, tmp_path / "model.pt")
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.json"))
    parser.update({"image_size": [64, 96], "dataset_dir": str(folder)})
    pre = parser.get_parsed_content("preprocessing")
    assert tuple(pre({"image": str(next(folder.glob("*.png")))})["image"].shape) == (3, 64, 96)
    run_stage(BUNDLE, ["inference.json"], dataset_dir=str(folder), ckpt_path=str(ckpt), image_size=[64, 96],
              output_dir=str(tmp_path / "out"), encoder_name="resnet18")
    assert Image.open(next((tmp_path / "out").glob("*_mask.png"))).size == (596, 334)  # resized back


def test_training_and_evaluation_on_frames_of_different_sizes(tmp_path):
    """m2caiSeg's frames vary in size: batches are padded (labels with the ignore value), validation and
    evaluation score every frame at its own size."""
    data = tmp_path / "data"
    sizes = [(45, 70), (46, 71), (48, 64), (47, 69)]
    train = _frames(data / "train", sizes, seed=1, labels=True)
    val = _frames(data / "val", sizes[:2], seed=2, labels=True)
    test = _frames(data / "test", sizes[2:], seed=3, labels=True)
    save_datalist({"training": train, "validation": val, "testing": test}, data / "datalist.json")
    common = {"dataset_dir": str(data), "ckpt_dir": str(tmp_path / "models"), "encoder_name": "resnet18",
              "epochs": 1, "batch_size": 2, "num_workers": 0, "from_pretrained": False}
    run_stage(BUNDLE, ["train.json"], output_dir=str(tmp_path / "train"), **common)
    assert (tmp_path / "models" / "model.pt").is_file()
    run_stage(BUNDLE, ["train.json", "evaluate.json"], output_dir=str(tmp_path / "eval"), **common)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    matrix = np.asarray(metrics["confusion_matrix"])
    assert matrix.sum() == sum(h * w for h, w in sizes[2:])  # every pixel of the test frames, no padding
