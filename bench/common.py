"""Helpers the benchmark scripts share: logging, and the separate database `previews_bench` they all run against.

The scripts are run as `.venv/bin/python bench/<name>.py` from the repository root; each puts the root on
`sys.path` before importing this module as `bench.common`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
# PREVIEWS_BENCH_DB: another database name, so that benchmarks run by several people on one server don't collide.
BENCH_DB = os.environ.get("PREVIEWS_BENCH_DB", "").strip() or "previews_bench"


def log(message: str) -> None:
    """Print a progress line to stderr (stdout is kept for the report)."""
    print(message, file=sys.stderr, flush=True)


def cpu_model(fallback: str = "unknown") -> str:
    """The CPU's model name from /proc/cpuinfo, or `fallback` when it has none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return fallback


def env_or_script(variable: str, script: str, *args: str) -> str:
    """The environment variable when set, or else what `scripts/<script> <args>` prints."""
    value = os.environ.get(variable, "").strip()
    if value:
        return value
    out = subprocess.run([str(ROOT / "scripts" / script), *args], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def base_database_url() -> str:
    """DATABASE_URL from the environment, or else the one `scripts/postgres url` prints."""
    return env_or_script("DATABASE_URL", "postgres", "url")


def ensure_bench_database(url: str) -> str:
    """Create `previews_bench` on the server of `url` if absent; return a DATABASE_URL pointing at it."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    conninfo: dict[str, Any] = {"host": parts.hostname or "127.0.0.1", "port": parts.port or 5432,
                                "user": parts.username or "previews", "dbname": "postgres", "connect_timeout": 10}
    if parts.password:
        conninfo["password"] = parts.password
    try:
        with psycopg.connect(**conninfo, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone():
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
                    log(f"created database {BENCH_DB}")
                except psycopg.errors.DuplicateDatabase:
                    pass  # another benchmark created it meanwhile
    except psycopg.OperationalError as exc:
        raise SystemExit(f"cannot reach Postgres at {parts.hostname}:{parts.port} ({exc}); "
                         "start it with scripts/postgres up") from exc
    return urlunsplit((parts.scheme, parts.netloc, f"/{BENCH_DB}", "", ""))


def setup_django(settings_module: str = "config.settings_test") -> None:
    """Set up Django in this process on the bench database, and migrate it.

    Sets DJANGO_SETTINGS_MODULE to `settings_module`, LOG_LEVEL to WARNING unless it is set, and DATABASE_URL to
    `previews_bench` (created when absent); settings read the environment once, so anything else the caller
    needs must be in os.environ before this. Then `django.setup()`, a check that the default database really is
    `previews_bench`, and `migrate` (verbosity 0).
    """
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # keeps django-q's "Enqueued ..." lines out of the reports
    os.environ["DATABASE_URL"] = ensure_bench_database(base_database_url())

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    assert settings.DATABASES["default"]["NAME"] == BENCH_DB, "refusing to run outside the bench database"
    call_command("migrate", verbosity=0)
