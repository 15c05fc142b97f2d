"""SAM 2 pseudo-video propagation (PolyCL 3.3.2) with a tiny random-weight SAM 2 on the CPU."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch

pytest.importorskip("sam2")

from fewlabel.errors import CheckpointError  # noqa: E402
from fewlabel.sam.propagate import (  # noqa: E402
    TEMP_PREFIX,
    build_sam2_propagator,
    frames_to_uint8,
    informative_slices,
    propagate_from_label,
    propagate_volume,
    reference_slice,
    save_tiny_sam2,
    tiny_sam2_checkpoint,
)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return tiny_sam2_checkpoint(tmp_path_factory.mktemp("sam2") / "tiny_sam2.pt", seed=0)


@pytest.fixture(scope="module")
def predictor(tiny_ckpt):
    return build_sam2_propagator(tiny_ckpt, config="tiny", device="cpu")


def _volume(z=6, h=48, w=56, seed=0):
    rng = np.random.default_rng(seed)
    vol = rng.random((z, h, w)).astype(np.float32) * 0.3
    vol[:, 12:32, 16:40] += 0.6  # a bright block through every slice
    ref_mask = np.zeros((h, w), dtype=bool)
    ref_mask[12:32, 16:40] = True
    return vol, ref_mask


# ------------------------------------------------------------------ slice rules


def test_informative_slices_and_reference():
    m = np.zeros((7, 4, 5), dtype=np.uint8)
    m[5, 1, 1] = 1
    m[2, 0, 4] = 3
    m[3, 3, 0] = 1
    assert informative_slices(m) == [2, 3, 5]
    assert reference_slice([2, 3, 5]) == 3
    assert reference_slice([2, 3, 4, 5]) == 4  # floor(4/2) = 2 -> upper middle
    assert reference_slice([7]) == 7
    # MONAI-style (X, Y, Z): slices along the last axis
    assert informative_slices(np.moveaxis(m, 0, -1), axis=-1) == [2, 3, 5]
    assert informative_slices(torch.from_numpy(m)) == [2, 3, 5]
    assert informative_slices(np.zeros((3, 2, 2))) == []
    with pytest.raises(ValueError, match="no informative slice"):
        reference_slice([])
    with pytest.raises(ValueError, match="3D"):
        informative_slices(np.zeros((2, 2)))


def test_frames_to_uint8():
    v = np.array([[[-0.5, 0.0, 0.5, 1.0, 2.0]]])
    assert frames_to_uint8(v).tolist() == [[[0, 0, 128, 255, 255]]]
    assert frames_to_uint8(v, value_range=None).tolist() == [[[0, 51, 102, 153, 255]]]
    assert frames_to_uint8(np.full((1, 2, 2), 3.0), value_range=None).max() == 0


# ------------------------------------------------------------------ checkpoints


def test_tiny_saved_and_loaded_through_real_path(tiny_ckpt, predictor, tmp_path):
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    payload = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    assert set(payload) >= {"model", "format", "overrides"}
    assert isinstance(predictor, SAM2VideoPredictor)
    assert predictor.image_size == 64 and predictor.device.type == "cpu"
    assert not predictor.training and not any(p.requires_grad for p in predictor.parameters())
    sd = predictor.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in payload["model"].items())
    # same seed -> same weights; another seed -> other weights
    again = torch.load(save_tiny_sam2(tmp_path / "again.pt", seed=0), weights_only=True)["model"]
    other = torch.load(save_tiny_sam2(tmp_path / "other.pt", seed=1), weights_only=True)["model"]
    key = "image_encoder.trunk.patch_embed.proj.weight"
    assert torch.equal(again[key], payload["model"][key])
    assert not torch.equal(other[key], payload["model"][key])


def test_missing_checkpoint_names_file(tmp_path):
    missing = tmp_path / "nowhere" / "sam2.1_hiera_tiny.pt"
    with pytest.raises(CheckpointError, match="sam2.1_hiera_tiny.pt") as e:
        build_sam2_propagator(missing, config="sam2.1_hiera_t")
    assert str(missing) in str(e.value)
    assert isinstance(e.value, FileNotFoundError)


def test_bad_checkpoints(tmp_path, tiny_ckpt):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        build_sam2_propagator(junk, config="sam2.1_hiera_t")
    # the tiny file under a real config, and a real-looking file under config="tiny"
    with pytest.raises(CheckpointError, match="config='tiny'"):
        build_sam2_propagator(tiny_ckpt, config="sam2.1_hiera_t")
    plain = tmp_path / "plain.pt"
    torch.save({"model": torch.load(tiny_ckpt, weights_only=True)["model"]}, plain)
    with pytest.raises(CheckpointError, match="not a tiny SAM 2 file"):
        build_sam2_propagator(plain, config="tiny")
    with pytest.raises(ValueError, match="unknown SAM 2 config"):
        build_sam2_propagator(plain, config="hiera_xxl")


def test_mismatched_checkpoint_names_file_and_keys(tmp_path, tiny_ckpt):
    # tiny weights under the real sam2.1_hiera_t config: shapes differ (builds the real-size model)
    plain = tmp_path / "tiny_weights_plain.pt"
    torch.save({"model": torch.load(tiny_ckpt, weights_only=True)["model"]}, plain)
    with pytest.raises(CheckpointError, match="does not fit SAM 2 config 'sam2.1_hiera_t'") as e:
        build_sam2_propagator(plain, config="sam2.1_hiera_t")
    assert "tiny_weights_plain.pt" in str(e.value) and "differ in shape" in str(e.value)


# ------------------------------------------------------------------ propagation


def test_propagate_shape_reference_and_determinism(predictor, tmp_path):
    vol, ref_mask = _volume()
    out = propagate_volume(predictor, vol, 2, ref_mask, tmp_dir=tmp_path)
    assert out.shape == vol.shape and out.dtype == np.bool_
    np.testing.assert_array_equal(out[2], ref_mask)
    again = propagate_volume(predictor, torch.from_numpy(vol), 2, torch.from_numpy(ref_mask), tmp_dir=tmp_path)
    np.testing.assert_array_equal(out, again)
    assert os.listdir(tmp_path) == []  # frame folders removed


def test_propagate_subset_of_slices(predictor, tmp_path):
    vol, ref_mask = _volume(z=8)
    out = propagate_volume(predictor, vol, 4, ref_mask, slices=[3, 4, 6], tmp_dir=tmp_path)
    assert not out[[0, 1, 2, 5, 7]].any()
    np.testing.assert_array_equal(out[4], ref_mask)
    with pytest.raises(ValueError, match="not among"):
        propagate_volume(predictor, vol, 4, ref_mask, slices=[3, 5])
    with pytest.raises(ValueError, match="does not match"):
        propagate_volume(predictor, vol, 4, ref_mask[:-1])


def test_propagate_from_label_monai_axis(predictor, tmp_path):
    vol, ref_mask = _volume(z=7)
    label = np.zeros(vol.shape, dtype=np.uint8)
    label[[1, 2, 4, 5]] = ref_mask
    label[4, 0, 0] = 1  # make the reference slice's mask distinguishable
    # MONAI (X, Y, Z): slices along the last axis
    vol_xyz, lab_xyz = np.moveaxis(vol, 0, -1), np.moveaxis(label, 0, -1)
    mask_xyz, s_r = propagate_from_label(predictor, vol_xyz, lab_xyz, slice_axis=-1, tmp_dir=tmp_path)
    assert s_r == 4  # S = [1, 2, 4, 5] -> S[2]
    assert mask_xyz.shape == vol_xyz.shape
    np.testing.assert_array_equal(mask_xyz[..., 4], lab_xyz[..., 4] != 0)
    assert not mask_xyz[..., [0, 3, 6]].any()
    assert os.listdir(tmp_path) == []


def test_temp_folder_removed_after_exception(predictor, monkeypatch):
    created = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args, **kwargs):
        path = real_mkdtemp(*args, **kwargs)
        created.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    real_propagate = type(predictor).propagate_in_video
    seen = []

    def failing_propagate(self, state, *args, **kwargs):
        for i, item in enumerate(real_propagate(self, state, *args, **kwargs)):
            seen.append(item[0])
            assert os.path.isdir(created[-1])  # frames still there mid-propagation
            if i == 1:
                raise RuntimeError("boom mid-propagation")
            yield item

    monkeypatch.setattr(type(predictor), "propagate_in_video", failing_propagate)
    vol, ref_mask = _volume()
    with pytest.raises(RuntimeError, match="boom"):
        propagate_volume(predictor, vol, 2, ref_mask)
    assert len(created) == 1 and os.path.basename(created[0]).startswith(TEMP_PREFIX)
    assert not os.path.exists(created[0])
    assert len(seen) == 2

    # and after success
    monkeypatch.setattr(type(predictor), "propagate_in_video", real_propagate)
    propagate_volume(predictor, vol, 2, ref_mask)
    assert len(created) == 2 and not os.path.exists(created[1])


def test_forward_then_backward_order(predictor, monkeypatch):
    real_propagate = type(predictor).propagate_in_video
    seen = []

    def recording(self, state, *args, **kwargs):
        for item in real_propagate(self, state, *args, **kwargs):
            seen.append((item[0], bool(kwargs.get("reverse"))))
            yield item

    monkeypatch.setattr(type(predictor), "propagate_in_video", recording)
    vol, ref_mask = _volume(z=6)
    propagate_volume(predictor, vol, 2, ref_mask)
    assert seen == [(2, False), (3, False), (4, False), (5, False), (2, True), (1, True), (0, True)]
