"""MONAI Deploy apps (fewlabel.deploy): DICOM CT study -> DICOM SEG + NIfTI; frames / video -> masks, overlays.

The apps run as users run them (``python -m fewlabel.deploy.<app>``, with ``-i/-o/-m`` or the
Holoscan variables) on bundles with random weights, and their outputs are compared with what
``monai.bundle run`` of the same bundle's ``inference.json`` writes for the same input.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import ckpt_export
from monai.data import MetaTensor

pytest.importorskip("monai.deploy.core", reason="needs the MONAI Deploy SDK: tests/deploy/test_deploy_env.py runs "
                    "this file in the deploy environment (fewlabel.deploy.env)")

from monai.deploy.core import Fragment  # noqa: E402
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator  # noqa: E402
from monai.deploy.operators.monai_bundle_inference_operator import MonaiBundleInferenceOperator  # noqa: E402

from testlib import BUNDLES, REPO, truncate_file, write_png  # noqa: E402
from testlib import bundle_with_weights as _bundle_with_weights  # noqa: E402
from fewlabel.bundle import resolve_datalist  # noqa: E402
from fewlabel.data import load_datalist  # noqa: E402
from fewlabel.data.ct import as_ct_volume, load_ct_volume, write_ct_phantom_dicom  # noqa: E402
from fewlabel.demo import write_demo_video  # noqa: E402
from fewlabel.deploy.operators import (  # noqa: E402
    CTSeriesSelectorOperator,
    CTSeriesToVolumeOperator,
    FrameSourceOperator,
    bundle_input_kind,
    bundle_metadata,
)
from fewlabel.errors import DataError  # noqa: E402
from fewlabel.transforms import LoadCTVolume, LoadImage2D, Segment, save_dicom_seg, segments_from_metadata  # noqa: E402
from fewlabel.transforms.io import read_image_2d  # noqa: E402

CT_BUNDLE = REPO / "bundles" / "polycl_liver_ct_segmentation"
BUNDLES_2D = [b for b in BUNDLES if b != CT_BUNDLE]
SHAPE = (12, 32, 40)  # phantom (slices, rows, columns)


# ----------------------------------------------------------------------------- helpers
def _export(bundle: Path, path: Path) -> Path:
    """The bundle's TorchScript with metadata and inference config embedded (``ckpt_export``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt_export(net_id="network_def", filepath=os.fspath(path), ckpt_file=os.fspath(bundle / "models" / "model.pt"),
                meta_file=os.fspath(bundle / "configs" / "metadata.json"),
                config_file=os.fspath(bundle / "configs" / "inference.json"), bundle_root=os.fspath(bundle),
                use_trace=bundle.name.startswith("sam_mining"))
    return path


def _run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=900)


def _app(app: str, cwd: Path, i: Path | None = None, o: Path | None = None, m: Path | None = None,
         env: dict | None = None) -> subprocess.CompletedProcess:
    args = ["-m", f"fewlabel.deploy.{app}"]
    for flag, value in (("-i", i), ("-o", o), ("-m", m)):
        if value is not None:
            args += [flag, os.fspath(value)]
    return _run(args, cwd, env)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def _bundle_inference(bundle: Path, dataset_dir: Path, out: Path, cwd: Path) -> None:
    """What ``monai.bundle run`` of the bundle's inference.json writes for ``dataset_dir``."""
    _ok(_run(["-m", "monai.bundle", "run", "--config_file", os.fspath(bundle / "configs" / "inference.json"),
              "--bundle_root", os.fspath(bundle), "--dataset_dir", os.fspath(dataset_dir),
              "--output_dir", os.fspath(out)], cwd))


def _seg_frames_all(seg) -> list[tuple[str, np.ndarray]]:
    """``(source SOPInstanceUID, pixels)`` of every frame of a DICOM SEG."""
    pixels = np.asarray(seg.pixel_array).reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    return [(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID, pixels[k])
            for k, item in enumerate(seg.PerFrameFunctionalGroupsSequence)]


def _seg_frames(path: Path) -> dict[str, np.ndarray]:
    """DICOM SEG frames keyed by the SOPInstanceUID of their source image (one segment)."""
    return dict(_seg_frames_all(hd.seg.segread(path)))


def _world_equal(a: Path, b: Path) -> np.ndarray:
    """Label array of NIfTI ``a``; asserts ``b`` holds the same labels on the same grid (in any voxel order)."""
    ia, ib = nib.load(a), nib.load(b)
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(ib.affine),
                                           nib.orientations.io_orientation(ia.affine))
    np.testing.assert_allclose(ib.affine @ nib.orientations.inv_ornt_aff(ornt, ib.shape), ia.affine, atol=1e-4)
    xa = np.asarray(ia.dataobj)
    np.testing.assert_array_equal(nib.orientations.apply_orientation(np.asarray(ib.dataobj), ornt), xa)
    return xa


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    """PolyCL bundle with random weights (folder and TorchScript), a CT study with a scout and an MR, its reference."""
    root = tmp_path_factory.mktemp("deploy_ct")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWLABEL_CACHE", os.fspath(tmp_path_factory.getbasetemp() / "fewlabel-cache"))
        bundle = _bundle_with_weights(CT_BUNDLE.name, root / "bundle")
        ts = _export(bundle, root / "export" / "polycl.ts")
        study = root / "study"
        write_ct_phantom_dicom(study / "ct", shape=SHAPE)
        write_ct_phantom_dicom(study / "scout", shape=(8, SHAPE[1], SHAPE[2]), series_uid="1.2.826.0.1.3680043.8.498.7",
                               series_number=2)  # same study, fewer images: must not be chosen
        (study / "mr").mkdir()
        shutil.copy(pydicom.data.get_testdata_file("MR_small.dcm"), study / "mr")
        shutil.copytree(study / "ct", root / "ref_in" / "ct")
        _bundle_inference(bundle, root / "ref_in", root / "ref", root)
        yield {"root": root, "bundle": bundle, "ts": ts, "study": study, "ref": root / "ref",
               "series": pydicom.dcmread(next((study / "ct").glob("*.dcm")), stop_before_pixels=True)}


# ----------------------------------------------------------------------------- CT app
@pytest.mark.slow
def test_ct_app_writes_the_bundles_segmentation_as_dicom_seg_and_nifti(ct, tmp_path):
    """``-i STUDY -o OUT -m BUNDLE``: the CT series (not the scout, not the MR) is segmented exactly as
    ``monai.bundle run`` segments it; the SEG references that series, has one frame per slice with
    liver, and the bundle's segment description and algorithm identification."""
    out = tmp_path / "out"
    _ok(_app("ct_app", tmp_path, ct["study"], out, ct["bundle"]))
    uid = ct["series"].SeriesInstanceUID
    assert sorted(p.name for p in out.iterdir()) == [f"{uid}_seg.dcm", f"{uid}_seg.nii.gz", "failures.json"]
    assert json.loads((out / "failures.json").read_text()) == {"inputs": 1, "results": 1, "failed": []}

    label = _world_equal(ct["ref"] / "ct_seg.nii.gz", out / f"{uid}_seg.nii.gz")
    assert 0 < label.sum() < label.size  # a real prediction, neither empty nor full

    seg = hd.seg.segread(out / f"{uid}_seg.dcm")
    meta = json.loads((CT_BUNDLE / "configs" / "metadata.json").read_text())
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == ct["series"].StudyInstanceUID
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [uid]
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "Liver" and segment.SegmentNumber == 1
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (meta["name"], meta["version"])
    frames, reference = _seg_frames(out / f"{uid}_seg.dcm"), _seg_frames(ct["ref"] / "ct_seg.dcm")
    slices_with_liver = int((label.reshape(-1, label.shape[-1]).sum(0) > 0).sum())
    assert int(seg.NumberOfFrames) == len(frames) == slices_with_liver
    assert frames.keys() == reference.keys()
    for key in frames:
        np.testing.assert_array_equal(frames[key], reference[key])


@pytest.mark.slow
def test_ct_app_torchscript_through_holoscan_variables(ct, tmp_path):
    """The exported TorchScript (configs embedded) alone in a folder, given as that folder (a MAP's models
    folder) by HOLOSCAN_* variables, through the entry point that picks the app from the model."""
    out = tmp_path / "out"
    env = {"HOLOSCAN_INPUT_PATH": os.fspath(ct["study"]), "HOLOSCAN_OUTPUT_PATH": os.fspath(out),
           "HOLOSCAN_MODEL_PATH": os.fspath(ct["ts"].parent)}
    assert [p.name for p in ct["ts"].parent.iterdir()] == [ct["ts"].name]
    assert bundle_metadata(ct["ts"]) == json.loads((CT_BUNDLE / "configs" / "metadata.json").read_text())
    assert bundle_input_kind(ct["ts"]) == "volume"
    _ok(_run(["-m", "fewlabel.deploy"], tmp_path, env))
    uid = ct["series"].SeriesInstanceUID
    _world_equal(ct["ref"] / "ct_seg.nii.gz", out / f"{uid}_seg.nii.gz")
    assert _seg_frames(out / f"{uid}_seg.dcm").keys() == _seg_frames(ct["ref"] / "ct_seg.dcm").keys()


@pytest.mark.slow
def test_ct_app_on_pydicoms_single_slice_ct(ct, tmp_path):
    """pydicom's CT_small.dcm (one 128x128 slice): a one-frame SEG referencing it, a NIfTI on its geometry."""
    source = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    (tmp_path / "in").mkdir()
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), tmp_path / "in")
    out = tmp_path / "out"
    _ok(_app("ct_app", tmp_path, tmp_path / "in", out, ct["ts"]))
    seg = hd.seg.segread(out / f"{source.SeriesInstanceUID}_seg.dcm")
    assert int(seg.NumberOfFrames) == 1 and (seg.Rows, seg.Columns) == (128, 128)
    assert list(_seg_frames(out / f"{source.SeriesInstanceUID}_seg.dcm")) == [source.SOPInstanceUID]
    nii = nib.load(out / f"{source.SeriesInstanceUID}_seg.nii.gz")
    assert nii.shape == (128, 128, 1)
    ipp = np.asarray(source.ImagePositionPatient, dtype=float)
    np.testing.assert_allclose(nii.affine @ [0, 0, 0, 1], [-ipp[0], -ipp[1], ipp[2], 1], atol=1e-4)  # RAS
    np.testing.assert_allclose(np.abs(np.diag(nii.affine))[:3], [*(float(v) for v in source.PixelSpacing),
                                                                 float(source.SliceThickness)], atol=1e-5)


@pytest.mark.slow
def test_apps_fail_clearly_on_wrong_input_or_model(ct, tmp_path):
    mr_only = tmp_path / "mr_only"
    shutil.copytree(ct["study"] / "mr", mr_only)
    proc = _app("ct_app", tmp_path, mr_only, tmp_path / "o1", ct["bundle"])
    assert proc.returncode != 0
    assert "no CT series in" in proc.stderr and "mr_only" in proc.stderr and "MR series 1 (1 image)" in proc.stderr
    not_bundle = tmp_path / "weights"
    not_bundle.mkdir()
    proc = _app("ct_app", tmp_path, ct["study"], tmp_path / "o2", not_bundle)
    assert proc.returncode != 0 and "not a bundle (no configs/metadata.json) and holds no bundle" in proc.stderr
    proc = _app("frames_app", tmp_path, ct["study"], tmp_path / "o3", ct["bundle"])
    assert proc.returncode != 0 and "is not a 2D bundle" in proc.stderr and "ct_app" in proc.stderr
    slippa = REPO / "bundles" / "slippa_liver_landmark_segmentation"
    proc = _app("ct_app", tmp_path, ct["study"], tmp_path / "o4", slippa)
    assert proc.returncode != 0 and "is not a CT bundle" in proc.stderr and "frames_app" in proc.stderr


# ----------------------------------------------------------------------------- 2D app
def _demo_frames(bundle: Path, n: int) -> list[Path]:
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    items = load_datalist(resolve_datalist("", demo=cfg["demo_dataset"], demo_kwargs=cfg["demo_kwargs"]), "testing")
    return [Path(it["image"]) for it in items[:n]]


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES_2D, ids=lambda b: b.name)
def test_frames_app_writes_what_the_bundle_writes(bundle, tmp_path):
    """Every 2D bundle: a folder of demo frames gives byte-identical masks, overlays (and SLiPPA point
    lists) to ``monai.bundle run``, and results.json lists them per frame."""
    model = _bundle_with_weights(bundle.name, tmp_path / "bundle")
    frames = tmp_path / "frames"
    frames.mkdir()
    for f in _demo_frames(bundle, 2):
        shutil.copy(f, frames / f.name)
    out, ref = tmp_path / "out", tmp_path / "ref"
    _ok(_app("frames_app", tmp_path, frames, out, model))
    _bundle_inference(model, frames, ref, tmp_path)
    written = sorted(p.name for p in ref.iterdir())
    assert written and sorted(p.name for p in out.iterdir() if p.name != "results.json") == written
    for name in written:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    results = json.loads((out / "results.json").read_text())
    assert results["bundle"] == json.loads((bundle / "configs" / "metadata.json").read_text())["name"]
    assert [Path(r["frame"]).name for r in results["frames"]] == sorted(p.name for p in frames.iterdir())
    for r in results["frames"]:
        stem = Path(r["frame"]).stem
        assert r["mask"] == f"{stem}_mask.png" and r["overlay"] == f"{stem}_overlay.png"
        assert read_png_shape(out / r["mask"]) == read_png_shape(frames / Path(r["frame"]).name)
        is_slippa = bundle.name.startswith("slippa")
        assert (r["landmarks"] == f"{stem}_landmarks.json") if is_slippa else r["landmarks"] is None
        if is_slippa:
            record = json.loads((out / r["landmarks"]).read_text())
            assert record == json.loads((ref / r["landmarks"]).read_text())


@pytest.mark.slow
def test_frames_app_lists_an_unreadable_frame_and_segments_the_others(tmp_path):
    """A truncated frame between good ones: the good ones get masks, the broken one is in failures.json,
    and the app exits 1 with one line naming it."""
    model = _bundle_with_weights("medsass_binary_segmentation", tmp_path / "bundle")
    frames = tmp_path / "frames"
    rng = np.random.default_rng(0)
    for stem in ("a_good", "b_broken", "c_good"):
        write_png(frames / f"{stem}.png", rng.integers(0, 255, (40, 48, 3)).astype(np.uint8))
    broken = os.fspath(truncate_file(frames / "b_broken.png"))
    out = tmp_path / "out"
    proc = _app("frames_app", tmp_path, frames, out, model)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-6000:]
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("fewlabel: error: 1 of 3 inputs got no result") and broken in last, proc.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*_mask.png")) == ["a_good_mask.png", "c_good_mask.png"]
    failures = json.loads((out / "failures.json").read_text())
    assert failures["inputs"] == 3 and failures["results"] == 2 and [f["input"] for f in failures["failed"]] == [broken]
    assert [Path(r["frame"]).stem for r in json.loads((out / "results.json").read_text())["frames"]] == \
        ["a_good", "c_good"]


def read_png_shape(path: Path) -> tuple[int, int]:
    return read_image_2d(path).shape[:2]


@pytest.mark.slow
def test_frames_app_on_a_video_keeps_every_nth_frame(tmp_path):
    """A short demo video (SLiPPA): frames written beside the outputs, FEWLABEL_FRAME_EVERY=2 keeps 0, 2, 4."""
    bundle = REPO / "bundles" / "slippa_liver_landmark_segmentation"
    model = _bundle_with_weights(bundle.name, tmp_path / "bundle")
    video = write_demo_video(_demo_frames(bundle, 5), tmp_path / "clip.mp4", fps=5.0)
    out = tmp_path / "out"  # through the MAP's entry point (deploy/map/__main__.py), which picks the frames app
    _ok(_run([os.fspath(REPO / "deploy" / "map"), "-i", os.fspath(video), "-o", os.fspath(out), "-m", os.fspath(model)],
             tmp_path, env={"FEWLABEL_FRAME_EVERY": "2"}))
    kept = [f"clip_{k:06d}" for k in (0, 2, 4)]
    assert sorted(p.stem for p in (out / "frames").iterdir()) == kept
    results = json.loads((out / "results.json").read_text())
    assert [Path(r["frame"]).stem for r in results["frames"]] == kept
    for stem in kept:
        for suffix in ("_mask.png", "_overlay.png", "_landmarks.json"):
            assert (out / f"{stem}{suffix}").is_file()
        assert read_png_shape(out / f"{stem}_mask.png") == read_png_shape(out / "frames" / f"{stem}.png")


# ----------------------------------------------------------------------------- pieces, in process
def _sdk_volume(folder: Path) -> MetaTensor:
    """What BundleInferenceOperator hands the bundle's loader for the DICOM series in ``folder``."""
    frag = Fragment()
    studies = DICOMDataLoaderOperator(frag, input_folder=folder, name="loader").load_data_to_studies(folder)
    series = CTSeriesSelectorOperator(frag, name="selector").filter(None, studies)
    image = CTSeriesToVolumeOperator(frag, name="volume").convert_to_image(series)
    array, meta = MonaiBundleInferenceOperator._convert_from_image_dicom_source(None, image)
    return MetaTensor.ensure_torch_and_prune_meta(torch.as_tensor(array), meta)


def test_loader_gives_the_same_volume_from_the_sdk_as_from_the_files(tmp_path):
    folder = write_ct_phantom_dicom(tmp_path / "ct", shape=SHAPE).image
    from_files, from_sdk = load_ct_volume(folder), LoadCTVolume()(_sdk_volume(folder))
    assert from_sdk.shape == from_files.shape == (1, SHAPE[2], SHAPE[1], SHAPE[0])
    np.testing.assert_array_equal(from_sdk.numpy(), from_files.numpy())
    np.testing.assert_allclose(np.asarray(from_sdk.affine), np.asarray(from_files.affine), atol=1e-4)


def test_sdk_volume_of_a_series_with_a_missing_or_repeated_slice_is_refused(tmp_path):
    """The SDK would stack such a series with the spacing of its first two slices: a volume on a wrong grid."""
    folder = write_ct_phantom_dicom(tmp_path / "ct", shape=(8, 8, 10)).image
    files = sorted(folder.glob("IM*.dcm"))
    files[3].unlink()
    with pytest.raises(DataError, match=r"DICOM series .* is not evenly spaced: slices at z=.* are 5 mm apart, "
                                        r"the others 2\.5 mm \(a slice is missing\)"):
        _sdk_volume(folder)
    # slice 6 moved onto slice 5's position: the SDK's loader keeps one of the two, leaving a gap
    folder = write_ct_phantom_dicom(tmp_path / "dup", shape=(8, 8, 10)).image
    ds = pydicom.dcmread(folder / "IM0006.dcm")
    ds.ImagePositionPatient = pydicom.dcmread(folder / "IM0005.dcm").ImagePositionPatient
    ds.save_as(folder / "IM0006.dcm")
    with pytest.raises(DataError, match=r"not evenly spaced: slices at z=.* \(IM0007\.dcm, IM000[56]\.dcm\) are 5 mm"):
        _sdk_volume(folder)


def test_ct_writer_writes_seg_and_nifti_both_or_neither(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from monai.deploy.core import Image

    from fewlabel.data import segmentation_writers
    from fewlabel.deploy import operators

    folder = write_ct_phantom_dicom(tmp_path / "ct", shape=(8, 8, 10)).image
    datasets = [pydicom.dcmread(f) for f in sorted(folder.glob("IM*.dcm"))]
    sdk = _sdk_volume(folder)  # (X, Y, Z) in the SDK's voxel order, RAS affine
    mask = (np.asarray(sdk) > 0).astype(np.uint8)
    image = Image(np.swapaxes(mask, 0, 2), metadata={"affine": np.asarray(sdk.affine)})
    series = SimpleNamespace(SeriesInstanceUID=datasets[0].SeriesInstanceUID, get_sop_instances=lambda: [
        SimpleNamespace(get_native_sop_instance=lambda ds=ds: ds) for ds in datasets])
    selection = [SimpleNamespace(selected_series=[SimpleNamespace(series=series)])]
    op_input = SimpleNamespace(receive=lambda name: image if name == "seg_image" else selection)
    out = tmp_path / "out"
    writer = operators.CTSegmentationWriterOperator(Fragment(), output_folder=out, segments=[Segment(1, "Liver")],
                                                    name="writer")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    for writer_name in ("save_dicom_seg", "save_nifti_segmentation"):
        with monkeypatch.context() as m:
            m.setattr(segmentation_writers, writer_name, broken)  # the writers the operator calls
            with pytest.raises(RuntimeError, match="disk full"):
                writer.compute(op_input, None, None)
        assert not out.exists() or list(out.iterdir()) == [], writer_name
    writer.compute(op_input, None, None)
    uid = datasets[0].SeriesInstanceUID
    assert sorted(p.name for p in out.iterdir()) == [f"{uid}_seg.dcm", f"{uid}_seg.nii.gz"]


def test_as_ct_volume_rejects_what_is_not_a_volume():
    with pytest.raises(DataError, match="MetaTensor with an 'affine'"):
        as_ct_volume(torch.zeros(4, 4, 4))
    with pytest.raises(DataError, match="not a single-channel 3D volume"):
        as_ct_volume(MetaTensor(torch.zeros(4, 4), meta={"affine": torch.eye(4), "filename_or_obj": "x.dcm"}))
    bad = torch.zeros(4, 4, 4)
    bad[1, 1, 1] = float("nan")
    with pytest.raises(DataError, match="scan7.*NaN"):
        as_ct_volume(MetaTensor(bad, meta={"affine": torch.eye(4), "filename_or_obj": "scan7"}))


def test_single_image_series_gets_its_affine_from_the_header():
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    folder = Path(path).parent
    frag = Fragment()
    studies = [s for s in DICOMDataLoaderOperator(frag, input_folder=folder, name="l").load_data_to_studies(folder)
               if any(x.SeriesInstanceUID == ds.SeriesInstanceUID for x in s.get_all_series())]
    series = next(x for s in studies for x in s.get_all_series() if x.SeriesInstanceUID == ds.SeriesInstanceUID)
    CTSeriesToVolumeOperator(frag, name="v").prepare_series(series)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    expected = np.diag([-dx, -dy, float(ds.SliceThickness), 1.0])  # axial, RAS
    expected[:3, 3] = [-ds.ImagePositionPatient[0], -ds.ImagePositionPatient[1], ds.ImagePositionPatient[2]]
    np.testing.assert_allclose(series.nifti_affine_transform, expected, atol=1e-6)


def test_load_image_2d_takes_a_frame_in_memory_like_its_file(tmp_path):
    from testlib import write_png

    rgb = (np.arange(6 * 8 * 3).reshape(6, 8, 3) * 5 % 256).astype(np.uint8)
    path = write_png(tmp_path / "f.png", rgb)
    from_file = LoadImage2D(3)(path)
    from_memory = LoadImage2D(3)(MetaTensor(torch.as_tensor(rgb), meta={"filename_or_obj": os.fspath(path)}))
    np.testing.assert_array_equal(from_memory.numpy(), from_file.numpy())
    assert from_memory.meta["filename_or_obj"] == os.fspath(path)
    assert LoadImage2D(1, "convert")(rgb).shape == (1, 6, 8)
    with pytest.raises(DataError, match=r"\(H, W\) or channel-last"):
        LoadImage2D(3)(np.zeros((6, 8, 7), np.uint8))
    with pytest.raises(DataError, match="grayscale image but this bundle expects RGB"):
        LoadImage2D(3)(np.zeros((6, 8), np.uint8))


def test_dicom_seg_with_two_segments_from_datasets(tmp_path):
    """Label values -> segments in the given order, from in-memory datasets (no folder), each frame right."""
    folder = write_ct_phantom_dicom(tmp_path / "ct", shape=(8, 8, 10)).image
    datasets = [pydicom.dcmread(f) for f in sorted(folder.glob("*.dcm"))]
    volume = load_ct_volume(folder)
    labels = torch.zeros(volume.shape, dtype=torch.uint8)
    labels[0, 1:4, 2:5, 1] = 2  # X, Y, Z (RAS): slice 1 from the bottom
    labels[0, 5:8, 2:6, 2] = 7
    segments = [Segment(7, "Spleen", type=("SCT", "78961009", "Spleen")), Segment(2, "Liver")]
    out = save_dicom_seg(labels, datasets, tmp_path / "two.dcm", reference=volume, segments=segments)
    seg = hd.seg.segread(out)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Spleen", "Liver"]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "78961009"
    # each segment's frames are those of a one-segment SEG of (labels == its value), whose frames
    # test_ct_outputs checks against the label slices
    numbers = np.asarray([int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
                          for fg in seg.PerFrameFunctionalGroupsSequence])
    frames = _seg_frames_all(seg)
    for number, value in ((1, 7), (2, 2)):
        single = _seg_frames(save_dicom_seg(labels == value, folder, tmp_path / f"one_{value}.dcm", reference=volume))
        mine = {uid: px for (uid, px), n in zip(frames, numbers) if n == number}
        assert mine.keys() == single.keys() and len(mine) == 1
        for uid in mine:
            np.testing.assert_array_equal(mine[uid], single[uid])
    with pytest.raises(ValueError, match=r"values \[3\] that no segment describes"):
        save_dicom_seg(labels.clamp(max=3), datasets, tmp_path / "x.dcm", reference=volume, segments=segments)
    with pytest.raises(ValueError, match="needs reference="):
        save_dicom_seg(labels, datasets, tmp_path / "x.dcm", segments=segments)
    other = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    with pytest.raises(ValueError, match="belong to 2 series"):
        save_dicom_seg(labels, [*datasets, other], tmp_path / "x.dcm", reference=volume, segments=segments)


def test_segments_from_metadata():
    meta = json.loads((CT_BUNDLE / "configs" / "metadata.json").read_text())
    assert segments_from_metadata(meta) == [Segment(1, "Liver", ("SCT", "91723000", "Anatomical Structure"),
                                                    ("SCT", "10200004", "Liver"))]
    with pytest.raises(ValueError, match="bundle_x.*no 'segment_descriptions'"):
        segments_from_metadata({}, "bundle_x")
    with pytest.raises(ValueError, match=r"segment_descriptions\[0\] is malformed"):
        segments_from_metadata({"segment_descriptions": [{"label_value": 1, "segment_label": "Liver",
                                                          "category": ["SCT", "91723000"], "type": ["a", "b", "c"]}]})
    twice = {"label_value": 1, "segment_label": "A", "category": ["a", "b", "c"], "type": ["a", "b", "c"]}
    with pytest.raises(ValueError, match="distinct"):
        segments_from_metadata({"segment_descriptions": [twice, twice]})


def test_bundle_input_kind_tells_ct_from_2d_bundles():
    assert {b.name: bundle_input_kind(b) for b in BUNDLES} == {
        b.name: "volume" if b == CT_BUNDLE else "frame" for b in BUNDLES}


def test_bundle_metadata_from_folder_and_torchscript(tmp_path):
    assert bundle_metadata(CT_BUNDLE) == json.loads((CT_BUNDLE / "configs" / "metadata.json").read_text())
    scripted = torch.jit.script(torch.nn.Conv2d(1, 1, 1))
    torch.jit.save(scripted, tmp_path / "bare.ts")
    with pytest.raises(DataError, match="bare.ts has no embedded metadata.json"):
        bundle_metadata(tmp_path / "bare.ts")
    (tmp_path / "junk.ts").write_bytes(b"not a model")
    with pytest.raises(DataError, match="cannot load TorchScript model .*junk.ts"):
        bundle_metadata(tmp_path / "junk.ts")
    with pytest.raises(DataError, match="model not found: .*missing"):
        bundle_metadata(tmp_path / "missing")


def test_frame_source_rejects_inputs_without_frames(tmp_path):
    frag = Fragment()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files .* in .*empty.* a folder of frames or a video"):
        FrameSourceOperator(frag, input_path=tmp_path / "empty", frames_dir=tmp_path / "f", name="a")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match="broken.mp4"):
        FrameSourceOperator(frag, input_path=tmp_path / "broken.mp4", frames_dir=tmp_path / "f", name="b")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="neither a folder of frames, an image, nor a video"):
        FrameSourceOperator(frag, input_path=tmp_path / "notes.txt", frames_dir=tmp_path / "f", name="c")


def test_map_requirements_pin_what_pyproject_pins():
    """deploy/map/requirements.txt (what a MAP installs) = pyproject's dependencies + the deploy extra."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = [ln.strip() for ln in (REPO / "deploy" / "map" / "requirements.txt").read_text().splitlines()]
    assert [ln for ln in lines if ln and not ln.startswith("#")] == [
        *project["dependencies"], *project["optional-dependencies"]["deploy"]]
    assert (REPO / "deploy" / "map" / "app.yaml").read_text().count("version: " + project["version"]) == 1


def test_bundle_overrides_from_the_environment(monkeypatch):
    from fewlabel.deploy.app import overrides_from_env

    monkeypatch.delenv("FEWLABEL_BUNDLE_OVERRIDES", raising=False)
    assert overrides_from_env() == {}
    monkeypatch.setenv("FEWLABEL_BUNDLE_OVERRIDES", '{"refine": "sam", "slice_batch": 4}')
    assert overrides_from_env() == {"refine": "sam", "slice_batch": 4}
    monkeypatch.setenv("FEWLABEL_BUNDLE_OVERRIDES", "{refine: sam}")
    with pytest.raises(ValueError, match="FEWLABEL_BUNDLE_OVERRIDES is not valid JSON"):
        overrides_from_env()
    monkeypatch.setenv("FEWLABEL_BUNDLE_OVERRIDES", '["refine"]')
    with pytest.raises(ValueError, match="must be a JSON object"):
        overrides_from_env()


def test_bundle_operator_without_weights_says_where_to_put_them(tmp_path):
    from monai.deploy.core import AppContext

    from fewlabel.deploy.operators import BundleInferenceOperator

    bundle = tmp_path / "polycl"
    shutil.copytree(CT_BUNDLE / "configs", bundle / "configs")
    op = BundleInferenceOperator(Fragment(), app_context=AppContext({}), bundle_path=bundle, name="infer")
    with pytest.raises(DataError, match=r"no weights in .*polycl/models: put the trained model.pt there"):
        op._ensure_ready()
    assert op._parser["bundle_root"] == os.fspath(bundle.resolve())  # configs resolve files in this bundle
