"""Stopping the server's process group: a process that has exited but is not yet reaped is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from fewlabel.label_server.server import _group_alive, _wait_group_gone

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_an_exited_unreaped_group_leader_counts_as_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while _state(child.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _state(child.pid) == "Z"  # exited, still in the process table: killpg(pgid, 0) succeeds
        os.killpg(child.pid, 0)
        assert not _group_alive(child.pid)
        assert _wait_group_gone(child.pid, 1.0)
    finally:
        child.wait()


def test_a_running_group_is_alive_until_it_ends():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        assert _group_alive(child.pid)
        assert not _wait_group_gone(child.pid, 0.3)
    finally:
        child.kill()
        child.wait()
    assert not _group_alive(child.pid)
