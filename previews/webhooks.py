"""GitHub webhooks: signature verification (pure) and turning events into preview changes."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils.dateparse import parse_datetime

from previews import optin, pr_commands, selectors, services, validators
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
    if event not in ("pull_request", "issue_comment"):
        return f"event {event!r} is not used"
    full_name = _dict(payload.get("repository")).get("full_name", "")
    owner, _, name = full_name.partition("/") if isinstance(full_name, str) else ("", "", "")
    repository = selectors.repository_get(owner, name) if owner and name else None
    if repository is None:
        return f"repository {str(full_name)[:200]!r} is not configured here"
    if event == "issue_comment":
        return pr_commands.handle_comment(repository, payload)
    return _pull_request(repository, delivery_id, payload)


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _when(raw) -> datetime | None:
    try:
        return parse_datetime(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


def _labels(raw) -> list[str]:
    return [str(label.get("name"))[:100] for label in raw if isinstance(label, dict) and label.get("name")] \
        if isinstance(raw, list) else []


def _pull_request(repository, delivery_id: str, payload: dict) -> str:
    action = payload.get("action")
    pull = _dict(payload.get("pull_request"))
    number = pull.get("number") or payload.get("number")
    if not isinstance(number, int) or isinstance(number, bool) or not 0 < number <= validators.MAX_PR_NUMBER:
        return "the payload has no pull request number"
    actor = services.Actor(ActorKind.WEBHOOK, f"github:{delivery_id}")
    policy = optin.policy_of(repository)
    label = _dict(payload.get("label")).get("name")
    ours = isinstance(label, str) and label.lower() == policy.label.lower()
    sha = str(_dict(pull.get("head")).get("sha") or "")
    row = services.pull_request_record(
        repository=repository, pr_number=number, state="closed" if action == "closed" else "open",
        draft=pull.get("draft") is True, labels=_labels(pull.get("labels")), head_sha=sha,
        github_updated_at=_when(pull.get("updated_at")),
        reset_opt=action in ("labeled", "unlabeled") and ours)
    preview = selectors.preview_get(repository, number)
    if action == "closed":
        if preview is None:
            return f"no preview for #{number}"
        merged = " (merged)" if pull.get("merged") else ""
        services.preview_destroy(preview=preview, actor=actor, reason=f"PR #{number} closed{merged}")
        return f"preview for #{number} is being deleted"
    if action not in ("opened", "synchronize", "reopened", "labeled", "unlabeled", "ready_for_review",
                      "converted_to_draft"):
        return f"action {action!r} is not used"
    if action in ("labeled", "unlabeled") and not (ours and policy.mode == optin.LABEL):
        return f"label {str(label)[:100]!r} is not the opt-in label"
    verdict = optin.decide(policy, optin.PullInfo(open=True, draft=row.draft, labels=frozenset(row.labels),
                                                  command_opt=row.command_opt))
    if not verdict.wanted:
        if action in ("unlabeled", "converted_to_draft") and preview is not None and preview.is_live \
                and preview.desired == "up":
            services.preview_destroy(preview=preview, actor=actor, reason=f"PR #{number} opted out: {verdict.reason}")
            return f"preview for #{number} is being deleted: {verdict.reason}"
        return f"not opted in: {verdict.reason}"
    if action == "converted_to_draft" or (action == "unlabeled" and preview is not None):
        return "still opted in"
    if not repository.image_template:
        return "the repository has no image template; CI deploys through the API"
    if not validators.SHA_RE.fullmatch(sha):
        return "the payload has no head commit"
    image = repository.image_template.format(number=number, sha=sha, short_sha=sha[:7])
    request = services.PreviewRequest(head_sha=sha, images=(image,), title=str(pull.get("title") or "")[:300],
                                      author=str(_dict(pull.get("user")).get("login") or "")[:39])
    result = services.preview_upsert(repository=repository, pr_number=number, request=request, actor=actor)
    return "deploy enqueued" if result.deploy_enqueued else "unchanged"
