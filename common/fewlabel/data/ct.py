"""CT volumes: loading (NIfTI / DICOM series), the middle-slice rule, a slice index, and phantoms.

PolyCL (Ward et al., MELBA 2025, section 4.2) trains on 2D axial slices of abdominal CT: each
scan's *middle 30 %* of slices is kept (the liver spans only part of a scan), slices are
window-levelled (width 400 HU, level 40 HU, see :class:`fewlabel.transforms.ct.CTWindow`),
scaled to [0, 1] and resized to 256 x 256. This module provides the volume side of that:

- :func:`load_ct_volume` reads a NIfTI file or a folder holding one DICOM CT series through
  MONAI's ``LoadImage`` and returns a channel-first :class:`~monai.data.MetaTensor` in HU; a DICOM
  series must be one evenly spaced stack (:func:`check_slice_geometry`), a NIfTI one 3D volume.
- :func:`list_ct_volumes` finds the inference inputs of a folder: NIfTI files, DICOM sub-folders
  and loose series (``"<folder>#<SeriesInstanceUID>"``, :func:`series_ref`), named by
  :func:`ct_output_stem`.
- :func:`middle_slices` is the middle-fraction rule on slice counts.
- :func:`build_slice_index` turns a datalist of volumes into a per-slice table
  (:class:`SliceIndex`: scan id, slice position, organ flag, image path) that PolyCL's example
  selection (:func:`fewlabel.data.contrastive_selection.select_examples`) consumes.
- :func:`write_ct_phantom` / :func:`write_ct_phantom_dicom` write a deterministic abdominal CT
  phantom (HU, with a liver label) as NIfTI or as a DICOM CT series, for tests and demos; they live
  in :mod:`fewlabel.data.phantoms.ct` with the other phantoms and are re-exported here.

Axis convention
---------------
Every volume returned here is ``(1, X, Y, Z)`` -- MONAI's channel-first order with the voxel
axes of the NIfTI / ITK convention (the DICOM reader swaps rows and columns to match) --
re-oriented to ``axcodes`` (default ``"RAS"``): axis 1 runs from patient left to right, axis 2
from posterior to anterior, axis 3 from inferior to superior. **The axial axis is the last one**
(``vol[..., k]`` is axial slice ``k``, slice 0 the most inferior), whatever order the file stored
its slices in. An axial slice ``vol[0, :, :, k]`` is ``(X, Y)``; ``vol[0, :, :, k].T`` is
``(rows, columns)`` like a DICOM frame (with ``axcodes="LPS"`` it is then in the radiological
display orientation: patient's right on the viewer's left, anterior at the top). Slice positions
in a :class:`SliceIndex` are indices along this last axis in the same orientation.
``axcodes=None`` keeps the voxel order as stored (then the axial axis is last only if the file
stores it last, as axial CT files normally do).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from fewlabel.errors import DataError
from fewlabel.moved import lazy_reexports

__all__ = [
    "NIFTI_SUFFIXES",
    "ROUNDING",
    "middle_slices",
    "middle_bounds",
    "load_ct_volume",
    "as_ct_volume",
    "dicom_series_files",
    "list_ct_volumes",
    "series_ref",
    "parse_series_ref",
    "ct_output_stem",
    "UNEVEN_SPACING",
    "SliceGeometry",
    "check_slice_geometry",
    "SliceIndex",
    "build_slice_index",
    "file_signature",
    "organ_flags",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: rounding modes of :func:`middle_slices`
ROUNDING = ("half_up", "floor", "ceil")
_INDEX_VERSION = 1
logger = logging.getLogger("fewlabel.data")


# ----------------------------------------------------------------------------- middle slices
def middle_bounds(num_slices: int, fraction: float = 0.3, rounding: str = "half_up") -> tuple[int, int]:
    """``(start, stop)``: the slice range :func:`middle_slices` keeps of ``num_slices`` (arguments as there).

    Raises:
        ValueError: ``num_slices`` not a positive integer, ``fraction`` outside (0, 1] or an unknown
            ``rounding`` (one of :data:`ROUNDING`).
    """
    if isinstance(num_slices, bool) or int(num_slices) != num_slices or num_slices < 1:
        raise ValueError(f"num_slices must be a positive integer, got {num_slices!r}")
    num_slices = int(num_slices)
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if rounding not in ROUNDING:
        raise ValueError(f"rounding must be one of {ROUNDING}, got {rounding!r}")
    exact = float(fraction) * num_slices
    eps = 1e-9 * max(1.0, exact)  # 0.3 * 10 is 3.0000000000000004 in floating point
    if rounding == "half_up":
        count = math.floor(exact + 0.5 + eps)
    elif rounding == "floor":
        count = math.floor(exact + eps)
    else:
        count = math.ceil(exact - eps)
    count = min(max(count, 1), num_slices)
    start = (num_slices - count) // 2
    return start, start + count


def middle_slices(num_slices: int, fraction: float = 0.3, rounding: str = "half_up") -> np.ndarray:
    """Indices of the central ``fraction`` of ``num_slices`` slices (PolyCL keeps the middle 30 %).

    The count is ``fraction * num_slices`` rounded by ``rounding`` -- ``"half_up"`` (default:
    nearest, .5 goes up), ``"floor"`` or ``"ceil"`` -- and clipped to ``[1, num_slices]``, so a
    scan always keeps at least one slice. The kept block is centred: it starts at
    ``(num_slices - count) // 2``, so when the slices left over are odd in number, the extra one
    is left out at the end (high indices). Examples: 10 slices -> ``[3, 4, 5]``; 11 -> ``[4, 5, 6]``;
    5 -> ``[1, 2]`` (1.5 rounds up to 2); 1 -> ``[0]``.

    Args:
        num_slices: number of slices of the scan along its axial axis (>= 1).
        fraction: share of slices to keep, in (0, 1]; 1 keeps all.
        rounding: ``"half_up"``, ``"floor"`` or ``"ceil"`` (see above).

    Returns:
        ``(count,)`` int64 array of consecutive slice indices in ``[0, num_slices)``.
    """
    start, stop = middle_bounds(num_slices, fraction, rounding)
    return np.arange(start, stop, dtype=np.int64)


# ----------------------------------------------------------------------------- loading
_LOADERS: dict[str, Any] = {}


def _loader(dtype: np.dtype | type | None) -> Any:
    """One MONAI ``LoadImage`` per dtype (its constructor registers every default reader, which is
    slow and, without a GPU, warns about nvImageCodec each time)."""
    key = str(dtype)
    if key not in _LOADERS:
        from monai.transforms import LoadImage

        log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
                _LOADERS[key] = LoadImage(image_only=True, ensure_channel_first=True, dtype=dtype)
        finally:
            log.setLevel(level)
    return _LOADERS[key]


def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in NIFTI_SUFFIXES)


# ----------------------------------------------------------------------------- series references
#: separator of a series reference ``<folder>#<SeriesInstanceUID>`` (one series among loose slices)
SERIES_SEPARATOR = "#"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def series_ref(folder: str | os.PathLike, series_uid: str) -> str:
    """The input string of one DICOM series among others in ``folder``: ``"<folder>#<SeriesInstanceUID>"``.

    :func:`list_ct_volumes` gives such a string as an item's ``"image"`` when a folder holds the
    loose slices of more than one series; :func:`load_ct_volume` (and ``LoadCTVolumed``),
    :func:`dicom_series_files` and the CT writers read exactly that series from it. A folder holding
    one series is given as the plain folder path.
    """
    return f"{os.fspath(folder)}{SERIES_SEPARATOR}{series_uid}"


def parse_series_ref(path: str | os.PathLike) -> tuple[Path, str | None]:
    """``(folder, SeriesInstanceUID)`` of a :func:`series_ref` string; ``(path, None)`` for any other path.

    A path that exists is never split (a folder may contain ``#`` in its name).
    """
    text = os.fspath(path)
    head, sep, uid = text.rpartition(SERIES_SEPARATOR)
    if sep and _UID.match(uid) and not Path(text).exists() and Path(head).expanduser().is_dir():
        return Path(head).expanduser(), uid
    return Path(text).expanduser(), None


def ct_output_stem(source: str | os.PathLike) -> str:
    """The name CT results of ``source`` are written under (before the writer's suffix, e.g. ``_seg``).

    A NIfTI file's name without ``.nii`` / ``.nii.gz``; a DICOM folder's name; the
    ``SeriesInstanceUID`` of a :func:`series_ref` (one series among loose slices). Used by
    :class:`~fewlabel.transforms.ct_io.SaveCTSegmentation` and by :func:`list_ct_volumes` to refuse
    inputs whose results would overwrite each other.
    """
    folder, uid = parse_series_ref(source)
    if uid is not None:
        return uid
    name = Path(os.fspath(source).rstrip("/\\")).name
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name if folder.is_dir() else Path(name).stem


# ----------------------------------------------------------------------------- discovery
def _has_dicm_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _looks_dicom(path: Path) -> bool:
    return path.suffix.lower() == ".dcm" or _has_dicm_preamble(path)


def _read_header(path: Path) -> tuple[Any, str | None]:
    """``(dataset, None)`` for a DICOM image file; ``(dataset or None, why it is not one)`` otherwise.

    Raises:
        DataError: a DICOM file that cannot be parsed, or an image whose image attributes are missing.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        return None, "not a DICOM file"
    except Exception as e:  # truncated header, bad element
        raise DataError(f"cannot read DICOM file {path}: {type(e).__name__}: {e}. Re-export the series or remove "
                        "the file.") from e
    if "Rows" not in ds or "Columns" not in ds:
        sop = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
        kind = str(getattr(sop, "name", "") or sop or "no SOPClassUID")
        if "Image Storage" in kind:
            raise DataError(f"DICOM file {path} is an image ({kind}) without its image attributes: the file is "
                            "truncated or incomplete. Re-export the series or remove the file.")
        if sop is None or kind == str(sop):
            raise DataError(f"DICOM file {path} is of no known kind (SOP class {kind!r}, {len(ds)} attributes): the "
                            "file is damaged. Re-export the series or remove the file.")
        return ds, f"a DICOM file that is not an image ({kind})"
    if "Segmentation" in str(getattr(ds.get("SOPClassUID"), "name", "")):
        return ds, "a DICOM Segmentation, not a CT image"
    return ds, None


def _why_not_a_series(folder: Path) -> str | None:
    """None when ``folder`` holds a DICOM image (or a DICOM file the loader must name); else why it is skipped.

    Reads headers only until the first image, so a series folder costs one header.
    """
    dicom = [f for f in sorted(folder.iterdir()) if f.is_file() and not f.name.startswith(".") and _looks_dicom(f)]
    if not dicom:
        return "it holds no DICOM (.dcm) file (sub-folders are searched one level deep)"
    kinds = []
    for f in dicom:
        try:
            ds, why = _read_header(f)
        except DataError:
            return None  # damaged: the loader names the file
        if why is None:
            return None
        kinds.append(why)
    return f"its {len(dicom)} DICOM file(s) hold no image ({'; '.join(sorted(set(kinds)))})"


def list_ct_volumes(folder: str | os.PathLike) -> list[dict[str, str]]:
    """Inference inputs in ``folder``: every NIfTI volume and every DICOM series, side by side.

    - each ``.nii`` / ``.nii.gz`` file in ``folder`` is one input;
    - each direct sub-folder holding DICOM images is one input (one series; a sub-folder mixing
      series is refused when it is loaded, naming them); one holding only DICOM files that are
      not images (e.g. the SEG results of an earlier run) is skipped;
    - DICOM slices lying loose in ``folder`` are grouped by ``SeriesInstanceUID``: a single series is
      the input ``folder`` itself (as before), several are one input each, written as
      ``"<folder>#<SeriesInstanceUID>"`` (:func:`series_ref`), which :func:`load_ct_volume` reads.

    Every other entry is skipped and logged (logger ``fewlabel.data``) with its reason: files that
    are neither NIfTI nor DICOM, DICOM files that are not images (SEG, SR, DICOMDIR), sub-folders
    without DICOM files. A loose DICOM file that cannot be parsed is an input of its own, so it
    gets an error naming it instead of hiding its neighbours.

    Results are named by :func:`ct_output_stem`; two inputs with the same name (``ct1.nii``,
    ``ct1.nii.gz`` and a folder ``ct1/``) are refused before anything is written.

    Returns:
        ``[{"image": path}, ...]``: NIfTI files and sub-folders sorted by name, then loose series.

    Raises:
        DataError: ``folder`` is missing, holds no CT input, or two inputs share an output name.
    """
    from fewlabel.data.files import refuse_shared_outputs

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(
            f"input folder not found: {root}. Pass --dataset_dir <folder of .nii.gz files or DICOM series>."
        )
    found: list[dict[str, str]] = []
    loose: dict[str, list[Path]] = {}
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            logger.debug("skipped hidden entry %s", p)
        elif p.is_dir():
            why = _why_not_a_series(p)
            if why is None:
                found.append({"image": str(p)})
            else:
                logger.warning("skipped folder %s: %s", p, why)
        elif _is_nifti(p):
            found.append({"image": str(p)})
        elif not _looks_dicom(p):
            logger.warning("skipped %s: neither NIfTI (.nii / .nii.gz) nor DICOM", p)
        else:
            try:
                ds, why = _read_header(p)
            except DataError as e:
                logger.warning("%s", e)
                found.append({"image": str(p)})  # its own input: the loader names what is wrong with it
                continue
            if why is not None:
                logger.warning("skipped %s: %s", p, why)
                continue
            loose.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(p)
    if len(loose) == 1:
        found.append({"image": str(root)})
    else:
        for uid, files in sorted(loose.items()):
            if not _UID.match(uid):
                logger.warning("skipped %d DICOM file(s) in %s (e.g. %s): no valid SeriesInstanceUID (%r)",
                               len(files), root, files[0].name, uid)
                continue
            found.append({"image": series_ref(root, uid)})
    if not found:
        raise DataError(f"{root} holds no NIfTI volume (.nii / .nii.gz) and no DICOM series (loose .dcm files or "
                        "one sub-folder per series); see the log for what was skipped.")
    refuse_shared_outputs(found, ct_output_stem)
    return found


def dicom_series_files(folder: str | os.PathLike, series_uid: str | None = None) -> list[str]:
    """The files of the one DICOM image series in ``folder``, in ``InstanceNumber`` order.

    Reads headers only (no pixel data). Files that are not DICOM (no ``DICM`` preamble, e.g. a
    README) and DICOM files without an image (``DICOMDIR``, reports, segmentations) are ignored.
    Sub-folders are not searched. ``folder`` may be a :func:`series_ref` (``"<folder>#<uid>"``), or
    ``series_uid`` given, to take that series among several in the folder (DICOM files that
    cannot be parsed are then skipped with a warning: their series is unknown).

    Raises:
        DataError: ``folder`` is missing or empty, holds no DICOM image files (of ``series_uid``),
            holds a DICOM file that cannot be parsed, holds more than one series
            (``SeriesInstanceUID``) and none was chosen, or its slices lack ``InstanceNumber`` /
            ``ImagePositionPatient`` / ``ImageOrientationPatient`` / ``PixelSpacing``, repeat a
            position, or are numbered out of their spatial order (MONAI stacks by
            ``InstanceNumber``; a non-monotonic numbering would scramble the volume).
    """
    return [os.fspath(f) for f, _ in _series_headers(folder, series_uid)]


def _series_headers(folder: str | os.PathLike, series_uid: str | None = None) -> list[tuple[Path, Any]]:
    """:func:`dicom_series_files` with each file's header (pydicom, no pixel data)."""
    path, ref_uid = parse_series_ref(folder)
    series_uid = series_uid or ref_uid
    where = f"{path} (series {series_uid})" if series_uid else f"DICOM folder {path}"
    if not path.is_dir():
        raise DataError(f"DICOM folder not found: {path}. Check dataset_dir and the datalist.")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"DICOM folder {path} is empty; expected the files of one CT series.")
    headers, damaged = [], []
    for f in files:
        try:
            ds, why = _read_header(f)
        except DataError as e:
            if series_uid is None:
                raise
            logger.warning("%s (skipped while reading series %s)", e, series_uid)
            continue
        if ds is None and f.suffix.lower() == ".dcm":
            damaged.append(f)
        if why is None and (series_uid is None or str(ds.get("SeriesInstanceUID", "")) == series_uid):
            headers.append((f, ds))
    if headers and damaged:
        if series_uid is None:
            raise DataError(f"{damaged[0]} is named .dcm but is not a readable DICOM file (empty or damaged), among "
                            f"the slices of {where}; the series may miss that slice. Re-export the series or remove "
                            "the file.")
        logger.warning("skipped %s while reading series %s: named .dcm but not a readable DICOM file",
                       ", ".join(f.name for f in damaged), series_uid)
    if not headers:
        raise DataError(
            f"no DICOM image files in {where} ({len(files)} file(s), none a DICOM image"
            + (" of that series" if series_uid else "") + "). "
            "Point the datalist at the folder that holds the CT series' .dcm files."
        )
    by_series: dict[str, list] = {}
    for f, ds in headers:
        by_series.setdefault(str(ds.get("SeriesInstanceUID", "<no SeriesInstanceUID>")), []).append((f, ds))
    if len(by_series) > 1:
        listing = "; ".join(
            f"{uid} ({len(v)} files, e.g. {v[0][0].name}"
            + (f", '{v[0][1].SeriesDescription}'" if "SeriesDescription" in v[0][1] else "") + ")"
            for uid, v in by_series.items()
        )
        raise DataError(
            f"DICOM folder {path} mixes {len(by_series)} series: {listing}. "
            "Put each series in its own folder and list the CT series you mean "
            "(or use fewlabel.data.list_ct_volumes, which lists each series as '<folder>#<SeriesInstanceUID>')."
        )
    for f, ds in headers:
        for tag in ("InstanceNumber", "ImagePositionPatient", "ImageOrientationPatient"):
            if tag not in ds or ds[tag].value in (None, ""):
                raise DataError(f"DICOM file {f} has no {tag}; cannot place it in the CT volume.")
        _pixel_spacing(ds, f)
    headers.sort(key=lambda h: int(h[1].InstanceNumber))
    if len(headers) > 1:
        iop = np.asarray(headers[0][1].ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        pos = np.array([np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float)) for _, ds in headers])
        order = np.argsort(pos, kind="stable")
        same = np.flatnonzero(np.isclose(np.diff(pos[order]), 0.0, atol=1e-4))
        if same.size:
            i, j = sorted((int(order[same[0]]), int(order[same[0] + 1])))
            raise DataError(
                f"{where}: {headers[i][0].name} and {headers[j][0].name} lie at the same slice position "
                f"z={pos[i]:g} mm (a duplicated slice, or two acquisitions in one series). Keep one of them."
            )
        steps = np.diff(pos)
        if not (np.all(steps > 0) or np.all(steps < 0)):
            raise DataError(
                f"{where}: InstanceNumber order does not follow the slice positions "
                "(ImagePositionPatient); the stacked volume would be scrambled. Renumber or re-export the series."
            )
    return headers


# ----------------------------------------------------------------------------- slice geometry
#: what :func:`load_ct_volume` does with a series whose slices are not evenly spaced
UNEVEN_SPACING = ("error", "resample")


def _floats(ds: Any, keyword: str, count: int, f: Any) -> np.ndarray:
    """``ds.<keyword>`` as ``count`` finite floats, or a DataError naming the file."""
    try:
        value = np.asarray([float(v) for v in ds[keyword].value], dtype=np.float64)
    except Exception as e:
        raise DataError(f"DICOM file {f} has an unreadable {keyword} ({e}); re-export the series.") from e
    if value.shape != (count,) or not np.isfinite(value).all():
        raise DataError(f"DICOM file {f} has {keyword} {value.tolist()}: expected {count} finite numbers; "
                        "re-export the series or remove the file.")
    return value


def _pixel_spacing(ds: Any, f: Any) -> np.ndarray:
    """``PixelSpacing`` (row, column spacing, mm) of file ``f``, checked; a DataError names the file."""
    if "PixelSpacing" not in ds or ds["PixelSpacing"].value in (None, ""):
        raise DataError(f"DICOM file {f} has no PixelSpacing: the size of its pixels is unknown, so any result "
                        "would be on a wrong grid. Re-export the series with PixelSpacing (0028,0030).")
    spacing = _floats(ds, "PixelSpacing", 2, f)
    if not (spacing > 0).all():
        raise DataError(f"DICOM file {f} has PixelSpacing {spacing.tolist()}: pixel sizes must be positive (mm). "
                        "Re-export the series or remove the file.")
    return spacing


@dataclass
class SliceGeometry:
    """Where the slices of a DICOM series lie, from their headers (:func:`check_slice_geometry`).

    Attributes:
        positions: ``(N,)`` position of each slice (in the given order) along the slice normal, mm.
        spacing: the even slice spacing (the median step), mm, positive.
        uneven: a sentence naming the slices that break the even spacing, or None when even.
    """

    positions: np.ndarray
    spacing: float
    uneven: str | None


def check_slice_geometry(headers: Sequence[tuple[Any, Any]], where: str) -> SliceGeometry:
    """Check that the slices of one series make a regular 3D grid.

    Args:
        headers: ``(file name or id, pydicom dataset)`` per slice, in stacking order.
        where: the series named in messages (folder, ``folder#uid`` or ``series <uid>``).

    Returns:
        :class:`SliceGeometry`; ``uneven`` is set when a slice is missing or the spacing varies
        by more than the tolerance (1 % of the spacing, at least 0.01 mm).

    Raises:
        DataError: slices with different ``ImageOrientationPatient``, ``PixelSpacing``, rows or
            columns, slices offset within their plane (a tilted / sheared stack), or two slices at
            the same position; the message names the files and the fix.
    """
    names = [str(getattr(n, "name", n)) for n, _ in headers]
    iops = [_floats(ds, "ImageOrientationPatient", 6, n) for n, ds in headers]
    ipps = np.stack([_floats(ds, "ImagePositionPatient", 3, n) for n, ds in headers])
    for k in range(1, len(headers)):
        if not np.allclose(iops[k], iops[0], atol=1e-3):
            raise DataError(f"{where}: slices have different orientations ({names[0]}: ImageOrientationPatient "
                            f"{iops[0].round(4).tolist()}, {names[k]}: {iops[k].round(4).tolist()}); a series must "
                            "be one stack of parallel slices. Split or re-export the series.")
    first = headers[0][1]
    spacing0 = _pixel_spacing(first, headers[0][0])
    for (n, ds) in headers[1:]:
        if int(ds.Rows) != int(first.Rows) or int(ds.Columns) != int(first.Columns):
            raise DataError(f"{where}: {n} is {ds.Rows} x {ds.Columns} pixels but {names[0]} is {first.Rows} x "
                            f"{first.Columns}; all slices of a volume must have the same size. Remove the odd file.")
        if not np.allclose(_pixel_spacing(ds, n), spacing0, rtol=1e-3, atol=1e-4):
            raise DataError(f"{where}: {n} has PixelSpacing {_pixel_spacing(ds, n).tolist()} but {names[0]} has "
                            f"{spacing0.tolist()}; all slices of a volume must share their pixel size. Remove the "
                            "odd file or re-export the series.")
    normal = np.cross(iops[0][:3], iops[0][3:])
    positions = ipps @ normal
    if len(headers) < 2:
        return SliceGeometry(positions, float(first.get("SliceThickness") or 1.0), None)
    steps = np.diff(positions)
    spacing = float(np.median(np.abs(steps)))
    tol = max(0.01, 0.01 * spacing)
    offsets = ipps - ipps[:1] - np.outer(positions - positions[0], normal)
    shifted = np.linalg.norm(offsets, axis=1)
    if shifted.max() > max(tol, 0.01 * float(spacing0.min())):
        k = int(np.argmax(shifted))
        raise DataError(f"{where}: slice {names[k]} is shifted by {shifted[k]:.3g} mm within its plane relative to "
                        f"{names[0]} (a tilted-gantry or sheared stack); such a series is not a regular grid. "
                        "Re-export it resampled to an axial stack.")
    same = np.flatnonzero(np.abs(steps) <= tol)
    if same.size:
        k = int(same[0])
        raise DataError(f"{where}: {names[k]} and {names[k + 1]} lie at the same slice position "
                        f"z={positions[k]:g} mm (duplicated slice, or two acquisitions in one series). Keep one "
                        "of them.")
    bad = np.flatnonzero(np.abs(np.abs(steps) - spacing) > tol)
    uneven = None
    if bad.size:
        k = int(bad[0])
        missing = " (a slice is missing)" if abs(abs(steps[k]) / spacing - round(abs(steps[k]) / spacing)) < 0.01 \
            and abs(steps[k]) > spacing else ""
        uneven = (f"slices at z={positions[k]:g} and z={positions[k + 1]:g} ({names[k]}, {names[k + 1]}) are "
                  f"{abs(steps[k]):g} mm apart, the others {spacing:g} mm{missing}"
                  + (f"; {bad.size} uneven step(s) in all" if bad.size > 1 else ""))
    return SliceGeometry(positions, spacing, uneven)


def _resample_slices(img: MetaTensor, geometry: SliceGeometry, nearest: bool) -> MetaTensor:
    """Put the slices of a stored-order ``(1, X, Y, Z)`` DICOM volume on an even grid along Z.

    Slice ``k`` of ``img`` lies at ``geometry.positions[k]`` (monotonic). The new grid starts at
    the first slice, steps by ``geometry.spacing`` and ends at (or just before) the last one; each
    new slice is interpolated linearly between its two neighbours (nearest for label maps).
    """
    pos = geometry.positions
    sign = 1.0 if pos[-1] > pos[0] else -1.0
    rel = (pos - pos[0]) * sign  # increasing, from 0
    count = int(np.floor(rel[-1] / geometry.spacing + 0.01)) + 1
    target = np.arange(count) * geometry.spacing
    hi = np.clip(np.searchsorted(rel, target, side="right"), 1, len(rel) - 1)
    lo = hi - 1
    w = np.clip((target - rel[lo]) / (rel[hi] - rel[lo]), 0.0, 1.0)
    if nearest:
        w = np.round(w)
    data = img.as_tensor()
    wt = torch.as_tensor(w, dtype=torch.float64)
    out = data[..., lo].double() * (1 - wt) + data[..., hi].double() * wt
    out = out.to(data.dtype) if data.is_floating_point() else out.round().to(data.dtype)
    meta = dict(img.meta)
    affine = np.asarray(img.affine, dtype=np.float64).copy()
    column = affine[:3, 2]
    affine[:3, 2] = column / np.linalg.norm(column) * geometry.spacing
    meta["affine"] = torch.as_tensor(affine)
    meta["original_affine"] = affine.copy()
    meta["spatial_shape"] = np.asarray(out.shape[1:])
    return MetaTensor(out, meta=meta)


def load_ct_volume(path: str | os.PathLike, axcodes: str | None = "RAS",
                   dtype: np.dtype | type | None = np.float32, uneven_spacing: str = "error") -> MetaTensor:
    """Load a CT volume from a NIfTI file or a DICOM series folder with MONAI's ``LoadImage``.

    NIfTI (``.nii`` / ``.nii.gz``) is read with ``NibabelReader`` (``scl_slope`` / ``scl_inter``
    applied); a folder with ``PydicomReader`` (``RescaleSlope`` / ``RescaleIntercept`` applied,
    slices stacked in ``InstanceNumber`` order after :func:`dicom_series_files` has checked that
    order). Values are whatever the file holds after rescaling -- Hounsfield units for CT.

    A DICOM series must be a regular grid (:func:`check_slice_geometry`): one orientation and
    pixel size, no two slices at one position, and evenly spaced slices. A missing slice or uneven
    spacing is refused (``uneven_spacing="error"``, the default: MONAI would stack the slices with
    their *average* spacing, a volume on the wrong grid), or, with ``uneven_spacing="resample"``,
    the slices are interpolated onto an even grid (the median spacing) and the volume says so: a
    warning is logged and ``meta["resampled_slices"]`` holds the reason (absent otherwise). Such a
    volume's results are NIfTI only (no DICOM SEG: its slices are not the series' slices).

    Args:
        path: a ``.nii`` / ``.nii.gz`` file, a folder holding one DICOM CT series, or a
            ``"<folder>#<SeriesInstanceUID>"`` series reference (:func:`series_ref`).
        axcodes: orientation to bring the volume to (MONAI ``Orientation``; default ``"RAS"``,
            so the last axis is the axial one, inferior -> superior); ``None`` keeps the stored
            voxel order. See the module docstring.
        dtype: array dtype (default float32); ``None`` keeps the file's dtype (for label maps;
            resampling then picks the nearest slice).
        uneven_spacing: ``"error"`` or ``"resample"``, see above.

    Returns:
        ``(1, X, Y, Z)`` :class:`~monai.data.MetaTensor` with ``affine`` (voxel -> RAS world,
        mm), ``original_affine``, ``spatial_shape`` and ``filename_or_obj`` (``path``) in its meta.

    Raises:
        DataError: the path is missing, is not NIfTI or a folder, the folder holds no (or more
            than one) DICOM series, the series is not a regular grid (see above), or the file is
            truncated / corrupt / not one 3D volume (a 4D or 2D NIfTI).
    """
    from monai.transforms import Orientation

    if uneven_spacing not in UNEVEN_SPACING:
        raise ValueError(f"uneven_spacing must be one of {UNEVEN_SPACING}, got {uneven_spacing!r}")
    p, series_uid = parse_series_ref(path)
    geometry = None
    if not p.exists():
        raise DataError(f"CT volume not found: {p}. Check dataset_dir and the datalist.")
    if p.is_dir():
        heads = _series_headers(p, series_uid)
        files = [os.fspath(f) for f, _ in heads]
        where = f"DICOM series {path}"
        if len(files) < 2:
            raise DataError(f"{where} holds a single image slice; a CT volume needs the whole series.")
        geometry = check_slice_geometry(heads, where)
        if geometry.uneven and uneven_spacing == "error":
            raise DataError(f"{where} is not evenly spaced: {geometry.uneven}. Stacking it would put the result on "
                            "a wrong grid. Add the missing slices (re-export the whole series), or load it with "
                            "uneven_spacing='resample' to interpolate it onto an even grid.")
        from monai.data import PydicomReader

        # only the checked files of the series: MONAI otherwise reads every file in the folder
        regex = r"^.*[\\/](?:" + "|".join(re.escape(Path(f).name) for f in files) + ")$"
        reader: Any = PydicomReader(fname_regex=regex)
        source = "DICOM series"
    elif _is_nifti(p):
        from monai.data import NibabelReader

        _check_nifti_dims(p)
        reader = NibabelReader()
        source = "NIfTI file"
    else:
        raise DataError(
            f"unsupported CT volume {p}: expected a .nii / .nii.gz file or a folder holding a DICOM series."
        )
    try:
        img = _loader(dtype)(os.fspath(p), reader=reader)  # this reader only: no fall-back to other readers
    except Exception as e:
        if geometry is not None:
            _raise_for_bad_slice(files, where)
        raise DataError(
            f"cannot read {source} {path}: {type(e).__name__}: {e}. The file is truncated or corrupt; "
            "re-export it or remove it from the datalist."
        ) from e
    if img.ndim != 4 or img.shape[0] != 1:
        raise DataError(f"{source} {path} is not one 3D volume: loaded shape {tuple(img.shape)} (channel first); "
                        "expected (1, X, Y, Z). Give one 3D CT volume per file.")
    if geometry is not None and img.shape[-1] != len(geometry.positions):
        raise DataError(f"{source} {path}: {len(geometry.positions)} slices were checked but {img.shape[-1]} "
                        "were stacked; remove files that are not slices of this series.")
    if geometry is not None and geometry.uneven:
        img = _resample_slices(img, geometry, nearest=dtype is None)
        img.meta["resampled_slices"] = f"resampled to an even {geometry.spacing:g} mm grid: {geometry.uneven}"
        logger.warning("%s: %s", path, img.meta["resampled_slices"])
    if axcodes is not None:
        img = Orientation(axcodes=axcodes, labels=None)(img)  # labels from the meta "space" (RAS)
    img.meta["filename_or_obj"] = os.fspath(path)
    return img


def _raise_for_bad_slice(files: Sequence[str], where: str) -> None:
    """After the series failed to load: find the slice whose pixel data cannot be decoded and name it."""
    import pydicom

    for f in files:
        try:
            _ = pydicom.dcmread(f).pixel_array
        except Exception as e:
            raise DataError(f"cannot read the pixels of DICOM file {f} ({type(e).__name__}: {e}), a slice of {where}: "
                            "the file is truncated or corrupt. Re-export the series.") from e


def _check_nifti_dims(p: Path) -> None:
    """Refuse a NIfTI that is not one 3D volume (2D, or 4D with more than one volume), from its header."""
    import nibabel as nib

    try:
        shape = tuple(int(s) for s in nib.load(os.fspath(p)).shape)
    except Exception:
        return  # unreadable header: the reader's error names the file
    extra = shape[3:]
    if len(shape) < 3 and (not shape or min(shape) < 1):
        raise DataError(f"NIfTI file {p} has no valid dimensions in its header (shape {shape}): the file is damaged "
                        "or not a volume. Re-export it or remove it from the inputs.")
    if len(shape) < 3:
        raise DataError(f"NIfTI file {p} is 2D (shape {shape}): a CT volume needs three dimensions. Use the 2D "
                        "bundles for single images, or save the whole CT volume.")
    if int(np.prod(extra, dtype=np.int64)) > 1:
        raise DataError(f"NIfTI file {p} holds {int(np.prod(extra))} volumes (shape {shape}: a time series or "
                        "multi-channel image); a CT input is one 3D volume. Save the volume you mean on its own, "
                        "e.g. nibabel.save(img.slicer[..., 0], 'ct.nii.gz').")


def as_ct_volume(volume: Any, axcodes: str | None = "RAS", dtype: np.dtype | type | None = np.float32) -> MetaTensor:
    """The in-memory twin of :func:`load_ct_volume`: a volume already read -> the same ``(1, X, Y, Z)`` form.

    For a CT volume that another reader produced, e.g. the MONAI Deploy App SDK's
    ``DICOMSeriesToVolumeOperator`` (its ``Image`` turned into a MetaTensor by
    ``MonaiBundleInferenceOperator``: ``(X, Y, Z)`` with ``affine`` / ``original_affine`` in RAS
    world coordinates). The voxel values are taken as they are (Hounsfield units after the
    reader's rescale); the channel axis is added if missing and the volume re-oriented to
    ``axcodes`` exactly as :func:`load_ct_volume` does, so a network sees the same array whichever
    way the series was read.

    Args:
        volume: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` :class:`~monai.data.MetaTensor` whose meta holds
            ``affine`` (voxel -> RAS world, mm; ``space`` other than RAS is honoured).
        axcodes, dtype: as :func:`load_ct_volume`.

    Returns:
        ``(1, X', Y', Z')`` MetaTensor with ``affine`` (the new orientation), ``original_affine``
        (the input's voxel order: kept from the meta if present, else the input affine),
        ``spatial_shape`` (the input's ``(X, Y, Z)``) and ``filename_or_obj`` (kept, or
        ``"in-memory volume"``).

    Raises:
        DataError: not a MetaTensor with an affine, not 3D, empty, or holding NaN / Inf.
    """
    from monai.transforms import Orientation
    from monai.utils import get_equivalent_dtype

    source = str(getattr(volume, "meta", {}).get("filename_or_obj") or "in-memory volume")
    if not isinstance(volume, MetaTensor) or "affine" not in volume.meta:
        raise DataError(f"{source}: a CT volume in memory must be a MetaTensor with an 'affine' in its meta "
                        f"(got {type(volume).__name__}); read files with load_ct_volume instead.")
    img = volume if dtype is None else volume.to(get_equivalent_dtype(dtype, torch.Tensor))
    if img.ndim == 3:
        img = img[None]
    if img.ndim != 4 or img.shape[0] != 1 or min(img.shape[1:]) < 1:
        raise DataError(f"{source} is not a single-channel 3D volume: shape {tuple(volume.shape)}; expected "
                        "(X, Y, Z) or (1, X, Y, Z).")
    if img.is_floating_point() and not bool(torch.isfinite(img).all()):
        raise DataError(f"{source} holds NaN or Inf voxel values; check the series' pixel data and rescale tags.")
    img = MetaTensor(img.as_tensor().clone(), meta=dict(volume.meta))
    affine = np.asarray(img.affine, dtype=np.float64)
    img.meta.setdefault("original_affine", affine.copy())
    img.meta["spatial_shape"] = np.asarray(img.shape[1:])
    img.meta.setdefault("space", "RAS")
    if axcodes is not None:
        img = Orientation(axcodes=axcodes, labels=None)(img)
    img.meta["filename_or_obj"] = source
    return img


# ----------------------------------------------------------------------------- slice index
def file_signature(path: str) -> list:
    """What makes a cached index stale: ``[path, size, mtime_ns]`` of a file, ``[path, file count, newest
    mtime_ns]`` of a DICOM folder (or ``"<folder>#<uid>"`` series reference), ``[path, None, None]`` if missing."""
    p = parse_series_ref(path)[0]
    if p.is_dir():
        files = [f for f in p.iterdir() if f.is_file()]
        return [path, len(files), max((f.stat().st_mtime_ns for f in files), default=0)]
    if p.is_file():
        st = p.stat()
        return [path, st.st_size, st.st_mtime_ns]
    return [path, None, None]


def _volume_dims(path: str) -> tuple[int, ...]:
    """Spatial sizes of a volume from its header(s) only, in stored order."""
    p = parse_series_ref(path)[0]
    if p.is_dir():
        import pydicom

        files = dicom_series_files(path)
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        return (int(ds.Columns), int(ds.Rows), len(files))
    if not p.exists():
        raise DataError(f"CT volume not found: {p}. Check dataset_dir and the datalist.")
    import nibabel as nib

    _check_nifti_dims(p)
    try:
        return tuple(int(s) for s in nib.load(os.fspath(p)).shape[:3])
    except Exception as e:
        raise DataError(f"cannot read the header of {p}: {e}. The file is truncated or not NIfTI.") from e


@dataclass
class SliceIndex:
    """Per-slice table of a CT datalist (the slices PolyCL trains on), built by :func:`build_slice_index`.

    Every array has one entry per kept slice, ``N`` in all, grouped by scan in datalist order and
    by increasing position within a scan.

    Attributes:
        scan_ids: ``(N,)`` str, the scan each slice comes from (``S(s)`` of the paper).
        positions: ``(N,)`` int64, index of the slice along the volume's last (axial) axis as
            :func:`load_ct_volume` returns it with the same ``axcodes`` (not within the kept range).
        has_organ: ``(N,)`` bool, whether the label map shows the organ on that slice (``T(s)``).
        images: ``(N,)`` str, the volume (file or DICOM folder) each slice comes from.
        labels: ``(N,)`` str, the label volume of each slice.
        num_slices: ``(N,)`` int64, how many axial slices the whole scan has.
        params: the settings the index was built with (fraction, rounding, organ labels, axcodes ...).
    """

    scan_ids: np.ndarray
    positions: np.ndarray
    has_organ: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    num_slices: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def records(self) -> list[dict[str, Any]]:
        """One MONAI-datalist-style dict per slice:
        ``{"image", "label", "scan", "slice", "has_organ", "num_slices"}`` (plain Python types)."""
        return [
            {"image": str(i), "label": str(lab), "scan": str(s), "slice": int(k), "has_organ": bool(o),
             "num_slices": int(n)}
            for i, lab, s, k, o, n in zip(self.images, self.labels, self.scan_ids, self.positions, self.has_organ,
                                          self.num_slices)
        ]

    def _scans(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in range(len(self)):
            if not out or out[-1]["scan"] != self.scan_ids[i] or out[-1]["image"] != self.images[i]:
                out.append({"scan": str(self.scan_ids[i]), "image": str(self.images[i]), "label": str(self.labels[i]),
                            "num_slices": int(self.num_slices[i]), "positions": [], "organ_positions": []})
            out[-1]["positions"].append(int(self.positions[i]))
            if self.has_organ[i]:
                out[-1]["organ_positions"].append(int(self.positions[i]))
        return out

    def to_json(self, path: str | os.PathLike, sources: list | None = None) -> Path:
        """Write the index (one entry per scan, compact) to ``path`` as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {"version": _INDEX_VERSION, "params": self.params, "sources": sources or [], "scans": self._scans()}
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(blob, indent=1))
        os.replace(tmp, path)
        return path

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> SliceIndex:
        """Read an index written by :meth:`to_json`."""
        try:
            blob = json.loads(Path(path).read_text())
            return cls._from_scans(blob["scans"], blob.get("params", {}))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"cannot read slice index {path}: {e}. Delete it to rebuild it.") from e

    @classmethod
    def _from_scans(cls, scans: Sequence[Mapping[str, Any]], params: dict[str, Any]) -> SliceIndex:
        cols: dict[str, list] = {k: [] for k in ("scan", "pos", "organ", "image", "label", "n")}
        for sc in scans:
            organ = set(sc["organ_positions"])
            for k in sc["positions"]:
                cols["scan"].append(sc["scan"])
                cols["pos"].append(k)
                cols["organ"].append(k in organ)
                cols["image"].append(sc["image"])
                cols["label"].append(sc["label"])
                cols["n"].append(sc["num_slices"])
        return cls(
            scan_ids=np.asarray(cols["scan"], dtype=str), positions=np.asarray(cols["pos"], dtype=np.int64),
            has_organ=np.asarray(cols["organ"], dtype=bool), images=np.asarray(cols["image"], dtype=str),
            labels=np.asarray(cols["label"], dtype=str), num_slices=np.asarray(cols["n"], dtype=np.int64),
            params=dict(params),
        )


def organ_flags(label: torch.Tensor | np.ndarray, organ_label: int | Sequence[int]) -> np.ndarray:
    """Whether each slice of ``label`` holds the organ: ``(..., Z)`` label map -> ``(Z,)`` bool.

    A slice (the last axis indexes slices) is flagged when any of its voxels equals one of
    ``organ_label`` -- PolyCL's ``T(s)``.
    """
    arr = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label)
    hit = torch.zeros(arr.shape, dtype=torch.bool)
    for v in np.atleast_1d(np.asarray(organ_label)).tolist():
        hit |= arr == int(v)
    return hit.reshape(-1, arr.shape[-1]).any(dim=0).numpy()


def build_slice_index(
    items: Iterable[Mapping[str, Any]],
    label_key: str = "label",
    organ_label: int | Sequence[int] = 1,
    fraction: float = 0.3,
    *,
    image_key: str = "image",
    scan_key: str = "scan",
    rounding: str = "half_up",
    axcodes: str | None = "RAS",
    cache: str | os.PathLike | None = None,
) -> SliceIndex:
    """Per-slice table (scan id, slice position, organ flag, image path) of CT datalist items.

    For each item ``{"image": volume, "label": label volume, "scan": id}`` the label volume is
    loaded with :func:`load_ct_volume` (same ``axcodes`` as the images will be), the middle
    ``fraction`` of its axial slices is kept (:func:`middle_slices`), and a slice is flagged
    ``has_organ`` when any of its voxels equals one of ``organ_label``. The image itself is not
    read: only its header (NIfTI) or DICOM headers, to check that image and label have the same
    sizes (compared as sorted tuples, so it is orientation-agnostic).

    Only labels are decoded, so rebuilding is cheap (about the cost of reading the label files).
    With ``cache`` (e.g. ``datalist.json`` -> ``datalist.slices.json`` next to it) the index is
    written there and reused while the settings and every file's size and modification time are
    unchanged; otherwise it is rebuilt and the file rewritten.

    Args:
        items: datalist items; ``image`` and ``label`` paths (NIfTI files or DICOM folders) must
            already be absolute or relative to the working folder (``load_datalist`` resolves them).
        label_key: key of the label volume in each item (required: the organ flags come from it).
        organ_label: label value(s) that make up the organ, e.g. ``(1, 2)`` for LiTS liver + tumour.
        fraction: share of each scan's slices kept (PolyCL: 0.3); 1.0 keeps all.
        image_key: key of the image volume.
        scan_key: key of the scan id; if an item has none, the image file name (without NIfTI
            suffix) is used. Ids are compared as strings.
        rounding: rounding of the kept count, see :func:`middle_slices`.
        axcodes: orientation the positions refer to, see :func:`load_ct_volume`.
        cache: optional JSON path to reuse / write the index.

    Returns:
        A :class:`SliceIndex`; ``index.scan_ids`` and ``index.has_organ`` go straight to
        :func:`~fewlabel.data.contrastive_selection.select_examples`.

    Raises:
        DataError: an item lacks the image or label key, a file is missing or unreadable, image
            and label sizes differ, or two items share a scan id with different images.
    """
    items = list(items)
    organ = sorted({int(v) for v in np.atleast_1d(np.asarray(organ_label)).tolist()})
    params = {"label_key": label_key, "image_key": image_key, "scan_key": scan_key, "organ_label": organ,
              "fraction": float(fraction), "rounding": rounding, "axcodes": axcodes}
    middle_bounds(1, fraction, rounding)  # validate the settings before any file is read

    entries = []
    for n, item in enumerate(items):
        for key in (image_key, label_key):
            if item.get(key) in (None, ""):
                raise DataError(f"datalist item {n} ({dict(item)}) has no '{key}'; the slice index needs "
                                f"both the image and its label volume.")
        image, label = os.fspath(item[image_key]), os.fspath(item[label_key])
        scan = item.get(scan_key)
        if scan in (None, ""):
            name = Path(image).name
            scan = next((name[: -len(s)] for s in NIFTI_SUFFIXES if name.lower().endswith(s)), name)
        entries.append((str(scan), image, label))
    seen: dict[str, str] = {}
    for scan, image, _ in entries:
        if seen.setdefault(scan, image) != image:
            raise DataError(f"scan id '{scan}' is used for two different volumes: {seen[scan]} and {image}. "
                            "Scan ids must be unique per volume.")

    sources = [[scan, file_signature(image), file_signature(label)] for scan, image, label in entries]
    if cache is not None and Path(cache).is_file():
        try:
            blob = json.loads(Path(cache).read_text())
            same = blob.get("params") == params and blob.get("sources") == sources
            if blob.get("version") == _INDEX_VERSION and same:
                return SliceIndex._from_scans(blob["scans"], params)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable cache: rebuild and overwrite

    scans = []
    for scan, image, label in entries:
        lab = load_ct_volume(label, axcodes=axcodes, dtype=None)
        dims_label = tuple(int(s) for s in lab.shape[1:])
        dims_image = _volume_dims(image)
        if sorted(dims_image) != sorted(dims_label):
            raise DataError(f"image {image} has size {dims_image} but its label {label} has size {dims_label}; "
                            "they must cover the same voxels.")
        num = dims_label[-1]
        start, stop = middle_bounds(num, fraction, rounding)
        flags = organ_flags(torch.as_tensor(lab)[0, ..., start:stop], organ)
        scans.append({"scan": scan, "image": image, "label": label, "num_slices": num,
                      "positions": list(range(start, stop)),
                      "organ_positions": [start + i for i in np.flatnonzero(flags).tolist()]})
    index = SliceIndex._from_scans(scans, params)
    if cache is not None:
        index.to_json(cache, sources=sources)
    return index


# the CT phantoms live in fewlabel.data.phantoms.ct (which imports this module); still importable from here
__getattr__ = lazy_reexports(__name__, {
    n: "fewlabel.data.phantoms.ct"
    for n in ("CTPhantom", "make_ct_phantom", "write_ct_phantom", "write_ct_phantom_dicom")
})
