"""Fuzz: damaged video files give frames or a DataError naming the file -- never another exception or a hang."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from testlib import corrupt_variants
from fewlabel.data.video import extract_frames
from fewlabel.errors import DataError

cv2 = pytest.importorskip("cv2")


def _video(path: Path, n_frames: int = 12, size: tuple[int, int] = (32, 40)) -> bytes:
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    rng = np.random.default_rng(0)
    for _ in range(n_frames):
        writer.write(rng.integers(0, 255, (h, w, 3)).astype(np.uint8))
    writer.release()
    return path.read_bytes()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("fps", [1.0, 100.0])
def test_damaged_videos_give_frames_or_a_data_error_naming_the_file(tmp_path, seed, fps):
    data = _video(tmp_path / "good.avi")
    for name, damaged in corrupt_variants(data, seed=seed, count=12):
        path = tmp_path / f"{name}.avi"
        path.write_bytes(damaged)
        out = tmp_path / f"frames_{name}"
        try:
            frames = extract_frames(path, out, fps=fps)
        except DataError as e:
            assert str(path) in str(e), (name, str(e))
            continue
        assert frames, name
        for frame in frames:  # what was written is a whole picture of the video's size
            with Image.open(frame) as img:
                img.load()
                assert img.size == (40, 32), (name, frame)

