"""The shared-server gateway for preview data, against the real local Postgres (playing the shared server)."""

from __future__ import annotations

import base64
import contextlib
import hmac
import itertools
import re
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from previews.gateways import preview_db
from previews.gateways.preview_db import DATABASE, SCHEMA, Owner, Spec
from tests.data_server import TEMPLATE_ROWS

pytestmark = pytest.mark.django_db
PASSWORD = "not-a-real-password-0123456789abcdefghijk"
_numbers = itertools.count(1)


@pytest.fixture
def make_spec(data_settings):
    """Specs for fresh previews (an unused repository id each), dropped again after the test."""
    made: list[Spec] = []

    def make(mode: str, pr: int | None = None, repository: str = "acme/shop", limit: int = 5) -> Spec:
        repository_id = 900_000 + next(_numbers) * 10 + (hash(data_settings.prefix) % 10)
        pr = pr or next(_numbers)
        owner = Owner(repository_id, repository, pr)
        spec = Spec(mode=mode, name=preview_db.object_name(repository_id, repository, pr), owner=owner,
                    template=data_settings.template if mode == DATABASE else "", connection_limit=limit)
        made.append(spec)
        return spec

    yield make
    for spec in made:
        with contextlib.suppress(preview_db.DataError):
            preview_db.drop(spec.mode, spec.name, spec.owner)


def rows(conn: psycopg.Connection, query: str, *params) -> list:
    return conn.execute(query, params).fetchall()


def exists(server, kind: str, name: str) -> bool:
    query = {"role": "SELECT 1 FROM pg_roles WHERE rolname = %s",
             "database": "SELECT 1 FROM pg_database WHERE datname = %s",
             "schema": "SELECT 1 FROM pg_namespace WHERE nspname = %s"}[kind]
    with server.connect(server.shared) as conn:
        return bool(rows(conn, query, name))


# --- names, markers, passwords (pure) ------------------------------------------------------------


@pytest.mark.parametrize(("repository_id", "full_name", "pr", "expected"), [
    (7, "acme/shop", 42, "pv7_acme_shop_pr42"),
    (7, "Acme-Corp/Shop.Web", 1, "pv7_acme_corp_shop_web_pr1"),
    (12, "---/...", 3, "pv12_repo_pr3"),
])
def test_object_names_come_from_the_repository_and_pr(repository_id, full_name, pr, expected):
    assert preview_db.object_name(repository_id, full_name, pr) == expected


def test_a_name_that_would_pass_63_bytes_is_shortened_visibly_and_stays_unique():
    long_a = "a-very-long-organisation-name/" + "x" * 90
    long_b = "a-very-long-organisation-name/" + "x" * 89 + "y"
    a = preview_db.object_name(123456, long_a, 2_147_483_647)
    b = preview_db.object_name(123456, long_b, 2_147_483_647)
    assert len(a.encode()) <= 63 and len(b.encode()) <= 63
    assert a != b  # the hash of the full name keeps them apart
    assert a.startswith("pv123456_a_very_long") and a.endswith("_pr2147483647")


@pytest.mark.parametrize(("name", "ok"), [("x" * 63, True), ("x" * 64, False), ("é" * 31, True),
                                          ("é" * 32, False), ("", False)])
def test_identifiers_over_63_bytes_are_refused_never_truncated(name, ok):
    if ok:
        assert preview_db.check_identifier(name) == name
    else:
        with pytest.raises(preview_db.DataError):
            preview_db.check_identifier(name)


def test_the_server_refuses_work_on_a_name_it_would_truncate(data_settings):
    owner = Owner(1, "acme/shop", 1)
    with pytest.raises(preview_db.NameTooLong):
        Spec(mode=SCHEMA, name="p" * 64, owner=owner)
    with pytest.raises(preview_db.NameTooLong):
        preview_db.drop(SCHEMA, "p" * 64, owner)


@pytest.mark.parametrize(("comment", "parsed"), [
    (Owner(5, "acme/shop", 9).marker("schema", datetime(2026, 1, 2, tzinfo=UTC)),
     ("schema", 5, "acme/shop", 9)),
    ('pr-previews {"created_at": "2026-01-02T00:00:00", "kind": "role", "pr": 1, "repository": "a/b", '
     '"repository_id": 2}', ("role", 2, "a/b", 1)),
    ("pr-previews {not json", None),
    ('pr-previews {"kind": "schema", "pr": 1}', None),  # fields missing
    ('pr-previews {"created_at": "2026-01-02T00:00:00", "kind": "table", "pr": 1, "repository": "a/b", '
     '"repository_id": 2}', None),  # a kind we never create
    ("someone else's comment", None),
    (None, None),
])
def test_markers_parse_only_when_they_are_ours_and_whole(comment, parsed):
    marker = preview_db.parse_marker(comment)
    if parsed is None:
        assert marker is None
    else:
        assert (marker.kind, marker.repository_id, marker.repository, marker.pr_number) == parsed


def verifier_matches(verifier: str, password: str) -> bool:
    """Does a stored SCRAM verifier accept `password`? (The server's own check, redone here.)"""
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier or "")
    if not match:
        return False
    iterations, salt = int(match.group(1)), base64.b64decode(match.group(2))
    return hmac.compare_digest(preview_db.scram_verifier(password, salt, iterations), verifier)


def test_a_scram_verifier_accepts_its_password_only():
    verifier = preview_db.scram_verifier("s3cret")
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    assert "s3cret" not in verifier
    assert verifier_matches(verifier, "s3cret")
    assert not verifier_matches(verifier, "s3cret!")


# --- schema mode ------------------------------------------------------------------------------


def test_schema_mode_create_use_reset_drop(make_spec, data_settings):
    server = data_settings
    spec = make_spec(SCHEMA)
    ensured = preview_db.ensure(spec, PASSWORD)
    assert ensured.created and ensured.database == server.shared
    assert preview_db.ensure(spec, PASSWORD).created is False  # idempotent

    with server.connect(server.shared, user=spec.name) as conn:
        assert rows(conn, "SHOW search_path") == [(spec.name,)]
        conn.execute("CREATE TABLE notes (body text)")  # lands in its own schema through search_path
        conn.execute("INSERT INTO notes VALUES ('hello')")
        assert rows(conn, "SELECT schemaname FROM pg_tables WHERE tablename = 'notes'") == [(spec.name,)]

    with server.connect("postgres") as conn:
        role = rows(conn, "SELECT rolconnlimit, rolsuper, rolcreaterole, rolcreatedb, rolpassword FROM pg_authid "
                          "WHERE rolname = %s", spec.name)[0]
    assert role[:4] == (5, False, False, False)
    assert verifier_matches(role[4], PASSWORD)  # the server holds a verifier, not the password

    preview_db.reset(spec, PASSWORD)
    with server.connect(server.shared, user=spec.name) as conn:
        assert rows(conn, "SELECT count(*) FROM pg_tables WHERE schemaname = %s", spec.name) == [(0,)]

    steps = preview_db.drop(SCHEMA, spec.name, spec.owner)
    assert steps == ["login revoked", f"schema {spec.name} dropped", f"role {spec.name} dropped"]
    assert not exists(server, "schema", spec.name) and not exists(server, "role", spec.name)
    assert preview_db.drop(SCHEMA, spec.name, spec.owner) == []  # again: nothing left to do


# --- database mode ----------------------------------------------------------------------------


def test_database_mode_copies_the_template_and_reset_brings_its_rows_back(make_spec, data_settings):
    server = data_settings
    spec = make_spec(DATABASE)
    ensured = preview_db.ensure(spec, PASSWORD)
    assert ensured.created and ensured.database == spec.name and ensured.size_bytes > 0

    with server.connect(spec.name, user=spec.name) as conn:
        assert [r for (r,) in rows(conn, "SELECT name FROM items ORDER BY id")] == list(TEMPLATE_ROWS)
        conn.execute("INSERT INTO items (name) VALUES ('durian')")
        # It owns the copied objects, so its migrations can change them.
        conn.execute("ALTER TABLE items ADD COLUMN price int")
        conn.execute("ALTER TYPE fruit_kind ADD VALUE 'vine'")
        assert rows(conn, "SELECT item_count()") == [(4,)]
        assert rows(conn, "SELECT count(*) FROM item_names") == [(4,)]

    preview_db.reset(spec, PASSWORD)
    with server.connect(spec.name, user=spec.name) as conn:
        assert [r for (r,) in rows(conn, "SELECT name FROM items ORDER BY id")] == list(TEMPLATE_ROWS)
        assert "price" not in [c.name for c in conn.execute("SELECT * FROM items LIMIT 0").description]

    assert preview_db.drop(DATABASE, spec.name, spec.owner) == [
        "login revoked", f"database {spec.name} dropped", f"role {spec.name} dropped"]
    assert not exists(server, "database", spec.name) and not exists(server, "role", spec.name)


def test_a_missing_template_is_a_clear_error(make_spec, data_settings):
    spec = make_spec(DATABASE)
    spec = Spec(mode=DATABASE, name=spec.name, owner=spec.owner, template=f"{data_settings.prefix}_nope")
    with pytest.raises(preview_db.DataError, match=r"template database .* does not exist"):
        preview_db.ensure(spec, PASSWORD)


# --- isolation --------------------------------------------------------------------------------


def test_previews_cannot_reach_each_other_public_or_the_service(make_spec, data_settings, settings):
    server = data_settings
    a_db, b_db = make_spec(DATABASE), make_spec(DATABASE)
    a_schema, b_schema = make_spec(SCHEMA), make_spec(SCHEMA)
    for spec in (a_db, b_db, a_schema, b_schema):
        preview_db.ensure(spec, PASSWORD)

    # A cannot connect to B's database, nor to the template.
    for target in (b_db.name, server.template):
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            server.connect(target, user=a_db.name)

    # Cannot see into or touch B's schema.
    with server.connect(server.shared, user=a_schema.name) as conn, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(sql.SQL("CREATE TABLE {}.t (x int)").format(sql.Identifier(b_schema.name)))
    with server.connect(server.shared, user=b_schema.name) as conn:
        conn.execute("CREATE TABLE secrets (x int)")
    with server.connect(server.shared, user=a_schema.name) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("SELECT * FROM {}.secrets").format(sql.Identifier(b_schema.name)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(b_schema.name)))
        # Cannot create in public.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.sneaky (x int)")
        # Cannot become anyone else.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(b_schema.name)))

    # Cannot read the service's own tables.
    service_db = settings.DATABASES["default"]["NAME"]
    try:
        conn = server.connect(service_db, user=a_schema.name)
    except psycopg.OperationalError:
        return  # cannot even connect: better still
    with conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM public.previews_preview")


# --- teardown ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [SCHEMA, DATABASE])
def test_a_drop_while_the_preview_is_connected_ends_its_sessions(make_spec, data_settings, mode):
    server = data_settings
    spec = make_spec(mode)
    ensured = preview_db.ensure(spec, PASSWORD)
    held = server.connect(ensured.database, user=spec.name)
    held.execute("SELECT 1")
    steps = preview_db.drop(mode, spec.name, spec.owner)
    assert f"role {spec.name} dropped" in steps
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    held.close()
    assert not exists(server, "role", spec.name)


@pytest.mark.parametrize(("mode", "crash_after"), [
    (SCHEMA, "nologin"), (SCHEMA, "data dropped"), (SCHEMA, "owned dropped"),
    (DATABASE, "nologin"), (DATABASE, "data dropped"), (DATABASE, "owned dropped"),
])
def test_a_drop_that_crashed_halfway_converges_when_run_again(make_spec, data_settings, mode, crash_after):
    server = data_settings
    spec = make_spec(mode)
    preview_db.ensure(spec, PASSWORD)
    role = sql.Identifier(spec.name)
    # Play the steps of the drop up to the crash, as the data role would have.
    with server.connect(server.shared, user=server.admin) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
        if crash_after in ("data dropped", "owned dropped"):
            what = "SCHEMA {} CASCADE" if mode == SCHEMA else "DATABASE {} WITH (FORCE)"
            conn.execute(sql.SQL("DROP " + what).format(role))
        if crash_after == "owned dropped":
            conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
    preview_db.drop(mode, spec.name, spec.owner)
    assert not exists(server, "role", spec.name) and not exists(server, mode, spec.name)


def test_a_database_created_but_not_yet_marked_is_adopted_by_the_next_run(make_spec, data_settings):
    """CREATE DATABASE and its COMMENT cannot share a transaction; a crash between them converges."""
    server = data_settings
    spec = make_spec(DATABASE)
    preview_db.ensure(spec, PASSWORD)
    with server.connect("postgres") as conn:
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(sql.Identifier(spec.name)))
    assert preview_db.ensure(spec, PASSWORD).created is False
    assert preview_db.drop(DATABASE, spec.name, spec.owner)[1] == f"database {spec.name} dropped"


@pytest.mark.parametrize("kind", ["role", SCHEMA, DATABASE])
def test_objects_not_marked_as_this_previews_are_never_touched(make_spec, data_settings, kind):
    server = data_settings
    spec = make_spec(SCHEMA if kind != DATABASE else DATABASE)
    name = sql.Identifier(spec.name)
    with server.connect(server.shared) as conn:
        if kind == "role":
            conn.execute(sql.SQL("CREATE ROLE {}").format(name))
        elif kind == SCHEMA:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(name))
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    try:
        with pytest.raises(preview_db.NotOurs):
            preview_db.ensure(spec, PASSWORD)
        with pytest.raises(preview_db.NotOurs):
            preview_db.drop(spec.mode, spec.name, spec.owner)
        other = Owner(spec.owner.repository_id + 1, "acme/other", spec.owner.pr_number)
        with pytest.raises(preview_db.NotOurs):
            preview_db.drop(spec.mode, spec.name, other)
        assert exists(server, kind, spec.name)
    finally:
        with server.connect(server.shared) as conn:
            what = {"role": "ROLE", SCHEMA: "SCHEMA", DATABASE: "DATABASE"}[kind]
            conn.execute(sql.SQL(f"DROP {what} IF EXISTS {{}}").format(name))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(name))


def test_one_query_lists_every_marked_object_with_its_size(make_spec, data_settings):
    schema, database = make_spec(SCHEMA), make_spec(DATABASE)
    preview_db.ensure(schema, PASSWORD)
    preview_db.ensure(database, PASSWORD)
    found = {(o.kind, o.name): o for o in preview_db.list_marked()}
    assert {("role", schema.name), ("schema", schema.name), ("role", database.name),
            ("database", database.name)} <= set(found)
    assert found[("database", database.name)].size_bytes > 1_000_000
    assert found[("schema", schema.name)].size_bytes == 0
    assert found[("schema", schema.name)].marker.belongs_to(schema.owner)


def test_the_connection_settings_for_pods(make_spec, data_settings, settings):
    spec = make_spec(DATABASE)
    env = preview_db.connection_env(spec, "pw/+:@", spec.name)
    assert env["DATABASE_URL"] == (f"postgres://{spec.name}:pw%2F%2B%3A%40@{data_settings.host}:"
                                   f"{data_settings.port}/{spec.name}")
    settings.PREVIEWS_DATA_HOST = "pg.data.svc:6432"
    env = preview_db.connection_env(spec, "pw", spec.name)
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGDATABASE"]) == (
        "pg.data.svc", "6432", spec.name, spec.name)
