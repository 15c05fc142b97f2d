"""Helpers that bundle configs call (fewlabel.bundle): inference items, the last-batch rule, the config style."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from testlib import write_png
from fewlabel.bundle import (
    INPUT_KINDS, config_text, format_config, inference_items, last_batch_is_single, rank_handlers,
)
from fewlabel.data import load_datalist
from fewlabel.errors import DataError


def test_inference_items_lists_a_users_folder_of_frames(tmp_path):
    for name in ("b.png", "a.png"):
        write_png(tmp_path / name, np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    items = inference_items(str(tmp_path), demo="nuclei", kind="frame")
    assert items == [{"image": str(tmp_path / "a.png")}, {"image": str(tmp_path / "b.png")}]


def test_inference_items_lists_a_users_folder_of_volumes(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), np.eye(4)), tmp_path / "ct1.nii.gz")
    write_png(tmp_path / "frame.png", np.zeros((8, 8), np.uint8))  # not a CT input: skipped
    assert inference_items(tmp_path, kind="volume") == [{"image": str(tmp_path / "ct1.nii.gz")}]


def test_inference_items_without_a_folder_is_the_demo_test_split_without_labels(tmp_path):
    kwargs = {"root": str(tmp_path / "demo"), "num_patients": 4, "images_per_patient": 2, "size": [32, 32]}
    items = inference_items("", demo="nuclei", demo_kwargs=kwargs, kind="frame")
    datalist = json.loads((tmp_path / "demo" / "datalist.json").read_text())
    testing = load_datalist(tmp_path / "demo" / "datalist.json", "testing")
    assert len(items) == len(testing) == len(datalist["testing"]) > 0
    assert items == [{k: v for k, v in it.items() if k != "label"} for it in testing]
    assert all("label" not in it and it["image"].endswith(".png") for it in items)


def test_inference_items_of_the_ct_demo_are_image_only(tmp_path):
    kwargs = {"root": str(tmp_path / "ct"), "num_scans": 3, "shape": [8, 24, 24], "fractions": [0.34, 0.33, 0.33]}
    items = inference_items(None, demo="ct", demo_kwargs=kwargs, kind="volume")
    assert items and all(set(it) == {"image"} for it in items)


def test_inference_items_refuses_an_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match=r"kind must be one of \('frame', 'volume'\), got 'video'.*datalist#kind"):
        inference_items(tmp_path, kind="video")
    assert INPUT_KINDS == ("frame", "volume")


def test_inference_items_names_a_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        inference_items(tmp_path / "absent", kind="frame")


@pytest.mark.parametrize(("num_items", "batch_size", "world_size", "expected"), [
    (9, 4, 1, True),     # 4 + 4 + 1: the last batch holds one item
    (8, 4, 1, False),
    (10, 4, 1, False),
    (1, 4, 1, True),
    (0, 4, 1, False),
    (9, 2, 2, True),     # ceil(9 / 2) = 5 per rank: 2 + 2 + 1
    (10, 3, 3, True),    # ceil(10 / 3) = 4 per rank: 3 + 1
    (12, 2, 3, False),   # 4 per rank: 2 + 2
    (7, 1, 1, False),    # batches of one are all "single": nothing to drop
])
def test_last_batch_is_single_matches_what_each_rank_draws(num_items, batch_size, world_size, expected):
    assert last_batch_is_single(num_items, batch_size, world_size) is expected
    per_rank = -(-num_items // world_size)  # DistributedSampler(even_divisible=True)
    sizes = [min(batch_size, per_rank - s) for s in range(0, per_rank, batch_size)]
    assert (bool(sizes) and sizes[-1] == 1 and batch_size > 1) is expected


@pytest.mark.parametrize("args", [(5, 0, 1), (5, 2, 0), (-1, 2, 1)])
def test_last_batch_is_single_refuses_impossible_sizes(args):
    with pytest.raises(ValueError, match="need num_items >= 0"):
        last_batch_is_single(*args)


def test_config_text_is_the_four_space_style_with_a_final_newline():
    content = {"b": [1, 2], "a": {"_target_": "Foo", "x": "µm"}}
    text = config_text(content)
    assert text == '{\n    "b": [\n        1,\n        2\n    ],\n    "a": {\n        "_target_": "Foo",\n' \
                   '        "x": "µm"\n    }\n}\n'
    assert json.loads(text) == content and list(json.loads(text)) == ["b", "a"]  # key order kept


def test_format_config_rewrites_a_file_once(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('{"epochs": 2, "image_size": [64, 64]}')
    assert format_config(path) is True
    assert path.read_text() == config_text({"epochs": 2, "image_size": [64, 64]})
    assert format_config(path) is False  # already in style: untouched


def test_format_config_names_a_file_that_is_not_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"epochs": 2,}')
    with pytest.raises(DataError, match=r"broken.json is not valid JSON"):
        format_config(path)
    assert path.read_text() == '{"epochs": 2,}'


class _Validation:
    pass


class _Checkpoint:
    pass


def test_rank_handlers_keeps_all_on_rank_0_and_the_named_kinds_elsewhere(caplog):
    handlers = [_Validation(), _Checkpoint(), _Validation()]
    assert rank_handlers(handlers, ["_Validation"], rank=0) == handlers
    assert rank_handlers(handlers, ["_Validation"], rank=1) == [handlers[0], handlers[2]]  # order kept
    assert rank_handlers(handlers, [], rank=3) == []
    assert rank_handlers(None, ["_Validation"], rank=1) == []
    assert rank_handlers(handlers, ["_Validation"]) == handlers  # no process group: this process is rank 0
    with caplog.at_level("WARNING", logger="fewlabel"):
        assert rank_handlers(handlers, ["_Validation", "LrScheduleHandler"], rank=1) == [handlers[0], handlers[2]]
    assert "LrScheduleHandler" in caplog.text and "every_rank" in caplog.text


def test_end_distributed_destroys_the_group_after_all_ranks_arrive(tmp_path):
    import torch.distributed as dist

    from fewlabel.bundle import end_distributed

    end_distributed()  # a single-process run of a multi-GPU config: nothing to end
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    end_distributed()
    assert not dist.is_initialized()
