"""Score a folder of landmark predictions made elsewhere (SLiPPA Table 2: the P2ILF teams' results).

:class:`PredictionFolderScorer` pairs every ground-truth frame of a datalist split with its file in
a prediction folder and scores the pairs with the bundle's own
:class:`~fewlabel.handlers.LandmarkEvaluation` (the P2ILF settings of ``evaluate.json``), so a
method's predictions and the bundle's are measured the same way. Nothing is post-processed: the
files are scored as they are (the ``raw`` figures of ``metrics.json``).

A frame ``<stem>.<ext>`` of the datalist (its ``image``) is looked up as, in this order::

    PREDICTION_DIR/<patient>/<stem>.png | <stem>_mask.png | <stem>.xml   (when the item names a patient)
    PREDICTION_DIR/<stem>.png | <stem>_mask.png | <stem>.xml

- ``.png`` (or the ``_mask.png`` the bundle's inference writes): the frame's size, either a grey
  map of class indices (0 background, 1 silhouette, 2 ridge, 3 ligament: the datalist's class
  order) or an RGB mask in ``colours`` (the bundle's ``class_colours``);
- ``.xml``: 2D contours in the P2ILF annotation format (:func:`fewlabel.data.adapters.read_p2ilf_contours`),
  drawn one mask per landmark ``thickness`` px wide at the ground truth's size, as the ground truth is.

Every frame's file is found and its size checked before anything is scored: a missing file or a
file of the wrong size is a :class:`~fewlabel.errors.DataError` naming the files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fewlabel.errors import DataError

__all__ = ["PredictionFolderScorer", "find_prediction", "read_prediction", "PREDICTION_NAMES"]

logger = logging.getLogger("fewlabel.engines")

#: the names a frame's prediction may have, ``{stem}`` being the frame's file stem, in lookup order
PREDICTION_NAMES = ("{stem}.png", "{stem}_mask.png", "{stem}.xml")
_SHOWN = 10


def find_prediction(prediction_dir: str | os.PathLike, item: Mapping[str, Any],
                    image_key: str = "image") -> Path | None:
    """The prediction file of one datalist item, or ``None`` (see the module docstring for the names).

    Args:
        prediction_dir: the folder of predictions.
        item: a datalist item with ``image_key`` (the frame's path) and optionally ``patient``.
        image_key: the item's key naming the frame.
    """
    root = Path(prediction_dir)
    stem = Path(str(item[image_key])).stem
    folders = ([root / str(item["patient"])] if item.get("patient") else []) + [root]
    for folder in folders:
        for pattern in PREDICTION_NAMES:
            path = folder / pattern.format(stem=stem)
            if path.is_file():
                return path
    return None


def _png_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the prediction {path}: {e}") from e


def read_prediction(path: str | os.PathLike, size: Sequence[int], num_classes: int,
                    colours: Sequence[Sequence[int]] | None = None, thickness: int = 12) -> np.ndarray:
    """Read one prediction file as ``(num_classes - 1, H, W)`` bool masks, one per landmark.

    Args:
        path: a ``.png`` class-index map or colour mask, or a P2ILF contour ``.xml``.
        size: ``(H, W)`` of the ground truth; a PNG must have it.
        num_classes: classes including background (SLiPPA: 4).
        colours: ``(num_classes, 3)`` RGB colour of each class, for colour masks; ``None``: only grey
            class-index maps are accepted.
        thickness: width in pixels of the curves drawn from an XML file.

    Raises:
        DataError: wrong size, values that are no class, a colour mask without ``colours``, a colour
            of no class, or an unreadable file; the message names the file.
    """
    from fewlabel.data.image_2d import read_image_2d

    path = Path(path)
    h, w = int(size[0]), int(size[1])
    if path.suffix.lower() == ".xml":
        from fewlabel.data.adapters.p2ilf import read_p2ilf_contours
        from fewlabel.data.landmarks import draw_landmark_masks

        contours, unknown = read_p2ilf_contours(path)
        if unknown:
            logger.warning("%s: %d contour(s) of unknown type %s left out", path, len(unknown), sorted(set(unknown)))
        masks = draw_landmark_masks(contours, (h, w), thickness=thickness, source=path)
        if masks.shape[0] != num_classes - 1:
            raise DataError(f"{path}: contours give {masks.shape[0]} landmarks, the evaluation has {num_classes - 1}")
        return masks
    arr = read_image_2d(path)
    if arr.shape[:2] != (h, w):
        raise DataError(f"the prediction {path} is {arr.shape[0]}x{arr.shape[1]} (HxW), its ground truth "
                        f"{h}x{w}: write predictions at the frame's original size")
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):  # an alpha channel holds no class
        arr = arr[..., :-1] if arr.shape[-1] == 4 else arr[..., 0]
    if arr.ndim == 3:
        if colours is None:
            raise DataError(f"the prediction {path} is a colour image; pass the class colours (prediction_colours) "
                            "or write grey maps of class indices")
        from fewlabel.data.adapters.colour_masks import colour_mask_to_index

        table = [{"name": str(i), "rgb": [int(c) for c in rgb]} for i, rgb in enumerate(colours)]
        if len(table) != num_classes:
            raise ValueError(f"colours has {len(table)} entries, expected {num_classes} (one per class)")
        arr = colour_mask_to_index(arr, table, path_for_errors=path)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes or (arr != np.round(arr)).any()):
        found = np.unique(arr)[:10].tolist()
        raise DataError(f"the prediction {path} has values {found}; expected class indices 0..{num_classes - 1} "
                        "(0 background, then the landmarks in the datalist's class order)")
    return np.stack([arr == k for k in range(1, num_classes)])


class PredictionFolderScorer:
    """Score the predictions in ``prediction_dir`` against a datalist's ground truth.

    Args:
        files: datalist items ``{"image": frame path, "label": ground-truth class-index PNG, "patient"?}``
            (e.g. ``fewlabel.data.load_datalist(datalist, "testing")``).
        prediction_dir: the folder of one method's predictions.
        evaluation: the :class:`~fewlabel.handlers.LandmarkEvaluation` that scores and writes
            ``metrics.json`` / ``metrics.md`` (its ``postprocessor`` is not used).
        colours: RGB colour of each class, for colour-mask predictions (see :func:`read_prediction`).
        thickness: width in pixels of curves drawn from XML predictions (the ground truth's width).
        image_key, label_key: the items' keys of the frame and its ground truth.

    Raises:
        DataError: (from :meth:`run`) no prediction folder, no frames, or frames whose prediction is
            missing or of the wrong size (all such frames listed, before anything is scored).
    """

    def __init__(self, files: Sequence[Mapping[str, Any]], prediction_dir: str | os.PathLike, evaluation: Any,
                 colours: Sequence[Sequence[int]] | None = None, thickness: int = 12, image_key: str = "image",
                 label_key: str = "label") -> None:
        self.files = list(files)
        self.prediction_dir = Path(os.fspath(prediction_dir)) if prediction_dir not in (None, "") else None
        self.evaluation = evaluation
        self.colours = colours
        self.thickness = int(thickness)
        self.image_key = image_key
        self.label_key = label_key

    def pairs(self) -> list[tuple[dict[str, Any], Path]]:
        """Each ground-truth item with its prediction file, checked (see the class docstring)."""
        if self.prediction_dir is None:
            raise DataError("no prediction folder: pass --prediction_dir FOLDER (or --predictions_root and --method)")
        if not self.prediction_dir.is_dir():
            raise DataError(f"the prediction folder {self.prediction_dir} does not exist")
        if not self.files:
            raise DataError("the datalist split has no frames to score")
        pairs, problems = [], []
        for item in self.files:
            pred = find_prediction(self.prediction_dir, item, self.image_key)
            if pred is None:
                names = ", ".join(p.format(stem=Path(str(item[self.image_key])).stem) for p in PREDICTION_NAMES)
                problems.append(f"{item[self.label_key]}: no prediction ({names}) in {self.prediction_dir}"
                                + (f" or its '{item['patient']}' folder" if item.get("patient") else ""))
                continue
            if pred.suffix.lower() != ".xml":
                got, want = _png_size(pred), _png_size(Path(str(item[self.label_key])))
                if got != want:
                    problems.append(f"{pred} is {got[0]}x{got[1]} (HxW), its ground truth {item[self.label_key]} "
                                    f"{want[0]}x{want[1]}")
                    continue
            pairs.append((dict(item), pred))
        if problems:
            more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
            raise DataError(f"{len(problems)} of {len(self.files)} ground-truth frames cannot be scored: "
                            + "; ".join(problems[:_SHOWN]) + more
                            + ". Every frame of the split needs its prediction, at the frame's original size.")
        return pairs

    def run(self) -> dict[str, Any]:
        """Score every frame and write the evaluation's files; returns its ``metrics.json`` content."""
        from fewlabel.transforms.io import LoadLabel2D

        pairs = self.pairs()
        num_classes = len(self.evaluation.class_names)
        load_gt = LoadLabel2D(num_classes)
        self.evaluation.reset()
        for item, pred_file in pairs:
            gt = np.asarray(load_gt(item[self.label_key]))[0].astype(np.int64)
            pred = read_prediction(pred_file, gt.shape, num_classes, self.colours, self.thickness)
            self.evaluation.add_prediction(pred, gt, image_id=str(pred_file))
        logger.info("scored %d predictions from %s", len(pairs), self.prediction_dir)
        return self.evaluation.write()
