"""Every per-process cache of the bridge, with its bound and what invalidates it, in one table.

A cache here is memory a process keeps between requests, tasks or monitor cycles. Two of them
once grew every web worker by tens of MB (CHANGELOG, session 5), so each one is declared below
and nowhere else: `docs/architecture.md` lists this table, `python manage.py caches` prints it
with each cache's size in a running process, `forget_all()` empties the ones that can be
emptied (tests), and the suite holds each bounded cache within its bound.

`target` names the container (with len() and clear()) as "module:attribute", resolved when
asked, so this module imports nothing of the apps above it. A cache that lives on an instance
(one per gateway or monitor) has no target: its bound is its owner's.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cache:
    name: str
    where: str
    bound: str
    invalidated_by: str
    target: str | None = None  # "module:attribute" of a container with len() and clear()
    limit: int | None = None  # the bound as a number of entries, where it is one
    holds_rows: bool = False  # holds database rows or their outcomes (not code-derived, like statements)


CACHES: tuple[Cache, ...] = (
    Cache(
        "bearer token → principal",
        "tenancy.auth",
        "10,000 tokens (emptied past it); one last-used time per token",
        "API_TOKEN_CACHE_SECONDS per entry; revoking a token in the admin empties it in that process",
        target="tenancy.auth:token_cache",
        holds_rows=True,
        limit=10_001 * 2,
    ),
    Cache(
        "blocked clients",
        "bridgeproject.ratelimit",
        "10,000 clients, expired blocks dropped first",
        "the end of each client's block",
        target="bridgeproject.ratelimit:auth_failures",
        holds_rows=True,
        limit=10_001,
    ),
    Cache(
        "tenant id → tenant",
        "commands.intake",
        "one per tenant",
        "never: a tenant row's identity does not change",
        target="commands.intake:_tenants",
        holds_rows=True,
    ),
    Cache(
        "(tenant, login, server) → account",
        "commands.intake",
        "100,000 (emptied past it)",
        "never: an account never changes tenant",
        target="commands.intake:_accounts",
        holds_rows=True,
        limit=100_001,
    ),
    Cache(
        "idempotency key → stored response",
        "commands.idempotency",
        "the latest 1,000 (REMEMBER_AT_MOST), oldest out first",
        "never: a committed response never changes; a prune empties it",
        target="commands.idempotency:_remembered",
        holds_rows=True,
        limit=1_000,
    ),
    Cache(
        "lane → broker",
        "commands.services",
        "one per lane and broker kind",
        "never",
        target="commands.services:_brokers",
    ),
    Cache(
        "transition statement per set of changed fields",
        "commands.sql",
        "one per field set the code writes (a handful)",
        "never",
        target="commands.sql:_transitions",
    ),
    Cache(
        "INSERT … ON CONFLICT statement per model and fields",
        "bridgeproject.dbutil",
        "one per model and field list the code writes",
        "never",
        target="bridgeproject.dbutil:_insert_sql",
    ),
    Cache(
        "simulator statement per name and database vendor",
        "execution.simulator.sql",
        "one per statement and vendor",
        "never",
        target="execution.simulator.sql:_cache",
    ),
    Cache(
        "the MT5 gateway",
        "execution.gateways",
        "one per process",
        "reset_gateway (MT5_BACKEND is read once)",
    ),
    Cache(
        "one adapter per terminal, and one module per transport (official, mt5linux)",
        "execution.gateways",
        "per gateway: one per terminal this process has served",
        "reset_gateway; a terminal's address changed makes a new one (the old one stays until then)",
    ),
    Cache(
        "entry costs of open positions; currency digits and margin mode per account",
        "execution.adapters.official",
        "per gateway: one entry per open position and per account",
        "closed positions are dropped when their account is read",
    ),
    Cache(
        "fast commands at work",
        "execution.yielding",
        "one per fast command at work",
        "its `idle` notice; ignored after 2 s; emptied on reconnect",
        target="execution.yielding:_at_work",
        holds_rows=True,
    ),
    Cache(
        "account → parsed policy",
        "risk.engine",
        "one per account",
        "a newer snapshot of the account replaces it",
        target="risk.engine:_policies",
        holds_rows=True,
    ),
    Cache(
        "account → risk row and its version",
        "risk.sql",
        "200,000 accounts (emptied past it)",
        "the row's version (xmin on PostgreSQL) moving",
        target="risk.sql:_states",
        holds_rows=True,
        limit=200_001,
    ),
    Cache(
        "breaches whose protective action is committed",
        "risk.protection",
        "200,000 (emptied past it)",
        "never: a committed action is unique",
        target="risk.protection:_recorded",
        holds_rows=True,
        limit=200_001,
    ),
    Cache(
        "(time zone, reset time) → trading calendar",
        "risk.rules",
        "10,000 calendars (emptied past it); each remembers its current day and weekend windows",
        "never: a calendar is a pure function of its zone and reset time",
        target="risk.rules:_CALENDARS",
        limit=10_001,
    ),
    Cache(
        "trading day → its name (YYYY-MM-DD)",
        "risk.rules",
        "1,000 days (emptied past it)",
        "never: a name is a pure function of its date",
        target="risk.rules:_DAY_NAMES",
        limit=1_001,
    ),
    Cache(
        "the accounts with a policy",
        "risk.monitor",
        "per monitor: every watched account",
        "the policies' fingerprint changing, or 60 s",
    ),
)


def _resolve(reference: str) -> Any:
    module, attribute = reference.split(":")
    return getattr(importlib.import_module(module), attribute)


def size(cache: Cache) -> int | None:
    """Entries held now in this process, or None where the cache is not one container."""
    return None if cache.target is None else len(_resolve(cache.target))


def forget_all() -> None:
    """Empty every cache that holds database rows or their outcomes (tests: each test's rows are
    new). Code-derived ones (statements, validators, brokers) stay: they hold no data."""
    for cache in CACHES:
        if cache.holds_rows and cache.target is not None:
            _resolve(cache.target).clear()
