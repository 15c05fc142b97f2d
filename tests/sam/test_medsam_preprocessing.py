"""A MedSAM teacher gets MedSAM's own pre-processing; a SAM teacher keeps SAM's.

MedSAM's published inference (``bowang-lab/MedSAM``, ``MedSAM_Inference.py``) resizes the whole
image to 1024 x 1024 with ``skimage.transform.resize(order=3, preserve_range=True,
anti_aliasing=True)``, casts it to ``uint8``, min-max scales it to [0, 1] and gives it to the image
encoder with no mean/std normalisation and no padding; boxes are scaled by ``1024 / W`` and
``1024 / H``; the low-resolution mask is resized (bilinear) to ``(H, W)``. The reference below is
written from that description and compared with :meth:`SamTeacher.preprocess`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import transform

from fewlabel.sam import (
    SamPrompt,
    SamTeacher,
    build_sam_teacher,
    build_tiny_sam,
    mask_prompt_from_probability,
    resolve_preprocessing,
    save_tiny_sam,
)


def _medsam_reference(image: np.ndarray, side: int = 1024) -> np.ndarray:
    """MedSAM's pre-processing of an ``(H, W, 3)`` uint8 image -> ``(3, side, side)`` in [0, 1]."""
    resized = transform.resize(image, (side, side), order=3, preserve_range=True, anti_aliasing=True)
    resized = resized.astype(np.uint8)
    scaled = (resized - resized.min()) / np.clip(resized.max() - resized.min(), 1e-8, None)
    return scaled.transpose(2, 0, 1)


def _hand_made_image() -> np.ndarray:
    """24 x 40 RGB, range 10-220: two flat halves in red, a ramp in green, a rectangle in blue."""
    img = np.zeros((24, 40, 3), np.uint8)
    img[..., 0] = 40
    img[:, 20:, 0] = 200
    img[..., 1] = np.linspace(30, 220, 40).astype(np.uint8)[None]
    img[..., 2] = 10
    img[6:18, 8:30, 2] = 190
    return img


@pytest.fixture(scope="module")
def sam_1024():
    """A SAM with a 1024 px input (as the released models), tiny otherwise: only pre-processing runs."""
    return build_tiny_sam(image_size=1024, patch_size=64)


def test_medsam_preprocessing_matches_medsam_inference(sam_1024) -> None:
    image = _hand_made_image()
    reference = torch.from_numpy(_medsam_reference(image)).float()
    teacher = SamTeacher(sam_1024, preprocessing="medsam")
    batch = torch.from_numpy(image).permute(2, 0, 1)[None]
    for x in (batch, batch.float() / 255.0):  # uint8, and float in [0, 1] as MONAI's ScaleIntensity gives
        out = teacher.preprocess(x)[0]
        assert out.shape == (3, 1024, 1024)  # the whole image stretched to the square: no padding
        assert float(out.min()) == 0.0 and float(out.max()) == 1.0  # min-max scaled, no mean/std
        diff = (out - reference).abs()
        # the resize kernels differ (skimage's cubic spline vs torch's bicubic) only along edges
        assert float(diff.mean()) < 0.01
        assert float((diff > 0.02).float().mean()) < 0.06
        # flat areas far from any edge agree to one grey level (MedSAM's uint8 cast truncates float
        # noise, 39.99999 -> 39, in the reference too), whereas the halves are 160 levels apart
        level = 1.0 / (220 - 10) + 1e-6
        assert torch.allclose(out[0, 100:300, 100:400], reference[0, 100:300, 100:400], atol=level)
        assert torch.allclose(out[0, 100:300, 700:900], reference[0, 100:300, 700:900], atol=level)
    # SAM's pre-processing of the same image is far from MedSAM's: normalised (negative values), padded
    sam_input = SamTeacher(sam_1024, preprocessing="sam").preprocess(batch)[0]
    assert float(sam_input.min()) < -1.0
    assert float((sam_input - reference).abs().mean()) > 0.3
    assert torch.all(sam_input[:, 614:, :] == 0)  # 24 x 40 -> 614 x 1024, zero padding below


def test_medsam_gray_image_and_constant_image(sam_1024) -> None:
    teacher = SamTeacher(sam_1024, preprocessing="medsam")
    gray = torch.from_numpy(_hand_made_image()[..., 1])[None, None]
    out = teacher.preprocess(gray)[0]
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])  # repeated to 3 channels
    flat = teacher.preprocess(torch.full((1, 3, 16, 16), 0.5))
    assert torch.all(flat == 0)  # MedSAM's clip of the range to 1e-8: a constant image gives zeros


def test_medsam_prompts_and_masks_use_the_stretched_frame(tmp_path) -> None:
    ckpt = save_tiny_sam(tmp_path / "medsam_tiny.pt")
    teacher = build_sam_teacher(ckpt, model_type="tiny")
    assert teacher.preprocessing == "medsam"  # "auto": the file name says MedSAM
    h, w = 30, 50
    assert teacher.input_size((h, w)) == (64, 64)
    box = torch.tensor([[5.0, 3.0, 45.0, 27.0]])
    mapped = teacher.to_input_coords(box.reshape(2, 2), (h, w)).reshape(1, 4)
    expected = box / torch.tensor([w, h, w, h]) * 64  # MedSAM: box_np / [W, H, W, H] * 1024
    assert torch.allclose(mapped, expected)
    emb = teacher.embed(torch.rand(1, 3, h, w))
    masks = teacher.predict(emb, [SamPrompt(box=box[0])], (h, w))
    assert masks.shape == (1, 1, h, w) and torch.isfinite(masks).all()
    # the mask prompt covers the whole square (stretched), not a letterbox with padding
    prob = torch.ones(h, w)
    assert torch.all(mask_prompt_from_probability(prob, 16, frame="medsam") > 0)
    assert torch.all(mask_prompt_from_probability(prob, 16, frame="sam")[:, 10:, :] < 0)  # padded rows


def test_sam_checkpoints_keep_sam_preprocessing_and_cache_keys_differ(tmp_path) -> None:
    ckpt = save_tiny_sam(tmp_path / "tiny_sam.pt")
    sam_teacher = build_sam_teacher(ckpt, model_type="tiny")
    assert sam_teacher.preprocessing == "sam"
    assert sam_teacher.input_size((30, 50)) == (38, 64)  # ResizeLongestSide
    forced = build_sam_teacher(ckpt, model_type="tiny", preprocessing="medsam")
    assert forced.preprocessing == "medsam"
    assert forced.identity != sam_teacher.identity  # cached embeddings of one never serve the other
    assert resolve_preprocessing("auto", "/w/medsam_vit_b.pth") == "medsam"
    assert resolve_preprocessing("auto", "/w/sam_vit_b_01ec64.pth") == "sam"
    assert resolve_preprocessing("sam", "/w/MedSAM_vit_b.pth") == "sam"
    with pytest.raises(ValueError, match="preprocessing"):
        build_sam_teacher(ckpt, model_type="tiny", preprocessing="imagenet")


@pytest.mark.parametrize(
    "names,key",
    [(["inference.json"], "inferer"), (["train.json", "evaluate.json"], "validate#inferer"),
     (["train.json", "mine.json"], "teacher")],
)
def test_bundle_configs_pass_the_preprocessing_to_the_teacher(names, key, tmp_path) -> None:
    from monai.bundle import ConfigParser

    from testlib import REPO

    configs = REPO / "bundles" / "sam_mining_polyp_segmentation" / "configs"
    medsam_file = save_tiny_sam(tmp_path / "medsam_tiny.pt")
    for override, expected in ((None, "medsam"), ("sam", "sam")):  # default "auto": the file name decides
        parser = ConfigParser()
        parser.read_config([str(configs / n) for n in names])
        parser.update({"sam_model_type": "tiny", "sam_checkpoint": str(medsam_file), "device": "cpu",
                       "inference_mode": "accurate", "bundle_root": str(tmp_path)})
        if override is not None:
            parser["sam_preprocessing"] = override
        content = parser.get_parsed_content(key)
        teacher = content if isinstance(content, SamTeacher) else content.teacher
        assert teacher.preprocessing == expected
