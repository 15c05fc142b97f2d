"""Bundle configs declare components: short ``$`` glue, short lines, one JSON style, no repeated blocks.

What a maintainer relies on when reading or diffing any bundle's ``configs/``: every ``$`` expression fits
in 120 characters (longer work is a ``_target_`` component with keyword arguments), every line fits in 120
characters, every file is in the one style of :func:`fewlabel.bundle.config_text`, and the blocks every
bundle needs (inference items, the last-batch rule, handlers of non-zero ranks) are one helper or one named
list, not a copy per file. What still cannot be shortened is listed below with the reason.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from testlib import BUNDLES, REPO
from fewlabel.bundle import config_text

MAX_EXPRESSION = 120
MAX_LINE = 120

CONFIG_FILES = sorted(p for b in BUNDLES for p in (b / "configs").rglob("*.json"))
IDS = [str(p.relative_to(REPO / "bundles")) for p in CONFIG_FILES]

#: ``$`` expressions allowed over MAX_EXPRESSION characters: (file under bundles/, config id) -> reason.
LONG_EXPRESSIONS: dict[tuple[str, str], str] = {}

#: lines allowed over MAX_LINE characters: (file under bundles/, key on that line) -> reason.
#: ``metadata.json`` is exempt as a whole: its descriptions are prose the Model Zoo schema asks for.
LONG_LINES: dict[tuple[str, str], str] = {
    ("medsass_binary_segmentation/configs/pretrain.json", "validate#prepare_batch"):
        "passes **threshold_kwargs through, which a _target_ dict cannot; the expression itself is 118 characters",
    ("polycl_liver_ct_segmentation/configs/evaluate.json", "title"):
        "a report title built from three config values; one string expression, nothing to name separately",
    ("polycl_liver_ct_segmentation/configs/train.json", "hint"):
        "the error message a user reads when the pre-trained checkpoint is missing (prose, one JSON string)",
    ("slippa_liver_landmark_segmentation/configs/finetune.json", "stage1_hint"):
        "the error message a user reads when the stage-1 checkpoint is missing (prose, one JSON string)",
}

_KEY = re.compile(r'^\s*"((?:[^"\\]|\\.)*)":')


def _strings(node, path=""):
    """(config id, string) for every string value in a parsed config."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{path}#{k}" if path else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{path}#{i}")
    elif isinstance(node, str):
        yield path, node


def _long_expressions(path: Path) -> list[tuple[str, int]]:
    return [(cid, len(s)) for cid, s in _strings(json.loads(path.read_text()))
            if s.startswith("$") and len(s) > MAX_EXPRESSION]


def _long_lines(path: Path) -> list[tuple[int, str, int]]:
    """(line number, key on the line or "", length) of the lines over MAX_LINE."""
    if path.name == "metadata.json":
        return []
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if len(line) > MAX_LINE:
            key = _KEY.match(line)
            out.append((number, key.group(1) if key else "", len(line)))
    return out


def test_the_style_checks_see_every_bundles_configs():
    names = {p.relative_to(REPO / "bundles").parts[0] for p in CONFIG_FILES}
    assert names == {b.name for b in BUNDLES} and len(names) >= 5
    assert any("variants" in p.parts for p in CONFIG_FILES)  # sub-folders of configs/ are checked too
    assert all(any(p.name == f"{n}.json" for p in CONFIG_FILES if p.parts[-3] == b.name)
               for b in BUNDLES for n in ("inference", "train", "multi_gpu_train", "metadata"))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=IDS)
def test_config_file_is_in_the_one_json_style(path):
    text = path.read_text()
    assert text == config_text(json.loads(text)), (
        f"{path} is not in the bundles' JSON style (4-space indent, one item a line, a final newline). Fix: "
        f"python -c \"import fewlabel.bundle as b; b.format_config('{path.relative_to(REPO)}')\""
    )


@pytest.mark.parametrize("path", CONFIG_FILES, ids=IDS)
def test_dollar_expressions_are_short_glue(path):
    rel = str(path.relative_to(REPO / "bundles"))
    found = [(cid, n) for cid, n in _long_expressions(path) if (rel, cid) not in LONG_EXPRESSIONS]
    assert not found, (
        f"{path}: $ expressions over {MAX_EXPRESSION} characters {found}; declare the call as a component "
        "({'_target_': ..., keyword: value}) or name its parts as config ids"
    )


@pytest.mark.parametrize("path", CONFIG_FILES, ids=IDS)
def test_lines_are_short(path):
    rel = str(path.relative_to(REPO / "bundles"))
    found = [(n, key, length) for n, key, length in _long_lines(path) if (rel, key) not in LONG_LINES]
    assert not found, (
        f"{path}: lines over {MAX_LINE} characters (line, key, length) {found}; shorten the value (a component "
        "with keyword arguments, a named sub-list) or, where it cannot be, add it to LONG_LINES with the reason"
    )


def test_every_allow_list_entry_is_still_needed():
    """An entry whose file was shortened is removed, so the lists say what is left to do."""
    long_lines = {(str(p.relative_to(REPO / "bundles")), key) for p in CONFIG_FILES for _, key, _ in _long_lines(p)}
    long_exprs = {(str(p.relative_to(REPO / "bundles")), cid) for p in CONFIG_FILES for cid, _ in _long_expressions(p)}
    assert set(LONG_LINES) <= long_lines, sorted(set(LONG_LINES) - long_lines)
    assert set(LONG_EXPRESSIONS) <= long_exprs, sorted(set(LONG_EXPRESSIONS) - long_exprs)
    assert all(reason.strip() for reason in [*LONG_LINES.values(), *LONG_EXPRESSIONS.values()])


@pytest.mark.parametrize("path", CONFIG_FILES, ids=IDS)
def test_no_handler_list_is_sliced_by_position(path):
    """Handlers of non-zero ranks are named by kind (``fewlabel.bundle.rank_handlers``), not ``@train#handlers[:1]``:
    a slice silently changes meaning when a stage config adds or reorders handlers."""
    sliced = [(cid, s) for cid, s in _strings(json.loads(path.read_text())) if re.search(r"handlers\s*\[", s)]
    assert not sliced, f"{path}: handler lists sliced by position {sliced}; name the list instead"


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_repeated_blocks_are_one_helper(bundle):
    """The inference items and the multi-GPU last-batch rule come from fewlabel.bundle, in every bundle."""
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert inference["datalist"]["_target_"] == "fewlabel.bundle.inference_items"
    assert inference["datalist"]["kind"] in ("frame", "volume")
    for path in (bundle / "configs").glob("multi_gpu*.json"):
        config = json.loads(path.read_text())
        assert config["network"]["_target_"] == "torch.nn.parallel.DistributedDataParallel", path
        assert config["train#trainer#train_handlers"]["_target_"] == "fewlabel.bundle.rank_handlers", path
        drop_last = config.get("train#dataloader#drop_last")
        assert drop_last is None or drop_last["_target_"] == "fewlabel.bundle.last_batch_is_single", path
    for path in (bundle / "configs").rglob("*.json"):
        text = path.read_text()
        assert "% @batch_size == 1" not in text and "% @pretrain_batch_size == 1" not in text, (
            f"{path}: use fewlabel.bundle.last_batch_is_single for drop_last")


def _kinds(config: dict, section: str) -> set[str]:
    """Class names of ``section#handlers`` of a parsed config (``@section#x`` references followed)."""
    kinds = set()
    for h in config[section]["handlers"] if section in config else config[f"{section}#handlers"]:
        if isinstance(h, str) and h.startswith(f"@{section}#"):
            h = config[section][h.split("#", 1)[1]]
        kinds.add(h["_target_"].rsplit(".", 1)[-1])
    return kinds


@pytest.mark.parametrize("path", [p for p in CONFIG_FILES if p.name.startswith("multi_gpu")],
                         ids=[i for i in IDS if "/multi_gpu" in i])
def test_every_rank_handler_kinds_name_handlers_of_the_stage(path):
    """A kind named for the other ranks that the stage lacks (a typo) would leave them without, e.g., their
    validation run, and the ranks would wait on each other: each named kind is in the stage's handlers."""
    config = json.loads(path.read_text())
    train = json.loads((path.parent / "train.json").read_text())
    stage = json.loads((path.parent / "pretrain.json").read_text()) if "pretrain" in path.name else train
    kinds = {"train": _kinds(stage, "train"), "validate": _kinds(train, "validate")}
    for section, key in (("train", "train#trainer#train_handlers"), ("validate", "validate#evaluator#val_handlers")):
        chosen = config.get(key)
        if isinstance(chosen, dict):
            assert chosen["every_rank"] and set(chosen["every_rank"]) <= kinds[section], (path, key, kinds[section])
