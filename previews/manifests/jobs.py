"""Jobs and CronJobs: bounded churn. A CronJob runs at most every MIN_CRON_INTERVAL_MINUTES, Jobs have bounded
completions, parallelism, retries, deadlines and TTLs, and CronJobs keep a short history (the namespace's quota
counts Jobs and CronJobs too: guardrails.py)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

from previews.manifests.allowlists import (
    CRON_CONCURRENCY_POLICIES,
    CRON_MACROS,
    CRONJOB_BOUNDS,
    JOB_BOUNDS,
    MIN_CRON_INTERVAL_MINUTES,
)
from previews.manifests.context import RenderContext
from previews.manifests.objects import as_dict
from previews.manifests.problems import Problem, quoted


def _bounded(i: int, path: str, spec: dict, bounds: dict[str, tuple[int, int]]) -> Iterator[Problem]:
    for name, (least, most) in bounds.items():
        value = spec.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
            yield Problem(i, f"{path}.{name}", f"{quoted(value)} is out of bounds: {name} must be from {least} to "
                                               f"{most} in a preview")


_NUMBER = re.compile(r"[0-9]{1,2}")


def _number(text: str) -> bool:
    return _NUMBER.fullmatch(text) is not None


def _cron_values(field: str, low: int, high: int) -> set[int] | None:
    """The values one cron field stands for (*, n, a-b, */k, a-b/k, lists), or None when it is not one."""
    values: set[int] = set()
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        if step_text and not (_number(step_text) and 0 < int(step_text) <= high):
            return None
        step = int(step_text) if step_text else 1
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            if not (_number(first) and _number(last)):
                return None
            start, end = int(first), int(last)
        elif _number(base):
            start = int(base)
            end = high if step_text else start
        else:
            return None
        if not low <= start <= end <= high:
            return None
        values.update(range(start, end + 1, step))
    return values


def cron_interval_minutes(schedule: str) -> int | None:
    """The shortest time between two runs of a five-field schedule, in minutes (days and months only make runs
    rarer, so they are not looked at: the answer errs short); None when it is not a schedule we read."""
    fields = schedule.split()
    if len(fields) != 5 or len(schedule) > 100:
        return None
    minutes, hours = _cron_values(fields[0], 0, 59), _cron_values(fields[1], 0, 23)
    if not minutes or not hours:
        return None
    for field, low, high in ((fields[2], 1, 31), (fields[3], 1, 12), (fields[4], 0, 7)):
        if field != "?" and _cron_values(field, low, high) is None:
            return None
    times = sorted(h * 60 + m for h in hours for m in minutes)
    gaps = [b - a for a, b in itertools.pairwise(times)] + [times[0] + 1440 - times[-1]]
    return min(gaps)


def validate_job_spec(i: int, path: str, spec: dict) -> Iterator[Problem]:
    yield from _bounded(i, path, spec, JOB_BOUNDS)


def validate_job(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    yield from validate_job_spec(i, "spec", spec)


def validate_cronjob(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    schedule = spec.get("schedule")
    if not isinstance(schedule, str):
        yield Problem(i, "spec.schedule", "a CronJob needs a schedule (five cron fields, or @hourly, @daily...)")
    elif schedule.strip() not in CRON_MACROS:
        interval = cron_interval_minutes(schedule)
        if interval is None:
            yield Problem(i, "spec.schedule", f"{quoted(schedule)} is not a schedule of five cron fields (numbers, "
                                              "*, ranges, steps and lists; time zones go in spec.timeZone)")
        elif interval < MIN_CRON_INTERVAL_MINUTES:
            yield Problem(i, "spec.schedule", f"{quoted(schedule)} runs every {interval} minutes at times; a "
                                              f"preview's CronJob may run at most every "
                                              f"{MIN_CRON_INTERVAL_MINUTES} minutes")
    yield from _bounded(i, "spec", spec, CRONJOB_BOUNDS)
    policy = spec.get("concurrencyPolicy")
    if policy is not None and policy not in CRON_CONCURRENCY_POLICIES:
        yield Problem(i, "spec.concurrencyPolicy", f"{quoted(policy)} is not allowed: runs could pile up; use "
                                                   f"{' or '.join(CRON_CONCURRENCY_POLICIES)} (left out: Forbid)")
    yield from validate_job_spec(i, "spec.jobTemplate.spec", as_dict(as_dict(spec.get("jobTemplate")).get("spec")))
