"""The REST API CI calls: happy paths, the bad-input table, token scoping."""

import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from django_q.models import OrmQ

from previews import services
from previews.models import Preview
from tests.factories import make_preview, make_repository

pytestmark = pytest.mark.django_db
SHA = "0123456789abcdef0123456789abcdef01234567"
IMAGE = "ghcr.io/acme/shop:pr-42-0123456"


@pytest.fixture
def repo():
    return make_repository(owner="acme", name="shop", max_ttl_hours=240)


@pytest.fixture
def token(repo):
    return services.token_create(name="ci", repository=repo)[1]


@pytest.fixture
def api(token):
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def put(client, path="/api/v1/repos/acme/shop/previews/42", body=None, **extra):
    body = {"head_sha": SHA, "image": IMAGE} if body is None else body
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.put(path, data=data, content_type=extra.pop("content_type", "application/json"), **extra)


def fields_of(response) -> dict:
    assert response["Content-Type"] == "application/problem+json", response.content
    return {e["field"]: e["message"] for e in response.json().get("errors", [])}


# --- happy paths -----------------------------------------------------------------------------------


def test_put_creates_a_preview_and_answers_201_with_its_address(api):
    response = put(api)
    assert response.status_code == 201
    body = response.json()
    assert body["namespace"] == "pr-42"
    assert body["url"] == "https://pr-42.preview.example.com"
    assert body["status"] == "pending" and body["deploy_enqueued"] is True
    assert body["links"]["self"] == "/api/v1/repos/acme/shop/previews/42"
    assert body["images"] == {"ghcr.io/acme/shop": IMAGE}
    assert body["expires_at"]


def test_the_same_put_again_answers_200_and_starts_no_new_deploy(api):
    first = put(api).json()
    second = put(api)
    assert second.status_code == 200
    assert second.json()["deploy_enqueued"] is False
    assert second.json()["generation"] == first["generation"]


def test_a_new_commit_is_a_new_generation(api):
    first = put(api).json()
    second = put(api, body={"head_sha": "f" * 40, "image": "ghcr.io/acme/shop:pr-42-fffffff"}).json()
    assert second["generation"] == first["generation"] + 1
    assert second["deploy_enqueued"] is True


def test_put_accepts_several_images_for_a_monorepo(api):
    response = put(api, body={"head_sha": SHA, "images": [
        {"name": "ghcr.io/acme/api", "reference": "pr-42-0123456"},
        {"name": "ghcr.io/acme/web", "reference": "sha256:" + "a" * 64}]})
    assert response.status_code == 201
    assert response.json()["images"] == {"ghcr.io/acme/api": "ghcr.io/acme/api:pr-42-0123456",
                                         "ghcr.io/acme/web": "ghcr.io/acme/web@sha256:" + "a" * 64}


def test_get_reads_the_preview(api):
    put(api)
    response = api.get("/api/v1/repos/acme/shop/previews/42")
    assert response.status_code == 200
    assert response.json()["head_sha"] == SHA


def test_get_with_wait_returns_at_once_when_the_preview_is_settled(api, repo):
    preview = make_preview(repo, pr_number=5, status="ready", observed_generation=1)
    response = api.get("/api/v1/repos/acme/shop/previews/5?wait=30")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    assert preview.pk


def test_get_with_wait_gives_up_after_n_seconds(api):
    put(api)
    started = timezone.now()
    response = api.get("/api/v1/repos/acme/shop/previews/42?wait=1")
    assert response.status_code == 200 and response.json()["status"] == "pending"
    assert timedelta(seconds=0.9) < timezone.now() - started < timedelta(seconds=5)


def test_delete_answers_202_and_again_202(api):
    put(api)
    first = api.delete("/api/v1/repos/acme/shop/previews/42")
    assert first.status_code == 202 and first.json()["status"] == "deleting"
    second = api.delete("/api/v1/repos/acme/shop/previews/42")
    assert second.status_code == 202
    assert second.json()["generation"] == first.json()["generation"]


def test_extend_moves_the_expiry_and_records_why(api):
    before = put(api).json()["expires_at"]
    response = api.post("/api/v1/repos/acme/shop/previews/42/extend",
                        data={"hours": 24, "reason": "QA tomorrow"}, content_type="application/json")
    assert response.status_code == 200
    assert response.json()["expires_at"] > before
    assert Preview.objects.get(pr_number=42).events.filter(action="extended", message="QA tomorrow").exists()


def test_the_list_filters_by_repository_and_status_and_paginates(repo):
    other = make_repository(owner="acme", name="other")
    for n in range(1, 4):
        make_preview(repo, pr_number=n, status="ready")
    make_preview(repo, pr_number=9, status="failed")
    make_preview(other, pr_number=1, status="ready")
    admin = Client(HTTP_AUTHORIZATION=f"Bearer {services.token_create(name='ops', repository=None)[1]}")
    everything = admin.get("/api/v1/previews").json()
    assert everything["count"] == 5
    ready = admin.get("/api/v1/previews?repository=acme/shop&status=ready&page_size=2").json()
    assert ready["count"] == 3 and len(ready["results"]) == 2 and ready["next"]
    assert {p["repository"] for p in ready["results"]} == {"acme/shop"}


def test_a_scoped_token_lists_only_its_repository(api, repo):
    make_preview(repo, pr_number=1)
    make_preview(make_repository(owner="acme", name="other"), pr_number=1)
    assert {p["repository"] for p in api.get("/api/v1/previews").json()["results"]} == {"acme/shop"}


def test_the_schema_and_docs_are_served(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/repos/{owner}/{repo}/previews/{pr}" in schema.content
    assert client.get("/api/docs/").status_code == 200


def test_healthz_answers_ok(client):
    assert client.get("/healthz").json() == {"status": "ok"}


# --- authentication and scope ------------------------------------------------------------------------


def test_no_token_is_401_with_a_bearer_challenge(client, repo):
    response = put(client)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize("header", ["Bearer pvw_deadbeef_nope", "Bearer ", "Basic dXNlcjpwYXNz", "pvw_x"])
def test_a_bad_token_is_401(client, repo, header):
    assert put(client, HTTP_AUTHORIZATION=header).status_code == 401


def test_a_revoked_token_is_401(repo):
    token, plaintext = services.token_create(name="old", repository=repo)
    services.token_revoke(token)
    assert put(Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}")).status_code == 401


def test_a_token_for_another_repository_is_403(repo):
    other = make_repository(owner="acme", name="other")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {services.token_create(name='x', repository=other)[1]}")
    response = put(client)
    assert response.status_code == 403
    assert "acme/other" in response.json()["detail"]
    assert not Preview.objects.exists()


def test_an_admin_token_may_act_on_any_repository(repo):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {services.token_create(name='ops', repository=None)[1]}")
    assert put(client).status_code == 201


def test_tokens_never_appear_in_logs(api, token, caplog):
    caplog.set_level("DEBUG")
    put(api)
    put(Client(HTTP_AUTHORIZATION="Bearer pvw_0badc0de_secretsecret"))
    assert token not in caplog.text
    assert "secretsecret" not in caplog.text


# --- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,status,field",
    [
        ("/api/v1/repos/acme/shop/previews/0", 422, "pr"),
        ("/api/v1/repos/acme/shop/previews/-3", 422, "pr"),
        ("/api/v1/repos/acme/shop/previews/abc", 422, "pr"),
        ("/api/v1/repos/acme/shop/previews/1.5", 422, "pr"),
        ("/api/v1/repos/acme/shop/previews/99999999999", 422, "pr"),
        ("/api/v1/repos/acme/shop/previews/%D9%A3", 422, "pr"),
        ("/api/v1/repos/acme/nope/previews/1", 404, None),
    ],
)
def test_bad_paths(repo, path, status, field):
    admin = Client(HTTP_AUTHORIZATION=f"Bearer {services.token_create(name='ops', repository=None)[1]}")
    response = put(admin, path=path)
    assert response.status_code == status
    if field:
        assert field in fields_of(response)


@pytest.mark.parametrize(
    "body,field,message",
    [
        ({"image": IMAGE}, "head_sha", "required"),
        ({"head_sha": "abc123", "image": IMAGE}, "head_sha", "not a commit SHA"),
        ({"head_sha": SHA.upper(), "image": IMAGE}, "head_sha", "not a commit SHA"),
        ({"head_sha": SHA + " ", "image": IMAGE}, "head_sha", "not a commit SHA"),
        ({"head_sha": SHA, "image": "ghcr.io/acme/shop:has space"}, "image", "not an image reference"),
        ({"head_sha": SHA, "image": " ghcr.io/acme/shop:pr-1"}, "image", "not an image reference"),
        ({"head_sha": SHA, "image": "ghcr.io/acme/shop:pr-1\n"}, "image", "not an image reference"),
        ({"head_sha": SHA, "image": "ghcr.io/acme/shop:\u0007"}, "image", "not an image reference"),
        ({"head_sha": SHA, "image": "UPPER/case:tag"}, "image", "not an image reference"),
        ({"head_sha": SHA, "image": 42}, "image", "Not a valid string"),
        ({"head_sha": SHA, "images": [{"name": "ghcr.io/acme/api", "reference": "bad tag"}]},
         "images[0].reference", "not a tag or a sha256 digest"),
        ({"head_sha": SHA, "images": [{"name": "ghcr.io/acme/api:v1", "reference": "v2"}]},
         "images[0].name", "not an image name"),
        ({"head_sha": SHA, "images": [{"name": "ghcr.io/acme/api"}]}, "images[0].reference", "required"),
        ({"head_sha": SHA, "image": IMAGE, "images": []}, "image", "not both"),
        ({"head_sha": SHA, "ttl_hours": 0}, "ttl_hours", "greater than or equal to 1"),
        ({"head_sha": SHA, "ttl_hours": 1000}, "ttl_hours", "between 1 and 240"),
        ({"head_sha": SHA, "ttl_hours": 10**30}, "ttl_hours", "less than or equal to 8784"),
        ({"head_sha": SHA, "ttl_hours": 1e12}, "ttl_hours", "less than or equal to 8784"),
        ({"head_sha": SHA, "ttl_hours": "soon"}, "ttl_hours", "valid integer"),
        ({"head_sha": SHA, "title": "x" * 301}, "title", "no more than 300"),
        ({"head_sha": SHA, "colour": "blue"}, "colour", "unknown field"),
        ({"head_sha": SHA, "manifests": ["not", "a", "string"]}, "manifests", "Not a valid string"),
    ],
)
def test_invalid_values_are_422_with_the_field(api, body, field, message):
    response = put(api, body=body)
    assert response.status_code == 422, response.content
    errors = fields_of(response)
    assert field in errors, errors
    assert message in errors[field]
    assert not Preview.objects.exists()


def test_malformed_json_is_400(api):
    response = put(api, body='{"head_sha": ')
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]


def test_json_nan_is_400(api):
    assert put(api, body='{"head_sha": NaN}').status_code == 400


def test_a_json_array_body_is_422(api):
    assert put(api, body="[1, 2]").status_code == 422


def test_wrong_content_type_is_415(api):
    response = put(api, body="head_sha=abc", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response["Content-Type"] == "application/problem+json"


def test_a_body_over_the_limit_is_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    response = put(api, body={"head_sha": SHA, "manifests": "x" * 5000})
    assert response.status_code == 413
    assert not Preview.objects.exists()


def test_manifests_over_their_own_limit_are_422(api, settings):
    settings.PREVIEWS_MAX_MANIFEST_BYTES = 1024
    response = put(api, body={"head_sha": SHA, "manifests": "x" * 2000})
    assert response.status_code == 422 and "manifests" in fields_of(response)


def test_extend_beyond_the_cap_is_422_and_changes_nothing(api):
    before = put(api).json()["expires_at"]
    response = api.post("/api/v1/repos/acme/shop/previews/42/extend",
                        data={"hours": 10000, "reason": "forever"}, content_type="application/json")
    assert response.status_code == 422 and "hours" in fields_of(response)
    assert api.get("/api/v1/repos/acme/shop/previews/42").json()["expires_at"] == before


@pytest.mark.parametrize("body,field", [({"hours": -1, "reason": "x"}, "hours"), ({"hours": 5}, "reason"),
                                        ({"hours": 5, "reason": ""}, "reason")])
def test_invalid_extend_is_422(api, body, field):
    put(api)
    response = api.post("/api/v1/repos/acme/shop/previews/42/extend", data=body, content_type="application/json")
    assert response.status_code == 422 and field in fields_of(response)


def test_extending_a_deleted_preview_is_409(api):
    put(api)
    api.delete("/api/v1/repos/acme/shop/previews/42")
    response = api.post("/api/v1/repos/acme/shop/previews/42/extend", data={"hours": 1, "reason": "x"},
                        content_type="application/json")
    assert response.status_code == 409


def test_a_repository_at_its_preview_limit_is_409(api, repo):
    repo.max_live_previews = 1
    repo.save()
    put(api)
    response = put(api, path="/api/v1/repos/acme/shop/previews/43")
    assert response.status_code == 409
    assert "maximum" in response.json()["detail"]


@pytest.mark.parametrize("wait", ["121", "-1", "soon", "1e3"])
def test_wait_out_of_range_is_422(api, wait):
    put(api)
    response = api.get(f"/api/v1/repos/acme/shop/previews/42?wait={wait}")
    assert response.status_code == 422 and "wait" in fields_of(response)


def test_unknown_preview_is_404(api):
    assert api.get("/api/v1/repos/acme/shop/previews/7").status_code == 404
    assert api.delete("/api/v1/repos/acme/shop/previews/7").status_code == 404


@pytest.mark.parametrize("query,status", [("status=bogus", 422), ("page=0", 422), ("page=zz", 422),
                                          ("page_size=1000", 422), ("repository=acme/nope", 404)])
def test_bad_list_filters(repo, query, status):
    admin = Client(HTTP_AUTHORIZATION=f"Bearer {services.token_create(name='ops', repository=None)[1]}")
    assert admin.get(f"/api/v1/previews?{query}").status_code == status


def test_wrong_method_is_405(api):
    assert api.post("/api/v1/repos/acme/shop/previews/42", data="{}", content_type="application/json") \
        .status_code == 405


# --- concurrency ----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_puts_make_one_preview_and_one_deploy_task(repo, token):
    OrmQ.objects.all().delete()
    barrier = threading.Barrier(8)
    statuses = []

    def call():
        try:
            client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
            barrier.wait()
            statuses.append(put(client).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 7 + [201]
    assert Preview.objects.count() == 1
    assert OrmQ.objects.count() == 1
    OrmQ.objects.all().delete()


# --- an older commit never wins --------------------------------------------------------------------


def test_a_request_for_an_older_commit_than_the_prs_head_is_409(api, fake_github):
    newer, older = "b" * 40, "a" * 40
    fake_github.add_pull("acme/shop", 42, head_sha=newer)
    assert put(api, body={"head_sha": newer, "image": IMAGE}).status_code == 201
    late = put(api, body={"head_sha": older, "image": "ghcr.io/acme/shop:pr-42-aaaaaaa"})
    assert late.status_code == 409
    assert "never replaces a newer one" in late.json()["detail"]
    assert Preview.objects.get(pr_number=42).head_sha == newer


def test_the_prs_new_head_is_accepted(api, fake_github):
    fake_github.add_pull("acme/shop", 42, head_sha="a" * 40)
    put(api, body={"head_sha": "a" * 40, "image": IMAGE})
    fake_github.update_pull("acme/shop", 42, head_sha="c" * 40)
    assert put(api, body={"head_sha": "c" * 40, "image": IMAGE}).status_code == 200


def test_when_github_cannot_be_asked_the_new_commit_goes_ahead(api, fake_github):
    fake_github.add_pull("acme/shop", 42, head_sha="a" * 40)
    put(api, body={"head_sha": "a" * 40, "image": IMAGE})
    fake_github.fail_next(5, status=502)
    response = put(api, body={"head_sha": "d" * 40, "image": IMAGE})
    assert response.status_code == 200 and response.json()["head_sha"] == "d" * 40


# --- hostile input: always a 4xx naming the field, never a 5xx --------------------------------------------


@pytest.mark.parametrize("hours", [10**12, 10**30, 1e12, 8785])
def test_extend_hours_are_bounded(api, hours):
    put(api)
    response = api.post("/api/v1/repos/acme/shop/previews/42/extend", data={"hours": hours, "reason": "x"},
                        content_type="application/json")
    assert response.status_code == 422 and "hours" in fields_of(response)


def test_100000_nested_brackets_are_400_not_500(api):
    response = put(api, body="[" * 100_000 + "]" * 100_000)
    assert response.status_code == 400
    assert "nests objects or arrays more than 32 levels" in response.json()["detail"]


def test_a_body_nested_past_the_limit_is_400_even_when_python_could_parse_it(api):
    body = '{"head_sha": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}"
    assert put(api, body=body).status_code == 400


def test_deeply_nested_yaml_manifests_are_422_before_anything_is_queued(api):
    OrmQ.objects.all().delete()
    response = put(api, body={"head_sha": SHA, "image": IMAGE, "manifests": "a: " + "[" * 100_000})
    assert response.status_code == 422
    [message] = [e["message"] for e in response.json()["errors"] if e["field"] == "manifests"]
    assert "nested more than 32 levels deep" in message
    assert not Preview.objects.exists() and not OrmQ.objects.exists()


def test_manifests_the_policy_refuses_are_422_naming_the_document_and_field(api):
    bundle = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: apps/v1\nkind: Deployment\n"
              "metadata: {name: w}\nspec:\n  template:\n    spec:\n      nodeName: n1\n      containers: "
              "[{name: c, image: busybox}]\n")
    response = put(api, body={"head_sha": SHA, "image": IMAGE, "manifests": bundle})
    assert response.status_code == 422
    assert fields_of(response)["manifests"].startswith("document 2, spec.template.spec.nodeName: ")
    assert not Preview.objects.exists()


def test_valid_manifests_are_accepted(api):
    sample = (Path(__file__).resolve().parent.parent / "previews" / "samples" / "shop.yaml").read_text()
    assert put(api, body={"head_sha": SHA, "image": IMAGE, "manifests": sample}).status_code == 201


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v2/repos/acme/shop/previews/1", "/api/", "/api/schema/x"])
def test_an_unmatched_api_path_is_a_problem_404(api, path):
    response = api.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 404


# --- the preview limit holds on every way up ----------------------------------------------------------------


def test_reopening_through_put_counts_against_the_limit(api, repo):
    repo.max_live_previews = 1
    repo.save()
    put(api)
    api.delete("/api/v1/repos/acme/shop/previews/42")
    Preview.objects.filter(pr_number=42).update(status="deleted")
    assert put(api, path="/api/v1/repos/acme/shop/previews/43").status_code == 201
    response = put(api, body={"head_sha": "e" * 40, "image": IMAGE})
    assert response.status_code == 409 and "maximum" in response.json()["detail"]
    assert Preview.objects.get(pr_number=42).desired == "down"


def test_reopening_a_preview_still_being_deleted_does_not_count_itself(api, repo):
    repo.max_live_previews = 1
    repo.save()
    put(api)
    api.delete("/api/v1/repos/acme/shop/previews/42")
    assert put(api, body={"head_sha": "e" * 40, "image": IMAGE}).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_concurrent_new_previews_never_pass_the_limit(repo, token):
    repo.max_live_previews = 2
    repo.save()
    barrier = threading.Barrier(6)
    statuses = []

    def call(number: int):
        try:
            client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
            barrier.wait()
            statuses.append(put(client, path=f"/api/v1/repos/acme/shop/previews/{number}").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=call, args=(n,)) for n in range(100, 106)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201, 201, 409, 409, 409, 409]
    assert Preview.objects.count() == 2
    OrmQ.objects.all().delete()


# --- the stale-commit check runs under the row lock ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_older_commit_racing_the_newer_one_never_wins(repo, token, fake_github):
    older, newer = "a" * 40, "b" * 40
    for number in range(200, 208):
        fake_github.add_pull("acme/shop", number, head_sha=newer)
        barrier = threading.Barrier(2)

        def call(sha: str, number=number, barrier=barrier):
            try:
                client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
                barrier.wait()
                put(client, path=f"/api/v1/repos/acme/shop/previews/{number}",
                    body={"head_sha": sha, "image": IMAGE})
            finally:
                connection.close()

        threads = [threading.Thread(target=call, args=(sha,)) for sha in (older, newer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert Preview.objects.get(pr_number=number).head_sha == newer, number
    OrmQ.objects.all().delete()
