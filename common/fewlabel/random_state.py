"""The state of random generators as tensors and plain values, for checkpoints read with
``torch.load(..., weights_only=True)``: what stochastic components return from ``state_dict()``
(see :class:`fewlabel.handlers.TrainingState`, which saves them to resume a run bit for bit)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

__all__ = ["generator_state", "np_state", "set_generator_state", "set_np_state"]


def np_state(rs: np.random.RandomState) -> dict[str, Any]:
    """A NumPy ``RandomState``'s MT19937 state as a tensor and plain values."""
    _name, keys, pos, has_gauss, gauss = rs.get_state()
    return {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "gauss": float(gauss)}


def set_np_state(rs: np.random.RandomState, s: dict[str, Any]) -> None:
    """Restore a state from :func:`np_state` into ``rs``."""
    rs.set_state(("MT19937", s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["gauss"]))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.integer):
        return int(value)
    raise TypeError(f"cannot save {type(value).__name__} in a random state")


def _json_hook(d: dict[str, Any]) -> Any:
    return np.asarray(d["__ndarray__"], dtype=d["dtype"]) if "__ndarray__" in d else d


def generator_state(obj: torch.Generator | np.random.RandomState | np.random.Generator | None) -> Any:
    """The state of a random generator as tensors and plain values (``torch.load(weights_only=True)`` reads it).

    ``None`` (a component using the global RNG) gives ``None``. A helper for components' ``state_dict``.
    """
    if obj is None:
        return None
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, np.random.RandomState):
        return np_state(obj)
    if isinstance(obj, np.random.Generator):  # 128-bit integers: kept as JSON text
        return json.dumps(obj.bit_generator.state, default=_json_default)
    raise TypeError(f"not a random generator: {type(obj).__name__}")


def set_generator_state(obj: Any, state: Any, name: str = "generator") -> None:
    """Restore ``state`` (from :func:`generator_state`) into the generator ``obj``; a kind mismatch is a TypeError."""
    if isinstance(obj, torch.Generator) and isinstance(state, torch.Tensor):
        obj.set_state(state)
    elif isinstance(obj, np.random.RandomState) and isinstance(state, dict):
        set_np_state(obj, state)
    elif isinstance(obj, np.random.Generator) and isinstance(state, str):
        obj.bit_generator.state = json.loads(state, object_hook=_json_hook)
    else:
        raise TypeError(f"{name}: saved state {type(state).__name__} does not fit a {type(obj).__name__}")
