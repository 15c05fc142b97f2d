"""m2caiSeg → datalist (19 classes), keeping the dataset's own train / test split.

m2caiSeg (Maqbool et al., 2020, arXiv:2008.10134; Kaggle ``salmanmaq/m2caiseg``) has 307
frames from MICCAI 2016 tool-detection videos (Cholec80 subset), annotated with 19 colour-coded
classes. Expected layout (as read by the authors' notebooks and by
``MECLabTUDA/SDS_Playground``'s ``m2cai_seg_dataset.py``)::

    SRC_DIR/train/images/<stem>.jpg            SRC_DIR/train/groundtruth/<stem>_gt.png (or <stem>.png)
    SRC_DIR/trainval/images/...                SRC_DIR/trainval/groundtruth/...      (optional)
    SRC_DIR/test/images/...                    SRC_DIR/test/groundtruth/...

(``SRC_DIR`` may also be a folder holding one such dataset folder.) ``train`` → training,
``test`` → testing, ``trainval`` → validation (or training with ``trainval="training"``).
The colour masks are converted to index PNGs under ``out_dir``.

Colour table: from the authors' code, ``salmanmaq/segmentationNetworks``,
``datasets/miccaiSegClasses.json`` (the version with artery ``[170, 0, 255]``; an earlier commit
of that file gave artery the liver's colour ``[85, 170, 0]``, a mistake later fixed). The
colours lie on a 0 / 85 / 170 / 255 grid. The class *indices* here follow the SurgicalSemiSeg
paper's Table 7 (Black first, so class 0 is the black area outside the field of view), not the
authors' JSON ids (which start with "unknown" and end with "black")::

    index  class          RGB              authors' id
    0      black          (0, 0, 0)        18
    1      bipolar        (0, 85, 255)     2
    2      clip           (170, 170, 170)  9
    3      clipper        (0, 255, 170)    5
    4      grasper        (0, 85, 170)     1
    5      hook           (0, 170, 85)     3
    6      irrigator      (85, 0, 170)     6
    7      scissors       (0, 255, 85)     4
    8      specimen-bag   (85, 0, 255)     7
    9      trocars        (170, 85, 85)    8
    10     artery         (170, 0, 255)    14
    11     bile           (255, 255, 0)    16
    12     blood          (255, 0, 0)      17
    13     fat            (85, 255, 0)     12
    14     gallbladder    (85, 170, 255)   11
    15     intestine      (255, 0, 255)    15
    16     liver          (85, 170, 0)     10
    17     unknown        (170, 0, 85)     0
    18     upperwall      (85, 255, 170)   13

Off-palette pixels: the authors' "Label Refinement" notebook (same repository) snaps every mask
pixel to the nearest class colour because manual annotation left other colours along object
borders, and a processed copy on the Hugging Face hub (``Angelou0516/m2caiSeg``) also reports
"undefined colors" in the masks. So the default here is ``tolerance=None`` (nearest class
colour, as the authors did), with a guard: a mask in which more than ``max_off_palette`` of the
pixels are not exactly a class colour is rejected, since that means a wrong class table or a
wrong file. Pass ``tolerance=0`` for exact colours only, or your own ``class_table`` (JSON) if
your copy of the data uses other colours.

Videos: the release names its frames by number only and publishes no frame -> video table, so by
default each frame is its own group (``patient`` = the frame's stem): the split is the release's,
and the leakage check (:func:`fewlabel.data.checks.check_group_leakage`: no video in two splits)
cannot work; a warning says so. Give the mapping if you have it: ``video_map`` (a CSV file of
``frame,video`` rows, ``frame`` the image's stem or file name, header optional) or ``video_regex``
(its first group, or the whole match, searched in the stem is the video). Then ``patient`` and
``video`` are the video, and a video with frames in two splits stops the adapter
(``on_leakage="warn"`` keeps the release's split and logs the videos instead).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path
from typing import Any

from PIL import Image

from fewlabel.data.checks import groups_in_several_splits
from fewlabel.data.adapters.colour_masks import (
    ClassTableLike,
    colour_mask_to_index,
    load_class_table,
    read_colour_mask,
)
from fewlabel.data.datalist import IMAGE_SUFFIXES
from fewlabel.errors import DataError

__all__ = ["build_m2caiseg", "M2CAISEG_CLASS_TABLE", "M2CAISEG_FOLDERS"]

logger = logging.getLogger("fewlabel.data")

#: The 19 classes of m2caiSeg in the order of the SurgicalSemiSeg paper's Table 7, with the
#: colours of the authors' ``miccaiSegClasses.json``.
M2CAISEG_CLASS_TABLE: tuple[dict[str, Any], ...] = (
    {"name": "black", "rgb": [0, 0, 0]},
    {"name": "bipolar", "rgb": [0, 85, 255]},
    {"name": "clip", "rgb": [170, 170, 170]},
    {"name": "clipper", "rgb": [0, 255, 170]},
    {"name": "grasper", "rgb": [0, 85, 170]},
    {"name": "hook", "rgb": [0, 170, 85]},
    {"name": "irrigator", "rgb": [85, 0, 170]},
    {"name": "scissors", "rgb": [0, 255, 85]},
    {"name": "specimen-bag", "rgb": [85, 0, 255]},
    {"name": "trocars", "rgb": [170, 85, 85]},
    {"name": "artery", "rgb": [170, 0, 255]},
    {"name": "bile", "rgb": [255, 255, 0]},
    {"name": "blood", "rgb": [255, 0, 0]},
    {"name": "fat", "rgb": [85, 255, 0]},
    {"name": "gallbladder", "rgb": [85, 170, 255]},
    {"name": "intestine", "rgb": [255, 0, 255]},
    {"name": "liver", "rgb": [85, 170, 0]},
    {"name": "unknown", "rgb": [170, 0, 85]},
    {"name": "upperwall", "rgb": [85, 255, 170]},
)

#: Folder of the release -> datalist split.
M2CAISEG_FOLDERS = {"train": "training", "trainval": "validation", "test": "testing"}

_LAYOUT = (
    "Expected the m2caiSeg layout: SRC_DIR/train/images/<stem>.jpg with SRC_DIR/train/groundtruth/<stem>_gt.png "
    "(or <stem>.png), and likewise SRC_DIR/test/ (and optionally SRC_DIR/trainval/)."
)


def _find_root(src: Path) -> Path:
    if (src / "train").is_dir():
        return src
    candidates = [p for p in sorted(src.iterdir()) if p.is_dir() and (p / "train").is_dir()] if src.is_dir() else []
    if len(candidates) == 1:
        return candidates[0]
    raise DataError(f"No m2caiSeg 'train' folder in {src}. {_LAYOUT}")


def _mask_for(image: Path, gt_dir: Path) -> Path:
    for name in (f"{image.stem}_gt.png", f"{image.stem}.png", f"{image.stem}_gt.bmp", f"{image.stem}.bmp"):
        if (gt_dir / name).is_file():
            return gt_dir / name
    raise DataError(f"m2caiSeg image {image} has no mask: expected {gt_dir / (image.stem + '_gt.png')}. {_LAYOUT}")


def _read_video_map(path: str | os.PathLike) -> dict[str, str]:
    """``frame -> video`` from a CSV file of ``frame,video`` rows (a header row is skipped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"m2caiSeg video_map not found: {path}. Give a CSV file of frame,video rows, or leave "
                        "video_map out (each frame is then its own group).")
    out: dict[str, str] = {}
    with path.open(newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if len(cells) < 2 or not cells[0] or not cells[1]:
                raise DataError(f"{path}, line {n}: expected 'frame,video', got {','.join(row)!r}.")
            if n == 1 and [c.lower() for c in cells[:2]] == ["frame", "video"]:
                continue
            out[cells[0]] = cells[1]
    if not out:
        raise DataError(f"m2caiSeg video_map {path} has no frame,video rows.")
    return out


def _video_of(image: Path, video_map: dict[str, str] | None, pattern: re.Pattern | None, source: str) -> str:
    if video_map is not None:
        video = video_map.get(image.stem, video_map.get(image.name))
        if video is None:
            raise DataError(f"m2caiSeg frame {image} is not in the video_map {source}: add a row "
                            f"'{image.stem},<video>'.")
        return video
    if pattern is not None:
        match = pattern.search(image.stem)
        if match is None:
            raise DataError(f"video_regex {source!r} does not match the name of m2caiSeg frame {image}.")
        return match.group(1) if pattern.groups else match.group(0)
    return image.stem


def build_m2caiseg(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    class_table: ClassTableLike | None = None,
    tolerance: int | None = None,
    max_off_palette: float = 0.25,
    trainval: str = "validation",
    video_map: str | os.PathLike | None = None,
    video_regex: str | None = None,
    on_leakage: str = "error",
) -> dict[str, Any]:
    """Build the m2caiSeg datalist, keeping the release's train / (trainval) / test folders.

    Args:
        src_dir: the unpacked dataset (see the module docstring for the layout).
        out_dir: where the index PNGs go, as ``out_dir/<folder>/<stem>.png``; default
            ``<src_dir>/fewlabel_masks``.
        class_table: another class table (list, JSON path or shipped name); default
            :data:`M2CAISEG_CLASS_TABLE`.
        tolerance: colour tolerance of :func:`~fewlabel.data.adapters.colour_masks.colour_mask_to_index`;
            ``None`` (default) snaps to the nearest class colour, as the authors did.
        max_off_palette: largest share of a mask's pixels that may be off the class colours.
        trainval: where the ``trainval`` folder goes: ``"validation"`` or ``"training"``.
        video_map: CSV file of ``frame,video`` rows (frame: the image's stem or file name).
        video_regex: regular expression giving the video from a frame's stem (instead of ``video_map``).
        on_leakage: a video with frames in two splits (only detectable with a mapping): ``"error"``
            (default) or ``"warn"`` (keep the release's split, log the videos).

    Returns:
        A datalist dict; items ``{"image", "label", "patient"}`` with patient = the frame's video
        (and ``"video"``) when a mapping is given, else the frame's stem (the release does not name
        the videos); ``"grouping"``: ``"video"`` or ``"frame"``. The release's split is kept.

    Raises:
        DataError: missing folders or masks, unreadable files, size mismatches, unknown colours
            (with ``tolerance`` set), masks too far off the palette, a frame the mapping does not
            cover, or (``on_leakage="error"``) a video in two splits.
    """
    if trainval not in ("validation", "training"):
        raise ValueError(f"trainval must be 'validation' or 'training', got {trainval!r}")
    if on_leakage not in ("error", "warn"):
        raise ValueError(f"on_leakage must be 'error' or 'warn', got {on_leakage!r}")
    if video_map is not None and video_regex is not None:
        raise ValueError("give video_map or video_regex, not both")
    frame_videos = _read_video_map(video_map) if video_map is not None else None
    pattern = re.compile(video_regex) if video_regex else None
    source = str(video_map) if video_map is not None else str(video_regex)
    by_video = frame_videos is not None or pattern is not None
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise DataError(f"m2caiSeg folder not found: {src}. {_LAYOUT}")
    root = _find_root(src)
    table = load_class_table(list(M2CAISEG_CLASS_TABLE) if class_table is None else class_table)
    out = Path(out_dir).expanduser() if out_dir is not None else src / "fewlabel_masks"
    datalist: dict[str, Any] = {
        "name": "m2caiSeg",
        "labels": {str(i): c["name"] for i, c in enumerate(table)},
        "grouping": "video" if by_video else "frame",
        "training": [],
        "validation": [],
        "testing": [],
    }
    for folder, split in M2CAISEG_FOLDERS.items():
        base = root / folder
        if not base.is_dir():
            if folder == "trainval":
                continue
            raise DataError(f"m2caiSeg folder not found: {base}. {_LAYOUT}")
        image_dir, gt_dir = base / "images", base / "groundtruth"
        for d in (image_dir, gt_dir):
            if not d.is_dir():
                raise DataError(f"m2caiSeg folder not found: {d}. {_LAYOUT}")
        images = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"No images in {image_dir}. {_LAYOUT}")
        if folder == "trainval":
            split = trainval
        for image in images:
            mask_path = _mask_for(image, gt_dir)
            index = colour_mask_to_index(
                read_colour_mask(mask_path), table, mask_path, tolerance=tolerance, max_off_palette=max_off_palette
            )
            with Image.open(image) as im:
                size = (im.size[1], im.size[0])
            if size != index.shape:
                raise DataError(f"m2caiSeg image {image} is {size} (H, W) but its mask {mask_path} is {index.shape}.")
            target = out / folder / f"{image.stem}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(index).save(target, compress_level=1)
            item = {"image": str(image.resolve()), "label": str(target.resolve()), "patient": image.stem}
            if by_video:
                item["patient"] = item["video"] = _video_of(image, frame_videos, pattern, source)
            datalist[split].append(item)
    if not by_video:
        logger.warning(
            "m2caiSeg: no frame -> video mapping given, so each frame is its own group and the leakage check "
            "(no video in two splits) cannot work. Pass video_map (CSV frame,video) or video_regex to group "
            "the frames by video."
        )
    else:
        leaks = groups_in_several_splits(datalist)
        if leaks:
            text = "; ".join(f"{v} ({', '.join(s)})" for v, s in leaks.items())
            if on_leakage == "error":
                raise DataError(
                    f"m2caiSeg videos with frames in two splits (by {source}): {text}. The test score would "
                    "include frames of training videos: check the mapping, or pass on_leakage='warn' to keep "
                    "the release's split as it is."
                )
            logger.warning("m2caiSeg: videos with frames in two splits of the release (by %s): %s", source, text)
    logger.info(
        "m2caiSeg datalist from %s: %d training, %d validation, %d testing items",
        root, len(datalist["training"]), len(datalist["validation"]), len(datalist["testing"]),
    )
    return datalist
