"""Benchmark: preview data on the shared server, per create, reset and drop, beside `pg_dump | psql`.

    cd /work/main && .venv/bin/python bench/data.py [--previews 100] [--template-mb 100] [--batch 20] \\
        [--baseline-runs 3] [--json]

Setup (all under a unique prefix `bd<hex>`, dropped at the end, also after an error or Ctrl-C): on the Postgres
of DATABASE_URL (the local `scripts/postgres` server by default), as its superuser, a data role with CREATEROLE
and CREATEDB only (what the service is given), a shared database for schema mode, and a template database owned
by the data role and seeded by it with one table of at least --template-mb megabytes (rows of 100 random-ish
bytes, a primary key; the size reported is `pg_database_size`).

Measured, through the service's own gateway (`previews.gateways.preview_db`, the code a deploy runs):

- schema mode: `ensure` (role + schema + grants + marker), `reset` (drop and recreate the schema), `drop`
  (NOLOGIN, end sessions, DROP SCHEMA CASCADE, DROP OWNED, DROP ROLE), for N previews;
- database mode: `ensure` (role + `CREATE DATABASE ... TEMPLATE` + grants + ownership of the copied objects),
  `reset` (DROP DATABASE WITH (FORCE) and copy again), `drop`, for N previews;
- baseline, what a team does by hand: `createdb` + `pg_dump <template> | psql <new>` of the same template,
  --baseline-runs times (each is slow, so fewer runs).

Previews are handled in batches of --batch (create the batch, reset it, drop it), so at most that many copies
of the template exist at once. Prints n, median, p95 (linear interpolation), min and max in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import base_database_url, cpu_model, log  # noqa: E402


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * 0.95
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict:
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 1), "p95_ms": round(p95(ms), 1),
            "min_ms": round(min(ms), 1), "max_ms": round(max(ms), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--previews", type=int, default=100)
    parser.add_argument("--template-mb", type=int, default=100)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--baseline-runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    base = urlsplit(base_database_url())
    host, port, superuser = base.hostname or "127.0.0.1", str(base.port or 5432), base.username or "postgres"
    prefix = f"bd{uuid.uuid4().hex[:6]}"
    admin, shared, template = f"{prefix}_admin", f"{prefix}_shared", f"{prefix}_tmpl"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")
    os.environ["PREVIEWS_DATA_DATABASE_URL"] = f"postgres://{admin}@{host}:{port}/{shared}"
    import django

    django.setup()
    import psycopg
    from psycopg import sql

    from previews.gateways import preview_db

    def connect(dbname: str, user: str = superuser) -> psycopg.Connection:
        return psycopg.connect(host=host, port=port, user=user, dbname=dbname, autocommit=True)

    ident = sql.Identifier
    results: dict = {"cpu": cpu_model(), "cores": os.cpu_count(), "previews": args.previews}
    try:
        with connect("postgres") as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE CREATEDB").format(ident(admin)))
            for name in (shared, template):
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(ident(name), ident(admin)))
        log(f"seeding {template} with about {args.template_mb} MB ...")
        started = time.monotonic()
        rows = args.template_mb * 1024 * 1024 // 140  # ~140 bytes per row with its tuple header and index entry
        with connect(template, admin) as conn:
            conn.execute("CREATE TABLE events (id bigserial PRIMARY KEY, payload text NOT NULL)")
            conn.execute("INSERT INTO events (payload) SELECT md5(i::text) || md5((i * 7)::text) || "
                         "md5((i * 13)::text) FROM generate_series(1, %s) i", (rows,))
            conn.execute("CREATE TABLE customers (id serial PRIMARY KEY, name text)")
            conn.execute("INSERT INTO customers (name) SELECT 'customer ' || i FROM generate_series(1, 1000) i")
            conn.execute("VACUUM ANALYZE")
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        results["template_bytes"] = size
        results["seed_seconds"] = round(time.monotonic() - started, 1)
        log(f"template is {size / 1e6:.1f} MB (seeded in {results['seed_seconds']} s)")

        for mode in (preview_db.SCHEMA, preview_db.DATABASE):
            times: dict[str, list[float]] = {"create": [], "reset": [], "drop": []}
            for start in range(0, args.previews, args.batch):
                specs = [preview_db.Spec(mode=mode, name=f"{prefix}_{mode[0]}{i}",
                                         owner=preview_db.Owner(1, "bench/data", i),
                                         template=template if mode == preview_db.DATABASE else "")
                         for i in range(start + 1, min(start + args.batch, args.previews) + 1)]
                for step, call in (("create", lambda s: preview_db.ensure(s, "pw")),
                                   ("reset", lambda s: preview_db.reset(s, "pw")),
                                   ("drop", lambda s: preview_db.drop(s.mode, s.name, s.owner))):
                    for spec in specs:
                        t0 = time.monotonic()
                        call(spec)
                        times[step].append(time.monotonic() - t0)
                log(f"{mode}: {len(times['create'])}/{args.previews}")
            results[mode] = {step: summary(values) for step, values in times.items()}

        baseline = []
        for i in range(args.baseline_runs):
            target = f"{prefix}_dump{i}"
            t0 = time.monotonic()
            env = {**os.environ, "PGHOST": host, "PGPORT": port, "PGUSER": admin}
            subprocess.run(["createdb", target], check=True, env=env)
            dump = subprocess.Popen(["pg_dump", "--no-owner", template], stdout=subprocess.PIPE, env=env)
            subprocess.run(["psql", "-q", "-o", "/dev/null", "-v", "ON_ERROR_STOP=1", target], stdin=dump.stdout,
                           check=True, env=env)
            dump.stdout.close()
            if dump.wait() != 0:
                raise RuntimeError("pg_dump failed")
            baseline.append(time.monotonic() - t0)
            log(f"pg_dump | psql #{i + 1}: {baseline[-1]:.1f} s")
            with connect("postgres") as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident(target)))
        results["pg_dump_psql"] = summary(baseline)
    finally:
        with connect("postgres") as conn:
            for (db,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                      (prefix + "%",)).fetchall():
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(db)))
            for (role,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s",
                                        (prefix + "%",)).fetchall():
                conn.execute(sql.SQL("DROP OWNED BY {}").format(ident(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(ident(role)))

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"preview data, {args.previews} previews, template {results['template_bytes'] / 1e6:.1f} MB, "
          f"{results['cores']} cores ({results['cpu']})")
    print(f"{'':28} {'n':>4} {'median ms':>10} {'p95 ms':>10} {'min ms':>10} {'max ms':>10}")
    rows = [(f"{mode} {step}", results[mode][step]) for mode in ("schema", "database")
            for step in ("create", "reset", "drop")] + [("pg_dump | psql (createdb+copy)", results["pg_dump_psql"])]
    for label, s in rows:
        print(f"{label:28} {s['n']:>4} {s['median_ms']:>10} {s['p95_ms']:>10} {s['min_ms']:>10} {s['max_ms']:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
