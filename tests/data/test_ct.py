"""CT input: HU windowing, the middle-30 % rule, NIfTI / DICOM loading, the slice index, phantoms."""

from __future__ import annotations

import os
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from fewlabel.data import ct as ct_data
from fewlabel.data.ct import (
    SliceIndex,
    build_slice_index,
    dicom_series_files,
    load_ct_volume,
    make_ct_phantom,
    middle_slices,
    write_ct_phantom,
    write_ct_phantom_dicom,
)
from fewlabel.errors import DataError
from fewlabel.transforms.ct import (
    CTWindow,
    CTWindowd,
    KeepMiddleSlices,
    KeepMiddleSlicesd,
    LoadCTVolumed,
    NotHUWarning,
)

SHAPE = (40, 48, 48)  # (Z, Y, X)
SPACING = (2.5, 3.0, 3.5)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """One phantom as NIfTI (seed 0), the same phantom as DICOM, and a second scan (seed 1) as DICOM."""
    root = tmp_path_factory.mktemp("ct")
    nii = write_ct_phantom(root / "scan0.nii.gz", shape=SHAPE, seed=0, spacing=SPACING)
    dcm = write_ct_phantom_dicom(root / "scan0_dicom", shape=SHAPE, seed=0, spacing=SPACING)
    other = write_ct_phantom_dicom(root / "scan1_dicom", shape=SHAPE, seed=1, spacing=SPACING,
                                   label_path=root / "scan1_label.nii.gz")
    return root, nii, dcm, other


# ----------------------------------------------------------------------------- windowing
def test_window_maps_window_edges_and_clips_beyond():
    level, _width = 40.0, 400.0
    hu = np.array([-1000, level - 300, level - 200, level - 100, level, level + 100, level + 200, level + 300, 3000],
                  dtype=np.float64)
    out = CTWindow()(hu)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, [0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1], atol=1e-6)
    # another window, integer input, torch in -> torch out
    out2 = CTWindow(width=100, level=-50, check_hu=False)(torch.tensor([-200, -100, -50, 0, 50], dtype=torch.int16))
    assert isinstance(out2, torch.Tensor) and out2.dtype == torch.float32
    np.testing.assert_allclose(out2.numpy(), [0, 0, 0.5, 1, 1], atol=1e-6)
    with pytest.raises(ValueError):
        CTWindow(width=0)


def test_window_keeps_meta_and_dict_twin_touches_only_its_keys():
    img = MetaTensor(torch.full((1, 4, 4, 3), 40.0), meta={"filename_or_obj": "scan.nii.gz"})
    img[0, 0, 0, 0] = -1000.0
    lab = torch.ones(1, 4, 4, 3)
    d = CTWindowd("image")({"image": img, "label": lab})
    assert isinstance(d["image"], MetaTensor) and d["image"].meta["filename_or_obj"] == "scan.nii.gz"
    assert d["image"].dtype == torch.float32 and float(d["image"].min()) == 0.0 and float(d["image"].max()) == 0.5
    assert d["label"] is lab


def test_window_rejects_nan_naming_the_file_or_replaces_on_request(tmp_path):
    vol = np.full((8, 8, 6), 40.0, dtype=np.float32)
    vol[0, 0, 0] = -1000.0
    vol[3, 3, 3] = np.nan
    vol[4, 4, 4] = np.inf
    path = tmp_path / "broken_scan.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), os.fspath(path))
    img = load_ct_volume(path)
    with pytest.raises(DataError, match=r"broken_scan\.nii\.gz.*1 NaN and 1 infinite"):
        CTWindow()(img)
    out = CTWindow(nonfinite="replace")(img)
    assert torch.isfinite(out).all()
    assert sorted(torch.unique(out).tolist()) == [0.0, 0.5, 1.0]  # NaN -> air (0), +Inf -> 1, 40 HU -> 0.5


def test_window_warns_only_when_input_does_not_look_like_hu():
    with pytest.warns(NotHUWarning, match="already normalised"):
        out = CTWindow()(MetaTensor(torch.rand(1, 4, 4, 2), meta={"filename_or_obj": "norm.nii"}))
    assert out.shape == (1, 4, 4, 2)  # a warning, not an error
    with pytest.warns(NotHUWarning, match="RescaleIntercept"):
        CTWindow()(np.array([0.0, 1024.0, 2000.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CTWindow()(np.array([-1000.0, 40.0, 700.0]))
        CTWindow(check_hu=False)(np.array([0.0, 1.0]))


# ----------------------------------------------------------------------------- middle slices
def test_middle_slices_counts_and_rounding():
    assert middle_slices(10).tolist() == [3, 4, 5]
    assert middle_slices(11).tolist() == [4, 5, 6]  # 3.3 -> 3, centred
    assert middle_slices(100).tolist() == list(range(35, 65))
    assert middle_slices(5).tolist() == [1, 2]  # 1.5 rounds half up to 2
    assert middle_slices(5, rounding="floor").tolist() == [2]
    assert middle_slices(11, rounding="ceil").tolist() == [3, 4, 5, 6]
    assert middle_slices(1).tolist() == [0]  # at least one slice
    assert middle_slices(2, fraction=0.1).tolist() == [0]
    assert middle_slices(7, fraction=1.0).tolist() == list(range(7))
    for bad in [dict(num_slices=0), dict(num_slices=10, fraction=0.0), dict(num_slices=10, fraction=1.5),
                dict(num_slices=10, rounding="bankers")]:
        with pytest.raises(ValueError):
            middle_slices(**bad)


def test_keep_middle_slices_crops_the_axial_axis_moves_the_affine_and_inverts():
    affine = torch.diag(torch.tensor([1.0, 1.0, 2.5, 1.0], dtype=torch.float64))
    img = MetaTensor(torch.arange(10.0).reshape(1, 1, 1, 10).repeat(1, 3, 2, 1), affine=affine)
    out = KeepMiddleSlices()(img)
    assert out.shape == (1, 3, 2, 3) and out[0, 0, 0].tolist() == [3.0, 4.0, 5.0]
    assert float(out.affine[2, 3]) == pytest.approx(3 * 2.5)  # origin moved to the first kept slice
    k = KeepMiddleSlices(fraction=0.5, axis=0)
    cut = k(img)
    assert cut.shape == (1, 2, 2, 10)  # 1.5 -> 2 of 3 rows, start (3 - 2) // 2 = 0
    restored = k.inverse(cut)
    assert restored.shape == img.shape and restored[0, 2].abs().sum() == 0

    d = KeepMiddleSlicesd(["image", "label"])({"image": img, "label": img.clone()})
    assert d["image"].shape == d["label"].shape == (1, 3, 2, 3)
    bad_label = MetaTensor(torch.zeros(1, 3, 2, 12), meta={"filename_or_obj": "other_label.nii.gz"})
    with pytest.raises(DataError, match="other_label"):
        KeepMiddleSlicesd(["image", "label"])({"image": img, "label": bad_label})


# ----------------------------------------------------------------------------- loading
def test_phantom_is_deterministic_and_ct_like():
    hu, label, organ = make_ct_phantom(SHAPE, seed=3)
    hu2, label2, organ2 = make_ct_phantom(SHAPE, seed=3)
    assert np.array_equal(hu, hu2) and np.array_equal(label, label2) and organ == organ2
    assert hu.dtype == np.int16 and hu.shape == SHAPE
    assert hu[:, 0, 0].tolist() == [-1000] * SHAPE[0]  # air in the corner
    assert abs(float(hu[label == 1].mean()) - 60) < 5  # liver about 60 HU
    assert (hu > 400).any()  # bone
    inside = (hu > -500) & (label == 0) & (hu < 200)
    assert -20 < float(np.median(hu[inside])) < 60  # soft tissue
    per_slice = label.reshape(SHAPE[0], -1).any(axis=1)
    assert np.flatnonzero(per_slice).tolist() == list(organ)  # one contiguous range
    kept = set(middle_slices(SHAPE[0]).tolist())
    assert kept & set(organ) and kept - set(organ)  # the middle 30 % holds both kinds of slices


def test_nifti_and_dicom_series_load_to_the_same_volume(phantoms):
    _, nii, dcm, _ = phantoms
    a = load_ct_volume(nii.image)
    b = load_ct_volume(dcm.image)
    z, y, x = SHAPE
    assert a.shape == b.shape == (1, x, y, z)
    assert a.dtype == b.dtype == torch.float32
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=0.5)  # stored HU + 1024, rescaled exactly
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-4)
    assert b.meta["filename_or_obj"] == os.fspath(dcm.image)
    # RAS: voxel steps positive along every axis, axial axis last with the slice spacing
    np.testing.assert_allclose(np.diag(a.affine.numpy())[:3], [SPACING[2], SPACING[1], SPACING[0]])
    # the loaded slices are the phantom's slices (slice 0 most inferior; x, y flipped to R, A)
    hu, _, _ = make_ct_phantom(SHAPE, seed=0)
    np.testing.assert_array_equal(a[0, :, :, 7].numpy(), hu[7].T[::-1, ::-1])


def test_nifti_keeps_its_affine(phantoms):
    _, nii, _, _ = phantoms
    file_affine = nib.load(os.fspath(nii.image)).affine
    stored = load_ct_volume(nii.image, axcodes=None)
    np.testing.assert_allclose(stored.affine.numpy(), file_affine)
    ras = load_ct_volume(nii.image)
    np.testing.assert_allclose(np.asarray(ras.meta["original_affine"]), file_affine)
    # the same world point holds the same value in both orientations
    to_stored = np.linalg.inv(file_affine) @ ras.affine.numpy()
    for v in [(0, 0, 0), (5, 17, 30), (47, 3, 39)]:
        u = np.rint(to_stored @ np.array([*v, 1.0]))[:3].astype(int)
        assert float(ras[0][v]) == float(stored[0][tuple(u)])


def test_dicom_folder_ignores_non_dicom_files_and_checks_its_series(phantoms, tmp_path):
    _, _, dcm, _ = phantoms
    files = dicom_series_files(dcm.image)
    assert len(files) == SHAPE[0]
    # mixed series in one folder
    mixed = tmp_path / "mixed"
    write_ct_phantom_dicom(mixed, shape=(10, 16, 16), seed=0)
    write_ct_phantom_dicom(mixed, shape=(10, 16, 16), seed=1, series_number=2)
    (mixed / "README.txt").write_text("not DICOM")
    with pytest.raises(DataError, match="mixes 2 series"):
        load_ct_volume(mixed)
    # a stray text file is ignored
    single = tmp_path / "single"
    write_ct_phantom_dicom(single, shape=(10, 16, 16), seed=0)
    (single / "notes.txt").write_text("not DICOM")
    assert load_ct_volume(single).shape == (1, 16, 16, 10)
    # InstanceNumber out of spatial order would scramble the stack
    import pydicom

    first, second = sorted(single.glob("IM*.dcm"))[:2]
    ds = pydicom.dcmread(first)
    ds.InstanceNumber = 100
    ds.save_as(first)
    with pytest.raises(DataError, match="InstanceNumber order"):
        load_ct_volume(single)


def test_loader_errors_name_the_path(tmp_path, phantoms):
    _, nii, _, _ = phantoms
    with pytest.raises(DataError, match=r"not found: .*nope\.nii\.gz"):
        load_ct_volume(tmp_path / "nope.nii.gz")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        load_ct_volume(empty)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.dcm").write_bytes(b"this is not a DICOM file")
    with pytest.raises(DataError, match="no DICOM image files"):
        load_ct_volume(junk)
    data = nii.image.read_bytes()
    cut_gz = tmp_path / "cut.nii.gz"
    cut_gz.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.nii\.gz"):
        load_ct_volume(cut_gz)
    raw = tmp_path / "full.nii"
    nib.save(nib.load(os.fspath(nii.image)), os.fspath(raw))
    cut = tmp_path / "cut.nii"
    cut.write_bytes(raw.read_bytes()[:2000])
    with pytest.raises(DataError, match=r"cut\.nii"):
        load_ct_volume(cut)
    other = tmp_path / "scan.mha"
    other.write_bytes(b"x")
    with pytest.raises(DataError, match="unsupported"):
        load_ct_volume(other)


# ----------------------------------------------------------------------------- slice index
def test_slice_index_flags_exactly_the_organ_slices_in_the_kept_range(phantoms, monkeypatch):
    root, nii, _, other = phantoms
    items = [{"image": os.fspath(nii.image), "label": os.fspath(nii.label), "scan": "p0"},
             {"image": os.fspath(other.image), "label": os.fspath(other.label), "scan": "p1"}]
    cache = root / "datalist.slices.json"
    index = build_slice_index(items, cache=cache)
    kept = middle_slices(SHAPE[0]).tolist()
    assert len(index) == 2 * len(kept)
    for scan, ph in (("p0", nii), ("p1", other)):
        mine = index.scan_ids == scan
        assert index.positions[mine].tolist() == kept
        assert index.has_organ[mine].tolist() == [k in ph.organ_slices for k in kept]
        assert set(index.images[mine]) == {os.fspath(ph.image)}
    assert index.has_organ.any() and not index.has_organ.all()
    assert index.has_organ.dtype == bool and index.positions.dtype == np.int64
    rec = index.records()[0]
    assert rec == {"image": os.fspath(nii.image), "label": os.fspath(nii.label), "scan": "p0", "slice": kept[0],
                   "has_organ": kept[0] in nii.organ_slices, "num_slices": SHAPE[0]}

    # the cache is reused without reading any volume, and equals a fresh build
    assert cache.is_file()

    def _no_reads(*a, **k):
        raise AssertionError("the cached index should not read volumes")

    monkeypatch.setattr(ct_data, "load_ct_volume", _no_reads)
    again = build_slice_index(items, cache=cache)
    for name in ("scan_ids", "positions", "has_organ", "images", "labels", "num_slices"):
        assert np.array_equal(getattr(again, name), getattr(index, name))
    assert np.array_equal(SliceIndex.from_json(cache).has_organ, index.has_organ)
    with pytest.raises(AssertionError):  # other settings -> rebuilt
        build_slice_index(items, fraction=0.5, cache=cache)
    st = nii.label.stat()
    os.utime(nii.label, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a label file changed -> rebuilt
    with pytest.raises(AssertionError):
        build_slice_index(items, cache=cache)
    monkeypatch.undo()
    assert np.array_equal(build_slice_index(items, cache=cache).has_organ, index.has_organ)

    # every slice, organ label given as a set of values
    full = build_slice_index(items[:1], organ_label=(1, 2), fraction=1.0)
    assert np.flatnonzero(full.has_organ).tolist() == list(nii.organ_slices)


def test_slice_index_errors(phantoms):
    _, nii, _, other = phantoms
    with pytest.raises(DataError, match="no 'label'"):
        build_slice_index([{"image": os.fspath(nii.image), "scan": "p0"}])
    small = write_ct_phantom(nii.image.parent / "small.nii.gz", shape=(10, 16, 16), seed=0)
    with pytest.raises(DataError, match="size"):  # label of another size
        build_slice_index([{"image": os.fspath(nii.image), "label": os.fspath(small.label), "scan": "p0"}])
    with pytest.raises(DataError, match="two different volumes"):
        build_slice_index([{"image": os.fspath(nii.image), "label": os.fspath(nii.label), "scan": "p"},
                           {"image": os.fspath(other.image), "label": os.fspath(other.label), "scan": "p"}])


def test_volume_pipeline_loads_cuts_and_windows(phantoms):
    _, nii, _, _ = phantoms
    pipe = Compose([LoadCTVolumed("image"), LoadCTVolumed("label", dtype=None),
                    KeepMiddleSlicesd(["image", "label"]), CTWindowd("image")])
    d = pipe({"image": os.fspath(nii.image), "label": os.fspath(nii.label)})
    kept = middle_slices(SHAPE[0])
    assert d["image"].shape == d["label"].shape == (1, SHAPE[2], SHAPE[1], len(kept))
    assert 0.0 <= float(d["image"].min()) and float(d["image"].max()) <= 1.0
    assert float(d["image"].min()) == 0.0 and float(d["image"].max()) == 1.0  # air and bone saturate
    organ = d["label"][0].flatten(0, 1).any(0).tolist()
    assert organ == [int(k) in nii.organ_slices for k in kept]
    # liver (60 HU) sits at (60 + 160) / 400 = 0.55 in the window, give or take the noise
    liver = d["image"][d["label"] == 1]
    assert abs(float(liver.mean()) - 0.55) < 0.02
