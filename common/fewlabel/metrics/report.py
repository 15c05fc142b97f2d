"""IoU and Dice per class and their means, written as JSON and a table.

Two ways of averaging over a test set are computed, and ``average`` picks which one the main keys
(``iou`` / ``dice`` per class, ``mean_iou`` / ``mean_dice`` ...) report:

- ``"dataset"``: one confusion matrix accumulated over all test images (background included), and
  each class's IoU ``TP / (TP + FP + FN)`` and Dice ``2 TP / (2 TP + FP + FN)`` from its summed
  counts. This is SurgicalSemiSeg's protocol (the authors' code accumulates one confusion matrix
  over the test set). A class absent from every prediction and label has no score (``None``).
- ``"per_image"``: the mean over images of the per-image score (MONAI's ``compute_iou`` /
  ``compute_dice``; an image where the class is absent from both prediction and ground truth is
  left out of that class's mean).

Both are always in the result: per class ``iou_dataset`` / ``dice_dataset`` (``iou_aggregate`` is
the old name of ``iou_dataset``) and ``iou_per_image`` / ``dice_per_image``; and the means
``mean_iou_dataset`` ... ``mean_iou_per_image`` .... ``mean_iou`` / ``mean_dice`` average the
classes with background, ``mean_*_foreground`` without it; ``average`` names the protocol the main
keys follow, and ``confusion_matrix`` (rows: ground truth, columns: prediction) is the summed matrix.
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
        average: what the main keys (``iou``, ``dice``, ``mean_iou`` ...) report: ``"per_image"``
            (default; the mean over images of per-image scores) or ``"dataset"`` (from one
            confusion matrix summed over all images; SurgicalSemiSeg's protocol). The other
            figure stays in the result under its own key (see the module docstring).

    Raises:
        ValueError: ``average`` is neither ``"per_image"`` nor ``"dataset"``.
    """

    AVERAGES = ("per_image", "dataset")

    def __init__(self, class_names: Sequence[str], class_shares: dict[str, float] | None = None,
                 underrepresented_below: float = 0.01, average: str = "per_image") -> None:
        if average not in self.AVERAGES:
            raise ValueError(f"average must be one of {self.AVERAGES}, got {average!r} (set it in evaluate.json)")
        self.class_names = list(class_names)
        self.class_shares = class_shares
        self.underrepresented_below = underrepresented_below
        self.average = average
        self.reset()

    def reset(self) -> None:
        self._iou: list[torch.Tensor] = []
        self._dice: list[torch.Tensor] = []
        n = len(self.class_names)
        self._confusion = torch.zeros(n, n, dtype=torch.float64)  # [ground truth, prediction]

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
        pairs = label.long().clamp(0, n - 1).flatten() * n + pred.long().clamp(0, n - 1).flatten()
        self._confusion += torch.bincount(pairs, minlength=n * n).reshape(n, n).double()

    @property
    def confusion_matrix(self) -> torch.Tensor:
        """``(K, K)`` pixel counts summed over all images: rows ground truth, columns prediction."""
        return self._confusion.clone()

    def compute(self) -> dict[str, Any]:
        """Return ``{"per_class": {name: {...}}, "mean_iou", "mean_dice", "mean_iou_foreground", ...}``."""
        if not self._iou:
            raise ValueError("no images were scored")
        iou = torch.cat(self._iou)
        dice = torch.cat(self._dice)
        cm = self._confusion
        tp = cm.diag()
        fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
        union = tp + fp + fn
        per_class = {}
        for c, name in enumerate(self.class_names):
            seen = bool(union[c] > 0)
            entry = {
                "iou_dataset": float(tp[c] / union[c]) if seen else None,
                "dice_dataset": float(2 * tp[c] / (union[c] + tp[c])) if seen else None,
                "iou_per_image": _nanmean(iou[:, c]),
                "dice_per_image": _nanmean(dice[:, c]),
                "pixels": int((tp + fn)[c]),
            }
            entry["iou_aggregate"] = entry["iou_dataset"]  # the old name, kept
            entry["iou"] = entry[f"iou_{self.average}"]
            entry["dice"] = entry[f"dice_{self.average}"]
            per_class[name] = entry
        out: dict[str, Any] = {"num_images": int(iou.shape[0]), "average": self.average, "per_class": per_class}
        for key in ("iou", "dice"):
            for suffix in ("", "_dataset", "_per_image"):
                vals = [v[key + suffix] for v in per_class.values()]
                out[f"mean_{key}{suffix}"] = _mean(vals)
                out[f"mean_{key}_foreground{suffix}"] = _mean(vals[1:])
        if self.class_shares is not None:
            under = [n for n in self.class_names if self.class_shares.get(n, 0.0) < self.underrepresented_below]
            out["underrepresented_below"] = self.underrepresented_below
            out["underrepresented"] = under
            for name in self.class_names:
                per_class[name]["training_share"] = self.class_shares.get(name)
            for key in ("iou", "dice"):
                for suffix in ("", "_dataset", "_per_image"):
                    out[f"mean_{key}_underrepresented{suffix}"] = _mean([per_class[n][key + suffix] for n in under])
        out["confusion_matrix"] = cm.long().tolist()
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

    average = result.get("average", "per_image")
    other = "dataset" if average == "per_image" else "per_image"
    label = {"dataset": "over the test set", "per_image": "per-image mean"}
    lines = [f"### {title}", ""] if title else []
    lines += [f"IoU and Dice {label[average]} ({average}); the last column: IoU {label[other]}.", ""]
    lines += [f"| class | IoU | Dice | IoU ({label[other]}) | pixels |", "|---|---|---|---|---|"]
    for name, v in result["per_class"].items():
        lines.append(f"| {name} | {f(v['iou'])} | {f(v['dice'])} | {f(v.get('iou_' + other))} | {v['pixels']} |")
    lines.append(f"| **mean** | {f(result['mean_iou'])} | {f(result['mean_dice'])} | "
                 f"{f(result.get('mean_iou_' + other))} | |")
    lines.append(
        f"| **mean (foreground)** | {f(result['mean_iou_foreground'])} | {f(result['mean_dice_foreground'])} | "
        f"{f(result.get('mean_iou_foreground_' + other))} | |"
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
