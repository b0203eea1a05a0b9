"""The engine's progress: what deploy, teardown and sleep tasks, the cluster watcher and the sweep record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from previews import locks
from previews.models import EventAction, Preview, PreviewEvent
from previews.services.github_sync import github_sync_enqueue
from previews.services.queue import SLEEP_TASK, TEARDOWN_TASK, deploy_slots_fill, deploy_tasks_alive, enqueue
from previews.services.timeline import Actor, event_row, record_event, record_event_of

MAX_STATUS_MESSAGE = 4000  # characters kept of a status message; the PR comment and the API show it
FAILED_DELETE_MESSAGE = 2000  # characters of a failed delete's reason kept in the status message


class NamespaceGone(StrEnum):
    """What a managed namespace's disappearance meant (`preview_namespace_gone`)."""

    UNKNOWN = "unknown"  # no preview has that namespace
    ALREADY_DELETED = "already deleted"
    DELETED = "deleted"  # its preview was being deleted: now it is
    DEPLOY_RESUMED = "deploy resumed"  # its preview's deploy waited for the old namespace to go
    IGNORED = "ignored"


class TeardownOutcome(StrEnum):
    """What became of a namespace delete issued for a preview being torn down."""

    TERMINATING = "terminating"  # the watcher marks the preview deleted once the namespace is gone
    GONE = "gone"
    NOT_OURS = "not ours"  # nothing deleted: the namespace is someone else's
    FAILED = "failed"  # the sweep tries again
    BUSY = "busy"  # another task of the preview held its lock: its teardown task waits for it


@dataclass(frozen=True)
class TeardownIssued:
    """One namespace delete issued by a teardown: the task's own, or one of the reaper's many."""

    preview_id: int
    generation: int
    namespace: str
    outcome: TeardownOutcome
    message: str = ""  # why, for not ours and failed
    duration_seconds: float | None = None  # how long the teardown took, when it is known


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
                       actor: Actor | None = None, **details) -> bool:
    """Record a task's progress, but only for the generation it works on: a stale task changes nothing.

    The one owner of what a status brings with it: ready sets `ready_at`; ready, failed and deleted are the
    generation's end (`observed_generation`); deleted sets `deleted_at`. The event is by `actor` (default: the
    worker) and the PR is told.
    """
    now = timezone.now()
    if len(message) > MAX_STATUS_MESSAGE:
        message = message[: MAX_STATUS_MESSAGE - 30] + f" … ({len(message)} characters in all)"
    fields: dict = {"status": status, "status_message": message, "updated_at": now}
    if status == Preview.Status.READY:
        fields["ready_at"] = now
    if status in (Preview.Status.READY, Preview.Status.FAILED, Preview.Status.DELETED):
        fields["observed_generation"] = generation
        fields["waiting_since"] = None
    if status == Preview.Status.DELETED:
        fields["deleted_at"] = now
    with transaction.atomic():
        updated = Preview.objects.filter(pk=preview_id, generation=generation).update(**fields)
        if updated:
            record_event_of(preview_id, generation, actor or Actor.system(), action, message, **details)
            github_sync_enqueue(preview_id)
    return bool(updated)


def preview_note(*, preview_id: int, action: EventAction, message: str, **details) -> None:
    """An event without a status change (a step done, a warning)."""
    preview = Preview.objects.filter(pk=preview_id).first()
    if preview is not None:
        record_event(preview, Actor.system(), action, message, **details)


def preview_deploy_started(*, preview_id: int, generation: int) -> bool:
    """A deploy task starts on this generation: it gives back its queue slot and says so.

    The caller holds the preview's deploy lock (`locks.DEPLOY`) for the whole run: that lock, which goes with
    the run's database session, is what tells a running deploy from a lost one (`preview_deploys_recover_lost`).
    """
    now = timezone.now()
    with transaction.atomic():
        # Not for a generation already applied or finished: a task handed out again after its preview was
        # recovered and deployed by another (django-q2 redelivers an unacknowledged task after Q_RETRY) is stale.
        updated = Preview.objects.filter(
            pk=preview_id, generation=generation, desired=Preview.Desired.UP, applied_generation__lt=generation,
            observed_generation__lt=generation).update(
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


def preview_data_salted(*, preview_id: int, salt: str) -> str:
    """Give the preview the salt its data password is derived from, unless it has one: the salt it has."""
    Preview.objects.filter(pk=preview_id, data_salt="").update(data_salt=salt)
    return Preview.objects.values_list("data_salt", flat=True).get(pk=preview_id)


def preview_data_named(*, preview_id: int, mode: str, name: str) -> None:
    """The mode and name the preview's data has, recorded before it is created (a teardown after a crash then
    knows what to drop, even after the repository's mode changed)."""
    Preview.objects.filter(pk=preview_id).update(data_mode=mode, data_name=name)


def preview_data_dropped(*, preview_id: int) -> None:
    """The preview's data on the shared server is gone."""
    Preview.objects.filter(pk=preview_id).update(data_mode="", data_name="", data_size_bytes=None, data_size_at=None)


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
            applied_generation=generation, applied_at=now, rollout=rollout, status_message=message, waiting_since=None,
            updated_at=now)
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
        # It keeps its place in the queue (`waiting_since`: since its deploy was requested).
        updated = Preview.objects.filter(pk=preview_id, generation=generation, desired=Preview.Desired.UP).update(
            status=Preview.Status.PENDING, status_message=message, deploy_queued_at=None,
            waiting_since=Coalesce("waiting_since", "deploy_started_at", Value(now)),
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
    with transaction.atomic():
        preview = (Preview.objects.select_for_update().filter(
            pk=preview_id, generation=generation, applied_generation=generation, desired=Preview.Desired.UP,
            status=Preview.Status.DEPLOYING).first())
        if preview is None:
            return False
        started = preview.deploy_started_at
        took = round((timezone.now() - started).total_seconds(), 3) if started else None
        if ready:
            return preview_set_status(preview_id=preview_id, generation=generation, status=Preview.Status.READY,
                                      message=f"Ready at {preview.url}", action=EventAction.READY,
                                      duration_seconds=took, url=preview.url, **details)
        return preview_set_status(preview_id=preview_id, generation=generation, status=Preview.Status.FAILED,
                                  message=message, action=EventAction.DEPLOY_FAILED, duration_seconds=took, **details)


def preview_namespace_gone(*, namespace: str) -> NamespaceGone:
    """The watcher (or the sweep) saw a managed namespace disappear. Returns what it meant.

    A preview being deleted is now deleted; a preview whose deploy waited for its old namespace to
    finish terminating is queued again at once.
    """
    with transaction.atomic():
        preview = Preview.objects.select_for_update().filter(namespace=namespace).first()
        if preview is None:
            return NamespaceGone.UNKNOWN
        if preview.desired == Preview.Desired.DOWN:
            if preview.status == Preview.Status.DELETED:
                return NamespaceGone.ALREADY_DELETED
            requested = (preview.events.filter(action=EventAction.DESTROY_REQUESTED, generation=preview.generation)
                         .values_list("created_at", flat=True).first())
            took = round((timezone.now() - requested).total_seconds(), 3) if requested else None
            preview_set_status(preview_id=preview.pk, generation=preview.generation, status=Preview.Status.DELETED,
                               message=f"Namespace {namespace} deleted", action=EventAction.DELETED,
                               duration_seconds=took)
            return NamespaceGone.DELETED
        if preview.status == Preview.Status.PENDING and preview.deploy_queued_at is None:
            Preview.objects.filter(pk=preview.pk).update(next_attempt_at=None)
            repository_id = preview.repository_id
            transaction.on_commit(lambda: deploy_slots_fill(repository_id))
            return NamespaceGone.DEPLOY_RESUMED
    return NamespaceGone.IGNORED


def preview_deploys_recover_lost(*, grace: timedelta) -> dict[str, int]:
    """Hand out again the deploys whose task is gone (its worker died, its database session ended); counts.

    A running deploy holds its preview's deploy lock, a Postgres session lock, from before it says "deploying"
    until it ends: when its worker or its session dies, the lock goes with it. So a preview deploying a
    generation not yet applied whose lock is free has lost its run. A queued deploy (it holds a slot, its task
    has not started) is lost when, `grace` after it was queued, its task is neither waiting in the broker nor
    taken from it within `grace` (the task was never written, or the worker that took it died or failed on the
    database). Each lost one gives up its slot and waits again with its old place (`waiting_since`), so it is
    served before anything newer; the slots are filled at once.

    Never two runs of one generation at once: a preview is recovered only while this process holds its deploy
    lock (taken without waiting, so a running deploy is never waited for), and the state is read again under it.
    A duplicate task this leaves in the queue finds its generation applied and does nothing
    (`preview_deploy_started`).
    """
    now = timezone.now()
    before = now - grace
    running = set(Preview.objects.filter(
        desired=Preview.Desired.UP, status=Preview.Status.DEPLOYING, deploy_queued_at=None,
        applied_generation__lt=F("generation")).values_list("pk", flat=True)[:RECOVER_BATCH])
    queued = dict(Preview.objects.filter(desired=Preview.Desired.UP, status=Preview.Status.PENDING,
                                         deploy_queued_at__lt=before).values_list("pk", "generation")[:RECOVER_BATCH])
    if queued:
        alive = deploy_tasks_alive(since=before)
        if alive is None:  # a broker that cannot be looked into: lost once django-q2 would have handed it out
            cutoff = before - timedelta(seconds=settings.Q_RETRY)
            stale = set(Preview.objects.filter(pk__in=list(queued), deploy_queued_at__lt=cutoff)
                        .values_list("pk", flat=True))
            queued = {pk: gen for pk, gen in queued.items() if pk in stale}
        else:
            queued = {pk: gen for pk, gen in queued.items() if (pk, gen) not in alive}
    done = {"running": 0, "queued": 0}
    if not running and not queued:
        return done
    held = locks.try_advisory_locks(locks.DEPLOY, sorted(running | set(queued)))
    repositories: set[int] = set()
    try:
        with transaction.atomic():
            lost = Preview.objects.select_for_update(skip_locked=True).filter(pk__in=held, desired=Preview.Desired.UP)
            lost = lost.filter(Q(pk__in=running & held, status=Preview.Status.DEPLOYING, deploy_queued_at=None,
                                 applied_generation__lt=F("generation"))
                               | Q(pk__in=set(queued) & held, status=Preview.Status.PENDING,
                                   deploy_queued_at__lt=before))
            for preview in lost:
                kind = "running" if preview.status == Preview.Status.DEPLOYING else "queued"
                if kind == "queued" and queued.get(preview.pk) != preview.generation:
                    continue  # a newer generation since: its own task is on its way
                message = (LOST_RUNNING_MESSAGE if kind == "running" else LOST_QUEUED_MESSAGE)
                Preview.objects.filter(pk=preview.pk).update(
                    status=Preview.Status.PENDING, status_message=message, deploy_queued_at=None,
                    next_attempt_at=None, updated_at=now,
                    waiting_since=Coalesce("waiting_since", "deploy_started_at", Value(now)))
                record_event(preview, Actor.system(), EventAction.DEPLOY_REQUEUED, message, lost=kind)
                done[kind] += 1
                repositories.add(preview.repository_id)
            for repository_id in sorted(repositories):
                deploy_slots_fill(repository_id)
    finally:
        locks.advisory_unlock_many(locks.DEPLOY, held)
    return done


RECOVER_BATCH = 500  # previews looked at per pass (each lock taken is a slot of the server's lock table)
LOST_RUNNING_MESSAGE = "The deploy's run was lost (its worker or database session ended); it is queued again"
LOST_QUEUED_MESSAGE = "The deploy's task was lost before it started; it is queued again"


def preview_teardown_retry(*, preview_id: int) -> bool:
    """Queue the teardown again for a preview whose namespace is still there and not terminating."""
    with transaction.atomic():
        preview = Preview.objects.select_for_update().filter(
            pk=preview_id, desired=Preview.Desired.DOWN, status=Preview.Status.DELETING).first()
        if preview is None:
            return False
        enqueue(TEARDOWN_TASK, preview)
    return True


def previews_teardown_issued(*, issued: list[TeardownIssued], actor: Actor) -> dict[str, int]:
    """Record namespace deletes issued for previews being torn down; counts by outcome. Each only for the
    generation that issued it; `actor` (the worker, or the reaper) is who issued them.

    Terminating: a "namespace terminating" event each (in one statement); the watcher marks them deleted.
    Gone or not ours: deleted now. Failed: "delete failed" with the reason, and the sweep tries again. Busy:
    the teardown task is queued, which waits for the preview's lock.
    """
    counts: dict[str, int] = {}
    terminating = [i for i in issued if i.outcome == TeardownOutcome.TERMINATING]
    if terminating:
        current = set(Preview.objects.filter(pk__in=[i.preview_id for i in terminating], desired=Preview.Desired.DOWN)
                      .values_list("pk", "generation"))
        PreviewEvent.objects.bulk_create([
            event_row(Preview(pk=i.preview_id), actor, EventAction.NAMESPACE_TERMINATING,
                      f"Namespace {i.namespace} is terminating", generation=i.generation)
            for i in terminating if (i.preview_id, i.generation) in current])
    for item in issued:
        counts[item.outcome] = counts.get(item.outcome, 0) + 1
        timing = {} if item.duration_seconds is None else {"duration_seconds": item.duration_seconds}
        if item.outcome == TeardownOutcome.GONE:
            preview_set_status(preview_id=item.preview_id, generation=item.generation, status=Preview.Status.DELETED,
                               message=f"Namespace {item.namespace} deleted", action=EventAction.DELETED, **timing)
        elif item.outcome == TeardownOutcome.NOT_OURS:
            preview_set_status(preview_id=item.preview_id, generation=item.generation, status=Preview.Status.DELETED,
                               message=f"Nothing deleted: {item.message}", action=EventAction.DELETED)
        elif item.outcome == TeardownOutcome.FAILED:
            message = f"Deleting failed, the sweep tries again: {item.message}"[:FAILED_DELETE_MESSAGE]
            preview_set_status(preview_id=item.preview_id, generation=item.generation,
                               status=Preview.Status.DELETING, message=message, action=EventAction.DELETE_FAILED)
        elif item.outcome == TeardownOutcome.BUSY:
            preview_teardown_retry(preview_id=item.preview_id)
    return counts
