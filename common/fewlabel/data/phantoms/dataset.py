"""Demo datasets: phantoms written as PNG images and label maps with a MONAI datalist, cached by parameters."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.data.cache import cache_dir
from fewlabel.data.datalist import save_datalist, split_by_group, split_labelled
from fewlabel.data.phantoms.registry import (
    PHANTOM_VERSION,
    check_kind,
    check_seed,
    check_size,
    make_phantom,
    phantom_info,
)
from fewlabel.errors import DataError

__all__ = ["write_demo_dataset"]


def _image_seeds(seed: int, patient: int, k: int) -> tuple[int, int]:
    """(content seed, style seed) of image ``k`` of ``patient``: patients share the style seed."""
    content = int(np.random.SeedSequence([seed, patient, k]).generate_state(1)[0])
    style = int(np.random.SeedSequence([seed, patient]).generate_state(1)[0])
    return content, style


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path, compress_level=1)


def _is_complete(datalist_path: Path, params: dict[str, Any]) -> bool:
    if not datalist_path.is_file():
        return False
    try:
        content = json.loads(datalist_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(content, dict) and content.get("phantom") == params


def write_demo_dataset(
    kind: str,
    root: str | os.PathLike | None = None,
    num_patients: int = 8,
    images_per_patient: int = 4,
    size: tuple[int, int] = (224, 224),
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    unlabelled_fraction: float = 0.0,
) -> Path:
    """Write a demo dataset of phantoms (PNG images and labels) with a MONAI datalist.

    Layout::

        root/
          images/<patient>_<k>.png     (H, W, 3) uint8 RGB
          labels/<patient>_<k>.png     (H, W) uint8 class indices (0 = background)
          datalist.json                "training" / "validation" / "testing" split by patient
                                       (+ "unlabelled" with ``unlabelled_fraction > 0``)

    Each item of the datalist is ``{"image", "label", "patient"}``; the file also has ``"name"``,
    ``"labels"`` (``{"0": "background", "1": ...}``) and ``"phantom"`` (the parameters it was
    generated with). All images of a patient share their appearance (stain, skin tone,
    exposure), so a patient-level split means something.

    The dataset is cached: when ``root/datalist.json`` was already written with the same
    parameters it is returned without regenerating anything. Writing is atomic: the files are
    generated in a temporary sibling folder that is renamed into place when complete.

    Args:
        kind: a registered phantom kind (see :data:`PHANTOMS`).
        root: output folder; default ``cache_dir("demo", "<kind>-<hash of the parameters>")``
            (under ``$FEWLABEL_CACHE``, default ``~/.cache/fewlabel``). An existing folder must be
            empty or hold a demo dataset written by this function (which is then replaced).
        num_patients: number of patients (groups of the split), at least 1.
        images_per_patient: images per patient, at least 1.
        size: ``(H, W)`` of every image.
        seed: seed of the whole dataset (images and split).
        fractions: shares of ``(training, validation, testing)``, summing to 1.
        unlabelled_fraction: share in [0, 1) of the *training* patients whose images go to an
            ``"unlabelled"`` list instead, as ``{"image", "patient"}`` items (no ``"label"`` key,
            and no label file is written for them), for semi-/self-supervised training. The
            split is by patient (video): no patient is both labelled and unlabelled, and at
            least one training patient stays labelled. 0 (the default) writes no
            ``"unlabelled"`` list and keeps the cache key of the datasets written before this
            option existed.

    Returns:
        Path of ``datalist.json``.

    Raises:
        ValueError: unknown ``kind`` or invalid parameters.
        DataError: ``root`` exists, is not empty and holds no demo dataset.
    """
    params = _demo_params(kind, num_patients, images_per_patient, size, seed, fractions, unlabelled_fraction)
    if root is None:
        digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
        root = cache_dir("demo", f"{kind}-{digest}")
    root = Path(root).expanduser()
    datalist_path = root / "datalist.json"
    if _is_complete(datalist_path, params):
        return datalist_path

    items, seeds = _demo_items(params["num_patients"], params["images_per_patient"], params["seed"])
    # the split depends on the items only, so it is decided before any file is written
    datalist = _demo_datalist(kind, items, params)
    no_label = {item["image"] for item in datalist.get("unlabelled", [])}
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        _write_phantoms(tmp, kind, items, seeds, tuple(params["size"]), no_label)
        save_datalist(datalist, tmp / "datalist.json")
        _move_into_place(tmp, root, params)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return datalist_path


def _demo_params(
    kind: str,
    num_patients: int,
    images_per_patient: int,
    size: tuple[int, int],
    seed: int,
    fractions: tuple[float, float, float],
    unlabelled_fraction: float,
) -> dict[str, Any]:
    """Check the arguments of :func:`write_demo_dataset` and return them as the ``"phantom"`` entry of its datalist.

    That entry (JSON types: ``size`` and ``fractions`` as lists, ``version`` :data:`PHANTOM_VERSION`)
    is also the cache key; ``unlabelled_fraction`` is in it only when > 0, so that the cache keys
    of datasets written before that option existed stay valid.

    Raises:
        ValueError: unknown ``kind`` or an invalid argument (the message names it).
    """
    check_kind(kind)
    size = check_size(size)
    seed = check_seed(seed, "seed")
    if int(num_patients) < 1 or int(images_per_patient) < 1:
        raise ValueError(f"num_patients and images_per_patient must be >= 1, got {num_patients}, {images_per_patient}")
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be (training, validation, testing) >= 0 summing to 1, got {fractions}")
    unlabelled_fraction = float(unlabelled_fraction)
    if not 0.0 <= unlabelled_fraction < 1.0:
        raise ValueError(f"unlabelled_fraction must be in [0, 1), got {unlabelled_fraction}")
    params = {
        "kind": kind,
        "num_patients": int(num_patients),
        "images_per_patient": int(images_per_patient),
        "size": list(size),
        "seed": seed,
        "fractions": list(fractions),
        "version": PHANTOM_VERSION,
    }
    if unlabelled_fraction > 0:  # only then, so that existing cache keys stay valid
        params["unlabelled_fraction"] = unlabelled_fraction
    return params


def _demo_items(
    num_patients: int, images_per_patient: int, seed: int
) -> tuple[list[dict[str, Any]], dict[str, tuple[int, int]]]:
    """The datalist items and each image's seeds.

    Returns:
        ``(items, seeds)``: ``{"image": "images/<patient>_<k>.png", "label": "labels/...", "patient"}``
        in patient, then image order; ``{image: (content seed, style seed)}`` (see :func:`_image_seeds`).
    """
    items = []
    seeds: dict[str, tuple[int, int]] = {}
    for p in range(num_patients):
        patient = f"p{p:03d}"
        for k in range(images_per_patient):
            name = f"{patient}_{k}.png"
            items.append({"image": f"images/{name}", "label": f"labels/{name}", "patient": patient})
            seeds[f"images/{name}"] = _image_seeds(seed, p, k)
    return items, seeds


def _demo_datalist(kind: str, items: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """The datalist of ``items``: split by patient, the unlabelled patients' items without their ``"label"`` key."""
    seed = params["seed"]
    training, validation, testing = split_by_group(items, tuple(params["fractions"]), seed=seed)
    unlabelled: list[dict[str, Any]] = []
    if "unlabelled_fraction" in params:
        training, unlabelled = split_labelled(training, 1.0 - params["unlabelled_fraction"], seed=seed)
    datalist = {
        "name": f"fewlabel demo: {kind} phantoms",
        "labels": {str(i): n for i, n in enumerate(phantom_info(kind)["class_names"])},
        "phantom": params,
        "training": training,
        "validation": validation,
        "testing": testing,
    }
    if "unlabelled_fraction" in params:
        datalist["unlabelled"] = unlabelled
    return datalist


def _write_phantoms(
    folder: Path,
    kind: str,
    items: list[dict[str, Any]],
    seeds: dict[str, tuple[int, int]],
    size: tuple[int, int],
    no_label: set[str],
) -> None:
    """Draw and save each item's image (and its label, unless its image is in ``no_label``) under ``folder``."""
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    for item in items:
        content_seed, style_seed = seeds[item["image"]]
        image, mask = make_phantom(kind, content_seed, size, style_seed=style_seed)
        _save_png(image, folder / item["image"])
        if item["image"] not in no_label:
            _save_png(mask, folder / item["label"])


def _move_into_place(tmp: Path, root: Path, params: dict[str, Any]) -> None:
    """Rename the complete dataset ``tmp`` to ``root``, replacing an empty folder or an old demo dataset."""
    if root.is_dir() and not any(root.iterdir()):
        try:
            root.rmdir()
        except OSError:  # another writer got there first
            pass
    try:
        os.replace(tmp, root)
        return
    except OSError:
        pass
    if _is_complete(root / "datalist.json", params):  # a concurrent call finished the same dataset
        return
    old = root / "datalist.json"
    try:
        is_demo = "phantom" in json.loads(old.read_text())
    except (OSError, json.JSONDecodeError, TypeError):
        is_demo = False
    if not is_demo:
        raise DataError(
            f"Cannot write the demo dataset into {root}: the folder exists, is not empty and holds no demo "
            "dataset. Pass an empty or new folder as root, or leave root unset to use the cache folder."
        )
    trash = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
    os.replace(root, trash / root.name)
    os.replace(tmp, root)
    shutil.rmtree(trash, ignore_errors=True)
