"""The task queue: tasks enqueued after commit, a repository's deploy slots, old task results."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django_q.models import OrmQ, Task
from django_q.tasks import async_task

from previews import locks
from previews.models import Preview

DEPLOY_TASK = "previews.tasks.deploy_preview"
TEARDOWN_TASK = "previews.tasks.teardown_preview"
SLEEP_TASK = "previews.tasks.sleep_preview"


def enqueue(task: str, preview: Preview) -> None:
    # After commit, so a worker never sees a generation the database does not hold yet.
    preview_id, generation = preview.pk, preview.generation
    transaction.on_commit(lambda: async_task(task, preview_id, generation,
                                             task_name=f"{task.rsplit('.', 1)[1]}:{preview_id}:{generation}"))


def request_deploy(preview: Preview) -> None:
    """Queue the preview's deploy task, or leave it waiting for one of its repository's deploy slots.

    A repository has PREVIEWS_DEPLOY_SLOTS deploy tasks in the queue at most, so one repository's flood
    of pushes cannot keep every other repository's deploys waiting behind it. Slots go to the previews that
    have waited longest (`waiting_since`), the one asking now included: a newcomer never takes a free slot
    ahead of an older preview still waiting (one whose task was lost and handed out again, one waiting
    for a retry). Must run inside the transaction that changed it.
    """
    if preview.deploy_queued_at is not None:
        # Its task is still queued, for an older generation: that one will find itself stale.
        Preview.objects.filter(pk=preview.pk).update(next_attempt_at=None)
        enqueue(DEPLOY_TASK, preview)
        return
    locks.repository_slots_lock(preview.repository_id)
    now = timezone.now()
    preview.waiting_since = preview.waiting_since or now
    preview.next_attempt_at = None
    Preview.objects.filter(pk=preview.pk).update(waiting_since=preview.waiting_since, next_attempt_at=None)
    if preview.pk in _fill_locked(preview.repository_id, now):
        preview.deploy_queued_at = now
        return
    in_use = Preview.objects.filter(repository_id=preview.repository_id, deploy_queued_at__isnull=False).count()
    message = (f"Waiting for a deploy slot: {in_use} deploys of {preview.repository} are queued "
               f"(at most {settings.PREVIEWS_DEPLOY_SLOTS} at a time)")
    Preview.objects.filter(pk=preview.pk).update(status_message=message)


def deploy_slots_fill(repository_id: int) -> int:
    """Queue the deploys of previews waiting for a slot, oldest first, as far as slots are free."""
    with transaction.atomic():
        locks.repository_slots_lock(repository_id)
        return len(_fill_locked(repository_id, timezone.now()))


def _fill_locked(repository_id: int, now) -> list[int]:
    """Hand the repository's free slots to its waiting previews, longest waiting first; the ids queued.

    The caller holds the repository's slots lock. A waiting preview whose row another transaction holds
    right now (a push for it, a destroy) is not waited for (that could deadlock with a transaction holding
    its row and waiting for the slots lock), but nobody behind it is served either: the filling stops there,
    and that transaction, or the next fill, serves it first.
    """
    free = settings.PREVIEWS_DEPLOY_SLOTS - Preview.objects.filter(
        repository_id=repository_id, deploy_queued_at__isnull=False).count()
    if free <= 0:
        return []
    candidates = list(Preview.objects.filter(
        repository_id=repository_id, desired=Preview.Desired.UP, status=Preview.Status.PENDING,
        deploy_queued_at=None).filter(Q(next_attempt_at=None) | Q(next_attempt_at__lte=now))
        .order_by(F("waiting_since").asc(nulls_first=True), "pk").values_list("pk", flat=True)[:free])
    if not candidates:
        return []
    held = dict(Preview.objects.select_for_update(skip_locked=True).filter(
        pk__in=candidates, desired=Preview.Desired.UP, status=Preview.Status.PENDING, deploy_queued_at=None)
        .values_list("pk", "generation"))
    queued = []
    for pk in candidates:
        if pk not in held:
            break
        queued.append(pk)
    Preview.objects.filter(pk__in=queued).update(deploy_queued_at=now, next_attempt_at=None)
    for pk in queued:
        enqueue(DEPLOY_TASK, Preview(pk=pk, generation=held[pk]))
    return queued


def deploy_tasks_alive(*, since) -> set[tuple[int, int]] | None:
    """The deploy tasks (preview id, generation) the broker still holds for a worker: waiting to be taken, or
    taken after `since` (a task taken longer ago and still held is its dead or failed worker's, until django-q2
    hands it out again after Q_RETRY). None when the broker cannot be looked into (Redis).

    One read of the ORM broker's queue (one row per queued task; each payload is decoded, a few microseconds).
    """
    if "orm" not in settings.Q_CLUSTER:
        return None
    now = timezone.now()
    taken_after = since + timedelta(seconds=settings.Q_RETRY)  # a task taken at t is held until t + Q_RETRY
    alive = set()
    for row in OrmQ.objects.filter(Q(lock__lte=now) | Q(lock__gt=taken_after) | Q(lock=None)).only("payload", "lock"):
        task = row.task
        if task.get("func") == DEPLOY_TASK and len(task.get("args") or ()) == 2:
            alive.add(tuple(task["args"]))
    return alive


def task_results_prune(*, keep: int) -> int:
    """Delete the successful django-q task results beyond the newest `keep`; failures stay.

    django-q2's own pruning is off (save_limit 0, see config/settings.py): it locks and loads every kept
    result each time a task finishes. This is one DELETE, run by the sweep.
    """
    newest = Task.objects.filter(success=True).order_by("-stopped", "-pk").values("pk")[:keep]
    deleted, _ = Task.objects.filter(success=True).exclude(pk__in=newest).delete()
    return deleted
