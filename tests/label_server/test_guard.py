"""fewlabel.label_server.guard: which names, hosts and origins the MONAI Label server accepts.

The live server is probed in test_label_server.py; these drive the same checks without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import json

import pytest

from fewlabel.label_server.guard import (
    RequestGuard,
    TaskHistory,
    TempSweeper,
    bundle_labels,
    die_with_server,
    label_values,
    label_values_problem,
    name_problem,
    own_hosts,
    own_origins,
)


@pytest.mark.parametrize("name", ["frame0", "case_01.v2", "Patient 7", "é-ct"])
def test_plain_names_are_ids(name):
    assert name_problem(name) is None


@pytest.mark.parametrize(("name", "reason"), [
    ("../outside/x", "path separator"), ("/etc/passwd", "path separator"), ("..", "names a folder"),
    (".", "names a folder"), ("a\\b", "path separator"), ("", "empty"), ("a\x00b", "control character"),
    ("x" * 300, "at most"), (None, "empty"),
])
def test_names_leading_elsewhere_are_refused_with_the_reason(name, reason):
    assert reason in name_problem(name, "label tag")


def test_own_hosts_are_the_loopback_names_with_the_port():
    assert own_hosts(8123) == ["127.0.0.1:8123", "localhost:8123", "[::1]:8123"]
    assert "10.0.0.5:8123" in own_hosts(8123, "10.0.0.5") and "[fe80::1]:8123" in own_hosts(8123, "fe80::1")
    assert "localhost" in own_hosts(80) and own_origins(8123)[0] == "http://127.0.0.1:8123"


def _call(guard: RequestGuard, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(guard(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)


async def _app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b'{"served": true}'})


def test_guard_serves_its_own_host_and_origins_only():
    guard = RequestGuard(_app, own_hosts(8123), own_origins(8123) + ["http://localhost:3000"])
    own = {"Host": "127.0.0.1:8123"}
    assert _call(guard, "GET", "/info/", own) == (200, {"served": True})
    assert _call(guard, "GET", "/info/", {"Host": "LOCALHOST:8123", "Origin": "http://localhost:3000/"})[0] == 200
    assert _call(guard, "POST", "/infer/m", {**own, "Origin": "http://localhost:8123"})[0] == 200
    status, body = _call(guard, "GET", "/info/", {"Host": "evil.example:8123"})
    assert status == 421 and "DNS rebinding" in body["detail"]
    assert _call(guard, "GET", "/info/", {})[0] == 421  # no Host at all
    status, body = _call(guard, "OPTIONS", "/datastore/image", {**own, "Origin": "http://evil.example"})
    assert status == 403 and "--cors_origins http://evil.example" in body["detail"]


def test_guard_keeps_the_served_weights_unless_uploads_are_allowed():
    own = {"Host": "localhost:8123"}
    guard = RequestGuard(_app, own_hosts(8123), own_origins(8123))
    for method in ("PUT", "DELETE"):
        status, body = _call(guard, method, "/model/some_bundle", own)
        assert status == 403 and "served weights" in body["detail"]
    assert _call(guard, "GET", "/model/some_bundle", own)[0] == 200
    allowing = RequestGuard(_app, own_hosts(8123), own_origins(8123), allow_model_upload=True)
    assert _call(allowing, "PUT", "/model/some_bundle", own)[0] == 200


def test_guard_refuses_bodies_over_the_limit_or_of_unknown_length():
    guard = RequestGuard(_app, own_hosts(8123), own_origins(8123), max_upload_mb=1)
    own = {"Host": "localhost:8123"}
    assert _call(guard, "PUT", "/datastore/image", {**own, "Content-Length": str(2**20)})[0] == 200
    status, body = _call(guard, "PUT", "/datastore/image", {**own, "Content-Length": str(2**20 + 1)})
    assert status == 413 and "1 MB" in body["detail"]
    assert _call(guard, "PUT", "/datastore/image", {**own, "Content-Length": "-5"})[0] == 413
    status, body = _call(guard, "PUT", "/datastore/image", {**own, "Transfer-Encoding": "chunked"})
    assert status == 411 and "Content-Length" in body["detail"]


SERVED = {"medsass_binary_segmentation": {0: "background", 1: "foreground"},
          "slippa_liver_landmark_segmentation": {0: "background", 1: "silhouette", 2: "ridge", 3: "ligament"}}


def test_bundle_labels_are_its_channel_def_with_background():
    meta = {"network_data_format": {"outputs": {"pred": {"channel_def": {"1": "liver"}}}}}
    assert bundle_labels(meta) == {0: "background", 1: "liver"}
    with pytest.raises(ValueError, match="channel_def"):
        bundle_labels({"network_data_format": {"outputs": {"pred": {}}}})


def test_label_maps_hold_the_values_of_one_served_bundle():
    assert label_values_problem([0, 1], SERVED) is None
    assert label_values_problem([0, 2, 3], SERVED) is None
    assert label_values_problem([0, 9], {}) is None  # nothing served to check against
    problem = label_values_problem([0, 1, 9, 200], SERVED)
    assert "[9, 200] are no label values of a served bundle" in problem
    assert "medsass_binary_segmentation: 0 background, 1 foreground" in problem and "3 ligament" in problem


def test_label_values_are_read_from_the_file(tmp_path):
    import nibabel as nib
    import numpy as np
    from PIL import Image

    label = np.zeros((12, 20), np.uint8)
    label[2:5, 3:9] = 3
    Image.fromarray(label).save(tmp_path / "l.png")
    assert label_values(tmp_path / "l.png") == [0, 3]
    Image.fromarray(np.zeros((12, 20, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="3 channels"):
        label_values(tmp_path / "rgb.png")
    nib.save(nib.Nifti1Image(np.full((4, 4, 2), 0.5, np.float32), np.eye(4)), tmp_path / "f.nii.gz")
    with pytest.raises(ValueError, match="fractions"):
        label_values(tmp_path / "f.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 2), np.float32), np.eye(4)), tmp_path / "w.nii.gz")
    assert label_values(tmp_path / "w.nii.gz") == [1]
    (tmp_path / "t.png").write_text("text")
    with pytest.raises(ValueError, match="UnidentifiedImageError"):
        label_values(tmp_path / "t.png")


def test_sweeper_removes_what_failed_requests_left_once_no_request_runs(tmp_path):
    """As MONAI Label's endpoints do: the upload is written to the temporary folder, then the request fails."""
    release = asyncio.Event()

    async def upload_app(scope, receive, send):
        name = scope["path"].strip("/")
        (tmp_path / f"tmp{name}.png").write_bytes(b"upload")
        if name.startswith("slow"):
            await release.wait()
        status = 422 if name.startswith(("bad", "slow")) else 200
        if name.startswith("raise"):
            raise RuntimeError("the endpoint failed")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sweeper = TempSweeper(upload_app, tmp_path)
    (tmp_path / "tmpdir_of_training").mkdir()
    (tmp_path / "keep.txt").write_text("not a temporary upload")

    async def call(path):
        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(message):
            pass

        with contextlib.suppress(RuntimeError):
            await sweeper({"type": "http", "method": "PUT", "path": path, "headers": []}, receive, send)

    async def scenario():
        await call("/ok")  # a success: MONAI Label's own background task removes it, not the sweeper
        assert (tmp_path / "tmpok.png").exists()
        await call("/bad")
        assert not (tmp_path / "tmpbad.png").exists()
        await call("/raise")
        assert not (tmp_path / "tmpraise.png").exists()
        slow = asyncio.create_task(call("/slow"))  # still at work while another request fails
        await asyncio.sleep(0.01)
        await call("/bad2")
        assert (tmp_path / "tmpslow.png").exists() and (tmp_path / "tmpbad2.png").exists()
        release.set()
        await slow
        assert not (tmp_path / "tmpslow.png").exists() and not (tmp_path / "tmpbad2.png").exists()

    asyncio.run(scenario())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "tmpdir_of_training", "tmpok.png"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] != "Z"  # a zombie is dead
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_training_task_dies_with_the_server(tmp_path):
    """As MONAI Label starts /train: the server Popens ``python -m monailabel.interfaces.utils.app``, whose
    import of fewlabel's main.py calls die_with_server; the server is then killed outright."""
    task = tmp_path / "monailabel" / "interfaces" / "utils" / "app.py"
    task.parent.mkdir(parents=True)
    task.write_text("import time\nfrom fewlabel.label_server.guard import die_with_server\n"
                    "print(die_with_server(), flush=True)\ntime.sleep(300)\n")
    server_code = ("import os, subprocess, sys, time; os.environ['FEWLABEL_SERVER_PID'] = str(os.getpid()); "
                   f"p = subprocess.Popen([sys.executable, {os.fspath(task)!r}]); print(p.pid, flush=True); "
                   "time.sleep(300)")
    server = subprocess.Popen([sys.executable, "-c", server_code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    child = int(server.stdout.readline())
    try:
        assert server.stdout.readline().strip() == "True"  # the task asked to die with the server
        assert _alive(child)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.2)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the training task outlived the server"
    assert die_with_server("/usr/bin/other_program") is False  # nothing else is affected


def test_a_task_the_server_died_during_shows_as_interrupted_after_a_restart(tmp_path):
    from collections import deque

    history = TaskHistory(tmp_path / "logs" / "tasks.json")
    assert history.restore() == []  # first start: no file
    done = {"id": "a", "method": "train", "status": "DONE", "details": deque(["epoch 1/1"])}
    running = {"id": "b", "method": "train", "status": "RUNNING", "details": deque(["epoch 3/50"])}
    history.save([done, running])  # what the server recorded before it was killed
    restored = TaskHistory(tmp_path / "logs" / "tasks.json").restore()  # the next server's start
    assert [(t["id"], t["status"]) for t in restored] == [("a", "DONE"), ("b", "INTERRUPTED")]
    assert restored[1]["details"][0] == "epoch 3/50" and "server stopped" in restored[1]["details"][-1]
    assert [t["status"] for t in history.load()] == ["DONE", "INTERRUPTED"]  # saved so
    (tmp_path / "logs" / "tasks.json").write_text("{half")
    assert history.restore() == []  # an unreadable file is no history, not a failed start
