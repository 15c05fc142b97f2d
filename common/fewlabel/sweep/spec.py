"""A sweep specification: a bundle, its stages, a grid (or list) of config overrides, seeds, a report layout.

A spec is a YAML (or JSON) file::

    bundle: surgical_semiseg_laparoscopy_segmentation
    stages:                       # optional; default: the bundle's protocol (configs/protocol.json)
      - {name: pretrain, configs: [train.json, pretrain.json]}
      - {name: finetune, configs: [train.json], overrides: {from_pretrained: true}}
      - {name: evaluate, configs: [train.json, evaluate.json], exclude: [learning_rate]}
    overrides: {epochs: 100}      # every stage of every cell ("<stage>:<key>": that stage only)
    grid: {mask_ratio: [0.2, 0.4], mask_size: [32, 64]}   # every combination (or a list of such grids) ...
    cells: [{mask_shape: circle}] # ... and / or an explicit list of cells
    seeds: [0, 1, 2, 3, 4]
    reproduces: ["Figure 4"]      # the paper's tables / figures this spec makes (sweeps/paper.json lists them)
    report: {...}                 # see fewlabel.sweep.report

A stage may carry ``seed: 0``: it then runs with that seed in every run (the papers pre-train once and
fine-tune several seeds on it), so its runs are the same for every seed and are shared (see
:mod:`fewlabel.sweep.plan`).

Each (cell, seed) is one *run*: the stages in order, each an ordinary ``python -m monai.bundle run``
of the stage's config files plus one JSON file holding the run's overrides, with outputs in
``<run_dir>/runs/<cell>/seed_<s>/<stage>/`` and weights in ``.../models/``. The command lines are in the
run's ``run.json``, so any run can be repeated alone.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fewlabel.arguments import ArgumentError, as_int, as_list
from fewlabel.errors import DataError, FewLabelError

__all__ = [
    "param_matches", "SpecError", "SweepStage", "SweepSpec", "Run", "load_spec", "cell_name", "check_run_overrides",
           "RESERVED_OVERRIDES", "paper_items"]

# ids every run sets for itself: an override of them would be ignored (seed) or make runs share folders
RESERVED_OVERRIDES = {
    "seed": "each run sets its own seed; choose them with --seeds (fewlabel seeds) or the spec's 'seeds'",
    "ckpt_dir": "each run keeps its weights in <run folder>/models",
    "output_dir": "each stage writes into <run folder>/<stage>; choose the sweep's folder with --run_dir "
                  "(fewlabel sweep) or --output_dir of fewlabel seeds",
}


class SpecError(FewLabelError, ValueError):
    """A sweep specification that cannot be run (the message names the file and the field)."""


@dataclass(frozen=True)
class SweepStage:
    """One ``monai.bundle run`` of a run: its output sub-folder, config files and fixed overrides.

    ``skip_if`` / ``only_if`` map parameter names to values: the stage is skipped for runs whose
    parameters match all of ``skip_if`` (or do not match all of ``only_if``) - e.g. no pre-training
    stage for the supervised baseline ``{from_pretrained: false}``. ``exclude`` lists parameters and
    overrides this stage does not get, so its own config files' values stand (SLiPPA's fine-tuning
    keeps its learning rate while the grid varies stage 1's). ``seed``: a fixed seed for this stage in
    every run (``None``: the run's seed); a stage that reads nothing a run varies is run once and shared.
    """

    name: str
    configs: tuple[str, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    skip_if: dict[str, Any] = field(default_factory=dict)
    only_if: dict[str, Any] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    seed: int | None = None

    def applies(self, params: dict[str, Any]) -> bool:
        """Whether this stage runs for a run with ``params`` (its overrides merged). A condition's value
        is matched by equality, or by membership when it is a list and the parameter is not
        (``only_if: {pretrain_method: [S, O, M]}``)."""
        if self.skip_if and all(param_matches(params.get(k), v) for k, v in self.skip_if.items()):
            return False
        return all(param_matches(params.get(k), v) for k, v in self.only_if.items())


def param_matches(value: Any, want: Any) -> bool:
    if isinstance(want, (list, tuple)) and not isinstance(value, (list, tuple)):
        return value in want
    return value == want


def cell_name(params: dict[str, Any]) -> str:
    """Folder name of a cell: ``key-value`` pairs joined by ``_`` (unsafe characters replaced), or ``default``."""
    name = "_".join(f"{k}-{v}" for k, v in params.items()) or "default"
    return re.sub(r"[^A-Za-z0-9.+=-]+", "_", name.replace("#", "."))


@dataclass(frozen=True)
class Run:
    """One (cell, seed) of a sweep: where it runs and which commands make it."""

    bundle: str
    cell: str
    params: dict[str, Any]
    seed: int
    folder: Path
    stages: tuple[SweepStage, ...]
    overrides: dict[str, Any]

    @property
    def key(self) -> str:
        """``<cell>/seed_<s>``: the run's folder relative to ``<run_dir>/runs``."""
        return f"{self.cell}/seed_{self.seed}"

    def stage_overrides(self, stage: SweepStage) -> dict[str, Any]:
        """The overrides one stage gets: output and weights folders, the sweep's, the cell's, the seed, the stage's."""
        merged = {**self.overrides, **self.params}
        given = {k: v for k, v in merged.items() if ":" not in k and k not in stage.exclude}
        # "<stage>:<key>" goes to that stage only, over the plain key ("exclude" does not drop it)
        given.update({k.rpartition(":")[2]: v for k, v in merged.items() if k.rpartition(":")[0] == stage.name})
        return {"ckpt_dir": str(self.folder / "models"), "output_dir": str(self.folder / stage.name),
                **given, "seed": self.seed if stage.seed is None else stage.seed, **stage.overrides}

    def active_stages(self) -> list[SweepStage]:
        merged = {**self.overrides, **self.params}
        return [s for s in self.stages if s.applies(merged)]

    def command(self, stage: SweepStage, bundle_root: str | Path) -> list[str]:
        """The ``monai.bundle run`` command of ``stage``: its configs, then ``<stage>.overrides.json``."""
        root = Path(bundle_root)
        files = [str(root / "configs" / c) for c in stage.configs] + [str(self.folder / f"{stage.name}.overrides.json")]
        return [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(files),
                "--meta_file", str(root / "configs" / "metadata.json"),
                "--logging_file", str(root / "configs" / "logging.conf"), "--bundle_root", str(root)]


@dataclass
class SweepSpec:
    """A parsed sweep specification (see the module docstring); ``source`` is the file it came from."""

    bundle: str
    stages: tuple[SweepStage, ...]
    grid: dict[str, list[Any]] | list[dict[str, list[Any]]]
    cells: list[dict[str, Any]]
    seeds: list[int]
    overrides: dict[str, Any]
    report: dict[str, Any]
    source: str = ""
    name: str = "sweep"
    reproduces: list[str] = field(default_factory=list)

    def cell_params(self) -> list[dict[str, Any]]:
        """Every cell's parameters: the grid's combinations, then the explicit cells (duplicates dropped)."""
        out: list[dict[str, Any]] = []
        for grid in self.grid if isinstance(self.grid, list) else [self.grid]:
            if grid:
                out += [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
        out += [dict(c) for c in self.cells]
        if not out:
            out = [{}]
        seen, unique = set(), []
        for p in out:
            key = cell_name(p)
            if key not in seen:
                seen.add(key)
                unique.append(p)
        return unique

    def runs(self, run_dir: str | Path) -> list[Run]:
        """All runs, cell-major then seed, with folders under ``run_dir/runs``."""
        base = Path(run_dir).resolve() / "runs"
        return [Run(self.bundle, cell_name(p), p, s, base / cell_name(p) / f"seed_{s}", self.stages, self.overrides)
                for p in self.cell_params() for s in self.seeds]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bundle": self.bundle, "reproduces": list(self.reproduces),
                "stages": [{"name": s.name, "configs": list(s.configs), "overrides": s.overrides,
                            "skip_if": s.skip_if, "only_if": s.only_if, "exclude": list(s.exclude),
                            **({"seed": s.seed} if s.seed is not None else {})}
                           for s in self.stages],
                "grid": self.grid, "cells": self.cells, "seeds": self.seeds, "overrides": self.overrides,
                "report": self.report}


def check_run_overrides(spec: SweepSpec, overrides: dict[str, Any], own: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check overrides given on the command line for every run of ``spec`` before anything runs.

    A plain key must be a config id of some stage's merged configs; ``<stage>:<key>`` one of that stage's.
    Values are converted as :func:`fewlabel.arguments.check_overrides` does (``false`` -> ``False``).

    Raises:
        fewlabel.arguments.ArgumentError: an unknown key (the message names the closest id), an unknown
            stage, a key each run sets itself (:data:`RESERVED_OVERRIDES`) or a bad boolean.
    """
    from fewlabel.arguments import ArgumentError, check_overrides, config_ids
    from fewlabel.bundle import load_bundle_config

    per_stage = {s.name: config_ids(load_bundle_config(spec.bundle, s.configs)) for s in spec.stages}
    every: dict[str, Any] = {}
    for ids in per_stage.values():
        every = {**ids, **every}
    where = f"{spec.bundle} (stages {', '.join(per_stage)})"
    out = {}
    for key, value in overrides.items():
        stage, _, cid = key.rpartition(":")
        if stage and stage not in per_stage:
            raise ArgumentError(f"--{key}: no stage '{stage}' in {where}")
        ids = per_stage[stage] if stage else every
        checked = check_overrides({cid: value}, ids, f"{spec.bundle} stage '{stage}'" if stage else where, own,
                                  RESERVED_OVERRIDES)
        out[key] = checked[cid]
    return out


_KEYS = {"name", "bundle", "stages", "grid", "cells", "seeds", "overrides", "report", "reproduces"}
_ITEM = re.compile(r"^(Table|Figure) (\d+)( \(.+\))?$")


def _stage(item: Any, where: str) -> SweepStage:
    if not isinstance(item, dict) or "name" not in item or "configs" not in item:
        raise SpecError(
            f"{where}: each stage needs 'name' and 'configs' (a list of the bundle's config files), got {item!r}"
        )
    configs = item["configs"]
    configs = (configs,) if isinstance(configs, str) else tuple(configs)
    unknown = set(item) - {"name", "configs", "overrides", "skip_if", "only_if", "exclude", "seed"}
    if unknown:
        raise SpecError(f"{where}: stage '{item['name']}' has unknown fields {sorted(unknown)}")
    seed = item.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise SpecError(f"{where}: stage '{item['name']}': 'seed' must be an integer (the seed this stage runs "
                        f"with in every run), got {seed!r}")
    return SweepStage(str(item["name"]), configs, dict(item.get("overrides") or {}),
                      dict(item.get("skip_if") or {}), dict(item.get("only_if") or {}),
                      tuple(item.get("exclude") or ()), seed)


def paper_items(bundle: str) -> dict[str, Any] | None:
    """The bundle's ``sweeps/paper.json``: its paper's file, tables and figures, and which are results.

    Returns:
        ``{"paper": "surgical_semiseg.md", "tables": ["Table 1", ...], "figures": ["Figure 1", ...],
        "results": [...], "not_covered": {item: reason}}``, or ``None`` when the bundle has no such file.

    Raises:
        SpecError: the file is not valid JSON or lacks ``tables`` / ``figures``.
    """
    from fewlabel.bundle import bundle_root

    path = Path(bundle_root(bundle)) / "sweeps" / "paper.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SpecError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("tables"), list) or not isinstance(raw.get("figures"), list):
        raise SpecError(f"{path}: needs 'tables' and 'figures', lists like [\"Table 1\", ...]")
    return raw


def _reproduces(raw: Any, bundle: str, where: str) -> list[str]:
    """Check ``reproduces``: a list of ``Table N`` / ``Figure N`` (``Figure 4 (d)``) the paper has."""
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise SpecError(f"{where}: 'reproduces' must be a list like [\"Table 4\", \"Figure 2\"], got {raw!r}")
    bad = [i for i in items if not _ITEM.match(i)]
    if bad:
        raise SpecError(f"{where}: 'reproduces' entries are 'Table N' or 'Figure N' (optionally ' (part)'), "
                        f"got {bad}")
    known = paper_items(bundle)
    if known is not None:
        have = set(known["tables"]) | set(known["figures"])
        missing = [i for i in items if " ".join(_ITEM.match(i).group(1, 2)) not in have]
        if missing:
            raise SpecError(f"{where}: 'reproduces' names {missing}, which the paper ({known.get('paper')}) does "
                            f"not have; its tables and figures are in bundles/{bundle}/sweeps/paper.json")
    return list(items)


def _check_report_stages(report: dict[str, Any], stages: list[str], where: str) -> None:
    """The report's ``stage`` and every ``stages.<name>.`` metric path name a stage of the spec."""
    named = {report["stage"]} if report.get("stage") else set()
    named |= set(re.findall(r'"stages\.([^."]+)\.', json.dumps(report)))
    unknown = sorted(named - set(stages))
    if unknown:
        raise SpecError(f"{where}: the report reads stage(s) {unknown}, which the spec does not have ({stages})")


def load_spec(path: str | Path | dict[str, Any]) -> SweepSpec:
    """Read and check a sweep spec (YAML or JSON file, or an already-parsed dict).

    Raises:
        SpecError: unreadable file, unknown fields, an unknown bundle or config file, an empty grid
            axis, no seeds; the message names the file and the field.
    """
    from fewlabel.bundle import bundle_root, load_protocol

    if isinstance(path, dict):
        raw, where, name = path, "sweep spec", str(path.get("name", "sweep"))
    else:
        where = str(path)
        p = Path(path)
        if not p.is_file():
            raise SpecError(f"sweep spec {p} does not exist (bundles ship theirs in bundles/<bundle>/sweeps/)")
        try:
            raw = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise SpecError(f"sweep spec {p} is not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise SpecError(f"sweep spec {p} must be a mapping with at least 'bundle'")
        name = str(raw.get("name", p.stem))
    unknown = set(raw) - _KEYS
    if unknown:
        raise SpecError(f"{where}: unknown fields {sorted(unknown)}; known: {sorted(_KEYS)}")
    bundle = raw.get("bundle")
    if not bundle:
        raise SpecError(f"{where}: 'bundle' (a folder name under bundles/) is required")
    try:
        root = Path(bundle_root(bundle))
    except FileNotFoundError as e:
        raise SpecError(f"{where}: {e}") from e
    if raw.get("stages"):
        stages = tuple(_stage(s, where) for s in raw["stages"])
    else:
        try:
            stages = tuple(SweepStage(s.name, s.configs, dict(s.overrides)) for s in load_protocol(root))
        except DataError as e:
            raise SpecError(f"{where}: no 'stages' given and {e}") from e
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise SpecError(f"{where}: stage names must be unique, got {names}")
    for s in stages:
        for c in s.configs:
            if not (root / "configs" / c).is_file():
                raise SpecError(f"{where}: stage '{s.name}' names {c}, which is not in {root / 'configs'}")
    grid = raw.get("grid") or {}
    grids = grid if isinstance(grid, list) else [grid]
    if not all(isinstance(g, dict) for g in grids):
        raise SpecError(f"{where}: 'grid' must map config keys to lists of values (or be a list of such maps)")
    grids = [{k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in g.items()} for g in grids]
    for g in grids:
        for k, v in g.items():
            if not v:
                raise SpecError(f"{where}: grid axis '{k}' has no values")
    grid = grids if isinstance(grid, list) else grids[0]
    cells = raw.get("cells") or []
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise SpecError(f"{where}: 'cells' must be a list of mappings of config overrides")
    try:  # [0, 1, 2], 3 or "0,1,2", as on the command line
        seeds = as_list(raw.get("seeds", [0]), "seeds", as_int)
    except ArgumentError as e:
        raise SpecError(f"{where}: 'seeds' must be a list of integers ({e})") from e
    if not seeds or len(set(seeds)) != len(seeds):
        raise SpecError(f"{where}: 'seeds' must be a non-empty list of distinct integers")
    report = raw.get("report") or {}
    if not isinstance(report, dict):
        raise SpecError(f"{where}: 'report' must be a mapping (see fewlabel.sweep.report)")
    _check_report_stages(report, names, where)
    reproduces = _reproduces(raw.get("reproduces") or [], bundle, where)
    return SweepSpec(bundle, stages, grid, [dict(c) for c in cells], seeds, dict(raw.get("overrides") or {}),
                     report, where, name, reproduces)
