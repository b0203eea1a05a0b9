"""What the webhooks say about pull requests (opt-in)."""

from __future__ import annotations

from django.db import transaction

from previews import validators
from previews.models import PullRequestState, Repository


def pull_request_record(*, repository: Repository, pr_number: int, state: str, draft: bool, labels: list[str],
                        head_sha: str = "", github_updated_at=None, reset_opt: bool = False) -> PullRequestState:
    """Store a PR's state from a webhook payload, unless what is stored is newer (deliveries come out of order).

    `reset_opt` (the opt-in label was added or removed) clears a /preview or /preview delete override.
    """
    labels = sorted({str(label)[:100] for label in labels})[:100]
    with transaction.atomic():
        row, _ = PullRequestState.objects.select_for_update().get_or_create(repository=repository,
                                                                             pr_number=pr_number)
        if row.github_updated_at and github_updated_at and github_updated_at < row.github_updated_at:
            return row
        row.state, row.draft, row.labels = state, draft, labels
        row.head_sha = head_sha if validators.SHA_RE.fullmatch(head_sha or "") else row.head_sha
        row.github_updated_at = github_updated_at or row.github_updated_at
        if reset_opt:
            row.command_opt = ""
        row.save()
    return row


def pull_request_set_opt(*, repository: Repository, pr_number: int, opt: str) -> None:
    """/preview ("in") or /preview delete ("out"): an explicit wish that overrides the label."""
    PullRequestState.objects.update_or_create(repository=repository, pr_number=pr_number,
                                              defaults={"command_opt": opt})
