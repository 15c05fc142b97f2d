"""The ASGI app ``fewlabel label-server`` runs: MONAI Label's, guarded (MONAI Label env only).

``monailabel start_server --uvicorn_app fewlabel.label_server.asgi:app`` serves this instead of
``monailabel.app:app``. It is MONAI Label 0.8.5's FastAPI app with:

- :class:`~fewlabel.label_server.guard.RequestGuard` around it: only the server's own ``Host``
  names, only its own pages' origins and those the user named (``--cors_origins``), and no
  ``PUT`` / ``DELETE /model/<m>`` unless ``--allow_model_upload``;
- CORS for exactly those origins (MONAI Label allows every origin, with credentials, unless
  ``MONAI_LABEL_CORS_ORIGINS`` is set, and that setting stores origins with a trailing ``/`` that
  never equals a browser's ``Origin``);
- ``PUT /model/<m>``, when allowed, checked: the upload must load with ``weights_only=True`` and
  fit the bundle's network strictly (else ``422``, served weights unchanged), and replaces the
  served weights atomically;
- MONAI Label's own errors (unknown model, image or label; bad input) answered 404 / 422 with
  their message instead of a bare 500;
- :class:`~fewlabel.label_server.guard.TempSweeper` inside it: what a failed upload left in the
  server's temporary folder is removed;
- tasks (``/train``) recorded in ``<app_dir>/logs/tasks.json``
  (:class:`~fewlabel.label_server.guard.TaskHistory`): after a restart, ``/train/?all=true`` lists
  them, a run the server died during as ``INTERRUPTED``;
- ``/infer``'s query ``image`` and its ``params`` checked: an image is an id of the studies folder;
  a path is taken only for the file the endpoint itself received (see
  :class:`~fewlabel.label_server.studies.StudiesOnlyApp`).

Settings come from the environment the launcher (:class:`~fewlabel.label_server.server.LabelServer`)
gives the server: ``FEWLABEL_LABEL_HOSTS`` and ``FEWLABEL_LABEL_ORIGINS`` (JSON lists) and
``FEWLABEL_ALLOW_MODEL_UPLOAD`` (``true``/``false``) and ``FEWLABEL_MAX_UPLOAD_MB``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import monailabel.endpoints.infer as _infer_endpoint
import monailabel.endpoints.model as _model_endpoint
import monailabel.utils.async_tasks.utils as _async_tasks
from fastapi import HTTPException
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from monailabel.app import app as monailabel_app
from monailabel.config import settings
from monailabel.interfaces.exception import (
    ImageNotFoundException,
    LabelNotFoundException,
    MONAILabelError,
    MONAILabelException,
)

from fewlabel.label_server.guard import (
    SERVER_PID_ENV,
    TRUSTED_IMAGE_PATH,
    RequestGuard,
    TaskHistory,
    TempSweeper,
    name_problem,
    own_hosts,
    own_origins,
)

__all__ = ["app"]

_PARAMS_NOT_TAKEN = ("image", "label", "session")


def _env_list(key: str, default: list[str]) -> list[str]:
    value = os.environ.get(key)
    return [str(v) for v in json.loads(value)] if value else default


_stock_run_inference = _infer_endpoint.run_inference


def run_inference(background_tasks: Any, model: str, image: str = "", session_id: str = "", params: str = "{}",
                  file: Any = None, label: Any = None, output: Any = None) -> Any:
    """MONAI Label's ``/infer`` with the image named by id only (or uploaded); see the module doc."""
    if image:
        problem = name_problem(image, "image id")
        if problem:
            raise HTTPException(status_code=400, detail=problem)
    try:
        given = json.loads(params) if params else {}
    except json.JSONDecodeError as e:
        raise HTTPException(status_code=422, detail=f"params is not JSON: {e}") from e
    taken = sorted(k for k in _PARAMS_NOT_TAKEN if isinstance(given, dict) and k in given)
    if taken:
        raise HTTPException(status_code=400, detail=f"params may not set {taken}: name the image with ?image=<id> "
                            "or upload it as 'file'")
    token = TRUSTED_IMAGE_PATH.set("session" if session_id else "upload" if file else "")
    try:
        return _stock_run_inference(background_tasks, model, image, session_id, params, file, label, output)
    finally:
        TRUSTED_IMAGE_PATH.reset(token)


_infer_endpoint.run_inference = run_inference  # api_run_inference looks it up in its module at each request


def update_model(background_tasks: Any, model: str, file: Any) -> dict[str, Any]:
    """``PUT /model/<m>`` (with ``--allow_model_upload``): the upload becomes the served weights only if
    it loads with ``weights_only=True`` and fits the network strictly; it replaces them atomically."""
    from monailabel.interfaces.utils.app import app_instance
    from monailabel.utils.others.generic import file_checksum

    from fewlabel.errors import FewLabelError
    from fewlabel.label_server.app import ServedBundle, check_weights

    target = app_instance().model_file(model, validate=False)
    if not target:
        raise HTTPException(status_code=404, detail=f"no model {model!r} is served")
    target = Path(target)
    folder = target.parent.parent  # <app>/model/<bundle>/models/model.pt
    upload = target.with_name(f".upload-{os.getpid()}-{uuid.uuid4().hex}{target.suffix}")
    try:
        with open(upload, "wb") as out:
            shutil.copyfileobj(file.file, out)
        try:
            check_weights(ServedBundle(name=model, source=folder, folder=folder, trains=False), upload)
        except FewLabelError as e:
            raise HTTPException(status_code=422, detail=f"the upload is not {model}'s weights; the served "
                                f"weights are unchanged: {e}") from e
        os.replace(upload, target)
    finally:
        upload.unlink(missing_ok=True)
    return {"checksum": file_checksum(os.fspath(target)), "modified_time": int(target.stat().st_mtime)}


_model_endpoint.update_model = update_model  # api_update_model looks it up in its module at each request


_history = TaskHistory(os.path.join(settings.MONAI_LABEL_APP_DIR or os.getcwd(), "logs", "tasks.json"))
_history_lock = threading.Lock()
for _task in _history.restore():
    _async_tasks.background_tasks.setdefault(str(_task.get("method", "train")), []).append(_task)


def _record_tasks() -> None:
    with _history_lock:
        _history.save([{**t, "method": m} for m, ts in list(_async_tasks.background_tasks.items()) for t in list(ts)])


_stock_task_func = _async_tasks._task_func


def _task_func(task: dict[str, Any], method: str, callback: Any = None) -> None:
    """MONAI Label's task runner, with the task recorded as running before and as ended after."""
    task["status"] = "RUNNING"
    _record_tasks()
    try:
        _stock_task_func(task, method, callback)
    finally:
        if task.get("status") == "RUNNING":  # the runner itself failed
            task["status"] = "ERROR"
        _record_tasks()


_async_tasks._task_func = _task_func  # run_background_task looks it up in its module at each task


async def _monailabel_error(request: Any, exc: MONAILabelException) -> JSONResponse:
    """MONAI Label's own errors as 404 (unknown image, label or model) / 422 (bad input) with their message,
    not a bare 500 "Internal Server Error"."""
    msg = str(getattr(exc, "msg", exc))
    if isinstance(exc, (ImageNotFoundException, LabelNotFoundException)) or "no model" in msg.lower():
        status = 404
    elif getattr(exc, "error", None) == MONAILabelError.INVALID_INPUT:
        status = 422
    else:
        status = 500
    return JSONResponse({"detail": msg}, status_code=status)


monailabel_app.add_exception_handler(MONAILabelException, _monailabel_error)

os.environ[SERVER_PID_ENV] = str(os.getpid())  # the tasks this server starts die with it (die_with_server)
_port = int(settings.MONAI_LABEL_SERVER_PORT)
_origins = _env_list("FEWLABEL_LABEL_ORIGINS", own_origins(_port))
monailabel_app.user_middleware = [m for m in monailabel_app.user_middleware if m.cls is not CORSMiddleware]
monailabel_app.add_middleware(CORSMiddleware, allow_origins=_origins, allow_credentials=True,
                              allow_methods=["*"], allow_headers=["*"])

# the launcher's private TMPDIR: what failed uploads leave there is removed
app = RequestGuard(TempSweeper(monailabel_app, tempfile.gettempdir()),
                   hosts=_env_list("FEWLABEL_LABEL_HOSTS", own_hosts(_port)), origins=_origins,
                   allow_model_upload=os.environ.get("FEWLABEL_ALLOW_MODEL_UPLOAD", "false").lower() == "true",
                   max_upload_mb=float(os.environ.get("FEWLABEL_MAX_UPLOAD_MB", "1024")))
# MONAI Label printed "Allow Origins: ['*']" on import; what holds is this
print(f"fewlabel: answering Host {sorted(app.hosts)}; web origins {_origins}; model upload "
      f"{'on' if app.allow_model_upload else 'off'}; uploads up to {app.max_upload_bytes // 2**20} MB", flush=True)
