"""The data reaper: preview data on the shared server that no live preview owns goes (plan is pure).

Every role, schema and database the service creates carries a marker naming its repository and
PR. A cycle lists the marked objects in one query (`preview_db.list_marked`), reads the previews
they name in one query, and decides per preview name (its role plus its schema or database):

- drop it when no preview owns it, or its preview is deleted, and the grace period has passed;
- keep it when its preview is live (the deploy owns it) or being torn down (the teardown drops it),
  within the grace period, when a marker is malformed or markers disagree (unknown state: never
  dropped), or past the cap on drops per cycle.

Same rules as the namespace reaper: never on unknown state (if either listing fails, nothing is
decided), a cap per cycle, a dry run, and every decision recorded in a `ReaperRun` row (scope
"preview data"); drops of a known preview are also events on its timeline.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from previews import data as preview_data
from previews import locks, services
from previews.gateways import preview_db
from previews.models import EventAction, Preview, ReaperRun

logger = logging.getLogger(__name__)

SCOPE = "preview data"
DROP = "drop"
KEEP = "keep"

ORPHAN = "orphan: no preview owns it"
PREVIEW_DELETED = "its preview is deleted"
PREVIEW_LIVE = "its preview is live"
TEARING_DOWN = "its preview is being torn down"
WITHIN_GRACE = "within grace period"
MALFORMED = "marker unreadable: unknown owner"
DISAGREE = "markers disagree: unknown owner"
CAPPED = "cap on drops per cycle reached"


@dataclass(frozen=True)
class DataObject:
    kind: str  # "role", "schema" or "database"
    name: str
    marker: preview_db.Marker | None
    size_bytes: int | None = None


@dataclass(frozen=True)
class OwnerRecord:
    """The preview a marker names, as the database knows it."""

    preview_id: int
    status: str
    desired: str
    data_name: str
    deleted_at: datetime | None


@dataclass(frozen=True)
class DataDecision:
    action: str
    reason: str
    name: str
    mode: str = ""  # "schema" or "database"; "" for a role alone
    kinds: tuple[str, ...] = ()
    repository_id: int | None = None
    repository: str = ""
    pr_number: int | None = None
    preview_id: int | None = None
    detail: str = ""

    def as_dict(self) -> dict:
        return {**asdict(self), "kinds": list(self.kinds), "scope": SCOPE}


@dataclass
class DataPlan:
    decisions: list[DataDecision] = field(default_factory=list)

    @property
    def drops(self) -> list[DataDecision]:
        return [d for d in self.decisions if d.action == DROP]


def plan(objects: Iterable[DataObject], owners: Mapping[tuple[int, int], OwnerRecord], now: datetime,
         grace: timedelta, max_drops: int) -> DataPlan:
    """One decision per name (a role and its schema or database). Pure."""
    groups: dict[str, list[DataObject]] = {}
    for obj in objects:
        groups.setdefault(obj.name, []).append(obj)
    decisions = [_decide(name, group, owners, now, grace) for name, group in sorted(groups.items())]
    allowed = {id(d) for d in [d for d in decisions if d.action == DROP][:max_drops]}
    decisions = [d if d.action != DROP or id(d) in allowed
                 else replace(d, action=KEEP, reason=CAPPED, detail=f"would drop: {d.reason}") for d in decisions]
    return DataPlan(decisions)


def _decide(name: str, group: list[DataObject], owners: Mapping[tuple[int, int], OwnerRecord], now: datetime,
            grace: timedelta) -> DataDecision:
    kinds = tuple(sorted(o.kind for o in group))
    modes = [o.kind for o in group if o.kind in preview_db.MODES]
    mode = modes[0] if len(modes) == 1 else ""
    markers = [o.marker for o in group]
    if any(m is None for m in markers) or len(modes) > 1:
        return DataDecision(KEEP, MALFORMED, name, mode, kinds)
    owners_named = {(m.repository_id, m.pr_number) for m in markers}
    if len(owners_named) != 1:
        return DataDecision(KEEP, DISAGREE, name, mode, kinds, detail=", ".join(
            f"repository {r} PR {p}" for r, p in sorted(owners_named)))
    first = markers[0]
    key = (first.repository_id, first.pr_number)
    record = owners.get(key)

    def decision(action: str, reason: str, detail: str = "") -> DataDecision:
        return DataDecision(action, reason, name, mode, kinds, first.repository_id, first.repository,
                            first.pr_number, record.preview_id if record else None, detail)

    created = min(m.created_at for m in markers)
    if record is None:
        since, reason = created, ORPHAN
    elif record.desired == Preview.Desired.UP and record.status != Preview.Status.DELETED:
        return decision(KEEP, PREVIEW_LIVE)
    elif record.status != Preview.Status.DELETED:
        return decision(KEEP, TEARING_DOWN)
    else:
        since, reason = max(created, record.deleted_at or created), PREVIEW_DELETED
    age = now - since
    if age <= grace:
        return decision(KEEP, WITHIN_GRACE, f"{reason}, {_minutes(age)} min ago")
    return decision(DROP, reason, f"{_minutes(age)} min ago")


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


# --- the executor -------------------------------------------------------------------------------


@dataclass
class DataCycle:
    run: ReaperRun
    plan: DataPlan
    done: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def snapshot() -> tuple[list[DataObject], dict[tuple[int, int], OwnerRecord]]:
    """One query on the data server, one on ours. Raises (DataError, DatabaseError): nothing is decided."""
    objects = [DataObject(o.kind, o.name, o.marker, o.size_bytes) for o in preview_db.list_marked()]
    keys = {(o.marker.repository_id, o.marker.pr_number) for o in objects if o.marker}
    repositories = {r for r, _ in keys}
    rows = Preview.objects.filter(repository_id__in=repositories).values_list(
        "pk", "repository_id", "pr_number", "status", "desired", "data_name", "deleted_at")
    owners = {(r, n): OwnerRecord(pk, status, desired, data_name, deleted_at)
              for pk, r, n, status, desired, data_name, deleted_at in rows if (r, n) in keys}
    return objects, owners


def run_cycle(*, dry_run: bool = False, now: datetime | None = None) -> DataCycle:
    now = now or timezone.now()
    objects, owners = snapshot()
    the_plan = plan(objects, owners, now, timedelta(minutes=settings.PREVIEWS_REAPER_GRACE_MINUTES),
                    settings.PREVIEWS_DATA_REAPER_MAX_DROPS)
    run = ReaperRun.objects.create(dry_run=dry_run)
    cycle = DataCycle(run, the_plan)
    if not dry_run:
        for decision in the_plan.drops:
            try:
                outcome = _drop(decision)
            except preview_db.DataError as exc:
                cycle.errors.append(f"{decision.name}: {exc}")
                logger.warning("data reaper: dropping %s failed: %s", decision.name, exc)
                continue
            cycle.done.append(f"drop {decision.name}: {outcome}")
    _record_sizes(objects, owners)
    counts: dict[str, int] = {}
    for decision in the_plan.decisions:
        counts[decision.action] = counts.get(decision.action, 0) + 1
    run.decisions = [d.as_dict() for d in the_plan.decisions]
    run.summary = {"scope": SCOPE, "counts": counts, "done": cycle.done, "marked_objects": len(objects)}
    run.errors = cycle.errors
    run.finished_at = timezone.now()
    run.save()
    return cycle


def _drop(decision: DataDecision) -> str:
    owner = preview_db.Owner(decision.repository_id, decision.repository, decision.pr_number)
    mode = decision.mode or preview_db.SCHEMA  # a role alone: no schema or database is left to drop
    if decision.preview_id is None:
        return ", ".join(preview_db.drop(mode, decision.name, owner)) or "nothing left"
    with locks.advisory_lock(locks.DEPLOY, decision.preview_id):
        # Re-checked under the preview's lock: a PR reopened since the plan keeps its data.
        preview = Preview.objects.select_related("repository").filter(pk=decision.preview_id).first()
        if preview is not None and preview.status != Preview.Status.DELETED:
            return "skipped: the preview is live again"
        if preview is not None and preview.data_name == decision.name:
            steps = preview_data.drop(preview)
        else:
            steps = preview_db.drop(mode, decision.name, owner)
        if preview is not None:
            services.preview_note(preview_id=preview.pk, action=EventAction.DATA_REAPED,
                                  message=f"{decision.name}: {decision.reason} ({decision.detail}): "
                                          + (", ".join(steps) or "nothing left"), steps=steps)
    return ", ".join(steps) or "nothing left"


def _record_sizes(objects: list[DataObject], owners: Mapping[tuple[int, int], OwnerRecord]) -> None:
    sizes: dict[int, int | None] = {}
    for obj in objects:
        if obj.kind in preview_db.MODES and obj.marker is not None:
            record = owners.get((obj.marker.repository_id, obj.marker.pr_number))
            if record is not None and record.data_name == obj.name:
                sizes[record.preview_id] = obj.size_bytes
    services.preview_data_measured(sizes=sizes)
