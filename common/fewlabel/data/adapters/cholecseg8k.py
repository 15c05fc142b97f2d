"""CholecSeg8k → datalist with the 8 merged classes of Silva et al. (2022), split by video.

CholecSeg8k (Hong et al., 2020; Kaggle ``newslab/cholecseg8k``) has 8,080 frames (854 x 480)
of 17 Cholec80 videos, 80 consecutive frames per clip folder::

    SRC_DIR/video01/video01_00080/frame_80_endo.png                  RGB frame
    SRC_DIR/video01/video01_00080/frame_80_endo_watershed_mask.png   class ids as grey values (used)
    SRC_DIR/video01/video01_00080/frame_80_endo_color_mask.png       colours for display (ignored)
    SRC_DIR/video01/video01_00080/frame_80_endo_mask.png             annotation-tool mask (ignored)

(``SRC_DIR`` may also be a folder above the ``videoNN`` folders.) The label is read from the
*watershed* mask, whose three channels hold the same grey value per class. The 13 classes
are merged into 8 as SurgicalSemiSeg does, following Silva et al. (2022):

==========================  ===========  =====================================
CholecSeg8k class           grey value   merged class
==========================  ===========  =====================================
black background            50           0 background
abdominal wall              11           1 abdominal wall
liver                       21           2 liver
gastrointestinal tract      13           3 gastrointestinal tract
fat                         12           4 fat
grasper                     31           5 instruments
L-hook electrocautery       32           5 instruments
gallbladder                 22           6 gallbladder
connective tissue           23           7 misc
blood                       24           7 misc
cystic duct                 25           7 misc
hepatic vein                33           7 misc
liver ligament              5            7 misc
==========================  ===========  =====================================

Where the grey values come from: the dataset card's table, as reproduced by public loaders that
were checked for this module (``search`` of public code): ``mhjd/cholecseg8k-deeplabv3``
(``src/masks.py``: ``{50: 0, 11: 1, 21: 2, 13: 3, 12: 4, 31: 5, 23: 6, 24: 7, 25: 8, 32: 9,
22: 10, 33: 11, 5: 12}``), ``MECLabTUDA/SDS_Playground``
(``sds_playground/datasets/cholecseg8k/cholecseg8k_visualisation.py``, same values as
``rgb-hex`` triplets), and a loader file ``CholecSeg8k_color_dict_combined_classes.py`` that
merges them into the same 8 groups (its class order differs). The colour masks are not used:
``we66530/Train_CholecSeg8k_with_DeeplabV3Res101_pytorch`` reports that the colour table
published with the dataset does not match the colour masks.

Stray values: the watershed masks also hold grey 255 (a 1-pixel white frame around the image)
and grey 0 (a few pixels the annotation left unlabelled), as the loaders above note.
``SDS_Playground`` maps both to black background; ``mhjd/cholecseg8k-deeplabv3`` to an
ignore index 255. Here both become ``stray_label`` (default 0, background, as SDS_Playground;
pass 255 for an ignore value with a loss that ignores 255, or ``None`` to treat them as errors),
and a mask where they cover more than ``max_stray_fraction`` of the pixels is rejected. Any
other grey value is a :class:`~fewlabel.errors.DataError` naming the file.

Split: by video, so that no video is in two splits. Silva et al.'s exact video split is not
published with the dataset; if you know it, pass it as ``test_videos`` (and ``val_videos``);
otherwise videos are split at random (seeded) with ``fractions`` (default 70/10/20 of frames).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fewlabel.data.datalist import split_by_group
from fewlabel.errors import DataError

__all__ = [
    "build_cholecseg8k",
    "watershed_to_index",
    "CHOLECSEG8K_CLASSES",
    "CHOLECSEG8K_WATERSHED",
    "CHOLECSEG8K_STRAY_VALUES",
]

logger = logging.getLogger("fewlabel.data")

#: The 8 merged classes, in label-index order (same as the ``laparoscopy`` demo phantom).
CHOLECSEG8K_CLASSES = (
    "background",
    "abdominal wall",
    "liver",
    "gastrointestinal tract",
    "fat",
    "instruments",
    "gallbladder",
    "misc",
)

#: Watershed grey value -> (original CholecSeg8k class, merged class index).
CHOLECSEG8K_WATERSHED: dict[int, tuple[str, int]] = {
    50: ("black background", 0),
    11: ("abdominal wall", 1),
    21: ("liver", 2),
    13: ("gastrointestinal tract", 3),
    12: ("fat", 4),
    31: ("grasper", 5),
    32: ("L-hook electrocautery", 5),
    22: ("gallbladder", 6),
    23: ("connective tissue", 7),
    24: ("blood", 7),
    25: ("cystic duct", 7),
    33: ("hepatic vein", 7),
    5: ("liver ligament", 7),
}

#: Grey values that are not classes but occur in the release: 255 (1-px white image frame)
#: and 0 (unlabelled pixels).
CHOLECSEG8K_STRAY_VALUES = (0, 255)

_LAYOUT = (
    "Expected the CholecSeg8k layout: SRC_DIR/video01/video01_00080/frame_80_endo.png with "
    "frame_80_endo_watershed_mask.png beside it (one folder per video, one sub-folder per clip)."
)
_FRAME_RE = re.compile(r"^frame_\d+_endo\.png$", re.IGNORECASE)
_VIDEO_RE = re.compile(r"^video\d+$", re.IGNORECASE)


def _lut(stray_label: int | None) -> np.ndarray:
    lut = np.full(256, -1, np.int16)
    for grey, (_, merged) in CHOLECSEG8K_WATERSHED.items():
        lut[grey] = merged
    if stray_label is not None:
        for grey in CHOLECSEG8K_STRAY_VALUES:
            lut[grey] = stray_label
    return lut


def watershed_to_index(
    watershed: np.ndarray,
    path_for_errors: str | os.PathLike = "<array>",
    stray_label: int | None = 0,
    max_stray_fraction: float = 0.05,
) -> np.ndarray:
    """Map a CholecSeg8k watershed mask to the 8 merged classes (uint8).

    Args:
        watershed: ``(H, W)`` or ``(H, W, 3|4)`` uint8 array; RGB channels must be equal.
        path_for_errors: the file, named in error messages.
        stray_label: label written for the stray grey values 0 and 255 (see the module notes);
            ``None`` makes them errors.
        max_stray_fraction: largest share of stray pixels accepted in one mask.

    Raises:
        DataError: the channels differ (a colour mask, not a watershed mask), a grey value is
            not in :data:`CHOLECSEG8K_WATERSHED`, or too many pixels are stray.
    """
    path = str(path_for_errors)
    mask = np.asarray(watershed)
    if mask.ndim == 3:
        if mask.shape[-1] not in (3, 4):
            raise DataError(f"Watershed mask {path} has shape {mask.shape}; expected (H, W) or (H, W, 3).")
        rgb = mask[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise DataError(
                f"{path} is not a CholecSeg8k watershed mask: its R, G, B channels differ (is it the "
                "*_color_mask.png?). Use frame_N_endo_watershed_mask.png."
            )
        mask = rgb[..., 0]
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise DataError(f"Watershed mask {path} has shape {mask.shape} and dtype {mask.dtype}; expected 8-bit grey.")
    mapped = _lut(stray_label)[mask]
    if (mapped < 0).any():
        values, counts = np.unique(mask[mapped < 0], return_counts=True)
        order = np.argsort(-counts, kind="stable")[:5]
        listed = ", ".join(f"{int(values[i])} x {int(counts[i])} px" for i in order)
        raise DataError(
            f"Watershed mask {path} has grey values that are no CholecSeg8k class: {listed}. Known values: "
            + ", ".join(f"{g}={n}" for g, (n, _) in sorted(CHOLECSEG8K_WATERSHED.items()))
            + (f"; stray values {CHOLECSEG8K_STRAY_VALUES} are errors because stray_label=None." if stray_label is None
               else f"; {CHOLECSEG8K_STRAY_VALUES} are accepted as stray pixels.")
        )
    if stray_label is not None:
        stray = np.isin(mask, CHOLECSEG8K_STRAY_VALUES).mean()
        if stray > max_stray_fraction:
            raise DataError(
                f"Watershed mask {path}: {stray:.1%} of the pixels have the stray grey values "
                f"{CHOLECSEG8K_STRAY_VALUES} (at most {max_stray_fraction:.0%} accepted). Is it really a watershed "
                "mask of the CholecSeg8k release?"
            )
    return mapped.astype(np.uint8)


def _read(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except FileNotFoundError as e:
        raise DataError(f"File not found: {path}") from e
    except (OSError, ValueError) as e:
        raise DataError(f"Cannot read {path}: {e}") from e


def _video_of(path: Path, src: Path) -> str:
    for part in path.relative_to(src).parts[:-1]:
        if _VIDEO_RE.match(part):
            return part
    # SRC_DIR is itself a video folder
    if _VIDEO_RE.match(src.name):
        return src.name
    raise DataError(f"Cannot tell the video of {path}: no 'videoNN' folder above it. {_LAYOUT}")


def _check_names(names: Iterable[str] | None, videos: set[str], what: str) -> set[str]:
    if names is None:
        return set()
    names = {names} if isinstance(names, str) else {str(n) for n in names}
    unknown = sorted(names - videos)
    if unknown:
        raise DataError(f"{what} {unknown} are not in the dataset; its videos are {sorted(videos)}.")
    return names


def build_cholecseg8k(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    test_videos: Sequence[str] | None = None,
    val_videos: Sequence[str] | None = None,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    stray_label: int | None = 0,
    max_stray_fraction: float = 0.05,
) -> dict[str, Any]:
    """Build the CholecSeg8k datalist (8 merged classes), split by video.

    Args:
        src_dir: the unpacked dataset (holding the ``videoNN`` folders, or a folder above them).
        out_dir: where the index PNGs go, as ``out_dir/videoNN/<clip>/frame_N.png``; default
            ``<src_dir>/fewlabel_masks``.
        test_videos, val_videos: explicit video lists (e.g. ``["video12", "video20"]``), e.g.
            Silva et al.'s split if you have it; every other video is training. When neither is
            given, videos are split at random with ``fractions``.
        fractions: training / validation / testing shares of frames for the random video split.
        seed: seed of the random video split.
        stray_label, max_stray_fraction: see :func:`watershed_to_index`.

    Returns:
        A datalist dict; items ``{"image", "label", "patient", "video"}`` (patient = video).

    Raises:
        DataError: missing folder or masks, unknown grey values, a named video that does not
            exist, or a video named in both lists.
    """
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise DataError(f"CholecSeg8k folder not found: {src}. {_LAYOUT}")
    out = Path(out_dir).expanduser() if out_dir is not None else src / "fewlabel_masks"
    frames = sorted(
        p for p in src.rglob("*_endo.png") if _FRAME_RE.match(p.name) and out not in p.parents and p.is_file()
    )
    if not frames:
        raise DataError(f"No frame_N_endo.png files under {src}. {_LAYOUT}")

    items: list[dict[str, Any]] = []
    for frame in frames:
        video = _video_of(frame, src)
        watershed = frame.with_name(frame.name[: -len(".png")] + "_watershed_mask.png")
        if not watershed.is_file():
            raise DataError(f"Frame {frame} has no watershed mask: expected {watershed}. {_LAYOUT}")
        label = watershed_to_index(_read(watershed), watershed, stray_label, max_stray_fraction)
        with Image.open(frame) as im:
            size = (im.size[1], im.size[0])
        if size != label.shape:
            raise DataError(f"Frame {frame} is {size} (H, W) but its mask {watershed} is {label.shape}.")
        rel = frame.relative_to(src)
        target = out / rel.parent / (frame.name[: -len("_endo.png")] + ".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label).save(target, compress_level=1)
        items.append({"image": str(frame.resolve()), "label": str(target.resolve()), "patient": video, "video": video})

    videos = {it["video"] for it in items}
    test = _check_names(test_videos, videos, "test_videos")
    val = _check_names(val_videos, videos, "val_videos")
    if test & val:
        raise DataError(f"Videos {sorted(test & val)} are in both test_videos and val_videos.")
    if test or val:
        training = [it for it in items if it["video"] not in test | val]
        validation = [it for it in items if it["video"] in val]
        testing = [it for it in items if it["video"] in test]
    else:
        if len(fractions) != 3:
            raise ValueError(f"fractions must give training/validation/testing shares, got {list(fractions)}")
        training, validation, testing = split_by_group(items, fractions, seed=seed, group_key="video")
    datalist = {
        "name": "CholecSeg8k (8 merged classes)",
        "labels": {str(i): n for i, n in enumerate(CHOLECSEG8K_CLASSES)},
        "training": training,
        "validation": validation,
        "testing": testing,
    }
    split_videos = {s: sorted({it["video"] for it in datalist[s]}) for s in ("training", "validation", "testing")}
    logger.info(
        "CholecSeg8k datalist from %s: %d frames of %d videos; training %s, validation %s, testing %s",
        src, len(items), len(videos), split_videos["training"], split_videos["validation"], split_videos["testing"],
    )
    return datalist
