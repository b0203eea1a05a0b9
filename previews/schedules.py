"""The django-q2 schedules the service needs, created or updated idempotently by name."""

from __future__ import annotations

from django.conf import settings
from django_q.models import Schedule

REAPER_SCHEDULE = "reaper"
SWEEP_SCHEDULE = "sweep"
SLEEP_SCHEDULE = "sleep"


def ensure_schedules() -> list[str]:
    """Create or update every schedule; returns a line per schedule for the log."""
    lines = []
    for name, func, minutes in ((REAPER_SCHEDULE, "previews.tasks.reap", settings.PREVIEWS_REAPER_INTERVAL_MINUTES),
                                (SWEEP_SCHEDULE, "previews.tasks.sweep", 1),
                                (SLEEP_SCHEDULE, "previews.tasks.sleep_idle", settings.PREVIEWS_SLEEP_CHECK_MINUTES)):
        schedule, created = Schedule.objects.update_or_create(
            name=name, defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1})
        verb = "created" if created else "updated"
        lines.append(f"{verb} schedule {schedule.name!r}: {func} every {schedule.minutes} min")
    return lines
