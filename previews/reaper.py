"""The reaper's decisions: what should no longer exist, and why (pure; `reaper_cycle` carries them out).

`plan` is a pure function from a snapshot of the world to decisions, each with
a reason. It deletes only namespaces that carry our managed-by label, never a
protected one, and never because a PR is closed unless GitHub said so: an
unknown PR state keeps the namespace.

Three guards, each for the deletions whose evidence it can vouch for:

- the circuit breaker keeps every deletion that rests on outside evidence (a PR
  GitHub reports closed, a labelled namespace no preview owns) when an
  implausibly large share of the managed namespaces would go at once: that is
  the signature of bad evidence (GitHub reporting every PR closed, a selector
  gone wrong), not of a busy day;
- the clock check keeps expiry deletions (and those of previews asleep too
  long) while the service's clock, the database's and the Kubernetes API
  server's disagree: expiry is our own recorded decision, so a mass of it is expected, and what could make it wrong
  is a clock that is off;
- a rate (deletions per minute, spent across cycles) bounds how fast anything
  goes, most urgent first; "desired down" is otherwise unguarded, as it is a
  person's or CI's explicit request.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta

from previews.manifests.labels import MANAGED_BY_LABEL, MANAGED_BY_VALUE, PROTECTED_NAMESPACES, REPOSITORY_LABEL
from previews.models import DesiredState, PreviewStatus

# Actions
DELETE = "delete"
KEEP = "keep"
MARK_DELETED = "mark-deleted"
REPORT_STUCK = "report-stuck"
WARN_EXPIRY = "warn-expiry"

# Reasons, most urgent deletions first (the rate limit keeps the rest for later cycles).
DESIRED_DOWN = "desired state is down"
PR_CLOSED = "PR closed"
EXPIRED = "expired"
ORPHAN = "orphan: no preview owns it"
SLEPT_TOO_LONG = "asleep too long"
DELETE_PRIORITY = (DESIRED_DOWN, PR_CLOSED, EXPIRED, SLEPT_TOO_LONG, ORPHAN)
# Deletions whose evidence comes from outside (GitHub's answer, the cluster's labels): the breaker guards them.
OUTSIDE_EVIDENCE = frozenset({PR_CLOSED, ORPHAN})
# Deletions that are right only if our clock is: the clock check guards them.
CLOCK_DEPENDENT = frozenset({EXPIRED, SLEPT_TOO_LONG})

PR_OPEN = "PR open"
PINNED = "pinned"
PR_UNKNOWN = "PR state unknown"
WITHIN_GRACE = "orphan within grace period"
PROTECTED = "protected namespace"
TERMINATING = "already terminating"
LABEL_MISMATCH = "labels do not match its preview"
RATE_LIMITED = "deletion rate limit reached"
BREAKER = "circuit breaker open"
CLOCKS_DISAGREE = "clocks disagree"
NAMESPACE_GONE = "namespace gone"
EXPIRES_SOON = "expires soon"


@dataclass(frozen=True)
class ClusterNamespace:
    name: str
    uid: str
    labels: Mapping[str, str]
    created_at: datetime
    terminating_since: datetime | None = None
    resource_version: str = ""  # as listed: the delete is preconditioned on it (and the UID)

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
    desired: DesiredState
    status: str
    expires_at: datetime
    pinned: bool
    generation: int
    expiry_warned_for: datetime | None = None
    slept_at: datetime | None = None  # when it was scaled to zero, if asleep


@dataclass(frozen=True)
class ReaperSettings:
    grace_period: timedelta = timedelta(hours=1)
    stuck_after: timedelta = timedelta(minutes=30)
    deletions_per_minute: int = 300
    burst_minutes: int = 5  # at most this many minutes' worth of deletions accrue (the reaper's interval)
    clock_tolerance: timedelta = timedelta(minutes=5)
    breaker_share: float = 0.5
    breaker_min_deletions: int = 5
    expiry_warning: timedelta = timedelta(hours=24)
    protected: frozenset[str] = PROTECTED_NAMESPACES
    slept_for: timedelta | None = None  # delete previews asleep longer than this (None: never)


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
    resource_version: str = ""

    def as_dict(self) -> dict:
        data = asdict(self)
        data["expires_at"] = self.expires_at.isoformat() if self.expires_at else None
        return data


@dataclass(frozen=True)
class Clocks:
    """What the other clocks read when the service's read the plan's `now` (None: could not be read)."""

    database: datetime | None
    api_server: datetime | None


@dataclass(frozen=True)
class Allowance:
    """How many deletions may still be issued, as of a time (the rate limit's state between cycles)."""

    left: float
    at: datetime


@dataclass
class Plan:
    decisions: list[Decision] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    allowance: float = math.inf  # deletions this cycle could issue under the rate limit
    breaker_tripped: bool = False
    expiry_paused: bool = False

    @property
    def alert(self) -> str:
        return "\n".join(self.alerts)

    @property
    def deletions(self) -> list[Decision]:
        return [d for d in self.decisions if d.action == DELETE]

    def allowance_after(self, now: datetime) -> Allowance:
        """The rate limit's state once this plan's deletions are issued."""
        return Allowance(left=max(0.0, self.allowance - len(self.deletions)), at=now)

    def counts(self) -> dict[str, dict[str, int]]:
        """Decisions counted by action, then by reason: {"delete": {"expired": 3}, "keep": {"PR open": 260}}."""
        return summarize(self.decisions)


ACTION_ORDER = (DELETE, MARK_DELETED, REPORT_STUCK, WARN_EXPIRY, KEEP)


def summarize(decisions: Iterable[Decision]) -> dict[str, dict[str, int]]:
    """Decisions counted by action (deletions first, keeps last), then by reason (most frequent first)."""
    counter = Counter((d.action, d.reason) for d in decisions)
    actions = sorted({a for a, _ in counter}, key=lambda a: (ACTION_ORDER.index(a) if a in ACTION_ORDER else 99, a))
    return {action: dict(sorted(((r, n) for (a, r), n in counter.items() if a == action),
                                key=lambda item: (-item[1], item[0])))
            for action in actions}


def available_allowance(previous: Allowance | None, now: datetime, settings: ReaperSettings) -> float:
    """Deletions that may be issued now: what was left, plus the rate times the minutes since, up to a burst.

    The first cycle (no previous state) may issue a full burst. A clock that went backwards accrues nothing.
    """
    burst = float(settings.deletions_per_minute * max(1, settings.burst_minutes))
    if previous is None:
        return burst
    minutes = max(0.0, (now - previous.at).total_seconds() / 60)
    return min(burst, max(0.0, previous.left) + minutes * settings.deletions_per_minute)


def clock_disagreement(now: datetime, clocks: Clocks, tolerance: timedelta) -> str:
    """Why expiry must pause (the clocks disagree, or one could not be read), or "" when they agree."""
    readings = {"the service": now, "the database": clocks.database, "the Kubernetes API server": clocks.api_server}
    missing = [name for name, value in readings.items() if value is None]
    if missing:
        return (f"clock check: the clock of {' and '.join(missing)} could not be read; expiry deletions are "
                "paused")
    times = {name: value for name, value in readings.items() if value is not None}
    spread = max(times.values()) - min(times.values())
    if spread <= tolerance:
        return ""
    fastest = max(times, key=lambda name: times[name])
    slowest = min(times, key=lambda name: times[name])
    return (f"clock check: {fastest}'s clock is {_duration(spread)} ahead of {slowest}'s (tolerance "
            f"{_duration(tolerance)}: service {now:%H:%M:%S}, database {clocks.database:%H:%M:%S}, API server "
            f"{clocks.api_server:%H:%M:%S} UTC); expiry deletions are paused until they agree")


# The open PRs of each repository (by id): `github.OpenPulls.open_numbers`, a set when GitHub answered, None when
# unknown.
OpenPullsByRepository = Mapping[int, frozenset[int] | None]


def plan(namespaces: Iterable[ClusterNamespace], previews: Iterable[PreviewRecord], open_prs: OpenPullsByRepository,
         now: datetime, settings: ReaperSettings, *, clocks: Clocks, allowance: float) -> Plan:
    """Decide, for every managed namespace and every live preview record, what to do and why.

    `now` is the service's clock, `clocks` what the database's and the API server's read at the same
    moment, `allowance` how many deletions the rate limit lets this cycle issue (`available_allowance`).
    """
    records = {p.namespace: p for p in previews}
    managed = [ns for ns in namespaces if ns.managed]  # never even consider anything else
    present = {ns.name for ns in managed}
    decisions = [_decide_namespace(ns, records.get(ns.name), open_prs, now, settings) for ns in managed]
    decisions += [d for p in records.values() if p.namespace not in present
                  for d in [_decide_missing(p, now)] if d is not None]
    decisions += [_warning(records[ns.name], now) for ns in managed
                  if _needs_warning(records.get(ns.name), now, settings)]
    result = Plan(decisions, allowance=allowance)
    _check_clocks(result, now, clocks, settings)
    _breaker(result, len(managed), settings)
    _rate_limit(result)
    return result


def _decide_namespace(ns: ClusterNamespace, record: PreviewRecord | None, open_prs: OpenPullsByRepository,
                      now: datetime, settings: ReaperSettings) -> Decision:
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
    if record.desired == DesiredState.DOWN:
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

    if record.status in (PreviewStatus.READY, PreviewStatus.SLEEPING):
        return mark(f"the preview was {record.status} but its namespace no longer exists")
    if record.status == PreviewStatus.DELETING:
        return mark("the teardown finished")
    if record.status == PreviewStatus.FAILED and record.expires_at <= now:
        return mark("failed, expired, and nothing is left in the cluster")
    return None  # pending or deploying: its deploy creates the namespace


def _needs_warning(record: PreviewRecord | None, now: datetime, settings: ReaperSettings) -> bool:
    return (record is not None and record.status == PreviewStatus.READY and record.desired == DesiredState.UP
            and not record.pinned
            and now < record.expires_at <= now + settings.expiry_warning
            and record.expiry_warned_for != record.expires_at)


def _warning(record: PreviewRecord, now: datetime) -> Decision:
    return Decision(WARN_EXPIRY, EXPIRES_SOON, record.namespace, record.id,
                    detail=f"expires in {_age(record.expires_at - now)}", generation=record.generation,
                    expires_at=record.expires_at)


def _hold(decision: Decision, reason: str) -> Decision:
    return replace(decision, action=KEEP, reason=reason, detail=f"would delete: {decision.reason}")


def _check_clocks(result: Plan, now: datetime, clocks: Clocks, settings: ReaperSettings) -> None:
    if not any(d.action == DELETE and d.reason in CLOCK_DEPENDENT for d in result.decisions):
        return
    alert = clock_disagreement(now, clocks, settings.clock_tolerance)
    if not alert:
        return
    result.alerts.append(alert)
    result.expiry_paused = True
    result.decisions = [_hold(d, CLOCKS_DISAGREE) if d.action == DELETE and d.reason in CLOCK_DEPENDENT else d
                        for d in result.decisions]


def _breaker(result: Plan, managed_count: int, settings: ReaperSettings) -> None:
    outside = [d for d in result.deletions if d.reason in OUTSIDE_EVIDENCE]
    if len(outside) < settings.breaker_min_deletions or len(outside) <= settings.breaker_share * managed_count:
        return
    reasons = " and ".join(sorted({d.reason for d in outside}, key=DELETE_PRIORITY.index))
    result.alerts.append(
        f"circuit breaker: {len(outside)} of {managed_count} managed namespaces would be deleted at once for "
        f"{reasons} (more than {settings.breaker_share:.0%}); none of those was deleted")
    result.breaker_tripped = True
    result.decisions = [_hold(d, BREAKER) if d.action == DELETE and d.reason in OUTSIDE_EVIDENCE else d
                        for d in result.decisions]


def urgency(decision: Decision) -> tuple:
    """Sort key of deletions, most urgent first: by reason, then the longest expired, then by name."""
    return (DELETE_PRIORITY.index(decision.reason), decision.expires_at or datetime.max.replace(tzinfo=UTC),
            decision.namespace)


def _rate_limit(result: Plan) -> None:
    deletions = result.deletions
    allowed_count = max(0, math.floor(result.allowance)) if math.isfinite(result.allowance) else len(deletions)
    if len(deletions) <= allowed_count:
        return
    allowed = {id(d) for d in sorted(deletions, key=urgency)[:allowed_count]}
    result.decisions = [_hold(d, RATE_LIMITED) if d.action == DELETE and id(d) not in allowed else d
                        for d in result.decisions]


def _factory(action: str, ns: ClusterNamespace, record: PreviewRecord | None):
    def make(reason: str, detail: str = "") -> Decision:
        return Decision(action, reason, ns.name, record.id if record else None, ns.uid, detail,
                        record.generation if record else None, record.expires_at if record else None,
                        ns.resource_version)
    return make


def _duration(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    return _age(abs(delta))


def _age(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"
