"""Read queries. Views and tasks read through these, never through ad-hoc ORM calls."""

from __future__ import annotations

import time
from datetime import timedelta

from django.core.cache import cache
from django.db import DatabaseError, connection
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from previews import cost, validators
from previews.gateways import errors, kube
from previews.gateways.kube import views as kube_view
from previews.models import GITHUB_SYNC_FAILED, Preview, Repository, WatcherStatus
from previews.reaper import PreviewRecord
from previews.rows import Columns, Record

# The API's hottest reads as hand-written SQL (previews/rows.py says why). GitHub names are case-insensitive:
# the lookups compare UPPER() of both sides, as the ORM's `iexact` does, and the first of two repositories whose
# names differ only in case is the first in the model's order (owner, name).
REPOSITORY = Columns(Repository)
# What the API shows of a preview (previews/api/serializers.py) and what `preview_wait` reads; the rest (the
# manifests, the rollout record: the large columns) stays deferred.
API_PREVIEW = Columns(Preview, (
    "id", "repository", "pr_number", "namespace", "url", "status", "status_message", "desired", "head_sha", "images",
    "generation", "observed_generation", "expires_at", "pinned", "title", "author", "created_at", "updated_at",
    "ready_at", "deleted_at", "last_activity_at", "slept_at", "data_mode", "data_name", "data_size_bytes",
    "data_size_at", "data_reset_at"))
API_REPOSITORY = Columns(Repository, ("id", "owner", "name", "data_mode"))
REPOSITORY_BY_NAME_WHERE = 'UPPER(r."owner"::text) = UPPER(%s) AND UPPER(r."name"::text) = UPPER(%s)'

_REPOSITORY_BY_NAME_SQL = (f"SELECT {REPOSITORY.select('r')} FROM {Repository._meta.db_table} r "
                           f'WHERE {REPOSITORY_BY_NAME_WHERE} ORDER BY r."owner", r."name" LIMIT 1')
_PREVIEW_BY_NAME_SQL = (
    f"SELECT {API_PREVIEW.select('p')}, {API_REPOSITORY.select('r')} FROM {Preview._meta.db_table} p "
    f'JOIN {Repository._meta.db_table} r ON r."id" = p."repository_id" '
    f'WHERE {REPOSITORY_BY_NAME_WHERE} AND p."pr_number" = %s ORDER BY r."owner", r."name" LIMIT 1')


def repository_get(owner: str, name: str) -> Repository | None:
    """The repository by its name, case-insensitively: one query."""
    with connection.cursor() as cursor:
        cursor.execute(_REPOSITORY_BY_NAME_SQL, [owner, name])
        row = cursor.fetchone()
    return None if row is None else REPOSITORY.load(row)


def repository_by_id(repository_id: int) -> Repository | None:
    return Repository.objects.filter(pk=repository_id).first()


def preview_by_name(owner: str, name: str, pr_number: int) -> Record | None:
    """What the API shows of a PR's preview and its repository, by the repository's name (case-insensitively),
    in one query: a read-only `Record` with the `API_PREVIEW` fields and `repository` (a `Record` with the
    `API_REPOSITORY` fields); `preview_representation` and `preview_wait` take it like a Preview."""
    with connection.cursor() as cursor:
        cursor.execute(_PREVIEW_BY_NAME_SQL, [owner, name, pr_number])
        row = cursor.fetchone()
    return None if row is None else api_preview_record(row)


def api_preview_record(row) -> Record:
    """`API_PREVIEW` then `API_REPOSITORY` columns -> the preview's `Record`, its repository's attached."""
    preview = API_PREVIEW.record(row[:API_PREVIEW.width])
    preview.__dict__["repository"] = API_REPOSITORY.record(row[API_PREVIEW.width:])
    return preview


def preview_get(repository: Repository, pr_number: int) -> Preview | None:
    return Preview.objects.select_related("repository").filter(repository=repository, pr_number=pr_number).first()


def preview_is_settled(preview: Preview) -> bool:
    """The last requested change has finished: ready, failed or deleted for the current generation."""
    return preview.observed_generation == preview.generation and preview.status in (
        Preview.Status.READY, Preview.Status.FAILED, Preview.Status.DELETED)


def preview_wait(preview: Preview, seconds: float, interval: float = 0.5) -> Preview:
    """Re-read the preview until it settles or `seconds` pass; returns the latest state."""
    deadline = time.monotonic() + seconds
    while not preview_is_settled(preview) and time.monotonic() < deadline:
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        preview = Preview.objects.select_related("repository").get(pk=preview.pk)
    return preview


def preview_list(*, repository: Repository | None = None, status: str | None = None) -> QuerySet[Preview]:
    qs = Preview.objects.select_related("repository").order_by("-updated_at", "-id")
    if repository is not None:
        qs = qs.filter(repository=repository)
    if status:
        qs = qs.filter(status=status)
    return qs


def reaper_preview_records() -> list[PreviewRecord]:
    """Every preview the database considers live, as plain records for the reaper's plan."""
    rows = Preview.objects.filter(status__in=Preview.LIVE_STATUSES).select_related("repository")
    return [PreviewRecord(id=p.pk, repository_id=p.repository_id, repository=p.repository.full_name,
                          pr_number=p.pr_number, namespace=p.namespace, desired=p.desired, status=p.status,
                          expires_at=p.expires_at, pinned=p.pinned, generation=p.generation,
                          expiry_warned_for=p.expiry_warned_for, slept_at=p.slept_at) for p in rows]


def previews_out_of_sync_with_github(limit: int = 100) -> list[int]:
    """Previews whose last GitHub sync failed and has not succeeded since."""
    return list(Preview.objects.filter(github_synced_key=GITHUB_SYNC_FAILED).values_list("pk", flat=True)[:limit])


# --- the dashboard --------------------------------------------------------------------------

LIST_SORTS = {
    "updated": ("-updated_at", "-id"),
    "created": ("-created_at", "-id"),
    "expires": ("expires_at", "id"),
    "pr": ("repository__owner", "repository__name", "-pr_number"),
    "status": ("status", "-updated_at"),
}


def dashboard_previews(*, repository: str = "", status: str = "", author: str = "", search: str = "",
                       sort: str = "updated") -> QuerySet[Preview]:
    """Live previews for the dashboard's list, filtered and sorted; one query with the repository joined."""
    qs = Preview.objects.filter(status__in=Preview.LIVE_STATUSES).select_related("repository")
    if repository:
        owner, _, name = repository.partition("/")
        qs = qs.filter(repository__owner__iexact=owner, repository__name__iexact=name)
    if status:
        qs = qs.filter(status=status)
    if author:
        qs = qs.filter(author__iexact=author)
    if search:
        term = search.strip()
        condition = Q(title__icontains=term) | Q(namespace__icontains=term) | Q(author__icontains=term) | Q(
            head_sha__istartswith=term.lower())
        if term.lstrip("#").isdecimal():
            condition |= Q(pr_number=int(term.lstrip("#")))
        qs = qs.filter(condition)
    return qs.order_by(*LIST_SORTS.get(sort, LIST_SORTS["updated"]))


def dashboard_counts(now=None) -> dict[str, int]:
    """Live, failed and expiring-within-24-hours counts, in one query."""
    now = now or timezone.now()
    return Preview.objects.filter(status__in=Preview.LIVE_STATUSES).aggregate(
        live=Count("id"),
        failed=Count("id", filter=Q(status=Preview.Status.FAILED)),
        expiring=Count("id", filter=Q(expires_at__lte=now + timedelta(hours=24), pinned=False,
                                      desired=Preview.Desired.UP)),
    )


def dashboard_filter_choices() -> dict[str, list[str]]:
    live = Preview.objects.filter(status__in=Preview.LIVE_STATUSES)
    repositories = Repository.objects.filter(id__in=live.values("repository_id")).only("owner", "name") \
        .order_by("owner", "name")
    authors = live.exclude(author="").order_by("author").values_list("author", flat=True).distinct()
    return {"repositories": [r.full_name for r in repositories], "authors": list(authors)}


def preview_detail(preview_id: int) -> Preview | None:
    return Preview.objects.select_related("repository").filter(pk=preview_id).first()


def preview_timeline(preview: Preview, limit: int = 200):
    return preview.events.order_by("-created_at", "-id")[:limit]


CLUSTER_VIEW_SECONDS = 5


def preview_cluster_view(preview: Preview):
    """The live Kubernetes view of a preview's namespace, cached a few seconds so a page view is cheap.

    Returns (overview or None, error message).
    """
    key = f"cluster-view:{preview.namespace}"
    cached = cache.get(key)
    if cached is not None:
        return cached
    try:
        result = (kube_view.namespace_overview(preview.namespace), "")
    except errors.GatewayError as exc:
        result = (None, str(exc))
    cache.set(key, result, CLUSTER_VIEW_SECONDS)
    return result


def preview_container_log(preview: Preview, pod: str, container: str, *, lines: int, previous: bool = False):
    """The end of one container's log in the preview's namespace, for the dashboard. Returns (text, error):
    the error says why it could not be read (no such pod or container, the node not answering, ...)."""
    try:
        return kube_view.container_log(preview.namespace, pod, container, previous=previous, lines=lines,
                                       max_bytes=kube_view.MAX_LOG_BYTES), ""
    except errors.GatewayError as exc:
        return "", str(exc)


BASE_DOMAINS_SECONDS = 30
_base_domains: tuple[float, frozenset[str]] = (0.0, frozenset())


def _repository_base_domains() -> frozenset[str]:
    """Every repository's base domain, read at most every BASE_DOMAINS_SECONDS by each process."""
    global _base_domains
    read_at, domains = _base_domains
    if time.monotonic() - read_at > BASE_DOMAINS_SECONDS:
        domains = frozenset(d.lower() for d in Repository.objects.values_list("base_domain", flat=True).distinct())
        _base_domains = (time.monotonic(), domains)
    return domains


def preview_for_host(host: str) -> tuple[str, Preview | None] | None:
    """(namespace, its preview or None) when `host` (a Host header, port and all) is `<label>.<base domain>` of
    a repository; None for any other host, and when the database cannot say."""
    name = host.strip().lower()
    if ":" in name:
        name, _, port = name.rpartition(":")
        if not port.isdigit():
            return None
    label, _, domain = name.partition(".")
    if len(name) > 253 or not validators.DNS_LABEL_RE.fullmatch(label):
        return None
    try:
        if domain not in _repository_base_domains():
            return None
        preview = (Preview.objects.select_related("repository")
                   .filter(namespace=label, repository__base_domain__iexact=domain).first())
    except DatabaseError:
        return None
    return label, preview


def watcher_status(max_age: timedelta = timedelta(minutes=5)) -> list[WatcherStatus]:
    """Cluster watchers that reported within `max_age`, the leader first."""
    return list(WatcherStatus.objects.filter(heartbeat_at__gte=timezone.now() - max_age)
                .order_by("-is_leader", "-heartbeat_at"))


def watcher_summary() -> dict:
    """The leading watcher's state for /readyz: whether it is connected, and how far behind it is."""
    try:
        leader = next((w for w in watcher_status() if w.is_leader), None)
    except DatabaseError:
        return {"status": "unknown (database unavailable)"}
    if leader is None:
        return {"status": "no watcher has reported in the last 5 minutes"}
    age = (timezone.now() - leader.heartbeat_at).total_seconds()
    return {"status": "connected" if leader.connected else f"disconnected: {leader.detail}",
            "holder": leader.holder, "heartbeat_age_seconds": round(age, 1), "backlog": leader.backlog}


COST_CACHE_SECONDS = 30


def cluster_costs() -> dict[str, cost.Cost]:
    """Each of our namespaces' requests from the cluster (two labelled lists), cached for a few seconds."""
    cached = cache.get("cluster-costs")
    if cached is not None:
        return cached
    result = {ns: cost.namespace_cost(workloads) for ns, workloads in kube.workload_requests().items()}
    cache.set("cluster-costs", result, COST_CACHE_SECONDS)
    return result


def preview_cost(preview: Preview) -> cost.Cost | None:
    """The preview's requests (None when the cluster cannot be read)."""
    try:
        return cluster_costs().get(preview.namespace, cost.Cost(cost.Requests(), cost.Requests()))
    except errors.GatewayError:
        return None


def repository_costs(repository: Repository) -> dict:
    """Per live preview and in total: what is requested now, and what sleeping saves. Raises errors.GatewayError."""
    costs = cluster_costs()
    empty = cost.Cost(cost.Requests(), cost.Requests())
    rows = []
    for preview in Preview.objects.filter(repository=repository, status__in=Preview.LIVE_STATUSES).order_by(
            "pr_number"):
        c = costs.get(preview.namespace, empty)
        rows.append({"pr_number": preview.pr_number, "namespace": preview.namespace, "status": preview.status,
                     **c.as_dict()})
    total = cost.total(costs.get(r["namespace"], empty) for r in rows)
    return {"repository": repository.full_name, "total": total.as_dict(), "previews": rows}


def all_repository_costs() -> list[dict]:
    """repository_costs for every repository with live previews (the dashboard's cost page)."""
    ids = Preview.objects.filter(status__in=Preview.LIVE_STATUSES).values("repository_id")
    return [repository_costs(r) for r in Repository.objects.filter(id__in=ids).order_by("owner", "name")]
