"""Helpers that bundle configs call: where the bundle lies, and which dataset to use."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from fewlabel.arguments import as_bool, as_optional, as_optional_bool
from fewlabel.errors import DataError

__all__ = [
    "REPO_BUNDLES", "as_bool", "as_optional", "as_optional_bool", "bundle_root", "input_kind", "load_bundle_config",
    "resolve_datalist",
]

logger = logging.getLogger("fewlabel")

# bundles/ of the source checkout this package was installed from (editable installs)
REPO_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def _is_bundle(folder: Path, name: str) -> bool:
    meta = folder / "configs" / "metadata.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("name", folder.name) == name or folder.name == name
    except json.JSONDecodeError:
        return False


def input_kind(config: dict[str, Any]) -> str:
    """``"volume"`` for an inference config that loads CT volumes (``LoadCTVolumed`` first), else ``"frame"``.

    The first pre-processing transform tells, not the metadata's ``spatial_shape``: PolyCL's
    network takes 2D slices of the volume it loads.
    """
    transforms = (config.get("preprocessing") or {}).get("transforms") or [{}]
    return "volume" if "LoadCTVolume" in str(transforms[0].get("_target_", "")) else "frame"


def bundle_root(name: str) -> str:
    """Find bundle ``name``'s folder, so configs work from the repository root and the bundle folder.

    Looks at the current folder, its parent (run from ``configs/``), ``./bundles/<name>``, and the
    ``bundles/`` folder of the checkout fewlabel was installed from. Pass ``--bundle_root DIR`` to
    ``monai.bundle`` to use another copy.

    Raises:
        FileNotFoundError: no candidate holds ``configs/metadata.json`` of that bundle.
    """
    cwd = Path.cwd()
    for candidate in (cwd, cwd.parent, cwd / "bundles" / name, REPO_BUNDLES / name):
        if _is_bundle(candidate, name):
            return str(candidate.resolve())
    raise FileNotFoundError(
        f"cannot find bundle '{name}' from {cwd}: run from the repository root or the bundle folder, "
        "or pass --bundle_root <bundle folder>."
    )


def load_bundle_config(bundle: str, configs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The merged content of ``configs`` (file names in the bundle's ``configs/``, later ones win), with the
    bundle's ``metadata.json`` under ``_meta_``, as ``monai.bundle run`` merges them (nothing is resolved)."""
    from monai.bundle import ConfigParser

    folder = Path(bundle_root(bundle)) / "configs"
    merged = ConfigParser.load_config_files([str(folder / c) for c in configs])
    return {**merged, "_meta_": ConfigParser.load_config_file(str(folder / "metadata.json"))}


def resolve_datalist(
    dataset_dir: str | os.PathLike | None, datalist: str | os.PathLike | None = "datalist.json",
    demo: str = "nuclei", demo_kwargs: dict[str, Any] | None = None,
) -> str:
    """Return the datalist JSON a bundle should read.

    Args:
        dataset_dir: the user's dataset folder; empty or ``None`` means the demo phantoms.
        datalist: the datalist file, relative to ``dataset_dir`` unless absolute (made by
            ``fewlabel datalist DATASET SRC_DIR -o DATASET_DIR/datalist.json``).
        demo: demo phantom kind used when no dataset is given; ``"ct"``: CT volume phantoms
            (:func:`fewlabel.data.ct_slices.write_ct_demo_dataset`).
        demo_kwargs: arguments of :func:`fewlabel.data.phantoms.write_demo_dataset` (or of the CT writer).

    Raises:
        DataError: ``dataset_dir`` or the datalist does not exist (the message says how to make one).
    """
    if not dataset_dir:
        from fewlabel.data.ct_slices import write_ct_demo_dataset
        from fewlabel.data.phantoms import write_demo_dataset

        from fewlabel.data.cache import rank_zero_first

        kwargs = demo_kwargs or {}
        with rank_zero_first():  # under torchrun one process writes the demo data, the others read it
            path = write_ct_demo_dataset(**kwargs) if demo == "ct" else write_demo_dataset(demo, **kwargs)
        logger.info("no dataset_dir given: using the '%s' demo phantoms at %s", demo, path)
        return str(path)
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DataError(
            f"dataset_dir does not exist: {root}. Point --dataset_dir at your dataset folder, or leave it out to "
            "run on the demo data."
        )
    path = Path(datalist or "datalist.json")
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        from fewlabel.data.adapters import ADAPTERS

        raise DataError(
            f"no datalist at {path}. Make one with `fewlabel datalist DATASET {root} -o {path}` "
            f"(DATASET: {', '.join(sorted(ADAPTERS))}), or pass --datalist <file>."
        )
    return str(path)
