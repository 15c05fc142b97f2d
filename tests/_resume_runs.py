"""In-process training stages that stop with an exception in the middle of an epoch (a crash), for the
kill/resume tests: run a stage straight, run it again into another folder until the crash, resume it, and
compare every tensor the two runs saved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from testlib import REPO
from ignite.engine import Engine, Events


class Crash(RuntimeError):
    """Raised by :func:`run_stage`'s crash handler."""


def smoke_overrides(bundle: str) -> dict[str, Any]:
    """The bundle's ``configs/smoke.json``."""
    return json.loads((REPO / "bundles" / bundle / "configs" / "smoke.json").read_text())


def run_stage(bundle: str, configs: list[str] | tuple[str, ...], ckpt_dir: Path, output_dir: Path,
              overrides: dict[str, Any], crash_epoch: int | None = None) -> Any:
    """Run one stage through ``ConfigWorkflow`` (as ``monai.bundle run`` does); with ``crash_epoch``, raise
    :class:`Crash` after the first iteration of that epoch. Returns the workflow."""
    from monai.bundle import ConfigWorkflow

    folder = REPO / "bundles" / bundle / "configs"
    wf = ConfigWorkflow(
        config_file=[str(folder / c) for c in configs],
        meta_file=str(folder / "metadata.json"),
        workflow_type="train",
        **{"ckpt_dir": str(ckpt_dir), "output_dir": str(output_dir), **overrides},
    )
    wf.initialize()
    try:
        if crash_epoch is not None:
            trainer: Engine = wf.parser.get_parsed_content("train#trainer")

            def crash(engine: Engine) -> None:
                if engine.state.epoch == crash_epoch and (engine.state.iteration - 1) % engine.state.epoch_length == 0:
                    raise Crash(f"crash in epoch {crash_epoch}")

            trainer.add_event_handler(Events.ITERATION_COMPLETED, crash)
        wf.run()
    finally:
        wf.finalize()
    return wf


def crash_and_resume(bundle: str, configs: list[str] | tuple[str, ...], ckpt_dir: Path, output_dir: Path,
                     overrides: dict[str, Any], crash_epoch: int = 2) -> None:
    """Run a stage until the crash in ``crash_epoch``, then again with ``resume=True`` to the end."""
    try:
        run_stage(bundle, configs, ckpt_dir, output_dir, overrides, crash_epoch)
    except Exception as e:  # the config's "run" expression wraps the crash in a RuntimeError
        cause: BaseException | None = e
        while cause is not None and not isinstance(cause, Crash):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
    else:
        raise AssertionError(f"the run ended before the crash in epoch {crash_epoch}")
    run_stage(bundle, configs, ckpt_dir, output_dir, {**overrides, "resume": True})


def flat_tensors(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every tensor and plain value of a (nested) saved object, by path."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flat_tensors(v, f"{prefix}/{k}"))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(flat_tensors(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def differences(a_file: Path, b_file: Path) -> list[str]:
    """Paths of the tensors / values that differ between two saved files (also those only in one)."""
    a = flat_tensors(torch.load(a_file, map_location="cpu", weights_only=True))
    b = flat_tensors(torch.load(b_file, map_location="cpu", weights_only=True))
    diff = sorted(set(a) ^ set(b))
    for k in sorted(set(a) & set(b)):
        x, y = a[k], b[k]
        same = torch.equal(x, y) if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) else x == y
        if not same:
            diff.append(k)
    return diff


def copy_models(src: Path, dst: Path) -> None:
    """Copy the weights folder ``src`` (earlier stages' checkpoints) to ``dst``."""
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        dst.mkdir(parents=True)
