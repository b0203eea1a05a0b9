"""Read queries. Views and tasks read through these, never through ad-hoc ORM calls."""

from __future__ import annotations

import time

from django.db.models import QuerySet

from previews.models import GITHUB_SYNC_FAILED, Preview, Repository


def preview_list_live() -> QuerySet[Preview]:
    return (
        Preview.objects.filter(status__in=Preview.LIVE_STATUSES)
        .select_related("repository")
        .order_by("-updated_at")
    )


def repository_get(owner: str, name: str) -> Repository | None:
    """GitHub names are case-insensitive."""
    return Repository.objects.filter(owner__iexact=owner, name__iexact=name).first()


def preview_get(repository: Repository, pr_number: int) -> Preview | None:
    return Preview.objects.select_related("repository").filter(repository=repository, pr_number=pr_number).first()


def preview_is_settled(preview: Preview) -> bool:
    """The last requested change has finished: ready, failed or deleted for the current generation."""
    return preview.observed_generation == preview.generation and preview.status in (
        Preview.Status.READY, Preview.Status.FAILED, Preview.Status.DELETED)


def preview_wait(preview: Preview, seconds: float, interval: float = 0.5) -> Preview:
    """Re-read the preview until it settles or `seconds` pass; returns the latest state."""
    deadline = time.monotonic() + seconds
    while not preview_is_settled(preview) and time.monotonic() < deadline:
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        preview = Preview.objects.select_related("repository").get(pk=preview.pk)
    return preview


def preview_list(*, repository: Repository | None = None, status: str | None = None) -> QuerySet[Preview]:
    qs = Preview.objects.select_related("repository").order_by("-updated_at", "-id")
    if repository is not None:
        qs = qs.filter(repository=repository)
    if status:
        qs = qs.filter(status=status)
    return qs


def reaper_preview_records() -> list:
    """Every preview the database considers live, as plain records for the reaper's plan."""
    from previews.reaper import PreviewRecord

    rows = Preview.objects.filter(status__in=Preview.LIVE_STATUSES).select_related("repository")
    return [PreviewRecord(id=p.pk, repository_id=p.repository_id, repository=p.repository.full_name,
                          pr_number=p.pr_number, namespace=p.namespace, desired=p.desired, status=p.status,
                          expires_at=p.expires_at, pinned=p.pinned, generation=p.generation,
                          expiry_warned_for=p.expiry_warned_for) for p in rows]


def previews_out_of_sync_with_github(limit: int = 100) -> list[int]:
    """Previews whose last GitHub sync failed and has not succeeded since."""
    return list(Preview.objects.filter(github_synced_key=GITHUB_SYNC_FAILED).values_list("pk", flat=True)[:limit])
