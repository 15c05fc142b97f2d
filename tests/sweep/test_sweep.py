"""Sweeps: specs, the Ray runner (kill and restart, retry of a failing run) and the paper-style report."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from testlib import BUNDLES, REPO
from fewlabel.errors import FewLabelError
from fewlabel.metrics.report import example_arrays
from fewlabel.sweep import SpecError, cell_name, load_spec, make_report, select_runs
from fewlabel.sweep.report import collect

MEDSASS = "medsass_binary_segmentation"
TINY_STAGES = [
    {"name": "train", "configs": ["train.json", "smoke.json"]},
    {"name": "evaluate", "configs": ["train.json", "smoke.json", "evaluate.json"]},
]


def _write_spec(path: Path, **content) -> Path:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------- specs
def test_spec_expands_grid_and_cells_into_runs(tmp_path):
    spec = load_spec(
        _write_spec(
            tmp_path / "s.yaml",
            bundle=MEDSASS,
            stages=TINY_STAGES,
            grid={"learning_rate": [0.1, 0.01], "batch_size": [2, 4]},
            cells=[{"learning_rate": 0.5, "batch_size": 8}, {"learning_rate": 0.1, "batch_size": 2}],
            seeds=[3, 7],
            overrides={"epochs": 2},
        )
    )
    assert spec.name == "s"
    params = spec.cell_params()
    # 4 grid cells, one extra cell, the duplicate of a grid cell dropped
    assert params == [{"learning_rate": 0.1, "batch_size": 2}, {"learning_rate": 0.1, "batch_size": 4},
                      {"learning_rate": 0.01, "batch_size": 2}, {"learning_rate": 0.01, "batch_size": 4},
                      {"learning_rate": 0.5, "batch_size": 8}]
    runs = spec.runs(tmp_path / "out")
    assert len(runs) == 10 and len({r.folder for r in runs}) == 10
    run = runs[0]
    assert run.key == "learning_rate-0.1_batch_size-2/seed_3"
    assert run.folder == (tmp_path / "out" / "runs" / "learning_rate-0.1_batch_size-2" / "seed_3").resolve()
    over = run.stage_overrides(spec.stages[0])
    assert over["seed"] == 3 and over["epochs"] == 2 and over["learning_rate"] == 0.1
    assert over["ckpt_dir"] == str(run.folder / "models") and over["output_dir"] == str(run.folder / "train")
    cmd = run.command(spec.stages[1], REPO / "bundles" / MEDSASS)
    assert cmd[1:4] == ["-m", "monai.bundle", "run"]
    files = json.loads(cmd[cmd.index("--config_file") + 1])
    assert [Path(f).name for f in files] == ["train.json", "smoke.json", "evaluate.json", "evaluate.overrides.json"]
    assert select_runs(runs, "learning_rate-0.5*") == [r for r in runs if r.params["learning_rate"] == 0.5]
    assert select_runs(runs, "*/seed_7") == [r for r in runs if r.seed == 7]


def test_spec_default_stages_are_the_bundle_protocol_and_skip_rules_apply(tmp_path):
    from fewlabel.protocols import PROTOCOLS

    spec = load_spec({"bundle": "polycl_liver_ct_segmentation", "seeds": 0})
    assert [s.name for s in spec.stages] == [s.name for s in PROTOCOLS["polycl_liver_ct_segmentation"]]
    spec = load_spec({"bundle": "polycl_liver_ct_segmentation", "stages": [
        {"name": "pretrain", "configs": ["train.json", "pretrain.json"], "skip_if": {"from_pretrained": False}},
        {"name": "finetune", "configs": ["train.json"]},
        {"name": "evaluate_sam", "configs": ["train.json", "evaluate.json"], "only_if": {"refine": "sam"}}],
        "cells": [{"from_pretrained": False}, {"from_pretrained": True, "refine": "sam"}]})
    supervised, pretrained = spec.runs(tmp_path)
    assert [s.name for s in supervised.active_stages()] == ["finetune"]
    assert [s.name for s in pretrained.active_stages()] == ["pretrain", "finetune", "evaluate_sam"]


def test_stage_scoped_keys_and_excluded_keys(tmp_path):
    spec = load_spec({"bundle": "slippa_liver_landmark_segmentation", "stages": [
        {"name": "stage1", "configs": ["train.json"]},
        {"name": "finetune", "configs": ["train.json", "finetune.json"], "exclude": ["learning_rate", "loss_preset"]}],
        "overrides": {"finetune:epochs": 3, "epochs": 9},
        "cells": [{"learning_rate": 0.01, "loss_preset": "candidate3", "finetune:loss_preset": "finetune_ce"}]})
    (run,) = spec.runs(tmp_path)
    stage1, finetune = (run.stage_overrides(s) for s in spec.stages)
    assert stage1["learning_rate"] == 0.01 and stage1["loss_preset"] == "candidate3" and stage1["epochs"] == 9
    assert not any(":" in k for k in stage1)
    # the fine-tuning stage keeps finetune.json's learning rate, gets its own loss and epochs
    assert "learning_rate" not in finetune and finetune["loss_preset"] == "finetune_ce" and finetune["epochs"] == 3
    assert run.cell == "learning_rate-0.01_loss_preset-candidate3_finetune_loss_preset-finetune_ce"


@pytest.mark.parametrize("content, message", [
    ({"stages": TINY_STAGES}, "'bundle'"),
    ({"bundle": "no_such_bundle"}, "no_such_bundle"),
    ({"bundle": MEDSASS, "stages": [{"name": "x", "configs": ["nope.json"]}]}, "nope.json"),
    ({"bundle": MEDSASS, "grid": {"learning_rate": []}}, "learning_rate"),
    ({"bundle": MEDSASS, "seeds": []}, "seeds"),
    ({"bundle": MEDSASS, "sedes": [1]}, "sedes"),
    ({"bundle": MEDSASS, "stages": [{"configs": ["train.json"]}]}, "name"),
    ({"bundle": MEDSASS, "stages": TINY_STAGES, "report": {"metrics": 1, "tables": [
        {"metrics": {"x": "stages.evaluate_sam.mean_dice"}}]}}, "['evaluate_sam']"),
    ({"bundle": MEDSASS, "stages": TINY_STAGES, "report": {"stage": "zero_label"}}, "['zero_label']"),
])
def test_bad_specs_name_the_file_and_the_field(tmp_path, content, message):
    path = _write_spec(tmp_path / "bad.yaml", **content)
    with pytest.raises(SpecError, match=re.escape(message)) as err:
        load_spec(path)
    assert str(path) in str(err.value)


def test_missing_and_unparsable_spec_files(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "none.yaml")
    (tmp_path / "broken.yaml").write_text("bundle: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(tmp_path / "broken.yaml")


def test_cell_names_are_safe_folder_names():
    assert cell_name({}) == "default"
    assert cell_name({"optimizer#lr": 0.1, "mask_shape": "circle/black"}) == "optimizer.lr-0.1_mask_shape-circle_black"


@pytest.mark.parametrize("bundle", [b.name for b in BUNDLES])
def test_every_bundle_ships_paper_specs_that_load(bundle):
    specs = sorted((REPO / "bundles" / bundle / "sweeps").glob("*.yaml"))
    assert specs, f"{bundle} has no sweep specs in sweeps/"
    for path in specs:
        spec = load_spec(path)
        assert spec.bundle == bundle
        trains = [s.name for s in spec.stages if "evaluate.json" not in s.configs]
        # the papers average several seeds of what they train; scoring given predictions (SLiPPA Table 2) has one
        assert len(spec.seeds) >= 3 or not trains, f"{path.name}: the papers average several seeds"
        assert len(spec.cell_params()) >= 2, f"{path.name}: a sweep compares at least two settings"
        report = spec.report
        assert report.get("tables"), f"{path.name}: no paper-style table"
        keys = {k for p in spec.cell_params() for k in p}
        # every setting the spec varies or fixes is a key of the config files of a stage that gets it
        config_keys = set()
        for stage in spec.stages:
            for c in stage.configs:
                config_keys |= set(json.loads((REPO / "bundles" / bundle / "configs" / c).read_text()))
        for key in keys | set(spec.overrides):
            assert key.rpartition(":")[2] in config_keys, f"{path.name}: '{key}' is not a config key of {bundle}"
        for table in report["tables"]:
            assert set(table.get("rows", [])) <= keys and table.get("cols", next(iter(keys))) in keys, path.name
        for plot in report.get("plots", []):
            assert {plot.get(k) for k in ("x", "y", "group") if plot.get(k)} <= keys, path.name


# --------------------------------------------------------------------------------------------- report
def _fake_run_dir(tmp_path: Path, report: dict, values: dict) -> Path:
    """A finished sweep without running anything: ``values[(lr, bs)][seed] = metrics``."""
    run_dir = tmp_path / "sweep"
    run_dir.mkdir()
    spec = {"name": "fake", "bundle": MEDSASS, "stages": TINY_STAGES, "seeds": [0, 1, 2],
            "grid": {"learning_rate": [0.1, 0.01], "batch_size": [2, 4]}, "report": report}
    (run_dir / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    for (lr, bs), seeds in values.items():
        for seed, metrics in seeds.items():
            folder = run_dir / "runs" / cell_name({"learning_rate": lr, "batch_size": bs}) / f"seed_{seed}"
            (folder / "evaluate").mkdir(parents=True)
            (folder / "evaluate" / "metrics.json").write_text(json.dumps(metrics))
            (folder / "done.json").write_text("{}")
    return run_dir


def _metrics(iou: float, hd: float, fg: float) -> dict:
    return {"mean_iou": iou, "mean_hausdorff": hd,
            "per_class": {"background": {"iou": 1 - fg}, "foreground": {"iou": fg}}}


def _rows(markdown: str, first: str) -> dict[str, list[str]]:
    """Rows of the first table of ``markdown`` whose header starts with ``first``, keyed by their first two cells."""
    out, inside = {}, False
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first:
            inside = True
            continue
        if inside and line.startswith("|") and not cells[0].startswith("---"):
            out[" ".join(cells[:2])] = cells
        elif inside and not line.startswith("|"):
            break
    return out


def test_report_tables_hold_means_and_stds_over_seeds_with_the_best_in_bold(tmp_path):
    rng = np.random.default_rng(0)
    values = {}
    for lr in (0.1, 0.01):
        for bs in (2, 4):
            values[(lr, bs)] = {s: _metrics(rng.uniform(0.3, 0.9), rng.uniform(2, 20), rng.uniform(0.2, 0.8))
                                for s in (0, 1, 2)}
    del values[(0.01, 4)][2]  # one run not finished: n=2 in that cell, listed as missing
    report = {"metric": "mean_iou", "tables": [
        {"rows": ["learning_rate", "batch_size"], "metrics": ["mean_iou", "mean_hausdorff"]},
        {"rows": ["learning_rate"], "cols": "batch_size", "metric": "mean_iou"},
        {"rows": ["learning_rate", "batch_size"], "per_class": "iou"}],
        "plots": [{"kind": "curve", "x": "batch_size", "group": "learning_rate"},
                  {"kind": "heatmap", "x": "batch_size", "y": "learning_rate"},
                  {"kind": "bars", "keys": ["learning_rate", "batch_size"]}]}
    run_dir = _fake_run_dir(tmp_path, report, values)
    path = make_report(run_dir)
    text = path.read_text()

    def mean_std(cell, key):
        v = [m[key] for m in values[cell].values()]
        return np.mean(v), np.std(v, ddof=1)

    rows = _rows(text, "learning_rate")
    best_iou = max(values, key=lambda c: mean_std(c, "mean_iou")[0])
    best_hd = min(values, key=lambda c: mean_std(c, "mean_hausdorff")[0])
    for cell in values:
        row = rows[f"{cell[0]} {cell[1]}"]
        m, s = mean_std(cell, "mean_iou")
        assert row[2].strip("*").startswith(f"{100 * m:.2f} ± {100 * s:.2f}")
        assert row[2].startswith("**") == (cell == best_iou)
        m, s = mean_std(cell, "mean_hausdorff")  # a distance: not a percentage, lower is better
        assert row[3].strip("*").startswith(f"{m:.2f} ± {s:.2f}")
        assert row[3].startswith("**") == (cell == best_hd)
    assert rows["0.01 4"][2].strip("*").endswith("(n=2)")
    # the two-parameter layout: a row per learning rate, a column per batch size
    assert "| learning_rate | batch_size=2 | batch_size=4 |" in text
    grid_row = next(line for line in text.splitlines() if line.startswith("| 0.1 | ") and line.count("|") == 4)
    assert f"{100 * mean_std((0.1, 4), 'mean_iou')[0]:.2f}" in grid_row.split("|")[3]
    # per class: background and foreground columns, then the mean
    assert "| learning_rate | batch_size | background iou (%) | foreground iou (%) | mean iou (%) |" in text
    fg = [m["per_class"]["foreground"]["iou"] for m in values[(0.1, 2)].values()]
    assert f"{100 * np.mean(fg):.2f} ± {100 * np.std(fg, ddof=1):.2f}" in text
    assert "`learning_rate-0.01_batch_size-4/seed_2`: not finished" in text
    for name in ("plot_0_curve.png", "plot_1_heatmap.png", "plot_2_bars.png"):
        assert f"]({name})" in text
        assert (path.parent / name).stat().st_size > 5000
    assert json.loads((path.parent / "report.json").read_text())["missing"] == [
        "learning_rate-0.01_batch_size-4/seed_2"
    ]


def test_report_defaults_without_a_layout(tmp_path):
    values = {
        (lr, bs): {s: _metrics(0.5 + 0.1 * s, 3.0, 0.4) for s in (0, 1, 2)} for lr in (0.1, 0.01) for bs in (2, 4)
    }
    path = make_report(_fake_run_dir(tmp_path, {}, values))
    text = path.read_text()
    assert "| learning_rate | batch_size | mean_iou (%) | mean_hausdorff |" in text
    assert "foreground iou (%)" in text
    assert (path.parent / "plot_0_curve.png").is_file() and (path.parent / "plot_1_heatmap.png").is_file()


def test_report_of_a_sweep_where_nothing_finished_lists_every_run(tmp_path):
    run_dir = _fake_run_dir(tmp_path, {}, {})
    (run_dir / "failed.json").write_text(json.dumps([{"key": "learning_rate-0.1_batch_size-2/seed_0",
                                                      "error": "run ...: stage 'train' exited with status 1"}]))
    text = make_report(run_dir).read_text()
    assert "0 of 12 runs finished" in text and "![" not in text  # no empty plots
    assert "`learning_rate-0.1_batch_size-2/seed_0`: run ...: stage 'train' exited with status 1" in text
    assert text.count("not finished") == 11


def test_report_refuses_a_folder_that_is_not_a_sweep(tmp_path):
    with pytest.raises(FewLabelError, match="no sweep.yaml"):
        collect(tmp_path)


def test_overlay_grid_from_saved_examples(tmp_path):
    values = {(lr, bs): {0: _metrics(iou, 3.0, 0.4)} for (lr, bs), iou in
              {(0.1, 2): 0.9, (0.1, 4): 0.2, (0.01, 2): 0.5, (0.01, 4): 0.7}.items()}
    run_dir = _fake_run_dir(tmp_path, {"overlays": {"cells": 2, "examples": 2}}, values)
    for folder in (run_dir / "runs").glob("*/seed_0"):
        img = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
        lab = np.zeros((32, 32), np.uint8)
        lab[8:20, 8:20] = 1
        np.savez(folder / "evaluate" / "metrics_examples.npz", **{
            f"{k}_{i}": v for i in range(3) for k, v in (("image", img), ("label", lab), ("pred", lab))})
    text = make_report(run_dir).read_text()
    assert "](overlays.png)" in text
    from PIL import Image

    w, h = Image.open(run_dir / "report" / "overlays.png").size
    assert w > 2.5 * h  # two cells (rows), 2 examples x (image, ground truth, prediction) = six columns


def test_example_arrays_keep_the_most_labelled_slice_of_a_volume():
    image = np.zeros((1, 16, 16, 5), np.float32)
    label = np.zeros((1, 16, 16, 5), np.uint8)
    label[0, 2:6, 2:6, 1] = 1
    label[0, 2:12, 2:12, 3] = 1
    image[..., 3] = 7.0
    image[0, 0, 0, 3] = 9.0
    ex = example_arrays(image, label, label)
    assert ex["label"].sum() == 100 and ex["image"].shape == (16, 16)
    assert ex["image"].max() == 1.0 and ex["image"].min() == 0.0  # min-max scaled slice 3
    rgb = example_arrays(np.ones((3, 8, 8)), np.zeros((1, 8, 8)), np.eye(2)[np.zeros((8, 8), int)].transpose(2, 0, 1))
    assert rgb["image"].shape == (8, 8, 3) and rgb["pred"].shape == (8, 8) and not rgb["pred"].any()
    assert example_arrays(np.ones((3, 8, 8)), np.zeros((1, 4, 4)), np.zeros((1, 4, 4))) is None


# --------------------------------------------------------------------------------------------- Ray runs
def _processes() -> dict[int, str]:
    out = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                out[int(p.name)] = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                pass
    return out


def _new_sweep_processes(before: dict[int, str], run_dir: Path) -> dict[int, str]:
    return {pid: cmd for pid, cmd in _processes().items() if pid not in before
            and (str(run_dir) in cmd or "ray::" in cmd or "/ray/" in cmd or "raylet" in cmd or "gcs_server" in cmd)}


def _wait_gone(before: dict[int, str], run_dir: Path, timeout: float = 60.0) -> dict[int, str]:
    end = time.time() + timeout
    while (left := _new_sweep_processes(before, run_dir)) and time.time() < end:
        time.sleep(0.5)
    return left


def _sweep_cmd(spec: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "fewlabel.cli", "sweep", str(spec), "--run_dir", str(run_dir), "--num_cpus", "2"]


def _finished(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("runs/*/seed_*/done.json"))


def _events(folder: Path, kind: str) -> int:
    return sum(json.loads(line)["event"] == kind for line in (folder / "attempts.jsonl").read_text().splitlines())


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="process checks read /proc")
def test_sweep_killed_halfway_and_restarted_runs_every_cell_once(tmp_path):
    pytest.importorskip("ray")
    spec = _write_spec(tmp_path / "tiny.yaml", name="tiny", bundle=MEDSASS, stages=TINY_STAGES,
                       grid={"learning_rate": [0.001, 0.0001]}, seeds=[0, 1], report={"metric": "mean_iou"})
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO / "tests"))
    before = _processes()
    # first try: killed (the driver, the local Ray instance and its workers: one process group) after one run
    proc = subprocess.Popen(_sweep_cmd(spec, run_dir), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not _finished(run_dir) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {p.parent: p.read_text() for p in _finished(run_dir)}
    assert 1 <= len(first) < 4, "the kill should land after the first run and before the last"
    left = _wait_gone(before, run_dir)
    assert not left, f"processes left behind by the killed sweep: {left}"

    # restart: only the unfinished runs go; then every run has finished exactly once
    done = subprocess.run(_sweep_cmd(spec, run_dir), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 of 4 runs done, 0 failed" in done.stdout
    runs = sorted(run_dir.glob("runs/*/seed_*"))
    assert len(runs) == 4 and len(_finished(run_dir)) == 4
    for folder in runs:
        assert _events(folder, "finished") == 1, folder
        assert json.loads((folder / "status.json").read_text())["state"] == "done"
    for folder, content in first.items():
        assert (folder / "done.json").read_text() == content and _events(folder, "start") == 1
    assert not _wait_gone(before, run_dir), "processes left behind after the sweep"

    # the report's table: mean ± std over the two seeds of each learning rate, from the runs' metrics
    text = (run_dir / "report" / "report.md").read_text()
    for lr in ("0.001", "0.0001"):
        ious = [json.loads((run_dir / "runs" / f"learning_rate-{lr}" / f"seed_{s}" / "evaluate" / "metrics.json")
                           .read_text())["mean_iou"] for s in (0, 1)]
        row = next(line for line in text.splitlines() if line.startswith(f"| {lr} |"))
        assert f"{100 * np.mean(ious):.2f} ± {100 * np.std(ious, ddof=1):.2f}" in row
    from PIL import Image

    for name in ("plot_0_curve.png", "training_curves.png", "overlays.png"):
        assert f"]({name})" in text
        w, h = Image.open(run_dir / "report" / name).size
        assert w >= 300 and h >= 200
    # any run can be repeated alone from its recorded commands
    record = json.loads((runs[0] / "run.json").read_text())
    assert [s["name"] for s in record["stages"]] == ["train", "evaluate"]
    assert "monai.bundle run" in record["stages"][0]["command"]


@pytest.mark.slow
def test_a_failing_run_is_retried_once_and_reported(tmp_path):
    pytest.importorskip("ray")
    spec = _write_spec(tmp_path / "bad.yaml", name="bad", bundle=MEDSASS, stages=TINY_STAGES[:1],
                       cells=[{"arch": "no_such_arch"}], seeds=[0])
    run_dir = tmp_path / "run"
    before = _processes()
    done = subprocess.run(_sweep_cmd(spec, run_dir), capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(REPO / "tests")))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "0 of 1 runs done, 1 failed" in done.stdout
    folder = run_dir / "runs" / "arch-no_such_arch" / "seed_0"
    assert _events(folder, "start") == 2 and _events(folder, "failed") == 2 and _events(folder, "finished") == 0
    failed = json.loads((run_dir / "failed.json").read_text())
    assert [f["key"] for f in failed] == ["arch-no_such_arch/seed_0"]
    assert "stage 'train' exited with status" in failed[0]["error"] and "train.log" in failed[0]["error"]
    assert "no_such_arch" in failed[0]["error"]  # the end of the stage's log says what went wrong
    report = (run_dir / "report" / "report.md").read_text()
    assert "`arch-no_such_arch/seed_0`: run arch-no_such_arch/seed_0: stage 'train' exited" in report
    assert not _wait_gone(before, run_dir)


@pytest.mark.slow
def test_sweep_on_a_running_ray_cluster(tmp_path):
    """``--address``: the runs go to a Ray cluster started separately (here a head node on this machine)."""
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO / "tests"), RAY_AUTH_MODE="disabled")
    before = _processes()
    head = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--head",
            "--block",
            "--num-cpus",
            "1",
            "--port",
            str(port),
            "--include-dashboard",
            "false",
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    spec = _write_spec(tmp_path / "one.yaml", name="one", bundle=MEDSASS, stages=TINY_STAGES[:1], seeds=[0],
                       cells=[{"learning_rate": 0.001}], report={"metric": "mean_iou", "overlays": False})
    run_dir = tmp_path / "run"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        done = subprocess.run([sys.executable, "-m", "fewlabel.cli", "sweep", str(spec), "--run_dir", str(run_dir),
                               "--address", f"127.0.0.1:{port}", "--report", "false"],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 of 1 runs done" in done.stdout
        attempt = json.loads((run_dir / "runs" / "learning_rate-0.001" / "seed_0" / "attempts.jsonl")
                             .read_text().splitlines()[0])
        assert attempt["ray_cluster"].endswith(f":{port}")  # ran in a worker of that cluster
        assert (run_dir / "runs" / "learning_rate-0.001" / "seed_0" / "models" / "model.pt").is_file()
        assert head.poll() is None  # the sweep leaves the cluster running
    finally:  # the head, its raylet, GCS and workers; and its address file, which `ray.init()` would read
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()
    assert not _wait_gone(before, run_dir), "processes of the Ray head left behind"


def test_the_docs_hold_a_demo_report_with_its_pictures():
    report = REPO / "bundles" / "surgical_semiseg_laparoscopy_segmentation" / "docs" / "sweep_demo" / "report.md"
    text = report.read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"overlays.png", "training_curves.png"} <= set(pictures) and len(pictures) >= 4
    for name in pictures:
        assert (report.parent / name).stat().st_size > 10_000, name
    assert "demo_mask_grid.yaml" in text and "| mask_ratio | mask_size=16 | mask_size=64 |" in text
    linked = (REPO / "bundles" / "surgical_semiseg_laparoscopy_segmentation" / "docs" / "README.md").read_text()
    assert "sweep_demo/report.md" in linked


@pytest.mark.slow
def test_with_gpus_each_run_takes_one_and_runs_alone_on_it(tmp_path):
    """One run per GPU: a local instance told it has one GPU (none is used: CUDA is absent here, so the
    stages fall back to the CPU) runs the two runs one after the other, each seeing GPU 0."""
    pytest.importorskip("ray")
    spec = _write_spec(tmp_path / "gpu.yaml", name="gpu", bundle=MEDSASS, stages=TINY_STAGES[:1], seeds=[0, 1],
                       report={"overlays": False})
    run_dir = tmp_path / "run"
    done = subprocess.run(_sweep_cmd(spec, run_dir) + ["--num_gpus", "1", "--report", "false"], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(REPO / "tests")))
    assert done.returncode == 0, done.stdout + done.stderr
    spans = []
    for folder in sorted(run_dir.glob("runs/default/seed_*")):
        events = [json.loads(line) for line in (folder / "attempts.jsonl").read_text().splitlines()]
        spans.append((events[0]["time"], events[-1]["time"]))
        assert events[0]["gpus"] == ["0"] and events[0]["cuda_visible_devices"] == "0"  # the stages inherit it
    (a0, a1), (b0, b1) = sorted(spans)
    assert a1 <= b0, "two runs shared the one GPU"


def _paths(report: dict) -> tuple[set[str], set[str]]:
    """Metric paths a report layout reads, and the per-class tables' ``(path, metric)``."""
    paths, per_class = {report.get("metric", "mean_iou")}, set()
    for table in report.get("tables", []):
        metrics = table.get("metrics", {})
        metrics = set(metrics.values() if isinstance(metrics, dict) else metrics)
        paths |= {f"{v}.{m}" if v else m for v in (table.get("variants") or {"": ""}).values() for m in metrics}
        if table.get("metric"):
            paths.add(table["metric"])
        if table.get("per_class"):
            per_class.add((table.get("path", "per_class"), table["per_class"]))
            paths.add(table.get("mean") or f"mean_{table['per_class']}")
    paths |= {p["metric"] for p in report.get("plots", []) if p.get("metric")}
    return paths, per_class


def _nested(tree: dict, path: str, value: float) -> None:
    *parents, leaf = path.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


@pytest.mark.parametrize("spec_path", sorted((REPO / "bundles").glob("*/sweeps/*.yaml")),
                         ids=lambda p: f"{p.parents[1].name}/{p.name}")
def test_every_shipped_spec_renders_its_report(spec_path, tmp_path):
    """Each paper spec's report layout works: every run given made-up metrics under the paths its tables
    and plots read (large grids cut to two values per axis), the report is written with a value in
    every table entry and every plot it asks for."""
    raw = yaml.safe_load(spec_path.read_text())
    grids = raw.get("grid") or {}
    picked: dict = {}  # values that tables' and plots' 'where' select are kept
    for item in raw.get("report", {}).get("tables", []) + raw.get("report", {}).get("plots", []):
        for k, v in (item.get("where") or {}).items():
            picked.setdefault(k, []).append(v)
    cut = lambda g: {k: list(dict.fromkeys(v[:2] + [x for x in picked.get(k, []) if x in v])) for k, v in g.items()}  # noqa: E731
    raw["grid"] = [cut(g) for g in grids] if isinstance(grids, list) else cut(grids)
    raw["seeds"] = raw["seeds"][:2]
    spec = load_spec(raw)
    run_dir = tmp_path / "sweep"
    run_dir.mkdir()
    (run_dir / "sweep.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    paths, per_class = _paths(spec.report)
    rng = np.random.default_rng(0)
    for run in spec.runs(run_dir):
        run.folder.mkdir(parents=True)
        (run.folder / "done.json").write_text("{}")
        for stage in run.active_stages():
            metrics: dict = {}
            for path in paths:  # "stages.<stage>.<path>": <path> of that stage's metrics
                _nested(metrics, path.split(".", 2)[2] if path.startswith("stages.") else path,
                        float(rng.uniform(0.1, 0.9)))
            for base, metric in per_class:
                for cls in ("class_a", "class_b"):
                    _nested(metrics, f"{base}.{cls}.{metric}", float(rng.uniform(0.1, 0.9)))
            (run.folder / stage.name).mkdir()
            (run.folder / stage.name / "metrics.json").write_text(json.dumps(metrics))
    text = make_report(run_dir).read_text()
    assert "| ---" in text or "|---" in text, spec_path.name
    for plot_index, plot in enumerate(spec.report.get("plots", [])):
        assert f"plot_{plot_index}_{plot.get('kind', 'curve')}.png" in text, (spec_path.name, plot)
    # no empty entry except where a stage is skipped for that cell (e.g. mining at 100 % labelled)
    read = {p.split(".")[1] for p in paths if p.startswith("stages.")} | {
        spec.report.get("stage") or spec.stages[-1].name
    }
    assert read <= {s.name for s in spec.stages}, f"{spec_path.name} reports stages it does not have: {read}"
    skipped_somewhere = any(read - {s.name for s in r.active_stages()} for r in spec.runs(run_dir))
    if not skipped_somewhere:  # every value column of every table has a value (parameter columns may be "-")
        params = {k for p in spec.cell_params() for k in p}
        header: list[str] = []
        for line in text.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
            if not cells:
                header = []
            elif not header:
                header = cells
            elif not cells[0].startswith("---"):
                empty = [h for h, c in zip(header, cells) if c == "-" and h not in params]
                assert not empty, (spec_path.name, line)
