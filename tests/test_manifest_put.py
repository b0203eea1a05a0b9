"""The PUT's answers for the manifest policy's second round: every hostile bundle is a 4xx problem+json naming its
field (never a 500), and a repository's PUTs carrying manifests are rate-limited (429 with Retry-After)."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from previews import services
from previews.models import Preview
from tests.factories import make_repository

pytestmark = pytest.mark.django_db
SHA = "0123456789abcdef0123456789abcdef01234567"
IMAGE = "ghcr.io/acme/shop:pr-42-0123456"
CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
DEPLOYMENT = ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec:\n  selector: {matchLabels: {app: w}}\n"
              "  template:\n    metadata: {labels: {app: w}}\n    spec:\n      containers:\n"
              "      - name: c\n        image: busybox:1.36\n")


@pytest.fixture
def repo():
    return make_repository(owner="acme", name="shop", manifest_puts_per_minute=3)


@pytest.fixture
def api(repo):
    return Client(HTTP_AUTHORIZATION=f"Bearer {services.token_create(name='ci', repository=repo)[1]}")


def put(client, manifests: str, pr: int = 42):
    return client.put(f"/api/v1/repos/acme/shop/previews/{pr}", content_type="application/json",
                      data=json.dumps({"head_sha": SHA, "image": IMAGE, "manifests": manifests}))


def manifest_problem(response) -> str:
    assert response["Content-Type"] == "application/problem+json", response.content
    [message] = [e["message"] for e in response.json()["errors"] if e["field"] == "manifests"][:1]
    return message


@pytest.mark.parametrize("bundle,where", [
    (DEPLOYMENT.replace("image: busybox:1.36", "image: busybox:1.36\n        securityContext: {capabilities: "
                                                "{add: [[SYS_ADMIN]]}}"),
     "spec.template.spec.containers[0].securityContext.capabilities.add"),
    ("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: p}\nspec: {dataSource: {kind: [x]}}\n",
     "spec.dataSource.kind"),
    (DEPLOYMENT.replace("    metadata: {labels: {app: w}}\n", "    metadata: just-a-string\n"),
     "spec.template.metadata"),
    (CONFIGMAP + "data: {n: 1" + "0" * 5000 + "}\n", "not plain YAML data"),
    (DEPLOYMENT.replace("image: busybox:1.36", "image: busybox:1.36\n        resources: {requests: {cpu: "
                                                "99999999999999999999Ei}}"),
     "spec.template.spec.containers[0].resources.requests.cpu"),
])
def test_a_type_confused_bundle_is_422_naming_its_field(api, bundle, where):
    response = put(api, bundle)
    assert response.status_code == 422
    assert where in manifest_problem(response)
    assert not Preview.objects.exists()


def test_puts_with_manifests_over_the_repositorys_limit_are_429_with_retry_after(api):
    for pr in (1, 2, 3):
        assert put(api, CONFIGMAP, pr=pr).status_code == 201
    refused = put(api, CONFIGMAP, pr=4)
    assert refused.status_code == 429 and refused["Content-Type"] == "application/problem+json"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "3 PUTs with manifests per minute" in refused.json()["detail"]
    assert not Preview.objects.filter(pr_number=4).exists()


def test_puts_without_manifests_are_not_counted(api):
    for pr in range(1, 6):
        response = api.put(f"/api/v1/repos/acme/shop/previews/{pr}", content_type="application/json",
                           data=json.dumps({"head_sha": SHA, "image": IMAGE}))
        assert response.status_code == 201


def test_the_limit_is_per_repository(api, repo):
    other = make_repository(owner="acme", name="other", namespace_prefix="other", manifest_puts_per_minute=3)
    other_api = Client(HTTP_AUTHORIZATION=f"Bearer {services.token_create(name='ci2', repository=other)[1]}")
    for pr in (1, 2, 3):
        assert put(api, CONFIGMAP, pr=pr).status_code == 201
    response = other_api.put("/api/v1/repos/acme/other/previews/1", content_type="application/json",
                             data=json.dumps({"head_sha": SHA, "image": IMAGE, "manifests": CONFIGMAP}))
    assert response.status_code == 201


def test_a_window_that_has_passed_admits_again(api, repo):
    for pr in (1, 2, 3):
        assert put(api, CONFIGMAP, pr=pr).status_code == 201
    type(repo).objects.filter(pk=repo.pk).update(
        manifest_window_start=repo.created_at.replace(year=repo.created_at.year - 1))
    assert put(api, CONFIGMAP, pr=4).status_code == 201


def test_zero_means_no_limit(api, repo):
    type(repo).objects.filter(pk=repo.pk).update(manifest_puts_per_minute=0)
    for pr in range(1, 6):
        assert put(api, CONFIGMAP, pr=pr).status_code == 201
