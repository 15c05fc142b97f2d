"""Folder inference gives every input a result or a named reason, for every bundle.

A folder with a broken file between good ones: the good ones get results, the broken one is listed
in ``failures.json`` with its reason, and the run ends with :class:`~fewlabel.errors.InputsFailed`
(a non-zero exit status under ``python -m monai.bundle run``, with one readable line).
``on_error=stop`` keeps the old behaviour: the first failure ends the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import run
from PIL import Image

from testlib import BUNDLES, REPO, inference_checkpoint, smoke_overrides, truncate_file
from fewlabel.data import write_ct_phantom
from fewlabel.errors import DataError, InputsFailed

CT = "polycl_liver_ct_segmentation"
_checkpoint, _overrides, _truncate = inference_checkpoint, smoke_overrides, truncate_file

ids = [b.name for b in BUNDLES]


def _mixed_folder(bundle: Path, root: Path) -> tuple[Path, list[str], str]:
    """``a_good``, ``b_broken`` (truncated), ``c_good``: returns the folder, the good stems, the broken file."""
    root.mkdir()
    rng = np.random.default_rng(0)
    if bundle.name == CT:
        for stem in ("a_good", "b_broken", "c_good"):
            ph = write_ct_phantom(root / f"{stem}.nii.gz", shape=(12, 24, 20), seed=len(stem))
            ph.label.unlink()
        return root, ["a_good", "c_good"], str(_truncate(root / "b_broken.nii.gz"))
    for stem in ("a_good", "b_broken", "c_good"):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3)).astype(np.uint8)).save(root / f"{stem}.png")
    return root, ["a_good", "c_good"], str(_truncate(root / "b_broken.png"))


def _results(out: Path) -> list[str]:
    marks = ("_seg.nii.gz", "_mask.png")
    return sorted(p.name.split("_seg")[0].split("_mask")[0] for p in out.iterdir() if p.name.endswith(marks))


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_a_broken_input_is_listed_and_the_others_get_results(bundle, tmp_path):
    folder, good, broken = _mixed_folder(bundle, tmp_path / "in")
    ckpt = _checkpoint(bundle, tmp_path / "model.pt")
    out = tmp_path / "out"
    with pytest.raises(Exception) as excinfo:
        run(config_file=str(bundle / "configs" / "inference.json"), dataset_dir=str(folder), output_dir=str(out),
            ckpt_path=str(ckpt), **_overrides(bundle))
    err = excinfo.value
    while err is not None and not isinstance(err, InputsFailed):
        err = err.__cause__
    assert err is not None and broken in str(err) and "1 of 3 inputs" in str(err), repr(excinfo.value)
    assert _results(out) == good  # the input after the broken one got its result too
    failures = json.loads((out / "failures.json").read_text())
    assert failures["inputs"] == 3 and failures["results"] == 2
    assert [f["input"] for f in failures["failed"]] == [broken]
    assert broken in failures["failed"][0]["reason"]  # the reason is the loader's message, naming the file


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if b.name in (CT, "medsass_binary_segmentation")],
                         ids=lambda b: b.name)
def test_on_error_stop_ends_the_run_at_the_first_failure(bundle, tmp_path):
    folder, good, broken = _mixed_folder(bundle, tmp_path / "in")
    ckpt = _checkpoint(bundle, tmp_path / "model.pt")
    out = tmp_path / "out"
    with pytest.raises(Exception) as excinfo:
        run(config_file=str(bundle / "configs" / "inference.json"), dataset_dir=str(folder), output_dir=str(out),
            ckpt_path=str(ckpt), on_error="stop", **_overrides(bundle))
    err = excinfo.value
    while err is not None and not isinstance(err, DataError):
        err = err.__cause__
    assert err is not None and broken in str(err)
    assert _results(out) == good[:1] and not (out / "failures.json").exists()


def test_the_bundle_command_exits_non_zero_with_one_line_naming_the_file(tmp_path):
    bundle = REPO / "bundles" / "medsass_binary_segmentation"
    folder, good, broken = _mixed_folder(bundle, tmp_path / "in")
    ckpt = _checkpoint(bundle, tmp_path / "model.pt")
    out = tmp_path / "out"
    overrides = [f"--{k}={json.dumps(v)}" for k, v in _overrides(bundle).items()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "common"), os.environ.get("PYTHONPATH", "")])}
    env.pop("FEWLABEL_VERBOSE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file",
         str(bundle / "configs" / "inference.json"), "--dataset_dir", str(folder), "--output_dir", str(out),
         "--ckpt_path", str(ckpt), *overrides],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("fewlabel: error: 1 of 3 inputs got no result") and broken in last, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    log = last.split("(traceback in ")[1].split(";")[0]
    assert "InputsFailed" in Path(log).read_text()  # the full traceback is kept for a bug report
    Path(log).unlink()
    assert _results(out) == good


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_the_input_limits_are_top_level_keys_that_reach_the_loader(bundle):
    """``--max_pixels`` (2D) and ``--uneven_spacing`` (CT) are documented bundle options: they must reach the loader."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    key, value = ("uneven_spacing", "resample") if bundle.name == CT else ("max_pixels", 1234)
    parser[key] = value
    loader = parser.get_parsed_content("preprocessing#transforms#0").loader
    assert getattr(loader, key) == value
