"""COVID-19 Radiography Database (Chowdhury et al. 2020; Rahman et al. 2021) → lung-mask datalist.

The chest X-ray dataset of MedSASS: 21,165 radiographs of 299 x 299 pixels in four classes
(COVID 3,616, Lung_Opacity 6,012, Normal 10,192, Viral Pneumonia 1,345), each with a lung mask.
The release has no official split; the paper reports 14,730 / 2,202 / 4,233 images for training,
validation and testing and uses the same split for its classification probe (Table 9).

Expected layout (as the Kaggle archive unpacks; the metadata ``.xlsx`` files are not needed)::

    SRC_DIR/COVID-19_Radiography_Dataset/
      COVID/            images/COVID-1.png             masks/COVID-1.png
      Lung_Opacity/     images/Lung_Opacity-1.png      masks/Lung_Opacity-1.png
      Normal/           images/Normal-1.png            masks/Normal-1.png
      Viral Pneumonia/  images/Viral Pneumonia-1.png   masks/Viral Pneumonia-1.png

``SRC_DIR`` may also be the ``COVID-19_Radiography_Dataset`` folder itself (any folder holding
the class folders). Images are matched to masks by file stem.

Masks: the published lung masks are 0/255 PNGs. A mask of the image's size is referenced in
place; a mask of another size (masks saved at another resolution than the 299 x 299 images) is
resized to the image's size (nearest neighbour) and written as a 0/1 PNG to
``OUT_DIR/masks/<class>/<stem>.png``, because the bundles require an image and its label to have
the same size. ``resize_masks=False`` makes such a pair an error instead. A mask already written
from the same file (same size and modification time) is not written again.

Split (deterministic, seeded): the sizes are the paper's 14,730 : 2,202 : 4,233 proportions of
the images found, rounded by largest remainder, so the full set of 21,165 gives exactly
14,730 / 2,202 / 4,233 (69.6 % / 10.4 % / 20.0 %; the counts are what a 20 % test split followed
by a 13 % validation split of the rest, both rounded up, gives; the paper does not say how it
split). With ``stratify=True`` (default) every split keeps the class proportions (each class's
count in a split is within one image of its share). ``fractions`` sets other proportions.
The release has no patient ids: ``patient`` is the file stem (every image its own group).
Each item also carries ``"class"`` (the class folder), for classification.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from fewlabel.data.adapters.stamped_masks import is_current, source_stamp, write_stamped_png
from fewlabel.errors import DataError

__all__ = [
    "build_covid_radiography",
    "covid_radiography_split",
    "split_sizes",
    "COVID_RADIOGRAPHY_CLASSES",
    "COVID_RADIOGRAPHY_COUNTS",
    "COVID_RADIOGRAPHY_SPLIT",
]

logger = logging.getLogger("fewlabel.data")

#: The four class folders, in the release's order.
COVID_RADIOGRAPHY_CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
#: Images per class in the release (21,165 in all).
COVID_RADIOGRAPHY_COUNTS = {"COVID": 3616, "Lung_Opacity": 6012, "Normal": 10192, "Viral Pneumonia": 1345}
#: The MedSASS paper's (training, validation, testing) sizes on the full release.
COVID_RADIOGRAPHY_SPLIT = (14730, 2202, 4233)

_SPLITS = ("training", "validation", "testing")
_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
_DATASET_FOLDERS = ("COVID-19_Radiography_Dataset", "COVID-19 Radiography Database", "COVID-19_Radiography_Database")
_STAMP_KEY = "fewlabel-covid-radiography"
_LAYOUT = (
    "Expected the COVID-19 Radiography Database release: SRC_DIR/COVID-19_Radiography_Dataset/<class>/images/"
    "<name>.png and <class>/masks/<name>.png for the classes "
    + ", ".join(f"'{c}'" for c in COVID_RADIOGRAPHY_CLASSES)
    + " (SRC_DIR may also be the COVID-19_Radiography_Dataset folder itself)."
)


def split_sizes(n: int, fractions: Sequence[float]) -> tuple[int, ...]:
    """Integer sizes of ``n`` items split by ``fractions`` (largest remainder; they sum to ``n``).

    Args:
        n: number of items, >= 0.
        fractions: non-negative shares; they are normalised by their sum.

    Returns:
        One size per fraction, e.g. ``split_sizes(21165, COVID_RADIOGRAPHY_SPLIT) == (14730, 2202, 4233)``.
    """
    fr = np.asarray([float(f) for f in fractions], dtype=float)
    if fr.ndim != 1 or len(fr) == 0 or (fr < 0).any() or not fr.sum() > 0:
        raise ValueError(f"fractions must be non-negative with a positive sum, got {list(fractions)}")
    exact = fr / fr.sum() * n
    sizes = np.floor(exact + 1e-9).astype(int)
    short = n - int(sizes.sum())
    order = np.argsort(-(exact - sizes), kind="stable")  # largest remainder first, ties in split order
    for i in order[:max(short, 0)]:
        sizes[i] += 1
    return tuple(int(s) for s in sizes)


def covid_radiography_split(
    items: Sequence[dict[str, Any]],
    fractions: Sequence[float] = COVID_RADIOGRAPHY_SPLIT,
    seed: int = 0,
    stratify: bool = True,
    class_key: str = "class",
) -> list[list[dict[str, Any]]]:
    """Seeded split of ``items`` into parts of :func:`split_sizes` (``len(fractions)`` lists).

    With ``stratify``, each class's items are shuffled and spread evenly over one interleaved
    order (item ``r`` of a class of ``n`` items sits at ``(r + 0.5) / n``), which is then cut into
    consecutive parts: every part gets each class within one item of its proportional share,
    and the part sizes are exact. Without it, one shuffle of all items is cut.

    Args:
        items: datalist items; with ``stratify`` each needs ``class_key``.
        fractions: relative part sizes (default: the paper's 14,730 : 2,202 : 4,233).
        seed: the same seed and items (in any order) give the same split.
        stratify: keep the class proportions in every part.
        class_key: the item key naming the class.

    Returns:
        One list per fraction, each sorted by ``image`` path.
    """
    ordered = sorted(items, key=lambda it: str(it["image"]))
    sizes = split_sizes(len(ordered), fractions)
    rng = np.random.default_rng(seed)
    if stratify:
        by_class: dict[str, list[int]] = {}
        for i, item in enumerate(ordered):
            by_class.setdefault(str(item[class_key]), []).append(i)
        keys: list[tuple[float, float, int]] = []
        for name in sorted(by_class):
            members = by_class[name]
            perm = rng.permutation(len(members))
            ties = rng.random(len(members))
            for rank, j in enumerate(perm):
                keys.append(((rank + 0.5) / len(members), float(ties[rank]), members[j]))
        sequence = [i for _, _, i in sorted(keys)]
    else:
        sequence = [int(i) for i in rng.permutation(len(ordered))]
    parts: list[list[dict[str, Any]]] = []
    start = 0
    for size in sizes:
        chosen = sorted(sequence[start:start + size])
        parts.append([ordered[i] for i in chosen])
        start += size
    return parts


def _find_root(src: Path) -> Path:
    """The folder holding the class folders."""
    candidates = [src] + [src / name for name in _DATASET_FOLDERS]
    for candidate in candidates:
        if any((candidate / c / "images").is_dir() for c in COVID_RADIOGRAPHY_CLASSES):
            return candidate
    found = sorted(p.name for p in src.iterdir() if p.is_dir())[:8]
    raise DataError(
        f"No COVID-19 Radiography Database class folder with an images/ folder under {src} (looked in "
        f"{', '.join(str(c) for c in candidates)}; folders there: {found}). {_LAYOUT}"
    )


def _files(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in _SUFFIXES:
            continue
        if path.stem in files:
            raise DataError(f"Two files share the name '{path.stem}': {files[path.stem]} and {path}; keep one.")
        files[path.stem] = path
    return files


def _size(path: Path) -> tuple[int, int]:
    """``(H, W)`` from the file header."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}. The file is truncated or not an image; remove it.") from e
    return h, w


def _write_resized_mask(source: Path, target: Path, size: tuple[int, int], stamp: str) -> None:
    """Read a (0/255, grey or colour) mask, resize it to ``size`` (H, W) by nearest neighbour, write 0/1."""
    try:
        with Image.open(source) as im:
            arr = np.asarray(im.convert("L") if im.mode not in ("L", "1", "I", "I;16") else im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read mask {source}: {e}. The file is truncated or not an image; remove it.") from e
    mask = Image.fromarray((arr > 0).astype(np.uint8)).resize((size[1], size[0]), Image.NEAREST)
    write_stamped_png(mask, target, _STAMP_KEY, stamp)


def build_covid_radiography(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    classes: str | Iterable[str] | None = None,
    fractions: Sequence[float] = COVID_RADIOGRAPHY_SPLIT,
    seed: int = 0,
    stratify: bool = True,
    resize_masks: bool = True,
) -> dict[str, Any]:
    """Build the COVID-19 Radiography Database lung-segmentation datalist with the paper's split sizes.

    Args:
        src_dir: the unpacked release (see the module docstring for the layout and accepted levels).
        out_dir: where resized masks go (``OUT_DIR/masks/<class>/<stem>.png``); default
            ``<dataset folder>/fewlabel_masks``. Nothing is written when every mask has its image's size.
        classes: restrict to some of ``"COVID"``, ``"Lung_Opacity"``, ``"Normal"``,
            ``"Viral Pneumonia"`` (default: all four; only the chosen class folders need to exist).
        fractions: relative (training, validation, testing) sizes; default the paper's
            14,730 : 2,202 : 4,233, exact on the full release.
        seed: split seed; the same seed and files give the same split.
        stratify: keep each class's proportion in every split (default).
        resize_masks: resize masks whose size differs from their image's (nearest neighbour) and
            write them as 0/1 PNGs; False raises instead.

    Returns:
        A datalist dict with labels ``{"0": "background", "1": "lung"}`` and items
        ``{"image", "label", "patient", "class"}`` (``class``: the item's class folder).

    Raises:
        DataError: ``src_dir`` is missing or has no class folder; a chosen class folder, its
            ``images/`` or ``masks/`` folder is missing or empty; an image has no mask of the same
            stem; a file cannot be read; or (``resize_masks=False``) a mask's size differs from its image's.
        ValueError: unknown class names, or bad ``fractions``.
    """
    if classes is None:
        chosen = list(COVID_RADIOGRAPHY_CLASSES)
    else:
        chosen = [classes] if isinstance(classes, str) else list(classes)
        unknown = [c for c in chosen if c not in COVID_RADIOGRAPHY_CLASSES]
        if unknown or not chosen:
            raise ValueError(
                f"unknown COVID-19 Radiography Database class(es) {unknown}; "
                f"choose from {list(COVID_RADIOGRAPHY_CLASSES)}"
            )
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (training, validation, testing), got {list(fractions)}")
    split_sizes(1, fractions)  # validates
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise DataError(f"COVID-19 Radiography Database folder not found: {src}. {_LAYOUT}")
    root = _find_root(src)
    out = Path(out_dir).expanduser() if out_dir is not None else root / "fewlabel_masks"

    items: list[dict[str, Any]] = []
    written = resized = 0
    for name in chosen:
        image_dir, mask_dir = root / name / "images", root / name / "masks"
        for folder in (image_dir, mask_dir):
            if not folder.is_dir():
                extra = (
                    " (releases before 2021 have no lung masks: use the version with masks/ folders)"
                    if folder is mask_dir and image_dir.is_dir() else ""
                )
                raise DataError(f"COVID-19 Radiography Database folder not found: {folder}{extra}. {_LAYOUT}")
        images, masks = _files(image_dir), _files(mask_dir)
        if not images:
            raise DataError(f"No image files in {image_dir}. {_LAYOUT}")
        expected = COVID_RADIOGRAPHY_COUNTS[name]
        if len(images) != expected:
            logger.info("COVID-19 Radiography Database: %d %s images in %s (the release has %d)",
                        len(images), name, image_dir, expected)
        for stem, image in images.items():
            mask = masks.get(stem)
            if mask is None:
                raise DataError(
                    f"COVID-19 Radiography Database image {image} has no mask: expected {mask_dir / image.name} "
                    f"(same name). {_LAYOUT}"
                )
            image_size, mask_size = _size(image), _size(mask)
            label = mask
            if mask_size != image_size:
                if not resize_masks:
                    raise DataError(
                        f"COVID-19 Radiography Database mask {mask} is {mask_size[0]}x{mask_size[1]} but its image "
                        f"{image} is {image_size[0]}x{image_size[1]}; pass resize_masks=True to write it resized."
                    )
                label = out / "masks" / name / f"{stem}.png"
                stamp = source_stamp(mask, size=list(image_size))
                if not is_current(label, _STAMP_KEY, stamp):
                    _write_resized_mask(mask, label, image_size, stamp)
                    written += 1
                resized += 1
            items.append({"image": str(image.resolve()), "label": str(label.resolve()), "patient": stem,
                          "class": name})

    parts = covid_radiography_split(items, fractions, seed=seed, stratify=stratify)
    datalist: dict[str, Any] = {
        "name": "COVID-19 Radiography Database",
        "labels": {"0": "background", "1": "lung"},
    }
    datalist.update(dict(zip(_SPLITS, parts)))
    logger.info(
        "COVID-19 Radiography Database datalist from %s (%s; seed %d%s): %d training, %d validation, %d testing "
        "items; %d masks resized to their image's size (%d written to %s)",
        root, ", ".join(chosen), seed, ", stratified" if stratify else "", *(len(p) for p in parts),
        resized, written, out / "masks",
    )
    return datalist
