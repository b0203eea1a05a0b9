"""The API's cheap paths: the token cache and its revocation bound, the queries per request, the
one-statement idempotent PUT, the explicit preview representation, and a stale-commit check that knows the PR's
head without asking GitHub."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone
from django_q.models import OrmQ

from previews import links, payloads, selectors, services
from previews.api.serializers import (
    PreviewDataSerializer,
    PreviewLinksSerializer,
    PreviewSerializer,
    PreviewUpsertSerializer,
    common_upsert_data,
)
from previews.models import ApiToken, Preview, PullRequestState, Repository
from previews.services import pull_requests
from tests.factories import make_preview, make_repository

pytestmark = pytest.mark.django_db
SHA = "0123456789abcdef0123456789abcdef01234567"
IMAGE = "ghcr.io/acme/shop:pr-42-0123456"
PATH = "/api/v1/repos/acme/shop/previews/42"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(services.TOKEN_CACHE, "clock", fake)
    services.TOKEN_CACHE.clear()
    yield fake
    services.TOKEN_CACHE.clear()


@pytest.fixture
def repo() -> Repository:
    return make_repository(owner="acme", name="shop", max_ttl_hours=240)


@pytest.fixture
def issued(repo) -> tuple[ApiToken, str]:
    return services.token_create(name="ci", repository=repo)


def put(client: Client, body: dict | None = None, path: str = PATH):
    return client.put(path, data=json.dumps(body or {"head_sha": SHA, "image": IMAGE}),
                      content_type="application/json")


# --- the token cache: revocation is honoured within PREVIEWS_TOKEN_CACHE_SECONDS -----------------------------


def test_a_token_revoked_elsewhere_is_refused_once_the_cache_bound_has_passed(repo, issued, clock, settings):
    settings.PREVIEWS_TOKEN_CACHE_SECONDS = 5
    token, plaintext = issued
    make_preview(repo, pr_number=42)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert client.get(PATH).status_code == 200
    # Revoked by another process (the admin of another web process): this one's cache does not know yet.
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    clock.now += 4.9
    assert client.get(PATH).status_code == 200  # within the bound: served from the cache
    clock.now += 0.1
    refused = client.get(PATH)
    assert refused.status_code == 401 and refused.json()["detail"] == "the token is unknown or revoked"


def test_the_bound_holds_on_the_real_clock(repo, issued, settings):
    settings.PREVIEWS_TOKEN_CACHE_SECONDS = 1
    services.TOKEN_CACHE.clear()
    token, plaintext = issued
    make_preview(repo, pr_number=42)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert client.get(PATH).status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    time.sleep(1.05)
    assert client.get(PATH).status_code == 401


def test_revoking_in_this_process_is_immediate(repo, issued, clock):
    token, plaintext = issued
    make_preview(repo, pr_number=42)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert client.get(PATH).status_code == 200
    services.token_revoke(token)
    assert client.get(PATH).status_code == 401


def test_a_deleted_token_is_refused_after_the_bound_too(repo, issued, clock, settings):
    token, plaintext = issued
    make_preview(repo, pr_number=42)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert client.get(PATH).status_code == 200
    ApiToken.objects.filter(pk=token.pk).delete()
    clock.now += settings.PREVIEWS_TOKEN_CACHE_SECONDS
    assert client.get(PATH).status_code == 401


def test_a_cache_of_zero_seconds_reads_the_token_on_every_request(repo, issued, clock, settings):
    settings.PREVIEWS_TOKEN_CACHE_SECONDS = 0
    token, plaintext = issued
    make_preview(repo, pr_number=42)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert client.get(PATH).status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    assert client.get(PATH).status_code == 401


def test_a_wrong_secret_with_a_cached_tokens_prefix_is_refused(repo, issued, clock):
    _, plaintext = issued
    make_preview(repo, pr_number=42)
    assert Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}").get(PATH).status_code == 200
    forged = plaintext[:-4] + ("AAAA" if not plaintext.endswith("AAAA") else "BBBB")
    assert Client(HTTP_AUTHORIZATION=f"Bearer {forged}").get(PATH).status_code == 401


def test_last_used_at_is_written_at_most_once_a_minute(repo, issued, clock, django_assert_num_queries):
    token, plaintext = issued
    make_preview(repo, pr_number=42)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert client.get(PATH).status_code == 200
    first = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first is not None
    clock.now += 10  # the cache entry expired: the token is read again, but not written
    with django_assert_num_queries(2):  # token, preview
        assert client.get(PATH).status_code == 200
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first


# --- queries per request ------------------------------------------------------------------------------------


def test_a_get_with_a_cached_token_is_one_query(repo, issued, clock, django_assert_num_queries):
    make_preview(repo, pr_number=42)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {issued[1]}")
    assert client.get(PATH).status_code == 200  # token read, cached; last_used_at written
    with django_assert_num_queries(1):
        response = client.get(PATH)
    assert response.status_code == 200 and response.json()["pr_number"] == 42


def test_an_idempotent_put_with_a_cached_token_is_one_statement(repo, issued, clock, django_assert_num_queries):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {issued[1]}")
    assert put(client).status_code == 201
    OrmQ.objects.all().delete()
    with django_assert_num_queries(1):  # the repository and the conditional UPDATE ... RETURNING, in one
        response = put(client)
    assert response.status_code == 200 and response.json()["deploy_enqueued"] is False
    assert OrmQ.objects.count() == 0
    preview = Preview.objects.select_related("repository").get(pr_number=42)
    assert response.json() == {**drf_rendering(preview), "deploy_enqueued": False}


def test_the_api_answers_what_drf_renders_of_the_stored_preview(repo, issued, clock):
    """The GET's and the one-statement PUT's records (not model instances) render as DRF renders the model."""
    client = Client(HTTP_AUTHORIZATION=f"Bearer {issued[1]}")
    assert put(client, {"head_sha": SHA, "image": IMAGE, "title": "Add “cart” ✓", "author": "mona"}).status_code == 201
    now = timezone.now()
    Preview.objects.filter(pr_number=42).update(
        status="ready", ready_at=now, data_mode="schema", data_name="pr_42", data_size_bytes=12345,
        data_size_at=now, data_reset_at=now, pinned=True, status_message="line\nbreak")
    got = client.get(PATH)
    preview = Preview.objects.select_related("repository").get(pr_number=42)
    assert got.content == json.dumps(drf_rendering(preview), ensure_ascii=False, separators=(",", ":")).encode()
    again = put(client)
    preview.refresh_from_db()
    assert again.json() == {**drf_rendering(preview), "deploy_enqueued": False}
    OrmQ.objects.all().delete()


@pytest.mark.parametrize("body, field", [
    ({"head_sha": SHA, "image": IMAGE, "ttl_hours": 241}, "ttl_hours"),  # over this repository's maximum (240)
    ({"head_sha": SHA, "image": IMAGE, "ttl_hours": 0}, "ttl_hours"),
    ({"head_sha": SHA.upper(), "image": IMAGE}, "head_sha"),
    ({"head_sha": SHA, "image": IMAGE, "title": "x" * 301}, "title"),
    ({"head_sha": SHA, "image": IMAGE, "title": "a\x00b"}, "title"),
])
def test_an_invalid_idempotent_put_is_refused_and_touches_nothing(repo, issued, clock, body, field):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {issued[1]}")
    assert put(client).status_code == 201
    before = Preview.objects.get(pr_number=42).updated_at
    response = put(client, body)
    assert response.status_code == 422, response.json()
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert Preview.objects.get(pr_number=42).updated_at == before
    OrmQ.objects.all().delete()


def test_a_ttl_within_the_maximum_stays_on_the_one_statement_path(repo, issued, clock, django_assert_num_queries):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {issued[1]}")
    assert put(client).status_code == 201
    with django_assert_num_queries(1):
        response = put(client, {"head_sha": SHA, "image": IMAGE, "ttl_hours": 240})
    assert response.status_code == 200 and response.json()["deploy_enqueued"] is False
    OrmQ.objects.all().delete()


def test_an_unknown_repository_and_a_foreign_scope_answer_as_before(repo, issued, clock):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {issued[1]}")
    refused = put(client, path="/api/v1/repos/acme/other/previews/42")
    assert refused.status_code == 403 and refused.json()["detail"] == "this token may only act on acme/shop"
    admin = Client(HTTP_AUTHORIZATION=f"Bearer {services.token_create(name='admin', repository=None)[1]}")
    missing = put(admin, path="/api/v1/repos/acme/nope/previews/42")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "repository acme/nope is not configured in this service"
    invalid = put(admin, {"head_sha": "nope", "image": IMAGE}, path="/api/v1/repos/acme/nope/previews/42")
    assert invalid.status_code == 404  # the repository first, then the body


def test_a_missing_preview_or_repository_is_a_404_in_at_most_two_queries(repo, issued, clock,
                                                                          django_assert_max_num_queries):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {issued[1]}")
    client.get(PATH)
    with django_assert_max_num_queries(2):  # the joined read finds nothing, then the repository
        missing = client.get(PATH)
    assert missing.status_code == 404 and missing.json()["detail"] == "acme/shop has no preview for PR #42"
    other = Client(HTTP_AUTHORIZATION=f"Bearer {services.token_create(name='admin', repository=None)[1]}")
    unknown = other.get("/api/v1/repos/acme/nope/previews/42")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "repository acme/nope is not configured in this service"


def test_the_joined_read_is_case_insensitive_like_the_repository_lookup(repo, issued, clock):
    make_preview(repo, pr_number=42)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {issued[1]}")
    response = client.get("/api/v1/repos/ACME/Shop/previews/42")
    assert response.status_code == 200 and response.json()["repository"] == "acme/shop"


# --- the idempotent PUT's one statement keeps the locked path's rules ---------------------------------------


def test_the_one_statement_put_updates_title_and_author_only_when_given(repo, issued, clock):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {issued[1]}")
    assert put(client, {"head_sha": SHA, "image": IMAGE, "title": "First", "author": "mona"}).status_code == 201
    before = Preview.objects.get(pr_number=42)
    again = put(client)
    assert again.status_code == 200 and again.json()["deploy_enqueued"] is False
    after = Preview.objects.get(pr_number=42)
    assert (after.title, after.author, after.generation) == ("First", "mona", before.generation)
    assert after.updated_at > before.updated_at
    assert again.json()["updated_at"].startswith(after.updated_at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert put(client, {"head_sha": SHA, "image": IMAGE, "title": "Second"}).json()["title"] == "Second"
    OrmQ.objects.all().delete()


@pytest.mark.parametrize("change", ["failed", "down", "image", "manifests"])
def test_anything_but_an_unchanged_request_takes_the_locked_path(repo, issued, clock, change):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {issued[1]}")
    assert put(client).status_code == 201
    body = {"head_sha": SHA, "image": IMAGE}
    if change == "failed":
        Preview.objects.filter(pr_number=42).update(status="failed")
    elif change == "down":
        Preview.objects.filter(pr_number=42).update(desired="down", status="deleted")
    elif change == "image":
        body["image"] = "ghcr.io/acme/shop:pr-42-other"
    else:
        body["manifests"] = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata: {}\n"
    response = put(client, body)
    assert response.status_code == 200, response.json()
    assert response.json()["deploy_enqueued"] is True and response.json()["generation"] == 2
    OrmQ.objects.all().delete()


@pytest.mark.parametrize("status", list(Preview.Status))
@pytest.mark.parametrize("desired", list(Preview.Desired))
def test_unchanged_means_the_same_to_the_locked_path_and_to_the_statements(repo, status, desired):
    """One rule (services.upsert.Unchanged): the Python check of the locked path and the SQL of the one-statement
    paths agree for every status, and only pending, deploying or ready previews that are up are unchanged."""
    from django.db import connection

    from previews.services.upsert import Unchanged

    preview = make_preview(repo, pr_number=42, head_sha=SHA, images={"ghcr.io/acme/shop": IMAGE}, status=status,
                           desired=desired)
    preview.refresh_from_db()
    unchanged = Unchanged(services.PreviewRequest(head_sha=SHA, images=(IMAGE,)), {"ghcr.io/acme/shop": IMAGE})
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM {Preview._meta.db_table} p WHERE p."id" = %s AND '
                       f'{Unchanged.condition("p")}', [preview.pk, *unchanged.condition_params()])
        in_sql = cursor.fetchone()[0] == 1
    assert unchanged.holds(preview) is in_sql
    assert in_sql is (desired == "up" and status in ("pending", "deploying", "ready"))
    other = Unchanged(services.PreviewRequest(head_sha="f" * 40, images=(IMAGE,)), {"ghcr.io/acme/shop": IMAGE})
    assert not other.holds(preview)


# --- the preview's representation is DRF's --------------------------------------------------------------------


def drf_rendering(preview: Preview) -> dict:
    """PreviewSerializer rendered field by field by DRF itself: each model field by its serializer field, `data`
    and `links` by the serializers the schema declares for them, from the preview's values."""
    rendered = {}
    for name, field in PreviewSerializer().fields.items():
        if name == "data":
            rendered[name] = PreviewDataSerializer({
                "mode": preview.data_mode or preview.repository.data_mode, "database": preview.data_name,
                "size_bytes": preview.data_size_bytes, "size_measured_at": preview.data_size_at,
                "last_reset_at": preview.data_reset_at}).data
        elif name == "links":
            rendered[name] = PreviewLinksSerializer(links.api_links(preview)).data
        else:
            attribute = field.get_attribute(preview)
            rendered[name] = None if attribute is None else field.to_representation(attribute)
    return rendered


@pytest.mark.parametrize("variant", ["fresh", "everything-set"])
def test_the_representation_is_what_drf_renders(repo, variant):
    preview = make_preview(repo, pr_number=42)
    if variant == "everything-set":
        now = timezone.now()
        Preview.objects.filter(pk=preview.pk).update(
            ready_at=now, deleted_at=now - timedelta(seconds=1), data_mode="schema", data_name="pr_42",
            data_size_bytes=12345, data_size_at=now, data_reset_at=now, pinned=True, title="Add “cart” ✓",
            status_message="line\nbreak", images={"ghcr.io/acme/shop": IMAGE})
    preview = Preview.objects.select_related("repository").get(pk=preview.pk)
    expected = drf_rendering(preview)
    assert PreviewSerializer(preview).data == expected
    assert list(PreviewSerializer(preview).data) == list(expected)  # the same order of keys
    assert json.dumps(PreviewSerializer(preview).data) == json.dumps(expected)


# --- the plain-SQL lookups and the common-body check -----------------------------------------------------------


def test_the_sql_lookups_find_what_the_querysets_find(repo):
    other = make_repository(owner="acme", name="other")
    preview = make_preview(repo, pr_number=42)
    make_preview(other, pr_number=42)
    assert selectors.repository_get("ACME", "SHOP") == repo
    full = selectors.repository_get("acme", "shop")
    assert {f.attname: getattr(full, f.attname) for f in Repository._meta.concrete_fields} == {
        f.attname: getattr(repo, f.attname) for f in Repository._meta.concrete_fields}
    assert selectors.repository_get("acme", "nope") is None
    found = selectors.preview_by_name("Acme", "shop", 42)
    stored = Preview.objects.get(pk=preview.pk)
    for name in selectors.API_PREVIEW.attnames:
        assert getattr(found, name) == getattr(stored, name), name
    assert found.pk == preview.pk and found.repository.pk == repo.pk and found.repository.owner == "acme"
    assert selectors.preview_by_name("acme", "shop", 43) is None


VALID_BODIES = [
    {"head_sha": SHA, "image": IMAGE},
    {"head_sha": SHA, "image": "registry.example.com:5000/team/app@sha256:" + "a" * 64, "title": "", "author": ""},
    {"head_sha": SHA, "image": IMAGE, "title": "Add “cart” ✓", "author": "mona", "ttl_hours": 8784},
    {"head_sha": SHA, "image": "app:tàg", "ttl_hours": 1, "title": "x" * 300, "author": "y" * 39},
]
OTHER_BODIES = [
    {}, [], "x", None, {"head_sha": SHA}, {"image": IMAGE},
    {"head_sha": SHA, "image": IMAGE, "manifests": ""}, {"head_sha": SHA, "images": []},
    {"head_sha": SHA, "image": IMAGE, "extra": 1}, {"head_sha": SHA, "image": IMAGE, "ttl_hours": True},
    {"head_sha": SHA, "image": IMAGE, "ttl_hours": "5"}, {"head_sha": SHA, "image": IMAGE, "ttl_hours": 5.0},
    {"head_sha": SHA, "image": IMAGE, "ttl_hours": 0}, {"head_sha": SHA, "image": IMAGE, "ttl_hours": 8785},
    {"head_sha": SHA, "image": ""}, {"head_sha": "", "image": IMAGE}, {"head_sha": SHA + "\n", "image": IMAGE},
    {"head_sha": SHA, "image": 5}, {"head_sha": SHA, "image": "Bad Image"}, {"head_sha": SHA, "image": "a" * 513},
    {"head_sha": SHA, "image": IMAGE, "title": None}, {"head_sha": SHA, "image": IMAGE, "title": 7},
    {"head_sha": SHA, "image": IMAGE, "title": "x" * 301}, {"head_sha": SHA, "image": IMAGE, "author": "y" * 40},
    {"head_sha": SHA, "image": IMAGE, "title": "a\x00"}, {"head_sha": SHA, "image": IMAGE, "author": "\ud800"},
]


@pytest.mark.parametrize("body", VALID_BODIES + OTHER_BODIES)
def test_the_common_body_check_agrees_with_the_serializer(body):
    """common_upsert_data is the serializer's validated_data for the bodies it takes, and takes no invalid one."""
    serializer = PreviewUpsertSerializer(data=body)
    fast = common_upsert_data(body)
    if body in VALID_BODIES:
        assert serializer.is_valid(), serializer.errors
        assert fast == dict(serializer.validated_data)
    elif fast is not None:
        assert serializer.is_valid() and fast == dict(serializer.validated_data)


# --- the stale-commit check: what the service knows first, GitHub only for unknown commits, tightly bound -----


def webhook(client: Client, sha: str, updated_at: datetime, delivery: str, action: str = "synchronize"):
    payload = {"action": action, "number": 42, "repository": {"full_name": "acme/shop"},
               "pull_request": {"number": 42, "title": "Add cart", "user": {"login": "mona"},
                                "head": {"sha": sha, "repo": {"full_name": "acme/shop"}},
                                "author_association": "MEMBER",
                                "updated_at": updated_at.strftime("%Y-%m-%dT%H:%M:%SZ")}}
    body = json.dumps(payload).encode()
    return client.post("/api/v1/github/webhook", data=body, content_type="application/json",
                       HTTP_X_GITHUB_EVENT="pull_request", HTTP_X_GITHUB_DELIVERY=delivery,
                       HTTP_X_HUB_SIGNATURE_256=payloads.signature_for("secret", body))


def pulls_asked(fake_github) -> int:
    return sum(1 for r in fake_github.requests if "/pulls/" in r.path)


def test_known_heads_decide_without_asking_github(repo, issued, clock, fake_github, settings):
    settings.GITHUB_WEBHOOK_SECRET = "secret"
    first, second, third = "a" * 40, "b" * 40, "c" * 40
    fake_github.add_pull("acme/shop", 42, head_sha=third)
    make_preview(repo, pr_number=42, head_sha=first)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {issued[1]}")
    hooks = Client()
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    # Pushes of `second` then `third`; the deliveries arrive out of order (repository has no image template:
    # the webhook records the head and leaves deploying to CI).
    assert webhook(hooks, third, t0 + timedelta(minutes=2), "d-3").status_code == 202
    assert webhook(hooks, second, t0 + timedelta(minutes=1), "d-2").status_code == 202
    known = pull_requests.known_head(pull_requests.pull_request_get(repo, 42))
    assert known is not None and known.head_sha == third and known.earlier == (second,)
    fake_github.slow_next(10, 30, path_contains="/pulls/")  # were GitHub asked, the requests would hang
    fake_github.reset_requests()

    started = time.monotonic()
    stale = put(client, {"head_sha": second, "image": IMAGE})
    assert stale.status_code == 409 and "not the head of PR #42 any more (it is ccccccc)" in stale.json()["detail"]
    current = put(client, {"head_sha": third, "image": IMAGE})
    assert current.status_code == 200 and current.json()["deploy_enqueued"] is True
    assert time.monotonic() - started < 5
    assert pulls_asked(fake_github) == 0
    assert Preview.objects.get(pr_number=42).head_sha == third
    OrmQ.objects.all().delete()


def test_an_unknown_commit_asks_github_within_the_bound_and_goes_ahead_without_an_answer(
        repo, issued, clock, fake_github, settings):
    settings.PREVIEWS_STALE_CHECK_TIMEOUT = 1
    fake_github.add_pull("acme/shop", 42, head_sha="b" * 40)
    make_preview(repo, pr_number=42, head_sha="a" * 40)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {issued[1]}")
    fake_github.slow_next(5, 20, path_contains="/pulls/42")
    started = time.monotonic()
    response = put(client, {"head_sha": "c" * 40, "image": IMAGE})
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.json()["head_sha"] == "c" * 40
    assert elapsed < 4, f"the request waited {elapsed:.1f}s for GitHub"
    assert pulls_asked(fake_github) >= 1
    OrmQ.objects.all().delete()


def test_githubs_answer_is_remembered_so_the_next_request_need_not_ask(repo, issued, clock, fake_github):
    newer, older = "b" * 40, "a" * 40
    fake_github.add_pull("acme/shop", 42, head_sha=newer)
    make_preview(repo, pr_number=42, head_sha="0" * 40)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {issued[1]}")
    assert put(client, {"head_sha": newer, "image": IMAGE}).status_code == 200  # asks GitHub: newer is the head
    fake_github.reset_requests()
    assert put(client, {"head_sha": "0" * 40, "image": IMAGE}).status_code == 409  # an earlier head, known
    assert pulls_asked(fake_github) == 0
    assert put(client, {"head_sha": older, "image": IMAGE}).status_code == 409  # unknown: GitHub says stale
    assert pulls_asked(fake_github) == 1
    OrmQ.objects.all().delete()


def test_recorded_heads_follow_the_prs_own_order(repo):
    t = datetime(2026, 1, 1, tzinfo=UTC)

    def webhook_says(sha: str, updated_at: datetime) -> None:
        services.pull_request_record(repository=repo, pr_number=1, state=PullRequestState.OPEN, draft=False,
                                     labels=[], head_sha=sha, github_updated_at=updated_at)

    webhook_says("a" * 40, t)
    webhook_says("c" * 40, t + timedelta(minutes=2))
    webhook_says("b" * 40, t + timedelta(minutes=1))  # delivered late
    known = pull_requests.known_head(pull_requests.pull_request_get(repo, 1))
    assert known.head_sha == "c" * 40 and set(known.earlier) == {"a" * 40, "b" * 40}
    webhook_says("a" * 40, t + timedelta(minutes=3))  # force-pushed back
    known = pull_requests.known_head(pull_requests.pull_request_get(repo, 1))
    assert known.head_sha == "a" * 40 and set(known.earlier) == {"b" * 40, "c" * 40}
    assert pull_requests.known_head(pull_requests.pull_request_get(repo, 2)) is None


def test_one_put_asks_github_about_a_pr_once_for_both_checks(label_repo, issued, clock, fake_github):
    """A PR no webhook told about, whose preview exists: the opt-in check and the stale-commit check share
    one question to GitHub."""
    fake_github.add_pull("acme/shop", 42, head_sha="b" * 40)
    fake_github.update_pull("acme/shop", 42, labels=["preview"])
    make_preview(label_repo, pr_number=42, head_sha="a" * 40)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {issued[1]}")
    fake_github.reset_requests()
    assert put(client, {"head_sha": "c" * 40, "image": IMAGE}).status_code == 409  # stale: GitHub says b
    assert pulls_asked(fake_github) == 1
    assert pull_requests.known_head(pull_requests.pull_request_get(label_repo, 42)).head_sha == "b" * 40
    fake_github.reset_requests()
    assert put(client, {"head_sha": "b" * 40, "image": IMAGE}).status_code == 200  # the head, known: no question
    assert pulls_asked(fake_github) == 0
    OrmQ.objects.all().delete()


# --- the opt-in check: webhooks first, GitHub tightly bounded, asked once ------------------------------------


@pytest.fixture
def label_repo(repo) -> Repository:
    Repository.objects.filter(pk=repo.pk).update(opt_in="label")
    repo.refresh_from_db()
    return repo


def test_the_opt_in_check_asks_github_within_the_bound_once_and_goes_ahead(
        label_repo, issued, clock, fake_github, settings):
    from django.core.cache import cache
    cache.clear()
    settings.PREVIEWS_STALE_CHECK_TIMEOUT = 1
    fake_github.add_pull("acme/shop", 42, head_sha=SHA)  # no label: GitHub would say "not opted in"
    client = Client(HTTP_AUTHORIZATION=f"Bearer {issued[1]}")
    fake_github.slow_next(5, 20, path_contains="/pulls/42")
    started = time.monotonic()
    response = put(client)
    elapsed = time.monotonic() - started
    assert response.status_code == 201, response.json()  # no answer in time: goes ahead
    assert elapsed < 4, f"the request waited {elapsed:.1f}s for GitHub"
    fake_github.reset_requests()
    Preview.objects.filter(pr_number=42).update(status="failed")  # so that the next PUT changes something
    started = time.monotonic()
    assert put(client).status_code == 200
    assert time.monotonic() - started < 1 and pulls_asked(fake_github) == 0  # not answering is remembered too
    cache.clear()
    OrmQ.objects.all().delete()
