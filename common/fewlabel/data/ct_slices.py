"""CT volumes as a table of 2D training slices, cached on disk, and a CT demo dataset.

PolyCL (Ward et al., MELBA 2025, section 4.2) trains 2D networks on axial CT slices: the middle
30 % of each scan, resized to 256 x 256, window-levelled. Reading a whole CT volume (LiTS: 512 x
512 x ~450 voxels) for every slice a training step needs would dominate the run, so
:func:`cache_ct_slices` reads each volume once and writes its kept slices, resized, as two
``.npy`` stacks per scan (HU as int16, the binary organ mask as uint8) under a cache folder; the
training datasets read single slices from them by memory mapping
(:class:`fewlabel.transforms.ct.LoadCTSliced`), and window-levelling stays a transform
(:class:`fewlabel.transforms.ct.CTWindowd`) so that the window is a config option.

Each slice becomes one datalist-style record::

    {"image": ".../<scan>-<key>.image.npy", "label": ".../<scan>-<key>.label.npy", "index": i,
     "scan": scan id, "slice": position along the axial axis, "has_organ": bool,
     "uid": "<scan>/<position>"}

``index`` is the row of the stacks; ``scan`` and ``has_organ`` are the ``S(s)`` and ``T(s)`` of
the paper's example selection (:func:`fewlabel.data.select_examples`); ``uid`` names the slice
(e.g. as the group key of :func:`fewlabel.data.split_labelled` for slice-level label fractions).

A stack is rebuilt when its volume, its label or the settings change (the file name holds a hash
of them); writes are atomic, so an interrupted run leaves no half-written stack behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fewlabel.arguments import as_bool, as_optional
from fewlabel.data.cache import cache_dir, rank_zero_first
from fewlabel.data.ct import (
    NIFTI_SUFFIXES,
    file_signature,
    load_ct_volume,
    middle_bounds,
    organ_flags,
    write_ct_phantom,
    write_ct_phantom_dicom,
)
from fewlabel.errors import DataError

__all__ = ["cache_ct_slices", "ct_slice_records", "slice_tables", "write_ct_demo_dataset"]

logger = logging.getLogger("fewlabel")
_STACK_VERSION = 1


def _scan_id(item: Mapping[str, Any], image_key: str, scan_key: str) -> str:
    scan = item.get(scan_key)
    if scan not in (None, ""):
        return str(scan)
    name = Path(os.fspath(item[image_key])).name
    return next((name[: -len(s)] for s in NIFTI_SUFFIXES if name.lower().endswith(s)), name)


def _resize_slices(stack: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    """``(Z, H, W)`` -> ``(Z, *size)``: ``"area"``-like antialiased bilinear for images, nearest for masks."""
    if tuple(stack.shape[-2:]) == tuple(size):
        return stack
    x = stack[:, None].float()
    if mode == "nearest":
        out = F.interpolate(x, size=tuple(size), mode="nearest-exact")
    else:
        out = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return out[:, 0]


def cache_ct_slices(
    items: Iterable[Mapping[str, Any]],
    cache: str | os.PathLike | None = None,
    *,
    size: Sequence[int] = (256, 256),
    fraction: float = 0.3,
    organ_labels: int | Sequence[int] = (1, 2),
    rounding: str = "half_up",
    axcodes: str | None = "RAS",
    image_key: str = "image",
    label_key: str = "label",
    scan_key: str = "scan",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Read CT volumes once and return one record per kept axial slice (see the module docstring).

    For every item ``{"image": volume, "label": label volume, "scan": id}`` (NIfTI files or DICOM
    series folders; ``label`` optional) the volume is loaded with
    :func:`~fewlabel.data.ct.load_ct_volume` in ``axcodes`` orientation, the middle ``fraction`` of
    its axial slices is kept (:func:`~fewlabel.data.ct.middle_slices`), each kept slice is resized
    to ``size`` (antialiased bilinear for HU, nearest for the mask) and written to the cache; a
    slice ``has_organ`` when its label, at the original resolution, holds any of ``organ_labels``.
    Items without a label give records without ``"label"`` and with ``has_organ`` None: they serve
    scan-based pre-training (PolyCL-S) but not the organ-based strategies or fine-tuning.

    Args:
        items: CT datalist items (paths absolute, as :func:`fewlabel.data.load_datalist` returns them).
        cache: folder for the stacks; default ``cache_dir("ct_slices")`` (``$FEWLABEL_CACHE``).
        size: ``(H, W)`` of the stored slices (PolyCL: 256 x 256); axis 0 of a slice is the
            volume's first spatial axis (X, patient right -> left under RAS), axis 1 the second.
        fraction: share of each scan's axial slices kept (PolyCL: 0.3; 1.0 keeps all).
        organ_labels: label values that make up the organ, e.g. ``(1, 2)``: LiTS / MSD liver + tumour.
        rounding, axcodes: see :func:`fewlabel.data.ct.middle_slices` and ``load_ct_volume``.
        image_key, label_key, scan_key: keys of the items; a missing scan id becomes the image
            file name without its NIfTI suffix.
        progress: show a progress bar while volumes are read.

    Returns:
        The slice records, grouped by scan in item order, by increasing position within a scan.

    Raises:
        DataError: an item without an image, two items with the same scan id, image and label of
            different sizes, or an unreadable file (the message names it).
    """
    items, root, params, organ = _prepare(items, cache, size, fraction, organ_labels, rounding, axcodes,
                                          image_key, scan_key)
    root.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    records: list[dict[str, Any]] = []
    with rank_zero_first():  # under torch.distributed rank 0 writes the stacks, the other ranks read them
        for item in tqdm(items, desc="CT slices", unit="scan", disable=not progress or len(items) < 2):
            records.extend(_scan_records(item, root, params, organ, image_key, label_key, scan_key))
    return records


def ct_slice_records(
    items: Iterable[Mapping[str, Any]],
    cache: str | os.PathLike | None = None,
    *,
    size: Sequence[int] = (256, 256),
    fraction: float = 0.3,
    organ_labels: int | Sequence[int] = (1, 2),
    rounding: str = "half_up",
    axcodes: str | None = "RAS",
    image_key: str = "image",
    label_key: str = "label",
    scan_key: str = "scan",
) -> list[dict[str, Any]]:
    """The slice records :func:`cache_ct_slices` returns for ``items``, read from the cache alone.

    Nothing is loaded from the volumes and nothing is written: each scan's cached ``.json`` gives its
    slice positions and ``has_organ`` flags (the volumes are only ``stat``-ed, for the cache key).
    PolyCL's configs resolve their datalists with this and fill the cache in an ``initialize``
    step (``setup_steps`` in ``train.json``), so resolving a config never reads or resizes CT volumes.
    Arguments as :func:`cache_ct_slices` (the same values give the same records).

    Raises:
        DataError: as :func:`cache_ct_slices` for the items; a scan whose stacks are not in the cache
            (the message names the scan, the cache folder and the step that writes them).
    """
    items, root, params, organ = _prepare(items, cache, size, fraction, organ_labels, rounding, axcodes,
                                          image_key, scan_key)
    records: list[dict[str, Any]] = []
    for item in items:
        records.extend(_scan_records(item, root, params, organ, image_key, label_key, scan_key, write=False))
    return records


def _prepare(items: Iterable[Mapping[str, Any]], cache: str | os.PathLike | None, size: Sequence[int],
             fraction: float, organ_labels: int | Sequence[int], rounding: str, axcodes: str | None,
             image_key: str, scan_key: str) -> tuple[list[Mapping[str, Any]], Path, dict[str, Any], list[int]]:
    """Checked ``items``, the cache folder, the stack settings (part of each cache key) and the organ labels."""
    items = list(items)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (H, W) with positive sizes, got {size}")
    middle_bounds(1, fraction, rounding)
    organ = sorted({int(v) for v in np.atleast_1d(np.asarray(organ_labels)).tolist()})
    cache = as_optional(cache, "slice_cache")
    root = Path(cache) if cache is not None else cache_dir("ct_slices")
    params = {"v": _STACK_VERSION, "size": list(size), "fraction": float(fraction), "organ": organ,
              "rounding": rounding, "axcodes": axcodes}
    seen: dict[str, str] = {}
    for n, item in enumerate(items):
        if item.get(image_key) in (None, ""):
            raise DataError(f"datalist item {n} ({dict(item)}) has no '{image_key}'.")
        scan = _scan_id(item, image_key, scan_key)
        image = os.fspath(item[image_key])
        if seen.setdefault(scan, image) != image:
            raise DataError(f"scan id '{scan}' is used for two different volumes: {seen[scan]} and {image}. "
                            "Scan ids must be unique per volume.")
    return items, root, params, organ


def _scan_records(item: Mapping[str, Any], root: Path, params: dict[str, Any], organ: list[int],
                  image_key: str, label_key: str, scan_key: str, write: bool = True) -> list[dict[str, Any]]:
    scan = _scan_id(item, image_key, scan_key)
    image = os.fspath(item[image_key])
    label = os.fspath(item[label_key]) if item.get(label_key) not in (None, "") else None
    key = hashlib.sha1(json.dumps([params, file_signature(image), file_signature(label) if label else None],
                                  sort_keys=True).encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in scan)
    stem = root / f"{safe}-{key}"
    paths = {"image": Path(f"{stem}.image.npy"), "label": Path(f"{stem}.label.npy"), "meta": Path(f"{stem}.json")}
    meta = _read_meta(paths["meta"])
    if meta is None or not paths["image"].is_file() or (label and not paths["label"].is_file()):
        if not write:
            raise DataError(
                f"The CT slices of scan '{scan}' ({image}) are not in the slice cache {root}: the stage's initialize "
                "step writes them (`setup_steps` of the PolyCL train.json, fewlabel.data.cache_ct_slices). Run the "
                "stage with `python -m monai.bundle run`, or resolve `setup_steps` first."
            )
        meta = _write_stacks(image, label, paths, params, organ)
    out = []
    for i, (pos, flag) in enumerate(zip(meta["positions"], meta["has_organ"])):
        rec: dict[str, Any] = {"image": str(paths["image"]), "index": i, "scan": scan, "slice": int(pos),
                               "has_organ": flag, "uid": f"{scan}/{pos}", "source": image}
        if label:
            rec["label"] = str(paths["label"])
        out.append(rec)
    return out


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _write_stacks(image: str, label: str | None, paths: dict[str, Path], params: dict[str, Any],
                  organ: list[int]) -> dict[str, Any]:
    vol = load_ct_volume(image, axcodes=params["axcodes"])
    num = int(vol.shape[-1])
    start, stop = middle_bounds(num, params["fraction"], params["rounding"])
    hu = torch.as_tensor(vol)[0, ..., start:stop].permute(2, 0, 1)  # (Z, X, Y)
    flags: list[bool | None] = [None] * (stop - start)
    if label is not None:
        lab = load_ct_volume(label, axcodes=params["axcodes"], dtype=None)
        if tuple(lab.shape) != tuple(vol.shape):
            raise DataError(f"image {image} has shape {tuple(vol.shape)} but its label {label} has shape "
                            f"{tuple(lab.shape)} (channel first, after orientation to {params['axcodes']}); they "
                            "must be one 3D volume each and cover the same voxels.")
        lab_t = torch.as_tensor(lab)[0, ..., start:stop]
        flags = [bool(f) for f in organ_flags(lab_t, organ)]
        mask = torch.zeros(lab_t.shape, dtype=torch.uint8)
        for v in organ:
            mask |= (lab_t == v).to(torch.uint8)
        mask = _resize_slices(mask.permute(2, 0, 1), params["size"], "nearest").round().to(torch.uint8)
        _atomic_save(paths["label"], mask.numpy())
    hu = _resize_slices(hu, params["size"], "bilinear")
    if not torch.isfinite(hu).all():
        bad = int((~torch.isfinite(hu)).sum())
        raise DataError(f"{image} holds {bad} NaN / infinite voxels in its kept slices; repair or drop the scan.")
    _atomic_save(paths["image"], hu.round().clamp(-32768, 32767).to(torch.int16).numpy())
    meta = {"image": image, "label": label, "num_slices": num, "positions": list(range(start, stop)),
            "has_organ": flags, "params": params}
    tmp = paths["meta"].with_name(f"{paths['meta'].name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, paths["meta"])
    return meta


def slice_tables(records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray | None]:
    """``(scan_ids, has_organ)`` arrays of slice records, as :func:`fewlabel.data.select_examples` takes them.

    ``has_organ`` is None when any record lacks an organ flag (a scan without label).
    """
    scans = np.asarray([str(r["scan"]) for r in records])
    flags = [r.get("has_organ") for r in records]
    organ = None if any(f is None for f in flags) else np.asarray(flags, dtype=bool)
    return scans, organ


def write_ct_demo_dataset(
    root: str | os.PathLike | None = None,
    num_scans: int = 10,
    shape: Sequence[int] = (40, 96, 96),
    seed: int = 0,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    dicom_testing: bool = False,
) -> Path:
    """Write abdominal CT phantoms (:func:`fewlabel.data.ct.write_ct_phantom`, HU, liver label) and a datalist.

    Layout: ``root/scans/ct_<k>.nii.gz`` + ``ct_<k>_label.nii.gz`` and ``root/datalist.json`` with
    ``"training"`` / ``"validation"`` / ``"testing"`` split by scan (items ``{"image", "label",
    "scan", "patient"}``), ``"labels"`` and ``"organ_labels": [1]``. With ``dicom_testing`` the
    testing scans are written as DICOM CT series folders instead (``root/dicom/ct_<k>/``), so the
    DICOM path (and DICOM SEG output) is exercised. Cached like the 2D demo datasets: the same
    parameters return the existing file; writing goes to a temporary folder renamed into place.

    Args:
        root: output folder; default ``cache_dir("demo", "ct-<hash of the parameters>")``.
        num_scans: number of scans (>= 3: one per split at least).
        shape: ``(Z, Y, X)`` of every scan (slices, rows, columns).
        seed: scan ``k`` uses seed ``seed + k``; the split is drawn with ``seed``.
        fractions: ``(training, validation, testing)`` shares of the scans.
        dicom_testing: write the testing scans as DICOM series.

    Returns:
        Path of ``datalist.json``.
    """
    if int(num_scans) < 3:
        raise ValueError(f"num_scans must be >= 3 (training, validation and testing), got {num_scans}")
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or not math.isclose(float(fr.sum()), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be three non-negative shares summing to 1, got {list(fractions)}")
    shape = tuple(int(s) for s in shape)
    dicom_testing = as_bool(dicom_testing, "dicom_testing")
    params = {"kind": "ct", "num_scans": int(num_scans), "shape": list(shape), "seed": int(seed),
              "fractions": fr.tolist(), "dicom_testing": bool(dicom_testing)}
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    root = Path(root) if root is not None else cache_dir("demo") / f"ct-{digest}"
    datalist = root / "datalist.json"
    if datalist.is_file() and json.loads(datalist.read_text()).get("phantom") == params:
        return datalist
    if root.exists() and any(root.iterdir()) and not datalist.is_file():
        raise DataError(f"{root} exists, is not empty and holds no CT demo dataset; choose another folder.")
    tmp = root.with_name(root.name + f".tmp-{os.getpid()}")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    n = int(num_scans)
    counts = np.maximum(1, np.round(fr * n).astype(int))
    counts[0] = n - counts[1] - counts[2]
    order = np.random.default_rng(seed).permutation(n)
    split_of = {}
    for name, members in zip(("training", "validation", "testing"),
                             np.split(order, np.cumsum(counts)[:2])):
        for k in members.tolist():
            split_of[k] = name
    blob: dict[str, Any] = {"name": "CT phantoms (fewlabel demo)", "labels": {"0": "background", "1": "liver"},
                            "organ_labels": [1], "phantom": params, "training": [], "validation": [], "testing": []}
    for k in range(n):
        scan = f"ct_{k:03d}"
        label = tmp / "scans" / f"{scan}_label.nii.gz"
        if dicom_testing and split_of[k] == "testing":
            write_ct_phantom_dicom(tmp / "dicom" / scan, shape=shape, seed=seed + k, label_path=label)
            image = f"dicom/{scan}"
        else:
            write_ct_phantom(tmp / "scans" / f"{scan}.nii.gz", shape=shape, seed=seed + k, label_path=label)
            image = f"scans/{scan}.nii.gz"
        blob[split_of[k]].append({"image": image, "label": f"scans/{scan}_label.nii.gz", "scan": scan,
                                  "patient": scan})
    (tmp / "datalist.json").write_text(json.dumps(blob, indent=1))
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, root)
    logger.info("wrote the CT demo dataset (%d phantom scans) to %s", n, root)
    return datalist
