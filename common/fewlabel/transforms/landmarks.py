"""Writing landmark predictions for users: masks, overlays and ordered point lists at the original size.

A landmark network runs at a fixed size (SLiPPA: 416x320) while the frames come at their own
(P2ILF: 1920x1080). :class:`SaveLandmarksd` takes a post-processed prediction at network size (the
output of :class:`fewlabel.postprocess.LandmarkPostprocessd`: a label map and the ordered curves)
and writes, next to each other, in the frame's own pixel frame:

- ``<stem>_mask.png``: the landmarks drawn as curves of ``thickness`` px (colour-coded with ``palette``),
- ``<stem>_overlay.png``: the curves over the frame,
- ``<stem>_landmarks.json``: per landmark a list of ordered ``[x, y]`` point lists, what a 3D-2D
  registration step consumes (see :func:`landmarks_record`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from PIL import Image

from fewlabel.data.files import atomic_write
from fewlabel.data.image_2d import mask_output_name, overlay_mask, overlay_output_name, read_image_2d, scale_to_unit

__all__ = ["SaveLandmarksd", "class_contours", "landmarks_record", "render_landmarks", "scale_paths"]


def scale_paths(paths: Mapping[str, Sequence[np.ndarray]], from_size: Sequence[int], to_size: Sequence[int]
                ) -> dict[str, list[np.ndarray]]:
    """Map ``(x, y)`` point lists from an image of ``from_size`` ``(H, W)`` to one of ``to_size`` ``(H, W)``.

    Pixel centres map to pixel centres: ``x' = (x + 0.5) * W' / W - 0.5``.
    """
    sy, sx = to_size[0] / from_size[0], to_size[1] / from_size[1]
    out: dict[str, list[np.ndarray]] = {}
    for name, curves in paths.items():
        out[name] = [np.stack([(np.asarray(c, np.float64)[:, 0] + 0.5) * sx - 0.5,
                               (np.asarray(c, np.float64)[:, 1] + 0.5) * sy - 0.5], axis=1) if len(c) else
                     np.zeros((0, 2)) for c in curves]
    return out


def render_landmarks(paths: Mapping[str, Sequence[np.ndarray]], class_names: Sequence[str], size: Sequence[int],
                     thickness: int) -> np.ndarray:
    """Draw ordered ``(x, y)`` curves as a label map ``(H, W)`` uint8 (class ``k`` for ``class_names[k]``),
    with :func:`fewlabel.data.landmarks.draw_landmark_mask`: the ground truth's drawing rule (open
    polylines, ``thickness`` px, later classes on top where two landmarks cross)."""
    from fewlabel.data.landmarks import draw_landmark_mask

    return draw_landmark_mask(class_contours(paths, class_names), size, thickness=max(int(thickness), 1))


def class_contours(paths: Mapping[str, Sequence[np.ndarray]],
                   class_names: Sequence[str]) -> list[tuple[int, np.ndarray]]:
    """``{name: curves}`` -> ``[(class index, (N, 2) curve)]`` as the drawing functions take them.

    Class ``k`` is ``class_names[k]``; class 0 (background) and empty curves are left out.
    """
    return [(k, np.asarray(c, np.float64)) for k, name in enumerate(class_names) if k > 0
            for c in paths.get(name, []) if len(c)]


def landmarks_record(paths: Mapping[str, Sequence[np.ndarray]], size: Sequence[int], source: str | None = None,
                     decimals: int = 1) -> dict[str, Any]:
    """The JSON record of one frame: ``{"image", "height", "width", "landmarks": {name: [[[x, y], ...], ...]}}``.

    Coordinates are pixels of the frame (x = column, y = row, origin at the top-left pixel's centre),
    each curve ordered from one end to the other.
    """
    return {
        "image": source,
        "height": int(size[0]),
        "width": int(size[1]),
        "landmarks": {name: [np.round(np.asarray(c, np.float64), decimals).tolist() for c in curves]
                      for name, curves in paths.items()},
    }


class SaveLandmarksd(MapTransform):
    """Write a post-processed landmark prediction as mask, overlay and point-list JSON at the frame's size.

    Expects ``data[key]`` the ``(1, h, w)`` label map at network size and ``data[paths_key]``
    ``{class name: [(N, 2) (x, y) arrays]}`` at the same size (from
    :class:`fewlabel.postprocess.LandmarkPostprocessd`). The frame is read from the prediction's (or
    the image's) ``filename_or_obj`` meta to get its size and draw the overlay; without a readable
    source the outputs stay at network size. Without curves (post-processing switched off) the
    label map itself is resized to the frame (nearest neighbour) and the JSON lists no points.

    Args:
        keys: the label-map key (``"pred"``).
        output_dir: folder for the files (created).
        class_names: class names, index 0 = background.
        palette: ``(K, 3)`` RGB colours of the classes in mask and overlay.
        thickness: line width in pixels of the curves drawn at the frame's size.
        paths_key: where the curves are (default ``"<key>_paths"``).
        image_key: a key whose meta names the frame file, used if the prediction has none.
    """

    def __init__(self, keys: KeysCollection, output_dir: str | os.PathLike, class_names: Sequence[str],
                 palette: Sequence[Sequence[int]] | None = None, thickness: int = 12, paths_key: str | None = None,
                 image_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.palette = None if palette is None else np.asarray(palette, dtype=np.uint8)
        if self.palette is not None and self.palette.shape != (len(self.class_names), 3):
            raise ValueError(f"palette must have {len(self.class_names)} RGB colours, got shape {self.palette.shape}")
        self.thickness = int(thickness)
        self.paths_key = paths_key
        self.image_key = image_key

    @staticmethod
    def _source(*tensors: Any) -> str | None:
        for t in tensors:
            src = getattr(t, "meta", {}).get("filename_or_obj") if t is not None else None
            if isinstance(src, (list, tuple)):
                src = src[0] if src else None
            if src:
                return str(src)
        return None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for key in self.key_iterator(d):
            pred = d[key]
            pkey = self.paths_key or f"{key}_paths"
            paths = d.get(pkey) or {}
            src = self._source(pred, d.get(self.image_key))
            net_size = tuple(int(s) for s in torch.as_tensor(pred).shape[-2:])
            # drawing only: the loader already applied the bundle's nonfinite policy to this file
            frame = read_image_2d(src, nonfinite="replace") if src and os.path.isfile(src) else None
            size = frame.shape[:2] if frame is not None else net_size
            full = scale_paths(paths, net_size, size)
            if pkey in d:
                labels = render_landmarks(full, self.class_names, size, self.thickness)
            else:  # no curves were traced (post-processing off): the label map, resized
                lab = np.asarray(torch.as_tensor(pred).detach().cpu()).reshape(net_size).astype(np.uint8)
                labels = np.asarray(Image.fromarray(lab).resize((size[1], size[0]), Image.NEAREST))
            source = src or f"{key}_{id(pred)}"
            mask = self.palette[labels] if self.palette is not None else labels
            with atomic_write(self.output_dir / mask_output_name(source)) as tmp:
                Image.fromarray(mask).save(tmp)
            if frame is not None:
                img = frame[..., :3] if frame.ndim == 3 else frame
                overlay = overlay_mask(scale_to_unit(img), labels, alpha=0.8, palette=self.palette)
                with atomic_write(self.output_dir / overlay_output_name(source)) as tmp:
                    Image.fromarray(overlay).save(tmp)
            record = landmarks_record(full, size, src)
            with atomic_write(self.output_dir / f"{Path(source).stem}_landmarks.json") as tmp:
                tmp.write_text(json.dumps(record))
        return d
