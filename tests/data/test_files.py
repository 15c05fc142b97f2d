"""Result files: atomic writes and outputs that never collide."""

from __future__ import annotations

import pytest

from fewlabel.data.files import TEMP_MARK, atomic_write, refuse_shared_outputs
from fewlabel.errors import DataError


def test_atomic_write_renames_only_after_the_write_finished(tmp_path):
    target = tmp_path / "out" / "case1_seg.nii.gz"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz") and TEMP_MARK in tmp.name
        tmp.write_bytes(b"whole")
        assert not target.exists()  # nothing that looks like a result yet
    assert target.read_bytes() == b"whole"
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_a_failed_write_leaves_neither_result_nor_temporary_file(tmp_path):
    target = tmp_path / "case1_mask.png"
    with pytest.raises(OSError, match="disk full"), atomic_write(target) as tmp:
        tmp.write_bytes(b"half")
        raise OSError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_an_earlier_result_survives_a_failed_rewrite(tmp_path):
    target = tmp_path / "case1_mask.png"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as tmp:
        tmp.write_bytes(b"ne")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"


def test_inputs_that_share_an_output_are_refused_naming_both():
    items = [{"image": "/d/case1.png"}, {"image": "/d/case2.png"}, {"image": "/d/case1.jpg"}]
    with pytest.raises(DataError, match=r"/d/case1.png and /d/case1.jpg would both write case1_mask.png"):
        refuse_shared_outputs(items, lambda p: p.rsplit("/", 1)[1].split(".")[0] + "_mask.png")
    refuse_shared_outputs(items[:2], lambda p: p.rsplit("/", 1)[1].split(".")[0] + "_mask.png")


_WRITER = r"""
import sys
import numpy as np
import torch
from monai.data import MetaTensor
from fewlabel.transforms import SaveMask2Dd

save = SaveMask2Dd("pred", sys.argv[1], num_classes=2, overlay=False)
rng = np.random.default_rng(0)
for i in range(10_000):
    mask = torch.from_numpy(rng.integers(0, 2, (1, 1500, 1500)).astype(np.float32))
    save({"pred": MetaTensor(mask, meta={"filename_or_obj": f"/nowhere/case{i:05d}.png"})})
"""


@pytest.mark.timeout(120)
def test_a_killed_writer_leaves_only_whole_results(tmp_path):
    """SIGKILL a process that writes masks as fast as it can: every file named like a result decodes whole."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from PIL import Image

    from testlib import REPO

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "common"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(out)], env=env)
    try:
        deadline = time.monotonic() + 90
        while len(list(out.glob("*_mask.png"))) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.37)  # somewhere inside a later write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    results = sorted(out.glob("*_mask.png"))
    results = [p for p in results if TEMP_MARK not in p.name]
    assert len(results) >= 3
    for path in results:
        with Image.open(path) as img:
            img.load()  # raises on a truncated file
            assert img.size == (1500, 1500), path
