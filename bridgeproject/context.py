"""Per-request (or per-task) context carried into every log line: correlation, tenant, account, command."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("bridge_log_context", default=None)


def current() -> dict[str, str]:
    """The context of the current request or task (empty outside one)."""
    return _context.get() or {}


def bind(**values: object) -> None:
    """Add values to the current context (None values are ignored)."""
    merged = dict(current())
    merged.update({k: str(v) for k, v in values.items() if v is not None})
    _context.set(merged)


@contextmanager
def scope(**values: object) -> Iterator[None]:
    """A fresh context for one request or one task."""
    token = _context.set({k: str(v) for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        _context.reset(token)
