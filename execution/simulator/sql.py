"""SQL for the simulator's hot calls, built once per database vendor and reused.

A terminal call costs more CPU in building and compiling its querysets (``get_select``,
``as_sql``, ``select_related``) than PostgreSQL spends answering them, and the lanes make
several per command. These statements are written once from the models' own table and column
names, every value a bound parameter, and rows come back through the converters the ORM
would have applied to the same columns (none on PostgreSQL; decimals and booleans on SQLite),
so callers see the values a queryset would have given them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model, Value

from bridgeproject.dbutil import prepared_cursor

# (column index, Django converter, the expression it was made for)
_Converter = tuple[int, Callable[[Any, Any, Any], Any], Any]


def qn(name: str) -> str:
    return connection.ops.quote_name(name)


def table(model: type[Model]) -> str:
    return qn(model._meta.db_table)


def field(model: type[Model], name: str) -> Field:
    return model._meta.get_field(name)  # type: ignore[return-value]


def column(model: type[Model], name: str, alias: str = "") -> str:
    """``alias.column`` for a model field (``name`` may be an attname such as ``symbol_id``)."""
    col = qn(field(model, name).column)
    return f"{qn(alias)}.{col}" if alias else col


@dataclass(frozen=True)
class Select:
    """A SELECT and the converters of its result columns."""

    sql: str
    converters: tuple[_Converter, ...]

    def rows(self, params: Sequence[Any] | Mapping[str, Any]) -> list[tuple[Any, ...]]:
        with prepared_cursor() as cursor:
            cursor.execute(self.sql, params)
            rows = cursor.fetchall()
        if not self.converters or not rows:
            return rows
        converted = []
        for row in rows:
            values = list(row)
            for index, convert, expression in self.converters:
                values[index] = convert(values[index], expression, connection)
            converted.append(tuple(values))
        return converted


class Columns:
    """The select list of a statement being built, with each column's converters."""

    def __init__(self, db: BaseDatabaseWrapper) -> None:
        self.db = db
        self.sql: list[str] = []
        self.converters: list[_Converter] = []

    def _converters_for(self, expression: Any) -> None:
        index = len(self.sql) - 1
        for convert in self.db.ops.get_db_converters(expression) + expression.get_db_converters(self.db):
            self.converters.append((index, convert, expression))

    def add(self, model: type[Model], names: Iterable[str], alias: str) -> Columns:
        for name in names:
            f = field(model, name)
            self.sql.append(column(model, name, alias))
            self._converters_for(f.get_col(alias))
        return self

    def add_expression(self, sql: str, output_field: Field) -> Columns:
        """A computed column (an aggregate, EXISTS): converted like a non-column expression."""
        self.sql.append(sql)
        self._converters_for(Value(None, output_field=output_field))
        return self

    def select(self, rest: str, *, prefix: str = "") -> Select:
        return Select(f"{prefix}SELECT {', '.join(self.sql)} {rest}", tuple(self.converters))


_cache: dict[tuple[str, str], Any] = {}


def cached(key: str, build: Callable[[BaseDatabaseWrapper], Any]) -> Any:
    """``build(connection)`` once per vendor: the SQL differs between PostgreSQL and SQLite."""
    slot = (connection.vendor, key)
    found = _cache.get(slot)
    if found is None:
        found = _cache[slot] = build(connection)
    return found


def execute(sql: str, params: Sequence[Any] | Mapping[str, Any]) -> int:
    """Run a write; returns the row count."""
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def prep(model: type[Model], values: Mapping[str, Any]) -> dict[str, Any]:
    """Each value as the ORM would send it for its field (decimals rounded to the column on SQLite)."""
    return {name: field(model, name).get_db_prep_save(value, connection) for name, value in values.items()}


def update_sql(model: type[Model], names: Sequence[str]) -> str:
    """``UPDATE table SET name = %(name)s, ... WHERE id = %(pk)s``."""
    sets = ", ".join(f"{column(model, n)} = %({n})s" for n in names)
    return f"UPDATE {table(model)} SET {sets} WHERE {column(model, 'id')} = %(pk)s"  # noqa: S608 - model names


def insert_sql(model: type[Model]) -> tuple[str, tuple[str, ...]]:
    """An INSERT of every concrete field but the primary key, and those fields' names."""
    names = tuple(f.attname for f in model._meta.concrete_fields if not f.primary_key)
    cols = ", ".join(qn(field(model, n).column) for n in names)
    values = ", ".join(f"%({n})s" for n in names)
    return f"INSERT INTO {table(model)} ({cols}) VALUES ({values})", names  # noqa: S608 - model names


def insert(model: type[Model], values: Mapping[str, Any]) -> None:
    """``Model.objects.create(**values)`` without building a model instance or compiling an
    INSERT (no signal receivers listen to the simulator's models; the primary key is not read).
    Missing fields take their model defaults."""
    sql, names = cached(f"insert:{model._meta.label}", lambda db: insert_sql(model))
    meta = model._meta
    row = {}
    for name in names:
        f = meta.get_field(name)
        value = values[name] if name in values else f.get_default()
        row[name] = f.get_db_prep_save(value, connection)
    execute(sql, row)
