"""Resume a training run after a crash, to the same weights an uninterrupted run gives.

:class:`TrainingState` is an ignite handler that, at the end of every epoch (after validation,
checkpointing, learning-rate and early-stopping updates), writes *everything* the rest of the run
depends on to one file, atomically (a temporary file renamed over the old one, so a crash during a
save leaves the previous state intact):

- the trainer's progress (epoch, iteration), the network, the optimizer, the AMP grad scaler;
- every learning-rate scheduler driven by an ``LrScheduleHandler`` of the trainer or its validators;
- each validator's best metric and epoch, its best-checkpoint bookkeeping (``CheckpointSaver``) and
  early-stopping counters (``EarlyStopHandler``);
- random states: PyTorch (CPU and CUDA), NumPy's global generator, Python's ``random``, the
  generators of the ``prepare_batch`` object (augmentations, prompts), the random transforms of the
  training dataset, and the epoch of samplers that draw per epoch (PolyCL's ``TripletSampler``).

The objects are found by walking the trainer (its ``network``, ``optimizer``, ``prepare_batch``,
``data_loader`` and attached handlers), so one line in a config's ``initialize`` covers any bundle::

    "$fewlabel.engines.TrainingState(@ckpt_dir + '/resume_' + @ckpt_name, resume=@resume).attach(@train#trainer)"

Run the same command again with ``--resume true`` after a crash: the state is loaded when the
trainer starts and training continues with the epoch after the last one saved. With deterministic
settings on the CPU the final weights equal an uninterrupted run's bit for bit. The file holds only
tensors and plain Python values and is read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from fewlabel.arguments import as_bool
from fewlabel.errors import CheckpointError
from fewlabel.networks.transfer import read_weights_file

__all__ = ["TrainingState"]

logger = logging.getLogger("fewlabel")
_VERSION = 1


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


def _module(net: Any) -> Any:
    return net.module if isinstance(net, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)) else net


def _np_state(rs: np.random.RandomState) -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = rs.get_state()
    return {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "gauss": float(gauss)}


def _set_np_state(rs: np.random.RandomState, s: dict[str, Any]) -> None:
    rs.set_state(("MT19937", s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["gauss"]))


def _flat_transforms(transform: Any) -> Iterator[Any]:
    if transform is None:
        return
    inner = getattr(transform, "transforms", None)
    if isinstance(inner, (list, tuple)):
        for t in inner:
            yield from _flat_transforms(t)
    else:
        yield transform


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
        self.resume = as_bool(resume or False, "resume")  # "" (an empty override) is False too
        self.every = int(every)
        self.missing_ok = as_bool(missing_ok, "missing_ok")
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
            validator = getattr(h, "validator", None)
            if validator is not None:
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

    def _random_state(self) -> dict[str, Any]:
        t = self.trainer
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": _np_state(np.random.mtrand._rand),
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        pb = getattr(t, "prepare_batch", None)
        state["prepare_batch"] = (
            {k: v.get_state() for k, v in vars(pb).items() if isinstance(v, torch.Generator)}
            if pb is not None and hasattr(pb, "__dict__")
            else {}
        )
        loader = getattr(t, "data_loader", None)
        sampler = getattr(loader, "sampler", None)
        state["sampler_epoch"] = (
            int(sampler.epoch) if hasattr(sampler, "set_epoch") and hasattr(sampler, "epoch") else None
        )
        state["transforms"] = [_np_state(tr.R) for tr in self._random_transforms()]
        return state

    def _random_transforms(self) -> list[Any]:
        loader = getattr(self.trainer, "data_loader", None)
        dataset = getattr(loader, "dataset", None)
        while dataset is not None and not hasattr(dataset, "transform") and hasattr(dataset, "dataset"):
            dataset = dataset.dataset  # e.g. TripletDataset -> the slice dataset
        return [tr for tr in _flat_transforms(getattr(dataset, "transform", None))
                if isinstance(getattr(tr, "R", None), np.random.RandomState)]

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

        return write_weights_file(blob, self.path)

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
        t = self.trainer
        assert t is not None
        parts = self._parts()
        missing = sorted(set(parts) - set(blob))
        if missing:
            raise CheckpointError(f"the training state {self.path} does not match this run's configuration "
                                  f"(no saved state for {missing}); start without --resume.")
        max_epochs = t.state.max_epochs
        for name, obj in parts.items():
            if name.startswith("evaluator") and "_" not in name:
                obj.state.best_metric = blob[name]["best_metric"]
                obj.state.best_metric_epoch = blob[name]["best_metric_epoch"]
            else:
                obj.load_state_dict(blob[name])
        if max_epochs is not None:
            t.state.max_epochs = max_epochs  # the command line may extend the run
        self._load_random(blob["random"])
        logger.info("resumed from %s after epoch %d (iteration %d)", self.path, t.state.epoch, t.state.iteration)

    def _load_random(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        _set_np_state(np.random.mtrand._rand, state["numpy"])
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        pb = getattr(self.trainer, "prepare_batch", None)
        for key, value in state.get("prepare_batch", {}).items():
            getattr(pb, key).set_state(value)
        sampler = getattr(getattr(self.trainer, "data_loader", None), "sampler", None)
        if state.get("sampler_epoch") is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(state["sampler_epoch"])
        transforms = self._random_transforms()
        if len(transforms) != len(state.get("transforms", [])):
            raise CheckpointError(f"the training state {self.path} has {len(state.get('transforms', []))} random "
                                  f"transform states but the pipeline has {len(transforms)}; start without --resume.")
        for tr, s in zip(transforms, state["transforms"]):
            _set_np_state(tr.R, s)
