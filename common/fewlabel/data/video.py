"""Unlabelled frames from surgical videos (or folders of frames) for self-supervised pre-training.

SurgicalSemiSeg pre-trains on frames sampled from unlabelled videos (Cholec80 at 2 fps, its
in-house set at 4 fps) and drops every video that also appears in a labelled dataset, so that no
test video leaks into pre-training. This module does that:

- :func:`extract_frames`: one video → PNG frames ``<video stem>_<frame index:06d>.png``,
  sampled at ``fps`` frames per second of video time (OpenCV ``cv2.VideoCapture``);
- :func:`build_unlabelled_from_videos`: every video of a folder (``.mp4 .avi .mov .mkv``) →
  frames + a datalist with an ``"unlabelled"`` list of ``{"image", "patient": <video stem>}``,
  skipping videos listed in ``exclude_videos`` or named by the ``"patient"`` / ``"video"`` fields
  of a labelled datalist;
- :func:`build_unlabelled_from_folder`: the same datalist from a folder of frame images;
- :func:`pretraining_items`: the images a pre-training stage reads (SurgicalSemiSeg's
  ``pretrain.json``): a separate unlabelled set (``pretrain_dataset_dir`` / ``pretrain_datalist``,
  e.g. Cholec80 frames) or, when none is given, the fine-tuning datalist's training images.

``fewlabel datalist unlabelled_videos VIDEO_DIR -o OUT.json`` and ``fewlabel datalist unlabelled_frames
FRAME_DIR -o OUT.json`` run the two builders from the command line. The default rate is the paper's
2 frames per second (its Cholec80 set); its in-house set used 4 (``--fps 4``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fewlabel.data.datalist import IMAGE_SUFFIXES
from fewlabel.errors import DataError

__all__ = [
    "VIDEO_SUFFIXES",
    "extract_frames",
    "build_unlabelled_from_videos",
    "build_unlabelled_from_folder",
    "labelled_groups",
    "pretraining_items",
    "DEFAULT_FPS",
]

logger = logging.getLogger("fewlabel.data")

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")

#: Frames kept per second of video by default: SurgicalSemiSeg's Cholec80 pre-training set (2 fps).
DEFAULT_FPS = 2.0


def _cv2():
    import cv2  # deferred: only the video functions need OpenCV

    return cv2


def extract_frames(
    video_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    fps: float = DEFAULT_FPS,
    max_frames: int | None = None,
    resize: tuple[int, int] | None = None,
) -> list[Path]:
    """Write frames of a video as PNG files, sampled at ``fps`` frames per second.

    Frame ``i`` of the video is kept when it is the first frame at or after the next sampling
    time ``k / fps`` (``k = 0, 1, ...``), using the video's own frame rate; when the video does
    not report a frame rate, or ``fps`` is at least that rate, every frame is kept.

    Args:
        video_path: the video file (anything OpenCV's FFmpeg backend reads).
        out_dir: output folder (created); files are ``<video stem>_<frame index:06d>.png`` with
            the index of the frame in the video.
        fps: frames to keep per second of video (> 0); default 2, the paper's Cholec80 rate.
        max_frames: stop after this many frames (``None``: all).
        resize: ``(H, W)`` of the written frames (``None``: as in the video).

    Returns:
        The paths written, in frame order.

    Raises:
        DataError: the file is missing, cannot be opened, or no frame can be decoded.
        ValueError: ``fps <= 0``, ``max_frames < 1`` or a bad ``resize``.
    """
    cv2 = _cv2()
    path = Path(video_path).expanduser()
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if max_frames is not None and int(max_frames) < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    if resize is not None:
        try:
            rh, rw = (int(v) for v in resize)
        except (TypeError, ValueError):
            raise ValueError(f"resize must be (H, W), got {resize!r}") from None
        if rh < 1 or rw < 1:
            raise ValueError(f"resize must be (H, W) >= 1, got {resize!r}")
    if not path.is_file():
        raise DataError(f"Video file not found: {path}")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise DataError(f"Cannot open video {path}: OpenCV could not read it (corrupt file or unsupported codec).")
        native = capture.get(cv2.CAP_PROP_FPS)
        step = 1.0 / fps
        every = not (native and math.isfinite(native) and native > 0) or fps >= native
        out = Path(out_dir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        index, next_time, decoded = 0, 0.0, 0
        while max_frames is None or len(written) < int(max_frames):
            if not capture.grab():
                break
            decoded += 1
            keep = every or index / native >= next_time - 1e-6
            if keep:
                ok, frame = capture.retrieve()
                if not ok or frame is None:
                    break
                if resize is not None:
                    interp = cv2.INTER_AREA if rh * rw < frame.shape[0] * frame.shape[1] else cv2.INTER_LINEAR
                    frame = cv2.resize(frame, (rw, rh), interpolation=interp)
                target = out / f"{path.stem}_{index:06d}.png"
                if not cv2.imwrite(str(target), frame):
                    raise DataError(f"Cannot write frame {target}.")
                written.append(target)
                if not every:
                    while index / native >= next_time - 1e-6:
                        next_time += step
            index += 1
    finally:
        capture.release()
    if not written:
        raise DataError(
            f"No frame could be decoded from video {path} ({decoded} frames grabbed): the file is corrupt, empty "
            "or in a codec this OpenCV build cannot decode."
        )
    logger.info("Extracted %d frames from %s (%s fps) into %s", len(written), path, "all" if every else fps, out)
    return written


def labelled_groups(labelled_datalist: str | os.PathLike) -> set[str]:
    """The ``"patient"`` and ``"video"`` values of every list in a datalist JSON (all splits).

    Raises:
        DataError: the file is missing or not JSON.
    """
    path = Path(labelled_datalist).expanduser()
    if not path.is_file():
        raise DataError(f"Labelled datalist not found: {path}")
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"Labelled datalist {path} is not valid JSON: {e}") from e
    groups: set[str] = set()
    for value in content.values() if isinstance(content, dict) else []:
        if isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    groups |= {str(item[k]) for k in ("patient", "video") if item.get(k) is not None}
    return groups


def _excluded(exclude: Iterable[str], labelled_datalist: str | os.PathLike | None) -> set[str]:
    names = {exclude} if isinstance(exclude, str) else {str(n) for n in exclude}
    if labelled_datalist is not None:
        names |= labelled_groups(labelled_datalist)
    return names


def build_unlabelled_from_videos(
    video_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    fps: float = DEFAULT_FPS,
    exclude_videos: Iterable[str] = (),
    labelled_datalist: str | os.PathLike | None = None,
    max_frames: int | None = None,
    resize: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Frames of every video in a folder → datalist with an ``"unlabelled"`` list.

    Args:
        video_dir: folder with the videos (``.mp4 .avi .mov .mkv``, not searched recursively).
        out_dir: frames go to ``out_dir/<video stem>/<video stem>_<index>.png``; default
            ``<video_dir>/fewlabel_frames``.
        fps: frames per second of video to keep; default 2 (the paper's Cholec80 set; its in-house
            set: 4).
        exclude_videos: video stems to leave out (e.g. the CholecSeg8k / m2caiSeg videos).
        labelled_datalist: a labelled datalist JSON: videos whose stem is one of its
            ``"patient"`` or ``"video"`` values (any split) are left out too, so that no
            labelled (in particular test) video is used for pre-training.
        max_frames, resize: per video, see :func:`extract_frames`.

    Returns:
        ``{"name", "unlabelled": [{"image", "patient"}], "excluded_videos": [...]}``.

    Raises:
        DataError: the folder is missing, has no video, every video is excluded, or a video
            cannot be read (the message names it).
    """
    folder = Path(video_dir).expanduser()
    if not folder.is_dir():
        raise DataError(f"Video folder not found: {folder}")
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise DataError(f"No video files ({', '.join(VIDEO_SUFFIXES)}) in {folder}.")
    excluded = _excluded(exclude_videos, labelled_datalist)
    skipped = [v.stem for v in videos if v.stem in excluded]
    if skipped:
        logger.info("Skipping %d video(s) that are labelled or excluded: %s", len(skipped), ", ".join(skipped))
    kept = [v for v in videos if v.stem not in excluded]
    if not kept:
        raise DataError(f"Every video in {folder} is excluded ({', '.join(skipped)}); nothing is left to use.")
    out = Path(out_dir).expanduser() if out_dir is not None else folder / "fewlabel_frames"
    items: list[dict[str, Any]] = []
    for video in kept:
        frames = extract_frames(video, out / video.stem, fps=fps, max_frames=max_frames, resize=resize)
        items.extend({"image": str(f.resolve()), "patient": video.stem} for f in frames)
    logger.info("Unlabelled datalist: %d frames from %d videos of %s", len(items), len(kept), folder)
    return {"name": f"unlabelled frames of {folder.name}", "unlabelled": items, "excluded_videos": skipped}


def build_unlabelled_from_folder(
    folder: str | os.PathLike,
    exclude_videos: Iterable[str] = (),
    labelled_datalist: str | os.PathLike | None = None,
    group_regex: str | None = None,
    recursive: bool = True,
) -> dict[str, Any]:
    """A folder of frame images → datalist with an ``"unlabelled"`` list.

    The group (``"patient"``: the video) of a frame is, in this order: the first group (or the
    whole match) of ``group_regex`` searched in its stem; else the name of its sub-folder
    (``folder/video07/xxx.png`` → ``video07``); else its stem without a trailing ``_<digits>``
    (``video07_000125.png`` → ``video07``, as :func:`extract_frames` names frames).

    Args:
        folder: the frames (PNG, JPEG, TIFF, BMP); files ending in ``_mask`` are ignored.
        exclude_videos, labelled_datalist: groups to leave out, as in
            :func:`build_unlabelled_from_videos`.
        group_regex: regular expression giving the group from a stem.
        recursive: also read sub-folders.

    Raises:
        DataError: the folder is missing or holds no usable image, or a stem does not match
            ``group_regex``.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"Frame folder not found: {root}")
    pattern = re.compile(group_regex) if group_regex else None
    files = sorted(
        p for p in (root.rglob("*") if recursive else root.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith("_mask")
    )
    if not files:
        raise DataError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) in {root}.")
    excluded = _excluded(exclude_videos, labelled_datalist)
    items: list[dict[str, Any]] = []
    skipped: set[str] = set()
    for f in files:
        if pattern is not None:
            match = pattern.search(f.stem)
            if match is None:
                raise DataError(f"group_regex {group_regex!r} does not match the name of {f}.")
            group = match.group(1) if pattern.groups else match.group(0)
        elif f.parent != root:
            group = f.relative_to(root).parts[0]
        else:
            group = re.sub(r"_\d+$", "", f.stem)
        if group in excluded:
            skipped.add(group)
            continue
        items.append({"image": str(f.resolve()), "patient": group})
    if skipped:
        logger.info("Skipping frames of %d labelled or excluded video(s): %s", len(skipped), ", ".join(sorted(skipped)))
    if not items:
        raise DataError(f"Every frame in {root} belongs to an excluded video ({', '.join(sorted(skipped))}).")
    return {"name": f"unlabelled frames of {root.name}", "unlabelled": items, "excluded_videos": sorted(skipped)}



_PRETRAIN_FIX = (
    "Point pretrain_dataset_dir at a folder of unlabelled frames (e.g. Cholec80 frames at 2 fps: "
    "`fewlabel datalist unlabelled_videos /data/Cholec80/videos -o /data/Cholec80/frames.json "
    "--out_dir /data/Cholec80/frames`), or leave pretrain_dataset_dir and pretrain_datalist empty to "
    "pre-train on the fine-tuning dataset's training images."
)


def pretraining_items(
    datalist: str | os.PathLike,
    pretrain_dataset_dir: str | os.PathLike | None = "",
    pretrain_datalist: str | os.PathLike | None = "",
    splits: tuple[str, ...] = ("training", "unlabelled"),
    group_regex: str | None = None,
) -> list[dict[str, Any]]:
    """The image-only items a self-supervised pre-training reads.

    - ``pretrain_datalist`` given: the ``splits`` of that datalist JSON (a path relative to
      ``pretrain_dataset_dir`` when that is given, else to the fine-tuning datalist's folder), e.g.
      the file ``fewlabel datalist unlabelled_videos`` writes;
    - else ``pretrain_dataset_dir`` given: every frame image under that folder
      (:func:`build_unlabelled_from_folder`: grouped by sub-folder or name), leaving out the videos
      that the fine-tuning ``datalist`` names (any split), so no labelled test video is pre-trained on;
    - neither: the fine-tuning ``datalist``'s ``splits`` (its training and unlabelled images), the
      default when the paper's separate set is not at hand.

    Args:
        datalist: the fine-tuning datalist JSON (the bundle's ``datalist_file``).
        pretrain_dataset_dir: a folder of unlabelled frames, or empty.
        pretrain_datalist: a datalist JSON of unlabelled images, or empty.
        splits: the lists read from a datalist.
        group_regex: see :func:`build_unlabelled_from_folder`.

    Returns:
        ``[{"image": path, ...}]`` without labels.

    Raises:
        DataError: the folder or datalist is missing or holds no image; the message names it and the fix.
    """
    from fewlabel.data.datalist import load_images

    folder = Path(pretrain_dataset_dir).expanduser() if pretrain_dataset_dir else None
    if folder is not None and not folder.is_dir():
        raise DataError(f"pretrain_dataset_dir does not exist: {folder}. {_PRETRAIN_FIX}")
    if pretrain_datalist:
        path = Path(pretrain_datalist).expanduser()
        if not path.is_absolute():
            path = (folder if folder is not None else Path(datalist).parent) / path
        if not path.is_file():
            raise DataError(f"pretrain_datalist not found: {path}. Make it with `fewlabel datalist unlabelled_videos` "
                            f"or `unlabelled_frames`, or pass its absolute path. {_PRETRAIN_FIX}")
        items = load_images(path, splits)
        source = str(path)
    elif folder is not None:
        try:
            found = build_unlabelled_from_folder(folder, labelled_datalist=datalist, group_regex=group_regex)
        except DataError as e:
            raise DataError(f"pretrain_dataset_dir {folder}: {e} {_PRETRAIN_FIX}") from e
        items, source = found["unlabelled"], str(folder)
    else:
        return load_images(datalist, splits)
    if not items:
        raise DataError(f"No images to pre-train on in {source}. {_PRETRAIN_FIX}")
    logger.info("Pre-training on %d unlabelled images from %s (not the fine-tuning datalist)", len(items), source)
    return items
