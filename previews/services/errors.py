"""The refusals of the services."""

from __future__ import annotations


class PreviewConflict(Exception):
    """The request cannot be carried out in the current state (HTTP 409)."""


class StaleCommit(PreviewConflict):
    """The request is for a commit older than the PR's current head (HTTP 409; the webhook ignores it)."""
