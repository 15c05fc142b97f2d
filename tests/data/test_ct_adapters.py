"""CT dataset adapters (LiTS, MSD Task03_Liver, TotalSegmentator): fake releases in tmp_path → datalists."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fewlabel import cli
from fewlabel.data.adapters import ADAPTERS, build_lits, build_msd_liver, build_totalsegmentator
from fewlabel.data.adapters.lits import scaled_counts
from fewlabel.data.ct import build_slice_index, write_ct_phantom
from fewlabel.data.datalist import load_datalist
from fewlabel.errors import DataError

SPLITS = ("training", "validation", "testing")
SHAPE = (12, 16, 16)


def _phantom(image: Path, label: Path, seed: int) -> None:
    write_ct_phantom(image, shape=SHAPE, seed=seed, label_path=label)


def _relabel(path: Path, fn) -> None:
    """Rewrite the label NIfTI at ``path`` with ``fn(data)`` (same affine, uint8)."""
    img = nib.load(path)
    data = fn(np.asarray(img.dataobj)).astype(np.uint8)
    nib.save(nib.Nifti1Image(data, img.affine, img.header), path)


def _counts(datalist: dict) -> tuple[int, ...]:
    return tuple(len(datalist[s]) for s in SPLITS)


def _scans(datalist: dict, split: str) -> list[str]:
    return [item["scan"] for item in datalist[split]]


def _check_disjoint(datalist: dict) -> set[str]:
    """No scan in two splits; every item's files exist and its scan id is its patient id. Returns all scans."""
    seen: list[str] = []
    for split in SPLITS:
        for item in datalist[split]:
            assert Path(item["image"]).is_absolute() and Path(item["image"]).is_file(), item
            assert Path(item["label"]).is_file(), item
            assert item["patient"] == item["scan"]
            seen.append(item["scan"])
    assert len(seen) == len(set(seen)), "a scan is in two splits"
    return set(seen)


# --------------------------------------------------------------------------- LiTS


def _lits_tree(root: Path, numbers) -> None:
    """``volume-N`` / ``segmentation-N`` spread over two batch folders, .nii and .nii.gz mixed."""
    for n in numbers:
        batch = root / ("Training Batch 1" if n < 5 else "Training Batch 2")
        ext = ".nii" if n % 2 else ".nii.gz"
        _phantom(batch / f"volume-{n}{ext}", batch / f"segmentation-{n}{ext}", seed=n)


@pytest.fixture(scope="module")
def lits13(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lits") / "LiTS"
    _lits_tree(root, range(13))
    (root / "Training Batch 1" / "._volume-1.nii").write_bytes(b"\0\5\26\7")  # macOS AppleDouble junk
    test_release = root / "Test Data"
    test_release.mkdir()
    write_ct_phantom(test_release / "test-volume-0.nii", shape=SHAPE, seed=99)  # unlabelled test release
    return root


def test_lits_pairs_and_scales_counts(lits13: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fewlabel"):
        datalist = build_lits(lits13)  # paper counts (100, 5, 25) for 13 scans
    assert _counts(datalist) == (10, 1, 2) == scaled_counts((100, 5, 25), 13)
    assert "counts scaled to [10, 1, 2]" in caplog.text
    assert _check_disjoint(datalist) == {f"volume-{n}" for n in range(13)}  # test-volume and ._ files ignored
    assert datalist["name"] == "LiTS"
    assert datalist["labels"] == {"0": "background", "1": "liver", "2": "tumour"}
    assert datalist["organ_labels"] == [1, 2]
    for split in SPLITS:
        for item in datalist[split]:
            n = item["scan"].split("-")[1]
            image, label = Path(item["image"]), Path(item["label"])
            assert image.name.startswith(f"volume-{n}.nii") and label.name.startswith(f"segmentation-{n}.nii")
            assert image.parent == label.parent
    # few scans: validation and testing keep one scan each
    assert scaled_counts((100, 5, 25), 3) == (1, 1, 1)
    assert scaled_counts((100, 5, 25), 130) == (100, 5, 25)


def test_lits_extra_scans_go_to_training_and_seeds(lits13: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fewlabel"):
        datalist = build_lits(lits13, counts=(6, 2, 4), seed=3)  # 13 scans = 12 + 1 extra, like 131 vs 130
    assert _counts(datalist) == (7, 2, 4)
    assert "the 1 extra scans go to training" in caplog.text
    _check_disjoint(datalist)
    assert build_lits(lits13, counts=(6, 2, 4), seed=3) == datalist  # deterministic
    testing = {tuple(_scans(build_lits(lits13, counts=(6, 2, 4), seed=s), "testing")) for s in range(5)}
    assert len(testing) > 1, "different seeds must give different splits"
    with pytest.raises(ValueError, match="counts"):
        build_lits(lits13, counts=(10, 5))


def test_lits_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no_lits_here") as err:
        build_lits(tmp_path / "no_lits_here")
    assert "volume-<N>.nii" in str(err.value)  # says which layout is expected
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"No LiTS volume.*empty"):
        build_lits(empty)
    src = tmp_path / "lits"
    _lits_tree(src, range(3))
    (src / "Training Batch 1" / "segmentation-1.nii").unlink()
    with pytest.raises(DataError, match=r"volume-1\.nii has no segmentation"):
        build_lits(src)
    (src / "Training Batch 1" / "volume-1.nii").unlink()
    (src / "Training Batch 1" / "volume-2.nii.gz").unlink()
    with pytest.raises(DataError, match=r"segmentation-2\.nii\.gz has no volume"):
        build_lits(src)
    _phantom(src / "volume-2.nii.gz", src / "segmentation-2.nii.gz", seed=2)
    with pytest.raises(DataError, match=r"segmentation 2 is there twice"):
        build_lits(src)


# --------------------------------------------------------------------------- MSD Task03_Liver


def _msd_tree(root: Path, n: int, with_json: bool = True) -> Path:
    task = root / "Task03_Liver"
    entries = []
    for i in range(n):
        _phantom(task / "imagesTr" / f"liver_{i}.nii.gz", task / "labelsTr" / f"liver_{i}.nii.gz", seed=i)
        for folder in ("imagesTr", "labelsTr"):
            (task / folder / f"._liver_{i}.nii.gz").write_bytes(b"\0\5\26\7")  # as the tar ships them
        entries.append({"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"})
    if with_json:
        content = {"name": "Liver", "labels": {"0": "background", "1": "liver", "2": "cancer"},
                   "numTraining": n, "training": entries, "test": []}
        (task / "dataset.json").write_text(json.dumps(content))
    return task


@pytest.fixture(scope="module")
def msd_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("msd")
    _msd_tree(root, 6)
    return root


def test_msd_liver_subset_all_testing(msd_root: Path) -> None:
    datalist = build_msd_liver(msd_root, num_scans=4, seed=1)  # the parent of Task03_Liver
    assert _counts(datalist) == (0, 0, 4)  # cross-domain evaluation: all selected scans in testing
    assert _check_disjoint(datalist) <= {f"liver_{i}" for i in range(6)}
    assert datalist["organ_labels"] == [1, 2] and datalist["labels"]["2"] == "cancer"
    for item in datalist["testing"]:
        assert Path(item["image"]).name == Path(item["label"]).name == f"{item['scan']}.nii.gz"
        assert Path(item["label"]).parent.name == "labelsTr"
    assert build_msd_liver(msd_root / "Task03_Liver", num_scans=4, seed=1) == datalist  # either level, same seed
    subsets = {tuple(_scans(build_msd_liver(msd_root, num_scans=4, seed=s), "testing")) for s in range(5)}
    assert len(subsets) > 1, "different seeds must select different scans"
    assert _counts(build_msd_liver(msd_root)) == (0, 0, 6)
    assert ADAPTERS["msd_task03"] is ADAPTERS["msd_liver"] is build_msd_liver


def test_msd_liver_fractions_split(msd_root: Path) -> None:
    datalist = build_msd_liver(msd_root, fractions=(0.5, 0.17, 0.33), seed=2)
    assert _counts(datalist) == (3, 1, 2)
    assert len(_check_disjoint(datalist)) == 6
    with pytest.raises(ValueError, match="fractions"):
        build_msd_liver(msd_root, fractions=(0.5, 0.5))


def test_msd_liver_without_json_and_errors(tmp_path: Path) -> None:
    task = _msd_tree(tmp_path / "msd", 3, with_json=False)
    datalist = build_msd_liver(task)  # paired by file name, ._ files ignored
    assert _scans(datalist, "testing") == ["liver_0", "liver_1", "liver_2"]
    (task / "labelsTr" / "liver_1.nii.gz").unlink()
    with pytest.raises(DataError, match=r"imagesTr/liver_1\.nii\.gz has no label"):
        build_msd_liver(task)
    with pytest.raises(DataError, match="Task03_Nowhere") as err:
        build_msd_liver(tmp_path / "Task03_Nowhere")
    assert "dataset.json" in str(err.value)
    with pytest.raises(DataError, match=r"dataset.json or imagesTr/ not found under .*msd/Task03_Liver/labelsTr"):
        build_msd_liver(task / "labelsTr")
    entries = [{"image": "./imagesTr/liver_1.nii.gz", "label": "./labelsTr/liver_1.nii.gz"}]
    (task / "dataset.json").write_text(json.dumps({"training": entries}))
    with pytest.raises(DataError, match=r"labelsTr/liver_1\.nii\.gz listed in .*dataset\.json does not exist"):
        build_msd_liver(task)


# --------------------------------------------------------------------------- TotalSegmentator

TS_META = {"s0000": "train", "s0001": "train", "s0002": "val", "s0003": "test", "s0004": "test", "s0005": "train"}


@pytest.fixture(scope="module")
def ts_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ts") / "Totalsegmentator_dataset_v201"
    for i, subject in enumerate(TS_META):
        seg = root / subject / "segmentations"
        _phantom(root / subject / "ct.nii.gz", seg / "liver.nii.gz", seed=i)
        (seg / "spleen.nii.gz").write_bytes((seg / "liver.nii.gz").read_bytes())
    _relabel(root / "s0004" / "segmentations" / "liver.nii.gz", np.zeros_like)  # a head scan: no liver
    rows = ["image_id;age;gender;institute;study_type;split"]
    rows += [f"{s};60;m;A;ct abdomen;{split}" for s, split in TS_META.items()]
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    return root


def test_totalsegmentator_drops_subjects_without_organ(ts_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fewlabel"):
        datalist = build_totalsegmentator(ts_root)
    assert "dropped 1 of the 6 subjects" in caplog.text
    assert _scans(datalist, "testing") == ["s0000", "s0001", "s0002", "s0003", "s0005"]
    assert _counts(datalist) == (0, 0, 5)
    _check_disjoint(datalist)
    assert datalist["labels"] == {"0": "background", "1": "liver"} and datalist["organ_labels"] == [1]
    item = datalist["testing"][0]
    assert Path(item["image"]).name == "ct.nii.gz" and Path(item["label"]).name == "liver.nii.gz"
    kept_all = build_totalsegmentator(ts_root.parent, require_organ=False)  # the folder above works too
    assert "s0004" in _scans(kept_all, "testing")
    for seed in range(4):  # the random subset never holds the liver-free subject
        subset = build_totalsegmentator(ts_root, num_scans=3, seed=seed)
        assert _counts(subset) == (0, 0, 3) and "s0004" not in _scans(subset, "testing")
        assert build_totalsegmentator(ts_root, num_scans=3, seed=seed) == subset
    spleen = build_totalsegmentator(ts_root, organ="spleen", fractions=(0.5, 0.17, 0.33), seed=1)
    assert _counts(spleen) == (3, 1, 2) and spleen["labels"]["1"] == "spleen"
    assert len(_check_disjoint(spleen)) == 6


def test_totalsegmentator_official_split(ts_root: Path, tmp_path: Path) -> None:
    datalist = build_totalsegmentator(ts_root, split="official")
    assert _scans(datalist, "training") == ["s0000", "s0001", "s0005"]
    assert _scans(datalist, "validation") == ["s0002"]
    assert _scans(datalist, "testing") == ["s0003"]  # s0004 (test) has no liver
    with pytest.raises(ValueError, match="exclude each other"):
        build_totalsegmentator(ts_root, split="official", fractions=(0.8, 0.1, 0.1))
    copy = tmp_path / "ts"
    (copy / "s0000" / "segmentations").mkdir(parents=True)
    for name in ("ct.nii.gz", "segmentations/liver.nii.gz"):
        (copy / "s0000" / name).write_bytes((ts_root / "s0000" / name).read_bytes())
    with pytest.raises(DataError, match=r"ts/meta\.csv"):
        build_totalsegmentator(copy, split="official")


def test_totalsegmentator_errors(ts_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no_ts") as err:
        build_totalsegmentator(tmp_path / "no_ts")
    assert "segmentations/<organ>.nii.gz" in str(err.value)
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match=r"No TotalSegmentator subject folders .* under .*other"):
        build_totalsegmentator(tmp_path / "other")
    with pytest.raises(DataError, match=r"s0000/segmentations/pancreas\.nii\.gz"):
        build_totalsegmentator(ts_root, organ="pancreas")


# --------------------------------------------------------------------------- CLI round trip


def test_cli_datalist_lits_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    src = tmp_path / "LiTS"
    _lits_tree(src, range(5))
    tumour_only = src / "Training Batch 1" / "segmentation-0.nii.gz"
    _relabel(tumour_only, lambda a: a * 2)  # scan 0: the whole liver labelled tumour
    out = src / "lits.json"
    monkeypatch.setattr(sys, "argv", ["fewlabel", "datalist", "lits", str(src), "-o", str(out), "--counts", "2,1,1"])
    cli.main()  # -> fewlabel.data.adapters.build_datalist
    assert "'training': 3" in capsys.readouterr().out  # 5 scans = 4 + 1 extra to training
    raw = json.loads(out.read_text())
    assert raw["organ_labels"] == [1, 2] and raw["name"] == "LiTS"
    assert all(item["image"].startswith("Training Batch") for s in SPLITS for item in raw[s])  # relative
    items = [it for split in SPLITS for it in load_datalist(out, split)]  # raises if a file is missing
    assert sorted(it["scan"] for it in items) == [f"volume-{n}" for n in range(5)]
    assert all(Path(it["image"]).is_file() and Path(it["label"]).is_file() for it in items)
    # organ_labels makes tumour voxels count as liver when slices are indexed
    index = build_slice_index(items, organ_label=raw["organ_labels"], fraction=1.0)
    liver_only = build_slice_index(items, organ_label=[1], fraction=1.0)
    assert index.has_organ[index.scan_ids == "volume-0"].any()
    assert not liver_only.has_organ[liver_only.scan_ids == "volume-0"].any()
