"""Frames from videos: sampling rate, file names, exclusion of labelled videos, clear errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewlabel.data.datalist import load_datalist, save_datalist
from fewlabel.data.video import (
    build_unlabelled_from_folder,
    build_unlabelled_from_videos,
    extract_frames,
    labelled_groups,
    pretraining_items,
)
from fewlabel.errors import DataError

cv2 = pytest.importorskip("cv2")


def _video(path: Path, n_frames: int = 30, fps: float = 10.0, size: tuple[int, int] = (48, 64)) -> Path:
    """An MJPG .avi whose frame k has brightness 8 * k (so frames can be told apart)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for k in range(n_frames):
        frame = np.full((h, w, 3), 8 * k % 256, np.uint8)
        frame[:, : w // 4] = (0, 0, 255)  # a red band (BGR) to check the colour order
        writer.write(frame)
    writer.release()
    return path


@pytest.mark.parametrize(("fps", "expected"), [(1.0, [0, 10, 20]), (5.0, list(range(0, 30, 2)))])
def test_extract_frames_rate_and_names(tmp_path: Path, fps: float, expected: list[int]) -> None:
    video = _video(tmp_path / "video07.avi")  # 30 frames at 10 fps = 3 s
    frames = extract_frames(video, tmp_path / "frames", fps=fps)
    assert [p.name for p in frames] == [f"video07_{i:06d}.png" for i in expected]
    for path, i in zip(frames, expected):
        image = np.asarray(Image.open(path))
        assert image.shape == (48, 64, 3)
        assert abs(int(image[:, 32:].mean()) - 8 * i) <= 6  # the right frame (MJPG is lossy)
        assert image[:, :8, 0].mean() > 200 and image[:, :8, 2].mean() < 50  # RGB order preserved on disk


def test_extract_frames_every_frame_max_and_resize(tmp_path: Path) -> None:
    video = _video(tmp_path / "v.avi", n_frames=12)
    assert len(extract_frames(video, tmp_path / "a", fps=25.0)) == 12  # above the video's rate: every frame
    frames = extract_frames(video, tmp_path / "b", fps=5.0, max_frames=3, resize=(24, 40))
    assert [p.name for p in frames] == ["v_000000.png", "v_000002.png", "v_000004.png"]
    assert np.asarray(Image.open(frames[0])).shape == (24, 40, 3)  # resize is (H, W)
    with pytest.raises(ValueError, match="fps"):
        extract_frames(video, tmp_path / "c", fps=0)


def test_extract_frames_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing.mp4"):
        extract_frames(tmp_path / "missing.mp4", tmp_path / "out")
    corrupt = tmp_path / "corrupt.avi"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage, not a video" * 10)
    with pytest.raises(DataError, match="corrupt.avi"):
        extract_frames(corrupt, tmp_path / "out")
    assert not list(tmp_path.rglob("*.png"))


def test_unlabelled_from_videos_excludes_labelled_videos(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    videos = tmp_path / "cholec80"
    for name in ("video01", "video02", "video03", "video04"):
        _video(videos / f"{name}.avi", n_frames=20)
    (videos / "notes.txt").write_text("not a video")
    labelled = save_datalist(
        {"training": [{"image": "a.png", "label": "a_l.png", "patient": "video02"}],
         "testing": [{"image": "b.png", "label": "b_l.png", "video": "video03"}]},
        tmp_path / "cholecseg8k.json",
    )
    assert labelled_groups(labelled) == {"video02", "video03"}
    with caplog.at_level(logging.INFO, logger="fewlabel.data"):
        datalist = build_unlabelled_from_videos(
            videos, tmp_path / "frames", fps=1.0, exclude_videos=["video04"], labelled_datalist=labelled
        )
    assert "video02" in caplog.text and "video03" in caplog.text and "video04" in caplog.text
    assert sorted(datalist["excluded_videos"]) == ["video02", "video03", "video04"]
    items = datalist["unlabelled"]
    assert {it["patient"] for it in items} == {"video01"}  # no leakage of labelled videos
    assert len(items) == 2  # 20 frames at 10 fps, 1 fps
    assert all("label" not in it and Path(it["image"]).is_file() for it in items)
    assert Path(items[0]["image"]).parent == tmp_path / "frames" / "video01"
    # the dict is a datalist bundles can load
    path = save_datalist(datalist, tmp_path / "unlabelled.json")
    assert len(load_datalist(path, "unlabelled")) == 2
    with pytest.raises(DataError, match="excluded"):
        build_unlabelled_from_videos(
            videos, tmp_path / "f2", exclude_videos=["video01", "video02", "video03", "video04"]
        )


def test_unlabelled_from_videos_corrupt_video_is_named(tmp_path: Path) -> None:
    videos = tmp_path / "v"
    _video(videos / "good.avi", n_frames=5)
    (videos / "broken.mp4").write_bytes(b"\x00" * 500)
    with pytest.raises(DataError, match="broken.mp4"):
        build_unlabelled_from_videos(videos, tmp_path / "frames")
    with pytest.raises(DataError, match="no_such_folder"):
        build_unlabelled_from_videos(tmp_path / "no_such_folder", tmp_path / "frames")


def test_unlabelled_from_folder(tmp_path: Path) -> None:
    root = tmp_path / "frames"
    image = np.zeros((8, 8, 3), np.uint8)
    for name in ("video05/x_1.png", "video06/y.jpg", "video07_000010.png", "video07_000020.png", "video08_000010.png",
                 "video08_000010_mask.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / name)
    labelled = tmp_path / "l.json"
    labelled.write_text(json.dumps({"validation": [{"image": "i.png", "patient": "video08"}]}))
    datalist = build_unlabelled_from_folder(root, exclude_videos=["video06"], labelled_datalist=labelled)
    groups = sorted(it["patient"] for it in datalist["unlabelled"])
    assert groups == ["video05", "video07", "video07"]
    assert datalist["excluded_videos"] == ["video06", "video08"]
    by_regex = build_unlabelled_from_folder(root, group_regex=r"^(video\d+)", recursive=False)
    assert sorted(it["patient"] for it in by_regex["unlabelled"]) == ["video07", "video07", "video08"]
    with pytest.raises(DataError, match="does not match"):
        build_unlabelled_from_folder(root, group_regex=r"^patient")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No image files"):
        build_unlabelled_from_folder(tmp_path / "empty")


def test_default_rate_is_the_papers_two_frames_per_second(tmp_path: Path) -> None:
    video = _video(tmp_path / "video09.avi")  # 30 frames at 10 fps = 3 s
    frames = extract_frames(video, tmp_path / "frames")
    assert [int(f.stem.rsplit("_", 1)[1]) for f in frames] == [0, 5, 10, 15, 20, 25]
    # the command-line adapter: frames of a folder of videos at 2 fps into out_dir, grouped by video
    from fewlabel.data.adapters import build_datalist

    out = build_datalist("unlabelled-videos", tmp_path, tmp_path / "pre.json", out_dir=str(tmp_path / "f2"))
    items = load_datalist(out, "unlabelled")
    assert len(items) == 6 and {it["patient"] for it in items} == {"video09"}
    assert all(Path(it["image"]).parent == tmp_path / "f2" / "video09" for it in items)


def _frames(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / name)


def test_pretraining_reads_its_own_folder_or_datalist_and_defaults_to_the_finetuning_images(tmp_path: Path) -> None:
    fine = tmp_path / "fine"
    _frames(fine, ["a.png", "b.png", "c.png", "u.png"])
    labelled = save_datalist({
        "training": [{"image": str(fine / "a.png"), "label": str(fine / "a.png"), "patient": "video01"},
                     {"image": str(fine / "b.png"), "label": str(fine / "b.png"), "patient": "video01"}],
        "testing": [{"image": str(fine / "c.png"), "label": str(fine / "c.png"), "patient": "video02"}],
        "unlabelled": [{"image": str(fine / "u.png"), "patient": "video03"}]}, fine / "datalist.json")
    # default: the fine-tuning datalist's training and unlabelled images, labels dropped
    default = pretraining_items(labelled)
    assert sorted(Path(it["image"]).name for it in default) == ["a.png", "b.png", "u.png"]
    assert all("label" not in it for it in default)
    # a separate folder of frames (Cholec80 at 2 fps): its frames, never a video of the labelled datalist
    cholec = tmp_path / "cholec80"
    _frames(cholec, ["video02/video02_000000.png", "video40/video40_000000.png", "video40/video40_000012.png"])
    items = pretraining_items(labelled, pretrain_dataset_dir=cholec)
    assert sorted(Path(it["image"]).name for it in items) == ["video40_000000.png", "video40_000012.png"]
    # a datalist of unlabelled images, relative to the folder
    save_datalist({"unlabelled": items[:1]}, cholec / "frames.json")
    only = pretraining_items(labelled, pretrain_dataset_dir=cholec, pretrain_datalist="frames.json")
    assert [it["image"] for it in only] == [items[0]["image"]]
    # missing or empty: one error naming the folder and the fix
    with pytest.raises(DataError, match=r"pretrain_dataset_dir does not exist: .*nowhere.*unlabelled_videos"):
        pretraining_items(labelled, pretrain_dataset_dir=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"pretrain_dataset_dir .*empty.*No image files.*leave pretrain_dataset_dir"):
        pretraining_items(labelled, pretrain_dataset_dir=tmp_path / "empty")
    with pytest.raises(DataError, match=r"pretrain_datalist not found: .*missing\.json"):
        pretraining_items(labelled, pretrain_dataset_dir=cholec, pretrain_datalist="missing.json")
