"""The reaper's changes: previews brought down in bulk, their deletes recorded, expiry warnings, stuck namespaces."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from previews.models import EventAction, Preview, PreviewEvent
from previews.reaper import Decision
from previews.services.actions import DESTROY_FIELDS, bring_down
from previews.services.github_sync import github_sync_enqueue, github_sync_enqueue_many
from previews.services.progress import preview_set_status
from previews.services.queue import TEARDOWN_TASK, deploy_slots_fill, enqueue
from previews.services.timeline import REAPER, event_row, record_event

REAP_CHUNK = 200  # previews reaped per transaction (their row locks are held until it commits)


@dataclass(frozen=True)
class Reaped:
    """A preview the reaper's bulk destroy brought down."""

    preview_id: int
    generation: int  # the new one, of the destroy
    namespace: str
    direct: bool  # the caller issues its namespace delete itself; False: a teardown task was queued


def previews_reap(*, decisions: list[Decision]) -> tuple[list[Reaped], list[int]]:
    """Bring down the previews the reaper planned to delete: ([reaped], [skipped preview ids]).

    Each preview is checked under its row lock against the plan (same generation and expiry, not pinned since)
    and destroyed in the same transaction (`actions.bring_down`), with its "destroy requested" event, so an
    extend, redeploy or pin either lands before it (and the preview is skipped) or after it (and is refused as
    "being deleted"): never lost in between. Its PR is told in batched sync tasks. Previews are handled
    REAP_CHUNK at a time, one transaction each, rows locked in id order. A preview with data on the shared
    server, or already being deleted, gets the teardown task (which drops its data first, or tries again);
    every other one is returned `direct`: the caller issues the namespace delete (`provisioning.teardown_many`)
    instead of a task per preview.
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


def _reap_chunk(chunk: list[Decision]) -> tuple[list[Reaped], list[int]]:
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
            events.append(event_row(preview, REAPER, EventAction.REAPED, f"{decision.reason}: deleting again",
                                    reason=decision.reason))
            enqueue(TEARDOWN_TASK, preview)
            reaped.append(Reaped(preview.pk, preview.generation, preview.namespace, direct=False))
            continue
        if preview.pinned:
            skipped.append(preview.pk)  # pinned since the plan (a pin changes neither generation nor expiry)
            continue
        reason = f"Reaper: {decision.reason}" + (f" ({decision.detail})" if decision.detail else "")
        if bring_down(preview, reason):
            slots.add(preview.repository_id)
        preview.updated_at = now
        changed.append(preview)
        events.append(event_row(preview, REAPER, EventAction.DESTROY_REQUESTED, reason))
        direct = not preview.data_name
        if not direct:
            enqueue(TEARDOWN_TASK, preview)
        reaped.append(Reaped(preview.pk, preview.generation, preview.namespace, direct=direct))
    Preview.objects.bulk_update(changed, DESTROY_FIELDS)
    PreviewEvent.objects.bulk_create(events)
    github_sync_enqueue_many([p.pk for p in changed])
    for repository_id in sorted(slots):
        transaction.on_commit(lambda repository_id=repository_id: deploy_slots_fill(repository_id))
    return reaped, skipped


def preview_mark_gone(*, preview_id: int, generation: int | None, reason: str) -> bool:
    """The namespace is gone from the cluster: record the preview as deleted."""
    with transaction.atomic():
        preview = Preview.objects.select_for_update().filter(pk=preview_id).first()
        if preview is None or preview.generation != generation or preview.status == Preview.Status.DELETED:
            return False
        return preview_set_status(preview_id=preview_id, generation=preview.generation, status=Preview.Status.DELETED,
                                  message=reason, action=EventAction.MARKED_DELETED, actor=REAPER)


def preview_warn_expiry(*, preview_id: int, expires_at: datetime) -> bool:
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
