"""Postgres advisory locks: one worker at a time per preview, across processes and hosts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import InterfaceError, OperationalError, connection

# First keys of the two-key advisory locks ("prev" and "preg" in ASCII), apart from any other user.
DEPLOY = 0x70726576  # deploys and teardowns of a preview
GITHUB_SYNC = 0x70726567  # telling its PR
REAPER = 0x70726572  # ("prer") real reaper cycles, one at a time


@contextmanager
def advisory_lock(kind: int, key: int) -> Iterator[None]:
    """Hold a session-level advisory lock; it is also released if the process dies (the session ends).

    While it is held, the connection is pinned (`pin_session`): nothing closes it for its age underneath.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", [kind, key])
    close_at = pin_session()
    try:
        yield
    except BaseException as exc:
        if session_lost(exc):
            raise  # the lock went with the session; unlocking would only fail again
        _unlock(kind, key)
        raise
    finally:
        connection.close_at = close_at
    _unlock(kind, key)


def pin_session() -> float | None:
    """Keep Django from closing this process's connection for its age (CONN_MAX_AGE) while it holds session
    locks; returns the closing time to put back. Without it, any `close_old_connections()` (django-q2's ORM
    broker calls it each time a task is enqueued, e.g. from an on_commit callback) closes a connection older
    than CONN_MAX_AGE, its session locks go with it, and the next query opens a new session silently: the
    holder would go on as if it held the lock while another process takes it."""
    close_at = connection.close_at
    connection.close_at = None
    return close_at


def _unlock(kind: int, key: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [kind, key])


def session_lost(exc: BaseException | None = None) -> bool:
    """Whether the database session is gone (the server restarted or failed over, the connection broke), as
    after `exc`: its session locks are gone with it, and nothing more can be done on this connection."""
    if exc is not None and not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    raw = connection.connection
    return raw is None or bool(getattr(raw, "closed", False)) or bool(getattr(raw, "broken", False))


SLOTS = 0x70727374  # ("prst") a repository's deploy slots


def repository_slots_lock(repository_id: int) -> None:
    """Serialise the counting and handing out of one repository's deploy slots until the transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [SLOTS, repository_id])


def try_advisory_locks(kind: int, keys: list[int]) -> set[int]:
    """Take the session-level advisory locks (kind, key) that are free right now, in one statement; the keys
    taken. Release them with `advisory_unlock_many`. Keep `keys` short (a hundred or so): each held lock takes
    a slot of the server's shared lock table."""
    if not keys:
        return set()
    with connection.cursor() as cursor:
        cursor.execute("SELECT k FROM unnest(%s::int[]) AS k WHERE pg_try_advisory_lock(%s::int, k)",
                       [sorted(set(keys)), kind])
        return {row[0] for row in cursor.fetchall()}


def advisory_unlock_many(kind: int, keys: set[int] | list[int]) -> None:
    if not keys:
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s::int, k) FROM unnest(%s::int[]) AS k", [kind, sorted(keys)])
