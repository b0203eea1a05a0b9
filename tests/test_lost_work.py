"""Lost work is found in seconds, and slots go to the previews that waited longest.

A running deploy holds its preview's deploy lock (a Postgres session lock) for the whole run, so a run whose
worker or database session died is seen as lost at once; a queued deploy is lost when its task is neither
waiting in the broker nor was taken from it recently. The recovery pass (engine/sweep.py `recover`, every few
seconds in the watcher) hands them out again with their old place in the queue. Real Postgres, the real ORM
broker's queue; no qcluster (so queued tasks stay where they are).
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import close_old_connections, connection
from django.utils import timezone
from django_q.models import OrmQ

from previews import locks, provisioning, services
from previews.engine import sweep
from previews.models import EventAction, Preview
from previews.services import Actor, PreviewRequest
from tests.factories import make_preview, make_repository

pytestmark = pytest.mark.django_db(transaction=True)
CI = Actor("token", "ci")
SAMPLE = (Path(__file__).resolve().parent.parent / "previews" / "samples" / "shop.yaml").read_text()


def deploy_tasks() -> list[tuple[int, int]]:
    return sorted(tuple(row.task["args"]) for row in OrmQ.objects.all() if row.task.get("func") == services.DEPLOY_TASK)


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def lost_run(repository, *, waited: float = 60, **fields) -> Preview:
    """A preview whose deploy started and whose worker then died: deploying, nothing applied, no lock held."""
    return make_preview(repository, status=Preview.Status.DEPLOYING, status_message="Rendering and applying",
                        deploy_started_at=ago(waited - 1), waiting_since=ago(waited), **fields)


def request(repository, pr: int) -> Preview:
    return services.preview_upsert(repository=repository, pr_number=pr, actor=CI,
                                   request=PreviewRequest(head_sha="b" * 40)).preview


def other_session():
    db = django_settings.DATABASES["default"]
    return psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=connection.settings_dict["NAME"],
                           autocommit=True)


def test_a_deploy_whose_worker_died_is_queued_again_at_once():
    preview = lost_run(make_repository(manifest_template=SAMPLE))
    assert sweep.recover() == {"requeued": 1, "queued": 0}
    preview.refresh_from_db()
    assert preview.status == Preview.Status.PENDING
    assert preview.deploy_queued_at is not None  # it has a slot again, and its task is in the queue
    assert deploy_tasks() == [(preview.pk, preview.generation)]
    event = preview.events.get(action=EventAction.DEPLOY_REQUEUED)
    assert event.details["lost"] == "running"


def test_a_running_deploy_that_holds_its_lock_is_left_alone():
    preview = lost_run(make_repository(manifest_template=SAMPLE))
    with other_session() as worker:
        worker.execute("SELECT pg_advisory_lock(%s, %s)", [locks.DEPLOY, preview.pk])
        assert sweep.recover() == {"requeued": 0, "queued": 0}
        assert Preview.objects.get(pk=preview.pk).status == Preview.Status.DEPLOYING
    # Its session ended (the worker died): the lock went with it.
    assert sweep.recover()["requeued"] == 1


def test_a_queued_deploy_whose_task_waits_in_the_broker_is_not_lost():
    preview = request(make_repository(manifest_template=SAMPLE), 1)
    Preview.objects.filter(pk=preview.pk).update(deploy_queued_at=ago(3600))
    assert sweep.recover()["requeued"] == 0
    assert deploy_tasks() == [(preview.pk, preview.generation)]


def test_a_queued_deploy_whose_task_was_never_written_is_queued_again():
    # The request committed, then the database went away before the task was written (on_commit).
    preview = request(make_repository(manifest_template=SAMPLE), 1)
    OrmQ.objects.all().delete()
    Preview.objects.filter(pk=preview.pk).update(deploy_queued_at=ago(django_settings.PREVIEWS_LOST_TASK_SECONDS + 1))
    assert sweep.recover() == {"requeued": 1, "queued": 0}
    assert deploy_tasks() == [(preview.pk, preview.generation)]
    assert Preview.objects.get(pk=preview.pk).events.get(action=EventAction.DEPLOY_REQUEUED).details["lost"] == "queued"


@pytest.mark.parametrize(("taken_ago", "lost"), [(60, True), (2, False)])
def test_a_queued_deploy_taken_by_a_worker_that_died_is_queued_again(taken_ago, lost):
    preview = request(make_repository(manifest_template=SAMPLE), 1)
    # The ORM broker holds a task it handed out until Q_RETRY after it was taken.
    OrmQ.objects.update(lock=ago(taken_ago) + timedelta(seconds=django_settings.Q_RETRY))
    Preview.objects.filter(pk=preview.pk).update(deploy_queued_at=ago(120))
    assert sweep.recover()["requeued"] == int(lost)
    assert OrmQ.objects.count() == 1 + int(lost)  # the dead worker's task stays until Q_RETRY: then it is stale


def test_a_task_handed_out_again_for_an_applied_generation_does_nothing():
    preview = make_preview(make_repository(manifest_template=SAMPLE), status=Preview.Status.READY, generation=3,
                           applied_generation=3, observed_generation=3)
    assert provisioning.deploy(preview.pk, 3) == "stale"
    assert not services.preview_deploy_started(preview_id=preview.pk, generation=3)
    assert Preview.objects.get(pk=preview.pk).status == Preview.Status.READY
    assert not preview.events.exists()


def test_a_new_request_never_takes_a_slot_ahead_of_an_older_waiting_preview(settings):
    settings.PREVIEWS_DEPLOY_SLOTS = 1
    repository = make_repository(manifest_template=SAMPLE)
    # A slot is free (its holder's task was lost and gave it up) and an older preview waits for it.
    older = make_preview(repository, status=Preview.Status.PENDING, waiting_since=ago(300))
    newer = request(repository, 99)
    assert Preview.objects.get(pk=older.pk).deploy_queued_at is not None
    newer.refresh_from_db()
    assert newer.deploy_queued_at is None
    assert newer.status_message.startswith("Waiting for a deploy slot: 1 deploys of")
    assert deploy_tasks() == [(older.pk, older.generation)]


def test_a_lost_deploy_is_served_before_newer_waiting_previews(settings):
    settings.PREVIEWS_DEPLOY_SLOTS = 1
    repository = make_repository(manifest_template=SAMPLE)
    newer = make_preview(repository, status=Preview.Status.PENDING, waiting_since=ago(30))
    lost = lost_run(repository, waited=600)
    sweep.recover()
    assert Preview.objects.get(pk=lost.pk).deploy_queued_at is not None
    assert Preview.objects.get(pk=newer.pk).deploy_queued_at is None


def test_slots_go_by_how_long_a_preview_waited_not_by_its_last_update(settings):
    settings.PREVIEWS_DEPLOY_SLOTS = 2
    repository = make_repository(manifest_template=SAMPLE)
    waiting = [make_preview(repository, status=Preview.Status.PENDING, waiting_since=ago(100 - i)) for i in range(4)]
    Preview.objects.filter(pk=waiting[0].pk).update(updated_at=timezone.now(), status_message="touched")
    assert services.deploy_slots_fill(repository.pk) == 2
    queued = set(Preview.objects.filter(deploy_queued_at__isnull=False).values_list("pk", flat=True))
    assert queued == {waiting[0].pk, waiting[1].pk}


def test_a_deploy_waiting_for_a_retry_keeps_its_place(settings):
    settings.PREVIEWS_DEPLOY_SLOTS = 1
    repository = make_repository(manifest_template=SAMPLE)
    retried = make_preview(repository, status=Preview.Status.DEPLOYING, deploy_started_at=ago(50),
                           waiting_since=ago(60))
    newer = make_preview(repository, status=Preview.Status.PENDING, waiting_since=ago(10))
    services.preview_deploy_wait(preview_id=retried.pk, generation=retried.generation, message="API away",
                                 retry_in=0)
    assert services.deploy_slots_fill(repository.pk) == 1
    assert Preview.objects.get(pk=retried.pk).deploy_queued_at is not None
    assert Preview.objects.get(pk=newer.pk).deploy_queued_at is None


def test_the_place_in_the_queue_ends_with_the_generation():
    repository = make_repository(manifest_template=SAMPLE)
    preview = make_preview(repository, status=Preview.Status.DEPLOYING, waiting_since=ago(60), applied_generation=1)
    services.preview_rollout_finished(preview_id=preview.pk, generation=1, ready=True)
    assert Preview.objects.get(pk=preview.pk).waiting_since is None


def test_a_held_deploy_lock_survives_the_connection_reaching_its_maximum_age():
    # django-q2's ORM broker runs close_old_connections() at every enqueue (from on_commit callbacks too): a
    # connection past CONN_MAX_AGE was closed there, and with it the session lock its process went on
    # believing it held (the next query silently opened a new session).
    preview = make_preview(make_repository(manifest_template=SAMPLE))
    connection.ensure_connection()
    connection.close_at = time.monotonic() - 1  # the connection is past its maximum age
    with locks.advisory_lock(locks.DEPLOY, preview.pk), other_session() as other:
        close_old_connections()
        assert connection.connection is not None
        taken = other.execute("SELECT pg_try_advisory_lock(%s, %s)", [locks.DEPLOY, preview.pk]).fetchone()[0]
        assert not taken, "the lock was lost with a connection closed underneath"
