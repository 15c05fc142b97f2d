"""Datalists: the JSON files that tell a bundle which images (and labels) to use.

The format is MONAI's Decathlon datalist, so ``monai.data.load_decathlon_datalist`` reads it::

    {
      "name": "ISIC-2017",
      "labels": {"0": "background", "1": "lesion"},
      "training":   [{"image": "train/ISIC_0000000.jpg", "label": "...png", "patient": "ISIC_0000000"}],
      "validation": [...],
      "testing":    [...],
      "unlabelled": [{"image": "...", "patient": "..."}]
    }

Paths are relative to the folder the JSON file lies in (or absolute). ``patient`` is the
grouping key for splits: no patient (video, scan, slide) ever lands in two splits.
:func:`mixed_items` joins labelled, unlabelled and pseudo-labelled items into one training list
(SAM knowledge mining's mixed batches).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import load_decathlon_datalist

from fewlabel.data.files import TEMP_MARK, refuse_shared_outputs
from fewlabel.data.image_2d import mask_output_name
from fewlabel.errors import DataError

__all__ = [
    "SPLITS",
    "save_datalist",
    "load_datalist",
    "split_by_group",
    "split_labelled",
    "load_images",
    "list_images",
    "IMAGE_SUFFIXES",
    "check_training_data",
    "mixed_items",
]

SPLITS = ("training", "validation", "testing", "unlabelled")

logger = logging.getLogger("fewlabel.data")


def save_datalist(datalist: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``datalist`` as JSON to ``path``, with image/label paths made relative to its folder.

    Args:
        datalist: a dict with any of the keys in :data:`SPLITS`, each a list of items
            (dicts with at least ``"image"``), plus optional ``"name"`` and ``"labels"``.
        path: output JSON file; its parent folders are created.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    out: dict[str, Any] = {}
    for key, value in datalist.items():
        if key in SPLITS:
            out[key] = [_relative_item(item, base) for item in value]
        else:
            out[key] = value
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(out, indent=2))
    os.replace(tmp, path)
    return path


def _relative_item(item: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(item)
    for key in ("image", "label"):
        if key in out and isinstance(out[key], (str, os.PathLike)):
            p = Path(out[key])
            if p.is_absolute():
                try:
                    out[key] = p.resolve().relative_to(base).as_posix()
                except ValueError:
                    out[key] = str(p)
            else:
                out[key] = p.as_posix()
    return out


def load_datalist(
    path: str | os.PathLike, split: str = "training", base_dir: str | os.PathLike | None = None,
    check_files: bool = True,
) -> list[dict[str, Any]]:
    """Read one split of a datalist JSON, with paths made absolute.

    Args:
        path: the datalist JSON file.
        split: one of :data:`SPLITS` (or any list-valued key of the file).
        base_dir: folder the relative paths are relative to; defaults to the JSON's folder.
        check_files: raise :class:`~fewlabel.errors.DataError` naming the first missing
            image or label file.

    Raises:
        DataError: the file is missing, not JSON, has no such split, or lists missing files.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"Datalist file not found: {path}. Create one with `fewlabel datalist DATASET SRC_DIR -o {path}`, "
            "or leave dataset_dir unset to use the demo data."
        )
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"Datalist {path} is not valid JSON ({e}). Re-create it with `fewlabel datalist`.") from e
    if split not in content:
        raise DataError(f"Datalist {path} has no '{split}' list (it has: {sorted(content)}).")
    base = Path(base_dir) if base_dir is not None else path.parent
    items = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=split, base_dir=str(base))
    if check_files:
        for item in items:
            for key in ("image", "label"):
                if key in item and isinstance(item[key], str) and not os.path.exists(item[key]):
                    raise DataError(
                        f"{key} file listed in {path} ('{split}') does not exist: {item[key]}. "
                        "Check dataset_dir, or re-create the datalist with `fewlabel datalist`."
                    )
    return items


def split_by_group(
    items: Sequence[dict[str, Any]],
    fractions: Sequence[float],
    seed: int = 0,
    group_key: str = "patient",
) -> list[list[dict[str, Any]]]:
    """Split ``items`` into ``len(fractions)`` parts at group level (patient, video, scan).

    Groups are shuffled with ``seed`` and assigned greedily so that each part's share of
    *items* is as close as possible to its fraction; no group is in two parts. Items without
    ``group_key`` are their own group.

    Args:
        items: datalist items.
        fractions: non-negative numbers summing to 1 (e.g. ``(0.7, 0.1, 0.2)``).
        seed: the same seed and items give the same split.
        group_key: the item key naming the group.

    Returns:
        One list of items per fraction, each in the input order.
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.ndim != 1 or len(fr) == 0 or (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {list(fractions)}")
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(str(item.get(group_key, f"__item{i}")), []).append(i)
    names = sorted(groups)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    targets = fr * len(items)
    counts = np.zeros(len(fr))
    assignment: list[list[int]] = [[] for _ in fr]
    for g in order:
        idx = groups[names[g]]
        # the part furthest below its target (relative) takes the next group
        deficit = (targets - counts) / np.maximum(targets, 1e-9)
        deficit[targets == 0] = -np.inf
        part = int(np.argmax(deficit))
        assignment[part].extend(idx)
        counts[part] += len(idx)
    return [[items[i] for i in sorted(part)] for part in assignment]


def split_labelled(
    items: Sequence[dict[str, Any]],
    labelled_fraction: float,
    seed: int = 0,
    group_key: str = "patient",
    min_labelled: int = 1,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split training items into a labelled part and an unlabelled part, at group level.

    The unlabelled items keep their image but lose their ``label`` key, so no code path can
    use a label that the few-label setting says is unknown.

    Args:
        items: training items.
        labelled_fraction: share of items to keep labelled, in [0, 1].
        seed: random seed of the group shuffle.
        group_key: the item key naming the group (patient, video, scan).
        min_labelled: at least this many groups are labelled when ``labelled_fraction > 0``.

    Returns:
        ``(labelled, unlabelled)``.
    """
    if not 0.0 <= labelled_fraction <= 1.0:
        raise ValueError(f"labelled_fraction must be in [0, 1], got {labelled_fraction}")
    if labelled_fraction in (0.0, 1.0):
        parts = [list(items), []] if labelled_fraction == 1.0 else [[], list(items)]
    else:
        parts = split_by_group(items, (labelled_fraction, 1.0 - labelled_fraction), seed, group_key)
        if min_labelled and not parts[0] and parts[1]:
            first_group = parts[1][0].get(group_key)
            parts = [
                [it for it in parts[1] if it.get(group_key) == first_group],
                [it for it in parts[1] if it.get(group_key) != first_group],
            ]
    unlabelled = [{k: v for k, v in it.items() if k != "label"} for it in parts[1]]
    return parts[0], unlabelled


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def load_images(path: str | os.PathLike, splits: Sequence[str] = ("training", "unlabelled")) -> list[dict[str, Any]]:
    """Image-only items of the given splits of a datalist (labels dropped), for label-free training.

    Splits the file does not have are skipped; at least one must exist.
    """
    content = json.loads(Path(path).read_text()) if Path(path).is_file() else None
    if content is None:
        load_datalist(path)  # raises the clear missing-file error
    present = [s for s in splits if s in content]
    if not present:
        raise DataError(f"datalist {path} has none of the splits {list(splits)}")
    items = [it for s in present for it in load_datalist(path, s)]
    return [{k: v for k, v in it.items() if k != "label"} for it in items]


#: stems of result files an inference run writes beside its inputs' names (never inputs themselves)
_RESULT_ENDINGS = ("_mask", "_overlay")


def _entry_problem(entry: os.DirEntry) -> str | None:
    """Why an entry named like an image is not one, or ``None`` for a regular image file."""
    name = entry.name
    if Path(name).stem.endswith(_RESULT_ENDINGS):
        return "a result file of an earlier run (*_mask / *_overlay)"
    if TEMP_MARK in name:
        return "an unfinished temporary result file"
    if name.startswith("._"):
        return "a macOS resource-fork file ('._' prefix), not an image"
    try:
        mode = os.stat(entry.path).st_mode  # follows symbolic links
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        if entry.is_symlink():
            return f"a broken symbolic link (to {os.readlink(entry.path)})"
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISDIR(mode):
        return "a folder named like an image, not an image file"
    if not stat.S_ISREG(mode):
        return "not a regular file (device, pipe or socket)"
    return None


def _walk(root: Path, recursive: bool) -> Iterator[os.DirEntry]:
    """Entries of ``root`` (and, if ``recursive``, of its sub-folders, symbolic links followed once each)."""
    seen: set[tuple[int, int]] = set()
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen:
                logger.warning("list_images: skipped folder %s: already searched (a symbolic link loop)", folder)
                continue
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            logger.warning("list_images: skipped folder %s: cannot be read (%s)", folder, e.strerror or e)
            continue
        for entry in entries:
            yield entry
            if recursive and Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
                try:
                    is_dir = entry.is_dir()  # follows symbolic links; loops end at the ``seen`` check
                except OSError:
                    is_dir = False
                if is_dir:
                    stack.append(entry.path)


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[dict[str, str]]:
    """``[{"image": path}, ...]`` for the image files (PNG, JPEG, TIFF, BMP) in ``folder``, sorted.

    Every entry that is not taken is logged (logger ``fewlabel.data``) with the reason: folders named
    like images (``x.png/``), broken symbolic links and link loops, result files of an earlier run
    (``*_mask.png``, ``*_overlay.png``) and unfinished temporary results (WARNING / INFO, one line each),
    and files of other kinds (one INFO line with their count). With ``recursive`` sub-folders are
    searched too; symbolic links to folders are followed, each folder once, so a link loop ends.

    Raises:
        DataError: the folder is missing or holds no image file, or two inputs would write the same
            result (``case1.png`` and ``case1.jpg`` both give ``case1_mask.png``, see
            :func:`fewlabel.data.image_2d.mask_output_name`): refused before anything is written.
    """
    root = Path(folder)
    if root.is_file():
        raise DataError(f"input folder {root} is a file, not a folder. Pass --dataset_dir <folder of images>, or "
                        "list single files in a datalist.")
    if not root.is_dir():
        raise DataError(f"input folder does not exist: {root}. Pass --dataset_dir <folder of images>.")
    files: list[str] = []
    others: Counter[str] = Counter()
    folders = 0
    for entry in _walk(root, recursive):
        suffix = Path(entry.name).suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                folders += 1
            else:
                others[suffix or "(no suffix)"] += 1
            continue
        problem = _entry_problem(entry)
        if problem is None:
            files.append(entry.path)
        else:
            level = logging.INFO if problem.startswith(("a result", "an unfinished")) else logging.WARNING
            logger.log(level, "list_images: skipped %s: %s", entry.path, problem)
    if others:
        kinds = ", ".join(f"{n} {s}" for s, n in others.most_common())
        logger.info("list_images: skipped %d file(s) that are not images (%s) in %s", sum(others.values()), kinds,
                    root)
    if folders and not recursive:
        logger.info("list_images: did not search %d sub-folder(s) of %s (pass recursive=True to)", folders, root)
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {root}.")
    files.sort()
    items = [{"image": p} for p in files]
    refuse_shared_outputs(items, mask_output_name)
    logger.info("list_images: %d image(s) in %s", len(items), root)
    return items


def check_training_data(train: Sequence[Any], validation: Sequence[Any] | None, min_train: int = 2) -> None:
    """Fail before training when the labelled items cannot train a network and pick a checkpoint.

    For training runs whose items come from outside a datalist, such as MONAI Label's ``/train``
    (the labels saved so far, split by its ``val_split``): with too few, the run would otherwise
    skip every batch or never save a checkpoint, and still report success.

    Args:
        train: the training items.
        validation: the validation items (the checkpoint is chosen on them); ``None`` skips the check.
        min_train: fewest training items (2: a batch of one breaks batch norm on pooled features,
            and the bundles drop such a last batch).

    Raises:
        DataError: says how many items there are and how to get enough.
    """
    n = len(train)
    if n < min_train:
        raise DataError(
            f"{n} labelled training image(s): training needs at least {min_train}. Save more labels (MONAI Label: "
            "PUT /datastore/label?image=<id>&tag=final), or lower val_split so fewer go to validation."
        )
    if validation is not None and len(validation) == 0:
        raise DataError(
            "no validation images, so no checkpoint would be saved. MONAI Label keeps val_split (default 0.2) of "
            f"the saved labels for validation, and {n} were left for training: save more labels or pass a larger "
            "val_split, e.g. {\"val_split\": 0.5}."
        )


def mixed_items(
    labelled: Iterable[Mapping[str, Any]],
    unlabelled: Iterable[Mapping[str, Any]] = (),
    pseudo: Iterable[Mapping[str, Any]] = (),
    flag_key: str = "is_labelled",
    valid_key: str = "valid",
    label_key: str = "label",
) -> list[dict[str, Any]]:
    """One training list of labelled, unlabelled (continuous mode) and pseudo-labelled (one-time) items.

    Labelled items get ``is_labelled = 1, valid = 1``; unlabelled ones lose any ``label`` and get
    ``is_labelled = 0, valid = 1``; pseudo-labelled items (from :func:`fewlabel.engines.mine_pseudo_labels`) get
    ``is_labelled = 0`` and keep their ``valid``. Every item gets both keys, so batches collate.
    """
    out = [{**dict(it), flag_key: 1, valid_key: 1} for it in labelled]
    for it in out:
        if label_key not in it:
            raise ValueError(f"labelled item {it.get('image', it)} has no '{label_key}'")
    out += [{**{k: v for k, v in it.items() if k != label_key}, flag_key: 0, valid_key: 1} for it in unlabelled]
    for it in pseudo:
        if label_key not in it:
            raise ValueError(f"pseudo-labelled item {it.get('image', it)} has no '{label_key}' (pseudo-label file)")
        out.append({**dict(it), flag_key: 0, valid_key: int(bool(it.get(valid_key, 1)))})
    return out
