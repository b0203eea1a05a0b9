"""The reaper's bulk destroy (`services.previews_reap`, what a cycle calls) against a person's extend, and
what it does with each preview of its plan, on the real Postgres.

The reaper plans from a snapshot and then asks `services.previews_reap` to destroy
the previews it chose, re-checking each under its row lock that it has not
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
from django_q.models import OrmQ

from previews import reaper, services
from previews.models import EventAction, Preview
from previews.services import reaping
from tests.factories import make_preview, make_repository

PERSON = services.Actor("user", "ann")


def planned_deletion(preview: Preview, reason: str = reaper.EXPIRED) -> reaper.Decision:
    """The reaper's decision to delete `preview` as its snapshot saw it."""
    return reaper.Decision(action=reaper.DELETE, reason=reason, namespace=preview.namespace, preview_id=preview.pk,
                           generation=preview.generation, expires_at=preview.expires_at)


def queued(task: str) -> list[int]:
    """Preview ids of the queued django-q tasks named `task` (their first argument)."""
    return sorted(q.task["args"][0] for q in OrmQ.objects.all() if q.task["func"] == task)


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
    reap = InThread(lambda: services.previews_reap(decisions=[planned_deletion(planned)]))
    reap.start()
    wait_for(lambda: waiting_for_locks() == 1)
    extend = InThread(lambda: services.preview_extend(preview=planned, hours=24, reason="QA tomorrow",
                                                      actor=PERSON))
    extend.start()
    wait_for(lambda: waiting_for_locks() == 2)
    release.set()
    for thread in (holder, reap, extend):
        thread.join(15)

    assert reap.error is None
    reaped, skipped = reap.result
    assert [r.preview_id for r in reaped] == [preview.pk] and skipped == []
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
    assert services.previews_reap(decisions=[planned_deletion(planned)]) == ([], [preview.pk])
    preview.refresh_from_db()
    assert preview.desired == Preview.Desired.UP and preview.expires_at > timezone.now()


@pytest.mark.django_db
def test_the_reaper_does_not_destroy_a_preview_pinned_since_its_plan():
    preview = make_preview(status=Preview.Status.READY, expires_at=timezone.now() - timedelta(hours=1))
    planned = Preview.objects.get(pk=preview.pk)
    services.preview_pin(preview=preview, pinned=True, actor=PERSON)
    assert services.previews_reap(decisions=[planned_deletion(planned)]) == ([], [preview.pk])
    assert Preview.objects.get(pk=preview.pk).desired == Preview.Desired.UP


@pytest.mark.django_db
def test_the_bulk_destroy_checks_every_preview_of_every_chunk_against_the_plan(
        monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(reaping, "REAP_CHUNK", 2)  # five previews: three chunks, three transactions
    repository = make_repository()
    expired = timezone.now() - timedelta(hours=1)
    previews = [make_preview(repository, status=Preview.Status.READY, expires_at=expired) for _ in range(5)]
    plan = [planned_deletion(p) for p in previews]
    redeployed, pinned = previews[1], previews[3]
    services.preview_redeploy(preview=redeployed, actor=PERSON)
    services.preview_pin(preview=pinned, pinned=True, actor=PERSON)
    OrmQ.objects.all().delete()

    with django_capture_on_commit_callbacks(execute=True):
        reaped, skipped = services.previews_reap(decisions=plan)

    assert sorted(skipped) == sorted([redeployed.pk, pinned.pk])
    assert [r.preview_id for r in reaped] == [previews[0].pk, previews[2].pk, previews[4].pk]
    for r in reaped:
        preview = Preview.objects.get(pk=r.preview_id)
        assert (preview.desired, preview.status, preview.generation) == ("down", "deleting", r.generation)
        assert preview.status_message == "Reaper: expired"
        assert r.direct and r.namespace == preview.namespace  # no data: the cycle issues the delete itself
        assert list(preview.events.filter(generation=r.generation).values_list("action", "actor_kind")) == [
            (EventAction.DESTROY_REQUESTED, "reaper")]
    assert queued(services.TEARDOWN_TASK) == []
    for preview in (redeployed, pinned):
        assert Preview.objects.get(pk=preview.pk).desired == "up"


@pytest.mark.django_db
def test_the_bulk_destroy_hands_previews_with_data_or_already_going_to_their_teardown_task(
        django_capture_on_commit_callbacks):
    expired = timezone.now() - timedelta(hours=1)
    with_data = make_preview(status=Preview.Status.READY, expires_at=expired, data_mode="schema", data_name="pv1")
    going = make_preview(status=Preview.Status.DELETING, desired=Preview.Desired.DOWN, expires_at=expired)
    plan = [planned_deletion(with_data), planned_deletion(going, reaper.DESIRED_DOWN)]

    with django_capture_on_commit_callbacks(execute=True):
        reaped, skipped = services.previews_reap(decisions=plan)

    assert skipped == [] and [(r.preview_id, r.direct) for r in reaped] == [(with_data.pk, False), (going.pk, False)]
    assert queued(services.TEARDOWN_TASK) == sorted([with_data.pk, going.pk])
    going.refresh_from_db()
    assert going.generation == plan[1].generation  # asked for already: no new generation, the task tries again
    assert going.events.get().action == EventAction.REAPED
    assert Preview.objects.get(pk=with_data.pk).events.get().action == EventAction.DESTROY_REQUESTED


@pytest.mark.django_db
def test_a_bulk_destroy_gives_a_held_deploy_slot_to_the_next_preview_waiting(
        settings, django_capture_on_commit_callbacks):
    settings.PREVIEWS_DEPLOY_SLOTS = 1
    repository = make_repository()
    holder = make_preview(repository, status=Preview.Status.PENDING, deploy_queued_at=timezone.now(),
                          expires_at=timezone.now() - timedelta(hours=1))
    waiting = make_preview(repository, status=Preview.Status.PENDING)
    with django_capture_on_commit_callbacks(execute=True):
        services.previews_reap(decisions=[planned_deletion(holder)])
    assert Preview.objects.get(pk=holder.pk).deploy_queued_at is None
    assert Preview.objects.get(pk=waiting.pk).deploy_queued_at is not None  # the slot went to the next one


@pytest.mark.django_db
def test_issued_teardowns_are_recorded_by_what_became_of_each_delete(django_capture_on_commit_callbacks):
    Outcome = services.TeardownOutcome
    previews = {outcome: make_preview(status=Preview.Status.DELETING, desired=Preview.Desired.DOWN)
                for outcome in Outcome}
    stale = make_preview(status=Preview.Status.DELETING, desired=Preview.Desired.DOWN)
    issued = [services.TeardownIssued(p.pk, p.generation, p.namespace, outcome, message=f"because {outcome}")
              for outcome, p in previews.items()]
    issued.append(services.TeardownIssued(stale.pk, stale.generation - 1, stale.namespace, Outcome.GONE))

    with django_capture_on_commit_callbacks(execute=True):
        counts = services.previews_teardown_issued(issued=issued, actor=services.REAPER)

    assert counts == {Outcome.TERMINATING: 1, Outcome.GONE: 2, Outcome.NOT_OURS: 1, Outcome.FAILED: 1,
                      Outcome.BUSY: 1}
    state = {outcome: Preview.objects.get(pk=p.pk) for outcome, p in previews.items()}
    assert state[Outcome.TERMINATING].status == "deleting"
    assert state[Outcome.TERMINATING].events.get().action == EventAction.NAMESPACE_TERMINATING
    assert state[Outcome.TERMINATING].events.get().actor_kind == "reaper"
    assert (state[Outcome.GONE].status, state[Outcome.GONE].status_message) == (
        "deleted", f"Namespace {state[Outcome.GONE].namespace} deleted")
    assert state[Outcome.NOT_OURS].status == "deleted"
    assert state[Outcome.NOT_OURS].status_message == "Nothing deleted: because not ours"
    assert state[Outcome.FAILED].status == "deleting"
    assert state[Outcome.FAILED].status_message == "Deleting failed, the sweep tries again: because failed"
    assert state[Outcome.FAILED].events.get().action == EventAction.DELETE_FAILED
    assert queued(services.TEARDOWN_TASK) == [state[Outcome.BUSY].pk]  # a task held it: its teardown task waits
    assert Preview.objects.get(pk=stale.pk).status == "deleting" and not stale.events.exists()  # another generation
