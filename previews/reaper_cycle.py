"""The reaper's executor: take a snapshot, plan (previews.reaper.plan), carry the plan out.

Costs per cycle: one labelled list of namespaces (which also reads the API
server's clock from its `Date` header), one `SELECT clock_timestamp()` and,
per repository with live previews, one paginated listing of open PRs
(ETag-cached). Deletions of previews go through the services, so events,
teardown tasks, PR comments and deployment statuses follow; orphans are deleted
through the gateway with a UID precondition. A cycle issues deletions and
returns: it never waits for a namespace to be gone (the teardown, the watcher
and the next cycle see to that). One failing item never stops the others.

The rate limit's state (deletions still allowed, as of when) is kept in the
summary of the last real cycle's `ReaperRun`; real cycles are serialised by an
advisory lock so two of them never spend the same allowance.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from previews import locks, provisioning, reaper, selectors, services
from previews.gateways import errors, github, kube
from previews.models import ReaperRun

logger = logging.getLogger(__name__)


def reaper_settings() -> reaper.ReaperSettings:
    return reaper.ReaperSettings(
        grace_period=timedelta(minutes=settings.PREVIEWS_REAPER_GRACE_MINUTES),
        stuck_after=timedelta(minutes=settings.PREVIEWS_REAPER_STUCK_MINUTES),
        deletions_per_minute=settings.PREVIEWS_REAPER_DELETIONS_PER_MINUTE,
        burst_minutes=settings.PREVIEWS_REAPER_INTERVAL_MINUTES,
        clock_tolerance=timedelta(minutes=settings.PREVIEWS_REAPER_CLOCK_TOLERANCE_MINUTES),
        breaker_share=settings.PREVIEWS_REAPER_BREAKER_PERCENT / 100,
        breaker_min_deletions=settings.PREVIEWS_REAPER_BREAKER_MIN_DELETIONS,
        expiry_warning=timedelta(hours=settings.PREVIEWS_EXPIRY_WARNING_HOURS),
        protected=frozenset(settings.PREVIEWS_PROTECTED_NAMESPACES),
        slept_for=timedelta(days=settings.PREVIEWS_REAPER_SLEPT_DAYS) if settings.PREVIEWS_REAPER_SLEPT_DAYS else None,
    )


@dataclass
class Snapshot:
    namespaces: list[reaper.ClusterNamespace]
    previews: list[reaper.PreviewRecord]
    open_prs: reaper.OpenPullsByRepository
    github_reasons: dict[str, str] = field(default_factory=dict)
    kube_calls: int = 0
    github_calls: int = 0
    clocks: reaper.Clocks = field(default_factory=lambda: reaper.Clocks(None, None))


def take_snapshot() -> Snapshot:
    # Records first, then the cluster: a preview that is ready in this snapshot created its
    # namespace before the listing below, so "namespace gone" cannot be a race with a deploy.
    previews = selectors.reaper_preview_records()
    database_time = _database_clock()
    listing = kube.list_managed_namespaces_with_clock()
    namespaces = [reaper.ClusterNamespace(name=ns.name, uid=ns.uid, labels=ns.labels, created_at=ns.created_at,
                                          terminating_since=ns.deletion_started_at,
                                          resource_version=ns.resource_version)
                  for ns in listing.namespaces]
    open_prs: dict[int, frozenset[int] | None] = {}
    reasons: dict[str, str] = {}
    calls = 0
    for repository_id, full_name in sorted({(p.repository_id, p.repository) for p in previews}):
        result = github.open_pull_numbers(full_name)
        calls += result.api_calls
        open_prs[repository_id] = result.open_numbers
        if not result.known:
            reasons[full_name] = result.reason
    return Snapshot(namespaces, previews, open_prs, reasons, kube_calls=listing.requests, github_calls=calls,
                    clocks=reaper.Clocks(database=database_time, api_server=listing.server_time))


def _database_clock():
    """The database server's clock now (clock_timestamp(): now() is frozen at the transaction's start)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def last_allowance() -> reaper.Allowance | None:
    """The rate limit's state after the last real cycle, or None before the first."""
    run = (ReaperRun.objects.filter(dry_run=False, summary__has_key="allowance").order_by("-started_at", "-id")
           .only("summary").first())
    if run is None:
        return None
    state = run.summary["allowance"]
    at = parse_datetime(state.get("at") or "")
    return reaper.Allowance(left=float(state.get("left", 0)), at=at) if at else None


def decide(snapshot: Snapshot, now: datetime) -> reaper.Plan:
    """The plan for this snapshot, with the rate limit's allowance left by the last real cycle."""
    config = reaper_settings()
    allowance = reaper.available_allowance(last_allowance(), now, config)
    return reaper.plan(snapshot.namespaces, snapshot.previews, snapshot.open_prs, now, config,
                       clocks=snapshot.clocks, allowance=allowance)


@dataclass
class CycleResult:
    run: ReaperRun
    plan: reaper.Plan
    snapshot: Snapshot
    done: list[str] = field(default_factory=list)
    done_by_action: Counter[str] = field(default_factory=Counter)  # what /metrics reads
    errors: list[str] = field(default_factory=list)

    def did(self, action: str, namespace: str, outcome: str) -> None:
        self.done.append(f"{action} {namespace}: {outcome}")
        self.done_by_action[action] += 1


def run_cycle(*, dry_run: bool = False, now: datetime | None = None) -> CycleResult:
    if dry_run:
        return _cycle(dry_run=True, now=now)
    # One real cycle at a time (a scheduled one and `manage.py reap`): each spends the allowance the last left.
    with locks.advisory_lock(locks.REAPER, 0):
        return _cycle(dry_run=False, now=now)


def _cycle(*, dry_run: bool, now: datetime | None) -> CycleResult:
    now = now or timezone.now()
    snapshot = take_snapshot()
    return execute(decide(snapshot, now), snapshot, dry_run=dry_run, now=now)


def execute(the_plan: reaper.Plan, snapshot: Snapshot, *, dry_run: bool, now: datetime) -> CycleResult:
    allowance = the_plan.allowance_after(now)
    # The allowance is spent before anything is issued, so a cycle that dies half-way cannot be re-spent.
    spent = {} if dry_run else {"allowance": {"left": allowance.left, "at": allowance.at.isoformat()}}
    run = ReaperRun.objects.create(dry_run=dry_run, alert=the_plan.alert, summary=spent)
    result = CycleResult(run, the_plan, snapshot)
    if the_plan.alert:
        logger.error("reaper: %s", the_plan.alert)
    if not dry_run:
        _delete(the_plan.deletions, result)
        for decision in the_plan.decisions:
            if decision.action == reaper.DELETE:
                continue
            try:
                outcome = _apply(decision)
            except errors.GatewayError as exc:
                result.errors.append(f"{decision.namespace}: {exc}")
                logger.warning("reaper: %s %s failed: %s", decision.action, decision.namespace, exc)
                continue
            if outcome:
                result.did(decision.action, decision.namespace, outcome)
        _resync_github()
    by_reason = the_plan.counts()
    run.decisions = [d.as_dict() for d in the_plan.decisions]
    run.summary = {"counts": {action: sum(reasons.values()) for action, reasons in by_reason.items()},
                   "by_reason": by_reason, "done": result.done,
                   "done_by_action": dict(result.done_by_action), "managed_namespaces": len(snapshot.namespaces),
                   "kube_calls": snapshot.kube_calls, "github_calls": snapshot.github_calls,
                   "github_unknown": snapshot.github_reasons, "breaker_tripped": the_plan.breaker_tripped,
                   "expiry_paused": the_plan.expiry_paused,
                   "clocks": {"service": now.isoformat(), **{
                       name: value.isoformat() if value else None
                       for name, value in (("database", snapshot.clocks.database),
                                           ("api_server", snapshot.clocks.api_server))}}, **spent}
    run.errors = result.errors
    run.finished_at = timezone.now()
    run.save()
    return result


def _listed(decision: reaper.Decision) -> provisioning.ListedNamespace:
    return provisioning.ListedNamespace(decision.namespace, decision.uid, decision.resource_version)


def _delete(deletions: list[reaper.Decision], result: CycleResult) -> None:
    """Issue the plan's deletions and return (most urgent first, as planned): no task per namespace.

    Previews: brought down through the services in bulk (each checked against the plan under its row lock,
    with its event; PRs told in batched tasks), then their namespace deletes issued here, each one request
    preconditioned on the UID and resourceVersion the listing showed (`provisioning.teardown_many`); a
    preview with data, or one a task is busy with, gets its teardown task instead. Orphans: the same
    preconditioned delete; one changed since the listing is read and deleted only if it is still ours and
    has the listed UID.
    """
    previews = sorted((d for d in deletions if d.preview_id is not None), key=reaper.urgency)
    orphans = sorted((d for d in deletions if d.preview_id is None), key=reaper.urgency)
    by_preview = {d.preview_id: d for d in previews}
    reaped, skipped = services.previews_reap(decisions=previews)
    for preview_id in skipped:
        result.done.append(f"delete {by_preview[preview_id].namespace}: skipped: the preview changed since the plan")
    for r in reaped:
        if not r.direct:
            result.did(reaper.DELETE, r.namespace, "teardown requested")
    issued = provisioning.teardown_many([(r, _listed(by_preview[r.preview_id])) for r in reaped if r.direct])
    for item in issued:
        if item.outcome == services.TeardownOutcome.FAILED:
            result.errors.append(f"{item.namespace}: {item.message}")
            logger.warning("reaper: delete %s failed: %s", item.namespace, item.message)
        elif item.outcome == services.TeardownOutcome.BUSY:
            result.did(reaper.DELETE, item.namespace, "teardown requested (a task was busy with it)")
        else:
            result.did(reaper.DELETE, item.namespace, item.outcome)

    def careful(ns: provisioning.ListedNamespace) -> kube.DeleteOutcome:
        return kube.delete_namespace(ns.name, uid=ns.uid)

    for decision, outcome in zip(orphans, provisioning.delete_listed([_listed(d) for d in orphans], careful),
                                 strict=True):
        if isinstance(outcome, errors.GatewayError):
            result.errors.append(f"{decision.namespace}: {outcome}")
            logger.warning("reaper: delete %s failed: %s", decision.namespace, outcome)
        else:
            result.did(reaper.DELETE, decision.namespace, "gone" if outcome.gone else "terminating")


def _apply(decision: reaper.Decision) -> str:
    if decision.action == reaper.MARK_DELETED:
        marked = services.preview_mark_gone(preview_id=decision.preview_id, generation=decision.generation,
                                            reason=f"{decision.reason}: {decision.detail}")
        return "marked deleted" if marked else ""
    if decision.action == reaper.REPORT_STUCK:
        logger.warning("reaper: namespace %s is stuck: %s", decision.namespace, decision.detail)
        if decision.preview_id is not None:
            services.preview_note_stuck(preview_id=decision.preview_id, detail=decision.detail)
        return "reported"
    if decision.action == reaper.WARN_EXPIRY:
        warned = services.preview_warn_expiry(preview_id=decision.preview_id, expires_at=decision.expires_at)
        return "warned" if warned else ""
    return ""


def _resync_github() -> None:
    """Previews whose PR has not been told their latest state get another sync (GitHub was down)."""
    for preview_id in selectors.previews_out_of_sync_with_github():
        services.github_sync_enqueue(preview_id)


def preview_plan(now: datetime | None = None) -> tuple[reaper.Plan, Snapshot]:
    """The next cycle's plan, decided but neither carried out nor recorded (for the dashboard)."""
    snapshot = take_snapshot()
    return decide(snapshot, now or timezone.now()), snapshot
