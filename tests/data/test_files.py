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
