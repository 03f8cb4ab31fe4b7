"""How the normal lane makes way for the fast lane on shared cores.

The lanes have their own workers, but they share the cores, the database and an account's
terminal lock: a protective close that starts while normal commands keep starting shares all
three with them. So a fast command says when it is at work (PostgreSQL NOTIFY: 'busy' when it is
claimed, 'idle' when it finishes or pauses to retry), and a normal worker, before it starts its
next command, waits while any is — for at most NORMAL_LANE_YIELD_MS, so a fast command whose
worker died, or one that keeps retrying, never holds the normal lane up for long. Waiting
between commands, never inside one, keeps every normal command's own work uninterrupted.

Listening costs a normal worker nothing per command: notices arrive on its own connection with
the answers to its queries, and one non-blocking look before each claim reads any others. On
SQLite there is no NOTIFY and the normal lane does not wait.
"""

from __future__ import annotations

import select
import time
import weakref
from typing import Any

from django.conf import settings
from django.db import connection

CHANNEL = "bridge_fast_lane"
# A 'busy' without its 'idle' (a fast worker killed mid-command) stops counting after this long.
AT_WORK_AT_MOST_SECONDS = 2.0

_at_work: dict[str, float] = {}  # fast command pk -> when it said busy (monotonic)
_listening: weakref.ReferenceType[Any] | None = None  # the psycopg connection that LISTENs


def notice_sql(state: str) -> str:
    """A SELECT-list expression that tells the normal lane a fast command (row `c`) is `state`."""
    return f"pg_notify('{CHANNEL}', '{state}:' || c.id)"


def say(state: str, pk: int) -> None:
    """Tell the normal lane fast command `pk` is `state` (delivered when the transaction commits)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, f"{state}:{pk}"])


def _heard(payload: str) -> None:
    state, _, pk = payload.partition(":")
    if state == "busy":
        _at_work[pk] = time.monotonic()
    else:
        _at_work.pop(pk, None)


def _listener() -> Any:
    """This process's connection, listening on the channel (again, after a reconnect)."""
    global _listening
    connection.ensure_connection()
    raw = connection.connection
    if _listening is None or _listening() is not raw:
        _at_work.clear()  # what a closed connection heard may have ended unheard
        raw.add_notify_handler(lambda notice: _heard(notice.payload))
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        _listening = weakref.ref(raw)
    return raw


def fast_lane_at_work() -> bool:
    now = time.monotonic()
    for pk, said_at in list(_at_work.items()):
        if now - said_at > AT_WORK_AT_MOST_SECONDS:
            _at_work.pop(pk, None)
    return bool(_at_work)


def yield_to_the_fast_lane() -> float:
    """Before a normal command starts: wait while fast commands are at work, for at most
    NORMAL_LANE_YIELD_MS; returns the seconds waited."""
    if not settings.NORMAL_LANE_YIELD_MS or connection.vendor != "postgresql" or connection.in_atomic_block:
        return 0.0
    raw = _listener()
    started = time.monotonic()
    give_up = started + settings.NORMAL_LANE_YIELD_MS / 1000
    _read_notices(raw, 0)  # what arrived since this worker's last query
    while fast_lane_at_work():
        left = give_up - time.monotonic()
        if left <= 0:
            break
        _read_notices(raw, min(left, 0.005))
    return time.monotonic() - started


def _read_notices(raw: Any, wait: float) -> None:
    """Notices already on the connection's socket, after waiting up to `wait` seconds for one.

    libpq's own reading, not psycopg's notifies() generator, which psycopg says is unreliable
    beside the handler that hears the notices arriving with query answers."""
    pgconn = raw.pgconn
    if wait > 0:
        select.select([pgconn.socket], [], [], wait)
    pgconn.consume_input()
    while (notice := pgconn.notifies()) is not None:
        _heard(notice.extra.decode())
