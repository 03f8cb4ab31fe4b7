"""Writes done as one PostgreSQL statement (the hot paths of intake and execution), and reading their rows."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Generic, TypeVar

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model
from django.db.models.constants import OnConflict


def one_statement() -> AbstractContextManager[object]:
    """Where a single-statement write runs: a statement is atomic by itself, so outside a
    transaction it needs none (no BEGIN/COMMIT round trips); inside a caller's transaction it gets
    a savepoint, so a failure leaves the caller's transaction usable."""
    return transaction.atomic() if connection.in_atomic_block else nullcontext()


class PreparedCursor:
    """A cursor whose statements PostgreSQL parses and plans once per connection.

    Django's psycopg cursors bind values on the client, so the server parses and plans every
    statement again; for the hot paths' fixed statements (a five-insert intake, the claim) that
    planning costs PostgreSQL more CPU than running them. This cursor binds on the server and
    prepares each statement on its first run (psycopg keeps them per connection, 100 at most).
    Errors come out as Django's own exceptions, and statements are logged where Django logs
    queries (tests counting them see these too). Values need types PostgreSQL can settle
    alone: a parameter used in two places may need a cast.
    """

    def __init__(self, raw: Any, db: BaseDatabaseWrapper) -> None:
        self.raw = raw
        self.db = db  # the wrapper itself: each `connection.x` is a thread-local lookup

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> None:
        started = time.monotonic()
        try:
            with self.db.wrap_database_errors:
                self.raw.execute(sql, params, prepare=True)
        finally:
            if self.db.queries_logged:
                self.db.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.raw.fetchone()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.raw.fetchall()

    @property
    def rowcount(self) -> int:
        return self.raw.rowcount


@contextmanager
def prepared_cursor() -> Iterator[Any]:
    """A PreparedCursor on PostgreSQL; Django's own cursor on any other database."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql":
        with db.cursor() as cursor:
            yield cursor
        return
    with db.cursor():  # connects (and health-checks) as Django would
        raw = psycopg.Cursor(db.connection)
        try:
            yield PreparedCursor(raw, db)
        finally:
            raw.close()


_M = TypeVar("_M", bound=Model)


class RowReader(Generic[_M]):
    """A model's columns for a hand-written statement, and its instances from the rows it returns,
    converted as the ORM converts them (JSON decoded, time zones applied): the hot paths select
    what they need in the statement that writes, instead of building and running a queryset."""

    def __init__(self, model: type[_M], alias: str) -> None:
        self.model = model
        self.fields = model._meta.concrete_fields
        self.names = [field.attname for field in self.fields]
        self.columns = ", ".join(f'{alias}."{field.column}"' for field in self.fields)
        self.width = len(self.fields)
        self._converters: list[tuple[int, list[Any], Any]] | None = None

    def read(self, values: Sequence[Any]) -> _M:
        if self._converters is None:
            self._converters = []
            for index, field in enumerate(self.fields):
                column = field.get_col(self.model._meta.db_table)
                found = [*connection.ops.get_db_converters(column), *column.get_db_converters(connection)]
                if found:
                    self._converters.append((index, found, column))
        row = list(values)
        for index, converters, column in self._converters:
            for convert in converters:
                row[index] = convert(row[index], column, connection)
        return self.model.from_db(connection.alias, self.names, row)


_insert_sql: dict[tuple[type[Model], tuple[str, ...]], str] = {}


def insert_unless_conflicting(instance: Model, fields: Sequence[Field]) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING RETURNING id for one instance: its new id, or None when a
    unique constraint already holds the row. The statement is built once per model and field
    list; the values are prepared by each field as the ORM's own insert prepares them. Where the
    database is not PostgreSQL, the manager's insert does the same."""
    model = type(instance)
    if connection.vendor != "postgresql":
        inserted = model._base_manager._insert(  # type: ignore[attr-defined]  # QuerySet._insert (private, proxied onto managers) is not in django-stubs
            [instance], fields=list(fields), returning_fields=[model._meta.pk], on_conflict=OnConflict.IGNORE
        )
        return inserted[0][0] if inserted and inserted[0] is not None else None
    key = (model, tuple(field.attname for field in fields))
    sql = _insert_sql.get(key)
    if sql is None:
        columns = ", ".join(f'"{field.column}"' for field in fields)
        placeholders = ", ".join(["%s"] * len(fields))
        sql = _insert_sql[key] = (
            f'INSERT INTO "{model._meta.db_table}" ({columns}) VALUES ({placeholders}) '  # noqa: S608
            f'ON CONFLICT DO NOTHING RETURNING "{model._meta.pk.column}"'
        )
    values = [field.get_db_prep_save(field.pre_save(instance, add=True), connection) for field in fields]
    with prepared_cursor() as cursor:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    return None if row is None else row[0]


_insert_unless_sql: dict[tuple[type[Model], tuple[str, ...], str, bool], str] = {}


def insert_unless(
    instance: Model, fields: Sequence[Field], *, unless: str, params: Sequence[Any], asynchronous_commit: bool = False
) -> int | None:
    """``INSERT … SELECT … WHERE NOT EXISTS (unless) ON CONFLICT DO NOTHING RETURNING id`` for one
    instance, in one statement (PostgreSQL): its new id, or None when the subquery ``unless``
    (with ``params``) found a row or a unique constraint already holds one. Each value is cast
    to its column's type. ``asynchronous_commit`` (outside a transaction only): the statement's
    own commit does not wait for the WAL to reach the disk (``set_config`` with ``is_local``
    lasts until the end of the statement's implicit transaction, its commit included)."""
    if asynchronous_commit and connection.in_atomic_block:
        raise ValueError("asynchronous_commit would change the commit of the caller's transaction")
    model = type(instance)
    key = (model, tuple(field.attname for field in fields), unless, asynchronous_commit)
    sql = _insert_unless_sql.get(key)
    if sql is None:
        columns = ", ".join(f'"{field.column}"' for field in fields)
        casts = ", ".join(f"CAST(%s AS {field.db_type(connection)})" for field in fields)
        setting = (
            " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS setting" if asynchronous_commit else ""
        )
        sql = _insert_unless_sql[key] = (
            f'INSERT INTO "{model._meta.db_table}" ({columns}) SELECT {casts}{setting} '
            f'WHERE NOT EXISTS ({unless}) ON CONFLICT DO NOTHING RETURNING "{model._meta.pk.column}"'
        )
    values = [field.get_db_prep_save(field.pre_save(instance, add=True), connection) for field in fields]
    with prepared_cursor() as cursor:
        cursor.execute(sql, [*values, *params])
        row = cursor.fetchone()
    return None if row is None else row[0]
