"""End to end with a real django-q2 cluster and the real watcher: the idle schedule's pass puts a preview to
sleep through the worker, and a /preview wake comment brings it back to ready with its replicas."""

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from kubernetes import client

from previews import payloads, services
from previews import sleep as sleeping
from previews.models import Preview
from previews.services import Actor, PreviewRequest
from tests.conftest import wait_until

pytestmark = [pytest.mark.kube, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
CI = Actor("token", "ci")


def status_of(preview: Preview) -> str:
    return Preview.objects.get(pk=preview.pk).status


def test_an_idle_preview_sleeps_and_a_comment_wakes_it(preview_repo, engine, kube_api, settings):
    preview = services.preview_upsert(repository=preview_repo, pr_number=21, actor=CI, request=PreviewRequest(
        head_sha="c" * 40, images=("localhost/previews-sample:pr-21",))).preview
    wait_until(lambda: status_of(preview) == "ready", timeout=90, message="the worker to deploy")
    apps = client.AppsV1Api(kube_api)

    later = timezone.now() + timedelta(hours=preview_repo.sleep_after_hours, minutes=1)
    assert sleeping.sleep_idle(later)["slept"] == 1
    wait_until(lambda: Preview.objects.get(pk=preview.pk).slept_at, timeout=60, message="the worker to sleep it")
    assert apps.read_namespaced_deployment("web", preview.namespace).spec.replicas == 0

    settings.GITHUB_WEBHOOK_SECRET = "s"
    body = json.dumps({"action": "created", "repository": {"full_name": preview_repo.full_name},
                       "issue": {"number": 21, "state": "open", "pull_request": {}},
                       "comment": {"id": 5, "body": "/preview wake", "author_association": "OWNER",
                                   "user": {"login": "mona", "type": "User"}}}).encode()
    response = Client().post("/api/v1/github/webhook", data=body, content_type="application/json",
                             HTTP_X_GITHUB_EVENT="issue_comment", HTTP_X_GITHUB_DELIVERY="e2e-wake",
                             HTTP_X_HUB_SIGNATURE_256=payloads.signature_for("s", body))
    assert response.json()["outcome"] == "/preview wake: waking up"
    wait_until(lambda: status_of(preview) == "ready", timeout=90, message="the wake to become ready")
    assert apps.read_namespaced_deployment("web", preview.namespace).spec.replicas == 2
    actions = list(Preview.objects.get(pk=preview.pk).events.order_by("created_at", "id")
                   .values_list("action", flat=True))
    assert actions[-8:] == ["sleep requested", "slept", "wake requested", "command", "deploy started", "woken",
                            "applied", "ready"]
