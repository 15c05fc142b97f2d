"""Demo phantoms: shapes, determinism, a usable ground truth, and cached demo datasets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.filters import threshold_otsu

import fewlabel.data as fdata
from fewlabel.data.datalist import load_datalist
from fewlabel.errors import DataError
from fewlabel.data.phantoms import PHANTOMS, make_phantom, phantom_info, register_phantom, write_demo_dataset

KINDS = ("nuclei", "dermoscopy", "xray")
SPLITS = ("training", "validation", "testing")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWLABEL_CACHE", str(tmp_path / "cache"))


def test_registry_has_the_three_kinds():
    assert set(KINDS) <= set(PHANTOMS)
    for kind in KINDS:
        info = phantom_info(kind)
        assert info["num_classes"] == 2
        assert info["class_names"][0] == "background" and len(info["class_names"]) == 2
        assert isinstance(info["modality"], str) and info["modality"]


def test_package_exports():
    for name in ("make_phantom", "write_demo_dataset", "PHANTOMS", "register_phantom", "phantom_info",
                 "save_datalist", "load_datalist", "split_by_group", "split_labelled", "cache_dir"):
        assert hasattr(fdata, name), name


@pytest.mark.parametrize("kind", sorted(PHANTOMS))
@pytest.mark.parametrize("size", [(224, 224), (96, 160)])
def test_shapes_dtypes_ranges(kind, size):
    image, mask = make_phantom(kind, 0, size)
    assert image.shape == (*size, 3) and image.dtype == np.uint8
    assert mask.shape == size and mask.dtype == np.uint8
    assert mask.max() < phantom_info(kind)["num_classes"]
    # non-trivial: foreground present but not everywhere, image not flat
    assert 0.005 < (mask > 0).mean() < 0.9
    assert image.std() > 5


@pytest.mark.parametrize("kind", KINDS)
def test_masks_nonempty_over_seeds(kind):
    for seed in range(6):
        _, mask = make_phantom(kind, seed, (128, 128))
        assert 0 < (mask > 0).sum() < mask.size


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic(kind):
    a_img, a_mask = make_phantom(kind, 7)
    b_img, b_mask = make_phantom(kind, 7)
    assert a_img.tobytes() == b_img.tobytes() and a_mask.tobytes() == b_mask.tobytes()
    c_img, c_mask = make_phantom(kind, 8)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_mask, c_mask)
    # another size is another image, not a crash
    assert make_phantom(kind, 7, (64, 80))[0].shape == (64, 80, 3)


def test_no_global_random_state():
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    make_phantom("nuclei", 3)
    assert np.array_equal(before, np.random.get_state()[1])


def test_style_seed_shares_appearance():
    """Images drawn with one style seed (one patient) resemble each other more than other patients'."""
    means = {p: [make_phantom("dermoscopy", 100 * p + k, (96, 96), style_seed=p)[0].reshape(-1, 3).mean(0)
                 for k in range(3)] for p in range(4)}
    within = np.mean([np.linalg.norm(a - b) for m in means.values() for i, a in enumerate(m) for b in m[i + 1:]])
    centres = [np.mean(m, 0) for m in means.values()]
    between = np.mean([np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1:]])
    assert within < between


def _luma(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize("gray", [lambda im: im.mean(-1), _luma], ids=["mean", "luma"])
def test_nuclei_otsu_is_good_but_not_perfect(gray):
    ious = []
    for seed in range(5):
        image, mask = make_phantom("nuclei", seed)
        g = gray(image)
        pred = g > threshold_otsu(g)
        truth = mask.astype(bool)
        ious.append((pred & truth).sum() / (pred | truth).sum())
    assert all(0.6 <= iou <= 0.9 for iou in ious), ious


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="nuclei"):
        make_phantom("mri-brain", 0)
    with pytest.raises(ValueError, match="known kinds"):
        phantom_info("mri-brain")
    with pytest.raises(ValueError, match="known kinds"):
        write_demo_dataset("mri-brain")


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        make_phantom("nuclei", -1)
    with pytest.raises(ValueError):
        make_phantom("nuclei", 0, (8, 8))


def test_register_new_kind():
    @register_phantom("_test_square", num_classes=3, class_names=("background", "a", "b"), modality="test")
    def _square(rng, style_rng, size):
        mask = np.zeros(size, np.uint8)
        mask[4:12, 4:12] = 1
        mask[20:24, 20:24] = 2
        image = np.repeat((mask * 100 + rng.integers(0, 20, size)).astype(np.uint8)[..., None], 3, -1)
        return image, mask

    try:
        image, mask = make_phantom("_test_square", 1, (32, 32))
        assert mask.max() == 2 and image.shape == (32, 32, 3)
        assert phantom_info("_test_square")["class_names"] == ("background", "a", "b")
        with pytest.raises(ValueError, match="already registered"):
            register_phantom("_test_square", 2, ("background", "x"), "test")
        with pytest.raises(ValueError):
            register_phantom("_test_bad", 3, ("background", "x"), "test")
    finally:
        PHANTOMS.pop("_test_square", None)
        from fewlabel.data import phantoms

        phantoms._INFO.pop("_test_square", None)


@pytest.mark.parametrize("kind", KINDS)
def test_write_demo_dataset(kind, tmp_path):
    path = write_demo_dataset(kind, num_patients=5, images_per_patient=2, size=(64, 64))
    assert path.name == "datalist.json" and path.is_file()
    assert Path(os.environ["FEWLABEL_CACHE"]) in path.parents  # default root is the cache folder
    content = json.loads(path.read_text())
    assert content["labels"] == {"0": "background", "1": phantom_info(kind)["class_names"][1]}
    assert content["name"]

    patients: dict[str, set[str]] = {}
    total = 0
    for split in SPLITS:
        items = load_datalist(path, split)
        total += len(items)
        patients[split] = {item["patient"] for item in items}
        for item in items:
            image = np.asarray(Image.open(item["image"]))
            label = np.asarray(Image.open(item["label"]))
            assert image.shape == (64, 64, 3) and image.dtype == np.uint8
            assert label.shape == (64, 64) and label.dtype == np.uint8 and label.max() <= 1
            assert Path(item["image"]).name == Path(item["label"]).name
            assert Path(item["image"]).name.startswith(item["patient"] + "_")
    assert total == 10
    assert len(patients["training"]) >= 1
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            assert not patients[a] & patients[b], (a, b)
    assert sorted(p.name for p in path.parent.iterdir()) == ["datalist.json", "images", "labels"]
    # no temporary folders left beside it
    assert [p.name for p in path.parent.parent.iterdir()] == [path.parent.name]


def test_demo_dataset_is_cached_and_deterministic(tmp_path):
    kwargs = dict(num_patients=3, images_per_patient=2, size=(48, 48), seed=5)
    path = write_demo_dataset("nuclei", **kwargs)
    files = sorted(p for p in path.parent.rglob("*") if p.is_file())
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    again = write_demo_dataset("nuclei", **kwargs)
    assert again == path
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes

    # the same parameters written elsewhere give byte-identical files
    other = write_demo_dataset("nuclei", root=tmp_path / "elsewhere", **kwargs)
    assert other == tmp_path / "elsewhere" / "datalist.json"
    for p in files:
        assert (other.parent / p.relative_to(path.parent)).read_bytes() == p.read_bytes()

    # other parameters: another cache folder
    assert write_demo_dataset("nuclei", **{**kwargs, "seed": 6}).parent != path.parent


def test_demo_dataset_file_names(tmp_path):
    path = write_demo_dataset("xray", root=tmp_path / "x", num_patients=2, images_per_patient=2, size=(64, 64))
    images = sorted((path.parent / "images").iterdir())
    assert [p.name for p in images] == ["p000_0.png", "p000_1.png", "p001_0.png", "p001_1.png"]
    assert len({p.read_bytes() for p in images}) == 4


def test_demo_dataset_replaces_other_parameters_and_refuses_foreign_folder(tmp_path):
    root = tmp_path / "demo"
    first = write_demo_dataset("dermoscopy", root=root, num_patients=2, images_per_patient=1, size=(48, 48))
    second = write_demo_dataset("dermoscopy", root=root, num_patients=3, images_per_patient=1, size=(48, 48))
    assert first == second
    assert len(list((root / "images").iterdir())) == 3
    assert json.loads(second.read_text())["phantom"]["num_patients"] == 3

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        write_demo_dataset("dermoscopy", root=foreign, num_patients=2, images_per_patient=1, size=(48, 48))
    assert (foreign / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "foreign"]  # no leftovers


def test_interrupted_write_leaves_no_dataset(tmp_path, monkeypatch):
    from fewlabel.data import phantoms

    calls = {"n": 0}
    real = phantoms._save_png

    def failing(array, path):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        real(array, path)

    monkeypatch.setattr(phantoms, "_save_png", failing)
    root = tmp_path / "demo"
    with pytest.raises(KeyboardInterrupt):
        write_demo_dataset("nuclei", root=root, num_patients=2, images_per_patient=2, size=(48, 48))
    assert not (root / "datalist.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(phantoms, "_save_png", real)
    assert write_demo_dataset("nuclei", root=root, num_patients=2, images_per_patient=2, size=(48, 48)).is_file()
