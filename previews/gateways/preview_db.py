"""The shared Postgres server that holds preview data: the only module that talks to it.

Reached through PREVIEWS_DATA_DATABASE_URL as a role with CREATEROLE and CREATEDB (never a
superuser, never the service's own database). For each preview it keeps one role and either
one schema (in the URL's database) or one database (a copy of a template database), all
under one name, and all carrying a marker: a `COMMENT` naming the repository and the PR,
which is how the reaper finds them again and how every destructive step checks that the
object is ours before it touches it.

Rules kept here:

- identifiers are always composed with `psycopg.sql.Identifier`, never formatted into SQL;
  values travel as parameters or `sql.Literal`;
- every identifier is checked to be at most 63 bytes (Postgres would silently truncate it);
- a password never reaches the server in plaintext: the role gets a SCRAM-SHA-256 verifier
  computed here, so it cannot end up in the server's statement log either;
- the data role never runs SQL a preview wrote (the CVE-2018-1058 class): every connection pins
  `search_path=pg_catalog,pg_temp`, every function and catalog is schema-qualified, and no schema
  the data role would trust (`public` included) is handed to a preview's role: in database mode the
  copy's `public` stays the data role's (the preview's role may create in it), in schema mode the
  preview's schema belongs to the data role (the preview's role may use and create in it);
- every fact the service decides on is out of the preview's reach: its role's marker (only a role
  with CREATEROLE may comment on a role), the schema's and database's markers (on objects the data
  role owns), never a comment the preview's role could rewrite;
- teardown runs in the safe order (no more logins, end the sessions, drop the schema or the
  database with FORCE, drop what the role owns, drop the role), every step idempotent, so a
  run that crashed halfway converges when run again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import psycopg
from django.conf import settings
from psycopg import sql

from previews.gateways import errors

SCHEMA = "schema"
DATABASE = "database"
MODES = (SCHEMA, DATABASE)
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1
MARKER_PREFIX = "pr-previews "
NAME_PREFIX = "pv"
SCRAM_ITERATIONS = 4096
SYSTEM_SCHEMA_FILTER = "pg_catalog.left(n.nspname, 3) <> 'pg_' AND n.nspname <> 'information_schema'"
# Only the system catalog is trusted; pg_temp named last so no temporary object can shadow anything.
SAFE_SEARCH_PATH = "pg_catalog,pg_temp"


# --- errors -----------------------------------------------------------------------------


class DataError(errors.GatewayError):
    """A statement on the data server failed, or the request cannot be carried out."""


class DataUnavailable(DataError, errors.Unavailable):
    """The data server is not configured or cannot be reached."""


class NameTooLong(DataError):
    """An identifier longer than Postgres keeps (63 bytes): refused instead of truncated."""


class NotOurs(DataError):
    """An object of that name exists without our marker for this preview; it is never touched."""


# --- names, markers, passwords (pure) ----------------------------------------------------


def check_identifier(name: str) -> str:
    """The name itself, or NameTooLong/DataError: Postgres would silently cut a longer one."""
    if not name or "\x00" in name:
        raise DataError(f"{name!r} is not a usable identifier")
    size = len(name.encode())
    if size > MAX_IDENTIFIER_BYTES:
        raise NameTooLong(f"{name!r} is {size} bytes; Postgres keeps at most {MAX_IDENTIFIER_BYTES} and would "
                          "silently truncate it")
    return name


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(check_identifier(name))


def object_name(repository_id: int, full_name: str, pr_number: int) -> str:
    """The role's, schema's or database's name: `pv<repository id>_<owner_name>_pr<N>`, at most 63 bytes.

    The repository id makes it unique; the slug makes it readable. A slug that does not fit is
    shortened *visibly*, with a hash of the full name in its place, never cut by the server.
    """
    slug = re.sub(r"[^a-z0-9]+", "_", full_name.lower()).strip("_") or "repo"
    head, tail = f"{NAME_PREFIX}{repository_id}_", f"_pr{pr_number}"
    name = head + slug + tail
    if len(name) > MAX_IDENTIFIER_BYTES:
        digest = hashlib.sha256(full_name.encode()).hexdigest()[:8]
        room = MAX_IDENTIFIER_BYTES - len(head) - len(tail) - len(digest) - 1
        if room < 1:
            raise NameTooLong(f"no room for a name for {full_name}#{pr_number}")
        name = f"{head}{slug[:room].rstrip('_')}_{digest}{tail}"
    return check_identifier(name)


@dataclass(frozen=True)
class Owner:
    """Whose data an object is: what the marker names."""

    repository_id: int
    repository: str
    pr_number: int

    def marker(self, kind: str, created_at: datetime | None = None) -> str:
        created = (created_at or datetime.now(UTC)).isoformat(timespec="seconds")
        return MARKER_PREFIX + json.dumps({"created_at": created, "kind": kind, "pr": self.pr_number,
                                           "repository": self.repository, "repository_id": self.repository_id},
                                          sort_keys=True)


@dataclass(frozen=True)
class Marker:
    kind: str
    repository_id: int
    repository: str
    pr_number: int
    created_at: datetime

    @property
    def owner(self) -> Owner:
        return Owner(self.repository_id, self.repository, self.pr_number)

    def belongs_to(self, owner: Owner) -> bool:
        return (self.repository_id, self.pr_number) == (owner.repository_id, owner.pr_number)


def parse_marker(text: str | None) -> Marker | None:
    """The marker in a COMMENT, or None when it is not one of ours (or is malformed)."""
    if not text or not text.startswith(MARKER_PREFIX):
        return None
    try:
        data = json.loads(text[len(MARKER_PREFIX):])
        created = datetime.fromisoformat(data["created_at"])
        marker = Marker(str(data["kind"]), int(data["repository_id"]), str(data["repository"]), int(data["pr"]),
                        created if created.tzinfo else created.replace(tzinfo=UTC))
    except (ValueError, KeyError, TypeError):
        return None
    return marker if marker.kind in ("role", SCHEMA, DATABASE) else None


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier Postgres stores for `password` (RFC 5803 format)."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"


@dataclass(frozen=True)
class Spec:
    """One preview's data: the role, and the schema or database of the same name."""

    mode: str  # SCHEMA or DATABASE
    name: str
    owner: Owner
    template: str = ""  # DATABASE mode: the template database
    connection_limit: int = 10

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise DataError(f"unknown data mode {self.mode!r}")
        check_identifier(self.name)
        if self.mode == DATABASE:
            check_identifier(self.template)


# --- the connection ----------------------------------------------------------------------


def is_configured() -> bool:
    return bool(settings.PREVIEWS_DATA_DATABASE_URL)


def shared_database() -> str:
    return urlsplit(settings.PREVIEWS_DATA_DATABASE_URL).path.lstrip("/")


@contextmanager
def _connect(dbname: str | None = None) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the data server (CREATE/DROP DATABASE cannot run in a transaction)."""
    if not is_configured():
        raise DataError("PREVIEWS_DATA_DATABASE_URL is not set: the schema and database data modes need "
                              "a shared Postgres server")
    timeout_ms = settings.PREVIEWS_DATA_TIMEOUT * 1000
    extra = {"dbname": check_identifier(dbname)} if dbname else {}
    try:
        conn = psycopg.connect(settings.PREVIEWS_DATA_DATABASE_URL, autocommit=True, connect_timeout=5,
                               application_name="pr-previews-data",
                               options=f"-c search_path={SAFE_SEARCH_PATH} -c statement_timeout={timeout_ms} "
                                       f"-c lock_timeout={timeout_ms}", **extra)
    except psycopg.OperationalError as exc:
        raise DataUnavailable(f"the data server cannot be reached: {_first_line(exc)}") from exc
    try:
        with conn:
            yield conn
    except psycopg.OperationalError as exc:
        raise DataUnavailable(f"the data server connection failed: {_first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise DataError(_first_line(exc)) from exc


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]


def _one(conn: psycopg.Connection, query: str, *params):
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


# --- markers on the server ------------------------------------------------------------------

_ROLE_MARKER = "SELECT pg_catalog.shobj_description(oid, 'pg_authid') FROM pg_catalog.pg_roles WHERE rolname = %s"
_DATABASE_MARKER = ("SELECT pg_catalog.shobj_description(oid, 'pg_database'), "
                    "pg_catalog.pg_get_userbyid(datdba) = current_user FROM pg_catalog.pg_database WHERE datname = %s")
# A schema's marker counts only while the data role owns the schema (a preview's role may comment on what
# it owns). Schemas made before that rule belong to the preview's role: its role's marker (which it cannot
# write) speaks for them instead.
_SCHEMA_MARKER = ("SELECT CASE WHEN n.nspowner = r.oid THEN pg_catalog.shobj_description(r.oid, 'pg_authid') "
                  "ELSE pg_catalog.obj_description(n.oid, 'pg_namespace') END, n.nspowner = r.oid "
                  "FROM pg_catalog.pg_namespace n LEFT JOIN pg_catalog.pg_roles r ON r.rolname = n.nspname "
                  "WHERE n.nspname = %s")


def _not_ours(what: str, name: str, owner: Owner) -> NotOurs:
    return NotOurs(f"{what} {name} exists but is not marked as {owner.repository}#{owner.pr_number}'s; "
                   "it is left alone")


def _marked_state(conn: psycopg.Connection, query: str, what: str, name: str, owner: Owner) -> bool:
    """True if our `what` (role, schema) exists, False if there is none of that name; NotOurs if it is someone
    else's."""
    row = conn.execute(query, (name,)).fetchone()
    if row is None:
        return False
    marker = parse_marker(row[0])
    if marker is None or not marker.belongs_to(owner):
        raise _not_ours(what, name, owner)
    return True


def _role_state(conn: psycopg.Connection, name: str, owner: Owner) -> bool:
    return _marked_state(conn, _ROLE_MARKER, "role", name, owner)


def _schema_state(conn: psycopg.Connection, name: str, owner: Owner) -> bool:
    return _marked_state(conn, _SCHEMA_MARKER, "schema", name, owner)


def _database_state(conn: psycopg.Connection, name: str, owner: Owner, role_is_ours: bool) -> bool:
    row = conn.execute(_DATABASE_MARKER, (name,)).fetchone()
    if row is None:
        return False
    marker = parse_marker(row[0])
    if marker is not None and marker.belongs_to(owner):
        return True
    # CREATE DATABASE cannot share a transaction with its COMMENT: a crash between the two leaves an
    # unmarked database that we own, named after our marked role. That one (only) is adopted.
    if row[0] is None and row[1] and role_is_ours:
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            _ident(name), sql.Literal(owner.marker(DATABASE))))
        return True
    raise _not_ours("database", name, owner)


# --- ensure, reset, drop ----------------------------------------------------------------------


@dataclass(frozen=True)
class Ensured:
    created: bool  # the schema or database was created by this call
    database: str  # the database the preview connects to
    size_bytes: int | None


def ensure(spec: Spec, password: str) -> Ensured:
    """Create (or bring back in line) the preview's role and its schema or database. Idempotent."""
    with _connect() as conn:
        _ensure_role(conn, spec, password)
        if spec.mode == SCHEMA:
            created = _ensure_schema(conn, spec)
            return Ensured(created, conn.info.dbname, _size(conn, SCHEMA, spec.name))
        created = _ensure_database(conn, spec)
        _adopt_database_objects(spec)
        return Ensured(created, spec.name, _size(conn, DATABASE, spec.name))


def _ensure_role(conn: psycopg.Connection, spec: Spec, password: str) -> None:
    role = _ident(spec.name)
    options = sql.SQL("LOGIN NOCREATEDB NOCREATEROLE NOINHERIT "
                      "CONNECTION LIMIT {} PASSWORD {}").format(sql.Literal(spec.connection_limit),
                                                                sql.Literal(scram_verifier(password)))
    search_path = _ident(spec.name) if spec.mode == SCHEMA else sql.Identifier("public")
    with conn.transaction():
        if _role_state(conn, spec.name, spec.owner):
            conn.execute(sql.SQL("ALTER ROLE {} WITH ").format(role) + options)
        else:
            conn.execute(sql.SQL("CREATE ROLE {} WITH ").format(role) + options)
            conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(role, sql.Literal(spec.owner.marker("role"))))
        # The data role acts on the preview's objects (comment, terminate, drop) as a member of its role.
        if not _one(conn, "SELECT pg_catalog.pg_has_role(current_user, %s, 'MEMBER')", spec.name):
            conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
        conn.execute(sql.SQL("ALTER ROLE {} SET search_path TO {}").format(role, search_path))


def _ensure_schema(conn: psycopg.Connection, spec: Spec) -> bool:
    schema = _ident(spec.name)
    with conn.transaction():
        exists = _schema_state(conn, spec.name, spec.owner)
        if not exists:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        # The data role owns the schema (so its marker is out of the preview's reach); the preview's role
        # uses it and creates in it. A schema made before this rule is taken back and marked again.
        conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO CURRENT_USER").format(schema))
        conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(schema, sql.Literal(spec.owner.marker(SCHEMA))))
        conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema))
        conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(schema, schema))
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
            _ident(conn.info.dbname), schema))
    return not exists


def _ensure_database(conn: psycopg.Connection, spec: Spec) -> bool:
    database = _ident(spec.name)
    exists = _database_state(conn, spec.name, spec.owner, role_is_ours=True)
    if not exists:
        owned = _one(conn, "SELECT pg_catalog.pg_get_userbyid(datdba) = current_user FROM pg_catalog.pg_database "
                           "WHERE datname = %s", spec.template)
        if owned is None:
            raise DataError(f"the template database {spec.template} does not exist on the data server")
        if owned:
            # No preview's role may connect to the template (PUBLIC may, by default).
            conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(
                _ident(spec.template)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} CONNECTION LIMIT {}").format(
            database, _ident(spec.template), sql.Literal(spec.connection_limit)))
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            database, sql.Literal(spec.owner.marker(DATABASE))))
    with conn.transaction():
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(database, _ident(spec.name)))
    return not exists


# Relations by kind, and the statement that gives each to the preview's role.
_RELATION_ALTER = {"r": "TABLE", "p": "TABLE", "f": "FOREIGN TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW",
                   "S": "SEQUENCE"}
_ROLE_OID = "(SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %(role)s)"
# Schemas the data role keeps: the preview's role gets USAGE and CREATE on them, never ownership.
KEPT_SCHEMAS = ("public",)


def _not_extension_member(catalog: str, oid: str) -> str:
    return (f"NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.{catalog}'"
            f"::pg_catalog.regclass AND e.objid = {oid} AND e.deptype = 'e')")


_ADOPT_QUERY = f"""
SELECT kind, schema, name FROM (
SELECT 'SCHEMA' AS kind, NULL AS schema, n.nspname AS name FROM pg_catalog.pg_namespace n
 WHERE {SYSTEM_SCHEMA_FILTER} AND n.nspowner <> {_ROLE_OID} AND {_not_extension_member('pg_namespace', 'n.oid')}
   AND n.nspname <> ALL (%(kept)s)
UNION ALL
SELECT 'KEEP SCHEMA', NULL, n.nspname FROM pg_catalog.pg_namespace n
 WHERE n.nspname = ANY (%(kept)s) AND n.nspowner = {_ROLE_OID}
UNION ALL
SELECT c.relkind::text, n.nspname, c.relname FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE {SYSTEM_SCHEMA_FILTER} AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S') AND c.relowner <> {_ROLE_OID}
   AND {_not_extension_member('pg_class', 'c.oid')}
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                   WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
                   AND d.deptype IN ('a', 'i') AND c.relkind = 'S')
UNION ALL
SELECT 'TYPE', n.nspname, t.typname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
 WHERE {SYSTEM_SCHEMA_FILTER} AND t.typtype IN ('e', 'd', 'r') AND t.typowner <> {_ROLE_OID}
   AND {_not_extension_member('pg_type', 't.oid')}
UNION ALL
SELECT 'ROUTINE', n.nspname, p.proname FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE {SYSTEM_SCHEMA_FILTER} AND p.proowner <> {_ROLE_OID} AND {_not_extension_member('pg_proc', 'p.oid')}
) adopt ORDER BY kind NOT IN ('SCHEMA', 'KEEP SCHEMA')
"""


def _adopt_database_objects(spec: Spec) -> None:
    """Give the copied schemas, relations, types and routines to the preview's role, so its migrations may
    alter them. (The template's objects must belong to the data role, which owns the copy.)

    `public` is not handed over: the data role keeps it and the preview's role may use and create in it.
    (The data role trusts no schema but pg_catalog anyway; keeping `public` is the second wall.) A `public`
    handed over before this rule is taken back."""
    role = _ident(spec.name)
    with _connect(spec.name) as conn, conn.transaction():
        # First, as a new owner needs CREATE on the schema of what it is given.
        for name in KEPT_SCHEMAS:
            if _one(conn, "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", name):
                conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(_ident(name), role))
        for kind, schema, name in conn.execute(_ADOPT_QUERY, {"role": spec.name,
                                                              "kept": list(KEPT_SCHEMAS)}).fetchall():
            if kind == "SCHEMA":
                conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(_ident(name), role))
                continue
            if kind == "KEEP SCHEMA":
                conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO CURRENT_USER").format(_ident(name)))
                conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(_ident(name), role))
                continue
            what = _RELATION_ALTER.get(kind, kind)
            # A routine is named without arguments: Postgres accepts that when the name is unique in its
            # schema, and refuses (rather than guesses) otherwise.
            conn.execute(sql.SQL("ALTER {} {}.{} OWNER TO {}").format(
                sql.SQL(what), _ident(schema), _ident(name), role))
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(_ident(spec.name)))


def reset(spec: Spec, password: str) -> Ensured:
    """Back to the start: the database is copied again from its template; the schema is recreated empty
    (its migrations run again with the next deploy). Sessions of the preview's role are ended."""
    with _connect() as conn:
        if not _role_state(conn, spec.name, spec.owner):
            pass  # never created: a reset is a first create
        elif spec.mode == SCHEMA:
            _schema_state(conn, spec.name, spec.owner)
            _terminate(conn, spec.name)
            with conn.transaction():
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(_ident(spec.name)))
        else:
            _database_state(conn, spec.name, spec.owner, role_is_ours=True)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(spec.name)))
    return ensure(spec, password)


def _terminate(conn: psycopg.Connection, role: str) -> int:
    return len(conn.execute("SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
                            "WHERE usename = %s AND pid <> pg_catalog.pg_backend_pid()", (role,)).fetchall())


def drop(mode: str, name: str, owner: Owner) -> list[str]:
    """Remove a preview's data in the safe order; idempotent, and convergent after a crash halfway.

    Refuses (NotOurs) to touch anything of that name that does not carry `owner`'s marker.
    Returns the steps that changed something.
    """
    if mode not in MODES:
        raise DataError(f"unknown data mode {mode!r}")
    role = _ident(name)
    done: list[str] = []
    with _connect() as conn:
        role_exists = _role_state(conn, name, owner)
        data_exists = (_schema_state(conn, name, owner) if mode == SCHEMA
                       else _database_state(conn, name, owner, role_is_ours=role_exists))
        if role_exists:
            conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
            done.append("login revoked")
            ended = _terminate(conn, name)
            if ended:
                done.append(f"{ended} sessions ended")
        if data_exists and mode == SCHEMA:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(role))
            done.append(f"schema {name} dropped")
        elif data_exists:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(role))
            done.append(f"database {name} dropped")
        if role_exists:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
            done.append(f"role {name} dropped")
    return done


# --- observing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MarkedObject:
    kind: str  # "role", SCHEMA or DATABASE
    name: str
    comment: str
    size_bytes: int | None

    @property
    def marker(self) -> Marker | None:
        return parse_marker(self.comment)


# A schema owned by its preview's role (made before the data role kept schemas) speaks through its role's
# marker: its own comment is the preview's to rewrite.
LIST_MARKED = f"""
SELECT 'role', r.rolname, d.description, NULL::bigint
  FROM pg_catalog.pg_roles r JOIN pg_catalog.pg_shdescription d
    ON d.objoid = r.oid AND d.classoid = 'pg_catalog.pg_authid'::pg_catalog.regclass
 WHERE d.description LIKE %(prefix)s
UNION ALL
SELECT 'database', db.datname, d.description,
       CASE WHEN pg_catalog.has_database_privilege(db.oid, 'CONNECT') THEN pg_catalog.pg_database_size(db.oid) END
  FROM pg_catalog.pg_database db JOIN pg_catalog.pg_shdescription d
    ON d.objoid = db.oid AND d.classoid = 'pg_catalog.pg_database'::pg_catalog.regclass
 WHERE d.description LIKE %(prefix)s
UNION ALL
SELECT 'schema', name, description, size FROM (
SELECT n.nspname AS name,
       CASE WHEN n.nspowner = r.oid THEN pg_catalog.shobj_description(r.oid, 'pg_authid')
            ELSE pg_catalog.obj_description(n.oid, 'pg_namespace') END AS description,
       (SELECT coalesce(pg_catalog.sum(pg_catalog.pg_total_relation_size(c.oid::pg_catalog.regclass)), 0)::bigint
          FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'm')) AS size
  FROM pg_catalog.pg_namespace n LEFT JOIN pg_catalog.pg_roles r ON r.rolname = n.nspname
 WHERE {SYSTEM_SCHEMA_FILTER}) schemas
 WHERE description LIKE %(prefix)s
"""


def list_marked() -> list[MarkedObject]:
    """Every role, database and schema carrying a pr-previews marker: one query for the whole server."""
    with _connect() as conn:
        rows = conn.execute(LIST_MARKED, {"prefix": MARKER_PREFIX + "{%"}).fetchall()
    return [MarkedObject(kind, name, comment, size) for kind, name, comment, size in rows]


def size_of(mode: str, name: str) -> int | None:
    """Bytes used by one preview's schema or database (None if it does not exist)."""
    with _connect() as conn:
        return _size(conn, mode, name)


def _size(conn: psycopg.Connection, mode: str, name: str) -> int | None:
    if mode == DATABASE:
        return _one(conn, "SELECT pg_catalog.pg_database_size(datname) FROM pg_catalog.pg_database "
                          "WHERE datname = %s", name)
    if _one(conn, "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", name) is None:
        return None
    return _one(conn, "SELECT coalesce(pg_catalog.sum(pg_catalog.pg_total_relation_size(c.oid::pg_catalog.regclass))"
                      ", 0)::bigint FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                      "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'm')", name)


# --- what the preview's pods get -------------------------------------------------------------------


def pod_address() -> tuple[str, int]:
    """(host, port) where the preview's pods reach the server: PREVIEWS_DATA_HOST, else the URL's."""
    parts = urlsplit(settings.PREVIEWS_DATA_DATABASE_URL)
    host, port = parts.hostname or "", parts.port or 5432
    if settings.PREVIEWS_DATA_HOST:
        override = urlsplit(f"//{settings.PREVIEWS_DATA_HOST}")
        host, port = override.hostname or host, override.port or port
    return host, port


def connection_env(spec: Spec, password: str, database: str) -> dict[str, str]:
    """DATABASE_URL and the libpq PG* variables for the preview's `preview-database` Secret."""
    host, port = pod_address()
    netloc_host = f"[{host}]" if ":" in host else host
    url = f"postgres://{quote(spec.name, safe='')}:{quote(password, safe='')}@{netloc_host}:{port}/" \
          f"{quote(database, safe='')}"
    return {"DATABASE_URL": url, "PGHOST": host, "PGPORT": str(port), "PGDATABASE": database, "PGUSER": spec.name,
            "PGPASSWORD": password}
