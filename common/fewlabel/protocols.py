"""Each bundle's experimental protocol (its stages in order) and repeated runs over seeds.

A stage is an ordinary ``monai.bundle run`` of some of the bundle's configs with overrides, so a
protocol is exactly what a user would type, stage after stage. ``fewlabel seeds BUNDLE`` runs a
protocol once per seed, each seed in its own folder, and reports mean and standard deviation of
the final stage's metrics (the papers report five-seed means).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.bundle import bundle_root

__all__ = ["Stage", "PROTOCOLS", "run_stage", "run_protocol", "run_grid", "run_seeds", "stage_commands"]

logger = logging.getLogger("fewlabel")


@dataclass(frozen=True)
class Stage:
    """One ``monai.bundle run``: a name (its output sub-folder), config files, fixed overrides."""

    name: str
    configs: tuple[str, ...]
    overrides: dict[str, Any] = field(default_factory=dict)


PROTOCOLS: dict[str, tuple[Stage, ...]] = {
    "medsass_binary_segmentation": (
        Stage("pretrain", ("train.json", "pretrain.json")),
        Stage("zero_label", ("train.json", "evaluate.json"), {"ckpt_name": "pretrained.pt"}),
    ),
    "surgical_semiseg_laparoscopy_segmentation": (
        Stage("pretrain", ("train.json", "pretrain.json")),
        Stage("finetune", ("train.json",), {"from_pretrained": True}),
        Stage("evaluate", ("train.json", "evaluate.json")),
    ),
    "slippa_liver_landmark_segmentation": (
        Stage("stage1", ("train.json",)),
        Stage("finetune", ("train.json", "finetune.json")),
        Stage("evaluate_stage1", ("train.json", "finetune.json", "evaluate.json"),
              {"ckpt_name": "stage1.pt", "eval_stage": "init"}),
        Stage("evaluate", ("train.json", "finetune.json", "evaluate.json")),
    ),
    # Table 1's rows: supervised on the labelled part, then one-time and continuous mining, each from
    # the supervised checkpoint; the SAM checkpoint comes from the user (--sam_checkpoint)
    "sam_mining_polyp_segmentation": (
        Stage("supervised", ("train.json",)),
        Stage("evaluate_supervised", ("train.json", "evaluate.json"), {"ckpt_name": "supervised.pt"}),
        Stage("one_time", ("train.json", "mine.json"), {"mining_schedule": "one_time", "ckpt_name": "one_time.pt"}),
        Stage("evaluate_one_time", ("train.json", "mine.json", "evaluate.json"), {"ckpt_name": "one_time.pt"}),
        Stage("continuous", ("train.json", "mine.json")),
        Stage("evaluate", ("train.json", "mine.json", "evaluate.json")),
    ),
    # section 3.1's three example-selection strategies, fine-tuning from PolyCL-M (the bundle default), and
    # Tables 4-7's evaluations: the network alone, + SAM box refinement, + SAM 2 propagation
    "polycl_liver_ct_segmentation": (
        Stage("pretrain_S", ("train.json", "pretrain.json"), {"pretrain_method": "S"}),
        Stage("pretrain_O", ("train.json", "pretrain.json"), {"pretrain_method": "O"}),
        Stage("pretrain_M", ("train.json", "pretrain.json"), {"pretrain_method": "M"}),
        Stage("finetune", ("train.json",), {"from_pretrained": True}),
        Stage("evaluate_sam", ("train.json", "evaluate.json"), {"refine": "sam"}),
        Stage("evaluate_sam2", ("train.json", "evaluate.json"), {"propagate": "sam2"}),
        Stage("evaluate", ("train.json", "evaluate.json")),
    ),
}


def run_stage(bundle: str, configs: tuple[str, ...] | list[str], **overrides: Any) -> None:
    """Run ``python -m monai.bundle run`` in-process for ``configs`` of ``bundle`` with ``overrides``."""
    from monai.bundle import run

    root = Path(bundle_root(bundle))
    files = [str(root / "configs" / c) for c in configs]
    run(config_file=files if len(files) > 1 else files[0], meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"), bundle_root=str(root), **overrides)


def run_protocol(bundle: str, out: str | Path, **overrides: Any) -> Path:
    """Run every stage of ``bundle``'s protocol into ``out/<stage>`` (weights in ``out/models``).

    Returns the output folder of the last stage (where its ``metrics.json`` is).
    """
    if bundle not in PROTOCOLS:
        raise ValueError(f"no protocol for '{bundle}'; known: {sorted(PROTOCOLS)}")
    out = Path(out)
    for stage in PROTOCOLS[bundle]:
        run_stage(bundle, stage.configs, **{"ckpt_dir": str(out / "models"), "output_dir": str(out / stage.name),
                                           **overrides, **stage.overrides})
    return out / PROTOCOLS[bundle][-1].name


def _summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of every per-class figure and every top-level ``mean_*`` figure."""
    rows: dict[str, list[float]] = {}
    for res in results:
        for cls, vals in res.get("per_class", {}).items():
            for metric, value in vals.items():
                if metric != "pixels" and isinstance(value, (int, float)) and np.isfinite(value):
                    rows.setdefault(f"{cls} {metric}", []).append(float(value))
        for key, value in res.items():
            if key.startswith("mean_") and isinstance(value, (int, float)) and np.isfinite(value):
                rows.setdefault(key, []).append(float(value))
    return {k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}
            for k, v in rows.items()}


def _cell_name(params: dict[str, Any]) -> str:
    return "_".join(f"{k}-{v}" for k, v in params.items()) or "default"


def _parse_seeds(seeds: Any) -> list[int]:
    if isinstance(seeds, str):
        return [int(s) for s in seeds.split(",") if s.strip()]
    return [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]


def stage_commands(bundle: str, out: str | Path, **overrides: Any) -> list[str]:
    """The ``python -m monai.bundle run`` command lines that :func:`run_protocol` runs, for running a
    cell as an independent job (on another machine, a cluster scheduler ...)."""
    cmds = []
    for stage in PROTOCOLS[bundle]:
        files = [f"bundles/{bundle}/configs/{c}" for c in stage.configs]
        args = {"ckpt_dir": str(Path(out) / "models"), "output_dir": str(Path(out) / stage.name), **overrides,
                **stage.overrides}
        cfg = json.dumps(files) if len(files) > 1 else files[0]
        cmds.append(f"python -m monai.bundle run --config_file '{cfg}' "
                    + " ".join(f"--{k} '{json.dumps(v) if not isinstance(v, str) else v}'" for k, v in args.items()))
    return cmds


def run_grid(bundle: str, grid: dict[str, list[Any]] | None = None, seeds: Any = (0,),
             output_dir: str | Path = "outputs/grid", **overrides: Any) -> dict[str, Any]:
    """Run ``bundle``'s protocol for every combination of ``grid`` values and every seed.

    Each (cell, seed) runs in ``output_dir/<bundle>/<cell>/seed_<s>`` and writes ``cell.json`` with
    its parameters and the command lines that reproduce it; finished ones (final ``metrics.json``
    present) are not rerun. Writes ``summary.json`` (per cell: parameters, per-seed metrics, mean
    and standard deviation) and returns it.
    """
    import itertools

    grid = grid or {}
    seeds = _parse_seeds(seeds)
    out = Path(output_dir).resolve() / bundle
    last = PROTOCOLS[bundle][-1].name if bundle in PROTOCOLS else None
    cells = []
    for values in itertools.product(*grid.values()) if grid else [()]:
        params = dict(zip(grid, values))
        per_seed = {}
        for seed in seeds:
            folder = out / _cell_name(params) / f"seed_{seed}"
            args = {**overrides, **params, "seed": seed}
            if last is None or not (folder / last / "metrics.json").is_file():
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "cell.json").write_text(json.dumps(
                    {"bundle": bundle, "params": params, "seed": seed, "commands": stage_commands(bundle, folder, **args)},
                    indent=2))
                run_protocol(bundle, folder, **args)
            else:
                logger.info("%s seed %d already done, not rerun", _cell_name(params), seed)
            per_seed[seed] = json.loads((folder / last / "metrics.json").read_text())
        cells.append({"params": params, "seeds": per_seed, "summary": _summarise(list(per_seed.values()))})
    summary = {"bundle": bundle, "grid": grid, "seeds": seeds, "cells": cells}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_seeds(bundle: str, seeds: Any = (0, 1, 2, 3, 4), output_dir: str | Path = "outputs/seeds",
              **overrides: Any) -> dict[str, Any]:
    """Run ``bundle``'s protocol once per seed; write and print mean ± std (``summary.md``)."""
    result = run_grid(bundle, None, seeds, output_dir, **overrides)
    cell = result["cells"][0]
    seeds = result["seeds"]
    lines = [f"### {bundle}: {len(seeds)} seeds ({', '.join(map(str, seeds))})", "", "| metric | mean | std |",
             "|---|---|---|"]
    lines += [f"| {k} | {v['mean']:.4f} | {v['std']:.4f} |" for k, v in cell["summary"].items()]
    out = Path(output_dir).resolve() / bundle
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return {"bundle": bundle, "seeds": seeds, "metrics": cell["summary"]}
