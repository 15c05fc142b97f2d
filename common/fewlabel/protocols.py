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

__all__ = ["Stage", "PROTOCOLS", "run_stage", "run_protocol", "run_seeds"]

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


def _summarise(results: dict[int, dict[str, Any]]) -> dict[str, Any]:
    rows: dict[str, list[float]] = {}
    for res in results.values():
        for cls, vals in res["per_class"].items():
            for metric in ("iou", "dice"):
                if vals[metric] is not None:
                    rows.setdefault(f"{cls} {metric}", []).append(vals[metric])
        for key in ("mean_iou", "mean_dice", "mean_iou_foreground", "mean_dice_foreground"):
            if res.get(key) is not None:
                rows.setdefault(key, []).append(res[key])
    return {k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}
            for k, v in rows.items()}


def run_seeds(bundle: str, seeds: tuple[int, ...] | list[int] | str = (0, 1, 2, 3, 4),
              output_dir: str | Path = "outputs/seeds", **overrides: Any) -> dict[str, Any]:
    """Run ``bundle``'s protocol once per seed and write ``summary.json`` / ``summary.md`` (mean ± std).

    Seeds whose folder already holds the final metrics are not rerun.
    """
    if isinstance(seeds, str):
        seeds = [int(s) for s in seeds.split(",") if s.strip()]
    seeds = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]
    out = Path(output_dir).resolve() / bundle
    results = {}
    for seed in seeds:
        last = out / f"seed_{seed}" / PROTOCOLS[bundle][-1].name if bundle in PROTOCOLS else None
        if last is None or not (last / "metrics.json").is_file():
            last = run_protocol(bundle, out / f"seed_{seed}", seed=seed, **overrides)
        else:
            logger.info("seed %d already done (%s), not rerun", seed, last)
        results[seed] = json.loads((last / "metrics.json").read_text())
    summary = {"bundle": bundle, "seeds": seeds, "metrics": _summarise(results)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [f"### {bundle}: {len(seeds)} seeds ({', '.join(map(str, seeds))})", "", "| metric | mean | std |", "|---|---|---|"]
    lines += [f"| {k} | {v['mean']:.4f} | {v['std']:.4f} |" for k, v in summary["metrics"].items()]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary
