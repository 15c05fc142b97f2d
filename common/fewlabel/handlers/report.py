"""Base of the report handlers: score every iteration, write ``<name>.json`` / ``<name>.md`` at the end.

:class:`ReportHandler` is the ignite side of a scores object from :mod:`fewlabel.metrics`
(:class:`fewlabel.handlers.SegmentationReport`, :class:`fewlabel.handlers.VolumeReport`);
:func:`example_arrays` / :func:`save_examples` keep a few (image, label, prediction) pictures for
reports.
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

__all__ = ["ReportHandler", "example_arrays", "save_examples"]

logger = logging.getLogger("fewlabel.metrics")


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
