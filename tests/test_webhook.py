"""The GitHub webhook: HMAC signatures, replays, and pull request events."""

import json

import pytest
from django.test import Client

from previews import webhooks
from previews.models import Preview
from tests.factories import make_preview, make_repository

pytestmark = pytest.mark.django_db
SECRET = "It's a Secret to Everybody"
SHA = "c" * 40


def test_githubs_own_example_verifies():
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert webhooks.verify_signature(SECRET, b"Hello, World!", signature)


@pytest.mark.parametrize("body,header", [
    (b"Hello, World?", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
    (b"Hello, World!", "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
    (b"Hello, World!", "sha256=0000"),
    (b"Hello, World!", ""),
    (b"Hello, World!", None),
])
def test_a_tampered_body_or_bad_header_does_not_verify(body, header):
    assert not webhooks.verify_signature(SECRET, body, header)


def test_no_secret_never_verifies():
    assert not webhooks.verify_signature("", b"x", webhooks.signature_for("", b"x"))


@pytest.fixture
def hook(settings):
    settings.GITHUB_WEBHOOK_SECRET = SECRET
    client = Client()

    def send(payload: dict, event="pull_request", delivery="d-1", signature=None, raw=None):
        body = raw if raw is not None else json.dumps(payload).encode()
        headers = {"HTTP_X_GITHUB_EVENT": event, "HTTP_X_GITHUB_DELIVERY": delivery}
        sig = webhooks.signature_for(SECRET, body) if signature is None else signature
        if sig:
            headers["HTTP_X_HUB_SIGNATURE_256"] = sig
        return client.post("/api/v1/github/webhook", data=body, content_type="application/json", **headers)

    return send


def pr_event(action: str, number=7, full_name="acme/shop", merged=False) -> dict:
    return {"action": action, "number": number, "repository": {"full_name": full_name},
            "pull_request": {"number": number, "merged": merged, "title": "Add cart", "user": {"login": "mona"},
                             "head": {"sha": SHA}}}


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
    response = hook({}, raw=json.dumps(pr_event("closed")).encode(), signature=webhooks.signature_for(SECRET, good))
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
