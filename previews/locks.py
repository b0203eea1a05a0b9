"""Postgres advisory locks: one worker at a time per preview, across processes and hosts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

# First keys of the two-key advisory locks ("prev" and "preg" in ASCII), apart from any other user.
DEPLOY = 0x70726576  # deploys and teardowns of a preview
GITHUB_SYNC = 0x70726567  # telling its PR
REAPER = 0x70726572  # ("prer") real reaper cycles, one at a time


@contextmanager
def advisory_lock(kind: int, key: int) -> Iterator[None]:
    """Hold a session-level advisory lock; it is also released if the process dies (the session ends)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", [kind, key])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [kind, key])


SLOTS = 0x70727374  # ("prst") a repository's deploy slots


def repository_slots_lock(repository_id: int) -> None:
    """Serialise the counting and handing out of one repository's deploy slots until the transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [SLOTS, repository_id])
