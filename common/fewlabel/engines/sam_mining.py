"""SAM knowledge mining on MONAI's ``SupervisedTrainer``: mixed batches, pseudo-labels, the mining loss.

The method (paper, sections 2.2-2.5): a small student (U-Net++) trained on the labelled images
predicts on an unlabelled image; its prediction becomes prompts (top-probability points + the
box of ``prob >= 0.5``) for a frozen SAM teacher (:mod:`fewlabel.sam`), whose mask is the
pseudo-label; the student then trains on ``L = mean_labelled(Dice + k BCE) + lambda *
mean_unlabelled(Dice + k BCE vs pseudo-labels)`` with ``k = 0.2``, ``lambda = 0.25``. Two
schedules:

- **continuous**: a fresh pseudo-label every time an unlabelled image comes round, from the
  current student: :class:`MinedBatches` with ``mode="continuous"`` as the trainer's
  ``prepare_batch``. The teacher's image embedding of each unlabelled image is computed once and
  reused (give the teacher a :class:`fewlabel.sam.EmbeddingCache`); only the prompt encoder and
  mask decoder run per visit.
- **one-time**: pseudo-labels made once after the supervised stage by
  :func:`mine_pseudo_labels` (PNG masks + a datalist of pseudo-labelled items with a ``valid``
  flag), then ordinary training on labelled + pseudo-labelled items: :class:`MinedBatches` with
  ``mode="one_time"`` (no teacher needed) still applies the ``lambda`` weight.

The supervised stage is the same machinery with ``mode="supervised"`` (every item labelled).

**Batch layout** (a decision, as the trainer takes one data loader): one dataset of mixed items,
each a dict with ``image`` ``(C, H, W)`` float in [0, 1], ``label`` ``(1, H, W)`` in {0, 1}
(an all-zero placeholder for unlabelled items, :class:`PlaceholderLabeld`, so batches collate),
``is_labelled`` (1 / 0) and ``valid`` (1 / 0: whether a pseudo-label file holds a usable
pseudo-label; one-time mode). :func:`mixed_items` builds that list from a datalist's labelled
and unlabelled items. A shuffled loader then mixes labelled and unlabelled images in every batch
in proportion to their numbers (``B`` and ``B'`` of the paper's loss vary from batch to batch;
the loss normalises each group by its own count). One loader keeps MONAI's ``SupervisedTrainer``,
its epoch length, checkpointing and multi-GPU sampler as they are; two zipped loaders would need
a custom iteration and an arbitrary epoch definition.

**Geometric augmentation happens in the engine**, on the device, after the pseudo-label: the
student and the teacher see the *un-augmented* image (so path-keyed embeddings stay valid and
the prompts are in the image's own frame), then one set of per-item parameters (flips,
transpose, 90-degree rotations, optionally a small affine) is applied to the image (bilinear)
and to its label or pseudo-label (nearest), so they stay aligned; photometric jitter is applied
to the image only. The dataset transforms must therefore be deterministic (load, resize, scale
to [0, 1]). Flips, transpose and 90-degree rotations are exact; transpose and odd rotations are
skipped for non-square images (they would change the shape of the batch).

**Targets layout**: the trainer's loss receives ``(B, 2, H, W)`` targets: channel 0 the binary
mask (ground truth, pseudo-label, or zeros), channel 1 the item's *role*, constant over the
image: :data:`ROLE_LABELLED` (1), :data:`ROLE_PSEUDO` (2, an unlabelled image with a
pseudo-label) or :data:`ROLE_EXCLUDED` (0, an unlabelled image without one: its student
prediction was empty, so there was no prompt). :class:`MiningLoss` reads it; a plain
``(B, 1, H, W)`` label means "all labelled" (validation loss, supervised stage).
:func:`unpack_targets` splits it (e.g. for a training metric: ``label[:, :1]``).

**The teacher** is held by :class:`MinedBatches` (not an ``nn.Module``), never registered inside
the student and never given to the optimizer (:func:`check_teacher_separate` checks both).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch
from monai.losses import DiceLoss
from monai.transforms import MapTransform
from PIL import Image
from torch.nn.modules.loss import _Loss

from fewlabel.data.datalist import save_datalist
from fewlabel.engines.simclr import random_colour_jitter
from fewlabel.random_state import generator_state, set_generator_state

__all__ = [
    "ROLE_EXCLUDED",
    "ROLE_LABELLED",
    "ROLE_PSEUDO",
    "MODES",
    "pack_targets",
    "unpack_targets",
    "dice_bce_per_image",
    "MiningLoss",
    "GeometricParams",
    "draw_geometry",
    "apply_geometry",
    "MinedBatches",
    "MiningStatsHandler",
    "PlaceholderLabeld",
    "mixed_items",
    "mine_pseudo_labels",
    "check_teacher_separate",
]

logger = logging.getLogger("fewlabel.engines")

#: Role of an unlabelled image without a pseudo-label (left out of the loss).
ROLE_EXCLUDED = 0
#: Role of a labelled image (ground truth).
ROLE_LABELLED = 1
#: Role of an unlabelled image with a SAM pseudo-label.
ROLE_PSEUDO = 2
#: Schedules of :class:`MinedBatches`.
MODES = ("continuous", "one_time", "supervised")


def _plain(x: Any) -> torch.Tensor:
    """A plain tensor (MetaTensor metadata dropped)."""
    if isinstance(x, MetaTensor):
        return x.as_tensor()
    return torch.as_tensor(x)


# ---------------------------------------------------------------------------------------------
# targets and the loss
# ---------------------------------------------------------------------------------------------


def pack_targets(masks: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` masks + ``(B,)`` roles -> ``(B, C + 1, H, W)`` float32 targets (roles last, constant)."""
    if masks.ndim != 4 or roles.shape != (masks.shape[0],):
        raise ValueError(f"expected (B, C, H, W) masks and (B,) roles, got {tuple(masks.shape)}, {tuple(roles.shape)}")
    b, _, h, w = masks.shape
    role_map = roles.to(masks.device, torch.float32).view(b, 1, 1, 1).expand(b, 1, h, w)
    return torch.cat([masks.float(), role_map], dim=1)


def unpack_targets(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C + 1, H, W)`` targets -> ``(masks (B, C, H, W) float32, roles (B,) int64)``."""
    if targets.ndim != 4 or targets.shape[1] < 2:
        raise ValueError(f"expected (B, C + 1, H, W) mining targets, got {tuple(targets.shape)}")
    roles = targets[:, -1].flatten(1).amax(1).round().long()
    return targets[:, :-1].float(), roles


def dice_bce_per_image(
    logits: torch.Tensor, target: torch.Tensor, k: float = 0.2, dice: DiceLoss | None = None
) -> torch.Tensor:
    """``Dice + k * BCE`` of each image (paper, section 2.5), from logits.

    Args:
        logits: ``(B, C, H, W)`` logits (sigmoid per channel; C = 1 for the method's binary task).
        target: ``(B, C, H, W)`` in {0, 1}.
        k: BCE weight.
        dice: the soft Dice loss to use (default MONAI's ``DiceLoss(sigmoid=True)``, smooth 1e-5).

    Returns:
        ``(B,)`` float32 >= 0: soft Dice loss (mean over channels) + ``k`` * mean pixel BCE.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape")
    dice = dice or DiceLoss(sigmoid=True, reduction="none")
    x, t = logits.float(), target.float()
    d = dice(x, t).flatten(1).mean(1)
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none").flatten(1).mean(1)
    return d + k * bce


class MiningLoss(_Loss):
    """The SAM knowledge-mining loss: ``mean_labelled(Dice + k BCE) + lambda * mean_pseudo(Dice + k BCE)``.

    Each image's ``Dice + k BCE`` is computed on its own (logits in, sigmoid inside); labelled
    images are averaged over their count ``B``, pseudo-labelled ones over theirs ``B'`` and
    down-weighted by ``lambda``; images with role :data:`ROLE_EXCLUDED` (no pseudo-label) take
    no part. A group absent from the batch contributes nothing: a batch with no valid
    pseudo-label is the supervised loss alone, a batch of pseudo-labels only is ``lambda`` times
    their mean. A batch with nothing to learn from gives 0 with a graph. The value is never NaN
    (Dice is smoothed; BCE is computed from logits).

    Args:
        k: BCE weight (paper: 0.2).
        lam: weight of the pseudo-label term (paper: 0.25).
        smooth_nr, smooth_dr: Dice smoothing (MONAI's ``DiceLoss``).

    Call as ``loss(logits, targets)`` with ``targets`` either the ``(B, C + 1, H, W)`` mining
    layout (:func:`pack_targets`) or a plain ``(B, C, H, W)`` label (all images labelled), or
    ``loss(logits, masks, roles=roles)`` with explicit ``(B,)`` roles. Returns a float32 scalar.
    After each call ``self.last`` holds the detached terms and counts (``labelled``, ``pseudo``,
    ``n_labelled``, ``n_pseudo``) for logging.
    """

    def __init__(self, k: float = 0.2, lam: float = 0.25, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5) -> None:
        super().__init__()
        if k < 0 or lam < 0:
            raise ValueError(f"k and lam must be >= 0, got k={k}, lam={lam}")
        self.k, self.lam = float(k), float(lam)
        self.dice = DiceLoss(sigmoid=True, reduction="none", smooth_nr=smooth_nr, smooth_dr=smooth_dr)
        self.last: dict[str, torch.Tensor] = {}

    def forward(self, input: torch.Tensor, target: torch.Tensor, roles: torch.Tensor | None = None) -> torch.Tensor:
        if input.ndim != 4:
            raise ValueError(f"expected (B, C, H, W) logits, got {tuple(input.shape)}")
        if roles is None:
            if target.shape[1] == input.shape[1] + 1:
                target, roles = unpack_targets(target)
            elif target.shape[1] == input.shape[1]:
                roles = torch.full((input.shape[0],), ROLE_LABELLED, dtype=torch.long, device=input.device)
            else:
                raise ValueError(
                    f"targets must have {input.shape[1]} channels (labels) or {input.shape[1] + 1} (labels + role), "
                    f"got {tuple(target.shape)}"
                )
        roles = torch.as_tensor(roles, device=input.device).long().view(-1)
        if roles.numel() != input.shape[0]:
            raise ValueError(f"got {roles.numel()} roles for {input.shape[0]} images")
        per_image = dice_bce_per_image(input, target.to(input.device), self.k, self.dice)
        labelled = (roles == ROLE_LABELLED).float()
        pseudo = (roles == ROLE_PSEUDO).float()
        n_l, n_p = labelled.sum(), pseudo.sum()
        zero = input.sum().float() * 0.0  # keeps a graph when a group is empty
        term_l = (per_image * labelled).sum() / n_l if n_l > 0 else zero
        term_p = (per_image * pseudo).sum() / n_p if n_p > 0 else zero
        self.last = {"labelled": term_l.detach(), "pseudo": term_p.detach(), "n_labelled": n_l.detach(),
                     "n_pseudo": n_p.detach()}
        return term_l + self.lam * term_p

    def extra_repr(self) -> str:
        return f"k={self.k}, lam={self.lam}"


# ---------------------------------------------------------------------------------------------
# geometric augmentation applied identically to images and masks
# ---------------------------------------------------------------------------------------------


class GeometricParams:
    """Per-item geometric transform: transpose, then ``rot90`` by ``k`` quarter turns, then flips, then affine.

    Attributes (all on the CPU): ``transpose`` ``(B,)`` bool, ``k`` ``(B,)`` int64 in 0..3,
    ``hflip`` / ``vflip`` ``(B,)`` bool, ``theta`` ``(B, 2, 3)`` float32 affine (output to input,
    normalised coordinates, as :func:`torch.nn.functional.affine_grid`) or None.
    """

    def __init__(self, transpose: torch.Tensor, k: torch.Tensor, hflip: torch.Tensor, vflip: torch.Tensor,
                 theta: torch.Tensor | None) -> None:
        self.transpose, self.k, self.hflip, self.vflip, self.theta = transpose, k, hflip, vflip, theta

    def __len__(self) -> int:
        return int(self.k.shape[0])


def draw_geometry(
    batch_size: int,
    square: bool,
    generator: torch.Generator,
    flip_prob: float = 0.5,
    transpose_prob: float = 0.5,
    rot90_prob: float = 0.5,
    affine_prob: float = 0.0,
    rotate_range: float = 15.0,
    scale_range: float = 0.1,
    translate_range: float = 0.05,
) -> GeometricParams:
    """Draw one :class:`GeometricParams` per item (the paper's flips, rotation and transpose, each p = 0.5).

    Args:
        batch_size: items to draw for.
        square: whether the images are square; if not, transpose and odd quarter turns are off.
        generator: CPU generator of the draws.
        flip_prob: probability of each of the horizontal and vertical flips.
        transpose_prob: probability of swapping rows and columns.
        rot90_prob: probability of a rotation by 1, 2 or 3 quarter turns (uniform).
        affine_prob: probability of an extra small affine (rotation in ``+-rotate_range`` degrees,
            isotropic scale in ``1 +- scale_range``, translation in ``+-translate_range`` of the
            size), resampled (bilinear for images, nearest for masks, zero padding).
    """
    b, g = int(batch_size), generator
    transpose = (torch.rand(b, generator=g) < transpose_prob) & square
    rotate = torch.rand(b, generator=g) < rot90_prob
    k = torch.where(rotate, torch.randint(1, 4, (b,), generator=g), torch.zeros(b, dtype=torch.long))
    if not square:
        k = torch.where(k % 2 == 1, torch.zeros_like(k), k)
    hflip = torch.rand(b, generator=g) < flip_prob
    vflip = torch.rand(b, generator=g) < flip_prob
    theta = None
    if affine_prob > 0:
        on = torch.rand(b, generator=g) < affine_prob
        angle = torch.deg2rad((2 * torch.rand(b, generator=g) - 1) * rotate_range) * on
        scale = torch.where(on, 1.0 + (2 * torch.rand(b, generator=g) - 1) * scale_range, torch.ones(b))
        shift = (2 * torch.rand(b, 2, generator=g) - 1) * translate_range * 2 * on[:, None]  # normalised units
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    return GeometricParams(transpose, k, hflip, vflip, theta)


def apply_geometry(x: torch.Tensor, params: GeometricParams, mode: str = "bilinear") -> torch.Tensor:
    """Apply per-item geometric transforms to ``(B, C, H, W)`` ``x`` (same params -> same motion).

    Args:
        x: images or masks on any device.
        params: from :func:`draw_geometry` (``len(params) == B``).
        mode: resampling of the affine step: ``"bilinear"`` (images) or ``"nearest"`` (masks);
            the other steps are exact index permutations.

    Returns:
        ``(B, C, H, W)``, same dtype and device.
    """
    if x.ndim != 4 or x.shape[0] != len(params):
        raise ValueError(f"expected (B={len(params)}, C, H, W), got {tuple(x.shape)}")
    dev = x.device

    def pick(flag: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(flag.to(dev).view(-1, 1, 1, 1), a, b)

    if params.transpose.any():
        x = pick(params.transpose, x.transpose(-1, -2), x)
    if (params.k > 0).any():
        out = x
        for k in (1, 2, 3):
            if (params.k == k).any():
                out = pick(params.k == k, torch.rot90(x, k, dims=(-2, -1)), out)
        x = out
    if params.hflip.any():
        x = pick(params.hflip, x.flip(-1), x)
    if params.vflip.any():
        x = pick(params.vflip, x.flip(-2), x)
    if params.theta is not None:
        on = (params.theta - torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])).abs().flatten(1).amax(1) > 0
        if on.any():
            grid = F.affine_grid(params.theta.to(dev, torch.float32), list(x.shape), align_corners=False)
            moved = F.grid_sample(x.float(), grid, mode=mode, padding_mode="zeros", align_corners=False).to(x.dtype)
            x = pick(on, moved, x)
    return x


# ---------------------------------------------------------------------------------------------
# the teacher stays outside the student
# ---------------------------------------------------------------------------------------------


def check_teacher_separate(
    teacher: nn.Module, network: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Raise ``ValueError`` if the frozen teacher could be trained: a parameter of it requires grad,
    is part of ``network`` (registered as a submodule of the student) or is in ``optimizer``."""
    params = list(teacher.parameters()) if isinstance(teacher, nn.Module) else []
    ids = {id(p) for p in params}
    if any(p.requires_grad for p in params):
        raise ValueError("the SAM teacher has parameters that require grad; build it with build_sam_teacher (frozen)")
    if network is not None and any(id(p) in ids for p in network.parameters()):
        raise ValueError(
            "the SAM teacher is registered inside the student network; keep it outside (MinedBatches holds it)"
        )
    if optimizer is not None and any(id(p) in ids for group in optimizer.param_groups for p in group["params"]):
        raise ValueError("the optimizer holds SAM teacher parameters; give it the student's parameters only")


# ---------------------------------------------------------------------------------------------
# prepare_batch: pseudo-labels, augmentation, targets
# ---------------------------------------------------------------------------------------------


class MinedBatches(PrepareBatch):
    """``prepare_batch`` of SAM knowledge mining: pseudo-labels for unlabelled items, then augmentation.

    Per batch (see the module docstring for the layouts):

    1. images and labels move to ``device``; roles come from ``is_labelled`` (and ``valid``);
    2. ``mode="continuous"``: for the unlabelled items, the student (``network``, switched to
       eval mode, no grad, then restored) predicts on the *un-augmented* images; its
       probabilities become prompts and the teacher's masks (``teacher.pseudo_label``, with its
       embedding cache when it has one) become their labels; items with an empty prediction get
       no pseudo-label (:data:`ROLE_EXCLUDED`) and are counted (``seen`` / ``skipped``).
       ``mode="one_time"``: the labels of unlabelled items are the pseudo-label files already
       loaded, ``valid`` says which are usable. ``mode="supervised"``: all items labelled;
    3. one geometric transform per item (:func:`draw_geometry`) is applied to image and label;
       photometric jitter to the image only (:func:`fewlabel.engines.simclr.random_colour_jitter`).

    Args:
        network: the student (the trainer's network object); needed for ``"continuous"``.
        teacher: a :class:`fewlabel.sam.SamTeacher` (or anything with its ``pseudo_label``);
            needed for ``"continuous"``. Held here, outside the student.
        mode: one of :data:`MODES`.
        num_points: point prompts per image (paper: "x" points of highest probability; not given).
        threshold: probability threshold of the box prompt and of the empty-prediction test (0.5).
        prompt_mode: prompt combination (:data:`fewlabel.sam.MODES`; the method: ``"points+box"``).
        cache_keys: how the teacher's embedding cache identifies an image: ``"content"`` (a hash of
            the un-augmented image tensor; always correct) or ``"path"`` (the image file from the
            batch's ``filename_or_obj`` meta; cheaper, right when the dataset transforms are
            deterministic, which this engine requires anyway).
        seed: seed of the augmentation and prompt tie-breaking draws (CPU generators).
        flip_prob, transpose_prob, rot90_prob, affine_prob, rotate_range, scale_range,
            translate_range: geometric augmentation (:func:`draw_geometry`); 0 disables a step.
        brightness, contrast, saturation, colour_prob: photometric jitter of the images.
        image_key, label_key, flag_key, valid_key: batch keys.
        amp: run the student's pseudo-labelling forward under CUDA autocast.

    Attributes:
        seen: unlabelled items processed since the last :meth:`reset_counts`.
        skipped: of those, items without a pseudo-label (no prompt / invalid file).

    Returns (from ``__call__``):
        ``(images, targets)``: ``(B, C, H, W)`` augmented images on ``device`` and
        ``(B, 2, H, W)`` targets (mask, role), see :func:`pack_targets`.
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        teacher: Any = None,
        mode: str = "continuous",
        num_points: int = 3,
        threshold: float = 0.5,
        prompt_mode: str = "points+box",
        cache_keys: str = "content",
        seed: int = 0,
        flip_prob: float = 0.5,
        transpose_prob: float = 0.5,
        rot90_prob: float = 0.5,
        affine_prob: float = 0.0,
        rotate_range: float = 15.0,
        scale_range: float = 0.1,
        translate_range: float = 0.05,
        brightness: float = 0.1,
        contrast: float = 0.1,
        saturation: float = 0.0,
        colour_prob: float = 0.5,
        image_key: str = "image",
        label_key: str = "label",
        flag_key: str = "is_labelled",
        valid_key: str = "valid",
        amp: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got '{mode}'")
        if mode == "continuous" and (network is None or teacher is None):
            raise ValueError("continuous mining needs the student network and the SAM teacher")
        if cache_keys not in ("content", "path"):
            raise ValueError(f"cache_keys must be 'content' or 'path', got '{cache_keys}'")
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        for name, p in (("flip_prob", flip_prob), ("transpose_prob", transpose_prob), ("rot90_prob", rot90_prob),
                        ("affine_prob", affine_prob), ("colour_prob", colour_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if teacher is not None and isinstance(teacher, nn.Module):
            check_teacher_separate(teacher, network)
        self.network, self.teacher, self.mode = network, teacher, mode
        self.num_points, self.threshold, self.prompt_mode = int(num_points), float(threshold), prompt_mode
        self.cache_keys = cache_keys
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.prompt_generator = torch.Generator().manual_seed(self.seed + 1)
        self.geometry = {"flip_prob": flip_prob, "transpose_prob": transpose_prob, "rot90_prob": rot90_prob,
                         "affine_prob": affine_prob, "rotate_range": rotate_range, "scale_range": scale_range,
                         "translate_range": translate_range}
        self.jitter = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "prob": colour_prob}
        self.image_key, self.label_key, self.flag_key, self.valid_key = image_key, label_key, flag_key, valid_key
        self.amp = bool(amp)
        self.seen = 0
        self.skipped = 0

    def state_dict(self) -> dict[str, Any]:
        """The augmentation and prompt generators' states, to resume a run (:class:`fewlabel.engines.TrainingState`).

        The student and the teacher are not part of it (the student is saved as the trainer's network, the
        teacher is fixed), nor are the per-epoch counts."""
        return {
            "generator": generator_state(self.generator),
            "prompt_generator": generator_state(self.prompt_generator),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        set_generator_state(self.generator, state["generator"], "MinedBatches.generator")
        set_generator_state(self.prompt_generator, state["prompt_generator"], "MinedBatches.prompt_generator")

    def reset_counts(self) -> None:
        """Zero ``seen`` and ``skipped`` (at each epoch start, by :class:`MiningStatsHandler`)."""
        self.seen = self.skipped = 0

    # -- pieces --------------------------------------------------------------------------------
    def _flags(self, batchdata: Mapping[str, Any], b: int, key: str, default: bool | None) -> torch.Tensor:
        value = batchdata.get(key)
        if value is None:
            if default is None:
                raise ValueError(
                    f"mode '{self.mode}' needs a '{key}' flag per item (1 labelled / 0 unlabelled); "
                    "build the dataset with fewlabel.engines.sam_mining.mixed_items"
                )
            return torch.full((b,), default, dtype=torch.bool)
        flags = _plain(value).detach().cpu().reshape(-1)
        if flags.numel() != b:
            raise ValueError(f"'{key}' has {flags.numel()} values for {b} images")
        return flags.bool()

    def _path_keys(self, batchdata: Mapping[str, Any], idx: list[int]) -> list[Any]:
        images = batchdata[self.image_key]
        names = None
        if isinstance(images, MetaTensor):
            names = images.meta.get("filename_or_obj")
        if names is None:
            names = (batchdata.get(f"{self.image_key}_meta_dict") or {}).get("filename_or_obj")
        if names is None or isinstance(names, (str, os.PathLike)):
            raise ValueError(
                "cache_keys='path' needs the image files' names in the batch (MetaTensor meta 'filename_or_obj'); "
                "keep track_meta on, or use cache_keys='content'"
            )
        return [names[i] for i in idx]

    def student_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """The student's ``(N, 1, H, W)`` sigmoid probabilities, in eval mode without grad (mode restored)."""
        net = self.network
        was_training = net.training
        net.eval()
        try:
            use_amp = self.amp and images.device.type == "cuda"
            with torch.no_grad(), torch.autocast(device_type=images.device.type, enabled=use_amp):
                out = net(images)
        finally:
            net.train(was_training)
        if isinstance(out, (list, tuple)):  # deep supervision: the main output first
            out = out[0]
        if out.ndim != 4 or out.shape[1] != 1:
            raise ValueError(f"SAM mining needs a binary student with 1 output channel, got output {tuple(out.shape)}")
        return torch.sigmoid(out.float())

    def pseudo_labels(
        self, images: torch.Tensor, cache_keys: Sequence[Any] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Continuous mining of un-augmented ``(N, C, H, W)`` images: ``(masks (N, 1, H, W), valid (N,) bool)``."""
        probs = self.student_probabilities(images)
        kwargs: dict[str, Any] = {}
        if getattr(self.teacher, "cache", None) is not None:
            kwargs["cache_keys"] = list(cache_keys) if cache_keys is not None else [None] * images.shape[0]
        masks, valid = self.teacher.pseudo_label(
            images, probs, self.num_points, threshold=self.threshold, mode=self.prompt_mode,
            generator=self.prompt_generator, **kwargs,
        )
        return masks.to(images.device, torch.float32), valid.to(images.device).bool()

    # -- the prepare_batch call ----------------------------------------------------------------
    def __call__(
        self, batchdata: Mapping[str, Any], device: str | torch.device | None = None,
        non_blocking: bool = False, **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images = _plain(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking, **kwargs).float()
        if images.ndim != 4:
            raise ValueError(f"expected (B, C, H, W) images, got {tuple(images.shape)}")
        b, _, h, w = images.shape
        labelled = self._flags(batchdata, b, self.flag_key, True if self.mode == "supervised" else None)
        label = batchdata.get(self.label_key)
        if label is None:
            if labelled.any():
                raise ValueError(f"the batch has labelled items but no '{self.label_key}'")
            masks = torch.zeros((b, 1, h, w), device=images.device)
        else:
            masks = _plain(label).to(device=images.device, non_blocking=non_blocking).float()
            if masks.ndim != 4 or masks.shape[0] != b or masks.shape[-2:] != images.shape[-2:]:
                raise ValueError(f"labels {tuple(masks.shape)} do not fit images {tuple(images.shape)}")
            masks = masks.clone()
        roles = torch.where(labelled, ROLE_LABELLED, ROLE_EXCLUDED).long()

        unl = (~labelled).nonzero().flatten().tolist()
        if unl and self.mode != "supervised":  # supervised: unlabelled items (if any) stay excluded
            if self.mode == "continuous":
                keys = self._path_keys(batchdata, unl) if self.cache_keys == "path" else None
                pseudo, valid = self.pseudo_labels(images[unl], keys)
                masks[unl] = pseudo
                valid = valid.cpu()
            else:  # one-time: the pseudo-label files were loaded as labels
                valid = self._flags(batchdata, b, self.valid_key, True)[unl]
            roles[unl] = torch.where(valid, ROLE_PSEUDO, ROLE_EXCLUDED).long()
            self.seen += len(unl)
            self.skipped += int((~valid).sum())

        with torch.no_grad():
            params = draw_geometry(b, h == w, self.generator, **self.geometry)
            images = apply_geometry(images, params, "bilinear")
            masks = apply_geometry(masks, params, "nearest")
            images = random_colour_jitter(images, self.generator, **self.jitter)
        return images, pack_targets(masks, roles)


# ---------------------------------------------------------------------------------------------
# per-epoch counts
# ---------------------------------------------------------------------------------------------


class MiningStatsHandler:
    """Ignite handler: per epoch, count and log the unlabelled images that had no pseudo-label.

    At each epoch start the counters of ``mined`` are reset; at its end
    ``engine.state.metrics["pseudo_label_no_prompt"]`` gets the number of unlabelled images
    without a pseudo-label (empty student prediction, hence no prompt) and
    ``engine.state.metrics["pseudo_label_skipped"]`` their share of the unlabelled images seen;
    both are logged (with the teacher's embedding-cache hits and misses when it has a cache).

    Args:
        mined: the trainer's :class:`MinedBatches` (anything with ``seen``, ``skipped``, ``reset_counts``).
    """

    def __init__(self, mined: MinedBatches) -> None:
        self.mined = mined

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.report)

    def reset(self, engine: Engine) -> None:
        self.mined.reset_counts()

    def report(self, engine: Engine) -> None:
        seen, skipped = int(self.mined.seen), int(self.mined.skipped)
        engine.state.metrics["pseudo_label_no_prompt"] = skipped
        engine.state.metrics["pseudo_label_skipped"] = skipped / max(seen, 1)
        if not seen:
            return
        cache = getattr(getattr(self.mined, "teacher", None), "cache", None)
        extra = f"; SAM embedding cache {cache.stats()}" if cache is not None else ""
        log = logger.warning if skipped == seen else logger.info
        log("epoch %d: %d of %d unlabelled images had no pseudo-label (empty student prediction: no prompt) and "
            "were left out of the loss%s", engine.state.epoch, skipped, seen, extra)


# ---------------------------------------------------------------------------------------------
# datasets of mixed items
# ---------------------------------------------------------------------------------------------


class PlaceholderLabeld(MapTransform):
    """Give an item without a label an all-zero ``(1, H, W)`` one of its image's size, so batches collate.

    Put it last in the preprocessing of a mixed dataset (after resizing). Items that have the
    key are unchanged. The placeholder is never learnt from: the item's ``is_labelled`` flag is 0.

    Args:
        keys: label key(s) to fill in.
        ref_key: the image key whose spatial size the placeholder takes.
    """

    def __init__(self, keys: KeysCollection = "label", ref_key: str = "image") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.ref_key = ref_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.keys:
            if key not in d:
                ref = d[self.ref_key]
                d[key] = torch.zeros_like(ref[:1], dtype=torch.float32)
        return d


def mixed_items(
    labelled: Iterable[Mapping[str, Any]],
    unlabelled: Iterable[Mapping[str, Any]] = (),
    pseudo: Iterable[Mapping[str, Any]] = (),
    flag_key: str = "is_labelled",
    valid_key: str = "valid",
    label_key: str = "label",
) -> list[dict[str, Any]]:
    """One training list of labelled, unlabelled (continuous mode) and pseudo-labelled (one-time) items.

    Labelled items get ``is_labelled = 1, valid = 1``; unlabelled ones lose any ``label`` and get
    ``is_labelled = 0, valid = 1``; pseudo-labelled items (from :func:`mine_pseudo_labels`) get
    ``is_labelled = 0`` and keep their ``valid``. Every item gets both keys, so batches collate.
    """
    out = [{**dict(it), flag_key: 1, valid_key: 1} for it in labelled]
    for it in out:
        if label_key not in it:
            raise ValueError(f"labelled item {it.get('image', it)} has no '{label_key}'")
    out += [{**{k: v for k, v in it.items() if k != label_key}, flag_key: 0, valid_key: 1} for it in unlabelled]
    for it in pseudo:
        if label_key not in it:
            raise ValueError(f"pseudo-labelled item {it.get('image', it)} has no '{label_key}' (pseudo-label file)")
        out.append({**dict(it), flag_key: 0, valid_key: int(bool(it.get(valid_key, 1)))})
    return out


# ---------------------------------------------------------------------------------------------
# one-time mining
# ---------------------------------------------------------------------------------------------


def _default_transform(image_key: str, channels: int, spatial_size: Sequence[int] | None,
                       channel_policy: str = "error", nonfinite: str = "error") -> Callable:
    from monai.transforms import Compose, Resized

    from fewlabel.transforms.io import LoadImage2Dd

    steps: list[Callable] = [LoadImage2Dd(keys=image_key, channels=channels, channel_policy=channel_policy,
                                          nonfinite=nonfinite)]
    if spatial_size is not None:
        steps.append(Resized(keys=image_key, spatial_size=tuple(int(s) for s in spatial_size), mode="bilinear"))
    return Compose(steps)


def _original_size(image: Any) -> tuple[int, int]:
    meta = getattr(image, "meta", None) or {}
    shape = meta.get("spatial_shape")
    if shape is not None:
        shape = [int(s) for s in np.asarray(shape).reshape(-1)[:2]]
        if len(shape) == 2 and min(shape) > 0:
            return shape[0], shape[1]
    return int(image.shape[-2]), int(image.shape[-1])


def mine_pseudo_labels(
    student: nn.Module,
    teacher: Any,
    items: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    transform: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None,
    spatial_size: Sequence[int] | None = None,
    channels: int = 3,
    channel_policy: str = "error",
    nonfinite: str = "error",
    batch_size: int = 8,
    num_points: int = 3,
    threshold: float = 0.5,
    prompt_mode: str = "points+box",
    seed: int = 0,
    device: str | torch.device | None = None,
    image_key: str = "image",
    datalist_name: str = "pseudo_datalist.json",
    amp: bool = False,
) -> Path:
    """One-time pseudo-label generation (paper, section 2.4): student -> prompts -> SAM, once per image.

    Each unlabelled image is loaded and preprocessed by ``transform`` (default: load as
    ``channels``-channel float in [0, 1], resize to ``spatial_size``: the student's input frame),
    the student predicts (eval mode, no grad), its prediction prompts the teacher, and the
    teacher's binary mask is resized back to the image file's size (nearest) and written as a
    0/1 uint8 PNG ``OUT_DIR/masks/<stem>.png`` (so the training pipeline loads and resizes it
    like a ground-truth label: ``transform`` must map the whole image by a resize, no crop).
    Images with an empty student prediction get an all-zero mask and ``valid = 0``. Under
    ``torch.distributed`` each rank mines every ``world_size``-th image (file names are fixed from
    the whole list first, so no two ranks write one file), rank 0 gathers the entries and writes
    the datalist, and every rank returns once it exists.

    Args:
        student: the trained student (1 output channel, logits).
        teacher: the frozen :class:`fewlabel.sam.SamTeacher`.
        items: unlabelled datalist items (``{"image": path, ...}``; a ``label`` is ignored).
        out_dir: output folder (created).
        transform: item dict -> dict with ``image_key`` a ``(C, H, W)`` float tensor in [0, 1] (a
            MetaTensor with ``spatial_shape`` meta gives the original size).
        spatial_size: ``(H, W)`` of the default transform's resize (None: no resize; the images
            of a batch must then share one size).
        channels: channels of the default transform (1 gray, 3 RGB).
        channel_policy, nonfinite: the default transform's :class:`fewlabel.transforms.LoadImage2D` options
            (a bundle's ``--channel_policy`` / ``--nonfinite``).
        batch_size: images per student/teacher call.
        num_points, threshold, prompt_mode: prompting (see :class:`MinedBatches`).
        seed: seed of the point tie-breaking.
        device: where the student runs (default: its parameters' device).
        image_key: image key of the items.
        datalist_name: file name of the datalist JSON written in ``out_dir``.
        amp: student forward under CUDA autocast.

    Returns:
        The datalist JSON path. Its ``"training"`` list holds one item per input item (other keys
        kept): ``{"image", "label": the mask PNG, "is_labelled": 0, "valid": 1 / 0, ...}``; its
        ``"mining"`` entry records the prompting settings and the counts.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = list(items)
    out = Path(out_dir)
    masks_dir = out / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    transform = transform or _default_transform(image_key, channels, spatial_size, channel_policy, nonfinite)
    if device is None:
        first = next(iter(student.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    miner = MinedBatches(student, teacher, "continuous", num_points, threshold, prompt_mode, seed=seed, amp=amp)
    names = _unique_stems(items, image_key)  # over all items, so every rank names a file the same way
    rank, world = _rank_and_world()
    mine = list(range(rank, len(items), world))  # under torch.distributed each rank mines its share
    results: dict[int, dict[str, Any]] = {}
    for start in range(0, len(mine), batch_size):
        idx = mine[start : start + batch_size]
        chunk = [items[i] for i in idx]
        loaded = [transform({k: v for k, v in it.items() if k != "label"}) for it in chunk]
        tensors = [_plain(d[image_key]).float() for d in loaded]
        sizes = {tuple(t.shape) for t in tensors}
        if len(sizes) > 1:
            listing = ", ".join(f"{it.get(image_key)} {tuple(t.shape)}" for it, t in zip(chunk, tensors))
            raise ValueError(
                f"images of one batch differ in size ({listing}); pass spatial_size or a resizing transform"
            )
        images = torch.stack(tensors).to(device)
        masks, valid = miner.pseudo_labels(images)
        for i, it, data, mask, ok in zip(idx, chunk, loaded, masks, valid.tolist()):
            size = _original_size(data[image_key])
            m = mask[None].float()
            if tuple(m.shape[-2:]) != size:
                m = F.interpolate(m, size=size, mode="nearest-exact")
            array = (m[0, 0] > 0.5).to(torch.uint8).cpu().numpy()
            path = masks_dir / f"{names[i]}.png"
            tmp = path.with_name(f".{path.name}.tmp")
            Image.fromarray(array).save(tmp, format="PNG", compress_level=1)
            os.replace(tmp, path)
            entry = {k: v for k, v in it.items() if k != "label"}
            entry.update({"label": str(path.resolve()), "is_labelled": 0, "valid": int(ok)})
            results[i] = entry
    if world > 1:  # gather the ranks' entries; rank 0 writes the one datalist
        part = out / f".{datalist_name}.rank{rank}"
        part.write_text(json.dumps({str(i): e for i, e in results.items()}))
        dist.barrier()
        if rank == 0:
            for r in range(1, world):
                other = out / f".{datalist_name}.rank{r}"
                results.update({int(i): e for i, e in json.loads(other.read_text()).items()})
                other.unlink()
            part.unlink()
    ordered = [results[i] for i in sorted(results)]
    no_prompt = sum(1 for e in ordered if not e["valid"])
    path = out / datalist_name
    if rank == 0:
        logger.info(
            "one-time SAM mining: %d pseudo-labels written to %s; %d images had no prompt (valid = 0)",
            len(ordered), masks_dir, no_prompt,
        )
        datalist = {
            "name": "SAM pseudo-labels",
            "labels": {"0": "background", "1": "foreground"},
            "training": ordered,
            "mining": {
                "schedule": "one_time", "num_points": int(num_points), "threshold": float(threshold),
                "prompt_mode": prompt_mode, "teacher": str(getattr(teacher, "model_type", type(teacher).__name__)),
                "images": len(ordered), "no_prompt": int(no_prompt), "seed": int(seed),
            },
        }
        path = save_datalist(datalist, path)
    if world > 1:
        dist.barrier()  # the other ranks read the datalist rank 0 has just written
    return path


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _unique_stems(items: Sequence[Mapping[str, Any]], image_key: str) -> list[str]:
    """A file stem per item, from its image name; repeats get ``_1``, ``_2`` ..."""
    used: set[str] = set()
    names = []
    for k, it in enumerate(items):
        stem = Path(str(it.get(image_key, f"image_{k}"))).stem or f"image_{k}"
        name, n = stem, 1
        while name in used:
            name, n = f"{stem}_{n}", n + 1
        used.add(name)
        names.append(name)
    return names

