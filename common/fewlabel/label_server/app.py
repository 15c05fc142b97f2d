"""The MONAI Label app folder: the stock ``monaibundle`` app with this repository's bundles.

MONAI Label's ``monaibundle`` app serves the bundles it finds in ``<app>/model/<bundle>/``. Each
bundle goes there as a small folder:

- ``configs/inference.json``: the bundle's ``inference.json`` with its
  ``configs/monailabel_inference.json`` overlay (the saver replaced by
  :class:`~fewlabel.transforms.MonaiLabelOutputd`, see there) and the user's overrides, merged into
  one file because MONAI Label reads only ``inference.json``;
- ``configs/train.json``: likewise, for bundles that have a ``configs/monailabel_training.json``
  overlay (only those get a ``/train`` endpoint);
- ``configs/metadata.json`` (labels from the output's ``channel_def``) and ``logging.conf``;
- ``models/model.pt``: a copy of the bundle's weights, so training from MONAI Label, which
  replaces it, never touches the bundle's own file. Other files in ``models/`` (pre-trained
  encoders, SAM checkpoints) are linked, not copied.

The app's ``main.py`` is fewlabel's: the stock app (copied as ``monaibundle_main.py``) with
:class:`~fewlabel.label_server.studies.StudiesOnlyApp`, which keeps every image id and label tag
inside the studies folder, and :class:`~fewlabel.label_server.label_writer.PillowWriterApp`, which writes 2D
label maps with Pillow instead of ITK (the same PNG, without ITK's slow first load).

Before the server starts, every ``model.pt`` is loaded into its bundle's network strictly: MONAI
Label itself loads with ``strict=False`` and would serve a network left partly random.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fewlabel.bundle import REPO_BUNDLES
from fewlabel.errors import CheckpointError, FewLabelError

__all__ = ["INFER_OVERLAY", "TRAIN_OVERLAY", "ServedBundle", "available_bundles", "select_bundles", "prepare_app",
           "check_weights"]

INFER_OVERLAY = "monailabel_inference.json"
TRAIN_OVERLAY = "monailabel_training.json"
_STOCK_APP_FILES = ("__init__.py", "lib", "requirements.txt")
STOCK_MAIN = "monaibundle_main.py"  # the stock app's main.py, which fewlabel's main.py extends
_MAIN_PY = f'''"""fewlabel's MONAI Label app: the stock monaibundle app kept inside its studies folder.

Written by fewlabel.label_server.app.prepare_app (rewritten at each start; do not edit). The stock
app is {STOCK_MAIN}; fewlabel.label_server.studies.StudiesOnlyApp gives it a datastore that accepts
only ids and tags naming entries of the studies folder, and an infer that resolves images through it.
"""

import {STOCK_MAIN[:-3]}
from monailabel.interfaces.app import MONAILabelApp

from fewlabel.label_server.guard import die_with_server
from fewlabel.label_server.label_writer import PillowWriterApp
from fewlabel.label_server.studies import StudiesOnlyApp

die_with_server()  # in a /train task process: killed when the server dies


class FewLabelApp(StudiesOnlyApp, PillowWriterApp, {STOCK_MAIN[:-3]}.MyApp, MONAILabelApp):
    """The stock monaibundle app (MONAI Label finds an app by MONAILabelApp among its direct bases), writing
    2D label maps with Pillow (fewlabel.label_server.label_writer)."""
'''


@dataclass(frozen=True)
class ServedBundle:
    """A bundle as placed in the app: its name, source folder, app folder and whether it trains."""

    name: str
    source: Path
    folder: Path
    trains: bool


def available_bundles(bundles_dir: str | os.PathLike = REPO_BUNDLES) -> list[str]:
    """Names of the bundles in ``bundles_dir`` that MONAI Label can serve (they have the overlay)."""
    root = Path(bundles_dir)
    return sorted(p.name for p in root.iterdir() if (p / "configs" / INFER_OVERLAY).is_file()) if root.is_dir() else []


def _merged(files: Sequence[Path], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``monai.bundle``'s merge of config files (later files and ``#`` ids win), then the overrides."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([os.fspath(f) for f in files])
    for key, value in overrides.items():
        parser[key] = value
    config = dict(parser.get())
    config.pop(parser.meta_key, None)
    return config


def _write_json(config: Mapping[str, Any], path: Path) -> None:
    from monai.bundle import ConfigParser

    tmp = path.with_name(path.name + ".tmp")
    ConfigParser.export_config_file(dict(config), os.fspath(tmp), fmt="json", indent=4)
    os.replace(tmp, path)


def _place_weights(src_models: Path, dst_models: Path, log: Callable[[str], None]) -> None:
    """Copy ``model.pt`` (keeping a newer copy trained from MONAI Label) and link the other files."""
    dst_models.mkdir(parents=True, exist_ok=True)
    src, dst = src_models / "model.pt", dst_models / "model.pt"
    if not dst.exists():
        shutil.copy2(src, dst)
    else:
        s, d = src.stat(), dst.stat()
        if (s.st_size, int(s.st_mtime)) != (d.st_size, int(d.st_mtime)):
            if d.st_mtime > s.st_mtime:
                log(f"  keeping {dst}: it is newer than {src} (trained from MONAI Label); "
                    "delete it to serve the bundle's weights again")
            else:
                stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(d.st_mtime))
                backup = dst.with_name(f"model.before-{stamp}.pt.bak")
                os.replace(dst, backup)
                shutil.copy2(src, dst)
                log(f"  {src} is newer: serving it; the previous app copy is kept as {backup}")
    for f in sorted(src_models.iterdir()):
        if f.name == "model.pt" or f.name.startswith("resume_") or not f.is_file():
            continue
        link = dst_models / f.name
        if not link.exists() and not link.is_symlink():
            link.symlink_to(f.resolve())


def check_weights(bundle: ServedBundle, weights: str | os.PathLike | None = None) -> None:
    """Load the app copy's ``models/model.pt`` (or ``weights``) into the network of its ``inference.json``, strictly.

    Raises:
        CheckpointError: the file is unreadable, or its keys or shapes do not fit the network (the
            message names the file and says to pass the overrides it was trained with).
    """
    from monai.bundle import ConfigParser

    from fewlabel.networks.transfer import load_state_file

    weights = Path(weights) if weights is not None else bundle.folder / "models" / "model.pt"
    parser = ConfigParser()
    parser.read_config(os.fspath(bundle.folder / "configs" / "inference.json"))
    network = parser.get_parsed_content("network_def", instantiate=True)
    state = load_state_file(weights, hint=f"(copied from {bundle.source / 'models' / 'model.pt'})")
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        detail = detail if len(detail) < 500 else detail[:500] + " ..."
        raise CheckpointError(
            f"{weights} (from {bundle.source / 'models' / 'model.pt'}) does not fit the network of "
            f"{bundle.name}'s inference.json: {detail}\nIf it was trained with other settings (e.g. "
            "--encoder_name resnet18), give them to label-server with --overrides FILE.json "
            f'({{"{bundle.name}": {{"encoder_name": "resnet18"}}}}).'
        ) from e


def select_bundles(bundles: Sequence[str] | None = None, bundles_dir: str | os.PathLike = REPO_BUNDLES,
                   overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """Check what :func:`prepare_app` will serve before anything is built; return the bundle names.

    Raises:
        FewLabelError: an unknown bundle, a bundle without ``models/model.pt`` (the message says
            which file to put where), or overrides for a bundle not served.
    """
    bundles_dir = Path(bundles_dir)
    known = available_bundles(bundles_dir)
    names = list(bundles) if bundles else known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise FewLabelError(f"unknown bundle(s) {unknown} in {bundles_dir}; MONAI Label can serve: {', '.join(known)} "
                            f"(a bundle needs configs/{INFER_OVERLAY}).")
    stray = sorted(set(overrides or {}) - set(names))
    if stray:
        raise FewLabelError(f"overrides given for bundle(s) not served: {stray} (serving {', '.join(names)}).")
    missing = [bundles_dir / n / "models" / "model.pt" for n in names
               if not (bundles_dir / n / "models" / "model.pt").is_file()]
    if missing:
        lines = "\n".join(f"  - {p}" for p in missing)
        raise FewLabelError(
            "MONAI Label serves each bundle's trained weights, and these are missing:\n"
            f"{lines}\nPut the weights file there (training writes it: `python -m monai.bundle run --config_file "
            "configs/train.json` in the bundle folder), or leave those bundles out with --bundles.")
    return names


def prepare_app(app_dir: str | os.PathLike, env_dir: str | os.PathLike, bundles: Sequence[str] | None = None,
                bundles_dir: str | os.PathLike = REPO_BUNDLES,
                overrides: Mapping[str, Mapping[str, Any]] | None = None,
                log: Callable[[str], None] = print) -> list[ServedBundle]:
    """Lay out ``app_dir`` for ``monailabel start_server --app app_dir``.

    Args:
        app_dir: the app folder (created; the stock app files are refreshed, trained weights kept).
        env_dir: the MONAI Label environment (:func:`~fewlabel.label_server.env.ensure_env`), whose
            ``monailabel/sample-apps/monaibundle`` is the stock app.
        bundles: bundle names (default: every bundle of ``bundles_dir`` with the overlay).
        bundles_dir: where the bundles lie (default this checkout's ``bundles/``).
        overrides: ``{bundle: {config id: value}}`` applied to its inference and training configs,
            e.g. the settings its ``model.pt`` was trained with.
        log: receives progress lines.

    Returns:
        the bundles placed, in order.

    Raises:
        FewLabelError: see :func:`select_bundles`.
        CheckpointError: a ``model.pt`` that does not fit its network.
    """
    app_dir, bundles_dir = Path(app_dir), Path(bundles_dir)
    stock = Path(env_dir) / "monailabel" / "sample-apps" / "monaibundle"
    if not (stock / "main.py").is_file():
        raise FewLabelError(f"the MONAI Label environment {env_dir} has no stock monaibundle app ({stock}): "
                            "rebuild it (fewlabel label-server --rebuild_env).")
    names = select_bundles(bundles, bundles_dir, overrides)
    overrides = dict(overrides or {})

    app_dir.mkdir(parents=True, exist_ok=True)
    for name in _STOCK_APP_FILES:
        src, dst = stock / name, app_dir / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            shutil.copy2(src, dst)
    shutil.copy2(stock / "main.py", app_dir / STOCK_MAIN)
    (app_dir / "main.py").write_text(_MAIN_PY)

    served = []
    for name in names:
        src, dst = bundles_dir / name, app_dir / "model" / name
        configs = dst / "configs"
        configs.mkdir(parents=True, exist_ok=True)
        extra = dict(overrides.get(name, {}))
        _write_json(_merged([src / "configs" / "inference.json", src / "configs" / INFER_OVERLAY], extra),
                    configs / "inference.json")
        trains = (src / "configs" / TRAIN_OVERLAY).is_file()
        if trains:
            _write_json(_merged([src / "configs" / "train.json", src / "configs" / TRAIN_OVERLAY], extra),
                        configs / "train.json")
        else:
            (configs / "train.json").unlink(missing_ok=True)
        for f in ("metadata.json", "logging.conf", "multi_gpu_train.json"):
            if (src / "configs" / f).is_file() and (f != "multi_gpu_train.json" or trains):
                shutil.copy2(src / "configs" / f, configs / f)
        _place_weights(src / "models", dst / "models", log)
        bundle = ServedBundle(name=name, source=src.resolve(), folder=dst, trains=trains)
        check_weights(bundle)
        served.append(bundle)
        log(f"  {name}: inference{' and training' if trains else ''} ({dst})")
    return served
