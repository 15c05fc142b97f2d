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


def test_each_modality_module_registers_its_kind():
    """One module per modality registers its kind on import of the package, in a fixed order."""
    from fewlabel.data import phantoms
    from fewlabel.data.phantoms import registry

    assert phantoms.PHANTOMS is registry.PHANTOMS
    assert phantoms.make_phantom is registry.make_phantom and phantoms.register_phantom is registry.register_phantom
    modules = {"nuclei": "microscopy", "dermoscopy": "dermoscopy", "xray": "xray", "laparoscopy": "laparoscopy",
               "liver_landmarks": "liver_landmarks", "polyp": "polyp"}
    assert list(PHANTOMS)[: len(modules)] == list(modules)  # demo datasets and listings follow this order
    for kind, module in modules.items():
        assert PHANTOMS[kind].__module__ == f"fewlabel.data.phantoms.{module}", kind


def test_ct_phantoms_live_in_the_package_and_data_ct_reexports_them():
    import fewlabel.data.ct as ct_data
    from fewlabel.data import phantoms
    from fewlabel.data.phantoms import ct as ct_phantoms

    for name in ("CTPhantom", "make_ct_phantom", "write_ct_phantom", "write_ct_phantom_dicom"):
        assert getattr(ct_data, name) is getattr(ct_phantoms, name) is getattr(phantoms, name), name
        assert name in phantoms.__all__  # fewlabel.data.ct re-exports them lazily (its __getattr__)


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
        from fewlabel.data.phantoms import registry

        registry._INFO.pop("_test_square", None)


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
    from fewlabel.data.phantoms import dataset as phantoms  # the module write_demo_dataset looks _save_png up in

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


# --------------------------------------------------------------------------- laparoscopy


def test_laparoscopy_registered_with_the_merged_cholecseg8k_classes():
    from fewlabel.data.phantoms import LAPAROSCOPY_CLASSES

    info = phantom_info("laparoscopy")
    assert info["num_classes"] == 8 and info["modality"] == "endoscopy"
    assert info["class_names"] == LAPAROSCOPY_CLASSES == (
        "background", "abdominal wall", "liver", "gastrointestinal tract", "fat", "instruments", "gallbladder", "misc",
    )


@pytest.mark.parametrize("size", [(128, 128), (96, 170)])
def test_laparoscopy_circular_field_of_view(size):
    """Class 0 is exactly what lies outside one circle, and it is black in the image."""
    h, w = size
    for seed in range(3):
        image, mask = make_phantom("laparoscopy", seed, size)
        outside = mask == 0
        assert outside[0, 0] and outside[0, -1] and outside[-1, 0] and outside[-1, -1]  # dark corners
        assert not outside[h // 2, w // 2]
        # the inside is one disc: fit a circle to its boundary pixels, then compare pixel by pixel
        inner = ~outside
        edge = inner & ~(np.roll(inner, 1, 0) & np.roll(inner, -1, 0) & np.roll(inner, 1, 1) & np.roll(inner, -1, 1))
        edge[[0, -1], :] = edge[:, [0, -1]] = False  # where the disc is cut by the frame
        ys, xs = np.nonzero(edge)
        design = np.stack([2 * ys, 2 * xs, np.ones_like(ys)], 1).astype(float)
        (cy, cx, c), *_ = np.linalg.lstsq(design, (ys**2 + xs**2).astype(float), rcond=None)
        radius = np.sqrt(c + cy**2 + cx**2)
        r = np.hypot(*np.mgrid[0:h, 0:w] - np.array([cy, cx])[:, None, None])
        disc = r <= radius - 1.5
        ring = (r > radius - 1.5) & (r < radius + 1.5)
        assert not outside[disc].any() and outside[~disc & ~ring].all()
        assert 0.6 < (~outside).mean() < 0.9
        assert image[outside].max() <= 25 and image[~outside].mean() > 70


def test_laparoscopy_class_sizes_are_skewed_and_all_present():
    counts = np.zeros(8)
    present = np.zeros(8, int)
    for video in range(4):
        for k in range(3):
            _, mask = make_phantom("laparoscopy", 10 * video + k, (128, 128), style_seed=video)
            c = np.bincount(mask.ravel(), minlength=8)
            counts += c / mask.size
            present += c > 0
    share = counts / 12
    assert present.min() >= 1 and present[[0, 2, 4, 5, 6, 7]].min() == 12  # every frame: FOV, liver, tools...
    assert 0 < share[7] < 0.01  # misc: thin ducts and vessels, under 1% of the pixels
    assert share[7] < share[6] < 0.08  # small gallbladder
    assert share[2] > 0.15 and share[4] > 0.1  # large liver and fat
    assert 0.02 < share[5] < 0.2  # instruments


def test_laparoscopy_colours_match_the_mask():
    """Each class has the colour a laparoscopic scene shows: the mask is consistent with the image."""
    sums = np.zeros((8, 3))
    n = np.zeros(8)
    for seed in range(6):
        image, mask = make_phantom("laparoscopy", seed, (128, 128))
        for c in range(8):
            sel = mask == c
            sums[c] += image[sel].astype(float).sum(0)
            n[c] += sel.sum()
    mean = sums / np.maximum(n, 1)[:, None]
    r, g, b = mean.T
    assert mean[0].max() < 15  # black outside the field of view
    assert r[2] > 2.5 * g[2] and r[2] > 2.5 * b[2]  # liver: dark red-brown
    assert r[2] < r[1] and r[2] < r[4]  # darker than abdominal wall and fat
    assert g[4] > 0.6 * r[4] > b[4]  # fat: yellow
    assert g[6] > 0.85 * r[6] and g[6] > 1.3 * b[6]  # gallbladder: green-yellow
    assert abs(r[5] - b[5]) < 0.2 * r[5]  # instruments: grey metal
    assert r[3] > g[3] and b[3] > 0.8 * g[3]  # gastrointestinal tract: pink


def test_laparoscopy_frames_of_one_video_look_alike_but_move():
    def frames(video):
        return [make_phantom("laparoscopy", 100 * video + k, (96, 96), style_seed=video) for k in range(3)]

    videos = {v: frames(v) for v in range(4)}
    # frames of one video: same anatomy under a small camera motion, instruments moved
    for pairs in videos.values():
        masks = [m for _, m in pairs]
        assert not np.array_equal(masks[0] == 5, masks[1] == 5)
        assert not np.array_equal(pairs[0][0], pairs[1][0])
    # class layout: within a video, frames agree more than across videos
    def agreement(a, b):
        inside = (a > 0) & (b > 0)
        return (a[inside] == b[inside]).mean()

    within = np.mean([agreement(p[i][1], p[j][1]) for p in videos.values() for i in range(3) for j in range(i + 1, 3)])
    between = np.mean([agreement(videos[a][0][1], videos[b][0][1]) for a in range(4) for b in range(a + 1, 4)])
    assert within > between + 0.1, (within, between)


def test_laparoscopy_demo_dataset_multiclass_labels(tmp_path):
    path = write_demo_dataset("laparoscopy", root=tmp_path / "lap", num_patients=4, images_per_patient=2, size=(64, 64))
    content = json.loads(path.read_text())
    assert content["labels"] == {str(i): n for i, n in enumerate(phantom_info("laparoscopy")["class_names"])}
    assert len(content["labels"]) == 8 and "unlabelled" not in content
    values = set()
    for split in SPLITS:
        for item in load_datalist(path, split):
            label = np.asarray(Image.open(item["label"]))
            assert label.dtype == np.uint8 and label.shape == (64, 64)
            values |= set(np.unique(label).tolist())
    assert values <= set(range(8)) and {0, 2, 4, 5, 6, 7} <= values


def test_demo_dataset_unlabelled_fraction(tmp_path):
    kwargs = dict(num_patients=10, images_per_patient=2, size=(48, 48), seed=3, fractions=(0.6, 0.2, 0.2))
    plain = write_demo_dataset("laparoscopy", **kwargs)
    path = write_demo_dataset("laparoscopy", unlabelled_fraction=0.5, **kwargs)
    assert path.parent != plain.parent  # another cache entry
    content = json.loads(path.read_text())
    assert content["phantom"]["unlabelled_fraction"] == 0.5
    assert "unlabelled_fraction" not in json.loads(plain.read_text())["phantom"]

    patients = {s: {it["patient"] for it in content[s]} for s in (*SPLITS, "unlabelled")}
    plain_content = json.loads(plain.read_text())
    # the unlabelled patients come out of the training split only; validation / testing unchanged
    assert patients["training"] | patients["unlabelled"] == {it["patient"] for it in plain_content["training"]}
    assert not patients["training"] & patients["unlabelled"]
    for s in ("validation", "testing"):
        assert content[s] == plain_content[s]
    assert patients["training"] and patients["unlabelled"]
    n_train = len(plain_content["training"])
    assert abs(len(content["unlabelled"]) - n_train / 2) <= 2
    unlabelled = load_datalist(path, "unlabelled")
    for item in unlabelled:
        assert "label" not in item and Path(item["image"]).is_file()
        assert not (path.parent / "labels" / Path(item["image"]).name).exists()  # no label file leaks
    for item in load_datalist(path, "training"):
        assert Path(item["label"]).is_file()
    with pytest.raises(ValueError, match="unlabelled_fraction"):
        write_demo_dataset("laparoscopy", unlabelled_fraction=1.0, **kwargs)
