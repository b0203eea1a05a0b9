"""Faults under load, at scale: the scenarios of tests/test_faults.py with more previews per burst.

    .venv/bin/python bench/faults.py [--previews 200] [--only postgres,worker,watcher,web,apiserver]

Each scenario runs on the rig of tests/fault_rig.py (gunicorn, a django-q2 qcluster with 2 workers and the
watcher, on a Postgres of the rig's own, and the local control plane with kwok): a burst of N previews of a
fresh repository is requested through the API as CI does (asking again on 503 or no answer), one component
is killed mid-burst and brought back, and the rig reports, per scenario: the time from the component's
return to every preview ready, the longest any preview waited (request to ready), generations applied more
than once ("tasks run twice"), deploys handed out again (and of those, tasks lost while holding a slot),
previews overtaken (waited for a slot while a newer one was given one, sampled every 0.5 s), and slots still
held at the end. Needs the local control plane (`scripts/kube up`); kills its kube-apiserver in the
`apiserver` scenario (this checkout's own only) and restarts it with `scripts/kube up`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_model, env_or_script, log  # noqa: E402
from tests.fault_rig import Rig, api_answers, kill_apiserver, slow_manifests  # noqa: E402

SCENARIOS = ("postgres", "worker", "watcher", "web", "apiserver")


def applied(rig: Rig, repository_id: int) -> int:
    return rig.sql("SELECT count(*) FROM previews_preview WHERE repository_id = %s AND applied_generation > 0",
                   [repository_id])[0][0]


def run(rig: Rig, scenario: str, count: int, kube_api) -> str:
    prefix = f"b{uuid.uuid4().hex[:5]}"
    full_name, token, repository_id = rig.repository(prefix, max_live_previews=count)
    rig.watch_queue(repository_id)
    manifests = slow_manifests("12s") if scenario == "web" else ""
    answers: list[int] = []
    burst = threading.Thread(target=lambda: answers.extend(
        rig.burst(full_name, token, count, timeout=600, manifests=manifests)), daemon=True)
    started = time.time()
    burst.start()
    if scenario != "web":
        rig.wait(lambda: applied(rig, repository_id) >= 3, 300, "the first deploys to be applied")
    extra = ""
    if scenario == "postgres":
        rig.postgres_kill()
        time.sleep(8)  # as in the issue: back 8 s later
        rig.postgres_up()
    elif scenario == "worker":
        rig.wait(rig.kill_worker_mid_deploy, 300, "a worker in the middle of a deploy", interval=0.02)
    elif scenario == "watcher":
        standby = rig.start("watcher")
        rig.wait(lambda: rig.sql("SELECT count(*) FROM previews_watcherstatus WHERE holder LIKE %s",
                                 [f"%:{standby.pid}"])[0][0], 60, "the standby")
        [leader] = [p for p in rig.procs["watcher"] if p is not standby and p.poll() is None]
        rig.kill(leader)
        killed_at = time.time()
        rig.wait(lambda: rig.sql("SELECT count(*) FROM previews_watcherstatus WHERE holder LIKE %s AND is_leader",
                                 [f"%:{standby.pid}"])[0][0], 60, "the standby to lead")
        extra = f"; the standby led {time.time() - killed_at:.1f}s after the kill"
    elif scenario == "web":
        burst.join()
        [web] = [p for p in rig.procs["web"] if p.poll() is None]
        rig.stop(web)
        rig.start("web")
    elif scenario == "apiserver":
        pidfile = Path(os.environ.get("PREVIEWS_STATE_DIR", str(ROOT / ".state"))) / "kube" / "pids" / \
            "kube-apiserver.pid"
        restart = kill_apiserver(pidfile, 20)  # as in the issue: restarted 20 s later
        rig.wait(lambda: api_answers(kube_api), 300, "the API server", interval=0.1)
        restart.wait(timeout=300)
    returned = time.time()
    burst.join(timeout=120)  # a request still unanswered by then is reported as not accepted
    existing = rig.sql("SELECT count(*) FROM previews_preview WHERE repository_id = %s", [repository_id])[0][0]
    try:
        rig.wait(lambda: rig.all_ready(repository_id, existing), 300, "every preview ready", interval=0.5)
    except TimeoutError as exc:
        log(f"{scenario}: {exc}")
    rig.stop_watching(repository_id)
    report = rig.report(repository_id)
    accepted = sum(a in (200, 201) for a in answers)
    cleanup(kube_api, prefix)
    return (f"{scenario:9} {report.line(returned)}; requests accepted {accepted}/{count}; burst to the return "
            f"{returned - started:.1f}s{extra}")


def cleanup(kube_api, prefix: str) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    for ns in core.list_namespace().items:
        if ns.metadata.name.startswith(prefix + "-"):
            with contextlib.suppress(client.ApiException):
                core.delete_namespace(ns.metadata.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--previews", type=int, default=200)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    args = parser.parse_args()
    # A SIGTERM (a `timeout`, Ctrl-C's group) still stops the rig's processes and its Postgres (the finally below).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    scenarios = [s for s in args.only.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))} (known: {', '.join(SCENARIOS)})")
    from kubernetes import config

    kubeconfig = env_or_script("KUBECONFIG", "kube", "kubeconfig")
    kube_api = config.new_client_from_config(config_file=kubeconfig)
    rig = Rig(kubeconfig, env={"PREVIEWS_DEPLOY_RETRY_SECONDS": "5", "LOG_LEVEL": "WARNING"})
    print(f"faults: {args.previews} previews per burst, 2 workers, 4 deploy slots; {os.cpu_count()} CPUs "
          f"({cpu_model()})")
    try:
        log("preparing the rig (its own Postgres, migrations)")
        rig.prepare()
        for name in ("web", "qcluster", "watcher"):
            rig.start(name)
        for scenario in scenarios:
            log(f"scenario {scenario}")
            print(run(rig, scenario, args.previews, kube_api), flush=True)
    finally:
        rig.close(keep_logs=bool(os.environ.get("PREVIEWS_BENCH_KEEP_LOGS")))


if __name__ == "__main__":
    main()
