"""Side environments: virtual environments built once on first use, for tools the main one must not hold.

A tool whose requirements clash with the main environment's (MONAI Label pins ``pydicom<3``), or
whose mere presence changes it (the MONAI Deploy SDK puts ``monai.deploy`` in MONAI's namespace, and
every ``import monai`` then imports Holoscan), gets a virtual environment of its own under
``~/.cache/fewlabel/``. :func:`build_env` builds one from a list of steps under a file lock (one
build at a time per folder: two test runs, or a test and a user) and writes a stamp of what it
should hold last, so an interrupted build is redone and a changed stamp rebuilds it.

:func:`layer_on` lets an environment see the packages of another (the main one) behind its own, so
a side environment needs to install only what differs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from fewlabel.errors import FewLabelError

__all__ = ["env_python", "env_site_packages", "python_version", "locked", "pip_install", "layer_on", "build_env"]

STAMP = ".fewlabel-env.json"


def env_python(env_dir: str | os.PathLike) -> Path:
    """The environment's Python interpreter (``<env_dir>/bin/python``)."""
    return Path(env_dir) / "bin" / "python"


def env_site_packages(env_dir: str | os.PathLike) -> Path:
    """The environment's ``site-packages`` folder (``lib/python3.X/site-packages``; the folder must exist)."""
    found = sorted((Path(env_dir) / "lib").glob("python3*/site-packages"))
    if not found:
        raise FewLabelError(f"{env_dir} is not a virtual environment (no lib/python3*/site-packages).")
    return found[0]


def python_version(python: str | os.PathLike) -> str:
    """``"3.11"`` for the interpreter ``python``."""
    return subprocess.run([os.fspath(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def locked(env_dir: Path) -> Iterator[None]:
    """Hold ``.<env_dir name>.lock`` beside ``env_dir``: one build at a time per environment folder."""
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(env_dir.parent / f".{env_dir.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def pip_install(env_dir: Path, args: Sequence[str], what: str, env: dict[str, str] | None = None) -> None:
    """``pip install -q ARGS`` with the environment's pip.

    Raises:
        FewLabelError: pip failed; the message names the environment (``what``), the command and pip's
            last lines.
    """
    cmd = [str(env_python(env_dir)), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    result = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise FewLabelError(f"building the {what} environment at {env_dir} failed at `pip install "
                            f"{' '.join(args)}`:\n{tail}\nFix the cause (network to the package index, disk "
                            "space) and run again; the half-built environment is rebuilt.")


def base_site_dirs() -> list[str]:
    """The running interpreter's own ``site-packages`` folders (pure and platform), the ones :func:`layer_on`
    makes visible to another environment."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def layer_on(env_dir: Path, site_dirs: Sequence[str], name: str = "fewlabel-base") -> Path:
    """Let the environment ``env_dir`` import the packages in ``site_dirs`` after its own.

    Writes ``<site-packages>/<name>.pth`` calling ``site.addsitedir`` on each folder, so their own
    ``.pth`` files (editable installs, namespace packages) work too. The environment's packages come
    first: one installed there shadows the same package in ``site_dirs``. pip installing into the
    environment sees the layered packages as installed and does not install them again.
    """
    pth = env_site_packages(env_dir) / f"{name}.pth"
    pth.write_text("".join(f"import site; site.addsitedir({d!r})\n" for d in site_dirs))
    return pth


def build_env(env_dir: Path, stamp: dict[str, object], steps: Sequence[tuple[str, Callable[[], None]]], what: str,
              ready: Callable[[Path], bool] = lambda env_dir: True, python: str | None = None,
              rebuild: bool = False, log: Callable[[str], None] = print) -> Path:
    """Return ``env_dir``, first building it if its stamp differs from ``stamp`` (or ``rebuild``).

    Args:
        env_dir: the environment folder (removed and created again when built).
        stamp: what the environment should hold (JSON); written to ``<env_dir>/.fewlabel-env.json`` last.
        steps: ``(description, action)`` run in order after ``python -m venv env_dir``; each is logged.
        what: the environment's name in messages (``"MONAI Label 0.8.5"``).
        ready: a further check of a stamped environment (e.g. its command exists).
        python: interpreter to create it with (default the running one).
        rebuild: build it again even if it is up to date.
        log: receives one line per build step.

    Raises:
        FewLabelError: a step failed.
    """
    python = python or sys.executable
    path = env_dir / STAMP
    with locked(env_dir):
        if not rebuild and path.is_file() and ready(env_dir):
            try:
                if json.loads(path.read_text()) == stamp:
                    return env_dir
            except (OSError, json.JSONDecodeError):
                pass
        log(f"building the {what} environment at {env_dir} (once; a few minutes)")
        if env_dir.exists():
            shutil.rmtree(env_dir)
        all_steps = [("create the virtual environment",
                      lambda: subprocess.run([python, "-m", "venv", str(env_dir)], check=True)), *steps]
        for i, (description, step) in enumerate(all_steps, 1):
            log(f"  [{i}/{len(all_steps)}] {description}")
            step()
        path.write_text(json.dumps(stamp, indent=1))
        log(f"{what} environment ready: {env_dir}")
    return env_dir
