"""Sleep and wake on the real control plane: scale to zero remembering replicas, wake through a deploy that
the (in-process) cluster watcher marks ready, HPAs, and races with pushes and closes."""

from datetime import timedelta

import pytest
import yaml
from django.utils import timezone
from kubernetes import client

from previews import provisioning, services
from previews import sleep as sleeping
from previews.gateways import kube
from previews.models import Preview
from previews.services import Actor, PreviewRequest
from tests.conftest import ROOT, namespace_exists, wait_until

SHA1, SHA2 = "1" * 40, "2" * 40
CI = Actor("token", "ci")
ANN = Actor("user", "ann")
NOW = timezone.now()


# --- when a preview is due (pure) ----------------------------------------------------------------------------


def _due(**overrides) -> bool:
    fields = {"now": NOW, "sleep_after_hours": 8, "status": "ready", "desired": "up", "pinned": False,
              "last_activity_at": NOW - timedelta(hours=9), "ready_at": NOW - timedelta(hours=9),
              "created_at": NOW - timedelta(hours=10), **overrides}
    return sleeping.due(**fields)


@pytest.mark.parametrize("overrides,expected", [
    ({}, True),
    ({"status": "failed"}, True),
    ({"last_activity_at": None, "ready_at": None}, True),
    ({"last_activity_at": NOW - timedelta(hours=7)}, False),
    ({"ready_at": NOW - timedelta(hours=1)}, False),
    ({"last_activity_at": NOW - timedelta(hours=8)}, True),
    ({"sleep_after_hours": 0}, False),
    ({"sleep_after_hours": 10}, False),
    ({"pinned": True}, False),
    ({"desired": "down"}, False),
    ({"status": "deploying"}, False),
    ({"status": "pending"}, False),
    ({"status": "sleeping"}, False),
    ({"status": "deleting"}, False),
])
def test_when_a_preview_is_due_to_sleep(overrides, expected):
    assert _due(**overrides) is expected


@pytest.mark.django_db
def test_the_idle_pass_puts_only_idle_previews_to_sleep_and_counts_sleeping_ones_as_live(settings):
    from tests.factories import make_preview, make_repository

    repository = make_repository(sleep_after_hours=8, max_live_previews=2)
    idle = make_preview(repository, status="ready", last_activity_at=NOW - timedelta(hours=9))
    Preview.objects.filter(pk=idle.pk).update(created_at=NOW - timedelta(hours=10))
    busy = make_preview(repository, status="ready", last_activity_at=NOW - timedelta(hours=1))
    Preview.objects.filter(pk=busy.pk).update(created_at=NOW - timedelta(hours=10))
    never = make_preview(make_repository(sleep_after_hours=0), status="ready", last_activity_at=NOW - timedelta(days=9))
    assert sleeping.sleep_idle(NOW) == {"slept": 1, "retried": 0}
    assert [p.status for p in Preview.objects.filter(pk__in=[idle.pk, busy.pk, never.pk]).order_by("pk")] == [
        "sleeping", "ready", "ready"]
    assert Preview.objects.get(pk=idle.pk).events.get(action="sleep requested").actor == "idle"
    with pytest.raises(services.PreviewConflict, match="already has 2 live previews"):
        services.preview_upsert(repository=repository, pr_number=99, actor=CI,
                                request=PreviewRequest(head_sha=SHA1, images=("localhost/previews-sample:x",)))


# --- on the cluster ------------------------------------------------------------------------------------------

BUNDLE = (ROOT / "previews" / "samples" / "shop.yaml").read_text() + """
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  replicas: 3
  serviceName: db
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      containers:
        - name: db
          image: ghcr.io/demo/db:15
          resources:
            requests: {cpu: 100m, memory: 128Mi}
            limits: {cpu: 100m, memory: 128Mi}
"""

HPA_BUNDLE = BUNDLE + """
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
        - name: api
          image: ghcr.io/demo/api:1
          resources:
            requests: {cpu: 10m, memory: 16Mi}
            limits: {cpu: 50m, memory: 32Mi}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: api
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: api}
  minReplicas: 3
  maxReplicas: 5
  metrics:
    - type: Resource
      resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}
"""


def upsert(repository, sha=SHA1, manifests=BUNDLE) -> Preview:
    request = PreviewRequest(head_sha=sha, images=("localhost/previews-sample:pr-7",), manifests=manifests)
    return services.preview_upsert(repository=repository, pr_number=7, request=request, actor=CI).preview


def deploy(preview: Preview) -> str:
    preview.refresh_from_db()
    return provisioning.deploy(preview.pk, preview.generation)


def sleep_now(preview: Preview) -> str:
    services.preview_sleep(preview=preview, actor=ANN)
    preview.refresh_from_db()
    return sleeping.sleep(preview.pk, preview.generation)


def replicas(kube_api, namespace: str) -> dict[str, int]:
    apps = client.AppsV1Api(kube_api)
    found = {f"Deployment/{d.metadata.name}": d.spec.replicas for d in apps.list_namespaced_deployment(namespace).items}
    found |= {f"StatefulSet/{s.metadata.name}": s.spec.replicas
              for s in apps.list_namespaced_stateful_set(namespace).items}
    return found


def pods(kube_api, namespace: str) -> list[str]:
    return [p.metadata.name for p in client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items
            if not p.metadata.deletion_timestamp]


def ready_preview(repository, watcher, manifests=BUNDLE) -> Preview:
    preview = upsert(repository, manifests=manifests)
    assert deploy(preview) == "applied"
    watcher.status_of(preview, "ready")
    return preview


@pytest.mark.kube
def test_sleep_scales_to_zero_and_wake_restores_the_exact_replicas(preview_repo, kube_api, watcher):
    preview = ready_preview(preview_repo, watcher)
    ns = preview.namespace
    assert replicas(kube_api, ns) == {"Deployment/web": 2, "StatefulSet/db": 3}
    wait_until(lambda: len(pods(kube_api, ns)) == 5, message="5 pods")

    assert sleep_now(preview) == "slept"
    preview.refresh_from_db()
    assert preview.status == "sleeping" and preview.slept_at is not None
    assert preview.events.get(action="slept").details["replicas"] == {"Deployment/web": 2, "StatefulSet/db": 3}
    assert replicas(kube_api, ns) == {"Deployment/web": 0, "StatefulSet/db": 0}
    dep = client.AppsV1Api(kube_api).read_namespaced_deployment("web", ns)
    assert dep.metadata.annotations[kube.SLEEP_ANNOTATION] == "2"
    wait_until(lambda: pods(kube_api, ns) == [], timeout=60, message="the pods to go")
    assert sleeping.sleep(preview.pk, preview.generation) == "already asleep"  # a repeat is a no-op

    woken = services.preview_wake(preview=preview, actor=ANN)
    assert woken.status == "pending" and woken.generation == preview.generation + 1
    assert deploy(woken) == "applied"
    woken.refresh_from_db()
    assert woken.rollout["StatefulSet/db"] >= 2  # waits for the generation the restore produced
    watcher.status_of(woken, "ready")
    assert replicas(kube_api, ns) == {"Deployment/web": 2, "StatefulSet/db": 3}
    sts = client.AppsV1Api(kube_api).read_namespaced_stateful_set("db", ns)
    assert sts.status.ready_replicas == 3 and kube.SLEEP_ANNOTATION not in (sts.metadata.annotations or {})
    assert woken.events.filter(action="woken").exists()


@pytest.mark.kube
def test_a_push_wakes_a_sleeping_preview(preview_repo, kube_api, watcher):
    preview = ready_preview(preview_repo, watcher)
    assert sleep_now(preview) == "slept"
    pushed = upsert(preview_repo, sha=SHA2)
    assert pushed.status == "pending" and pushed.slept_at is None
    assert deploy(pushed) == "applied"
    watcher.status_of(pushed, "ready")
    assert replicas(kube_api, preview.namespace) == {"Deployment/web": 2, "StatefulSet/db": 3}


@pytest.mark.kube
def test_the_same_commit_from_ci_wakes_it_too(preview_repo, kube_api, watcher):
    preview = ready_preview(preview_repo, watcher)
    assert sleep_now(preview) == "slept"
    again = services.preview_upsert(repository=preview_repo, pr_number=7, actor=CI, request=PreviewRequest(
        head_sha=SHA1, images=("localhost/previews-sample:pr-7",), manifests=BUNDLE))
    assert again.deploy_enqueued and again.preview.events.filter(action="wake requested").exists()
    outcome = deploy(again.preview)
    again.preview.refresh_from_db()
    assert outcome == "applied", again.preview.status_message
    watcher.status_of(again.preview, "ready")
    assert replicas(kube_api, preview.namespace) == {"Deployment/web": 2, "StatefulSet/db": 3}


@pytest.mark.kube
def test_an_hpa_managed_workload_stays_down_while_asleep_and_comes_back_right(preview_repo, kube_api, watcher):
    preview = ready_preview(preview_repo, watcher, manifests=HPA_BUNDLE)
    ns = preview.namespace
    apps = client.AppsV1Api(kube_api)
    # The HPA controller raises the unset replicas (1) to its minimum.
    wait_until(lambda: apps.read_namespaced_deployment("api", ns).spec.replicas == 3, timeout=90,
               message="the HPA to scale api to 3")
    assert sleep_now(preview) == "slept"
    assert replicas(kube_api, ns)["Deployment/api"] == 0

    def hpa_disabled():
        hpa = client.AutoscalingV2Api(kube_api).read_namespaced_horizontal_pod_autoscaler("api", ns)
        return any(c.type == "ScalingActive" and c.status == "False" and c.reason == "ScalingDisabled"
                   for c in hpa.status.conditions or [])

    wait_until(hpa_disabled, timeout=90, message="the HPA to see zero replicas and stand back")
    assert replicas(kube_api, ns)["Deployment/api"] == 0

    preview = services.preview_wake(preview=preview, actor=ANN)
    assert deploy(preview) == "applied"
    watcher.status_of(preview, "ready")
    assert replicas(kube_api, ns) == {"Deployment/web": 2, "Deployment/api": 3, "StatefulSet/db": 3}


@pytest.mark.kube
def test_a_push_before_the_sleep_task_runs_makes_it_stale(preview_repo, kube_api, watcher):
    preview = ready_preview(preview_repo, watcher)
    services.preview_sleep(preview=preview, actor=ANN)
    preview.refresh_from_db()
    pushed = upsert(preview_repo, sha=SHA2)
    assert sleeping.sleep(preview.pk, preview.generation) == "stale"
    assert replicas(kube_api, preview.namespace) == {"Deployment/web": 2, "StatefulSet/db": 3}
    assert deploy(pushed) == "applied"
    watcher.status_of(pushed, "ready")


@pytest.mark.kube
def test_a_wake_after_the_sleep_task_started_restores_what_it_scaled(preview_repo, kube_api, watcher):
    """The sleep task and the wake's deploy hold the same per-preview lock: whichever runs second sees the
    first one's work. Here the sleep scales down (its generation is then superseded by the wake), and the
    wake's deploy restores everything from the annotations."""
    preview = ready_preview(preview_repo, watcher)
    services.preview_sleep(preview=preview, actor=ANN)
    preview.refresh_from_db()
    kube.sleep_workloads(preview.namespace)  # the task's work, done before the wake's generation commits
    woken = services.preview_wake(preview=preview, actor=ANN)
    assert not services.preview_slept(preview_id=preview.pk, generation=preview.generation, workloads={})
    assert deploy(woken) == "applied"
    watcher.status_of(woken, "ready")
    assert replicas(kube_api, preview.namespace) == {"Deployment/web": 2, "StatefulSet/db": 3}


@pytest.mark.kube
def test_closing_a_sleeping_preview_deletes_it_and_a_late_sleep_does_nothing(preview_repo, kube_api, watcher):
    preview = ready_preview(preview_repo, watcher)
    services.preview_sleep(preview=preview, actor=ANN)
    preview.refresh_from_db()
    gone = services.preview_destroy(preview=preview, actor=CI, reason="PR #7 closed")
    assert sleeping.sleep(preview.pk, preview.generation) == "stale"
    assert replicas(kube_api, preview.namespace) == {"Deployment/web": 2, "StatefulSet/db": 3}
    assert provisioning.teardown(gone.pk, gone.generation) in ("terminating", "deleted")
    watcher.status_of(gone, "deleted", timeout=120)
    assert not namespace_exists(client.CoreV1Api(kube_api), preview.namespace)
    with pytest.raises(services.PreviewConflict, match="being deleted"):
        services.preview_wake(preview=gone, actor=ANN)


@pytest.mark.kube
def test_a_deploying_preview_does_not_sleep(preview_repo):
    preview = upsert(preview_repo)
    with pytest.raises(services.PreviewConflict, match="only a ready or failed preview can sleep"):
        services.preview_sleep(preview=preview, actor=ANN)


def test_the_bundles_are_valid_yaml():
    assert [d["kind"] for d in yaml.safe_load_all(HPA_BUNDLE)][-3:] == ["StatefulSet", "Deployment",
                                                                         "HorizontalPodAutoscaler"]


# --- the reaper: previews asleep too long (pure plan) ----------------------------------------------------------


@pytest.mark.parametrize("slept_for,slept_ago,pinned,expected", [
    (timedelta(days=3), timedelta(days=4), False, ("delete", "asleep too long")),
    (timedelta(days=3), timedelta(days=2), False, ("keep", "PR open")),
    (None, timedelta(days=400), False, ("keep", "PR open")),
    (timedelta(days=3), None, False, ("keep", "PR open")),
    (timedelta(days=3), timedelta(days=4), True, ("keep", "pinned")),
])
def test_the_reaper_deletes_previews_asleep_too_long(slept_for, slept_ago, pinned, expected):
    from previews import reaper as r

    record = r.PreviewRecord(id=1, repository_id=1, repository="acme/shop", pr_number=1, namespace="pr-1",
                             desired="up", status="sleeping", expires_at=NOW + timedelta(days=9), pinned=pinned,
                             generation=3, slept_at=NOW - slept_ago if slept_ago else None)
    namespace = r.ClusterNamespace(name="pr-1", uid="u", created_at=NOW - timedelta(days=9), labels={
        "app.kubernetes.io/managed-by": "pr-previews", "previews.dev/repository-id": "1"})
    plan = r.plan([namespace], [record], {1: frozenset({1})}, NOW, r.ReaperSettings(slept_for=slept_for),
                  clocks=r.Clocks(NOW, NOW), allowance=100.0)
    [decision] = plan.decisions
    assert (decision.action, decision.reason) == expected


def _asleep_and_others():
    """Previews 1-3 asleep 4 days, 4 expired, 5 desired down, 6 closed; an old orphan."""
    from previews import reaper as r

    labels = {"app.kubernetes.io/managed-by": "pr-previews", "previews.dev/repository-id": "1"}

    def record(number, **changes):
        fields = dict(id=number, repository_id=1, repository="acme/shop", pr_number=number, namespace=f"pr-{number}",
                      desired="up", status="ready", expires_at=NOW + timedelta(days=9), pinned=False, generation=3)
        return r.PreviewRecord(**{**fields, **changes})

    records = [record(n, status="sleeping", slept_at=NOW - timedelta(days=4)) for n in (1, 2, 3)]
    records += [record(4, expires_at=NOW - timedelta(hours=1)), record(5, desired="down"), record(6)]
    namespaces = [r.ClusterNamespace(name=f"pr-{n}", uid=f"u{n}", created_at=NOW - timedelta(days=9), labels=labels)
                  for n in range(1, 7)]
    namespaces.append(r.ClusterNamespace(name="orphan", uid="uo", created_at=NOW - timedelta(days=9), labels=labels))
    namespaces += [r.ClusterNamespace(name=f"young-{i}", uid=f"y{i}", created_at=NOW, labels=labels)
                   for i in range(10)]
    return namespaces, records, {1: frozenset({1, 2, 3, 4, 5})}


def test_asleep_too_long_goes_after_expired_and_before_orphans_under_the_rate():
    from previews import reaper as r

    namespaces, records, open_prs = _asleep_and_others()
    plan = r.plan(namespaces, records, open_prs, NOW, r.ReaperSettings(slept_for=timedelta(days=3)),
                  clocks=r.Clocks(NOW, NOW), allowance=5.0)
    assert [(d.namespace, d.reason) for d in sorted(plan.deletions, key=r.urgency)] == [
        ("pr-5", r.DESIRED_DOWN), ("pr-6", r.PR_CLOSED), ("pr-4", r.EXPIRED), ("pr-1", r.SLEPT_TOO_LONG),
        ("pr-2", r.SLEPT_TOO_LONG)]
    assert {d.namespace for d in plan.decisions if d.reason == r.RATE_LIMITED} == {"pr-3", "orphan"}


def test_asleep_too_long_rests_on_our_clock_not_on_outside_evidence():
    from previews import reaper as r

    assert r.SLEPT_TOO_LONG in r.CLOCK_DEPENDENT and r.SLEPT_TOO_LONG not in r.OUTSIDE_EVIDENCE
    namespaces, records, open_prs = _asleep_and_others()
    settings = r.ReaperSettings(slept_for=timedelta(days=3), breaker_min_deletions=1, breaker_share=0.0)
    skewed = r.plan(namespaces, records, open_prs, NOW, settings,
                    clocks=r.Clocks(NOW - timedelta(hours=2), NOW), allowance=100.0)
    assert skewed.expiry_paused and skewed.breaker_tripped
    assert {d.namespace for d in skewed.decisions if d.reason == r.CLOCKS_DISAGREE} == {"pr-1", "pr-2", "pr-3", "pr-4"}
    assert {d.namespace for d in skewed.deletions} == {"pr-5"}
    agreeing = r.plan(namespaces, records, open_prs, NOW, settings, clocks=r.Clocks(NOW, NOW), allowance=100.0)
    assert {d.namespace for d in agreeing.deletions} == {"pr-1", "pr-2", "pr-3", "pr-4", "pr-5"}


# --- what it costs, from the cluster; the API and the dashboard ------------------------------------------------


@pytest.mark.kube
def test_costs_come_from_the_cluster_and_show_what_sleeping_saves(preview_repo, kube_api, watcher, client,
                                                                  admin_client):
    from django.core.cache import cache

    preview = ready_preview(preview_repo, watcher)
    _, plaintext = services.token_create(name="ci", repository=preview_repo)
    base = f"/api/v1/repos/{preview_repo.owner}/{preview_repo.name}"
    url = f"{base}/costs"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {plaintext}", "content_type": "application/json"}
    cache.clear()
    body = client.get(url, **auth).json()
    # web: 2 x (10m, 16Mi); db: 3 x (100m, 128Mi)
    awake = {"cpu_millicores": 320, "memory_bytes": (2 * 16 + 3 * 128) * 2**20, "cpu": "320m", "memory": "416Mi"}
    assert body["total"]["requested"] == awake
    assert body["previews"][0]["saved_by_sleeping"]["cpu_millicores"] == 0

    response = client.post(f"{base}/previews/7/sleep", **auth)
    assert response.status_code == 202 and response.json()["status"] == "sleeping"
    preview.refresh_from_db()
    assert sleeping.sleep(preview.pk, preview.generation) == "slept"
    cache.clear()
    body = client.get(url, **auth).json()
    assert body["total"]["requested"]["cpu_millicores"] == 0
    assert body["total"]["saved_by_sleeping"] == awake
    assert body["previews"][0]["status"] == "sleeping"

    page = admin_client.get(f"/previews/{preview.pk}/").content.decode()
    assert 'id="wake"' in page and "sleeping saves CPU 320m, memory 416Mi" in page
    assert "416Mi" in admin_client.get("/costs/").content.decode()
    assert admin_client.post(f"/previews/{preview.pk}/wake").status_code == 302
    preview.refresh_from_db()
    assert preview.status == "pending" and preview.events.get(action="wake requested").actor == "admin"

    response = client.post(f"{base}/previews/7/wake", **auth)
    assert response.status_code == 202 and response.json()["status"] == "pending"  # awake already: unchanged
    assert deploy(preview) == "applied"
    watcher.status_of(preview, "ready")
    cache.clear()
    assert client.get(url, **auth).json()["total"]["requested"] == awake


@pytest.mark.django_db
def test_the_sleep_schedule_is_created(settings):
    from django.core.management import call_command
    from django_q.models import Schedule

    call_command("ensure_schedules")
    schedule = Schedule.objects.get(name="sleep")
    assert schedule.func == "previews.tasks.sleep_idle" and schedule.minutes == settings.PREVIEWS_SLEEP_CHECK_MINUTES
