"""SLiPPA data: contour drawing, the P2ILF and L3D adapters on hand-made trees, the liver-landmark phantom."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from fewlabel.data.adapters import ADAPTERS, build_datalist
from fewlabel.data.adapters.l3d import build_l3d, read_labelme_contours
from fewlabel.data.adapters.p2ilf import build_p2ilf, p2ilf_patient_id, read_p2ilf_contours
from fewlabel.data.datalist import load_datalist
from fewlabel.data.landmarks import (
    LANDMARK_CLASSES,
    draw_landmark_mask,
    draw_landmark_masks,
    landmark_class,
)
from fewlabel.data.phantoms import make_phantom, phantom_info
from fewlabel.errors import DataError

SPLITS = ("training", "validation", "testing")


def _distance_to_polyline(shape: tuple[int, int], points_xy: list[tuple[float, float]]) -> np.ndarray:
    """Euclidean distance of every pixel centre to an open polyline given in (x, y)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    best = np.full(shape, np.inf)
    for (x0, y0), (x1, y1) in zip(points_xy, points_xy[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
        best = np.minimum(best, np.hypot(xx - x0 - t * dx, yy - y0 - t * dy))
    return best


# --------------------------------------------------------------------------- drawing


def test_classes_and_names():
    assert LANDMARK_CLASSES == ("background", "silhouette", "ridge", "ligament")
    for name, index in [("Silhouette", 1), ("SILHOUETTE", 1), ("Ridge", 2), ("rigde", 2), ("Ligament", 3),
                        ("falciform ligament", 3), ("Falciform_Ligament", 3), ("falciform", 3), (2, 2), ("3", 3)]:
        assert landmark_class(name) == index, name
    for bad in ("tumour", 0, 4, "background", ""):
        with pytest.raises(ValueError):
            landmark_class(bad)


def test_open_polyline_has_the_thickness_and_no_closing_edge():
    points = [(10, 10), (50, 10), (50, 50)]  # an L: closing it would add the diagonal (10,10)-(50,50)
    thickness = 5
    mask = draw_landmark_mask([("ridge", np.array(points, float))], (64, 64), thickness=thickness)
    assert mask.dtype == np.uint8 and mask.shape == (64, 64)
    assert set(np.unique(mask).tolist()) == {0, 2}
    dist = _distance_to_polyline((64, 64), points)
    assert (mask[dist <= (thickness - 1) / 2] == 2).all()  # the whole core of the line is drawn
    assert (mask[dist > thickness / 2 + 1] == 0).all()  # nothing well outside it
    # open: the diagonal between the first and last point stays background
    assert mask[30, 30] == 0 and mask[40, 20] == 0


def test_thickness_12_at_native_resolution():
    mask = draw_landmark_mask([("silhouette", [(100, 540), (1800, 540)])], (1080, 1920))
    rows = np.nonzero(mask[:, 960])[0]
    assert 12 <= len(rows) <= 13 and rows.min() <= 540 <= rows.max()
    assert np.array_equal(rows, np.arange(rows.min(), rows.max() + 1))


def test_precedence_ligament_over_ridge_over_silhouette_whatever_the_order():
    horizontal = np.array([(0, 20), (39, 20)], float)
    vertical = np.array([(20, 0), (20, 39)], float)
    for contours, top in (
        ([("ligament", vertical), ("silhouette", horizontal)], 3),
        ([("silhouette", horizontal), ("ligament", vertical)], 3),
        ([("ridge", horizontal), ("silhouette", vertical)], 2),
        ([(3, horizontal), (2, vertical)], 3),
    ):
        mask = draw_landmark_mask(contours, (40, 40), thickness=3)
        assert mask[20, 20] == top
    masks = draw_landmark_masks([("ligament", vertical), ("silhouette", horizontal)], (40, 40), thickness=3)
    assert masks.shape == (3, 40, 40) and masks.dtype == bool
    assert masks[0, 20, 20] and masks[2, 20, 20] and not masks[1].any()  # no precedence: in both channels
    assert masks[0, 20, 5] and not masks[2, 20, 5]


def test_points_outside_are_clipped_short_contours_and_scale():
    mask = draw_landmark_mask([("ridge", [(-500.0, 8.0), (900.0, 8.0)])], (16, 32), thickness=1)
    assert (mask[8] == 2).all() and mask.sum() == 2 * 32
    dot = draw_landmark_mask([("ligament", [(10.0, 10.0)]), ("ridge", np.zeros((0, 2)))], (21, 21), thickness=5)
    assert dot[10, 10] == 3 and 9 <= (dot > 0).sum() <= 30 and set(np.unique(dot)) == {0, 3}
    full = draw_landmark_mask([("ridge", [(0.0, 40.0), (120.0, 40.0), (120.0, 0.0)])], (32, 64), thickness=3, scale=0.5)
    half = draw_landmark_mask([("ridge", [(0.0, 20.0), (60.0, 20.0), (60.0, 0.0)])], (32, 64), thickness=3)
    assert np.array_equal(full, half) and full.any()


def test_nan_points_raise_data_error_naming_the_source():
    with pytest.raises(DataError, match="frame_007.xml"):
        draw_landmark_mask([("ridge", [(1.0, 2.0), (np.nan, 3.0)])], (8, 8), source="frame_007.xml")
    with pytest.raises(ValueError):
        draw_landmark_mask([("ridge", [(1.0, 2.0, 3.0)])], (8, 8))


# --------------------------------------------------------------------------- P2ILF


def _jpg(path: Path, width: int, height: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=80)
    return path


def _xml_p2ilf_style(contours: list[tuple[str, list[tuple[int, int]]]]) -> str:
    """The P2ILF form: <contourType> + <imagePoints><x>..</x><y>..</y>, plus model points to be ignored."""
    body = "".join(
        f"<contour><contourType>{kind}</contourType><imagePoints>"
        f"<x>{', '.join(str(x) for x, _ in pts)}</x><y>{', '.join(str(y) for _, y in pts)}</y></imagePoints>"
        "<modelPoints><vertices>1 2 3</vertices></modelPoints></contour>"
        for kind, pts in contours
    )
    return f'<?xml version="1.0"?>\n<contours>{body}</contours>\n'


def _xml_point_style(contours: list[tuple[str, list[tuple[int, int]]]]) -> str:
    """The other accepted form: a type attribute and <point> elements (attributes, then child elements)."""
    body = ""
    for kind, pts in contours:
        (x0, y0), rest = pts[0], pts[1:]
        inner = f'<point x="{x0}" y="{y0}"/>' + "".join(f"<point><x>{x}</x><y>{y}</y></point>" for x, y in rest)
        body += f'<contour type="{kind}">{inner}</contour>'
    return f"<annotation>{body}</annotation>"


# the same three landmarks for every frame (in a 64 x 36 frame; scaled to other sizes)
_FRAME_CONTOURS = [
    ("Silhouette", [(2, 30), (60, 30)]),
    ("Ridge", [(2, 8), (60, 8)]),
    ("Ligament", [(32, 12), (32, 26)]),
    ("Tumour", [(5, 5), (6, 6)]),  # no landmark: skipped with a warning
]


def _p2ilf_tree(root: Path) -> Path:
    """Patients 1, 2, 3, 5 under a release wrapper folder (folder names in three styles); patient4 as test."""
    release = root / "P2ILF_MICCAI2022_Edition1"
    sizes = {"patient1": (64, 36), "Patient_2": (48, 27), "P3": (64, 36), "patient05": (80, 45)}
    for k, (folder, (w, h)) in enumerate(sizes.items()):
        scale = w / 64
        contours = [(kind, [(round(x * scale), round(y * scale)) for x, y in pts]) for kind, pts in _FRAME_CONTOURS]
        writer = _xml_point_style if folder == "Patient_2" else _xml_p2ilf_style
        for frame in ("f01", "f02"):
            _jpg(release / folder / "images" / f"{frame}.jpg", w, h, seed=k)
            xml = release / folder / "2D-3D_contours" / f"{frame}.xml"
            xml.parent.mkdir(parents=True, exist_ok=True)
            xml.write_text(writer(contours))
    _jpg(release / "P3" / "images" / "f03_no_annotation.jpg", 64, 36)
    (release / "P3" / "camera_calibration.xml").write_text("<calibration/>")  # no frame of that stem: ignored
    test = root / "P2ILF_testData"
    _jpg(test / "patient4" / "images" / "t01.jpg", 64, 36)
    (test / "patient4" / "2D-3D_contours").mkdir(parents=True)
    (test / "patient4" / "2D-3D_contours" / "t01.xml").write_text(_xml_p2ilf_style(_FRAME_CONTOURS[:2]))
    return release


def test_patient_ids():
    for name in ("patient1", "Patient_1", "patient-01", "P1", "p1", "1", 1):
        assert p2ilf_patient_id(name) == "patient1", name
    for name in ("images", "patient4_p2ilf", "2D-3D_contours"):
        assert p2ilf_patient_id(name) is None


def test_p2ilf_patient_split_native_size_and_classes(tmp_path, caplog):
    release = _p2ilf_tree(tmp_path)
    with caplog.at_level(logging.WARNING, logger="fewlabel.data"):
        datalist = build_p2ilf(tmp_path, out_dir=tmp_path / "out", thickness=3, test_dir=tmp_path / "P2ILF_testData")
    assert datalist["labels"] == {"0": "background", "1": "silhouette", "2": "ridge", "3": "ligament"}
    patients = {s: sorted({it["patient"] for it in datalist[s]}) for s in SPLITS}
    assert patients == {"training": ["patient3", "patient5"], "validation": ["patient1", "patient2"],
                        "testing": ["patient4"]}
    assert len(datalist["validation"]) == 4 and len(datalist["training"]) == 4 and len(datalist["testing"]) == 1
    # the frame without XML is left out, with a warning that counts it; the unknown type is warned about
    assert not any("f03_no_annotation" in it["image"] for s in SPLITS for it in datalist[s])
    assert any("1 frame(s)" in r.getMessage() and "patient3" in r.getMessage() for r in caplog.records)
    assert any("Tumour" in r.getMessage() for r in caplog.records)
    for item in datalist["training"] + datalist["validation"]:
        label = Path(item["label"])
        assert label == tmp_path / "out" / "masks" / item["patient"] / f"{Path(item['image']).stem}.png"
        with Image.open(item["image"]) as im:
            width, height = im.size
        mask = np.asarray(Image.open(label))
        assert mask.shape == (height, width) and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) == {0, 1, 2, 3}
        s = width / 64
        assert mask[round(30 * s), round(10 * s)] == 1  # silhouette
        assert mask[round(8 * s), round(10 * s)] == 2  # ridge
        assert mask[round(19 * s), round(32 * s)] == 3  # ligament
        assert mask[round(19 * s), round(10 * s)] == 0
    test_mask = np.asarray(Image.open(datalist["testing"][0]["label"]))
    assert set(np.unique(test_mask).tolist()) == {0, 1, 2}
    assert release.is_dir()


def test_p2ilf_masks_are_skipped_when_up_to_date_and_redrawn_otherwise(tmp_path):
    _p2ilf_tree(tmp_path)
    out = tmp_path / "out"
    first = build_p2ilf(tmp_path, out_dir=out, thickness=3)
    label = Path(first["validation"][0]["label"])
    before = label.stat().st_mtime_ns
    os.utime(label, ns=(before - 10**9, before - 10**9))  # make a rewrite detectable
    build_p2ilf(tmp_path, out_dir=out, thickness=3)
    assert label.stat().st_mtime_ns == before - 10**9
    thin = np.asarray(Image.open(label)).copy()
    build_p2ilf(tmp_path, out_dir=out, thickness=5)  # another thickness: redrawn
    assert (np.asarray(Image.open(label)) > 0).sum() > (thin > 0).sum()


def test_p2ilf_errors(tmp_path):
    release = _p2ilf_tree(tmp_path)
    with pytest.raises(DataError, match="not found"):
        build_p2ilf(tmp_path / "missing")
    with pytest.raises(DataError, match="val_patients"):
        build_p2ilf(tmp_path, out_dir=tmp_path / "out", val_patients=(1, 7))
    with pytest.raises(DataError, match="both"):
        build_p2ilf(tmp_path, out_dir=tmp_path / "out", test_dir=release / "P3")
    bad = release / "patient05" / "2D-3D_contours" / "f02.xml"
    bad.write_text("<contours><contour><contourType>Ridge</contourType>")  # truncated
    with pytest.raises(DataError, match="f02.xml"):
        build_p2ilf(tmp_path, out_dir=tmp_path / "out")
    bad.write_text("<contours><contour><contourType>Ridge</contourType><imagePoints><x>1,2,3</x><y>1,2</y>"
                   "</imagePoints></contour></contours>")
    with pytest.raises(DataError, match="f02.xml"):
        build_p2ilf(tmp_path, out_dir=tmp_path / "out")
    bad.write_text("<contours><contour><contourType>Ridge</contourType><imagePoints><x>1,nan</x><y>1,2</y>"
                   "</imagePoints></contour></contours>")
    with pytest.raises(DataError, match="f02.xml"):
        build_p2ilf(tmp_path, out_dir=tmp_path / "out")
    bad.write_text("<camera><fx>1000</fx></camera>")  # parses, but is no contour file
    with pytest.raises(DataError, match="f02.xml.*contour"):
        read_p2ilf_contours(bad)


def test_p2ilf_through_build_datalist_writes_json(tmp_path):
    _p2ilf_tree(tmp_path)
    assert "p2ilf" in ADAPTERS and "l3d" in ADAPTERS
    out_json = tmp_path / "lists" / "p2ilf.json"
    path = build_datalist("P2ILF", tmp_path, out_json, out_dir=tmp_path / "lists" / "masks", thickness=3)
    content = json.loads(Path(path).read_text())
    assert content["labels"]["3"] == "ligament"
    assert all(not Path(it["label"]).is_absolute() for it in content["validation"])  # under the JSON's folder
    items = load_datalist(path, "validation")
    assert {it["patient"] for it in items} == {"patient1", "patient2"}
    assert all(Path(it["image"]).is_file() and Path(it["label"]).is_file() for it in items)


# --------------------------------------------------------------------------- L3D


def _labelme(shapes: list[dict], height: int | None = None, width: int | None = None) -> str:
    content: dict = {"version": "5.0.1", "shapes": shapes, "imagePath": "x.jpg"}
    if height is not None:
        content.update(imageHeight=height, imageWidth=width)
    return json.dumps(content)


_SHAPES = [
    {"label": "silhouette", "points": [[2, 30], [60, 30]], "shape_type": "linestrip"},
    {"label": "rigde", "points": [[2, 8], [60, 8]], "shape_type": "line"},  # L3D's typo
    # a polygon is drawn open: the closing edge (32, 26) -> (10, 12) must not appear
    {"label": "ligament", "points": [[10, 12], [32, 12], [32, 26]], "shape_type": "polygon"},
    {"label": "tumour", "points": [[1, 1], [3, 3]], "shape_type": "linestrip"},
    {"label": "ridge", "points": [[1, 1], [3, 3], [5, 1]], "shape_type": "rectangle"},
]


def _l3d_tree(root: Path) -> Path:
    for folder, stems in (("Train", ["p01_0001", "p01_0002", "p07_0001"]), ("Val", ["p12_0001"]),
                          ("Test", ["p20_0001"])):
        for stem in stems:
            _jpg(root / folder / "images" / f"{stem}.jpg", 64, 36)
            (root / folder / "labels").mkdir(parents=True, exist_ok=True)
            (root / folder / "labels" / f"{stem}.json").write_text(_labelme(_SHAPES, 36, 64))
        (root / folder / "depth_AdelaiDepth").mkdir(exist_ok=True)  # ignored
    _jpg(root / "Train" / "images" / "p07_0002.jpg", 64, 36)  # no annotation: left out
    return root


def test_l3d_json_contours_official_split_and_patients(tmp_path, caplog):
    src = _l3d_tree(tmp_path / "L3D")
    with caplog.at_level(logging.WARNING, logger="fewlabel.data"):
        datalist = build_l3d(src, out_dir=tmp_path / "out", thickness=3)
    assert [len(datalist[s]) for s in SPLITS] == [3, 1, 1]
    assert [it["patient"] for it in datalist["training"]] == ["p01", "p01", "p07"]
    assert datalist["validation"][0]["patient"] == "p12" and datalist["testing"][0]["patient"] == "p20"
    assert any("p07_0002" in r.getMessage() for r in caplog.records)
    assert any("tumour" in r.getMessage() and "rectangle" in r.getMessage() for r in caplog.records)
    item = datalist["testing"][0]
    assert Path(item["label"]) == tmp_path / "out" / "masks" / "test" / "p20_0001.png"
    mask = np.asarray(Image.open(item["label"]))
    assert mask.shape == (36, 64)
    assert mask[30, 20] == 1 and mask[8, 20] == 2 and mask[12, 20] == 3 and mask[20, 32] == 3
    assert mask[19, 21] == 0  # on the polygon's closing edge: not drawn
    assert mask[2, 2] == 0  # the rectangle and the unknown label are skipped


def test_l3d_label_pngs_and_colour_masks(tmp_path):
    src = tmp_path / "L3D"
    index = np.zeros((36, 64), np.uint8)
    index[30, :] = 1
    index[8, :] = 2
    index[10:20, 32] = 3
    for folder, stem in (("train", "p01_0001"), ("valid", "p02_0001")):
        _jpg(src / folder / "images" / f"{stem}.jpg", 64, 36)
        (src / folder / "masks").mkdir(parents=True)
        Image.fromarray(index).save(src / folder / "masks" / f"{stem}.png")
    datalist = build_l3d(src, out_dir=tmp_path / "out")
    assert [len(datalist[s]) for s in SPLITS] == [1, 1, 0]
    assert np.array_equal(np.asarray(Image.open(datalist["validation"][0]["label"])), index)

    # colour masks need a colour table
    table = [{"name": "background", "rgb": [0, 0, 0]}, {"name": "silhouette", "rgb": [0, 255, 0]},
             {"name": "ridge", "rgb": [255, 0, 0]}, {"name": "ligament", "rgb": [0, 0, 255]}]
    colours = np.array([c["rgb"] for c in table], np.uint8)[index]
    Image.fromarray(colours).save(src / "train" / "masks" / "p01_0001.png")
    with pytest.raises(DataError, match="colour_table"):
        build_l3d(src, out_dir=tmp_path / "out")
    datalist = build_l3d(src, out_dir=tmp_path / "out", colour_table=table)
    assert np.array_equal(np.asarray(Image.open(datalist["training"][0]["label"])), index)

    Image.fromarray((index > 0).astype(np.uint8) * 255).save(src / "train" / "masks" / "p01_0001.png")
    with pytest.raises(DataError, match="p01_0001.png"):
        build_l3d(src, out_dir=tmp_path / "out")


def test_l3d_errors(tmp_path):
    with pytest.raises(DataError, match="split folders"):
        (tmp_path / "empty").mkdir()
        build_l3d(tmp_path / "empty")
    src = _l3d_tree(tmp_path / "L3D")
    label = src / "Val" / "labels" / "p12_0001.json"
    label.write_text(_labelme(_SHAPES, 1080, 1920))  # made on another image size
    with pytest.raises(DataError, match="p12_0001"):
        build_l3d(src, out_dir=tmp_path / "out")
    label.write_text("{not json")
    with pytest.raises(DataError, match="p12_0001.json"):
        build_l3d(src, out_dir=tmp_path / "out")
    label.write_text(json.dumps({"objects": []}))
    with pytest.raises(DataError, match="shapes"):
        read_labelme_contours(label)
    label.write_text(_labelme(_SHAPES, 36, 64))
    with pytest.raises(DataError, match="patient_regex"):
        build_l3d(src, out_dir=tmp_path / "out", patient_regex=r"^case(\d+)")


# --------------------------------------------------------------------------- phantom

SIZE = (96, 128)


def test_phantom_registered_with_the_landmark_classes():
    info = phantom_info("liver_landmarks")
    assert info["num_classes"] == 4 and info["class_names"] == LANDMARK_CLASSES


def test_phantom_is_deterministic():
    a_img, a_mask = make_phantom("liver_landmarks", 3, SIZE)
    b_img, b_mask = make_phantom("liver_landmarks", 3, SIZE)
    c_img, _ = make_phantom("liver_landmarks", 4, SIZE)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == (*SIZE, 3) and a_img.dtype == np.uint8 and a_mask.dtype == np.uint8


def test_phantom_thin_landmarks_mostly_all_classes_and_dark_border():
    all_four, shares = 0, []
    for seed in range(60):
        image, mask = make_phantom("liver_landmarks", seed, SIZE)
        shares.append((mask > 0).mean())
        all_four += set(np.unique(mask).tolist()) == {0, 1, 2, 3}
        for corner in (np.s_[:3, :3], np.s_[:3, -3:], np.s_[-3:, :3], np.s_[-3:, -3:]):
            assert image[corner].max() < 40 and not mask[corner].any()  # dark field-of-view corners
    assert all_four / 60 > 0.5  # landmarks are sometimes absent (the ligament most often), but not usually
    assert max(shares) < 0.10 and min(shares) > 0.005  # thin curves


def test_phantom_landmarks_have_an_image_cue():
    """Each landmark lies where the image has more local contrast than elsewhere in the field of view."""
    ratios: dict[int, list[float]] = {1: [], 2: [], 3: []}
    for seed in range(8):
        image, mask = make_phantom("liver_landmarks", seed, (160, 208))
        grey = image.astype(np.float32).mean(-1)
        mean = ndi.gaussian_filter(grey, 1.5)
        local_std = np.sqrt(np.maximum(ndi.gaussian_filter(grey * grey, 1.5) - mean * mean, 0.0))
        background = local_std[(mask == 0) & (image.max(-1) > 20)].mean()
        for c in ratios:
            if (mask == c).any():
                ratios[c].append(local_std[mask == c].mean() / background)
    for c, values in ratios.items():
        assert values and np.mean(values) > 1.5, (LANDMARK_CLASSES[c], values)
