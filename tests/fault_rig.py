"""A rig for fault tests (tests/test_faults.py) and the faults bench (bench/faults.py).

The service's own processes, as `make run` starts them (gunicorn, `manage.py qcluster`, `manage.py
watch_cluster`), on a Postgres server of the rig's own (scripts/postgres with its own port and state
directory), so that killing it kills nothing else, and on the local control plane. The driver (a test, the
bench) is plain Python: it talks HTTP to the web process as CI does, and reads the database with psycopg.

What it measures after a fault (`Rig.report`): when every preview of a repository was ready, the longest any
waited, generations applied more than once, runs handed out again, and previews overtaken: a preview that
waited for a slot while one that asked later was given one (sampled every SAMPLE_SECONDS by `Rig.watch_queue`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "previews" / "samples" / "shop.yaml"
SAMPLE_SECONDS = 0.5


def slow_manifests(delay: str) -> str:
    """The sample bundle with pods kwok makes ready only `delay` after they start."""
    import yaml

    docs = list(yaml.safe_load_all(SAMPLE.read_text()))
    docs[1]["spec"]["template"]["metadata"].setdefault("annotations", {})["previews.local/start-delay"] = delay
    return yaml.safe_dump_all(docs)
DEPLOY_LOCK = 0x70726576  # previews/locks.py DEPLOY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Report:
    """What became of one repository's previews after a fault."""

    previews: int
    ready: int
    all_ready_at: float | None  # time.time() when the last became ready
    longest_wait: float  # seconds from a preview's request to its ready
    applied_twice: int  # generations applied more than once
    handed_out_again: int  # "deploy requeued" events: lost runs or tasks given out again
    lost_slots: int  # of those, queued tasks that were lost while holding a slot (the slot went back to the queue)
    overtaken: int  # previews that waited for a slot while a newer one was given one
    slots_held_after: int  # slots still held once everything is ready (by the dead, if any)
    not_ready: list[str] = field(default_factory=list)

    def line(self, returned_at: float | None) -> str:
        after = (f"{self.all_ready_at - returned_at:.1f}s" if self.all_ready_at and returned_at else "-")
        return (f"ready {self.ready}/{self.previews}, all ready {after} after the return, longest wait "
                f"{self.longest_wait:.1f}s, applied twice {self.applied_twice}, handed out again "
                f"{self.handed_out_again} (slots of lost tasks {self.lost_slots}), overtaken {self.overtaken}, "
                f"slots held after {self.slots_held_after}")


class Rig:
    def __init__(self, kubeconfig: str, *, workers: int = 2, env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = ROOT / ".state" / f"faults-{uuid.uuid4().hex[:8]}"
        self.workdir.mkdir(parents=True)
        self.pg_port = free_port()
        self.web_port = free_port()
        self.db_url = f"postgres://previews@127.0.0.1:{self.pg_port}/previews"
        self.env = {
            **os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test", "DATABASE_URL": self.db_url,
            "KUBECONFIG": kubeconfig, "PREVIEWS_PG_PORT": str(self.pg_port), "PREVIEWS_STATE_DIR": str(self.workdir),
            "Q_WORKERS": str(workers), "GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "8", "LOG_LEVEL": "INFO",
            **(env or {})}
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.procs: dict[str, list[subprocess.Popen]] = {}
        self._overtaken: dict[int, set[int]] = {}
        self._sampling: dict[int, threading.Event] = {}

    # --- Postgres -----------------------------------------------------------------------------------

    def postgres_up(self, attempts: int = 40) -> None:
        """Start (or start again) the rig's Postgres; after a SIGKILL its old backends may need a moment to go."""
        for attempt in range(attempts):
            done = subprocess.run([str(ROOT / "scripts" / "postgres"), "up"], env=self.env, capture_output=True,
                                  text=True)
            if done.returncode == 0:
                return
            if attempt == attempts - 1:
                raise RuntimeError(f"the rig's Postgres did not start: {done.stderr[-2000:]}")
            time.sleep(0.5)

    def postgres_kill(self) -> None:
        """SIGKILL the postmaster, as a node loss would (its backends end when they see it gone)."""
        pid = int(self._pg_pidfile().read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)

    def _pg_pidfile(self) -> Path:
        for candidate in (self.workdir / "postgres" / "postmaster.pid",):
            if candidate.exists():
                return candidate
        raise RuntimeError("the rig's Postgres is not running")

    def sql(self, query: str, params: list | None = None) -> list[tuple]:
        with psycopg.connect(self.db_url, connect_timeout=3, autocommit=True) as conn:
            return conn.execute(query, params or []).fetchall()

    def manage(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {done.stderr[-3000:]}")
        return done.stdout

    def prepare(self) -> None:
        self.postgres_up()
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("ensure_schedules")

    def repository(self, prefix: str, max_live_previews: int = 20) -> tuple[str, str, int]:
        """A repository with the sample template and a namespace prefix of its own: (full name, token, id)."""
        code = ("from pathlib import Path; from previews.models import Repository; from previews import services; "
                f"r = Repository.objects.create(owner='faults', name='shop-{prefix}', "
                f"base_domain='preview.example.com', namespace_prefix='{prefix}', "
                f"manifest_template=Path('{SAMPLE}').read_text(), "
                f"image_name='localhost/previews-sample', max_live_previews={max_live_previews}, "
                # kwok's start-delay annotation is a controller's domain; a burst is many PUTs with manifests.
                "annotation_domains='previews.local', manifest_puts_per_minute=0); "
                f"print('RIG', r.pk, services.token_create(name='ci-{prefix}', repository=r)[1])")
        out = self.manage("shell", "-c", code)
        _, pk, token = next(line for line in out.splitlines() if line.startswith("RIG ")).split()
        return f"faults/shop-{prefix}", token, int(pk)

    # --- the service's processes ------------------------------------------------------------------

    def start(self, name: str) -> subprocess.Popen:
        commands = {
            "web": [str(Path(sys.executable).parent / "gunicorn"), "-c", "config/gunicorn.py", "--bind",
                    f"127.0.0.1:{self.web_port}", "--graceful-timeout", "4", "config.wsgi:application"],
            "qcluster": [sys.executable, "manage.py", "qcluster"],
            "watcher": [sys.executable, "manage.py", "watch_cluster"],
        }
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(commands[name], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.procs.setdefault(name, []).append(proc)
        if name == "web":
            self.wait(lambda: self.get("/healthz")[0] == 200, 60, "the web process to answer")
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 20) -> None:
        """SIGTERM to the process itself (qcluster hangs when its children get it too), then the group is killed."""
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        with_group(proc, signal.SIGKILL)
        proc.wait()

    def kill(self, proc: subprocess.Popen) -> None:
        with_group(proc, signal.SIGKILL)
        proc.wait()

    def close(self, keep_logs: bool = False) -> None:
        for stop in self._sampling.values():
            stop.set()
        for procs in self.procs.values():
            for proc in procs:
                self.stop(proc, timeout=10)
        subprocess.run([str(ROOT / "scripts" / "postgres"), "down"], env=self.env, capture_output=True)
        if not keep_logs:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def deploying_workers(self) -> dict[int, int]:
        """Preview id -> pid of the qcluster worker running its deploy right now: the process whose database
        session holds the preview's deploy lock (pg_locks -> the backend's client port -> the socket's owner)."""
        rows = self.sql("SELECT l.objid, a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid <> 0",
                        [DEPLOY_LOCK])
        if not rows:
            return {}
        inodes = _socket_inodes({port for _, port in rows if port})
        owners: dict[str, int] = {}
        for proc in self.procs.get("qcluster", []):
            for pid in _descendants(proc.pid):
                for inode in _process_sockets(pid):
                    owners[inode] = pid
        return {int(objid): owners[inodes[port]] for objid, port in rows
                if port in inodes and inodes[port] in owners}

    def kill_worker_mid_deploy(self) -> int | None:
        """SIGKILL one qcluster worker in the middle of a deploy; the preview id, or None when none was.

        The worker is first stopped (SIGSTOP) and killed only if it still holds a deploy lock; otherwise it
        is let go on (SIGCONT). A worker killed while it waits on django-q2's task queue would die holding
        the queue's reader lock (multiprocessing.Queue), and every other worker would then block on it for
        ever: that is django-q2's fault, not the one this kill is about.
        """
        for preview_id, pid in self.deploying_workers().items():
            os.kill(pid, signal.SIGSTOP)
            if self.deploying_workers().get(preview_id) == pid:
                os.kill(pid, signal.SIGKILL)
                return preview_id
            os.kill(pid, signal.SIGCONT)
        return None

    # --- HTTP, as CI --------------------------------------------------------------------------------

    def request(self, method: str, path: str, token: str = "", body: dict | None = None,
                timeout: float = 30) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.web_port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, _json(response.read(), response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, {**_json(exc.read(), exc.headers), "_content_type": exc.headers.get("Content-Type")}
        except (OSError, urllib.error.URLError):
            return 0, {}

    def get(self, path: str, token: str = "", timeout: float = 30) -> tuple[int, dict]:
        return self.request("GET", path, token, timeout=timeout)

    def put_preview(self, repo: str, token: str, pr: int, deadline: float, manifests: str = "") -> int:
        """PUT a preview as CI does, asking again on 503 or no answer (as a CI step retries) until `deadline`."""
        body = {"head_sha": f"{pr:040x}", "image": f"localhost/previews-sample:pr-{pr}"}
        if manifests:
            body["manifests"] = manifests
        while True:
            status, _ = self.request("PUT", f"/api/v1/repos/{repo}/previews/{pr}", token, body, timeout=20)
            if status in (200, 201) or time.monotonic() > deadline:
                return status
            time.sleep(0.5)

    def burst(self, repo: str, token: str, count: int, threads: int = 8, timeout: float = 120,
              manifests: str = "") -> list[int]:
        deadline = time.monotonic() + timeout
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda pr: self.put_preview(repo, token, pr, deadline, manifests),
                                 range(1, count + 1)))

    # --- what became of it --------------------------------------------------------------------------

    @staticmethod
    def wait(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.25):
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = predicate()
            except psycopg.OperationalError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)

    def statuses(self, repository_id: int) -> dict[str, int]:
        return dict(self.sql("SELECT status, count(*) FROM previews_preview WHERE repository_id = %s GROUP BY 1",
                             [repository_id]))

    def all_ready(self, repository_id: int, count: int) -> bool:
        return self.statuses(repository_id).get("ready", 0) == count

    def watch_queue(self, repository_id: int) -> threading.Thread:
        """Sample the repository's queue until `close` (or `stop_watching`): who waited while a newer one got a slot."""
        overtaken = self._overtaken.setdefault(repository_id, set())
        stop = self._sampling.setdefault(repository_id, threading.Event())

        def sample() -> None:
            # A preview's current wait for a slot began at the first sample that saw it waiting (a run in
            # between, lost or not, ends a wait); a newer preview given a slot after that overtook it.
            waiting_from: dict[int, object] = {}
            while not stop.wait(SAMPLE_SECONDS):
                try:
                    rows = self.sql(
                        "SELECT id, waiting_since, deploy_queued_at, now() FROM previews_preview WHERE "
                        "repository_id = %s AND desired = 'up' AND ((status = 'pending' AND deploy_queued_at IS "
                        "NULL AND (next_attempt_at IS NULL OR next_attempt_at <= now())) OR deploy_queued_at IS "
                        "NOT NULL)", [repository_id])
                except psycopg.Error:
                    continue
                waiting = {pk: since for pk, since, queued, _now in rows if queued is None and since is not None}
                waiting_from = {pk: waiting_from.get(pk, rows[0][3]) for pk in waiting}
                granted = [(since, queued) for pk, since, queued, _now in rows if queued is not None and since]
                for pk, since in waiting.items():
                    if any(g_since > since and g_queued > waiting_from[pk] for g_since, g_queued in granted):
                        overtaken.add(pk)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        return thread

    def stop_watching(self, repository_id: int) -> None:
        self._sampling[repository_id].set()

    def report(self, repository_id: int) -> Report:
        rows = self.sql("SELECT namespace, status, extract(epoch FROM ready_at), extract(epoch FROM ready_at - "
                        "created_at) FROM previews_preview WHERE repository_id = %s", [repository_id])
        twice = self.sql("SELECT count(*) FROM (SELECT e.preview_id, e.generation FROM previews_previewevent e "
                         "JOIN previews_preview p ON p.id = e.preview_id WHERE p.repository_id = %s AND "
                         "e.action = 'applied' GROUP BY 1, 2 HAVING count(*) > 1) t", [repository_id])[0][0]
        again, lost_slots = self.sql(
            "SELECT count(*), count(*) FILTER (WHERE e.details->>'lost' = 'queued') FROM previews_previewevent e "
            "JOIN previews_preview p ON p.id = e.preview_id WHERE p.repository_id = %s AND "
            "e.action = 'deploy requeued'", [repository_id])[0]
        held = self.sql("SELECT count(*) FROM previews_preview WHERE repository_id = %s AND deploy_queued_at IS NOT "
                        "NULL", [repository_id])[0][0]
        ready = [r for r in rows if r[1] == "ready"]
        return Report(previews=len(rows), ready=len(ready),
                      all_ready_at=float(max(r[2] for r in ready)) if len(ready) == len(rows) and rows else None,
                      longest_wait=float(max((r[3] for r in ready), default=0)), applied_twice=twice,
                      handed_out_again=again, lost_slots=lost_slots,
                      overtaken=len(self._overtaken.get(repository_id, ())),
                      slots_held_after=held, not_ready=[f"{r[0]}: {r[1]}" for r in rows if r[1] != "ready"])


def kill_apiserver(pidfile: str | Path, down_seconds: float) -> subprocess.Popen:
    """SIGKILL this checkout's kube-apiserver, wait `down_seconds`, and start `scripts/kube up` (returned)."""
    os.kill(int(Path(pidfile).read_text()), signal.SIGKILL)
    time.sleep(down_seconds)
    return subprocess.Popen([str(ROOT / "scripts" / "kube"), "up"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def api_answers(kube_api) -> bool:
    """Whether the API server answers a version request within 2 s."""
    from kubernetes import client

    try:
        client.VersionApi(kube_api).get_code(_request_timeout=2)
    except Exception:  # refused, reset, not ready yet: not back
        return False
    return True


def with_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # its own session (start_new_session): only its processes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _status(pid)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def _socket_inodes(ports: set[int]) -> dict[int, str]:
    """Local TCP port -> socket inode, for the given ports (IPv4 and IPv6 tables)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if port in ports:
                found[port] = fields[9]
    return found


def _process_sockets(pid: int) -> list[str]:
    out = []
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                out.append(target[8:-1])
    except OSError:
        pass
    return out


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (qcluster's workers are its grandchildren, under the Sentinel)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        out.extend(frontier)
    return out


def _json(raw: bytes, headers) -> dict:
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        return {}
