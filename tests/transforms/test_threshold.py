"""Batched thresholding: agreement with scikit-image, GHT's special cases, constant images."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from skimage import data as skdata
from skimage.filters import threshold_otsu as sk_otsu

from fewlabel.transforms import (
    ThresholdMask,
    ThresholdMaskd,
    adaptive_threshold,
    batch_histogram,
    ght_threshold,
    otsu_threshold,
    threshold_masks,
    to_grayscale,
)

SKIMAGE_GRAY = ["camera", "coins", "moon", "page", "text", "cell", "microaneurysms", "brick", "grass", "gravel"]
SKIMAGE_RGB = ["immunohistochemistry", "retina", "astronaut", "coffee", "chelsea"]
DICOM = ["CT_small.dcm", "MR_small.dcm"]


def _real_images() -> list[tuple[str, np.ndarray]]:
    out = [(n, getattr(skdata, n)()) for n in SKIMAGE_GRAY + SKIMAGE_RGB]
    out += [(n, pydicom.dcmread(get_testdata_file(n)).pixel_array) for n in DICOM]
    return out


def _as_batch(img: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(img.astype(np.float32))
    return t.permute(2, 0, 1)[None] if t.ndim == 3 else t[None, None]


@pytest.mark.parametrize("name,img", _real_images(), ids=lambda v: v if isinstance(v, str) else "")
def test_otsu_agrees_with_skimage_on_real_images(name, img):
    batch = _as_batch(img)
    gray = to_grayscale(batch)[0, 0].numpy()
    ours = otsu_threshold(batch).item()
    bin_width = (gray.max() - gray.min()) / 256
    assert abs(ours - sk_otsu(gray)) <= bin_width + 1e-4 * max(1.0, abs(ours))
    if img.ndim == 2:  # skimage's integer path uses one bin per grey level
        assert abs(ours - float(sk_otsu(img))) <= max(bin_width, 1.0) + 1e-6


def test_otsu_batched_equals_per_image():
    imgs = [skdata.camera(), skdata.moon(), skdata.coins()[:512, :384].copy()]
    size = (256, 256)
    batch = torch.stack([torch.nn.functional.interpolate(_as_batch(i), size=size)[0] for i in imgs])
    batched = otsu_threshold(batch)
    single = torch.stack([otsu_threshold(batch[i : i + 1])[0] for i in range(3)])
    assert torch.equal(batched, single)


def _scatter_histogram(gray: torch.Tensor, nbins: int) -> torch.Tensor:
    """The per-row ``scatter_add_`` histogram ``batch_histogram`` used before its ``bincount`` rewrite."""
    lo, hi = gray.amin(dim=1), gray.amax(dim=1)
    width = (hi - lo) / nbins
    inv = torch.where(width > 0, 1.0 / width, torch.zeros_like(width))
    idx = ((gray - lo[:, None]) * inv[:, None]).long().clamp_max_(nbins - 1)
    counts = torch.zeros(gray.shape[0], nbins, dtype=torch.int64)
    return counts.scatter_add_(1, idx, torch.ones_like(idx)).float()


def _random_batches():
    g = torch.Generator().manual_seed(0)
    for scale, shift, levels in [(1.0, 0.0, 0), (255.0, 0.0, 256), (1e4, -5e3, 0), (1.0, 0.0, 2), (3.0, -1.0, 7)]:
        x = torch.rand(5, 1, 37, 41, generator=g) * scale + shift
        if levels:
            x = (x * (levels - 1) / scale).round() * scale / (levels - 1)
        x[1] = x[1, 0, 0, 0]  # a constant image inside every batch
        yield x


def test_bincount_histogram_equals_per_row_scatter():
    # the batch-wide bincount must put every pixel in the same bin as the per-row scatter it replaced
    for x in _random_batches():
        for nbins in (256, 17):
            counts, centers, lo = batch_histogram(x.flatten(1), nbins)
            assert torch.equal(counts, _scatter_histogram(x.flatten(1), nbins))
            assert torch.equal(lo, x.flatten(1).amin(1)) and centers.shape == (5, nbins)


def test_otsu_matches_skimage_on_random_constant_and_two_valued_images():
    for x in _random_batches():
        ours = otsu_threshold(x)
        for i in range(x.shape[0]):
            img = x[i, 0].numpy()
            bin_width = float(img.max() - img.min()) / 256
            # float32 bin edges vs numpy's float64 ones may move a pixel lying on an edge: at most one bin
            assert abs(ours[i].item() - sk_otsu(img)) <= bin_width * 1.001 + 1e-6 * abs(img).max()
    # edge cases, equal to scikit-image's value (to float32 rounding)
    constant = np.full((9, 7), 0.3, np.float32)
    two_values = np.array([[0.2, 0.9, 0.9], [0.9, 0.2, 0.9]], np.float32)
    two_levels = np.array([[3, 3, 7, 7, 7]], np.float32)
    for img in (constant, two_values, two_levels):
        assert otsu_threshold(_as_batch(img)).item() == pytest.approx(float(sk_otsu(img)), rel=1e-6)
    # a two-valued image splits between its values: the dark value alone is at or below the threshold
    thr = otsu_threshold(_as_batch(two_values)).item()
    assert 0.2 <= thr < 0.9


def test_otsu_of_a_range_too_small_for_float32_is_finite():
    x = torch.tensor([[[[0.0, 1e-40, 1e-40, 0.0]]]])  # 1 / bin width overflows to inf
    thr = otsu_threshold(x)
    assert torch.isfinite(thr).all() and 0.0 <= thr.item() <= 1e-40


def test_grayscale_uses_bt601_luma_and_rejects_other_channel_counts():
    rgb = torch.zeros(1, 3, 2, 2)
    rgb[:, 1] = 1.0
    assert torch.allclose(to_grayscale(rgb), torch.full((1, 1, 2, 2), 0.587))
    with pytest.raises(ValueError, match="5-channel"):
        to_grayscale(torch.zeros(1, 5, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        otsu_threshold(torch.tensor([[[[0.0, float("nan")]]]]))


def test_constant_and_near_constant_images_are_invalid_not_nan():
    x = torch.rand(4, 3, 32, 32)
    x[1] = 0.5  # constant
    x[2] = 0.3 + 1e-4 * torch.rand(3, 32, 32)  # near-constant
    thr = otsu_threshold(x)
    assert torch.isfinite(thr).all() and thr[1] == pytest.approx(0.5)
    for method in ("otsu", "ght", "adaptive_mean", "adaptive_gaussian"):
        masks, valid = threshold_masks(x, method=method)
        assert valid.tolist() == [True, False, False, True], method
        assert torch.isfinite(masks).all() and masks[1].sum() == 0 and masks[2].sum() == 0


def test_polarity():
    x = torch.zeros(1, 1, 10, 10)
    x[..., :3, :] = 1.0  # 30 % bright
    bright, _ = threshold_masks(x, polarity="bright")
    dark, _ = threshold_masks(x, polarity="dark")
    minority, _ = threshold_masks(1 - x, polarity="minority")
    assert bright.mean() == pytest.approx(0.3) and dark.mean() == pytest.approx(0.7)
    assert minority.mean() == pytest.approx(0.3)


def test_ght_tends_to_otsu_and_separates_two_modes():
    for name in ("camera", "coins", "moon"):
        batch = _as_batch(getattr(skdata, name)())
        assert ght_threshold(batch, nu=1e30, tau=1e-6).item() == pytest.approx(otsu_threshold(batch).item())
    g = torch.Generator().manual_seed(0)
    two = torch.cat([torch.randn(6000, generator=g) * 5 + 60, torch.randn(4000, generator=g) * 5 + 180])
    t = ght_threshold(two.view(1, 1, 100, 100)).item()
    assert 80 < t < 160
    with pytest.raises(ValueError):
        ght_threshold(two.view(1, 1, 100, 100), omega=2.0)


def test_adaptive_threshold_follows_local_mean():
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 1, 64, 64).clone()
    ramp[..., 30:34, 30:34] += 0.2  # a local bright spot
    masks, valid = threshold_masks(ramp, method="adaptive_mean", block_size=11, offset=-0.05)
    assert valid.all() and masks[0, 0, 31, 31] == 1 and masks[0, 0, 5, 5] == 0
    t = adaptive_threshold(torch.full((1, 1, 16, 16), 0.4), block_size=5, offset=0.1)
    assert torch.allclose(t, torch.full_like(t, 0.3))
    with pytest.raises(ValueError, match="odd"):
        adaptive_threshold(ramp, block_size=4)


def test_array_and_dict_transforms_match_batched_function():
    img = _as_batch(skdata.coins())[0] / 255.0
    mask = ThresholdMask()(img)
    batched, _ = threshold_masks(img[None])
    assert mask.shape == (1, *img.shape[1:]) and torch.equal(mask, batched[0])
    d = ThresholdMaskd(keys="image", output_key="otsu")({"image": img})
    assert torch.equal(d["otsu"], mask) and "image" in d
