"""The virtual environment MONAI Label runs in, built once and reused.

MONAI Label 0.8.5 needs ``pydicom<3`` and ``dicomweb-client==0.59.3``; the main environment has
pydicom 3 (highdicom needs it), so the server gets its own environment. It holds MONAI Label, the
torch / torchvision / sam2 versions of the main environment (installed first, as ``make setup``
does, so pip takes them from local disk and sam2 builds without CUDA), and fewlabel's own
requirements except the few that MONAI Label pins differently. fewlabel itself is not installed
there: the server imports it from this checkout (see :mod:`fewlabel.label_server.server`), so code
changes need no rebuild.

MONAI Label goes in before fewlabel's requirements, in two pip runs: two of its dependencies
(``numpymaxflow``, ``pydicom-seg``; scribbles and DICOM SEG output, which the bundles do not use)
declare ``numpy<2`` while the bundles' libraries need numpy 2, so one resolution is impossible. The
second run upgrades numpy, as in the main environment; ``pip check`` reports those two.

The environment is rebuilt when what it should hold changes: its ``.fewlabel-env.json`` stamp
records the requirements and is written last, so an interrupted build is redone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from fewlabel.envs import env_python, locked, pip_install
from fewlabel.errors import FewLabelError

__all__ = ["MONAILABEL_REQUIREMENTS", "default_env_dir", "env_requirements", "ensure_env", "env_python"]

MONAILABEL_VERSION = "0.8.5"
# what MONAI Label 0.8.5 needs beside itself, which the main environment must not get
MONAILABEL_REQUIREMENTS = [f"monailabel=={MONAILABEL_VERSION}", "pydicom<3", "dicomweb-client==0.59.3"]
# fewlabel requirements left to MONAI Label's own pins (pydicom 3 for highdicom; jsonschema, pyyaml)
_LEFT_TO_MONAILABEL = {"pydicom", "highdicom", "jsonschema", "pyyaml"}
# requirements of stages the server never runs (the self-supervised baselines' library)
_NOT_SERVED = {"lightly"}
_FIRST = ("torch", "torchvision")  # installed before anything else, pinned as in the main environment
_STAMP = ".fewlabel-env.json"


def default_env_dir() -> Path:
    """``$FEWLABEL_LABEL_ENV``, else ``~/.cache/fewlabel/monailabel-0.8.5-py3XX`` (shared by checkouts)."""
    if os.environ.get("FEWLABEL_LABEL_ENV"):
        return Path(os.environ["FEWLABEL_LABEL_ENV"]).expanduser()
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    return Path.home() / ".cache" / "fewlabel" / f"monailabel-{MONAILABEL_VERSION}-{tag}"


def env_requirements() -> dict[str, list[str]]:
    """What the environment holds, in install order: ``first`` (torch), ``sam2``, ``monailabel``, ``rest``.

    Versions come from fewlabel's installed requirements (``pyproject.toml``), so the server runs
    the same torch, MONAI and network libraries as the main environment.
    """
    try:
        reqs = [Requirement(r) for r in metadata.requires("fewlabel") or []]
    except metadata.PackageNotFoundError as e:
        raise FewLabelError("fewlabel is not installed (its requirements give the MONAI Label environment's "
                            "versions): run `make setup` or `pip install -e .` first.") from e
    first, sam2, rest = [], [], []
    for r in reqs:
        name = r.name.lower()
        if r.marker is not None:
            if r.marker.evaluate({"extra": "sam2"}) and name == "sam2":
                sam2.append(f"{r.name}{r.specifier}")
            continue
        if name in _FIRST:
            first.append(f"{r.name}{r.specifier}")
        elif name not in _LEFT_TO_MONAILABEL | _NOT_SERVED:
            rest.append(f"{r.name}{r.specifier}")
    return {"first": first, "sam2": sam2, "monailabel": list(MONAILABEL_REQUIREMENTS), "rest": rest}


def _stamp(reqs: dict[str, list[str]], python: str) -> dict[str, object]:
    out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return {"python": out, "requirements": reqs}


def _is_ready(env_dir: Path, stamp: dict[str, object]) -> bool:
    path = env_dir / _STAMP
    if not (path.is_file() and (env_dir / "bin" / "monailabel").is_file()):
        return False
    try:
        return json.loads(path.read_text()) == stamp
    except (OSError, json.JSONDecodeError):
        return False


def _pip(env_dir: Path, args: list[str], env: dict[str, str] | None = None) -> None:
    pip_install(env_dir, args, "MONAI Label", env)


def ensure_env(env_dir: str | os.PathLike | None = None, python: str | None = None, rebuild: bool = False,
               log: Callable[[str], None] = print) -> Path:
    """Return a ready MONAI Label environment, building it first if it is missing or out of date.

    Args:
        env_dir: where it lies (default :func:`default_env_dir`).
        python: interpreter to create it with (default the running one).
        rebuild: build it again even if it is up to date.
        log: receives one line per build step.

    Returns:
        the environment folder (``bin/monailabel`` is the server command).

    Raises:
        FewLabelError: a step failed (the message holds pip's last lines).
    """
    env_dir = Path(env_dir) if env_dir is not None else default_env_dir()
    python = python or sys.executable
    reqs = env_requirements()
    stamp = _stamp(reqs, python)
    with locked(env_dir):
        if not rebuild and _is_ready(env_dir, stamp):
            return env_dir
        log(f"building the MONAI Label {MONAILABEL_VERSION} environment at {env_dir} (once; a few minutes)")
        if env_dir.exists():
            shutil.rmtree(env_dir)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("create the virtual environment",
             lambda: subprocess.run([python, "-m", "venv", str(env_dir)], check=True)),
            ("pip, setuptools, wheel", lambda: _pip(env_dir, ["--upgrade", "pip", "setuptools", "wheel"])),
            (" ".join(reqs["first"]), lambda: _pip(env_dir, reqs["first"])),
        ]
        if reqs["sam2"]:
            steps.append((f"{' '.join(reqs['sam2'])} (no CUDA build)",
                          lambda: _pip(env_dir, ["--no-build-isolation", *reqs["sam2"]], {"SAM2_BUILD_CUDA": "0"})))
        steps.append((" ".join(reqs["monailabel"]), lambda: _pip(env_dir, reqs["monailabel"])))
        steps.append((f"{len(reqs['rest'])} fewlabel requirements", lambda: _pip(env_dir, reqs["rest"])))
        for i, (what, step) in enumerate(steps, 1):
            log(f"  [{i}/{len(steps)}] {what}")
            step()
        (env_dir / _STAMP).write_text(json.dumps(stamp, indent=1))
        log(f"MONAI Label environment ready: {env_dir}")
    return env_dir
