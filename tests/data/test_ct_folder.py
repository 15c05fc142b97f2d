"""CT inference over folders: every NIfTI volume and DICOM series is found, read on its true grid, or refused
with a reason naming it; results never share a name and are written whole or not at all."""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor

from fewlabel.data.ct import (
    build_slice_index,
    ct_output_stem,
    list_ct_volumes,
    load_ct_volume,
    series_ref,
    write_ct_phantom,
    write_ct_phantom_dicom,
)
from fewlabel.data.files import TEMP_MARK
from fewlabel.errors import DataError
from fewlabel.transforms import LoadCTVolumed, SaveCTSegmentationd
from fewlabel.data import segmentation_writers
from fewlabel.transforms import ct_io

SHAPE = (8, 16, 12)  # (Z, Y, X)
SPACING = (2.0, 1.5, 1.0)


def _load(path, **kwargs) -> MetaTensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_ct_volume(path, **kwargs)


def _slices(folder) -> list:
    """The phantom's slice files in InstanceNumber order (IM0001 is the most superior)."""
    return sorted(p for p in folder.iterdir() if p.suffix == ".dcm")


def _non_image_dicom(path) -> None:
    """A Basic Text SR instance: DICOM, but no image."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.save_as(path, enforce_file_format=True)


# ----------------------------------------------------------------------------- discovery
def test_nifti_and_dicom_side_by_side_are_each_one_input(tmp_path, caplog):
    root = tmp_path / "in"
    write_ct_phantom(root / "a.nii.gz", shape=SHAPE, spacing=SPACING, label_path=tmp_path / "a_label.nii.gz")
    nib.save(nib.load(os.fspath(root / "a.nii.gz")), os.fspath(root / "b.nii"))
    write_ct_phantom_dicom(root / "c", shape=SHAPE, spacing=SPACING)
    (root / "README.txt").write_text("notes")
    (root / "empty").mkdir()
    (root / "reports").mkdir()
    _non_image_dicom(root / "reports" / "sr.dcm")
    _non_image_dicom(root / "report.dcm")
    (root / "junk.dcm").write_bytes(b"not DICOM at all")
    with caplog.at_level(logging.WARNING, logger="fewlabel.data"):
        items = list_ct_volumes(root)
    assert items == [{"image": str(root / n)} for n in ("a.nii.gz", "b.nii", "c")]
    log = caplog.text
    assert "README.txt: neither NIfTI" in log and "empty: it holds no DICOM" in log
    assert "reports: its 1 DICOM file(s) hold no image (a DICOM file that is not an image (Basic Text SR" in log
    assert "report.dcm: a DICOM file that is not an image" in log and "junk.dcm: not a DICOM file" in log
    for item in items:
        assert _load(item["image"]).shape == (1, SHAPE[2], SHAPE[1], SHAPE[0])


def test_loose_slices_of_two_series_are_two_inputs_read_exactly(tmp_path):
    root = tmp_path / "in"
    one = write_ct_phantom_dicom(tmp_path / "one", shape=SHAPE, spacing=SPACING, seed=0)
    two = write_ct_phantom_dicom(tmp_path / "two", shape=SHAPE, spacing=SPACING, seed=1, series_number=2)
    root.mkdir()
    for folder in (one.image, two.image):
        for f in _slices(folder):
            shutil.copy(f, root / f.name)
    write_ct_phantom(root / "vol.nii.gz", shape=SHAPE, spacing=SPACING, label_path=tmp_path / "vol_label.nii.gz")
    uids = [str(pydicom.dcmread(_slices(f)[0]).SeriesInstanceUID) for f in (one.image, two.image)]
    items = list_ct_volumes(root)
    assert items[0] == {"image": str(root / "vol.nii.gz")}
    assert sorted(i["image"] for i in items[1:]) == sorted(series_ref(root, u) for u in uids)
    for uid, folder in zip(uids, (one.image, two.image)):
        ref = series_ref(root, uid)
        assert ct_output_stem(ref) == uid
        loaded, alone = _load(ref), _load(folder)
        np.testing.assert_array_equal(loaded.numpy(), alone.numpy())
        np.testing.assert_allclose(np.asarray(loaded.affine), np.asarray(alone.affine))
    # the folder as a whole is still refused, naming both series
    with pytest.raises(DataError, match="mixes 2 series"):
        _load(root)
    # results of a series reference: named by its UID, DICOM SEG of exactly that series
    ref = series_ref(root, uids[1])
    d = LoadCTVolumed("image")({"image": ref})
    d["pred"] = MetaTensor((d["image"] > 0).to(torch.uint8), meta=dict(d["image"].meta))
    files = SaveCTSegmentationd(keys="pred", output_dir=tmp_path / "out")(d)["pred_files"]
    assert [os.path.basename(f) for f in files] == [f"{uids[1]}_seg.nii.gz", f"{uids[1]}_seg.dcm"]
    seg = pydicom.dcmread(files[1])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uids[1]


def test_one_loose_series_beside_nifti_is_the_folder_and_hides_nothing(tmp_path):
    root = tmp_path / "in"
    write_ct_phantom_dicom(root, shape=SHAPE, spacing=SPACING)
    write_ct_phantom(root / "vol.nii.gz", shape=SHAPE, spacing=SPACING, label_path=tmp_path / "l.nii.gz")
    items = list_ct_volumes(root)
    assert items == [{"image": str(root / "vol.nii.gz")}, {"image": str(root)}]
    assert _load(root).shape == _load(root / "vol.nii.gz").shape


def test_a_stray_image_slice_beside_nifti_is_an_input_with_its_own_reason(tmp_path):
    root = tmp_path / "in"
    write_ct_phantom(root / "vol.nii.gz", shape=SHAPE, spacing=SPACING, label_path=tmp_path / "l.nii.gz")
    series = write_ct_phantom_dicom(tmp_path / "s", shape=SHAPE, spacing=SPACING)
    shutil.copy(_slices(series.image)[0], root / "stray.dcm")
    items = list_ct_volumes(root)
    assert items == [{"image": str(root / "vol.nii.gz")}, {"image": str(root)}]
    assert _load(items[0]["image"]).shape == (1, SHAPE[2], SHAPE[1], SHAPE[0])
    with pytest.raises(DataError, match="single image slice"):
        _load(items[1]["image"])


def test_inputs_sharing_a_result_name_are_refused_before_writing(tmp_path):
    root = tmp_path / "in"
    write_ct_phantom(root / "ct1.nii.gz", shape=SHAPE, spacing=SPACING, label_path=tmp_path / "l.nii.gz")
    nib.save(nib.load(os.fspath(root / "ct1.nii.gz")), os.fspath(root / "ct1.nii"))
    write_ct_phantom_dicom(root / "ct1", shape=SHAPE, spacing=SPACING)
    clash = r"in/ct1 and .*in/ct1\.nii would both write ct1; .*in/ct1 and .*in/ct1\.nii\.gz would both write ct1"
    with pytest.raises(DataError, match=clash) as err:
        list_ct_volumes(root)
    assert "Rename or move" in str(err.value)
    assert not (tmp_path / "out").exists()
    # the rule the writer uses
    assert ct_io._stem(str(root / "ct1.nii.gz")) == ct_io._stem(str(root / "ct1")) == "ct1"


def test_a_folder_without_ct_inputs_says_so(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no NIfTI volume"):
        list_ct_volumes(tmp_path)
    with pytest.raises(DataError, match="not found"):
        list_ct_volumes(tmp_path / "nope")


# ----------------------------------------------------------------------------- slice geometry
@pytest.fixture
def series(tmp_path):
    return write_ct_phantom_dicom(tmp_path / "series", shape=SHAPE, spacing=SPACING).image


def test_missing_slice_is_refused_naming_the_gap(series):
    full = _load(series)
    _slices(series)[3].unlink()  # instance 4: z = 2 * (8 - 4) ... one slice of the middle
    with pytest.raises(DataError, match=r"slices at z=.* are 4 mm apart, the others 2 mm \(a slice is missing\)") \
            as err:
        _load(series)
    assert str(series) in str(err.value) and "uneven_spacing='resample'" in str(err.value)
    # resampled on request: the full grid back, the known slices exact, the missing one interpolated
    out = _load(series, uneven_spacing="resample")
    assert "a slice is missing" in out.meta["resampled_slices"]
    assert out.shape == full.shape
    np.testing.assert_allclose(np.asarray(out.affine), np.asarray(full.affine), atol=1e-6)
    k = SHAPE[0] - 4  # RAS slice index of instance 4 (instance 1 is the top slice)
    keep = [i for i in range(SHAPE[0]) if i != k]
    np.testing.assert_array_equal(out.numpy()[..., keep], full.numpy()[..., keep])
    np.testing.assert_allclose(out.numpy()[..., k], (full.numpy()[..., k - 1] + full.numpy()[..., k + 1]) / 2,
                               atol=1e-3)
    assert "resampled_slices" not in full.meta


def test_resampled_volume_gets_a_nifti_result_and_no_dicom_seg(series, tmp_path, caplog):
    _slices(series)[3].unlink()
    d = LoadCTVolumed("image", uneven_spacing="resample")({"image": str(series)})
    d["pred"] = MetaTensor((d["image"] > 0).to(torch.uint8), meta=dict(d["image"].meta))
    with caplog.at_level(logging.WARNING, logger="fewlabel.transforms"):
        files = SaveCTSegmentationd(keys="pred", output_dir=tmp_path / "out")(d)["pred_files"]
    assert [os.path.basename(f) for f in files] == ["series_seg.nii.gz"]
    assert "no DICOM SEG written" in caplog.text
    np.testing.assert_allclose(nib.load(files[0]).affine, np.asarray(d["image"].meta["original_affine"]), atol=1e-4)


def test_uneven_spacing_is_refused_or_resampled(series):
    f = _slices(series)[2]
    ds = pydicom.dcmread(f)
    ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 0.5]
    ds.save_as(f)
    with pytest.raises(DataError, match=r"not evenly spaced: slices at z=.* are 1\.5 mm apart, the others 2 mm"):
        _load(series)
    out = _load(series, uneven_spacing="resample")
    assert out.meta["resampled_slices"].startswith("resampled to an even 2 mm grid")
    np.testing.assert_allclose(float(np.linalg.norm(np.asarray(out.affine)[:3, 2])), 2.0)
    with pytest.raises(ValueError, match="uneven_spacing must be one of"):
        _load(series, uneven_spacing="ignore")


def test_duplicated_slice_is_refused(series):
    src = _slices(series)[4]
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.InstanceNumber = 99
    ds.save_as(series / "IM0099.dcm")
    with pytest.raises(DataError, match=r"IM0005\.dcm and IM0099\.dcm lie at the same slice position"):
        _load(series)


def test_mixed_orientation_and_pixel_size_are_refused_naming_the_file(series):
    f = _slices(series)[5]
    ds = pydicom.dcmread(f)
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.8, 0.6]
    ds.save_as(f)
    with pytest.raises(DataError, match=r"different orientations .*IM0006\.dcm"):
        _load(series)
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.5, 2.0]
    ds.save_as(f)
    with pytest.raises(DataError, match=r"IM0006\.dcm has PixelSpacing \[1\.5, 2\.0\]"):
        _load(series)
    del ds.PixelSpacing
    ds.save_as(f)
    with pytest.raises(DataError, match=r"DICOM file .*IM0006\.dcm has no PixelSpacing"):
        _load(series)
    ds.PixelSpacing = [0.0, 1.0]
    ds.save_as(f)
    with pytest.raises(DataError, match=r"IM0006\.dcm has PixelSpacing \[0\.0, 1\.0\]: pixel sizes must be positive"):
        _load(series)


# ----------------------------------------------------------------------------- dimensionality
def test_4d_and_2d_nifti_are_refused_at_loading_naming_file_and_shape(tmp_path):
    vol = write_ct_phantom(tmp_path / "ct.nii.gz", shape=SHAPE, spacing=SPACING)
    img = nib.load(os.fspath(vol.image))
    data = np.asanyarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.stack([data, data], -1), img.affine), os.fspath(tmp_path / "ct4d.nii.gz"))
    with pytest.raises(DataError, match=r"ct4d\.nii\.gz holds 2 volumes \(shape \(12, 16, 8, 2\)"):
        _load(tmp_path / "ct4d.nii.gz")
    with pytest.raises(DataError, match=r"ct4d\.nii\.gz holds 2 volumes"):
        LoadCTVolumed("image")({"image": str(tmp_path / "ct4d.nii.gz")})
    # training: the slice index refuses it the same way instead of comparing sizes
    with pytest.raises(DataError, match=r"ct4d\.nii\.gz holds 2 volumes"):
        build_slice_index([{"image": str(tmp_path / "ct4d.nii.gz"), "label": str(vol.label)}])
    # a 4D file of one volume is that volume
    nib.save(nib.Nifti1Image(data[..., None], img.affine), os.fspath(tmp_path / "one.nii.gz"))
    np.testing.assert_array_equal(_load(tmp_path / "one.nii.gz").numpy(), _load(vol.image).numpy())
    nib.save(nib.Nifti1Image(data[..., 0], img.affine), os.fspath(tmp_path / "flat.nii"))
    with pytest.raises(DataError, match=r"flat\.nii is 2D \(shape \(12, 16\)\)"):
        _load(tmp_path / "flat.nii")


# ----------------------------------------------------------------------------- whole writes
def test_a_failing_dicom_seg_leaves_no_result_file(series, tmp_path, monkeypatch):
    d = LoadCTVolumed("image")({"image": str(series)})
    d["pred"] = MetaTensor((d["image"] > 0).to(torch.uint8), meta=dict(d["image"].meta))
    out = tmp_path / "out"

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(segmentation_writers, "save_dicom_seg", broken)  # the writer SaveCTSegmentationd calls
    with pytest.raises(RuntimeError, match="disk full"):
        SaveCTSegmentationd(keys="pred", output_dir=out)(d)
    assert list(out.iterdir()) == []  # no lone NIfTI, no temporary file


def test_a_writer_stopped_midway_leaves_no_file(series, tmp_path, monkeypatch):
    d = LoadCTVolumed("image")({"image": str(series)})
    pred = MetaTensor((d["image"] > 0).to(torch.uint8), meta=dict(d["image"].meta))
    real_save = nib.save

    def half(img, path):
        real_save(img, path)
        with open(path, "r+b") as fh:
            fh.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(nib, "save", half)
    with pytest.raises(KeyboardInterrupt):
        ct_io.save_nifti_segmentation(pred, pred, tmp_path / "out" / "x_seg.nii.gz")
    assert list((tmp_path / "out").iterdir()) == []
    monkeypatch.setattr(nib, "save", real_save)
    written = ct_io.save_nifti_segmentation(pred, pred, tmp_path / "out" / "x_seg.nii.gz")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x_seg.nii.gz"]
    assert TEMP_MARK not in written.name and nib.load(written).shape == (SHAPE[2], SHAPE[1], SHAPE[0])


# ----------------------------------------------------------------------------- the bundle, end to end
def test_bundle_inference_gives_every_input_of_a_mixed_folder_its_own_result(tmp_path):
    """NIfTI, a DICOM sub-folder and the loose slices of two series side by side: one result set each, on each
    input's own grid (the bundle's inference config, random weights)."""
    from monai.bundle import ConfigParser, run

    from testlib import REPO

    bundle = REPO / "bundles" / "polycl_liver_ct_segmentation"
    smoke = json.loads((bundle / "configs" / "smoke.json").read_text())
    overrides = {k: v for k, v in smoke.items() if k in ("image_size", "channels", "encoder_name")}
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update(overrides)
    ckpt = tmp_path / "model.pt"
    torch.save({"model": parser.get_parsed_content("network_def", instantiate=True).state_dict()}, ckpt)

    root = tmp_path / "in"
    write_ct_phantom(root / "vol.nii.gz", shape=SHAPE, spacing=SPACING, label_path=tmp_path / "l.nii.gz")
    write_ct_phantom_dicom(root / "sub", shape=SHAPE, spacing=SPACING, seed=2)
    for seed, number in ((0, 1), (1, 2)):
        write_ct_phantom_dicom(root, shape=SHAPE, spacing=SPACING, seed=seed, series_number=number)
    items = list_ct_volumes(root)
    assert len(items) == 4
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(config_file=str(bundle / "configs" / "inference.json"), dataset_dir=str(root), output_dir=str(out),
            ckpt_path=str(ckpt), **overrides)
    stems = [ct_output_stem(i["image"]) for i in items]
    expected = sorted([f"{s}_seg.nii.gz" for s in stems] + [f"{s}_seg.dcm" for s in stems if s != "vol"])
    assert sorted(p.name for p in out.iterdir()) == sorted(expected + ["failures.json"])
    report = json.loads((out / "failures.json").read_text())
    assert (report["inputs"], report["results"], report["failed"]) == (4, 4, [])
    for item, stem in zip(items, stems):
        source = _load(item["image"], axcodes=None)
        seg = nib.load(os.fspath(out / f"{stem}_seg.nii.gz"))
        assert seg.shape == tuple(source.shape[1:])
        np.testing.assert_allclose(seg.affine, np.asarray(source.meta["original_affine"]), atol=1e-4)
