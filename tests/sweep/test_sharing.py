"""Sweeps: stage runs shared between runs (worked out from the keys each stage reads) and `reproduces`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from testlib import BUNDLES, REPO
from fewlabel.sweep import SpecError, load_spec
from fewlabel.sweep.execute import adopt_shared, execute_run
from fewlabel.sweep.plan import plan_sweep, stage_reads
from fewlabel.sweep.spec import paper_items

SPECS = sorted((REPO / "bundles").glob("*/sweeps/*.yaml"))
SURGICAL = REPO / "bundles" / "surgical_semiseg_laparoscopy_segmentation" / "sweeps"
POLYCL = REPO / "bundles" / "polycl_liver_ct_segmentation" / "sweeps"
SAM_MINING = REPO / "bundles" / "sam_mining_polyp_segmentation" / "sweeps"
#: the papers, where the checkout has ../shared beside it (CI's clean clone may not); FEWLABEL_PAPERS elsewhere
PAPERS = Path(os.environ.get("FEWLABEL_PAPERS", REPO.parent / "shared" / "papers"))


# --------------------------------------------------------------------------------------------- what a stage reads
def test_a_stage_reads_the_keys_its_configs_refer_to():
    spec = load_spec(SURGICAL / "figure4_mask_grid.yaml")
    pretrain, finetune = spec.stages[0], spec.stages[1]
    assert {"mask_ratio", "mask_size", "seed"} <= stage_reads(spec.bundle, pretrain)
    # the fine-tuning starts from the pre-trained weights and never refers to the mask parameters
    assert not {"mask_ratio", "mask_size"} & stage_reads(spec.bundle, finetune)
    polycl = load_spec(POLYCL / "tables4_7_sam.yaml")
    assert [s.name for s in polycl.stages[:2]] == ["pretrain", "finetune"]
    assert "label_fraction" not in stage_reads(polycl.bundle, polycl.stages[0])
    assert "label_fraction" in stage_reads(polycl.bundle, polycl.stages[1])


def _counts(path: Path, tmp_path: Path) -> dict[str, tuple[int, int]]:
    return plan_sweep(load_spec(path), tmp_path).counts()


def test_figure4_pretrains_once_per_mask_setting_and_finetunes_every_seed(tmp_path):
    spec = load_spec(SURGICAL / "figure4_mask_grid.yaml")
    settings, seeds = len(spec.cell_params()), len(spec.seeds)
    # the paper's 34 pre-trained models (Section 3.2), each fine-tuned with five seeds (Figure 4's bands)
    assert (settings, seeds) == (34, 5)
    assert len({(p["mask_ratio"], p["mask_size"], p["mask_shape"], p["mask_fill"]) for p in spec.cell_params()}) == 34
    counts = plan_sweep(spec, tmp_path).counts()
    assert counts["pretrain"] == (34, 170)
    assert counts["finetune"] == (170, 170)
    assert counts["evaluate"] == (170, 170)
    # (a) ratio 0-90 % at N = 64, (b) N 8-256 at 40 %, (d) shape / fill at 40 % / 64, black squares elsewhere
    black_squares = [p for p in spec.cell_params() if (p["mask_shape"], p["mask_fill"]) == ("square", "black")]
    assert sorted(p["mask_ratio"] for p in black_squares if p["mask_size"] == 64) == [
        0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert sorted(p["mask_size"] for p in black_squares if p["mask_ratio"] == 0.4) == [8, 16, 32, 64, 128, 256]
    assert {(p["mask_shape"], p["mask_fill"]) for p in spec.cell_params()} == {
        ("square", "black"), ("circle", "black"), ("square", "pixel"), ("circle", "pixel")}


def test_polycl_pretrains_once_per_strategy_and_backbone_for_every_label_fraction(tmp_path):
    spec = load_spec(POLYCL / "tables4_7_sam.yaml")
    plan = plan_sweep(spec, tmp_path)
    strategies = len({(p["pretrain_method"], p.get("backbone")) for p in spec.cell_params()})
    fractions = len({p["label_fraction"] for p in spec.cell_params()})
    assert fractions == 5 and plan.counts()["pretrain"] == (strategies * len(spec.seeds),
                                                            strategies * fractions * len(spec.seeds))
    assert plan.counts()["finetune"][0] == len(spec.cell_params()) * len(spec.seeds)
    # each pre-training is used by the runs of every label fraction of its strategy and seed
    for job in plan.jobs.values():
        if job.stage.name == "pretrain":
            assert len(job.runs) == fractions and job.folder.parent == (tmp_path / "shared" / "pretrain").resolve()
    # Tables 1-3: one pre-training per strategy, backbone and seed; none for the supervised rows
    spec = load_spec(POLYCL / "tables1_3_strategies.yaml")
    counts = plan_sweep(spec, tmp_path).counts()
    polycl = [p for p in spec.cell_params() if p["pretrain_method"] in ("S", "O", "M")]
    assert counts["pretrain"][0] == len(polycl) * len(spec.seeds)
    assert counts["finetune"][0] == len(spec.cell_params()) * len(spec.seeds)


def test_cross_domain_evaluations_load_the_finetuned_weights_and_never_train():
    spec = load_spec(POLYCL / "tables1_3_strategies.yaml")
    for stage in spec.stages:
        if stage.name.startswith("evaluate"):
            assert "evaluate.json" in stage.configs, stage.name
            reads = stage_reads(spec.bundle, stage)
            assert "ckpt_path" in reads and "train#trainer" not in reads, stage.name


def test_sam_mining_trains_the_supervised_student_once_per_fraction_and_seed(tmp_path):
    for name in ("table3_prompts.yaml", "table1_medsam.yaml"):
        spec = load_spec(SAM_MINING / name)
        fractions = {p.get("labelled_fraction", spec.overrides.get("labelled_fraction")) for p in spec.cell_params()}
        counts = _counts(SAM_MINING / name, tmp_path)
        assert counts["supervised"] == (len(fractions) * len(spec.seeds), len(spec.runs(tmp_path))), name
    # Table 1: the SimCLR pre-training sees every training image whatever the labelled share: once per seed
    spec = load_spec(SAM_MINING / "table1_label_fractions.yaml")
    assert _counts(SAM_MINING / "table1_label_fractions.yaml", tmp_path)["simclr"][0] == len(spec.seeds)


def test_runs_that_differ_in_a_key_a_stage_reads_do_not_share_it(tmp_path):
    spec = load_spec({"bundle": "medsass_binary_segmentation", "seeds": [0, 1], "stages": [
        {"name": "pretrain", "configs": ["train.json", "pretrain.json"]},
        {"name": "zero_label", "configs": ["train.json", "evaluate.json"]}],
        "grid": {"threshold_method": ["otsu", "ght"]}})
    counts = plan_sweep(spec, tmp_path).counts()
    assert counts == {"pretrain": (4, 4), "zero_label": (4, 4)}  # every seed and method of its own


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: f"{p.parents[1].name}/{p.name}")
def test_dry_run_states_what_it_reproduces_and_the_shared_stage_runs(spec_path, tmp_path, capsys):
    from fewlabel.cli import sweep

    sweep(str(spec_path), run_dir=str(tmp_path), dry_run=True)
    text = capsys.readouterr().out
    spec = load_spec(spec_path)
    assert f"reproduces: {', '.join(spec.reproduces)}" in text
    counts = plan_sweep(spec, tmp_path).counts()
    with_, without = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
    assert f"stage runs: {with_} with sharing, {without} without" in text
    # every stage command is printed once: shared ones under "# shared", the others under their run
    assert text.count(" monai.bundle run ") == with_
    assert text.count("## shared ") == sum(1 for j in plan_sweep(spec, tmp_path).jobs.values() if j.shared)


def test_dry_run_of_figure4_lists_one_pretraining_per_mask_setting(tmp_path, capsys):
    from fewlabel.cli import sweep

    sweep(str(SURGICAL / "figure4_mask_grid.yaml"), run_dir=str(tmp_path), dry_run=True)
    text = capsys.readouterr().out
    spec = load_spec(SURGICAL / "figure4_mask_grid.yaml")
    n = len(spec.cell_params())
    assert f"pretrain {n} (shared; {n * len(spec.seeds)} without sharing)" in text
    assert f"finetune {n * len(spec.seeds)}," in text
    assert text.count("pretrain: shared, from") == n * len(spec.seeds)
    assert "reproduces: Figure 4, Figure 6" in text
    assert "pretrain 34 (shared; 170 without sharing)" in text and "finetune 170," in text


# --------------------------------------------------------------------------------------------- using a shared stage
def test_a_run_takes_a_shared_stage_from_its_folder_and_never_reruns_it(tmp_path):
    spec = load_spec(SURGICAL / "figure4_mask_grid.yaml")
    plan = plan_sweep(spec, tmp_path)
    run = spec.runs(tmp_path)[0]
    (job,) = plan.shared_jobs(run.key)
    # the shared pre-training finished: its weights and its output folder
    (job.folder / "models").mkdir(parents=True)
    (job.folder / "models" / "pretrained.pt").write_bytes(b"weights")
    (job.folder / "pretrain").mkdir()
    (job.folder / "pretrain" / ".done").write_text("{}")
    (job.folder / "pretrain" / "metrics.json").write_text('{"val_psnr": 30}')
    (job.folder / "pretrain.log").write_text("log")
    only_pretrain = type(run)(run.bundle, run.cell, run.params, run.seed, run.folder, (job.stage,), run.overrides)
    result = execute_run(only_pretrain, shared=[("pretrain", job.folder)])
    assert result["stages"] == ["pretrain"] and (run.folder / "done.json").is_file()
    record = json.loads((run.folder / "run.json").read_text())
    assert record["stages"][0]["shared"] == str(job.folder)
    assert str(job.folder / "pretrain.overrides.json") in record["stages"][0]["command"]
    assert not (run.folder / "pretrain.overrides.json").exists()  # nothing ran in the run's own folder
    assert json.loads((run.folder / "pretrain" / "metrics.json").read_text()) == {"val_psnr": 30}
    # the weights are a copy: a later stage of this run writing the same name leaves the shared one alone
    copy = run.folder / "models" / "pretrained.pt"
    assert copy.read_bytes() == b"weights" and not copy.is_symlink()
    copy.write_bytes(b"changed by this run")
    assert (job.folder / "models" / "pretrained.pt").read_bytes() == b"weights"


def test_a_shared_stage_that_has_not_finished_is_an_error(tmp_path):
    from fewlabel.sweep import RunFailed

    (tmp_path / "shared" / "pretrain").mkdir(parents=True)
    with pytest.raises(RunFailed, match="shared stage 'pretrain'.*has not finished"):
        adopt_shared(tmp_path / "run", "pretrain", tmp_path / "shared")


def test_a_stage_the_run_finished_itself_is_kept(tmp_path):
    shared = tmp_path / "shared"
    (shared / "pretrain").mkdir(parents=True)
    (shared / "pretrain" / ".done").write_text("{}")
    own = tmp_path / "run" / "pretrain"
    own.mkdir(parents=True)
    (own / ".done").write_text('{"own": 1}')
    adopt_shared(tmp_path / "run", "pretrain", shared)
    assert not own.is_symlink() and (own / ".done").read_text() == '{"own": 1}'


@pytest.mark.slow
def test_a_sweep_runs_a_shared_stage_once_and_a_restart_runs_nothing(tmp_path):
    pytest.importorskip("ray")
    import subprocess
    import sys

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "tiny_shared", "bundle": "medsass_binary_segmentation", "seeds": [0, 1],
        "report": {"metric": "mean_iou"},
        "stages": [{"name": "train", "configs": ["train.json", "smoke.json"], "seed": 0},
                   {"name": "evaluate", "configs": ["train.json", "smoke.json", "evaluate.json"]}]}))
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "fewlabel.cli", "sweep", str(spec), "--run_dir", str(run_dir), "--num_cpus", "2"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    for _ in range(2):  # the second time: everything finished, nothing runs
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "2 of 2 runs done, 0 failed" in done.stdout
    (shared,) = (run_dir / "shared" / "train").iterdir()
    assert (shared / "attempts.jsonl").read_text().count('"start"') == 1  # trained once for both seeds
    weights = (shared / "models" / "model.pt").read_bytes()
    for seed in (0, 1):
        folder = run_dir / "runs" / "default" / f"seed_{seed}"
        assert (folder / "attempts.jsonl").read_text().count('"start"') == 1
        assert (folder / "train").is_symlink() and (folder / "train" / ".done").is_file()
        assert not (folder / "train.overrides.json").exists()
        # the evaluation of each seed read the shared weights (its models/ holds a copy of them)
        assert (folder / "models" / "model.pt").read_bytes() == weights
        assert (folder / "evaluate" / "metrics.json").is_file()
        assert json.loads((folder / "evaluate.overrides.json").read_text())["seed"] == seed


# --------------------------------------------------------------------------------------------- reproduces
@pytest.mark.parametrize("bundle", [b.name for b in BUNDLES])
def test_every_spec_reproduces_tables_of_its_paper_and_every_result_has_a_spec(bundle):
    known = paper_items(bundle)
    assert known is not None, f"bundles/{bundle}/sweeps/paper.json lists the paper's tables and figures"
    covered: set[str] = set()
    for path in sorted((REPO / "bundles" / bundle / "sweeps").glob("*.yaml")):
        spec = load_spec(path)  # names outside the paper's list are refused here
        assert spec.reproduces, f"{path}: no 'reproduces:' (the paper's tables / figures it makes)"
        covered |= {re.sub(r" \(.*\)$", "", r) for r in spec.reproduces}
    uncovered = set(known["results"]) - covered
    assert uncovered <= set(known.get("not_covered", {})), (
        f"{bundle}: results {sorted(uncovered - set(known.get('not_covered', {})))} have no spec and no reason "
        "in paper.json's not_covered")
    assert all(known["not_covered"].get(k) for k in uncovered), "each left-out result says why"
    assert set(known["results"]) <= set(known["tables"]) | set(known["figures"])


@pytest.mark.parametrize("bundle", [b.name for b in BUNDLES])
def test_the_listed_tables_and_figures_are_those_of_the_paper(bundle):
    known = paper_items(bundle)
    paper = PAPERS / known["paper"]
    if not paper.is_file():
        pytest.skip(f"the paper is not beside this checkout ({paper})")
    text = paper.read_text()
    listed = set(known["tables"]) | set(known["figures"])
    captions = set()
    for kind, pattern in (("Table", r"Table"), ("Figure", r"(?:Figure|Fig\.)")):
        # captions: a line that starts with the name and number (markdown bold allowed): none is left out
        captions |= {f"{kind} {n}" for n in re.findall(rf"^\**{pattern} (\d+)[.:*]", text, flags=re.M)}
        # and every listed one is in the paper (some captions are lost in the text version, e.g. a figure's)
        for item in [i for i in listed if i.startswith(kind)]:
            number = item.split()[1]
            assert re.search(rf"\b{pattern} {number}\b", text), f"{known['paper']} has no {item}"
    assert captions <= listed, f"paper.json of {bundle} misses {sorted(captions - listed)}"


def test_a_spec_naming_a_table_the_paper_lacks_is_refused(tmp_path):
    raw = yaml.safe_load((SAM_MINING / "table3_prompts.yaml").read_text())
    with pytest.raises(SpecError, match=r"'Table 9'.*paper.json"):
        load_spec({**raw, "reproduces": ["Table 9"]})
    with pytest.raises(SpecError, match="'Table N' or 'Figure N'"):
        load_spec({**raw, "reproduces": ["Tab. 3"]})


@pytest.mark.parametrize("bundle", [b.name for b in BUNDLES])
def test_the_docs_map_every_paper_result_to_its_spec(bundle):
    """The bundle's docs have the *Reproducing the paper* table: a row per spec (with its command) and a row
    for each result left out, with the reason."""
    docs = (REPO / "bundles" / bundle / "docs" / "README.md").read_text()
    assert "### Reproducing the paper" in docs
    section = docs[docs.index("### Reproducing the paper"):]
    section = section[:section.index("\n## ")] if "\n## " in section else section
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| paper ")]
    for path in sorted((REPO / "bundles" / bundle / "sweeps").glob("*.yaml")):
        row = next((r for r in rows if f"`sweeps/{path.name}`" in r), None)
        assert row, f"{bundle} docs: no row for sweeps/{path.name}"
        assert f"fewlabel sweep bundles/{bundle}/sweeps/{path.name}" in row
        named = set()  # the numbers the row's first cell names ("Tables 1, 2, 4-7" -> 1, 2, 4, 5, 6, 7)
        for a, b in re.findall(r"(\d+)(?:-(\d+))?", row.split("|")[1]):
            named |= set(range(int(a), int(b or a) + 1))
        assert all(int(re.match(r"\w+ (\d+)", r).group(1)) in named for r in load_spec(path).reproduces), row
    for item in paper_items(bundle)["not_covered"]:
        assert any(r.startswith(f"| {item} |") and "not covered" in r for r in rows), f"{bundle} docs: {item}"


def test_only_if_takes_a_list_of_values(tmp_path):
    spec = load_spec(POLYCL / "tables1_3_strategies.yaml")
    for run in spec.runs(tmp_path):
        names = [s.name for s in run.active_stages()]
        method = run.params["pretrain_method"]
        assert ("pretrain" in names) == (method in ("S", "O", "M")), run.key
        assert ("pretrain_simclr" in names) == (method == "simclr")
        assert ("pretrain_supcon" in names) == (method == "supcon")


def test_variant_rows_and_the_papers_units(tmp_path):
    """SAM mining Table 2's layout: a row per labelled share and method, IoU and Dice as fractions with
    three digits; no mining rows at 100 % labelled (those stages are skipped there)."""
    from fewlabel.sweep import make_report

    spec = load_spec(SAM_MINING / "table2_covid_qu_ex.yaml")
    spec.seeds = [0, 1]
    run_dir = tmp_path / "sweep"
    run_dir.mkdir()
    (run_dir / "sweep.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    value = {"evaluate_supervised": 0.5, "evaluate_one_time": 0.6, "evaluate": 0.7}
    for run in spec.runs(run_dir):
        (run.folder).mkdir(parents=True)
        (run.folder / "done.json").write_text("{}")
        for stage in run.active_stages():
            (run.folder / stage.name).mkdir()
            v = value.get(stage.name, 0.0) + run.params["labelled_fraction"] / 10 + run.seed / 100
            (run.folder / stage.name / "metrics.json").write_text(
                json.dumps({"mean_dice_foreground": v, "mean_iou_foreground": v - 0.1}))
    text = make_report(run_dir).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 1.0 |") or line.startswith("| 0.5 |")]
    full = [r.split("|")[2].strip() for r in rows if r.startswith("| 1.0 |")]
    assert full == ["Supervised Training on Labeled Data"]
    continuous = next(r for r in rows if r.startswith("| 0.5 | Continuous"))
    # Dice: mean of 0.7 + 0.05 + 0.00 and + 0.01 = 0.755, std 0.007; shown as the paper does (0-1)
    assert "0.755 ± 0.007" in continuous and "%" not in text.split("## Figures")[0].split("Table 2 (rows")[1]
    assert len([r for r in rows if r.startswith("| 0.5 |")]) == 3
