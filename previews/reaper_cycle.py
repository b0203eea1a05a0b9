"""The reaper's executor: take a snapshot, plan (previews.reaper.plan), carry the plan out.

Costs per cycle: one labelled list of namespaces and, per repository with live
previews, one paginated listing of open PRs (ETag-cached). Deletions of
previews go through the services, so events, teardown tasks, PR comments and
deployment statuses follow; orphans are deleted through the gateway with a UID
precondition. One failing item never stops the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from previews import github, kube, reaper, selectors, services
from previews.models import ReaperRun

logger = logging.getLogger(__name__)


def reaper_settings() -> reaper.ReaperSettings:
    return reaper.ReaperSettings(
        grace_period=timedelta(minutes=settings.PREVIEWS_REAPER_GRACE_MINUTES),
        stuck_after=timedelta(minutes=settings.PREVIEWS_REAPER_STUCK_MINUTES),
        max_deletions=settings.PREVIEWS_REAPER_MAX_DELETIONS,
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
    open_prs: dict[int, frozenset[int] | None]
    github_reasons: dict[str, str] = field(default_factory=dict)
    kube_calls: int = 0
    github_calls: int = 0


def take_snapshot() -> Snapshot:
    # Records first, then the cluster: a preview that is ready in this snapshot created its
    # namespace before the listing below, so "namespace gone" cannot be a race with a deploy.
    previews = selectors.reaper_preview_records()
    namespaces = [reaper.ClusterNamespace(name=ns.name, uid=ns.uid, labels=ns.labels, created_at=ns.created_at,
                                          terminating_since=ns.deletion_started_at)
                  for ns in kube.list_managed_namespaces()]
    open_prs: dict[int, frozenset[int] | None] = {}
    reasons: dict[str, str] = {}
    calls = 0
    for repository_id, full_name in sorted({(p.repository_id, p.repository) for p in previews}):
        result = github.open_pull_numbers(full_name)
        calls += result.api_calls
        open_prs[repository_id] = result.numbers if result.known else None
        if not result.known:
            reasons[full_name] = result.reason
    list_pages = len(namespaces) // kube.LIST_PAGE_SIZE + 1
    return Snapshot(namespaces, previews, open_prs, reasons, kube_calls=list_pages, github_calls=calls)


@dataclass
class CycleResult:
    run: ReaperRun
    plan: reaper.Plan
    snapshot: Snapshot
    done: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run_cycle(*, dry_run: bool = False, now: datetime | None = None) -> CycleResult:
    now = now or timezone.now()
    snapshot = take_snapshot()
    the_plan = reaper.plan(snapshot.namespaces, snapshot.previews, snapshot.open_prs, now, reaper_settings())
    return execute(the_plan, snapshot, dry_run=dry_run)


def execute(the_plan: reaper.Plan, snapshot: Snapshot, *, dry_run: bool) -> CycleResult:
    run = ReaperRun.objects.create(dry_run=dry_run, alert=the_plan.alert)
    result = CycleResult(run, the_plan, snapshot)
    if the_plan.alert:
        logger.error("reaper: %s", the_plan.alert)
    if not dry_run:
        for decision in the_plan.decisions:
            try:
                outcome = _apply(decision)
            except (kube.KubeError, github.GitHubUnavailable) as exc:
                result.errors.append(f"{decision.namespace}: {exc}")
                logger.warning("reaper: %s %s failed: %s", decision.action, decision.namespace, exc)
                continue
            if outcome:
                result.done.append(f"{decision.action} {decision.namespace}: {outcome}")
        _resync_github()
    counts: dict[str, int] = {}
    for decision in the_plan.decisions:
        counts[decision.action] = counts.get(decision.action, 0) + 1
    run.decisions = [d.as_dict() for d in the_plan.decisions]
    run.summary = {"counts": counts, "done": result.done, "managed_namespaces": len(snapshot.namespaces),
                   "kube_calls": snapshot.kube_calls, "github_calls": snapshot.github_calls,
                   "github_unknown": snapshot.github_reasons}
    run.errors = result.errors
    run.finished_at = timezone.now()
    run.save()
    return result


def _apply(decision: reaper.Decision) -> str:
    if decision.action == reaper.DELETE:
        if decision.preview_id is None:
            outcome = kube.delete_namespace(decision.namespace, uid=decision.uid)
            return "gone" if outcome.gone else "terminating"
        requested = services.preview_reap(preview_id=decision.preview_id, generation=decision.generation,
                                          expires_at=decision.expires_at, reason=decision.reason,
                                          detail=decision.detail)
        return "teardown requested" if requested else "skipped: the preview changed since the plan"
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
    return reaper.plan(snapshot.namespaces, snapshot.previews, snapshot.open_prs, now or timezone.now(),
                       reaper_settings()), snapshot
