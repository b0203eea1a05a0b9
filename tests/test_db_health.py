"""The database connection's health check (config/postgres): no round trip for a live connection, and a session
the server ended is noticed before the request's first query, against the real Postgres."""

from __future__ import annotations

import time

import pytest
from django.db import connections

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def own_connection():
    """A connection of its own to the test database (the test's `connection` stays as it is)."""
    wrapper = connections.create_connection("default")
    wrapper.health_check_enabled = True
    yield wrapper
    wrapper.close()


def last_query_of(pid: int) -> str:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row[0] if row else ""


def test_a_live_connection_is_usable_without_a_query(own_connection):
    with own_connection.cursor() as cursor:
        cursor.execute("SELECT 'the last query'")
    pid = own_connection.connection.info.backend_pid
    assert own_connection.is_usable()
    own_connection.health_check_done = False
    own_connection.close_if_health_check_failed()
    assert own_connection.connection is not None
    assert last_query_of(pid) == "SELECT 'the last query'"  # no SELECT 1 reached the server


def test_a_session_the_server_ended_is_replaced_before_the_next_query(own_connection):
    with own_connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    pid = own_connection.connection.info.backend_pid
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert cursor.fetchone()[0] is True
    deadline = time.monotonic() + 10
    while own_connection.is_usable() and time.monotonic() < deadline:
        time.sleep(0.05)  # the FATAL message and the end of the stream arrive asynchronously
    assert not own_connection.is_usable()
    own_connection.health_check_done = False
    own_connection.close_if_health_check_failed()  # what Django does before a request's first query
    assert own_connection.connection is None
    with own_connection.cursor() as cursor:  # a new session
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid


def test_a_connection_inside_a_transaction_is_still_checked_with_a_query(own_connection):
    own_connection.set_autocommit(False)
    try:
        with own_connection.cursor() as cursor:
            cursor.execute("SELECT 'in a transaction'")
        pid = own_connection.connection.info.backend_pid
        assert own_connection.is_usable()
        assert last_query_of(pid) == "SELECT 1"
    finally:
        own_connection.rollback()
        own_connection.set_autocommit(True)
