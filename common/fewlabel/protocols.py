"""Each bundle's experimental protocol (its stages in order) and repeated runs over seeds.

A stage is an ordinary ``monai.bundle run`` of some of the bundle's configs with overrides, so a
protocol is exactly what a user would type, stage after stage. ``fewlabel seeds BUNDLE`` runs a
protocol once per seed as a sweep (:mod:`fewlabel.sweep`; grids and ablations are sweep specs) and
reports mean and standard deviation of the final stage's metrics (the papers report five-seed means).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fewlabel.bundle import bundle_root

__all__ = ["Stage", "PROTOCOLS", "run_stage", "run_protocol", "plan_seeds", "run_seeds"]

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


def plan_seeds(bundle: str, seeds: Any = (0, 1, 2, 3, 4), **overrides: Any) -> Any:
    """The sweep spec :func:`run_seeds` runs, with ``seeds`` parsed and ``overrides`` checked; nothing runs.

    Args:
        bundle: bundle folder name.
        seeds: ``"0,1,2"``, ``"[0,1,2]"``, ``(0, 1, 2)``, ``[0, 1, 2]``, ``3`` or ``"3"``.
        overrides: config ids of the protocol's configs (``--epochs 50``, ``--postprocess#skeleton false``).

    Raises:
        fewlabel.arguments.ArgumentError: a seed that is not an integer, an unknown config id (the
            message names the closest one) or a bad boolean.
    """
    from fewlabel.arguments import as_int, as_list
    from fewlabel.sweep import check_run_overrides, load_spec

    spec = load_spec({"name": f"{bundle}_seeds", "bundle": bundle, "seeds": as_list(seeds, "seeds", as_int)})
    spec.overrides = check_run_overrides(spec, overrides, own=("seeds", "output_dir"))
    return spec


def run_seeds(bundle: str, seeds: Any = (0, 1, 2, 3, 4), output_dir: str | Path = "outputs/seeds",
              **overrides: Any) -> dict[str, Any]:
    """Run ``bundle``'s protocol once per seed as a sweep (:func:`fewlabel.sweep.run_sweep`, on a local
    Ray instance) into ``output_dir/<bundle>``; finished seeds are not rerun.

    Returns:
        ``{"bundle", "seeds", "run_dir", "report", "metrics": {name: {"mean", "std", "n"}}}`` for every
        ``mean_*`` figure and every per-class figure of the last stage (``"<class> <metric>"``).
    """
    from fewlabel.sweep import aggregate, collect, run_sweep

    spec = plan_seeds(bundle, seeds, **overrides)
    seeds = spec.seeds
    result = run_sweep(spec, Path(output_dir) / bundle)
    (cell,) = collect(result["run_dir"])["cells"]
    names: list[str] = []
    for m in cell["seeds"].values():
        names += [k for k, v in m.items() if k.startswith("mean_") and isinstance(v, (int, float)) and k not in names]
        names += [f"per_class.{c}.{k}" for c, vals in m.get("per_class", {}).items() for k in vals
                  if k != "pixels" and f"per_class.{c}.{k}" not in names]
    metrics = {}
    for name in names:
        agg = aggregate(cell, name)
        if agg is not None:
            label = " ".join(name.split(".")[1:]) if name.startswith("per_class.") else name
            metrics[label] = {"mean": agg[0], "std": agg[1], "n": agg[2]}
    return {"bundle": bundle, "seeds": seeds, "run_dir": result["run_dir"], "report": result.get("report"),
            "metrics": metrics}
