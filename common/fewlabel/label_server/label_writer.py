"""Write 2D label maps for MONAI Label's ``/infer`` with Pillow (MONAI Label env; imports no MONAI Label).

MONAI Label's segmentation tasks write their result with ITK (``monailabel.transform.writer.Writer``):
for a frame, the ``(W, H)`` label map (see :class:`~fewlabel.transforms.MonaiLabelOutput`) is
transposed to ``(H, W)`` and written as a grey-level PNG of its dtype. ITK loads its IO modules on
first use, which made the first ``/infer`` of a full-size SurgicalSemiSeg frame (854x480) spend
2.6 s of 4.9 s writing the file (``benchmarks/bench_label_server.py`` reports the split).

:class:`PillowLabelWriter` writes that same PNG with Pillow: the same pixels, size and bit depth
(8-bit grey for ``uint8``, 16-bit grey for ``uint16``), to a temporary file named as the stock
writer names it. Anything else (volumes, other file types or dtypes, multi-channel maps,
classification and detection tasks, ``result_write_to_file`` false) goes to the task's own writer.
:class:`PillowWriterApp` puts it on every infer task of the app (``init_infers``).
"""

from __future__ import annotations

import pathlib
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["PillowLabelWriter", "PillowWriterApp", "pillow_png_array"]

_PNG = ".png"
_PIL_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))  # 8- and 16-bit grey PNG, as ITK writes them
_OWN_WRITER_TYPES = ("classification", "detection")  # MONAI Label InferType values with their own writers


def _file_ext(name: str | None) -> str:
    """The file extension as MONAI Label takes it from the image path (``.nii.gz``: both suffixes)."""
    if not name:
        return ""
    suffixes = []
    for s in reversed(pathlib.Path(name).suffixes):
        if len(s) > 10:
            break
        suffixes.append(s)
    return "".join(reversed(suffixes))


def _as_numpy(value: Any) -> np.ndarray | None:
    """A numpy view of a numpy array, a MetaTensor or a tensor on the CPU; ``None`` for anything else."""
    if isinstance(value, np.ndarray):
        return value
    array = getattr(value, "array", None)  # MetaTensor.array: numpy
    if isinstance(array, np.ndarray):
        return array
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()
    return None


def pillow_png_array(pred: Any, dtype: Any = None) -> np.ndarray | None:
    """The ``(H, W)`` array to write as a PNG for a ``(W, H)`` label map, or ``None`` if it is not one.

    Args:
        pred: the task's output, ``(W, H)`` (numpy, MetaTensor or CPU tensor), x first as MONAI Label's
            writer expects it.
        dtype: the request's ``result_dtype`` (cast first, as the stock writer does), or ``None``.

    Returns:
        a C-contiguous ``(H, W)`` ``uint8`` / ``uint16`` array, or ``None`` when ``pred`` is not 2D or
        its dtype (after the cast) is not one Pillow writes as the same grey-level PNG.
    """
    array = _as_numpy(pred)
    if array is None or array.ndim != 2:
        return None
    if dtype:
        try:
            array = array.astype(np.dtype(dtype))
        except TypeError:
            return None
    if array.dtype not in _PIL_DTYPES:
        return None
    return np.ascontiguousarray(array.T)


class PillowLabelWriter:
    """A MONAI Label infer task's ``writer``: 2D label maps as PNG with Pillow, the rest by the task's own.

    Args:
        task: the infer task (``BasicInferTask``); its ``writer`` is kept as the fallback, and its
            ``output_label_key`` / ``output_json_key`` / ``labels`` / ``type`` are read as the stock
            writer reads them.

    Call as the task's ``writer(data, extension=None, dtype=None)``; returns ``(file, result_json)``.
    """

    def __init__(self, task: Any) -> None:
        self.task = task
        self.fallback: Callable[..., tuple[Any, Any]] = task.writer

    def __call__(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        kind = str(getattr(getattr(self.task, "type", ""), "value", getattr(self.task, "type", ""))).lower()
        label_key = getattr(self.task, "output_label_key", "pred")
        if kind in _OWN_WRITER_TYPES or label_key not in data:
            return self.fallback(data, extension, dtype)
        ext = extension or data.get("result_extension") or _file_ext(data.get("image_path"))
        if str(ext).lower() != _PNG or not data.get("result_write_to_file", True):
            return self.fallback(data, extension, dtype)
        image = pillow_png_array(data[label_key], dtype or data.get("result_dtype"))
        if image is None:
            return self.fallback(data, extension, dtype)
        from PIL import Image

        # what the stock writer leaves in data
        if extension is not None:
            data["result_extension"] = extension
        if dtype is not None:
            data["result_dtype"] = dtype
        if getattr(self.task, "labels", None) is not None:
            data["labels"] = self.task.labels
        output_file = tempfile.NamedTemporaryFile(suffix=ext).name  # noqa: SIM115 (a name, as the stock writer)
        Image.fromarray(image).save(output_file, format="PNG", compress_level=1)
        return output_file, data.get(getattr(self.task, "output_json_key", "result"), {})


class PillowWriterApp:
    """Mixin for a ``MONAILabelApp``: every infer task writes 2D label maps with :class:`PillowLabelWriter`.

    Put it before the stock app among the bases.
    """

    def init_infers(self) -> dict[str, Any]:
        infers = super().init_infers()  # type: ignore[misc]
        for task in infers.values():
            if callable(getattr(task, "writer", None)) and not isinstance(task.writer, PillowLabelWriter):
                task.writer = PillowLabelWriter(task)
        return infers
