"""MaskCorruption: exact masked share, fills, shapes, determinism, bad arguments."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fewlabel.transforms import MaskCorruption, MaskCorruptiond, mask_ratio


def _batch(b=3, h=64, w=96, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.1  # never exactly 0


@pytest.mark.parametrize("shape", ["square", "circle"])
@pytest.mark.parametrize("ratio", [0.1, 0.4, 0.9])
@pytest.mark.parametrize("size", [8, 32, 64, 256])
def test_masked_share_is_ratio_on_every_image(ratio, size, shape):
    x = _batch(3, 97, 131)  # sizes no patch size divides
    out, m = MaskCorruption(ratio, size, shape, generator=torch.Generator().manual_seed(1))(x)
    assert m.shape == (3, 1, 97, 131)
    assert ((mask_ratio(m) - ratio).abs() <= 0.01).all(), mask_ratio(m)


@settings(max_examples=25, deadline=None)
@given(ratio=st.floats(0.0, 0.9), size=st.integers(8, 256), h=st.integers(8, 90), w=st.integers(8, 90),
       shape=st.sampled_from(["square", "circle"]), seed=st.integers(0, 10_000))
def test_masked_share_property(ratio, size, h, w, shape, seed):
    """Any ratio, patch size and image size, including images smaller than one patch."""
    _, m = MaskCorruption(ratio, size, shape, generator=torch.Generator().manual_seed(seed))(_batch(2, h, w, seed))
    assert ((mask_ratio(m) - ratio).abs() <= 0.01).all()


def test_full_frame_share_is_exact():
    x = torch.rand(2, 3, 480, 854)
    _, m = MaskCorruption(0.4, 64)(x)
    assert (mask_ratio(m) - 0.4).abs().max() <= 1 / (480 * 854)


def test_ratio_zero_is_a_plain_autoencoder():
    x = _batch()
    out, m = MaskCorruption(0.0)(x)
    assert torch.equal(out, x) and (m == 1).all()


@pytest.mark.parametrize("fill", ["black", "component", "pixel"])
def test_fills_and_untouched_pixels(fill):
    x = _batch(2, 128, 128)
    out, m = MaskCorruption(0.3, 16, fill=fill, generator=torch.Generator().manual_seed(3))(x)
    kept = m.expand_as(x) > 0
    assert torch.equal(out[kept], x[kept])  # unmasked pixels bit for bit, all channels share the mask
    masked = out.permute(0, 2, 3, 1)[m[:, 0] == 0]  # (P, 3) colours of masked pixels
    if fill == "black":
        assert (masked == 0).all()
    elif fill == "pixel":
        assert masked.std(0).min() > 0.2 and len(torch.unique(masked[:, 0])) > 100
    else:
        colours = torch.unique(masked, dim=0)
        assert 2 <= len(colours) < masked.shape[0] / 50  # few colours, each shared by a whole patch
        assert ((masked >= 0) & (masked <= 1)).all()


def test_square_and_circle_components_have_their_shapes():
    """One whole patch (ratio = one patch's area): a square fills its 32x32 box, a disk ~pi/4 of it."""
    x = torch.rand(1, 3, 256, 256)
    for shape, pixels, fill_lo, fill_hi in (("square", 1024, 0.99, 1.0), ("circle", 800, 0.70, 0.85)):
        for seed in range(20):  # find a draw whose first patch is not cut by the border
            _, m = MaskCorruption(pixels / 65536, 32, shape, generator=torch.Generator().manual_seed(seed))(x)
            ys, xs = torch.nonzero(m[0, 0] == 0, as_tuple=True)
            if ys.min() > 0 and xs.min() > 0 and ys.max() < 255 and xs.max() < 255:
                break
        box_h, box_w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert box_h <= 32 and box_w <= 32, shape
        assert fill_lo <= len(ys) / (box_h * box_w) <= fill_hi, (shape, len(ys) / (box_h * box_w))


def test_same_seed_same_masks_and_dict_twin():
    x = _batch()
    a = MaskCorruption(0.5, 24, generator=torch.Generator().manual_seed(7))(x)
    b = MaskCorruption(0.5, 24, generator=torch.Generator().manual_seed(7))(x)
    c = MaskCorruption(0.5, 24, generator=torch.Generator().manual_seed(8))(x)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    d = MaskCorruptiond(keys="image", ratio=0.5, patch_size=24)({"image": x[0]})
    assert d["image"].shape == x[0].shape and torch.equal(d["image_clean"], x[0])
    assert (mask_ratio(d["mask"][None]) - 0.5).abs() <= 0.01


@pytest.mark.parametrize("kwargs,name", [({"ratio": 0.95}, "ratio"), ({"patch_size": 4}, "patch_size"),
                                         ({"patch_size": 512}, "patch_size"), ({"shape": "hexagon"}, "shape"),
                                         ({"fill": "blue"}, "fill")])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MaskCorruption(**kwargs)
    with pytest.raises(ValueError, match="floating-point"):
        MaskCorruption()(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


@pytest.mark.gpu
def test_on_cuda():
    x = _batch().cuda()
    out, m = MaskCorruption(0.4, 16)(x)
    assert out.is_cuda and m.is_cuda and ((mask_ratio(m) - 0.4).abs() <= 0.01).all()
