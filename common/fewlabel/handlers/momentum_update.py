"""The momentum ("teacher") update of BYOL and DINO pre-training, after every optimiser step."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch.nn as nn
from monai.utils import min_version, optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")
    Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["MomentumUpdate", "cosine_momentum"]


def cosine_momentum(step: int, max_steps: int, base: float, final: float = 1.0) -> float:
    """BYOL's schedule: ``final - (final - base) * (cos(pi * step / max_steps) + 1) / 2`` (base at 0, final at the end).

    The same curve as ``lightly.utils.scheduler.cosine_schedule`` (a test checks it), in closed form so that
    the handler does not import lightly.
    """
    if max_steps <= 1:
        return float(final)
    progress = min(max(step, 0), max_steps - 1) / (max_steps - 1)
    return float(final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0)


class MomentumUpdate:
    """After each iteration, move the network's momentum encoder and head towards the online ones.

    The momentum follows :func:`cosine_momentum` from ``base_momentum`` (first step) to ``final_momentum``
    (last step of ``max_epochs``), as BYOL and DINO schedule it. For DINO it also tells the loss the epoch (its
    teacher-temperature warm-up).

    Args:
        network: a :class:`fewlabel.networks.SiameseEncoder` (or a DDP wrapper of one).
        base_momentum, final_momentum: the schedule's ends, in [0, 1] (BYOL and DINO: 0.996 -> 1).
        loss: the :class:`fewlabel.losses.SiameseLoss` (optional; DINO's warm-up needs the epoch).
    """

    def __init__(self, network: nn.Module, base_momentum: float = 0.996, final_momentum: float = 1.0,
                 loss: nn.Module | None = None) -> None:
        for name, value in (("base_momentum", base_momentum), ("final_momentum", final_momentum)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.network = getattr(network, "module", network)
        if not hasattr(self.network, "update_momentum"):
            raise TypeError(f"{type(self.network).__name__} has no update_momentum(); expected a SiameseEncoder")
        self.base, self.final = float(base_momentum), float(final_momentum)
        self.loss = loss

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def epoch_started(self, engine: Engine) -> None:
        if self.loss is not None:
            self.loss.epoch = engine.state.epoch - 1

    def __call__(self, engine: Engine) -> None:
        max_steps = int(engine.state.max_epochs or 1) * int(engine.state.epoch_length or 1)
        self.network.update_momentum(cosine_momentum(engine.state.iteration - 1, max_steps, self.base, self.final))
