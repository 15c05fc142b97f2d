"""Running a sweep on Ray: one Ray task per run (cell x seed), locally or on a Ray cluster.

Each task runs its stages as ``python -m monai.bundle run`` subprocesses and records in the run's folder:

- ``run.json``: bundle, parameters, seed and each stage's command line (to repeat the run by hand);
- ``<stage>.overrides.json`` and ``<stage>.log`` (the subprocess's output), ``<stage>/.done`` once it succeeded;
- ``attempts.jsonl``: one line per start, finish and failure (host, process id, time);
- ``status.json``: ``queued`` / ``running`` / ``done`` / ``failed``; ``done.json`` once every stage finished.

A run with ``done.json`` is never started again (restarting a sweep after a crash or Ctrl-C runs only
what is missing; inside an unfinished run, stages with ``.done`` are kept). A run that fails is retried
once by Ray (``max_retries=1, retry_exceptions=True``) and, if it fails again, listed in
``<run_dir>/failed.json`` and the report. The folder ``run_dir`` must be reachable from every Ray node
(a shared file system) when ``address`` names a cluster.

Stage runs that several runs have in common (:mod:`fewlabel.sweep.plan`: a pre-training that reads
none of the keys the cells vary, or a stage with a fixed ``seed``) run once, as their own Ray task in
``<run_dir>/shared/<stage>/<name>/`` (with the same records), before the runs that use them; each such run
then gets a copy of the weights it wrote in its ``models/`` and a link ``<stage>`` to its output folder.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fewlabel.arguments import as_list
from fewlabel.errors import FewLabelError
from fewlabel.sweep.plan import StageJob, SweepPlan, plan_sweep
from fewlabel.sweep.spec import Run, SweepSpec, check_run_overrides, load_spec

__all__ = ["RunFailed", "execute_run", "run_sweep", "select_runs", "die_with_parent", "log_tail"]

logger = logging.getLogger("fewlabel")

_LOG_TAIL = 30


class RunFailed(FewLabelError, RuntimeError):
    """A stage of a run exited with an error; the message names the run, the stage and its log."""


def _write_json(path: Path, content: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=2, default=str))
    os.replace(tmp, path)


def _append_attempt(run: Run, event: str, **extra: Any) -> None:
    line = {"event": event, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid(), **extra}
    with open(run.folder / "attempts.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the stage's process is killed when the Ray worker that started it dies (no orphans)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def log_tail(path: Path, n: int = _LOG_TAIL) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def adopt_shared(folder: Path, stage: str, shared_folder: Path) -> None:
    """Give the run in ``folder`` the results of a stage that ran once in ``shared_folder`` for several runs.

    Weights the stage wrote (``shared_folder/models/*``) are copied into ``folder/models`` (a copy, not a
    link: a later stage of this run that writes a file of the same name must not change the other runs'),
    its output folder is linked (a relative link) as ``folder/<stage>`` and its log as ``folder/<stage>.log``.
    A stage this run already finished in its own folder (a sweep started before sharing) is kept.

    Raises:
        RunFailed: the shared stage has not finished (no ``shared_folder/<stage>/.done``).
    """
    source = shared_folder / stage
    if not (source / ".done").is_file():
        raise RunFailed(f"the shared stage '{stage}' in {shared_folder} has not finished (no {source / '.done'}); "
                        f"see {shared_folder / (stage + '.log')}")
    target = folder / stage
    if target.is_dir() and not target.is_symlink() and (target / ".done").is_file():
        return
    (folder / "models").mkdir(parents=True, exist_ok=True)
    for f in sorted((shared_folder / "models").glob("*")):
        dst = folder / "models" / f.name
        if f.is_file() and not (dst.is_file() and dst.stat().st_size == f.stat().st_size
                                and dst.stat().st_mtime >= f.stat().st_mtime):
            tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
            shutil.copy2(f, tmp)
            os.replace(tmp, dst)
    for src, dst in ((source, target), (shared_folder / f"{stage}.log", folder / f"{stage}.log")):
        if dst.is_symlink() or dst.is_file():
            dst.unlink()
        elif dst.is_dir():
            shutil.rmtree(dst)
        if src.exists():  # relative: the sweep folder can be moved or copied whole
            dst.symlink_to(os.path.relpath(src.resolve(), dst.parent.resolve()), target_is_directory=src.is_dir())


def execute_run(run: Run, cwd: str | None = None, threads: int | None = None,
                context: dict[str, Any] | None = None,
                shared: Sequence[tuple[str, str | Path]] = ()) -> dict[str, Any]:
    """Run every stage of ``run`` in order, each as a ``monai.bundle run`` subprocess.

    Args:
        run: the run (from :meth:`SweepSpec.runs`).
        cwd: working folder of the stages (relative paths in overrides are relative to it); the run's
            folder when ``None`` or when it does not exist on this machine.
        threads: ``OMP_NUM_THREADS`` for the stages (torch's CPU threads); unchanged when ``None``.
        context: recorded in the ``start`` line of ``attempts.jsonl`` (the Ray node and cluster).
        shared: ``(stage, folder)`` of stages that ran once for several runs (:func:`adopt_shared`); they are
            taken from there, never run here.

    Returns:
        ``{"key", "duration", "stages"}``.

    Raises:
        RunFailed: a stage exited with a non-zero status (the message holds the end of its log).
    """
    from fewlabel.bundle import bundle_root

    root = bundle_root(run.bundle)
    run.folder.mkdir(parents=True, exist_ok=True)
    stages = run.active_stages()
    shared_in = {name: Path(folder) for name, folder in shared}

    def record(s: Any) -> dict[str, Any]:
        if s.name not in shared_in:
            return {"name": s.name, "command": shlex.join(run.command(s, root)), "overrides": run.stage_overrides(s)}
        there = Run(run.bundle, shared_in[s.name].name, run.params, run.seed, shared_in[s.name], (s,), run.overrides)
        return {"name": s.name, "shared": str(shared_in[s.name]), "command": shlex.join(there.command(s, root)),
                "overrides": there.stage_overrides(s)}

    _write_json(run.folder / "run.json", {
        "bundle": run.bundle, "cell": run.cell, "params": run.params, "seed": run.seed,
        "stages": [record(s) for s in stages],
        "skipped_stages": [s.name for s in run.stages if s not in stages],
    })
    for name, folder in shared_in.items():
        adopt_shared(run.folder, name, folder)
    _append_attempt(run, "start", **(context or {}))
    _write_json(run.folder / "status.json", {"state": "running", "since": time.time(), "host": socket.gethostname()})
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    workdir = cwd if cwd and Path(cwd).is_dir() else str(run.folder)
    start = time.time()
    done_stages = []
    for stage in stages:
        marker = run.folder / stage.name / ".done"
        if marker.is_file():
            done_stages.append(stage.name)
            continue
        _write_json(run.folder / f"{stage.name}.overrides.json", run.stage_overrides(stage))
        log_path = run.folder / f"{stage.name}.log"
        t0 = time.time()
        with open(log_path, "w") as log:
            log.write(f"$ {shlex.join(run.command(stage, root))}\n")
            log.flush()
            rc = subprocess.call(run.command(stage, root), stdout=log, stderr=subprocess.STDOUT, env=env,
                                 cwd=workdir, preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
        if rc != 0:
            _append_attempt(run, "failed", stage=stage.name, returncode=rc)
            _write_json(run.folder / "status.json", {"state": "failed", "stage": stage.name, "returncode": rc,
                                                     "log": str(log_path)})
            raise RunFailed(f"run {run.key}: stage '{stage.name}' exited with status {rc}; see {log_path}. "
                            f"Last lines:\n{log_tail(log_path)}")
        marker.parent.mkdir(parents=True, exist_ok=True)
        _write_json(marker, {"duration": time.time() - t0})
        done_stages.append(stage.name)
    duration = time.time() - start
    _write_json(run.folder / "done.json", {"finished": time.time(), "duration": duration, "stages": done_stages,
                                           "host": socket.gethostname()})
    _write_json(run.folder / "status.json", {"state": "done", "duration": duration})
    _append_attempt(run, "finished", duration=duration)
    return {"key": run.key, "duration": duration, "stages": done_stages}


def select_runs(runs: Sequence[Run], only: str | Sequence[str] | None) -> list[Run]:
    """The runs whose key (``<cell>/seed_<s>``) matches one of the shell patterns in ``only`` (all when empty)."""
    if not only:
        return list(runs)
    patterns = as_list(only, "only", allow_empty=True)
    return [r for r in runs if any(fnmatch.fnmatchcase(r.key, p) or fnmatch.fnmatchcase(r.cell, p) for p in patterns)]


def _state(run: Run) -> str:
    try:
        return json.loads((run.folder / "status.json").read_text()).get("state", "")
    except (OSError, json.JSONDecodeError):
        return ""


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run_sweep(
    spec: SweepSpec | str | Path, run_dir: str | Path | None = None, address: str | None = None,
    num_cpus: int | None = None, cpus_per_run: float = 1, gpus_per_run: float | None = None,
    retries: int = 1, only: str | Sequence[str] | None = None, force: bool = False, report: bool = True,
    progress: bool = True, num_gpus: int | None = None, **overrides: Any,
) -> dict[str, Any]:
    """Run every unfinished run of a sweep as a Ray task, show progress, then write the report.

    Args:
        spec: a :class:`SweepSpec` or the path of its YAML file.
        run_dir: output folder; default ``outputs/sweeps/<spec name>``. The spec is saved there as
            ``sweep.yaml`` (``fewlabel report`` reads it).
        address: a running Ray cluster (``ray://host:10001`` or ``host:6379``; ``auto`` for the local
            one); ``None`` starts a local Ray instance for the sweep and stops it at the end.
        num_cpus: CPUs of the local instance (default all); with ``cpus_per_run`` it bounds how many
            runs go at once.
        cpus_per_run: Ray CPUs each run reserves (also its ``OMP_NUM_THREADS``).
        gpus_per_run: GPUs each run reserves; default 1 when the cluster has GPUs (one run per GPU), else 0.
        retries: how many times Ray restarts a failed run (the issue's "retried once": 1).
        only: shell patterns of run keys (``<cell>/seed_<s>``) or cells to run, comma-separated.
        force: run the selected runs again even when finished (their ``done.json`` is removed).
        report: write ``<run_dir>/report/`` at the end (:func:`fewlabel.sweep.report.make_report`).
        progress: show a progress bar (runs done / running / failed, time left).
        num_gpus: GPUs of the local instance (default: those CUDA sees).
        overrides: config overrides added to the spec's for every run (e.g. ``dataset_dir``).

    Returns:
        ``{"run_dir", "total", "done", "failed": [{"key", "error"}], "ran": [keys run now]}``.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    if overrides:
        spec.overrides = {**spec.overrides, **check_run_overrides(spec, overrides)}
    run_dir = Path(run_dir or Path("outputs/sweeps") / spec.name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "sweep.yaml").write_text(_yaml_dump(spec.to_dict()))
    runs = select_runs(spec.runs(run_dir), only)
    if not runs:
        raise FewLabelError(f"no run of {spec.source} matches --only {only!r}")
    plan = plan_sweep(spec, run_dir)
    if force:
        for job in {j.identity: j for r in runs for j in plan.shared_jobs(r.key)}.values():
            for marker in [job.folder / "done.json", *job.folder.glob("*/.done")]:
                marker.unlink(missing_ok=True)
        for r in runs:
            for marker in [r.folder / "done.json", *(m for m in r.folder.glob("*/.done") if not m.parent.is_symlink())]:
                marker.unlink(missing_ok=True)
    todo = [r for r in runs if not (r.folder / "done.json").is_file()]
    already = len(runs) - len(todo)
    jobs = {j.identity: j for r in todo for j in plan.shared_jobs(r.key)
            if not (j.folder / "done.json").is_file()}
    logger.info("sweep %s: %d runs (%d cells x %d seeds), %d already done, %d to run, %d shared stage runs to "
                "run first; folder %s", spec.name, len(runs), len(spec.cell_params()), len(spec.seeds), already,
                len(todo), len(jobs), run_dir)
    logger.info("sweep %s: %s", spec.name, plan.summary())
    failed: list[dict[str, str]] = []
    ran: list[str] = []
    if todo:
        failed, ran = _run_on_ray(todo, already, len(runs), address, num_cpus, num_gpus, cpus_per_run, gpus_per_run,
                                  retries, progress, plan, list(jobs.values()))
    _write_json(run_dir / "failed.json", failed)
    done = sum((r.folder / "done.json").is_file() for r in runs)
    summary = {"run_dir": str(run_dir), "total": len(runs), "done": done, "failed": failed, "ran": ran}
    _write_json(run_dir / "sweep_status.json", summary)
    for f in failed:
        logger.error("run %s failed twice:\n%s", f["key"], f["error"])
    if report:
        from fewlabel.sweep.report import make_report

        summary["report"] = str(make_report(run_dir))
    return summary


def _task(run: Run, cwd: str, threads: int | None, shared: list[tuple[str, str]] = (), *after: Any) -> dict[str, Any]:
    """One Ray task: a run (or a shared stage run); ``after`` are the results of the shared stages it uses
    (Ray starts it once they are ready)."""
    import ray

    ctx = ray.get_runtime_context()
    return execute_run(run, cwd, threads, {"ray_cluster": ctx.gcs_address, "ray_node": ctx.get_node_id(),
                                           "gpus": list(ctx.get_accelerator_ids().get("GPU", [])),
                                           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")},
                       shared)


def _upstream(plan: SweepPlan, job: StageJob) -> list[StageJob]:
    """The shared jobs before ``job`` in its runs (all shared: a job's parent is used by at least its runs)."""
    out = []
    parent = job.parent
    while parent is not None:
        out.insert(0, plan.jobs[parent])
        parent = plan.jobs[parent].parent
    return [j for j in out if j.shared]


def _run_on_ray(todo: list[Run], already: int, total: int, address: str | None, num_cpus: int | None,
                num_gpus: int | None, cpus_per_run: float, gpus_per_run: float | None, retries: int,
                progress: bool, plan: SweepPlan | None = None,
                jobs: Sequence[StageJob] = ()) -> tuple[list[dict[str, str]], list[str]]:
    try:
        import ray
    except ImportError as e:
        raise FewLabelError("sweeps run on Ray: install it with `pip install -e .[sweep]` (ray==2.60.0)") from e
    from tqdm.auto import tqdm

    started_here = address is None and not ray.is_initialized()
    if not ray.is_initialized():
        saved = os.environ.get("RAY_AUTH_MODE")
        if started_here:  # a private instance on this machine, for this sweep: no token file
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        try:
            # "local": a new instance even where `ray start` left one running (or its stale address file)
            ray.init(address=address or "local", num_cpus=num_cpus if address is None else None,
                     num_gpus=num_gpus if address is None else None, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        finally:
            if saved is None:
                os.environ.pop("RAY_AUTH_MODE", None)
    try:
        if gpus_per_run is None:
            gpus_per_run = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        threads = max(1, int(cpus_per_run)) if gpus_per_run == 0 else None
        task = ray.remote(_task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=retries,
                                         retry_exceptions=True)
        cwd = os.getcwd()
        for r in todo:  # a run left "running" by a killed sweep is waiting now, not running
            r.folder.mkdir(parents=True, exist_ok=True)
            _write_json(r.folder / "status.json", {"state": "queued", "since": time.time()})
        job_refs: dict[str, Any] = {}
        for job in jobs:  # in plan order: a job's upstream jobs come first
            up = _upstream(plan, job)
            job_refs[job.identity] = task.remote(job.as_run(), cwd, threads,
                                                 [(j.stage.name, str(j.folder)) for j in up],
                                                 *[job_refs[j.identity] for j in up if j.identity in job_refs])
        refs = {}
        for r in todo:
            up = plan.shared_jobs(r.key) if plan else []
            refs[task.remote(r, cwd, threads, [(j.stage.name, str(j.folder)) for j in up],
                             *[job_refs[j.identity] for j in up if j.identity in job_refs])] = r
        pending = list(refs)
        failed: list[dict[str, str]] = []
        ran: list[str] = []
        durations: list[float] = []
        bar = tqdm(total=total, initial=already, unit="run", desc="sweep", disable=not progress, dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)
        t_start = time.time()
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            for ref in ready:
                run = refs[ref]
                try:
                    durations.append(ray.get(ref)["duration"])
                    ran.append(run.key)
                except Exception as e:  # the run failed on every attempt (RayTaskError wraps RunFailed)
                    cause = getattr(e, "cause", None) or e
                    failed.append({"key": run.key, "error": str(cause)})
                    logger.warning("run %s failed (after %d retry): %s", run.key, retries, str(cause).splitlines()[0])
            waiting = [refs[r] for r in pending]
            running = sum(_state(r) == "running" for r in waiting)
            left = len(waiting)
            eta = ""
            if durations and left:
                eta = f", ~{_fmt_seconds(sum(durations) / len(durations) * left / max(1, running))} left"
            elif left and not durations:
                eta = f", {_fmt_seconds(time.time() - t_start)} elapsed"
            bar.set_postfix_str(f"done {already + len(ran)}, running {running}, failed {len(failed)}{eta}",
                                refresh=False)
            bar.update(len(ready))
        bar.close()
        return failed, ran
    finally:
        if started_here:
            ray.shutdown()


def _yaml_dump(content: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(content, sort_keys=False)
