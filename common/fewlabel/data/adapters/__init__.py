"""Dataset adapters: published dataset folder layouts → MONAI (Decathlon-style) datalists.

Each adapter is ``build_<name>(src_dir, out_dir=None, **options) -> dict`` and returns a
datalist dict (``name``, ``labels``, ``training``, ``validation``, ``testing``; items
``{"image", "label", "patient"}``) as described in :mod:`fewlabel.data.datalist`. Adapters
for datasets published as arrays or whole slides (TissueNet, tiled slides) write PNGs into
``out_dir``; the others reference the published files in place.

:func:`build_datalist` runs one by name and writes the JSON; it is what
``fewlabel datalist DATASET SRC_DIR -o datalist.json`` calls.

Adapters (name: dataset, options):

- ``isic2017``: ISIC-2017 Part 1, official split; ``splits``.
- ``tissuenet``: TissueNet v1.1 npz, official split, a single channel written as grey (R = G = B);
  ``channel``, ``target``, ``splits``.
- ``covid_qu_ex``: COVID-QU-Ex lung (or infection) masks, official split; ``subset`` (``infection``,
  the SAM knowledge-mining paper's data, default / ``lung``), ``target`` (``lung`` / ``infection``),
  ``classes``.
- ``covid_radiography`` (alias ``covid19_radiography``): COVID-19 Radiography Database (MedSASS's
  X-ray data: 21,165 images, four classes) lung masks, seeded class-stratified split with the paper's
  14,730 / 2,202 / 4,233 sizes; ``classes``, ``fractions``, ``seed``, ``stratify``, ``resize_masks``.
- ``tiles``: whole slides + masks (e.g. Dermatomyositis), 70/10/20 split by slide or patient; border
  tiles zero-padded by default (MedSASS: 12 tiles of 480 px per 1408 x 1876 slide); ``tile_size``,
  ``pad``, ``fractions``, ``group_by``, ``patient_regex``, ``seed``, ``images_dir``, ``masks_dir``,
  ``mask_suffix``, ``channel``, ``name``, ``foreground``.
- ``cholecseg8k``: CholecSeg8k watershed masks merged to 8 classes, split by video;
  ``test_videos``, ``val_videos``, ``fractions``, ``seed``, ``stray_label``, ``max_stray_fraction``.
- ``m2caiseg``: m2caiSeg colour masks (19 classes), the release's train/trainval/test split, frames
  grouped by video when a mapping is given (else per frame, with a warning); ``class_table``,
  ``tolerance``, ``max_off_palette``, ``trainval``, ``video_map``, ``video_regex``, ``on_leakage``.
- ``colour_masks``: any ``images/`` + colour-coded ``masks/`` folder given a class table (JSON
  path or shipped name, e.g. ``surgical_semiseg_inhouse``), split by group; ``class_table``,
  ``images_dir``, ``masks_dir``, ``mask_suffix``, ``fractions``, ``group_regex``, ``seed``,
  ``tolerance``, ``name``.
- ``unlabelled_videos``: a folder of videos (e.g. Cholec80) → frames at ``fps`` (default 2, the
  SurgicalSemiSeg paper's Cholec80 rate) under ``out_dir`` and an ``unlabelled`` list grouped by
  video; ``out_dir``, ``fps``, ``exclude_videos``, ``labelled_datalist``, ``max_frames``, ``resize``.
- ``unlabelled_frames``: a folder of frames → an ``unlabelled`` list grouped by video;
  ``exclude_videos``, ``labelled_datalist``, ``group_regex``, ``recursive``.
- ``p2ilf``: P2ILF 2D liver-landmark contours (XML) drawn into masks, split by patient
  (validation: patients 1 and 2); ``thickness``, ``val_patients``, ``test_dir``, ``force``.
- ``l3d``: L3D liver landmarks (LabelMe contours or label PNGs), the release's train/val/test
  split; ``thickness``, ``patient_regex``, ``annotation``, ``colour_table``, ``tolerance``,
  ``thickness_at_width``, ``force``.
- ``kvasir_seg``: Kvasir-SEG polyps, JPEG masks thresholded to binary PNGs, seeded random
  80/10/10 split; ``fractions``, ``seed``, ``write_masks``, ``threshold``, ``force``.
- ``lits``: LiTS liver CT volumes (NIfTI, 0/1/2 = background/liver/tumour), seeded scan-level split
  100/5/25 (extra scans to training, fewer scans scale the counts); ``counts``, ``seed``.
- ``msd_liver`` (alias ``msd_task03``): Medical Segmentation Decathlon Task03_Liver, a seeded
  random subset of scans, all in testing unless ``fractions`` is given; ``num_scans``,
  ``fractions``, ``seed``.
- ``totalsegmentator``: TotalSegmentator CT + one organ mask, subjects without the organ dropped,
  a seeded random subset, all in testing unless ``fractions`` or ``split="official"`` (meta.csv);
  ``num_scans``, ``fractions``, ``split``, ``require_organ``, ``organ``, ``seed``.

The CT adapters (``lits``, ``msd_liver``, ``totalsegmentator``) add ``"scan"`` to each item (the
volume's id, equal to ``patient``) and a top-level ``"organ_labels"`` list: the label values that
make up the organ (``[1, 2]`` for liver + tumour), as :func:`fewlabel.data.ct.build_slice_index`
takes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fewlabel.data.adapters.cholecseg8k import build_cholecseg8k
from fewlabel.data.adapters.colour_masks import build_colour_masks
from fewlabel.data.adapters.covid_qu_ex import build_covid_qu_ex
from fewlabel.data.adapters.covid_radiography import build_covid_radiography
from fewlabel.data.adapters.m2caiseg import build_m2caiseg
from fewlabel.data.adapters.isic2017 import build_isic2017
from fewlabel.data.adapters.kvasir_seg import build_kvasir_seg
from fewlabel.data.adapters.l3d import build_l3d
from fewlabel.data.adapters.lits import build_lits
from fewlabel.data.adapters.msd_liver import build_msd_liver
from fewlabel.data.adapters.p2ilf import build_p2ilf
from fewlabel.data.adapters.tiles import build_tiles
from fewlabel.data.adapters.tissuenet import build_tissuenet
from fewlabel.data.adapters.totalsegmentator import build_totalsegmentator
from fewlabel.data.datalist import save_datalist
from fewlabel.data.video import build_unlabelled_from_folder, build_unlabelled_from_videos

__all__ = [
    "ADAPTERS",
    "build_datalist",
    "build_isic2017",
    "build_tissuenet",
    "build_covid_qu_ex",
    "build_covid_radiography",
    "build_tiles",
    "build_cholecseg8k",
    "build_m2caiseg",
    "build_colour_masks",
    "build_p2ilf",
    "build_l3d",
    "build_kvasir_seg",
    "build_lits",
    "build_msd_liver",
    "build_totalsegmentator",
]

ADAPTERS: dict[str, Callable[..., dict[str, Any]]] = {
    "isic2017": build_isic2017,
    "tissuenet": build_tissuenet,
    "covid_qu_ex": build_covid_qu_ex,
    "covid_radiography": build_covid_radiography,
    "covid19_radiography": build_covid_radiography,
    "tiles": build_tiles,
    "cholecseg8k": build_cholecseg8k,
    "m2caiseg": build_m2caiseg,
    "colour_masks": build_colour_masks,
    "p2ilf": build_p2ilf,
    "l3d": build_l3d,
    "kvasir_seg": build_kvasir_seg,
    "lits": build_lits,
    "msd_liver": build_msd_liver,
    "msd_task03": build_msd_liver,
    "totalsegmentator": build_totalsegmentator,
    "unlabelled_videos": build_unlabelled_from_videos,
    "unlabelled_frames": build_unlabelled_from_folder,
}


def build_datalist(name: str, src_dir: str | os.PathLike, output: str | os.PathLike, **options: Any) -> Path:
    """Run the adapter ``name`` on ``src_dir`` and write its datalist JSON to ``output``.

    Args:
        name: a key of :data:`ADAPTERS` (case and ``-``/``_`` do not matter:
            ``ISIC2017``, ``covid-qu-ex``).
        src_dir: the dataset as published (see each adapter for the layout).
        output: the JSON file to write; image/label paths under its folder are stored relative.
        **options: passed to the adapter (e.g. ``out_dir``, ``channel="both"``, ``pad=True``).

    Returns:
        The path written.

    Raises:
        ValueError: unknown ``name`` (the message lists the known ones), or an option the adapter does
            not take (:class:`fewlabel.arguments.ArgumentError`, naming the closest one).
        DataError: ``src_dir`` does not have the layout the adapter expects.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in ADAPTERS:
        raise ValueError(f"Unknown dataset adapter {name!r}; known adapters: {', '.join(sorted(ADAPTERS))}.")
    from fewlabel.arguments import coerce_kwargs

    options = coerce_kwargs(ADAPTERS[key], options, f"the {key} adapter")  # unknown option -> closest name
    datalist = ADAPTERS[key](src_dir, **options)
    return save_datalist(datalist, output)
