"""SAM prompts from a student's probability map: the prompting step of SAM knowledge mining.

The student (a small segmentation network) predicts a foreground probability for every pixel of
an unlabelled image. Its prediction is summarised as prompts for the frozen SAM teacher (paper,
section 2.3):

- **points**: the ``num_points`` pixels of highest probability, all labelled foreground (1).
  When more pixels than needed share the same probability (e.g. a saturated sigmoid gives many
  exact 1.0 values), the points are drawn among them at random with the given
  :class:`torch.Generator`, so the choice is reproducible for a seeded generator.
- **box**: the outer bounding box of ``prob >= threshold`` (threshold 0.5 in the paper).
- **mask** (ablation only, Table 3): the probability map resized to SAM's low-resolution mask
  input and turned into logits.

Coordinate conventions (those of ``segment_anything.SamPredictor``):

- A point is ``(x, y)`` in pixels of the *original* image: ``x`` is the column index, ``y`` the
  row index, as float. SAM's prompt encoder adds 0.5 to every coordinate ("shift to centre of
  pixel"), so integer pixel indices are what it expects.
- A box is ``[x0, y0, x1, y1]`` with **inclusive** pixel indices: ``x1``/``y1`` are the column/
  row of the last foreground pixel, not one past it. This is how SAM derives boxes from masks
  itself (``segment_anything.utils.amg.batched_mask_to_box``), and the prompt encoder shifts both
  corners by 0.5 to pixel centres. A single foreground pixel at row 3, column 5 gives
  ``[5, 3, 5, 3]``.

Coordinates stay in the frame of the probability map; :class:`fewlabel.sam.SamTeacher` maps them
to SAM's resized input frame (``ResizeLongestSide``), as the predictor does.

An empty prediction (no pixel ``>= threshold``) gives no prompt at all: such an image has no
pseudo-label and is left out of the loss (``valid = False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from fewlabel.random_state import generator_state, set_generator_state

__all__ = [
    "SamPrompter",
    "MODES",
    "PREPROCESSING_FRAMES",
    "PromptMode",
    "SamPrompt",
    "top_probability_points",
    "mask_bounding_box",
    "mask_prompt_from_probability",
    "prompts_from_probability",
    "make_prompt",
    "make_prompts",
]

PromptMode = Literal["points+box", "points", "box", "mask", "points+box+mask"]
#: Prompt combinations (paper, Table 3). ``"points+box"`` is the method; ``"points"`` and ``"box"``
#: are its ablations; ``"points+box+mask"`` is the Table 3 row that adds the mask prompt;
#: ``"mask"`` gives SAM the mask prompt alone.
MODES: tuple[str, ...] = ("points+box", "points", "box", "mask", "points+box+mask")

#: Model-input frames of SAM-family teachers: ``"sam"`` (longest side resized to the square input,
#: padded at the bottom/right, SAM's mean/std) and ``"medsam"`` (whole image stretched to the square,
#: min-max scaled to [0, 1]; MedSAM's own pre-processing). See :class:`fewlabel.sam.SamTeacher`.
PREPROCESSING_FRAMES: tuple[str, ...] = ("sam", "medsam")

#: Probabilities are clipped to ``[eps, 1 - eps]`` before the logit transform of the mask prompt.
MASK_PROMPT_EPS = 1e-4


@dataclass
class SamPrompt:
    """The prompts for one image, in the pixel frame of the image the probability map belongs to.

    Attributes:
        points: ``(N, 2)`` float32 ``(x, y)`` pixel coordinates, or None.
        point_labels: ``(N,)`` int64 labels (1 = foreground), or None (None exactly when ``points`` is).
        box: ``(4,)`` float32 ``[x0, y0, x1, y1]``, inclusive pixel indices, or None.
        mask: ``(1, S, S)`` float32 logits for SAM's low-resolution mask input (S = 256 for the
            released SAM / MedSAM models), or None.
    """

    points: torch.Tensor | None = None
    point_labels: torch.Tensor | None = None
    box: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> SamPrompt:
        """A copy with every tensor on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return SamPrompt(move(self.points), move(self.point_labels), move(self.box), move(self.mask))

    def is_empty(self) -> bool:
        """True when there is nothing to prompt SAM with."""
        return self.points is None and self.box is None and self.mask is None


def _as_prob_map(prob: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``(H, W)`` or ``(1, H, W)`` tensor/array -> ``(H, W)`` float tensor (no copy when possible)."""
    p = torch.as_tensor(prob)
    if p.ndim == 3 and p.shape[0] == 1:
        p = p[0]
    if p.ndim != 2:
        raise ValueError(f"expected a (H, W) probability map, got shape {tuple(p.shape)}")
    if p.numel() == 0:
        raise ValueError("the probability map is empty (a side has length 0)")
    p = p.detach()
    if not p.is_floating_point():
        p = p.float()
    if torch.isnan(p).any():
        raise ValueError("the probability map contains NaN; expected probabilities in [0, 1]")
    return p


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown prompt mode '{mode}', expected one of {MODES}")


def top_probability_points(
    prob: torch.Tensor | np.ndarray,
    num_points: int,
    threshold: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor | None:
    """The ``num_points`` highest-probability pixels of a map, as SAM point prompts.

    Points are ordered by decreasing probability. Among pixels of equal probability at the cut
    (the last places), the ones taken are drawn uniformly at random with ``generator``
    (torch's global generator when None), so a seeded generator gives the same points every run.

    Only pixels with ``prob >= threshold`` are candidates. When fewer than ``num_points`` pixels
    pass, the passing pixels are repeated in order (highest first) to fill ``num_points`` rows:
    every point then lies inside the predicted object and the shape stays fixed (a repeated point
    adds no information to SAM, it only keeps batches regular).

    Args:
        prob: ``(H, W)`` foreground probabilities in [0, 1] (tensor or array, any device).
        num_points: number of points, >= 1.
        threshold: pixels below it are never chosen.
        generator: random generator for tie-breaking; its device must be the CPU or ``prob``'s device.

    Returns:
        ``(num_points, 2)`` float32 ``(x, y)`` = ``(column, row)`` on ``prob``'s device, or None when
        no pixel reaches ``threshold``.
    """
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    p = _as_prob_map(prob)
    return _top_points(p, p >= threshold, num_points, generator)


def _top_points(
    p: torch.Tensor, fg: torch.Tensor, num_points: int, generator: torch.Generator | None
) -> torch.Tensor | None:
    """:func:`top_probability_points` on a checked ``(H, W)`` map ``p`` and its ``fg = p >= threshold``."""
    w = p.shape[1]
    flat = p.reshape(-1)
    n_pass = int(fg.sum())
    if n_pass == 0:
        return None
    k = min(num_points, n_pass)
    kth = torch.topk(flat, k).values[-1]  # >= threshold: at least k pixels pass
    above = torch.nonzero(flat > kth).flatten()
    above = above[torch.argsort(flat[above], descending=True, stable=True)]
    tied = torch.nonzero(flat == kth).flatten()
    need = k - above.numel()
    gen_device = generator.device if generator is not None else torch.device("cpu")
    pick = torch.randperm(tied.numel(), generator=generator, device=gen_device)[:need].to(tied.device)
    idx = torch.cat([above, tied[pick]])
    if k < num_points:
        idx = idx[torch.arange(num_points, device=idx.device) % k]
    rows = torch.div(idx, w, rounding_mode="floor")
    cols = idx % w
    return torch.stack([cols, rows], dim=1).to(torch.float32)


def mask_bounding_box(mask: torch.Tensor | np.ndarray) -> torch.Tensor | None:
    """Outer bounding box of a binary mask in SAM's XYXY convention (inclusive pixel indices).

    Args:
        mask: ``(H, W)`` bool (or 0/1) tensor or array.

    Returns:
        ``(4,)`` float32 ``[x0, y0, x1, y1]``: ``x0``/``x1`` the first/last foreground column,
        ``y0``/``y1`` the first/last foreground row; None for an empty mask.
    """
    return _box(_as_prob_map(mask) > 0)


def _box(m: torch.Tensor) -> torch.Tensor | None:
    """:func:`mask_bounding_box` of a checked ``(H, W)`` bool mask."""
    rows = torch.nonzero(m.any(dim=1)).flatten()
    if rows.numel() == 0:
        return None
    cols = torch.nonzero(m.any(dim=0)).flatten()
    return torch.stack([cols[0], rows[0], cols[-1], rows[-1]]).to(torch.float32)


def mask_prompt_from_probability(
    prob: torch.Tensor | np.ndarray, mask_size: int = 256, eps: float = MASK_PROMPT_EPS, frame: str = "sam"
) -> torch.Tensor:
    """SAM's low-resolution mask input from a probability map.

    SAM's mask input lives in the frame of its padded square model input: the image is resized so
    its longest side fills the square (``ResizeLongestSide``) and padded at the bottom/right
    (``Sam.preprocess``), and the mask input covers that square at ``mask_size`` (a quarter of
    SAM's input side: 256 for 1024). The same is done here to the probability map: it is resized
    (bilinear) so its longest side is ``mask_size``, with SAM's rounding of the other side, padded
    with probability 0, clipped to ``[eps, 1 - eps]`` and turned into logits
    ``log(p / (1 - p))``. SAM's mask input is the low-resolution *logits* its own decoder outputs;
    for a sigmoid student this gives back the student's logits, clipped to
    ``+-log((1 - eps) / eps)`` (about +-9.2 for the default eps). Padding gets the lowest logit.

    With ``frame="medsam"`` the model input is the whole image stretched to the square (MedSAM's
    pre-processing, no padding; see :class:`fewlabel.sam.SamTeacher`), and so is the mask input:
    the map is resized (bilinear) to ``mask_size x mask_size``.

    Args:
        prob: ``(H, W)`` foreground probabilities in [0, 1].
        mask_size: side of SAM's mask input (``sam.prompt_encoder.mask_input_size``; 256 for
            the released models).
        eps: clipping of the probabilities, in (0, 0.5).
        frame: ``"sam"`` (longest side resized, padded) or ``"medsam"`` (stretched to the square).

    Returns:
        ``(1, mask_size, mask_size)`` float32 logits on ``prob``'s device.
    """
    if frame not in PREPROCESSING_FRAMES:
        raise ValueError(f"frame must be one of {PREPROCESSING_FRAMES}, got {frame!r}")
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    if mask_size < 1:
        raise ValueError(f"mask_size must be >= 1, got {mask_size}")
    p = _as_prob_map(prob).float()
    h, w = p.shape
    if frame == "medsam":
        new_h = new_w = mask_size
    else:
        scale = mask_size / max(h, w)
        new_h, new_w = min(mask_size, int(h * scale + 0.5)), min(mask_size, int(w * scale + 0.5))
    resized = F.interpolate(p[None, None], (max(1, new_h), max(1, new_w)), mode="bilinear", align_corners=False)
    padded = F.pad(resized, (0, mask_size - resized.shape[-1], 0, mask_size - resized.shape[-2]), value=0.0)
    padded = padded.clamp(eps, 1.0 - eps)
    return torch.log(padded / (1.0 - padded))[0]


def make_prompt(
    prob: torch.Tensor | np.ndarray,
    num_points: int,
    threshold: float = 0.5,
    generator: torch.Generator | None = None,
    mode: str = "points+box",
    mask_size: int = 256,
    frame: str = "sam",
) -> SamPrompt | None:
    """All prompts of one image for a prompt ``mode``, or None when the prediction is empty.

    Args:
        prob: ``(H, W)`` foreground probabilities in [0, 1].
        num_points: points per image (used by modes with points).
        threshold: foreground threshold of the box and of the empty test.
        generator: tie-breaking generator (see :func:`top_probability_points`).
        mode: one of :data:`MODES`.
        mask_size: side of SAM's mask input (modes with a mask).
        frame: the model input's frame of the mask prompt, see :func:`mask_prompt_from_probability`.

    Returns:
        A :class:`SamPrompt` holding only the parts ``mode`` names, or None when no pixel reaches
        ``threshold`` (whatever the mode: an empty prediction gives no prompt).
    """
    _check_mode(mode)
    p = _as_prob_map(prob)
    fg = p >= threshold
    box = _box(fg)
    if box is None:
        return None
    parts = set(mode.split("+"))
    prompt = SamPrompt()
    if "points" in parts:
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        prompt.points = _top_points(p, fg, num_points, generator)
        prompt.point_labels = torch.ones(num_points, dtype=torch.int64, device=p.device)
    if "box" in parts:
        prompt.box = box
    if "mask" in parts:
        prompt.mask = mask_prompt_from_probability(p, mask_size, frame=frame)
    return prompt


def prompts_from_probability(
    prob: torch.Tensor | np.ndarray,
    num_points: int,
    threshold: float = 0.5,
    generator: torch.Generator | None = None,
    mode: str = "points+box",
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Point and box prompts of one probability map (paper, section 2.3).

    Args:
        prob: ``(H, W)`` foreground probabilities in [0, 1] (tensor or array).
        num_points: number of points (see :func:`top_probability_points`).
        threshold: the box is the extent of ``prob >= threshold``; an image with no such pixel
            gets no prompt.
        generator: tie-breaking generator, for reproducible points.
        mode: one of :data:`MODES`; it decides which of the two is returned: ``"points"`` gives
            ``(points, None)``, ``"box"`` ``(None, box)``, ``"points+box"`` and
            ``"points+box+mask"`` both, ``"mask"`` neither (the mask prompt comes from
            :func:`mask_prompt_from_probability`; :func:`make_prompt` returns all parts together).

    Returns:
        ``(points, box)``: ``points`` ``(num_points, 2)`` float32 ``(x, y)`` pixel coordinates
        (x = column, y = row), ``box`` ``(4,)`` float32 ``[x0, y0, x1, y1]`` with inclusive pixel
        indices; ``(None, None)`` when nothing reaches ``threshold``.
    """
    prompt = make_prompt(prob, num_points, threshold, generator, "points+box" if mode == "mask" else mode)
    if prompt is None or mode == "mask":
        return None, None
    return prompt.points, prompt.box


def make_prompts(
    probs: torch.Tensor | np.ndarray,
    num_points: int,
    threshold: float = 0.5,
    generator: torch.Generator | None = None,
    mode: str = "points+box",
    mask_size: int = 256,
    frame: str = "sam",
) -> list[SamPrompt | None]:
    """:func:`make_prompt` for every map of a batch.

    Args:
        probs: ``(B, H, W)`` or ``(B, 1, H, W)`` foreground probabilities in [0, 1].
        other args: see :func:`make_prompt` (one generator serves the whole batch, in order).

    Returns:
        A list of B prompts, None where that image's prediction is empty.
    """
    p = torch.as_tensor(probs)
    if p.ndim == 4 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim != 3:
        raise ValueError(f"expected (B, H, W) or (B, 1, H, W) probabilities, got shape {tuple(p.shape)}")
    return [make_prompt(p[b], num_points, threshold, generator, mode, mask_size, frame) for b in range(p.shape[0])]



class SamPrompter:
    """How a student's probabilities prompt a SAM teacher: the prompt settings and their tie-breaking draws.

    Calling it runs ``teacher.pseudo_label`` (:meth:`fewlabel.sam.SamTeacher.pseudo_label`) with these
    settings and this object's generator, so one seeded stream breaks the ties of the point prompts across
    a whole run, and :meth:`state_dict` lets an interrupted run continue it.

    Args:
        num_points: point prompts per image, >= 1 (SAM mining: "x" points of highest probability; not given).
        threshold: probability threshold of the box prompt and of the empty-prediction test, in (0, 1).
        mode: prompt combination, one of :data:`MODES` (the method: ``"points+box"``).
        seed: seed of the tie-breaking generator.

    Raises:
        ValueError: ``num_points < 1``, a threshold outside (0, 1) or an unknown ``mode``.
    """

    def __init__(self, num_points: int = 3, threshold: float = 0.5, mode: str = "points+box", seed: int = 1) -> None:
        if int(num_points) < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        _check_mode(mode)
        self.num_points, self.threshold, self.mode = int(num_points), float(threshold), mode
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(
        self, teacher: Any, images: torch.Tensor, probs: torch.Tensor, cache_keys: Sequence[Any] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's pseudo-labels of ``(N, C, H, W)`` images prompted by ``(N, 1, H, W)`` probabilities.

        Returns:
            ``(masks (N, 1, H, W) float in {0, 1}, valid (N,) bool)`` on the images' device; ``valid`` is
            False where the prediction was empty (no prompt).
        """
        kwargs: dict[str, Any] = {}
        if getattr(teacher, "cache", None) is not None:
            kwargs["cache_keys"] = list(cache_keys) if cache_keys is not None else [None] * images.shape[0]
        masks, valid = teacher.pseudo_label(
            images, probs, self.num_points, threshold=self.threshold, mode=self.mode,
            generator=self.generator, **kwargs,
        )
        return masks.to(images.device, torch.float32), valid.to(images.device).bool()

    def state_dict(self) -> dict[str, Any]:
        """The generator's state."""
        return {"generator": generator_state(self.generator)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        set_generator_state(self.generator, state["generator"], "SamPrompter.generator")
