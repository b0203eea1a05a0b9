"""Benchmark: server time and SQL queries of the dashboard's list page with 100 and 1000 live previews.

    cd /work/main && .venv/bin/python bench/dashboard.py [--sizes 100 1000] [--warmup 5] [--requests 30]
                                                        [--show-queries]

For each size N it bulk-inserts N live previews (10 fresh repositories, mostly ready, some failed, pending or
deploying, 25 authors, varied titles, ages and expiries), then requests with Django's test `Client`, logged in
as a fresh user of the "Preview viewers" group:

* full:  `GET /`                          the whole page (filters, counts, first 50 rows, pager)
* htmx:  `GET /` with `HX-Request: true`  the fragment the page re-fetches every 5 s (counts, rows, pager)
* p10:   `GET /?page=10`                  the full page, 10th page of 50 (only when N >= 500)

The client is in-process, so "server time" is the whole Django request/response cycle (middleware, session and
user lookup, view, queries, template rendering) without any network or WSGI server. Each request runs --warmup
untimed times, then --requests timed times; every request's queries are counted with CaptureQueriesContext.

Everything runs against the separate database `previews_bench` on the DATABASE_URL server (created and migrated
when absent), as the other benchmarks here; each size's rows are deleted before the next size is seeded, and the
user and its session at the end, also after an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import secrets
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for `bench.common`

from bench.common import BENCH_DB, log, setup_django

PAGE_SIZE = 50  # dashboard.views.PAGE_SIZE, checked at start-up
REPOSITORIES = 10
AUTHORS = [f"dev-{name}" for name in (
    "ada", "bo", "cy", "dee", "eli", "fay", "gus", "hal", "ivy", "jo", "kai", "lu", "max", "nia", "oz", "pia",
    "quin", "rae", "sol", "tam", "uma", "vic", "wes", "xan", "yui")]
TITLE_WORDS = ["Add", "Fix", "Refactor", "Speed up", "Remove", "Document", "Test", "Rename", "Cache", "Validate"]
TITLE_THINGS = ["checkout flow", "cart totals", "search index", "login form", "<img> alt text", "price rounding",
                "order emails", "admin filters", "CSV export", "feature flags & rollout", "dark mode", "API v2"]


# --- statistics -------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --- seeding and cleanup ----------------------------------------------------------------------


@dataclass
class Seeded:
    repository_ids: list[int] = field(default_factory=list)
    preview_count: int = 0


def seed(size: int, rng: random.Random, seeded: Seeded) -> None:
    """`size` live previews over REPOSITORIES fresh repositories; ids are recorded in `seeded` as they exist."""
    from django.utils import timezone

    from previews.models import Preview, Repository

    run = secrets.token_hex(3)
    for i in range(REPOSITORIES):
        repository = Repository.objects.create(
            owner="bench", name=f"dash-{run}-{i}", base_domain="preview.example.com",
            namespace_prefix=f"db{run}{i}", image_name="localhost/previews-sample", max_live_previews=size)
        seeded.repository_ids.append(repository.pk)
    repositories = list(Repository.objects.filter(pk__in=seeded.repository_ids).order_by("pk"))
    now = timezone.now()
    statuses = [Preview.Status.READY] * 85 + [Preview.Status.FAILED] * 8 + [Preview.Status.PENDING] * 4 + [
        Preview.Status.DEPLOYING] * 3
    previews = []
    for i in range(size):
        repository = repositories[i % REPOSITORIES]
        pr = 100 + i // REPOSITORIES
        status = rng.choice(statuses)
        namespace = f"{repository.namespace_prefix}-{pr}"
        title = f"{rng.choice(TITLE_WORDS)} {rng.choice(TITLE_THINGS)}" if rng.random() < 0.95 else ""
        previews.append(Preview(
            repository=repository, pr_number=pr, namespace=namespace, head_sha=secrets.token_hex(20),
            url=f"https://{namespace}.preview.example.com" if status == Preview.Status.READY else "",
            images={"localhost/previews-sample": f"localhost/previews-sample:pr-{pr}"}, status=status,
            status_message="Rollout timed out" if status == Preview.Status.FAILED else "",
            generation=1, observed_generation=1 if status in (Preview.Status.READY, Preview.Status.FAILED) else 0,
            # about 1 in 8 expires within 24 hours, some are overdue, 1 in 20 is pinned
            expires_at=now + timedelta(hours=rng.uniform(-2, 24) if rng.random() < 0.125 else rng.uniform(24, 240)),
            pinned=rng.random() < 0.05, title=title, author=rng.choice(AUTHORS) if rng.random() < 0.97 else "",
            ready_at=now if status == Preview.Status.READY else None))
    created = Preview.objects.bulk_create(previews, batch_size=500)
    seeded.preview_count = len(created)
    # bulk_create stamps every row with the same created_at/updated_at; spread them over the last 10 days.
    for preview in created:
        preview.created_at = now - timedelta(hours=rng.uniform(1, 240))
        preview.updated_at = preview.created_at + (now - preview.created_at) * rng.random()
    Preview.objects.bulk_update(created, ["created_at", "updated_at"], batch_size=500)


def cleanup_rows(seeded: Seeded) -> None:
    from previews.models import Preview, Repository

    if not seeded.repository_ids:
        return
    # .only(): the models may have gained fields since this run migrated (the tree is edited concurrently).
    Preview.objects.filter(repository_id__in=seeded.repository_ids).only("pk", "repository_id").delete()
    Repository.objects.filter(pk__in=seeded.repository_ids).only("pk").delete()
    seeded.repository_ids.clear()
    seeded.preview_count = 0


# --- measuring --------------------------------------------------------------------------------


@dataclass
class Result:
    size: int
    label: str
    path: str
    queries: list[int]
    sql_ms: list[float]
    ms: list[float]
    kb: float
    rows: int
    live_shown: int | None


def measure(client: Any, size: int, label: str, path: str, headers: dict[str, str], warmup: int,
            requests: int, show_queries: bool) -> Result:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    queries: list[int] = []
    sql_ms: list[float] = []
    ms: list[float] = []
    response: Any = None
    sql_seconds = [0.0]

    def timed(execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            sql_seconds[0] += time.perf_counter() - started

    for i in range(warmup + requests):
        sql_seconds[0] = 0.0
        with CaptureQueriesContext(connection) as ctx, connection.execute_wrapper(timed):
            started = time.perf_counter()
            response = client.get(path, **headers)
            elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"N={size} {label}: GET {path} answered {response.status_code}")
        if i == 0 and show_queries:
            print(f"\n-- N={size} {label} ({len(ctx.captured_queries)} queries):")
            for q in ctx.captured_queries:
                print(f"   {q['time']}s  {q['sql'][:300]}")
        if i >= warmup:
            ms.append(elapsed * 1000)
            queries.append(len(ctx.captured_queries))
            sql_ms.append(sql_seconds[0] * 1000)
    html = response.content.decode()
    shown = re.search(r"Page \d+ of \d+ · (\d+) previews", html)
    return Result(size, label, path, queries, sql_ms, ms, len(response.content) / 1024,
                  html.count('<tr id="preview-'), int(shown.group(1)) if shown else None)


def print_report(results: list[Result], meta: dict[str, Any]) -> None:
    print()
    print(f"dashboard list page, {meta['warmup']} warm-up + {meta['requests']} timed requests each, in-process "
          f"Django test Client (server time = full request/response cycle), page size {PAGE_SIZE}")
    print(f"database {BENCH_DB}, Django {meta['django']}, Python {meta['python']}, {meta['nproc']} CPUs")
    print()
    header = (f"{'N':>5}  {'request':<24} {'queries':>7} {'median ms':>9} {'p95 ms':>7} {'KB':>6}  {'rows':>4} "
              f"{'live shown':>10} {'SQL ms':>6}")
    print(header)
    print("-" * len(header))
    for r in results:
        q = str(r.queries[0]) if min(r.queries) == max(r.queries) else f"{min(r.queries)}-{max(r.queries)}"
        live = "-" if r.live_shown is None else str(r.live_shown)
        print(f"{r.size:>5}  {r.label:<24} {q:>7} {statistics.median(r.ms):>9.2f} {percentile(r.ms, 95):>7.2f} "
              f"{r.kb:>6.1f}  {r.rows:>4} {live:>10} {statistics.median(r.sql_ms):>6.2f}")
    by_key = {(r.size, r.label): r for r in results}
    sizes = sorted({r.size for r in results})
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        print()
        print(f"ratio of median times, N={large} / N={small}:")
        for label in dict.fromkeys(r.label for r in results):
            a, b = by_key.get((large, label)), by_key.get((small, label))
            if a and b:
                print(f"  {label:<24} {statistics.median(a.ms) / statistics.median(b.ms):>5.2f}x  "
                      f"(queries {a.queries[0]} vs {b.queries[0]})")
        p10, full_small = by_key.get((large, "full ?page=10")), by_key.get((small, "full GET /"))
        full_large = by_key.get((large, "full GET /"))
        if p10 and full_small and full_large:
            print(f"  {'full ?page=10':<24} {statistics.median(p10.ms) / statistics.median(full_small.ms):>5.2f}x  "
                  f"(page 10 at N={large} / page 1 at N={small}; "
                  f"{statistics.median(p10.ms) / statistics.median(full_large.ms):.2f}x of page 1 at N={large})")
    print(f"\nwall time: {meta['wall_seconds']:.1f}s (including migrate, seeding and cleanup)")


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks, so cleanup still runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000], help="live previews (default 100 1000)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests before each series (default 5)")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per series (default 30)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the generated rows (default 1)")
    parser.add_argument("--show-queries", action="store_true", help="print the SQL of each request kind once")
    args = parser.parse_args(argv)
    if any(not 1 <= s <= 100_000 for s in args.sizes) or args.requests < 1 or args.warmup < 0:
        parser.error("sizes must be 1..100000, --requests >= 1, --warmup >= 0")
    wall_started = time.perf_counter()
    signal.signal(signal.SIGTERM, _terminate)

    setup_django("config.settings_test")
    import django
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.test import Client

    from dashboard import views
    from previews.models import Preview
    from previews.permissions import VIEWERS

    assert views.PAGE_SIZE == PAGE_SIZE, f"the dashboard's page size is now {views.PAGE_SIZE}"
    # The test Client sends Host: testserver. Not django.test.utils.setup_test_environment(): it would also
    # instrument template rendering (a signal and a context copy per template), which is not server time.
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    others = Preview.objects.filter(status__in=Preview.LIVE_STATUSES).count()
    if others:
        log(f"note: {others} live previews of someone else are already in {BENCH_DB}; the page counts them too")

    rng = random.Random(args.seed)
    seeded = Seeded()
    user = None
    client = Client()
    results: list[Result] = []
    try:
        user = User.objects.create_user(username=f"bench-dash-{secrets.token_hex(3)}")
        user.groups.add(Group.objects.get(name=VIEWERS))
        client.force_login(user)
        for size in args.sizes:
            started = time.perf_counter()
            seed(size, rng, seeded)
            log(f"N={size}: seeded {seeded.preview_count} previews in {REPOSITORIES} repositories "
                f"in {time.perf_counter() - started:.2f}s")
            try:
                series = [("full GET /", "/", {}), ("htmx GET / (HX-Request)", "/", {"HTTP_HX_REQUEST": "true"})]
                if size >= 10 * PAGE_SIZE:
                    series.append(("full ?page=10", "/?page=10", {}))
                for label, path, headers in series:
                    results.append(measure(client, size, label, path, headers, args.warmup, args.requests,
                                           args.show_queries))
                    r = results[-1]
                    log(f"N={size} {label}: median {statistics.median(r.ms):.2f} ms, {r.queries[0]} queries")
            finally:
                cleanup_rows(seeded)
    except KeyboardInterrupt:
        log("interrupted; cleaning up before exiting")
        raise
    finally:
        cleanup_rows(seeded)
        client.logout()  # deletes the session row
        if user is not None:
            user.delete()
    meta = {"warmup": args.warmup, "requests": args.requests, "django": django.get_version(),
            "python": sys.version.split()[0], "nproc": len(os.sched_getaffinity(0)),
            "wall_seconds": time.perf_counter() - wall_started}
    print_report(results, meta)
    mismatched = [r for r in results if r.live_shown is not None and r.live_shown != r.size]
    for r in mismatched:
        print(f"note: N={r.size} {r.label}: the page counted {r.live_shown} live previews, not {r.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
