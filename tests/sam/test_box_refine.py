"""fewlabel.sam.box_refine: SAM box refinement of coarse masks (PolyCL 3.3.1), with a tiny SAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import Inferer

from fewlabel.sam import SamPrompt, build_sam_teacher, mask_bounding_box, save_tiny_sam
from fewlabel.sam.box_refine import (
    MERGE_MODES,
    REFINED_LOGIT,
    SamBoxRefineInferer,
    component_boxes,
    refine_with_sam,
)

H, W = 40, 48  # non-square, smaller than the tiny SAM's 64 px input: coordinates are rescaled


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return build_sam_teacher(save_tiny_sam(tmp_path_factory.mktemp("sam") / "tiny_sam.pt", seed=0), "tiny")


def _two_blobs() -> torch.Tensor:
    m = torch.zeros(H, W, dtype=torch.bool)
    m[2:6, 1:4] = True  # rows 2-5, cols 1-3
    m[20:31, 30:46] = True  # rows 20-30, cols 30-45
    return m


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, H, W, generator=torch.Generator().manual_seed(seed))


def _by_hand(teacher, images, masks, merge="union", pad=0):
    """Union over components of teacher.predict for each box, each prompted on its own."""
    emb = teacher.embed(images)
    out = torch.zeros(images.shape[0], 1, H, W, dtype=torch.bool)
    for i in range(images.shape[0]):
        for x0, y0, x1, y1 in component_boxes(masks[i, 0], pad=pad):
            box = torch.tensor([x0, y0, x1, y1], dtype=torch.float32)
            fg = teacher.predict(emb[i : i + 1], [SamPrompt(box=box)], (H, W))[0, 0] > 0
            if merge == "union_in_box":
                inside = torch.zeros_like(fg)
                inside[y0 : y1 + 1, x0 : x1 + 1] = True
                fg &= inside
            out[i, 0] |= fg
    return out.float()


# ---------------------------------------------------------------------------------------------
# boxes
# ---------------------------------------------------------------------------------------------


def test_boxes_of_two_components_inclusive_and_padded_with_clipping():
    m = _two_blobs()
    assert component_boxes(m) == [(1, 2, 3, 5), (30, 20, 45, 30)]
    assert component_boxes(m.numpy().astype(np.uint8)) == component_boxes(m)  # 0/1 numpy too
    # same convention as mask_bounding_box for a single component
    assert list(component_boxes(m[:10])[0]) == mask_bounding_box(m[:10]).int().tolist()
    # padding 3: first box clipped at x=0 and y=0 -> (0, 0, 6, 8); second clipped at x = W-1 = 47
    assert component_boxes(m, pad=3) == [(0, 0, 6, 8), (27, 17, 47, 33)]
    full = torch.ones(5, 7)
    assert component_boxes(full, pad=10) == [(0, 0, 6, 4)]


def test_connectivity_and_min_pixels():
    m = np.zeros((10, 10), dtype=bool)
    m[2, 2] = m[3, 3] = True  # diagonal neighbours
    m[7:9, 6:9] = True  # 6 pixels
    assert component_boxes(m, connectivity=2) == [(2, 2, 3, 3), (6, 7, 8, 8)]
    assert component_boxes(m, connectivity=1) == [(2, 2, 2, 2), (3, 3, 3, 3), (6, 7, 8, 8)]
    assert component_boxes(m, connectivity=1, min_pixels=2) == [(6, 7, 8, 8)]
    assert component_boxes(m, min_pixels=2) == [(2, 2, 3, 3), (6, 7, 8, 8)]  # the diagonal pair has 2
    assert component_boxes(m, min_pixels=7) == []
    assert component_boxes(np.zeros((4, 4))) == []


def test_box_errors():
    with pytest.raises(ValueError, match="2-D"):
        component_boxes(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="binary"):
        component_boxes(torch.full((8, 8), 0.7))
    with pytest.raises(ValueError, match="binary"):
        component_boxes(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="connectivity"):
        component_boxes(torch.zeros(8, 8), connectivity=3)
    with pytest.raises(ValueError, match="min_pixels"):
        component_boxes(torch.zeros(8, 8), min_pixels=0)
    with pytest.raises(ValueError, match="pad"):
        component_boxes(torch.zeros(8, 8), pad=-1)


# ---------------------------------------------------------------------------------------------
# refinement
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("merge", MERGE_MODES)
def test_refined_mask_is_the_union_of_per_box_sam_masks(teacher, merge):
    images = _images(2)
    masks = torch.zeros(2, 1, H, W)
    masks[0, 0] = _two_blobs().float()
    masks[1, 0, 10:15, 5:12] = 1
    masks[1, 0, 30:38, 20:24] = 1
    masks[1, 0, 0:3, 44:48] = 1
    pad = 2 if merge == "union_in_box" else 0
    refined = refine_with_sam(teacher, images, masks, pad=pad, merge=merge)
    assert refined.shape == (2, 1, H, W) and refined.dtype == torch.float32
    assert set(refined.unique().tolist()) <= {0.0, 1.0}
    expected = _by_hand(teacher, images, masks, merge=merge, pad=pad)
    assert expected.sum() > 0  # the check is not vacuous
    assert torch.equal(refined, expected)
    # (B, H, W) bool masks and 3-channel images are accepted as well
    same = refine_with_sam(teacher, images.expand(-1, 3, -1, -1), masks[:, 0].bool(), pad=pad, merge=merge)
    assert torch.equal(same, refined)


def test_union_in_box_stays_inside_the_boxes(teacher):
    images = _images(1, seed=3)
    masks = torch.zeros(1, 1, H, W)
    masks[0, 0] = _two_blobs().float()
    refined = refine_with_sam(teacher, images, masks, pad=1, merge="union_in_box")
    allowed = torch.zeros(H, W, dtype=torch.bool)
    for x0, y0, x1, y1 in component_boxes(masks[0, 0], pad=1):
        allowed[y0 : y1 + 1, x0 : x1 + 1] = True
    assert not (refined[0, 0].bool() & ~allowed).any()


def test_embedding_once_per_slice_and_one_prompt_per_box(teacher, monkeypatch):
    embed_calls, predict_calls = [], []
    real_embed, real_predict = teacher.embed, teacher.predict

    def counting_embed(images):
        embed_calls.append(images.shape[0])
        return real_embed(images)

    def counting_predict(embeddings, prompts, original_size, **kw):
        predict_calls.append([p.box.tolist() for p in prompts])
        return real_predict(embeddings, prompts, original_size, **kw)

    monkeypatch.setattr(teacher, "embed", counting_embed)
    monkeypatch.setattr(teacher, "predict", counting_predict)
    masks = torch.zeros(3, 1, H, W)
    masks[0, 0] = _two_blobs().float()
    masks[2, 0, 5:8, 5:8] = 1
    masks[2, 0, 20:25, 30:33] = 1
    masks[2, 0, 35, 40] = 1  # a single pixel, dropped with min_pixels=2
    refined, boxes = refine_with_sam(teacher, _images(3), masks, min_pixels=2, return_boxes=True)
    assert embed_calls == [2]  # one call, one embedding per slice with a box (slice 1 is empty)
    assert boxes == [[(1, 2, 3, 5), (30, 20, 45, 30)], [], [(5, 5, 7, 7), (30, 20, 32, 24)]]
    assert predict_calls == [[list(map(float, b)) for b in boxes[0] + boxes[2]]]
    assert not refined[1].any()


def test_empty_masks_give_no_prompt_and_empty_output(teacher, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("SAM must not run without a prompt")

    monkeypatch.setattr(teacher, "embed", fail)
    monkeypatch.setattr(teacher, "predict", fail)
    refined, boxes = refine_with_sam(teacher, _images(2), torch.zeros(2, 1, H, W), return_boxes=True)
    assert boxes == [[], []]
    assert refined.shape == (2, 1, H, W) and not refined.any()
    tiny = torch.zeros(1, 1, H, W)
    tiny[0, 0, 4, 4] = 1
    assert not refine_with_sam(teacher, _images(1), tiny, min_pixels=2).any()


def test_teacher_unchanged(teacher):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    masks = torch.zeros(1, 1, H, W)
    masks[0, 0] = _two_blobs().float()
    images = _images(1).requires_grad_(True)
    refined = refine_with_sam(teacher, images, masks)
    assert not refined.requires_grad
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not teacher.training and not teacher.sam.training
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())


def test_refine_errors(teacher):
    images = _images(2)
    good = torch.zeros(2, 1, H, W)
    with pytest.raises(ValueError, match="do not match"):
        refine_with_sam(teacher, images, torch.zeros(2, 1, H, W - 1))
    with pytest.raises(ValueError, match="do not match"):
        refine_with_sam(teacher, images, torch.zeros(3, 1, H, W))
    with pytest.raises(ValueError, match="binary"):
        refine_with_sam(teacher, images, torch.full((2, 1, H, W), 0.3))
    with pytest.raises(ValueError, match="binary"):
        refine_with_sam(teacher, images, good * 2 + 2)
    with pytest.raises(ValueError, match="coarse masks must be"):
        refine_with_sam(teacher, images, torch.zeros(2, 1, H, W, 4))  # a 3-D volume
    with pytest.raises(ValueError, match="coarse masks must be"):
        refine_with_sam(teacher, images, torch.zeros(2, 2, H, W))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        refine_with_sam(teacher, images[:, :, :, :, None], good)
    with pytest.raises(ValueError, match="channels"):
        refine_with_sam(teacher, torch.rand(2, 2, H, W), good)
    with pytest.raises(ValueError, match="merge"):
        refine_with_sam(teacher, images, good, merge="intersection")


# ---------------------------------------------------------------------------------------------
# inferer
# ---------------------------------------------------------------------------------------------


class _Fixed(torch.nn.Module):
    """A 'network' returning a fixed output whatever the input."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, x):
        return self.output


def test_inferer_single_channel_thresholds_and_refines(teacher):
    images = _images(3)
    logits = torch.full((3, 1, H, W), -4.0)
    logits[0, 0][_two_blobs()] = 3.0
    logits[2, 0, 10:20, 10:20] = 0.1  # sigmoid 0.525 > 0.5: foreground
    logits[2, 0, 30:35, 30:35] = -0.1  # sigmoid 0.475: background
    inferer = SamBoxRefineInferer(teacher)
    assert isinstance(inferer, Inferer)
    out = inferer(images, _Fixed(logits))
    assert out.shape == (3, 1, H, W) and out.dtype == torch.float32
    assert set(out.unique().tolist()) <= {-REFINED_LOGIT, REFINED_LOGIT}
    coarse = (torch.sigmoid(logits) > 0.5).float()
    assert component_boxes(coarse[2, 0]) == [(10, 10, 19, 19)]
    assert torch.equal((torch.sigmoid(out) > 0.5).float(), refine_with_sam(teacher, images, coarse))
    assert inferer.no_prompt == 1  # slice 1
    # a list / tuple output: the first element is used
    assert torch.equal(inferer(images, _Fixed((logits, None))), out)
    assert inferer.no_prompt == 2


def test_inferer_multi_channel_uses_argmax_foreground(teacher):
    images = _images(2, seed=1)
    scores = torch.zeros(2, 3, H, W)
    scores[:, 0] = 1.0  # background everywhere ...
    scores[0, 1, 5:15, 5:20] = 2.0  # ... class 1 here
    scores[0, 2, 25:35, 30:40] = 2.0  # class 2 here
    scores[1, 2, 0:10, 0:10] = 2.0
    for fg in (1, 2):
        coarse = (scores.argmax(1, keepdim=True) == fg).float()
        out = SamBoxRefineInferer(teacher, foreground=fg, pad=1)(images, _Fixed(scores))
        assert out.shape == (2, 1, H, W)
        assert torch.equal((out > 0).float(), refine_with_sam(teacher, images, coarse, pad=1))
    inferer = SamBoxRefineInferer(teacher, foreground=1)
    inferer(images, _Fixed(scores))
    assert inferer.no_prompt == 1  # slice 1 has no class-1 pixel


def test_inferer_errors(teacher):
    images = _images(2)
    with pytest.raises(ValueError, match="foreground"):
        SamBoxRefineInferer(teacher, foreground=3)(images, _Fixed(torch.zeros(2, 3, H, W)))
    with pytest.raises(ValueError, match="slice by slice"):
        SamBoxRefineInferer(teacher)(images, _Fixed(torch.zeros(2, 1, H, W, 4)))
    with pytest.raises(ValueError, match="does not match"):
        SamBoxRefineInferer(teacher)(images, _Fixed(torch.zeros(2, 1, H // 2, W // 2)))
    with pytest.raises(ValueError, match="merge"):
        SamBoxRefineInferer(teacher, merge="max")
    with pytest.raises(ValueError, match="foreground"):
        SamBoxRefineInferer(teacher, foreground=-1)
