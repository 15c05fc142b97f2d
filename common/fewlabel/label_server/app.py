"""The MONAI Label app folder: the stock ``monaibundle`` app with this repository's bundles.

MONAI Label's ``monaibundle`` app serves the bundles it finds in ``<app>/model/<bundle>/``. Each
bundle goes there as a small folder:

- ``configs/inference.json``: the bundle's ``inference.json`` with its
  ``configs/monailabel_inference.json`` overlay (the saver replaced by
  :class:`~fewlabel.transforms.MonaiLabelOutputd`, see there) and the user's overrides, merged into
  one file because MONAI Label reads only ``inference.json``;
- ``configs/train.json``: likewise, for bundles that have a ``configs/monailabel_training.json``
  overlay (MONAI Label's stock trainer);
- ``configs/label_server.json``: the bundle's folder and the user's overrides, for bundles whose
  ``configs/protocol.json`` has a ``label_server`` section: their ``/train`` runs that protocol on
  the datastore (:mod:`fewlabel.label_server.training`), in place of the stock trainer;
- ``configs/metadata.json`` (labels from the output's ``channel_def``) and ``logging.conf``. A
  bundle that segments volumes (``data_type`` ``nibabel`` / ``dicom``, e.g. PolyCL, whose network
  is slice-wise) gets a slice axis added to its input's ``spatial_shape`` there, so that MONAI
  Label lists it in ``/info/`` with dimension 3, a model for volumes (what 3D Slicer reads; Slicer
  itself is not run by the tests); the bundle's own metadata (exports, deploy) is unchanged. The
  description names the weights when they are demo weights;
- ``models/model.pt``: a copy of the bundle's weights, so training from MONAI Label, which
  replaces it, never touches the bundle's own file. Other files in ``models/`` (pre-trained
  encoders, SAM checkpoints) are linked, not copied.

Weights come from ``bundles/<b>/models/model.pt``; without that file, from what ``make demo``
trained (:func:`demo_weights`: ``outputs/demo/<b>/summary.json`` names the file and the settings
it was trained with), said as such in the log and in ``/info/``. Real weights win when present.

The app's ``main.py`` is fewlabel's: the stock app (copied as ``monaibundle_main.py``) with
:class:`~fewlabel.label_server.studies.StudiesOnlyApp`, which keeps every image id and label tag
inside the studies folder, and :class:`~fewlabel.label_server.label_writer.PillowWriterApp`, which writes 2D
label maps with Pillow instead of ITK (the same PNG, without ITK's slow first load).

Before the server starts, every ``model.pt`` is loaded into its bundle's network strictly: MONAI
Label itself loads with ``strict=False`` and would serve a network left partly random.
"""

from __future__ import annotations

import json
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
           "check_weights", "demo_weights", "DEMO_DIR", "DEMO_RECORD", "WEIGHTS_NOTE"]

INFER_OVERLAY = "monailabel_inference.json"
TRAIN_OVERLAY = "monailabel_training.json"
_STOCK_APP_FILES = ("__init__.py", "lib", "requirements.txt")
STOCK_MAIN = "monaibundle_main.py"  # the stock app's main.py, which fewlabel's main.py extends
DEMO_DIR = "outputs/demo"  # where `make demo` (fewlabel demo) writes, relative to the checkout
DEMO_RECORD = "label_server"  # the key of a demo's summary.json naming its weights and their settings
WEIGHTS_NOTE = "fewlabel_served_weights"  # key of the app's metadata.json naming demo weights (logged by the app)
_MAIN_PY = f'''"""fewlabel's MONAI Label app: the stock monaibundle app kept inside its studies folder.

Written by fewlabel.label_server.app.prepare_app (rewritten at each start; do not edit). The stock
app is {STOCK_MAIN}; fewlabel.label_server.studies.StudiesOnlyApp gives it a datastore that accepts
only ids and tags naming entries of the studies folder, and an infer that resolves images through it.
"""

import {STOCK_MAIN[:-3]}
from monailabel.interfaces.app import MONAILabelApp

from fewlabel.label_server.guard import die_with_server
from fewlabel.label_server.activelearning import ActiveLearningApp
from fewlabel.label_server.label_writer import PillowWriterApp
from fewlabel.label_server.studies import StudiesOnlyApp

die_with_server()  # in a /train task process: killed when the server dies


class FewLabelApp(ActiveLearningApp, StudiesOnlyApp, PillowWriterApp, {STOCK_MAIN[:-3]}.MyApp, MONAILabelApp):
    """The stock monaibundle app (MONAI Label finds an app by MONAILabelApp among its direct bases), writing
    2D label maps with Pillow (fewlabel.label_server.label_writer)."""

    def init_trainers(self):
        """The stock trainers, and each bundle's own protocol where it has one (fewlabel.label_server.training)."""
        from fewlabel.label_server.training import protocol_trainers

        trainers = super().init_trainers()
        if self.conf.get("skip_trainers", "false").lower() != "true":
            trainers.update(protocol_trainers(self.app_dir, list(self.models)))
        return trainers
'''


@dataclass(frozen=True)
class ServedBundle:
    """A bundle as placed in the app: its name, source folder, app folder and whether it trains."""

    name: str
    source: Path
    folder: Path
    trains: bool
    weights: Path | None = None  # the file copied to models/model.pt
    demo: bool = False  # the weights are those `make demo` trained


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


_SERVED_FROM = ".served-from"  # in the app's models/: the weights file model.pt was copied from


def _place_weights(src: Path, src_models: Path, dst_models: Path, log: Callable[[str], None]) -> None:
    """Copy ``src`` to ``model.pt`` (keeping a newer copy trained from MONAI Label from the same source)
    and link the other files of the bundle's ``src_models``."""
    dst_models.mkdir(parents=True, exist_ok=True)
    dst, record = dst_models / "model.pt", dst_models / _SERVED_FROM
    before = record.read_text().strip() if record.is_file() else os.fspath(src_models.resolve() / "model.pt")
    if dst.exists() and before != os.fspath(src.resolve()):  # another source (demo -> real weights)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(dst.stat().st_mtime))
        backup = dst.with_name(f"model.before-{stamp}.pt.bak")
        os.replace(dst, backup)
        log(f"  serving {src} instead of {before}; the previous app copy is kept as {backup}")
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
    record.write_text(os.fspath(src.resolve()) + "\n")
    for f in sorted(src_models.iterdir()) if src_models.is_dir() else ():
        if f.name == "model.pt" or f.name.startswith("resume_") or not f.is_file():
            continue
        link = dst_models / f.name
        if not link.exists() and not link.is_symlink():
            link.symlink_to(f.resolve())


def _place_protocol(src: Path, configs: Path, overrides: Mapping[str, Any]) -> bool:
    """Write ``configs/label_server.json`` (the bundle's folder and the user's overrides) for a bundle
    whose protocol has a ``label_server`` section; ``/train`` runs that protocol
    (:mod:`fewlabel.label_server.training`). Returns whether it did."""
    from fewlabel.label_server.server_protocol import PLAN_FILE, load_server_protocol

    plan = configs / PLAN_FILE
    if load_server_protocol(src) is None:
        plan.unlink(missing_ok=True)
        return False
    _write_json({"source": os.fspath(src.resolve()), "overrides": dict(overrides)}, plan)
    return True


def check_weights(bundle: ServedBundle, weights: str | os.PathLike | None = None) -> None:
    """Load the app copy's ``models/model.pt`` (or ``weights``) into the network of its ``inference.json``, strictly.

    Raises:
        CheckpointError: the file is unreadable, or its keys or shapes do not fit the network (the
            message names the file and says to pass the overrides it was trained with).
    """
    from monai.bundle import ConfigParser

    from fewlabel.networks.transfer import load_state_file

    weights = Path(weights) if weights is not None else bundle.folder / "models" / "model.pt"
    origin = bundle.weights or bundle.source / "models" / "model.pt"
    parser = ConfigParser()
    parser.read_config(os.fspath(bundle.folder / "configs" / "inference.json"))
    network = parser.get_parsed_content("network_def", instantiate=True)
    state = load_state_file(weights, hint=f"(copied from {origin})")
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        detail = detail if len(detail) < 500 else detail[:500] + " ..."
        raise CheckpointError(
            f"{weights} (from {origin}) does not fit the network of "
            f"{bundle.name}'s inference.json: {detail}\nIf it was trained with other settings (e.g. "
            "--encoder_name resnet18), give them to label-server with --overrides FILE.json "
            f'({{"{bundle.name}": {{"encoder_name": "resnet18"}}}}).'
        ) from e


def demo_weights(name: str, demo_dir: str | os.PathLike | None = DEMO_DIR) -> tuple[Path, dict[str, Any]] | None:
    """The weights ``make demo`` trained for bundle ``name`` and the settings they need, or ``None``.

    ``fewlabel demo`` records them in ``<demo_dir>/<name>/summary.json`` under ``"label_server"``:
    ``{"weights": <file, relative to the bundle's demo folder>, "overrides": {config id: value}}``.

    Raises:
        FewLabelError: the record is there but unreadable or names a missing file.
    """
    if demo_dir is None:
        return None
    summary = Path(demo_dir) / name / "summary.json"
    if not summary.is_file():
        return None
    try:
        record = json.loads(summary.read_text()).get(DEMO_RECORD)
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise FewLabelError(f"cannot read {summary}: {e}; run `fewlabel demo {name}` again.") from e
    if record is None:
        return None  # a demo run before the record existed
    weights = summary.parent / str(record.get("weights", ""))
    if not isinstance(record.get("overrides", {}), dict) or not weights.is_file():
        raise FewLabelError(f"{summary} names demo weights {weights} that are not there; run `fewlabel demo {name}` "
                            "again, or put real weights in the bundle's models/model.pt.")
    return weights.resolve(), dict(record.get("overrides", {}))


def _weights_of(name: str, bundles_dir: Path, demo_dir: str | os.PathLike | None) -> tuple[Path, dict, bool] | None:
    """(file, overrides, is demo) of what bundle ``name`` serves: its ``models/model.pt``, else its demo's."""
    real = bundles_dir / name / "models" / "model.pt"
    if real.is_file():
        return real, {}, False
    demo = demo_weights(name, demo_dir)
    return (demo[0], demo[1], True) if demo else None


def select_bundles(bundles: Sequence[str] | None = None, bundles_dir: str | os.PathLike = REPO_BUNDLES,
                   overrides: Mapping[str, Mapping[str, Any]] | None = None,
                   demo_dir: str | os.PathLike | None = None) -> list[str]:
    """Check what :func:`prepare_app` will serve before anything is built; return the bundle names.

    Args:
        demo_dir: where ``make demo`` wrote (:data:`DEMO_DIR`); its weights serve a bundle without
            ``models/model.pt``. ``None``: only the bundles' own weights.

    Raises:
        FewLabelError: an unknown bundle, a bundle without ``models/model.pt`` nor demo weights (the
            message says which file to put where), or overrides for a bundle not served.
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
    missing = [bundles_dir / n / "models" / "model.pt" for n in names if _weights_of(n, bundles_dir, demo_dir) is None]
    if missing:
        lines = "\n".join(f"  - {p}" for p in missing)
        demo = (f", or run `make demo` first to serve the weights it trains (looked for in {demo_dir})"
                if demo_dir is not None else "")
        raise FewLabelError(
            "MONAI Label serves each bundle's trained weights, and these are missing:\n"
            f"{lines}\nPut the weights file there (training writes it: `python -m monai.bundle run --config_file "
            f"configs/train.json` in the bundle folder){demo}, or leave those bundles out with --bundles.")
    return names


def _app_metadata(src: Path, weights: Path, demo: bool) -> dict[str, Any]:
    """The bundle's ``metadata.json`` as MONAI Label should read it (see the module doc)."""
    from fewlabel.bundle import input_kind

    meta = json.loads((src / "configs" / "metadata.json").read_text())
    if input_kind(meta) == "volume":  # slice-wise network, volumes in and out: MONAI Label dimension 3
        image = next(iter(meta["network_data_format"]["inputs"].values()))
        shape = list(image.get("spatial_shape") or [])
        if len(shape) == 2:
            image["spatial_shape"] = [*shape, "*"]
    if demo:
        note = (f"DEMO WEIGHTS ({weights}): trained by `make demo` on phantom data for a first look, not for real "
                f"images; put trained weights in {src / 'models' / 'model.pt'} to serve them instead. ")
        meta["description"] = note + str(meta.get("description", ""))
        meta[WEIGHTS_NOTE] = {"file": os.fspath(weights), "demo": True}
    return meta


def prepare_app(app_dir: str | os.PathLike, env_dir: str | os.PathLike, bundles: Sequence[str] | None = None,
                bundles_dir: str | os.PathLike = REPO_BUNDLES,
                overrides: Mapping[str, Mapping[str, Any]] | None = None,
                log: Callable[[str], None] = print, demo_dir: str | os.PathLike | None = None) -> list[ServedBundle]:
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
        demo_dir: where ``make demo`` wrote (:data:`DEMO_DIR`): a bundle without ``models/model.pt``
            serves the weights its demo trained, with the demo's settings (``overrides`` win).

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
    names = select_bundles(bundles, bundles_dir, overrides, demo_dir)
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
        weights, demo_overrides, demo = _weights_of(name, bundles_dir, demo_dir)
        extra = {**demo_overrides, **overrides.get(name, {})}
        _write_json(_merged([src / "configs" / "inference.json", src / "configs" / INFER_OVERLAY], extra),
                    configs / "inference.json")
        trains = (src / "configs" / TRAIN_OVERLAY).is_file()
        if trains:
            _write_json(_merged([src / "configs" / "train.json", src / "configs" / TRAIN_OVERLAY], extra),
                        configs / "train.json")
        else:
            (configs / "train.json").unlink(missing_ok=True)
        for f in ("logging.conf", "multi_gpu_train.json"):
            if (src / "configs" / f).is_file() and (f != "multi_gpu_train.json" or trains):
                shutil.copy2(src / "configs" / f, configs / f)
        _write_json(_app_metadata(src, weights, demo), configs / "metadata.json")
        _place_weights(weights, src / "models", dst / "models", log)
        trains = _place_protocol(src, configs, extra) or trains
        bundle = ServedBundle(name=name, source=src.resolve(), folder=dst, trains=trains, weights=weights, demo=demo)
        check_weights(bundle)
        served.append(bundle)
        log(f"  {name}: inference{' and training' if trains else ''} ({dst})")
        if demo:
            log(f"    DEMO WEIGHTS: {weights} (trained by `make demo` on phantom data, settings "
                f"{json.dumps(demo_overrides)}); real weights in {src / 'models' / 'model.pt'} take their place")
    return served
