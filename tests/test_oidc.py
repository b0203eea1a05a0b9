"""GitHub Actions OIDC tokens on the API, against a local issuer on loopback (real PyJWT, real HTTP)."""

from __future__ import annotations

import json
import socket
import time

import pytest
from django.test import Client

from previews import oidc, services
from previews.models import OidcTokenUse, Preview, PreviewEvent
from tests.factories import make_preview, make_repository
from tests.oidc_issuer import AUDIENCE, TestIssuer, new_key

pytestmark = pytest.mark.django_db


def _rogue_key():
    return new_key()
HEAD = "0123456789abcdef0123456789abcdef01234567"
MERGE = "fedcba9876543210fedcba9876543210fedcba98"
BASE = "1111111111111111111111111111111111111111"
PATH = "/api/v1/repos/acme/shop/previews/42"


@pytest.fixture
def issuer(settings):
    with TestIssuer() as issuer:
        settings.PREVIEWS_OIDC_ISSUER = issuer.url
        settings.PREVIEWS_OIDC_JWKS_URL = ""  # discovered from the issuer
        settings.PREVIEWS_OIDC_AUDIENCE = AUDIENCE
        settings.PREVIEWS_OIDC_JWKS_COOLDOWN = 60
        settings.PREVIEWS_OIDC_ALLOWED_EVENTS = ["pull_request"]
        settings.GITHUB_TOKEN = ""
        settings.GITHUB_APP_ID = ""
        oidc.reset_cache()
        yield issuer
        oidc.reset_cache()


@pytest.fixture
def repo():
    repository = make_repository(owner="acme", name="shop", github_repository_id=100, github_owner_id=200)
    # PR 42's branch is in the repository itself, as its pull_request webhook said.
    services.pull_request_record(repository=repository, pr_number=42, state="open", draft=False, labels=[],
                                 head_sha=HEAD, head_repository="acme/shop", author_association="MEMBER")
    return repository


def call(token: str, method: str = "put", path: str = PATH, body: dict | None = None):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    if method in ("put", "post"):
        body = {"head_sha": HEAD, "image": "ghcr.io/acme/shop:pr-42"} if body is None else body
        return getattr(client, method)(path, data=json.dumps(body), content_type="application/json")
    return getattr(client, method)(path)


def refused(response, status: int, claim: str) -> str:
    """Assert a problem+json refusal naming `claim`; return its detail."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert [e["field"] for e in body["errors"]] == [f"token.{claim}"], body
    return body["detail"]


# --- the good path --------------------------------------------------------------------------------------------


def test_a_good_token_creates_the_preview_and_the_event_names_the_workflow_run(issuer, repo):
    response = call(issuer.mint())
    assert response.status_code == 201, response.content
    preview = Preview.objects.get(repository=repo, pr_number=42)
    event = PreviewEvent.objects.get(preview=preview, action="created")
    assert event.actor_kind == "workflow"
    assert "run 9001/1" in event.actor and "PR preview" in event.actor
    assert event.details["actor_url"] == "https://github.com/acme/shop/actions/runs/9001/attempts/1"


def test_the_keys_are_discovered_once_and_then_served_from_the_cache(issuer, repo):
    for method in ("put", "get"):
        assert call(issuer.mint(), method).status_code in (200, 201)
    assert issuer.count("/.well-known/openid-configuration") == 1
    assert issuer.count() == 1


def test_static_api_tokens_keep_working_beside_oidc(issuer, repo):
    token = services.token_create(name="ci", repository=repo)[1]
    assert call(token).status_code == 201
    assert issuer.count() == 0


def test_a_one_element_audience_list_with_ours_is_accepted(issuer, repo):
    assert call(issuer.mint(aud=[AUDIENCE])).status_code == 201


def test_a_token_may_act_on_the_timeline_once_per_operation(issuer, repo):
    token = issuer.mint()
    assert call(token, "put").status_code == 201
    assert call(token, "get").status_code == 200
    assert call(token, "post", PATH + "/extend", {"hours": 1, "reason": "QA"}).status_code == 200
    assert call(token, "delete").status_code == 202
    assert OidcTokenUse.objects.count() == 4


# --- refused: the token itself (401) -------------------------------------------------------------------------


def test_a_token_for_another_audience_is_refused(issuer, repo):
    detail = refused(call(issuer.mint(aud="https://vault.example.com")), 401, "aud")
    assert "vault.example.com" in detail


def test_a_token_for_several_audiences_including_ours_is_refused(issuer, repo):
    detail = refused(call(issuer.mint(aud=[AUDIENCE, "https://vault.example.com"])), 401, "aud")
    assert "several audiences" in detail


def test_an_expired_token_is_refused(issuer, repo):
    now = int(time.time())
    refused(call(issuer.mint(iat=now - 400, nbf=now - 400, exp=now - 60)), 401, "exp")


def test_a_token_within_the_leeway_of_its_expiry_is_accepted(issuer, repo, settings):
    settings.PREVIEWS_OIDC_LEEWAY = 30
    now = int(time.time())
    assert call(issuer.mint(iat=now - 300, nbf=now - 300, exp=now - 10)).status_code == 201


def test_a_token_not_yet_valid_is_refused(issuer, repo):
    now = int(time.time())
    refused(call(issuer.mint(nbf=now + 120, exp=now + 600)), 401, "nbf")


def test_a_token_older_than_the_maximum_age_is_refused_even_before_it_expires(issuer, repo, settings):
    settings.PREVIEWS_OIDC_MAX_TOKEN_AGE = 600
    now = int(time.time())
    detail = refused(call(issuer.mint(iat=now - 700, nbf=now - 700, exp=now + 300)), 401, "iat")
    assert "600s" in detail


def test_a_token_from_another_issuer_is_refused(issuer, repo):
    refused(call(issuer.mint(iss="https://token.actions.githubusercontent.com")), 401, "iss")


def test_an_unknown_kid_is_fetched_again_once_then_refused(issuer, repo):
    assert call(issuer.mint()).status_code == 201
    assert issuer.count() == 1
    refused(call(issuer.mint(kid="rogue", key=_rogue_key())), 401, "kid")
    assert issuer.count() == 2  # one refetch for the unknown kid
    refused(call(issuer.mint(kid="rogue", key=_rogue_key())), 401, "kid")
    assert issuer.count() == 2  # and none again within the cooldown


def test_a_flood_of_unknown_kids_fetches_at_most_once_per_cooldown(issuer, repo, settings):
    settings.PREVIEWS_OIDC_JWKS_COOLDOWN = 8  # long enough for 30 calls on a busy 2-core machine
    assert call(issuer.mint()).status_code == 201
    key = _rogue_key()
    flood = [issuer.mint(kid=f"random-{i}", key=key) for i in range(30)]
    started = time.monotonic()
    for token in flood:
        refused(call(token), 401, "kid")
    assert time.monotonic() - started < 8, "the flood must fit in one cooldown for this test to mean anything"
    assert issuer.count() == 2  # the first fill, then one refetch for the whole flood
    time.sleep(8.1)
    refused(call(issuer.mint(kid="random-after", key=key)), 401, "kid")
    assert issuer.count() == 3  # the next cooldown allows one more


def test_a_key_rotated_in_by_the_issuer_is_picked_up(issuer, repo):
    assert call(issuer.mint()).status_code == 201
    issuer.add_key("key-2")
    assert call(issuer.mint(kid="key-2"), "get").status_code == 200
    assert issuer.count() == 2


def test_alg_none_is_refused(issuer, repo):
    refused(call(issuer.unsigned()), 401, "alg")
    assert not Preview.objects.exists()


def test_hs256_signed_with_the_public_key_is_refused(issuer, repo):
    refused(call(issuer.hs256_with_public_key()), 401, "alg")
    assert not Preview.objects.exists()


def test_a_token_signed_by_another_key_under_the_issuers_kid_is_refused(issuer, repo):
    refused(call(issuer.mint(key=_rogue_key())), 401, "kid")


def test_a_replayed_jti_is_refused(issuer, repo):
    token = issuer.mint()
    assert call(token).status_code == 201
    detail = refused(call(token), 401, "jti")
    assert "already used to deploy" in detail
    # Another token (another jti) does the same thing fine.
    assert call(issuer.mint()).status_code == 200


def test_used_jtis_are_forgotten_after_their_tokens_expire(issuer, repo):
    now = int(time.time())
    assert call(issuer.mint(iat=now - 200, nbf=now - 200, exp=now - 5)).status_code == 201  # within the leeway
    OidcTokenUse.objects.update(expires_at=OidcTokenUse.objects.get().expires_at.replace(year=2000))
    assert call(issuer.mint(), "get").status_code == 200
    assert OidcTokenUse.objects.count() == 1  # the expired row went


def test_the_issuer_unreachable_is_503_not_a_refusal(issuer, repo, settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.PREVIEWS_OIDC_ISSUER = f"http://127.0.0.1:{port}"
    response = call(issuer.mint(iss=f"http://127.0.0.1:{port}"))
    assert response.status_code == 503
    assert response["Retry-After"]


def test_oidc_switched_off_refuses_jwts(issuer, repo, settings):
    settings.PREVIEWS_OIDC_ISSUER = ""
    assert call(issuer.mint()).status_code == 401
    assert issuer.count() == 0


# --- refused: the claims do not allow this request (403, the claim named) -----------------------------------


def test_a_valid_token_for_another_repository_id_is_refused(issuer, repo):
    make_repository(owner="acme", name="other", github_repository_id=300, github_owner_id=200)
    detail = refused(call(issuer.mint(repository="acme/other", repository_id="300")), 403, "repository_id")
    assert "acme/other" in detail
    assert not Preview.objects.exists()


def test_the_same_repository_name_with_another_id_is_refused(issuer, repo):
    # acme/shop deleted and recreated (or renamed away and the name taken): a new id.
    detail = refused(call(issuer.mint(repository_id="999")), 403, "repository_id")
    assert "999" in detail


def test_a_repository_without_github_ids_accepts_no_oidc_token(issuer):
    make_repository(owner="acme", name="shop")
    refused(call(issuer.mint()), 403, "repository_id")


def test_another_owner_id_is_refused(issuer, repo):
    refused(call(issuer.mint(repository_owner_id="201")), 403, "repository_owner_id")


def test_a_pr_number_differing_from_the_path_is_refused(issuer, repo):
    detail = refused(call(issuer.mint(ref="refs/pull/7/merge")), 403, "ref")
    assert "refs/pull/42/merge" in detail


def test_a_token_for_another_pr_cannot_delete_this_ones_preview(issuer, repo):
    make_preview(repo, pr_number=42)
    refused(call(issuer.mint(ref="refs/pull/7/merge"), "delete"), 403, "ref")
    assert Preview.objects.get(pr_number=42).desired == "up"


@pytest.mark.parametrize("action", ["wake", "sleep", "reset-data"])
def test_a_token_for_another_pr_cannot_wake_sleep_or_reset_this_ones_preview(issuer, repo, action):
    preview = make_preview(repo, pr_number=42)
    generation = preview.generation
    refused(call(issuer.mint(ref="refs/pull/7/merge"), "post", PATH + f"/{action}", {}), 403, "ref")
    preview.refresh_from_db()
    assert preview.generation == generation and preview.desired == "up"


def test_a_token_wakes_its_own_preview_once(issuer, repo):
    preview = make_preview(repo, pr_number=42)
    Preview.objects.filter(pk=preview.pk).update(status="sleeping")
    token = issuer.mint()
    response = call(token, "post", PATH + "/wake", {})
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "pending"
    assert PreviewEvent.objects.get(preview=preview, action="wake requested").actor_kind == "workflow"
    refused(call(token, "post", PATH + "/sleep", {}), 401, "jti")


def test_a_token_resets_its_own_previews_data_once(issuer, repo):
    make_preview(repo, pr_number=42)
    token = issuer.mint()
    assert call(token, "post", PATH + "/reset-data", {}).status_code == 409  # the repository has no data mode
    refused(call(token, "post", PATH + "/reset-data", {}), 401, "jti")


def test_a_refused_action_does_not_spend_the_token(issuer, repo):
    preview = make_preview(repo, pr_number=42)
    token = issuer.mint()
    response = call(token, "post", PATH + "/extend", {"hours": 0, "reason": "demo"})
    assert response.status_code == 422, response.content
    assert call(token, "post", "/api/v1/repos/acme/shop/previews/43/extend", {"hours": 1, "reason": "demo"}
                ).status_code == 403  # the token is for PR 42
    response = call(token, "post", PATH + "/extend", {"hours": 1, "reason": "demo"})
    assert response.status_code == 200, response.content
    assert PreviewEvent.objects.get(preview=preview, action="extended").actor_kind == "workflow"


def test_a_push_event_is_refused(issuer, repo):
    detail = refused(call(issuer.mint(event_name="push", ref="refs/heads/main")), 403, "event_name")
    assert "'push'" in detail


def test_allowed_events_are_configurable(issuer, repo, settings):
    settings.PREVIEWS_OIDC_ALLOWED_EVENTS = ["pull_request", "pull_request_target"]
    assert call(issuer.mint(event_name="pull_request_target")).status_code == 201


def test_a_workflow_outside_the_allowed_prefixes_is_refused(issuer, repo):
    repo.oidc_workflow_refs = "acme/ci/.github/workflows/preview.yml@refs/heads/main\n"
    repo.save()
    refused(call(issuer.mint()), 403, "job_workflow_ref")
    allowed = issuer.mint(job_workflow_ref="acme/ci/.github/workflows/preview.yml@refs/heads/main")
    assert call(allowed).status_code == 201


@pytest.mark.parametrize("allow,association,ok", [
    (False, "MEMBER", False),  # the repository does not allow fork previews
    (True, "NONE", False),  # allowed, but not for an outsider's PR
    (True, "FIRST_TIME_CONTRIBUTOR", False),
    (True, "COLLABORATOR", True),
])
def test_a_fork_prs_token_meets_the_same_fork_rule_as_the_webhook(issuer, repo, allow, association, ok):
    repo.allow_fork_previews = allow
    repo.save()
    services.pull_request_record(repository=repo, pr_number=7, state="open", draft=False, labels=[], head_sha=HEAD,
                                 head_repository="outsider/shop", author_association=association)
    response = call(issuer.mint(ref="refs/pull/7/merge"), path="/api/v1/repos/acme/shop/previews/7")
    if ok:
        assert response.status_code == 201, response.content
    else:
        assert "from a fork" in refused(response, 403, "ref")
        assert not Preview.objects.filter(pr_number=7).exists()


def test_a_fork_prs_token_is_checked_with_github_when_no_webhook_told(issuer, repo, fake_github):
    fake_github.add_pull("acme/shop", 8, head_sha=HEAD, head_repository="outsider/shop", author_association="NONE")
    response = call(issuer.mint(ref="refs/pull/8/merge"), path="/api/v1/repos/acme/shop/previews/8")
    assert "from a fork" in refused(response, 403, "ref")


def test_a_token_for_a_pr_nobody_can_place_is_refused(issuer, repo):
    response = call(issuer.mint(ref="refs/pull/9/merge"), path="/api/v1/repos/acme/shop/previews/9")
    assert "cannot tell whether PR #9 is from a fork" in refused(response, 403, "ref")


def test_a_public_repositorys_pull_request_run_needs_no_record_of_the_branch(issuer, repo):
    """Public repositories never send tokens to fork PRs' pull_request runs."""
    token = issuer.mint(ref="refs/pull/9/merge", repository_visibility="public")
    assert call(token, path="/api/v1/repos/acme/shop/previews/9").status_code == 201
    target = issuer.mint(ref="refs/pull/10/merge", repository_visibility="public", event_name="pull_request_target")
    assert call(target, path="/api/v1/repos/acme/shop/previews/10").status_code == 403  # not an allowed event anyway


def test_a_public_repositorys_known_fork_pr_is_still_refused(issuer, repo):
    services.pull_request_record(repository=repo, pr_number=7, state="open", draft=False, labels=[], head_sha=HEAD,
                                 head_repository="outsider/shop", author_association="NONE")
    token = issuer.mint(ref="refs/pull/7/merge", repository_visibility="public")
    assert "from a fork" in refused(call(token, path="/api/v1/repos/acme/shop/previews/7"), 403, "ref")


@pytest.mark.parametrize("ref,ok", [
    ("acme/ci/.github/workflows/preview.yml@refs/heads/main", True),
    ("acme/ci/.github/workflows/preview.yml@refs/heads/main-x", False),  # not a prefix match
    ("acme/ci/.github/workflows/preview.yml@refs/heads/mainline", False),
    ("acme/ci/.github/workflows/preview.yml.evil@refs/heads/main", False),
    ("acme/ci/.github/workflows/deploy.yml@refs/tags/v1", True),  # listed without @: any ref
    ("acme/ci/.github/workflows/deploy.yml.bak@refs/tags/v1", False),
    ("acme/ci/.github/workflows/deploy.yml", False),  # no ref at all
    ("", False),
])
def test_the_workflow_check_matches_whole_refs(ref, ok):
    entries = ["acme/ci/.github/workflows/preview.yml@refs/heads/main", "acme/ci/.github/workflows/deploy.yml"]
    assert oidc.workflow_allowed(ref, entries) is ok


def test_a_workflow_on_a_branch_that_extends_the_allowed_one_is_refused(issuer, repo):
    repo.oidc_workflow_refs = "acme/ci/.github/workflows/preview.yml@refs/heads/main\n"
    repo.save()
    refused(call(issuer.mint(job_workflow_ref="acme/ci/.github/workflows/preview.yml@refs/heads/main-x")), 403,
            "job_workflow_ref")


def test_a_job_outside_the_required_environment_is_refused(issuer, repo):
    repo.oidc_environment = "previews"
    repo.save()
    refused(call(issuer.mint()), 403, "environment")
    assert call(issuer.mint(environment="previews")).status_code == 201


def test_a_token_cannot_list_previews(issuer, repo):
    response = call(issuer.mint(), "get", "/api/v1/previews")
    assert response.status_code == 403


# --- the sha rule ---------------------------------------------------------------------------------------------


def test_the_merge_commit_of_the_requested_head_is_accepted(issuer, repo, fake_github):
    fake_github.add_commit("acme/shop", MERGE, [BASE, HEAD])
    assert call(issuer.mint(sha=MERGE)).status_code == 201
    assert call(issuer.mint(sha=MERGE), "get").status_code == 200
    assert fake_github.count("GET", f"/repos/acme/shop/commits/{MERGE}") == 1  # reads skip the check


def test_a_merge_commit_of_another_head_is_refused(issuer, repo, fake_github):
    fake_github.add_commit("acme/shop", MERGE, [BASE, "2" * 40])
    detail = refused(call(issuer.mint(sha=MERGE)), 403, "sha")
    assert "not the merge commit" in detail


def test_a_sha_github_does_not_know_is_refused(issuer, repo, fake_github):
    fake_github.add_repo("acme/shop")
    refused(call(issuer.mint(sha=MERGE)), 403, "sha")


def test_a_sha_other_than_the_head_is_refused_when_github_cannot_be_asked(issuer, repo):
    detail = refused(call(issuer.mint(sha=MERGE)), 403, "sha")
    assert "without GitHub access" in detail


def test_github_failing_during_the_sha_check_is_503(issuer, repo, fake_github):
    fake_github.add_commit("acme/shop", MERGE, [BASE, HEAD])
    fake_github.fail_next(1, 502, path_contains=f"/commits/{MERGE}")
    response = call(issuer.mint(sha=MERGE))
    assert response.status_code == 503
    assert not Preview.objects.exists()

