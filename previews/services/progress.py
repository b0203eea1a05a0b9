"""The engine's progress: what deploy, teardown and sleep tasks, the cluster watcher and the sweep record."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from previews.models import EventAction, Preview
from previews.services.queue import SLEEP_TASK, TEARDOWN_TASK, deploy_slots_fill, enqueue, github_sync_enqueue
from previews.services.timeline import Actor, record_event, record_event_of

MAX_STATUS_MESSAGE = 4000  # characters kept of a status message; the PR comment and the API show it


def preview_slept(*, preview_id: int, generation: int, workloads: dict[str, int]) -> bool:
    """The sleep task scaled everything to zero; only for the generation that asked for it."""
    now = timezone.now()
    message = (f"Asleep since {now:%Y-%m-%d %H:%M} UTC: {len(workloads)} workloads scaled to zero; a push, "
               "/preview wake or the dashboard wakes it")
    with transaction.atomic():
        updated = Preview.objects.filter(pk=preview_id, generation=generation, desired=Preview.Desired.UP,
                                         status=Preview.Status.SLEEPING).update(
            slept_at=now, observed_generation=generation, status_message=message, updated_at=now)
        if updated:
            record_event_of(preview_id, generation, Actor.system(), EventAction.SLEPT, message, replicas=workloads)
            github_sync_enqueue(preview_id)
    return bool(updated)


def preview_sleep_retry(*, preview_id: int) -> bool:
    """Queue the sleep task again for a preview whose scaling to zero did not finish."""
    with transaction.atomic():
        preview = Preview.objects.select_for_update().filter(
            pk=preview_id, desired=Preview.Desired.UP, status=Preview.Status.SLEEPING, slept_at=None).first()
        if preview is None:
            return False
        Preview.objects.filter(pk=preview_id).update(updated_at=timezone.now())
        enqueue(SLEEP_TASK, preview)
    return True



def preview_set_status(*, preview_id: int, generation: int, status: str, action: EventAction, message: str = "",
                       **details) -> bool:
    """Record a task's progress, but only for the generation it works on: a stale task changes nothing."""
    now = timezone.now()
    if len(message) > MAX_STATUS_MESSAGE:
        message = message[: MAX_STATUS_MESSAGE - 30] + f" … ({len(message)} characters in all)"
    fields: dict = {"status": status, "status_message": message, "updated_at": now}
    if status == Preview.Status.READY:
        fields["ready_at"] = now
    if status in (Preview.Status.READY, Preview.Status.FAILED, Preview.Status.DELETED):
        fields["observed_generation"] = generation
    if status == Preview.Status.DELETED:
        fields["deleted_at"] = now
    with transaction.atomic():
        updated = Preview.objects.filter(pk=preview_id, generation=generation).update(**fields)
        if updated:
            preview = Preview.objects.get(pk=preview_id)
            record_event(preview, Actor.system(), action, message, **details)
            github_sync_enqueue(preview_id)
    return bool(updated)


def preview_note(*, preview_id: int, action: EventAction, message: str, **details) -> None:
    """An event without a status change (a step done, a warning)."""
    preview = Preview.objects.filter(pk=preview_id).first()
    if preview is not None:
        record_event(preview, Actor.system(), action, message, **details)



def preview_deploy_started(*, preview_id: int, generation: int) -> bool:
    """A deploy task starts on this generation: it gives back its queue slot and says so."""
    now = timezone.now()
    with transaction.atomic():
        updated = Preview.objects.filter(pk=preview_id, generation=generation, desired=Preview.Desired.UP).update(
            status=Preview.Status.DEPLOYING, status_message="Rendering and applying the manifests",
            deploy_queued_at=None, next_attempt_at=None, deploy_started_at=now, updated_at=now)
        if updated:
            record_event_of(preview_id, generation, Actor.system(), EventAction.DEPLOY_STARTED)
            github_sync_enqueue(preview_id)
    return bool(updated)


def preview_data_prepared(*, preview_id: int, generation: int, database: str, reset: bool,
                          steps: list[str], size_bytes: int | None = None) -> bool:
    """A deploy ensured (or reset) the preview's data; a reset is the timeline's "data reset" event."""
    now = timezone.now()
    fields: dict = {"updated_at": now, "data_size_bytes": size_bytes, "data_size_at": now}
    if reset:
        fields["data_reset_at"] = now
    with transaction.atomic():
        updated = Preview.objects.filter(pk=preview_id, generation=generation).update(**fields)
        if updated and (reset or steps):
            action = EventAction.DATA_RESET if reset else EventAction.DATA_CREATED
            record_event_of(preview_id, generation, Actor.system(), action,
                   f"{database}: {', '.join(steps)}" if steps else database, database=database, steps=steps)
            if reset:
                github_sync_enqueue(preview_id)
    return bool(updated)


def preview_data_measured(*, sizes: dict[int, int | None]) -> None:
    """Record the sizes the data reaper measured (preview id -> bytes)."""
    now = timezone.now()
    for preview_id, size in sizes.items():
        Preview.objects.filter(pk=preview_id).update(data_size_bytes=size, data_size_at=now)


def preview_deploy_applied(*, preview_id: int, generation: int, rollout: dict[str, int], objects: list[str]) -> bool:
    """Everything is applied; from here the cluster watcher decides when the rollout is done."""
    now = timezone.now()
    message = (f"Rolling out {', '.join(sorted(rollout))}" if rollout else "Applied; nothing to roll out")
    with transaction.atomic():
        updated = Preview.objects.filter(pk=preview_id, generation=generation, desired=Preview.Desired.UP,
                                         status=Preview.Status.DEPLOYING).update(
            applied_generation=generation, applied_at=now, rollout=rollout, status_message=message, updated_at=now)
        if updated:
            record_event_of(preview_id, generation, Actor.system(), EventAction.APPLIED,
                   f"Applied {len(objects)} objects; the watcher follows the rollout", objects=objects)
    return bool(updated)


def preview_deploy_wait(*, preview_id: int, generation: int, message: str, retry_in: float) -> bool:
    """The deploy cannot go on yet (the API is unreachable, the old namespace is still terminating).

    The preview waits without a slot; it is queued again after `retry_in` seconds by the next slot
    fill or sweep, or sooner when the watcher sees what it was waiting for.
    """
    now = timezone.now()
    with transaction.atomic():
        updated = Preview.objects.filter(pk=preview_id, generation=generation, desired=Preview.Desired.UP).update(
            status=Preview.Status.PENDING, status_message=message, deploy_queued_at=None,
            next_attempt_at=now + timedelta(seconds=retry_in), updated_at=now)
        if updated:
            record_event_of(preview_id, generation, Actor.system(), EventAction.DEPLOY_WAITING, message)
    return bool(updated)


def preview_rollout_finished(*, preview_id: int, generation: int, ready: bool, message: str = "",
                             **details) -> bool:
    """The watcher (or the sweep) saw the applied generation become ready, or fail for good.

    Only the generation that is current *and* applied is ever marked: a superseded or
    half-applied generation never becomes ready.
    """
    now = timezone.now()
    with transaction.atomic():
        preview = (Preview.objects.select_for_update().filter(
            pk=preview_id, generation=generation, applied_generation=generation, desired=Preview.Desired.UP,
            status=Preview.Status.DEPLOYING).first())
        if preview is None:
            return False
        took = round((now - preview.deploy_started_at).total_seconds(), 3) if preview.deploy_started_at else None
        if ready:
            preview.status, preview.status_message = Preview.Status.READY, f"Ready at {preview.url}"
            preview.ready_at, action = now, EventAction.READY
        else:
            preview.status, preview.status_message, action = Preview.Status.FAILED, message, EventAction.DEPLOY_FAILED
        preview.observed_generation = generation
        preview.save(update_fields=["status", "status_message", "ready_at", "observed_generation", "updated_at"])
        record_event(preview, Actor.system(), action, preview.status_message, duration_seconds=took,
               **({"url": preview.url} if ready else {}), **details)
        github_sync_enqueue(preview_id)
    return True


def preview_namespace_gone(*, namespace: str) -> str:
    """The watcher (or the sweep) saw a managed namespace disappear. Returns what it meant.

    A preview being deleted is now deleted; a preview whose deploy waited for its old namespace to
    finish terminating is queued again at once.
    """
    now = timezone.now()
    with transaction.atomic():
        preview = Preview.objects.select_for_update().filter(namespace=namespace).first()
        if preview is None:
            return "unknown"
        if preview.desired == Preview.Desired.DOWN:
            if preview.status == Preview.Status.DELETED:
                return "already deleted"
            requested = (preview.events.filter(action=EventAction.DESTROY_REQUESTED, generation=preview.generation)
                         .values_list("created_at", flat=True).first())
            Preview.objects.filter(pk=preview.pk).update(
                status=Preview.Status.DELETED, status_message=f"Namespace {namespace} deleted", deleted_at=now,
                observed_generation=preview.generation, updated_at=now)
            preview.refresh_from_db()
            record_event(preview, Actor.system(), EventAction.DELETED, preview.status_message,
                   duration_seconds=round((now - requested).total_seconds(), 3) if requested else None)
            github_sync_enqueue(preview.pk)
            return "deleted"
        if preview.status == Preview.Status.PENDING and preview.deploy_queued_at is None:
            Preview.objects.filter(pk=preview.pk).update(next_attempt_at=None)
            repository_id = preview.repository_id
            transaction.on_commit(lambda: deploy_slots_fill(repository_id))
            return "deploy resumed"
    return "ignored"


def preview_deploys_requeue_lost(*, older_than: timedelta) -> int:
    """Deploy tasks that were queued or started long ago and never got on (a worker died): queue them again."""
    before = timezone.now() - older_than
    message = "The deploy task was lost (a worker stopped?); it is queued again"
    with transaction.atomic():
        lost = list(Preview.objects.select_for_update(skip_locked=True).filter(desired=Preview.Desired.UP).filter(
            Q(status=Preview.Status.PENDING, deploy_queued_at__lt=before)
            | Q(status=Preview.Status.DEPLOYING, applied_generation__lt=F("generation"), deploy_started_at__lt=before)))
        for preview in lost:
            Preview.objects.filter(pk=preview.pk).update(status=Preview.Status.PENDING, status_message=message,
                                                         deploy_queued_at=None, next_attempt_at=None)
            record_event(preview, Actor.system(), EventAction.DEPLOY_REQUEUED, message)
    return len(lost)



def preview_teardown_retry(*, preview_id: int) -> bool:
    """Queue the teardown again for a preview whose namespace is still there and not terminating."""
    with transaction.atomic():
        preview = Preview.objects.select_for_update().filter(
            pk=preview_id, desired=Preview.Desired.DOWN, status=Preview.Status.DELETING).first()
        if preview is None:
            return False
        enqueue(TEARDOWN_TASK, preview)
    return True
