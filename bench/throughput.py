"""Benchmark: N previews requested at once through the real API, worker and watcher; then all deleted at once.

    cd /work/main && KUBECONFIG=$(scripts/kube kubeconfig) \\
        .venv/bin/python bench/throughput.py [--previews 200] [--delay 10] [--skip-teardown] [--json]

Three real processes, each in its own session, against the database `previews_bench` (bench/common.py) and
the cluster of KUBECONFIG:

* gunicorn serving config.wsgi (4 gthread workers x 4 threads, as bench/api_load.py; DEBUG off);
* `manage.py qcluster` with Q_WORKERS=2 (the django-q2 worker, ORM broker in `previews_bench`);
* `manage.py watch_cluster` (the cluster watcher).

A repository `bench/tp<hex>` (namespace prefix `tp<hex>`, template previews/samples/shop.yaml with its pod
template annotated `previews.local/start-delay: "<delay>s"`) and an API token scoped to it are created through
the services. Then:

1. deploy: N PUTs from --clients threads at once (one PR each); until every preview is ready (or failed):
   time to all ready, create->ready p50/p95, worker busy time per deploy (from the events and django-q's
   task rows), the watcher's RSS and CPU, and then the watcher's CPU over --idle-seconds of idleness;
2. teardown (unless --skip-teardown): N DELETEs at once; time until every teardown task returned and until
   every namespace is gone (status deleted), beside `kubectl delete namespace --wait=false` of N namespaces
   holding a ConfigMap each. With --kubectl-content preview, kubectl's namespaces hold a preview's objects
   instead, created by 4 kubectl processes: the time until all their Deployments are complete is the floor
   of the deploy phase on this machine (the same objects, the same cluster, no service).

Bounded: every wait has a deadline (--phase-timeout, and --max-seconds for the whole run). Cleanup, also after an
error, Ctrl-C or SIGTERM: the three processes are stopped (one SIGTERM each, SIGKILL of their own process group
if they do not exit), the run's queued tasks dropped, every namespace `tp<hex>-*` deleted (only those: the
prefix is checked to be unused first), and the run's rows deleted from `previews_bench`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for `bench.common`

from bench.api_load import cpu_snapshot, free_port, gunicorn_command, percentile, tail
from bench.common import BENCH_DB, ROOT, cpu_model, log, setup_django
from bench.provision import kubeconfig_path, kubectl, namespaces_with_prefix, server_version

Q_WORKERS = 2
START_DELAY_ANNOTATION = "previews.local/start-delay"
KUBECTL_BENCH_LABEL = "previews.local/throughput-bench"
SAMPLE_TEMPLATE = ROOT / "previews" / "samples" / "shop.yaml"
REQUEST_TIMEOUT = 60.0  # seconds for one API request before it counts as failed
STARTUP_TIMEOUT = 90.0  # seconds each process may take to be up (gunicorn answering, watcher synced, worker working)
POLL = 0.5  # seconds between database polls while waiting
CLEANUP_TIMEOUT = 300.0  # seconds to wait for the run's namespaces to be gone at the end
STOP_GRACE = {"gunicorn": 30.0, "qcluster": 45.0, "watcher": 20.0}  # seconds after the one SIGTERM
TARGETS = {"ready_200_10s": 40.0, "ready_1000_0s": 120.0, "busy_per_deploy": 1.5, "watcher_rss_mb": 200.0}


class GiveUp(Exception):
    """A phase did not finish within its deadline; the run reports what it has and cleans up."""


class Interrupted(GiveUp):
    """Ctrl-C while waiting for a phase: the run reports what it has, skips the rest and cleans up."""


# --- small helpers ---------------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "mean": None, "max": None}
    ordered = sorted(values)
    return {"n": len(ordered), "p50": percentile(ordered, 50), "p95": percentile(ordered, 95),
            "mean": statistics.fmean(ordered), "max": ordered[-1]}


def fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def fmt_stats(s: dict, digits: int = 2) -> str:
    if not s.get("n"):
        return "-"
    return (f"p50 {fmt(s['p50'], digits)} / p95 {fmt(s['p95'], digits)} / mean {fmt(s['mean'], digits)} / "
            f"max {fmt(s['max'], digits)} s (n={s['n']})")


def read_proc_status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def read_proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of the process (all its threads), in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # fields from 3 (state) on; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LoadWatch:
    """The machine's load average, sampled whenever the benchmark polls; keeps the highest 1-minute value."""

    def __init__(self) -> None:
        self.at_start = os.getloadavg()
        self.highest = self.at_start[0]

    def sample(self) -> tuple[float, float, float]:
        load = os.getloadavg()
        self.highest = max(self.highest, load[0])
        return load


# --- processes ---------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid


def service_env(database_url: str, secret_key: str, log_level: str) -> dict[str, str]:
    env = dict(os.environ)
    # The queue must be the ORM one in previews_bench; nothing may talk to GitHub.
    for name in ("REDIS_URL", "GITHUB_TOKEN", "GITHUB_APP_ID", "GITHUB_APP_INSTALLATION_ID",
                 "GITHUB_APP_PRIVATE_KEY", "GITHUB_WEBHOOK_SECRET"):
        env.pop(name, None)
    env.update({
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secret_key,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "Q_WORKERS": str(Q_WORKERS),
        "LOG_LEVEL": log_level,
        "LOG_FORMAT": "plain",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
    })
    return env


def start_process(name: str, command: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    log(f"started {name}: pid {popen.pid}")
    return Proc(name, popen, log_path)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process(proc: Proc) -> str:
    """One SIGTERM to the process (a second one can deadlock qcluster's shutdown); SIGKILL to its own
    process group (its session, started by us) only if it has not exited within the grace time, or if
    children were left behind."""
    grace = STOP_GRACE.get(proc.name, 20.0)
    outcome = "already exited"
    if proc.popen.poll() is None:
        proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(timeout=grace)
            outcome = f"exited after SIGTERM ({proc.popen.returncode})"
        except subprocess.TimeoutExpired:
            outcome = f"did not exit {grace:.0f}s after SIGTERM; SIGKILL to its process group"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait(timeout=10)
    deadline = time.monotonic() + 5
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
        outcome += "; children were left behind: SIGKILL to its process group"
    log(f"stopped {proc.name} (pid {proc.pid}): {outcome}")
    return outcome


# --- HTTP clients ------------------------------------------------------------------------------------


@dataclass
class Call:
    pr: int
    sent: float  # time.time()
    done: float
    status: int  # 0: transport error
    detail: str = ""


def http_calls(port: int, method: str, requests: list[tuple[int, str, bytes | None]], headers: dict[str, str],
               clients: int) -> list[Call]:
    """Send every request from `clients` threads at once (keep-alive connection per thread)."""
    local = threading.local()

    def one(item: tuple[int, str, bytes | None]) -> Call:
        pr, path, body = item
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        sent = time.time()
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            local.conn = None
            return Call(pr, sent, time.time(), 0, f"{exc.__class__.__name__}: {exc}")
        detail = "" if 200 <= status < 300 else data[:300].decode(errors="replace")
        return Call(pr, sent, time.time(), status, detail)

    with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="client") as pool:
        return list(pool.map(one, requests))


def wait_http_up(proc: Proc, port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.popen.returncode} while starting:\n{tail(proc.log_path)}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer /healthz within {STARTUP_TIMEOUT:.0f}s:\n{tail(proc.log_path)}")


# --- setup checks -----------------------------------------------------------------------------------


QUANTITY_SUFFIXES = (("Ki", 1024), ("Mi", 1024**2), ("Gi", 1024**3), ("Ti", 1024**4), ("m", 0.001),
                     ("k", 1000), ("M", 1000**2), ("G", 1000**3), ("T", 1000**4))


def quantity(text: str) -> float:
    """A Kubernetes quantity such as "3k", "50m", "64Mi" or "110" as a number."""
    text = str(text).strip()
    for suffix, factor in QUANTITY_SUFFIXES:
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def node_room() -> dict[str, float | None]:
    """What the nodes can hold (allocatable pods, cpu, memory summed) and how many pods exist; None: unknown."""
    room: dict[str, float | None] = {"pods": None, "cpu": None, "memory": None, "pods_used": None}
    result = kubectl("get", "nodes", "-o", "json", timeout=60)
    if result.returncode == 0:
        try:
            nodes = json.loads(result.stdout)["items"]
            for key in ("pods", "cpu", "memory"):
                room[key] = sum(quantity(n["status"].get("allocatable", {}).get(key, "0")) for n in nodes)
        except (ValueError, KeyError, TypeError):
            pass
    result = kubectl("get", "pods", "--all-namespaces", "-o", "name", timeout=60)
    if result.returncode == 0:
        room["pods_used"] = len(result.stdout.split())
    return room


def check_bench_database(prefix_hint: str) -> None:
    """Refuse to start a worker on previews_bench if it would run someone else's work there."""
    from django_q.models import OrmQ, Schedule

    schedules = [f"{s.name} ({s.func})" for s in Schedule.objects.all() if s.func != "previews.tasks.sweep"]
    if schedules:
        raise SystemExit(f"{BENCH_DB} holds django-q schedules that this run's qcluster would execute: "
                         f"{', '.join(schedules)}. A reaper there could delete namespaces of other people's "
                         "previews; remove those schedules from the bench database first.")
    queued = OrmQ.objects.count()
    if queued:
        names = sorted({str(t.name()) for t in OrmQ.objects.all()[:20]})
        raise SystemExit(f"{BENCH_DB} has {queued} queued django-q tasks (e.g. {', '.join(names)}), probably of "
                         "another benchmark that is running; this run's qcluster would execute them. Try again "
                         f"when the queue is empty ({prefix_hint}).")


def sample_template(delay: float, requests: dict[str, str] | None = None) -> str:
    """previews/samples/shop.yaml with every pod template annotated with the start-up delay (and, if given,
    other resource requests for its containers)."""
    docs = [d for d in yaml.safe_load_all(SAMPLE_TEMPLATE.read_text()) if d]
    annotated = 0
    for doc in docs:
        if doc.get("kind") in ("Deployment", "StatefulSet"):
            meta = doc["spec"]["template"].setdefault("metadata", {})
            meta.setdefault("annotations", {})[START_DELAY_ANNOTATION] = f"{delay:g}s"
            if requests:
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    container.setdefault("resources", {})["requests"] = dict(requests)
            annotated += 1
    assert annotated, "the sample template has no pod template to annotate"
    return yaml.safe_dump_all(docs, sort_keys=False)


def pod_footprint(template: str) -> tuple[int, float, float]:
    """(pods, cpu, memory bytes) one preview of `template` requests, from its Deployments and StatefulSets."""
    pods, cpu, memory = 0, 0.0, 0.0
    for doc in yaml.safe_load_all(template):
        if doc and doc.get("kind") in ("Deployment", "StatefulSet"):
            replicas = int(doc["spec"].get("replicas", 1))
            pods += replicas
            for container in doc["spec"]["template"]["spec"].get("containers", []):
                requests = (container.get("resources") or {}).get("requests") or {}
                cpu += replicas * quantity(requests.get("cpu", "50m"))  # the LimitRange's default request
                memory += replicas * quantity(requests.get("memory", "64Mi"))
    return pods, cpu, memory


# --- the run -------------------------------------------------------------------------------------------


@dataclass
class State:
    """What cleanup needs to know, filled in as the run goes."""

    prefix: str = ""
    repository_id: int | None = None
    token_id: int | None = None
    procs: dict[str, Proc] = field(default_factory=dict)
    warmup_task: str = ""
    kubectl_label: str = ""
    watcher_holder: str = ""
    cleaning: bool = False


def wait_for_worker(state: State, deadline: float) -> float:
    """Queue a trivial task and wait until the qcluster ran it: the worker is up and polling."""
    from django_q.models import Task
    from django_q.tasks import async_task

    started = time.monotonic()
    state.warmup_task = async_task("math.floor", 1.5, task_name=f"{state.prefix}-warmup")
    while time.monotonic() < deadline:
        proc = state.procs["qcluster"]
        if proc.popen.poll() is not None:
            raise SystemExit(f"qcluster exited with {proc.popen.returncode}:\n{tail(proc.log_path)}")
        if Task.objects.filter(id=state.warmup_task).exists():
            return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit(f"qcluster ran no task within {STARTUP_TIMEOUT:.0f}s:\n{tail(state.procs['qcluster'].log_path)}")


def wait_for_watcher(state: State, deadline: float) -> float:
    """Wait until our watcher leads, is connected and has listed every kind."""
    from previews.gateways.kube import watch as kube_watch
    from previews.models import WatcherStatus

    started = time.monotonic()
    kinds = {k.kind for k in kube_watch.WATCHED_KINDS}
    while time.monotonic() < deadline:
        proc = state.procs["watcher"]
        if proc.popen.poll() is not None:
            raise SystemExit(f"watch_cluster exited with {proc.popen.returncode}:\n{tail(proc.log_path)}")
        row = WatcherStatus.objects.filter(holder=state.watcher_holder).first()
        if row is not None and not row.is_leader:
            other = WatcherStatus.objects.filter(is_leader=True).exclude(holder=state.watcher_holder).first()
            raise SystemExit(f"another watcher leads on {BENCH_DB} ({other.holder if other else 'unknown'}); "
                             "this run's watcher would only stand by. Stop it first.")
        if row is not None and row.connected and kinds <= set(row.synced_kinds or []):
            return time.monotonic() - started
        time.sleep(0.25)
    raise SystemExit(f"the watcher was not connected and synced within {STARTUP_TIMEOUT:.0f}s:\n"
                     f"{tail(state.procs['watcher'].log_path)}")


class Poller:
    """Polls the database (and the machine) during a phase; logs progress; enforces the deadline."""

    def __init__(self, state: State, load: LoadWatch, watcher_pid: int) -> None:
        self.state, self.load, self.watcher_pid = state, load, watcher_pid
        self.max_backlog = 0
        self.peak_rss_kib = 0

    def status_counts(self) -> Counter:
        from django.db.models import Count

        from previews.models import Preview, WatcherStatus

        rows = (Preview.objects.filter(repository_id=self.state.repository_id).values("status")
                .annotate(n=Count("pk")))
        row = WatcherStatus.objects.filter(holder=self.state.watcher_holder).values("backlog").first()
        if row:
            self.max_backlog = max(self.max_backlog, row["backlog"])
        self.peak_rss_kib = max(self.peak_rss_kib, read_proc_status_kib(self.watcher_pid, "VmRSS") or 0)
        self.load.sample()
        return Counter({r["status"]: r["n"] for r in rows})

    def check_processes(self) -> None:
        for proc in self.state.procs.values():
            if proc.popen.poll() is not None:
                raise GiveUp(f"{proc.name} exited with {proc.popen.returncode} during the run:\n{tail(proc.log_path)}")

    def until(self, label: str, done, started: float, deadline: float, extra=None) -> float:
        """Poll until done(counts) is true; returns seconds since `started` (time.time()). Raises GiveUp."""
        try:
            return self._until(label, done, started, deadline, extra)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted (Ctrl-C) while waiting for {label}, after "
                              f"{time.time() - started:.0f}s") from None

    def _until(self, label: str, done, started: float, deadline: float, extra=None) -> float:
        last_log = 0.0
        while True:
            counts = self.status_counts()
            extra_text = extra() if extra else ""
            if done(counts):
                return time.time() - started
            now = time.monotonic()
            if now >= deadline:
                raise GiveUp(f"gave up waiting for {label} after {time.time() - started:.0f}s (deadline reached): "
                             f"{dict(counts)}{extra_text}")
            self.check_processes()
            if now - last_log >= 5:
                last_log = now
                log(f"  {time.time() - started:6.1f}s  {label}: " + ", ".join(f"{k} {v}" for k, v in
                    sorted(counts.items())) + f"{extra_text}; watcher backlog {self.max_backlog} (max), "
                    f"load {os.getloadavg()[0]:.1f}")
            time.sleep(POLL)


def watcher_events_seen(state: State) -> int | None:
    """The watch events the watcher has processed, as of its last heartbeat (every 5 s)."""
    from previews.models import WatcherStatus

    row = WatcherStatus.objects.filter(holder=state.watcher_holder).values("events_seen").first()
    return row["events_seen"] if row else None


def deployments_complete(prefix: str) -> dict[str, float]:
    """When each Deployment `web` of the run's namespaces finished its rollout, as the cluster recorded it:
    the lastUpdateTime of its Progressing condition once the reason is NewReplicaSetAvailable (1 s resolution)."""
    return deployments_complete_in(lambda namespace: namespace.startswith(prefix + "-"))


def deployments_complete_in(namespaces) -> dict[str, float]:
    """`deployments_complete` for the namespaces `namespaces` holds (a set, or a predicate on the name)."""
    from datetime import datetime

    wanted = namespaces if callable(namespaces) else namespaces.__contains__
    result = kubectl("get", "deployments", "--all-namespaces", "-o", "json", timeout=120)
    if result.returncode != 0:
        return {}
    done: dict[str, float] = {}
    for item in json.loads(result.stdout).get("items", []):
        namespace = item["metadata"]["namespace"]
        if not wanted(namespace) or item["metadata"]["name"] != "web":
            continue
        for cond in (item.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Progressing" and cond.get("reason") == "NewReplicaSetAvailable":
                stamp = cond.get("lastUpdateTime") or cond.get("lastTransitionTime")
                done[namespace] = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return done


def pods_timeline(prefix: str) -> dict[str, tuple[float, float, float]]:
    """Per namespace of the run, when its last pod was created, scheduled and Ready (1 s resolution)."""
    from datetime import datetime

    def at(stamp: str | None) -> float | None:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None

    result = kubectl("get", "pods", "--all-namespaces", "-o", "json", timeout=180)
    if result.returncode != 0:
        return {}
    per_namespace: dict[str, list[tuple[float, float, float]]] = {}
    for item in json.loads(result.stdout).get("items", []):
        namespace = item["metadata"]["namespace"]
        if not namespace.startswith(prefix + "-"):
            continue
        conditions = {c.get("type"): c for c in (item.get("status") or {}).get("conditions") or []}
        created = at(item["metadata"].get("creationTimestamp"))
        scheduled = at((conditions.get("PodScheduled") or {}).get("lastTransitionTime"))
        ready = at((conditions.get("Ready") or {}).get("lastTransitionTime")) \
            if (conditions.get("Ready") or {}).get("status") == "True" else None
        if created and scheduled and ready:
            per_namespace.setdefault(namespace, []).append((created, scheduled, ready))
    return {ns: (max(p[0] for p in pods), max(p[1] for p in pods), max(p[2] for p in pods))
            for ns, pods in per_namespace.items()}


def collect_deploys(state: State, puts: dict[int, Call], complete: dict[str, float] | None = None,
                    pods: dict[str, tuple[float, float, float]] | None = None) -> dict[str, Any]:
    """Per-preview timings of the deploy phase, from the preview rows, their events and django-q's task rows
    (and, with `complete`, when the cluster finished each rollout)."""
    from django_q.models import Task

    from previews.models import Preview, PreviewEvent

    complete = complete or {}
    pods = pods or {}
    pod_created, pod_scheduled, pod_ready = [], [], []
    previews = list(Preview.objects.filter(repository_id=state.repository_id).values(
        "pk", "pr_number", "namespace", "generation", "status", "status_message", "ready_at", "created_at"))
    events: dict[int, list[tuple[float, str]]] = {}
    for e in (PreviewEvent.objects.filter(preview__repository_id=state.repository_id)
              .values("preview_id", "action", "created_at").order_by("created_at", "pk")):
        events.setdefault(e["preview_id"], []).append((e["created_at"].timestamp(), e["action"]))
    names = {f"deploy_preview:{p['pk']}:{g}": p["pk"] for p in previews for g in range(1, p["generation"] + 1)}
    stopped: dict[int, list[float]] = {}
    for t in Task.objects.filter(name__in=list(names)).values("name", "stopped"):
        stopped.setdefault(names[t["name"]], []).append(t["stopped"].timestamp())

    create_ready, queue_wait, apply, rollout, busy_events, busy_task = [], [], [], [], [], []
    cluster_rollout, watcher_lag = [], []
    starts, applied_at, stops = [], [], []
    failed = []
    for p in previews:
        put = puts.get(p["pr_number"])
        evs = events.get(p["pk"], [])
        if p["status"] == "ready" and put is not None:
            create_ready.append(p["ready_at"].timestamp() - put.sent)
        elif p["status"] != "ready":
            failed.append(f"PR {p['pr_number']}: {p['status']}: {p['status_message'][:300]}")
        task_stops = sorted(stopped.get(p["pk"], []))
        # Every execution of a deploy task writes "deploy started" and ends with "applied", "deploy failed"
        # or "deploy waiting"; django-q records when the task function returned (Task.stopped).
        for i, (at, action) in enumerate(evs):
            if action != "deploy started":
                continue
            starts.append(at)
            end = next(((t, a) for t, a in evs[i + 1:] if a in ("applied", "deploy failed", "deploy waiting")), None)
            if end is not None:
                busy_events.append(end[0] - at)
                if end[1] == "applied":
                    applied_at.append(end[0])
            stop = next((s for s in task_stops if s >= at), None)
            if stop is not None:
                busy_task.append(stop - at)
                stops.append(stop)
        first_start = next((t for t, a in evs if a == "deploy started"), None)
        last_applied = next((t for t, a in reversed(evs) if a == "applied"), None)
        if put is not None and first_start is not None:
            queue_wait.append(first_start - put.sent)
        if first_start is not None and last_applied is not None:
            apply.append(last_applied - first_start)
        if last_applied is not None and p["status"] == "ready":
            rollout.append(p["ready_at"].timestamp() - last_applied)
            if p["namespace"] in pods:
                created, scheduled, ready = pods[p["namespace"]]
                pod_created.append(created - last_applied)
                pod_scheduled.append(scheduled - created)
                pod_ready.append(ready - scheduled)
            if p["namespace"] in complete:
                cluster_rollout.append(complete[p["namespace"]] - last_applied)
                watcher_lag.append(p["ready_at"].timestamp() - complete[p["namespace"]])
    span = (max(stops) - min(starts)) if stops and starts else None
    return {
        "previews": len(previews), "ready": sum(p["status"] == "ready" for p in previews), "failures": failed,
        "create_to_ready": stats(create_ready), "queue_wait": stats(queue_wait), "apply": stats(apply),
        "rollout": stats(rollout),
        "cluster_rollout": stats(cluster_rollout), "watcher_lag": stats(watcher_lag),
        "pods_created": stats(pod_created), "pods_scheduled": stats(pod_scheduled), "pods_ready": stats(pod_ready),
        "busy_events": stats(busy_events), "busy_task": stats(busy_task),
        "deploy_executions": len(starts),
        "worker_span_seconds": span,
        "worker_utilisation": (sum(busy_task) / (Q_WORKERS * span)) if span else None,
        "busy_upper_bound": (Q_WORKERS * span / len(busy_task)) if span and busy_task else None,
    }


def collect_teardowns(state: State, deletes: dict[int, Call], started: float) -> dict[str, Any]:
    from django_q.models import Task

    from previews.models import Preview

    previews = list(Preview.objects.filter(repository_id=state.repository_id).values(
        "pk", "pr_number", "generation", "status", "status_message", "deleted_at"))
    names = {f"teardown_preview:{p['pk']}:{p['generation']}": p for p in previews}
    tasks = list(Task.objects.filter(name__in=list(names)).values("name", "stopped", "result", "success"))
    returned = [t["stopped"].timestamp() - started for t in tasks]
    outcomes = Counter(str(t["result"]) if t["success"] else "task error" for t in tasks)
    delete_to_gone = [p["deleted_at"].timestamp() - deletes[p["pr_number"]].sent for p in previews
                      if p["status"] == "deleted" and p["deleted_at"] and p["pr_number"] in deletes]
    gone_at = [p["deleted_at"].timestamp() - started for p in previews if p["status"] == "deleted" and p["deleted_at"]]
    first_stop = min((t["stopped"].timestamp() for t in tasks), default=None)
    last_stop = max((t["stopped"].timestamp() for t in tasks), default=None)
    span = (last_stop - first_stop) if tasks else None
    return {
        "previews": len(previews), "tasks_returned": len(tasks), "outcomes": dict(outcomes),
        "all_tasks_returned_seconds": max(returned) if len(tasks) == len(previews) and tasks else None,
        "task_returned": stats(returned),
        "deleted": sum(p["status"] == "deleted" for p in previews),
        "all_gone_seconds": max(gone_at) if gone_at and len(gone_at) == len(previews) else None,
        "delete_to_gone": stats(delete_to_gone),
        "busy_upper_bound": (Q_WORKERS * span / len(tasks)) if span and len(tasks) > 1 else None,
        "not_deleted": [f"PR {p['pr_number']}: {p['status']}: {p['status_message'][:200]}" for p in previews
                        if p["status"] != "deleted"][:10],
    }


def kubectl_documents(state: State, name: str, content: str) -> list[dict]:
    """The namespace `name` and what it holds: a ConfigMap, or everything a preview of this run holds."""
    if content == "configmap":
        return [{"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": name, "labels": {KUBECTL_BENCH_LABEL: state.prefix}}},
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bench", "namespace": name},
                 "data": {"GREETING": "hello"}}]
    from bench import provision
    from previews import manifests
    from previews.models import Preview

    preview = Preview.objects.select_related("repository").filter(repository_id=state.repository_id).first()
    namespace, objects = provision.kubectl_documents(preview, name)
    # Not our managed-by label on the namespace: no watcher or reaper of anyone's takes it for a preview's.
    labels = {k: v for k, v in namespace["metadata"]["labels"].items() if k != manifests.MANAGED_BY_LABEL}
    namespace["metadata"]["labels"] = {**labels, KUBECTL_BENCH_LABEL: state.prefix}
    return [namespace, *objects]


def kubectl_teardown(state: State, count: int, deadline: float, load: LoadWatch, content: str) -> dict[str, Any]:
    """N namespaces with a ConfigMap each (or a preview's objects), deleted by one
    `kubectl delete namespace ... --wait=false`."""
    label = f"{KUBECTL_BENCH_LABEL}={state.prefix}"
    state.kubectl_label = label
    names = [f"{state.prefix}-k{i}" for i in range(1, count + 1)]
    what = "a ConfigMap" if content == "configmap" else "the objects of a preview of this run"
    log(f"kubectl: creating {count} namespaces {state.prefix}-k<i> with {what} each")
    created_started, created_started_wall = time.monotonic(), time.time()
    with tempfile.TemporaryDirectory(prefix=f"{state.prefix}-kubectl-") as tmp:
        files = []
        chunk = 100 if content == "configmap" else 25
        for start in range(0, count, chunk):
            docs = []
            for name in names[start:start + chunk]:
                docs.extend(kubectl_documents(state, name, content))
            path = Path(tmp, f"chunk{start}.yaml")
            path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
            files.append(path)
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda p: kubectl("create", "-f", str(p), timeout=600), files))
    failed = [r.stderr.strip()[:300] for r in results if r.returncode != 0]
    if failed:
        raise GiveUp(f"kubectl create failed: {failed[0]}")
    create_seconds = time.monotonic() - created_started
    ready_seconds = None
    if content == "preview":
        log(f"kubectl: created in {create_seconds:.1f}s; waiting for their Deployments to complete")
        ready_seconds = kubectl_ready(set(names), created_started_wall, deadline, load)
    log(f"kubectl: created in {create_seconds:.1f}s; deleting them with one kubectl delete namespace --wait=false")

    started = time.time()
    result = kubectl("delete", "namespace", "--wait=false", *names, timeout=600)
    command_seconds = time.time() - started
    if result.returncode != 0:
        raise GiveUp(f"kubectl delete namespace failed: {result.stderr.strip()[:500]}")

    def all_gone() -> tuple[bool, str]:
        left = kubectl("get", "namespaces", "-l", label, "-o", "name", timeout=60)
        remaining = len(left.stdout.split()) if left.returncode == 0 else None
        return remaining == 0, f"{remaining} namespaces left"

    wait_for_kubectl("kubectl's namespaces to be gone", all_gone, started, deadline, load, POLL)
    gone = time.time() - started
    log(f"kubectl: all {count} gone after {gone:.1f}s")
    return {"namespaces": count, "content": content, "create_seconds": create_seconds,
            "all_ready_seconds": ready_seconds, "command_seconds": command_seconds, "all_gone_seconds": gone}


def kubectl_ready(names: set[str], started: float, deadline: float, load: LoadWatch) -> float:
    """Seconds from `started` (time.time()) until the Deployment of every namespace in `names` had completed its
    rollout, as the cluster recorded it (`deployments_complete`, 1 s resolution). Polled every 5 s: listing a
    thousand Deployments costs CPU the control plane is using."""
    done: dict[str, float] = {}

    def all_complete() -> tuple[bool, str]:
        done.clear()
        done.update(deployments_complete_in(names))
        return len(done) == len(names), f"{len(done)}/{len(names)} Deployments complete"

    wait_for_kubectl("kubectl's Deployments", all_complete, started, deadline, load, 5)
    ready = max(done.values()) - started
    log(f"kubectl: all {len(names)} Deployments complete after {ready:.1f}s")
    return ready


def wait_for_kubectl(what: str, check: Callable[[], tuple[bool, str]], started: float, deadline: float,
                     load: LoadWatch, interval: float) -> None:
    """Call `check` (-> finished, progress) every `interval` s until it is finished; progress logged every 5 s,
    GiveUp at the deadline. `started` is the time.time() the waiting is counted from."""
    last_log = 0.0
    while True:
        finished, progress = check()
        load.sample()
        if finished:
            return
        if time.monotonic() >= deadline:
            raise GiveUp(f"gave up waiting for {what} after {time.time() - started:.0f}s: {progress}")
        if time.monotonic() - last_log >= 5:
            last_log = time.monotonic()
            log(f"  {time.time() - started:6.1f}s  kubectl: {progress}")
        time.sleep(interval)


def log_findings(state: State) -> list[str]:
    """What the services' logs say went wrong that the figures would not show (a worker that died, a crash)."""
    found = []
    for proc in state.procs.values():
        try:
            text = proc.log_path.read_text(errors="replace")
        except OSError:
            continue
        deaths = text.count("reincarnated worker")
        if deaths:
            found.append(f"{proc.name}: {deaths} worker processes died and were restarted (see its log; e.g. the "
                         "code changed on disk during the run and a new worker could not import it)")
        tracebacks = text.count("Traceback (most recent call last)")
        if tracebacks:
            found.append(f"{proc.name}: {tracebacks} tracebacks in its log")
    return found


# --- cleanup ---------------------------------------------------------------------------------------------


def cleanup(state: State) -> dict[str, Any]:
    """Stop the processes, drop the run's queued tasks, delete its namespaces and its rows. Never raises."""
    report: dict[str, Any] = {}
    state.cleaning = True
    for name in ("gunicorn", "qcluster"):  # no new requests, no new deploys; then the namespaces
        if name in state.procs:
            try:
                report[f"{name}_stop"] = stop_process(state.procs[name])
            except Exception as exc:
                log(f"cleanup: stopping {name} failed: {exc}")
    if state.repository_id is not None:
        try:
            report["queued_tasks_dropped"] = drop_queued_tasks(state)
        except Exception as exc:
            log(f"cleanup: dropping queued tasks failed: {exc}")
    remaining: list[str] = []
    if state.prefix:
        names = namespaces_with_prefix(state.prefix)
        if names is None:
            time.sleep(2)
            names = namespaces_with_prefix(state.prefix)
        if names is None:
            log(f"cleanup: cannot list namespaces; delete {state.prefix}-* yourself")
            remaining = [f"{state.prefix}-* (unknown)"]
        elif names:
            log(f"cleanup: deleting {len(names)} namespaces {state.prefix}-*")
            for start in range(0, len(names), 200):
                result = kubectl("delete", "namespace", "--ignore-not-found", "--wait=false",
                                 *names[start:start + 200], timeout=300)
                if result.returncode != 0:
                    log(f"cleanup: kubectl delete failed: {result.stderr.strip()[:300]}")
            deadline = time.monotonic() + CLEANUP_TIMEOUT
            while True:
                left = namespaces_with_prefix(state.prefix)
                remaining = names if left is None else left
                if not remaining or time.monotonic() >= deadline:
                    break
                time.sleep(2)
            if remaining:
                log(f"cleanup: {len(remaining)} namespaces still terminating after {CLEANUP_TIMEOUT:.0f}s "
                    f"(their delete is issued): {', '.join(remaining[:10])}")
            else:
                log("cleanup: all the run's namespaces are gone")
    report["namespaces_left_terminating"] = remaining
    if "watcher" in state.procs:
        try:
            report["watcher_stop"] = stop_process(state.procs["watcher"])
        except Exception as exc:
            log(f"cleanup: stopping the watcher failed: {exc}")
    try:
        report["rows_deleted"] = delete_rows(state)
    except Exception as exc:
        log(f"cleanup: deleting the run's rows failed: {exc}")
        report["rows_deleted"] = f"FAILED: {exc}"
    return report


def drop_queued_tasks(state: State) -> int:
    from django_q.models import OrmQ

    from previews.models import Preview

    ids = set(Preview.objects.filter(repository_id=state.repository_id).values_list("pk", flat=True))
    dropped = 0
    for task in OrmQ.objects.all():
        name = str(task.name() or "")
        parts = name.split(":")
        if (len(parts) == 3 and parts[1].isdigit() and int(parts[1]) in ids) or (
                state.warmup_task and name == f"{state.prefix}-warmup"):
            task.delete()
            dropped += 1
    if dropped:
        log(f"cleanup: dropped {dropped} queued tasks of this run from {BENCH_DB}")
    return dropped


def delete_rows(state: State) -> dict[str, int]:
    from django.db import connection
    from django_q.models import Task

    from previews.models import ApiToken, Preview, Repository, WatcherStatus

    connection.close()  # after a long wait the connection may be stale
    done: dict[str, int] = {}
    if state.repository_id is not None:
        rows = list(Preview.objects.filter(repository_id=state.repository_id).values_list("pk", "generation"))
        names = [f"{kind}:{pk}:{g}" for pk, gen in rows for g in range(1, gen + 1)
                 for kind in ("deploy_preview", "teardown_preview")]
        done["tasks"] = Task.objects.filter(name__in=names).delete()[0] if names else 0
        done["previews_and_events"] = Preview.objects.filter(repository_id=state.repository_id).delete()[0]
        done["tokens"] = ApiToken.objects.filter(repository_id=state.repository_id).delete()[0]
        done["repository"] = Repository.objects.filter(pk=state.repository_id).delete()[0]
    if state.warmup_task:
        done["tasks"] = done.get("tasks", 0) + Task.objects.filter(id=state.warmup_task).delete()[0]
    if state.watcher_holder:
        done["watcher_status"] = WatcherStatus.objects.filter(holder=state.watcher_holder).delete()[0]
    return done


# --- report ----------------------------------------------------------------------------------------------


def print_report(meta: dict, deploy: dict | None, watcher: dict, teardown: dict | None, kube: dict | None,
                 problems: list[str]) -> None:
    n, delay = meta["previews"], meta["delay"]
    print()
    print(f"machine:  {meta['nproc']} CPUs (nproc), {meta['cpu']}; load average at start "
          f"{' / '.join(f'{x:.2f}' for x in meta['load_at_start'])} (1/5/15 min), highest 1-min value seen during "
          f"the run {meta['load_highest']:.2f}; shared with other people's work, so figures are noisy")
    print(f"cluster:  {meta['server_version']}, nodes allocatable {fmt(meta['pod_capacity'], 0)} pods, "
          f"{fmt(meta['node_cpu'], 0)} CPU, {fmt(meta['node_memory_gib'], 0)} GiB; pods before the run "
          f"{meta['pods_before']}; namespace prefix {meta['prefix']}")
    print(f"service:  gunicorn config.wsgi (4 gthread workers x 4 threads, DEBUG off), manage.py qcluster "
          f"(Q_WORKERS={Q_WORKERS}, ORM broker), manage.py watch_cluster; PREVIEWS_DEPLOY_SLOTS="
          f"{meta['deploy_slots']}; database {BENCH_DB}")
    print(f"run:      {n} previews of previews/samples/shop.yaml (Deployment of 2 replicas), pod start-up delay "
          f"{delay:g}s, pod requests {meta['pod_requests']}, requested by {meta['clients']} clients at once")
    rows: list[tuple[str, str, str]] = []
    if deploy is not None:
        target = ""
        if delay >= 10 and n == 200:
            target = f"<= {TARGETS['ready_200_10s']:.0f} s"
        elif delay == 0 and n == 1000:
            target = f"<= {TARGETS['ready_1000_0s']:.0f} s"
        put = deploy["put"]
        rows += [
            ("PUTs answered 201", f"{put['created']}/{n} (statuses {put['statuses']})", ""),
            ("PUT latency", fmt_stats(put["latency"], 3), ""),
            ("all PUTs answered after", fmt(put["all_answered_seconds"], 1, " s"), ""),
        ]
    if deploy is not None and "busy_task" in deploy:  # absent when interrupted before the deploys were collected
        rows += [
            ("time until all ready", fmt(deploy.get("all_ready_seconds"), 1, " s")
             + ("" if deploy.get("all_ready_seconds") is not None else
                f" ({deploy['ready']}/{n} ready, the last after {fmt(deploy.get('last_ready_seconds'), 1, ' s')})"),
             target),
            ("create -> ready", fmt_stats(deploy["create_to_ready"], 1), ""),
            ("  queue wait: PUT -> deploy started", fmt_stats(deploy["queue_wait"], 1), ""),
            ("  apply: deploy started -> applied", fmt_stats(deploy["apply"], 2), ""),
            ("  rollout: applied -> ready (watcher)", fmt_stats(deploy["rollout"], 1), ""),
            ("    cluster: applied -> Deployment complete", fmt_stats(deploy["cluster_rollout"], 1),
             "its Progressing condition (1 s resolution)"),
            ("      applied -> last pod created", fmt_stats(deploy["pods_created"], 1),
             "deployment + replicaset controllers"),
            ("      pod created -> scheduled", fmt_stats(deploy["pods_scheduled"], 1), "kube-scheduler"),
            ("      pod scheduled -> Ready", fmt_stats(deploy["pods_ready"], 1), "kwok, with the start-up delay"),
            ("    watcher: Deployment complete -> ready", fmt_stats(deploy["watcher_lag"], 1), ""),
            ("worker busy per deploy (events)", fmt_stats(deploy["busy_events"], 3),
             f"<= {TARGETS['busy_per_deploy']} s"),
            ("worker busy per deploy (task returned)", fmt_stats(deploy["busy_task"], 3),
             f"<= {TARGETS['busy_per_deploy']} s"),
            ("machine CPU busy while deploying", fmt(deploy.get("machine_cpu_pct"), 0, " %"),
             "all cores, everyone's processes"),
            ("worker utilisation while deploying", fmt(100 * deploy["worker_utilisation"], 0, " %")
             if deploy["worker_utilisation"] is not None else "-",
             f"{deploy['deploy_executions']} deploy runs in {fmt(deploy['worker_span_seconds'], 1)} s; "
             f"busy <= {fmt(deploy['busy_upper_bound'], 3)} s each ({Q_WORKERS} workers x span / runs)"),
        ]
    if watcher:
        rows += [
            ("watcher RSS before the run", fmt(watcher.get("rss_before_mb"), 1, " MB"), ""),
            (f"watcher RSS, {n} previews live", fmt(watcher.get("rss_live_mb"), 1, " MB")
             + f" (peak while deploying {fmt(watcher.get('rss_peak_deploy_mb'), 1, ' MB')})",
             f"<= {TARGETS['watcher_rss_mb']:.0f} MB"),
            ("watcher CPU while deploying", fmt(watcher.get("cpu_deploy_seconds"), 2, " s")
             + f" over {fmt(watcher.get('deploy_seconds'), 1, ' s')}", ""),
            (f"watcher CPU idle, {fmt(watcher.get('idle_seconds'), 0, ' s')}",
             fmt(watcher.get("cpu_idle_seconds"), 2, " s") + f" ({fmt(watcher.get('cpu_idle_pct'), 2, ' %')} of a core)"
             + f", RSS after {fmt(watcher.get('rss_idle_mb'), 1, ' MB')}, "
             f"{watcher.get('idle_events', '-')} watch events meanwhile", "near zero"),
            ("watcher events seen / max backlog", f"{watcher.get('events_seen', '-')} / "
             f"{watcher.get('max_backlog', '-')}", ""),
            ("watcher RSS high-water mark (VmHWM)", fmt(watcher.get("rss_high_water_mb"), 1, " MB"), "at the end"),
        ]
    if teardown is not None:
        rows += [
            ("DELETEs answered 202", f"{teardown['delete']['accepted']}/{n} (statuses "
             f"{teardown['delete']['statuses']})", ""),
            ("DELETE latency", fmt_stats(teardown["delete"]["latency"], 3), ""),
            ("all DELETEs answered (all deleting)", fmt(teardown["delete"]["all_answered_seconds"], 1, " s"), ""),
            ("all teardown tasks returned", fmt(teardown.get("all_tasks_returned_seconds"), 1, " s")
             + f" ({teardown['tasks_returned']}/{n} returned: {teardown['outcomes']})", ""),
            ("worker busy per teardown (upper bound)", fmt(teardown.get("busy_upper_bound"), 3, " s"),
             "2 workers x span / tasks"),
            ("all namespaces gone (all deleted)", fmt(teardown.get("all_gone_seconds"), 1, " s")
             + ("" if teardown.get("all_gone_seconds") is not None else f" ({teardown['deleted']}/{n} deleted)"), ""),
            ("  DELETE -> deleted", fmt_stats(teardown["delete_to_gone"], 1), ""),
            ("watcher CPU during teardown", fmt(teardown.get("watcher_cpu_seconds"), 2, " s"), ""),
        ]
    if kube is not None:
        rows += [
            (f"kubectl delete ns of {kube['namespaces']} ("
             + ("ConfigMap each)" if kube["content"] == "configmap" else "a preview's objects each)"),
             f"command {kube['command_seconds']:.1f} s, all gone {kube['all_gone_seconds']:.1f} s",
             f"created in {kube['create_seconds']:.1f} s, untimed"),
        ]
        if kube.get("all_ready_seconds") is not None:
            rows.append((f"kubectl create of {kube['namespaces']} previews' objects: all ready",
                         f"{kube['all_ready_seconds']:.1f} s (created in {kube['create_seconds']:.1f} s)",
                         "the same objects, no service: 4 kubectl processes, 25 namespaces per file"))
    if rows:
        width = max(len(r[0]) for r in rows)
        vwidth = max(len(r[1]) for r in rows)
        print()
        print(f"{'measure':<{width}}  {'value':<{vwidth}}  target / note")
        print("-" * (width + vwidth + 20))
        for label, value, note in rows:
            print(f"{label:<{width}}  {value:<{vwidth}}  {note}")
    if deploy is not None and deploy.get("failures"):
        print(f"\nnot ready ({len(deploy['failures'])}):")
        for line in deploy["failures"][:10]:
            print(f"  {line}")
    if teardown is not None and teardown.get("not_deleted"):
        print("\nnot deleted (first 10):")
        for line in teardown["not_deleted"]:
            print(f"  {line}")
    for problem in problems:
        print(f"\nPROBLEM: {problem}")
    cleanup_report = meta.get("cleanup") or {}
    print(f"\nwall time: {meta['wall_seconds']:.1f} s (setup, phases, cleanup)")
    print("cleanup:  " + "; ".join(f"{k}: {v}" for k, v in cleanup_report.items()))


# --- main -------------------------------------------------------------------------------------------------


STATE = State()


def _terminate(signum: int, _frame: Any) -> None:
    if STATE.cleaning:
        log("signal received during cleanup; finishing the cleanup first")
        return
    raise SystemExit(128 + signum)  # unwinds through the finally block: cleanup runs


def _interrupt(signum: int, frame: Any) -> None:
    if STATE.cleaning:
        log("Ctrl-C during cleanup; finishing the cleanup first")
        return
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--previews", type=int, default=200, help="previews requested at once (default 200)")
    parser.add_argument("--delay", type=float, default=10.0, help="pod start-up delay in seconds (default 10)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent API clients (default 32)")
    parser.add_argument("--idle-seconds", type=float, default=30.0,
                        help="idle time over which the watcher's CPU is measured (default 30)")
    parser.add_argument("--phase-timeout", type=float, default=600.0,
                        help="seconds each phase may take before the run gives up (default 600)")
    parser.add_argument("--max-seconds", type=float, default=1800.0,
                        help="seconds the whole run may take before it gives up, cleanup excluded (default 1800)")
    parser.add_argument("--skip-teardown", action="store_true",
                        help="skip the teardown phase and its kubectl comparison (cleanup still deletes everything)")
    parser.add_argument("--kubectl-content", choices=("configmap", "preview"), default="configmap",
                        help="what each of kubectl's namespaces holds: a ConfigMap (default), or the same objects "
                             "as a preview of this run (its guardrails and the sample app, so also 2 pods)")
    parser.add_argument("--pod-requests", metavar="CPU,MEMORY",
                        help="resource requests for the sample app's container instead of its own (10m,16Mi), "
                             "e.g. 10m,32Mi, when the nodes cannot hold N previews otherwise")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--keep-logs", action="store_true", help="keep the three processes' logs (path printed)")
    args = parser.parse_args(argv)
    if not 1 <= args.previews <= 2000:
        parser.error("--previews must be between 1 and 2000")
    if not 0 <= args.delay <= 600:
        parser.error("--delay must be between 0 and 600 seconds")
    if not 1 <= args.clients <= 256:
        parser.error("--clients must be between 1 and 256")
    if not 0 <= args.idle_seconds <= 600 or not 10 <= args.phase_timeout <= 7200 or args.max_seconds < 60:
        parser.error("--idle-seconds must be 0..600, --phase-timeout 10..7200, --max-seconds >= 60")

    requests = None
    if args.pod_requests:
        try:
            cpu, memory = args.pod_requests.split(",")
            quantity(cpu), quantity(memory)
        except ValueError:
            parser.error("--pod-requests is CPU,MEMORY, e.g. 10m,32Mi")
        requests = {"cpu": cpu.strip(), "memory": memory.strip()}
    template = sample_template(args.delay, requests)
    wall_started = time.monotonic()
    run_deadline = wall_started + args.max_seconds
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _interrupt)
    load = LoadWatch()

    os.environ["KUBECONFIG"] = kubeconfig_path()
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # One secret key for this process and the three services: django-q signs the queued tasks with it.
    secret_key = secrets.token_urlsafe(40)
    os.environ["DJANGO_SECRET_KEY"] = secret_key
    setup_django("config.settings_test")
    from django.conf import settings

    from previews import services
    from previews.gateways import kube
    from previews.models import Repository

    kube.ping()  # fails early, with the service's own error, when the cluster does not answer
    server, _client = server_version()
    room = node_room()
    capacity, pods_before = room["pods"], room["pods_used"]
    pods, cpu, memory = pod_footprint(template)
    if capacity is not None and pods_before is not None and capacity - pods_before < pods * args.previews:
        raise SystemExit(f"the cluster's nodes hold {capacity:.0f} pods and {pods_before} exist: no room for "
                         f"{pods * args.previews} more (raise PREVIEWS_KWOK_NODE_PODS and run scripts/kube up)")
    if room["cpu"] is not None and cpu * args.previews > room["cpu"]:
        raise SystemExit(f"the cluster's nodes have {room['cpu']:g} CPUs allocatable; {args.previews} previews "
                         f"request {cpu * args.previews:g} (pods of {cpu / pods:g} CPU): most would be "
                         "unschedulable. Give the node more CPU, or smaller requests with --pod-requests")
    if room["memory"] is not None and memory * args.previews > room["memory"]:
        raise SystemExit(f"the cluster's nodes have {room['memory'] / 1024**3:g} GiB allocatable; {args.previews} "
                         f"previews request {memory * args.previews / 1024**3:g} GiB: most would be unschedulable. "
                         "Give the node more memory, or smaller requests with --pod-requests")
    check_bench_database("nothing was started")

    while not STATE.prefix:
        candidate = f"tp{secrets.token_hex(3)}"
        if (namespaces_with_prefix(candidate) == []
                and not Repository.objects.filter(namespace_prefix=candidate).exists()
                and not Repository.objects.filter(owner="bench", name=candidate).exists()):
            STATE.prefix = candidate
    prefix = STATE.prefix
    meta: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)), "cpu": cpu_model(platform.processor() or "unknown"),
        "server_version": server, "pod_capacity": capacity, "pods_before": pods_before, "prefix": prefix,
        "node_cpu": room["cpu"], "node_memory_gib": room["memory"] / 1024**3 if room["memory"] else None,
        "pod_requests": requests or "the template's own (cpu 10m, memory 16Mi)",
        "previews": args.previews, "delay": args.delay, "clients": args.clients, "database": BENCH_DB,
        "deploy_slots": os.environ.get("PREVIEWS_DEPLOY_SLOTS", str(settings.PREVIEWS_DEPLOY_SLOTS)),
        "load_at_start": load.at_start,
    }
    log(f"run {prefix}: {args.previews} previews, start-up delay {args.delay:g}s, {BENCH_DB}, {server}; "
        f"load average {load.at_start[0]:.2f}")

    deploy: dict[str, Any] | None = None
    teardown: dict[str, Any] | None = None
    kube_result: dict[str, Any] | None = None
    watcher: dict[str, Any] = {}
    problems: list[str] = []
    log_dir = Path(tempfile.mkdtemp(prefix=f"throughput-{prefix}-"))
    exit_code = 1
    try:
        repository = Repository.objects.create(
            owner="bench", name=prefix, base_domain="preview.example.com", namespace_prefix=prefix,
            manifest_template=template, image_name="localhost/previews-sample",
            max_live_previews=args.previews, annotation_domains="previews.local")  # the start-delay annotation
        STATE.repository_id = repository.pk
        token, plaintext = services.token_create(name=f"throughput-{prefix}", repository=repository)
        STATE.token_id = token.pk

        database_url = os.environ["DATABASE_URL"]
        port = free_port()
        STATE.procs["watcher"] = start_process(
            "watcher", [sys.executable, "manage.py", "watch_cluster"],
            service_env(database_url, secret_key, "INFO"), log_dir)
        STATE.watcher_holder = f"{socket.gethostname()}:{STATE.procs['watcher'].pid}"
        STATE.procs["qcluster"] = start_process(
            "qcluster", [sys.executable, "manage.py", "qcluster"], service_env(database_url, secret_key, "INFO"),
            log_dir)
        STATE.procs["gunicorn"] = start_process(
            "gunicorn", gunicorn_command(port), service_env(database_url, secret_key, "WARNING"), log_dir)
        startup_deadline = min(time.monotonic() + STARTUP_TIMEOUT, run_deadline)
        wait_http_up(STATE.procs["gunicorn"], port, startup_deadline)
        meta["watcher_startup_seconds"] = wait_for_watcher(STATE, startup_deadline)
        meta["worker_startup_seconds"] = wait_for_worker(STATE, startup_deadline)
        log(f"all up: gunicorn on 127.0.0.1:{port}, watcher synced after {meta['watcher_startup_seconds']:.1f}s, "
            f"qcluster ran a task after {meta['worker_startup_seconds']:.1f}s")

        watcher_pid = STATE.procs["watcher"].pid
        poller = Poller(STATE, load, watcher_pid)
        headers = {"Authorization": f"Bearer {plaintext}", "Accept": "application/json",
                   "Content-Type": "application/json", "Connection": "keep-alive"}
        base = f"/api/v1/repos/{repository.owner}/{repository.name}/previews"
        rss_before = read_proc_status_kib(watcher_pid, "VmRSS")
        watcher["rss_before_mb"] = rss_before / 1024 if rss_before else None

        # --- deploy ---
        requests = []
        for pr in range(1, args.previews + 1):
            sha = secrets.token_hex(20)
            body = {"head_sha": sha, "image": f"localhost/previews-sample:pr-{pr}-{sha[:7]}",
                    "title": f"throughput {pr}", "author": "bench"}
            requests.append((pr, f"{base}/{pr}", json.dumps(body).encode()))
        cpu_before = read_proc_cpu_seconds(watcher_pid)
        machine_before = cpu_snapshot()
        log(f"deploy: {args.previews} PUTs from {args.clients} clients")
        started = time.time()
        puts = http_calls(port, "PUT", requests, headers, args.clients)
        put_by_pr = {c.pr: c for c in puts if c.status == 201}
        put_errors = [f"PR {c.pr}: {c.status} {c.detail}" for c in puts if c.status != 201]
        all_answered = max(c.done for c in puts) - started
        log(f"deploy: all PUTs answered after {all_answered:.1f}s ({len(put_by_pr)} created)")
        deploy = {"put": {"created": len(put_by_pr), "statuses": dict(Counter(c.status for c in puts)),
                          "latency": stats([c.done - c.sent for c in puts if c.status == 201]),
                          "all_answered_seconds": all_answered, "errors": put_errors[:10]}}
        if put_errors:
            problems.append(f"{len(put_errors)} PUTs failed, e.g. {put_errors[0][:300]}")
        expected = len(put_by_pr)
        phase_deadline = min(time.monotonic() + args.phase_timeout, run_deadline)
        gave_up = not put_by_pr
        interrupted = False
        try:
            poller.until("deploy", lambda c: c["ready"] + c["failed"] >= expected, started, phase_deadline)
        except GiveUp as exc:
            problems.append(str(exc))
            log(str(exc))
            gave_up = True
            interrupted = isinstance(exc, Interrupted)
        at_ready = time.time()
        cpu_at_ready = read_proc_cpu_seconds(watcher_pid)
        machine_after = cpu_snapshot()
        rss_live = read_proc_status_kib(watcher_pid, "VmRSS")
        deploy.update(collect_deploys(STATE, put_by_pr, deployments_complete(prefix), pods_timeline(prefix)))
        if deploy["failures"]:
            problems.append(f"{len(deploy['failures'])} previews did not become ready, e.g. {deploy['failures'][0]}")
        from previews.models import Preview

        ready_at = list(Preview.objects.filter(repository_id=STATE.repository_id, status="ready")
                        .values_list("ready_at", flat=True))
        if ready_at:
            deploy["last_ready_seconds"] = max(r.timestamp() for r in ready_at) - started
        if len(ready_at) == args.previews:
            deploy["all_ready_seconds"] = deploy["last_ready_seconds"]
        deploy["machine_cpu_pct"] = 100 * (machine_after[0] - machine_before[0]) / max(
            machine_after[1] - machine_before[1], 1)
        watcher.update({
            "rss_live_mb": rss_live / 1024 if rss_live else None, "rss_peak_deploy_mb": poller.peak_rss_kib / 1024,
            "cpu_deploy_seconds": (cpu_at_ready - cpu_before)
            if cpu_before is not None and cpu_at_ready is not None else None,
            "deploy_seconds": at_ready - started, "max_backlog": poller.max_backlog,
        })
        log(f"deploy: {deploy['ready']}/{args.previews} ready; all ready after "
            f"{fmt(deploy.get('all_ready_seconds'), 1)}s; worker busy per deploy p50 "
            f"{fmt(deploy['busy_task']['p50'], 3)}s")

        # --- idle ---
        if args.idle_seconds > 0 and not gave_up:
            idle_seconds = min(args.idle_seconds, max(0.0, run_deadline - time.monotonic()))
            log(f"idle: measuring the watcher's CPU over {idle_seconds:.0f}s with the previews live")
            events0 = watcher_events_seen(STATE)
            cpu0, t0 = read_proc_cpu_seconds(watcher_pid), time.monotonic()
            end = t0 + idle_seconds
            while time.monotonic() < end:
                poller.status_counts()
                time.sleep(min(2.0, max(0.0, end - time.monotonic())))
            cpu1, elapsed = read_proc_cpu_seconds(watcher_pid), time.monotonic() - t0
            rss_idle = read_proc_status_kib(watcher_pid, "VmRSS")
            events1 = watcher_events_seen(STATE)
            if events0 is not None and events1 is not None:
                watcher["idle_events"] = events1 - events0
            if cpu0 is not None and cpu1 is not None:
                watcher.update({"idle_seconds": elapsed, "cpu_idle_seconds": cpu1 - cpu0,
                                "cpu_idle_pct": 100 * (cpu1 - cpu0) / elapsed if elapsed else None})
            watcher["rss_idle_mb"] = rss_idle / 1024 if rss_idle else None
            log(f"idle: watcher CPU {fmt(watcher.get('cpu_idle_seconds'), 2)}s over {elapsed:.0f}s")

        # --- teardown ---
        if not args.skip_teardown and not gave_up:
            prs = sorted(put_by_pr)
            log(f"teardown: {len(prs)} DELETEs from {args.clients} clients")
            cpu_t0 = read_proc_cpu_seconds(watcher_pid)
            t_started = time.time()
            deletes = http_calls(port, "DELETE", [(pr, f"{base}/{pr}", None) for pr in prs], headers, args.clients)
            delete_by_pr = {c.pr: c for c in deletes if c.status == 202}
            all_answered = max(c.done for c in deletes) - t_started
            log(f"teardown: all DELETEs answered after {all_answered:.1f}s ({len(delete_by_pr)} accepted)")
            if len(delete_by_pr) != len(prs):
                bad = [c for c in deletes if c.status != 202]
                problems.append(f"{len(bad)} DELETEs failed, e.g. PR {bad[0].pr}: {bad[0].status} {bad[0].detail}")
            phase_deadline = min(time.monotonic() + args.phase_timeout, run_deadline)
            try:
                poller.until("teardown", lambda c: c["deleted"] >= len(delete_by_pr), t_started, phase_deadline)
            except GiveUp as exc:
                problems.append(str(exc))
                log(str(exc))
                interrupted = isinstance(exc, Interrupted)
            cpu_t1 = read_proc_cpu_seconds(watcher_pid)
            teardown = collect_teardowns(STATE, delete_by_pr, t_started)
            teardown["delete"] = {"accepted": len(delete_by_pr), "statuses": dict(Counter(c.status for c in deletes)),
                                  "latency": stats([c.done - c.sent for c in deletes if c.status == 202]),
                                  "all_answered_seconds": all_answered}
            teardown["watcher_cpu_seconds"] = (cpu_t1 - cpu_t0) if cpu_t0 is not None and cpu_t1 is not None else None
            log(f"teardown: tasks returned after {fmt(teardown['all_tasks_returned_seconds'], 1)}s, all gone "
                f"after {fmt(teardown['all_gone_seconds'], 1)}s")
            left = namespaces_with_prefix(prefix)
            if left:
                problems.append(f"{len(left)} namespaces {prefix}-* still exist after every preview was marked "
                                f"deleted: {', '.join(left[:5])}")
            if teardown["all_gone_seconds"] is not None and not left and not interrupted:
                phase_deadline = min(time.monotonic() + args.phase_timeout, run_deadline)
                try:
                    kube_result = kubectl_teardown(STATE, len(prs), phase_deadline, load, args.kubectl_content)
                except GiveUp as exc:
                    problems.append(str(exc))
                    log(str(exc))
        exit_code = 130 if interrupted else 0 if not problems and deploy.get("all_ready_seconds") is not None else 1
    except KeyboardInterrupt:
        log("interrupted; cleaning up before exiting")
        problems.append("interrupted (Ctrl-C)")
        exit_code = 130
    except GiveUp as exc:
        problems.append(str(exc))
        log(str(exc))
    finally:
        STATE.cleaning = True
        try:
            if "watcher" in STATE.procs and STATE.procs["watcher"].popen.poll() is None:
                from previews.models import WatcherStatus

                row = WatcherStatus.objects.filter(holder=STATE.watcher_holder).values("events_seen").first()
                watcher["events_seen"] = row["events_seen"] if row else None
                hwm = read_proc_status_kib(STATE.procs["watcher"].pid, "VmHWM")
                watcher["rss_high_water_mb"] = hwm / 1024 if hwm else None
        except Exception:
            pass
        problems.extend(log_findings(STATE))
        meta["cleanup"] = cleanup(STATE)
        if exit_code != 0 and STATE.procs:
            for proc in STATE.procs.values():
                text = tail(proc.log_path, 25)
                if text.strip():
                    log(f"--- {proc.name} log (last lines) ---\n{text}")
        if args.keep_logs:
            log(f"logs kept in {log_dir}")
        else:
            for path in log_dir.glob("*.log"):
                path.unlink(missing_ok=True)
            log_dir.rmdir()
    load.sample()
    meta["load_highest"] = load.highest
    meta["load_at_end"] = os.getloadavg()
    meta["wall_seconds"] = time.monotonic() - wall_started
    left = meta["cleanup"].get("namespaces_left_terminating")
    if left:
        problems.append(f"cleanup left {len(left)} namespaces terminating (their delete is issued)")
    print_report(meta, deploy, watcher, teardown, kube_result, problems)
    if args.json:
        print(json.dumps({"meta": meta, "deploy": deploy, "watcher": watcher, "teardown": teardown,
                          "kubectl": kube_result, "problems": problems}, indent=2, default=str))
    return exit_code if not left else 1


if __name__ == "__main__":
    sys.exit(main())
