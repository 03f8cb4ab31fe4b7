"""The lease of the fast command a worker executes, renewed by a thread of the worker.

A fast command is claimed with a lease of FAST_LANE_LEASE_SECONDS (`Command.lease_until`). While
it executes, a thread of the worker moves the lease on every FAST_LANE_LEASE_RENEW_SECONDS; when
the worker dies the renewals stop, and the sweeper sends the command back to its lane about a
second later (the next attempt reconciles with MT5 before sending anything).

Each renewal is a compare-and-set on the lease the worker last wrote, so it doubles as a fencing
token: once the sweeper has taken the command back (or another worker has claimed it since), the
renewal finds another value, the lease is *lost*, and the runner sends nothing more and records
nothing for it (`LeaseLost`).
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from commands.models import Command
from commands.states import State

logger = logging.getLogger("bridge.execution")


class LeaseLost(Exception):
    """The command's lease lapsed and was taken back: another worker owns the command now."""


class _Keeper:
    """The renewing thread of one worker process and the lease it holds (one command at a time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pk: int | None = None
        self._until: datetime | None = None
        self._lost = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def hold(self, pk: int, until: datetime) -> None:
        with self._lock:
            self._pk, self._until, self._lost = pk, until, False
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()  # a forked worker starts its own thread
                self._thread = threading.Thread(target=self._run, name="fast-lease", daemon=True)
                self._thread.start()
        self._wake.set()

    def release(self, pk: int) -> None:
        with self._lock:
            if self._pk == pk:
                self._pk = self._until = None

    def lost(self, pk: int) -> bool:
        with self._lock:
            return self._pk == pk and self._lost

    def _run(self) -> None:
        every = settings.FAST_LANE_LEASE_RENEW_SECONDS
        while True:
            self._wake.wait(every)
            self._wake.clear()
            with self._lock:
                pk, until, lost = self._pk, self._until, self._lost
            if pk is None or until is None or lost:
                connection.close()  # nothing held: no connection kept open for nothing
                continue
            renewed = timezone.now() + timedelta(seconds=settings.FAST_LANE_LEASE_SECONDS)
            try:
                moved = Command.objects.filter(pk=pk, state=State.EXECUTING, lease_until=until).update(
                    lease_until=renewed
                )
            except Exception:  # PostgreSQL restarting: the lease may lapse, which is what it is for
                logger.warning("could not renew the command's lease", exc_info=True)
                connection.close()
                continue
            with self._lock:
                if self._pk != pk:
                    continue  # finished meanwhile
                if moved:
                    self._until = renewed
                else:
                    self._lost = True
                    logger.warning("the command's lease was taken back; another worker has it", extra={"pk": pk})
            close_old_connections()


_keeper = _Keeper()


def hold(command: Command) -> None:
    """Start renewing the lease of `command` (a claimed fast command).

    Not inside a transaction (a test's): a claim nobody else can see yet needs no lease, and the
    renewing thread's own connection would only wait for the caller's row lock."""
    if command.lease_until is not None and not connection.in_atomic_block:
        _keeper.hold(command.pk, command.lease_until)


def release(command: Command) -> None:
    _keeper.release(command.pk)


def check(command: Command) -> None:
    """Raise LeaseLost when the command's lease was taken back: nothing more may be sent for it."""
    if command.lease_until is not None and _keeper.lost(command.pk):
        raise LeaseLost(command.command_id)
