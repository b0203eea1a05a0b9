"""GitHub webhooks: signature verification and payload parsing (pure), and turning events into preview changes."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.dateparse import parse_datetime

from previews import github, selectors, services, validators
from previews.models import ActorKind, Repository, WebhookDelivery

SIGNATURE_PREFIX = "sha256="
# GitHub's author_association values trusted to deploy a pull request from a fork, when the repository
# allows fork previews at all. CONTRIBUTOR, FIRST_TIME_CONTRIBUTOR, FIRST_TIMER and NONE never are.
TRUSTED_ASSOCIATIONS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})
DEPLOY_ACTIONS = ("opened", "synchronize", "reopened")


def signature_for(secret: str, body: bytes) -> str:
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """X-Hub-Signature-256 check: HMAC-SHA256 of the raw body, compared in constant time."""
    if not secret or not header or not header.startswith(SIGNATURE_PREFIX):
        return False
    return hmac.compare_digest(signature_for(secret, body), header)


class PayloadError(Exception):
    """The payload does not have the shape GitHub sends (HTTP 400), naming the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class PullRequestEvent:
    action: str
    number: int
    head_sha: str
    head_repository: str  # "" when GitHub does not say (a deleted fork)
    base_repository: str
    author_association: str
    title: str
    author: str
    merged: bool
    updated_at: datetime | None = None  # the PR's updated_at: orders the events of one PR, whatever their delivery

    @property
    def from_fork(self) -> bool:
        """From another repository, or from one GitHub no longer names: either way not this repository's branch."""
        return not self.head_repository or self.head_repository.lower() != self.base_repository.lower()


def repository_full_name(payload: dict) -> str:
    """`repository.full_name`, or "" when the payload names no repository in the expected shape."""
    repository = payload.get("repository")
    full_name = repository.get("full_name") if isinstance(repository, dict) else None
    return full_name if isinstance(full_name, str) and full_name.count("/") == 1 else ""


def secret_for(repository: Repository | None) -> str:
    """A repository's own secret replaces the global one: a delivery signed with the global secret is not
    accepted for a repository that has its own."""
    if repository is not None and repository.webhook_secret:
        return repository.webhook_secret
    return settings.GITHUB_WEBHOOK_SECRET


def _field(payload, path: str, kind, required: bool = True):
    value = payload
    for part in path.split("."):
        if not isinstance(value, dict):
            raise PayloadError(path, f"expected an object at {part!r}")
        value = value.get(part)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise PayloadError(path, f"expected {names}, got {type(value).__name__}")
    return value


def parse_pull_request(payload: dict) -> PullRequestEvent:
    """The fields of a `pull_request` event we act on, checked for shape. Raises PayloadError (pure)."""
    action = _field(payload, "action", str)
    number = _field(payload, "pull_request.number", int)
    if not 1 <= number <= validators.MAX_PR_NUMBER:
        raise PayloadError("pull_request.number", f"{number} is not a pull request number")
    head_sha = _field(payload, "pull_request.head.sha", str)
    if not validators.SHA_RE.fullmatch(head_sha):
        raise PayloadError("pull_request.head.sha", "not a 40-character commit SHA")
    head_repo = _field(payload, "pull_request.head.repo", dict, required=False) or {}
    head_repository = head_repo.get("full_name") if isinstance(head_repo.get("full_name"), str) else ""
    return PullRequestEvent(
        action=action, number=number, head_sha=head_sha, head_repository=head_repository,
        base_repository=_field(payload, "repository.full_name", str),
        author_association=_field(payload, "pull_request.author_association", str, required=False) or "NONE",
        title=(_field(payload, "pull_request.title", str, required=False) or "")[:300],
        author=(_field(payload, "pull_request.user.login", str, required=False) or "")[:39],
        merged=bool(_field(payload, "pull_request.merged", bool, required=False)),
        updated_at=_timestamp(payload),
    )


def _timestamp(payload: dict) -> datetime | None:
    """`pull_request.updated_at` as an aware datetime, or None when absent or not a timestamp."""
    raw = payload.get("pull_request", {}).get("updated_at")
    try:
        value = parse_datetime(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    return value if value is not None and value.tzinfo is not None else None


def image_for(template: str, event: PullRequestEvent) -> str:
    """The image template with its placeholders filled in; plain replacement, never str.format."""
    return (template.replace("{number}", str(event.number)).replace("{short_sha}", event.head_sha[:7])
            .replace("{sha}", event.head_sha))


def handle_event(*, event: str, delivery_id: str, payload: dict, repository: Repository | None = None) -> str:
    """Act on one delivery, at most once per delivery id. Returns what was done, for the response and the log.

    The delivery is recorded in the same transaction as what it did, with the outcome: if acting fails
    (an error, a refusal such as the preview limit), nothing is recorded and GitHub's redelivery is acted on.
    A concurrent redelivery waits for the first to commit, then finds it recorded.
    """
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = WebhookDelivery.objects.create(delivery_id=delivery_id, event=event[:50],
                                                        action=str(payload.get("action", ""))[:50])
        except IntegrityError:
            return "duplicate delivery, ignored"
        outcome = _dispatch(event, delivery_id, payload, repository)
        WebhookDelivery.objects.filter(pk=record.pk).update(outcome=outcome[:200])
    return outcome


def _dispatch(event: str, delivery_id: str, payload: dict, repository: Repository | None) -> str:
    if event == "ping":
        return "pong"
    if event != "pull_request":
        return f"event {event[:50]!r} is not used"
    full_name = repository_full_name(payload)
    if not full_name:
        raise PayloadError("repository.full_name", "expected 'owner/name'")
    if repository is None:
        owner, _, name = full_name.partition("/")
        repository = selectors.repository_get(owner, name)
    if repository is None:
        return f"repository {full_name!r} is not configured here"
    pull = parse_pull_request(payload)
    if pull.updated_at is not None and github.is_configured():
        # What the stale-commit check of later API requests reads instead of asking GitHub.
        github.record_pull_head(repository.full_name, pull.number, pull.head_sha, pull.updated_at)
    actor = services.Actor(ActorKind.WEBHOOK, f"github:{delivery_id}")
    if pull.action == "closed":
        preview = selectors.preview_get(repository, pull.number)
        if preview is None:
            return f"no preview for #{pull.number}"
        merged = " (merged)" if pull.merged else ""
        services.preview_destroy(preview=preview, actor=actor, reason=f"PR #{pull.number} closed{merged}")
        return f"preview for #{pull.number} is being deleted"
    if pull.action not in DEPLOY_ACTIONS:
        return f"action {pull.action[:50]!r} is not used"
    if not repository.image_template:
        return "the repository has no image template; CI deploys through the API"
    if pull.from_fork:
        if not repository.allow_fork_previews:
            return "pull request from a fork: not deployed (the repository does not allow fork previews)"
        if pull.author_association not in TRUSTED_ASSOCIATIONS:
            return (f"pull request from a fork by an author GitHub calls {pull.author_association[:30]}: not "
                    "deployed (only owners, members and collaborators)")
    request = services.PreviewRequest(head_sha=pull.head_sha, images=(image_for(repository.image_template, pull),),
                                      title=pull.title, author=pull.author)
    try:
        result = services.preview_upsert(repository=repository, pr_number=pull.number, request=request,
                                         actor=actor)
    except services.StaleCommit as exc:
        return f"stale commit, ignored: {exc}"[:200]
    return "deploy enqueued" if result.deploy_enqueued else "unchanged"
