from __future__ import annotations

from datetime import datetime

from django import template
from django.conf import settings
from django.utils import timezone

register = template.Library()

STATUS_CLASSES = {"pending": "queued", "deploying": "busy", "ready": "ok", "failed": "bad", "deleting": "gone",
                  "deleted": "gone", "sleeping": "gone"}


@register.inclusion_tag("dashboard/_status.html")
def status_badge(status: str) -> dict:
    return {"status": status, "css": STATUS_CLASSES.get(status, "queued")}


@register.simple_tag
def github_pr_url(preview) -> str:
    repo = preview.repository
    return f"{settings.GITHUB_WEB_URL}/{repo.owner}/{repo.name}/pull/{preview.pr_number}"


@register.simple_tag
def github_user_url(login: str) -> str:
    return f"{settings.GITHUB_WEB_URL}/{login}"


@register.filter
def expires_in(value: datetime, now: datetime | None = None) -> str:
    now = now or timezone.now()
    seconds = int((value - now).total_seconds())
    if seconds <= 0:
        return "expired"
    hours, rest = divmod(seconds, 3600)
    if hours >= 48:
        return f"in {hours // 24} days"
    if hours:
        return f"in {hours} h {rest // 60} min"
    return f"in {max(1, rest // 60)} min"


@register.simple_tag
def query_with(query, **changes) -> str:
    """The current query string with some parameters replaced (for sorting and paging links)."""
    q = query.copy()
    for key, value in changes.items():
        if value in (None, ""):
            q.pop(key, None)
        else:
            q[key] = value
    return q.urlencode()
