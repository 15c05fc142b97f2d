"""CT phantoms: a deterministic abdominal CT volume in HU with a liver label, written as NIfTI or a DICOM series.

:func:`make_ct_phantom` draws the arrays; :func:`write_ct_phantom` / :func:`write_ct_phantom_dicom` write
them. :mod:`fewlabel.data.ct` (the CT loaders these files are made for) re-exports all four public names.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fewlabel.data.ct import NIFTI_SUFFIXES

__all__ = ["CTPhantom", "make_ct_phantom", "write_ct_phantom", "write_ct_phantom_dicom"]

#: SOP class UID of CT Image Storage
_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class CTPhantom(NamedTuple):
    """What the phantom writers return.

    Attributes:
        image: the NIfTI file or the DICOM series folder written.
        label: the label NIfTI (1 = liver, 0 elsewhere), or None when none was written.
        organ_slices: ``range`` of the axial slices (slice 0 most inferior, as
            :func:`load_ct_volume` returns them with ``axcodes`` ``"RAS"`` or ``"LPS"``) that
            contain the liver; every other slice has none.
    """

    image: Path
    label: Path | None
    organ_slices: range


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def make_ct_phantom(shape: Sequence[int] = (40, 96, 96), seed: int = 0) -> tuple[np.ndarray, np.ndarray, range]:
    """Draw an abdominal CT phantom in Hounsfield units with a liver label.

    Content (LPS patient axes: x to the patient's left, y posterior, z superior): air (-1000)
    outside an elliptical body; a subcutaneous fat ring (about -100); soft tissue (about 40);
    a vertebral body (cortex about 900, cancellous bone about 450) posterior in the midline; the
    aorta (about 150) in front of it; a few bowel-gas pockets (about -900); and a liver (about
    60 HU) on the patient's right, present only in one contiguous range of slices that starts
    between 40 % and 50 % and ends between 80 % and 90 % of the scan (so PolyCL's middle 30 %
    always holds both liver and liver-free slices). Gaussian noise (sigma 8 HU) inside the body.
    Deterministic: the same ``(shape, seed)`` gives identical arrays.

    Args:
        shape: ``(Z, Y, X)`` slices, rows, columns; each at least 8.
        seed: random seed.

    Returns:
        ``hu``: ``(Z, Y, X)`` int16 HU, with ``hu[k]`` the axial slice ``k`` (rows = y, columns = x,
        as a DICOM frame), slice 0 the most inferior; ``label``: ``(Z, Y, X)`` uint8 (1 = liver);
        ``organ_slices``: the range of ``k`` with liver.
    """
    nz, ny, nx = (int(s) for s in shape)
    if min(nz, ny, nx) < 8:
        raise ValueError(f"phantom shape must be at least 8 in every axis, got {tuple(shape)}")
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64), indexing="ij")
    cy, cx = ny * (0.52 + rng.uniform(-0.02, 0.02)), nx * (0.5 + rng.uniform(-0.02, 0.02))
    ry0, rx0 = ny * 0.32 * rng.uniform(0.95, 1.05), nx * 0.43 * rng.uniform(0.95, 1.05)
    z0 = int(round(nz * rng.uniform(0.40, 0.50)))
    z1 = max(int(round(nz * rng.uniform(0.80, 0.90))), z0 + 1)
    liver_dx, liver_dy = rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)
    gas = [(rng.uniform(0, nz), rng.uniform(-0.15, 0.05), rng.uniform(0.05, 0.3), rng.uniform(0.03, 0.06))
           for _ in range(3)]
    hu = np.full((nz, ny, nx), -1000.0, dtype=np.float64)
    label = np.zeros((nz, ny, nx), dtype=np.uint8)
    for k in range(nz):
        t = k / max(nz - 1, 1)
        s = 1.0 + 0.06 * math.sin(math.pi * t)  # body widest mid-scan
        ry, rx = ry0 * s, rx0 * s
        body = _ellipse(yy, xx, cy, cx, ry, rx)
        inner = _ellipse(yy, xx, cy, cx, ry - max(1.5, 0.07 * ry), rx - max(1.5, 0.07 * rx))
        sl = hu[k]
        sl[body] = -100.0
        sl[inner] = 40.0
        # spine: vertebral body posterior (high y) in the midline, aorta in front of it, slightly left (high x)
        vy, vx, vr = cy + 0.62 * ry, cx, max(2.0, 0.09 * min(ry, rx))
        sl[_ellipse(yy, xx, vy, vx, vr, vr)] = 900.0
        sl[_ellipse(yy, xx, vy, vx, 0.7 * vr, 0.7 * vr)] = 450.0
        ar = max(1.5, 0.45 * vr)
        sl[_ellipse(yy, xx, vy - vr - 1.3 * ar, vx + 0.5 * vr, ar, ar)] = 150.0
        if z0 <= k < z1:  # liver on the patient's right (low x), in front of the spine
            u = (k - z0 + 0.5) / (z1 - z0)
            grow = 0.55 + 0.45 * math.sin(math.pi * u)
            liver = _ellipse(yy, xx, cy - (0.1 - liver_dy) * ry, cx - (0.45 + liver_dx) * rx,
                             0.5 * ry * grow, 0.4 * rx * grow) & inner
            if not liver.any():  # tiny shapes: keep the slice range exact
                liver[int(round(cy)), int(round(cx - 0.45 * rx))] = True
            sl[liver] = 60.0
            label[k][liver] = 1
        for gz, gy, gx, gr in gas:  # bowel gas on the patient's left, never in the liver
            if abs(k - gz) < 2.5:
                pocket = _ellipse(yy, xx, cy + gy * ry, cx + gx * rx, gr * ry, gr * rx) & inner & (label[k] == 0)
                sl[pocket] = -900.0
        noise = rng.normal(0.0, 8.0, size=(ny, nx))
        sl[body] += noise[body]
    return np.round(hu).astype(np.int16), label, range(z0, z1)


def _lps_origin(shape_zyx: Sequence[int], spacing_zyx: Sequence[float]) -> np.ndarray:
    """LPS position (mm) of voxel (x=0, y=0, z=0), chosen so that the volume is centred on 0."""
    nz, ny, nx = shape_zyx
    sz, sy, sx = spacing_zyx
    return np.array([-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, -(nz - 1) / 2 * sz])


def _phantom_affine(shape_zyx: Sequence[int], spacing_zyx: Sequence[float]) -> np.ndarray:
    """RAS affine of the phantom stored as (X, Y, Z) with x to the left, y posterior, z superior."""
    sz, sy, sx = (float(s) for s in spacing_zyx)
    o = _lps_origin(shape_zyx, spacing_zyx)
    return np.array([[-sx, 0, 0, -o[0]], [0, -sy, 0, -o[1]], [0, 0, sz, o[2]], [0, 0, 0, 1]], dtype=np.float64)


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be three positive (z, y, x) millimetre values, got {spacing!r}")
    return sp  # type: ignore[return-value]


def _save_nifti(array_zyx: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(array_zyx.transpose(2, 1, 0)), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, os.fspath(path))


def _default_label_path(path: Path) -> Path:
    """``<name>_label.nii.gz`` (or ``.nii``, the suffix of ``path``) beside ``path``."""
    name = path.name
    for s in NIFTI_SUFFIXES[::-1]:  # ".nii.gz" before ".nii"
        if name.lower().endswith(s):
            return path.with_name(name[: -len(s)] + "_label" + s)
    return path.with_name(name + "_label.nii.gz")


def write_ct_phantom(
    path: str | os.PathLike,
    shape: Sequence[int] = (40, 96, 96),
    seed: int = 0,
    spacing: Sequence[float] = (2.5, 3.5, 3.5),
    label_path: str | os.PathLike | None = None,
) -> CTPhantom:
    """Write the CT phantom of :func:`make_ct_phantom` as a NIfTI volume in HU plus its label NIfTI.

    The volume is int16 HU stored as ``(X, Y, Z)`` with an affine (sform and qform, code 1) whose
    voxel axes point to the patient's left, posterior and superior -- the layout a DICOM series
    converts to -- centred on the origin. The label (uint8, 1 = liver) has the same affine.

    Args:
        path: output ``.nii.gz`` (or ``.nii``) file; parent folders are created.
        shape: ``(Z, Y, X)`` slices, rows, columns.
        seed: random seed (same seed, same files).
        spacing: ``(z, y, x)`` voxel size in mm: slice spacing, row spacing, column spacing.
        label_path: where to write the label; default ``<name>_label.nii.gz`` beside ``path``.

    Returns:
        :class:`CTPhantom` (image path, label path, liver slice range).
    """
    path = Path(path)
    spacing = _check_spacing(spacing)
    hu, label, organ = make_ct_phantom(shape, seed)
    affine = _phantom_affine(hu.shape, spacing)
    label_path = Path(label_path) if label_path is not None else _default_label_path(path)
    _save_nifti(hu, affine, path)
    _save_nifti(label, affine, label_path)
    return CTPhantom(path, label_path, organ)


def write_ct_phantom_dicom(
    folder: str | os.PathLike,
    shape: Sequence[int] = (40, 96, 96),
    seed: int = 0,
    spacing: Sequence[float] = (2.5, 3.5, 3.5),
    label_path: str | os.PathLike | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
) -> CTPhantom:
    """Write the phantom of :func:`write_ct_phantom` (same ``shape`` / ``seed`` / ``spacing``) as a DICOM CT series.

    One CT Image Storage file per slice (``IM0001.dcm`` ...), explicit VR little endian, stored
    values ``HU + 1024`` as unsigned 16 bit with ``RescaleSlope`` 1 and ``RescaleIntercept``
    -1024 (``RescaleType`` HU), ``ImageOrientationPatient`` axial ``[1, 0, 0, 0, 1, 0]``,
    ``ImagePositionPatient`` per slice, ``PixelSpacing`` ``[y, x]``, ``SliceThickness``, and
    study / series / instance UIDs derived from the seed. Slices are numbered head first, as
    scanners usually do: ``InstanceNumber`` 1 is the most *superior* slice, so a reader must use
    the geometry, not the numbering, to orient the volume. Loaded with :func:`load_ct_volume`
    it gives the same array and affine as the NIfTI phantom.

    Args:
        folder: output folder (created; existing ``IM*.dcm`` files are not removed).
        shape, seed, spacing: as :func:`write_ct_phantom`.
        label_path: if given, also write the label NIfTI there.
        series_uid: ``SeriesInstanceUID`` to use (default derived from the seed); with
            ``series_number`` it lets a test put two series in one folder.
        series_number: ``SeriesNumber``; also prefixes file names when not 1 (``S2_IM0001.dcm``).

    Returns:
        :class:`CTPhantom` (the folder, the label path or None, liver slice range).
    """
    from pydicom.uid import generate_uid

    folder = Path(folder)
    spacing = _check_spacing(spacing)
    hu, label, organ = make_ct_phantom(shape, seed)
    nz, ny, nx = hu.shape
    sz, sy, sx = spacing
    origin = _lps_origin(hu.shape, spacing)
    folder.mkdir(parents=True, exist_ok=True)
    tag = [f"fewlabel-ct-phantom-{seed}-{nz}x{ny}x{nx}-{sz}-{sy}-{sx}"]
    study_uid = generate_uid(entropy_srcs=tag + ["study"])
    series_uid = series_uid or generate_uid(entropy_srcs=tag + ["series", str(series_number)])
    frame_uid = generate_uid(entropy_srcs=tag + ["frame"])
    prefix = "" if series_number == 1 else f"S{series_number}_"
    for k in range(nz):
        instance = nz - k  # head first: instance 1 is the top slice
        uids = {"sop": generate_uid(entropy_srcs=[series_uid, str(k)]), "study": study_uid, "series": series_uid,
                "frame": frame_uid}
        position = [float(origin[0]), float(origin[1]), float(origin[2] + k * sz)]
        ds = _ct_slice_dataset(hu[k], instance, position, spacing, uids, seed, series_number)
        ds.save_as(folder / f"{prefix}IM{instance:04d}.dcm", enforce_file_format=True)
    if label_path is not None:
        label_path = Path(label_path)
        _save_nifti(label, _phantom_affine(hu.shape, spacing), label_path)
    return CTPhantom(folder, label_path, organ)


def _ct_slice_dataset(
    hu_slice: np.ndarray,
    instance: int,
    position: list[float],
    spacing: tuple[float, float, float],
    uids: dict[str, str],
    seed: int,
    series_number: int,
) -> Any:
    """One axial slice as a ``pydicom.Dataset`` of CT Image Storage, explicit VR little endian.

    Args:
        hu_slice: ``(rows, columns)`` int16 HU; stored as ``HU + 1024`` in unsigned 16 bit (clipped to
            [0, 65535]) with ``RescaleIntercept`` -1024.
        instance: ``InstanceNumber``.
        position: ``ImagePositionPatient`` (LPS, mm); its z is also the ``SliceLocation``.
        spacing: ``(z, y, x)`` mm: ``SliceThickness`` and ``PixelSpacing`` ``[y, x]``.
        uids: ``sop``, ``study``, ``series`` and ``frame`` (of reference) instance UIDs.
        seed, series_number: the phantom's seed (in the patient name and id) and ``SeriesNumber``.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    sz, sy, sx = spacing
    ny, nx = hu_slice.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = uids["sop"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = _CT_IMAGE_STORAGE
    ds.SOPInstanceUID = uids["sop"]
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Manufacturer = "fewlabel phantom"
    ds.PatientName = f"Phantom^{seed}"
    ds.PatientID = f"phantom-{seed}"
    ds.PatientPosition = "HFS"
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.SeriesDescription = "fewlabel CT phantom"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = position
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceLocation = position[2]
    ds.PixelSpacing = [sy, sx]
    ds.SliceThickness = sz
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ny, nx
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = (hu_slice.astype(np.int32) + 1024).clip(0, 65535).astype("<u2").tobytes()
    return ds
