"""Landmark evaluation as the P2ILF challenge scores it: per landmark precision, Dice and the symmetric
distance G on binary maps at the frames' original resolution, before and after post-processing.

:class:`LandmarkEvaluation` is an ignite handler for MONAI's ``SupervisedEvaluator``. The network
predicts at its own size (SLiPPA: 416x320); for scoring, each prediction is brought to the size of
its ground truth (P2ILF: 1920x1080), which the evaluation pipeline keeps under ``label_full``:

- ``raw`` ("fine-tuned" columns of Tables 5/6): the predicted label map, resized (nearest neighbour);
- ``post`` ("post-processed" columns): :class:`fewlabel.postprocess.LandmarkPostprocessor` at network
  size, its curves scaled to the original frame and drawn ``thickness`` px wide, as the ground truth
  is drawn (dilation for evaluation, section 3.1).

It writes ``metrics.json`` (``raw``, ``post``, and at top level the figures of the stage's own kind
for sweeps), ``metrics.md`` (the per-landmark tables) and post-processing timings.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from PIL import Image

__all__ = ["LandmarkEvaluation", "stage_table"]

logger = logging.getLogger("fewlabel.engines")


def _np(x: Any) -> np.ndarray:
    return np.asarray(torch.as_tensor(x).detach().cpu())


def _resize_nearest(labels: np.ndarray, size: Sequence[int]) -> np.ndarray:
    if labels.shape == tuple(size):
        return labels
    return np.asarray(Image.fromarray(labels.astype(np.uint8)).resize((int(size[1]), int(size[0])), Image.NEAREST))


def _one_hot_masks(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(H, W)`` class indices -> ``(num_classes - 1, H, W)`` bool, one map per landmark."""
    return np.stack([labels == k for k in range(1, num_classes)])


class LandmarkEvaluation:
    """Score landmark predictions at the original resolution, raw and post-processed.

    Args:
        output_dir: where ``<name>.json`` and ``<name>.md`` go.
        class_names: class names, index 0 = background (SLiPPA: background, silhouette, ridge, ligament).
        postprocessor: a :class:`fewlabel.postprocess.LandmarkPostprocessor`; ``None`` scores only ``raw``.
        d_max: tolerance of the symmetric distance G in pixels of the original frame (P2ILF: 10).
        thickness: width in original pixels of the post-processed curves (the ground truth's drawing width).
        full_label_key: batch key of the ground truth at its original size, ``(1, H, W)`` class indices.
        image_key: batch key of the network-size image (for the field-of-view step), ``(3, h, w)`` in [0, 1].
        stage: what the checkpoint is (``"init"`` after stage 1, ``"tune"`` after fine-tuning); recorded.
        report: which of ``raw`` / ``post`` the top-level figures of ``metrics.json`` repeat (for sweeps).
        name: file stem of the outputs.
        examples: how many (image, ground truth, raw prediction) at network size to keep in
            ``<name>_examples.npz`` for pictures (sweep reports); 0 keeps none.
        empty_gt, correct_absence, false_alarm, tolerance: how frames whose ground truth lacks a
            landmark are scored and the tolerance test of G; the defaults follow the P2ILF
            challenge's evaluation of the teams (see :class:`fewlabel.metrics.LandmarkScores`).
            Recorded in ``metrics.json`` under ``settings``.
    """

    def __init__(self, output_dir: str | os.PathLike, class_names: Sequence[str], postprocessor: Any = None,
                 d_max: float = 10.0, thickness: int = 12, full_label_key: str = "label_full",
                 image_key: str = "image", stage: str = "tune", report: str = "post", name: str = "metrics",
                 examples: int = 4, empty_gt: str = "skip", correct_absence: str = "p2ilf",
                 false_alarm: str = "formula", tolerance: str = "strict") -> None:
        from fewlabel.metrics import LandmarkScores

        if report not in ("raw", "post"):
            raise ValueError(f"report must be 'raw' or 'post', got {report!r}")
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.postprocessor = postprocessor
        self.d_max = float(d_max)
        self.thickness = int(thickness)
        self.full_label_key = full_label_key
        self.image_key = image_key
        self.stage = stage
        self.report = report if postprocessor is not None else "raw"
        self.name = name
        self.examples = int(examples)
        self.settings = {"empty_gt": empty_gt, "correct_absence": correct_absence, "false_alarm": false_alarm,
                         "tolerance": tolerance}
        LandmarkScores(self.class_names[1:], d_max=self.d_max, **self.settings)  # a bad setting fails here
        self._make = lambda: LandmarkScores(self.class_names[1:], d_max=self.d_max, **self.settings)
        self.reset()

    def reset(self, engine: Engine | None = None) -> None:
        self.raw = self._make()
        self.post = self._make()
        self.timings: dict[str, list[float]] = {}
        self._examples: list[dict[str, np.ndarray]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def _post_masks(self, labels: np.ndarray, image: np.ndarray | None, size: Sequence[int]) -> np.ndarray:
        from fewlabel.data.landmarks import draw_landmark_masks
        from fewlabel.transforms.landmarks import class_contours, scale_paths

        res = self.postprocessor(labels, image)
        for step, t in res.timings.items():
            self.timings.setdefault(step, []).append(float(t))
        if getattr(self.postprocessor, "skeleton", True):  # curves: scaled to the frame, drawn as the GT is
            full = scale_paths(res.paths, labels.shape, size)
            return draw_landmark_masks(class_contours(full, self.class_names), size, thickness=self.thickness)
        return np.stack([_resize_nearest(m.astype(np.uint8), size).astype(bool) for m in res.masks])

    def update(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        if isinstance(output, dict):  # no postprocessing on the evaluator: not decollated
            raise ValueError("LandmarkEvaluation needs the evaluator's postprocessing (AsDiscreted argmax) to run")
        k = len(self.class_names)
        for b, o in zip(batch, output):
            pred = _np(o["pred"]).reshape(_np(o["pred"]).shape[-2:]).astype(np.int64)
            if self.full_label_key not in b:
                raise KeyError(f"the batch has no '{self.full_label_key}': keep a copy of the label before resizing")
            gt = _np(b[self.full_label_key]).reshape(_np(b[self.full_label_key]).shape[-2:]).astype(np.int64)
            if pred.max(initial=0) >= k or gt.max(initial=0) >= k:
                raise ValueError(
                    f"labels out of range for {k} classes (pred max {pred.max()}, ground truth max {gt.max()})"
                )
            gt_masks = _one_hot_masks(gt, k)
            self.raw.add(_one_hot_masks(_resize_nearest(pred, gt.shape), k), gt_masks)
            if len(self._examples) < self.examples and self.image_key in b:
                from fewlabel.handlers.report import example_arrays

                example = example_arrays(b[self.image_key], _resize_nearest(gt, pred.shape)[None], pred[None])
                if example is not None:
                    self._examples.append(example)
            if self.postprocessor is not None:
                image = _np(b[self.image_key]) if self.image_key in b else None
                if image is not None and image.ndim == 3 and image.shape[0] in (1, 3):
                    image = np.moveaxis(image, 0, -1)
                self.post.add(self._post_masks(pred.astype(np.uint8), image, gt.shape), gt_masks)

    def add_prediction(self, pred: Any, gt: Any, image_id: Any = None) -> dict[str, Any]:
        """Score one prediction made elsewhere, as it is (``raw``; no resizing, no post-processing).

        Args:
            pred: ``(K, H, W)`` bool masks (one per landmark) or an ``(H, W)`` class-index map, at the
                ground truth's size.
            gt: ``(H, W)`` class indices (or ``(K, H, W)`` masks) at the original resolution.
            image_id: recorded with the image's scores.

        Returns:
            The image's record (see :meth:`fewlabel.metrics.LandmarkScores.add`).
        """
        return self.raw.add(pred, gt, num_classes=len(self.class_names), image_id=image_id)

    def results(self) -> dict[str, Any]:
        raw = self.raw.summary()
        out: dict[str, Any] = {"stage": self.stage, "d_max": self.d_max, "settings": self.raw.settings, "raw": raw}
        if self.postprocessor is not None:
            out["post"] = self.post.summary()
            out["postprocess_ms"] = {s: 1000 * float(np.mean(v)) for s, v in self.timings.items()}
        chosen = out[self.report]
        out["reported"] = self.report
        out["num_images"] = chosen["num_images"]
        out["per_class"] = chosen["per_landmark"]
        out.update({f"mean_{m}": v for m, v in chosen["mean"].items()})
        return out

    def write(self, engine: Engine | None = None) -> dict[str, Any]:
        from fewlabel.metrics import format_landmark_table
        from fewlabel.handlers.report import save_examples

        res = self.results()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / f"{self.name}.json").write_text(json.dumps(res, indent=2))
        lines = [f"## Landmarks: {self.stage} checkpoint, raw predictions (G with d_max = {self.d_max:g} px)", "",
                 format_landmark_table(res["raw"])]
        if "post" in res:
            lines += ["", "## After post-processing", "", format_landmark_table(res["post"]), "",
                      "Post-processing, mean ms per frame: "
                      + ", ".join(f"{s} {v:.2f}" for s, v in res["postprocess_ms"].items())]
        (self.output_dir / f"{self.name}.md").write_text("\n".join(lines) + "\n")
        save_examples(self.output_dir / f"{self.name}_examples.npz", self._examples)
        m = res["raw"]["mean"]
        logger.info("landmarks (%s, raw): P %.3f D %.3f G %.3f over %d images", self.stage, m["precision"], m["dice"],
                    m["G"], res["raw"]["num_images"])
        if "post" in res:
            m = res["post"]["mean"]
            logger.info(
                "landmarks (%s, post-processed): P %.3f D %.3f G %.3f", self.stage, m["precision"], m["dice"], m["G"]
            )
        return res


def stage_table(candidates: dict[str, dict[str, str | os.PathLike]]) -> str:
    """The Table 5/6 layout (initial / fine-tuned / post-processed means) from evaluation outputs.

    Args:
        candidates: ``{candidate: {"init": metrics.json of the stage-1 checkpoint, "tune": metrics.json of
            the fine-tuned one}}``; ``init`` uses its ``raw`` figures, ``tune`` gives ``raw`` (tune) and
            ``post`` (post-processed).

    Returns:
        The Markdown table (:func:`fewlabel.metrics.format_stage_table`).
    """
    from fewlabel.metrics import format_stage_table

    results: dict[str, dict[str, Any]] = {}
    for name, files in candidates.items():
        row: dict[str, Any] = {}
        if files.get("init") and Path(files["init"]).is_file():
            row["init"] = json.loads(Path(files["init"]).read_text())["raw"]
        if files.get("tune") and Path(files["tune"]).is_file():
            tuned = json.loads(Path(files["tune"]).read_text())
            row["tune"] = tuned["raw"]
            if "post" in tuned:
                row["post"] = tuned["post"]
        results[name] = row
    return format_stage_table(results)
