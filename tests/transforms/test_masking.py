"""Mask corruption of SurgicalSemiSeg: exact ratios, fills, shapes, reproducibility, the dict twin."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from monai.transforms import Compose, RandomizableTrait

from fewlabel.transforms.masking import MaskCorruption, MaskCorruptiond, mask_ratio


def _images(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Images in [0.1, 1]: no pixel is 0, so black-filled pixels are told apart from content."""
    g = torch.Generator().manual_seed(seed)
    return 0.1 + 0.9 * torch.rand(b, 3, h, w, generator=g)


def _corrupt(x, ratio, n, shape="square", fill="black", seed=0):
    return MaskCorruption(ratio, n, shape, fill, generator=torch.Generator().manual_seed(seed))(x)


def _assert_exact_fraction(masks: torch.Tensor, ratio: float) -> None:
    h, w = masks.shape[-2:]
    frac = mask_ratio(masks)
    assert frac.shape == (masks.shape[0],)
    # every image: rho to within half a pixel, so well within one percentage point
    assert torch.all((frac - ratio).abs() <= 0.5 / (h * w) + 1e-7), (frac, ratio)
    assert torch.all((frac - ratio).abs() <= 0.01)


def _colour_regions(out: torch.Tensor, keep: torch.Tensor) -> dict[tuple, torch.Tensor]:
    """Masked pixels of one image ``(3, H, W)`` grouped by colour -> ``(n, 2)`` pixel coordinates."""
    ys, xs = (keep[0] == 0).nonzero(as_tuple=True)
    colours = out[:, ys, xs].T
    uniq, inv = torch.unique(colours, dim=0, return_inverse=True)
    pts = torch.stack([ys, xs], 1)
    return {tuple(uniq[i].tolist()): pts[inv == i] for i in range(len(uniq))}


@pytest.mark.parametrize("shape", ["square", "circle"])
@pytest.mark.parametrize("n", [8, 32, 64, 256])
@pytest.mark.parametrize("ratio", [0.1, 0.4, 0.9])
@pytest.mark.parametrize("size", [(97, 131), (40, 60)], ids=["97x131", "smaller-than-patch"])
def test_masked_fraction_is_rho_on_every_image(size, ratio, n, shape):
    x = _images(3, *size)
    out, masks = _corrupt(x, ratio, n, shape, seed=n)
    assert masks.shape == (3, 1, *size) and masks.dtype == torch.float32
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    _assert_exact_fraction(masks, ratio)


@pytest.mark.parametrize("shape", ["square", "circle"])
def test_exact_fraction_with_large_patches_on_a_video_frame(shape):
    # N = 256 on 480 x 854: one patch is ~16% of the frame, so the last patch must be trimmed
    x = _images(2, 480, 854)
    _, masks = _corrupt(x, 0.4, 256, shape)
    _assert_exact_fraction(masks, 0.4)


@settings(max_examples=25, deadline=None)
@given(
    ratio=st.floats(0.0, 0.9),
    n=st.integers(8, 256),
    shape=st.sampled_from(["square", "circle"]),
    h=st.integers(1, 120),
    w=st.integers(1, 120),
    b=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_fraction_guarantee_property(ratio, n, shape, h, w, b, seed):
    x = _images(b, h, w, seed % 1000)
    out, masks = _corrupt(x, ratio, n, shape, seed=seed)
    target = round(ratio * (h * w))  # the sampler's own float order: 0.34 * 27 * 75 rounds up, 0.34 * 2025 down
    assert torch.equal((masks == 0).flatten(1).sum(1), torch.full((b,), target))
    assert torch.equal(out[masks.expand_as(x) == 1], x[masks.expand_as(x) == 1])


def test_ratio_zero_is_a_plain_autoencoder():
    x = _images(2, 64, 96)
    out, masks = MaskCorruption(0.0, 64, fill="pixel")(x)
    assert torch.equal(out, x)
    assert torch.equal(masks, torch.ones(2, 1, 64, 96))


@pytest.mark.parametrize("fill", ["black", "component", "pixel"])
def test_unmasked_pixels_unchanged_and_one_mask_for_all_channels(fill):
    x = _images(3, 64, 96)
    out, masks = _corrupt(x, 0.4, 16, "circle", fill)
    assert out.shape == x.shape and out.dtype == x.dtype and masks.shape == (3, 1, 64, 96)
    kept = masks.expand_as(x) == 1
    assert torch.equal(out[kept], x[kept])
    # every masked pixel is replaced in the channels together: no pixel is masked in only some channels
    changed = out != x
    assert torch.equal(changed.any(1, keepdim=True), masks == 0)


def test_black_fill_zeroes_masked_pixels():
    x = _images(2, 64, 96)
    out, masks = _corrupt(x, 0.4, 32)
    masked = masks.expand_as(x) == 0
    assert torch.all(out[masked] == 0)
    assert torch.all(out[~masked] > 0)


def test_component_fill_one_colour_per_patch():
    n = 16
    x = _images(1, 128, 160)
    out, masks = _corrupt(x, 0.3, n, "square", "component", seed=3)
    regions = _colour_regions(out[0], masks[0])
    masked = int((masks == 0).sum())
    # each colour is one patch: it fits in an N x N box; and there are as many as the patches needed
    for pts in regions.values():
        extent = pts.max(0).values - pts.min(0).values + 1
        assert torch.all(extent <= n)
    assert len(regions) >= math.ceil(masked / n**2)
    sizes = sorted(len(p) for p in regions.values())
    assert sizes[len(sizes) // 2] >= n * n / 8  # colours cover patches, not single pixels
    colours = torch.tensor(list(regions))
    assert torch.all((colours >= 0) & (colours <= 1))


def test_pixel_fill_varies_per_pixel():
    x = _images(1, 64, 96)
    out, masks = _corrupt(x, 0.4, 32, fill="pixel")
    masked = (masks[0, 0] == 0)
    values = out[0][:, masked]  # (3, M)
    assert values.min() >= 0 and values.max() <= 1
    assert values.std() > 0.2  # uniform [0, 1] has std 0.29
    assert len(torch.unique(values.T, dim=0)) > 0.99 * masked.sum()


def test_square_and_circle_components_have_their_shapes():
    n = 32
    x = _images(1, 256, 256)
    full = {}
    for shape in ("square", "circle"):
        out, masks = _corrupt(x, 0.1, n, shape, "component", seed=5)
        # the largest colour region with an N x N bounding box is a whole, unoccluded patch
        boxed = [len(p) for p in _colour_regions(out[0], masks[0]).values()
                 if torch.equal(p.max(0).values - p.min(0).values + 1, torch.tensor([n, n]))]
        assert boxed, f"no whole {shape} patch found"
        full[shape] = max(boxed)
    assert full["square"] == n * n
    assert full["circle"] == pytest.approx(math.pi / 4 * n * n, rel=0.03)


def test_last_patch_is_trimmed_concentrically():
    # an image smaller than the patch: one patch covers it all and is cut down to a compact blob
    x = _images(1, 40, 60)
    _, masks = _corrupt(x, 0.4, 256, "square")
    ys, xs = (masks[0, 0] == 0).nonzero(as_tuple=True)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    assert len(ys) == round(0.4 * 40 * 60)
    assert len(ys) >= 0.9 * box  # a (clipped) square, not a band or scattered pixels


def test_same_seed_same_output_and_seeds_differ():
    x = _images(2, 64, 96)
    a = _corrupt(x, 0.4, 16, "circle", "component", seed=7)
    b = _corrupt(x, 0.4, 16, "circle", "component", seed=7)
    c = _corrupt(x, 0.4, 16, "circle", "component", seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    t = MaskCorruption(0.4, 16).set_seed(7)
    first = t(x)[1]
    assert torch.equal(t.set_seed(7)(x)[1], first)
    assert not torch.equal(first[0], first[1])  # images of a batch get their own masks
    torch.manual_seed(1)
    g1 = MaskCorruption(0.4, 16)(x)[1]
    torch.manual_seed(1)
    assert torch.equal(MaskCorruption(0.4, 16)(x)[1], g1)  # default: torch's global RNG


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"ratio": -0.1}, "ratio"), ({"ratio": 0.95}, "ratio"), ({"ratio": float("nan")}, "ratio"),
        ({"patch_size": 7}, "patch_size"), ({"patch_size": 257}, "patch_size"), ({"patch_size": 8.5}, "patch_size"),
        ({"shape": "triangle"}, "shape"), ({"fill": "red"}, "fill"), ({"generator": 3}, "generator"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MaskCorruption(**kwargs)
    with pytest.raises(ValueError, match=name):
        MaskCorruptiond(**kwargs)


def test_rejects_bad_inputs_and_keeps_dtype():
    t = MaskCorruption(0.4, 8)
    with pytest.raises(ValueError, match="floating"):
        t(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        t(torch.zeros(16, 16))
    out, masks = t(torch.rand(2, 3, 16, 16, dtype=torch.float64))
    assert out.dtype == torch.float64 and masks.dtype == torch.float32
    out, masks = t(torch.rand(3, 16, 16))  # one image
    assert out.shape == (3, 16, 16) and masks.shape == (1, 16, 16)


def test_mask_ratio():
    m = torch.ones(2, 1, 4, 5)
    m[0, 0, :2, :4] = 0  # 8 of 20 pixels
    assert torch.allclose(mask_ratio(m), torch.tensor([0.4, 0.0]))


def test_dictionary_twin_in_a_pipeline():
    img = MetaTensor(_images(1, 64, 96)[0], meta={"filename_or_obj": "frame.png"})
    t = MaskCorruptiond(keys="image", mask_key="mask", ratio=0.4, patch_size=16, fill="component")
    assert isinstance(t, RandomizableTrait)  # CacheDataset must not cache corrupted images
    out = Compose([t]).set_random_state(seed=3)({"image": img, "label": 1})
    assert out["label"] == 1
    assert torch.equal(out["image_clean"], img)
    assert out["mask"].shape == (1, 64, 96)
    _assert_exact_fraction(out["mask"][None], 0.4)
    kept = out["mask"].expand(3, -1, -1) == 1
    assert torch.equal(out["image"][kept], img[kept]) and not torch.equal(out["image"], img)
    assert isinstance(out["image"], MetaTensor) and out["image"].meta["filename_or_obj"] == "frame.png"
    again = Compose([MaskCorruptiond("image", ratio=0.4, patch_size=16, fill="component")]).set_random_state(seed=3)
    assert torch.equal(again({"image": img})["mask"], out["mask"])  # MONAI seeding reaches the generator
    named = MaskCorruptiond("image", mask_key="m", clean_key="target", ratio=0.2, patch_size=8)({"image": img})
    assert set(named) == {"image", "m", "target"}


@pytest.mark.gpu
@pytest.mark.parametrize("fill", ["black", "component", "pixel"])
def test_on_cuda(fill):
    x = _images(4, 97, 131).cuda()
    out, masks = MaskCorruption(0.4, 32, "circle", fill)(x)
    assert out.is_cuda and masks.is_cuda
    _assert_exact_fraction(masks, 0.4)
    kept = masks.expand_as(x) == 1
    assert torch.equal(out[kept], x[kept])
    # a CPU generator gives the same masks whatever the batch's device
    cpu = _corrupt(x.cpu(), 0.4, 32, "circle", fill, seed=2)
    gpu = _corrupt(x, 0.4, 32, "circle", fill, seed=2)
    assert torch.equal(gpu[1].cpu(), cpu[1])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("shape", ["square", "circle"])
@pytest.mark.parametrize("h,w", [(1, 1), (2, 2), (1, 300), (3, 5), (300, 1)])
@pytest.mark.parametrize("n", [8, 256])
def test_tiny_and_thin_images_end_quickly_with_the_exact_ratio(h, w, n, shape):
    _, masks = _corrupt(_images(3, h, w), 0.9, n, shape)
    _assert_exact_fraction(masks, round(0.9 * h * w) / (h * w))


@pytest.mark.timeout(30)
def test_draws_that_never_reach_the_ratio_end_with_an_error_not_a_hang():
    """The sampler draws rounds of patches until every image reaches the ratio; draws that never do
    (here: every patch on the same pixel) stop after a bounded number of rounds with an error."""
    t = MaskCorruption(0.9, 8, generator=torch.Generator().manual_seed(0))
    t._randint = lambda high, size, device: torch.zeros(size, dtype=torch.int64, device=device)
    with pytest.raises(RuntimeError, match=r"patches of size 8.*did not mask 3686 of the 64x64 pixels"):
        t(_images(2, 64, 64))
