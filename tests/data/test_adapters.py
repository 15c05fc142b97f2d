"""Dataset adapters: fake published layouts in tmp_path → datalists a bundle can load."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from fewlabel.data.adapters import (
    ADAPTERS,
    build_covid_qu_ex,
    build_datalist,
    build_isic2017,
    build_tiles,
    build_tissuenet,
)
from fewlabel.data.adapters.tiles import tile_grid
from fewlabel.data.adapters.tissuenet import rescale_to_uint8
from fewlabel.data.datalist import load_datalist
from fewlabel.errors import DataError
from fewlabel.transforms.threshold import to_grayscale

from testlib import read_png, write_png

SPLITS = ("training", "validation", "testing")


_png, _read = write_png, read_png


def _counts(datalist: dict) -> tuple[int, ...]:
    return tuple(len(datalist[s]) for s in SPLITS)


def _check_items(datalist: dict) -> None:
    """Every listed file exists and each image/label pair shares its name (stem)."""
    for split in SPLITS:
        for item in datalist[split]:
            assert Path(item["image"]).is_file(), item
            assert Path(item["label"]).is_file(), item
            assert item["patient"]


# --------------------------------------------------------------------------- ISIC-2017

ISIC_COUNTS = {"training": 3, "validation": 2, "testing": 2}
ISIC_FOLDERS = {
    "training": ("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth"),
    "validation": ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth"),
    "testing": ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth"),
}


@pytest.fixture()
def isic_root(tmp_path: Path) -> Path:
    root = tmp_path / "isic"
    rng = np.random.default_rng(0)
    n = 0
    for split, (data, gt) in ISIC_FOLDERS.items():
        for _ in range(ISIC_COUNTS[split]):
            stem = f"ISIC_{n:07d}"
            n += 1
            _png(root / data / f"{stem}.jpg", rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
            _png(root / data / f"{stem}_superpixels.png", rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
            mask = np.zeros((12, 16), np.uint8)
            mask[3:9, 4:12] = 255
            _png(root / gt / f"{stem}_segmentation.png", mask)
        (root / data / f"{data}_metadata.csv").write_text("image_id,age_approximate,sex\n")
    return root


def test_isic2017_official_split(isic_root: Path) -> None:
    datalist = build_isic2017(isic_root)
    assert _counts(datalist) == (3, 2, 2)
    assert datalist["labels"] == {"0": "background", "1": "lesion"}
    _check_items(datalist)
    for split, (data, gt) in ISIC_FOLDERS.items():
        for item in datalist[split]:
            image, label = Path(item["image"]), Path(item["label"])
            assert image.parent.name == data and label.parent.name == gt
            assert "superpixels" not in image.name and image.suffix == ".jpg"
            assert label.name == f"{image.stem}_segmentation.png"
            assert item["patient"] == image.stem


def test_isic2017_nested_folder_and_split_subset(isic_root: Path) -> None:
    # an archive unpacked into a folder of its own name is found
    outer = isic_root / "ISIC-2017_Validation_Data"
    inner = outer / "ISIC-2017_Validation_Data"
    inner.mkdir()
    for f in list(outer.glob("ISIC_*")):
        f.rename(inner / f.name)
    datalist = build_isic2017(isic_root, splits=["validation"])
    assert _counts(datalist) == (0, 2, 0)


def test_isic2017_errors(isic_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere"):
        build_isic2017(missing)
    gt = isic_root / "ISIC-2017_Test_v2_Part1_GroundTruth"
    for f in gt.iterdir():
        f.unlink()
    gt.rmdir()
    with pytest.raises(DataError, match="ISIC-2017_Test_v2_Part1_GroundTruth") as err:
        build_isic2017(isic_root)
    assert "ISIC-2017_Training_Data/ISIC_0000000.jpg" in str(err.value)  # shows the layout
    (isic_root / "ISIC-2017_Training_Part1_GroundTruth" / "ISIC_0000001_segmentation.png").unlink()
    with pytest.raises(DataError, match=r"ISIC_0000001\.jpg"):
        build_isic2017(isic_root, splits=["training"])


# --------------------------------------------------------------------------- TissueNet

TN_SHAPES = {"train": (3, 16, 20), "val": (2, 8, 8), "test": (2, 8, 8)}


def _tissuenet_arrays(n: int, h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 50.0, (n, h, w, 2)).astype(np.float32)
    x[0, ..., 1] = 7.0  # a constant membrane channel
    x[0, 0, 0, 0] = np.nan
    y = np.zeros((n, h, w, 2), np.int32)
    y[:, 1:5, 1:5, 0] = 3  # whole cell
    y[:, 2:4, 2:4, 1] = 3  # its nucleus
    y[:, h - 3:, w - 3:, 0] = 8
    return x, y


@pytest.fixture()
def tissuenet_root(tmp_path: Path) -> Path:
    root = tmp_path / "tissuenet"
    root.mkdir()
    for i, (split, shape) in enumerate(TN_SHAPES.items()):
        x, y = _tissuenet_arrays(*shape, seed=i)
        meta = np.array([["tissue", "platform"]] + [["breast", "codex"]] * shape[0])
        save = np.savez_compressed if split == "train" else np.savez  # both storage modes
        save(root / f"tissuenet_v1.1_{split}.npz", X=x, y=y, meta=meta)
    return root


def test_tissuenet_png_pairs(tissuenet_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "png"
    datalist = build_tissuenet(tissuenet_root, out)
    assert _counts(datalist) == (3, 2, 2)
    _check_items(datalist)
    for split, short in zip(SPLITS, TN_SHAPES):
        n, h, w = TN_SHAPES[short]
        with np.load(tissuenet_root / f"tissuenet_v1.1_{short}.npz") as npz:
            y = npz["y"]
        for index, item in enumerate(datalist[split]):
            assert item["patient"] == f"{short}_{index}"
            assert Path(item["image"]).name == Path(item["label"]).name
            assert Path(item["image"]).is_relative_to(out)
            image, label = _read(item["image"]), _read(item["label"])
            assert image.shape == (h, w, 3) and image.dtype == np.uint8
            assert (image == image[..., :1]).all(), "a single channel is written as grey (R = G = B)"
            assert image.min() == 0 and image.max() == 255
            assert label.shape == (h, w) and label.dtype == np.uint8
            assert set(np.unique(label)) <= {0, 1}
            np.testing.assert_array_equal(label, (y[index, ..., 1] > 0).astype(np.uint8))


def test_tissuenet_nuclear_channel_reaches_thresholding_at_full_range(tissuenet_root: Path, tmp_path: Path) -> None:
    """MedSASS converts to grey (BT.601) before thresholding: the nuclear channel must come out whole,
    not scaled by the blue weight 0.114 (at most 29 grey levels; the adaptive offset of 2/255 was then
    worth ~17 levels of the channel)."""
    datalist = build_tissuenet(tissuenet_root, tmp_path / "png", splits=["training"])
    with np.load(tissuenet_root / "tissuenet_v1.1_train.npz") as npz:
        x = npz["X"]
    for index, item in enumerate(datalist["training"]):
        image = torch.from_numpy(_read(item["image"])).permute(2, 0, 1)[None].float() / 255.0
        grey = to_grayscale(image)[0, 0].numpy()
        assert grey.min() == pytest.approx(0.0, abs=1e-6) and grey.max() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(grey * 255.0, rescale_to_uint8(x[index, ..., 0]), atol=1e-3)


def test_tissuenet_options(tissuenet_root: Path, tmp_path: Path) -> None:
    datalist = build_tissuenet(tissuenet_root, channel="both", target="whole_cell", splits=["training"])
    assert _counts(datalist) == (3, 0, 0)
    assert Path(datalist["training"][0]["image"]).is_relative_to(tissuenet_root / "fewlabel_png")
    with np.load(tissuenet_root / "tissuenet_v1.1_train.npz") as npz:
        y = npz["y"]
    first = _read(datalist["training"][0]["image"])
    assert first[..., 1].max() == 0  # constant membrane channel -> zeros, not NaN noise
    assert first[..., 2].max() == 255 and first[..., 0].max() == 0
    assert _read(datalist["training"][1]["image"])[..., 1].max() == 255  # membrane in green
    for index, item in enumerate(datalist["training"]):
        np.testing.assert_array_equal(_read(item["label"]), (y[index, ..., 0] > 0).astype(np.uint8))
    membrane = _read(build_tissuenet(tissuenet_root, tmp_path / "m", channel="membrane", splits=["training"])
                     ["training"][1]["image"])
    assert (membrane == membrane[..., :1]).all() and membrane.max() == 255  # grey, like the nuclear default
    with pytest.raises(ValueError, match="channel"):
        build_tissuenet(tissuenet_root, channel="dapi")


def test_tissuenet_other_file_names_and_errors(tissuenet_root: Path, tmp_path: Path) -> None:
    for short in TN_SHAPES:
        (tissuenet_root / f"tissuenet_v1.1_{short}.npz").rename(tissuenet_root / f"my_{short}_split.npz")
    x, y = _tissuenet_arrays(*TN_SHAPES["test"], seed=5)  # Fortran-ordered arrays are read too
    np.savez(tissuenet_root / "my_test_split.npz", X=np.asfortranarray(x), y=np.asfortranarray(y))
    datalist = build_tissuenet(tissuenet_root, tmp_path / "o")
    assert _counts(datalist) == (3, 2, 2)
    for index, item in enumerate(datalist["testing"]):
        np.testing.assert_array_equal(_read(item["label"]), (y[index, ..., 1] > 0).astype(np.uint8))
    (tissuenet_root / "my_val_split.npz").unlink()
    with pytest.raises(DataError, match=r"tissuenet_v1\.1_val\.npz"):
        build_tissuenet(tissuenet_root, tmp_path / "o")
    with pytest.raises(DataError, match="no_such_dir"):
        build_tissuenet(tmp_path / "no_such_dir")
    np.savez(tissuenet_root / "my_val_split.npz", X=np.zeros((2, 8, 8, 2), np.float32))
    with pytest.raises(DataError, match="no array 'y'"):
        build_tissuenet(tissuenet_root, tmp_path / "o")


def test_rescale_to_uint8() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 -> NaN -> undefined uint8 cast on the way
        assert rescale_to_uint8(np.full((4, 4), 3.5)).max() == 0
        assert rescale_to_uint8(np.array([[np.nan, 1.0], [2.0, 3.0]])).max() == 255
    data = np.arange(1000, dtype=np.float64).reshape(10, 100)
    data[0, 0] = -1e9  # outliers are clipped, not stretching the range
    data[-1, -1] = 1e9
    out = rescale_to_uint8(data)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert 100 < out[5, 0] < 155  # the middle stays in the middle
    per_channel = rescale_to_uint8(np.stack([data, data * 0 + 1], -1), channel_axis=-1)
    assert per_channel[..., 0].max() == 255 and per_channel[..., 1].max() == 0


# --------------------------------------------------------------------------- COVID-QU-Ex

COVID_COUNTS = {"Train": 2, "Val": 1, "Test": 1}
COVID_CLASSES = ("COVID-19", "Non-COVID", "Normal")


def _covid_tree(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in COVID_COUNTS.items():
        for category in COVID_CLASSES:
            for i in range(n):
                name = f"{category.lower()}_{split}_{i}.png"
                _png(root / split / category / "images" / name, rng.integers(0, 255, (10, 10), dtype=np.uint8))
                mask = np.zeros((10, 10), np.uint8)
                mask[2:8, 1:4] = 255
                _png(root / split / category / "lung masks" / name, mask)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_covid_qu_ex_layout_levels(tmp_path: Path, level: int) -> None:
    outer = tmp_path / "COVID-QU-Ex"
    inner = outer / "Lung Segmentation Data" / "Lung Segmentation Data"
    _covid_tree(inner)
    src = [outer, outer / "Lung Segmentation Data", inner][level]
    datalist = build_covid_qu_ex(src, subset="lung")
    assert _counts(datalist) == (6, 3, 3)
    assert datalist["labels"]["1"] == "lung"
    _check_items(datalist)
    for split, folder in zip(SPLITS, COVID_COUNTS):
        for item in datalist[split]:
            image, label = Path(item["image"]), Path(item["label"])
            assert image.name == label.name and label.parent.name == "lung masks"
            assert image.parents[2].name == folder
            category = image.parents[1].name
            assert item["patient"] == f"{category}_{image.stem}"


def test_covid_qu_ex_classes_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "covid"
    _covid_tree(root)
    datalist = build_covid_qu_ex(root, classes=["Normal"])
    assert _counts(datalist) == (2, 1, 1)
    assert all(item["patient"].startswith("Normal_") for s in SPLITS for item in datalist[s])
    with pytest.raises(ValueError, match="Non-COVID"):
        build_covid_qu_ex(root, classes=["Pneumonia"])
    with pytest.raises(DataError, match="missing_dir"):
        build_covid_qu_ex(tmp_path / "missing_dir")
    with pytest.raises(DataError, match="Lung Segmentation Data"):
        build_covid_qu_ex(tmp_path, subset="lung")  # no Train folder at any accepted level
    mask_dir = root / "Val" / "COVID-19" / "lung masks"
    (mask_dir / "covid-19_Val_0.png").unlink()
    with pytest.raises(DataError, match=r"Val/COVID-19/images/covid-19_Val_0\.png"):
        build_covid_qu_ex(root)
    mask_dir.rmdir()
    with pytest.raises(DataError, match="Val/COVID-19/lung masks"):
        build_covid_qu_ex(root)
    assert _counts(build_covid_qu_ex(root, classes=("Normal", "Non-COVID"))) == (4, 2, 2)


# --------------------------------------------------------------------------- tiles


def _slides(root: Path, n: int, size: tuple[int, int] = (1000, 1000), ext: str = ".tif", dtype=np.uint8) -> None:
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        stem = f"P{i // 2}_slide{i}"
        info = np.iinfo(dtype)
        image = rng.integers(info.min, info.max, size, dtype=dtype)
        mask = np.zeros(size, np.uint8)
        mask[100:700, 200:900] = 255
        if ext == ".png":
            _png(root / "images" / f"{stem}.png", image)
        else:
            tifffile.imwrite(root / "images" / f"{stem}{ext}", image)
        tifffile.imwrite(root / "masks" / f"{stem}.tiff", mask)


def test_tile_grid() -> None:
    assert tile_grid(1000, 1000, 480) == (2, 2)
    assert tile_grid(1000, 1000, 480, pad=True) == (3, 3)
    assert tile_grid(1408, 1876, 480) == (2, 3)
    assert tile_grid(1408, 1876, 480, pad=True) == (3, 4)  # x 198 slides = the paper's 2376 tiles


@pytest.mark.parametrize("pad", [False, True])
def test_tiles_counts_and_slide_grouping(tmp_path: Path, pad: bool) -> None:
    src = tmp_path / "dm"
    _slides(src, 5)
    datalist = build_tiles(src, tmp_path / "tiles", pad=pad, seed=3)
    per_slide = 9 if pad else 4
    assert sum(_counts(datalist)) == 5 * per_slide
    assert datalist["training"] and datalist["testing"]
    _check_items(datalist)
    seen: dict[str, str] = {}
    for split in SPLITS:
        for item in datalist[split]:
            assert seen.setdefault(item["slide"], split) == split, "a slide's tiles are in two splits"
            assert Path(item["image"]).name == Path(item["label"]).name
            assert Path(item["image"]).name.startswith(item["slide"] + "_r")
            label, image = _read(item["label"]), _read(item["image"])
            assert label.shape == image.shape == (480, 480) and label.dtype == np.uint8
            assert set(np.unique(label)) <= {0, 1}
    for slide in seen:
        assert sum(item["slide"] == slide for s in SPLITS for item in datalist[s]) == per_slide
    if pad:  # the bottom-right tile holds 40x40 real pixels, the rest is zero padding
        corner = next(item for s in SPLITS for item in datalist[s] if item["image"].endswith("_r02_c02.png"))
        assert _read(corner["image"])[40:, :].max() == 0 and _read(corner["image"])[:40, :40].max() > 0
    else:  # mask rows 100:700, cols 200:900 of the slide -> tile (0, 0) sees rows 100:480, cols 200:480
        tile = next(item for s in SPLITS for item in datalist[s] if item["label"].endswith("_r00_c00.png"))
        expected = np.zeros((480, 480), np.uint8)
        expected[100:, 200:] = 1
        np.testing.assert_array_equal(_read(tile["label"]), expected)


def test_tiles_default_gives_the_papers_12_tiles_per_dermatomyositis_slide(tmp_path: Path) -> None:
    """MedSASS: 198 slides of 1408 x 1876 cut into 480 px tiles = 2376 tiles, i.e. 12 per slide."""
    src = tmp_path / "dm"
    _slides(src, 2, size=(1408, 1876))
    datalist = build_tiles(src, tmp_path / "tiles", fractions=(0.5, 0.5, 0.0))
    names: dict[str, set[str]] = {}
    for split in SPLITS:
        for item in datalist[split]:
            names.setdefault(item["slide"], set()).add(Path(item["image"]).stem.split("_", 2)[-1])
            assert _read(item["image"]).shape == (480, 480)
    assert {slide: len(tiles) for slide, tiles in names.items()} == {"P0_slide0": 12, "P0_slide1": 12}
    assert names["P0_slide0"] == {f"r{r:02d}_c{c:02d}" for r in range(3) for c in range(4)}
    dropped = build_tiles(src, tmp_path / "whole", pad=False, fractions=(0.5, 0.5, 0.0))
    assert sum(_counts(dropped)) == 2 * 6  # whole tiles only


def test_tiles_patient_grouping_and_defaults(tmp_path: Path) -> None:
    src = tmp_path / "dm"
    _slides(src, 6, size=(500, 500), ext=".png")
    datalist = build_tiles(src, tile_size=250, group_by="patient", patient_regex=r"^(P\d+)_", seed=0)
    assert sum(_counts(datalist)) == 6 * 4
    assert Path(datalist["training"][0]["image"]).is_relative_to(src / "fewlabel_tiles")
    owner: dict[str, str] = {}
    for split in SPLITS:
        for item in datalist[split]:
            assert item["patient"] in ("P0", "P1", "P2")
            assert owner.setdefault(item["patient"], split) == split
    again = build_tiles(src, tile_size=250, group_by="patient", patient_regex=r"^(P\d+)_", seed=0)
    assert again == datalist  # deterministic by seed
    with pytest.raises(DataError, match="slide0"):
        build_tiles(src, tile_size=250, group_by="patient", patient_regex=r"^Q(\d+)")


def test_tiles_uint16_and_multichannel(tmp_path: Path) -> None:
    src = tmp_path / "dm16"
    _slides(src, 1, size=(300, 300), dtype=np.uint16)
    datalist = build_tiles(src, tile_size=100, fractions=(1.0, 0.0, 0.0))
    assert _counts(datalist) == (9, 0, 0)
    tile = _read(datalist["training"][0]["image"])
    assert tile.dtype == np.uint8 and tile.min() == 0 and tile.max() == 255
    stack = np.zeros((2, 300, 300), np.uint16)
    stack[1, :150] = 4000
    tifffile.imwrite(src / "images" / "P0_slide0.tif", stack)
    with pytest.raises(DataError, match="channel=INDEX"):
        build_tiles(src, tile_size=100)
    datalist = build_tiles(src, tile_size=100, channel=1, fractions=(1.0, 0.0, 0.0))
    top = next(item for item in datalist["training"] if item["image"].endswith("_r00_c00.png"))
    bottom = next(item for item in datalist["training"] if item["image"].endswith("_r02_c00.png"))
    assert _read(top["image"]).min() == 255 and _read(bottom["image"]).max() == 0


def test_tiles_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="absent"):
        build_tiles(tmp_path / "absent")
    src = tmp_path / "dm"
    _slides(src, 2, size=(200, 200))
    with pytest.raises(DataError, match="labels_here"):
        build_tiles(src, masks_dir="labels_here")
    (src / "masks" / "P0_slide1.tiff").unlink()
    with pytest.raises(DataError, match=r"images/P0_slide1\.tif"):
        build_tiles(src, tile_size=100)
    tifffile.imwrite(src / "masks" / "P0_slide1.tiff", np.zeros((200, 180), np.uint8))
    with pytest.raises(DataError, match="P0_slide1.tif.*P0_slide1.tiff"):
        build_tiles(src, tile_size=100)


# --------------------------------------------------------------------------- registry


def test_build_datalist_round_trip(isic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert set(ADAPTERS) >= {"isic2017", "tissuenet", "covid_qu_ex", "tiles"}
    out = isic_root / "datalist.json"
    with caplog.at_level(logging.INFO, logger="fewlabel.data"):
        written = build_datalist("ISIC2017", isic_root, out)  # case-insensitive
    assert written == out
    assert "3 training, 2 validation, 2 testing" in caplog.text
    raw = json.loads(out.read_text())
    assert raw["training"][0]["image"] == "ISIC-2017_Training_Data/ISIC_0000000.jpg"  # relative
    for split in SPLITS:
        items = load_datalist(out, split)
        assert len(items) == ISIC_COUNTS[split]
        assert all(Path(i["image"]).is_file() and Path(i["label"]).is_file() for i in items)


def test_build_datalist_tiles_and_tissuenet(tissuenet_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "dm"
    _slides(src, 4, size=(200, 200))
    out = build_datalist("tiles", src, tmp_path / "lists" / "dm.json", tile_size=100, seed=1)
    total = sum(len(load_datalist(out, split)) for split in SPLITS)
    assert total == 16
    out = build_datalist("tissuenet", tissuenet_root, tissuenet_root / "tn.json", channel="both")
    assert [len(load_datalist(out, s)) for s in SPLITS] == [3, 2, 2]
    assert json.loads(out.read_text())["validation"][0]["label"] == "fewlabel_png/val/labels_nuclear/val_00000.png"


def test_build_datalist_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="covid_qu_ex.*isic2017.*tiles.*tissuenet"):
        build_datalist("kvasir", tmp_path, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
