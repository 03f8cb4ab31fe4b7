"""Writes done as one PostgreSQL statement (the hot paths of intake and execution)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from django.db import connection, transaction


def one_statement() -> AbstractContextManager[object]:
    """Where a single-statement write runs: a statement is atomic by itself, so outside a
    transaction it needs none (no BEGIN/COMMIT round trips); inside a caller's transaction it gets
    a savepoint, so a failure leaves the caller's transaction usable."""
    return transaction.atomic() if connection.in_atomic_block else nullcontext()
