"""LiTS (Liver Tumor Segmentation benchmark, Bilic et al. 2023) → datalist with a seeded scan-level split.

Expected layout (the challenge's training release, as its two archives unpack)::

    SRC_DIR/
      Training Batch 1/volume-0.nii          CT volume in HU
      Training Batch 1/segmentation-0.nii    its label: 0 background, 1 liver, 2 tumour
      ...
      Training Batch 2/volume-130.nii
      Training Batch 2/segmentation-130.nii

``SRC_DIR`` is searched recursively, so the batch folders may have any names (or the files may lie
in ``SRC_DIR`` itself); ``.nii`` and ``.nii.gz`` are both accepted. Volume ``N`` is paired with
segmentation ``N``; a volume without its segmentation, or the reverse, is an error. The challenge's
unlabelled test release (``test-volume-N.nii``) and macOS ``._`` files are ignored.

Split (PolyCL, Ward et al. 2025, section 4.1): 130 scans as 100 / 5 / 25 training / validation /
testing, at random by scan. The release holds 131 volumes (0-130); which one the paper left out is
not stated, so every scan beyond ``sum(counts)`` goes to training (and is logged). With fewer scans
than ``sum(counts)`` (a partial download, a test) the counts are scaled to the number of scans by
largest remainders, keeping at least one validation and one testing scan when there are three
scans or more (see :func:`scaled_counts`).

The datalist's ``organ_labels`` (``[1, 2]``) are the label values that make up the liver: PolyCL
segments the whole liver, tumour included (``build_slice_index(..., organ_label=[1, 2])``).

The scan-level helpers here (:func:`scaled_counts`, :func:`split_by_counts`, :func:`select_scans`,
:func:`split_scans`) are shared with the other CT adapters (``msd_liver``, ``totalsegmentator``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.data.datalist import split_by_group
from fewlabel.errors import DataError

__all__ = [
    "build_lits",
    "LITS_COUNTS",
    "LITS_LABELS",
    "scaled_counts",
    "split_by_counts",
    "select_scans",
    "split_scans",
    "assert_disjoint",
    "nifti_stem",
]

logger = logging.getLogger("fewlabel.data")

#: The paper's (training, validation, testing) scan counts.
LITS_COUNTS = (100, 5, 25)
LITS_LABELS = {"0": "background", "1": "liver", "2": "tumour"}
SPLITS = ("training", "validation", "testing")

_FILE = re.compile(r"^(volume|segmentation)-(\d+)\.nii(\.gz)?$", re.IGNORECASE)
_LAYOUT = (
    "Expected the LiTS training release: SRC_DIR/**/volume-<N>.nii and SRC_DIR/**/segmentation-<N>.nii "
    "(.nii or .nii.gz, e.g. in 'Training Batch 1/' and 'Training Batch 2/'; searched recursively)."
)


# ----------------------------------------------------------------------------- scan-level helpers
def nifti_stem(path: str | os.PathLike) -> str:
    """File name without ``.nii`` / ``.nii.gz`` (``liver_0.nii.gz`` -> ``liver_0``)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def scaled_counts(counts: Sequence[int], num_scans: int) -> tuple[int, ...]:
    """``counts`` (training, validation, testing) scaled to ``num_scans`` scans in all.

    Each part gets ``floor(count * num_scans / sum(counts))``; the scans left over go one each to
    the parts with the largest remainders (ties: the earlier part). When ``num_scans >= 3``, a
    validation or testing part that was asked for (count > 0) but came out empty takes one scan
    from the largest part. Example: ``(100, 5, 25)`` and 13 scans -> ``(10, 1, 2)``; 3 scans ->
    ``(1, 1, 1)``.
    """
    total = sum(counts)
    exact = [c * num_scans / total for c in counts]
    out = [int(np.floor(e)) for e in exact]
    by_remainder = sorted(range(len(out)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in by_remainder[: num_scans - sum(out)]:
        out[i] += 1
    if num_scans >= 3:
        for i in range(1, len(out)):
            if counts[i] > 0 and out[i] == 0:
                out[int(np.argmax(out))] -= 1
                out[i] = 1
    return tuple(out)


def _check_counts(counts: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(counts)
    if len(values) != 3 or any(int(c) != c or c < 0 for c in values) or sum(values) <= 0:
        raise ValueError(f"counts must be three non-negative integers (training, validation, testing) "
                         f"with a positive sum, got {list(values)}")
    return tuple(int(c) for c in values)  # type: ignore[return-value]


def split_by_counts(
    items: Sequence[dict[str, Any]], counts: Sequence[int], seed: int = 0, dataset: str = "dataset",
) -> list[list[dict[str, Any]]]:
    """Seeded random split of one-item-per-scan ``items`` into (training, validation, testing) by scan counts.

    Scans are shuffled with ``seed``; validation takes the first ``counts[1]``, testing the next
    ``counts[2]``, training the rest -- so scans beyond ``sum(counts)`` go to training. With fewer
    scans than ``sum(counts)`` the counts are first scaled (:func:`scaled_counts`). Both cases are
    logged, naming ``dataset``.

    Returns:
        ``[training, validation, testing]``, each in the input order.
    """
    counts = _check_counts(counts)
    n, total = len(items), sum(counts)
    if n < total:
        scaled = scaled_counts(counts, n)
        logger.info("%s: %d scans, fewer than the %d of counts %s; counts scaled to %s",
                    dataset, n, total, list(counts), list(scaled))
        counts = scaled  # type: ignore[assignment]
    elif n > total:
        logger.info("%s: %d scans, %d more than the %d of counts %s; the %d extra scans go to training",
                    dataset, n, n - total, total, list(counts), n - total)
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = counts[1], counts[2]
    part_of = np.zeros(n, dtype=int)
    part_of[order[:n_val]] = 1
    part_of[order[n_val:n_val + n_test]] = 2
    return [[item for item, p in zip(items, part_of) if p == k] for k in range(3)]


def select_scans(items: Sequence[dict[str, Any]], num_scans: int | None, seed: int = 0,
                 dataset: str = "dataset") -> list[dict[str, Any]]:
    """A seeded random subset of ``num_scans`` items (all when None or when there are fewer), in input order."""
    if num_scans is None:
        return list(items)
    if int(num_scans) != num_scans or num_scans < 1:
        raise ValueError(f"num_scans must be a positive integer or None, got {num_scans!r}")
    if num_scans >= len(items):
        if num_scans > len(items):
            logger.warning("%s: num_scans=%d but only %d scans are available; all are used",
                           dataset, num_scans, len(items))
        return list(items)
    keep = np.sort(np.random.default_rng(seed).permutation(len(items))[: int(num_scans)])
    return [items[i] for i in keep]


def split_scans(items: Sequence[dict[str, Any]], fractions: Sequence[float] | None,
                seed: int = 0) -> list[list[dict[str, Any]]]:
    """``[training, validation, testing]``: all in testing when ``fractions`` is None, else a seeded split by scan."""
    if fractions is None:
        return [[], [], list(items)]
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3:
        raise ValueError(f"fractions must be (training, validation, testing) or None, got {list(fractions)}")
    return split_by_group(items, fr, seed=seed, group_key="scan")


def assert_disjoint(parts: Sequence[Sequence[dict[str, Any]]]) -> None:
    """Assert that no scan is listed in two parts (nor twice in one)."""
    scans = [item["scan"] for part in parts for item in part]
    assert len(scans) == len(set(scans)), "a scan is listed twice across the splits"


def make_datalist(name: str, labels: dict[str, str], organ_labels: Sequence[int],
                  parts: Sequence[list[dict[str, Any]]]) -> dict[str, Any]:
    """The datalist dict of a CT adapter (after checking that the parts are disjoint by scan)."""
    assert_disjoint(parts)
    datalist: dict[str, Any] = {"name": name, "labels": dict(labels), "organ_labels": [int(v) for v in organ_labels]}
    datalist.update(dict(zip(SPLITS, (list(p) for p in parts))))
    return datalist


# ----------------------------------------------------------------------------- LiTS
def _find_files(src: Path) -> dict[str, dict[int, Path]]:
    """``{"volume": {N: path}, "segmentation": {N: path}}`` found recursively under ``src``."""
    found: dict[str, dict[int, Path]] = {"volume": {}, "segmentation": {}}
    for path in sorted(src.rglob("*")):
        match = _FILE.match(path.name)
        if match is None or not path.is_file():
            continue
        kind, number = match.group(1).lower(), int(match.group(2))
        other = found[kind].setdefault(number, path)
        if other != path:
            raise DataError(f"LiTS {kind} {number} is there twice: {other} and {path}. Keep one of them.")
    return found


def _pair(found: dict[str, dict[int, Path]], src: Path) -> list[dict[str, Any]]:
    volumes, segmentations = found["volume"], found["segmentation"]
    orphans = sorted(set(segmentations) - set(volumes))
    if orphans:
        number = orphans[0]
        raise DataError(f"LiTS segmentation {segmentations[number]} has no volume: expected volume-{number}.nii "
                        f"(or .nii.gz) under {src}. {_LAYOUT}")
    items = []
    for number in sorted(volumes):
        if number not in segmentations:
            raise DataError(f"LiTS volume {volumes[number]} has no segmentation: expected segmentation-{number}.nii "
                            f"(or .nii.gz) under {src}. {_LAYOUT}")
        scan = f"volume-{number}"
        items.append({"image": str(volumes[number].resolve()), "label": str(segmentations[number].resolve()),
                      "scan": scan, "patient": scan})
    return items


def build_lits(
    src_dir: str | os.PathLike,
    counts: Sequence[int] = LITS_COUNTS,
    seed: int = 0,
    **_: Any,
) -> dict[str, Any]:
    """Build the LiTS datalist: volumes and segmentations referenced in place, seeded split by scan.

    Args:
        src_dir: the unpacked training release (searched recursively, see the module docstring).
        counts: ``(training, validation, testing)`` numbers of scans (paper: 100 / 5 / 25). Extra
            scans go to training; with fewer scans the counts are scaled (:func:`scaled_counts`).
        seed: split seed; the same seed and files give the same split.
        **_: other options (e.g. ``out_dir``) are accepted and ignored.

    Returns:
        A datalist dict: ``name`` ``"LiTS"``, ``labels`` ``{"0": "background", "1": "liver",
        "2": "tumour"}``, ``organ_labels`` ``[1, 2]``, and ``training`` / ``validation`` /
        ``testing`` items ``{"image", "label", "scan", "patient"}`` (absolute paths; ``scan`` and
        ``patient`` are ``"volume-<N>"``).

    Raises:
        DataError: ``src_dir`` is missing or holds no ``volume-<N>`` file, a volume has no
            segmentation (or the reverse), or a file is there twice.
        ValueError: ``counts`` is not three non-negative integers with a positive sum.
    """
    counts = _check_counts(counts)
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise DataError(f"LiTS source folder not found: {src}. {_LAYOUT}")
    found = _find_files(src)
    if not found["volume"] and not found["segmentation"]:
        raise DataError(f"No LiTS volume-<N>.nii files under {src}. {_LAYOUT}")
    ignored = sum(1 for p in src.rglob("test-volume-*.nii*") if p.is_file())
    if ignored:
        logger.info("LiTS: %d unlabelled test-volume files under %s are ignored", ignored, src)
    items = _pair(found, src)
    parts = split_by_counts(items, counts, seed=seed, dataset="LiTS")
    datalist = make_datalist("LiTS", LITS_LABELS, (1, 2), parts)
    logger.info("LiTS datalist from %s (seed %d): %d training, %d validation, %d testing scans",
                src, seed, *(len(p) for p in parts))
    return datalist
