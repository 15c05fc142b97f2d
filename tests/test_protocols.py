"""Each bundle's protocol lives in its own configs/protocol.json; fewlabel reads it (demo, seeds, sweeps)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from testlib import REPO
from fewlabel.bundle import Stage, load_protocol
from fewlabel.errors import DataError
from fewlabel.protocols import PROTOCOLS

BUNDLE_NAMES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_every_bundle_declares_its_protocol_in_its_configs(bundle):
    stages = load_protocol(bundle)
    assert stages and all(isinstance(s, Stage) for s in stages)
    assert PROTOCOLS[bundle] == stages  # the old public mapping reads the same file
    written = set()
    for stage in stages:  # load_protocol checks this too; here it is what a reader of the file relies on
        assert set(stage.reads) <= written, (stage.name, stage.reads)
        written |= set(stage.writes)
    assert any(w.endswith("metrics.json") for w in stages[-1].writes), "the last stage leaves the metrics"


def test_protocols_mapping_lists_the_checkouts_bundles():
    assert sorted(PROTOCOLS) == BUNDLE_NAMES and len(PROTOCOLS) == len(BUNDLE_NAMES)
    assert "no_such_bundle" not in PROTOCOLS and PROTOCOLS.get("no_such_bundle", ()) == ()


def _copy(tmp_path, name="my_binary_segmentation"):
    copy = tmp_path / "bundles" / name
    shutil.copytree(REPO / "bundles" / "medsass_binary_segmentation" / "configs", copy / "configs")
    meta = copy / "configs" / "metadata.json"
    meta.write_text(json.dumps(dict(json.loads(meta.read_text()), name=name)))
    return copy


@pytest.mark.parametrize(("stages", "message"), [
    ([{"name": "a", "configs": ["absent.json"]}], r"stage 0 \(a\): config files \['absent.json'\] are not in"),
    ([{"name": "a", "configs": ["train.json"], "reads": ["models/x.pt"]}], r"reads \[.models/x.pt.\], which no"),
    ([{"name": "a", "configs": ["train.json"]}, {"name": "a", "configs": ["train.json"]}], "must be unique"),
    ([{"name": "a", "configs": ["train.json"], "epochs": 3}], "a stage is a mapping with 'name' and 'configs'"),
    ([], "'stages' must be a non-empty list"),
])
def test_a_wrong_protocol_file_is_named_with_the_fault(tmp_path, stages, message):
    copy = _copy(tmp_path)
    (copy / "configs" / "protocol.json").write_text(json.dumps({"stages": stages}))
    with pytest.raises(DataError, match=message) as err:
        load_protocol(copy)
    assert str(copy / "configs" / "protocol.json") in str(err.value)


def test_a_bundle_without_protocol_says_which_file_to_write(tmp_path):
    copy = _copy(tmp_path)
    (copy / "configs" / "protocol.json").unlink()
    with pytest.raises(DataError, match=r"has no protocol: write .*configs/protocol.json"):
        load_protocol(str(copy))
    assert str(copy) not in PROTOCOLS


@pytest.mark.slow
def test_a_sixth_bundle_runs_through_fewlabel_seeds_without_an_edit_in_common(tmp_path, capsys):
    """A copy of a bundle under a new name, outside bundles/ of this checkout, runs its protocol once per
    seed, and the mean over the seeds of the last stage's metrics is printed."""
    pytest.importorskip("ray")
    from fewlabel import cli

    copy = _copy(tmp_path)
    stages = [s.name for s in load_protocol(copy)]
    smoke = json.loads((copy / "configs" / "smoke.json").read_text())
    cli.seeds(str(copy), "0,1", str(tmp_path / "out"), **smoke)
    runs = tmp_path / "out" / copy.name / "runs" / "default"
    per_seed = [json.loads((runs / f"seed_{s}" / stages[-1] / "metrics.json").read_text()) for s in (0, 1)]
    record = json.loads((runs / "seed_0" / "run.json").read_text())
    assert all(str(copy / "configs") in s["command"] for s in record["stages"])  # the copy's configs ran
    assert [s["name"] for s in record["stages"]] == stages
    values = [m["mean_iou_foreground"] for m in per_seed]
    printed = capsys.readouterr().out
    assert f"{copy}: 2 seeds" in printed
    assert f"mean_iou_foreground: {sum(values) / 2:.4f}" in printed and "(n=2)" in printed
    foreground = sum(m["per_class"]["foreground"]["iou"] for m in per_seed) / 2
    assert f"foreground iou: {foreground:.4f}" in printed
    report = Path(printed.split("; report ")[1].split("\n")[0])
    assert "mean_iou_foreground (%)" in report.read_text()
    stamp = (runs / "seed_0" / stages[-1] / "metrics.json").stat().st_mtime_ns
    cli.seeds(str(copy), [0, 1], str(tmp_path / "out"), **smoke)  # finished seeds are not rerun
    assert (runs / "seed_0" / stages[-1] / "metrics.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_fewlabel_demo_runs_the_protocol_of_a_bundle_without_a_hand_made_demo(tmp_path):
    """``fewlabel demo FOLDER --quick``: the protocol at smoke.json sizes, the last stage's metrics summarised."""
    from fewlabel import cli

    copy = _copy(tmp_path)
    cli.demo(str(copy), str(tmp_path / "demo"), quick=True)
    out = tmp_path / "demo" / copy.name
    summary = json.loads((out / "summary.json").read_text())
    metrics = json.loads((out / "zero_label" / "metrics.json").read_text())
    assert summary["stages"] == ["pretrain", "zero_label"]
    assert summary["mean_iou_foreground"] == metrics["mean_iou_foreground"]
    assert (out / "models" / "pretrained.pt").is_file()
    with pytest.raises(ValueError, match="no demo for 'no_such_bundle'"):
        cli.demo("no_such_bundle")
