"""Prometheus metrics at /metrics.

Two sources, so that the numbers are right however many web and worker
processes or pods run:
- request latency is measured in the web processes (prometheus_client, merged
  across gunicorn workers through PROMETHEUS_MULTIPROC_DIR when it is set);
- everything the workers do is read from the database at scrape time: previews
  by status, deploy and teardown durations (from the append-only event log),
  task failures (django-q2 keeps every failure), reaper deletions and
  kept-for-unknown counts, and GitHub's remaining rate limit.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.db.models import Count, F, FloatField, IntegerField, Min, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django_q.models import Failure
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from previews import data_reaper, reaper, selectors
from previews.gateways import github
from previews.models import EventAction, Preview, PreviewEvent, ReaperRun

DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600)

REQUEST_LATENCY = Histogram(
    "previews_http_request_duration_seconds", "Time to answer an HTTP request, by method, route and status class",
    ["method", "route", "status"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    REQUEST_LATENCY.labels(method, route, f"{status // 100}xx").observe(seconds)


class DatabaseCollector:
    """Metrics read from the database at scrape time."""

    def collect(self):
        by_status = GaugeMetricFamily("previews_previews", "Previews by status", labels=["status"])
        counts = dict(Preview.objects.values_list("status").annotate(n=Count("id")))
        for status in Preview.Status.values:
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status

        yield self._durations("previews_deploy_duration_seconds",
                              "Deploy duration, from the task starting to ready or failed, by outcome",
                              {"ready": EventAction.READY, "failed": EventAction.DEPLOY_FAILED})
        yield self._durations("previews_teardown_duration_seconds",
                              "Teardown duration, from the request to the namespace being gone",
                              {"deleted": EventAction.DELETED})

        failures = CounterMetricFamily("previews_task_failures", "Background tasks that raised, by task",
                                       labels=["task"])
        for func, n in Failure.objects.values_list("func").annotate(n=Count("id")):
            failures.add_metric([func.rsplit(".", 1)[-1]], n)
        yield failures

        runs = ReaperRun.objects.filter(dry_run=False)
        deleted = CounterMetricFamily("previews_reaper_deletions", "Namespaces the reaper deleted or asked to "
                                                                   "delete")
        deleted.add_metric([], _reaper_deletions())
        yield deleted
        # The data reaper records its cycles as ReaperRun rows too (its own scope); this is the namespaces'.
        last = runs.exclude(summary__contains={"scope": data_reaper.SCOPE}).order_by("-started_at").first()
        unknown = GaugeMetricFamily("previews_reaper_kept_unknown", "Namespaces the last reaper cycle kept "
                                                                    "because their PR state was unknown")
        kept = (last.summary.get("by_reason") or {}).get(reaper.KEEP) or {} if last is not None else {}
        unknown.add_metric([], kept.get(reaper.PR_UNKNOWN, 0))
        yield unknown
        trips = CounterMetricFamily("previews_reaper_breaker_trips", "Reaper cycles in which the circuit breaker "
                                                                     "held deletions")
        trips.add_metric([], runs.filter(summary__breaker_tripped=True).count())
        yield trips
        paused = CounterMetricFamily("previews_reaper_expiry_paused", "Reaper cycles in which expiry deletions "
                                                                      "paused because the clocks disagreed")
        paused.add_metric([], runs.filter(summary__expiry_paused=True).count())
        yield paused

        yield from self._watcher()

        remaining = github.rate_limit_remaining()
        rate = GaugeMetricFamily("previews_github_rate_limit_remaining", "GitHub API calls left in this window "
                                                                         "(-1: not known yet)")
        rate.add_metric([], -1 if remaining is None else remaining)
        yield rate

    def _watcher(self):
        rows = selectors.watcher_status()
        leader = next((w for w in rows if w.is_leader), None)
        now = timezone.now()
        up = GaugeMetricFamily("previews_watcher_connected", "1 when a cluster watcher leads and its watches are "
                                                             "connected")
        up.add_metric([], 1 if leader and leader.connected else 0)
        yield up
        age = GaugeMetricFamily("previews_watcher_heartbeat_age_seconds", "Seconds since the leading watcher's "
                                                                          "last heartbeat (-1: none leads)")
        age.add_metric([], (now - leader.heartbeat_at).total_seconds() if leader else -1)
        yield age
        backlog = GaugeMetricFamily("previews_watcher_backlog", "Watch events the leading watcher has received but "
                                                                "not processed yet")
        backlog.add_metric([], leader.backlog if leader else 0)
        yield backlog
        seen = CounterMetricFamily("previews_watcher_events", "Watch events the leading watcher has processed")
        seen.add_metric([], leader.events_seen if leader else 0)
        yield seen
        rolling = GaugeMetricFamily("previews_rolling_out_oldest_seconds", "Age of the oldest rollout the watcher "
                                                                           "is waiting on")
        oldest = (Preview.objects.filter(status=Preview.Status.DEPLOYING, applied_generation=F("generation"))
                  .aggregate(oldest=Min("applied_at"))["oldest"])
        rolling.add_metric([], (now - oldest).total_seconds() if oldest else 0)
        yield rolling

    def _durations(self, name: str, documentation: str, outcomes: dict[str, str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=["outcome"])
        for outcome, action in outcomes.items():
            events = PreviewEvent.objects.filter(action=action, details__has_key="duration_seconds").annotate(
                seconds=Cast(KT("details__duration_seconds"), FloatField()))
            aggregates = events.aggregate(total=Sum("seconds"), count=Count("id"), **{
                f"le_{i}": Count("id", filter=Q(seconds__lte=bound)) for i, bound in enumerate(DURATION_BUCKETS)})
            buckets = [(str(float(bound)), aggregates[f"le_{i}"]) for i, bound in enumerate(DURATION_BUCKETS)]
            buckets.append(("+Inf", aggregates["count"]))
            family.add_metric([outcome], buckets, aggregates["total"] or 0.0)
        return family


def _reaper_deletions() -> int:
    """Deletions carried out by real (not dry) reaper runs: the sum of each run's `done_by_action`, in SQL."""
    issued = Cast(KT(f"summary__done_by_action__{reaper.DELETE}"), IntegerField())
    return ReaperRun.objects.filter(dry_run=False).aggregate(n=Sum(issued))["n"] or 0


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    if settings.PROMETHEUS_MULTIPROC_DIR:
        multiprocess.MultiProcessCollector(reg, path=settings.PROMETHEUS_MULTIPROC_DIR)
    else:
        reg.register(REQUEST_LATENCY)
    reg.register(DatabaseCollector())
    return reg


def metrics_view(request: HttpRequest) -> HttpResponse:
    expected = settings.PREVIEWS_METRICS_TOKEN
    presented = request.headers.get("Authorization", "").encode()
    if expected and not hmac.compare_digest(presented, f"Bearer {expected}".encode()):
        return HttpResponse("metrics need the bearer token (PREVIEWS_METRICS_TOKEN)\n", status=401,
                            content_type="text/plain")
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
