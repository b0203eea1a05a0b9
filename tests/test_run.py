"""`make run`'s processes (the Procfile under honcho) start, serve, and all stop on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, _service_env, wait_until

pytestmark = [pytest.mark.kube, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_with(marker: str) -> list[int]:
    """Every live process whose environment carries the marker (our whole process tree, children included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                status = (entry / "status").read_text()
                if "State:\tZ" not in status:
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def _serves(port: int, path: str = "/healthz") -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_ctrl_c_stops_web_worker_and_watcher_and_leaves_no_process_behind(kubeconfig_path):
    marker = f"PREVIEWS_RUN_MARKER={uuid.uuid4().hex}"
    port = _free_port()
    name, value = marker.split("=")
    env = {**_service_env(kubeconfig_path), "PREVIEWS_WEB_PORT": str(port), name: value}
    log = open(ROOT / ".state" / "run-test.log", "wb")  # noqa: SIM115
    # honcho is started the way `make run` starts it, as the foreground job of a terminal would be:
    # in a process group of its own, which Ctrl-C signals as a whole.
    runner = subprocess.Popen([str(ROOT / ".venv" / "bin" / "honcho"), "--no-colour", "start", "-f", "Procfile"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: _serves(port), timeout=60, message="web to answer")
        def so_far() -> str:
            return (ROOT / ".state" / "run-test.log").read_text()

        wait_until(lambda: "running." in so_far() and "watching the cluster" in so_far(), timeout=90,
                   message="the qcluster to run its workers and the watcher to lead")
        started = len(_processes_with(marker))
        # web is gunicorn (the Procfile's `web:`), and it serves the apps' static files without collectstatic.
        assert "Starting gunicorn" in (ROOT / ".state" / "run-test.log").read_text()
        assert _serves(port, "/static/admin/css/base.css")

        os.killpg(runner.pid, signal.SIGINT)  # Ctrl-C
        runner.wait(timeout=30)
        wait_until(lambda: not _processes_with(marker), timeout=15, interval=0.2,
                   message="every process of make run to exit")
        print(f"{started} processes ran; none left after Ctrl-C")
    finally:
        for pid in _processes_with(marker):
            os.kill(pid, signal.SIGKILL)
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
        log.close()
    output = (ROOT / ".state" / "run-test.log").read_text()
    assert "Traceback" not in output, output[-3000:]
    # Each stopped on its own, within honcho's five seconds: none had to be killed.
    assert "SIGKILL" not in output, output[-3000:]
    for name in ("web", "worker", "watcher"):
        assert f"{name}.1 stopped" in output
    assert not _serves(port)
