"""SLiPPA's composite loss (equation 2), its presets (Table 3) and class weights (equation 1)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from testlib import write_png

from fewlabel.data.cache import cache_dir
from fewlabel.errors import DataError
from fewlabel.losses import (
    LOSS_PRESETS,
    TABLE3_CANDIDATES,
    CompositeLoss,
    cached_class_weights,
    class_weights,
    pixel_counts,
)
from fewlabel.losses import composite

# ---------------------------------------------------------------------------------------------- class weights

# a 10x10 mask: 90 background, 6 silhouette, 3 ridge, 1 ligament pixels (|M| = 100)
COUNTS = [90, 6, 3, 1]


def _mask_90_6_3_1() -> np.ndarray:
    m = np.zeros((10, 10), np.uint8)
    m[0, :6] = 1
    m[1, :3] = 2
    m[2, 0] = 3
    return m


def test_slippa_weights_follow_equation_1_with_natural_log():
    # W_i = max(1, ln(|M| / |M_i|)): background ln(100/90) = 0.105 -> 1; ln(100/6) = 2.813;
    # ln(100/3) = 3.507; ln(100/1) = 4.605
    expected = [1.0, math.log(100 / 6), math.log(100 / 3), math.log(100)]
    assert class_weights(COUNTS, "slippa") == pytest.approx(expected)
    assert class_weights(COUNTS) == pytest.approx([1.0, 2.8134, 3.5066, 4.6052], abs=1e-4)


def test_slippa_weights_of_the_papers_table_1_counts():
    # P2ILF training set (Table 1): 244,679,040 / 1,872,457 / 1,765,372 / 515,071 pixels
    w = class_weights([244_679_040, 1_872_457, 1_765_372, 515_071])
    assert w == pytest.approx([1.0, 4.8895, 4.9484, 6.1802], abs=1e-4)


def test_log_and_proportional_and_none_schemes():
    assert class_weights(COUNTS, "log") == pytest.approx(
        [math.log(100 / 90), math.log(100 / 6), math.log(100 / 3), math.log(100)])
    # proportional: |M|/|M_i| = 10/9, 50/3, 100/3, 100 (sum 1360/9), scaled to sum to C = 4
    # -> x 9/340 = 1/34, 15/34, 30/34, 90/34
    prop = class_weights(COUNTS, "proportional")
    assert prop == pytest.approx([1 / 34, 15 / 34, 30 / 34, 90 / 34])
    assert sum(prop) == pytest.approx(4.0)
    assert class_weights(COUNTS, "none") == [1.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="scheme"):
        class_weights(COUNTS, "inverse")


def test_class_without_pixels_gets_the_largest_weight_and_a_warning():
    with pytest.warns(UserWarning, match=r"\[2, 3\]"):
        w = class_weights([90, 10, 0, 0], "slippa")
    assert w == pytest.approx([1.0, math.log(10), math.log(10), math.log(10)])
    with pytest.warns(UserWarning):
        p = class_weights([90, 10, 0, 0], "proportional")
    # 10/9, 10, 10, 10 scaled to sum 4
    raw = np.array([10 / 9, 10, 10, 10])
    assert p == pytest.approx((raw * 4 / raw.sum()).tolist())
    assert all(math.isfinite(x) for x in p)
    with pytest.raises(ValueError, match="no pixels"):
        class_weights([0, 0, 0, 0])


def test_pixel_counts_of_label_files_and_bad_labels(tmp_path):
    f = write_png(tmp_path / "a.png", _mask_90_6_3_1())
    g = write_png(tmp_path / "b.png", np.zeros((10, 10), np.uint8))
    assert pixel_counts([f, g], 4, progress=False).tolist() == [190, 6, 3, 1]
    bad = _mask_90_6_3_1()
    bad[5, 5] = 7
    b = write_png(tmp_path / "bad.png", bad)
    with pytest.raises(DataError, match="bad.png"):
        pixel_counts([f, b], 4, progress=False)


def test_pixel_counts_resize_takes_width_first(tmp_path):
    # H=2, W=8: only the top row is class 1. Resized to W=8, H=1 the single row is the top row
    # (8 class-1 pixels); had the size been read as (H, W) = (8, 1) only 4 of 8 rows would be.
    lab = np.zeros((2, 8), np.uint8)
    lab[0] = 1
    f = write_png(tmp_path / "l.png", lab)
    assert pixel_counts([f], 2, size=(8, 1), progress=False).tolist() == [0, 8]
    assert pixel_counts([f], 2, progress=False).tolist() == [8, 8]
    # MONAI's (H, W) order, as a bundle's image_size / Resized(spatial_size=...) gives it
    assert pixel_counts([f], 2, spatial_size=(1, 8), progress=False).tolist() == [0, 8]
    with pytest.raises(ValueError, match="not both"):
        pixel_counts([f], 2, size=(8, 1), spatial_size=(1, 8), progress=False)
    # the training size is part of the cache key
    cache = tmp_path / "cw.json"
    assert cached_class_weights([f], 2, "none", size=(8, 1), cache_file=cache) == [1.0, 1.0]
    assert json.loads(cache.read_text())["counts"] == [0, 8]
    cached_class_weights([f], 2, "none", spatial_size=(8, 1), cache_file=cache)  # H=8, W=1: rows 0-3 -> class 1
    assert json.loads(cache.read_text())["counts"] == [4, 4]


def test_cached_weights_are_read_back_and_recomputed_when_a_file_changes(tmp_path, monkeypatch):
    f = write_png(tmp_path / "labels" / "a.png", _mask_90_6_3_1())
    cache = tmp_path / "cw.json"
    first = cached_class_weights([f], 4, cache_file=cache)
    assert first == pytest.approx(class_weights(COUNTS))
    stored = json.loads(cache.read_text())
    assert stored["counts"] == COUNTS and stored["scheme"] == "slippa" and stored["weights"] == pytest.approx(first)

    def boom(*a, **k):
        raise AssertionError("pixels were counted again")

    monkeypatch.setattr(composite, "pixel_counts", boom)
    assert cached_class_weights([f], 4, cache_file=cache) == first  # from the cache
    # another scheme reuses the cached counts
    assert cached_class_weights([f], 4, scheme="log", cache_file=cache) == pytest.approx(class_weights(COUNTS, "log"))

    changed = _mask_90_6_3_1()
    changed[9, :] = 3  # 10 more ligament pixels
    write_png(f, changed)
    st = os.stat(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="counted again"):
        cached_class_weights([f], 4, cache_file=cache)
    monkeypatch.undo()
    assert cached_class_weights([f], 4, cache_file=cache) == pytest.approx(class_weights([80, 6, 3, 11]))


def test_cached_weights_default_file_is_under_the_cache_dir(tmp_path):
    f = write_png(tmp_path / "a.png", _mask_90_6_3_1())
    cached_class_weights([f], 4)
    files = list(cache_dir("class_weights").glob("*.json"))
    assert any(json.loads(p.read_text())["counts"] == COUNTS for p in files)
    with pytest.raises(DataError, match="missing.png"):
        cached_class_weights([tmp_path / "missing.png"], 4)


# ---------------------------------------------------------------------------------------------- presets


def test_presets_match_table_3_and_section_4_3():
    table3 = {  # alpha/beta/gamma/delta, architecture, learning rate, batch size as printed
        1: ((1.00, 0.00, 0.00, 0.00), "UNet", 0.0001, 32),
        2: ((1.00, 0.00, 0.00, 0.00), "UNet", 0.0001, 8),
        3: ((0.25, 0.25, 0.00, 0.50), "UNet++", 0.001, 32),
        4: ((0.50, 0.00, 0.50, 0.00), "UNet++", 0.0005, 16),
        5: ((0.75, 0.25, 0.00, 0.00), "UNet++", 0.0005, 16),
        6: ((0.50, 0.00, 0.00, 0.50), "UNet3+", 0.001, 8),
        7: ((0.50, 0.25, 0.00, 0.25), "UNet3+", 0.001, 8),
        8: ((0.25, 0.00, 0.25, 0.50), "DeepLabV3+", 0.0001, 64),
        9: ((0.50, 0.00, 0.00, 0.50), "ResUNet++", 0.0005, 16),
        10: ((0.75, 0.00, 0.00, 0.25), "ResUNet++", 0.0005, 8),
    }
    for n, (coeffs, arch, lr, bs) in table3.items():
        assert LOSS_PRESETS[f"candidate{n}"] == coeffs
        c = TABLE3_CANDIDATES[f"candidate{n}"]
        assert (c.number, c.architecture, c.learning_rate, c.batch_size, c.coefficients) == (n, arch, lr, bs, coeffs)
    assert LOSS_PRESETS["finetune_ce"] == (1.0, 0.0, 0.0, 0.0)
    assert LOSS_PRESETS["finetune_ce_ftl"] == (0.75, 0.0, 0.0, 0.25)
    assert len(LOSS_PRESETS) == 12
    assert TABLE3_CANDIDATES["candidate3"].arch == "unetplusplus"
    assert CompositeLoss.from_preset("candidate7").coefficients == (0.5, 0.25, 0.0, 0.25)
    assert CompositeLoss(preset="finetune_ce_ftl").coefficients == (0.75, 0.0, 0.0, 0.25)
    assert CompositeLoss(coefficients=LOSS_PRESETS["candidate8"]).coefficients == (0.25, 0.0, 0.25, 0.5)
    assert CompositeLoss().coefficients == (1.0, 0.0, 0.0, 0.0)
    assert CompositeLoss(beta=1.0).coefficients == (0.0, 1.0, 0.0, 0.0)


def test_bad_presets_and_coefficients_raise():
    with pytest.raises(ValueError, match="candidate1"):
        CompositeLoss.from_preset("candidate11")
    with pytest.raises(ValueError, match="not both"):
        CompositeLoss(alpha=1.0, preset="candidate1")
    with pytest.raises(ValueError, match="not both"):
        CompositeLoss(coefficients=(1, 0, 0, 0), preset="candidate1")
    with pytest.raises(ValueError, match="alpha, beta, gamma, delta"):
        CompositeLoss(coefficients=(1, 0, 0))
    with pytest.raises(ValueError, match="nothing to optimise"):
        CompositeLoss(alpha=0.0)
    with pytest.raises(ValueError, match=">= 0"):
        CompositeLoss(alpha=1.0, beta=-0.5)


# ---------------------------------------------------------------------------------------------- the loss


def _batch(seed: int = 0, b: int = 2, c: int = 4, size: int = 8):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, size, size, generator=g)
    target = torch.randint(0, c, (b, 1, size, size), generator=g)
    return logits, target


@pytest.mark.parametrize("term,coeffs", [
    ("ce", (1.0, 0.0, 0.0, 0.0)), ("dice", (0.0, 1.0, 0.0, 0.0)),
    ("huber", (0.0, 0.0, 1.0, 0.0)), ("focal_tversky", (0.0, 0.0, 0.0, 1.0)),
])
def test_every_term_alone_has_a_gradient(term, coeffs):
    logits, target = _batch()
    logits.requires_grad_(True)
    loss = CompositeLoss(*coeffs, class_weights=[1.0, 2.0, 3.0, 4.0])
    value = loss(logits, target)
    value.backward()
    assert set(loss.last_terms) == {term, "total"}
    assert value.item() == pytest.approx(loss.last_terms[term]) and value.item() > 0
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_total_is_the_weighted_sum_of_the_terms():
    logits, target = _batch(1)
    loss = CompositeLoss(0.4, 0.3, 0.2, 0.1, class_weights=[1.0, 2.0, 3.0, 4.0])
    total = loss(logits, target)
    t = loss.last_terms
    assert set(t) == {"ce", "dice", "huber", "focal_tversky", "total"}
    expected = 0.4 * t["ce"] + 0.3 * t["dice"] + 0.2 * t["huber"] + 0.1 * t["focal_tversky"]
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert t["total"] == pytest.approx(expected, rel=1e-6)


def test_terms_match_their_definitions():
    logits, target = _batch(2, b=1, size=4)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    loss = CompositeLoss(1.0, 0.0, 1.0, 0.0, class_weights=w)
    loss(logits, target)
    logp = torch.log_softmax(logits, 1)
    y = target[:, 0]
    # weighted CE: -sum_p w_y log p_y / sum_p w_y
    nll = -logp.gather(1, y[:, None])[:, 0]
    assert loss.last_terms["ce"] == pytest.approx(float((w[y] * nll).sum() / w[y].sum()), rel=1e-5)
    # Huber with delta 1 on probabilities: 0.5 * mean of squared differences to the one-hot target
    onehot = F.one_hot(y, 4).permute(0, 3, 1, 2).float()
    assert loss.last_terms["huber"] == pytest.approx(float(0.5 * ((logp.exp() - onehot) ** 2).mean()), rel=1e-5)


def test_zero_coefficients_skip_terms(monkeypatch):
    logits, target = _batch(3)
    loss = CompositeLoss(alpha=1.0, delta=0.5)

    def boom(*a, **k):
        raise AssertionError("a term with a zero coefficient was computed")

    monkeypatch.setattr(loss.dice, "forward", boom)
    monkeypatch.setattr(composite.CompositeLoss, "_huber", boom)
    loss(logits, target)
    assert set(loss.last_terms) == {"ce", "focal_tversky", "total"}


def test_class_weights_change_only_the_cross_entropy():
    logits, target = _batch(4)
    plain = CompositeLoss(1.0, 1.0, 0.0, 0.0)
    weighted = CompositeLoss(1.0, 1.0, 0.0, 0.0, class_weights=[1.0, 5.0, 5.0, 5.0])
    plain(logits, target)
    weighted(logits, target)
    assert plain.last_terms["ce"] != pytest.approx(weighted.last_terms["ce"])
    assert plain.last_terms["dice"] == pytest.approx(weighted.last_terms["dice"])
    with pytest.raises(ValueError, match="3 class weights"):
        CompositeLoss(class_weights=[1.0, 2.0, 3.0])(logits, target)


def test_target_without_channel_axis_and_include_background():
    logits, target = _batch(5)
    loss = CompositeLoss(0.25, 0.25, 0.25, 0.25)
    assert loss(logits, target[:, 0]).item() == pytest.approx(loss(logits, target).item())
    fg = CompositeLoss(0.0, 1.0, 0.0, 1.0, include_background=False)
    bg = CompositeLoss(0.0, 1.0, 0.0, 1.0)
    assert fg(logits, target).item() != pytest.approx(bg(logits, target).item())


def test_ignored_pixels_do_not_change_any_term():
    logits, target = _batch(6)
    target[:, :, :4] = -1
    loss = CompositeLoss(0.25, 0.25, 0.25, 0.25, ignore_index=-1, class_weights=[1.0, 2.0, 3.0, 4.0])
    a = loss(logits, target).item()
    terms_a = loss.last_terms
    other = logits.clone()
    other[:, :, :4] = torch.randn_like(other[:, :, :4]) * 5
    b = loss(other, target).item()
    assert a == pytest.approx(b, rel=1e-6)
    assert loss.last_terms == pytest.approx(terms_a, rel=1e-6)
    everything = torch.full_like(target, -1)
    x = logits.clone().requires_grad_(True)
    zero = loss(x, everything)
    zero.backward()
    assert zero.item() == 0.0 and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("bad", [4, -1])
def test_labels_out_of_range_raise(bad):
    logits, target = _batch(7)
    target[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"0\.\.3"):
        CompositeLoss(0.25, 0.25, 0.25, 0.25)(logits, target)


def test_non_integer_labels_and_wrong_shapes_raise():
    logits, target = _batch(8)
    soft = target.float()
    soft[0, 0, 0, 0] = 0.5
    with pytest.raises(ValueError, match="integer"):
        CompositeLoss()(logits, soft)
    with pytest.raises(ValueError, match="does not fit"):
        CompositeLoss()(logits, target[..., :4])
    with pytest.raises(ValueError, match="class index"):
        CompositeLoss(ignore_index=2)(logits, target)


def test_class_weights_set_after_construction_equal_weights_given_at_construction():
    """Bundles build the loss unweighted and set the weights in an initialize step (no label scan at resolve)."""
    torch.manual_seed(0)
    logits, target = torch.randn(2, 4, 8, 8), torch.randint(0, 4, (2, 1, 8, 8))
    weights = [1.0, 3.4, 3.7, 5.4]
    given = CompositeLoss(preset="candidate2", class_weights=weights)
    later = CompositeLoss(preset="candidate2")
    unweighted = later(logits, target)
    assert later.set_class_weights(weights) is later
    assert torch.equal(later(logits, target), given(logits, target))
    assert not torch.equal(later(logits, target), unweighted)
    assert "class_weights" not in later.state_dict()  # not saved with the loss, as at construction
    with pytest.raises(ValueError, match="finite"):
        later.set_class_weights([0.0, 0.0, 0.0, 0.0])
    assert torch.equal(later(logits, target), given(logits, target))  # a refused update keeps the weights
