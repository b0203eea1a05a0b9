"""The shared data server for tests: the project's local Postgres plays it.

A session gets its own non-superuser role with CREATEROLE and CREATEDB (the service's data role),
a shared database for schema mode and a seeded template database, all named with a unique
prefix, and drops all of it (and every preview role it made) afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from django.conf import settings
from psycopg import sql

TEMPLATE_ROWS = ("apple", "banana", "cherry")


@dataclass(frozen=True)
class DataServer:
    prefix: str
    admin: str
    shared: str
    template: str
    host: str
    port: str
    superuser: str

    @property
    def url(self) -> str:
        return f"postgres://{self.admin}@{self.host}:{self.port}/{self.shared}"

    def connect(self, dbname: str, user: str | None = None, **kw) -> psycopg.Connection:
        return psycopg.connect(host=self.host, port=self.port, dbname=dbname, user=user or self.superuser,
                               autocommit=True, connect_timeout=5, **kw)


def _seed_template(server: DataServer) -> None:
    # Seeded by the data role, which therefore owns the objects the copies hand to each preview's role.
    with server.connect(server.template, user=server.admin) as conn:
        conn.execute("CREATE TYPE fruit_kind AS ENUM ('tree', 'bush')")
        conn.execute("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, kind fruit_kind)")
        conn.execute("CREATE VIEW item_names AS SELECT name FROM items")
        conn.execute("CREATE FUNCTION item_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM items'")
        for name in TEMPLATE_ROWS:
            conn.execute("INSERT INTO items (name, kind) VALUES (%s, 'tree')", (name,))


def drop_everything(server: DataServer) -> None:
    """As the superuser: every database and role this session made, whatever state a test left."""
    with server.connect("postgres") as conn:
        roles = [r for (r,) in conn.execute(
            "SELECT r.rolname FROM pg_roles r JOIN pg_auth_members m ON m.roleid = r.oid "
            "JOIN pg_roles a ON a.oid = m.member WHERE a.rolname = %s", (server.admin,)).fetchall()]
        dbs = [d for (d,) in conn.execute(
            "SELECT datname FROM pg_database WHERE pg_get_userbyid(datdba) = %s OR datname LIKE %s",
            (server.admin, server.prefix + "%")).fetchall()]
        for db in dbs:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        for role in [*roles, server.admin]:
            for db in ("postgres", settings.DATABASES["default"]["NAME"]):
                try:
                    with server.connect(db) as c:
                        c.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                except psycopg.Error:
                    pass
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(scope="session")
def data_server(django_db_setup, django_db_blocker) -> Iterator[DataServer]:
    db = settings.DATABASES["default"]
    prefix = f"wt12t_{uuid.uuid4().hex[:6]}"
    server = DataServer(prefix=prefix, admin=f"{prefix}_admin", shared=f"{prefix}_shared",
                        template=f"{prefix}_tmpl", host=db["HOST"], port=str(db["PORT"]), superuser=db["USER"])
    with server.connect("postgres") as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE CREATEDB NOSUPERUSER").format(
            sql.Identifier(server.admin)))
        for name in (server.shared, server.template):
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name),
                                                                       sql.Identifier(server.admin)))
    _seed_template(server)
    try:
        yield server
    finally:
        drop_everything(server)


@pytest.fixture
def data_settings(data_server: DataServer, settings) -> DataServer:
    settings.PREVIEWS_DATA_DATABASE_URL = data_server.url
    settings.PREVIEWS_DATA_HOST = ""
    settings.PREVIEWS_DATA_EGRESS_CIDR = ""
    return data_server
