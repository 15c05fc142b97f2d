"""Dice and Hausdorff distance of binary CT masks (PolyCL's evaluation), per volume in 3D or per slice in 2D;
the report handler is :class:`fewlabel.handlers.VolumeReport`.

PolyCL (Ward et al., MELBA 2025, section 4.2) reports the Dice coefficient and the Hausdorff
distance of each model's liver masks. Two protocols (``protocol`` of :class:`VolumeScores`):

- ``"slice_2d"``: the paper's released evaluation code (``TrainingEval.evaluate`` with
  ``dice_score`` and ``hausdorff`` of its ``LossFunctions.py``): every axial slice (the last axis)
  is scored in 2D and the figures are averaged over the slices of all test volumes. Dice is
  ``(2 |P ∩ T| + 1) / (|P| + |T| + 1)`` (its smoothing of 1: a slice empty in both scores 1);
  the Hausdorff distance is the *directed* one, from the predicted boundary to the ground-truth
  boundary (the code takes, for each predicted contour point, the nearest ground-truth contour
  point, and the maximum), on the slices where both the ground truth and the prediction have the
  organ (others are left out of the mean). Differences from that code: boundaries are MONAI's
  boundary pixels instead of scikit-image contours at level 0.9, the mean is over slices instead
  of over batches of slices, and distances are not truncated to integers.
- ``"volume_3d"``: each volume scored in 3D with MONAI's ``compute_dice`` and
  ``compute_hausdorff_distance`` (symmetric), averaged over volumes. Cases MONAI leaves
  undefined: prediction and ground truth both empty: Dice 1, Hausdorff 0 (nothing to find,
  nothing found); exactly one of them empty: Dice 0, Hausdorff undefined (no surface to measure
  to), left out of the Hausdorff mean.

Either way, Hausdorff figures left out are counted in ``hausdorff_undefined``. Distances are in
millimetres when the spacing is known (``spacing``, or per volume in :meth:`VolumeScores.update`;
:class:`fewlabel.handlers.VolumeReport` reads it from the label's header), else in pixels
(``"slice_2d"``) or voxels (``"volume_3d"``) of the grid the masks are on; ``percentile``
(e.g. 95) gives the robust HD95 instead of the maximum. Every result states its ``protocol``,
``distance_unit`` and ``hausdorff_directed``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from fewlabel.arguments import as_optional
from fewlabel.moved import lazy_reexports

__all__ = ["volume_scores", "slice_scores", "VolumeScores", "format_volume_table", "volume_name", "PROTOCOLS"]

#: The evaluation protocols of :class:`VolumeScores`.
PROTOCOLS = ("slice_2d", "volume_3d")

logger = logging.getLogger("fewlabel.metrics")


def volume_scores(pred: torch.Tensor, label: torch.Tensor, percentile: float | None = None,
                  spacing: Sequence[float] | None = None, directed: bool = False) -> tuple[float, float | None]:
    """Dice and Hausdorff distance of one binary volume pair.

    Args:
        pred, label: ``(1, X, Y, Z)`` or ``(X, Y, Z)`` masks (non-zero = foreground), same shape.
        percentile: Hausdorff percentile in [0, 100] (None: the maximum).
        spacing: voxel size per axis (distances in its unit); None: voxels.
        directed: only the distance from the prediction to the ground truth (default: both ways).

    Returns:
        ``(dice, hausdorff)``; ``hausdorff`` is None when exactly one mask is empty.
    """
    p = torch.as_tensor(pred).detach().cpu() != 0
    t = torch.as_tensor(label).detach().cpu() != 0
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from label shape {tuple(t.shape)}")
    if p.ndim == 3:
        p, t = p[None], t[None]
    p_any, t_any = bool(p.any()), bool(t.any())
    if not p_any and not t_any:
        return 1.0, 0.0
    pf, tf = p[None].float(), t[None].float()  # (1, 1, X, Y, Z)
    dice = float(compute_dice(pf, tf, include_background=True, ignore_empty=False)[0, 0])
    if not (p_any and t_any):
        return dice, None
    hd = compute_hausdorff_distance(pf, tf, include_background=True, percentile=percentile, directed=directed,
                                    spacing=None if spacing is None else list(spacing))
    value = float(hd[0, 0])
    return dice, (value if math.isfinite(value) else None)


def slice_scores(pred: torch.Tensor, label: torch.Tensor, percentile: float | None = None,
                 spacing: Sequence[float] | None = None, directed: bool = True) -> list[tuple[float, float | None]]:
    """2D Dice and Hausdorff distance of every axial slice (last axis) of one binary volume pair.

    The released PolyCL evaluation (see the module docstring): Dice ``(2 |P ∩ T| + 1) / (|P| + |T| + 1)``;
    Hausdorff from the predicted boundary to the ground truth's (``directed``; both ways with
    ``directed=False``), ``None`` unless both slices have the organ.

    Args:
        pred, label: ``(1, H, W, D)`` or ``(H, W, D)`` masks (non-zero = foreground), same shape.
        percentile: Hausdorff percentile in [0, 100] (None: the maximum).
        spacing: pixel size of the two in-plane axes (a third value, the slice spacing, is ignored);
            None: pixels.
        directed: the released code's one-way distance (default) or the symmetric one.

    Returns:
        ``[(dice, hausdorff), ...]``, one per slice.
    """
    p = torch.as_tensor(pred).detach().cpu() != 0
    t = torch.as_tensor(label).detach().cpu() != 0
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from label shape {tuple(t.shape)}")
    if p.ndim == 4:
        if p.shape[0] != 1:
            raise ValueError(f"expected one channel, got shape {tuple(p.shape)}")
        p, t = p[0], t[0]
    if p.ndim != 3:
        raise ValueError(f"expected (H, W, D) or (1, H, W, D) masks, got shape {tuple(p.shape)}")
    plane = None if spacing is None else [float(v) for v in list(spacing)[:2]]
    out: list[tuple[float, float | None]] = []
    for z in range(p.shape[-1]):
        ps, ts = p[..., z], t[..., z]
        inter, total = int((ps & ts).sum()), int(ps.sum()) + int(ts.sum())
        dice = (2.0 * inter + 1.0) / (total + 1.0)
        hd = None
        if ps.any() and ts.any():
            value = float(compute_hausdorff_distance(ps[None, None].float(), ts[None, None].float(),
                                                     include_background=True, percentile=percentile,
                                                     directed=directed, spacing=plane)[0, 0])
            hd = value if math.isfinite(value) else None
        out.append((dice, hd))
    return out


class VolumeScores:
    """Collect Dice / Hausdorff per volume (``"volume_3d"``) or per slice (``"slice_2d"``); :meth:`compute` gives
    means, standard deviations and a row per volume.

    Args:
        percentile: Hausdorff percentile in [0, 100] (None: the maximum).
        spacing: voxel size per axis for every volume (distances in millimetres); None: pixels / voxels
            unless :meth:`update` is given a volume's own spacing.
        protocol: ``"volume_3d"`` (default here; per-volume 3D scores averaged over volumes) or
            ``"slice_2d"`` (the paper's released evaluation: 2D scores averaged over all slices); see
            the module docstring.
        directed: Hausdorff from the prediction to the ground truth only; None: the protocol's
            (``slice_2d``: True as the released code, ``volume_3d``: False).

    Raises:
        ValueError: an unknown ``protocol``.
    """

    def __init__(self, percentile: float | None = None, spacing: Sequence[float] | None = None,
                 protocol: str = "volume_3d", directed: bool | None = None) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r} "
                             "(eval_protocol in the bundle's evaluate.json)")
        self.percentile = as_optional(percentile, "hausdorff_percentile", lambda v, k: float(v))
        self.spacing = spacing
        self.protocol = protocol
        self.directed = (protocol == "slice_2d") if directed is None else bool(directed)
        self.rows: list[dict[str, Any]] = []
        self._slices: list[tuple[float, float | None]] = []
        self._units: list[str] = []

    def reset(self) -> None:
        self.rows = []
        self._slices = []
        self._units = []

    def update(self, pred: torch.Tensor, label: torch.Tensor, name: str | None = None,
               spacing: Sequence[float] | None = None) -> None:
        """Score one volume; ``spacing`` (its voxel size, e.g. from its header) overrides the constructor's."""
        spacing = self.spacing if spacing is None else [float(v) for v in spacing]
        row: dict[str, Any] = {"volume": name or f"volume_{len(self.rows)}"}
        if self.protocol == "volume_3d":
            dice, hd = volume_scores(pred, label, self.percentile, spacing, directed=self.directed)
            row.update({"dice": dice, "hausdorff": hd})
        else:
            per_slice = slice_scores(pred, label, self.percentile, spacing, self.directed)
            self._slices += per_slice
            hds = [h for _, h in per_slice if h is not None]
            row.update({"dice": float(np.mean([d for d, _ in per_slice])) if per_slice else None,
                        "hausdorff": float(np.mean(hds)) if hds else None,
                        "num_slices": len(per_slice), "hausdorff_slices": len(hds)})
        self._units.append(self._unit(spacing))
        self.rows.append(row)

    def _unit(self, spacing: Sequence[float] | None) -> str:
        if spacing is not None:
            return "mm"
        return "pixel" if self.protocol == "slice_2d" else "voxel"

    def compute(self) -> dict[str, Any]:
        """``{"protocol", "distance_unit", "hausdorff_directed", "num_images", "num_volumes", "num_slices",
        "mean_dice", "std_dice", "mean_hausdorff", "std_hausdorff", "hausdorff_undefined",
        "hausdorff_percentile", "per_volume": [...]}``. With ``"slice_2d"`` the means and standard
        deviations are over slices (``num_slices``; ``hausdorff_undefined`` counts slices), with
        ``"volume_3d"`` over volumes.

        Raises:
            ValueError: nothing scored; volumes in different distance units (some with a known
                spacing, some without), which cannot be averaged.
        """
        if not self.rows:
            raise ValueError("no volumes were scored")
        units = set(self._units)
        if len(units) > 1:
            unknown = [r["volume"] for r, u in zip(self.rows, self._units) if u != "mm"]
            raise ValueError(f"volumes {unknown} have no voxel spacing while others do: their Hausdorff distances "
                             "cannot be averaged; give the spacing (hausdorff_spacing in evaluate.json) or null "
                             "to measure all in voxels")
        if self.protocol == "slice_2d":
            dice = np.array([d for d, _ in self._slices], dtype=float)
            hd = np.array([h for _, h in self._slices if h is not None], dtype=float)
            count = len(self._slices)
        else:
            dice = np.array([r["dice"] for r in self.rows], dtype=float)
            hd = np.array([r["hausdorff"] for r in self.rows if r["hausdorff"] is not None], dtype=float)
            count = len(self.rows)
        return {
            "protocol": self.protocol, "distance_unit": units.pop(), "hausdorff_directed": self.directed,
            "num_images": len(self.rows), "num_volumes": len(self.rows),
            "num_slices": len(self._slices) if self.protocol == "slice_2d" else None,
            "mean_dice": float(dice.mean()) if len(dice) else None,
            "std_dice": float(dice.std()) if len(dice) else None,
            "mean_hausdorff": float(hd.mean()) if len(hd) else None,
            "std_hausdorff": float(hd.std()) if len(hd) else None,
            "hausdorff_undefined": int(count - len(hd)),
            "hausdorff_percentile": self.percentile,
            "per_volume": list(self.rows),
        }


def format_volume_table(result: dict[str, Any], title: str = "") -> str:
    """Markdown: one row per volume, then mean +- std (the paper's layout)."""
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    hd_name = "Hausdorff" if result.get("hausdorff_percentile") is None else f"HD{result['hausdorff_percentile']:g}"
    protocol = result.get("protocol", "volume_3d")
    lines = [f"### {title}", ""] if title else []
    if protocol == "slice_2d":
        lines += [f"2D per slice (the paper's released evaluation), averaged over {result['num_slices']} slices; "
                  f"{'directed ' if result.get('hausdorff_directed') else ''}Hausdorff in "
                  f"{result.get('distance_unit', 'pixel')}.", ""]
    else:
        lines += [f"3D per volume, averaged over volumes; {'directed ' if result.get('hausdorff_directed') else ''}"
                  f"Hausdorff in {result.get('distance_unit', 'voxel')}.", ""]
    lines += [f"| volume | Dice | {hd_name} ({result.get('distance_unit', 'voxel')}) |", "|---|---|---|"]
    for r in result["per_volume"]:
        lines.append(f"| {r['volume']} | {f(r['dice'])} | {f(r['hausdorff'])} |")
    lines.append(f"| **mean +- std** | {f(result['mean_dice'])} +- {f(result['std_dice'])} | "
                 f"{f(result['mean_hausdorff'])} +- {f(result['std_hausdorff'])} |")
    if result["hausdorff_undefined"]:
        what = "slice(s)" if protocol == "slice_2d" else "volume(s)"
        lines.append(f"\n{result['hausdorff_undefined']} {what} with an empty prediction or ground truth have no "
                     "Hausdorff distance (left out of its mean).")
    lines.append(f"\n{result['num_volumes']} volumes (the mean +- std is over "
                 f"{'slices' if protocol == 'slice_2d' else 'volumes'}).")
    return "\n".join(lines) + "\n"


def volume_name(item: Any) -> str | None:
    """A volume's name: the file name (without ``.nii`` / ``.nii.gz``) of its ``filename_or_obj`` meta, if any."""
    meta = getattr(item, "meta", None)
    if not isinstance(meta, dict):
        return None
    src = meta.get("filename_or_obj")
    if isinstance(src, (list, tuple)):
        src = src[0] if src else None
    if not src:
        return None
    name = Path(str(src).rstrip("/")).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


# an ignite handler: moved to fewlabel.handlers, still importable from here
__getattr__ = lazy_reexports(__name__, {"VolumeReport": "fewlabel.handlers.volume_report"})
