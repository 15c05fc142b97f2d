"""Check a whole datalist's files before training starts, and list every problem at once.

Without this check a missing, truncated or wrongly sized file stops a run when the data loader
first reaches it, possibly hours in, and only that one file is named. :func:`check_datalist_files`
and :func:`check_datalist` (the same for a datalist JSON's training, validation and unlabelled
splits) run in each bundle's ``initialize`` step (``check_data``, default true) and read headers only:

- 2D images (PNG, JPEG, TIFF, BMP): the size from Pillow's header parse; PNG files also get their
  chunk checksums verified (catches truncation and corruption, decompresses nothing), JPEG files
  must end with the end-of-image marker (a file that does not is decoded once to confirm). Damage
  inside a JPEG's compressed data (or a TIFF's, a BMP's) is only found when the image is decoded.
- NIfTI volumes: the shape from ``nibabel``'s header; an uncompressed ``.nii`` must be as long as
  its header says (a ``.nii.gz`` cut inside its data is only found when it is decompressed).
- DICOM series (a folder): the series' files and their order from the headers
  (:func:`fewlabel.data.dicom_series_files`), ``Rows`` / ``Columns`` of one slice and the count.

An item's image and label must have the same size: ``H x W`` for 2D files, the same three sizes
for volumes (in any order, as NIfTI and DICOM store the axes differently; see
:func:`fewlabel.data.build_slice_index`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fewlabel.errors import DataError

__all__ = ["check_datalist", "check_datalist_files", "read_file_shape", "MAX_LISTED", "TRAINING_SPLITS",
           "groups_in_several_splits", "check_group_leakage", "EVALUATION_SPLITS"]

MAX_LISTED = 20  # problems listed in full; the rest are counted
TRAINING_SPLITS = ("training", "validation", "unlabelled")  # the splits a training run reads
EVALUATION_SPLITS = ("training", "validation", "testing")  # a group (video, patient) must be in one of them
_JPEG_SUFFIXES = (".jpg", ".jpeg")
_JPEG_TAIL = 1024  # bytes searched for the end-of-image marker (some writers append padding after it)


def _read_2d_shape(path: Path) -> tuple[int, int]:
    """``(H, W)`` of a 2D image from its header; PNG checksums and the JPEG end marker are checked too."""
    from PIL import Image

    with Image.open(path) as im:
        width, height = im.size
        if im.format == "PNG":
            im.verify()  # every chunk's CRC, up to IEND: raises on truncation or a flipped bit
    if path.suffix.lower() in _JPEG_SUFFIXES:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - _JPEG_TAIL))
            tail = fh.read()
        if b"\xff\xd9" not in tail:  # no end-of-image marker: truncated, unless the decoder disagrees
            with Image.open(path) as im:
                im.load()
    return int(height), int(width)


def _read_volume_shape(path: Path) -> tuple[int, ...]:
    """Spatial shape of a NIfTI file or a DICOM series folder, from the header(s)."""
    if path.is_dir():
        import pydicom

        from fewlabel.data.ct import dicom_series_files

        files = dicom_series_files(path)  # DataError naming the folder for an empty / mixed / bad series
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        return int(ds.Columns), int(ds.Rows), len(files)
    import nibabel as nib
    import numpy as np

    img = nib.load(os.fspath(path))
    if path.name.lower().endswith(".nii"):  # uncompressed: the file must hold the whole array
        offset = int(getattr(img.dataobj, "offset", img.header.get_data_offset()))
        need = offset + int(np.prod(img.shape)) * img.header.get_data_dtype().itemsize
        if path.stat().st_size < need:
            raise OSError(f"file has {path.stat().st_size} bytes, its header needs {need}")
    return tuple(int(s) for s in img.shape[:3])


def _is_volume(path: Path) -> bool:
    name = path.name.lower()
    return path.is_dir() or name.endswith((".nii", ".nii.gz"))


def read_file_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """Spatial shape of an image or volume file, reading its header only.

    Args:
        path: a 2D image (PNG, JPEG, TIFF, BMP), a NIfTI file (``.nii`` / ``.nii.gz``) or a folder
            holding one DICOM series.

    Returns:
        ``(H, W)`` for a 2D image; the three stored sizes of a volume (NIfTI: its array shape;
        DICOM: ``(Columns, Rows, slices)``).

    Raises:
        FileNotFoundError: the path does not exist.
        DataError: a DICOM folder holds no (or more than one) series.
        Exception: whatever the reader raises on a truncated or corrupt file.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(p)
    return _read_volume_shape(p) if _is_volume(p) else _read_2d_shape(p)


def _same_size(a: Sequence[int], b: Sequence[int]) -> bool:
    if len(a) != len(b):
        return False
    return tuple(a) == tuple(b) if len(a) == 2 else sorted(a) == sorted(b)


def _size_text(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def check_datalist_files(
    items: Iterable[Mapping[str, Any]],
    keys: Sequence[str] = ("image", "label"),
    read_shape: Callable[[str], Sequence[int]] | None = None,
    max_listed: int = MAX_LISTED,
) -> None:
    """Check that every file of a datalist exists and opens, and that each item's files agree in size.

    Every item is checked and every problem collected, so one run reports them all: missing files,
    files that cannot be read (truncated, corrupt, not an image), and items whose image and label
    sizes differ. A file used by several items is read once. Keys an item does not have (an
    unlabelled item's ``label``) and values that are not paths (arrays) are skipped.

    Args:
        items: the datalist items (dicts with ``keys`` holding file paths), e.g. training plus validation.
        keys: the keys holding files; the first one's size is the reference the others must match.
        read_shape: ``path -> spatial shape``, header only; default :func:`read_file_shape`.
        max_listed: problems listed in full; the rest are counted ("and N more").

    Raises:
        DataError: one line per problem, each naming the file and the fix.
    """
    read = read_shape or read_file_shape
    shapes: dict[str, Sequence[int] | None] = {}
    problems: list[str] = []

    def shape_of(key: str, path: str) -> Sequence[int] | None:
        if path not in shapes:
            shapes[path] = None
            try:
                shapes[path] = tuple(read(path))
            except FileNotFoundError:
                problems.append(f"{key} file not found: {path}. Fix its path in the datalist or restore the file.")
            except DataError as e:  # already names the file and the fix
                problems.append(" ".join(str(e).split()))
            except Exception as e:  # readers raise many types on broken files (OSError, SyntaxError, zlib.error ...)
                problems.append(f"cannot read {key} {path}: {type(e).__name__}: {' '.join(str(e).split())}. The file "
                                "is truncated or corrupt: re-export it or remove the item from the datalist.")
        return shapes[path]

    n_items = 0
    for item in items:
        n_items += 1
        found = [(k, os.fspath(item[k])) for k in keys if isinstance(item.get(k), (str, os.PathLike))]
        sized = [(k, p, shape_of(k, p)) for k, p in found]
        sized = [(k, p, s) for k, p, s in sized if s is not None]
        for k, p, s in sized[1:]:
            k0, p0, s0 = sized[0]
            if not _same_size(s0, s):
                problems.append(f"{k0} {p0} is {_size_text(s0)} but its {k} {p} is {_size_text(s)}. "
                                f"Re-export the {k} at the {k0}'s size (or fix the pairing in the datalist).")
    if problems:
        listed = [f"  - {p}" for p in problems[:max_listed]]
        if len(problems) > max_listed:
            listed.append(f"  ... and {len(problems) - max_listed} more.")
        raise DataError(
            f"{len(problems)} problem(s) in the data files ({n_items} item(s) checked before training):\n"
            + "\n".join(listed)
            + "\nFix them and run again (or pass --check_data false to skip this check)."
        )


def check_datalist(
    path: str | os.PathLike,
    splits: Sequence[str] = TRAINING_SPLITS,
    keys: Sequence[str] = ("image", "label"),
    read_shape: Callable[[str], Sequence[int]] | None = None,
    max_listed: int = MAX_LISTED,
) -> None:
    """:func:`check_datalist_files` over the ``splits`` of a datalist JSON that it has (others are skipped).

    The bundles' training configs call this in ``initialize``, before anything reads an image, so
    every missing, unreadable or wrongly sized file of the datalist is listed in one error.

    Args:
        path: the datalist JSON (paths in it relative to its folder, or absolute).
        splits: the lists to check; default the ones training reads.
        keys: see :func:`check_datalist_files`.
        read_shape: see :func:`check_datalist_files`.
        max_listed: see :func:`check_datalist_files`.

    Raises:
        DataError: the datalist is missing or not JSON, or lists files with problems (all of them).
    """
    from fewlabel.data.datalist import load_datalist

    try:
        content = json.loads(Path(path).read_text())
        present = {k for k, v in content.items() if isinstance(v, list)}
    except (OSError, ValueError, AttributeError):
        present = {splits[0]}  # load_datalist raises the error that names the file and the fix
    items: list[Mapping[str, Any]] = []
    for split in splits:
        if split in present:
            items += load_datalist(path, split, check_files=False)
    check_datalist_files(items, keys, read_shape, max_listed)


def groups_in_several_splits(
    datalist: Mapping[str, Any], splits: Sequence[str] = EVALUATION_SPLITS, group_key: str = "patient",
) -> dict[str, list[str]]:
    """The groups (videos, patients) that have items in more than one of ``splits``: data leakage.

    Args:
        datalist: a datalist dict (as an adapter returns it or as read from JSON).
        splits: the lists compared (default training, validation and testing; ``unlabelled`` frames of a
            labelled video are the few-label setting, not a leak).
        group_key: the item key naming the group.

    Returns:
        ``{group: [split, ...]}`` for every group in two or more splits (empty: no leakage). Items
        without ``group_key`` are their own group, so a datalist grouped per frame never shows one.
    """
    where: dict[str, list[str]] = {}
    for split in splits:
        for item in datalist.get(split) or []:
            group = item.get(group_key) if isinstance(item, Mapping) else None
            if group is not None and split not in where.setdefault(str(group), []):
                where[str(group)].append(split)
    return {g: s for g, s in sorted(where.items()) if len(s) > 1}


def check_group_leakage(
    datalist: Mapping[str, Any] | str | os.PathLike, splits: Sequence[str] = EVALUATION_SPLITS,
    group_key: str = "patient", max_listed: int = MAX_LISTED,
) -> None:
    """Raise when a group (video, patient) has items in two splits (see :func:`groups_in_several_splits`).

    Args:
        datalist: a datalist dict or its JSON file.
        splits, group_key: see :func:`groups_in_several_splits`.
        max_listed: groups named in the message.

    Raises:
        DataError: names each leaking group and its splits, and the fix.
    """
    where = str(datalist) if isinstance(datalist, (str, os.PathLike)) else "the datalist"
    if isinstance(datalist, (str, os.PathLike)):
        try:
            datalist = json.loads(Path(datalist).read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"Cannot read datalist {where}: {e}") from e
    leaks = groups_in_several_splits(datalist, splits, group_key)
    if leaks:
        listed = [f"{g} ({', '.join(s)})" for g, s in list(leaks.items())[:max_listed]]
        more = f" and {len(leaks) - max_listed} more" if len(leaks) > max_listed else ""
        raise DataError(
            f"{len(leaks)} {group_key} group(s) of {where} are in more than one split: {'; '.join(listed)}{more}. "
            "Frames of one video in training and testing inflate the test score: split by video "
            "(`fewlabel datalist ... --group_regex`), or check the frame -> video mapping you gave."
        )
