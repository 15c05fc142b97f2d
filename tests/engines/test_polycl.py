"""PolyCL's pieces between the volumes and the engines: the slice cache, triplet sampling and batches,
slice-by-slice volume inference and per-volume Dice / Hausdorff."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.inferers import SimpleInferer
from monai.transforms import Compose

from fewlabel.data import (
    cache_ct_slices,
    ct_slice_records,
    list_ct_volumes,
    load_ct_volume,
    slice_tables,
    write_ct_demo_dataset,
    write_ct_phantom,
    write_ct_phantom_dicom,
)
from fewlabel.engines import (
    ContrastiveEncoder,
    SliceBySliceInferer,
    SupConPairs,
    TripletBatch,
    TripletDataset,
    TripletSampler,
    VolumeBatch,
)
from fewlabel.errors import DataError
from fewlabel.losses import PolyCLLoss
from fewlabel.metrics import VolumeScores, volume_scores
from fewlabel.networks import build_network
from fewlabel.transforms import CTWindowd, LoadCTSlice, LoadCTSliced

SHAPE = (20, 24, 28)  # (Z, Y, X): non-square in-plane to catch axis mix-ups


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct")
    items = []
    for k in range(3):
        ph = write_ct_phantom(root / f"s{k}.nii.gz", shape=SHAPE, seed=k)
        items.append({"image": str(ph.image), "label": str(ph.label), "scan": f"s{k}", "organ": ph.organ_slices})
    return root, items


def test_slice_cache_keeps_the_middle_slices_resized_with_exact_organ_flags(scans, tmp_path):
    _, items = scans
    recs = cache_ct_slices(items, tmp_path, size=(16, 12), fraction=0.5, organ_labels=[1], progress=False)
    assert len(recs) == 3 * 10  # half of 20 slices per scan
    for item in items:
        mine = [r for r in recs if r["scan"] == item["scan"]]
        assert [r["slice"] for r in mine] == list(range(5, 15))
        assert [r["has_organ"] for r in mine] == [k in item["organ"] for k in range(5, 15)]
        assert [r["index"] for r in mine] == list(range(10))
        assert len({r["uid"] for r in mine}) == 10
    loader = LoadCTSliced(["image", "label"])
    rec = next(r for r in recs if r["has_organ"])
    out = loader(rec)
    assert out["image"].shape == (1, 16, 12) and out["label"].shape == (1, 16, 12)
    assert out["image"].dtype == torch.float32 and out["image"].min() < -500  # HU: air outside the body
    assert set(out["label"].unique().tolist()) == {0.0, 1.0}
    # the stored slice is the volume's slice resized: compare with the volume's own slice
    vol = load_ct_volume(items[0]["image"])
    first = LoadCTSlice()(recs[0]["image"], 0)[0]
    ref = torch.nn.functional.interpolate(vol[None, :, :, :, 5].float(), size=(16, 12), mode="bilinear",
                                          antialias=True, align_corners=False)[0, 0]
    assert torch.allclose(first, ref.round(), atol=1.0)


def test_slice_cache_is_reused_and_rebuilt_when_the_volume_changes(scans, tmp_path):
    root, items = scans
    recs = cache_ct_slices(items[:1], tmp_path, size=(8, 8), progress=False)
    stack = recs[0]["image"]
    mtime = os.path.getmtime(stack)
    again = cache_ct_slices(items[:1], tmp_path, size=(8, 8), progress=False)
    assert again[0]["image"] == stack and os.path.getmtime(stack) == mtime
    other = cache_ct_slices(items[:1], tmp_path, size=(8, 8), fraction=1.0, progress=False)
    assert other[0]["image"] != stack and len(other) == SHAPE[0]
    copy = dict(items[0], image=str(tmp_path / "copy.nii.gz"))
    write_ct_phantom(copy["image"], shape=SHAPE, seed=7, label_path=tmp_path / "copy_label.nii.gz")
    assert cache_ct_slices([copy], tmp_path, size=(8, 8), progress=False)[0]["image"] != stack


def test_slice_records_come_from_the_cache_alone_and_name_the_missing_step(scans, tmp_path, monkeypatch):
    """What a PolyCL config resolves: the records of the cached stacks, without reading or writing a volume."""
    _, items = scans
    settings = {"size": (8, 8), "fraction": 0.5, "organ_labels": [1]}
    with pytest.raises(DataError, match="initialize") as excinfo:
        ct_slice_records(items, tmp_path, **settings)
    assert "'s0'" in str(excinfo.value) and str(tmp_path) in str(excinfo.value)
    assert not any(tmp_path.iterdir())  # nothing written
    written = cache_ct_slices(items, tmp_path, progress=False, **settings)
    files = sorted(tmp_path.iterdir())
    monkeypatch.setattr("fewlabel.data.ct_slices.load_ct_volume", lambda *a, **k: pytest.fail("a volume was read"))
    assert ct_slice_records(items, tmp_path, **settings) == written
    assert sorted(tmp_path.iterdir()) == files
    with pytest.raises(DataError, match="not in the slice cache"):  # other settings: other stacks
        ct_slice_records(items, tmp_path, **{**settings, "fraction": 1.0})


def test_slice_cache_errors_name_the_files(scans, tmp_path):
    root, items = scans
    bad = write_ct_phantom(tmp_path / "small.nii.gz", shape=(20, 24, 20), seed=0)
    with pytest.raises(DataError, match="small_label"):
        cache_ct_slices([{"image": items[0]["image"], "label": str(bad.label), "scan": "x"}], tmp_path, progress=False)
    with pytest.raises(DataError, match="two different volumes"):
        cache_ct_slices([dict(items[0]), dict(items[1], scan="s0")], tmp_path, progress=False)
    with pytest.raises(DataError, match="not found"):
        cache_ct_slices([{"image": str(tmp_path / "missing.nii.gz"), "scan": "m"}], tmp_path, progress=False)
    with pytest.raises(DataError, match="Delete it"):
        (tmp_path / "broken.npy").write_bytes(b"not numpy")
        LoadCTSlice()(tmp_path / "broken.npy", 0)


def test_unlabelled_scans_serve_strategy_s_only(scans, tmp_path):
    _, items = scans
    recs = cache_ct_slices([{"image": it["image"], "scan": it["scan"]} for it in items], tmp_path, progress=False)
    assert all("label" not in r and r["has_organ"] is None for r in recs)
    scan_ids, organ = slice_tables(recs)
    assert organ is None
    sampler = TripletSampler(scan_ids, organ, "S", seed=0)
    assert len(list(sampler)) == len(recs)
    with pytest.raises(ValueError):
        TripletSampler(scan_ids, organ, "O", seed=0)


def test_triplet_batches_train_the_encoder_with_equation_4(scans, tmp_path):
    _, items = scans
    recs = cache_ct_slices(items, tmp_path, size=(32, 32), fraction=0.6, organ_labels=[1], progress=False)
    ds = Dataset(recs, Compose([LoadCTSliced(["image", "label"]), CTWindowd("image", check_hu=False)]))
    scan_ids, organ = slice_tables(recs)
    sampler = TripletSampler(scan_ids, organ, "O", seed=0)
    loader = DataLoader(TripletDataset(ds), sampler=sampler, batch_size=4, num_workers=0)
    batch = next(iter(loader))
    idx = batch["index"]
    for j, key in enumerate(("anchor", "positive", "negative")):  # every image is the slice its index names
        for b in range(4):
            assert torch.equal(batch[key][b], ds[int(idx[b, j])]["image"])
    assert torch.equal(batch["has_organ"], torch.as_tensor(organ[idx[:, 0].numpy()]))
    x, target = TripletBatch()(batch, "cpu")
    assert target is None and x.shape == (12, 1, 32, 32)
    assert torch.equal(x[4:8], batch["positive"].as_tensor())
    net = ContrastiveEncoder(build_network("polycl_unet", 1, 1, channels=[8, 16, 32]), projection_dim=256,
                             hidden_dim=0)
    z = net(x)
    assert z.shape == (12, 256)
    loss = PolyCLLoss()
    assert torch.allclose(loss(z), loss(z[:4], z[4:8], z[8:]))  # the stacked form is equation 4 on the thirds
    loss(z).backward()
    assert all(p.grad is not None for p in net.encoder.parameters())


def test_supcon_pairs_label_both_views_of_each_slice():
    batch = {"image": torch.rand(3, 1, 16, 16), "has_organ": torch.tensor([True, False, True])}
    views, labels = SupConPairs(seed=0)(batch, "cpu")
    assert views.shape == (6, 1, 16, 16) and labels.tolist() == [1, 0, 1, 1, 0, 1]
    _, scan_labels = SupConPairs(label_key="scan", seed=0)({"image": batch["image"], "scan": ["b", "a", "b"]}, "cpu")
    assert scan_labels.tolist() == [1, 0, 1, 1, 0, 1]
    with pytest.raises(KeyError, match="has_organ"):
        SupConPairs()({"image": batch["image"]}, "cpu")


def test_slice_by_slice_inferer_equals_the_network_on_each_axial_slice():
    torch.manual_seed(0)
    net = build_network("polycl_unet", 1, 1, channels=[4, 8]).eval()
    vol = torch.rand(2, 1, 16, 12, 5)
    with torch.no_grad():
        out = SliceBySliceInferer(SimpleInferer(), slice_batch=2)(vol, net)
        for b in range(2):
            for k in range(5):
                assert torch.allclose(out[b, :, :, :, k], net(vol[b:b + 1, :, :, :, k])[0], atol=1e-5)
    with pytest.raises(ValueError, match="X, Y, Z"):
        SliceBySliceInferer()(torch.rand(1, 1, 8, 8), net)


class _FakePropagation:
    """Stands in for SAM 2: records its input and returns the reference shifted by one slice."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.seen: list[np.ndarray] = []

    def __call__(self, volume: np.ndarray, reference: np.ndarray) -> np.ndarray:
        self.seen.append(reference.copy())
        return np.roll(reference, 1, axis=0)


@pytest.mark.parametrize("prompt", ["prediction", "ground_truth"])
def test_propagation_gets_the_prediction_or_the_label_with_slices_first(prompt):
    net = lambda x: (x[:, :1] > 0.5).float() * 20 - 10  # noqa: E731  a "network": foreground where x > 0.5
    vol = torch.zeros(1, 1, 6, 4, 3)
    vol[0, 0, 1:3, 1:3, 1] = 1.0
    label = torch.zeros(1, 1, 6, 4, 3)
    label[0, 0, 0, 0, 2] = 1
    prop = _FakePropagation(prompt)
    inferer = SliceBySliceInferer(propagation=prop)
    out = inferer(vol, net, prompt_label=label)
    ref = prop.seen[0]
    assert ref.shape == (3, 6, 4)  # (Z, X, Y)
    expected = (label[0, 0] if prompt == "ground_truth" else vol[0, 0] > 0.5).permute(2, 0, 1).numpy() != 0
    assert np.array_equal(ref, expected)
    assert torch.equal(out[0, 0] > 0, torch.as_tensor(np.roll(expected, 1, axis=0)).permute(1, 2, 0))
    if prompt == "ground_truth":
        with pytest.raises(ValueError, match="VolumeBatch"):
            inferer(vol, net)
        image, target, args, kwargs = VolumeBatch(pass_label=True)({"image": vol, "label": label}, "cpu")
        assert torch.equal(kwargs["prompt_label"], label)


def test_volume_scores_by_hand():
    pred = torch.zeros(1, 10, 10, 4)
    label = torch.zeros(1, 10, 10, 4)
    assert volume_scores(pred, label) == (1.0, 0.0)  # nothing to find, nothing found
    label[0, 2:4, 2:4, 1] = 1  # 8 voxels
    dice, hd = volume_scores(pred, label)
    assert dice == 0.0 and hd is None
    pred[0, 2:4, 2:4, 1] = 1
    pred[0, 2:4, 2:4, 2] = 1
    dice, hd = volume_scores(pred, label)
    assert dice == pytest.approx(2 * 4 / (8 + 4)) and hd == pytest.approx(1.0)
    pred[0, 9, 9, 3] = 1  # a stray voxel far away: the maximum distance jumps, HD95 less
    _, hd = volume_scores(pred, label)
    assert hd == pytest.approx(float(np.sqrt(6 ** 2 + 6 ** 2 + 2 ** 2)))
    _, hd_mm = volume_scores(pred, label, spacing=(2.0, 2.0, 5.0))
    assert hd_mm == pytest.approx(float(np.sqrt(12 ** 2 + 12 ** 2 + 10 ** 2)))
    scores = VolumeScores()
    scores.update(pred, label, "a")
    scores.update(torch.zeros_like(pred), label, "b")
    res = scores.compute()
    assert res["num_volumes"] == 2 and res["hausdorff_undefined"] == 1
    assert res["mean_hausdorff"] == pytest.approx(hd) and res["per_volume"][1] == {"volume": "b", "dice": 0.0,
                                                                                  "hausdorff": None}


def test_ct_demo_dataset_and_input_listing(tmp_path):
    path = write_ct_demo_dataset(tmp_path / "demo", num_scans=4, shape=(12, 16, 16), dicom_testing=True)
    blob = json.loads(path.read_text())
    scans = {s: [it["scan"] for it in blob[s]] for s in ("training", "validation", "testing")}
    assert sum(map(len, scans.values())) == 4 and all(scans.values())
    assert not set(scans["training"]) & set(scans["testing"])
    assert all(it["image"].startswith("dicom/") for it in blob["testing"])
    mtime = path.stat().st_mtime_ns
    assert write_ct_demo_dataset(tmp_path / "demo", num_scans=4, shape=(12, 16, 16), dicom_testing=True) == path
    assert path.stat().st_mtime_ns == mtime  # cached
    folder = tmp_path / "inputs"
    write_ct_phantom(folder / "a.nii.gz", shape=(10, 12, 12))
    write_ct_phantom_dicom(folder / "series", shape=(10, 12, 12))
    (folder / "notes.txt").write_text("x")
    listed = [os.path.basename(d["image"]) for d in list_ct_volumes(folder)]
    assert listed == ["a.nii.gz", "a_label.nii.gz", "series"]
    assert list_ct_volumes(folder / "series") == [{"image": str(folder / "series")}]
    with pytest.raises(DataError, match="no NIfTI"):
        (tmp_path / "empty").mkdir()
        list_ct_volumes(tmp_path / "empty")
    assert nib.load(str(folder / "a.nii.gz")).shape == (12, 12, 10)
