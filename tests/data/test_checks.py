"""check_datalist_files / check_datalist: every bad file of a datalist is listed in one error before training."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigParser
from PIL import Image

from testlib import REPO, corrupt_variants, write_png
from fewlabel.data import check_datalist, check_datalist_files, read_file_shape
from fewlabel.errors import DataError


def _data_error(e: BaseException) -> DataError:
    """The DataError itself, or the one a MONAI config expression wrapped in a RuntimeError."""
    while not isinstance(e, DataError) and e.__cause__ is not None:
        e = e.__cause__
    assert isinstance(e, DataError), repr(e)
    return e


def _problems(err: pytest.ExceptionInfo) -> list[str]:
    return [line for line in str(_data_error(err.value)).splitlines() if line.startswith("  - ")]


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _bad_2d_folder(root: Path) -> dict:
    """A datalist with a good pair, a missing image, a truncated PNG image and a label of another size."""
    for name in ("good", "missing", "truncated", "small"):
        write_png(root / f"{name}.png", _rgb(32, 48))
        write_png(root / f"{name}_label.png", np.zeros((32, 48), np.uint8))
    (root / "missing.png").unlink()
    data = (root / "truncated.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    write_png(root / "small_label.png", np.zeros((16, 48), np.uint8))
    items = [{"image": f"{n}.png", "label": f"{n}_label.png"} for n in ("good", "missing", "truncated", "small")]
    return {"training": items[:3], "validation": items[3:]}


def test_lists_every_problem_with_its_file(tmp_path):
    datalist = _bad_2d_folder(tmp_path)
    items = [{k: str(tmp_path / v) for k, v in it.items()} for it in datalist["training"] + datalist["validation"]]
    with pytest.raises(DataError) as err:
        check_datalist_files(items)
    problems = _problems(err)
    assert len(problems) == 3, str(err.value)
    assert "not found" in problems[0] and "missing.png" in problems[0]
    assert "truncated.png" in problems[1] and "re-export" in problems[1]
    assert "small.png is 32x48" in problems[2] and "small_label.png is 16x48" in problems[2]
    assert "good" not in str(err.value)
    assert "--check_data false" in str(err.value)


def test_check_datalist_reads_all_training_splits(tmp_path):
    (tmp_path / "datalist.json").write_text(json.dumps(_bad_2d_folder(tmp_path)))
    with pytest.raises(DataError) as err:
        check_datalist(tmp_path / "datalist.json")
    assert len(_problems(err)) == 3
    assert "4 item(s)" in str(err.value)


def test_good_files_pass_and_unlabelled_items_need_no_label(tmp_path):
    write_png(tmp_path / "a.png", _rgb(20, 30))
    write_png(tmp_path / "a_label.png", np.zeros((20, 30), np.uint8))
    write_png(tmp_path / "b.jpg", _rgb(20, 30))
    check_datalist_files([{"image": str(tmp_path / "a.png"), "label": str(tmp_path / "a_label.png")},
                          {"image": str(tmp_path / "b.jpg")}])


def test_reads_headers_only(tmp_path, monkeypatch):
    """Checking a large datalist stays cheap: a valid PNG or JPEG is never decoded."""
    write_png(tmp_path / "a.png", _rgb(40, 40))
    Image.fromarray(_rgb(40, 40)).save(tmp_path / "b.jpg")

    def no_decode(self, *args, **kwargs):
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr(Image.Image, "load", no_decode)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decode)
    assert read_file_shape(tmp_path / "a.png") == (40, 40)
    assert read_file_shape(tmp_path / "b.jpg") == (40, 40)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("suffix,damage", [(".png", ""), (".jpg", ("empty", "truncated", "header"))])
def test_every_damaged_copy_is_reported(tmp_path, suffix, damage):
    """Damaged files that the image loader rejects are found by the check: for PNG every kind (chunk
    checksums), for JPEG truncation and header damage (damage inside its compressed data needs a decode)."""
    from fewlabel.transforms import LoadImage2D

    Image.fromarray(_rgb(48, 64)).save(tmp_path / f"ok{suffix}")
    items = []
    for name, data in corrupt_variants((tmp_path / f"ok{suffix}").read_bytes(), seed=1):
        if not name.startswith(damage):
            continue
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(data)
        try:
            LoadImage2D(channels=3)(path)
        except DataError:
            items.append({"image": str(path)})
    assert items
    with pytest.raises(DataError) as err:
        check_datalist_files(items)
    assert len(_problems(err)) == len(items), str(err.value)


def test_listing_is_capped(tmp_path):
    items = [{"image": str(tmp_path / f"img{i:02d}.png")} for i in range(25)]
    with pytest.raises(DataError) as err:
        check_datalist_files(items, max_listed=20)
    assert len(_problems(err)) == 20
    assert "and 5 more" in str(err.value)
    assert str(err.value).startswith("25 problem(s)")


def _nifti(path: Path, shape: tuple[int, ...]) -> str:
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), str(path))
    return str(path)


def test_ct_volume_and_label_shapes(tmp_path):
    good = {"image": _nifti(tmp_path / "a.nii.gz", (8, 8, 5)), "label": _nifti(tmp_path / "a_seg.nii.gz", (8, 8, 5))}
    bad = {"image": _nifti(tmp_path / "b.nii.gz", (8, 8, 5)), "label": _nifti(tmp_path / "b_seg.nii.gz", (8, 8, 4))}
    check_datalist_files([good])
    with pytest.raises(DataError) as err:
        check_datalist_files([good, bad])
    (problem,) = _problems(err)
    assert "b.nii.gz is 8x8x5" in problem and "b_seg.nii.gz is 8x8x4" in problem


def test_truncated_uncompressed_nifti_is_reported(tmp_path):
    path = Path(_nifti(tmp_path / "a.nii", (8, 8, 5)))
    check_datalist_files([{"image": str(path)}])
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"a\.nii: OSError: file has \d+ bytes, its header needs"):
        check_datalist_files([{"image": str(path)}])


def test_ct_dicom_series_against_nifti_label(tmp_path):
    from fewlabel.data import write_ct_phantom_dicom

    write_ct_phantom_dicom(tmp_path / "series", shape=(8, 16, 16), label_path=tmp_path / "label.nii.gz")
    item = {"image": str(tmp_path / "series"), "label": str(tmp_path / "label.nii.gz")}
    check_datalist_files([item])
    assert sorted(read_file_shape(tmp_path / "series")) == [8, 16, 16]
    _nifti(tmp_path / "other.nii.gz", (16, 16, 7))
    with pytest.raises(DataError, match="other.nii.gz is 16x16x7"):
        check_datalist_files([{**item, "label": str(tmp_path / "other.nii.gz")}])


# ------------------------------------------------------------------------ the bundles' training configs
def _train_parser(bundle: str, datalist: Path, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
    parser.update({"datalist_file": str(datalist), **overrides})
    return parser


@pytest.mark.parametrize("bundle", ["medsass_binary_segmentation", "surgical_semiseg_laparoscopy_segmentation",
                                    "slippa_liver_landmark_segmentation", "sam_mining_polyp_segmentation"])
def test_2d_bundle_training_checks_its_datalist_first(tmp_path, bundle):
    (tmp_path / "datalist.json").write_text(json.dumps(_bad_2d_folder(tmp_path)))
    parser = _train_parser(bundle, tmp_path / "datalist.json")
    # all three problems at once: the check runs before the trainer (whose loaders would stop at the first)
    with pytest.raises(Exception) as err:
        parser.get_parsed_content("initialize")
    assert len(_problems(err)) == 3
    parser = _train_parser(bundle, tmp_path / "datalist.json", check_data="false")
    assert parser.get_parsed_content("initialize#0") is False


def test_polycl_training_checks_its_volumes_first(tmp_path):
    items = []
    for name, label_shape in (("a", (8, 8, 5)), ("b", (8, 8, 4)), ("c", (8, 8, 5))):
        items.append({"image": _nifti(tmp_path / f"{name}.nii.gz", (8, 8, 5)),
                      "label": _nifti(tmp_path / f"{name}_seg.nii.gz", label_shape), "scan": name})
    Path(items[2]["image"]).unlink()
    (tmp_path / "datalist.json").write_text(json.dumps({"training": items[:2], "validation": items[2:]}))
    parser = _train_parser("polycl_liver_ct_segmentation", tmp_path / "datalist.json",
                           slice_cache=str(tmp_path / "slices"))
    with pytest.raises(Exception) as err:
        parser.get_parsed_content("initialize")
    problems = _problems(err)
    assert len(problems) == 2, str(err.value)
    assert "b_seg.nii.gz is 8x8x4" in problems[0] and "c.nii.gz" in problems[1] and "not found" in problems[1]
    assert not (tmp_path / "slices").exists()
