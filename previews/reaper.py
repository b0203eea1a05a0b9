"""The reaper: deciding what should no longer exist (pure), and carrying it out (the executor).

`plan` is a pure function from a snapshot of the world to decisions, each with
a reason. It deletes only namespaces that carry our managed-by label, never a
protected one, and never because a PR is closed unless GitHub said so: an
unknown PR state keeps the namespace. A cap bounds deletions per cycle, and a
circuit breaker deletes nothing when an implausibly large share would go.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta

from previews.manifests import MANAGED_BY_LABEL, MANAGED_BY_VALUE, REPOSITORY_LABEL

logger = logging.getLogger(__name__)

# Actions
DELETE = "delete"
KEEP = "keep"
MARK_DELETED = "mark-deleted"
REPORT_STUCK = "report-stuck"
WARN_EXPIRY = "warn-expiry"

# Reasons, most urgent deletions first (the cap keeps the rest for the next cycle).
DESIRED_DOWN = "desired state is down"
PR_CLOSED = "PR closed"
EXPIRED = "expired"
ORPHAN = "orphan: no preview owns it"
SLEPT_TOO_LONG = "asleep too long"  # issue 15: sleep and wake
DELETE_PRIORITY = (DESIRED_DOWN, PR_CLOSED, EXPIRED, SLEPT_TOO_LONG, ORPHAN)

PR_OPEN = "PR open"
PINNED = "pinned"
PR_UNKNOWN = "PR state unknown"
WITHIN_GRACE = "orphan within grace period"
PROTECTED = "protected namespace"
TERMINATING = "already terminating"
LABEL_MISMATCH = "labels do not match its preview"
CAPPED = "cap on deletions per cycle reached"
BREAKER = "circuit breaker open"
NAMESPACE_GONE = "namespace gone"
EXPIRES_SOON = "expires soon"


@dataclass(frozen=True)
class ClusterNamespace:
    name: str
    uid: str
    labels: Mapping[str, str]
    created_at: datetime
    terminating_since: datetime | None = None

    @property
    def managed(self) -> bool:
        return self.labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE


@dataclass(frozen=True)
class PreviewRecord:
    id: int
    repository_id: int
    repository: str
    pr_number: int
    namespace: str
    desired: str  # "up" or "down"
    status: str
    expires_at: datetime
    pinned: bool
    generation: int
    expiry_warned_for: datetime | None = None
    slept_at: datetime | None = None  # issue 15: when it was scaled to zero, if asleep


@dataclass(frozen=True)
class ReaperSettings:
    grace_period: timedelta = timedelta(hours=1)
    stuck_after: timedelta = timedelta(minutes=30)
    max_deletions: int = 10
    breaker_share: float = 0.5
    breaker_min_deletions: int = 5
    expiry_warning: timedelta = timedelta(hours=24)
    protected: frozenset[str] = frozenset({"default", "kube-system", "kube-public", "kube-node-lease", "staging"})
    slept_for: timedelta | None = None  # issue 15: delete previews asleep longer than this (None: never)


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str
    namespace: str = ""
    preview_id: int | None = None
    uid: str = ""
    detail: str = ""
    generation: int | None = None
    expires_at: datetime | None = None

    def as_dict(self) -> dict:
        data = asdict(self)
        data["expires_at"] = self.expires_at.isoformat() if self.expires_at else None
        return data


@dataclass
class Plan:
    decisions: list[Decision] = field(default_factory=list)
    alert: str = ""

    @property
    def deletions(self) -> list[Decision]:
        return [d for d in self.decisions if d.action == DELETE]


# The open PRs of each repository (by id): a set when GitHub answered, None when unknown.
OpenPrs = Mapping[int, frozenset[int] | None]


def plan(namespaces: Iterable[ClusterNamespace], previews: Iterable[PreviewRecord], open_prs: OpenPrs,
         now: datetime, settings: ReaperSettings) -> Plan:
    """Decide, for every managed namespace and every live preview record, what to do and why."""
    records = {p.namespace: p for p in previews}
    managed = [ns for ns in namespaces if ns.managed]  # never even consider anything else
    present = {ns.name for ns in managed}
    decisions = [_decide_namespace(ns, records.get(ns.name), open_prs, now, settings) for ns in managed]
    decisions += [d for p in records.values() if p.namespace not in present
                  for d in [_decide_missing(p, now)] if d is not None]
    decisions += [_warning(records[ns.name], now) for ns in managed
                  if _needs_warning(records.get(ns.name), now, settings)]
    return _limit(Plan(decisions), len(managed), settings)


def _decide_namespace(ns: ClusterNamespace, record: PreviewRecord | None, open_prs: OpenPrs, now: datetime,
                      settings: ReaperSettings) -> Decision:
    keep = _factory(KEEP, ns, record)
    delete = _factory(DELETE, ns, record)
    if ns.name in settings.protected:
        return keep(PROTECTED)
    if ns.terminating_since is not None:
        if now - ns.terminating_since > settings.stuck_after:
            return replace(keep(TERMINATING), action=REPORT_STUCK,
                           detail=f"terminating since {ns.terminating_since:%Y-%m-%d %H:%M} UTC; not force-finalized")
        return keep(TERMINATING)
    if record is None:
        age = now - ns.created_at
        if age > settings.grace_period:
            return delete(ORPHAN, f"created {_age(age)} ago")
        return keep(WITHIN_GRACE, f"created {_age(age)} ago")
    if ns.labels.get(REPOSITORY_LABEL) not in (None, str(record.repository_id)):
        return keep(LABEL_MISMATCH, f"label says repository {ns.labels.get(REPOSITORY_LABEL)}, record says "
                                    f"{record.repository_id}")
    if record.desired == "down":
        return delete(DESIRED_DOWN)
    if record.pinned:
        return keep(PINNED)
    if record.expires_at <= now:
        return delete(EXPIRED, f"expired {_age(now - record.expires_at)} ago")
    if settings.slept_for is not None and record.slept_at is not None and now - record.slept_at > settings.slept_for:
        return delete(SLEPT_TOO_LONG, f"asleep for {_age(now - record.slept_at)}")
    numbers = open_prs.get(record.repository_id)
    if numbers is None:
        return keep(PR_UNKNOWN, "GitHub could not be asked; nothing is deleted for being closed")
    if record.pr_number in numbers:
        return keep(PR_OPEN)
    return delete(PR_CLOSED, f"#{record.pr_number} is not among the open PRs of {record.repository}")


def _decide_missing(record: PreviewRecord, now: datetime) -> Decision | None:
    """A record the database thinks is live whose namespace is not in the cluster."""
    def mark(detail: str) -> Decision:
        return Decision(MARK_DELETED, NAMESPACE_GONE, record.namespace, record.id, detail=detail,
                        generation=record.generation, expires_at=record.expires_at)

    if record.status in ("ready", "sleeping"):
        return mark(f"the preview was {record.status} but its namespace no longer exists")
    if record.status == "deleting":
        return mark("the teardown finished")
    if record.status == "failed" and record.expires_at <= now:
        return mark("failed, expired, and nothing is left in the cluster")
    return None  # pending or deploying: its deploy creates the namespace


def _needs_warning(record: PreviewRecord | None, now: datetime, settings: ReaperSettings) -> bool:
    return (record is not None and record.status == "ready" and record.desired == "up" and not record.pinned
            and now < record.expires_at <= now + settings.expiry_warning
            and record.expiry_warned_for != record.expires_at)


def _warning(record: PreviewRecord, now: datetime) -> Decision:
    return Decision(WARN_EXPIRY, EXPIRES_SOON, record.namespace, record.id,
                    detail=f"expires in {_age(record.expires_at - now)}", generation=record.generation,
                    expires_at=record.expires_at)


def _limit(result: Plan, managed_count: int, settings: ReaperSettings) -> Plan:
    deletions = result.deletions
    if not deletions:
        return result
    if len(deletions) >= settings.breaker_min_deletions and len(deletions) > settings.breaker_share * managed_count:
        result.alert = (f"circuit breaker: {len(deletions)} of {managed_count} managed namespaces would be deleted "
                        f"at once (more than {settings.breaker_share:.0%}); nothing was deleted")
        result.decisions = [replace(d, action=KEEP, reason=BREAKER, detail=f"would delete: {d.reason}")
                            if d.action == DELETE else d for d in result.decisions]
        return result
    ordered = sorted(deletions, key=lambda d: DELETE_PRIORITY.index(d.reason))
    allowed = {id(d) for d in ordered[:settings.max_deletions]}
    result.decisions = [d if d.action != DELETE or id(d) in allowed
                        else replace(d, action=KEEP, reason=CAPPED, detail=f"would delete: {d.reason}")
                        for d in result.decisions]
    return result


def _factory(action: str, ns: ClusterNamespace, record: PreviewRecord | None):
    def make(reason: str, detail: str = "") -> Decision:
        return Decision(action, reason, ns.name, record.id if record else None, ns.uid, detail,
                        record.generation if record else None, record.expires_at if record else None)
    return make


def _age(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"
