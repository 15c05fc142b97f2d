"""P2ILF → datalist of liver-landmark masks drawn from the 2D contour annotations, split by patient.

P2ILF (Preoperative to Intraoperative Laparoscopy Fusion, MICCAI 2022 challenge; Ali et al.
2025) has laparoscopic frames of 11 patients (1920 x 1080) with the three liver landmarks
annotated as 2D contours, one XML file per frame. No copy of the data was available when this
adapter was written, so it accepts the layout below *tolerantly*; the layout is the one read
by public code for this dataset (the SLiPPA authors' ``utils/dataset.py`` and
``utils/mask.py``, D2GPLand's ``utils/dataset.py``)::

    SRC_DIR/patient1/images/<stem>.jpg              RGB frame (jpg / png / tif / bmp)
    SRC_DIR/patient1/2D-3D_contours/<stem>.xml      its 2D contours (same stem)
    SRC_DIR/patient2/...

What is accepted exactly:

- **Patient folders**: folders named ``patient<N>``, ``Patient_<N>``, ``patient-0<N>``,
  ``P<N>`` (case-insensitive; leading zeros ignored), either ``SRC_DIR`` itself, its
  sub-folders, or the sub-folders of one more level (the release's wrapper folder, e.g.
  ``P2ILF_MICCAI2022_Edition1/patient1``, or a ``train/`` + ``val/`` copy). Wrapper folders
  whose name contains ``test`` are *not* searched (a warning says so): pass the test release
  as ``test_dir``, so its patients can never land in training. The patient id of the datalist
  is ``patient<N>``. Two folders with the same id are an error.
- **Frames and annotations**: within a patient folder, image files at any depth are matched
  to XML files at any depth by file stem (``images/f01.jpg`` ↔ ``2D-3D_contours/f01.xml``).
  A frame without an XML file is left out with a warning (counted in the log); an XML file
  without a frame (e.g. calibration) is ignored. ``.mha`` copies are ignored.
- **XML content**: every element named ``contour`` (any depth, any namespace, any case) is one
  landmark contour. Its *type* is the text of a child ``contourType``, ``type``, ``label``,
  ``name`` or ``class`` element, or else an attribute of one of those names; it must name a
  landmark (``Ridge``, ``Silhouette``, ``Ligament``, ``falciform ligament``...; see
  :func:`fewlabel.data.landmarks.landmark_class`), otherwise that contour is skipped with a
  warning. Its *points* are, inside a child ``imagePoints`` element if there is one (else
  inside the contour itself), either ``x`` and ``y`` child elements holding the same number
  of comma-, semicolon- or whitespace-separated numbers (the P2ILF format), or repeated
  ``point`` elements (directly, or inside a ``points`` element), each with ``x``/``y``
  attributes or ``x``/``y`` child elements. Points are image pixels ``(x, y)``; other
  elements (e.g. the 3D model correspondences) are ignored. An XML file with no ``contour``
  element is only accepted as an empty annotation when its root element's name contains
  "contour" (e.g. ``<contours/>``).

Masks (:mod:`fewlabel.data.landmarks`: ``0`` background, ``1`` silhouette, ``2`` ridge, ``3``
ligament; open polylines, ``thickness`` 12 px, ligament over ridge over silhouette) are
drawn at each image's native size, read from the image header, into
``OUT_DIR/masks/<patient>/<stem>.png``. A mask already written from the same XML file (same
size and modification time) with the same thickness is not redrawn.

Split: patient-level. ``val_patients`` (default patients 1 and 2, the SLiPPA paper's choice)
are validation, every other patient training; the challenge's test release (patients 4 and
11) given as ``test_dir`` is testing.
"""

from __future__ import annotations

import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fewlabel.data.datalist import IMAGE_SUFFIXES
from fewlabel.data.landmarks import (
    LANDMARK_CLASSES,
    draw_landmark_mask,
    label_png_is_current,
    landmark_class,
    landmark_labels,
    save_label_png,
)
from fewlabel.errors import DataError

__all__ = ["build_p2ilf", "read_p2ilf_contours", "p2ilf_patient_id", "P2ILF_VAL_PATIENTS"]

logger = logging.getLogger("fewlabel.data")

#: The validation patients of the SLiPPA paper (patients 1 and 2 of the P2ILF training set).
P2ILF_VAL_PATIENTS = (1, 2)

_LAYOUT = (
    "Expected the P2ILF layout: SRC_DIR/patient1/images/<stem>.jpg with SRC_DIR/patient1/2D-3D_contours/<stem>.xml "
    "(one folder per patient, named patient<N>, Patient_<N> or P<N>)."
)
_XML_EXPECTED = (
    "expected a root element with <contour> children, each with a type (<contourType>Ridge</contourType>, "
    "<type> or <label>, or such an attribute) and image points (<imagePoints><x>1,2,..</x><y>3,4,..</y></imagePoints>, "
    "or <point x=\"..\" y=\"..\"/> elements)"
)
_PATIENT_RE = re.compile(r"^(?:patient|p)[ _-]*0*(\d+)$", re.IGNORECASE)
_TYPE_TAGS = ("contourtype", "type", "label", "name", "class")
_MASK_VERSION = 1


def p2ilf_patient_id(name: str | int) -> str | None:
    """Normalised patient id ``"patient<N>"`` of a folder name or number, or ``None``.

    ``"patient1"``, ``"Patient_1"``, ``"patient-01"``, ``"P1"``, ``"1"`` and ``1`` all give
    ``"patient1"``; names that are no patient folder (``"images"``, ``"patient4_p2ilf"``) give
    ``None``.
    """
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        return f"patient{int(name)}" if name >= 0 else None
    text = str(name).strip()
    if text.isdigit():
        return f"patient{int(text)}"
    match = _PATIENT_RE.match(text)
    return f"patient{int(match.group(1))}" if match else None


# ---------------------------------------------------------------------------------------------
# XML
# ---------------------------------------------------------------------------------------------


def _tag(element: ET.Element) -> str:
    tag = element.tag if isinstance(element.tag, str) else ""
    return tag.rsplit("}", 1)[-1].lower()


def _child(element: ET.Element, *names: str) -> ET.Element | None:
    for child in element:
        if _tag(child) in names:
            return child
    return None


def _contour_type(contour: ET.Element) -> str | None:
    for child in contour:
        if _tag(child) in _TYPE_TAGS and child.text and child.text.strip():
            return child.text.strip()
    attributes = {k.rsplit("}", 1)[-1].lower(): v for k, v in contour.attrib.items()}
    for key in _TYPE_TAGS:
        if attributes.get(key, "").strip():
            return attributes[key].strip()
    return None


_SPLIT_NUMBERS = re.compile(r"[,;\s]+")


def _numbers(text: str | None, path: Path, what: str) -> list[float]:
    items = [t for t in _SPLIT_NUMBERS.split(text or "") if t]
    try:
        return [float(t) for t in items]
    except ValueError:
        bad = next(t for t in items if not _is_float(t))
        raise DataError(f"P2ILF annotation {path}: {what} holds {bad!r}, not a number; {_XML_EXPECTED}.") from None


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _coordinate(point: ET.Element, axis: str, path: Path, what: str) -> float:
    attributes = {k.rsplit("}", 1)[-1].lower(): v for k, v in point.attrib.items()}
    text = attributes.get(axis)
    if text is None:
        child = _child(point, axis)
        text = child.text if child is not None else None
    values = _numbers(text, path, f"{what} {axis}")
    if len(values) != 1:
        raise DataError(
            f"P2ILF annotation {path}: {what} needs one {axis} value (attribute or child element), got "
            f"{len(values)}; {_XML_EXPECTED}."
        )
    return values[0]


def _contour_points(contour: ET.Element, path: Path, what: str) -> np.ndarray:
    container = _child(contour, "imagepoints")
    if container is None:
        container = contour
    xs, ys = _child(container, "x"), _child(container, "y")
    if xs is not None and ys is not None:
        x = _numbers(xs.text, path, f"{what} <x>")
        y = _numbers(ys.text, path, f"{what} <y>")
        if len(x) != len(y):
            raise DataError(
                f"P2ILF annotation {path}: {what} has {len(x)} x values but {len(y)} y values; they must pair up."
            )
        return np.array([x, y], np.float64).T.reshape(-1, 2)
    points = [c for c in container if _tag(c) == "point"]
    holder = _child(container, "points")
    if holder is not None:
        points += [c for c in holder if _tag(c) == "point"]
    if not points:
        if container is not contour:  # an empty <imagePoints/>: no visible points
            return np.zeros((0, 2), np.float64)
        raise DataError(f"P2ILF annotation {path}: {what} has no image points; {_XML_EXPECTED}.")
    return np.array(
        [[_coordinate(p, "x", path, f"{what} point {k}"), _coordinate(p, "y", path, f"{what} point {k}")]
         for k, p in enumerate(points)],
        np.float64,
    )


def read_p2ilf_contours(path: str | os.PathLike) -> tuple[list[tuple[int, np.ndarray]], list[str]]:
    """Parse one P2ILF 2D contour XML file (the accepted forms are in the module docstring).

    Args:
        path: the XML file.

    Returns:
        ``(contours, unknown)``: ``contours`` a list of ``(class index 1..3, points (N, 2)
        float64 (x, y) pixels)`` in file order, ready for
        :func:`~fewlabel.data.landmarks.draw_landmark_mask`; ``unknown`` the type names of the
        contours that name no landmark (or have no type) and were left out.

    Raises:
        DataError: the file is missing, does not parse as XML, has no ``contour`` element
            (unless its root says it is an empty contour list), or a contour's points are
            malformed (not numbers, unpaired x / y). The message names the file and what was
            expected.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError as e:
        raise DataError(f"P2ILF annotation not found: {path}.") from e
    except (ET.ParseError, OSError, UnicodeDecodeError) as e:
        raise DataError(f"P2ILF annotation {path} is not valid XML ({e}); {_XML_EXPECTED}.") from e
    elements = [e for e in root.iter() if _tag(e) == "contour"]
    if not elements and "contour" not in _tag(root):
        raise DataError(
            f"P2ILF annotation {path} has no <contour> element (root is <{_tag(root)}>); {_XML_EXPECTED}."
        )
    contours: list[tuple[int, np.ndarray]] = []
    unknown: list[str] = []
    for i, element in enumerate(elements):
        name = _contour_type(element)
        try:
            index = landmark_class(name) if name is not None else None
        except ValueError:
            index = None
        if index is None:
            unknown.append(name if name is not None else "<no type>")
            continue
        points = _contour_points(element, path, f"contour {i} ({name})")
        contours.append((index, points))
    return contours, unknown


# ---------------------------------------------------------------------------------------------
# folders
# ---------------------------------------------------------------------------------------------


def _skip_dir(path: Path, out: Path | None) -> bool:
    return path.name.startswith((".", "__")) or (out is not None and (path == out or out in path.parents))


def _find_patients(root: Path, out: Path | None, what: str, skip_test: bool = True) -> dict[str, Path]:
    """Patient id -> folder: ``root`` itself, its sub-folders, or theirs (see the module docstring).

    With ``skip_test``, wrapper folders whose name contains "test" are not searched.
    """
    found: dict[str, Path] = {}

    def add(pid: str, folder: Path) -> None:
        if pid in found:
            raise DataError(f"{what}: two folders are patient '{pid}': {found[pid]} and {folder}.")
        found[pid] = folder

    own = p2ilf_patient_id(root.name)
    if own is not None:
        return {own: root}
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not _skip_dir(p, out)):
        pid = p2ilf_patient_id(child.name)
        if pid is not None:
            add(pid, child)
            continue
        inner = [p for p in sorted(child.iterdir()) if p.is_dir() and not _skip_dir(p, out)]
        patients = [(p2ilf_patient_id(p.name), p) for p in inner]
        patients = [(pid, p) for pid, p in patients if pid is not None]
        if patients and skip_test and "test" in child.name.lower():
            logger.warning(
                "P2ILF: not using the %d patient folder(s) in %s (its name says test data); pass it as test_dir.",
                len(patients), child,
            )
            continue
        for pid, p in patients:
            add(pid, p)
    return found


def _files_by_stem(folder: Path, suffixes: Iterable[str], out: Path | None, what: str) -> dict[str, Path]:
    suffixes = tuple(suffixes)
    files: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in suffixes or p.name.startswith("."):
            continue
        if out is not None and out in p.parents:
            continue
        if any(part.startswith((".", "__")) for part in p.relative_to(folder).parts[:-1]):
            continue
        if p.stem in files:
            raise DataError(
                f"P2ILF: two {what} files share the stem '{p.stem}': {files[p.stem]} and {p}; frames are matched to "
                "their annotation by stem, so each stem must be unique within a patient folder."
            )
        files[p.stem] = p
    return files


def _image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` from the image header (no decoding)."""
    try:
        with Image.open(path) as im:
            return int(im.size[1]), int(im.size[0])
    except (OSError, ValueError) as e:
        raise DataError(f"Cannot read the image header of {path}: {e}") from e


def _normalise_patients(values: Iterable[str | int] | str | int | None, what: str) -> set[str]:
    if values is None:
        return set()
    if isinstance(values, (str, int, np.integer)):
        values = [values]
    out: set[str] = set()
    for v in values:
        pid = p2ilf_patient_id(v)
        if pid is None:
            raise ValueError(f"{what}: {v!r} is no patient (use 1, 'patient1', 'Patient_1' or 'P1').")
        out.add(pid)
    return out


def _patient_items(
    pid: str, folder: Path, out: Path, thickness: int, force: bool, stats: dict[str, int]
) -> list[dict[str, Any]]:
    images = _files_by_stem(folder, IMAGE_SUFFIXES, out, "image")
    annotations = _files_by_stem(folder, (".xml",), out, "XML")
    if not images:
        logger.warning("P2ILF: patient folder %s holds no image files; skipped.", folder)
        return []
    missing = sorted(stem for stem in images if stem not in annotations)
    if missing:
        stats["unannotated"] += len(missing)
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        logger.warning(
            "P2ILF: %d frame(s) of %s have no contour XML (matched by stem) and are left out: %s",
            len(missing), pid, shown,
        )
    items = []
    for stem in sorted(s for s in images if s in annotations):
        image, xml = images[stem], annotations[stem]
        size = _image_size(image)
        target = out / "masks" / pid / f"{stem}.png"
        info = xml.stat()
        stamp = {
            "version": _MASK_VERSION,
            "source": xml.name,
            "source_bytes": info.st_size,
            "source_mtime_ns": info.st_mtime_ns,
            "size": list(size),
            "thickness": int(thickness),
        }
        if force or not label_png_is_current(target, stamp):
            contours, unknown = read_p2ilf_contours(xml)
            if unknown:
                stats["unknown_contours"] += len(unknown)
                logger.warning(
                    "P2ILF: %s has %d contour(s) of unknown type %s (expected %s); skipped them.",
                    xml, len(unknown), sorted(set(unknown)), ", ".join(LANDMARK_CLASSES[1:]),
                )
            mask = draw_landmark_mask(contours, size, thickness=thickness, source=xml)
            save_label_png(mask, target, stamp)
            stats["drawn"] += 1
        else:
            stats["up_to_date"] += 1
        items.append({"image": str(image.resolve()), "label": str(target.resolve()), "patient": pid})
    return items


def build_p2ilf(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    thickness: int = 12,
    val_patients: Sequence[int | str] | int | str | None = P2ILF_VAL_PATIENTS,
    test_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Build the P2ILF landmark datalist: masks drawn from the 2D contours, split by patient.

    Args:
        src_dir: the P2ILF training release (patient folders; see the module docstring).
        out_dir: where the masks go, as ``out_dir/masks/<patient>/<stem>.png`` (uint8, values
            0..3); default ``<src_dir>/fewlabel_masks``.
        thickness: line thickness in pixels at the native resolution (12, as the P2ILF
            evaluation draws its ground truth).
        val_patients: patients of the validation split (numbers or folder names); default
            patients 1 and 2 as in the SLiPPA paper. ``()`` or ``None``: no validation split.
        test_dir: the challenge's test release (patients 4 and 11), optional; its frames form
            the ``testing`` split. Its masks go to the same ``out_dir/masks/<patient>/``.
        force: redraw every mask even if it is up to date.

    Returns:
        A datalist dict (``name``, ``labels``, ``training``, ``validation``, ``testing``);
        items ``{"image", "label", "patient"}`` with absolute paths and ``patient`` =
        ``"patient<N>"``.

    Raises:
        DataError: a folder is missing or holds no patient folder, two folders are the same
            patient, a validation patient is not in ``src_dir``, a patient is both in
            ``src_dir`` and ``test_dir``, an XML file does not parse or has malformed points,
            or an annotation has NaN coordinates. Frames without an XML file and contours of
            unknown type are left out with a warning instead.
    """
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise DataError(f"P2ILF folder not found: {src}. {_LAYOUT}")
    out = (Path(out_dir).expanduser() if out_dir is not None else src / "fewlabel_masks").resolve()
    val = _normalise_patients(val_patients, "val_patients")
    stats = {"unannotated": 0, "unknown_contours": 0, "drawn": 0, "up_to_date": 0}

    patients = _find_patients(src.resolve(), out, f"P2ILF folder {src}")
    if not patients:
        raise DataError(f"No patient folders in {src}. {_LAYOUT}")
    missing_val = sorted(val - set(patients))
    if missing_val:
        raise DataError(
            f"val_patients {missing_val} are not in {src} (its patients: {sorted(patients, key=_patient_number)}). "
            "Pass val_patients=() for no validation split, or the patients you want."
        )
    tests: dict[str, Path] = {}
    if test_dir is not None:
        test_root = Path(test_dir).expanduser()
        if not test_root.is_dir():
            raise DataError(f"P2ILF test folder not found: {test_root}. {_LAYOUT}")
        tests = _find_patients(test_root.resolve(), out, f"P2ILF test folder {test_root}", skip_test=False)
        if not tests:
            raise DataError(f"No patient folders in the test folder {test_root}. {_LAYOUT}")
        both = sorted(set(tests) & set(patients))
        if both:
            raise DataError(
                f"Patients {both} are in both {src} and the test folder {test_root}; a patient must be in one split "
                "only. Remove them from one of the folders."
            )

    datalist: dict[str, Any] = {
        "name": "P2ILF (2D liver landmarks)",
        "labels": landmark_labels(),
        "training": [],
        "validation": [],
        "testing": [],
    }
    for pid in sorted(patients, key=_patient_number):
        split = "validation" if pid in val else "training"
        datalist[split] += _patient_items(pid, patients[pid], out, thickness, force, stats)
    for pid in sorted(tests, key=_patient_number):
        datalist["testing"] += _patient_items(pid, tests[pid], out, thickness, force, stats)
    if not any(datalist[s] for s in ("training", "validation", "testing")):
        raise DataError(f"No annotated frames found in {src}. {_LAYOUT}")

    per_split = {
        s: sorted({it["patient"] for it in datalist[s]}, key=_patient_number)
        for s in ("training", "validation", "testing")
    }
    logger.info(
        "P2ILF datalist from %s: %d training, %d validation, %d testing frames (patients %s / %s / %s); "
        "%d frame(s) without annotation left out, %d contour(s) of unknown type skipped; %d mask(s) drawn, "
        "%d up to date.",
        src, len(datalist["training"]), len(datalist["validation"]), len(datalist["testing"]),
        per_split["training"], per_split["validation"], per_split["testing"],
        stats["unannotated"], stats["unknown_contours"], stats["drawn"], stats["up_to_date"],
    )
    return datalist


def _patient_number(pid: str) -> int:
    return int(pid[len("patient"):])
