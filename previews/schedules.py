"""The django-q2 schedules the service needs, created or updated idempotently by name."""

from __future__ import annotations

from django.conf import settings
from django_q.models import Schedule

REAPER_SCHEDULE = "reaper"


def ensure_schedules() -> list[str]:
    """Create or update every schedule; returns a line per schedule for the log."""
    schedule, created = Schedule.objects.update_or_create(
        name=REAPER_SCHEDULE,
        defaults={"func": "previews.tasks.reap", "schedule_type": Schedule.MINUTES,
                  "minutes": settings.PREVIEWS_REAPER_INTERVAL_MINUTES, "repeats": -1},
    )
    verb = "created" if created else "updated"
    return [f"{verb} schedule {schedule.name!r}: previews.tasks.reap every {schedule.minutes} min"]
