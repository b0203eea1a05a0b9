"""What people, CI and PR commands do to a preview: redeploy, destroy, reset its data, extend, pin, sleep, wake."""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from previews import validators
from previews.models import EventAction, Preview, Repository
from previews.services.errors import PreviewConflict
from previews.services.github_sync import github_sync_enqueue
from previews.services.queue import SLEEP_TASK, TEARDOWN_TASK, deploy_slots_fill, enqueue, request_deploy
from previews.services.timeline import Actor, record_event


def preview_redeploy(*, preview: Preview, actor: Actor) -> Preview:
    """Deploy the same commit again (after a failure, or to reset the environment)."""
    with transaction.atomic():
        preview = Preview.objects.select_for_update().get(pk=preview.pk)
        if preview.desired == Preview.Desired.DOWN:
            raise PreviewConflict(f"{preview} is being deleted; it cannot be redeployed")
        preview.generation += 1
        preview.status, preview.status_message = Preview.Status.PENDING, ""
        preview.last_activity_at, preview.slept_at = timezone.now(), None
        preview.save()
        record_event(preview, actor, EventAction.REDEPLOY_REQUESTED, f"Redeploy of {preview.head_sha[:7]} requested")
        request_deploy(preview)
        github_sync_enqueue(preview.pk)
    return preview


def preview_destroy(*, preview: Preview, actor: Actor, reason: str = "") -> Preview:
    """Ask for the preview's namespace to go. Idempotent: a second call changes nothing."""
    with transaction.atomic():
        preview = Preview.objects.select_for_update().get(pk=preview.pk)
        if preview.desired != Preview.Desired.DOWN:
            destroy_locked(preview, actor, reason)
    return preview


# What the destroy transition changes, for a save or a bulk update.
DESTROY_FIELDS = ("desired", "status", "status_message", "generation", "deploy_queued_at", "next_attempt_at",
                  "waiting_since", "updated_at")


def bring_down(preview: Preview, reason: str) -> bool:
    """The destroy transition, in memory: desired down, deleting, a new generation, no queue slot or retry time.

    The one owner of it: `destroy_locked` saves it for one preview, the reaper's bulk path for many. True when
    the preview held a deploy slot: its queued deploy is now stale, and the slot goes to the next one waiting.
    """
    held_slot = preview.deploy_queued_at is not None
    preview.desired = Preview.Desired.DOWN
    preview.status, preview.status_message = Preview.Status.DELETING, reason
    preview.generation += 1
    preview.deploy_queued_at = preview.next_attempt_at = preview.waiting_since = None
    return held_slot


def destroy_locked(preview: Preview, actor: Actor, reason: str) -> None:
    """Record desired state down and enqueue the teardown; the caller holds the row lock in its transaction."""
    held_slot = bring_down(preview, reason)
    preview.save(update_fields=DESTROY_FIELDS)
    record_event(preview, actor, EventAction.DESTROY_REQUESTED, reason or "Preview deletion requested")
    enqueue(TEARDOWN_TASK, preview)
    github_sync_enqueue(preview.pk)
    if held_slot:
        repository_id = preview.repository_id
        transaction.on_commit(lambda: deploy_slots_fill(repository_id))


def preview_reset_data(*, preview: Preview, actor: Actor) -> Preview:
    """Reset the preview's data and deploy again: the database is copied again from its template, the schema
    recreated, the in-namespace seed run again; the migrate Job runs in every mode, and the preview is
    ready once it completed."""
    with transaction.atomic():
        preview = Preview.objects.select_for_update().select_related("repository").get(pk=preview.pk)
        if preview.desired == Preview.Desired.DOWN:
            raise PreviewConflict(f"{preview} is being deleted; its data cannot be reset")
        if preview.repository.data_mode == Repository.DataMode.NONE:
            raise PreviewConflict(f"{preview.repository} gives its previews no data to reset (data mode none)")
        preview.generation += 1
        preview.data_reset_generation = preview.generation
        preview.status, preview.status_message = Preview.Status.PENDING, ""
        # A reset is a deploy: it wakes a sleeping preview and restarts the idle clock.
        preview.last_activity_at, preview.slept_at = timezone.now(), None
        preview.save()
        record_event(preview, actor, EventAction.DATA_RESET_REQUESTED,
                     f"Reset of the {preview.repository.data_mode} data requested")
        request_deploy(preview)
        github_sync_enqueue(preview.pk)
    return preview


def preview_extend(*, preview: Preview, hours: int, reason: str, actor: Actor) -> Preview:
    """Push expiry out by `hours` (from now or the current expiry, whichever is later), capped by the repository."""
    errors: dict[str, list[str]] = {}
    if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= validators.MAX_TTL_HOURS:
        errors["hours"] = [f"hours must be a whole number from 1 to {validators.MAX_TTL_HOURS}"]
    if not reason or not reason.strip():
        errors["reason"] = ["say why the preview is needed for longer"]
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        preview = Preview.objects.select_for_update().select_related("repository").get(pk=preview.pk)
        if preview.desired == Preview.Desired.DOWN:
            raise PreviewConflict(f"{preview} is being deleted; it cannot be extended")
        now = timezone.now()
        cap = now + timedelta(hours=preview.repository.max_ttl_hours)
        wanted = max(preview.expires_at, now) + timedelta(hours=hours)
        if wanted > cap:
            raise ValidationError({"hours": [
                f"that would run past the maximum of {preview.repository.max_ttl_hours} hours from now "
                f"({cap:%Y-%m-%d %H:%M} UTC)"]})
        previous = preview.expires_at
        preview.expires_at, preview.last_activity_at = wanted, now
        preview.save(update_fields=["expires_at", "last_activity_at", "updated_at"])
        record_event(preview, actor, EventAction.EXTENDED, reason.strip(), hours=hours,
                     previous_expires_at=previous.isoformat(), expires_at=wanted.isoformat())
        github_sync_enqueue(preview.pk)
    return preview


def preview_pin(*, preview: Preview, pinned: bool, actor: Actor) -> Preview:
    with transaction.atomic():
        preview = Preview.objects.select_for_update().get(pk=preview.pk)
        if preview.pinned != pinned:
            preview.pinned = pinned
            preview.save(update_fields=["pinned", "updated_at"])
            record_event(preview, actor, EventAction.PINNED if pinned else EventAction.UNPINNED)
            github_sync_enqueue(preview.pk)
    return preview


# --- sleep and wake (previews/sleep.py scales the namespace; a wake is a deploy) ---------------


def preview_sleep(*, preview: Preview, actor: Actor, reason: str = "") -> Preview:
    """Scale the preview's workloads to zero (in a task). Idempotent for a sleeping preview.

    Only a ready or failed preview sleeps: one that is deploying has work in flight, and a new
    generation (a push, a close, a wake) makes a queued sleep task stale.
    """
    with transaction.atomic():
        preview = Preview.objects.select_for_update().get(pk=preview.pk)
        if preview.desired == Preview.Desired.DOWN:
            raise PreviewConflict(f"{preview} is being deleted; it cannot sleep")
        if preview.status == Preview.Status.SLEEPING:
            return preview
        if preview.status not in (Preview.Status.READY, Preview.Status.FAILED):
            raise PreviewConflict(f"{preview} is {preview.status}; only a ready or failed preview can sleep")
        preview.generation += 1
        preview.status, preview.status_message = Preview.Status.SLEEPING, "Going to sleep: scaling to zero"
        preview.slept_at = None
        preview.save()
        record_event(preview, actor, EventAction.SLEEP_REQUESTED, reason or "Sleep requested")
        enqueue(SLEEP_TASK, preview)
        github_sync_enqueue(preview.pk)
    return preview


def preview_wake(*, preview: Preview, actor: Actor) -> Preview:
    """Bring a sleeping preview back: a deploy of the same commit, which restores the remembered replicas
    and becomes ready through the watcher like any deploy. For a preview that is awake it only restarts
    the idle clock."""
    with transaction.atomic():
        preview = Preview.objects.select_for_update().get(pk=preview.pk)
        if preview.desired == Preview.Desired.DOWN:
            raise PreviewConflict(f"{preview} is being deleted; it cannot be woken")
        now = timezone.now()
        if preview.status != Preview.Status.SLEEPING:
            Preview.objects.filter(pk=preview.pk).update(last_activity_at=now)
            preview.last_activity_at = now
            return preview
        preview.generation += 1
        preview.status, preview.status_message = Preview.Status.PENDING, "Waking up"
        preview.last_activity_at, preview.slept_at = now, None
        preview.save()
        record_event(preview, actor, EventAction.WAKE_REQUESTED, "Wake requested: restoring the workloads' replicas")
        request_deploy(preview)
        github_sync_enqueue(preview.pk)
    return preview


def preview_record_command(*, preview_id: int, actor: Actor, command: str, result: str, ok: bool,
                           comment_id: int, reason: str = "") -> None:
    """A /preview command and its result: an event by the GitHub user, and the line the PR comment shows."""
    now = timezone.now()
    last = {"command": command, "user": actor.name, "result": result[:300], "ok": ok, "at": now.isoformat()}
    with transaction.atomic():
        if not Preview.objects.filter(pk=preview_id).update(last_command=last, last_activity_at=now):
            return
        preview = Preview.objects.get(pk=preview_id)
        record_event(preview, actor, EventAction.COMMAND, f"{command}: {result}", comment_id=comment_id, ok=ok,
                     **({"reason": reason} if reason else {}))
        github_sync_enqueue(preview_id)
