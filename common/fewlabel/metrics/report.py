"""IoU and Dice per class and their means, from MONAI's metrics, written as JSON and a table.

Two figures are reported for each class:

- ``iou`` / ``dice``: the mean over images of the per-image score (MONAI's ``compute_iou`` /
  ``compute_dice``; an image where the class is absent from both prediction and ground truth is
  left out of that class's mean);
- ``iou_aggregate``: one IoU from the true/false positive counts summed over all images.

``mean_iou`` / ``mean_dice`` average the classes, with and without background.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_dice, compute_iou
from monai.networks import one_hot
from fewlabel.moved import lazy_reexports

__all__ = ["SegmentationScores", "format_table"]

# names that moved to fewlabel.handlers (ignite handlers) stay importable from here
__getattr__ = lazy_reexports(__name__, {
    "ReportHandler": "fewlabel.handlers.report",
    "example_arrays": "fewlabel.handlers.report",
    "save_examples": "fewlabel.handlers.report",
    "SegmentationReport": "fewlabel.handlers.segmentation_report",
})

logger = logging.getLogger("fewlabel.metrics")


class SegmentationScores:
    """Accumulate per-image, per-class IoU / Dice over batches of class-index maps.

    Args:
        class_names: names of the classes, index 0 first (background); their count is the number
            of classes.
        class_shares: optional ``{name: share of training pixels}``; classes below
            ``underrepresented_below`` are reported together as the under-represented classes.
        underrepresented_below: the share threshold (SurgicalSemiSeg: 1 %).
    """

    def __init__(self, class_names: Sequence[str], class_shares: dict[str, float] | None = None,
                 underrepresented_below: float = 0.01) -> None:
        self.class_names = list(class_names)
        self.class_shares = class_shares
        self.underrepresented_below = underrepresented_below
        self.reset()

    def reset(self) -> None:
        self._iou: list[torch.Tensor] = []
        self._dice: list[torch.Tensor] = []
        self._counts = torch.zeros(len(self.class_names), 3, dtype=torch.float64)  # tp, fp, fn

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Add a batch: ``pred`` and ``label`` ``(B, 1, H, W)`` (or lists of ``(1, H, W)``) class indices."""
        if isinstance(pred, (list, tuple)):
            pred, label = (
                torch.stack([torch.as_tensor(p) for p in pred]),
                torch.stack([torch.as_tensor(t) for t in label]),
            )
        pred, label = torch.as_tensor(pred).detach().cpu(), torch.as_tensor(label).detach().cpu()
        if pred.shape != label.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from label shape {tuple(label.shape)}")
        n = len(self.class_names)
        p = one_hot(pred.long().clamp(0, n - 1), n, dim=1)
        t = one_hot(label.long().clamp(0, n - 1), n, dim=1)
        self._iou.append(compute_iou(p, t, include_background=True, ignore_empty=False).float())
        self._dice.append(compute_dice(p, t, include_background=True, ignore_empty=False).float())
        # an image where a class is absent from both prediction and label scores NaN: left out of the mean
        absent = (p.flatten(2).sum(-1) == 0) & (t.flatten(2).sum(-1) == 0)
        self._iou[-1][absent] = float("nan")
        self._dice[-1][absent] = float("nan")
        dims = tuple(range(2, p.ndim))
        tp = (p * t).sum(dim=(0, *dims)).double()
        self._counts[:, 0] += tp
        self._counts[:, 1] += p.sum(dim=(0, *dims)).double() - tp
        self._counts[:, 2] += t.sum(dim=(0, *dims)).double() - tp

    def compute(self) -> dict[str, Any]:
        """Return ``{"per_class": {name: {...}}, "mean_iou", "mean_dice", "mean_iou_foreground", ...}``."""
        if not self._iou:
            raise ValueError("no images were scored")
        iou = torch.cat(self._iou)
        dice = torch.cat(self._dice)
        tp, fp, fn = self._counts.unbind(1)
        agg = (tp / (tp + fp + fn)).float()
        per_class = {}
        for c, name in enumerate(self.class_names):
            per_class[name] = {
                "iou": _nanmean(iou[:, c]),
                "dice": _nanmean(dice[:, c]),
                "iou_aggregate": float(agg[c]) if (tp + fp + fn)[c] > 0 else None,
                "pixels": int((tp + fn)[c]),
            }
        out: dict[str, Any] = {"num_images": int(iou.shape[0]), "per_class": per_class}
        for key in ("iou", "dice"):
            vals = [v[key] for v in per_class.values()]
            out[f"mean_{key}"] = _mean(vals)
            out[f"mean_{key}_foreground"] = _mean(vals[1:])
        if self.class_shares is not None:
            under = [n for n in self.class_names if self.class_shares.get(n, 0.0) < self.underrepresented_below]
            out["underrepresented_below"] = self.underrepresented_below
            out["underrepresented"] = under
            for name in self.class_names:
                per_class[name]["training_share"] = self.class_shares.get(name)
            for key in ("iou", "dice"):
                out[f"mean_{key}_underrepresented"] = _mean([per_class[n][key] for n in under])
        return out


def _nanmean(x: torch.Tensor) -> float | None:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if len(x) else None


def _mean(vals: Sequence[float | None]) -> float | None:
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def format_table(result: dict[str, Any], title: str = "") -> str:
    """A Markdown table of :meth:`SegmentationScores.compute`'s result: a row per class and the means."""

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    lines = [f"### {title}", ""] if title else []
    lines += ["| class | IoU | Dice | IoU (aggregate) | pixels |", "|---|---|---|---|---|"]
    for name, v in result["per_class"].items():
        lines.append(f"| {name} | {f(v['iou'])} | {f(v['dice'])} | {f(v['iou_aggregate'])} | {v['pixels']} |")
    lines.append(f"| **mean** | {f(result['mean_iou'])} | {f(result['mean_dice'])} | | |")
    lines.append(
        f"| **mean (foreground)** | {f(result['mean_iou_foreground'])} | {f(result['mean_dice_foreground'])} | | |"
    )
    if "underrepresented" in result:
        pct = 100 * result["underrepresented_below"]
        lines += [
            "", f"Summary (classes under {pct:g} % of the training pixels are under-represented):", "",
            "| classes | count | mIoU | mDice |", "|---|---|---|---|",
            f"| all | {len(result['per_class'])} | {f(result['mean_iou'])} | {f(result['mean_dice'])} |",
            f"| under-represented | {len(result['underrepresented'])} | {f(result['mean_iou_underrepresented'])} "
            f"| {f(result['mean_dice_underrepresented'])} |",
        ]
        if result["underrepresented"]:
            lines.append(f"\nUnder-represented: {', '.join(result['underrepresented'])}.")
    lines.append(f"\n{result['num_images']} images.")
    return "\n".join(lines) + "\n"
