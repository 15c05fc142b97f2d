"""CT outputs: NIfTI segmentations in the source geometry, DICOM SEG of a DICOM series, the save transforms."""

from __future__ import annotations

import warnings

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor

from fewlabel.data.ct import load_ct_volume, make_ct_phantom, write_ct_phantom, write_ct_phantom_dicom
from fewlabel.errors import DataError
from fewlabel.transforms import (
    LoadCTVolumed,
    SaveCTSegmentation,
    SaveCTSegmentationd,
    restore_original_orientation,
    save_dicom_seg,
    save_nifti_segmentation,
)

SHAPE = (12, 24, 20)  # (Z, Y, X): slices, rows, columns -- non-square to catch row/column mix-ups
SPACING = (2.5, 3.0, 3.5)


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    """The same phantom as NIfTI (with its label NIfTI) and as a DICOM series, loaded in RAS."""
    root = tmp_path_factory.mktemp("ct_out")
    nii = write_ct_phantom(root / "scan.nii.gz", shape=SHAPE, spacing=SPACING)
    dcm = write_ct_phantom_dicom(root / "series", shape=SHAPE, spacing=SPACING)
    _, label_zyx, organ = make_ct_phantom(SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        label = load_ct_volume(nii.label, "RAS", dtype=None)  # (1, X, Y, Z) uint8, RAS
        image = load_ct_volume(nii.image, "RAS")
        series = load_ct_volume(dcm.image, "RAS")
    return dict(root=root, nii=nii, dcm=dcm, label_zyx=label_zyx, organ=organ, label=label, image=image,
                series=series)


def _on(reference: MetaTensor, array: torch.Tensor) -> MetaTensor:
    """``array`` as a prediction carrying ``reference``'s meta (what a bundle's inference gives)."""
    return MetaTensor(torch.as_tensor(array).clone(), meta=dict(reference.meta))


def _source_slices(folder) -> dict[str, int]:
    """SOPInstanceUID -> axial slice index ``k`` of the phantom (0 most inferior), from ImagePositionPatient."""
    out = {}
    z0 = -(SHAPE[0] - 1) / 2 * SPACING[0]
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out[ds.SOPInstanceUID] = int(round((float(ds.ImagePositionPatient[2]) - z0) / SPACING[0]))
    return out


def _frames_by_slice(seg) -> list[tuple[str, np.ndarray]]:
    """``(referenced SOPInstanceUID, frame pixels)`` for every frame of the SEG."""
    pixels = seg.pixel_array
    pixels = pixels[None] if pixels.ndim == 2 else pixels
    return [(fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID, pixels[i])
            for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence)]


# ----------------------------------------------------------------------------- orientation
def test_restore_original_orientation_gives_the_stored_voxels_and_affine(ct):
    restored = restore_original_orientation(ct["label"])
    stored = nib.load(ct["nii"].label)
    assert tuple(restored.shape) == (1, *stored.shape)
    np.testing.assert_allclose(np.asarray(restored.affine), stored.affine, atol=1e-4)
    np.testing.assert_array_equal(restored[0].numpy(), np.asarray(stored.dataobj))
    # DICOM: the file's voxel order is InstanceNumber order (head first), not the RAS one
    series = ct["series"]
    restored = restore_original_orientation(ct["label"].as_tensor().numpy(), reference=series)
    np.testing.assert_allclose(np.asarray(restored.affine), series.meta["original_affine"], atol=1e-4)
    np.testing.assert_array_equal(restored[0].numpy(), ct["label_zyx"][::-1].transpose(2, 1, 0))


def test_restore_rejects_resampled_masks_and_plain_arrays(ct):
    label = ct["label"]
    with pytest.raises(ValueError, match="meta"):
        restore_original_orientation(label.as_tensor())
    moved = _on(label, label.as_tensor())
    moved.affine = moved.affine @ torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="resampled"):
        restore_original_orientation(moved)


# ----------------------------------------------------------------------------- NIfTI
def test_nifti_round_trip_from_a_nifti_source(ct, tmp_path):
    out = save_nifti_segmentation(ct["label"], ct["image"], tmp_path / "a" / "scan_seg.nii.gz")
    written, source = nib.load(out), nib.load(ct["nii"].image)
    assert written.shape == source.shape
    np.testing.assert_array_equal(written.affine, source.affine)
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(nib.load(ct["nii"].label).dataobj))


def test_nifti_accepts_bool_numpy_and_3d_masks(ct, tmp_path):
    mask = ct["label"].as_tensor()[0].numpy().astype(bool)  # (X, Y, Z), bool, no meta
    out = save_nifti_segmentation(mask, ct["image"], tmp_path / "b.nii")
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), np.asarray(nib.load(ct["nii"].label).dataobj))
    classes = ct["label"].as_tensor().float() * 2  # class indices as floats
    out = save_nifti_segmentation(classes, ct["image"].meta, tmp_path / "c.nii.gz", dtype=np.int16)
    assert set(np.unique(np.asarray(nib.load(out).dataobj)).tolist()) == {0, 2}


def test_nifti_from_a_dicom_source_has_the_series_affine(ct, tmp_path):
    series = ct["series"]
    out = save_nifti_segmentation(_on(series, ct["label"].as_tensor()), series, tmp_path / "series_seg.nii.gz")
    written = nib.load(out)
    np.testing.assert_allclose(written.affine, series.meta["original_affine"], atol=1e-4)
    assert written.shape == tuple(int(s) for s in series.meta["spatial_shape"])
    back = load_ct_volume(out, "RAS", dtype=None)
    np.testing.assert_array_equal(back.numpy(), ct["label"].numpy())
    np.testing.assert_allclose(np.asarray(back.affine), np.asarray(series.affine), atol=1e-4)


def test_nifti_with_permuted_qform_only_source(ct, tmp_path):
    """A file stored (Z, X, Y) with only a qform: the segmentation keeps that layout and header."""
    stored = np.asarray(nib.load(ct["nii"].image).dataobj).transpose(2, 0, 1)
    base = nib.load(ct["nii"].image).affine
    affine = base[:, [2, 0, 1, 3]]
    img = nib.Nifti1Image(stored, None)
    img.set_qform(affine, code=1)
    img.set_sform(None, code=0)
    nib.save(img, tmp_path / "perm.nii.gz")
    loaded = load_ct_volume(tmp_path / "perm.nii.gz", "RAS")
    assert loaded.shape == ct["label"].shape
    out = save_nifti_segmentation(ct["label"], loaded, tmp_path / "perm_seg.nii.gz")
    written, source = nib.load(out), nib.load(tmp_path / "perm.nii.gz")
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
    assert int(written.header["sform_code"]) == 0 and int(written.header["qform_code"]) == 1
    label = np.asarray(nib.load(ct["nii"].label).dataobj).transpose(2, 0, 1)
    np.testing.assert_array_equal(np.asarray(written.dataobj), label)


def test_nifti_size_mismatch_names_both_shapes_and_the_file(ct, tmp_path):
    small = ct["label"].as_tensor()[:, :-1]
    with pytest.raises(ValueError, match=r"\(19, 24, 12\).*scan\.nii\.gz.*\(20, 24, 12\)"):
        save_nifti_segmentation(small, ct["image"], tmp_path / "x.nii.gz")
    with pytest.raises(ValueError, match="non-integer"):
        save_nifti_segmentation(ct["label"].as_tensor() * 0.5, ct["image"], tmp_path / "x.nii.gz")
    assert not (tmp_path / "x.nii.gz").exists()


# ----------------------------------------------------------------------------- DICOM SEG
def test_dicom_seg_references_the_series_and_matches_the_label(ct, tmp_path):
    series, folder = ct["series"], ct["dcm"].image
    out = save_dicom_seg(_on(series, ct["label"].as_tensor()), folder, tmp_path / "seg.dcm")
    seg = hd.seg.segread(out)
    src = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == src.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    assert seg.SeriesInstanceUID != src.SeriesInstanceUID
    assert len(seg.SegmentSequence) == 1
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "Liver" and segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Liver"
    assert (seg.Rows, seg.Columns) == (SHAPE[1], SHAPE[2])
    slices = _source_slices(folder)
    frames = _frames_by_slice(seg)
    seen = set()
    for uid, frame in frames:
        k = slices[uid]
        seen.add(k)
        np.testing.assert_array_equal(frame, ct["label_zyx"][k], err_msg=f"frame of slice {k}")
    assert seen == set(ct["organ"])  # empty slices are omitted by default
    for k in set(range(SHAPE[0])) - seen:
        assert not ct["label_zyx"][k].any()


def test_dicom_seg_default_reference_and_all_frames(ct, tmp_path):
    """Without ``reference`` the series is loaded again; ``omit_empty_frames=False`` keeps every slice."""
    out = save_dicom_seg(ct["label"].as_tensor()[0].numpy(), ct["dcm"].image, tmp_path / "all.dcm",
                         omit_empty_frames=False, segment_label="Liver")
    seg = hd.seg.segread(out)
    slices = _source_slices(ct["dcm"].image)
    frames = _frames_by_slice(seg)
    assert sorted(slices[uid] for uid, _ in frames) == list(range(SHAPE[0]))
    for uid, frame in frames:
        np.testing.assert_array_equal(frame, ct["label_zyx"][slices[uid]])


def test_empty_mask_writes_every_frame_empty(ct, tmp_path):
    series = ct["series"]
    empty = torch.zeros(series.shape, dtype=torch.bool)
    out = save_dicom_seg(empty, ct["dcm"].image, tmp_path / "empty.dcm", reference=series)
    seg = hd.seg.segread(out)
    assert int(seg.NumberOfFrames) == SHAPE[0]
    assert len(seg.SegmentSequence) == 1 and seg.SegmentSequence[0].SegmentLabel == "Liver"
    assert not np.asarray(seg.pixel_array).any()
    assert {uid for uid, _ in _frames_by_slice(seg)} == set(_source_slices(ct["dcm"].image))
    nii = save_nifti_segmentation(empty, series, tmp_path / "empty.nii.gz")
    assert not np.asarray(nib.load(nii).dataobj).any()


def test_dicom_seg_bad_inputs_name_the_folder(ct, tmp_path):
    series, folder = ct["series"], ct["dcm"].image
    with pytest.raises(ValueError, match=rf"\(20, 24, 11\).*{folder.name}.*\(20, 24, 12\)"):
        save_dicom_seg(ct["label"].as_tensor()[..., :-1], folder, tmp_path / "x.dcm", reference=series)
    with pytest.raises(ValueError, match=rf"\(20, 24, 11\).*{folder.name}.*20 columns x 24 rows x 12 slices"):
        save_dicom_seg(ct["label"].as_tensor()[..., :-1], folder, tmp_path / "x.dcm", reference=series.meta)
    with pytest.raises(ValueError, match=r"binary.*\[0, 2\]"):
        save_dicom_seg(ct["label"].as_tensor() * 2, folder, tmp_path / "x.dcm", reference=series)
    no_dicom = tmp_path / "not_dicom"
    no_dicom.mkdir()
    (no_dicom / "README.txt").write_text("no images here")
    with pytest.raises(DataError, match="not_dicom"):
        save_dicom_seg(ct["label"].as_tensor(), no_dicom, tmp_path / "x.dcm", reference=series)
    assert not (tmp_path / "x.dcm").exists()


# ----------------------------------------------------------------------------- transforms
def test_save_transforms_write_the_expected_files(ct, tmp_path):
    loader = LoadCTVolumed(keys="image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = [loader({"image": ct["nii"].image}), loader({"image": ct["dcm"].image})]
    saver = SaveCTSegmentationd(keys="pred", output_dir=tmp_path / "out")
    for d in items:
        d["pred"] = _on(d["image"], ct["label"].as_tensor())
        out = saver(d)
        assert out["pred"] is d["pred"]
        assert out["pred"].meta["saved_files"] == out["pred_files"]
    nii_files, dcm_files = (d["pred_files"] for d in (saver(items[0]), saver(items[1])))
    assert [p.split("/")[-1] for p in nii_files] == ["scan_seg.nii.gz"]
    assert [p.split("/")[-1] for p in dcm_files] == ["series_seg.nii.gz", "series_seg.dcm"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scan_seg.nii.gz", "series_seg.dcm",
                                                                   "series_seg.nii.gz"]
    seg = hd.seg.segread(dcm_files[1])
    assert seg.SegmentSequence[0].SegmentLabel == "Liver"
    np.testing.assert_array_equal(nib.load(nii_files[0]).affine, nib.load(ct["nii"].image).affine)

    # array transform; dicom_seg=False never writes a SEG; a custom suffix
    pred = _on(ct["series"], ct["label"].as_tensor())
    returned = SaveCTSegmentation(tmp_path / "arr", suffix="_liver", dicom_seg=False)(pred)
    assert returned is pred
    assert [p.split("/")[-1] for p in pred.meta["saved_files"]] == ["series_liver.nii.gz"]
    # reference_key: the geometry comes from the image when the prediction has no meta
    d = {"image": items[1]["image"], "pred": ct["label"].as_tensor()}
    files = SaveCTSegmentationd(keys="pred", output_dir=tmp_path / "ref", reference_key="image")(d)["pred_files"]
    assert [p.split("/")[-1] for p in files] == ["series_seg.nii.gz", "series_seg.dcm"]


def test_dicom_seg_true_on_a_nifti_source_names_the_file(ct, tmp_path):
    pred = _on(ct["image"], ct["label"].as_tensor())
    with pytest.raises(ValueError, match=r"scan\.nii\.gz"):
        SaveCTSegmentation(tmp_path / "o", dicom_seg=True)(pred)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    with pytest.raises(ValueError, match="dicom_seg"):
        SaveCTSegmentation(tmp_path / "o", dicom_seg="yes")
