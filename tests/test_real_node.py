"""What a person sees: previews run as real containers on the local cluster's real node and answer at their
URL through Traefik (the real route controller), with a real qcluster and watcher behind the API.

Each test reaches the preview's URL the way a browser on this machine does (`*.localhost` is loopback, the
controller listens on its port there).
"""

from __future__ import annotations

import json
import time

import pytest
import yaml
from django.test import Client
from kubernetes import client

from previews import services
from previews.models import Preview
from tests.conftest import namespace_exists, node_image, wait_until

pytestmark = [pytest.mark.kube, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
SHA1, SHA2 = "1" * 40, "2" * 40
GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"


@pytest.fixture
def api(real_repo) -> Client:
    token = services.token_create(name="ci", repository=real_repo)[1]
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def path(repo, pr: int) -> str:
    return f"/api/v1/repos/{repo.owner}/{repo.name}/previews/{pr}"


def put(api: Client, repo, pr: int, sha: str, image: str, manifests: str = "") -> dict:
    body = {"head_sha": sha, "image": image, "title": "A real container", **({"manifests": manifests} if manifests
                                                                             else {})}
    response = api.put(path(repo, pr), json.dumps(body), content_type="application/json")
    assert response.status_code in (200, 201), response.content
    return response.json()


def settled(api: Client, repo, pr: int, generation: int, timeout: int = 90) -> dict:
    """The preview once the generation asked for is ready or failed (the API's long poll, then the row)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(path(repo, pr) + "?wait=20").json()
        if body["generation"] == generation and body["status"] in ("ready", "failed"):
            return body
    pytest.fail(f"preview {pr} did not settle within {timeout}s: {body}")


def serving(real_node, url: str, commit: str, timeout: float = 15) -> str:
    """The app's page at the URL, once it shows this commit (the controller picks a new route up in a moment)."""
    def page():
        status, _headers, body = real_node.get(url)
        return body if status == 200 and f'title="{commit}"' in body else ""
    return wait_until(page, timeout=timeout, interval=0.2, message=f"{url} to serve commit {commit[:7]}")


def without_ingress(template: str) -> str:
    return yaml.safe_dump_all([d for d in yaml.safe_load_all(template) if d["kind"] != "Ingress"])


def with_web(template: str, change) -> str:
    """The template with its Deployment's pod spec changed by `change(pod_spec)`."""
    docs = list(yaml.safe_load_all(template))
    change(next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"])
    return yaml.safe_dump_all(docs)


@pytest.mark.parametrize("routing", ["ingress", "gateway"])
def test_a_preview_serves_its_pr_and_commit_at_its_url_a_push_serves_the_new_one_and_a_delete_ends_it(
        api, real_repo, real_node, engine, kube_api, routing):
    real_repo.routing = routing
    if routing == "gateway":
        real_repo.manifest_template = without_ingress(real_repo.manifest_template)
    real_repo.save()
    first = put(api, real_repo, 7, SHA1, node_image(real_node, "pr-7-1111111"))
    ready = settled(api, real_repo, 7, first["generation"])
    assert ready["status"] == "ready", ready["status_message"]
    url = ready["url"]
    assert url == f"https://{ready['namespace']}.preview.localhost:{real_node.https_port}"
    page = serving(real_node, url, SHA1)
    assert '<h1>Pull request #<span id="pr">7</span></h1>' in page
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(ready["namespace"]).items
    assert {p.spec.node_name for p in pods} == {"real-node-0"}
    if routing == "gateway":
        route = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
            GROUP, VERSION, ready["namespace"], PLURAL, "preview")
        [parent] = route["status"]["parents"]
        assert parent["controllerName"] == "traefik.io/gateway-controller"
        assert {c["type"]: c["status"] for c in parent["conditions"]} == {"Accepted": "True", "ResolvedRefs": "True"}

    pushed = put(api, real_repo, 7, SHA2, node_image(real_node, "pr-7-2222222"))
    assert settled(api, real_repo, 7, pushed["generation"])["status"] == "ready"
    serving(real_node, url, SHA2)

    assert api.delete(path(real_repo, 7)).status_code == 202
    preview = Preview.objects.get(repository=real_repo, pr_number=7)
    wait_until(lambda: Preview.objects.get(pk=preview.pk).status == "deleted", timeout=90, message="the teardown")
    wait_until(lambda: not namespace_exists(client.CoreV1Api(kube_api), preview.namespace), timeout=60,
               message="the namespace to be gone")
    status, _headers, body = real_node.get(url)
    assert status != 200 and SHA1 not in body and SHA2 not in body


CRASH = "the database at db.internal:5432 is unreachable"
FAILURES = {
    "an image that does not exist": (
        "localhost/previews-sample:not-built", lambda spec: None,
        ["is ErrImagePull", "localhost/previews-sample:not-built"]),
    "a container that exits 1 at start": (
        None, lambda spec: spec["containers"][0].update(args=["--fail", CRASH]),
        ["container web keeps crashing: exit code 1", "Last lines of pod", f"fatal: {CRASH}"]),
    "runAsNonRoot with an image that runs as root": (
        "root", lambda spec: [spec["securityContext"].pop(k) for k in ("runAsUser", "runAsGroup")],
        ["is CreateContainerConfigError: container has runAsNonRoot and image will run as root"]),
}


@pytest.mark.parametrize("case", FAILURES)
def test_a_real_failure_fails_the_preview_within_the_grace_in_the_containers_own_words(
        api, real_repo, real_node, engine, settings, case):
    image, change, expected = FAILURES[case]
    if image == "root":
        image = node_image(real_node, "runs-as-root", "USER 0")
    image = image or node_image(real_node, "pr-8")
    started = time.monotonic()
    body = put(api, real_repo, 8, SHA1, image, manifests=with_web(real_repo.manifest_template, change))
    failed = settled(api, real_repo, 8, body["generation"])
    took = time.monotonic() - started
    assert failed["status"] == "failed"
    for words in expected:
        assert words in failed["status_message"]
    # Failing is decided once the reason has lasted the grace; a crash loop needs its first restart first.
    assert took < settings.PREVIEWS_FAIL_FAST_SECONDS + 30, f"failed only after {took:.0f}s"


def test_the_dashboard_links_each_container_to_its_log_and_shows_a_crash_in_its_own_words(
        api, real_repo, real_node, engine, admin_client):
    body = put(api, real_repo, 9, SHA1, node_image(real_node, "pr-9"), manifests=with_web(
        real_repo.manifest_template, lambda spec: spec["containers"][0].update(args=["--fail", CRASH])))
    assert settled(api, real_repo, 9, body["generation"])["status"] == "failed"
    preview = Preview.objects.get(repository=real_repo, pr_number=9)
    detail = admin_client.get(f"/previews/{preview.pk}/").content.decode()
    link = detail.split('class="logs-link" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert "container=web" in link and "previous=on" in link
    logs = admin_client.get(link)
    assert logs.status_code == 200
    assert f"fatal: {CRASH}" in logs.content.decode()


def test_a_route_traefik_refuses_fails_the_preview_with_its_message(api, real_repo, real_node, engine):
    real_repo.routing = "gateway"
    docs = [d for d in yaml.safe_load_all(real_repo.manifest_template) if d["kind"] != "Ingress"]
    docs.append({"apiVersion": f"{GROUP}/{VERSION}", "kind": "HTTPRoute", "metadata": {"name": "web"},
                 "spec": {"hostnames": ["PREVIEW_HOST"], "rules": [{"backendRefs": [{"name": "web", "port": 81}]}]}})
    real_repo.manifest_template = yaml.safe_dump_all(docs)
    real_repo.save()
    body = put(api, real_repo, 10, SHA1, node_image(real_node, "pr-10"))
    failed = settled(api, real_repo, 10, body["generation"])
    assert failed["status"] == "failed"
    assert "HTTPRoute web was refused by Gateway gateway-system/previews: ResolvedRefs: BackendNotFound: " \
           "Cannot load HTTPBackendRef" in failed["status_message"]
    assert "service port 81 not found" in failed["status_message"]


def test_a_sleeping_preview_says_so_at_its_url_and_a_click_wakes_it(api, real_repo, real_node, engine,
                                                                     fallback_to_live_server):
    body = put(api, real_repo, 11, SHA1, node_image(real_node, "pr-11"))
    ready = settled(api, real_repo, 11, body["generation"])
    url = ready["url"]
    serving(real_node, url, SHA1)

    assert api.post(path(real_repo, 11) + "/sleep", "{}", content_type="application/json").status_code == 202
    preview = Preview.objects.get(repository=real_repo, pr_number=11)
    wait_until(lambda: Preview.objects.get(pk=preview.pk).slept_at is not None, timeout=60, message="asleep")

    def asleep_page():
        status, headers, page = real_node.get(url)
        return (status, headers.get("x-previews-fallback"), page) if status == 503 else None
    _status, state, page = wait_until(asleep_page, timeout=15, message="the URL to say the preview is asleep")
    assert state == "asleep"
    assert f"{real_repo.full_name} #11 is asleep" in page
    assert 'action="/_previews/wake"' in page

    assert real_node.post(url + "/_previews/wake") == 303
    assert Preview.objects.get(pk=preview.pk).events.filter(action="wake requested", actor_kind="visitor").exists()
    serving(real_node, url, SHA1, timeout=60)
