"""Read queries. Views and tasks read through these, never through ad-hoc ORM calls."""

from __future__ import annotations

from django.db.models import QuerySet

from previews.models import Preview


def preview_list_live() -> QuerySet[Preview]:
    return (
        Preview.objects.filter(status__in=Preview.LIVE_STATUSES)
        .select_related("repository")
        .order_by("-updated_at")
    )
