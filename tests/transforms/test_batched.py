"""The batched on-device augmentation SAM mining and SimCLR share: exact geometry applied alike to images and
masks, seeded draws, photometry that keeps images in [0, 1] and leaves them alone at zero strength."""

from __future__ import annotations

import pytest
import torch

from fewlabel.transforms import (
    GeometricParams,
    apply_geometry,
    draw_geometry,
    gaussian_blur,
    grey,
    random_colour_jitter,
)


def _params(b: int, transpose=(), k=(), hflip=(), vflip=(), theta=None) -> GeometricParams:
    def flags(on):
        return torch.tensor([i in on for i in range(b)])

    ks = torch.zeros(b, dtype=torch.long)
    for i, q in k:
        ks[i] = q
    return GeometricParams(flags(transpose), ks, flags(hflip), flags(vflip), theta)


def test_each_item_gets_its_own_exact_motion():
    x = torch.arange(4 * 2 * 5 * 5, dtype=torch.float32).reshape(4, 2, 5, 5)
    params = _params(4, transpose=(1,), k=((2, 1), (3, 3)), hflip=(3,), vflip=(0,))
    out = apply_geometry(x, params, "bilinear")
    assert torch.equal(out[0], x[0].flip(-2))
    assert torch.equal(out[1], x[1].transpose(-1, -2))
    assert torch.equal(out[2], torch.rot90(x[2], 1, dims=(-2, -1)))
    assert torch.equal(out[3], torch.rot90(x[3], 3, dims=(-2, -1)).flip(-1))


def test_images_and_masks_move_together_under_drawn_geometry():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 12, 12, generator=g)
    masks = (images[:, :1] > 0.5).float()
    params = draw_geometry(8, True, torch.Generator().manual_seed(1), affine_prob=0.0)
    assert params.transpose.any() and (params.k > 0).any() and params.hflip.any()  # the draw does move things
    moved = apply_geometry(images, params, "bilinear")
    assert torch.equal(apply_geometry(masks, params, "nearest"), (moved[:, :1] > 0.5).float())
    again = draw_geometry(8, True, torch.Generator().manual_seed(1), affine_prob=0.0)
    assert torch.equal(apply_geometry(images, again, "bilinear"), moved)  # seeded


def test_non_square_images_keep_their_shape():
    params = draw_geometry(64, False, torch.Generator().manual_seed(0), transpose_prob=1.0, rot90_prob=1.0)
    assert not params.transpose.any() and (params.k % 2 == 0).all() and (params.k == 2).any()
    x = torch.rand(64, 1, 6, 10)
    assert apply_geometry(x, params).shape == x.shape
    with pytest.raises(ValueError, match="B=64"):
        apply_geometry(x[:3], params)


def test_colour_jitter_stays_in_range_and_is_the_identity_at_zero_strength():
    images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    same = random_colour_jitter(images, torch.Generator().manual_seed(0), 0.0, 0.0, 0.0, prob=1.0)
    assert torch.equal(same, images)
    out = random_colour_jitter(images, torch.Generator().manual_seed(0), 0.8, 0.8, 0.8, prob=1.0)
    assert out.min() >= 0 and out.max() <= 1 and not torch.equal(out, images)
    assert torch.equal(out, random_colour_jitter(images, torch.Generator().manual_seed(0), 0.8, 0.8, 0.8, prob=1.0))
    with pytest.raises(ValueError, match=">= 0"):
        random_colour_jitter(images, torch.Generator(), brightness=-0.1)


def test_grey_and_blur():
    rgb = torch.zeros(1, 3, 2, 2)
    rgb[:, 1] = 1.0
    assert torch.allclose(grey(rgb), torch.full((1, 1, 2, 2), 0.587))
    one = torch.rand(2, 1, 4, 4)
    assert grey(one) is one
    images = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    blurred = gaussian_blur(images, torch.tensor([0.0, 2.0]))
    assert torch.allclose(blurred[0], images[0])  # sigma 0: unchanged
    assert blurred[1].std() < 0.6 * images[1].std()
    assert blurred[1].mean() == pytest.approx(images[1].mean().item(), abs=0.02)


def test_paired_augmentation_moves_masks_with_images_and_resumes_its_stream():
    from fewlabel.transforms import PairedBatchAugmentation

    images = torch.rand(4, 3, 12, 12)
    masks = (images[:, :1] > 0.5).float()
    augment = PairedBatchAugmentation(brightness=0.0, contrast=0.0, seed=3)
    out_images, out_masks = augment(images, masks)
    assert torch.equal(out_masks, (out_images[:, :1] > 0.5).float())  # exact steps: mask moved with its image
    saved = augment.state_dict()
    first = augment(images, masks)
    fresh = PairedBatchAugmentation(brightness=0.0, contrast=0.0, seed=3)
    fresh.load_state_dict(saved)  # an interrupted run continues the same draws
    second = fresh(images, masks)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    with pytest.raises(ValueError, match="flip_prob must be in"):
        PairedBatchAugmentation(flip_prob=1.5)
    with pytest.raises(ValueError, match="do not fit"):
        augment(images, masks[:, :, :6])
