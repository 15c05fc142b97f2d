"""COVID-19 Radiography Database adapter (MedSASS's X-ray data): layout, masks, the paper's split sizes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fewlabel.data.adapters import ADAPTERS, build_datalist
from fewlabel.data.adapters.covid_radiography import (
    COVID_RADIOGRAPHY_CLASSES,
    COVID_RADIOGRAPHY_COUNTS,
    COVID_RADIOGRAPHY_SPLIT,
    build_covid_radiography,
    covid_radiography_split,
    split_sizes,
)
from fewlabel.data.datalist import load_datalist
from fewlabel.errors import DataError
from fewlabel.transforms import CheckSameSize2Dd, LoadImage2Dd, LoadLabel2Dd

from testlib import read_png, write_png

SPLITS = ("training", "validation", "testing")
#: a small release: images per class (the real one has 3616 / 6012 / 10192 / 1345)
TINY = {"COVID": 7, "Lung_Opacity": 12, "Normal": 20, "Viral Pneumonia": 3}


def _release(root: Path, counts: dict[str, int] = TINY, image_size: int = 30, mask_size: int = 20) -> Path:
    """The published layout: <class>/images/<class>-<i>.png (grey) and <class>/masks/<same name> (0/255)."""
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        for i in range(1, n + 1):
            stem = f"{name}-{i}"
            write_png(root / name / "images" / f"{stem}.png", rng.integers(0, 256, (image_size, image_size), np.uint8))
            mask = np.zeros((mask_size, mask_size), np.uint8)
            mask[mask_size // 4: 3 * mask_size // 4, 2: mask_size // 2] = 255  # a left "lung"
            write_png(root / name / "masks" / f"{stem}.png", mask)
    (root / "COVID.metadata.xlsx").write_bytes(b"not read")
    return root


def test_paper_split_sizes_on_the_full_release() -> None:
    """21,165 images -> exactly 14,730 / 2,202 / 4,233, each class within one image of its share."""
    assert sum(COVID_RADIOGRAPHY_COUNTS.values()) == 21165
    assert split_sizes(21165, COVID_RADIOGRAPHY_SPLIT) == (14730, 2202, 4233)
    items = [{"image": f"{c}/{c}-{i}.png", "class": c} for c, n in COVID_RADIOGRAPHY_COUNTS.items() for i in range(n)]
    parts = covid_radiography_split(items, seed=0)
    assert [len(p) for p in parts] == [14730, 2202, 4233]
    assert sorted(i["image"] for p in parts for i in p) == sorted(i["image"] for i in items)  # a partition
    for part, size in zip(parts, (14730, 2202, 4233)):
        found = Counter(i["class"] for i in part)
        for name, n in COVID_RADIOGRAPHY_COUNTS.items():
            assert abs(found[name] - n * size / 21165) <= 1, (name, found[name], n * size / 21165)
    again = covid_radiography_split(list(reversed(items)), seed=0)
    assert again == parts  # deterministic, whatever the listing order
    other = covid_radiography_split(items, seed=1)
    assert [len(p) for p in other] == [14730, 2202, 4233] and other[2] != parts[2]
    plain = covid_radiography_split(items, seed=0, stratify=False)
    assert [len(p) for p in plain] == [14730, 2202, 4233]


def test_split_sizes_rounding() -> None:
    assert split_sizes(42, COVID_RADIOGRAPHY_SPLIT) == (29, 4, 9)  # 29.2 / 4.4 / 8.4: largest remainder
    assert split_sizes(10, (0.7, 0.1, 0.2)) == (7, 1, 2)
    assert split_sizes(0, (1, 1, 1)) == (0, 0, 0)
    with pytest.raises(ValueError, match="fractions"):
        split_sizes(5, (0, 0, 0))


@pytest.mark.parametrize("nested", [True, False])
def test_release_layout_to_loadable_datalist(tmp_path: Path, nested: bool) -> None:
    outer = tmp_path / "download"
    dataset = _release(outer / "COVID-19_Radiography_Dataset")
    datalist = build_covid_radiography(outer if nested else dataset, tmp_path / "out", seed=3)
    assert datalist["labels"] == {"0": "background", "1": "lung"}
    assert [len(datalist[s]) for s in SPLITS] == list(split_sizes(42, COVID_RADIOGRAPHY_SPLIT))
    seen = set()
    for split in SPLITS:
        for item in datalist[split]:
            image = Path(item["image"])
            assert image.parent.parent.name == item["class"] and image.stem == item["patient"]
            assert item["patient"] not in seen
            seen.add(item["patient"])
            label = Path(item["label"])
            # masks smaller than the image are resized to it and written as 0/1
            assert label == tmp_path / "out" / "masks" / item["class"] / f"{item['patient']}.png"
            mask = read_png(label)
            assert mask.shape == (30, 30) and set(np.unique(mask)) == {0, 1}
            assert mask[15, 5] == 1 and mask[15, 25] == 0  # the left lung stays left
    assert len(seen) == 42
    for split, size in zip(SPLITS, split_sizes(42, COVID_RADIOGRAPHY_SPLIT)):  # stratified
        found = Counter(i["class"] for i in datalist[split])
        assert all(abs(found[name] - n * size / 42) <= 1 for name, n in TINY.items()), (split, found)
    # what the bundles do with an item: load, check the sizes match
    item = datalist["training"][0]
    loaded = CheckSameSize2Dd(["image", "label"])(
        LoadLabel2Dd("label", binary=True)(LoadImage2Dd("image", channels=1)(dict(item)))
    )
    assert tuple(loaded["image"].shape) == (1, 30, 30) and tuple(loaded["label"].shape) == (1, 30, 30)
    again = build_covid_radiography(dataset, tmp_path / "out", seed=3)
    assert again == datalist


def test_same_size_masks_in_place_and_registry(tmp_path: Path) -> None:
    src = _release(tmp_path / "xray", {"COVID": 3, "Normal": 4}, image_size=16, mask_size=16)
    assert ADAPTERS["covid_radiography"] is ADAPTERS["covid19_radiography"] is build_covid_radiography
    out = build_datalist("covid-radiography", src, src / "datalist.json", classes=["COVID", "Normal"],
                         fractions=[0.5, 0.25, 0.25])
    raw = json.loads(out.read_text())
    assert raw["training"][0]["label"].startswith(raw["training"][0]["class"] + "/masks/")  # referenced in place
    assert not (src / "fewlabel_masks").exists()
    assert [len(load_datalist(out, s)) for s in SPLITS] == [3, 2, 2]  # 3.5 / 1.75 / 1.75: largest remainders


def test_wrong_layouts_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="absent"):
        build_covid_radiography(tmp_path / "absent")
    flat = tmp_path / "flat"
    write_png(flat / "images" / "a.png", np.zeros((4, 4), np.uint8))  # Kvasir-like layout, no class folders
    with pytest.raises(DataError, match="Lung_Opacity.*Viral Pneumonia"):
        build_covid_radiography(flat)
    src = _release(tmp_path / "xray", {"COVID": 2, "Normal": 2})
    with pytest.raises(DataError, match=r"Lung_Opacity/images"):
        build_covid_radiography(src)  # a class folder is missing: name it (or pass classes=)
    assert len(build_covid_radiography(src, classes=["COVID", "Normal"], fractions=(1, 0, 0))["training"]) == 4
    (src / "Normal" / "masks" / "Normal-2.png").unlink()
    with pytest.raises(DataError, match=r"Normal/images/Normal-2\.png.*Normal/masks/Normal-2\.png"):
        build_covid_radiography(src, classes=["COVID", "Normal"])
    for path in (src / "Normal" / "masks").iterdir():
        path.unlink()
    (src / "Normal" / "masks").rmdir()
    with pytest.raises(DataError, match=r"Normal/masks.*no lung masks"):
        build_covid_radiography(src, classes=["COVID", "Normal"])
    with pytest.raises(DataError, match=r"resize_masks=True"):
        build_covid_radiography(src, classes=["COVID"], resize_masks=False)  # 20 px masks, 30 px images
    with pytest.raises(ValueError, match="COVID-19.*Viral Pneumonia"):
        build_covid_radiography(src, classes=["COVID-19"])
    assert COVID_RADIOGRAPHY_CLASSES == ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
