"""The losses of two-view self-supervised pre-training without negatives (BYOL, SimSiam, DINO), from lightly.

Partner of :class:`fewlabel.networks.SiameseEncoder`, whose output ``{"student": [s1, s2], "teacher": [t1, t2]}``
(each ``(B, D)`` float) it takes as the trainer's ``y_pred``; the target is unused (None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn

from fewlabel.networks.siamese import SIAMESE_HEAD_DEFAULTS, SIAMESE_METHODS

__all__ = ["SiameseLoss"]


class SiameseLoss(nn.Module):
    """BYOL / SimSiam: symmetrised negative cosine similarity; DINO: cross-entropy to the centred teacher.

    - ``byol``, ``simsiam``: ``0.5 * (ncs(s1, t2) + ncs(s2, t1))`` with lightly's ``NegativeCosineSimilarity``
      (each view's prediction against the other view's target); in [-1, 1], -1 when they agree perfectly.
    - ``dino``: lightly's ``DINOLoss`` over the two global views (teacher softmax at ``teacher_temp`` after
      centring, student at ``student_temp``; the centre is an EMA with ``center_momentum``); >= 0.

    Args:
        method: ``"byol"``, ``"simsiam"`` or ``"dino"`` (the network's).
        output_dim: DINO's prototype count (the network's ``projection_dim``; lightly's default 65536).
        teacher_temp, warmup_teacher_temp, warmup_teacher_temp_epochs, student_temp, center_momentum:
            DINO's temperatures and centring (lightly's defaults).
    """

    def __init__(
        self,
        method: str = "byol",
        output_dim: int | None = None,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 30,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        method = str(method).lower()
        if method not in SIAMESE_METHODS:
            raise ValueError(f"pretrain_method must be one of {SIAMESE_METHODS}, got '{method}'")
        self.method = method
        self.epoch: int | None = None  # set by fewlabel.handlers.MomentumUpdate for DINO's temperature warm-up
        from lightly.loss import DINOLoss, NegativeCosineSimilarity  # seconds to import: only when used

        if method == "dino":
            dim = int(output_dim or SIAMESE_HEAD_DEFAULTS["dino"]["projection_dim"])
            self.criterion: nn.Module = DINOLoss(
                output_dim=dim, warmup_teacher_temp=warmup_teacher_temp, teacher_temp=teacher_temp,
                warmup_teacher_temp_epochs=int(warmup_teacher_temp_epochs), student_temp=student_temp,
                center_momentum=center_momentum,
            )
        else:
            self.criterion = NegativeCosineSimilarity()

    def forward(self, outputs: Mapping[str, Sequence[torch.Tensor]], target: object = None) -> torch.Tensor:
        student, teacher = list(outputs["student"]), list(outputs["teacher"])
        if len(student) != 2 or len(teacher) != 2:
            raise ValueError(
                f"expected two views from the network, got {len(student)} student / {len(teacher)} teacher"
            )
        if self.method == "dino":
            return self.criterion(teacher, student, epoch=self.epoch)
        return 0.5 * (self.criterion(student[0], teacher[1]) + self.criterion(student[1], teacher[0]))
