"""End to end with a real django-q2 cluster: requests become tasks, tasks reconcile the real cluster."""

import time

import pytest
import yaml
from kubernetes import client

from previews import services
from previews.models import Preview
from previews.services import Actor, PreviewRequest
from tests.conftest import wait_until

pytestmark = [pytest.mark.kube, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
CI = Actor("token", "ci")


def status_of(preview: Preview) -> str:
    return Preview.objects.get(pk=preview.pk).status


def namespace_gone(core: client.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespace(name)
    except client.ApiException as exc:
        return exc.status == 404
    return False


def test_an_upsert_is_deployed_by_the_worker_and_a_destroy_tears_it_down(preview_repo, qcluster, kube_api):
    result = services.preview_upsert(repository=preview_repo, pr_number=11, actor=CI, request=PreviewRequest(
        head_sha="a" * 40, images=("ghcr.io/demo/shop:pr-11-aaaaaaa",)))
    preview = result.preview
    wait_until(lambda: status_of(preview) == "ready", timeout=90, message="the worker to deploy the preview")
    actions = list(Preview.objects.get(pk=preview.pk).events.order_by("created_at", "id")
                   .values_list("action", flat=True))
    assert actions == ["created", "deploy started", "applied", "ready"]

    services.preview_destroy(preview=preview, actor=CI, reason="PR closed")
    wait_until(lambda: status_of(preview) == "deleted", timeout=90, message="the worker to tear down")
    assert namespace_gone(client.CoreV1Api(kube_api), preview.namespace)


def test_closing_a_pr_while_it_deploys_ends_with_no_namespace(preview_repo, qcluster, kube_api):
    docs = list(yaml.safe_load_all(preview_repo.manifest_template))
    # Pods that never become ready keep the deploy in its rollout wait.
    docs[1]["spec"]["template"]["metadata"]["labels"]["previews.local/simulate"] = "image-pull-backoff"
    preview = services.preview_upsert(repository=preview_repo, pr_number=12, actor=CI, request=PreviewRequest(
        head_sha="b" * 40, manifests=yaml.safe_dump_all(docs))).preview
    core = client.CoreV1Api(kube_api)
    wait_until(lambda: Preview.objects.get(pk=preview.pk).events.filter(action="applied").exists(),
               timeout=60, message="the deploy to reach its rollout wait")
    assert status_of(preview) == "deploying"

    services.preview_destroy(preview=preview, actor=CI, reason="PR closed")
    wait_until(lambda: status_of(preview) == "deleted", timeout=120, message="the teardown to finish")
    assert namespace_gone(core, preview.namespace)
    time.sleep(3)  # nothing recreates it afterwards
    assert namespace_gone(core, preview.namespace)
    final = Preview.objects.get(pk=preview.pk)
    assert final.status == "deleted"
    assert not final.events.filter(action="ready").exists()
