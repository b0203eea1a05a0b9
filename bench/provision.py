"""Benchmark: N previews of the 4-object sample app, upsert -> ready, beside plain kubectl.

    cd /work/main && DJANGO_SETTINGS_MODULE=config.settings_test KUBECONFIG=$(scripts/kube kubeconfig) \\
        .venv/bin/python bench/provision.py [--previews 20] [--json]

For i in 1..N, interleaved so both approaches see the same cluster load:

* ours:    `services.preview_upsert(...)`, then `provisioning.deploy(id, generation)` in this process,
           synchronously (it applies and returns "applied"), then the cluster watcher's loop, also in this
           process (`Watcher().start()` once, then `step(wait=0.05)` until the preview is ready or failed).
           That is upsert -> ready *without* the django-q queue latency (no worker runs).
* kubectl: in a fresh namespace `<prefix>-k<i>`: `kubectl apply --server-side` of the namespace (same labels
           and annotations as ours), `kubectl apply --server-side -f <file>` of exactly the objects our
           service applies (plan.guardrails + plan.objects of preview i, namespace rewritten), then
           `kubectl rollout status deployment/web --timeout=120s`.

Both timings include creating the namespace. Everything runs against a separate database, `previews_bench`,
on the DATABASE_URL server (created and migrated when absent), so the dev database is never touched. All the
run's namespaces (prefix `bench<6 hex>-`) are deleted at the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for `bench.common`

from bench.common import BENCH_DB, ROOT, cpu_model, env_or_script, log, setup_django

CLEANUP_TIMEOUT = 300.0  # seconds to wait for the run's namespaces to be gone
KUBECTL_TIMEOUT = 180.0  # seconds any single kubectl call may take before it counts as failed
ROLLOUT_TIMEOUT = "120s"
WATCH_TIMEOUT = 120.0  # seconds our rollout may take (as kubectl's --timeout) before the run counts it failed
SYNC_TIMEOUT = 60.0  # seconds the in-process watcher may take to list every kind it follows


# --- environment: cluster ---------------------------------------------------------------------


def kubeconfig_path() -> str:
    """KUBECONFIG from the environment, or else the local cluster's (`scripts/kube kubeconfig`)."""
    return env_or_script("KUBECONFIG", "kube", "kubeconfig")


def kubectl(*args: str, timeout: float = KUBECTL_TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, 124, "", f"timed out after {timeout:.0f}s")


def server_version() -> tuple[str, str]:
    """(server gitVersion, client gitVersion) as `kubectl version -o json` reports them."""
    result = kubectl("version", "-o", "json", timeout=30)
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return "unknown", "unknown"
    return (data.get("serverVersion", {}).get("gitVersion", "unknown"),
            data.get("clientVersion", {}).get("gitVersion", "unknown"))


def namespaces_with_prefix(prefix: str) -> list[str] | None:
    """Names of the namespaces starting with `prefix-`, or None when kubectl failed."""
    result = kubectl("get", "namespaces", "-o", "name", timeout=60)
    if result.returncode != 0:
        return None
    names = [line.split("/", 1)[1] for line in result.stdout.split() if line.startswith("namespace/")]
    return [n for n in names if n.startswith(prefix + "-")]


# --- statistics -------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "median": None, "p95": None, "min": None, "max": None}
    return {"n": len(values), "median": statistics.median(values), "p95": percentile(values, 95),
            "min": min(values), "max": max(values)}


# --- the two approaches -----------------------------------------------------------------------


@dataclass
class Run:
    index: int
    namespace: str
    ok: bool = False
    seconds: float | None = None
    outcome: str = ""
    phases: dict[str, float] = field(default_factory=dict)


def start_watcher() -> Any:
    """The cluster watcher, in this process: its watch threads run from now on; its loop only when stepped."""
    from previews.engine.watcher import Watcher

    watcher = Watcher()
    watcher.start()
    deadline = time.monotonic() + SYNC_TIMEOUT
    while not watcher.synced:  # the lists arrive through the loop, so step until every kind is in
        if time.monotonic() >= deadline:
            watcher.stop()
            raise SystemExit(f"the in-process watcher did not list every kind within {SYNC_TIMEOUT:.0f}s "
                             f"(connected: {watcher.connected})")
        watcher.step(wait=0.05)
    return watcher


def run_ours(repository: Any, index: int, actor: Any, watcher: Any) -> tuple[Run, Any]:
    """Upsert preview `index`, deploy it synchronously, and step the watcher until it is ready (or failed).

    Returns the run and the preview (or None)."""
    from previews import links, provisioning, services
    from previews.models import Preview
    from previews.services import PreviewRequest

    sha = secrets.token_hex(20)
    request = PreviewRequest(head_sha=sha, images=(f"localhost/previews-sample:pr-{index}-{sha[:7]}",),
                             title=f"bench preview {index}", author="bench")
    run = Run(index, links.namespace_for(repository, index))
    watcher.step(wait=0)  # untimed: what the watches delivered meanwhile (kubectl's namespace) is processed first
    started = time.perf_counter()
    try:
        result = services.preview_upsert(repository=repository, pr_number=index, request=request, actor=actor)
        upserted = time.perf_counter()
        outcome = provisioning.deploy(result.preview.pk, result.preview.generation)
        applied = time.perf_counter()
        status = Preview.objects.values_list("status", flat=True).get(pk=result.preview.pk)
        while outcome == "applied" and status == "deploying" and time.perf_counter() - applied < WATCH_TIMEOUT:
            watcher.step(wait=0.05)
            status = Preview.objects.values_list("status", flat=True).get(pk=result.preview.pk)
    except Exception as exc:  # report and carry on with the next preview
        run.outcome = f"error: {exc.__class__.__name__}: {exc}"
        return run, None
    finished = time.perf_counter()
    preview = result.preview
    preview.refresh_from_db()
    run.seconds = finished - started
    run.phases = {"upsert": upserted - started, "apply": applied - upserted, "rollout": finished - applied}
    run.ok = outcome == "applied" and preview.status == "ready"
    if run.ok:
        run.outcome = "ready"
    elif outcome == "applied" and preview.status == "deploying":
        run.outcome = f"not ready after {WATCH_TIMEOUT:.0f}s ({preview.status_message})"
    else:
        run.outcome = f"{outcome} (status {preview.status}: {preview.status_message})"
    return run, preview


def kubectl_documents(preview: Any, namespace: str) -> tuple[dict, list[dict]]:
    """The Namespace and the objects our service applies for `preview`, moved to `namespace`."""
    from previews import provisioning

    plan = provisioning.plan_deploy(preview)
    ns = {"apiVersion": "v1", "kind": "Namespace",
          "metadata": {"name": namespace, "labels": dict(plan.namespace_labels),
                       "annotations": dict(plan.namespace_annotations)}}
    objects = []
    for obj in [*plan.guardrails, *plan.objects]:
        obj = copy.deepcopy(obj)
        obj["metadata"]["namespace"] = namespace
        objects.append(obj)
    return ns, objects


def run_kubectl(index: int, namespace: str, ns_file: Path, objects_file: Path) -> Run:
    run = Run(index, namespace)
    steps = [
        ("namespace", ["apply", "--server-side", "-f", str(ns_file)]),
        ("apply", ["apply", "--server-side", "-f", str(objects_file)]),
        ("rollout", ["rollout", "status", "deployment/web", "-n", namespace, f"--timeout={ROLLOUT_TIMEOUT}"]),
    ]
    started = time.perf_counter()
    for name, args in steps:
        step_started = time.perf_counter()
        result = kubectl(*args)
        run.phases[name] = time.perf_counter() - step_started
        if result.returncode != 0:
            run.outcome = f"kubectl {name} failed ({result.returncode}): {(result.stderr or result.stdout).strip()}"
            return run
    run.seconds = time.perf_counter() - started
    run.ok, run.outcome = True, "rolled out"
    return run


# --- cleanup ------------------------------------------------------------------------------------


def cleanup(prefix: str, previews: list[Any], queue_floor: int) -> list[str]:
    """Delete every namespace of this run and wait (bounded) for them; returns those still there."""
    from django_q.models import OrmQ

    from previews import provisioning, services
    from previews.services import Actor

    remaining: list[str] = []
    names = namespaces_with_prefix(prefix)
    if names is None:
        log("cleanup: kubectl get namespaces failed; retrying once")
        time.sleep(2)
        names = namespaces_with_prefix(prefix) or []
    if names:
        log(f"cleanup: deleting {len(names)} namespaces {prefix}-*")
        for start in range(0, len(names), 50):
            result = kubectl("delete", "namespace", "--ignore-not-found", "--wait=false", *names[start:start + 50])
            if result.returncode != 0:
                log(f"cleanup: kubectl delete failed: {result.stderr.strip()}")
        deadline = time.monotonic() + CLEANUP_TIMEOUT
        while True:
            left = namespaces_with_prefix(prefix)
            remaining = names if left is None else left
            if not remaining or time.monotonic() >= deadline:
                break
            time.sleep(1)
        if remaining:
            log(f"cleanup: still terminating after {CLEANUP_TIMEOUT:.0f}s: {', '.join(remaining)}")
        else:
            log("cleanup: all namespaces gone")

    # Record the teardown in the bench database through the service (the namespaces are already gone,
    # so teardown only confirms it), and drop the deploy/teardown tasks this run queued in the bench
    # database: no worker serves it, and one started later must not recreate the namespaces.
    actor = Actor("system", "bench")
    ids = set()
    for preview in previews:
        ids.add(preview.pk)
        try:
            destroyed = services.preview_destroy(preview=preview, actor=actor, reason="benchmark finished")
            if destroyed.namespace not in remaining:
                provisioning.teardown(destroyed.pk, destroyed.generation)
        except Exception as exc:
            log(f"cleanup: recording the teardown of {preview.namespace} failed: {exc}")
    dropped = 0
    for task in OrmQ.objects.filter(id__gt=queue_floor):
        name = str(task.name() or "")
        parts = name.split(":")
        if len(parts) == 3 and parts[1].isdigit() and int(parts[1]) in ids:
            task.delete()
            dropped += 1
    if dropped:
        log(f"cleanup: dropped {dropped} queued tasks of this run from {BENCH_DB}")
    return remaining


# --- main ---------------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def ratio(ours: float | None, theirs: float | None) -> float | None:
    return None if ours is None or not theirs else ours / theirs


def print_report(meta: dict, ours: list[Run], theirs: list[Run]) -> dict:
    rows = [("pr-previews: upsert -> ready", ours), ("kubectl apply + rollout", theirs)]
    stats = {label: summary([r.seconds for r in runs if r.ok and r.seconds is not None]) for label, runs in rows}
    s_ours, s_kubectl = stats[rows[0][0]], stats[rows[1][0]]
    print()
    print(f"machine: {meta['nproc']} CPUs (nproc), {meta['cpu']}")
    print(f"kubernetes: server {meta['server_version']} (kubectl client {meta['client_version']}); "
          "nodes are kwok-simulated, so pods become ready without pulling or running images")
    print(f"previews: {meta['previews']} of the 4-object sample app (ConfigMap, Deployment x2 replicas, Service, "
          "Ingress) + 3 guardrail objects, interleaved ours/kubectl")
    print("ours is measured in-process (preview_upsert + provisioning.deploy + the watcher's loop until ready), "
          "excluding django-q queue latency")
    print()
    print(f"{'approach':<30} {'n':>3} {'median':>8} {'p95':>8} {'min':>8} {'max':>8}   (seconds)")
    for label, _runs in rows:
        s = stats[label]
        print(f"{label:<30} {s['n']:>3} {fmt(s['median']):>8} {fmt(s['p95']):>8} {fmt(s['min']):>8} "
              f"{fmt(s['max']):>8}")
    r_median, r_p95 = ratio(s_ours["median"], s_kubectl["median"]), ratio(s_ours["p95"], s_kubectl["p95"])
    print()
    print(f"ratio ours / kubectl: median {fmt(r_median)}x, p95 {fmt(r_p95)}x")

    def phase_medians(runs: list[Run]) -> dict[str, float]:
        keys = list(dict.fromkeys(k for r in runs if r.ok for k in r.phases))
        return {k: statistics.median([r.phases[k] for r in runs if r.ok]) for k in keys}

    p_ours, p_kubectl = phase_medians(ours), phase_medians(theirs)
    if p_ours:
        print("  ours, median per phase:    " + ", ".join(f"{k} {v:.2f}s" for k, v in p_ours.items()))
    if p_kubectl:
        print("  kubectl, median per phase: " + ", ".join(f"{k} {v:.2f}s" for k, v in p_kubectl.items()))
    failures = [(label, r) for label, runs in rows for r in runs if not r.ok]
    if failures:
        print()
        print(f"FAILURES ({len(failures)}, left out of the statistics):")
        for label, r in failures:
            print(f"  {label} #{r.index} ({r.namespace}): {r.outcome}")
    print(f"\nwall time: {meta['wall_seconds']:.1f}s (including setup and cleanup)")
    return {"meta": meta, "summary": {"ours": s_ours, "kubectl": s_kubectl,
                                      "ratio": {"median": r_median, "p95": r_p95},
                                      "phase_medians": {"ours": p_ours, "kubectl": p_kubectl}},
            "runs": {"ours": [asdict(r) for r in ours], "kubectl": [asdict(r) for r in theirs]}}


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks, so cleanup still runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--previews", type=int, default=20, help="how many previews per approach (default 20)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.previews <= 500:
        parser.error("--previews must be between 1 and 500")
    wall_started = time.perf_counter()
    signal.signal(signal.SIGTERM, _terminate)

    os.environ["KUBECONFIG"] = kubeconfig_path()
    setup_django(os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings_test"))  # the environment's own wins
    from django.db.models import Max
    from django_q.models import OrmQ

    from previews import manifests
    from previews.gateways import kube
    from previews.gateways.kube import client as kube_client
    from previews.models import Repository
    from previews.services import Actor

    server, client_version = server_version()
    kube.ping()  # fails early, with the service's own error, when the cluster does not answer
    meta: dict[str, Any] = {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu_model(), "server_version": server,
                            "client_version": client_version, "previews": args.previews, "database": BENCH_DB}

    prefix = ""
    while not prefix:
        candidate = f"bench{secrets.token_hex(3)}"
        existing = namespaces_with_prefix(candidate)
        if existing == [] and not Repository.objects.filter(namespace_prefix=candidate).exists():
            prefix = candidate
    meta["namespace_prefix"] = prefix
    queue_floor = OrmQ.objects.aggregate(m=Max("id"))["m"] or 0
    repository = Repository.objects.create(
        owner="bench", name=f"shop-{prefix}", base_domain="preview.example.com", namespace_prefix=prefix,
        manifest_template=(ROOT / "previews" / "samples" / "shop.yaml").read_text(),
        image_name="localhost/previews-sample", max_live_previews=max(20, args.previews),
    )
    actor = Actor("token", "bench")
    log(f"benchmark {prefix}: {args.previews} previews per approach, database {BENCH_DB}, kubernetes {server}")
    watcher = start_watcher()
    log(f"in-process watcher {watcher.holder}: every kind listed")

    # Warm both clients' API discovery first, as in a long-running worker and a used kubectl.
    for kind, versions in manifests.ALLOWED_KINDS.items():
        with contextlib.suppress(kube.KindNotServed):
            kube_client.resource_for(versions[0], kind)
    kubectl("api-resources", "-o", "name", timeout=60)

    ours: list[Run] = []
    theirs: list[Run] = []
    previews: list[Any] = []
    with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as tmp:
        try:
            for i in range(1, args.previews + 1):
                run, preview = run_ours(repository, i, actor, watcher)
                ours.append(run)
                if preview is not None:
                    previews.append(preview)
                line = f"[{i:>3}/{args.previews}] ours {fmt(run.seconds):>6}s {run.outcome}"
                if preview is None:
                    log(line + " | kubectl skipped: no preview to take the objects from")
                    continue
                namespace = f"{prefix}-k{i}"
                ns_doc, objects = kubectl_documents(preview, namespace)
                ns_file, objects_file = Path(tmp, f"{namespace}-ns.yaml"), Path(tmp, f"{namespace}.yaml")
                ns_file.write_text(yaml.safe_dump(ns_doc, sort_keys=False))
                objects_file.write_text(yaml.safe_dump_all(objects, sort_keys=False))
                krun = run_kubectl(i, namespace, ns_file, objects_file)
                theirs.append(krun)
                log(f"{line} | kubectl {fmt(krun.seconds):>6}s {krun.outcome}")
        except (KeyboardInterrupt, SystemExit):
            log("interrupted; cleaning up before exiting")
            raise
        finally:
            watcher.stop()
            remaining = cleanup(prefix, previews, queue_floor)
            meta["namespaces_left_terminating"] = remaining
            from previews.models import WatcherStatus

            WatcherStatus.objects.filter(holder=watcher.holder).delete()  # the in-process watcher's heartbeat row

    meta["wall_seconds"] = time.perf_counter() - wall_started
    report = print_report(meta, ours, theirs)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    all_ok = all(r.ok for r in ours) and all(r.ok for r in theirs) and len(theirs) == len(ours)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
