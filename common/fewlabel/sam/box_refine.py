"""SAM box refinement of a coarse segmentation (PolyCL, section 3.3.1 "Mask Refinement").

After limited-label fine-tuning, the segmentation network's coarse prediction is revised by a
frozen SAM: every connected component ("segmented area") of the coarse mask of a CT slice gives a
bounding box ``(x_min, y_min, x_max, y_max)`` (paper, eq. 6-7), each box prompts SAM on that
slice, and the refined masks of all components are merged back into one mask per slice.

- :func:`component_boxes`: one box per connected component of a 2-D binary mask
  (:func:`scipy.ndimage.label`), optionally padded and with tiny components dropped.
- :func:`refine_with_sam`: a batch of slices and their coarse masks -> refined ``(B, 1, H, W)`` masks.
- :class:`SamBoxRefineInferer`: a MONAI :class:`~monai.inferers.Inferer` running the network,
  thresholding its output and refining it with SAM.

Conventions are those of :mod:`fewlabel.sam.prompts`: a box is ``(x0, y0, x1, y1)`` with
**inclusive** pixel indices (x = column, y = row) in the frame of the original slice, and
:class:`fewlabel.sam.SamTeacher` maps it to SAM's input frame. A slice whose coarse mask is empty
(or has only components smaller than ``min_pixels``) gets no prompt and stays empty.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from monai.inferers import Inferer
from scipy import ndimage

from fewlabel.sam.prompts import SamPrompt
from fewlabel.sam.teacher import NO_PROMPT_LOGIT, SamTeacher

__all__ = ["MERGE_MODES", "REFINED_LOGIT", "component_boxes", "refine_with_sam", "SamBoxRefineInferer"]

#: How the SAM masks of the components of one slice are merged (see :func:`refine_with_sam`).
MERGE_MODES: tuple[str, ...] = ("union", "union_in_box")

#: Magnitude of the logits :class:`SamBoxRefineInferer` writes: ``+REFINED_LOGIT`` on the refined
#: foreground, ``-REFINED_LOGIT`` (= :data:`fewlabel.sam.NO_PROMPT_LOGIT`) elsewhere. Sigmoid gives
#: exactly 1 / about 0 in float32, so a sigmoid + 0.5 threshold gives back the refined mask.
REFINED_LOGIT = -NO_PROMPT_LOGIT

Box = tuple[int, int, int, int]


def _binary_mask(mask: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    """A bool or 0/1 tensor/array -> a bool numpy array (no shape check); clear errors otherwise."""
    if isinstance(mask, torch.Tensor):
        arr = mask.detach().cpu().numpy()
    else:
        arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.number)):
        raise ValueError(f"{what} must be bool or 0/1 numbers, got dtype {arr.dtype}")
    bad = ~((arr == 0) | (arr == 1))
    if bad.any():
        odd = np.unique(arr[bad])[:5].tolist()
        raise ValueError(
            f"{what} must be binary (bool or values 0/1), found other values such as {odd}; "
            "threshold probabilities first (e.g. prob > 0.5)"
        )
    return arr == 1


def component_boxes(
    mask: torch.Tensor | np.ndarray,
    min_pixels: int = 1,
    connectivity: int = 2,
    pad: int = 0,
) -> list[Box]:
    """One bounding box per connected component of a 2-D binary mask (PolyCL eq. 6-7).

    Components are found with :func:`scipy.ndimage.label` using the structuring element
    ``ndimage.generate_binary_structure(2, connectivity)``: ``connectivity=1`` joins pixels sharing
    an edge (4-neighbourhood), ``connectivity=2`` (the default, as ``skimage.measure.label``'s
    default for 2-D) also joins diagonal neighbours (8-neighbourhood). Boxes are listed in
    ``scipy``'s label order (raster order of each component's first pixel: top to bottom, then
    left to right).

    Args:
        mask: ``(H, W)`` bool or 0/1 tensor / array (any device).
        min_pixels: components with fewer pixels are dropped. The default 1 keeps every component,
            as the paper does ("for each segmented area"); raise it to ignore specks.
        connectivity: 1 (4-neighbourhood) or 2 (8-neighbourhood).
        pad: pixels added on every side of each box, clipped to the image (``0 <= x < W``,
            ``0 <= y < H``).

    Returns:
        A list of ``(x0, y0, x1, y1)`` int tuples, inclusive pixel indices (x = column, y = row),
        the convention of :func:`fewlabel.sam.mask_bounding_box`; empty for an empty mask.

    Raises:
        ValueError: the mask is not 2-D, is empty, or is not binary; bad ``min_pixels``,
            ``connectivity`` or ``pad``.
    """
    m = _binary_mask(mask, "the mask")
    if m.ndim != 2:
        raise ValueError(
            f"expected a 2-D (H, W) mask, got shape {tuple(m.shape)}; 3-D volumes are refined slice by slice"
        )
    if m.size == 0:
        raise ValueError("the mask is empty (a side has length 0)")
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 (4-neighbourhood) or 2 (8-neighbourhood), got {connectivity}")
    if int(min_pixels) < 1:
        raise ValueError(f"min_pixels must be >= 1, got {min_pixels}")
    if int(pad) < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    pad = int(pad)
    h, w = m.shape
    labels, n = ndimage.label(m, structure=ndimage.generate_binary_structure(2, connectivity))
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    boxes: list[Box] = []
    for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or sizes[lab] < min_pixels:
            continue
        rows, cols = sl
        y0, y1 = rows.start, rows.stop - 1
        x0, x1 = cols.start, cols.stop - 1
        boxes.append((max(0, x0 - pad), max(0, y0 - pad), min(w - 1, x1 + pad), min(h - 1, y1 + pad)))
    return boxes


def _check_batch(images: torch.Tensor, coarse_masks: torch.Tensor | np.ndarray) -> np.ndarray:
    """Shape checks of :func:`refine_with_sam`; the coarse masks as a ``(B, H, W)`` bool array."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(
            f"expected (B, C, H, W) image slices, got {shape}; 3-D volumes are refined slice by slice"
        )
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 (gray CT) or 3 (RGB) channels, got shape {tuple(images.shape)}")
    m = _binary_mask(coarse_masks, "coarse masks")
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != 3:
        raise ValueError(
            f"coarse masks must be (B, 1, H, W) or (B, H, W) slices, got shape {tuple(np.shape(coarse_masks))}"
        )
    if m.shape[0] != images.shape[0] or tuple(m.shape[-2:]) != tuple(images.shape[-2:]):
        raise ValueError(
            f"coarse masks {tuple(np.shape(coarse_masks))} do not match the images {tuple(images.shape)}: "
            "same batch size and (H, W) needed"
        )
    return m


def refine_with_sam(
    teacher: SamTeacher,
    images: torch.Tensor,
    coarse_masks: torch.Tensor | np.ndarray,
    pad: int = 0,
    min_pixels: int = 1,
    connectivity: int = 2,
    merge: Literal["union", "union_in_box"] = "union",
    multimask_output: bool | None = None,
    return_boxes: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[list[Box]]]:
    """Refine coarse masks of a batch of slices with a frozen SAM, one box prompt per component.

    For each slice: :func:`component_boxes` of its coarse mask gives the boxes; the slice is
    embedded **once** (all slices with at least one box go through a single
    :meth:`SamTeacher.embed` call; slices without a box are not embedded at all), and its embedding
    is repeated once per box so that one :meth:`SamTeacher.predict` call prompts SAM with every box
    of the batch (box only, no points, SAM's single-mask output unless ``multimask_output``). Each
    SAM mask is ``logits > 0`` (SAM's ``mask_threshold``). The masks of a slice are merged:

    - ``"union"`` (default, the paper): the union of the SAM masks of all its components; the
      coarse mask itself is discarded (SAM may grow or shrink each area).
    - ``"union_in_box"``: each SAM mask is first cut to its own (padded) box, so a mask that leaks
      far outside its prompt cannot add foreground elsewhere; then the union.

    A slice whose coarse mask is empty (or has only components below ``min_pixels``) gets no
    prompt and an all-zero mask.

    Images go to :meth:`SamTeacher.preprocess` as they are: ``(B, 1, H, W)`` CT slices in [0, 1]
    are accepted (the teacher repeats the channel to SAM's three), as are ``(B, 3, H, W)`` RGB
    float in [0, 1] or uint8. Window / scale CT intensities to [0, 1] before.

    Args:
        teacher: the frozen :class:`fewlabel.sam.SamTeacher` (left unchanged: it runs in inference mode).
        images: ``(B, C, H, W)`` slices, C = 1 or 3.
        coarse_masks: ``(B, 1, H, W)`` or ``(B, H, W)`` bool or 0/1 masks at the images' size.
        pad: pixels added on every side of each box (clipped to the slice).
        min_pixels: smaller components are ignored (default 1: every component gets a box).
        connectivity: 1 (4-neighbourhood) or 2 (8-neighbourhood, default) components.
        merge: one of :data:`MERGE_MODES`.
        multimask_output: see :meth:`SamTeacher.predict` (None: the teacher's default).
        return_boxes: also return the box prompts of every slice.

    Returns:
        ``(B, 1, H, W)`` float32 masks in {0, 1} on the device of ``coarse_masks`` (the images'
        device when the masks are a numpy array); with ``return_boxes`` the pair
        ``(masks, boxes)``, ``boxes[i]`` the list of ``(x0, y0, x1, y1)`` prompts of slice ``i``
        (empty: no prompt).

    Raises:
        ValueError: images not ``(B, 1|3, H, W)``, masks not ``(B, [1,] H, W)`` with the images'
            batch and size, non-binary masks, unknown ``merge``; bad box options (see
            :func:`component_boxes`).
    """
    if merge not in MERGE_MODES:
        raise ValueError(f"unknown merge '{merge}', expected one of {MERGE_MODES}")
    m = _check_batch(images, coarse_masks)
    b, h, w = m.shape
    device = coarse_masks.device if isinstance(coarse_masks, torch.Tensor) else images.device
    out = torch.zeros((b, 1, h, w), dtype=torch.float32, device=device)

    per_slice = [component_boxes(m[i], min_pixels=min_pixels, connectivity=connectivity, pad=pad) for i in range(b)]
    owners = [i for i in range(b) if per_slice[i]]
    if not owners:
        return (out, per_slice) if return_boxes else out
    emb = teacher.embed(images[owners])  # one embedding per slice with a box
    rows = [k for k, i in enumerate(owners) for _ in per_slice[i]]  # embedding row of every box
    boxes = [box for i in owners for box in per_slice[i]]
    prompts = [SamPrompt(box=torch.tensor(box, dtype=torch.float32)) for box in boxes]
    reps = emb[torch.tensor(rows, device=emb.device)]
    logits = teacher.predict(reps, prompts, (h, w), multimask_output=multimask_output)
    fg = (logits[:, 0] > teacher.sam.mask_threshold).to(device)  # (N_boxes, H, W)
    if merge == "union_in_box":
        inside = torch.zeros_like(fg)
        for n, (x0, y0, x1, y1) in enumerate(boxes):
            inside[n, y0 : y1 + 1, x0 : x1 + 1] = True
        fg = fg & inside
    slice_of_box = torch.tensor([owners[k] for k in rows], device=device)
    hits = torch.zeros((b, h, w), dtype=torch.float32, device=device)
    hits.index_add_(0, slice_of_box, fg.float())  # number of component masks covering each pixel
    out[:, 0] = (hits > 0).float()
    return (out, per_slice) if return_boxes else out


class SamBoxRefineInferer(Inferer):
    """Network prediction refined by SAM box prompts: ``(B, C, H, W)`` slices -> ``(B, 1, H, W)`` logits.

    ``__call__(inputs, network)`` runs the segmentation network on the slices, turns its output
    into a coarse binary mask, refines it with :func:`refine_with_sam` and returns logits-like
    values: ``+REFINED_LOGIT`` (100) on the refined foreground, ``-REFINED_LOGIT`` elsewhere, so
    the post-processing of a binary network (sigmoid, threshold 0.5) gives back the refined mask.
    The output always has one channel (the refined foreground class), whatever the network's.

    Coarse mask from the network's output (a tensor, or the first element of a list / tuple):

    - 1 channel: ``sigmoid(logits) > threshold`` (0.5 by default);
    - K > 1 channels: ``argmax over channels == foreground`` (class index, default 1).

    ``inputs`` are what the network sees and what SAM embeds, so they must suit
    :meth:`SamTeacher.preprocess` (1 or 3 channels, float in [0, 1] or uint8).

    Args:
        teacher: the frozen :class:`fewlabel.sam.SamTeacher`.
        foreground: foreground class index for multi-channel outputs.
        threshold: probability threshold for single-channel outputs.
        pad, min_pixels, connectivity, merge, multimask_output: see :func:`refine_with_sam`.

    Attributes:
        no_prompt: number of slices seen whose coarse mask gave no box (empty, or only components
            below ``min_pixels``); their output is all ``-REFINED_LOGIT``.
    """

    def __init__(
        self,
        teacher: SamTeacher,
        foreground: int = 1,
        threshold: float = 0.5,
        pad: int = 0,
        min_pixels: int = 1,
        connectivity: int = 2,
        merge: Literal["union", "union_in_box"] = "union",
        multimask_output: bool | None = None,
    ) -> None:
        super().__init__()
        if merge not in MERGE_MODES:
            raise ValueError(f"unknown merge '{merge}', expected one of {MERGE_MODES}")
        if int(foreground) < 0:
            raise ValueError(f"foreground must be a class index >= 0, got {foreground}")
        self.teacher = teacher
        self.foreground, self.threshold = int(foreground), float(threshold)
        self.pad, self.min_pixels, self.connectivity = int(pad), int(min_pixels), int(connectivity)
        self.merge, self.multimask_output = merge, multimask_output
        self.no_prompt = 0

    def coarse_mask(self, output: torch.Tensor) -> torch.Tensor:
        """The network's ``(B, K, H, W)`` output -> ``(B, 1, H, W)`` bool coarse mask (see the class)."""
        if output.ndim != 4:
            raise ValueError(
                f"expected a (B, K, H, W) network output for 2-D slices, got {tuple(output.shape)}; "
                "refine 3-D volumes slice by slice"
            )
        out = output.detach().float()
        if out.shape[1] == 1:
            return torch.sigmoid(out) > self.threshold
        if self.foreground >= out.shape[1]:
            raise ValueError(f"foreground class {self.foreground} is not among the {out.shape[1]} output channels")
        return out.argmax(dim=1, keepdim=True) == self.foreground

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        output = network(inputs, *args, **kwargs)
        if isinstance(output, (list, tuple)):
            output = output[0]
        coarse = self.coarse_mask(output)
        if coarse.shape[0] != inputs.shape[0] or tuple(coarse.shape[-2:]) != tuple(inputs.shape[-2:]):
            raise ValueError(
                f"the network output {tuple(output.shape)} does not match the inputs {tuple(inputs.shape)}: "
                "same batch size and (H, W) needed"
            )
        refined, boxes = refine_with_sam(
            self.teacher, inputs, coarse, pad=self.pad, min_pixels=self.min_pixels,
            connectivity=self.connectivity, merge=self.merge, multimask_output=self.multimask_output,
            return_boxes=True,
        )
        self.no_prompt += sum(1 for slice_boxes in boxes if not slice_boxes)
        return (refined * 2.0 - 1.0) * REFINED_LOGIT
