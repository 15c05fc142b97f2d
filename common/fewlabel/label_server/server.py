"""Start, wait for and stop a local MONAI Label server that serves the bundles.

The server runs ``python -m monailabel.main start_server`` (what ``monailabel start_server`` runs)
from the MONAI Label environment, in its own process group (its training jobs are child
processes), bound to ``127.0.0.1`` unless told otherwise, with:

- ``--conf models <bundles>``: the bundles placed by :func:`~fewlabel.label_server.app.prepare_app`;
- ``--conf zoo_source local``: bundles come from the app folder only (no model-zoo or hub look-up);
- ``--conf sam2 false``: no SAM 2 interactive models (they would download weights);
- ``--uvicorn_app fewlabel.label_server.asgi:app``: MONAI Label's app, answering only requests for
  its own ``Host`` from its own pages or the origins named with ``cors_origins``, with the model
  endpoints that replace or delete served weights off (see :mod:`fewlabel.label_server.asgi`).

The server gets a private temporary folder (``TMPDIR``, :attr:`LabelServer.temp_dir`) where what
failed uploads leave is removed, and MONAI Label's own login settings (``MONAI_LABEL_AUTH_*``) when
``auth_enable``; a non-loopback ``host`` is refused without them (:func:`check_exposure`). Training
tasks it starts die with it (:func:`~fewlabel.label_server.guard.die_with_server`).

fewlabel is imported from this checkout: ``PYTHONPATH`` gets a folder that holds only a link to the
``fewlabel`` package, so nothing else of the main environment leaks into the server's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import fewlabel
from fewlabel.errors import FewLabelError
from fewlabel.label_server.guard import is_loopback, own_hosts, own_origins

__all__ = ["LabelServer", "client_instructions", "check_port_free", "check_exposure"]


class LabelServer:
    """A MONAI Label server process (a context manager: started on enter, stopped on exit).

    Args:
        app_dir: the prepared app folder.
        studies: the studies folder (images; MONAI Label keeps saved labels in ``labels/final/``).
        bundles: bundle names to serve (folders in ``app_dir/model``).
        env_dir: the MONAI Label environment.
        port: TCP port.
        host: address to bind; ``127.0.0.1`` keeps the server on this machine.
        log_file: server output (default ``app_dir/logs/server.log``).
        cors_origins: web origins (e.g. an OHIF viewer's ``http://localhost:3000``) whose pages may
            use the server, besides its own.
        allow_model_upload: let ``PUT`` / ``DELETE /model/<m>`` replace or rename the served weights.
        max_upload_mb: the largest request body (upload) the server takes.
        server_names: further ``Host`` names the server answers to (a team server's DNS names or
            addresses, without port); its own loopback names are always taken.
        auth_enable: MONAI Label's own login (``MONAI_LABEL_AUTH_ENABLE``): every request needs a
            token of the OpenID Connect (Keycloak) realm ``auth_realm_uri``. Required when ``host``
            is not a loopback address (see :func:`check_exposure`).
        auth_realm_uri: the realm (``MONAI_LABEL_AUTH_REALM_URI``), e.g.
            ``https://keycloak.example.org/realms/monailabel``.
        auth_client_id: the realm's client id for MONAI Label (``MONAI_LABEL_AUTH_CLIENT_ID``).
    """

    def __init__(self, app_dir: str | os.PathLike, studies: str | os.PathLike, bundles: Sequence[str],
                 env_dir: str | os.PathLike, port: int = 8000, host: str = "127.0.0.1",
                 log_file: str | os.PathLike | None = None, cors_origins: Sequence[str] = (),
                 allow_model_upload: bool = False, max_upload_mb: float = 1024, server_names: Sequence[str] = (),
                 auth_enable: bool = False, auth_realm_uri: str | None = None,
                 auth_client_id: str | None = None) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.studies = Path(studies).resolve()
        self.bundles = list(bundles)
        self.env_dir = Path(env_dir)
        self.port = int(port)
        self.host = host
        self.log_file = Path(log_file) if log_file else self.app_dir / "logs" / "server.log"
        self.cors_origins = [str(o).rstrip("/") for o in cors_origins]
        self.allow_model_upload = bool(allow_model_upload)
        self.max_upload_mb = float(max_upload_mb)
        self.server_names = [str(n) for n in server_names]
        self.auth_enable = bool(auth_enable)
        self.auth_realm_uri = auth_realm_uri
        self.auth_client_id = auth_client_id
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def temp_dir(self) -> Path:
        """The server's own temporary folder (its ``TMPDIR``): uploads in flight, nothing else; emptied
        at each start (no server is on the port then), and failed uploads are removed from it at once."""
        return self.app_dir / "tmp" / str(self.port)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def command(self) -> list[str]:
        """The ``monailabel start_server`` command line."""
        conf = {"models": ",".join(self.bundles), "zoo_source": "local", "sam2": "false", "preload": "false"}
        # the interpreter, not the bin/monailabel wrapper script (which puts two folders above the
        # environment on PYTHONPATH)
        cmd = [str(self.env_dir / "bin" / "python"), "-m", "monailabel.main", "start_server",
               "--app", str(self.app_dir), "--studies", str(self.studies),
               "--host", self.host, "--port", str(self.port), "--uvicorn_app", "fewlabel.label_server.asgi:app"]
        for key, value in conf.items():
            cmd += ["--conf", key, str(value)]
        return cmd

    def environment(self) -> dict[str, str]:
        """The server's environment: the MONAI Label env first on PATH, fewlabel from this checkout."""
        src = self.app_dir / ".fewlabel-src"
        src.mkdir(parents=True, exist_ok=True)
        link = src / "fewlabel"
        package = Path(fewlabel.__file__).resolve().parent
        if link.is_symlink() and link.resolve() != package:
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(package)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PATH"] = f"{self.env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.env_dir)
        env["PYTHONPATH"] = str(src)
        env.setdefault("MONAI_LABEL_TRACKING_ENABLED", "false")
        # no scoring task process at start and at every /activelearning request (MONAI Label's default):
        # fewlabel's strategies score what lacks a current score when asked, and training rescores
        env["MONAI_LABEL_AUTO_UPDATE_SCORING"] = "false"
        env["FEWLABEL_LABEL_HOSTS"] = json.dumps(own_hosts(self.port, self.host, self.server_names))
        env["FEWLABEL_LABEL_ORIGINS"] = json.dumps(own_origins(self.port, self.host, self.server_names)
                                                   + self.cors_origins)
        # MONAI Label's own settings (monailabel.config.Settings reads them from the environment)
        env["MONAI_LABEL_AUTH_ENABLE"] = "true" if self.auth_enable else "false"
        for key, value in (("MONAI_LABEL_AUTH_REALM_URI", self.auth_realm_uri),
                           ("MONAI_LABEL_AUTH_CLIENT_ID", self.auth_client_id)):
            if value:
                env[key] = str(value)
        env["FEWLABEL_ALLOW_MODEL_UPLOAD"] = "true" if self.allow_model_upload else "false"
        env["FEWLABEL_MAX_UPLOAD_MB"] = str(self.max_upload_mb)
        env["TMPDIR"] = str(self.temp_dir)  # MONAI Label writes uploads to tempfile's folder
        return env

    def check_port(self) -> None:
        """Raise :class:`FewLabelError` if ``host:port`` is taken (e.g. by a server still running)."""
        check_port_free(self.host, self.port)

    def start(self) -> None:
        """Start the server in its own process group; its output goes to :attr:`log_file`.

        On Linux the server gets SIGTERM when this process dies (killed, crashed), so it never
        outlives its launcher.
        """
        if self.process is not None and self.process.poll() is None:
            raise FewLabelError(f"the server is already running (pid {self.process.pid}).")
        check_exposure(self.host, self.auth_enable, self.auth_realm_uri)
        if not (self.env_dir / "bin" / "monailabel").is_file():
            raise FewLabelError(f"no MONAI Label in {self.env_dir}: build it with fewlabel.label_server.ensure_env.")
        self.check_port()
        self.studies.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self.temp_dir.is_dir():  # what a server killed earlier on this port left
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(self.command(), env=self.environment(), cwd=self.app_dir, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, preexec_fn=_parent_death_signal())

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's output."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def get(self, path: str, timeout: float = 10.0) -> Any:
        """``GET path`` on the server, decoded from JSON."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as r:  # noqa: S310 (loopback)
            return json.loads(r.read().decode())

    def wait_ready(self, timeout: float = 300.0) -> dict[str, Any]:
        """Wait until ``GET /info/`` answers; return it.

        Raises:
            FewLabelError: the server exited, or did not answer within ``timeout`` s (the message
                holds the end of its log).
        """
        if self.process is None:
            raise FewLabelError("the server was not started.")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise FewLabelError(f"the MONAI Label server exited with code {self.process.returncode} "
                                    f"(log {self.log_file}):\n{self.log_tail()}")
            try:
                return self.get("/info/", timeout=5.0)
            except urllib.error.HTTPError as e:
                if e.code == 401 and self.auth_enable:  # up; /info/ needs a login token
                    return {"models": {n: {"labels": "(GET /info/ with a login token)"} for n in self.bundles}}
                time.sleep(1.0)
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                time.sleep(1.0)
        raise FewLabelError(f"the MONAI Label server did not answer on {self.url} within {timeout:.0f} s "
                            f"(log {self.log_file}):\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server and every process it started (SIGTERM to the group, then SIGKILL)."""
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the group id is the server's pid
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            # the server has exited; its children (workers, a training run) may take a moment
            if _wait_group_gone(pgid, 5.0 if sig == signal.SIGTERM else 10.0):
                break
        self.process = None

    def __enter__(self) -> LabelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def check_exposure(host: str, auth_enable: bool, auth_realm_uri: str | None) -> None:
    """Refuse to serve beyond this machine without a login.

    Raises:
        FewLabelError: ``host`` is not a loopback address and MONAI Label's authentication is not
            enabled with a realm (``--auth_enable --auth_realm_uri``), or the realm is not a URL.
    """
    if auth_realm_uri is not None and not str(auth_realm_uri).startswith(("http://", "https://")):
        raise FewLabelError(f"--auth_realm_uri {auth_realm_uri!r} is not a URL; it is the OpenID Connect realm, "
                            "e.g. https://keycloak.example.org/realms/monailabel.")
    if is_loopback(host):
        return
    if not (auth_enable and auth_realm_uri):
        raise FewLabelError(
            f"--host {host} makes the server reachable from other machines, and without a login anyone who "
            "reaches it can read and change the studies. Keep --host 127.0.0.1 (this machine only), or give "
            "the team server MONAI Label's login: --auth_enable --auth_realm_uri "
            "https://<keycloak>/realms/<realm> [--auth_client_id <client>] (and --server_names <its DNS name>).")


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`FewLabelError` if a server already listens on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: only a listener conflicts
        try:
            s.bind((host or "0.0.0.0", int(port)))
        except OSError as e:
            raise FewLabelError(f"port {port} on {host} is in use ({e.strerror}): a MONAI Label server may still "
                                "be running there (stop it), or choose another --port.") from e


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send the child SIGTERM when the launcher dies (``PR_SET_PDEATHSIG``).

    ``prctl`` is looked up here, in the parent: the child between fork and exec only calls it.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies, which hold nothing but a pid, do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _wait_group_gone(pgid: int, seconds: float) -> bool:
    """Poll until no process of group ``pgid`` runs, for at most ``seconds``; True when it is gone."""
    deadline = time.monotonic() + seconds
    while _group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def client_instructions(url: str, info: dict[str, Any]) -> str:
    """How to connect 3D Slicer (CT volumes) or a 2D client (frames) to the server at ``url``."""
    models = info.get("models", {})
    lines = [f"MONAI Label is serving {len(models)} bundle(s) at {url}", ""]
    for name, m in models.items():
        labels = ", ".join(m.get("labels", {})) if isinstance(m.get("labels"), dict) else m.get("labels")
        lines.append(f"  {name}: labels {labels}")
        if str(m.get("description", "")).startswith("DEMO WEIGHTS"):
            lines.append(f"    {str(m['description']).split(': trained', 1)[0]} (trained by `make demo`)")
    trainers = sorted(info.get("trainers", {}))
    if trainers:
        lines.append(f"  training (saved labels + unlabelled images): {', '.join(trainers)}")
    lines += [
        "",
        "CT volumes (PolyCL) in 3D Slicer: install the MONAI Label extension (View > Extension Manager >",
        f"  MONAI Label), open the MONAI Label module, set the server to {url}, press the refresh button,",
        "  then 'Next Sample' and 'Run' under Auto Segmentation; edit the result with the Segment Editor and",
        "  'Submit Label' (saved under <studies>/labels/final/).",
        "Endoscopy / microscopy frames (2D bundles), over HTTP (README: 'Annotating with MONAI Label'):",
        f"  POST {url}/infer/<bundle>?image=<id> returns a PNG label map (values as listed);",
        f"  PUT {url}/datastore/label?image=<id>&tag=final saves a corrected map; POST {url}/train/<bundle>",
        "  runs the bundle's protocol on the saved labels and the unlabelled images. The API is browsable at "
        + f"{url}/docs",
        f"Which image next: POST {url}/activelearning/uncertainty_<bundle> gives the unlabelled image the bundle",
        "  is least sure about (also 'random', 'first'; in 3D Slicer: the strategy beside 'Next Sample').",
        "Stop the server with Ctrl-C.",
    ]
    return "\n".join(lines)
