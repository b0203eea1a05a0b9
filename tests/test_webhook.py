"""The GitHub webhook: HMAC signatures, replays, and pull request events."""

import json
import threading

import pytest
from django.db import connection
from django.test import Client
from django_q.models import OrmQ

from previews import payloads
from previews.models import Preview, WebhookDelivery
from tests.factories import make_preview, make_repository

pytestmark = pytest.mark.django_db
SECRET = "It's a Secret to Everybody"
SHA = "c" * 40


def test_githubs_own_example_verifies():
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert payloads.verify_signature(SECRET, b"Hello, World!", signature)


@pytest.mark.parametrize("body,header", [
    (b"Hello, World?", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
    (b"Hello, World!", "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
    (b"Hello, World!", "sha256=0000"),
    (b"Hello, World!", ""),
    (b"Hello, World!", None),
])
def test_a_tampered_body_or_bad_header_does_not_verify(body, header):
    assert not payloads.verify_signature(SECRET, body, header)


def test_no_secret_never_verifies():
    assert not payloads.verify_signature("", b"x", payloads.signature_for("", b"x"))


@pytest.fixture
def hook(settings):
    settings.GITHUB_WEBHOOK_SECRET = SECRET
    client = Client()

    def send(payload: dict, event="pull_request", delivery="d-1", signature=None, raw=None):
        body = raw if raw is not None else json.dumps(payload).encode()
        headers = {"HTTP_X_GITHUB_EVENT": event, "HTTP_X_GITHUB_DELIVERY": delivery}
        sig = payloads.signature_for(SECRET, body) if signature is None else signature
        if sig:
            headers["HTTP_X_HUB_SIGNATURE_256"] = sig
        return client.post("/api/v1/github/webhook", data=body, content_type="application/json", **headers)

    return send


def pr_event(action: str, number=7, full_name="acme/shop", merged=False, head_repo="same", sha=SHA,
             association="MEMBER", updated_at: str | None = None) -> dict:
    head = {"sha": sha, "repo": {"full_name": full_name if head_repo == "same" else head_repo}}
    if head_repo is None:
        head["repo"] = None
    event = {"action": action, "number": number, "repository": {"full_name": full_name},
             "pull_request": {"number": number, "merged": merged, "title": "Add cart", "user": {"login": "mona"},
                              "head": head, "author_association": association}}
    if updated_at:
        event["pull_request"]["updated_at"] = updated_at
    return event


def test_closed_destroys_the_preview(hook):
    preview = make_preview(make_repository(owner="acme", name="shop"), pr_number=7)
    response = hook(pr_event("closed", merged=True))
    assert response.status_code == 202
    preview.refresh_from_db()
    assert preview.desired == "down" and preview.status == "deleting"
    event = preview.events.get(action="destroy requested")
    assert event.actor_kind == "webhook" and "merged" in event.message


def test_a_repeated_delivery_is_ignored(hook):
    make_preview(make_repository(owner="acme", name="shop"), pr_number=7)
    hook(pr_event("closed"), delivery="same")
    again = hook(pr_event("closed"), delivery="same")
    assert again.status_code == 202
    assert again.json()["outcome"] == "duplicate delivery, ignored"


def test_a_signed_body_resent_with_a_new_delivery_id_is_a_duplicate(hook):
    make_preview(make_repository(owner="acme", name="shop"), pr_number=7)
    body = json.dumps(pr_event("closed")).encode()
    assert hook({}, raw=body, delivery="first").json()["outcome"] == "preview for #7 is being deleted"
    again = hook({}, raw=body, delivery="forged-new-id")
    assert again.status_code == 202 and again.json()["outcome"] == "duplicate delivery, ignored"
    assert WebhookDelivery.objects.filter(delivery_id="forged-new-id").count() == 0


def test_a_captured_closed_resent_after_a_reopen_does_not_destroy_the_preview(hook):
    make_repository(owner="acme", name="shop", image_template="ghcr.io/acme/shop:pr-{number}-{short_sha}")
    hook(pr_event("opened", updated_at="2026-03-01T10:00:00Z"), delivery="d-open")
    captured = json.dumps(pr_event("closed", updated_at="2026-03-01T11:00:00Z")).encode()
    hook({}, raw=captured, delivery="d-close")
    reopened = hook(pr_event("reopened", updated_at="2026-03-01T12:00:00Z"), delivery="d-reopen")
    assert reopened.json()["outcome"] == "deploy enqueued"
    assert hook({}, raw=captured, delivery="d-replayed").json()["outcome"] == "duplicate delivery, ignored"
    assert Preview.objects.get(pr_number=7).desired == "up"


def test_a_closed_older_than_the_recorded_reopen_is_not_acted_on(hook):
    """The root cause, whatever the body's bytes: GitHub's updated_at orders the PR's states."""
    make_repository(owner="acme", name="shop", image_template="ghcr.io/acme/shop:pr-{number}-{short_sha}")
    hook(pr_event("reopened", updated_at="2026-03-01T12:00:00Z"), delivery="d-reopen")
    late = hook(pr_event("closed", updated_at="2026-03-01T11:00:00Z", merged=False), delivery="d-late-close")
    assert late.status_code == 202 and late.json()["outcome"].startswith("stale closed event")
    preview = Preview.objects.get(pr_number=7)
    assert preview.desired == "up" and not preview.events.filter(action="destroy requested").exists()


def test_an_opened_older_than_the_recorded_close_does_not_deploy(hook):
    make_repository(owner="acme", name="shop", image_template="ghcr.io/acme/shop:pr-{number}-{short_sha}")
    hook(pr_event("closed", updated_at="2026-03-01T12:00:00Z"), delivery="d-close")
    late = hook(pr_event("opened", updated_at="2026-03-01T11:00:00Z"), delivery="d-late-open")
    assert "closed PR" in late.json()["outcome"]
    assert not Preview.objects.filter(pr_number=7).exists()


def test_opened_deploys_when_the_repository_has_an_image_template(hook):
    make_repository(owner="acme", name="shop", image_template="ghcr.io/acme/shop:pr-{number}-{short_sha}")
    response = hook(pr_event("opened"))
    assert response.status_code == 202 and response.json()["outcome"] == "deploy enqueued"
    preview = Preview.objects.get(pr_number=7)
    assert preview.images == {"ghcr.io/acme/shop": "ghcr.io/acme/shop:pr-7-ccccccc"}
    assert (preview.title, preview.author, preview.head_sha) == ("Add cart", "mona", SHA)


def test_opened_without_an_image_template_leaves_deploys_to_ci(hook):
    make_repository(owner="acme", name="shop")
    assert "no image template" in hook(pr_event("opened")).json()["outcome"]
    assert not Preview.objects.exists()


def test_an_unknown_repository_is_acknowledged_and_ignored(hook):
    assert "not configured" in hook(pr_event("closed", full_name="else/where")).json()["outcome"]


def test_ping_is_answered(hook):
    assert hook({"zen": "Design for failure."}, event="ping").json()["outcome"] == "pong"


def test_a_missing_signature_is_401(hook):
    response = hook(pr_event("closed"), signature="")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"


def test_a_tampered_body_is_403_and_changes_nothing(hook):
    preview = make_preview(make_repository(owner="acme", name="shop"), pr_number=7)
    good = json.dumps(pr_event("opened")).encode()
    response = hook({}, raw=json.dumps(pr_event("closed")).encode(), signature=payloads.signature_for(SECRET, good))
    assert response.status_code == 403
    preview.refresh_from_db()
    assert preview.desired == "up"


def test_an_unconfigured_webhook_refuses_everything(hook, settings):
    settings.GITHUB_WEBHOOK_SECRET = ""
    assert hook(pr_event("closed")).status_code == 503


@pytest.mark.parametrize("raw", [b"not json", b"[1,2]"])
def test_a_signed_body_that_is_not_a_json_object_is_400(hook, raw):
    assert hook({}, raw=raw).status_code == 400


def test_get_on_the_webhook_is_405(client):
    assert client.get("/api/v1/github/webhook").status_code == 405


# --- payload shapes: a malformed event is a 400 naming the field, never a 500 ---------------------------------


def _with(event: dict, path: str, value) -> dict:
    import copy

    event = copy.deepcopy(event)
    target = event
    *parents, last = path.split(".")
    for part in parents:
        target = target[part]
    target[last] = value
    return event


MALFORMED = [
    ("pull_request", "not an object", "pull_request.number"),
    ("pull_request", [1, 2], "pull_request.number"),
    ("pull_request.number", "7", "pull_request.number"),
    ("pull_request.number", True, "pull_request.number"),
    ("pull_request.number", 10**30, "pull_request.number"),
    ("pull_request.number", -1, "pull_request.number"),
    ("pull_request.head", None, "pull_request.head.sha"),
    ("pull_request.head.sha", "not-a-sha", "pull_request.head.sha"),
    ("pull_request.head.sha", {"x": 1}, "pull_request.head.sha"),
    ("pull_request.title", ["x"], "pull_request.title"),
    ("pull_request.user", "mona", "pull_request.user.login"),
    ("pull_request.author_association", 5, "pull_request.author_association"),
    ("action", {"x": 1}, "action"),
    ("repository", "acme/shop", "repository.full_name"),
    ("repository.full_name", 5, "repository.full_name"),
]


@pytest.mark.parametrize("path,value,field", MALFORMED, ids=[f"{p}={v!r}"[:40] for p, v, _ in MALFORMED])
def test_a_malformed_pull_request_event_is_400_naming_the_field(hook, path, value, field):
    make_repository(owner="acme", name="shop", image_template="ghcr.io/acme/shop:pr-{number}")
    response = hook(_with(pr_event("opened"), path, value))
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert not Preview.objects.exists()


def test_a_deeply_nested_body_is_400(hook):
    assert hook({}, raw=b"[" * 100_000 + b"]" * 100_000).status_code == 400


def test_an_image_template_is_filled_by_replacement_not_format(hook):
    make_repository(owner="acme", name="shop", image_template="ghcr.io/acme/shop:pr-{number}-{0}{x.y}")
    response = hook(pr_event("opened"))
    assert response.status_code == 422 and "not an image reference" in response.json()["detail"]


# --- forks -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("allow,head_repo,association,deployed", [
    (False, "outsider/shop", "MEMBER", False),
    (False, None, "OWNER", False),  # a deleted fork: GitHub no longer says where the branch is
    (True, "outsider/shop", "CONTRIBUTOR", False),
    (True, "outsider/shop", "FIRST_TIME_CONTRIBUTOR", False),
    (True, "outsider/shop", "NONE", False),
    (True, "outsider/shop", "COLLABORATOR", True),
    (True, "outsider/shop", "MEMBER", True),
    (False, "same", "NONE", True),  # a branch of the repository itself
    (False, "ACME/Shop", "NONE", True),
])
def test_fork_pull_requests_deploy_only_when_allowed_and_trusted(hook, allow, head_repo, association, deployed):
    make_repository(owner="acme", name="shop", image_template="ghcr.io/acme/shop:pr-{number}",
                    allow_fork_previews=allow)
    response = hook(pr_event("opened", head_repo=head_repo, association=association))
    assert response.status_code == 202
    assert Preview.objects.exists() == deployed, response.json()["outcome"]
    if not deployed:
        assert "fork" in response.json()["outcome"]


def test_a_fork_pull_request_is_still_cleaned_up_when_closed(hook):
    preview = make_preview(make_repository(owner="acme", name="shop"), pr_number=7)
    hook(pr_event("closed", head_repo="outsider/shop", association="NONE"))
    preview.refresh_from_db()
    assert preview.desired == "down"


# --- a stale synchronize never replaces a newer commit ---------------------------------------------------------


def test_a_late_synchronize_for_an_older_commit_is_ignored(hook, fake_github):
    newer, older = "b" * 40, "a" * 40
    make_repository(owner="acme", name="shop", image_template="ghcr.io/acme/shop:pr-{number}-{short_sha}")
    fake_github.add_pull("acme/shop", 7, head_sha=newer)
    assert hook(pr_event("synchronize", sha=newer), delivery="d-new").json()["outcome"] == "deploy enqueued"
    late = hook(pr_event("synchronize", sha=older), delivery="d-old")
    assert late.status_code == 202 and late.json()["outcome"].startswith("stale commit, ignored")
    assert Preview.objects.get(pr_number=7).head_sha == newer


# --- a repository's own secret ----------------------------------------------------------------------------------


def test_a_repository_with_its_own_secret_accepts_only_that_secret(hook, settings):
    make_preview(make_repository(owner="acme", name="shop", webhook_secret="repo-secret"), pr_number=7)
    body = json.dumps(pr_event("closed")).encode()
    assert hook({}, raw=body).status_code == 403  # signed with the global secret
    own = hook({}, raw=body, signature=payloads.signature_for("repo-secret", body))
    assert own.status_code == 202 and Preview.objects.get(pr_number=7).desired == "down"


def test_a_repository_secret_works_without_a_global_one(hook, settings):
    settings.GITHUB_WEBHOOK_SECRET = ""
    make_preview(make_repository(owner="acme", name="shop", webhook_secret="repo-secret"), pr_number=7)
    body = json.dumps(pr_event("closed")).encode()
    assert hook({}, raw=body, signature=payloads.signature_for("repo-secret", body)).status_code == 202
    other = json.dumps(pr_event("closed", full_name="acme/other")).encode()
    assert hook({}, raw=other, signature=payloads.signature_for("repo-secret", other)).status_code == 503


# --- the limit on reopen, and a failed handling can be redelivered ---------------------------------------------


def test_reopened_beyond_the_limit_is_409_and_its_redelivery_is_acted_on_later(hook):
    repository = make_repository(owner="acme", name="shop", image_template="ghcr.io/acme/shop:pr-{number}",
                                 max_live_previews=1)
    closed = make_preview(repository, pr_number=7, desired="down", status="deleted")
    other = make_preview(repository, pr_number=8)
    refused = hook(pr_event("reopened"), delivery="r-1")
    assert refused.status_code == 409 and "maximum" in refused.json()["detail"]
    assert not WebhookDelivery.objects.filter(delivery_id="r-1").exists()
    other.status = "deleted"
    other.save()
    again = hook(pr_event("reopened"), delivery="r-1")  # GitHub's "Redeliver"
    assert again.status_code == 202 and again.json()["outcome"] == "deploy enqueued"
    closed.refresh_from_db()
    assert closed.desired == "up"
    assert WebhookDelivery.objects.get(delivery_id="r-1").outcome == "deploy enqueued"


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_one_id_act_once(settings):
    settings.GITHUB_WEBHOOK_SECRET = SECRET
    make_repository(owner="acme", name="shop", image_template="ghcr.io/acme/shop:pr-{number}")
    OrmQ.objects.all().delete()
    body = json.dumps(pr_event("opened")).encode()
    barrier = threading.Barrier(6)
    outcomes = []

    def deliver():
        try:
            barrier.wait()
            response = Client().post("/api/v1/github/webhook", data=body, content_type="application/json",
                                     HTTP_X_GITHUB_EVENT="pull_request", HTTP_X_GITHUB_DELIVERY="same-id",
                                     HTTP_X_HUB_SIGNATURE_256=payloads.signature_for(SECRET, body))
            outcomes.append(response.json()["outcome"])
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["deploy enqueued"] + ["duplicate delivery, ignored"] * 5
    assert OrmQ.objects.count() == 1
    OrmQ.objects.all().delete()
