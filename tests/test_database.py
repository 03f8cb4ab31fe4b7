"""The database layer under the hot paths: prepared statements and the round-trip-free health check."""

from __future__ import annotations

import select
import time

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.db.backends.postgresql import base as django_postgresql
from django.test.utils import CaptureQueriesContext

from bridgeproject.dbutil import prepared_cursor
from bridgeproject.pgbackend.base import DatabaseWrapper
from tenancy.models import Tenant

pytestmark = pytest.mark.django_db


def _prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_a_hot_statement_is_prepared_once_and_reused_on_the_connection() -> None:
    sql = "SELECT count(*) FROM tenancy_tenant WHERE tenant_id = %s"
    for name in ("a", "b", "c"):
        with prepared_cursor() as cursor:
            cursor.execute(sql, [name])
            assert cursor.fetchone() == (0,)
    assert sum("FROM tenancy_tenant WHERE tenant_id = $1" in s for s in _prepared_statements()) == 1


def test_a_prepared_statement_raises_djangos_own_integrity_error() -> None:
    Tenant.objects.create(tenant_id="dup")
    with pytest.raises(IntegrityError), transaction.atomic(), prepared_cursor() as cursor:
        cursor.execute("INSERT INTO tenancy_tenant (tenant_id, name, created_at) VALUES (%s, '', now())", ["dup"])


def test_prepared_statements_are_counted_where_django_counts_queries() -> None:
    with CaptureQueriesContext(connection) as queries, prepared_cursor() as cursor:
        cursor.execute("SELECT %s::int + 1", [1])
        assert cursor.fetchone() == (2,)
    assert [q["sql"] for q in queries.captured_queries] == ["SELECT %s::int + 1"]


def test_the_settings_use_the_backend_whose_health_check_reads_the_socket() -> None:
    assert isinstance(connections["default"], DatabaseWrapper)


def _own_connection() -> DatabaseWrapper:
    wrapper = connections.create_connection("default")
    wrapper.ensure_connection()
    return wrapper


def test_an_idle_healthy_connection_is_usable_without_a_query(monkeypatch: pytest.MonkeyPatch) -> None:
    wrapper = _own_connection()
    try:
        round_trips: list[None] = []
        monkeypatch.setattr(django_postgresql.DatabaseWrapper, "is_usable", lambda self: round_trips.append(None))
        assert wrapper.is_usable() is True
        assert round_trips == []
    finally:
        wrapper.close()


def test_a_connection_the_server_terminated_is_found_unusable() -> None:
    wrapper = _own_connection()
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (pid,) = cursor.fetchone()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 5
        while wrapper.is_usable() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert wrapper.is_usable() is False
    finally:
        wrapper.close()


def test_a_connection_with_a_notification_waiting_gets_the_full_check_and_stays_usable() -> None:
    listener, notifier = _own_connection(), _own_connection()
    try:
        with listener.cursor() as cursor:
            cursor.execute("LISTEN bridge_test_channel")
        with notifier.cursor() as cursor:  # its own connection, in autocommit: sent at once
            cursor.execute("SELECT pg_notify('bridge_test_channel', 'hello')")
        # Wait for the notification itself to reach the listener's socket, not for a while.
        readable, _, _ = select.select([listener.connection.fileno()], [], [], 5)
        assert readable, "the notification never arrived"
        assert listener.is_usable() is True
    finally:
        listener.close()
        notifier.close()
