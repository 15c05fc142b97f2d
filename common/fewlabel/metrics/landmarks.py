"""Scores of thin-landmark maps as the P2ILF challenge reports them: precision, Dice and the symmetric distance G.

SLiPPA (Borgars et al.) evaluates liver landmarks (silhouette, ridge, falciform ligament) with the
P2ILF 2D-segmentation metrics (Ali et al. 2025), per landmark and per image, at the frames'
original resolution:

- precision ``P = |B ∩ C| / |B|`` and Dice ``D = 2 |B ∩ C| / (|B| + |C|)`` (SLiPPA equation 3);
- the symmetric distance ``G`` of François et al. (2020), SLiPPA equation 4
  (:func:`symmetric_distance`): a distance term between matched pixels, a false-positive term
  and a false-negative term, with a tolerance ``d_max`` (P2ILF: 10 px). Lower is better; 0 is a
  perfect match and 1 an entirely missed landmark.

The P2ILF challenge scored the teams with ``computeScoreFrancoisSimplified`` (for G) and
``computeClassificationMetrics`` (for precision and Dice) of ``teamEvaluations/metric_functions.py``
in the organisers' P2ILF repository, and averaged the frames with ``connectJsonFiles_DSC.py`` /
``connectJsonFiles_SymDistance.py`` beside it. What that code does, and the setting here that
follows it (the defaults) or today's alternative:

- tolerance: a pixel is matched when its distance to the other set is ``< d_max``; at exactly
  ``d_max`` it is a miss (``tolerance="strict"``; ``"inclusive"`` matches at ``<= d_max``);
- a frame whose ground truth lacks a landmark is left out of that landmark's precision, Dice and G
  means, whatever was predicted (the averaging scripts list those frames and write "NA";
  ``empty_gt="skip"``). With ``empty_gt="score"`` such frames are scored:

  - a correct absence (both empty): the code gives G = 0 (all its terms are 0), Dice = 1
    (``computeClassificationMetrics`` sets ``DSC = 1`` when both maps are empty) and precision 0
    (its ``precision`` returns 0 when ``TP + FP = 0``), and they enter the means
    (``correct_absence="p2ilf"``); ``"nan"`` leaves them out instead;
  - a false alarm (a predicted landmark, no ground truth): P = 0, D = 0 and G by the code's formula,
    whose match and miss terms are 0 (its ``epsilon`` makes 0 / 0 = 0) and whose outlier term is
    ``|B| / |I|`` here (``false_alarm="formula"``); ``"one"`` scores it 1.0;

- a missed landmark (empty prediction, non-empty ground truth): P = 0, D = 0, G = 1 (the code's
  ``d_max``, in the units below), whatever the settings.

G is reported in equation 4's units (0 perfect, 1 entirely missed). The P2ILF code's value is
``d_max`` times this (its match term is not divided by ``d_max``; its outlier and miss terms are
multiplied by ``d_max``), and its averaging script rounds each frame's value to two decimals and
caps it at 1 before taking the mean; neither is applied here.

:func:`format_stage_table` lays results out as SLiPPA's Tables 5 and 6;
:func:`format_landmark_table` as its Table 2.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from fewlabel.data.landmarks import LANDMARK_CLASSES

__all__ = [
    "LANDMARK_NAMES",
    "TOLERANCES",
    "FALSE_ALARMS",
    "EMPTY_GT",
    "CORRECT_ABSENCES",
    "symmetric_distance",
    "landmark_precision",
    "landmark_dice",
    "LandmarkScores",
    "format_stage_table",
    "format_landmark_table",
]

#: Landmarks of SLiPPA's label maps, in class-index order (class 0 is background).
LANDMARK_NAMES = LANDMARK_CLASSES[1:]

_METRICS = ("precision", "dice", "G")
# label in the tables and whether higher is better
_METRIC_LABELS = {"precision": ("P̄", True), "dice": ("D̄", True), "G": ("Ḡ", False)}
_DASH = "–"


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_bool_map(x: Any, name: str) -> np.ndarray:
    """``(H, W)`` bool (non-zero = landmark) from a NumPy array or torch tensor."""
    arr = _as_numpy(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2D (H, W) map, got shape {arr.shape}")
    return arr if arr.dtype == np.bool_ else arr != 0


def _pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    b, c = _as_bool_map(pred, "pred"), _as_bool_map(gt, "gt")
    if b.shape != c.shape:
        raise ValueError(f"prediction shape {b.shape} differs from ground truth shape {c.shape}")
    return b, c


TOLERANCES = ("strict", "inclusive")
FALSE_ALARMS = ("formula", "one")
EMPTY_GT = ("skip", "score")
CORRECT_ABSENCES = ("p2ilf", "nan")


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r} (set it in the bundle's evaluate.json)")


def symmetric_distance(pred: Any, gt: Any, d_max: float = 10.0, both_empty: float = 0.0,
                       tolerance: str = "strict", false_alarm: str = "formula") -> float:
    """Symmetric distance ``G`` between a predicted and a ground-truth landmark map (SLiPPA equation 4).

    The score of François et al. (2020) used by the P2ILF challenge. With

    - ``B``: the predicted pixels, ``C``: the ground-truth pixels, ``|I|``: the number of pixels of
      the image;
    - ``Q``: the tolerance region, pixels closer than ``d_max`` to ``C`` (``< d_max``, as the P2ILF
      code tests; ``<= d_max`` with ``tolerance="inclusive"``);
    - ``FP = B \\ Q``: predicted pixels not within the tolerance of any ground-truth pixel;
    - ``FN``: ground-truth pixels not within the tolerance (``>= d_max``; ``> d_max`` inclusive) of
      any predicted pixel;
    - ``d_S(p, S)``: the Euclidean distance (in pixels) from pixel ``p`` to the nearest pixel of
      the set ``S`` (from :func:`scipy.ndimage.distance_transform_edt`),

    the score is::

        G = (sum_{b in B∩Q} d_S(b, C \\ FN) + sum_{c in C \\ FN} d_S(c, B∩Q)) / (2 |C| d_max)
            + |FP| / (|I| - 2 |C| d_max)
            + |FN| / |C|

    Each matched pixel contributes at most ``d_max`` to the first sum. ``G`` is 0 for identical
    maps, grows with the displacement of the prediction while it stays within ``d_max``, and is 1
    when every ground-truth pixel is missed and there is no false positive. It is not bounded by
    1: a prediction much thicker than the ground truth, or many false positives, can exceed it.

    Edge cases: both maps empty -> ``both_empty`` (default 0.0, the P2ILF code's value); an empty
    prediction with a non-empty ground truth -> 1.0 (every ground-truth pixel is a false negative);
    an empty ground truth with a non-empty prediction (a false alarm) -> ``|B| / |I|`` with
    ``false_alarm="formula"`` (the P2ILF code: the terms divided by ``|C| = 0`` are 0, the
    false-positive term is ``|FP| / |I|`` with every predicted pixel a false positive), 1.0 with
    ``"one"``. A prediction entirely outside ``Q`` gives ``B∩Q`` and ``C \\ FN`` both empty: the
    first term is 0 and ``G = 1 + |FP| / (...)``. If ``|I| - 2 |C| d_max <= 0`` (a ground truth
    covering much of a small image) the false-positive term is divided by ``|I|`` instead.

    The challenge's code (``computeScoreFrancoisSimplified`` in the P2ILF organisers'
    ``teamEvaluations/metric_functions.py``) computes the same score times ``d_max``: its first term
    is the sum of matched distances over ``2 |C|`` (not divided by ``d_max``), its false-negative and
    false-positive terms are multiplied by ``d_max``; it measures each matched pixel's distance to
    the whole other set, which is the same thing (the nearest pixel of a matched pixel is itself
    matched); and a distance of exactly ``d_max`` is a miss (``tolerance="strict"``).

    Args:
        pred: ``(H, W)`` predicted landmark map (bool, or non-zero = landmark); NumPy or torch.
        gt: ``(H, W)`` ground-truth map, same shape.
        d_max: tolerance in pixels (> 0); P2ILF uses 10 at the original frame resolution.
        both_empty: the score when both maps are empty.
        tolerance: ``"strict"`` (default, the P2ILF code: matched when closer than ``d_max``) or
            ``"inclusive"`` (matched at ``<= d_max``).
        false_alarm: the score of a prediction on an empty ground truth: ``"formula"`` (default,
            the P2ILF code's value, ``|B| / |I|``) or ``"one"`` (1.0).

    Returns:
        ``G >= 0`` as a float (lower is better).

    Raises:
        ValueError: shapes differ or are not 2D; ``d_max <= 0``; an unknown ``tolerance`` or
            ``false_alarm``.
    """
    if not d_max > 0:
        raise ValueError(f"d_max must be > 0, got {d_max}")
    _check_choice("tolerance", tolerance, TOLERANCES)
    _check_choice("false_alarm", false_alarm, FALSE_ALARMS)
    b, c = _pair(pred, gt)
    n_c, n_b = int(c.sum()), int(b.sum())
    if n_c == 0 and n_b == 0:
        return float(both_empty)
    if n_c == 0:
        return float(n_b) / b.size if false_alarm == "formula" else 1.0
    if n_b == 0:
        return 1.0
    n_pixels = b.size
    # All pixels of B and C lie in their joint bounding box, so Euclidean distance transforms of
    # that crop are exact for every pixel of B and C (the only ones at which they are read).
    rows, cols = np.nonzero(b | c)
    crop = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    b, c = b[crop], c[crop]
    dist_to_c = distance_transform_edt(~c)
    dist_to_b = distance_transform_edt(~b)
    if tolerance == "strict":  # within tolerance: < d_max (exactly d_max is a miss)
        def within(d: np.ndarray) -> np.ndarray:
            return d < float(d_max) - 1e-9
    else:
        def within(d: np.ndarray) -> np.ndarray:
            return d <= float(d_max) + 1e-9
    in_q = within(dist_to_c)  # Q
    fn = c & ~within(dist_to_b)
    b_in_q = b & in_q
    fp = b & ~in_q
    c_matched = c & ~fn
    match = 0.0
    if c_matched.any():  # then B∩Q is non-empty too (a matched GT pixel has a predicted pixel within d_max)
        # without FN (FP) the target set is C (B) itself: reuse its distance transform
        to_c = dist_to_c if not fn.any() else distance_transform_edt(~c_matched)
        to_b = dist_to_b if not fp.any() else distance_transform_edt(~b_in_q)
        match = float(to_c[b_in_q].sum() + to_b[c_matched].sum())
    fp_den = n_pixels - 2.0 * n_c * d_max
    if fp_den <= 0:
        fp_den = float(n_pixels)
    return match / (2.0 * n_c * d_max) + float(fp.sum()) / fp_den + float(fn.sum()) / n_c


def landmark_precision(pred: Any, gt: Any) -> float:
    """Pixel precision ``|B ∩ C| / |B|`` of a predicted landmark map ``B`` against ground truth ``C``.

    NaN when both maps are empty (nothing to score: left out of means); 0 when the prediction is
    empty but the ground truth is not (a missed landmark scores as badly as possible, so it never
    improves a mean), and 0 when the ground truth is empty but the prediction is not (all false
    positives). Inputs: ``(H, W)`` bool (or non-zero) NumPy arrays or torch tensors of one shape.
    """
    b, c = _pair(pred, gt)
    n_b = int(b.sum())
    if n_b == 0:
        return math.nan if not c.any() else 0.0
    return float(np.logical_and(b, c).sum()) / n_b


def landmark_dice(pred: Any, gt: Any) -> float:
    """Dice ``2 |B ∩ C| / (|B| + |C|)`` (SLiPPA equation 3); NaN when both maps are empty, else in [0, 1]."""
    b, c = _pair(pred, gt)
    total = int(b.sum()) + int(c.sum())
    if total == 0:
        return math.nan
    return 2.0 * float(np.logical_and(b, c).sum()) / total


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def _json_safe(x: Any) -> Any:
    """NaN -> None, recursively, for strict JSON."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, Mapping):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


class LandmarkScores:
    """Accumulate per-image, per-landmark precision, Dice and ``G``, and their means.

    Score images at their original resolution (P2ILF: ``d_max`` is in original pixels).

    The defaults follow the P2ILF challenge's own evaluation of the teams (see the module
    docstring for what that code does).

    Args:
        landmark_names: names of the landmarks, in class-index order from class 1 (default
            :data:`LANDMARK_NAMES`: silhouette, ridge, ligament).
        d_max: tolerance of :func:`symmetric_distance` in pixels.
        empty_gt: ``"skip"`` (default, the P2ILF team evaluation and the SLiPPA authors' code): an
            image whose ground truth lacks a landmark is left out of that landmark's means whatever
            was predicted; ``"score"``: such images are scored (below).
        correct_absence: with ``empty_gt="score"``, the scores of a landmark absent from both
            prediction and ground truth: ``"p2ilf"`` (default, the P2ILF per-frame code: P = 0,
            D = 1, G = 0, entering the means) or ``"nan"`` (left out of the means).
        false_alarm: with ``empty_gt="score"``, G of a landmark predicted where the ground truth
            has none (P = D = 0 either way): ``"formula"`` (default, the P2ILF code's value
            ``|B| / |I|``) or ``"one"`` (1.0); see :func:`symmetric_distance`.
        tolerance: ``"strict"`` (default, the P2ILF code: matched when closer than ``d_max``) or
            ``"inclusive"`` (``<= d_max``); see :func:`symmetric_distance`.

    ``summary()`` returns ``{"per_landmark": {name: {"precision", "dice", "G", "num_scored"}},
    "mean": {"precision", "dice", "G"}, "num_images", "d_max", "empty_gt", "correct_absence",
    "false_alarm", "tolerance"}``: each landmark's figure is the mean over images with NaN left
    out, the ``mean`` row averages the landmarks (SLiPPA's P̄, D̄, Ḡ). A figure with no image to
    average is NaN.

    Raises:
        ValueError: no landmark names, ``d_max <= 0`` or an unknown setting (the message lists the
            choices).
    """

    def __init__(self, landmark_names: Sequence[str] = LANDMARK_NAMES, d_max: float = 10.0,
                 empty_gt: str = "skip", correct_absence: str = "p2ilf", false_alarm: str = "formula",
                 tolerance: str = "strict") -> None:
        if not landmark_names:
            raise ValueError("landmark_names is empty")
        _check_choice("empty_gt", empty_gt, EMPTY_GT)
        _check_choice("correct_absence", correct_absence, CORRECT_ABSENCES)
        _check_choice("false_alarm", false_alarm, FALSE_ALARMS)
        _check_choice("tolerance", tolerance, TOLERANCES)
        if not d_max > 0:
            raise ValueError(f"d_max must be > 0, got {d_max}")
        self.landmark_names = [str(n) for n in landmark_names]
        self.d_max = float(d_max)
        self.empty_gt = empty_gt
        self.correct_absence = correct_absence
        self.false_alarm = false_alarm
        self.tolerance = tolerance
        self.reset()

    @property
    def settings(self) -> dict[str, Any]:
        """The evaluation settings, as recorded in :meth:`summary`."""
        return {"d_max": self.d_max, "empty_gt": self.empty_gt, "correct_absence": self.correct_absence,
                "false_alarm": self.false_alarm, "tolerance": self.tolerance}

    def reset(self) -> None:
        """Forget all images."""
        self._images: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._images)

    @property
    def per_image(self) -> list[dict[str, Any]]:
        """``[{"image": id, <landmark>: {"precision", "dice", "G"}, ...}]`` in the order added (NaN = not scored)."""
        return [dict(r) for r in self._images]

    def _masks(self, x: Any, num_classes: int | None, name: str) -> np.ndarray:
        """``(K, H, W)`` bool masks from masks or a ``(H, W)`` / ``(1, H, W)`` label map."""
        k = len(self.landmark_names)
        arr = _as_numpy(x)
        if arr.ndim == 3 and arr.shape[0] == 1 and k != 1:
            arr = arr[0]
        if arr.ndim == 3:
            if arr.shape[0] != k:
                raise ValueError(f"{name} has {arr.shape[0]} masks, expected {k} ({', '.join(self.landmark_names)})")
            return arr if arr.dtype == np.bool_ else arr != 0
        if arr.ndim != 2:
            raise ValueError(f"{name} must be (K, H, W) masks or an (H, W) label map, got shape {arr.shape}")
        n = k + 1 if num_classes is None else int(num_classes)
        if n != k + 1:
            raise ValueError(f"num_classes={n} does not fit {k} landmarks (+ background)")
        if arr.size and (arr.min() < 0 or arr.max() >= n or (arr.dtype.kind == "f" and (arr != np.round(arr)).any())):
            raise ValueError(f"{name} label map has values outside 0..{n - 1} (found [{arr.min()}, {arr.max()}])")
        return np.stack([arr == cls for cls in range(1, n)])

    def add(self, pred: Any, gt: Any, num_classes: int | None = None, image_id: Any = None) -> dict[str, Any]:
        """Score one image.

        Args:
            pred, gt: ``(K, H, W)`` bool masks (one per landmark, in ``landmark_names`` order) or
                ``(H, W)`` label maps of class indices (0 background, ``k`` = landmark ``k - 1``);
                NumPy arrays or torch tensors, at the original resolution, same ``H, W``.
            num_classes: classes of label maps (default ``K + 1``).
            image_id: recorded in :attr:`per_image` (default: the image's index).

        Returns:
            The image's record ``{"image": id, <landmark>: {"precision", "dice", "G"}}``.
        """
        p, g = self._masks(pred, num_classes, "pred"), self._masks(gt, num_classes, "gt")
        if p.shape != g.shape:
            raise ValueError(f"prediction shape {p.shape[1:]} differs from ground truth shape {g.shape[1:]}")
        record: dict[str, Any] = {"image": len(self._images) if image_id is None else image_id}
        for name, pm, gm in zip(self.landmark_names, p, g):
            if not gm.any() and (self.empty_gt == "skip" or (self.correct_absence == "nan" and not pm.any())):
                record[name] = {m: math.nan for m in _METRICS}
                continue
            if not gm.any() and not pm.any():  # a correct absence, scored as the P2ILF per-frame code does
                record[name] = {"precision": 0.0, "dice": 1.0, "G": 0.0}
                continue
            record[name] = {
                "precision": landmark_precision(pm, gm),
                "dice": landmark_dice(pm, gm),
                "G": symmetric_distance(pm, gm, self.d_max, both_empty=math.nan, tolerance=self.tolerance,
                                        false_alarm=self.false_alarm),
            }
        self._images.append(record)
        return dict(record)

    def summary(self) -> dict[str, Any]:
        """Means over images per landmark (NaN left out) and over landmarks; see the class docstring."""
        per_landmark: dict[str, dict[str, Any]] = {}
        for name in self.landmark_names:
            vals = {m: [r[name][m] for r in self._images] for m in _METRICS}
            per_landmark[name] = {m: _nanmean(v) for m, v in vals.items()}
            per_landmark[name]["num_scored"] = sum(not math.isnan(v) for v in vals["dice"])
        mean = {m: _nanmean([per_landmark[n][m] for n in self.landmark_names]) for m in _METRICS}
        return {"per_landmark": per_landmark, "mean": mean, "num_images": len(self._images), **self.settings}

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``{"summary": ..., "per_image": [...]}`` as JSON (NaN written as ``null``); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"summary": self.summary(), "per_image": self.per_image}
        path.write_text(json.dumps(_json_safe(data), indent=2, default=str))
        return path


def _value(x: Any) -> float | None:
    if x is None:
        return None
    v = float(x)
    return None if math.isnan(v) else v


def _check_metrics(metrics: Sequence[str]) -> None:
    bad = [m for m in metrics if m not in _METRIC_LABELS]
    if bad:
        raise ValueError(f"unknown metrics {bad}; expected some of {list(_METRIC_LABELS)}")


def format_stage_table(
    results: Mapping[Any, Mapping[str, Any]], metrics: Sequence[str] = _METRICS,
    stages: Sequence[str] = ("init", "tune", "post"), digits: int = 2,
) -> str:
    """A Markdown table in the layout of SLiPPA's Tables 5 and 6.

    One row per candidate (the keys of ``results``, in order); for each stage, one column per
    metric: ``P̄_init ↑ | D̄_init ↑ | Ḡ_init ↓ | P̄_tune ↑ | ... | Ḡ_post ↓``. Values come from
    ``results[candidate][stage]["mean"][metric]`` (a :meth:`LandmarkScores.summary`), shown with
    ``digits`` decimals; a missing stage or value (or NaN) is shown as ``–``. The best value of each
    column (highest precision and Dice, lowest G, compared as displayed) is in bold; ties are all bold.

    Raises:
        ValueError: an unknown metric name.
    """
    _check_metrics(metrics)
    columns = [(s, m) for s in stages for m in metrics]
    table: dict[Any, list[float | None]] = {}
    for cand, res in results.items():
        row: list[float | None] = []
        for stage, metric in columns:
            entry = (res or {}).get(stage)
            if entry is None:
                row.append(None)
                continue
            means = entry.get("mean", entry) if isinstance(entry, Mapping) else {}
            v = _value(means.get(metric)) if isinstance(means, Mapping) else None
            row.append(None if v is None else round(v, digits))
        table[cand] = row
    best: list[float | None] = []
    for j, (_, metric) in enumerate(columns):
        vals = [r[j] for r in table.values() if r[j] is not None]
        higher = _METRIC_LABELS[metric][1]
        best.append((max(vals) if higher else min(vals)) if vals else None)

    def cell(v: float | None, j: int) -> str:
        if v is None:
            return _DASH
        text = f"{v:.{digits}f}"
        return f"**{text}**" if v == best[j] else text

    header = ["Candidate"] + [
        f"{_METRIC_LABELS[m][0]}_{s} {'↑' if _METRIC_LABELS[m][1] else '↓'}" for s, m in columns
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cand, row in table.items():
        lines.append("| " + " | ".join([str(cand)] + [cell(v, j) for j, v in enumerate(row)]) + " |")
    return "\n".join(lines) + "\n"


def format_landmark_table(
    summary: Mapping[str, Any], order: Sequence[str] = ("ridge", "ligament", "silhouette"), digits: int = 2,
) -> str:
    """A Markdown table of one :meth:`LandmarkScores.summary`: a row per landmark and the mean (SLiPPA Table 2).

    Rows follow ``order`` (Table 2's ridge, falciform ligament, silhouette), then any other
    landmark of the summary, then the **mean** row; columns P ↑, D ↑, G ↓. NaN is shown as ``–``.
    """
    per = summary["per_landmark"]
    names = [n for n in order if n in per] + [n for n in per if n not in order]

    def f(v: Any) -> str:
        v = _value(v)
        return _DASH if v is None else f"{v:.{digits}f}"

    lines = ["| landmark | P ↑ | D ↑ | G ↓ |", "|---|---|---|---|"]
    for n in names:
        lines.append(f"| {n} | {f(per[n]['precision'])} | {f(per[n]['dice'])} | {f(per[n]['G'])} |")
    m = summary["mean"]
    lines.append(f"| **mean** | {f(m['precision'])} | {f(m['dice'])} | {f(m['G'])} |")
    extra = []
    if "num_images" in summary:
        extra.append(f"{summary['num_images']} images")
    if "d_max" in summary:
        extra.append(f"G with d_max = {float(summary['d_max']):g} px")
    if extra:
        lines.append("\n" + ", ".join(extra) + ".")
    return "\n".join(lines) + "\n"
