"""IoU and Dice per class and their means, from MONAI's metrics, written as JSON and a table.

Two figures are reported for each class:

- ``iou`` / ``dice``: the mean over images of the per-image score (MONAI's ``compute_iou`` /
  ``compute_dice``; an image where the class is absent from both prediction and ground truth is
  left out of that class's mean);
- ``iou_aggregate``: one IoU from the true/false positive counts summed over all images.

``mean_iou`` / ``mean_dice`` average the classes, with and without background.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine
from monai.metrics import compute_dice, compute_iou
from monai.networks import one_hot

__all__ = [
    "ReportHandler",
    "example_arrays",
    "save_examples",
    "SegmentationScores",
    "SegmentationReport",
    "format_table",
]

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


class ReportHandler:
    """Base of the report handlers: reset ``scores`` at start, update every iteration, write at the end.

    Subclasses set ``self.scores`` (with ``reset`` / ``compute``) and implement ``_update(engine)`` and
    ``_table(result) -> str``; :meth:`_write` saves ``<name>.json`` and ``<name>.md`` in ``output_dir``
    and puts ``metric_keys`` of the result into ``engine.state.metrics`` as ``<name>_<key>``.
    """

    metric_keys: tuple[str, ...] = ()

    def __init__(self, output_dir: str | os.PathLike, scores: Any, output_transform: Callable | None = None,
                 name: str = "metrics", title: str = "", examples: int = 4) -> None:
        self.output_dir = Path(output_dir)
        self.scores = scores
        self.output_transform = output_transform or from_engine(["pred", "label"])
        self.name = name
        self.title = title or name
        self.examples = int(examples)
        self._examples: list[dict[str, np.ndarray]] = []
        self.result: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._update)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record_examples)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.scores.reset()
        self._examples = []

    def _record_examples(self, engine: Engine) -> None:
        """Keep the first ``examples`` (image, label, prediction) of the run for pictures (sweep reports).

        Needs decollated outputs (a list of dicts with ``image``); otherwise nothing is kept.
        """
        output = engine.state.output
        if len(self._examples) >= self.examples or not (isinstance(output, list) and output
                                                        and isinstance(output[0], dict) and "image" in output[0]):
            return
        preds, labels = self.output_transform(output)
        for item, pred, label in zip(output, preds, labels):
            if len(self._examples) >= self.examples:
                break
            example = example_arrays(item["image"], label, pred)
            if example is not None:
                self._examples.append(example)

    def _update(self, engine: Engine) -> None:
        raise NotImplementedError

    def _table(self, result: dict[str, Any]) -> str:
        raise NotImplementedError

    def _write(self, engine: Engine) -> None:
        self.result = self.scores.compute()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / f"{self.name}.json").write_text(json.dumps(self.result, indent=2))
        table = self._table(self.result)
        (self.output_dir / f"{self.name}.md").write_text(table)
        for key in self.metric_keys:
            if key in self.result:
                engine.state.metrics[f"{self.name}_{key}"] = self.result[key]
        save_examples(self.output_dir / f"{self.name}_examples.npz", self._examples)
        logger.info("%s written to %s\n%s", self.name, self.output_dir, table)


def save_examples(path: str | os.PathLike, examples: Sequence[dict[str, np.ndarray]]) -> Path | None:
    """Write :func:`example_arrays` results as ``image_<i>``, ``label_<i>``, ``pred_<i>`` in one ``.npz``
    (what sweep reports draw their overlay grids from); nothing when ``examples`` is empty."""
    if not examples:
        return None
    np.savez_compressed(path, **{f"{k}_{i}": v for i, ex in enumerate(examples) for k, v in ex.items()})
    return Path(path)


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def example_arrays(image: Any, label: Any, pred: Any) -> dict[str, np.ndarray] | None:
    """One picture's arrays for reports: ``image`` ``(H, W)`` or ``(H, W, 3)`` float32 in [0, 1], ``label``
    and ``pred`` ``(H, W)`` uint8 class indices.

    Args:
        image: ``(C, H, W)`` or, for a volume, ``(C, H, W, D)`` (then the axial slice with the most
            labelled voxels is taken).
        label, pred: class-index maps ``(1, H, W[, D])`` (or one-hot ``(K, H, W[, D])``, argmax taken).

    Returns ``None`` when the shapes do not fit (nothing is kept rather than a wrong picture).
    """
    img, lab, prd = _numpy(image).astype(np.float32), _numpy(label), _numpy(pred)
    spatial = img.ndim - 1
    if spatial not in (2, 3):
        return None

    def to_index(m: np.ndarray) -> np.ndarray:
        m = m if m.ndim == spatial + 1 else m[None]
        return (m.argmax(0) if m.shape[0] > 1 else m[0]).astype(np.uint8)

    try:
        lab, prd = to_index(lab), to_index(prd)
    except (ValueError, IndexError):
        return None
    if spatial == 3:
        z = int(np.argmax((lab > 0).reshape(-1, lab.shape[-1]).sum(0)))
        img, lab, prd = img[..., z], lab[..., z], prd[..., z]
    if lab.shape != img.shape[1:] or prd.shape != img.shape[1:]:
        return None
    img = np.moveaxis(img[:3], 0, -1) if img.shape[0] >= 3 else img[0]
    lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
    img = np.nan_to_num((img - lo) / (hi - lo) if hi > lo else np.zeros_like(img))
    return {"image": img.astype(np.float32), "label": lab, "pred": prd}


class SegmentationReport(ReportHandler):
    """Ignite handler: score every iteration's predictions and write ``<name>.json`` / ``<name>.md`` at the end.

    Args:
        output_dir: folder for the report files (created).
        class_names: class names, background first.
        output_transform: maps ``engine.state.output`` to ``(pred, label)`` class-index maps;
            default ``from_engine(["pred", "label"])``.
        name: file stem and the key prefix in ``engine.state.metrics`` (``<name>_mean_iou`` ...).
        title: heading of the Markdown table.
        class_shares, underrepresented_below: see :class:`SegmentationScores`.
        examples: how many (image, label, prediction) to keep in ``<name>_examples.npz`` for
            pictures (sweep reports' overlay grids); 0 keeps none.
    """

    metric_keys = ("mean_iou", "mean_dice", "mean_iou_foreground", "mean_dice_foreground", "mean_iou_underrepresented")

    def __init__(
        self, output_dir: str | os.PathLike, class_names: Sequence[str],
        output_transform: Callable | None = None, name: str = "metrics", title: str = "",
        class_shares: dict[str, float] | None = None, underrepresented_below: float = 0.01, examples: int = 4,
    ) -> None:
        super().__init__(output_dir, SegmentationScores(class_names, class_shares, underrepresented_below),
                         output_transform, name, title, examples)

    def _update(self, engine: Engine) -> None:
        pred, label = self.output_transform(engine.state.output)
        self.scores.update(pred, label)

    def _table(self, result: dict[str, Any]) -> str:
        return format_table(result, self.title)
