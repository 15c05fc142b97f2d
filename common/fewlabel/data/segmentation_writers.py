"""Writers of CT segmentations: NIfTI in the input file's geometry, and DICOM SEG for a DICOM series.

A CT bundle loads its input with :func:`fewlabel.data.ct.load_ct_volume` (or
:class:`fewlabel.transforms.ct.LoadCTVolume`), so its prediction is a ``(1, X, Y, Z)`` mask in the
loaded orientation (``"RAS"`` by default: axial axis last, slice 0 the most inferior) whose meta
holds ``affine`` (that orientation), ``original_affine`` (the file's own voxel order),
``spatial_shape`` (the file's shape) and ``filename_or_obj`` (the NIfTI file or the DICOM folder).
This module writes such a mask back in the form a viewer or PACS expects:

- :func:`restore_original_orientation` undoes the re-orientation exactly (a transpose and flips,
  no resampling), so the mask lies on the file's stored voxel grid with ``original_affine``.
- :func:`save_nifti_segmentation` writes a NIfTI label map with the source file's affine (sform
  and qform with their codes, as nibabel reads them) and shape; for a DICOM source, the affine
  :func:`~fewlabel.data.ct.load_ct_volume` gives that series.
- :func:`save_dicom_seg` writes a binary DICOM Segmentation (highdicom) of one segment that
  references the source series, one frame per source slice, matched to the slices by their
  geometry (``ImagePositionPatient`` / ``ImageOrientationPatient`` / ``PixelSpacing``).
- :func:`save_nifti_and_dicom_seg` writes both, or neither when one fails.

The MONAI transforms :class:`fewlabel.transforms.SaveCTSegmentation` / ``SaveCTSegmentationd`` and
the MONAI Deploy writer :class:`fewlabel.deploy.operators.CTSegmentationWriterOperator` call these
functions (as ``monai.transforms.io`` wraps ``monai.data`` writers).

Both writers need the mask on the grid of the loaded volume (same shape and affine, or the
file's own grid); a prediction made at another size must first be mapped back (e.g. with MONAI's
``Invertd``). Nothing here resamples.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from fewlabel.data.ct import NIFTI_SUFFIXES, dicom_series_files, load_ct_volume
from fewlabel.data.files import atomic_write

__all__ = [
    "AFFINE_ATOL",
    "DICOM_SEG_SERIES_NUMBER",
    "ReferenceGeometry",
    "reference_geometry",
    "single_value",
    "restore_original_orientation",
    "save_nifti_segmentation",
    "save_dicom_seg",
    "save_nifti_and_dicom_seg",
    "Segment",
    "segments_from_metadata",
]

#: tolerance (mm in affines, voxels in grid positions) for "the same geometry"
AFFINE_ATOL = 1e-4
_GRID_ATOL = 1e-2
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: default SeriesNumber of the DICOM SEG series
DICOM_SEG_SERIES_NUMBER = 300
#: type 2 (required, may be empty) attributes highdicom copies from the source images into the SEG
_TYPE2_COPIED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                 "StudyDate", "StudyTime", "ReferringPhysicianName")


# ----------------------------------------------------------------------------- reference geometry
@dataclass
class ReferenceGeometry:
    """Geometry of a loaded volume, from its meta.

    ``affine``: voxel -> world of the loaded orientation; ``original_affine``: of the file's voxel
    order; ``spatial_shape``: the file's ``(X, Y, Z)`` (None if unknown); ``shape``: the loaded
    volume's ``(X, Y, Z)`` (None if only a meta dict was given); ``source``: file or folder;
    ``space``: the world coordinates of the affines, ``"RAS"`` (default) or ``"LPS"``.
    Both affines are ``(4, 4)`` float64. Made by :func:`reference_geometry`.
    """

    affine: np.ndarray
    original_affine: np.ndarray
    spatial_shape: tuple[int, ...] | None
    shape: tuple[int, ...] | None
    source: str | None
    space: str


def single_value(value: Any) -> Any:
    """Unwrap a collated batch of one: ``[x]`` / ``(x,)`` -> ``x``; anything else is returned as it is.

    For meta values of a prediction that went through a batch of one (``filename_or_obj``, flags).
    """
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return value[0]
    return value


def _matrix(value: Any, name: str, source: str | None) -> np.ndarray:
    arr = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] == 1:  # collated batch of one
        arr = arr[0]
    if arr.shape != (4, 4) or not np.isfinite(arr).all():
        raise ValueError(f"meta '{name}' of {source or 'the reference'} must be a finite 4x4 matrix, "
                         f"got shape {arr.shape}")
    return arr


def reference_geometry(obj: Any, what: str = "reference") -> ReferenceGeometry:
    """Read the geometry of a loaded volume: a MetaTensor, its meta dict, or a path to load.

    Args:
        obj: a :class:`~monai.data.MetaTensor` (``(1, X, Y, Z)`` or ``(X, Y, Z)``, its shape recorded), its
            meta dict (shape unknown), or a CT volume path loaded with ``load_ct_volume(obj, axcodes="RAS")``.
            The meta needs ``affine`` and ``original_affine`` (4x4, a collated batch of one is accepted).
        what: what ``obj`` is, for error messages (e.g. ``"prediction"``).

    Raises:
        ValueError: ``obj`` has no meta, or its meta lacks ``affine`` / ``original_affine`` or holds a
            matrix that is not finite 4x4 (the message names the file and the fix).
    """
    shape = None
    if isinstance(obj, (str, os.PathLike)):
        obj = load_ct_volume(obj, axcodes="RAS")
    if isinstance(obj, MetaTensor):
        meta: Mapping[str, Any] = obj.meta
        shape = tuple(int(s) for s in obj.shape[-3:])
    elif isinstance(obj, Mapping):
        meta = obj
    else:
        raise ValueError(f"{what} must be a MetaTensor, its meta dict, or a CT volume path; got {type(obj).__name__} "
                         "without meta (pass reference=the loaded volume).")
    source = single_value(meta.get("filename_or_obj"))
    source = None if source is None else os.fspath(source)
    for key in ("affine", "original_affine"):
        if key not in meta:
            raise ValueError(f"{what} ({source or 'no file name'}) has no '{key}' in its meta: it was not loaded "
                             "with fewlabel.data.ct.load_ct_volume / LoadCTVolume, or its meta was dropped.")
    sp = meta.get("spatial_shape")
    if sp is not None:
        sp_arr = np.asarray(sp.detach().cpu() if isinstance(sp, torch.Tensor) else sp).reshape(-1)
        sp = tuple(int(s) for s in sp_arr[-3:])
    return ReferenceGeometry(
        affine=_matrix(meta["affine"], "affine", source),
        original_affine=_matrix(meta["original_affine"], "original_affine", source),
        spatial_shape=sp,
        shape=shape,
        source=source,
        space=str(single_value(meta.get("space", "RAS"))),
    )


def _mask_tensor(mask: Any, source: str | None) -> torch.Tensor:
    """``(1, X, Y, Z)`` or ``(X, Y, Z)`` tensor / array -> plain ``(X, Y, Z)`` tensor (dtype kept)."""
    if isinstance(mask, MetaTensor):
        t = mask.as_tensor()
    elif isinstance(mask, torch.Tensor):
        t = mask
    else:
        t = torch.as_tensor(np.asarray(mask))
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3:
        raise ValueError(f"mask for {source or 'the reference'} must be (1, X, Y, Z) or (X, Y, Z), got shape "
                         f"{tuple(t.shape)}")
    return t.detach().cpu()


# ----------------------------------------------------------------------------- orientation
def _reorientation(ref: ReferenceGeometry, loaded_shape: Sequence[int]) -> tuple[list[int], list[bool], np.ndarray]:
    """The transpose and flips that take the loaded grid to the file's voxel order.

    Returns ``(axes, flips, affine)``: output axis ``j`` is loaded axis ``axes[j]``, reversed where
    ``flips[j]``; ``affine`` is the affine of the result (``ref.affine`` composed with that map).

    Raises:
        ValueError: ``affine`` and ``original_affine`` differ by more than a transpose and flips of
            this grid (resampled, cropped or shifted mask).
    """
    vox = np.linalg.solve(ref.affine, ref.original_affine)  # file voxel -> loaded voxel
    lin = vox[:3, :3]
    perm = np.rint(lin)
    if not (np.allclose(lin, perm, atol=_GRID_ATOL) and np.all(np.abs(perm).sum(0) == 1)
            and np.all(np.abs(perm).sum(1) == 1)):
        raise ValueError(
            f"the mask's affine is not a transpose/flip of original_affine for {ref.source}: its grid was resampled "
            "(map the prediction back to the loaded volume's grid first, e.g. with Invertd).\n"
            f"affine:\n{ref.affine}\noriginal_affine:\n{ref.original_affine}")
    axes = [int(np.flatnonzero(perm[:, j])[0]) for j in range(3)]
    flips = [bool(perm[axes[j], j] < 0) for j in range(3)]
    step = np.zeros((4, 4))
    step[3, 3] = 1.0
    for j, (a, f) in enumerate(zip(axes, flips)):
        step[a, j] = -1.0 if f else 1.0
        step[a, 3] = loaded_shape[a] - 1 if f else 0.0
    return axes, flips, ref.affine @ step


def restore_original_orientation(mask: torch.Tensor | np.ndarray, reference: Any = None) -> MetaTensor:
    """Bring a mask in the loaded orientation back to the file's stored voxel order.

    The inverse of the ``Orientation`` step of :func:`~fewlabel.data.ct.load_ct_volume`, done as
    an exact transpose and flips (no interpolation, values and dtype kept).

    Args:
        mask: ``(1, X, Y, Z)`` or ``(X, Y, Z)`` tensor / array / MetaTensor of any dtype, in the
            orientation of the loaded volume (its meta ``affine``).
        reference: where the geometry comes from: the loaded volume (MetaTensor), its meta dict,
            or a path to load; default the mask's own meta (it must be a MetaTensor then).

    Returns:
        ``(1, X', Y', Z')`` :class:`~monai.data.MetaTensor` in the file's voxel order, with a copy of
        the reference meta whose ``affine`` is ``original_affine`` and ``spatial_shape`` the new
        shape. Its affine equals ``original_affine`` to ``1e-4``.

    Raises:
        ValueError: no geometry (plain array without ``reference``), the mask's size is not the
            loaded volume's (message names both shapes and the file), or the two affines are not
            related by a transpose and flips of the grid (a resampled mask).
    """
    ref_obj = mask if reference is None else reference
    ref = reference_geometry(ref_obj, "reference" if reference is not None else "mask")
    t = _mask_tensor(mask, ref.source)
    shape = tuple(int(s) for s in t.shape)
    if ref.shape is not None and shape != ref.shape:
        raise ValueError(f"mask shape {shape} does not match the loaded volume {ref.source}: {ref.shape} (X, Y, Z).")
    axes, flips, affine = _reorientation(ref, shape)
    out_shape = tuple(shape[a] for a in axes)
    if ref.spatial_shape is not None and out_shape != ref.spatial_shape:
        loaded = [0, 0, 0]
        for j, a in enumerate(axes):
            loaded[a] = ref.spatial_shape[j]
        raise ValueError(f"mask shape {shape} does not match the volume {ref.source}: loaded shape {tuple(loaded)}, "
                         f"stored shape {ref.spatial_shape} (X, Y, Z).")
    if not np.allclose(affine, ref.original_affine, atol=AFFINE_ATOL):
        raise ValueError(f"restored affine of the mask for {ref.source} does not match original_affine "
                         f"(tolerance {AFFINE_ATOL}): the mask was shifted or cropped.\nrestored:\n{affine}\n"
                         f"original_affine:\n{ref.original_affine}")
    out = t.permute(*axes)
    flip_dims = [j for j, f in enumerate(flips) if f]
    if flip_dims:
        out = torch.flip(out, dims=flip_dims)
    src_meta = dict(ref_obj.meta) if isinstance(ref_obj, MetaTensor) else (
        dict(ref_obj) if isinstance(ref_obj, Mapping) else {})
    src_meta.update(affine=torch.as_tensor(ref.original_affine, dtype=torch.float64),
                    spatial_shape=np.asarray(out_shape), filename_or_obj=ref.source)
    return MetaTensor(out.contiguous()[None], meta=src_meta)


# ----------------------------------------------------------------------------- NIfTI
def _label_values(arr: np.ndarray, dtype: np.dtype | type, source: str | None) -> np.ndarray:
    """Check a label array holds whole numbers that fit ``dtype`` and cast it."""
    dtype = np.dtype(dtype)
    if arr.dtype == np.bool_:
        return arr.astype(dtype)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise ValueError(f"mask for {source} holds non-integer values; threshold or argmax the prediction "
                             "to class indices before saving.")
    if dtype.kind in "ui" and arr.size:
        lo, hi = arr.min(), arr.max()
        info = np.iinfo(dtype)
        if lo < info.min or hi > info.max:
            raise ValueError(f"mask for {source} has values in [{lo}, {hi}], outside the range of {dtype.name}; "
                             "pass a wider dtype.")
    return arr.astype(dtype)


def _is_nifti_path(path: str | None) -> bool:
    return path is not None and any(path.lower().endswith(s) for s in NIFTI_SUFFIXES)


def _nifti_like_source(data: np.ndarray, affine: np.ndarray, source: str | None) -> Any:
    """A ``Nifti1Image`` of ``data`` whose header geometry copies the source NIfTI (if it is one).

    For a NIfTI source the sform and qform are copied with their codes, so nibabel reads back the
    source's affine; otherwise ``affine`` is written as both (code 1, scanner).
    """
    import nibabel as nib

    img = nib.Nifti1Image(data, None)
    if _is_nifti_path(source) and os.path.isfile(str(source)):
        src = nib.load(str(source))
        if tuple(src.shape[:3]) != data.shape:
            raise ValueError(f"mask restored to shape {data.shape} does not match the source NIfTI {source}: "
                             f"{tuple(src.shape[:3])}.")
        if not np.allclose(src.affine, affine, atol=AFFINE_ATOL):
            raise ValueError(f"source NIfTI {source} has another affine than the one it was loaded with "
                             f"(file changed since loading?):\n{src.affine}\nvs original_affine\n{affine}")
        hdr = src.header
        img.header.set_zooms(hdr.get_zooms()[:3])
        img.set_qform(hdr.get_qform(), code=int(hdr["qform_code"]))
        img.set_sform(hdr.get_sform(), code=int(hdr["sform_code"]))
    else:
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_intent("label")
    return img


def save_nifti_segmentation(mask: torch.Tensor | np.ndarray, reference: Any, path: str | os.PathLike,
                            dtype: np.dtype | type = np.uint8) -> Path:
    """Write a segmentation as NIfTI with exactly the input file's affine and shape.

    The mask is brought back to the file's voxel order (:func:`restore_original_orientation`),
    so nibabel reads the result with the same ``affine`` and ``shape`` as the source NIfTI (sform
    and qform copied with their codes). For a DICOM series source the NIfTI gets the affine
    :func:`~fewlabel.data.ct.load_ct_volume` gives that series (its ``original_affine``, RAS,
    sform / qform code 1) and its stored shape ``(columns, rows, slices)``.

    Args:
        mask: ``(1, X, Y, Z)`` or ``(X, Y, Z)`` torch / numpy / MetaTensor in the loaded orientation
            of ``reference``: bool, 0/1 or class indices (whole numbers; floats must be integral).
        reference: the loaded volume (MetaTensor with meta ``affine``, ``original_affine``,
            ``spatial_shape``, ``filename_or_obj``), its meta dict, or the source path (loaded
            with ``axcodes="RAS"``).
        path: output ``.nii.gz`` / ``.nii``; parent folders are created.
        dtype: stored integer dtype (default uint8; values must fit it).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: the mask's size differs from the reference (both shapes named), values are not
            whole numbers or do not fit ``dtype``, or the geometry cannot be restored exactly.
    """
    import nibabel as nib

    restored = restore_original_orientation(mask, reference)
    source = restored.meta.get("filename_or_obj")
    data = _label_values(restored[0].as_tensor().numpy(), dtype, source)
    img = _nifti_like_source(np.ascontiguousarray(data), np.asarray(restored.affine, dtype=np.float64), source)
    path = Path(path)
    with atomic_write(path) as tmp:  # a run stopped mid-write leaves no file that looks finished
        nib.save(img, os.fspath(tmp))
    return path


# ----------------------------------------------------------------------------- DICOM SEG
def _sorted_headers(datasets: Sequence[Any]) -> list[Any]:
    """Copies of the series' headers sorted along the slice normal (inferior first for axial CT).

    Type 2 patient / study attributes highdicom copies are set empty where absent (on the copies).
    """
    import copy

    out = []
    for ds in datasets:
        ds = copy.copy(ds)  # shallow: the caller's datasets are not changed
        for keyword in _TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, "")
        out.append(ds)
    iop = np.asarray(out[0].ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(out, key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=np.float64))))


def _series_datasets(source: str | os.PathLike | Sequence[Any]) -> list[Any]:
    """Headers of the series in folder ``source`` (or the given pydicom datasets), sorted along the slice normal."""
    import pydicom

    if isinstance(source, (str, os.PathLike)):
        files = dicom_series_files(source)  # DataError naming the folder when there is no series
        return _sorted_headers([pydicom.dcmread(f, stop_before_pixels=True) for f in files])
    datasets = list(source)
    if not datasets:
        raise ValueError("save_dicom_seg got an empty list of source datasets: pass the series' DICOM images.")
    uids = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in datasets}
    if len(uids) != 1:
        raise ValueError(f"the source datasets belong to {len(uids)} series ({sorted(uids)[:3]}...); a DICOM SEG "
                         "references one series: pass that series' images only.")
    return _sorted_headers(datasets)


def _frame_indices(ds: Any, world_to_voxel: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask voxel indices ``(ix, iy, iz)``, each ``(rows, columns)``, of every pixel of source frame ``ds``.

    Pixel (row ``r``, column ``c``) lies at ``IPP + c * dx * IOP[:3] + r * dy * IOP[3:]`` (LPS, mm)
    with ``PixelSpacing = [dy, dx]``; ``world_to_voxel`` maps LPS to the mask's voxel grid.
    """
    iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    lin, off = world_to_voxel[:3, :3], world_to_voxel[:3, 3]
    origin = lin @ np.asarray(ds.ImagePositionPatient, dtype=np.float64) + off
    step_c, step_r = lin @ (dx * iop[:3]), lin @ (dy * iop[3:])
    exact = np.stack([origin, step_c, step_r])
    if not np.allclose(exact, np.rint(exact), atol=_GRID_ATOL):
        raise ValueError(f"the mask's voxel grid does not line up with the pixels of {where} (mask resampled or "
                         "reference from another series); map the prediction back to the loaded series first.")
    origin, step_c, step_r = (np.rint(v).astype(np.int64) for v in (origin, step_c, step_r))
    rows = np.arange(int(ds.Rows), dtype=np.int64)[:, None, None]
    cols = np.arange(int(ds.Columns), dtype=np.int64)[None, :, None]
    idx = origin + rows * step_r + cols * step_c  # (rows, columns, 3)
    return idx[..., 0], idx[..., 1], idx[..., 2]


def _frames_from_mask(mask: np.ndarray, ref: ReferenceGeometry, datasets: Sequence[Any], folder: str) -> np.ndarray:
    """Resample nothing: pick, for each source slice, the mask voxels on its pixels -> ``(N, rows, columns)``."""
    affine = ref.affine if ref.space.upper() == "LPS" else _LPS_FROM_RAS @ ref.affine
    world_to_voxel = np.linalg.inv(affine)
    series = (int(datasets[0].Columns), int(datasets[0].Rows), len(datasets))
    if mask.size != int(np.prod(series)):
        raise ValueError(f"mask shape {mask.shape} does not match the DICOM series in {folder}: "
                         f"{series[0]} columns x {series[1]} rows x {series[2]} slices.")
    frames = np.zeros((len(datasets), series[1], series[0]), dtype=mask.dtype)
    for n, ds in enumerate(datasets):
        where = f"{folder} (SOPInstanceUID {ds.SOPInstanceUID})"
        ix, iy, iz = _frame_indices(ds, world_to_voxel, where)
        inside = all((i.min() >= 0 and i.max() < s) for i, s in zip((ix, iy, iz), mask.shape))
        if not inside:
            raise ValueError(f"mask shape {mask.shape} does not cover slice {where}: the mask is not on the grid of "
                             f"the series ({series[0]} columns x {series[1]} rows x {series[2]} slices).")
        frames[n] = mask[ix, iy, iz]
    return frames


@dataclass(frozen=True)
class Segment:
    """One segment of a DICOM SEG: which mask value it is and what it means.

    ``category`` / ``type`` are ``(coding scheme, code value, code meaning)`` triples, e.g.
    ``("SCT", "91723000", "Anatomical Structure")`` / ``("SCT", "10200004", "Liver")``.
    """

    label_value: int
    label: str
    category: tuple[str, str, str] = ("SCT", "91723000", "Anatomical Structure")
    type: tuple[str, str, str] = ("SCT", "10200004", "Liver")


def segments_from_metadata(metadata: Mapping[str, Any], source: str = "metadata.json") -> list[Segment]:
    """The segments a bundle's ``metadata.json`` declares for DICOM SEG output.

    Reads ``metadata["segment_descriptions"]``: a list of ``{"label_value": int, "segment_label":
    str, "category": [scheme, code, meaning], "type": [scheme, code, meaning]}`` (codes from
    DICOM CID 7150 / 7151, usually SNOMED CT ``"SCT"``).

    Raises:
        ValueError: the field is missing or malformed (message names ``source`` and the entry),
            or two segments share a label value.
    """
    entries = metadata.get("segment_descriptions")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{source} has no 'segment_descriptions' list: add one entry per label value, e.g. "
                         '{"label_value": 1, "segment_label": "Liver", "category": ["SCT", "91723000", "Anatomical '
                         'Structure"], "type": ["SCT", "10200004", "Liver"]}.')
    segments = []
    for i, e in enumerate(entries):
        try:
            category, kind = tuple(str(v) for v in e["category"]), tuple(str(v) for v in e["type"])
            if len(category) != 3 or len(kind) != 3:
                raise ValueError("category and type must be [scheme, code, meaning]")
            segments.append(Segment(int(e["label_value"]), str(e["segment_label"]), category, kind))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source}: segment_descriptions[{i}] is malformed ({err}); it needs label_value, "
                             "segment_label, category and type ([scheme, code, meaning]).") from err
    values = [seg.label_value for seg in segments]
    if len(set(values)) != len(values) or min(values) < 1:
        raise ValueError(f"{source}: segment_descriptions label values {values} must be distinct and >= 1.")
    return segments


def _segment_numbers(arr: np.ndarray, segments: Sequence[Segment], source: str) -> np.ndarray:
    """Label map -> highdicom segment numbers (1..N in the order of ``segments``, 0 = background)."""
    values = [seg.label_value for seg in segments]
    found = np.unique(arr)
    extra = sorted(set(found.tolist()) - {0, *values})
    if extra:
        if len(segments) == 1:
            raise ValueError(f"DICOM SEG of {source} is binary (one segment) but the mask holds values "
                             f"{found[:10].tolist()}; pass mask == class_index.")
        raise ValueError(f"the mask of {source} holds values {extra[:10]} that no segment describes (segments: "
                         f"{values}).")
    out = np.zeros(arr.shape, dtype=np.uint8)
    for number, value in enumerate(values, start=1):
        out[arr == value] = number
    return out


def save_dicom_seg(
    mask: torch.Tensor | np.ndarray,
    source_dir: str | os.PathLike | Sequence[Any],
    path: str | os.PathLike,
    reference: Any = None,
    segment_label: str = "Liver",
    segments: Sequence[Segment] | None = None,
    algorithm_name: str = "fewlabel",
    algorithm_version: str | None = None,
    series_description: str | None = None,
    manufacturer: str = "fewlabel",
    manufacturer_model_name: str = "fewlabel CT segmentation",
    device_serial_number: str = "0",
    series_number: int = DICOM_SEG_SERIES_NUMBER,
    segmented_property_category: Any = None,
    segmented_property_type: Any = None,
    omit_empty_frames: bool = True,
) -> Path:
    """Write a binary DICOM Segmentation of a DICOM CT series with highdicom.

    Source images are the series' headers (pydicom, no pixel data) sorted along the slice normal
    (type 2 patient / study attributes they lack, e.g. ``PatientBirthDate``, are set empty in
    memory, as the standard allows, because highdicom copies them);
    frame ``n`` is the mask on the pixels of source slice ``n``, found from that slice's
    ``ImagePositionPatient`` / ``ImageOrientationPatient`` / ``PixelSpacing`` and the mask's
    affine (never from ``InstanceNumber``), so rows and columns, slice order and flips follow the
    geometry. The SEG shares the source's study and patient and references the source series
    (``ReferencedSeriesSequence``) and, per frame, its source instance.

    Empty frames are left out by default (``omit_empty_frames``, highdicom's default); when the
    whole mask is empty, every frame is written (all zero) so the SEG is still a valid instance
    that says "no liver" on every referenced slice.

    Args:
        mask: ``(1, X, Y, Z)`` or ``(X, Y, Z)`` array, tensor or MetaTensor in the orientation of
            ``reference``: bool / 0-1 for one segment, or a label map whose values are the
            ``label_value`` of ``segments``.
        source_dir: folder holding the source DICOM series, or the series' pydicom datasets
            (e.g. from MONAI Deploy's series selection; pixel data not needed).
        path: output file (``.dcm``); parent folders are created.
        reference: the loaded volume whose grid the mask is on (MetaTensor or its meta dict);
            default ``load_ct_volume(source_dir, "RAS")`` (reads the series again; a folder only).
        segment_label: the label of the single default segment (value 1, Liver codes below).
        segments: the segments to write instead (:class:`Segment`, e.g. from a bundle's metadata
            by :func:`segments_from_metadata`); segment ``n`` is the ``n``-th of the list.
        algorithm_name, algorithm_version: algorithm identification (family Artificial
            Intelligence); version defaults to ``fewlabel.__version__``.
        series_description: default ``"<segment_label> segmentation (<algorithm_name>)"``.
        manufacturer, manufacturer_model_name, device_serial_number, series_number: equipment
            and series attributes of the SEG.
        segmented_property_category, segmented_property_type: coded concepts; default
            ``Anatomical Structure`` (SCT 91723000, from CID 7150) and ``Liver`` (SCT 10200004).
        omit_empty_frames: leave out slices without foreground (ignored for an empty mask).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: ``source_dir`` is missing or holds no (or more than one) DICOM series.
        ValueError: the mask's size does not match the series (folder and shapes named), it holds
            values no segment describes (not binary for one segment), or its grid does not line up
            with the source slices; datasets from more than one series.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    import fewlabel

    is_folder = isinstance(source_dir, (str, os.PathLike))
    datasets = _series_datasets(source_dir)
    folder = os.fspath(source_dir) if is_folder else f"series {datasets[0].SeriesInstanceUID}"
    if reference is None and not is_folder:
        raise ValueError("save_dicom_seg with source datasets needs reference= (the volume the mask is on).")
    ref = reference_geometry(load_ct_volume(folder, axcodes="RAS") if reference is None else reference)
    if segments is None:
        category, kind = segmented_property_category, segmented_property_type
        segments = [Segment(1, segment_label)]
    else:
        segments, category, kind = list(segments), None, None
    arr = _mask_tensor(mask, folder).numpy()
    if ref.shape is not None and tuple(arr.shape) != ref.shape:
        raise ValueError(f"mask shape {tuple(arr.shape)} does not match the DICOM series in {folder}: "
                         f"loaded shape {ref.shape} (X, Y, Z).")
    arr = _segment_numbers(arr, segments, folder)
    frames = _frames_from_mask(arr, ref, datasets, folder)
    empty = not frames.any()
    version = algorithm_version or str(getattr(fewlabel, "__version__", "unknown"))
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=version)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=seg.label,
            segmented_property_category=category or hd.sr.CodedConcept(seg.category[1], seg.category[0],
                                                                        seg.category[2]),
            segmented_property_type=kind or hd.sr.CodedConcept(seg.type[1], seg.type[0], seg.type[2]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, seg in enumerate(segments, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(series_number),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name=manufacturer_model_name,
        software_versions=version,
        device_serial_number=device_serial_number,
        series_description=series_description or f"{', '.join(x.label for x in segments)} segmentation "
                                                  f"({algorithm_name})",
        omit_empty_frames=bool(omit_empty_frames) and not empty,
    )
    path = Path(path)
    with atomic_write(path) as tmp:  # a run stopped mid-write leaves no file that looks finished
        seg.save_as(tmp)
    return path


def save_nifti_and_dicom_seg(
    mask: torch.Tensor | np.ndarray,
    reference: Any,
    nifti_path: str | os.PathLike,
    source: str | os.PathLike | Sequence[Any],
    dicom_path: str | os.PathLike,
    dtype: np.dtype | type = np.uint8,
    **dicom_seg_kwargs: Any,
) -> tuple[Path, Path]:
    """Write a CT segmentation as NIfTI and as DICOM SEG of its source series: both, or neither.

    The NIfTI (:func:`save_nifti_segmentation`) is written under a temporary name and renamed into
    place only after the SEG (:func:`save_dicom_seg`, itself written atomically) is complete, so a
    failing SEG leaves no lone NIfTI that looks like a complete result.

    Args:
        mask: ``(1, X, Y, Z)`` or ``(X, Y, Z)`` label map in the orientation of ``reference``.
        reference: the loaded volume (MetaTensor) or its meta dict (see :func:`save_nifti_segmentation`).
        nifti_path: output ``.nii.gz`` / ``.nii``.
        source: the DICOM series: its folder or its pydicom datasets (``source_dir`` of :func:`save_dicom_seg`).
        dicom_path: output ``.dcm``.
        dtype: NIfTI dtype (default uint8).
        dicom_seg_kwargs: passed to :func:`save_dicom_seg` (``segments``, ``segment_label``, ``algorithm_name``, ...).

    Returns:
        ``(nifti_path, dicom_path)`` as :class:`~pathlib.Path`.

    Raises:
        ValueError, DataError: as :func:`save_nifti_segmentation` and :func:`save_dicom_seg`; nothing is left
            written then.
    """
    nifti_path = Path(nifti_path)
    with atomic_write(nifti_path) as tmp_nifti:
        save_nifti_segmentation(mask, reference, tmp_nifti, dtype=dtype)
        dicom_path = save_dicom_seg(mask, source, dicom_path, reference=reference, **dicom_seg_kwargs)
    return nifti_path, dicom_path
