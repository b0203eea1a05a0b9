"""Faults under load: a component dies in the middle of a burst of previews, and the burst costs seconds.

Each test runs a burst of BURST previews against the service's real processes (gunicorn, a django-q2 qcluster,
the cluster watcher) on a Postgres of their own (tests/fault_rig.py: killing it kills nothing else) and the
local control plane (kwok makes the pods ready), kills one component mid-burst, brings it back, and ends with
every preview ready within READY_WITHIN seconds of the component's return, no generation applied twice, no
preview overtaken by a newer one while it waited for a slot, and no slot left held.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from tests.conftest import ROOT, delete_namespaces
from tests.fault_rig import Report, Rig, api_answers, kill_apiserver, slow_manifests

pytestmark = [pytest.mark.kube, pytest.mark.e2e]
BURST = 20
READY_WITHIN = 60


@pytest.fixture(scope="module")
def rig(kubeconfig_path: str):
    rig = Rig(kubeconfig_path, env={"PREVIEWS_DEPLOY_RETRY_SECONDS": "3"})
    try:
        rig.prepare()
        for name in ("web", "qcluster", "watcher"):
            rig.start(name)
        yield rig
    finally:
        rig.close(keep_logs=True)


@pytest.fixture
def repo(rig: Rig, kube_api):
    """A repository of its own for one burst: (full name, token, id); its namespaces are deleted afterwards."""
    prefix = f"f{uuid.uuid4().hex[:5]}"
    full_name, token, repository_id = rig.repository(prefix)
    rig.watch_queue(repository_id)
    yield full_name, token, repository_id
    rig.stop_watching(repository_id)
    delete_namespaces(kube_api, prefix)


def start_burst(rig: Rig, full_name: str, token: str, manifests: str = "") -> tuple[threading.Thread, list]:
    answers: list = []
    thread = threading.Thread(target=lambda: answers.extend(rig.burst(full_name, token, BURST, manifests=manifests)),
                              daemon=True)
    thread.start()
    return thread, answers


def applied(rig: Rig, repository_id: int) -> int:
    return rig.sql("SELECT count(*) FROM previews_preview WHERE repository_id = %s AND applied_generation > 0",
                   [repository_id])[0][0]


def converged(rig: Rig, repository_id: int, returned: float, burst: threading.Thread, answers: list) -> Report:
    """Every preview ready within READY_WITHIN of the return; what the rig saw."""
    burst.join(timeout=120)
    assert answers == [201] * BURST, f"CI's requests were not all accepted: {answers}"
    try:
        rig.wait(lambda: rig.all_ready(repository_id, BURST), READY_WITHIN - (time.time() - returned),
                 "every preview to be ready")
    except TimeoutError:
        report = rig.report(repository_id)
        pytest.fail(f"not every preview was ready {READY_WITHIN}s after the return: {report.line(returned)}; "
                    f"{report.not_ready[:10]} (logs in {rig.workdir})")
    report = rig.report(repository_id)
    assert report.all_ready_at - returned <= READY_WITHIN
    assert report.applied_twice == 0, "a generation was applied twice"
    assert report.overtaken == 0, "a preview waited for a slot while a newer one was given one"
    assert report.slots_held_after == 0
    print(f"\n{report.line(returned)}")
    return report


def still_running(rig: Rig, *names: str) -> None:
    for name in names:
        assert all(p.poll() is None for p in rig.procs[name]), f"{name} exited (see {rig.workdir}/{name}.log)"


def test_postgres_killed_mid_burst_costs_seconds_and_every_process_survives(rig, repo):
    full_name, token, repository_id = repo
    burst, answers = start_burst(rig, full_name, token)
    rig.wait(lambda: applied(rig, repository_id) >= 3, 60, "the first deploys to be applied")
    rig.postgres_kill()
    status, body = rig.get(f"/api/v1/repos/{full_name}/previews/1", token)
    assert status == 503, body
    assert body["_content_type"] == "application/problem+json" and body["status"] == 503
    time.sleep(4)
    rig.postgres_up()
    returned = time.time()
    report = converged(rig, repository_id, returned, burst, answers)
    assert report.ready == BURST
    # No process was restarted: the web answers again, qcluster and the watcher carried on.
    still_running(rig, "web", "qcluster", "watcher")
    assert rig.get(f"/api/v1/repos/{full_name}/previews/1", token)[0] == 200
    # The schedules are neither lost nor duplicated: one of each, each due again.
    schedules = rig.sql("SELECT name, count(*), bool_and(next_run > now() - interval '2 minutes') "
                        "FROM django_q_schedule GROUP BY name")
    assert sorted(name for name, count, _due in schedules if count == 1) == ["reaper", "sleep", "sweep"]
    assert all(due for _name, _count, due in schedules)


def test_a_worker_killed_mid_apply_is_replaced_and_its_deploy_runs_again_at_once(rig, repo):
    full_name, token, repository_id = repo
    burst, answers = start_burst(rig, full_name, token)
    # This worker only (django-q2's guard starts another), and only while it holds a deploy lock.
    preview_id = rig.wait(rig.kill_worker_mid_deploy, 60, "a worker in the middle of a deploy", interval=0.02)
    returned = time.time()
    converged(rig, repository_id, returned, burst, answers)
    lost = rig.sql("SELECT details->>'lost' FROM previews_previewevent WHERE preview_id = %s AND action = "
                   "'deploy requeued'", [preview_id])
    assert lost == [("running",)], "the killed worker's deploy was handed out again as a lost run"
    still_running(rig, "qcluster")


def test_the_watcher_killed_while_a_standby_waits_the_standby_takes_over(rig, repo):
    full_name, token, repository_id = repo
    standby = rig.start("watcher")
    [leader] = [p for p in rig.procs["watcher"] if p is not standby and p.poll() is None]
    rig.wait(lambda: rig.sql("SELECT count(*) FROM previews_watcherstatus WHERE holder LIKE %s AND NOT is_leader",
                             [f"%:{standby.pid}"])[0][0], 30, "the second watcher to stand by")
    burst, answers = start_burst(rig, full_name, token)
    rig.wait(lambda: applied(rig, repository_id) >= 3, 60, "the first deploys to be applied")
    rig.kill(leader)
    killed_at = time.time()
    rig.wait(lambda: rig.sql("SELECT count(*) FROM previews_watcherstatus WHERE holder LIKE %s AND is_leader",
                             [f"%:{standby.pid}"])[0][0], 15, "the standby to lead")
    took_over = time.time() - killed_at
    assert took_over <= 10  # the leader's lock went with its session; the standby asks every 5 s
    converged(rig, repository_id, time.time(), burst, answers)


def test_the_web_restarted_while_ci_waits_for_ready(rig, repo):
    full_name, token, repository_id = repo
    # Pods ready 12 s after they start: CI is still waiting when the web process goes.
    burst, answers = start_burst(rig, full_name, token, manifests=slow_manifests("12s"))
    burst.join(timeout=120)
    seen: dict[int, list[int]] = {}

    def ci_waits(pr: int) -> None:
        # As CI's step does: GET ?wait=, and on no answer or a 5xx, ask again.
        deadline = time.monotonic() + 2 * READY_WITHIN
        while time.monotonic() < deadline:
            status, body = rig.get(f"/api/v1/repos/{full_name}/previews/{pr}?wait=30", token, timeout=45)
            seen.setdefault(pr, []).append(status)
            if status == 200 and body.get("status") == "ready":
                return
            time.sleep(0.5)

    waiters = [threading.Thread(target=ci_waits, args=(pr,), daemon=True) for pr in range(BURST - 3, BURST + 1)]
    for w in waiters:
        w.start()
    time.sleep(1)
    [web] = [p for p in rig.procs["web"] if p.poll() is None]
    rig.stop(web)
    rig.start("web")
    returned = time.time()
    assert not rig.all_ready(repository_id, BURST), "everything was ready before the web came back: no test"
    converged(rig, repository_id, returned, burst, answers)
    for w in waiters:
        w.join(timeout=READY_WITHIN)
    assert all(statuses[-1] == 200 for statuses in seen.values()), seen
    assert not any(s >= 500 and s != 503 for statuses in seen.values() for s in statuses), seen


def kube_state() -> str:
    return os.environ.get("PREVIEWS_STATE_DIR", str(ROOT / ".state")) + "/kube"


def test_the_api_server_killed_mid_burst_costs_seconds(rig, repo, kube_api):
    pidfile = f"{kube_state()}/pids/kube-apiserver.pid"
    if os.environ.get("PREVIEWS_TEST_KUBECONFIG") or not os.path.exists(pidfile):
        pytest.skip("the control plane is not this checkout's own (scripts/kube): it is not the test's to kill")
    full_name, token, repository_id = repo
    burst, answers = start_burst(rig, full_name, token)
    rig.wait(lambda: applied(rig, repository_id) >= 3, 60, "the first deploys to be applied")
    restart = kill_apiserver(pidfile, 3)
    assert not api_answers(kube_api)
    rig.wait(lambda: api_answers(kube_api), 120, "the API server to be back", interval=0.1)
    returned = time.time()
    assert not rig.all_ready(repository_id, BURST), "everything was ready before the API server came back: no test"
    converged(rig, repository_id, returned, burst, answers)
    assert restart.wait(timeout=120) == 0
