"""Benchmark: reaper cycles over N managed namespaces on the local cluster, beside one lookup per preview.

    cd /work/main && KUBECONFIG=$(scripts/kube kubeconfig) \\
        .venv/bin/python bench/reaper.py [--namespaces 1000] [--repositories 10] [--cycles 3] [--json]
        .venv/bin/python bench/reaper.py --real-deletion [--namespaces 1000] [--timeout 1800]

Setup: R repositories (`bench/reap-<hex>-<i>`, namespace prefix `rb<hex><i>`) with N/R ready previews each in
the database `previews_bench` (the one bench/provision.py uses; created and migrated when absent), N namespaces
on the cluster with the labels and annotations the service gives them (`provisioning.plan_deploy`), and the PRs
in a fake GitHub (tests/fake_github.py) on loopback: every 10th PR closed, the rest open.

Measured: `reaper_cycle.run_cycle(dry_run=True)`, --cycles times. Dry run: the plan is decided and recorded
(a ReaperRun row) but nothing is deleted; the cost of deleting namespaces is not measured. Per cycle: wall time,
Kubernetes API requests (counted by wrapping `kubernetes.client.rest.RESTClientObject.request` in this process:
the benchmark's own instrumentation, not a mock; every request still goes to the real API server), GitHub
requests (as the fake received them) and how many were answered 304 from the ETag cache, decisions by action.

Baseline, "one lookup per preview": `github.pull_state(repo, n)` per preview (and, in a second variant, also
`kube.read_namespace(name)` per preview), counted per cycle and measured for real on a sample, extrapolated.

--real-deletion: every preview expired an hour ago and every PR is open; a real `manage.py qcluster` (and the
engine's watcher, a `watch*` management command, when the checkout has one) runs against `previews_bench`, and real
reaper cycles run every PREVIEWS_REAPER_INTERVAL_MINUTES (the first at once) until every namespace is gone. The
cluster is shared, so each cycle's snapshot is narrowed to this run's namespaces (as the tests do): a cycle over
the whole cluster would take other people's managed namespaces for orphans. It refuses to start a worker while
`previews_bench` holds django-q schedules or queued tasks. Measured: time until every delete is issued (each of
the run's namespaces terminating or gone) and until every namespace is gone; then the same for
`kubectl delete namespace -l <label> --wait=false` of as many like namespaces (the namespace controller's floor).

Cleanup, also after an error, Ctrl-C or SIGTERM: the run's namespaces are deleted by name (and waited for, up to
300 s), its repositories, previews, ETag rows, ReaperRun rows and queued tasks deleted, the fake GitHub stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for `bench.common`

from bench.common import BENCH_DB, ROOT, cpu_model, log, setup_django
from bench.provision import kubeconfig_path, kubectl, server_version

CLEANUP_TIMEOUT = 300.0  # seconds to wait for the run's namespaces to be gone
CLOSED_EVERY = 10  # PR numbers divisible by this are closed in the fake GitHub (10% closed)
APISERVER_PID_FILE = ROOT / ".state" / "kube" / "pids" / "kube-apiserver.pid"
# The reaper settings the run uses (environment variables of the same name win): the service's defaults. With 10%
# of the PRs closed in the dry run the breaker (50%) stays closed, and the rate (300/min, 1500 a cycle) lets every
# deletion through.
REAPER_ENV = {
    "PREVIEWS_REAPER_DELETIONS_PER_MINUTE": "300",
    "PREVIEWS_REAPER_BREAKER_PERCENT": "50",
    "PREVIEWS_REAPER_BREAKER_MIN_DELETIONS": "5",
    "PREVIEWS_REAPER_GRACE_MINUTES": "60",
}


# --- instrumentation -------------------------------------------------------------------------


class KubeRequestCounter:
    """Counts the HTTP requests the kubernetes client makes in this process (every one still reaches the server)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.enabled = False
        self.calls: list[tuple[str, str, float, int]] = []  # method, path, seconds, status (0: no answer)

    def install(self) -> None:
        from kubernetes.client import rest

        original = rest.RESTClientObject.request
        counter = self

        def counting_request(client: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            status = 0
            try:
                response = original(client, method, url, *args, **kwargs)
                status = int(getattr(response, "status", 0) or 0)
                response.read()  # the body transfer belongs to the request; RESTResponse caches what it read
                return response
            except rest.ApiException as exc:
                status = int(exc.status or 0)
                raise
            finally:
                counter.record(method, url, time.perf_counter() - started, status)

        rest.RESTClientObject.request = counting_request

    def record(self, method: str, url: str, seconds: float, status: int) -> None:
        if self.enabled:
            with self._lock:
                self.calls.append((method.upper(), urlsplit(url).path, seconds, status))

    def start(self) -> None:
        with self._lock:
            self.calls = []
            self.enabled = True

    def stop(self) -> list[tuple[str, str, float, int]]:
        with self._lock:
            self.enabled = False
            return list(self.calls)


class OpenPullsRecorder:
    """Wraps `github.open_pull_numbers` (module attribute, as reaper_cycle calls it) to keep its results."""

    def __init__(self) -> None:
        self.results: list[tuple[str, Any, float]] = []  # full name, OpenPulls, seconds

    def install(self) -> None:
        from previews.gateways import github

        original = github.open_pull_numbers

        def recording(full_name: str) -> Any:
            started = time.perf_counter()
            result = original(full_name)
            self.results.append((full_name, result, time.perf_counter() - started))
            return result

        github.open_pull_numbers = recording


class PhaseTimer:
    """Times the steps of a cycle by wrapping the module attributes run_cycle/take_snapshot call them through."""

    def __init__(self) -> None:
        self.seconds: Counter = Counter()

    def wrap(self, module: Any, name: str, label: str) -> None:
        original = getattr(module, name)

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started

        setattr(module, name, timed_call)

    def take(self) -> dict[str, float]:
        result = dict(self.seconds)
        self.seconds.clear()
        return result


class RssSampler:
    """Samples the kube-apiserver's resident memory (from /proc) in the background; keeps the maximum."""

    def __init__(self, interval: float = 0.25) -> None:
        self.pid = _read_pid(APISERVER_PID_FILE)
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def current_kib(self) -> int | None:
        return _proc_status_kib(self.pid, "VmRSS")

    def high_water_kib(self) -> int | None:
        return _proc_status_kib(self.pid, "VmHWM")

    def start(self) -> None:
        if self.pid is not None:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            value = self.current_kib()
            if value is not None:
                self.peak_kib = max(self.peak_kib, value)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _proc_status_kib(pid: int | None, key: str) -> int | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


# --- setup ------------------------------------------------------------------------------------------


@dataclass
class BenchState:
    """Everything this run created, so cleanup deletes exactly that."""

    run_hex: str
    repository_ids: list[int] = field(default_factory=list)
    repository_names: list[str] = field(default_factory=list)
    namespace_names: list[str] = field(default_factory=list)  # every name this run creates (or tried to)
    reaper_run_ids: list[int] = field(default_factory=list)
    github_state_keys_before: set[str] = field(default_factory=set)


def namespace_names_in_cluster() -> set[str] | None:
    """Every namespace's name (one raw list call), or None when the API did not answer."""
    states = namespace_states()
    return None if states is None else set(states)


def pick_run_hex() -> str:
    """A 6-hex id no namespace name and no repository prefix starts with yet."""
    from previews.models import Repository

    existing = namespace_names_in_cluster()
    if existing is None:
        raise SystemExit("the Kubernetes API did not answer a namespace list")
    while True:
        candidate = secrets.token_hex(3)
        prefix = f"rb{candidate}"
        if not any(name.startswith(prefix) for name in existing) and not Repository.objects.filter(
                namespace_prefix__startswith=prefix).exists():
            return candidate


def create_rows(state: BenchState, namespaces: int, repositories: int, *, expired: bool = False) -> list[Any]:
    """Repositories and ready previews (bulk-inserted); returns the previews with their repositories.

    `expired`: every preview expired an hour ago (the real-deletion mode); else 2 to 6 days ahead.
    """
    from django.db import transaction
    from django.utils import timezone

    from previews.models import Preview, Repository

    template = (ROOT / "previews" / "samples" / "shop.yaml").read_text()
    per_repo = [namespaces // repositories + (1 if i < namespaces % repositories else 0) for i in range(repositories)]
    now = timezone.now()
    rng = random.Random(state.run_hex)
    with transaction.atomic():
        repos = []
        for i in range(repositories):
            repo = Repository.objects.create(
                owner="bench", name=f"reap-{state.run_hex}-{i}", base_domain="preview.example.com",
                namespace_prefix=f"rb{state.run_hex}{i}", manifest_template=template,
                image_name="localhost/previews-sample", max_live_previews=max(20, per_repo[i]))
            repos.append(repo)
            state.repository_ids.append(repo.pk)
            state.repository_names.append(repo.full_name)
        rows = []
        for repo, count in zip(repos, per_repo, strict=True):
            for n in range(1, count + 1):
                sha = secrets.token_hex(20)
                namespace = f"{repo.namespace_prefix}-{n}"
                rows.append(Preview(
                    repository=repo, pr_number=n, namespace=namespace, url=f"https://{namespace}.{repo.base_domain}",
                    head_sha=sha, images={"localhost/previews-sample": f"localhost/previews-sample:pr-{n}-{sha[:7]}"},
                    desired=Preview.Desired.UP, status=Preview.Status.READY, generation=1, observed_generation=1,
                    # 2 to 6 days ahead: beyond the 24 h expiry warning, so no warn-expiry decisions
                    expires_at=now - timedelta(hours=1) if expired else now + timedelta(hours=rng.uniform(48, 144)),
                    ready_at=now,
                    title=f"bench PR {n}", author="bench"))
        Preview.objects.bulk_create(rows, batch_size=500)
    previews = list(Preview.objects.filter(repository_id__in=state.repository_ids).select_related("repository")
                    .order_by("repository_id", "pr_number"))
    state.namespace_names = [p.namespace for p in previews]
    return previews


def namespace_bodies(previews: list[Any]) -> list[dict]:
    """The Namespace each preview's deploy would create: labels and annotations from `plan_deploy`."""
    from previews import provisioning

    bodies = []
    for preview in previews:
        plan = provisioning.plan_deploy(preview)
        bodies.append({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": preview.namespace, "labels": dict(plan.namespace_labels),
                                    "annotations": dict(plan.namespace_annotations)}})
    return bodies


def create_namespace(body: dict) -> str:
    """Create one namespace (thread-safe: one ApiClient per thread); returns "" or the error."""
    from kubernetes import client

    from previews.gateways import kube

    core = client.CoreV1Api(kube.api_client())
    for attempt in range(4):
        try:
            core.create_namespace(body, _request_timeout=(5, 30))
            return ""
        except client.ApiException as exc:
            if exc.status == 409:
                return f"{body['metadata']['name']}: already exists (not ours; left alone)"
            if exc.status not in (429, 500, 502, 503, 504) or attempt == 3:
                return f"{body['metadata']['name']}: HTTP {exc.status} {exc.reason}"
        except Exception as exc:
            if attempt == 3:
                return f"{body['metadata']['name']}: {exc.__class__.__name__}: {exc}"
        time.sleep(0.5 * 2 ** attempt)
    return "unreachable"


def create_namespaces(bodies: list[dict], workers: int) -> list[str]:
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ns-create") as pool:
        return [error for error in pool.map(create_namespace, bodies) if error]


def seed_github(fake: Any, previews: list[Any], closed_every: int = CLOSED_EVERY) -> Counter:
    states: Counter = Counter()
    for preview in previews:
        state = "closed" if closed_every and preview.pr_number % closed_every == 0 else "open"
        fake.add_pull(preview.repository.full_name, preview.pr_number, state=state, head_sha=preview.head_sha,
                      title=preview.title, author="bench")
        states[state] += 1
    return states


# --- the cycles ------------------------------------------------------------------------------------


@dataclass
class CycleReport:
    index: int
    seconds: float
    kube_calls: int
    kube_seconds: float
    kube_requests: dict[str, int]
    github_calls: int
    github_calls_ours: int
    github_200: int
    github_304: int
    github_failed: int  # requests of listings that ended unknown (errors, 404 for a repository the fake lacks)
    github_seconds: float
    rate_limit_used: int  # by the fake's own count: non-304 responses
    service_reported: dict[str, int]
    managed_namespaces_seen: int
    ours_seen: int
    previews_seen: int
    actions: dict[str, int]
    ours_by_reason: dict[str, int]
    alert: str
    reaper_run_id: int
    phases: dict[str, float]  # seconds per step of the cycle


def run_cycles(count: int, fake: Any, kube_counter: KubeRequestCounter, recorder: OpenPullsRecorder,
               phases: PhaseTimer, state: BenchState) -> list[CycleReport]:
    from django.db.models import Max

    from previews import reaper_cycle
    from previews.models import ReaperRun

    ours_ns = set(state.namespace_names)
    ours_repos = {name.lower() for name in state.repository_names}
    reports = []
    for index in range(1, count + 1):
        floor = ReaperRun.objects.aggregate(m=Max("id"))["m"] or 0
        fake.reset_requests()
        rate_before = fake.rate_limit_remaining
        recorder.results.clear()
        phases.take()
        kube_counter.start()
        started = time.perf_counter()
        try:
            result = reaper_cycle.run_cycle(dry_run=True)
        except BaseException:
            kube_counter.stop()
            # execute() creates its ReaperRun first; an unfinished dry-run row after the floor is this cycle's.
            state.reaper_run_ids += list(ReaperRun.objects.filter(id__gt=floor, dry_run=True, finished_at=None)
                                         .values_list("id", flat=True))
            raise
        seconds = time.perf_counter() - started
        kube_calls = kube_counter.stop()
        state.reaper_run_ids.append(result.run.pk)
        if not result.run.dry_run:
            raise SystemExit("the reaper ran without dry_run; stopping")  # cannot happen: run_cycle(dry_run=True)
        requests = fake.requests
        snapshot = result.snapshot
        ours_github = [r for r in requests if _repo_of(r.path) in ours_repos]
        not_modified = sum(r.not_modified for _, r, _ in recorder.results)
        reports.append(CycleReport(
            index=index, seconds=seconds, kube_calls=len(kube_calls), kube_seconds=sum(c[2] for c in kube_calls),
            kube_requests=dict(Counter(f"{m} {p} -> {s}" for m, p, _, s in kube_calls)),
            github_calls=len(requests), github_calls_ours=len(ours_github),
            github_200=sum(r.api_calls - r.not_modified for _, r, _ in recorder.results if r.known),
            github_304=not_modified, github_failed=sum(r.api_calls for _, r, _ in recorder.results if not r.known),
            github_seconds=sum(s for _, _, s in recorder.results),
            rate_limit_used=rate_before - fake.rate_limit_remaining,
            service_reported={"kube_calls": snapshot.kube_calls, "github_calls": snapshot.github_calls},
            managed_namespaces_seen=len(snapshot.namespaces),
            ours_seen=sum(ns.name in ours_ns for ns in snapshot.namespaces), previews_seen=len(snapshot.previews),
            actions=dict(Counter(d.action for d in result.plan.decisions)),
            ours_by_reason=dict(Counter(f"{d.action}: {d.reason}" for d in result.plan.decisions
                                        if d.namespace in ours_ns)),
            alert=result.plan.alert, reaper_run_id=result.run.pk,
            phases={**phases.take(), "GitHub: open-PR listings": sum(s for _, _, s in recorder.results)}))
        unknown = {k: v for k, v in snapshot.github_reasons.items() if k.lower() in ours_repos}
        if unknown:
            log(f"cycle {index}: GitHub state unknown for the bench's repositories: {unknown}")
        log(f"cycle {index}: {seconds:.2f}s, {len(kube_calls)} kube calls, {len(requests)} GitHub calls "
            f"({not_modified} answered 304)")
    return reports


def _repo_of(path: str) -> str:
    parts = path.strip("/").split("/")
    return f"{parts[1]}/{parts[2]}".lower() if len(parts) >= 3 and parts[0] == "repos" else ""


# --- the baseline -----------------------------------------------------------------------------------


@dataclass
class BaselineSample:
    size: int
    github_requests: int
    github_request_paths: dict[str, int]
    github_seconds: float
    github_per_call_ms: float
    states: dict[str, int]
    state_mismatches: int
    kube_requests: int
    kube_seconds: float
    kube_per_call_ms: float


def measure_baseline(previews: list[Any], sample_size: int, fake: Any,
                     kube_counter: KubeRequestCounter) -> BaselineSample:
    """pull_state and read_namespace, one per sampled preview, sequentially as one cycle would call them."""
    from previews.gateways import github, kube

    sample = random.Random(0).sample(previews, min(sample_size, len(previews)))
    fake.reset_requests()
    states: Counter = Counter()
    mismatches = 0
    started = time.perf_counter()
    for preview in sample:
        result = github.pull_state(preview.repository.full_name, preview.pr_number)
        states[result.state] += 1
        expected = "closed" if preview.pr_number % CLOSED_EVERY == 0 else "open"
        mismatches += result.state != expected
    github_seconds = time.perf_counter() - started
    requests = fake.requests
    paths = Counter(f"{r.method} " + re.sub(r"/\d+$", "/{n}", re.sub(r"^/repos/[^/]+/[^/]+", "/repos/{o}/{r}", r.path))
                    for r in requests)

    kube_counter.start()
    started = time.perf_counter()
    for preview in sample:
        kube.read_namespace(preview.namespace)
    kube_seconds = time.perf_counter() - started
    kube_calls = kube_counter.stop()
    n = max(1, len(sample))
    return BaselineSample(
        size=len(sample), github_requests=len(requests), github_request_paths=dict(paths),
        github_seconds=github_seconds, github_per_call_ms=1000 * github_seconds / n, states=dict(states),
        state_mismatches=mismatches, kube_requests=len(kube_calls), kube_seconds=kube_seconds,
        kube_per_call_ms=1000 * kube_seconds / n)


# --- cleanup ----------------------------------------------------------------------------------------


def delete_namespace(name: str) -> str:
    from kubernetes import client

    from previews.gateways import kube

    core = client.CoreV1Api(kube.api_client())
    for attempt in range(4):
        try:
            core.delete_namespace(name, propagation_policy="Background", _request_timeout=(5, 30))
            return ""
        except client.ApiException as exc:
            if exc.status == 404:
                return ""
            if exc.status not in (409, 429, 500, 502, 503, 504) or attempt == 3:
                return f"{name}: HTTP {exc.status} {exc.reason}"
        except Exception as exc:
            if attempt == 3:
                return f"{name}: {exc.__class__.__name__}: {exc}"
        time.sleep(0.5 * 2 ** attempt)
    return "unreachable"


def cleanup_cluster(names: list[str], workers: int) -> dict[str, Any]:
    """Delete this run's namespaces by name, in parallel, and wait (bounded) for them to be gone."""
    started = time.perf_counter()
    mine = set(names)
    present = namespace_names_in_cluster()
    if present is None:
        time.sleep(2)
        present = namespace_names_in_cluster()
    targets = sorted(mine if present is None else mine & present)
    errors: list[str] = []
    if targets:
        log(f"cleanup: deleting {len(targets)} namespaces")
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ns-delete") as pool:
            errors = [e for e in pool.map(delete_namespace, targets) if e]
    requested = time.perf_counter() - started
    deadline = time.monotonic() + CLEANUP_TIMEOUT
    remaining = targets
    while remaining:
        present = namespace_names_in_cluster()
        remaining = sorted(mine & present) if present is not None else remaining
        if not remaining or time.monotonic() >= deadline:
            break
        time.sleep(2)
    if remaining:
        log(f"cleanup: {len(remaining)} namespaces still terminating after {CLEANUP_TIMEOUT:.0f}s: "
            f"{', '.join(remaining[:10])}{' ...' if len(remaining) > 10 else ''}")
    else:
        log("cleanup: all of the run's namespaces are gone")
    return {"deleted": len(targets), "delete_requests_seconds": requested,
            "gone_seconds": time.perf_counter() - started, "left_terminating": remaining, "errors": errors[:20]}


def cleanup_database(state: BenchState) -> dict[str, int]:
    from django.db.models import Q

    from previews.models import GitHubState, Preview, ReaperRun, Repository

    counts = {}
    counts["previews_and_events"] = Preview.objects.filter(repository_id__in=state.repository_ids).delete()[0]
    counts["repositories"] = Repository.objects.filter(id__in=state.repository_ids).delete()[0]
    keys = Q(pk__in=[])
    for name in state.repository_names:
        keys |= Q(key__startswith=f"pulls:{name.lower()}:")
    # The rate-limit / back-off rows are written by every GitHub answer; remove them only if this run made them.
    keys |= Q(key__in=["rate_limit", "backoff"]) & ~Q(key__in=state.github_state_keys_before)
    counts["github_state"] = GitHubState.objects.filter(keys).delete()[0]
    counts["reaper_runs"] = ReaperRun.objects.filter(id__in=state.reaper_run_ids).delete()[0]
    return counts


# --- report -----------------------------------------------------------------------------------------


def fmt_kib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.0f} MiB"


def print_report(report: dict) -> None:
    meta, setup, cycles, base, cmp = (report["meta"], report["setup"], report["cycles"], report["baseline"],
                                      report["comparison"])
    print()
    print(f"machine: {meta['nproc']} CPUs (nproc), {meta['cpu']}; kubernetes {meta['server_version']} "
          "(local control plane, kwok node)")
    print(f"namespaces: {meta['namespaces']} managed namespaces over {meta['repositories']} repositories "
          f"(ready previews in {BENCH_DB}); fake GitHub PRs: {meta['pr_states'].get('open', 0)} open, "
          f"{meta['pr_states'].get('closed', 0)} closed")
    print(f"reaper settings: {meta['reaper']['deletions_per_minute']} deletions/min (at most "
          f"{meta['reaper']['deletions_per_minute'] * meta['reaper']['interval_minutes']} a cycle), breaker "
          f"{meta['reaper']['breaker_percent']}% (min {meta['reaper']['breaker_min_deletions']}), grace "
          f"{meta['reaper']['grace_minutes']} min, interval {meta['reaper']['interval_minutes']} min")
    print("DRY RUN: every cycle is reaper_cycle.run_cycle(dry_run=True): the snapshot is taken, the plan decided "
          "and recorded (ReaperRun); nothing is deleted, so deletion cost is not measured")
    print("kube calls are HTTP requests counted by the benchmark's own wrapper around the kubernetes client's "
          "RESTClientObject.request (instrumentation, not a mock); GitHub calls as received by the fake GitHub")
    print(f"setup: {setup['seconds']:.1f}s total: database rows {setup['rows_seconds']:.1f}s, namespace bodies "
          f"(plan_deploy) {setup['bodies_seconds']:.1f}s, {meta['namespaces']} namespaces created "
          f"{setup['namespaces_seconds']:.1f}s ({setup['workers']} threads, "
          f"{setup['namespaces_per_second']:.0f}/s), fake GitHub {setup['github_seconds']:.1f}s")
    print()
    header = (f"{'cycle':>5} {'wall s':>7} {'kube calls':>10} {'kube s':>7} {'GitHub calls':>12} {'200':>4} "
              f"{'304':>4} {'GitHub s':>8}  decisions (all namespaces the reaper saw)")
    print(header)
    print("-" * len(header))
    for c in cycles:
        actions = ", ".join(f"{k} {v}" for k, v in sorted(c["actions"].items()))
        print(f"{c['index']:>5} {c['seconds']:>7.2f} {c['kube_calls']:>10} {c['kube_seconds']:>7.2f} "
              f"{c['github_calls']:>12} {c['github_200']:>4} {c['github_304']:>4} {c['github_seconds']:>8.2f}  "
              f"{actions}")
    first = cycles[0]
    print()
    labels = list(dict.fromkeys(k for c in cycles for k in c["phases"]))
    print(f"{'where the time went (s)':<44}" + "".join(f"{'cycle ' + str(c['index']):>9}" for c in cycles))
    for label in labels:
        print(f"{label:<44}" + "".join(f"{c['phases'].get(label, 0.0):>9.3f}" for c in cycles))
    print(f"{'rest (run_cycle glue)':<44}" + "".join(
        f"{c['seconds'] - sum(c['phases'].values()):>9.3f}" for c in cycles))
    print("(kube s in the first table is HTTP only, request to body read; the list step here adds deserializing "
          "the V1Namespace objects)")
    print()
    print("kube requests per cycle: " + "; ".join(f"{k} x{v}" for k, v in first["kube_requests"].items()))
    print(f"the reaper saw {first['managed_namespaces_seen']} managed namespaces ({first['ours_seen']} the bench's) "
          f"and {first['previews_seen']} live previews; the bench's namespaces: "
          + ", ".join(f"{k} {v}" for k, v in sorted(first["ours_by_reason"].items())))
    others = first["managed_namespaces_seen"] - first["ours_seen"]
    if others:
        print(f"  {others} managed namespace(s) not the bench's (others' tests on the shared cluster) were in the "
              "snapshot too; their decisions are in the table above (dry run: untouched)")
    if first["github_calls"] != first["github_calls_ours"]:
        print(f"  {first['github_calls'] - first['github_calls_ours']} GitHub request(s) per cycle were for "
              f"repositories with live previews in {BENCH_DB} that are not the bench's; the fake does not know them")
    print(f"the service's own count (ReaperRun.summary): kube_calls {first['service_reported']['kube_calls']}, "
          f"github_calls {first['service_reported']['github_calls']} (cycle 1)")
    if first["alert"]:
        print(f"alert: {first['alert']}")
    print()
    print(f"baseline sample: {base['size']} x github.pull_state -> {base['github_requests']} requests to the fake "
          f"({', '.join(f'{k} x{v}' for k, v in base['github_request_paths'].items())}), "
          f"{base['github_seconds']:.2f}s = {base['github_per_call_ms']:.1f} ms/call, states "
          f"{base['states']}, {base['state_mismatches']} unexpected; {base['size']} x kube.read_namespace -> "
          f"{base['kube_requests']} requests, {base['kube_seconds']:.2f}s = {base['kube_per_call_ms']:.1f} ms/call")
    print()
    print(f"per cycle, {meta['namespaces']} previews       {'GitHub calls':>12} {'rate-limited':>12} "
          f"{'kube calls':>10} {'total':>6}  {'seconds':>8}")
    for row in cmp["rows"]:
        print(f"{row['label']:<36} {row['github_calls']:>12} {row['rate_limited']:>12} {row['kube_calls']:>10} "
              f"{row['total_calls']:>6}  {row['seconds']:>8.2f}  {row['seconds_note']}")
    print()
    for line in cmp["notes"]:
        print(line)
    mem = report["memory"]
    print()
    print(f"kube-apiserver RSS: {fmt_kib(mem['apiserver_before_kib'])} before setup, "
          f"{fmt_kib(mem['apiserver_after_setup_kib'])} after setup, {fmt_kib(mem['apiserver_after_cycles_kib'])} "
          f"after the cycles, peak sampled {fmt_kib(mem['apiserver_peak_sampled_kib'])} "
          f"(VmHWM since it started: {fmt_kib(mem['apiserver_vmhwm_kib'])}); benchmark process peak RSS "
          f"{fmt_kib(mem['bench_peak_kib'])}")
    clean = report.get("cleanup", {})
    if clean:
        cluster = clean.get("cluster", {})
        print(f"cleanup: {cluster.get('deleted', 0)} namespaces deleted, gone after "
              f"{cluster.get('gone_seconds', 0):.1f}s, {len(cluster.get('left_terminating', []))} left terminating; "
              f"rows deleted: {clean.get('database', {})}")
    print(f"total run time: {report['meta']['wall_seconds']:.1f}s (setup, cycles, baseline and cleanup)")


def comparison(meta: dict, cycles: list[dict], base: dict) -> dict:
    n = meta["namespaces"]
    warm = cycles[1:] or cycles
    list_calls = cycles[0]["kube_calls"]
    ours_gh = round(statistics.median(c["github_calls_ours"] for c in warm))
    ours_200 = round(statistics.median(c["rate_limit_used"] for c in warm))
    ours_seconds = statistics.median(c["seconds"] for c in warm)
    kube_list_seconds = statistics.median(c["kube_seconds"] for c in warm)
    gh_extrapolated = base["github_per_call_ms"] * n / 1000
    ns_extrapolated = base["kube_per_call_ms"] * n / 1000
    rows = [
        {"label": "ours: open-PR listing per repo", "github_calls": ours_gh, "rate_limited": ours_200,
         "kube_calls": list_calls, "seconds": ours_seconds,
         "seconds_note": f"measured: median wall time of cycle{'s' if len(warm) > 1 else ''} "
                         f"{', '.join(str(c['index']) for c in warm)}"},
        {"label": "A: pull_state per preview", "github_calls": n, "rate_limited": n, "kube_calls": list_calls,
         "seconds": gh_extrapolated + kube_list_seconds,
         "seconds_note": f"lookups extrapolated from {base['size']} measured, + the labelled list"},
        {"label": "B: A + read_namespace per preview", "github_calls": n, "rate_limited": n,
         "kube_calls": n + list_calls, "seconds": gh_extrapolated + ns_extrapolated + kube_list_seconds,
         "seconds_note": f"lookups extrapolated from {base['size']} + {base['size']} measured, + the labelled list"},
    ]
    for row in rows:
        row["total_calls"] = row["github_calls"] + row["kube_calls"]
    ours = rows[0]
    per_hour = 60 // meta["reaper"]["interval_minutes"]

    def ratio(a: int, b: int) -> str:
        return f"{a / b:.0f}x" if b else "n/a"

    notes = [
        f"ratio baseline / ours, total API calls per cycle: A {ratio(rows[1]['total_calls'], ours['total_calls'])}, "
        f"B {ratio(rows[2]['total_calls'], ours['total_calls'])}; GitHub calls: "
        f"{ratio(n, ours['github_calls'])}",
        "rate-limited = responses other than 304 (GitHub does not charge an authorized conditional request "
        "answered 304); ours: counted by the fake for cycles after the first; the first cycle paid "
        f"{cycles[0]['rate_limit_used']}. pull_state sends no ETag, so every lookup is charged",
        f"at one cycle every {meta['reaper']['interval_minutes']} min ({per_hour}/h): ours "
        f"{ours['github_calls'] * per_hour} GitHub requests/h, {ours['rate_limited'] * per_hour} charged; "
        f"A and B {n * per_hour} requests/h, all charged (a token's limit is 5000/h)",
        "B still lists the managed namespaces: without the list it could not find orphans",
    ]
    return {"rows": rows, "notes": notes}


# --- real deletion -----------------------------------------------------------------------------------

REAL_TIMEOUT = 1800.0  # seconds to wait for every namespace to be gone, in each of the two runs
POLL = 0.5  # seconds between polls of the namespaces' states
QUEUE_FUNCS = ("previews.tasks.teardown_preview", "previews.tasks.sync_github", "previews.tasks.sync_github_many")


def namespace_states() -> dict[str, bool] | None:
    """{name: terminating} for every namespace (one raw list call), or None when the API did not answer."""
    from kubernetes import client

    from previews.gateways import kube

    try:
        # Raw JSON: deserializing thousands of V1Namespace objects would make each poll of the cleanup slow.
        response = client.CoreV1Api(kube.api_client()).list_namespace(_preload_content=False,
                                                                       _request_timeout=(5, 60))
        items = json.loads(response.data)["items"]
    except Exception as exc:
        log(f"listing namespaces failed: {exc}")
        return None
    return {ns["metadata"]["name"]: bool(ns["metadata"].get("deletionTimestamp")) for ns in items}


@dataclass
class Progress:
    """When every namespace of a set had its delete issued (terminating or gone), and when all were gone."""

    count: int
    issued_seconds: float | None = None
    gone_seconds: float | None = None
    left: list[str] = field(default_factory=list)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # seconds, terminating, gone

    def watch(self, names: list[str], started: float, timeout: float, extra: Callable[[float], None] | None = None,
              ) -> Progress:
        mine = set(names)
        deadline = started + timeout
        while True:
            states = namespace_states()
            now = time.perf_counter()
            if states is not None:
                present = mine & states.keys()
                terminating = sum(states[n] for n in present)
                gone = len(mine) - len(present)
                self.samples.append((now - started, terminating, gone))
                if self.issued_seconds is None and terminating + gone == len(mine):
                    self.issued_seconds = now - started
                    log(f"  every delete issued after {self.issued_seconds:.1f}s")
                if not present:
                    self.gone_seconds = now - started
                    log(f"  every namespace gone after {self.gone_seconds:.1f}s")
                    return self
                self.left = sorted(present)
                if len(self.samples) % 20 == 0:
                    log(f"  {now - started:.0f}s: {terminating} terminating, {gone} gone of {len(mine)}")
            if extra is not None:
                extra(now - started)
            if now >= deadline:
                log(f"  timed out after {timeout:.0f}s: {len(self.left)} still there")
                return self
            time.sleep(POLL)


def refuse_foreign_work() -> None:
    """The worker started below serves the whole bench database: refuse if it holds work that is not this run's."""
    from django_q.models import OrmQ, Schedule

    schedules = list(Schedule.objects.values_list("name", flat=True))
    if schedules:
        raise SystemExit(f"{BENCH_DB} has django-q schedules ({', '.join(schedules)}); a worker would run them "
                         "(a scheduled reaper would see the whole shared cluster). Remove them first.")
    queued = OrmQ.objects.count()
    if queued:
        raise SystemExit(f"{BENCH_DB} has {queued} queued task(s) from elsewhere; a worker would run them. "
                         "Drain or delete them first.")


def watcher_command() -> list[str] | None:
    """The engine's cluster watcher, when this checkout has one (a management command whose name starts with watch)."""
    commands = ROOT / "previews" / "management" / "commands"
    names = sorted(f.stem for f in commands.glob("watch*.py"))
    return ["manage.py", names[0]] if names else None


def start_process(args: list[str], log_name: str) -> tuple[subprocess.Popen, Any]:
    (ROOT / ".state").mkdir(exist_ok=True)
    log_file = open(ROOT / ".state" / log_name, "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=dict(os.environ), stdout=log_file,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log_file


def stop_process(proc: subprocess.Popen, log_file: Any) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    log_file.close()


def wait_for_worker(timeout: float = 60.0) -> float:
    """Seconds until the qcluster ran a trivial task."""
    from django_q.tasks import async_task, result

    started = time.perf_counter()
    task_id = async_task("math.floor", 1.5, task_name="bench-worker-ready")
    if result(task_id, wait=int(timeout * 1000)) != 1:
        raise SystemExit(f"the qcluster did not run a task within {timeout:.0f}s (see .state/qcluster-bench.log)")
    return time.perf_counter() - started


def real_cycle(state: BenchState, now: Any) -> Any:
    """One real (not dry) reaper cycle over this run's namespaces and previews only.

    The cluster is shared: a cycle over everything would see other people's managed namespaces as orphans.
    So the snapshot is taken as usual and then narrowed to this run's names, as the tests do.
    """
    from previews import reaper_cycle

    mine = set(state.namespace_names)
    snapshot = reaper_cycle.take_snapshot()
    snapshot.namespaces = [n for n in snapshot.namespaces if n.name in mine]
    snapshot.previews = [p for p in snapshot.previews if p.namespace in mine]
    return reaper_cycle.execute(reaper_cycle.decide(snapshot, now), snapshot, dry_run=False, now=now)


def run_real(state: BenchState, previews: list[Any], bodies: list[dict], workers: int,
             timeout: float) -> dict[str, Any]:
    """Ours: cycles (every interval, as scheduled) with a real qcluster (and watcher), until every namespace is gone.

    Then kubectl: `kubectl delete namespace -l <label> --wait=false` of as many like namespaces, until gone.
    """
    from django.conf import settings
    from django.utils import timezone

    from previews.models import Preview

    refuse_foreign_work()
    processes = []
    result: dict[str, Any] = {"watcher": None}
    try:
        processes.append(start_process(["manage.py", "qcluster"], "qcluster-bench.log"))
        watcher = watcher_command()
        if watcher:
            processes.append(start_process(watcher, "watcher-bench.log"))
            result["watcher"] = " ".join(watcher)
        result["worker_ready_seconds"] = wait_for_worker()
        log(f"ours: qcluster ready ({settings.Q_CLUSTER.get('workers')} workers)"
            + (f", watcher `{result['watcher']}`" if watcher else ", no watcher in this checkout"))

        names = [p.namespace for p in previews]
        ids = [p.pk for p in previews]
        interval = settings.PREVIEWS_REAPER_INTERVAL_MINUTES * 60
        cycles: list[dict[str, Any]] = []
        started = time.perf_counter()
        next_cycle = started

        def cycle_when_due(_elapsed: float) -> None:
            nonlocal next_cycle
            if time.perf_counter() < next_cycle:
                return
            cycle_started = time.perf_counter()
            cycle = real_cycle(state, timezone.now())
            state.reaper_run_ids.append(cycle.run.pk)
            seconds = time.perf_counter() - cycle_started
            deletions = len(cycle.plan.deletions)
            cycles.append({"at_seconds": cycle_started - started, "seconds": seconds, "deletions": deletions,
                           "errors": len(cycle.errors), "alert": cycle.plan.alert,
                           "counts": cycle.plan.counts(), "kube_calls": cycle.snapshot.kube_calls})
            log(f"ours: cycle {len(cycles)} at {cycle_started - started:.1f}s took {seconds:.2f}s: "
                f"{deletions} deletion(s) issued through the services, {len(cycle.errors)} error(s)"
                + (f"; alert: {cycle.plan.alert}" if cycle.plan.alert else ""))
            next_cycle = cycle_started + interval

        cycle_when_due(0.0)
        progress = Progress(len(names)).watch(names, started, timeout, extra=cycle_when_due)
        marked = Preview.objects.filter(pk__in=ids, status=Preview.Status.DELETED).count()
        result["ours"] = {"cycles": cycles, **asdict(progress), "marked_deleted": marked,
                          "samples": progress.samples[::10]}
        # Give the engine a moment to record the last deletions before the workers stop.
        deadline = time.monotonic() + 30
        while marked < len(ids) and time.monotonic() < deadline:
            time.sleep(1)
            marked = Preview.objects.filter(pk__in=ids, status=Preview.Status.DELETED).count()
        result["ours"]["marked_deleted_after_wait"] = marked
    finally:
        for proc, log_file in reversed(processes):
            stop_process(proc, log_file)

    # kubectl: as many namespaces with the same labels, deleted by one label-selected `kubectl delete`.
    label = f"rb{state.run_hex}-kubectl"
    like = []
    for i, body in enumerate(bodies, start=1):
        name = f"rb{state.run_hex}k-{i}"
        like.append({**body, "metadata": {**body["metadata"], "name": name,
                                          "labels": {**body["metadata"]["labels"], "previews.dev/bench": label}}})
        state.namespace_names.append(name)
    errors = create_namespaces(like, workers)
    if errors:
        raise SystemExit(f"{len(errors)} namespaces for the kubectl run could not be created, e.g. {errors[:3]}")
    log(f"kubectl: {len(like)} like namespaces created; kubectl delete namespace -l previews.dev/bench={label}")
    started = time.perf_counter()
    command = kubectl("delete", "namespace", "-l", f"previews.dev/bench={label}", "--wait=false",
                      timeout=timeout)
    command_seconds = time.perf_counter() - started
    if command.returncode != 0:
        log(f"kubectl delete failed: {command.stderr.strip()}")
    progress = Progress(len(like)).watch([b["metadata"]["name"] for b in like], started, timeout)
    result["kubectl"] = {"command_seconds": command_seconds, "returncode": command.returncode,
                         **asdict(progress), "samples": progress.samples[::10]}
    return result


def drop_queued_tasks(state: BenchState) -> int:
    """Tasks this run queued (or left results of) in the bench database."""
    from django_q.models import OrmQ, Task

    from previews.models import Preview

    ids = set(Preview.objects.filter(repository_id__in=state.repository_ids).values_list("pk", flat=True))

    def ours(name: str) -> bool:
        parts = str(name or "").split(":")
        return len(parts) >= 2 and parts[1].isdigit() and int(parts[1]) in ids

    dropped = 0
    for task in OrmQ.objects.all():
        if ours(task.name()):
            task.delete()
            dropped += 1
    stale = [t.pk for t in Task.objects.filter(func__in=QUEUE_FUNCS).only("id", "name") if ours(t.name)]
    dropped += Task.objects.filter(pk__in=stale).delete()[0]
    dropped += Task.objects.filter(name="bench-worker-ready").delete()[0]
    return dropped


def print_real_report(report: dict) -> None:
    meta, setup, real = report["meta"], report["setup"], report["real"]
    ours, theirs = real["ours"], real["kubectl"]
    n = meta["namespaces"]

    def fmt_s(value: float | None) -> str:
        return "not reached" if value is None else f"{value:.1f}s"

    print()
    print(f"machine: {meta['nproc']} CPUs (nproc), {meta['cpu']}; kubernetes {meta['server_version']} "
          "(local control plane, kwok node)")
    print(f"REAL DELETION: {n} ready previews over {meta['repositories']} repositories, all expired an hour ago, every "
          "PR open; their namespaces labelled as a deploy labels them")
    print(f"reaper settings: {meta['reaper']['deletions_per_minute']} deletions/min (at most "
          f"{meta['reaper']['deletions_per_minute'] * meta['reaper']['interval_minutes']} a cycle), breaker "
          f"{meta['reaper']['breaker_percent']}%, interval {meta['reaper']['interval_minutes']} min; a real qcluster "
          f"({meta['q_workers']} workers){', watcher ' + real['watcher'] if real['watcher'] else ', no watcher'}")
    print("ours: real reaper cycles (snapshot narrowed to this run's namespaces: the cluster is shared); each "
          "cycle brings the previews down through the services and issues their namespace deletes itself; the "
          "qcluster runs the PR syncs, the watcher records the ends; cycles every interval until all gone")
    print(f"setup: {setup['seconds']:.1f}s ({n} namespaces in {setup['namespaces_seconds']:.1f}s)")
    print()
    for i, cycle in enumerate(ours["cycles"], start=1):
        print(f"cycle {i} at {cycle['at_seconds']:.1f}s: {cycle['seconds']:.2f}s, {cycle['deletions']} deletions "
              f"issued, {cycle['errors']} errors, {cycle['kube_calls']} kube calls; "
              + "; ".join(f"{a} {sum(r.values())}" for a, r in cycle["counts"].items())
              + (f"; ALERT {cycle['alert']}" if cycle["alert"] else ""))
    print()
    print(f"{'':<34} {'all deletes issued':>18} {'all gone':>10}")
    print(f"{'ours (reaper + qcluster)':<34} {fmt_s(ours['issued_seconds']):>18} {fmt_s(ours['gone_seconds']):>10}")
    print(f"{'kubectl delete -l (the floor)':<34} {fmt_s(theirs['issued_seconds']):>18} "
          f"{fmt_s(theirs['gone_seconds']):>10}   (the command itself: {theirs['command_seconds']:.1f}s)")
    if ours["gone_seconds"] and theirs["gone_seconds"]:
        print(f"all gone, ours / floor: {ours['gone_seconds'] / theirs['gone_seconds']:.2f}x (target <= 1.1x); "
              f"deletes issued target <= 60s")
    print(f"previews recorded deleted by the engine: {ours['marked_deleted']} when the last namespace was gone, "
          f"{ours['marked_deleted_after_wait']} up to 30s later")
    if ours["left"] and ours["gone_seconds"] is None:
        print(f"left: {len(ours['left'])}, e.g. {', '.join(ours['left'][:5])}")
    clean = report.get("cleanup", {})
    if clean:
        cluster = clean.get("cluster", {})
        print(f"cleanup: {cluster.get('deleted', 0)} namespaces deleted, {len(cluster.get('left_terminating', []))} "
              f"left terminating; rows deleted: {clean.get('database', {})}")
    print(f"total run time: {report['meta']['wall_seconds']:.1f}s")


# --- main -------------------------------------------------------------------------------------------

_cleaning = threading.Event()


def _terminate(signum: int, _frame: Any) -> None:
    if _cleaning.is_set():
        log("signal received during cleanup; finishing the cleanup first")
        return
    raise SystemExit(128 + signum)  # unwinds through the finally block, so cleanup still runs


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--namespaces", type=int, default=1000, help="managed namespaces (default 1000)")
    parser.add_argument("--repositories", type=int, default=10, help="repositories they spread over (default 10)")
    parser.add_argument("--cycles", type=int, default=3, help="dry-run reaper cycles (default 3)")
    parser.add_argument("--baseline-sample", type=int, default=100,
                        help="previews to measure the one-lookup-per-preview baseline on (default 100)")
    parser.add_argument("--workers", type=int, default=8, help="threads creating/deleting namespaces (default 8)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--real-deletion", action="store_true",
                        help="instead of dry-run cycles: every preview expired an hour ago, real reaper cycles with a "
                             "real qcluster (and the watcher, if this checkout has one) until every namespace is gone, "
                             "beside kubectl delete of as many like namespaces")
    parser.add_argument("--timeout", type=float, default=REAL_TIMEOUT,
                        help=f"real deletion: seconds to wait for all namespaces to be gone, per run (default "
                             f"{REAL_TIMEOUT:.0f})")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not 1 <= args.repositories <= 100:
        parser.error("--repositories must be between 1 and 100")
    if not args.repositories <= args.namespaces <= 5000:
        parser.error("--namespaces must be between --repositories and 5000")
    if not 1 <= args.cycles <= 20:
        parser.error("--cycles must be between 1 and 20")
    wall_started = time.perf_counter()
    signal.signal(signal.SIGTERM, _terminate)

    from tests.fake_github import FakeGitHub

    fake = FakeGitHub().start()
    state: BenchState | None = None
    report: dict[str, Any] = {}
    sampler = RssSampler()
    try:
        # Settings read the environment once, at django.setup(): everything is set before setup_django().
        os.environ["KUBECONFIG"] = kubeconfig_path()
        os.environ["GITHUB_API_URL"] = fake.base_url
        os.environ["GITHUB_TOKEN"] = "bench-token"
        for key in ("GITHUB_APP_ID", "GITHUB_APP_INSTALLATION_ID", "GITHUB_APP_PRIVATE_KEY"):
            os.environ.pop(key, None)
        for key, value in REAPER_ENV.items():
            os.environ.setdefault(key, value)
        setup_django("config.settings_test")
        from django.conf import settings

        from previews.gateways import kube
        from previews.models import GitHubState

        assert fake.base_url == settings.GITHUB_API_URL, "GitHub is not the fake"
        server, _client_version = server_version()
        kube.ping()

        kube_counter = KubeRequestCounter()
        kube_counter.install()
        recorder = OpenPullsRecorder()
        recorder.install()
        phases = PhaseTimer()
        from previews import reaper, reaper_cycle, selectors

        phases.wrap(selectors, "reaper_preview_records", "database: live previews")
        phases.wrap(kube, "list_managed_namespaces_with_clock", "kube: list managed namespaces")
        phases.wrap(reaper, "plan", "plan")
        phases.wrap(reaper_cycle, "execute", "execute (dry run: record the ReaperRun)")

        state = BenchState(run_hex=pick_run_hex())
        state.github_state_keys_before = set(GitHubState.objects.filter(key__in=["rate_limit", "backoff"])
                                             .values_list("key", flat=True))
        meta: dict[str, Any] = {
            "nproc": len(os.sched_getaffinity(0)), "cpu": cpu_model(), "server_version": server,
            "namespaces": args.namespaces, "repositories": args.repositories, "cycles": args.cycles,
            "database": BENCH_DB, "run_id": state.run_hex, "namespace_prefix": f"rb{state.run_hex}<i>-",
            "dry_run": not args.real_deletion, "mode": "real deletion" if args.real_deletion else "dry run",
            "q_workers": settings.Q_CLUSTER.get("workers"),
            "reaper": {"deletions_per_minute": settings.PREVIEWS_REAPER_DELETIONS_PER_MINUTE,
                       "breaker_percent": settings.PREVIEWS_REAPER_BREAKER_PERCENT,
                       "breaker_min_deletions": settings.PREVIEWS_REAPER_BREAKER_MIN_DELETIONS,
                       "grace_minutes": settings.PREVIEWS_REAPER_GRACE_MINUTES,
                       "interval_minutes": settings.PREVIEWS_REAPER_INTERVAL_MINUTES},
        }
        report["meta"] = meta
        memory: dict[str, Any] = {"apiserver_pid": sampler.pid, "apiserver_before_kib": sampler.current_kib()}
        report["memory"] = memory
        sampler.start()
        log(f"benchmark rb{state.run_hex}: {args.namespaces} namespaces over {args.repositories} repositories, "
            f"database {BENCH_DB}, kubernetes {server}, fake GitHub {fake.base_url}")

        setup_started = time.perf_counter()
        previews, rows_seconds = timed(lambda: create_rows(state, args.namespaces, args.repositories,
                                                           expired=args.real_deletion))
        bodies, bodies_seconds = timed(lambda: namespace_bodies(previews))
        log(f"setup: {len(previews)} previews in {rows_seconds:.1f}s; creating {len(bodies)} namespaces")
        errors, namespaces_seconds = timed(lambda: create_namespaces(bodies, args.workers))
        if errors:
            raise SystemExit(f"{len(errors)} namespaces could not be created, e.g. {errors[:3]}")
        pr_states, github_seconds = timed(
            lambda: seed_github(fake, previews, closed_every=0 if args.real_deletion else CLOSED_EVERY))
        meta["pr_states"] = dict(pr_states)
        report["setup"] = {
            "seconds": time.perf_counter() - setup_started, "rows_seconds": rows_seconds,
            "bodies_seconds": bodies_seconds, "namespaces_seconds": namespaces_seconds, "workers": args.workers,
            "namespaces_per_second": len(bodies) / namespaces_seconds if namespaces_seconds else 0.0,
            "github_seconds": github_seconds}
        memory["apiserver_after_setup_kib"] = sampler.current_kib()
        log(f"setup: {len(bodies)} namespaces in {namespaces_seconds:.1f}s; total setup "
            f"{report['setup']['seconds']:.1f}s")

        if args.real_deletion:
            report["real"] = run_real(state, previews, bodies, args.workers, args.timeout)
            memory["apiserver_after_cycles_kib"] = sampler.current_kib()
        else:
            cycles = run_cycles(args.cycles, fake, kube_counter, recorder, phases, state)
            report["cycles"] = [asdict(c) for c in cycles]
            memory["apiserver_after_cycles_kib"] = sampler.current_kib()
            log(f"baseline: {args.baseline_sample} x pull_state and read_namespace")
            report["baseline"] = asdict(measure_baseline(previews, args.baseline_sample, fake, kube_counter))
            report["comparison"] = comparison(meta, report["cycles"], report["baseline"])
    except KeyboardInterrupt:
        log("interrupted; cleaning up before exiting")
        raise
    finally:
        _cleaning.set()
        sampler.stop()
        if "memory" in report:
            report["memory"].update(apiserver_peak_sampled_kib=sampler.peak_kib or None,
                                    apiserver_vmhwm_kib=sampler.high_water_kib(),
                                    bench_peak_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        cleanup: dict[str, Any] = {}
        if state is not None:
            try:
                dropped = drop_queued_tasks(state)
                if dropped:
                    log(f"cleanup: dropped {dropped} queued tasks and task results of this run")
            except Exception as exc:
                log(f"cleanup of the task queue failed: {exc}")
            try:
                cleanup["cluster"] = cleanup_cluster(state.namespace_names, args.workers)
            except Exception as exc:
                log(f"cleanup of the cluster failed: {exc}")
            try:
                cleanup["database"] = cleanup_database(state)
            except Exception as exc:
                log(f"cleanup of the database failed: {exc}")
        fake.stop()
        report["cleanup"] = cleanup
        if "meta" in report:
            report["meta"]["wall_seconds"] = time.perf_counter() - wall_started

    if "real" in report:
        print_real_report(report)
    else:
        print_report(report)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    left = report["cleanup"].get("cluster", {}).get("left_terminating")
    return 1 if left else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        sys.exit(f"{exc.cmd} failed: {exc.stderr}")
