"""The environment the MONAI Deploy apps run in, built on first use (the main environment stays free of it).

Installing the MONAI Deploy App SDK puts ``monai.deploy`` in MONAI's namespace; MONAI imports every
``monai.*`` package it finds, so with the SDK installed every ``import monai`` imports Holoscan
(seconds, and a stack-size warning at every ``python -m monai.bundle run``). The apps therefore get
an environment of their own, ``~/.cache/fewlabel/deploy-<sdk>-py3XX`` (``$FEWLABEL_DEPLOY_ENV``):

- it is layered on the environment that builds it (:func:`fewlabel.envs.layer_on`): torch, the
  network libraries, highdicom and pytest come from the main environment, so the build installs only
  the ``deploy`` extra of ``pyproject.toml`` (the SDK, Holoscan, their few dependencies) and
- its own copy of MONAI (same version), beside which ``monai.deploy`` is installed, so that only this
  environment's ``import monai`` finds it.

``python -m fewlabel.deploy`` (and ``.ct_app`` / ``.frames_app``) started from an environment without
the SDK builds it if needed and runs again in it (:func:`reexec_in_deploy_env`); where the SDK is
installed (the deploy image, a MAP) nothing changes. fewlabel itself is imported from the same
checkout, so code changes need no rebuild.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from fewlabel.envs import base_site_dirs, build_env, env_python, env_site_packages, layer_on, pip_install
from fewlabel.errors import FewLabelError

__all__ = ["deploy_requirements", "default_deploy_env_dir", "ensure_deploy_env", "has_deploy_sdk",
           "reexec_in_deploy_env", "ENV_VARIABLE"]

#: the environment variable naming the deploy environment's folder
ENV_VARIABLE = "FEWLABEL_DEPLOY_ENV"


def deploy_requirements() -> dict[str, list[str]]:
    """``{"monai": ["monai==X"], "deploy": [the deploy extra's pins]}`` from fewlabel's installed metadata."""
    try:
        reqs = [Requirement(r) for r in metadata.requires("fewlabel") or []]
    except metadata.PackageNotFoundError as e:
        raise FewLabelError("fewlabel is not installed (its requirements give the deploy environment's "
                            "versions): run `make setup` or `pip install -e .` first.") from e
    monai = [str(r) for r in reqs if r.name.lower() == "monai" and r.marker is None]
    deploy = [f"{r.name}{r.specifier}" for r in reqs if r.marker is not None
              and r.marker.evaluate({"extra": "deploy"}) and not r.marker.evaluate({"extra": ""})]
    if not monai or not deploy:
        raise FewLabelError("fewlabel's metadata has no monai pin or no `deploy` extra: reinstall it "
                            "(`pip install -e .`) from a checkout whose pyproject.toml has both.")
    return {"monai": monai, "deploy": deploy}


def default_deploy_env_dir() -> Path:
    """``$FEWLABEL_DEPLOY_ENV``, else ``~/.cache/fewlabel/deploy-<sdk version>-py3XX``."""
    if os.environ.get(ENV_VARIABLE):
        return Path(os.environ[ENV_VARIABLE]).expanduser()
    sdk = next((r.split("==")[1] for r in deploy_requirements()["deploy"] if r.startswith("monai-deploy-app-sdk==")),
               "sdk")
    return Path.home() / ".cache" / "fewlabel" / f"deploy-{sdk}-py{sys.version_info.major}{sys.version_info.minor}"


def has_deploy_sdk() -> bool:
    """Whether this interpreter has ``monai.deploy`` beside its ``monai`` (found without importing MONAI)."""
    spec = importlib.util.find_spec("monai")
    return bool(spec and spec.submodule_search_locations
                and any((Path(p) / "deploy" / "__init__.py").is_file() for p in spec.submodule_search_locations))


def ensure_deploy_env(env_dir: str | os.PathLike | None = None, rebuild: bool = False,
                      log: Callable[[str], None] = print) -> Path:
    """Return a ready deploy environment, building it first if it is missing or out of date.

    Args:
        env_dir: where it lies (default :func:`default_deploy_env_dir`).
        rebuild: build it again even if it is up to date.
        log: receives one line per build step.

    Returns:
        the environment folder (``bin/python`` runs the apps).

    Raises:
        FewLabelError: a step failed (the message holds pip's last lines).
    """
    env_dir = Path(env_dir) if env_dir is not None else default_deploy_env_dir()
    reqs = deploy_requirements()
    base = base_site_dirs()
    # what it is layered on, packages included: the dependencies it did not install come from there, so a
    # rebuilt main environment (e.g. without packages the SDK needs) rebuilds it
    packages = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions(path=base)})
    stamp = {"python": f"{sys.version_info.major}.{sys.version_info.minor}", "requirements": reqs, "layered_on": base,
             "layered_packages": packages}
    what = "MONAI Deploy"
    pinned = [*reqs["monai"], *reqs["deploy"]]
    steps = [
        (f"see the packages of {sys.prefix}", lambda: layer_on(env_dir, base)),
        # the named packages into this environment even where the layered one has them (MONAI: its own
        # copy, so that monai.deploy lies beside it only here) ...
        (" ".join(pinned), lambda: pip_install(env_dir, ["--no-deps", "--ignore-installed", *pinned], what)),
        # ... then their dependencies that the layered environment lacks
        ("their dependencies", lambda: pip_install(env_dir, pinned, what)),
    ]
    return build_env(env_dir, stamp, steps, what,
                     ready=lambda d: (env_site_packages(d) / "monai" / "deploy" / "__init__.py").is_file(),
                     rebuild=rebuild, log=log)


def _checkout_pythonpath() -> str:
    """``PYTHONPATH`` for the deploy environment: this fewlabel's folder first, then the caller's."""
    here = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join([here, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])


def reexec_in_deploy_env(argv: list[str] | None = None) -> None:
    """Replace this process by the same command run by the deploy environment's Python (built if needed).

    ``argv``: the interpreter's arguments (default ``sys.orig_argv[1:]``, e.g. ``-m fewlabel.deploy -i ...``).
    Returns only when this interpreter has the SDK itself (then nothing is to be done).
    """
    if has_deploy_sdk():
        return
    argv = list(sys.orig_argv[1:] if argv is None else argv)
    env_dir = ensure_deploy_env(log=lambda line: print(line, file=sys.stderr, flush=True))
    python = str(env_python(env_dir))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(python, [python, *argv], {**os.environ, "PYTHONPATH": _checkout_pythonpath()})
