"""The reaper's changes: previews brought down in bulk, their deletes recorded, expiry warnings, stuck namespaces."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from previews.models import EventAction, Preview, PreviewEvent
from previews.services.actions import destroy_locked
from previews.services.progress import preview_set_status, preview_teardown_retry
from previews.services.queue import (
    TEARDOWN_TASK,
    deploy_slots_fill,
    enqueue,
    github_sync_enqueue,
    github_sync_enqueue_many,
)
from previews.services.timeline import REAPER, event_row, record_event


def preview_reap(*, preview_id: int, generation: int | None, expires_at, reason: str, detail: str = "") -> bool:
    """Destroy a preview the reaper planned to delete, unless it changed since the plan (extended, redeployed).

    The check and the destroy are one transaction under the row lock, so an extend (or a redeploy, a pin)
    either lands before it, and the reaper skips the preview, or after it, and is refused as "being deleted":
    never lost in between. Returns True when the destroy was requested.
    """
    with transaction.atomic():
        preview = Preview.objects.select_for_update().filter(pk=preview_id).first()
        if preview is None or preview.generation != generation or preview.expires_at != expires_at:
            return False
        if preview.desired == Preview.Desired.DOWN:
            # Already asked for; a teardown that failed earlier is simply tried again.
            record_event(preview, REAPER, EventAction.REAPED, f"{reason}: deleting again", reason=reason)
            enqueue(TEARDOWN_TASK, preview)
            return True
        if preview.pinned:
            return False  # pinned since the plan (a pin changes neither generation nor expiry)
        destroy_locked(preview, REAPER, f"Reaper: {reason}" + (f" ({detail})" if detail else ""))
    return True


REAP_CHUNK = 200  # previews reaped per transaction (their row locks are held until it commits)


@dataclass(frozen=True)
class Reaped:
    """A preview the reaper's bulk destroy brought down."""

    preview_id: int
    generation: int  # the new one, of the destroy
    namespace: str
    direct: bool  # the caller issues its namespace delete itself; False: a teardown task was queued


def previews_reap(*, decisions) -> tuple[list[Reaped], list[int]]:
    """`preview_reap` for many previews at once (the reaper's deletions): ([reaped], [skipped preview ids]).

    Each preview is checked under its row lock against the plan (same generation and expiry, not pinned since)
    and destroyed in the same transaction, as `preview_reap` does, with its "destroy requested" event; its PR is
    told in batched sync tasks. Previews are handled REAP_CHUNK at a time, one transaction each, rows locked
    in id order. A preview with data on the shared server, or already being deleted, gets the teardown task
    (which drops its data first, or tries again); every other one is returned `direct`: the caller issues
    the namespace delete (`provisioning.teardown_many`) instead of a task per preview.
    """
    wanted = [d for d in decisions if d.preview_id is not None]
    reaped: list[Reaped] = []
    skipped: list[int] = []
    for start in range(0, len(wanted), REAP_CHUNK):
        chunk = wanted[start:start + REAP_CHUNK]
        with transaction.atomic():
            done, passed = _reap_chunk(chunk)
        reaped += done
        skipped += passed
    return reaped, skipped


def _reap_chunk(chunk) -> tuple[list[Reaped], list[int]]:
    now = timezone.now()
    rows = {p.pk: p for p in Preview.objects.select_for_update().filter(pk__in=[d.preview_id for d in chunk])
            .order_by("pk")}
    changed: list[Preview] = []
    events: list[PreviewEvent] = []
    reaped: list[Reaped] = []
    skipped: list[int] = []
    slots: set[int] = set()
    for decision in chunk:
        preview = rows.get(decision.preview_id)
        if preview is None or preview.generation != decision.generation or preview.expires_at != decision.expires_at:
            skipped.append(decision.preview_id)
            continue
        if preview.desired == Preview.Desired.DOWN:
            # Already asked for; a teardown that failed earlier is simply tried again, by its task.
            events.append(event_row(preview, REAPER, "reaped", f"{decision.reason}: deleting again",
                                     reason=decision.reason))
            enqueue(TEARDOWN_TASK, preview)
            reaped.append(Reaped(preview.pk, preview.generation, preview.namespace, direct=False))
            continue
        if preview.pinned:
            skipped.append(preview.pk)  # pinned since the plan (a pin changes neither generation nor expiry)
            continue
        if preview.deploy_queued_at is not None:
            slots.add(preview.repository_id)  # its queued deploy is now stale: the slot goes to the next one
        reason = f"Reaper: {decision.reason}" + (f" ({decision.detail})" if decision.detail else "")
        preview.desired, preview.status, preview.status_message = Preview.Desired.DOWN, Preview.Status.DELETING, reason
        preview.generation += 1
        preview.deploy_queued_at = preview.next_attempt_at = None
        preview.updated_at = now
        changed.append(preview)
        events.append(event_row(preview, REAPER, "destroy requested", reason))
        direct = not preview.data_name
        if not direct:
            enqueue(TEARDOWN_TASK, preview)
        reaped.append(Reaped(preview.pk, preview.generation, preview.namespace, direct=direct))
    Preview.objects.bulk_update(changed, ["desired", "status", "status_message", "generation", "deploy_queued_at",
                                          "next_attempt_at", "updated_at"])
    PreviewEvent.objects.bulk_create(events)
    github_sync_enqueue_many([p.pk for p in changed])
    for repository_id in sorted(slots):
        transaction.on_commit(lambda repository_id=repository_id: deploy_slots_fill(repository_id))
    return reaped, skipped




@dataclass(frozen=True)
class TeardownIssued:
    """What became of one namespace delete that `provisioning.teardown_many` issued for a reaped preview."""

    preview_id: int
    generation: int
    namespace: str
    outcome: str  # "terminating", "gone", "failed", "not ours" or "busy" (a deploy or teardown holds it)
    message: str = ""


def previews_teardown_issued(*, issued: list[TeardownIssued]) -> dict[str, int]:
    """Record the deletes issued for reaped previews, as the teardown task records its one; counts by outcome.

    Terminating: a "namespace terminating" event each (in one statement); the watcher marks them deleted.
    Gone or not ours: deleted now. Failed: "delete failed" with the reason, and the sweep tries again. Busy
    (another task of that preview held its lock): its teardown task is queued, which waits for the lock.
    Each only for the generation that issued it.
    """
    counts: dict[str, int] = {}
    terminating = [i for i in issued if i.outcome == "terminating"]
    if terminating:
        current = set(Preview.objects.filter(pk__in=[i.preview_id for i in terminating], desired=Preview.Desired.DOWN)
                      .values_list("pk", "generation"))
        PreviewEvent.objects.bulk_create([
            PreviewEvent(preview_id=i.preview_id, actor_kind=REAPER.kind, actor=REAPER.name, generation=i.generation,
                         action="namespace terminating", message=f"Namespace {i.namespace} is terminating")
            for i in terminating if (i.preview_id, i.generation) in current])
    for item in issued:
        counts[item.outcome] = counts.get(item.outcome, 0) + 1
        if item.outcome == "gone":
            preview_set_status(preview_id=item.preview_id, generation=item.generation, status=Preview.Status.DELETED,
                               message=f"Namespace {item.namespace} deleted", action="deleted")
        elif item.outcome == "not ours":
            preview_set_status(preview_id=item.preview_id, generation=item.generation, status=Preview.Status.DELETED,
                               message=f"Nothing deleted: {item.message}", action="deleted")
        elif item.outcome == "failed":
            preview_set_status(preview_id=item.preview_id, generation=item.generation,
                               status=Preview.Status.DELETING, message=f"Deleting failed, the sweep tries again: "
                               f"{item.message}"[:2000], action="delete failed")
        elif item.outcome == "busy":
            preview_teardown_retry(preview_id=item.preview_id)
    return counts


def preview_mark_gone(*, preview_id: int, generation: int | None, reason: str) -> bool:
    """The namespace is gone from the cluster: record the preview as deleted."""
    with transaction.atomic():
        preview = Preview.objects.select_for_update().filter(pk=preview_id).first()
        if preview is None or preview.generation != generation or preview.status == Preview.Status.DELETED:
            return False
        now = timezone.now()
        Preview.objects.filter(pk=preview_id).update(status=Preview.Status.DELETED, status_message=reason,
                                                     deleted_at=now, updated_at=now,
                                                     observed_generation=preview.generation)
        record_event(preview, REAPER, EventAction.MARKED_DELETED, reason)
        github_sync_enqueue(preview_id)
    return True


def preview_warn_expiry(*, preview_id: int, expires_at) -> bool:
    """Announce, once per expiry time, on the PR that the preview will expire soon."""
    updated = Preview.objects.filter(pk=preview_id, expires_at=expires_at).exclude(
        expiry_warned_for=expires_at).update(expiry_warned_for=expires_at)
    if updated:
        preview = Preview.objects.get(pk=preview_id)
        record_event(preview, REAPER, EventAction.EXPIRY_WARNING, f"Expires at {expires_at:%Y-%m-%d %H:%M} UTC")
        github_sync_enqueue(preview_id, expiry_warning=True)
    return bool(updated)


def preview_note_stuck(*, preview_id: int, detail: str) -> None:
    preview = Preview.objects.filter(pk=preview_id).first()
    if preview is not None:
        record_event(preview, REAPER, EventAction.NAMESPACE_STUCK, detail)
