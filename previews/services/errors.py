"""The refusals of the services."""

from __future__ import annotations


class PreviewConflict(Exception):
    """The request cannot be carried out in the current state (HTTP 409)."""


class StaleCommit(PreviewConflict):
    """The request is for a commit older than the PR's current head (HTTP 409; the webhook ignores it)."""


class RateLimited(Exception):
    """Too many requests of one kind for a repository (HTTP 429 with Retry-After)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after
