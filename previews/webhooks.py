"""GitHub webhooks: signature verification (pure) and turning events into preview changes."""

from __future__ import annotations

import hashlib
import hmac

from django.db import IntegrityError, transaction

from previews import selectors, services
from previews.models import ActorKind, WebhookDelivery

SIGNATURE_PREFIX = "sha256="


def signature_for(secret: str, body: bytes) -> str:
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """X-Hub-Signature-256 check: HMAC-SHA256 of the raw body, compared in constant time."""
    if not secret or not header or not header.startswith(SIGNATURE_PREFIX):
        return False
    return hmac.compare_digest(signature_for(secret, body), header)


def handle_event(*, event: str, delivery_id: str, payload: dict) -> str:
    """Act on one delivery, at most once per delivery id. Returns what was done, for the response and the log."""
    try:
        with transaction.atomic():
            record = WebhookDelivery.objects.create(delivery_id=delivery_id, event=event,
                                                    action=str(payload.get("action", ""))[:50])
    except IntegrityError:
        return "duplicate delivery, ignored"
    outcome = _dispatch(event, delivery_id, payload)
    WebhookDelivery.objects.filter(pk=record.pk).update(outcome=outcome[:200])
    return outcome


def _dispatch(event: str, delivery_id: str, payload: dict) -> str:
    if event == "ping":
        return "pong"
    if event != "pull_request":
        return f"event {event!r} is not used"
    action = payload.get("action")
    pull = payload.get("pull_request") or {}
    full_name = (payload.get("repository") or {}).get("full_name", "")
    owner, _, name = full_name.partition("/")
    repository = selectors.repository_get(owner, name) if owner and name else None
    if repository is None:
        return f"repository {full_name!r} is not configured here"
    number = pull.get("number") or payload.get("number")
    if not isinstance(number, int):
        return "the payload has no pull request number"
    actor = services.Actor(ActorKind.WEBHOOK, f"github:{delivery_id}")
    if action == "closed":
        preview = selectors.preview_get(repository, number)
        if preview is None:
            return f"no preview for #{number}"
        merged = " (merged)" if pull.get("merged") else ""
        services.preview_destroy(preview=preview, actor=actor, reason=f"PR #{number} closed{merged}")
        return f"preview for #{number} is being deleted"
    if action in ("opened", "synchronize", "reopened"):
        if not repository.image_template:
            return "the repository has no image template; CI deploys through the API"
        sha = (pull.get("head") or {}).get("sha", "")
        image = repository.image_template.format(number=number, sha=sha, short_sha=sha[:7])
        request = services.PreviewRequest(head_sha=sha, images=(image,), title=str(pull.get("title") or "")[:300],
                                          author=str((pull.get("user") or {}).get("login") or "")[:39])
        result = services.preview_upsert(repository=repository, pr_number=number, request=request, actor=actor)
        return "deploy enqueued" if result.deploy_enqueued else "unchanged"
    return f"action {action!r} is not used"
