"""Per-volume Dice and Hausdorff distance of binary 3D masks (PolyCL's evaluation); the report handler is
:class:`fewlabel.handlers.VolumeReport`.

PolyCL (Ward et al., MELBA 2025, section 4.2) reports the Dice coefficient and the Hausdorff
distance of each model's liver masks, averaged over test volumes. Here each volume is scored
with MONAI's ``compute_dice`` and ``compute_hausdorff_distance`` on the foreground channel;
cases MONAI leaves undefined are defined as follows (and counted in the report):

- prediction and ground truth both empty: Dice 1, Hausdorff 0 (nothing to find, nothing found);
- exactly one of them empty: Dice 0, Hausdorff undefined (no surface to measure to): left out of
  the Hausdorff mean and counted in ``hausdorff_undefined``.

Distances are in voxels of the grid the masks are on, or in millimetres when ``spacing`` is
given; ``percentile`` (e.g. 95) gives the robust HD95 instead of the maximum.
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

__all__ = ["volume_scores", "VolumeScores", "format_volume_table", "volume_name"]

logger = logging.getLogger("fewlabel.metrics")


def volume_scores(pred: torch.Tensor, label: torch.Tensor, percentile: float | None = None,
                  spacing: Sequence[float] | None = None) -> tuple[float, float | None]:
    """Dice and Hausdorff distance of one binary volume pair.

    Args:
        pred, label: ``(1, X, Y, Z)`` or ``(X, Y, Z)`` masks (non-zero = foreground), same shape.
        percentile: Hausdorff percentile in [0, 100] (None: the maximum).
        spacing: voxel size per axis (distances in its unit); None: voxels.

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
    hd = compute_hausdorff_distance(pf, tf, include_background=True, percentile=percentile,
                                    spacing=None if spacing is None else list(spacing))
    value = float(hd[0, 0])
    return dice, (value if math.isfinite(value) else None)


class VolumeScores:
    """Collect per-volume Dice / Hausdorff; :meth:`compute` gives means, standard deviations and the rows."""

    def __init__(self, percentile: float | None = None, spacing: Sequence[float] | None = None) -> None:
        self.percentile = as_optional(percentile, "hausdorff_percentile", lambda v, k: float(v))
        self.spacing = spacing
        self.rows: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.rows = []

    def update(self, pred: torch.Tensor, label: torch.Tensor, name: str | None = None) -> None:
        dice, hd = volume_scores(pred, label, self.percentile, self.spacing)
        self.rows.append({"volume": name or f"volume_{len(self.rows)}", "dice": dice, "hausdorff": hd})

    def compute(self) -> dict[str, Any]:
        """``{"num_images", "num_volumes", "mean_dice", "std_dice", "mean_hausdorff", "std_hausdorff",
        "hausdorff_undefined", "hausdorff_percentile", "per_volume": [...]}``."""
        if not self.rows:
            raise ValueError("no volumes were scored")
        dice = np.array([r["dice"] for r in self.rows], dtype=float)
        hd = np.array([r["hausdorff"] for r in self.rows if r["hausdorff"] is not None], dtype=float)
        return {
            "num_images": len(self.rows), "num_volumes": len(self.rows),
            "mean_dice": float(dice.mean()), "std_dice": float(dice.std()),
            "mean_hausdorff": float(hd.mean()) if len(hd) else None,
            "std_hausdorff": float(hd.std()) if len(hd) else None,
            "hausdorff_undefined": int(len(self.rows) - len(hd)),
            "hausdorff_percentile": self.percentile,
            "distance_unit": "mm" if self.spacing is not None else "voxel",
            "per_volume": list(self.rows),
        }


def format_volume_table(result: dict[str, Any], title: str = "") -> str:
    """Markdown: one row per volume, then mean +- std (the paper's layout)."""
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    hd_name = "Hausdorff" if result.get("hausdorff_percentile") is None else f"HD{result['hausdorff_percentile']:g}"
    lines = [f"### {title}", ""] if title else []
    lines += [f"| volume | Dice | {hd_name} ({result.get('distance_unit', 'voxel')}) |", "|---|---|---|"]
    for r in result["per_volume"]:
        lines.append(f"| {r['volume']} | {f(r['dice'])} | {f(r['hausdorff'])} |")
    lines.append(f"| **mean +- std** | {f(result['mean_dice'])} +- {f(result['std_dice'])} | "
                 f"{f(result['mean_hausdorff'])} +- {f(result['std_hausdorff'])} |")
    if result["hausdorff_undefined"]:
        lines.append(f"\n{result['hausdorff_undefined']} volume(s) with an empty prediction or ground truth have no "
                     "Hausdorff distance (left out of its mean).")
    lines.append(f"\n{result['num_volumes']} volumes.")
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
