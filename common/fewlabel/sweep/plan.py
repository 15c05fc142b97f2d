"""Which stage runs of a sweep are the same, worked out from the config keys each stage reads.

A stage of a run is identified by its name and config files, the values of the overrides it *reads*
(the run's parameters, the sweep's overrides, its seed), and the identity of the stage before it in the
run. A stage reads a key when the key is reachable by references (``@key``, ``$...@key...``) from the ids
``monai.bundle run`` executes (``initialize``, ``run``, ``finalize``) of its merged config files: a
pre-training that never refers to ``label_fraction`` is the same for every label fraction. Two runs whose
stages up to ``k`` have the same identities share those stages: they run once, in
``<run_dir>/shared/<stage>/<name>/`` (with its own ``models/``), and each run that uses them gets a copy
of the weights they wrote in its ``models/`` and a link ``<run folder>/<stage>`` to their output folder.

A stage with ``seed: N`` in the spec runs with that seed in every run, so it is the same for every seed
(SurgicalSemiSeg Figure 4: one pre-training per mask setting, five fine-tuning seeds on each).
Keys read only by Python code (not through a config reference) are not seen; a spec can keep such a key
from a stage with ``exclude``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from fewlabel.sweep.spec import Run, SweepSpec, SweepStage, cell_name

__all__ = ["StageJob", "SweepPlan", "stage_reads", "plan_sweep", "reads_key"]

ENTRY_IDS = ("initialize", "run", "finalize")
_NOT_IDENTITY = ("ckpt_dir", "output_dir")


@lru_cache(maxsize=256)
def _reads(bundle: str, configs: tuple[str, ...], overrides_json: str) -> frozenset[str]:
    from monai.bundle import ConfigParser
    from monai.bundle.reference_resolver import ReferenceResolver

    from fewlabel.bundle import load_bundle_config

    merged = load_bundle_config(bundle, configs)
    parser = ConfigParser(merged)
    for key, value in json.loads(overrides_json).items():
        parser[key] = value
    parser.resolve_macro_and_relative_ids()
    seen: set[str] = set()
    todo = [i for i in ENTRY_IDS if i in parser]
    while todo:
        cid = todo.pop()
        if cid in seen:
            continue
        seen.add(cid)
        try:
            content = parser[cid]
        except (KeyError, IndexError, ValueError, TypeError):
            continue
        todo += [r for r in ReferenceResolver.find_refs_in_config(content, cid) if r not in seen]
    sep = ReferenceResolver.sep
    return frozenset(i.replace(sep, "#") for i in seen)


def stage_reads(bundle: str, stage: SweepStage, overrides: dict[str, Any] | None = None) -> frozenset[str]:
    """The config ids (``#``-separated) ``stage`` reads: those reachable by references from ``initialize``,
    ``run`` and ``finalize`` of its merged config files with ``stage.overrides`` (and ``overrides``) set."""
    over = {**(overrides or {}), **stage.overrides}
    return _reads(bundle, tuple(stage.configs), json.dumps(over, sort_keys=True, default=str))


def reads_key(key: str, reads: frozenset[str]) -> bool:
    """Whether an override of ``key`` (``a#b``) reaches a stage that reads ``reads``: the id itself, an
    item inside it or the item holding it is read."""
    key = key.replace("::", "#")
    return any(r == key or r.startswith(key + "#") or key.startswith(r + "#") for r in reads)


@dataclass
class StageJob:
    """One stage run of a sweep, possibly shared by several runs.

    ``runs``: keys of the runs that use it (in spec order); ``folder``: where it runs (the run's folder when
    one run uses it, ``<run_dir>/shared/<stage>/<name>`` otherwise); ``parent``: the job of the stage before
    it in the runs that use it (``None`` for the first stage); ``given``: the overrides it reads.
    """

    identity: str
    stage: SweepStage
    run: Run
    given: dict[str, Any]
    parent: str | None
    runs: list[str] = field(default_factory=list)
    folder: Path | None = None

    @property
    def shared(self) -> bool:
        return len(self.runs) > 1

    def as_run(self) -> Run:
        """The job as a one-stage :class:`Run` in its own folder (for a shared job: ``models/`` and logs there)."""
        if not self.shared:
            return self.run
        return Run(self.run.bundle, self.folder.name, self.run.params, self.run.seed, self.folder, (self.stage,),
                   self.run.overrides)


@dataclass
class SweepPlan:
    """Every stage run of a sweep: ``jobs`` by identity, and for each run key its jobs in stage order."""

    jobs: dict[str, StageJob]
    chains: dict[str, list[str]]
    order: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, tuple[int, int]]:
        """``{stage: (runs with sharing, runs without)}`` in stage order."""
        out: dict[str, list[int]] = {}
        for chain in self.chains.values():
            for ident in chain:
                out.setdefault(self.jobs[ident].stage.name, [0, 0])[1] += 1
        for job in self.jobs.values():
            out[job.stage.name][0] += 1
        names = [n for n in self.order if n in out] + [n for n in out if n not in self.order]
        return {k: (out[k][0], out[k][1]) for k in names}

    def shared_jobs(self, run_key: str) -> list[StageJob]:
        """The shared jobs of a run, in stage order."""
        return [self.jobs[i] for i in self.chains[run_key] if self.jobs[i].shared]

    def summary(self) -> str:
        """``stage runs: 324 with sharing, 540 without (pretrain: 54 for 270 runs; ...)``."""
        counts = self.counts()
        with_, without = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
        parts = [f"{name} {a}" + (f" (shared; {b} without sharing)" if a < b else "")
                 for name, (a, b) in counts.items()]
        return f"stage runs: {with_} with sharing, {without} without; " + ", ".join(parts)


def plan_sweep(spec: SweepSpec, run_dir: str | Path) -> SweepPlan:
    """Work out which stage runs of ``spec``'s runs (all of them, so folders do not depend on ``--only``)
    are the same (see the module docstring)."""
    run_dir = Path(run_dir).resolve()
    jobs: dict[str, StageJob] = {}
    chains: dict[str, list[str]] = {}
    for run in spec.runs(run_dir):
        parent: str | None = None
        chain = []
        for stage in run.active_stages():
            reads = stage_reads(spec.bundle, stage, {k: v for k, v in spec.overrides.items() if ":" not in k})
            given = {k: v for k, v in run.stage_overrides(stage).items()
                     if k not in _NOT_IDENTITY and (k in stage.overrides or reads_key(k, reads))}
            text = json.dumps([stage.name, list(stage.configs), given, parent], sort_keys=True, default=str)
            ident = hashlib.sha1(text.encode()).hexdigest()[:16]
            job = jobs.get(ident)
            if job is None:
                job = jobs[ident] = StageJob(ident, stage, run, given, parent)
            job.runs.append(run.key)
            chain.append(ident)
            parent = ident
        chains[run.key] = chain
    for job in jobs.values():
        if job.shared:
            params = {k: v for k, v in job.run.params.items() if reads_key(k.rpartition(":")[2], frozenset(job.given))}
            name = f"{cell_name(params)}_seed_{job.given.get('seed', job.run.seed)}_{job.identity[:8]}"
            job.folder = run_dir / "shared" / job.stage.name / name
        else:
            job.folder = job.run.folder
    return SweepPlan(jobs, chains, [s.name for s in spec.stages])


def describe(spec: SweepSpec, run_dir: str | Path, runs: list[Run] | None = None) -> str:
    """What ``fewlabel sweep SPEC --dry_run`` prints: what the spec reproduces, the stage runs with and
    without sharing, each shared stage run once with its command, then every run's commands.

    Args:
        spec: the sweep.
        run_dir: its folder (the commands name files there).
        runs: the runs to list (default all; ``--only`` picks some).
    """
    import shlex

    from fewlabel.bundle import bundle_root

    root = bundle_root(spec.bundle)
    plan = plan_sweep(spec, run_dir)
    runs = spec.runs(run_dir) if runs is None else runs
    lines = [f"sweep {spec.name} ({spec.source or 'spec'}): bundle {spec.bundle}",
             "reproduces: " + (", ".join(spec.reproduces) if spec.reproduces else "(not stated)"),
             f"{len(spec.runs(run_dir))} runs ({len(spec.cell_params())} cells x {len(spec.seeds)} seeds)",
             plan.summary()]
    keys = {r.key for r in runs}
    shared = [j for j in plan.jobs.values() if j.shared and keys & set(j.runs)]
    for job in shared:
        run = job.as_run()
        lines.append(f"## shared {job.stage.name}: {job.folder} (used by {len(job.runs)} runs)")
        lines.append(f"  {shlex.join(run.command(job.stage, root))}   # overrides: {run.stage_overrides(job.stage)}")
    for run in runs:
        lines.append(f"# {run.key}")
        from_shared = {j.stage.name: j for j in plan.shared_jobs(run.key)}
        for stage in run.active_stages():
            if stage.name in from_shared:
                lines.append(f"  {stage.name}: shared, from {from_shared[stage.name].folder}")
            else:
                lines.append(f"  {shlex.join(run.command(stage, root))}   # overrides: {run.stage_overrides(stage)}")
    return "\n".join(lines)
