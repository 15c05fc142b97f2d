"""What the MONAI Label server accepts, and from whom: names inside the studies folder, its own host.

Pure Python (no MONAI Label import), so the launcher and the tests use it as the server does:

- :func:`name_problem`: why an image id or label tag cannot name an entry of the studies folder
  (a path separator, ``..``, an absolute path, a control character), or ``None``;
- :func:`own_hosts` / :func:`own_origins`: the ``Host`` headers and web origins the server answers;
- :class:`RequestGuard`: an ASGI middleware put around MONAI Label's app (see
  :mod:`fewlabel.label_server.asgi`) that refuses a foreign ``Host`` (DNS rebinding), a foreign
  ``Origin`` (a web page the annotator opens) and, unless enabled, the endpoints that replace or
  delete the served weights (``PUT`` / ``DELETE /model/<m>``), each with its reason as JSON
  ``{"detail": ...}``;
- :func:`bundle_labels` / :func:`label_values` / :func:`label_values_problem`: the label values a
  served bundle writes (its metadata's ``channel_def``), those an uploaded label map holds, and why
  the latter fit no served bundle;
- :class:`TempSweeper`: an ASGI middleware that removes the temporary files a failed request left
  in the server's private temporary folder (MONAI Label removes an upload only after a response
  that succeeded);
- :class:`TaskHistory`: the server's tasks (``/train``) kept in a file, so a run the server did not
  see to its end shows as ``INTERRUPTED`` after a restart;
- :func:`die_with_server`: a task process the server started (training) is killed when the server dies;
- :data:`TRUSTED_IMAGE_PATH`: set by the server's ``/infer`` endpoint (to ``"upload"`` or
  ``"session"``) while it runs on a file it received itself, the only case where an image is a path,
  not an id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from contextvars import ContextVar
from typing import Any

__all__ = ["name_problem", "own_hosts", "own_origins", "RequestGuard", "TRUSTED_IMAGE_PATH", "LOOPBACK_NAMES",
           "bundle_labels", "label_values", "label_values_problem", "TempSweeper", "is_loopback",
           "die_with_server", "SERVER_PID_ENV", "TaskHistory"]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
# "upload" / "session" while /infer runs on a file it received itself, else ""
TRUSTED_IMAGE_PATH: ContextVar[str] = ContextVar("fewlabel_trusted_image_path", default="")
_MAX_NAME = 200
SERVER_PID_ENV = "FEWLABEL_SERVER_PID"  # set by the server (asgi.py), inherited by the tasks it starts
_TASK_MODULE = os.path.join("monailabel", "interfaces", "utils", "app.py")  # what MONAI Label's tasks run

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def name_problem(value: object, what: str = "image id") -> str | None:
    """Why ``value`` cannot be an image id or label tag of the studies folder, or ``None`` if it can.

    An id or tag is one plain name: the server joins it to the studies folder, so a separator,
    ``.``/``..``, an absolute path or a control character would name a file elsewhere.
    """
    if not isinstance(value, str) or not value:
        return f"{what} is empty; give the name of a file of the studies folder (without its extension)"
    shown = value if len(value) <= 80 else value[:80] + "..."
    if "/" in value or "\\" in value:
        return f"{what} {shown!r} has a path separator; ids and tags name entries of the studies folder only"
    if value in (".", ".."):
        return f"{what} {shown!r} names a folder, not an entry of the studies folder"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"{what} {shown!r} has a control character"
    if len(value) > _MAX_NAME:
        return f"{what} is {len(value)} characters long (at most {_MAX_NAME})"
    return None


def bundle_labels(metadata: Mapping[str, object]) -> dict[int, str]:
    """The label values a bundle writes, ``{value: name}``, from its ``metadata.json`` (already parsed).

    As MONAI Label reads them: the ``channel_def`` of the first output of ``network_data_format``
    (e.g. ``{0: "background", 1: "liver"}``); ``0`` (background) is always a value.

    Raises:
        ValueError: the metadata has no such ``channel_def``, or a key that is not a whole number.
    """
    try:
        outputs = metadata["network_data_format"]["outputs"]  # type: ignore[index]
        channel_def = next(iter(outputs.values()))["channel_def"]  # type: ignore[union-attr]
        labels = {int(k): str(v) for k, v in channel_def.items()}
    except (KeyError, TypeError, StopIteration, AttributeError, ValueError) as e:
        raise ValueError("metadata.json has no network_data_format.outputs.<first>.channel_def of "
                         f'{{"<label value>": "<name>"}} ({type(e).__name__}: {e})') from e
    return {0: "background", **labels}


def label_values(path: str | os.PathLike) -> list[int]:
    """The values of a label map file, sorted: a PNG/JPEG/TIFF frame (one channel) or a NIfTI volume.

    Returns:
        the distinct values, whole numbers ``>= 0``.

    Raises:
        ValueError: the file is not one channel of whole numbers (e.g. an RGB picture, fractions),
            or cannot be read.
    """
    import numpy as np

    name = os.fspath(path).lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            data = np.asarray(nib.load(os.fspath(path)).dataobj)
        else:
            from PIL import Image

            with Image.open(path) as im:
                data = np.asarray(im)
    except Exception as e:  # noqa: BLE001 (any reader failure means: not a label map)
        raise ValueError(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from e
    if data.ndim == 3 and not name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"it has {data.shape[-1]} channels; a label map is one channel of label values")
    values = np.unique(data)
    if values.dtype.kind == "f" and not np.all(np.isfinite(values) & (values == np.round(values))):
        raise ValueError("it holds fractions; a label map holds whole label values")
    if values.dtype.kind not in "biuf" or (values.size and values.min() < 0):
        raise ValueError("it holds negative or non-numeric values; label values are 0, 1, 2, ...")
    return [int(v) for v in values]


def label_values_problem(values: Sequence[int], allowed: Mapping[str, Mapping[int, str]]) -> str | None:
    """Why a label map with ``values`` fits none of the served bundles, or ``None`` if it fits one.

    Args:
        values: the label map's distinct values (:func:`label_values`).
        allowed: ``{bundle: {value: name}}`` (:func:`bundle_labels` of each served bundle); empty:
            nothing to check against, every map fits.
    """
    if not allowed or any(set(values) <= set(labels) for labels in allowed.values()):
        return None
    stray = sorted(set(values) - set().union(*(set(labels) for labels in allowed.values())))
    shown = stray or sorted(values)
    what = "are no label values of a served bundle" if stray else "are not the label values of one served bundle"
    listing = "; ".join(f"{bundle}: " + ", ".join(f"{v} {n}" for v, n in sorted(labels.items()))
                        for bundle, labels in sorted(allowed.items()))
    return (f"label values {shown[:20]}{' ...' if len(shown) > 20 else ''} {what}; a label map holds one "
            f"bundle's values (allowed: {listing})")


def own_hosts(port: int, host: str = "127.0.0.1", server_names: Sequence[str] = ()) -> list[str]:
    """The ``Host`` header values of requests meant for this server: its loopback names with ``port``
    (and the bound address, when it is a specific one), plus the bare names when ``port`` is 80.

    ``server_names`` (a team server's names or addresses, e.g. ``labels.example.org``, without port)
    are taken with ``port`` and bare (as a reverse proxy in front of the server sends them).
    """
    names = list(LOOPBACK_NAMES)
    if host and host not in ("0.0.0.0", "::", "", *LOOPBACK_NAMES, "::1"):
        names.append(f"[{host}]" if ":" in host else host)
    out = [f"{n}:{int(port)}" for n in names]
    out += names if int(port) == 80 else []
    for name in server_names:
        name = f"[{name}]" if ":" in name and not name.startswith("[") else name
        out += [n for n in (f"{name}:{int(port)}", name) if n not in out]
    return out


def own_origins(port: int, host: str = "127.0.0.1", server_names: Sequence[str] = ()) -> list[str]:
    """The web origins of the server's own pages (``http://<own host>``)."""
    return [f"http://{h}" for h in own_hosts(port, host, server_names)]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (``127.x.x.x``, ``::1``, ``localhost``)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any address


class RequestGuard:
    """ASGI middleware: answer only requests for this server, from this server's pages or named origins.

    Args:
        app: the ASGI app it protects (MONAI Label's FastAPI app).
        hosts: accepted ``Host`` header values (case-insensitive), e.g. :func:`own_hosts`.
        origins: accepted ``Origin`` header values; a request without ``Origin`` (curl, 3D Slicer,
            MONAI Label's client) is not a web page's and passes.
        allow_model_upload: let ``PUT`` / ``DELETE /model/<m>`` through (they replace or rename the
            served weights).
        max_upload_mb: the largest request body taken (``413`` above it); a body of unknown length
            (chunked) is refused with ``411``, so the limit cannot be stepped around.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], hosts: Iterable[str],
                 origins: Iterable[str], allow_model_upload: bool = False, max_upload_mb: float = 1024) -> None:
        self.app = app
        self.hosts = {h.lower() for h in hosts}
        self.origins = {o.lower().rstrip("/") for o in origins}
        self.allow_model_upload = allow_model_upload
        self.max_upload_bytes = int(max_upload_mb * 2**20)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """``(status, reason)`` when the request of ``scope`` must be refused, else ``None``."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if host.lower() not in self.hosts:
            return 421, (f"this server answers requests for {', '.join(sorted(self.hosts))} only, not Host "
                         f"{host!r} (a foreign name reaching it is DNS rebinding)")
        origin = headers.get("origin")
        if origin is not None and origin.lower().rstrip("/") not in self.origins:
            return 403, (f"requests from web pages of {origin!r} are refused; start the server with "
                         f"--cors_origins {origin} to allow that page (allowed: {', '.join(sorted(self.origins))})")
        length = headers.get("content-length")
        if length is None and "chunked" in headers.get("transfer-encoding", "").lower():
            return 411, "a request body of unknown length (chunked) is refused; send its Content-Length"
        if length is not None and (not length.strip().isdigit() or int(length) > self.max_upload_bytes):
            return 413, (f"the request body ({length} bytes) is larger than this server takes "
                         f"({self.max_upload_bytes // 2**20} MB; fewlabel label-server --max_upload_mb)")
        path = scope.get("path", "")
        if (scope["type"] == "http" and scope.get("method") in ("PUT", "DELETE") and path.startswith("/model/")
                and not self.allow_model_upload):
            return 403, (f"{scope['method']} {path} would replace or delete the served weights; it is off. Put "
                         "new weights in the bundle's models/ and restart fewlabel label-server (or start it "
                         "with --allow_model_upload)")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refused = self.refusal(scope)
        if refused is None:
            await self.app(scope, receive, send)
            return
        status, reason = refused
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"detail": reason}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class TempSweeper:
    """ASGI middleware: the temporary files a failed request left behind are removed.

    MONAI Label's endpoints write an upload (``/infer``, ``PUT /datastore/image``, ``/datastore/label``)
    and an inference result to ``tempfile.NamedTemporaryFile(...).name`` in the temporary folder and
    remove it in a background task, which runs only after a response that succeeded. The launcher
    gives the server a private temporary folder (``TMPDIR``); this middleware notes which plain files
    named ``tmp*`` appeared there while a request that failed (status >= 400, or an exception) was
    running, and removes them as soon as no request is running (a file that appeared meanwhile may
    belong to another request still at work).

    Args:
        app: the ASGI app it wraps.
        folder: the server's temporary folder (``tempfile.gettempdir()`` in the server).
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], folder: str | os.PathLike) -> None:
        self.app = app
        self.folder = os.fspath(folder)
        self.running = 0
        self.pending: set[str] = set()

    def listing(self) -> set[str]:
        """Names of the plain files ``tmp*`` in :attr:`folder`."""
        try:
            with os.scandir(self.folder) as it:
                return {e.name for e in it if e.name.startswith("tmp") and e.is_file(follow_symlinks=False)}
        except OSError:
            return set()

    def sweep(self) -> None:
        """Remove the files noted for removal."""
        for name in self.pending:
            try:
                os.remove(os.path.join(self.folder, name))
            except OSError:
                pass
        self.pending.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        before = self.listing()
        status = 500  # stays so when the app raises before it responds

        async def noting_send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.running += 1
        try:
            await self.app(scope, receive, noting_send)
        finally:
            self.running -= 1
            if status >= 400:
                self.pending |= self.listing() - before
            if self.pending and self.running == 0:
                self.sweep()


def die_with_server(argv0: str | None = None) -> bool:
    """In a task process of the server (``/train``, run as ``python -m monailabel.interfaces.utils.app``),
    ask Linux to SIGKILL this process when the server dies (``PR_SET_PDEATHSIG``).

    MONAI Label starts tasks with a plain ``subprocess.Popen``: when the server is killed (its
    launcher was killed, it crashed), a training run would go on alone, writing the served weights.
    fewlabel's app ``main.py`` calls this on import, which a task process does before it trains. If
    the server is already gone (the parent is no longer the server of ``$FEWLABEL_SERVER_PID``), the
    process exits at once.

    Args:
        argv0: the program path (default ``sys.argv[0]``); only MONAI Label's task module is affected.

    Returns:
        whether this process is such a task (and now dies with the server).
    """
    import signal
    import sys

    argv0 = sys.argv[0] if argv0 is None else argv0
    server = os.environ.get(SERVER_PID_ENV, "")
    if not (sys.platform.startswith("linux") and server.isdigit() and argv0.endswith(_TASK_MODULE)):
        return False
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != int(server):  # the server died before the request above
        os._exit(1)
    return True


class TaskHistory:
    """MONAI Label's task records (``/train/?all=true``), kept in a JSON file across server restarts.

    MONAI Label holds its tasks in memory only: after a restart ``/train/`` says there are none,
    and a run that was going when the server died is nowhere. The server records each task when it
    starts and when it ends (see :mod:`fewlabel.label_server.asgi`); at the next start,
    :meth:`restore` gives the records back with every task still ``SUBMITTED`` or ``RUNNING``
    marked ``INTERRUPTED``.

    Args:
        path: the JSON file (``<app_dir>/logs/tasks.json``); written atomically.
        keep: how many of the latest records are kept.
    """

    ENDED_UNSEEN = ("SUBMITTED", "RUNNING")

    def __init__(self, path: str | os.PathLike, keep: int = 100) -> None:
        self.path = os.fspath(path)
        self.keep = int(keep)

    def load(self) -> list[dict[str, Any]]:
        """The records, oldest first (none if the file is missing or unreadable)."""
        try:
            with open(self.path) as fh:
                records = json.load(fh)
        except (OSError, json.JSONDecodeError):
            return []
        return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []

    def save(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Write ``records`` (each a task dict with its ``method``; deques and other values as JSON can)."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(list(records)[-self.keep:], fh, indent=1,
                      default=lambda o: list(o) if isinstance(o, Iterable) else str(o))
        os.replace(tmp, self.path)

    def restore(self) -> list[dict[str, Any]]:
        """The records, with a task the previous server did not see end marked ``INTERRUPTED`` (and saved so)."""
        records = self.load()
        changed = False
        for r in records:
            if r.get("status") in self.ENDED_UNSEEN:
                r["status"] = "INTERRUPTED"
                details = r.get("details") if isinstance(r.get("details"), list) else []
                r["details"] = [*details, "the server stopped while this task ran (killed, crashed or restarted); "
                                "the served weights are the last ones saved whole before it"]
                changed = True
        if changed:
            self.save(records)
        return records
