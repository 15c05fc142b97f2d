"""Surgical dataset adapters (CholecSeg8k, m2caiSeg, colour masks) on hand-made masks in tmp_path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from fewlabel.data.adapters import ADAPTERS, build_datalist
from fewlabel.data.adapters.cholecseg8k import (
    CHOLECSEG8K_CLASSES,
    CHOLECSEG8K_WATERSHED,
    build_cholecseg8k,
    watershed_to_index,
)
from fewlabel.data.adapters.colour_masks import (
    build_colour_masks,
    colour_mask_to_index,
    load_class_table,
    shipped_class_tables,
    table_labels,
)
from fewlabel.data.adapters.m2caiseg import M2CAISEG_CLASS_TABLE, build_m2caiseg
from fewlabel.data.datalist import load_datalist
from fewlabel.errors import DataError

from testlib import read_png, write_png

SPLITS = ("training", "validation", "testing")


_png, _read = write_png, read_png


def test_registered() -> None:
    assert {"cholecseg8k", "m2caiseg", "colour_masks"} <= set(ADAPTERS)


# --------------------------------------------------------------------------- CholecSeg8k

# the 13 classes as documented with the dataset: grey value -> merged class expected
EXPECTED_13_TO_8 = {
    50: 0,  # black background
    11: 1,  # abdominal wall
    21: 2,  # liver
    13: 3,  # gastrointestinal tract
    12: 4,  # fat
    31: 5,  # grasper
    32: 5,  # L-hook electrocautery
    22: 6,  # gallbladder
    23: 7,  # connective tissue
    24: 7,  # blood
    25: 7,  # cystic duct
    33: 7,  # hepatic vein
    5: 7,  # liver ligament
}


def _watershed(rng: np.random.Generator, h: int = 72, w: int = 96, border: bool = True) -> np.ndarray:
    """A watershed mask using every class value, with the release's 1-px white frame and an unlabelled pixel.

    (The frame is 4.9% of a 72 x 96 mask, as the stray-pixel guard allows; 0.65% at 854 x 480.)
    """
    values = np.array(sorted(EXPECTED_13_TO_8), np.uint8)
    grey = values[rng.integers(0, len(values), (h, w))]
    grey[1, 1:1 + len(values)] = values  # every value at least once
    if border:
        grey[0, :] = grey[-1, :] = grey[:, 0] = grey[:, -1] = 255
        grey[5, 5] = 0
    return np.repeat(grey[..., None], 3, axis=-1)


def _cholec_root(tmp_path: Path, videos=("video01", "video09", "video12", "video17", "video20", "video52")) -> Path:
    root = tmp_path / "CholecSeg8k"
    rng = np.random.default_rng(0)
    for video in videos:
        for clip in (80, 160):
            for frame in (clip, clip + 1):
                folder = root / video / f"{video}_{clip:05d}"
                _png(folder / f"frame_{frame}_endo.png", rng.integers(0, 255, (72, 96, 3), dtype=np.uint8))
                ws = _watershed(rng)
                _png(folder / f"frame_{frame}_endo_watershed_mask.png", ws)
                _png(folder / f"frame_{frame}_endo_color_mask.png", rng.integers(0, 255, (72, 96, 3), dtype=np.uint8))
                _png(folder / f"frame_{frame}_endo_mask.png", ws)
    return root


def test_cholecseg8k_table_is_the_documented_one() -> None:
    assert {g: merged for g, (_, merged) in CHOLECSEG8K_WATERSHED.items()} == EXPECTED_13_TO_8
    assert len(CHOLECSEG8K_WATERSHED) == 13
    from fewlabel.data.phantoms import phantom_info

    assert CHOLECSEG8K_CLASSES == phantom_info("laparoscopy")["class_names"]  # demo data matches real data


def test_cholecseg8k_13_to_8_pixel_by_pixel(tmp_path: Path) -> None:
    root = _cholec_root(tmp_path, videos=("video01",))
    datalist = build_cholecseg8k(root, fractions=(1.0, 0.0, 0.0))
    items = datalist["training"]
    assert len(items) == 4 and not datalist["validation"] and not datalist["testing"]
    assert datalist["labels"] == {str(i): n for i, n in enumerate(CHOLECSEG8K_CLASSES)}
    for item in items:
        image = Path(item["image"])
        assert image.name.endswith("_endo.png") and item["video"] == item["patient"] == "video01"
        grey = _read(image.with_name(image.name.replace("_endo.png", "_endo_watershed_mask.png")))[..., 0]
        label = _read(item["label"])
        assert label.dtype == np.uint8 and label.shape == grey.shape
        assert Path(item["label"]).is_relative_to(root / "fewlabel_masks" / "video01")
        expected = np.vectorize(lambda g: EXPECTED_13_TO_8.get(int(g), 0))(grey)  # 0 / 255 -> background
        assert np.array_equal(label, expected)
        assert set(np.unique(grey)) >= set(EXPECTED_13_TO_8)  # the test did use every value


def test_cholecseg8k_stray_values_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ws = _watershed(rng)
    assert watershed_to_index(ws, stray_label=255)[0, 0] == 255  # optional ignore value
    with pytest.raises(DataError, match=r"x\.png.*255"):
        watershed_to_index(ws, "x.png", stray_label=None)
    many = ws.copy()
    many[:12] = 255
    with pytest.raises(DataError, match="stray"):
        watershed_to_index(many, "many.png")
    unknown = ws.copy()
    unknown[4, 4] = 40
    with pytest.raises(DataError, match=r"odd\.png.*40 x 1 px"):
        watershed_to_index(unknown, "odd.png")
    colour = ws.copy()
    colour[2, 2] = (255, 114, 114)
    with pytest.raises(DataError, match="color_mask"):
        watershed_to_index(colour, "frame_color_mask.png")

    root = _cholec_root(tmp_path, videos=("video01", "video02"))
    bad = root / "video02" / "video02_00080" / "frame_81_endo_watershed_mask.png"
    _png(bad, unknown)
    with pytest.raises(DataError, match="frame_81_endo_watershed_mask.png"):
        build_cholecseg8k(root)
    bad.unlink()
    with pytest.raises(DataError, match="no watershed mask.*frame_81_endo_watershed_mask.png"):
        build_cholecseg8k(root)
    with pytest.raises(DataError, match="nowhere"):
        build_cholecseg8k(tmp_path / "nowhere")


def test_cholecseg8k_video_level_split(tmp_path: Path) -> None:
    root = _cholec_root(tmp_path)
    for seed in range(3):
        datalist = build_cholecseg8k(root, seed=seed)
        videos = {s: {it["video"] for it in datalist[s]} for s in SPLITS}
        for i, a in enumerate(SPLITS):
            for b in SPLITS[i + 1:]:
                assert not videos[a] & videos[b], (seed, a, b)
        assert sum(len(datalist[s]) for s in SPLITS) == 6 * 4
        assert videos["training"] and videos["testing"]
        for s in SPLITS:  # every frame of a video stays with it
            for video in videos[s]:
                assert sum(it["video"] == video for it in datalist[s]) == 4

    fixed = build_cholecseg8k(root, test_videos=["video12", "video52"], val_videos=["video20"])
    assert {it["video"] for it in fixed["testing"]} == {"video12", "video52"}
    assert {it["video"] for it in fixed["validation"]} == {"video20"}
    assert {it["video"] for it in fixed["training"]} == {"video01", "video09", "video17"}
    with pytest.raises(DataError, match="video99"):
        build_cholecseg8k(root, test_videos=["video99"])
    with pytest.raises(DataError, match="both"):
        build_cholecseg8k(root, test_videos=["video12"], val_videos=["video12"])


def test_cholecseg8k_through_build_datalist(tmp_path: Path) -> None:
    root = _cholec_root(tmp_path, videos=("video01", "video02", "video03"))
    out = build_datalist("CholecSeg8k", root, tmp_path / "cholec.json", out_dir=tmp_path / "labels", seed=1)
    total = 0
    for split in SPLITS:
        for item in load_datalist(out, split):
            total += 1
            assert Path(item["image"]).is_file() and Path(item["label"]).is_file()
    assert total == 12
    assert (tmp_path / "labels" / "video01" / "video01_00080" / "frame_80.png").is_file()


# --------------------------------------------------------------------------- m2caiSeg

TABLE7 = ["Black", "Bipolar", "Clip", "Clipper", "Grasper", "Hook", "Irrigator", "Scissors", "Specimen-bag",
          "Trocars", "Artery", "Bile", "Blood", "Fat", "Gallbladder", "Intestine", "Liver", "Unknown", "Upperwall"]


def _m2cai_root(tmp_path: Path, gt_suffix: str = "_gt") -> tuple[Path, dict[str, np.ndarray]]:
    """Fake release: every class colour in every mask; returns the expected index map per stem."""
    root = tmp_path / "m2caiSeg dataset"
    colours = np.array([c["rgb"] for c in M2CAISEG_CLASS_TABLE], np.uint8)
    rng = np.random.default_rng(2)
    expected = {}
    for folder, stems in (("train", ["0", "1125", "25025"]), ("trainval", ["2200"]), ("test", ["15975", "26000"])):
        for stem in stems:
            index = rng.integers(0, 19, (10, 14)).astype(np.uint8)
            index[0, :14] = np.arange(14)
            index[1, :5] = np.arange(14, 19)
            _png(root / folder / "images" / f"{stem}.jpg", rng.integers(0, 255, (10, 14, 3), dtype=np.uint8))
            _png(root / folder / "groundtruth" / f"{stem}{gt_suffix}.png", colours[index])
            expected[stem] = index
    return root, expected


def test_m2caiseg_classes_are_table7_with_distinct_colours() -> None:
    assert [c["name"].lower() for c in M2CAISEG_CLASS_TABLE] == [n.lower() for n in TABLE7]
    assert len({tuple(c["rgb"]) for c in M2CAISEG_CLASS_TABLE}) == 19
    assert M2CAISEG_CLASS_TABLE[0]["rgb"] == [0, 0, 0]  # class 0 = black area outside the view
    assert all(v in (0, 85, 170, 255) for c in M2CAISEG_CLASS_TABLE for v in c["rgb"])


@pytest.mark.parametrize("gt_suffix", ["_gt", ""])
def test_m2caiseg_colours_pixel_by_pixel_and_official_split(tmp_path: Path, gt_suffix: str) -> None:
    root, expected = _m2cai_root(tmp_path, gt_suffix)
    datalist = build_m2caiseg(tmp_path)  # a folder above the dataset folder is accepted
    assert [Path(it["image"]).stem for it in datalist["training"]] == ["0", "1125", "25025"]
    assert [Path(it["image"]).stem for it in datalist["validation"]] == ["2200"]
    assert [Path(it["image"]).stem for it in datalist["testing"]] == ["15975", "26000"]
    assert list(datalist["labels"].values()) == [c["name"] for c in M2CAISEG_CLASS_TABLE]
    for split in SPLITS:
        for item in datalist[split]:
            label = _read(item["label"])
            assert np.array_equal(label, expected[Path(item["image"]).stem])
            assert Path(item["label"]).is_relative_to(tmp_path / "fewlabel_masks")
    merged = build_m2caiseg(root, trainval="training", out_dir=tmp_path / "out")
    assert len(merged["training"]) == 4 and not merged["validation"]


def test_m2caiseg_groups_frames_by_a_given_video_map_and_finds_leaks(tmp_path: Path, caplog) -> None:
    from fewlabel.data.checks import check_group_leakage, groups_in_several_splits

    root, _ = _m2cai_root(tmp_path)
    # no public frame -> video table: per-frame groups, and a warning that the leakage check cannot work
    with caplog.at_level(logging.WARNING, logger="fewlabel.data"):
        per_frame = build_m2caiseg(root, out_dir=tmp_path / "a")
    assert per_frame["grouping"] == "frame" and "leakage check" in caplog.text and "video_map" in caplog.text
    assert groups_in_several_splits(per_frame) == {}  # per frame, a leak cannot show
    # a CSV mapping: videos as groups; disjoint splits pass the check
    good = tmp_path / "videos.csv"
    good.write_text("frame,video\n0,v1\n1125,v1\n25025,v2\n2200.jpg,v3\n15975,v4\n26000,v4\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fewlabel.data"):
        grouped = build_m2caiseg(root, out_dir=tmp_path / "b", video_map=good)
    assert "leakage check" not in caplog.text and grouped["grouping"] == "video"
    assert [it["patient"] for it in grouped["training"]] == ["v1", "v1", "v2"]
    assert [it["video"] for it in grouped["validation"] + grouped["testing"]] == ["v3", "v4", "v4"]
    check_group_leakage(grouped)
    # a video in training and testing is found, named, and stops the adapter unless told to warn
    leaky = tmp_path / "leaky.csv"
    leaky.write_text("0,v1\n1125,v1\n25025,v2\n2200,v3\n15975,v1\n26000,v4\n")
    with pytest.raises(DataError, match=r"v1 \(training, testing\)"):
        build_m2caiseg(root, out_dir=tmp_path / "c", video_map=leaky)
    kept = build_m2caiseg(root, out_dir=tmp_path / "c", video_map=leaky, on_leakage="warn")
    assert groups_in_several_splits(kept) == {"v1": ["training", "testing"]}
    with pytest.raises(DataError, match=r"v1 \(training, testing\)"):
        check_group_leakage(kept)
    # a filename regex instead of a table; frames the mapping misses are named
    regex = build_m2caiseg(root, out_dir=tmp_path / "d", video_regex=r"^(\d)", on_leakage="warn")
    assert [it["patient"] for it in regex["testing"]] == ["1", "2"]
    assert set(groups_in_several_splits(regex)) == {"1", "2"}
    leaky.write_text("0,v1\n")
    with pytest.raises(DataError, match=r"1125\.jpg is not in the video_map"):
        build_m2caiseg(root, out_dir=tmp_path / "e", video_map=leaky)


def test_m2caiseg_off_palette_colours(tmp_path: Path) -> None:
    root, expected = _m2cai_root(tmp_path)
    gt = root / "train" / "groundtruth" / "1125_gt.png"
    mask = _read(gt).copy()
    mask[3, 3] = (85 + 30, 170 - 20, 10)  # an anti-aliased liver-ish pixel
    _png(gt, mask)
    datalist = build_m2caiseg(root)  # nearest class colour, as the authors' label refinement
    item = next(it for it in datalist["training"] if Path(it["image"]).stem == "1125")
    assert _read(item["label"])[3, 3] == 16  # liver
    with pytest.raises(DataError, match=r"1125_gt\.png.*\(115, 150, 10\) x 1 px"):
        build_m2caiseg(root, tolerance=0)
    # a photo (or a wrong class table) is rejected, not snapped
    _png(gt, np.random.default_rng(0).integers(0, 255, mask.shape, dtype=np.uint8))
    with pytest.raises(DataError, match=r"1125_gt\.png.*not exactly a class colour"):
        build_m2caiseg(root)
    gt.unlink()
    with pytest.raises(DataError, match=r"1125\.jpg has no mask"):
        build_m2caiseg(root)


def test_m2caiseg_own_class_table_and_missing_layout(tmp_path: Path) -> None:
    root, expected = _m2cai_root(tmp_path)
    table = [dict(c) for c in M2CAISEG_CLASS_TABLE]
    table[0], table[1] = table[1], table[0]  # swap black and bipolar
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"classes": table}))
    datalist = build_m2caiseg(root, class_table=path, out_dir=tmp_path / "own")
    label = _read(datalist["testing"][0]["label"])
    swap = np.array([1, 0, *range(2, 19)], np.uint8)
    assert np.array_equal(label, swap[expected[Path(datalist["testing"][0]["image"]).stem]])
    with pytest.raises(DataError, match="train"):
        build_m2caiseg(tmp_path / "own")


# --------------------------------------------------------------------------- colour tables and masks


def test_shipped_inhouse_table() -> None:
    assert "surgical_semiseg_inhouse" in shipped_class_tables()
    table = load_class_table("surgical_semiseg_inhouse")
    assert len(table) == 20
    assert len({tuple(c["rgb"]) for c in table}) == 20
    assert len({c["name"] for c in table}) == 20
    # the paper's Table 3, in its order
    assert [c["name"] for c in table][:3] == ["abdominal wall", "background", "cholangiogram catheter"]
    assert table[1]["rgb"] == [200, 200, 200] and table[13] == {**table[13], "name": "liver", "rgb": [255, 0, 0]}
    assert table[-1]["name"] == "sucker irrigator" and table[-1]["rgb"] == [100, 0, 130]
    assert table_labels("surgical_semiseg_inhouse")["19"] == "sucker irrigator"


def test_class_table_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="share the colour"):
        load_class_table([{"name": "a", "rgb": [1, 2, 3]}, {"name": "b", "rgb": [1, 2, 3]}])
    with pytest.raises(DataError, match="both named"):
        load_class_table([{"name": "a", "rgb": [1, 2, 3]}, {"name": "a", "rgb": [1, 2, 4]}])
    with pytest.raises(DataError, match=r"rgb.*0\.\.255"):
        load_class_table([{"name": "a", "rgb": [1, 2, 300]}])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        load_class_table(bad)
    with pytest.raises(DataError, match="missing.json"):
        load_class_table(tmp_path / "missing.json")


def test_colour_mask_to_index_exact_tolerance_and_unknown() -> None:
    table = [
        {"name": "bg", "rgb": [0, 0, 0]}, {"name": "liver", "rgb": [255, 0, 0]}, {"name": "fat", "rgb": [255, 197, 50]}
    ]
    mask = np.zeros((4, 5, 3), np.uint8)
    mask[1, :] = (255, 0, 0)
    mask[2, :3] = (255, 197, 50)
    expected = np.zeros((4, 5), np.uint8)
    expected[1, :] = 1
    expected[2, :3] = 2
    out = colour_mask_to_index(mask, table, "m.png")
    assert out.dtype == np.uint8 and np.array_equal(out, expected)
    # JPEG-ish: off by a few levels
    noisy = mask.astype(int) + np.random.default_rng(0).integers(-3, 4, mask.shape)
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    with pytest.raises(DataError):
        colour_mask_to_index(noisy, table, "m.png")
    assert np.array_equal(colour_mask_to_index(noisy, table, "m.png", tolerance=3), expected)
    # an unknown colour: named with its pixel count, never class 0
    mask[3, 0] = (10, 200, 10)
    mask[3, 1:3] = (0, 0, 250)
    with pytest.raises(DataError) as err:
        colour_mask_to_index(mask, table, "cases/frame_07.png")
    text = str(err.value)
    assert "cases/frame_07.png" in text and "(0, 0, 250) x 2 px" in text and "(10, 200, 10) x 1 px" in text
    assert text.index("(0, 0, 250)") < text.index("(10, 200, 10)")  # most frequent first
    # many unknown colours: the first 5 and a count of the rest
    many = np.stack([*np.meshgrid(np.arange(3), np.arange(3), indexing="ij"), np.full((3, 3), 9)], -1).astype(np.uint8)
    with pytest.raises(DataError, match="and 4 more"):
        colour_mask_to_index(many + 40, table, "many.png")


def test_build_colour_masks_with_shipped_table(tmp_path: Path) -> None:
    table = load_class_table("surgical_semiseg_inhouse")
    colours = np.array([c["rgb"] for c in table], np.uint8)
    rng = np.random.default_rng(3)
    src = tmp_path / "inhouse"
    expected = {}
    for video in range(6):
        for frame in range(3):
            stem = f"vid{video:02d}_{frame:05d}"
            index = rng.integers(0, 20, (8, 9)).astype(np.uint8)
            _png(src / "images" / f"{stem}.png", rng.integers(0, 255, (8, 9, 3), dtype=np.uint8))
            _png(src / "masks" / f"{stem}_mask.png", colours[index])
            expected[stem] = index
    datalist = build_colour_masks(
        src, "surgical_semiseg_inhouse", mask_suffix="_mask", group_regex=r"^(vid\d+)_", seed=2
    )
    assert datalist["labels"]["1"] == "background" and len(datalist["labels"]) == 20
    groups = {s: {it["patient"] for it in datalist[s]} for s in SPLITS}
    assert sum(len(g) for g in groups.values()) == 6 and len(set().union(*groups.values())) == 6  # disjoint
    for split in SPLITS:
        for item in datalist[split]:
            stem = Path(item["image"]).stem
            assert item["patient"] == stem[:5]
            assert np.array_equal(_read(item["label"]), expected[stem])
    # through build_datalist, with the table as a JSON file
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table))
    out = build_datalist("colour-masks", src, tmp_path / "dl.json", class_table=str(path), mask_suffix="_mask")
    assert sum(len(load_datalist(out, s)) for s in SPLITS) == 18
    with pytest.raises(DataError, match="does not match"):
        build_colour_masks(src, table, mask_suffix="_mask", group_regex=r"^patient(\d+)")
    (src / "masks" / "vid03_00001_mask.png").unlink()
    with pytest.raises(DataError, match=r"vid03_00001\.png has no mask"):
        build_colour_masks(src, table, mask_suffix="_mask")


def test_semantic_drone_grey_masks_through_the_shipped_table(tmp_path: Path) -> None:
    """MedSASS Table 10: the Semantic Drone Dataset's label_images_semantic (grey class ids 0-23) read with the
    shipped 'semantic_drone' table; MedSASS's binary label loading then makes every class but 'unlabeled'
    foreground."""
    from fewlabel.transforms.io import LoadLabel2D

    table = load_class_table("semantic_drone")
    assert [c["name"] for c in table][:2] == ["unlabeled", "paved-area"] and table[-1]["name"] == "conflicting"
    assert len(table) == 24 and all(c["rgb"] == [i, i, i] for i, c in enumerate(table))
    src = tmp_path / "semantic_drone_dataset"
    rng = np.random.default_rng(0)
    expected = {}
    for n in range(5):
        stem = f"{n:03d}"
        index = rng.integers(0, 24, (6, 9)).astype(np.uint8)
        index[0, 0], index[0, 1] = 0, 23
        _png(src / "original_images" / f"{stem}.png", rng.integers(0, 255, (6, 9, 3), dtype=np.uint8))
        _png(src / "label_images_semantic" / f"{stem}.png", index)
        expected[stem] = index
    out = build_datalist("colour_masks", src, tmp_path / "dl.json", class_table="semantic_drone",
                         images_dir="original_images", masks_dir="label_images_semantic")
    items = [it for s in SPLITS for it in load_datalist(out, s)]
    assert len(items) == 5
    for item in items:
        index = expected[Path(item["image"]).stem]
        assert np.array_equal(_read(item["label"]), index)
        foreground = np.asarray(LoadLabel2D(binary=True)(item["label"]))[0]
        assert np.array_equal(foreground, (index > 0).astype(np.float32))
