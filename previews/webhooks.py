"""GitHub webhooks: signature verification and payload parsing (pure), and turning events into preview changes."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.dateparse import parse_datetime

from previews import github, optin, selectors, services, validators
from previews.models import ActorKind, Repository, WebhookDelivery

SIGNATURE_PREFIX = "sha256="
# GitHub's author_association values trusted to deploy a pull request from a fork, when the repository
# allows fork previews at all. CONTRIBUTOR, FIRST_TIME_CONTRIBUTOR, FIRST_TIMER and NONE never are.
TRUSTED_ASSOCIATIONS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})
DEPLOY_ACTIONS = ("opened", "synchronize", "reopened")
# Actions that change whether a PR is opted in (label, draft state; see previews/optin.py).
OPT_IN_ACTIONS = ("labeled", "unlabeled", "ready_for_review", "converted_to_draft")
MAX_LABELS = 100


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
    draft: bool = False
    labels: tuple[str, ...] = ()
    updated_at: datetime | None = None
    label: str | None = None  # the label added or removed (labeled, unlabeled)

    @property
    def from_fork(self) -> bool:
        """From another repository, or from one GitHub no longer names: either way not this repository's branch."""
        return not self.head_repository or self.head_repository.lower() != self.base_repository.lower()


@dataclass(frozen=True)
class CommentEvent:
    """An `issue_comment` event: the fields /preview commands act on (previews/pr_commands.py)."""

    action: str
    number: int
    is_pull_request: bool  # GitHub sends issue.pull_request only for comments on pull requests
    state: str  # the state ("open", "closed"); "" when not sent
    draft: bool
    comment_id: int
    body: str
    login: str
    user_type: str
    author_association: str


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


def _pr_number(payload: dict, path: str) -> int:
    number = _field(payload, path, int)
    if not 1 <= number <= validators.MAX_PR_NUMBER:
        raise PayloadError(path, f"{number} is not a pull request number")
    return number


def parse_pull_request(payload: dict) -> PullRequestEvent:
    """The fields of a `pull_request` event we act on, checked for shape. Raises PayloadError (pure)."""
    action = _field(payload, "action", str)
    number = _pr_number(payload, "pull_request.number")
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
        draft=bool(_field(payload, "pull_request.draft", bool, required=False)),
        labels=_labels(payload),
        updated_at=_when(payload, "pull_request.updated_at"),
        label=_field(payload, "label.name", str) if _field(payload, "label", dict, required=False) else None,
    )


def _labels(payload: dict) -> tuple[str, ...]:
    raw = _field(payload, "pull_request.labels", list, required=False) or []
    labels = []
    for index, item in enumerate(raw[:MAX_LABELS]):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise PayloadError(f"pull_request.labels[{index}].name", f"expected str, got {type(name).__name__}")
        labels.append(name[:100])
    return tuple(labels)


def _when(payload: dict, path: str) -> datetime | None:
    raw = _field(payload, path, str, required=False)
    if raw is None:
        return None
    try:
        when = parse_datetime(raw)
    except ValueError:
        when = None
    if when is None:
        raise PayloadError(path, "not an ISO 8601 date and time")
    return when


def parse_comment(payload: dict) -> CommentEvent:
    """The fields of an `issue_comment` event, checked for shape. Raises PayloadError (pure)."""
    action = _field(payload, "action", str)
    number = _pr_number(payload, "issue.number")
    comment_id = _field(payload, "comment.id", int)
    if comment_id < 1:
        raise PayloadError("comment.id", f"{comment_id} is not a comment id")
    return CommentEvent(
        action=action, number=number,
        is_pull_request=_field(payload, "issue.pull_request", dict, required=False) is not None,
        state=_field(payload, "issue.state", str, required=False) or "",
        draft=bool(_field(payload, "issue.draft", bool, required=False)),
        comment_id=comment_id,
        body=_field(payload, "comment.body", str, required=False) or "",
        login=_field(payload, "comment.user.login", str),
        user_type=_field(payload, "comment.user.type", str, required=False) or "",
        author_association=(_field(payload, "comment.author_association", str, required=False) or "NONE")[:30],
    )


def image_for(template: str, event: PullRequestEvent) -> str:
    """The image template with its placeholders filled in; plain replacement, never str.format."""
    return image_reference(template, event.number, event.head_sha)


def image_reference(template: str, number: int, sha: str) -> str:
    """The image template filled in for PR `number` at commit `sha`; plain replacement, never str.format."""
    return template.replace("{number}", str(number)).replace("{short_sha}", sha[:7]).replace("{sha}", sha)


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
    if event not in ("pull_request", "issue_comment"):
        return f"event {event[:50]!r} is not used"
    full_name = repository_full_name(payload)
    if not full_name:
        raise PayloadError("repository.full_name", "expected 'owner/name'")
    if repository is None:
        owner, _, name = full_name.partition("/")
        repository = selectors.repository_get(owner, name)
    if repository is None:
        return f"repository {full_name!r} is not configured here"
    if event == "issue_comment":
        from previews import pr_commands  # it uses this module's parsing and image template

        return pr_commands.handle_comment(repository, parse_comment(payload))
    pull = parse_pull_request(payload)
    if pull.updated_at is not None and github.is_configured():
        # What the stale-commit check of later API requests reads instead of asking GitHub.
        github.record_pull_head(repository.full_name, pull.number, pull.head_sha, pull.updated_at)
    return _pull_request(repository, delivery_id, pull)


def _pull_request(repository: Repository, delivery_id: str, pull: PullRequestEvent) -> str:
    actor = services.Actor(ActorKind.WEBHOOK, f"github:{delivery_id}")
    # The PR's state (open, draft, labels, head) is recorded for the opt-in rules, the API's and /preview's
    # decisions included, unless a newer delivery already recorded a newer state.
    policy = optin.policy_of(repository)
    ours = pull.label is not None and pull.label.lower() == policy.label.lower()
    row = services.pull_request_record(
        repository=repository, pr_number=pull.number, state="closed" if pull.action == "closed" else "open",
        draft=pull.draft, labels=list(pull.labels), head_sha=pull.head_sha, github_updated_at=pull.updated_at,
        reset_opt=pull.action in ("labeled", "unlabeled") and ours)
    preview = selectors.preview_get(repository, pull.number)
    if pull.action == "closed":
        if preview is None:
            return f"no preview for #{pull.number}"
        merged = " (merged)" if pull.merged else ""
        services.preview_destroy(preview=preview, actor=actor, reason=f"PR #{pull.number} closed{merged}")
        return f"preview for #{pull.number} is being deleted"
    if pull.action not in DEPLOY_ACTIONS + OPT_IN_ACTIONS:
        return f"action {pull.action[:50]!r} is not used"
    if pull.action in ("labeled", "unlabeled") and not (ours and policy.mode == optin.LABEL):
        return f"label {str(pull.label)[:100]!r} is not the opt-in label"
    verdict = optin.decide(policy, optin.PullInfo(open=True, draft=row.draft, labels=frozenset(row.labels),
                                                  command_opt=row.command_opt))
    if not verdict.wanted:
        if pull.action in ("unlabeled", "converted_to_draft") and preview is not None and preview.is_live \
                and preview.desired == "up":
            services.preview_destroy(preview=preview, actor=actor,
                                     reason=f"PR #{pull.number} opted out: {verdict.reason}")
            return f"preview for #{pull.number} is being deleted: {verdict.reason}"
        return f"not opted in: {verdict.reason}"
    if pull.action == "converted_to_draft" or (pull.action == "unlabeled" and preview is not None):
        return "still opted in"
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
