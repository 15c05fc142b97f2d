"""Safe loading: weights files are read with ``weights_only=True`` (a pickled payload is refused, never run),
and no config expression reads text from data files."""

from __future__ import annotations

import ast
import json
import pickle
import re
from pathlib import Path

import pytest
import torch

from conftest import BUNDLES, REPO
from fewlabel.errors import CheckpointError


def _torch_load_calls(root: Path):
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                yield path, node


def test_every_torch_load_in_the_package_and_benchmarks_is_weights_only():
    unsafe = []
    for root in (REPO / "common" / "fewlabel", REPO / "benchmarks"):
        for path, node in _torch_load_calls(root):
            flags = {kw.arg: kw.value for kw in node.keywords}
            value = flags.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                unsafe.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


EXPRESSION_READERS = re.compile(r"\bopen\(|read_text\(|read_bytes\(|json\.load|\beval\(|\bexec\(|pickle|yaml\.")


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_config_expressions_never_read_data_files(bundle):
    def strings(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for v in node.values():
                yield from strings(v)
        elif isinstance(node, list):
            for v in node:
                yield from strings(v)

    for path in sorted((bundle / "configs").rglob("*.json")):
        for text in strings(json.loads(path.read_text())):
            if text.startswith("$"):
                assert not EXPRESSION_READERS.search(text), f"{path.name}: expression reads or evaluates data: {text}"


class _Payload:
    def __reduce__(self):
        return (Path.write_text, (Path(_Payload.target), "pwned"))


def test_a_pickled_payload_in_a_checkpoint_is_refused_not_run(tmp_path):
    from fewlabel.networks import build_network, load_pretrained

    target = tmp_path / "ran.txt"
    _Payload.target = str(target)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"encoder.weight": _Payload()}, fh)
    net = build_network("polycl_unet", 1, 1, channels=[4, 8])
    with pytest.raises((CheckpointError, pickle.UnpicklingError, RuntimeError, ValueError)):
        load_pretrained(net, path, part="encoder")
    from fewlabel.sam import build_sam_teacher

    with pytest.raises(CheckpointError):
        build_sam_teacher(path, "tiny")
    assert not target.exists(), "unpickling ran code from the checkpoint"
    with pytest.raises(Exception):
        torch.load(path, map_location="cpu", weights_only=True)
