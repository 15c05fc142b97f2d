"""Volumes segmented by a 2D network slice by slice, with PolyCL's optional SAM steps.

PolyCL (Ward et al., MELBA 2025) trains on 2D axial slices and scores whole volumes; after the
network it can refine each slice with SAM box prompts (section 3.3.1) and propagate one slice's
mask through the volume with SAM 2 (section 3.3.2). :class:`SliceBySliceInferer` is that
pipeline as one MONAI inferer, so a ``SupervisedEvaluator`` over volumes (batch of
``(B, C, X, Y, Z)`` windowed CT, axial axis last) gives ``(B, 1, X, Y, Z)`` logits:

1. every axial slice ``(C, X, Y)`` goes through ``inferer2d`` in chunks of ``slice_batch``
   slices: ``SimpleInferer`` (the network alone) or
   :class:`fewlabel.sam.SamBoxRefineInferer` (network, then one SAM box per connected component);
2. with ``propagation`` (:class:`fewlabel.sam.propagate.Sam2Propagation`), the thresholded
   result (or, with ``propagation.prompt == "ground_truth"``, the label passed as
   ``prompt_label``) selects the informative slices and the reference mask, and SAM 2's
   propagated mask replaces the prediction (as logits +-:data:`~fewlabel.sam.REFINED_LOGIT`).

:class:`VolumeBatch` is the evaluator's ``prepare_batch`` that passes the label to the inferer as
``prompt_label`` (only needed for ground-truth prompts).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from monai.engines.utils import PrepareBatch, default_prepare_batch
from monai.inferers import Inferer, SimpleInferer

from fewlabel.sam.box_refine import REFINED_LOGIT

__all__ = ["REFINE_MODES", "PROPAGATE_MODES", "SliceBySliceInferer", "VolumeBatch", "build_volume_inferer"]

logger = logging.getLogger("fewlabel")

#: per-slice refinement options of :func:`build_volume_inferer`
REFINE_MODES = ("none", "sam")
#: volume propagation options of :func:`build_volume_inferer`
PROPAGATE_MODES = ("none", "sam2")


class SliceBySliceInferer(Inferer):
    """Run a 2D inferer over the axial slices of ``(B, C, X, Y, Z)`` volumes; optionally propagate with SAM 2.

    Args:
        inferer2d: the per-slice inferer (default ``SimpleInferer()``); it gets ``(S, C, X, Y)``
            slices and the network and returns ``(S, K, X, Y)`` logits.
        slice_batch: slices per call of ``inferer2d`` (memory vs. speed).
        propagation: optional :class:`~fewlabel.sam.propagate.Sam2Propagation` step.
        threshold: probability threshold that turns 1-channel logits into the coarse mask given to
            SAM 2 (multi-channel outputs: ``argmax == 1``).

    ``__call__(inputs, network, prompt_label=None)``: ``inputs`` ``(B, C, X, Y, Z)`` float (SAM 2
    frames assume channel 0 is in [0, 1]); ``prompt_label`` ``(B, 1, X, Y, Z)`` for ground-truth
    prompts. Returns ``(B, K, X, Y, Z)`` logits (``K = 1`` after SAM 2).
    """

    def __init__(self, inferer2d: Inferer | None = None, slice_batch: int = 16,
                 propagation: Any | None = None, threshold: float = 0.5) -> None:
        super().__init__()
        if int(slice_batch) < 1:
            raise ValueError(f"slice_batch must be >= 1, got {slice_batch}")
        self.inferer2d = inferer2d or SimpleInferer()
        self.slice_batch = int(slice_batch)
        self.propagation = propagation
        self.threshold = float(threshold)

    def _slices(self, volume: torch.Tensor, network: Any) -> torch.Tensor:
        """``(C, X, Y, Z)`` -> ``(K, X, Y, Z)`` logits, slice by slice."""
        slices = volume.permute(3, 0, 1, 2)  # (Z, C, X, Y)
        outs = []
        for chunk in torch.split(slices, self.slice_batch):
            out = self.inferer2d(chunk.contiguous(), network)
            outs.append(out[0] if isinstance(out, (list, tuple)) else out)
        return torch.cat(outs).permute(1, 2, 3, 0)

    def _coarse(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[0] == 1:
            return torch.sigmoid(logits[0].float()) > self.threshold
        return logits.argmax(0) == 1

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, prompt_label: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        if inputs.ndim != 5:
            raise ValueError(f"SliceBySliceInferer expects (B, C, X, Y, Z) volumes, got shape {tuple(inputs.shape)}")
        results = []
        for b in range(inputs.shape[0]):
            logits = self._slices(inputs[b], network)
            if self.propagation is not None:
                if getattr(self.propagation, "prompt", "prediction") == "ground_truth":
                    if prompt_label is None:
                        raise ValueError("SAM 2 prompts from the ground truth need the label: use "
                                         "fewlabel.engines.VolumeBatch(pass_label=True) as prepare_batch")
                    reference = torch.as_tensor(prompt_label[b, 0]) != 0
                else:
                    reference = self._coarse(logits)
                frames = inputs[b, 0].permute(2, 0, 1).float().cpu().numpy()  # (Z, X, Y)
                mask = self.propagation(frames, reference.permute(2, 0, 1).cpu().numpy())
                mask_t = torch.as_tensor(mask, device=logits.device).permute(1, 2, 0)[None]
                logits = (mask_t.float() * 2.0 - 1.0) * REFINED_LOGIT
            results.append(logits)
        return torch.stack(results)


class VolumeBatch(PrepareBatch):
    """``prepare_batch`` for volumes: image and label to the device, and the label as the inferer's
    ``prompt_label`` when ``pass_label`` (SAM 2 prompted from the ground truth)."""

    def __init__(self, pass_label: bool = False) -> None:
        self.pass_label = bool(pass_label)

    def __call__(self, batchdata: Mapping[str, Any], device: str | torch.device | None = None,
                 non_blocking: bool = False, **kwargs: Any) -> Any:
        image, label = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        if not self.pass_label:
            return image, label
        if label is None:
            raise ValueError("pass_label=True needs a 'label' in every batch (SAM 2 prompts from the ground truth)")
        return image, label, (), {"prompt_label": label}


def build_volume_inferer(
    refine: str = "none",
    propagate: str = "none",
    device: str | torch.device = "cpu",
    sam_checkpoint: str | None = None,
    sam_model_type: str = "auto",
    sam2_checkpoint: str | None = None,
    sam2_config: str = "sam2.1_hiera_t",
    sam2_prompt: str = "prediction",
    slice_batch: int = 16,
    box_pad: int = 0,
    min_pixels: int = 1,
) -> SliceBySliceInferer:
    """The volume inferer of PolyCL's configs: network, then optional SAM refinement and SAM 2 propagation.

    Args:
        refine: ``"none"`` or ``"sam"`` (box prompts per connected component, section 3.3.1).
        propagate: ``"none"`` or ``"sam2"`` (section 3.3.2). With both, SAM 2 starts from the
            SAM-refined mask.
        device: where SAM / SAM 2 run.
        sam_checkpoint, sam_model_type: SAM weights (:func:`fewlabel.sam.build_sam_teacher`).
        sam2_checkpoint, sam2_config: SAM 2 weights and their config
            (:func:`fewlabel.sam.propagate.build_sam2_propagator`; ``"tiny"`` for test files).
        sam2_prompt: ``"prediction"`` or ``"ground_truth"`` (see :class:`~fewlabel.sam.propagate.Sam2Propagation`).
        slice_batch: slices per network call.
        box_pad, min_pixels: :class:`fewlabel.sam.SamBoxRefineInferer` options.

    Raises:
        ValueError: an unknown mode, or a SAM step without its checkpoint.
        CheckpointError: a checkpoint that is missing or does not fit (named in the message).
    """
    if refine not in REFINE_MODES:
        raise ValueError(f"refine must be one of {REFINE_MODES}, got '{refine}'")
    if propagate not in PROPAGATE_MODES:
        raise ValueError(f"propagate must be one of {PROPAGATE_MODES}, got '{propagate}'")
    inferer2d: Inferer = SimpleInferer()
    if refine == "sam":
        if not sam_checkpoint:
            raise ValueError("refine='sam' needs sam_checkpoint: the SAM weights file (see large_files.yml)")
        from fewlabel.sam import SamBoxRefineInferer, build_sam_teacher

        teacher = build_sam_teacher(sam_checkpoint, sam_model_type, device)
        inferer2d = SamBoxRefineInferer(teacher, pad=box_pad, min_pixels=min_pixels)
        logger.info("SAM box refinement with '%s' from %s", teacher.model_type, sam_checkpoint)
    propagation = None
    if propagate == "sam2":
        if not sam2_checkpoint:
            raise ValueError("propagate='sam2' needs sam2_checkpoint: the SAM 2 weights file (see large_files.yml)")
        from fewlabel.sam.propagate import build_sam2_propagation

        propagation = build_sam2_propagation(sam2_checkpoint, sam2_config, device, prompt=sam2_prompt)
        logger.info("SAM 2 propagation (%s prompt) with '%s' from %s", sam2_prompt, sam2_config, sam2_checkpoint)
    return SliceBySliceInferer(inferer2d, slice_batch=slice_batch, propagation=propagation)
