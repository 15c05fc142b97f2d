"""Each bundle's experimental protocol (its stages in order) and repeated runs over seeds.

A stage is an ordinary ``monai.bundle run`` of some of the bundle's configs with overrides, so a
protocol is exactly what a user would type, stage after stage. Each bundle lists its stages in its
own ``configs/protocol.json`` (:func:`fewlabel.bundle.load_protocol`), so a new bundle needs no edit
here. ``fewlabel seeds BUNDLE`` runs a
protocol once per seed as a sweep (:mod:`fewlabel.sweep`; grids and ablations are sweep specs) and
reports mean and standard deviation of the final stage's metrics (the papers report five-seed means).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from fewlabel.bundle import PROTOCOL_FILE, REPO_BUNDLES, Stage, bundle_root, load_protocol
from fewlabel.errors import DataError

__all__ = ["Stage", "PROTOCOLS", "load_protocol", "run_stage", "run_protocol", "plan_seeds", "run_seeds"]

logger = logging.getLogger("fewlabel")


class _Protocols(Mapping):
    """``PROTOCOLS[bundle]``: the stages of a bundle's ``configs/protocol.json`` (read when asked).

    Iterates over the bundles of this checkout; any other bundle folder or name that
    :func:`~fewlabel.bundle.bundle_root` finds can be looked up too.
    """

    def __getitem__(self, bundle: str) -> tuple[Stage, ...]:
        try:
            return load_protocol(bundle)
        except FileNotFoundError as e:
            raise KeyError(bundle) from e

    def __contains__(self, bundle: object) -> bool:
        try:
            load_protocol(str(bundle))
        except (FileNotFoundError, DataError):
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        folders = sorted(REPO_BUNDLES.iterdir()) if REPO_BUNDLES.is_dir() else []
        return iter([f.name for f in folders if (f / "configs" / PROTOCOL_FILE).is_file()])

    def __len__(self) -> int:
        return sum(1 for _ in self)


#: each bundle's protocol, read from its ``configs/protocol.json`` (kept for code that imported it)
PROTOCOLS: Mapping[str, tuple[Stage, ...]] = _Protocols()


def run_stage(bundle: str, configs: tuple[str, ...] | list[str], **overrides: Any) -> None:
    """Run ``python -m monai.bundle run`` in-process for ``configs`` of ``bundle`` with ``overrides``."""
    from monai.bundle import run

    root = Path(bundle_root(bundle))
    files = [str(root / "configs" / c) for c in configs]
    run(config_file=files if len(files) > 1 else files[0], meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"), bundle_root=str(root), **overrides)


def run_protocol(bundle: str, out: str | Path, run: Callable[..., None] | None = None, **overrides: Any) -> Path:
    """Run every stage of ``bundle``'s protocol (``configs/protocol.json``) into ``out/<stage>``.

    Weights go to ``out/models``. ``run`` runs each stage like :func:`run_stage` (default that one;
    :meth:`fewlabel.stage_log.StageLog.stage` runs it quietly). Returns the output folder of the last
    stage (where its ``metrics.json`` is).
    """
    out = Path(out)
    run = run or run_stage
    stages = load_protocol(bundle)
    for stage in stages:
        run(bundle, stage.configs, **{"ckpt_dir": str(out / "models"), "output_dir": str(out / stage.name),
                                           **overrides, **stage.overrides})
    return out / stages[-1].name


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
    result = run_sweep(spec, Path(output_dir) / Path(bundle_root(bundle)).name)
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
