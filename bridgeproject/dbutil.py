"""Writes done as one PostgreSQL statement (the hot paths of intake and execution), and reading their rows."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from django.db import connection, transaction
from django.db.models import Model


def one_statement() -> AbstractContextManager[object]:
    """Where a single-statement write runs: a statement is atomic by itself, so outside a
    transaction it needs none (no BEGIN/COMMIT round trips); inside a caller's transaction it gets
    a savepoint, so a failure leaves the caller's transaction usable."""
    return transaction.atomic() if connection.in_atomic_block else nullcontext()


class RowReader:
    """A model's columns for a hand-written statement, and its instances from the rows it returns,
    converted as the ORM converts them (JSON decoded, time zones applied): the hot paths select
    what they need in the statement that writes, instead of building and running a queryset."""

    def __init__(self, model: type[Model], alias: str) -> None:
        self.model = model
        self.fields = model._meta.concrete_fields
        self.names = [field.attname for field in self.fields]
        self.columns = ", ".join(f'{alias}."{field.column}"' for field in self.fields)
        self.width = len(self.fields)
        self._converters: list[tuple[int, list[Any], Any]] | None = None

    def read(self, values: Sequence[Any]) -> Model:
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
