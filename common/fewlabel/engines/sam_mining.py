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
(an all-zero placeholder for unlabelled items, :class:`fewlabel.transforms.PlaceholderLabeld`,
so batches collate), ``is_labelled`` (1 / 0) and ``valid`` (1 / 0: whether a pseudo-label file
holds a usable pseudo-label; one-time mode). :func:`fewlabel.data.mixed_items` builds that list
from a datalist's labelled and unlabelled items. A shuffled loader then mixes labelled and
unlabelled images in every batch in proportion to their numbers (``B`` and ``B'`` of the
paper's loss vary from batch to batch; the loss normalises each group by its own count). One
loader keeps MONAI's ``SupervisedTrainer``, its epoch length, checkpointing and multi-GPU
sampler as they are; two zipped loaders would need a custom iteration and an arbitrary epoch
definition.

**Geometric augmentation happens in the engine** (:mod:`fewlabel.transforms.batched`), on the
device, after the pseudo-label: the student and the teacher see the *un-augmented* image (so
path-keyed embeddings stay valid and the prompts are in the image's own frame), then one set of
per-item parameters (flips, transpose, 90-degree rotations, optionally a small affine) is applied
to the image (bilinear) and to its label or pseudo-label (nearest), so they stay aligned;
photometric jitter is applied to the image only. The dataset transforms must therefore be
deterministic (load, resize, scale to [0, 1]). Flips, transpose and 90-degree rotations are
exact; transpose and odd rotations are skipped for non-square images (they would change the
shape of the batch).

**Targets layout**: the trainer's loss receives ``(B, 2, H, W)`` targets: channel 0 the binary
mask (ground truth, pseudo-label, or zeros), channel 1 the item's *role*, constant over the
image: :data:`ROLE_LABELLED` (1), :data:`ROLE_PSEUDO` (2, an unlabelled image with a
pseudo-label) or :data:`ROLE_EXCLUDED` (0, an unlabelled image without one: its student
prediction was empty, so there was no prompt). :class:`fewlabel.losses.MiningLoss` reads it; a plain
``(B, 1, H, W)`` label means "all labelled" (validation loss, supervised stage).
:func:`unpack_targets` splits it (e.g. for a training metric: ``label[:, :1]``).

**The teacher** is held by :class:`MinedBatches` (not an ``nn.Module``), never registered inside
the student and never given to the optimizer (:func:`check_teacher_separate` checks both).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch
from PIL import Image

from fewlabel.data.datalist import load_datalist, mixed_items, save_datalist
from fewlabel.errors import DataError
from fewlabel.handlers.pseudo_label_stats import MiningStatsHandler
from fewlabel.losses.mining import (
    ROLE_EXCLUDED,
    ROLE_LABELLED,
    ROLE_PSEUDO,
    MiningLoss,
    dice_bce_per_image,
    pack_targets,
    unpack_targets,
)
from fewlabel.sam.prompts import SamPrompter
from fewlabel.transforms.batched import GeometricParams, PairedBatchAugmentation, apply_geometry, draw_geometry
from fewlabel.transforms.placeholder import PlaceholderLabeld

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

#: Schedules of :class:`MinedBatches`.
MODES = ("continuous", "one_time", "supervised")


def _plain(x: Any) -> torch.Tensor:
    """A plain tensor (MetaTensor metadata dropped)."""
    if isinstance(x, MetaTensor):
        return x.as_tensor()
    return torch.as_tensor(x)


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
       eval mode, no grad, then restored) predicts on the *un-augmented* images; ``prompter`` turns
       its probabilities into prompts of the teacher, whose masks (``teacher.pseudo_label``, with its
       embedding cache when it has one) become their labels; items with an empty prediction get
       no pseudo-label (:data:`ROLE_EXCLUDED`) and are counted (``seen`` / ``skipped``).
       ``mode="one_time"``: the labels of unlabelled items are the pseudo-label files already
       loaded, ``valid`` says which are usable. ``mode="supervised"``: all items labelled;
    3. ``augmentation`` moves image and label together and jitters the image's colours.

    Args:
        network: the student (the trainer's network object); needed for ``"continuous"``.
        teacher: a :class:`fewlabel.sam.SamTeacher` (or anything with its ``pseudo_label``);
            needed for ``"continuous"``. Held here, outside the student.
        mode: one of :data:`MODES`.
        prompter: a :class:`fewlabel.sam.SamPrompter` (prompt settings and tie-breaking draws);
            default ``SamPrompter()`` (3 points, threshold 0.5, ``"points+box"``, seed 1).
        augmentation: a :class:`fewlabel.transforms.PairedBatchAugmentation`; default its defaults
            (seed 0).
        cache_keys: how the teacher's embedding cache identifies an image: ``"content"`` (a hash of
            the un-augmented image tensor; always correct) or ``"path"`` (the image file from the
            batch's ``filename_or_obj`` meta; cheaper, right when the dataset transforms are
            deterministic, which this engine requires anyway).
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
        prompter: SamPrompter | None = None,
        augmentation: PairedBatchAugmentation | None = None,
        cache_keys: str = "content",
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
        if teacher is not None and isinstance(teacher, nn.Module):
            check_teacher_separate(teacher, network)
        self.network, self.teacher, self.mode = network, teacher, mode
        self.prompter = prompter if prompter is not None else SamPrompter()
        self.augmentation = augmentation if augmentation is not None else PairedBatchAugmentation()
        self.cache_keys = cache_keys
        self.image_key, self.label_key, self.flag_key, self.valid_key = image_key, label_key, flag_key, valid_key
        self.amp = bool(amp)
        self.seen = 0
        self.skipped = 0

    def state_dict(self) -> dict[str, Any]:
        """The augmentation and prompt generators' states, to resume a run (:class:`fewlabel.handlers.TrainingState`).

        The student and the teacher are not part of it (the student is saved as the trainer's network, the
        teacher is fixed), nor are the per-epoch counts."""
        return {
            "generator": self.augmentation.state_dict()["generator"],
            "prompt_generator": self.prompter.state_dict()["generator"],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.augmentation.load_state_dict({"generator": state["generator"]})
        self.prompter.load_state_dict({"generator": state["prompt_generator"]})

    def reset_counts(self) -> None:
        """Zero ``seen`` and ``skipped`` (at each epoch start, by :class:`fewlabel.handlers.MiningStatsHandler`)."""
        self.seen = self.skipped = 0

    # -- pieces --------------------------------------------------------------------------------
    def _flags(self, batchdata: Mapping[str, Any], b: int, key: str, default: bool | None) -> torch.Tensor:
        value = batchdata.get(key)
        if value is None:
            if default is None:
                raise ValueError(
                    f"mode '{self.mode}' needs a '{key}' flag per item (1 labelled / 0 unlabelled); "
                    "build the dataset with fewlabel.data.mixed_items"
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
        return self.prompter(self.teacher, images, probs, cache_keys)

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

        images, masks = self.augmentation(images, masks)
        return images, pack_targets(masks, roles)


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


def load_mined_datalist(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The pseudo-labelled items that :func:`mine_pseudo_labels` listed in the datalist ``path``.

    A bundle reads them while its config is resolved; the mining itself is the stage's
    ``initialize`` step (``mine_once`` in SAM mining's ``mine.json``), so resolving the config
    never mines.

    Returns:
        The ``"training"`` items, paths absolute: ``{"image", "label", "is_labelled": 0, "valid"}``.

    Raises:
        DataError: ``path`` does not exist (the mining step has not run) or lists missing files.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"No mined pseudo-labels at {path}: one-time mining writes them in the stage's initialize "
            "step. Run the stage (`python -m monai.bundle run --config_file \"['train.json','mine.json']\" "
            "--mining_schedule one_time`), or resolve `mine_once` before `pseudo_files`."
        )
    return load_datalist(path, "training")


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
        num_points, threshold, prompt_mode: prompting (see :class:`fewlabel.sam.SamPrompter`).
        seed: seed of the point tie-breaking (the prompter is seeded with ``seed + 1``, as the bundle's ``prompter``).
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
    prompter = SamPrompter(num_points, threshold, prompt_mode, seed=seed + 1)
    miner = MinedBatches(student, teacher, "continuous", prompter=prompter, amp=amp)
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

