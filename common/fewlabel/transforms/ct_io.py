"""MONAI transforms writing CT segmentations: NIfTI in the input file's geometry, and DICOM SEG for a DICOM series.

:class:`SaveCTSegmentation` / :class:`SaveCTSegmentationd` wrap the writers of
:mod:`fewlabel.data.segmentation_writers` (as ``monai.transforms.io`` wraps ``monai.data`` writers);
the names moved there (``save_nifti_segmentation``, ``save_dicom_seg``, ``restore_original_orientation``,
``Segment``, ``segments_from_metadata``, ...) are still importable from here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from fewlabel.data.ct import ct_output_stem, parse_series_ref
from fewlabel.data.segmentation_writers import (
    Segment,
    reference_geometry,
    restore_original_orientation,
    save_dicom_seg,
    save_nifti_and_dicom_seg,
    save_nifti_segmentation,
    segments_from_metadata,
    single_value,
)
from fewlabel.moved import lazy_reexports

__all__ = [
    "restore_original_orientation",
    "save_nifti_segmentation",
    "save_dicom_seg",
    "Segment",
    "segments_from_metadata",
    "SaveCTSegmentation",
    "SaveCTSegmentationd",
]

logger = logging.getLogger("fewlabel.transforms")
# moved to fewlabel.data.segmentation_writers, still importable from here
__getattr__ = lazy_reexports(__name__, {name: "fewlabel.data.segmentation_writers"
                                        for name in ("AFFINE_ATOL", "DICOM_SEG_SERIES_NUMBER")})


def _stem(source: str) -> str:
    """NIfTI file name without ``.nii`` / ``.nii.gz``, the DICOM folder's name, or a series reference's UID.

    The one naming rule of CT results: :func:`fewlabel.data.ct.ct_output_stem`, which
    :func:`~fewlabel.data.ct.list_ct_volumes` also uses to refuse inputs that would share a result.
    """
    return ct_output_stem(source)


class SaveCTSegmentation(Transform):
    """Write a CT segmentation as ``<stem><suffix>.nii.gz`` and, for a DICOM source, ``<stem><suffix>.dcm``.

    Input: the predicted ``(1, X, Y, Z)`` :class:`~monai.data.MetaTensor` (class indices; bool,
    0/1 or integers) in the orientation of the loaded CT volume, whose meta carries that volume's
    ``filename_or_obj``, ``affine``, ``original_affine`` and ``spatial_shape`` (as
    :class:`~fewlabel.transforms.ct.LoadCTVolume` gives them). ``stem`` is
    :func:`fewlabel.data.ct.ct_output_stem` of the source: the NIfTI file name without ``.nii`` /
    ``.nii.gz``, the DICOM folder's name, or the ``SeriesInstanceUID`` of a ``"<folder>#<uid>"``
    series reference. The NIfTI is always written (:func:`save_nifti_segmentation`); the DICOM SEG
    (:func:`save_dicom_seg`, mask must be binary) when the source is a DICOM series and
    ``dicom_seg`` is ``"auto"`` or ``True`` -- except, with ``"auto"``, for a volume loaded with
    ``uneven_spacing="resample"`` (meta ``resampled_slices``; its slices are not the series', a
    warning says so). Every file is written under a temporary name and renamed when complete; the
    NIfTI of a DICOM source is renamed only after its SEG is written, so a failing SEG leaves
    neither.

    The mask is returned unchanged (same object); the written paths are recorded in its meta as
    ``meta["saved_files"]``: a list of strings, the NIfTI first, then the SEG if written.

    Args:
        output_dir: output folder (created).
        suffix: added to the stem (default ``"_seg"``).
        dicom_seg: ``"auto"`` (SEG for DICOM sources only), ``True`` (required: a NIfTI source is
            a ValueError naming the file) or ``False`` (never).
        segment_label: SEG segment label.
        dtype: NIfTI dtype (default uint8).
        algorithm_name, algorithm_version, series_description, manufacturer: passed to
            :func:`save_dicom_seg`.
        omit_empty_frames: passed to :func:`save_dicom_seg`.
    """

    def __init__(self, output_dir: str | os.PathLike, suffix: str = "_seg", dicom_seg: bool | str = "auto",
                 segment_label: str = "Liver", dtype: np.dtype | type = np.uint8, algorithm_name: str = "fewlabel",
                 algorithm_version: str | None = None, series_description: str | None = None,
                 manufacturer: str = "fewlabel", omit_empty_frames: bool = True) -> None:
        if dicom_seg not in ("auto", True, False):
            raise ValueError(f"dicom_seg must be 'auto', True or False, got {dicom_seg!r}")
        self.output_dir = Path(output_dir)
        self.suffix = suffix
        self.dicom_seg = dicom_seg
        self.dtype = dtype
        self.seg_kwargs: dict[str, Any] = dict(
            segment_label=segment_label, algorithm_name=algorithm_name, algorithm_version=algorithm_version,
            series_description=series_description, manufacturer=manufacturer, omit_empty_frames=omit_empty_frames)

    def save(self, mask: torch.Tensor, reference: Any = None) -> list[Path]:
        """Write the files for ``mask`` (geometry from ``reference``, default the mask's meta); return their paths."""
        ref = reference_geometry(mask if reference is None else reference, "prediction")
        if not ref.source:
            raise ValueError("the prediction's meta has no filename_or_obj: cannot name the output nor find the "
                             "source series; keep the meta of LoadCTVolume on the prediction.")
        is_dicom = parse_series_ref(ref.source)[0].is_dir()
        if self.dicom_seg is True and not is_dicom:
            raise ValueError(f"dicom_seg=True but the source {ref.source} is not a DICOM series folder; a DICOM SEG "
                             "needs the source DICOM images (use dicom_seg='auto' or False for NIfTI input).")
        geometry = mask if reference is None else reference
        stem = _stem(ref.source) + self.suffix
        nifti, dcm = self.output_dir / f"{stem}.nii.gz", self.output_dir / f"{stem}.dcm"
        meta = getattr(geometry, "meta", geometry) if isinstance(geometry, (MetaTensor, Mapping)) else {}
        resampled = single_value(meta.get("resampled_slices")) if isinstance(meta, Mapping) else None
        want_seg = is_dicom and self.dicom_seg in ("auto", True)
        if want_seg and resampled and self.dicom_seg == "auto":
            logger.warning("%s: no DICOM SEG written, only %s: the volume was %s, so its slices are not the "
                           "series' slices.", ref.source, nifti.name, resampled)
            want_seg = False
        if not want_seg:
            return [save_nifti_segmentation(mask, geometry, nifti, dtype=self.dtype)]
        # both or neither: a failing SEG leaves no lone NIfTI that looks like a complete result
        return list(save_nifti_and_dicom_seg(mask, geometry, nifti, ref.source, dcm, dtype=self.dtype,
                                             **self.seg_kwargs))

    def __call__(self, mask: torch.Tensor) -> torch.Tensor:
        written = self.save(mask)
        if isinstance(mask, MetaTensor):
            mask.meta["saved_files"] = [os.fspath(p) for p in written]
        return mask


class SaveCTSegmentationd(MapTransform):
    """Dictionary-based twin of :class:`SaveCTSegmentation`.

    For each key, writes the files of ``d[key]`` and stores their paths (strings, NIfTI first) in
    ``d[f"{key}{files_postfix}"]`` (default ``"pred_files"`` for key ``"pred"``) as well as in the
    mask's meta ``"saved_files"``. The masks themselves are not changed.

    Args:
        keys: prediction key(s) (default ``"pred"``).
        output_dir, suffix, dicom_seg, segment_label, dtype, algorithm_name, algorithm_version,
            series_description, manufacturer, omit_empty_frames: as :class:`SaveCTSegmentation`.
        reference_key: take the geometry (meta) from ``d[reference_key]`` (e.g. ``"image"``)
            instead of the prediction's own meta.
        files_postfix: postfix of the key receiving the written paths.
    """

    def __init__(self, keys: KeysCollection = "pred", output_dir: str | os.PathLike = ".", suffix: str = "_seg",
                 dicom_seg: bool | str = "auto", segment_label: str = "Liver", dtype: np.dtype | type = np.uint8,
                 algorithm_name: str = "fewlabel", algorithm_version: str | None = None,
                 series_description: str | None = None, manufacturer: str = "fewlabel",
                 omit_empty_frames: bool = True, reference_key: str | None = None, files_postfix: str = "_files",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.saver = SaveCTSegmentation(output_dir, suffix, dicom_seg, segment_label, dtype, algorithm_name,
                                        algorithm_version, series_description, manufacturer, omit_empty_frames)
        self.reference_key = reference_key
        self.files_postfix = files_postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        reference = d[self.reference_key] if self.reference_key is not None else None
        for key in self.key_iterator(d):
            written = [os.fspath(p) for p in self.saver.save(d[key], reference)]
            if isinstance(d[key], MetaTensor):
                d[key].meta["saved_files"] = written
            d[f"{key}{self.files_postfix}"] = written
        return d
