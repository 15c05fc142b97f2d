"""Damaged CT files: the loader gives a volume or a DataError naming the file -- never another exception or a hang."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import pytest
from monai.data import MetaTensor

from fewlabel.data.ct import load_ct_volume, write_ct_phantom, write_ct_phantom_dicom
from fewlabel.errors import DataError
from fewlabel.transforms import LoadCTVolumed
from testlib import corrupt_variants

SHAPE = (8, 12, 10)  # (Z, Y, X)
VARIANTS = 10


def _outcome(path: Path, named: Path) -> str:
    """``"volume"`` or ``"error"``; fails the test on any other outcome or an error that does not name ``named``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = LoadCTVolumed("image")({"image": os.fspath(path)})["image"]
    except DataError as e:
        assert os.fspath(named) in str(e), f"{path.name}: the error does not name {named}: {e}"
        return "error"
    assert isinstance(out, MetaTensor) and out.ndim == 4 and out.shape[0] == 1
    return "volume"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_ct")
    gz = write_ct_phantom(root / "ct.nii.gz", shape=SHAPE, label_path=root / "label.nii.gz").image
    raw = root / "ct.nii"
    nib.save(nib.load(os.fspath(gz)), os.fspath(raw))
    series = write_ct_phantom_dicom(root / "series", shape=SHAPE).image
    return {"nii.gz": gz, "nii": raw, "dicom": series}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["nii", "nii.gz"])
def test_damaged_nifti_gives_a_volume_or_an_error_naming_it(sources, tmp_path, kind):
    data = sources[kind].read_bytes()
    outcomes = []
    for name, damaged in corrupt_variants(data, seed=7, count=VARIANTS):
        path = tmp_path / f"{name}.{kind}"
        path.write_bytes(damaged)
        outcomes.append(_outcome(path, path))
    assert outcomes.count("error") >= 5  # empty, truncated and mangled headers are refused
    assert load_ct_volume(sources[kind]).shape == (1, SHAPE[2], SHAPE[1], SHAPE[0])  # the source itself loads


@pytest.mark.timeout(60)
def test_damaged_dicom_slice_gives_a_volume_or_an_error_naming_that_file(sources, tmp_path):
    files = sorted(sources["dicom"].glob("IM*.dcm"))
    victim = files[len(files) // 2]
    outcomes = []
    for name, damaged in corrupt_variants(victim.read_bytes(), seed=11, count=VARIANTS):
        folder = tmp_path / name
        shutil.copytree(sources["dicom"], folder)
        (folder / victim.name).write_bytes(damaged)
        outcomes.append(_outcome(folder, folder / victim.name))
    assert outcomes.count("error") >= 5
