"""The task queue: tasks enqueued after commit, a repository's deploy slots, old task results."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.models import Task
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
    of pushes cannot keep every other repository's deploys waiting behind it. A waiting preview is
    queued when a slot frees (`deploy_slots_fill`). Must run inside the transaction that changed it.
    """
    if preview.deploy_queued_at is not None:
        # Its task is still queued, for an older generation: that one will find itself stale.
        Preview.objects.filter(pk=preview.pk).update(next_attempt_at=None)
        enqueue(DEPLOY_TASK, preview)
        return
    locks.repository_slots_lock(preview.repository_id)
    in_use = Preview.objects.filter(repository_id=preview.repository_id, deploy_queued_at__isnull=False).count()
    if in_use < settings.PREVIEWS_DEPLOY_SLOTS:
        preview.deploy_queued_at = timezone.now()
        Preview.objects.filter(pk=preview.pk).update(deploy_queued_at=preview.deploy_queued_at, next_attempt_at=None)
        enqueue(DEPLOY_TASK, preview)
    else:
        message = (f"Waiting for a deploy slot: {in_use} deploys of {preview.repository} are queued "
                   f"(at most {settings.PREVIEWS_DEPLOY_SLOTS} at a time)")
        Preview.objects.filter(pk=preview.pk).update(status_message=message, next_attempt_at=None)


def deploy_slots_fill(repository_id: int) -> int:
    """Queue the deploys of previews waiting for a slot, oldest first, as far as slots are free."""
    now = timezone.now()
    with transaction.atomic():
        locks.repository_slots_lock(repository_id)
        free = settings.PREVIEWS_DEPLOY_SLOTS - Preview.objects.filter(
            repository_id=repository_id, deploy_queued_at__isnull=False).count()
        if free <= 0:
            return 0
        waiting = list(Preview.objects.select_for_update(skip_locked=True).filter(
            repository_id=repository_id, desired=Preview.Desired.UP, status=Preview.Status.PENDING,
            deploy_queued_at=None).filter(Q(next_attempt_at=None) | Q(next_attempt_at__lte=now))
            .order_by("updated_at", "pk")[:free])
        for preview in waiting:
            Preview.objects.filter(pk=preview.pk).update(deploy_queued_at=now, next_attempt_at=None)
            enqueue(DEPLOY_TASK, preview)
    return len(waiting)


def task_results_prune(*, keep: int) -> int:
    """Delete the successful django-q task results beyond the newest `keep`; failures stay.

    django-q2's own pruning is off (save_limit 0, see config/settings.py): it locks and loads every kept
    result each time a task finishes. This is one DELETE, run by the sweep.
    """
    newest = Task.objects.filter(success=True).order_by("-stopped", "-pk").values("pk")[:keep]
    deleted, _ = Task.objects.filter(success=True).exclude(pk__in=newest).delete()
    return deleted
