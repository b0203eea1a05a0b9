"""The provisioning engine on the real control plane (deploy, update, teardown, failures).

Deploy and teardown tasks apply and return; the cluster watcher (run here in
the test's own thread, on its database transaction) moves previews on.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from django.conf import settings
from kubernetes import client

from previews import manifests, provisioning, services
from previews.gateways import kube
from previews.models import Preview
from previews.services import Actor, PreviewRequest
from tests.conftest import ROOT, InProcessWatcher, namespace_exists, wait_until
from tests.test_manifests import BAD_BUNDLES

pytestmark = pytest.mark.kube

SHA1, SHA2 = "1" * 40, "2" * 40
CI = Actor("token", "ci")


def upsert(repository, pr=7, sha=SHA1, image="localhost/previews-sample:pr-7-1111111", **kw) -> Preview:
    request = PreviewRequest(head_sha=sha, images=(image,) if image else (), **kw)
    return services.preview_upsert(repository=repository, pr_number=pr, request=request, actor=CI).preview


def deploy(preview: Preview) -> str:
    preview.refresh_from_db()
    return provisioning.deploy(preview.pk, preview.generation)


def test_a_deploy_applies_and_returns_without_waiting_for_the_rollout(preview_repo, kube_api):
    preview = upsert(preview_repo)
    assert deploy(preview) == "applied"
    preview.refresh_from_db()
    assert preview.status == "deploying"
    assert preview.applied_generation == preview.generation
    assert preview.rollout == {"Deployment/web": 1}
    assert preview.status_message == "Rolling out Deployment/web"


def test_a_new_preview_gets_a_labelled_guarded_namespace_and_becomes_ready(preview_repo, kube_api, watcher):
    preview = upsert(preview_repo)
    assert deploy(preview) == "applied"
    watcher.status_of(preview, "ready")
    assert preview.events.filter(action="ready").get().details["duration_seconds"] > 0
    assert preview.url == f"https://{preview.namespace}.preview.example.com"
    assert preview.observed_generation == preview.generation

    core = client.CoreV1Api(kube_api)
    ns = core.read_namespace(preview.namespace)
    assert ns.metadata.labels["app.kubernetes.io/managed-by"] == "pr-previews"
    assert ns.metadata.labels["previews.dev/pr"] == "7"
    assert ns.metadata.labels["previews.dev/repository-id"] == str(preview_repo.pk)
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert ns.metadata.annotations["previews.dev/head-sha"] == SHA1
    assert ns.metadata.annotations["previews.dev/url"] == preview.url
    assert "previews.dev/expires-at" in ns.metadata.annotations
    assert [q.metadata.name for q in core.list_namespaced_resource_quota(preview.namespace).items] == ["preview-quota"]
    assert [r.metadata.name for r in core.list_namespaced_limit_range(preview.namespace).items] == ["preview-limits"]
    policies = client.NetworkingV1Api(kube_api).list_namespaced_network_policy(preview.namespace).items
    assert [p.metadata.name for p in policies] == ["preview-isolation"]


def test_the_ingress_routes_the_preview_host_to_the_service(preview_repo, kube_api):
    preview = upsert(preview_repo)
    deploy(preview)
    ingress = client.NetworkingV1Api(kube_api).read_namespaced_ingress("web", preview.namespace)
    rule = ingress.spec.rules[0]
    assert rule.host == f"{preview.namespace}.preview.example.com"
    assert rule.http.paths[0].backend.service.name == "web"


def test_the_pr_image_runs_in_the_deployment(preview_repo, kube_api, watcher):
    preview = upsert(preview_repo, image="localhost/previews-sample:pr-7-1111111")
    deploy(preview)
    watcher.status_of(preview, "ready")
    dep = client.AppsV1Api(kube_api).read_namespaced_deployment("web", preview.namespace)
    assert dep.spec.template.spec.containers[0].image == "localhost/previews-sample:pr-7-1111111"
    assert dep.status.ready_replicas == 2


def test_a_push_rolls_out_the_new_image_in_the_same_namespace_and_prunes_what_left(preview_repo, kube_api, watcher):
    preview = upsert(preview_repo)
    assert deploy(preview) == "applied"
    watcher.status_of(preview, "ready")
    namespace = preview.namespace

    # The next commit's template drops the ConfigMap.
    docs = [d for d in yaml.safe_load_all(preview_repo.manifest_template) if d["kind"] != "ConfigMap"]
    for d in docs:
        if d["kind"] == "Deployment":
            d["spec"]["template"]["spec"]["containers"][0].pop("envFrom")
    updated = upsert(preview_repo, sha=SHA2, image="localhost/previews-sample:pr-7-2222222",
                     manifests=yaml.safe_dump_all(docs))
    assert updated.generation == preview.generation + 1
    assert updated.namespace == namespace
    assert deploy(updated) == "applied"
    updated.refresh_from_db()
    assert updated.rollout == {"Deployment/web": 2}  # the watcher waits for the new generation
    watcher.status_of(updated, "ready")

    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    dep = apps.read_namespaced_deployment("web", namespace)
    assert dep.spec.template.spec.containers[0].image == "localhost/previews-sample:pr-7-2222222"
    assert dep.status.updated_replicas == 2
    assert [c.metadata.name for c in core.list_namespaced_config_map(
        namespace, label_selector="app.kubernetes.io/managed-by=pr-previews").items] == []
    assert Preview.objects.get(pk=preview.pk).events.filter(action="pruned").exists()


def test_the_same_commit_and_image_again_enqueue_no_new_deploy(preview_repo):
    preview = upsert(preview_repo)
    again = services.preview_upsert(repository=preview_repo, pr_number=7, actor=CI, request=PreviewRequest(
        head_sha=SHA1, images=("localhost/previews-sample:pr-7-1111111",)))
    assert not again.created and not again.deploy_enqueued
    assert again.preview.generation == preview.generation


def test_a_pod_template_carries_our_labels_so_the_watcher_sees_its_pods(preview_repo, kube_api):
    preview = upsert(preview_repo)
    deploy(preview)
    pods = wait_until(lambda: client.CoreV1Api(kube_api).list_namespaced_pod(
        preview.namespace, label_selector="app.kubernetes.io/managed-by=pr-previews").items, message="pods")
    assert {p.metadata.labels["previews.dev/pr"] for p in pods} == {"7"}


def test_a_stale_deploy_changes_nothing(preview_repo, kube_api):
    preview = upsert(preview_repo)
    upsert(preview_repo, sha=SHA2)
    assert provisioning.deploy(preview.pk, preview.generation) == "stale"
    assert not namespace_exists(client.CoreV1Api(kube_api), preview.namespace)
    assert Preview.objects.get(pk=preview.pk).status == "pending"


def test_teardown_issues_the_delete_and_the_watcher_marks_the_preview_deleted(preview_repo, kube_api, watcher):
    preview = upsert(preview_repo)
    deploy(preview)
    watcher.status_of(preview, "ready")
    preview = services.preview_destroy(preview=preview, actor=CI, reason="PR closed")
    assert provisioning.teardown(preview.pk, preview.generation) == "terminating"
    preview.refresh_from_db()
    assert preview.status == "deleting"
    watcher.status_of(preview, "deleted", timeout=120)
    assert preview.deleted_at is not None
    assert not namespace_exists(client.CoreV1Api(kube_api), preview.namespace)
    assert preview.events.filter(action="deleted").get().details["duration_seconds"] > 0
    # A second teardown request is a no-op, not an error.
    assert services.preview_destroy(preview=preview, actor=CI).generation == preview.generation


def test_a_teardown_of_a_namespace_that_never_existed_is_deleted_at_once(preview_repo):
    preview = services.preview_destroy(preview=upsert(preview_repo), actor=CI, reason="PR closed")
    assert provisioning.teardown(preview.pk, preview.generation) == "deleted"
    assert Preview.objects.get(pk=preview.pk).status == "deleted"


def simulate(repository, label: str) -> str:
    docs = list(yaml.safe_load_all(repository.manifest_template))
    docs[1]["spec"]["template"]["metadata"]["labels"]["previews.local/simulate"] = label
    return yaml.safe_dump_all(docs)


def test_a_rollout_that_cannot_pull_its_image_fails_fast_with_the_reason(preview_repo, watcher, settings):
    settings.PREVIEWS_ROLLOUT_TIMEOUT = 600
    preview = upsert(preview_repo, manifests=simulate(preview_repo, "image-pull-backoff"))
    deploy(preview)
    started = time.monotonic()
    watcher.watcher.fail_fast = 3
    watcher.status_of(preview, "failed")
    elapsed = time.monotonic() - started
    assert "Deployment web: 0/2 ready" in preview.status_message
    assert "ImagePullBackOff" in preview.status_message
    assert "still failing after 3s" in preview.status_message
    assert 3 <= elapsed < 20  # the grace, not the ten-minute timeout


def test_a_rollout_that_is_only_slow_fails_at_the_timeout_naming_what_is_pending(preview_repo, watcher):
    docs = list(yaml.safe_load_all(preview_repo.manifest_template))
    docs[1]["spec"]["template"]["metadata"].setdefault("annotations", {})["previews.local/start-delay"] = "10m"
    preview = upsert(preview_repo, manifests=yaml.safe_dump_all(docs))
    deploy(preview)
    watcher.watcher.timeout = 4
    started = time.monotonic()
    watcher.status_of(preview, "failed")
    assert preview.status_message.startswith("not ready after 4s: Deployment web: 0/2 ready")
    assert time.monotonic() - started < 15


def test_a_quota_rejection_is_explained(preview_repo, watcher):
    preview_repo.quota_pods = 1
    preview_repo.save()
    preview = upsert(preview_repo)
    deploy(preview)
    watcher.status_of(preview, "failed")
    assert "exceeded quota" in preview.status_message


def test_an_unschedulable_preview_says_the_cluster_has_no_room(preview_repo, watcher):
    preview_repo.quota_cpu = "200"
    preview_repo.save()
    docs = list(yaml.safe_load_all(preview_repo.manifest_template))
    docs[1]["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100"},
                                                                         "limits": {"cpu": "100"}}
    preview = upsert(preview_repo, manifests=yaml.safe_dump_all(docs))
    deploy(preview)
    watcher.status_of(preview, "failed")
    # The scheduler's own words (with the real node, it also counts that node's taint).
    assert "the cluster has no room: 0/" in preview.status_message
    assert "nodes are available: 1 Insufficient cpu" in preview.status_message


def test_a_superseded_generation_is_never_marked_ready(preview_repo, watcher, kube_api):
    preview = upsert(preview_repo)
    deploy(preview)
    upsert(preview_repo, sha=SHA2)  # a push: generation 2 is requested while generation 1 rolls out
    apps = client.AppsV1Api(kube_api)
    # Generation 1's pods do become ready, and the watcher sees it happen...
    watcher.until(lambda: (apps.read_namespaced_deployment("web", preview.namespace).status.available_replicas
                           or 0) == 2, message="generation 1's rollout to finish")
    for _ in range(20):
        watcher.watcher.step(wait=0.05)
    # ...but generation 2 is what the preview is now about, and it has not been applied.
    preview.refresh_from_db()
    assert preview.status == "pending"
    assert not preview.events.filter(action="ready").exists()


def test_an_unexpected_error_ends_the_deploy_as_failed_with_a_message(preview_repo, monkeypatch):
    preview = upsert(preview_repo)

    def crash(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")  # what deeply nested YAML once did

    monkeypatch.setattr(manifests, "render_bundle", crash)
    assert deploy(preview) == "failed"
    preview.refresh_from_db()
    assert preview.status == "failed"  # never "deploying" forever, whatever the error was
    assert preview.status_message.startswith("The deploy failed unexpectedly (RecursionError: maximum recursion")


@pytest.mark.parametrize("text,expected", [(t, e) for _, t, e in BAD_BUNDLES], ids=[n for n, _, _ in BAD_BUNDLES])
def test_a_refused_bundle_fails_the_preview_with_the_precise_message_and_applies_nothing(
        preview_repo, kube_api, text, expected):
    # Manifests sent with a request are judged at request time (tests/test_api.py); a repository's template
    # is judged when it is deployed.
    preview_repo.manifest_template = text
    preview_repo.save()
    preview = upsert(preview_repo)
    assert deploy(preview) == "failed"
    preview.refresh_from_db()
    assert preview.status == "failed"
    assert preview.status_message.startswith("The manifests were refused, nothing was applied:")
    assert expected in preview.status_message
    assert not namespace_exists(client.CoreV1Api(kube_api), preview.namespace)


def test_an_existing_namespace_that_is_not_ours_is_never_adopted(preview_repo, kube_api):
    core = client.CoreV1Api(kube_api)
    name = f"{preview_repo.namespace_prefix}-7"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    preview = upsert(preview_repo)
    assert deploy(preview) == "failed"
    preview.refresh_from_db()
    assert "already exists and is not managed by this service" in preview.status_message
    ns = core.read_namespace(name)
    assert "app.kubernetes.io/managed-by" not in (ns.metadata.labels or {})
    assert core.list_namespaced_resource_quota(name).items == []


def test_the_gateway_never_deletes_a_protected_or_unlabelled_namespace(kube_env, make_namespace, kube_api):
    with pytest.raises(kube.ProtectedNamespace):
        kube.delete_namespace("kube-system")
    with pytest.raises(kube.ProtectedNamespace):
        kube.delete_namespace("default")
    foreign = make_namespace()
    with pytest.raises(kube.NamespaceNotOurs):
        kube.delete_namespace(foreign)
    assert namespace_exists(client.CoreV1Api(kube_api), foreign)


def test_a_configured_protected_namespace_is_never_created(preview_repo, settings):
    settings.PREVIEWS_PROTECTED_NAMESPACES = [*settings.PREVIEWS_PROTECTED_NAMESPACES,
                                              f"{preview_repo.namespace_prefix}-9"]
    with pytest.raises(services.PreviewConflict, match="is protected"):
        upsert(preview_repo, pr=9)
    assert not Preview.objects.filter(repository=preview_repo).exists()


def test_a_namespace_taken_by_another_repository_is_a_conflict(preview_repo):
    upsert(preview_repo, pr=3)
    other = type(preview_repo).objects.create(owner="acme", name="other", base_domain="x.example.com",
                                              namespace_prefix=preview_repo.namespace_prefix)
    with pytest.raises(services.PreviewConflict, match="already used by"):
        upsert(other, pr=3)


@pytest.mark.django_db(transaction=True)
def test_a_deploy_killed_after_the_namespace_exists_converges_when_run_again(preview_repo, kube_api):
    preview = upsert(preview_repo)
    db = settings.DATABASES["default"]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test",
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    # The run is held after the namespace exists (before its guardrails are applied), so that the kill
    # lands there however fast the rest of a deploy is.
    code = ("import time, django; django.setup(); "
            "from previews import provisioning; from previews.gateways import kube; "
            "apply = kube.apply_objects; "
            "kube.apply_objects = lambda *args, **kwargs: (time.sleep(60), apply(*args, **kwargs))[1]; "
            f"provisioning.deploy({preview.pk}, {preview.generation})")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, start_new_session=True)
    core = client.CoreV1Api(kube_api)
    try:
        wait_until(lambda: namespace_exists(core, preview.namespace), timeout=30, interval=0.05,
                   message="the namespace to be created")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    preview.refresh_from_db()
    assert preview.status == "deploying" and preview.applied_generation == 0  # the killed run never finished

    assert deploy(preview) == "applied"
    watcher = InProcessWatcher()
    try:
        watcher.status_of(preview, "ready")
    finally:
        watcher.watcher.stop()
    assert client.AppsV1Api(kube_api).read_namespaced_deployment("web", preview.namespace).status.ready_replicas == 2


@pytest.fixture
def held_terminating_namespace(kube_api):
    """Makes a namespace of ours stay Terminating (a ConfigMap in it holds a finalizer) until the test ends."""
    core = client.CoreV1Api(kube_api)
    held: list[str] = []

    def hold(preview: Preview) -> None:
        plan = provisioning.plan_deploy(preview)
        kube.ensure_namespace(preview.namespace, plan.namespace_labels, plan.namespace_annotations)
        core.create_namespaced_config_map(preview.namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="held", finalizers=["previews.test/hold"])))
        held.append(preview.namespace)
        core.delete_namespace(preview.namespace)
        wait_until(lambda: core.read_namespace(preview.namespace).status.phase == "Terminating", timeout=10)

    yield hold
    for namespace in held:
        core.patch_namespaced_config_map("held", namespace, {"metadata": {"finalizers": None}})


@pytest.mark.parametrize("applied_before", [False, True], ids=["first deploy", "redeploy"])
def test_a_deploy_waits_while_its_old_namespace_is_still_terminating(preview_repo, held_terminating_namespace,
                                                                      applied_before):
    preview = upsert(preview_repo)
    if applied_before:  # a redeploy reads the namespace first; a first deploy learns of it by failing to create it
        Preview.objects.filter(pk=preview.pk).update(applied_generation=preview.generation,
                                                     generation=preview.generation + 1)
        preview.refresh_from_db()
    held_terminating_namespace(preview)
    assert deploy(preview) == "waiting"
    preview.refresh_from_db()
    assert preview.status == "pending"
    assert preview.status_message == f"Waiting for the previous namespace {preview.namespace} to finish terminating"
    assert preview.next_attempt_at is not None


def test_a_first_deploy_creates_the_namespace_with_the_labels_a_redeploy_applies(preview_repo, kube_api):
    preview = upsert(preview_repo)
    assert deploy(preview) == "applied"
    core = client.CoreV1Api(kube_api)
    created = core.read_namespace(preview.namespace).metadata
    preview = upsert(preview_repo, sha=SHA2)
    assert deploy(preview) == "applied"
    applied = core.read_namespace(preview.namespace).metadata
    plan = provisioning.plan_deploy(Preview.objects.get(pk=preview.pk))
    assert {k: created.labels[k] for k in plan.namespace_labels} == plan.namespace_labels
    assert applied.labels == created.labels
    assert set(applied.annotations) == set(created.annotations) == set(plan.namespace_annotations)
    assert applied.annotations["previews.dev/head-sha"] == SHA2


def test_a_namespace_created_after_the_watchers_first_list_is_not_taken_for_deleted(preview_repo, kube_api, kube_env):
    # The watcher lists namespaces when it starts, then processes that list. A preview whose namespace was created
    # after the list and is being deleted when the list is processed is missing from it, yet still terminating.
    from previews.engine.watcher import Watcher

    watcher = Watcher()
    watcher.start()
    try:
        wait_until(lambda: watcher._connected["Namespace"], timeout=30, message="the watcher's namespace list")
        preview = upsert(preview_repo)
        assert deploy(preview) == "applied"
        preview = services.preview_destroy(preview=Preview.objects.get(pk=preview.pk), actor=CI, reason="PR closed")
        assert provisioning.teardown(preview.pk, preview.generation) == "terminating"
        watcher.step(wait=0.1)  # processes the list taken before the namespace existed
        preview.refresh_from_db()
        assert namespace_exists(client.CoreV1Api(kube_api), preview.namespace)
        assert preview.status == "deleting"
        deadline = time.monotonic() + 120
        while preview.status != "deleted" and time.monotonic() < deadline:
            watcher.step(wait=0.2)
            preview.refresh_from_db()
        assert preview.status == "deleted"
        assert not namespace_exists(client.CoreV1Api(kube_api), preview.namespace)
    finally:
        watcher.stop()


def test_a_repository_tls_secret_missing_from_its_source_fails_the_deploy_saying_where_it_was_looked_for(
        preview_repo, settings, make_namespace):
    settings.PREVIEWS_TLS_SECRET_NAMESPACE = make_namespace("tls-source")
    preview_repo.tls_secret_name = "wildcard"
    preview_repo.save()
    preview = upsert(preview_repo)
    assert deploy(preview) == "failed"
    preview.refresh_from_db()
    assert (f"the repository's TLS Secret {settings.PREVIEWS_TLS_SECRET_NAMESPACE}/wildcard does not exist"
            in preview.status_message)


@pytest.mark.parametrize("routing,copied", [("ingress", True), ("gateway", False)])
def test_the_tls_secret_is_copied_with_ingress_routing_only(preview_repo, settings, routing, copied):
    from previews import policy

    settings.PREVIEWS_TLS_SECRET_NAMESPACE = "certificates"
    preview_repo.tls_secret_name, preview_repo.routing = "wildcard", routing
    assert policy.tls_secret_source(preview_repo) == ("certificates" if copied else "")
