"""End to end with a real django-q2 cluster: requests become tasks, tasks reconcile the real cluster."""

import time

import pytest
import yaml
from kubernetes import client

from previews import services
from previews.models import Preview
from previews.services import Actor, PreviewRequest
from tests.conftest import namespace_exists, wait_until

pytestmark = [pytest.mark.kube, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
CI = Actor("token", "ci")


def status_of(preview: Preview) -> str:
    return Preview.objects.get(pk=preview.pk).status


def test_an_upsert_is_deployed_by_the_worker_and_a_destroy_tears_it_down(preview_repo, engine, kube_api):
    result = services.preview_upsert(repository=preview_repo, pr_number=11, actor=CI, request=PreviewRequest(
        head_sha="a" * 40, images=("localhost/previews-sample:pr-11-aaaaaaa",)))
    preview = result.preview
    wait_until(lambda: status_of(preview) == "ready", timeout=90, message="the worker to deploy the preview")
    actions = list(Preview.objects.get(pk=preview.pk).events.order_by("created_at", "id")
                   .values_list("action", flat=True))
    assert actions == ["created", "deploy started", "applied", "ready"]

    services.preview_destroy(preview=preview, actor=CI, reason="PR closed")
    wait_until(lambda: status_of(preview) == "deleted", timeout=90, message="the worker to tear down")
    assert not namespace_exists(client.CoreV1Api(kube_api), preview.namespace)


def test_closing_a_pr_while_it_deploys_ends_with_no_namespace(preview_repo, engine, kube_api):
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
    assert not namespace_exists(core, preview.namespace)
    time.sleep(3)  # nothing recreates it afterwards
    assert not namespace_exists(core, preview.namespace)
    final = Preview.objects.get(pk=preview.pk)
    assert final.status == "deleted"
    assert not final.events.filter(action="ready").exists()


def test_the_pr_is_told_when_the_preview_is_ready(preview_repo, fake_github, engine):
    fake_github.add_pull(preview_repo.full_name, 13, head_sha="c" * 40)
    preview = services.preview_upsert(repository=preview_repo, pr_number=13, actor=CI, request=PreviewRequest(
        head_sha="c" * 40, images=("localhost/previews-sample:pr-13-ccccccc",))).preview
    wait_until(lambda: status_of(preview) == "ready", timeout=90, message="the deploy")

    def told_ready():
        comments = fake_github.comments(preview_repo.full_name, 13)
        return len(comments) == 1 and "Preview ready" in comments[0]["body"]

    wait_until(told_ready, timeout=30, message="the PR comment to say ready")
    [deployment] = fake_github.deployments(preview_repo.full_name)
    states = [s["state"] for s in fake_github.statuses(preview_repo.full_name, deployment["id"])]
    assert states[-1] == "success"
    assert states == sorted(states, key=["queued", "in_progress", "success"].index)


def test_a_github_outage_does_not_stop_a_deploy(preview_repo, fake_github, engine):
    fake_github.add_pull(preview_repo.full_name, 14)
    fake_github.fail_next(10_000, status=500)
    preview = services.preview_upsert(repository=preview_repo, pr_number=14, actor=CI, request=PreviewRequest(
        head_sha="e" * 40, images=("localhost/previews-sample:pr-14-eeeeeee",))).preview
    wait_until(lambda: status_of(preview) == "ready", timeout=90, message="the deploy despite GitHub failing")
    wait_until(lambda: Preview.objects.get(pk=preview.pk).events.filter(action="github failed").exists(),
               timeout=30, message="the GitHub failure to be recorded")
    assert fake_github.comments(preview_repo.full_name, 14) == []
