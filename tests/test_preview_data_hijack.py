"""A hostile preview on the shared data server: it never gets the data role to run its SQL, and never
makes its data outlive it (the real local Postgres plays the server).

The preview's role plants functions that shadow the ones the data role calls (an exact-type match beats
pg_catalog's own, the CVE-2018-1058 class); each writes who called it into a log. After the next deploy,
size measure, listing and teardown, the log is empty.
"""

from __future__ import annotations

import contextlib
import itertools
from datetime import timedelta

import psycopg
import pytest
from django.utils import timezone
from psycopg import sql

from previews import data_reaper
from previews.gateways import preview_db
from previews.gateways.preview_db import DATABASE, SCHEMA, Owner, Spec
from previews.models import Repository

pytestmark = pytest.mark.django_db
PASSWORD = "not-a-real-password-0123456789abcdefghijk"
_numbers = itertools.count(1)

# Each takes the exact argument types the data role's queries pass (name, oid, integer), where pg_catalog's
# own needs an implicit cast: without a pinned search_path these would win.
SHADOWS = {
    "left(name, integer)": ("text", "pg_catalog.left($1::text, $2)"),
    "pg_total_relation_size(oid)": ("bigint", "pg_catalog.pg_total_relation_size($1::regclass)"),
    "pg_terminate_backend(integer)": ("boolean", "false"),
    "obj_description(oid, text)": ("text", "pg_catalog.obj_description($1, $2::name)"),
    "shobj_description(oid, text)": ("text", "pg_catalog.shobj_description($1, $2::name)"),
}


@pytest.fixture
def make_spec(data_settings):
    made: list[Spec] = []

    def make(mode: str) -> Spec:
        repository_id = 800_000 + next(_numbers) * 10 + (hash(data_settings.prefix) % 10)
        owner = Owner(repository_id, "evil/corp", next(_numbers))
        spec = Spec(mode=mode, name=preview_db.object_name(repository_id, "evil/corp", owner.pr_number), owner=owner,
                    template=data_settings.template if mode == DATABASE else "")
        made.append(spec)
        return spec

    yield make
    for spec in made:
        with contextlib.suppress(preview_db.DataError):
            preview_db.drop(spec.mode, spec.name, spec.owner)


def plant_shadows(conn: psycopg.Connection, log: str) -> None:
    """As the preview's role: functions in `public` that log their caller, then answer plausibly."""
    for signature, (returns, body) in SHADOWS.items():
        conn.execute(f"CREATE FUNCTION public.{signature} RETURNS {returns} LANGUAGE plpgsql AS $f$ BEGIN "
                     f"INSERT INTO {log} VALUES (current_user::text || ' via {signature.split('(')[0]}'); "
                     f"RETURN {body}; END $f$")


def logged(server, dbname: str, log: str) -> list[str]:
    with server.connect(dbname) as conn:
        return [who for (who,) in conn.execute(f"SELECT who FROM {log}").fetchall()]


def test_a_database_previews_shadowing_functions_never_run_as_the_data_role(make_spec, data_settings):
    server = data_settings
    spec = make_spec(DATABASE)
    preview_db.ensure(spec, PASSWORD)
    with server.connect(spec.name, user=spec.name, password=PASSWORD) as conn:
        # Its migrations may create in public (tables, and functions too)...
        conn.execute("CREATE TABLE public.pwned (who text)")
        conn.execute("GRANT INSERT ON public.pwned TO PUBLIC")
        plant_shadows(conn, "public.pwned")
        conn.execute("SELECT public.left('x'::name, 1)")  # the trap works when called
        conn.execute("DELETE FROM public.pwned")

    # The next push: adopt the copy's objects again, measure it, list every marked object.
    assert preview_db.ensure(spec, PASSWORD).size_bytes > 0
    assert preview_db.size_of(DATABASE, spec.name) > 0
    assert any(o.name == spec.name for o in preview_db.list_marked())
    assert logged(server, spec.name, "public.pwned") == []

    with server.connect(spec.name) as conn:
        public_owner = conn.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'"
                                    ).fetchone()[0]
    assert public_owner != spec.name  # public is never handed to the preview's role
    with server.connect(spec.name, user=spec.name, password=PASSWORD) as conn, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("ALTER SCHEMA public RENAME TO mine")
    assert preview_db.drop(DATABASE, spec.name, spec.owner)[-1] == f"role {spec.name} dropped"


def test_a_public_handed_over_before_is_taken_back_by_the_next_deploy(make_spec, data_settings):
    server = data_settings
    spec = make_spec(DATABASE)
    preview_db.ensure(spec, PASSWORD)
    with server.connect(spec.name) as conn:
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(spec.name)))
    preview_db.ensure(spec, PASSWORD)
    with server.connect(spec.name) as conn:
        assert conn.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'"
                            ).fetchone()[0] == server.admin
    with server.connect(spec.name, user=spec.name, password=PASSWORD) as conn:
        conn.execute("CREATE TABLE public.still_allowed (x int)")  # its migrations still create in public


@pytest.fixture
def writable_public(data_settings):
    """The shared database as on Postgres <= 14: everyone may create in public. And a log only the superuser
    owns, that outlives every preview object."""
    server = data_settings
    log = sql.Identifier(f"{server.prefix}_pwned")
    with server.connect(server.shared) as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        conn.execute(sql.SQL("CREATE TABLE public.{} (who text)").format(log))
        conn.execute(sql.SQL("GRANT INSERT ON public.{} TO PUBLIC").format(log))
    yield f"public.{server.prefix}_pwned"
    with server.connect(server.shared) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.execute(sql.SQL("DROP TABLE public.{}").format(log))
        for signature in SHADOWS:
            conn.execute(f"DROP FUNCTION IF EXISTS public.{signature}")


def test_a_schema_previews_shadowing_functions_never_run_as_the_data_role(make_spec, data_settings,
                                                                          writable_public):
    server = data_settings
    spec = make_spec(SCHEMA)
    preview_db.ensure(spec, PASSWORD)
    with server.connect(server.shared, user=spec.name, password=PASSWORD) as conn:
        conn.execute("CREATE TABLE t AS SELECT pg_catalog.generate_series(1, 100) AS x")
        plant_shadows(conn, writable_public)
    held = server.connect(server.shared, user=spec.name, password=PASSWORD)  # teardown ends this session

    assert preview_db.ensure(spec, PASSWORD).created is False
    assert preview_db.size_of(SCHEMA, spec.name) > 0
    assert any(o.name == spec.name for o in preview_db.list_marked())
    steps = preview_db.drop(SCHEMA, spec.name, spec.owner)
    held.close()
    assert steps[0] == "login revoked" and steps[-1] == f"role {spec.name} dropped"
    assert logged(server, server.shared, writable_public) == []


# --- schema mode: the marker is out of the preview's reach ------------------------------------------


def forged(owner: Owner) -> str:
    return Owner(owner.repository_id + 1, "someone/else", owner.pr_number + 1).marker(SCHEMA)


def test_a_schema_preview_cannot_rewrite_its_schemas_marker(make_spec, data_settings):
    server = data_settings
    spec = make_spec(SCHEMA)
    preview_db.ensure(spec, PASSWORD)
    with server.connect(server.shared, user=spec.name, password=PASSWORD) as conn:
        conn.execute("CREATE TABLE notes (body text)")  # it still creates in its schema
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(sql.Identifier(spec.name),
                                                                      sql.Literal(forged(spec.owner))))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("COMMENT ON ROLE {} IS 'mine'").format(sql.Identifier(spec.name)))
    assert preview_db.drop(SCHEMA, spec.name, spec.owner) == [
        "login revoked", f"schema {spec.name} dropped", f"role {spec.name} dropped"]


def legacy_schema_with_forged_marker(server, spec: Spec) -> None:
    """A schema made before the data role kept schemas (owned by the preview's role), whose preview then
    rewrote its marker."""
    with server.connect(server.shared) as conn:
        conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(spec.name),
                                                                   sql.Identifier(spec.name)))
    with server.connect(server.shared, user=spec.name, password=PASSWORD) as conn:
        conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(sql.Identifier(spec.name),
                                                                  sql.Literal(forged(spec.owner))))


def test_teardown_drops_an_older_schema_whose_preview_rewrote_the_marker(make_spec, data_settings):
    server = data_settings
    spec = make_spec(SCHEMA)
    preview_db.ensure(spec, PASSWORD)
    legacy_schema_with_forged_marker(server, spec)
    assert preview_db.drop(SCHEMA, spec.name, spec.owner) == [
        "login revoked", f"schema {spec.name} dropped", f"role {spec.name} dropped"]


def test_the_next_deploy_takes_an_older_schema_back_from_its_preview(make_spec, data_settings):
    server = data_settings
    spec = make_spec(SCHEMA)
    preview_db.ensure(spec, PASSWORD)
    legacy_schema_with_forged_marker(server, spec)
    preview_db.ensure(spec, PASSWORD)
    with server.connect(server.shared) as conn:
        owner, comment = conn.execute("SELECT nspowner::regrole::text, obj_description(oid, 'pg_namespace') "
                                      "FROM pg_namespace WHERE nspname = %s", (spec.name,)).fetchone()
    assert owner == server.admin and preview_db.parse_marker(comment).belongs_to(spec.owner)


def test_the_data_reaper_drops_an_orphaned_schema_whose_preview_rewrote_the_marker(make_spec, data_settings,
                                                                                   settings):
    server = data_settings
    settings.PREVIEWS_REAPER_GRACE_MINUTES = 0
    settings.PREVIEWS_DATA_REAPER_MAX_DROPS = 50
    repository = Repository.objects.create(owner="evil", name=f"corp-{server.prefix}", base_domain="x.dev",
                                           namespace_prefix=f"e{server.prefix[-6:]}")
    spec = Spec(mode=SCHEMA, name=preview_db.object_name(repository.pk, repository.full_name, 5),
                owner=Owner(repository.pk, repository.full_name, 5))
    preview_db.ensure(spec, PASSWORD)
    try:
        legacy_schema_with_forged_marker(server, spec)
        marked = {(o.kind, o.name): o.marker for o in preview_db.list_marked()}
        assert marked[(SCHEMA, spec.name)].belongs_to(spec.owner)  # its role's marker speaks for it
        cycle = data_reaper.run_cycle(now=timezone.now() + timedelta(minutes=1))
        decision = next(d for d in cycle.plan.decisions if d.name == spec.name)
        assert (decision.action, decision.reason) == (data_reaper.DROP, data_reaper.ORPHAN)
        assert not any(o.name == spec.name for o in preview_db.list_marked())
    finally:
        with contextlib.suppress(preview_db.DataError):
            preview_db.drop(SCHEMA, spec.name, spec.owner)
