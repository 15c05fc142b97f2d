"""Inference of a SAM-mining student: fast (student only) or accurate (student -> prompts -> SAM).

SAM knowledge mining trains a small student so that inference needs no SAM (paper, section 1:
"operational efficiency"); when time allows, the student's prediction can still prompt the frozen
SAM once more and SAM's mask is the answer. Both are MONAI inferers, chosen in a config with
:func:`build_inferer`:

- ``"fast"``: :class:`monai.inferers.SimpleInferer` (the student's logits);
- ``"accurate"``: :class:`SamRefineInferer` (SAM's mask logits, prompted by the student's
  probabilities the way the pseudo-labels were made).

Both return ``(B, 1, H, W)`` logits at the input's size, so the same post-processing (sigmoid,
threshold 0.5) follows either. The teacher is only built (its checkpoint only needed) for the
accurate mode.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer

from fewlabel.sam.prompts import make_prompts
from fewlabel.sam.teacher import SamTeacher, build_sam_teacher

__all__ = ["INFERENCE_MODES", "SamRefineInferer", "build_inferer"]

logger = logging.getLogger("fewlabel.sam")

#: Values of a bundle's ``inference_mode``.
INFERENCE_MODES = ("fast", "accurate")


class SamRefineInferer(Inferer):
    """Student prediction refined by a frozen SAM: ``(B, C, H, W)`` images -> ``(B, 1, H, W)`` SAM logits.

    The student's sigmoid probabilities give the prompts (:func:`fewlabel.sam.make_prompts`:
    ``num_points`` top-probability points and the box of ``prob >= threshold`` by default); SAM's
    image encoder, prompt encoder and mask decoder give mask logits (threshold 0 = SAM's
    ``mask_threshold``, i.e. probability 0.5 after a sigmoid). An image whose student prediction
    is empty has no prompt and gets :data:`fewlabel.sam.NO_PROMPT_LOGIT` everywhere (an empty
    mask, as the student said); ``self.no_prompt`` counts them.

    Args:
        teacher: the frozen :class:`fewlabel.sam.SamTeacher`.
        num_points: point prompts per image.
        threshold: student probability threshold of the box prompt and of the empty test.
        mode: prompt combination (:data:`fewlabel.sam.MODES`).
        seed: seed of the point tie-breaking (the same image gives the same prompt every run).
    """

    def __init__(self, teacher: SamTeacher, num_points: int = 3, threshold: float = 0.5, mode: str = "points+box",
                 seed: int = 0) -> None:
        super().__init__()
        self.teacher, self.num_points, self.threshold, self.mode = teacher, int(num_points), float(threshold), mode
        self.seed = int(seed)
        self.no_prompt = 0

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        logits = network(inputs, *args, **kwargs)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        if logits.ndim != 4 or logits.shape[1] != 1:
            raise ValueError(f"accurate inference needs a binary student (1 output channel), got {tuple(logits.shape)}")
        probs = torch.sigmoid(logits.detach().float())[:, 0]
        generator = torch.Generator().manual_seed(self.seed)
        prompts = make_prompts(probs, self.num_points, self.threshold, generator, self.mode,
                               self.teacher.mask_input_size)
        h, w = inputs.shape[-2:]
        out = torch.full_like(logits, -100.0, dtype=torch.float32)
        idx = [i for i, p in enumerate(prompts) if p is not None]
        self.no_prompt += len(prompts) - len(idx)
        if idx:
            emb = self.teacher.embed(inputs[idx].float())
            sam = self.teacher.predict(emb, [prompts[i] for i in idx], (int(h), int(w)))
            out[idx] = sam.to(out.device)
        return out


def build_inferer(mode: str = "fast", checkpoint: str | os.PathLike | None = None, model_type: str = "vit_b",
                  device: str | torch.device = "cpu", multimask_output: bool = False, preprocessing: str = "auto",
                  **kwargs: Any) -> Inferer:
    """The inferer of a bundle's ``inference_mode``: ``"fast"`` (student) or ``"accurate"`` (student + SAM).

    Args:
        mode: one of :data:`INFERENCE_MODES`.
        checkpoint: SAM / MedSAM checkpoint (accurate mode only; loaded with
            :func:`fewlabel.sam.build_sam_teacher`, which names the file when it is missing or does
            not fit ``model_type``).
        model_type: ``vit_b`` / ``vit_l`` / ``vit_h`` (MedSAM: ``vit_b``) or ``tiny`` (tests, demos).
        device: where SAM runs.
        multimask_output: SAM predicts its three masks and the one with the highest predicted IoU
            is kept (True), or its single mask (False, default); see :meth:`fewlabel.sam.SamTeacher.predict`.
        preprocessing: the teacher's image pre-processing, ``"sam"``, ``"medsam"`` or ``"auto"``
            (MedSAM's for a file named ``*medsam*``); see :func:`fewlabel.sam.build_sam_teacher`.
        kwargs: :class:`SamRefineInferer` options (``num_points``, ``threshold``, ``mode`` as
            ``prompt_mode``, ``seed``).
    """
    if mode not in INFERENCE_MODES:
        raise ValueError(f"inference_mode must be one of {INFERENCE_MODES}, got '{mode}'")
    if mode == "fast":
        return SimpleInferer()
    if not checkpoint:
        raise ValueError("inference_mode 'accurate' needs sam_checkpoint: the SAM (or MedSAM) weights file")
    teacher = build_sam_teacher(checkpoint, model_type, device, multimask_output=multimask_output,
                                preprocessing=preprocessing)
    if "prompt_mode" in kwargs:
        kwargs["mode"] = kwargs.pop("prompt_mode")
    logger.info("accurate inference: student prompts SAM '%s' from %s", model_type, checkpoint)
    return SamRefineInferer(teacher, **kwargs)
