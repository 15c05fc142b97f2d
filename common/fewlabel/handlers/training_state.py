"""Resume a training run after a crash, to the same weights an uninterrupted run gives.

:class:`TrainingState` is an ignite handler that, at the end of every epoch (after validation,
checkpointing, learning-rate and early-stopping updates), writes *everything* the rest of the run
depends on to one file, atomically (a temporary file renamed over the old one, so a crash during a
save leaves the previous state intact):

- the trainer's progress (epoch, iteration), the network, the optimizer, the AMP grad scaler;
- every learning-rate scheduler driven by an ``LrScheduleHandler`` of the trainer or its validators;
- each validator's best metric and epoch, its best-checkpoint bookkeeping (``CheckpointSaver``) and
  early-stopping counters (``EarlyStopHandler``);
- random states: PyTorch (CPU and CUDA), NumPy's global generator, Python's ``random``, the generator
  MONAI's random transforms share until seeded (``Randomizable.R``), and every stochastic component of the
  training pipeline (see below).

The objects are found by walking the trainer (its ``network``, ``optimizer``, ``prepare_batch``,
``data_loader`` and attached handlers), so one line in a config's ``initialize`` covers any bundle::

    "$fewlabel.handlers.TrainingState(@ckpt_dir + '/resume_' + @ckpt_name, resume=@resume).attach(@train#trainer)"

Stochastic components. The trainer's ``prepare_batch``, the training dataset (its ``transform`` and
the datasets it wraps), the data loader's ``sampler`` and ``batch_sampler`` are searched, nested to any
depth (attributes, lists, tuples, dicts; ``Compose``, ``OneOf``, dictionary transforms wrapping array
transforms such as MONAI's ``RandRotated.rand_rotate``), for random state:

- a component that *declares* its random state (``state_dict()`` / ``load_state_dict()``, e.g.
  :class:`fewlabel.transforms.MaskCorruption`, :class:`fewlabel.engines.MinedBatches`,
  :class:`fewlabel.engines.SimCLRPairs`, :class:`fewlabel.engines.TripletSampler`) is saved through it,
  and not searched further;
- a sampler with ``set_epoch`` and an ``epoch`` (torch's ``DistributedSampler``) is saved by its epoch;
- otherwise every ``torch.Generator``, ``numpy.random.RandomState`` (MONAI's ``Randomizable.R``) and
  ``numpy.random.Generator`` found is saved.

Networks and optimizers met on the way (e.g. the student a mining ``prepare_batch`` holds) are not
searched: they are saved as parts of their own. Each state is stored under a stable path such as
``dataset.transform.transforms[4].rand_rotate.R``; loading a state whose paths or kinds differ from
the run's pipeline is a :class:`CheckpointError` naming the paths (never a partial restore).

Run the same command again with ``--resume true`` after a crash: the state is loaded when the
trainer starts and training continues with the epoch after the last one saved. With deterministic
settings on the CPU the final weights equal an uninterrupted run's bit for bit. The file holds only
tensors and plain Python values and is read with ``torch.load(..., weights_only=True)``; it is written
without the zip records' CRC-32 checksums, which ``torch.load`` does not check and which were most of
the time of each save (``write_weights_file(checksums=False)``).
"""

from __future__ import annotations

import functools
import logging
import os
import random
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.transforms import Randomizable

from fewlabel.errors import CheckpointError
from fewlabel.networks.transfer import read_weights_file
from fewlabel.random_state import (
    generator_state,
    np_state,
    set_generator_state,
    set_np_state,
)

__all__ = ["TrainingState", "generator_state", "random_components", "set_generator_state"]

logger = logging.getLogger("fewlabel")
# 2: every stochastic component by path (format 1 saved only top-level transforms' ``R`` and ``prepare_batch``'s
# own generators, so nested random transforms were not restored)
_VERSION = 2
_MAX_DEPTH = 32
# dataset attributes that hold pipeline objects (others, such as ``data`` or a cache, hold items)
_DATASET_ATTRS = ("transform", "transforms", "dataset", "datasets")
_SKIP_TYPES: tuple[type, ...] = (torch.nn.Module, torch.optim.Optimizer, torch.Tensor, np.ndarray, str, bytes,
                                 int, float, bool, complex, type(None), Path)
# objects with attributes that are code, not pipeline state
_NOT_SEARCHED = (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType,
                 functools.partial)


def _unwrap(handler: Any) -> Any:
    """The object behind an ignite event handler (bound method, filtered-event wrapper, or the object)."""
    while hasattr(handler, "__wrapped__"):
        handler = handler.__wrapped__
    return getattr(handler, "__self__", handler)


def _handlers(engine: Engine) -> Iterator[Any]:
    seen: set[int] = set()
    for entries in getattr(engine, "_event_handlers", {}).values():
        for entry in entries:
            obj = _unwrap(entry[0])
            if id(obj) not in seen:
                seen.add(id(obj))
                yield obj


def _as_bool(value: Any, name: str) -> bool:
    """``True`` / ``False``, or their command-line spellings (``"true"``, ``"false"``, ``"1"``, ``"0"``)."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no", ""):
            return False
        raise ValueError(f"{name} must be true or false, got '{value}'")
    return bool(value)


def _module(net: Any) -> Any:
    return net.module if isinstance(net, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)) else net


def _kind(obj: Any) -> str | None:
    if isinstance(obj, torch.Generator):
        return "torch.Generator"
    if isinstance(obj, np.random.RandomState):
        return "numpy.RandomState"
    if isinstance(obj, np.random.Generator):
        return "numpy.Generator"
    if (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))
            and not isinstance(obj, (type, torch.nn.Module, torch.optim.Optimizer))):
        return f"declared:{type(obj).__qualname__}"
    if callable(getattr(obj, "set_epoch", None)) and isinstance(getattr(obj, "epoch", None), int):
        return "epoch"  # a sampler that draws per epoch, e.g. torch's DistributedSampler
    return None


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    """``(path suffix, child)`` of a container or a plain object's attributes (datasets: pipeline attributes only)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, (str, int)):
                yield f"[{k!r}]", v
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield f"[{i}]", v
    elif isinstance(obj, torch.utils.data.Dataset):
        for k in _DATASET_ATTRS:
            if k in getattr(obj, "__dict__", {}):
                yield f".{k}", vars(obj)[k]
    elif not isinstance(obj, _NOT_SEARCHED) and isinstance(getattr(obj, "__dict__", None), dict):
        for k, v in vars(obj).items():
            yield f".{k}", v


def random_components(roots: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """``path -> (kind, object)`` of every random state reachable from ``roots`` (see the module docstring).

    ``kind`` is ``"torch.Generator"``, ``"numpy.RandomState"``, ``"numpy.Generator"`` or
    ``"declared:<class>"`` (an object with ``state_dict`` / ``load_state_dict``). An object reached by two
    paths is listed once, under the first.
    """
    found: dict[str, tuple[str, Any]] = {}
    seen: set[int] = set()

    def walk(obj: Any, path: str, depth: int) -> None:
        if isinstance(obj, _SKIP_TYPES) or id(obj) in seen or depth > _MAX_DEPTH:
            return
        seen.add(id(obj))
        kind = _kind(obj)
        if kind is not None:
            found[path] = (kind, obj)
            return
        for suffix, child in _children(obj):
            walk(child, path + suffix, depth + 1)

    for name, root in roots.items():
        walk(root, name, 0)
    return found


def _component_state(kind: str, obj: Any) -> Any:
    if kind.startswith("declared:"):
        return obj.state_dict()
    if kind == "epoch":
        return int(obj.epoch)
    return generator_state(obj)


class TrainingState:
    """Save the whole training state every epoch; load it at start with ``resume=True`` (see the module).

    Args:
        path: the state file (e.g. ``models/resume_model.pt``); its folder is created.
        resume: load ``path`` when the trainer starts. A missing file is a :class:`CheckpointError`
            (nothing to resume from) unless ``missing_ok``.
        every: save every this many epochs (1: every epoch).
        missing_ok: with ``resume`` and no file, start from scratch (logged) instead of failing.
    """

    def __init__(self, path: str | os.PathLike, resume: bool = False, every: int = 1, missing_ok: bool = False) -> None:
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.path = Path(path)
        self.resume = _as_bool(resume, "resume")
        self.every = int(every)
        self.missing_ok = bool(missing_ok)
        self.trainer: Engine | None = None

    def attach(self, trainer: Engine) -> TrainingState:
        """Save after every ``every``-th epoch (after the handlers already attached), load at start."""
        self.trainer = trainer
        trainer.add_event_handler(Events.EPOCH_COMPLETED(every=self.every), self.save)
        if self.resume:
            trainer.add_event_handler(Events.STARTED, self.load)
        return self

    # ------------------------------------------------------------------ what is saved
    def _parts(self) -> dict[str, Any]:
        """name -> object with ``state_dict`` / ``load_state_dict``-like access, discovered from the trainer."""
        t = self.trainer
        assert t is not None, "attach() first"
        parts: dict[str, Any] = {"trainer": t, "network": _module(t.network), "optimizer": t.optimizer}
        if getattr(t, "scaler", None) is not None:
            parts["scaler"] = t.scaler
        evaluators = []
        for i, h in enumerate(_handlers(t)):
            self._handler_parts(h, f"trainer_handler{i}", parts)
            # an Engine only: ignite's metrics answer any attribute name with a function (Metric.__getattr__)
            validator = getattr(h, "validator", None)
            if isinstance(validator, Engine):
                evaluators.append(validator)
        for j, ev in enumerate(evaluators):
            parts[f"evaluator{j}"] = ev
            for i, h in enumerate(_handlers(ev)):
                self._handler_parts(h, f"evaluator{j}_handler{i}", parts)
        return parts

    @staticmethod
    def _handler_parts(h: Any, name: str, parts: dict[str, Any]) -> None:
        found = {
            "_lr_scheduler": getattr(h, "lr_scheduler", None),
            "_early_stopping": getattr(h, "_handler", None),  # MONAI EarlyStopHandler wraps ignite's EarlyStopping
            "_key_metric_checkpoint": getattr(h, "_key_metric_checkpoint", None),  # MONAI CheckpointSaver
            "_interval_checkpoint": getattr(h, "_interval_checkpoint", None),
        }
        for suffix, obj in found.items():
            if callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None)):
                parts[f"{name}{suffix}"] = obj

    def components(self) -> dict[str, tuple[str, Any]]:
        """The training pipeline's random states by path (:func:`random_components` of the trainer's
        ``prepare_batch``, dataset, sampler and batch sampler)."""
        t = self.trainer
        assert t is not None, "attach() first"
        loader = getattr(t, "data_loader", None)
        return random_components({
            "prepare_batch": getattr(t, "prepare_batch", None),
            "dataset": getattr(loader, "dataset", None),
            "sampler": getattr(loader, "sampler", None),
            "batch_sampler": getattr(loader, "batch_sampler", None),
        })

    def _random_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": np_state(np.random.mtrand._rand),
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
            # the generator MONAI's random transforms share until they are seeded (a class attribute)
            "monai_randomizable": np_state(Randomizable.R),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        state["components"] = {
            path: {"kind": kind, "state": _component_state(kind, obj)}
            for path, (kind, obj) in self.components().items()
        }
        return state

    # ------------------------------------------------------------------ save / load
    def save(self, engine: Engine | None = None) -> Path:
        """Write the state file atomically (rank 0 only under ``torch.distributed``); returns its path."""
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() > 0:
            return self.path
        blob: dict[str, Any] = {"version": _VERSION, "random": self._random_state()}
        for name, obj in self._parts().items():
            if name.startswith("evaluator") and "_" not in name:
                blob[name] = {"best_metric": float(getattr(obj.state, "best_metric", -1.0)),
                              "best_metric_epoch": int(getattr(obj.state, "best_metric_epoch", -1))}
            else:
                blob[name] = obj.state_dict()
        from fewlabel.networks import write_weights_file

        return write_weights_file(blob, self.path, checksums=False)  # read back only here: no CRC-32 (speed)

    def load(self, engine: Engine | None = None) -> None:
        """Restore the state file (at the trainer's ``STARTED``)."""
        if not self.path.is_file():
            if self.missing_ok:
                logger.warning("resume: no training state at %s; starting from the beginning", self.path)
                return
            raise CheckpointError(
                f"resume=true but there is no training state at {self.path}: a run saves it at the end of every "
                "epoch; run without --resume to start from the beginning."
            )
        blob = read_weights_file(self.path, "the training state", "Delete it and start without --resume.")
        version = blob.get("version") if isinstance(blob, dict) else None
        if version != _VERSION:
            raise CheckpointError(
                f"the training state {self.path} has format version {version}, this fewlabel reads version {_VERSION} "
                "(older files miss the random state of nested transforms and cannot resume bit for bit); "
                "start without --resume."
            )
        t = self.trainer
        assert t is not None
        parts = self._parts()
        missing = sorted(set(parts) - set(blob))
        if missing:
            raise CheckpointError(f"the training state {self.path} does not match this run's configuration "
                                  f"(no saved state for {missing}); start without --resume.")
        components = self._check_components(blob["random"].get("components", {}))  # before anything is changed
        max_epochs = t.state.max_epochs
        for name, obj in parts.items():
            if name.startswith("evaluator") and "_" not in name:
                obj.state.best_metric = blob[name]["best_metric"]
                obj.state.best_metric_epoch = blob[name]["best_metric_epoch"]
            else:
                obj.load_state_dict(blob[name])
        if max_epochs is not None:
            t.state.max_epochs = max_epochs  # the command line may extend the run
        self._load_random(blob["random"], components)
        logger.info("resumed from %s after epoch %d (iteration %d)", self.path, t.state.epoch, t.state.iteration)

    def _check_components(self, saved: dict[str, Any]) -> dict[str, tuple[str, Any]]:
        """The run's components, after checking that their paths and kinds are those saved."""
        current = self.components()
        problems = [f"{p}: saved, not in this run's pipeline" for p in sorted(set(saved) - set(current))]
        problems += [
            f"{p}: in this run's pipeline ({current[p][0]}), not saved" for p in sorted(set(current) - set(saved))
        ]
        problems += [f"{p}: saved as {saved[p]['kind']}, this run has {current[p][0]}"
                     for p in sorted(set(saved) & set(current)) if saved[p]["kind"] != current[p][0]]
        if problems:
            raise CheckpointError(
                f"the training state {self.path} does not match this run's random components ("
                + "; ".join(problems) + "); resume with the configuration that saved it, or start without --resume."
            )
        return current

    def _load_random(self, state: dict[str, Any], components: dict[str, tuple[str, Any]]) -> None:
        torch.set_rng_state(state["torch"])
        set_np_state(np.random.mtrand._rand, state["numpy"])
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        set_np_state(Randomizable.R, state["monai_randomizable"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        for path, (kind, obj) in components.items():
            saved = state["components"][path]["state"]
            try:
                if kind.startswith("declared:"):
                    obj.load_state_dict(saved)
                elif kind == "epoch":
                    obj.set_epoch(int(saved))
                else:
                    set_generator_state(obj, saved, path)
            except (ValueError, KeyError, TypeError, RuntimeError) as e:
                raise CheckpointError(f"the training state {self.path}: cannot restore the random state of {path} "
                                      f"({e}); start without --resume.") from e
