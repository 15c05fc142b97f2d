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

from testlib import BUNDLES, REPO
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
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location="cpu", weights_only=True)


def test_weights_files_are_written_atomically(tmp_path, monkeypatch):
    """``write_weights_file`` never leaves a half-written file at the final path: a failing save keeps the
    previous file and no temporary; two processes writing the same tiny SAM file at once both read it whole."""
    import torch

    from fewlabel.networks import read_weights_file, write_weights_file

    path = write_weights_file({"w": torch.ones(3)}, tmp_path / "sub" / "w.pt")
    assert torch.equal(read_weights_file(path)["w"], torch.ones(3))

    def broken_save(obj, f):
        open(f, "wb").write(b"PK\x03\x04 half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_weights_file({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(read_weights_file(path)["w"], torch.ones(3))  # the old file, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.pt"]


def test_weights_file_without_checksums_loads_the_same_values(tmp_path):
    """``checksums=False`` (the training state's per-epoch save) gives a file that loads to the same
    tensors and values, and leaves torch's setting for every other file as it was."""
    import torch
    from torch.utils.serialization import config

    from fewlabel.networks import read_weights_file, write_weights_file

    blob = {"w": torch.randn(64, 32), "opt": {"state": {0: {"step": torch.tensor(3.0)}}, "lr": 0.1}, "n": [1, 2]}
    fast = read_weights_file(write_weights_file(blob, tmp_path / "fast.pt", checksums=False))
    full = read_weights_file(write_weights_file(blob, tmp_path / "full.pt"))
    for loaded in (fast, full):
        assert torch.equal(loaded["w"], blob["w"]) and loaded["n"] == [1, 2] and loaded["opt"]["lr"] == 0.1
        assert torch.equal(loaded["opt"]["state"][0]["step"], torch.tensor(3.0))
    assert config.save.compute_crc32 is True


def test_two_processes_making_the_tiny_sam_file_at_once_read_it_whole(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from fewlabel.sam import tiny_sam_checkpoint; from fewlabel.networks import read_weights_file; "
        "[read_weights_file(tiny_sam_checkpoint(sys.argv[1] + f'/t{i}.pt')) for i in range(10)]"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"t{i}.pt" for i in range(10))
