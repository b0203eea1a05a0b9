"""The reaper's destroy against a person's extend, raced with threads on the real Postgres.

The reaper plans from a snapshot and then asks `services.preview_reap` to destroy
each preview it chose, re-checking under the row lock that the preview has not
changed since. The check and the destroy must be one transaction: if the lock
were released in between, an extend could commit there and then be destroyed
anyway, its success already reported to the person who asked.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from previews import reaper, services
from previews.models import Preview
from tests.factories import make_preview

PERSON = services.Actor("user", "ann")


def waiting_for_locks() -> int:
    """Other sessions of this database that are waiting for a lock right now."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the sessions to queue on the row lock")
        time.sleep(0.01)


class InThread(threading.Thread):
    """Runs `fn` in its own thread (so on its own database connection) and keeps its result or exception."""

    def __init__(self, fn) -> None:
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except Exception as exc:
            self.error = exc
        finally:
            connection.close()


@pytest.mark.django_db(transaction=True)
def test_an_extend_queued_behind_the_reapers_destroy_is_refused_not_lost():
    preview = make_preview(status=Preview.Status.READY, expires_at=timezone.now() - timedelta(hours=1))
    planned = Preview.objects.get(pk=preview.pk)  # what the reaper's snapshot saw: expired
    held, release = threading.Event(), threading.Event()

    def hold_the_row():
        # A third session holds the row so that the reaper and then the extend queue behind it, in that order.
        with transaction.atomic():
            Preview.objects.select_for_update().get(pk=preview.pk)
            held.set()
            release.wait(10)

    holder = InThread(hold_the_row)
    holder.start()
    assert held.wait(10)
    reap = InThread(lambda: services.preview_reap(preview_id=planned.pk, generation=planned.generation,
                                                  expires_at=planned.expires_at, reason=reaper.EXPIRED))
    reap.start()
    wait_for(lambda: waiting_for_locks() == 1)
    extend = InThread(lambda: services.preview_extend(preview=planned, hours=24, reason="QA tomorrow",
                                                      actor=PERSON))
    extend.start()
    wait_for(lambda: waiting_for_locks() == 2)
    release.set()
    for thread in (holder, reap, extend):
        thread.join(15)

    assert reap.error is None and reap.result is True
    preview.refresh_from_db()
    assert preview.desired == Preview.Desired.DOWN
    # The person's extend was refused and said so; it was not reported as done and then destroyed.
    assert isinstance(extend.error, services.PreviewConflict), extend.error or "the extend succeeded"
    assert not preview.events.filter(action="extended").exists()


@pytest.mark.django_db(transaction=True)
def test_the_reaper_does_not_destroy_a_preview_extended_since_its_plan():
    preview = make_preview(status=Preview.Status.READY, expires_at=timezone.now() - timedelta(hours=1))
    planned = Preview.objects.get(pk=preview.pk)
    services.preview_extend(preview=preview, hours=24, reason="QA tomorrow", actor=PERSON)
    assert services.preview_reap(preview_id=planned.pk, generation=planned.generation,
                                 expires_at=planned.expires_at, reason=reaper.EXPIRED) is False
    preview.refresh_from_db()
    assert preview.desired == Preview.Desired.UP and preview.expires_at > timezone.now()


@pytest.mark.django_db
def test_the_reaper_does_not_destroy_a_preview_pinned_since_its_plan():
    preview = make_preview(status=Preview.Status.READY, expires_at=timezone.now() - timedelta(hours=1))
    planned = Preview.objects.get(pk=preview.pk)
    services.preview_pin(preview=preview, pinned=True, actor=PERSON)
    assert services.preview_reap(preview_id=planned.pk, generation=planned.generation,
                                 expires_at=planned.expires_at, reason=reaper.EXPIRED) is False
    assert Preview.objects.get(pk=preview.pk).desired == Preview.Desired.UP
