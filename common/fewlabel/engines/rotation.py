"""Pretext-task batches: rotation prediction (Gidaris et al. 2018, a SurgicalSemiSeg baseline) and images alone.

:class:`RotationBatch` is the trainer's ``prepare_batch``: it crops each image to its centre square, turns it by a
random multiple of 90 degrees (seeded) and returns the multiple as the class. The network is the segmentation
network's encoder with a 4-way linear classifier over its pooled deepest features
(``fewlabel.networks.ContrastiveEncoder(network, projection_dim=4, hidden_dim=0)``) and the loss cross-entropy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.engines.utils import PrepareBatch

from fewlabel.random_state import generator_state, set_generator_state
from fewlabel.transforms.pretext import centre_square, rotate_batch

__all__ = ["RotationBatch", "ImagesOnly"]


class RotationBatch(PrepareBatch):
    """``prepare_batch`` returning ``(turned images, number of quarter turns)`` for rotation prediction.

    Args:
        seed: seed of the CPU generator that draws the turns (the same seed gives the same turns on any device).
        image_key: key of the images in the batch dict.

    Returns (from ``__call__``): ``(images, turns)``: ``images`` ``(B, C, S, S)`` (``S = min(H, W)``, the centre
    square) on ``device``; ``turns`` ``(B,)`` int64 in {0, 1, 2, 3} (counter-clockwise quarter turns), the target.
    """

    def __init__(self, seed: int = 0, image_key: str = "image") -> None:
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.image_key = image_key

    def state_dict(self) -> dict[str, Any]:
        """The generator's state, to resume a run (:class:`fewlabel.handlers.TrainingState`)."""
        return {"generator": generator_state(self.generator)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        set_generator_state(self.generator, state["generator"], f"{type(self).__name__}.generator")

    def __call__(
        self, batchdata: Mapping[str, Any], device: str | torch.device | None = None,
        non_blocking: bool = False, **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.as_tensor(batchdata[self.image_key])
        turns = torch.randint(0, 4, (images.shape[0],), generator=self.generator)
        turned = rotate_batch(centre_square(images), turns)
        return (turned.to(device=device, non_blocking=non_blocking, **kwargs),
                turns.to(device=device, non_blocking=non_blocking))


class ImagesOnly(PrepareBatch):
    """``prepare_batch`` returning ``(images, None)``: for pre-training whose target the network makes itself
    (MAE, SimMIM) on items that may have no label (MONAI's ``PrepareBatchDefault`` requires one).

    Returns (from ``__call__``): ``(images, None)``, ``images`` the batch's ``image_key`` entry on ``device``.
    """

    def __init__(self, image_key: str = "image") -> None:
        self.image_key = image_key

    def __call__(
        self, batchdata: Mapping[str, Any], device: str | torch.device | None = None,
        non_blocking: bool = False, **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        images = torch.as_tensor(batchdata[self.image_key])
        return images.to(device=device, non_blocking=non_blocking, **kwargs), None
