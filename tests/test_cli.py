"""Dataset resolution for bundles, bundle location, and the ``fewlabel`` command."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from labelserverlib import _serve_demo

from fewlabel import cli
from fewlabel.bundle import bundle_root, input_kind, resolve_datalist
from fewlabel.data import load_datalist
from fewlabel.errors import DataError

from testlib import REPO


def test_no_dataset_dir_means_demo_data():
    path = resolve_datalist(
        "", demo="nuclei", demo_kwargs={"num_patients": 3, "images_per_patient": 2, "size": [64, 64]}
    )
    assert load_datalist(path, "training")


def test_missing_dataset_folder_and_datalist_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"dataset_dir does not exist: .*nowhere.*--dataset_dir"):
        resolve_datalist(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"no datalist at .*datalist\.json.*fewlabel datalist"):
        resolve_datalist(tmp_path)
    (tmp_path / "datalist.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_datalist(tmp_path / "datalist.json")
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [{"image": "missing.png", "label": "m.png"}]}))
    with pytest.raises(DataError, match=r"missing\.png"):
        load_datalist(resolve_datalist(tmp_path), "training")


def test_bundle_root_from_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bundle_root("medsass_binary_segmentation") == str(REPO / "bundles" / "medsass_binary_segmentation")
    with pytest.raises(FileNotFoundError, match="--bundle_root"):
        bundle_root("no_such_bundle")


def test_cli_lists_bundles_and_reports_errors_cleanly(monkeypatch, capsys, tmp_path):
    assert "medsass_binary_segmentation" in cli.bundles()
    monkeypatch.setattr(
        sys, "argv", ["fewlabel", "datalist", "tiles", str(tmp_path / "absent"), "-o", str(tmp_path / "d.json")]
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert "absent" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_demo_writes_summary_metrics_and_overlay(tmp_path):
    cli.demo("medsass_binary_segmentation", output_dir=str(tmp_path), quick=True)
    out = tmp_path / "medsass_binary_segmentation"
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["zero_label_iou"] <= 1.0 and 0.0 < summary["otsu_iou"] <= 1.0
    assert (out / "zero_label" / "metrics.md").is_file() and summary["overlays"]
    assert summary["figure"] == str(out / "demo_output.png") and Image.open(summary["figure"]).format == "PNG"
    served = _serve_demo("medsass_binary_segmentation", tmp_path, tmp_path / "serve")  # `make label-server` next
    assert served.demo and served.weights == out / "models" / "pretrained.pt"


def _fewlabel(args: list[str], cwd) -> subprocess.CompletedProcess:
    """``python -m fewlabel.cli ARGS`` as a user runs it (not on a terminal: progress as start and end lines)."""
    path = os.pathsep.join(filter(None, [str(REPO / "common"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", "fewlabel.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=1200)


def _output_lines(proc: subprocess.CompletedProcess) -> list[str]:
    # Holoscan's warning where an old environment still has the MONAI Deploy SDK (tests/deploy checks it is gone)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "stack size" not in line]


@pytest.mark.slow
def test_quick_demo_is_quiet_and_its_summary_names_the_stage_logs(tmp_path):
    """``fewlabel demo BUNDLE --quick``: a start and an end line per stage and the summary; full output in logs."""
    name = "medsass_binary_segmentation"
    proc = _fewlabel(["demo", name, "--quick", "--output_dir", str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / name
    summary = json.loads((out / "summary.json").read_text())
    logs = [out / "logs" / f for f in ("01_pretrain.log", "02_zero_label.log", "03_predictions.log")]
    assert summary["logs"] == [str(p) for p in logs]
    lines = _output_lines(proc)
    assert len(lines) <= 2 * len(logs) + 10, "\n".join(lines)
    for log in logs:
        assert f"(log {log})" in proc.stderr
    assert "Epoch: 1/1" not in proc.stdout + proc.stderr and "parsing config_file" not in proc.stdout + proc.stderr
    assert f"logs:     {out / 'logs'} (3 stages" in proc.stdout and "zero-label IoU" in proc.stdout
    assert "Epoch[1] Complete" in logs[0].read_text() and "> epochs: 1" in logs[0].read_text()
    assert "metrics.json" in logs[1].read_text() or "IoU" in logs[1].read_text()


@pytest.mark.slow
def test_a_failing_demo_stage_shows_its_reason_and_log_and_verbose_shows_everything(tmp_path):
    """A stage that fails (its dataset folder is missing) ends the demo with its reason, the end of its log and
    the log's path; ``--verbose`` prints the stage's own output and writes no logs."""
    copy = tmp_path / "bundles" / "broken_demo"
    shutil.copytree(REPO / "bundles" / "medsass_binary_segmentation" / "configs", copy / "configs")
    protocol = json.loads((copy / "configs" / "protocol.json").read_text())
    protocol["stages"][0]["overrides"] = {"dataset_dir": str(tmp_path / "nowhere")}
    (copy / "configs" / "protocol.json").write_text(json.dumps(protocol))
    proc = _fewlabel(["demo", str(copy), "--quick", "--output_dir", str(tmp_path / "out")], tmp_path)
    log = tmp_path / "out" / "broken_demo" / "logs" / "01_pretrain.log"
    assert proc.returncode != 0
    lines = _output_lines(proc)
    assert len(lines) <= 40, "\n".join(lines)
    # the reason (MONAI wraps it in a RuntimeError), then the end of the log and its path
    assert re.search(r"broken_demo \[1\] pretrain failed: dataset_dir does not exist: .*nowhere.*\n"
                     rf"--- last lines of {re.escape(str(log))} ---\n", proc.stdout), proc.stdout[-3000:]
    assert re.search(r"fewlabel: error: stage 'pretrain' of broken_demo failed: dataset_dir does not exist: "
                     rf".*nowhere.*\n  its log: {re.escape(str(log))}", proc.stderr), proc.stderr[-3000:]
    assert "DataError: dataset_dir does not exist" in log.read_text()

    loud = _fewlabel(["demo", str(copy), "--quick", "--verbose", "--output_dir", str(tmp_path / "loud")], tmp_path)
    assert loud.returncode != 0 and "dataset_dir does not exist" in loud.stderr
    assert "parsing config_file" in loud.stdout + loud.stderr  # what the quiet demo keeps in its logs
    assert not (tmp_path / "loud" / "broken_demo" / "logs").exists()


def test_datalist_help_names_every_adapter():
    from fewlabel.cli import datalist
    from fewlabel.data.adapters import ADAPTERS

    missing = [name for name in ADAPTERS if name not in datalist.__doc__]
    assert not missing, f"`fewlabel datalist --help` does not name the adapters {missing}"


def test_input_kind_comes_from_the_bundles_metadata(tmp_path):
    """PolyCL takes volumes, the 2D bundles frames; read from metadata.json, whatever the transforms are."""
    kinds = {b.name: input_kind(b) for b in sorted((REPO / "bundles").iterdir()) if (b / "configs").is_dir()}
    assert kinds == {name: "volume" if name.startswith("polycl") else "frame" for name in kinds}
    meta = json.loads((REPO / "bundles" / "polycl_liver_ct_segmentation" / "configs" / "metadata.json").read_text())
    assert input_kind(meta) == input_kind({"_meta_": meta}) == "volume"
    # a copied bundle whose metadata says png is a frame bundle, though its inference loads CT volumes
    copy = tmp_path / "copy" / "configs"
    copy.mkdir(parents=True)
    (copy / "metadata.json").write_text(json.dumps(dict(meta, data_type="png")))
    assert input_kind(copy.parent) == "frame"
    with pytest.raises(DataError, match=r"data_type 'hdf5' is not one of .*configs/metadata.json"):
        input_kind(dict(meta, data_type="hdf5"))
    with pytest.raises(DataError, match="cannot read bundle metadata .*absent"):
        input_kind(tmp_path / "absent")
