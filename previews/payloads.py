"""GitHub webhook deliveries as data (pure): the signature, the events' fields checked for shape, and the image
the repository's template names for a PR's commit."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from django.utils.dateparse import parse_datetime

from previews import validators

SIGNATURE_PREFIX = "sha256="


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
    created_at: datetime | None = None  # when the comment was written


def repository_full_name(payload: dict) -> str:
    """`repository.full_name`, or "" when the payload names no repository in the expected shape."""
    repository = payload.get("repository")
    full_name = repository.get("full_name") if isinstance(repository, dict) else None
    return full_name if isinstance(full_name, str) and full_name.count("/") == 1 else ""


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
        created_at=_when(payload, "comment.created_at"),
    )


def image_for(template: str, event: PullRequestEvent) -> str:
    """The image template with its placeholders filled in; plain replacement, never str.format."""
    return image_reference(template, event.number, event.head_sha)


def image_reference(template: str, number: int, sha: str) -> str:
    """The image template filled in for PR `number` at commit `sha`; plain replacement, never str.format."""
    return template.replace("{number}", str(number)).replace("{short_sha}", sha[:7]).replace("{sha}", sha)
