"""Dataset resolution for bundles, bundle location, and the ``fewlabel`` command."""

from __future__ import annotations

import json
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
