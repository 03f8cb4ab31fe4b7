"""One owner per terminal (ARCHITECTURE.md, "Real MT5 topology").

A terminal holds one logged-in account for every process attached to it, so exactly one process
at a time drives it: the holder of its **lease**, a row of ``TerminalLease`` renewed every
``TERMINAL_LEASE_RENEW_SECONDS`` and lapsing ``TERMINAL_LEASE_SECONDS`` after its holder stops
renewing it (dies). Every MT5 call for an account goes through the owner of its terminal:

- a process that owns the terminal runs the call itself, under the terminal's ``PriorityLock``:
  one call at a time, the most urgent waiting call first (``Priority``: fast-lane commands, then
  sync reads, then the risk monitor's reads and normal-lane commands in the order they came). A call in progress is
  never interrupted; a bulk read takes the lock once per account, so a fast command waits for at
  most one account's read;
- a process that does not sends it to the owner as a durable row (``TerminalCall``) and rings the
  owner's doorbell (PostgreSQL ``NOTIFY``); the owner claims calls most urgent first, runs them
  under the same lock, writes the answer back to the row and rings the caller's own doorbell,
  upon which the caller reads it (and reads it anyway now and then, should a ring be lost);
- a process that finds the terminal without a live owner takes the lease itself. The terminal
  hosts (``manage.py terminalhost``) take every terminal they can, so in production they own
  them all; in a single process (the tests, a shell) the process owns what it uses.

Nothing is run twice: a call is claimed by one owner, once. A caller that gives up before its call
was claimed withdraws it (it then never runs); one whose call was claimed by an owner that died
gets ``GatewayUnavailable`` — the outcome is unknown, and a command reconciles by tag before it
sends anything again, as after any lost answer. Calls and answers travel pickled and signed with
the secret key (django-q2's ``SignedPackage``, the same trust as its own tasks).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import hashlib
import heapq
import itertools
import logging
import os
import queue
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, connections
from django.db.models import Q
from django_q.signing import SignedPackage

from execution.gateway import GatewayUnavailable
from execution.models import TerminalCall, TerminalLease

logger = logging.getLogger("bridge.execution")

CHANNEL = "terminal_call"
# A function run on the terminal's owner (``TerminalRouter.run_on_owner``): a whole command's
# attempt in one round trip, its gateway calls made there.
RUN = "run"
# Calls that take the terminal per step rather than once for all: a bulk read once per account
# (a fast command waits for one account's read, not for the whole terminal's), a function run on
# the owner once per gateway call it makes.
SELF_LOCKING = frozenset({"account_snapshots", RUN})


class Priority(IntEnum):
    """Which waiting call a terminal serves first (lower first; equal ones in the order they came)."""

    FAST = 0  # a fast-lane command: protection
    SYNC = 1  # Laravel's sync read, waiting on an HTTP request
    # The risk monitor's reads and normal-lane commands take turns: on a shared terminal the
    # monitor's cycle (a login per account) never ends before the next is due, and ranked above
    # normal work it would starve it. A bulk read takes the terminal one account at a time, so a
    # normal command waits for at most one account's read, and a read for at most one command.
    MONITOR = 2
    NORMAL = 2


_priority: contextvars.ContextVar[Priority] = contextvars.ContextVar("terminal_call_priority", default=Priority.NORMAL)


@contextmanager
def call_priority(priority: Priority) -> Iterator[None]:
    """Every terminal call made inside runs at ``priority``."""
    token = _priority.set(priority)
    try:
        yield
    finally:
        _priority.reset(token)


def current_priority() -> Priority:
    return _priority.get()


class PriorityLock:
    """One holder at a time; when it lets go, the most urgent waiter (then the oldest) goes next."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held = False
        self._waiting: list[tuple[int, int]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        """How many callers wait for the lock now."""
        with self._cond:
            return len(self._waiting)

    @contextmanager
    def held(self, priority: int) -> Iterator[None]:
        me = (int(priority), next(self._seq))
        with self._cond:
            heapq.heappush(self._waiting, me)
            while self._held or self._waiting[0] != me:
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._held = True
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()


_CALLS = TerminalCall._meta.db_table
# An answered call still here this long after its deadline has lost its caller.
ABANDONED_MSC = 600_000


def _now_msc() -> int:
    return time.time_ns() // 1_000_000


def _lease_msc() -> int:
    return round(float(settings.TERMINAL_LEASE_SECONDS) * 1000)


def _safe_seconds() -> float:
    """How long after a renewal began we may act as the owner: the lease less one renewal period
    (the margin for a renewal that is late, and for clocks a little apart)."""
    return float(settings.TERMINAL_LEASE_SECONDS) - float(settings.TERMINAL_LEASE_RENEW_SECONDS)


class Owners:
    """This process's side of terminal ownership: its leases, and the calls it serves or sends.

    Its database work goes through a connection of its own, in autocommit: a lease or a call is
    visible to the other processes at once, whatever transaction the calling thread is in.
    """

    def __init__(self, run_local: Callable[[str, str, tuple[Any, ...], dict[str, Any]], Any]) -> None:
        """``run_local(terminal, method, args, kwargs)`` runs a call on this process's own adapter
        of the terminal (the owner's side)."""
        self.holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # A terminal host (terminalhost, riskmonitor --host-terminals): it takes terminals whatever
        # TERMINAL_OWNERS says.
        self.host = False
        self._pid = os.getpid()
        self._run_local = run_local
        self._mutex = threading.Lock()
        self._db_lock = threading.RLock()
        self._local = threading.local()
        self._dbs: list[Any] = []  # every private connection, to close them all on stop()
        # Terminals another process owned when we last looked: name -> monotonic time to look again.
        self._elsewhere: dict[str, float] = {}
        # name -> monotonic time until which our lease surely holds (renewed by our thread).
        self._owned: dict[str, float] = {}
        self._locks: dict[str, PriorityLock] = {}
        self._threads_started = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        _everyone.add(self)
        self._calls: queue.Queue[TerminalCall | None] = queue.Queue()
        # Idle workers. A call is claimed only when a worker is free to run it at once, so the
        # calls waiting stay in the table, where the most urgent is claimed first: a fast command
        # never queues here behind reads claimed before it came.
        self._idle = threading.Semaphore(0)
        self._next_sweep = 0.0
        # The fast calls running here (id -> when claimed, monotonic): while one runs, only fast
        # calls are claimed (for at most TERMINAL_FAST_ALONE_SECONDS), so a protective close
        # shares the process, the cores and the database with no read or normal command that
        # started after it.
        self._fast: dict[int, float] = {}
        # The fast calls running in this process now (claimed, or made here by a fast caller):
        # while any runs, the other calls already running here wait before their next step
        # (``give_way``), so the close has the process to itself, not a share of it. How many
        # wait so now: ``giving_way`` (health and tests).
        self._fast_here = 0
        self._fast_done = threading.Condition(self._mutex)
        self.giving_way = 0
        # The caller's side: the calls this process waits for (id -> its event, set when its
        # answer's doorbell rings) and the thread listening for those rings.
        self._answers: dict[int, threading.Event] = {}
        self._answer_listener: threading.Thread | None = None
        self.channel = answer_channel(self.holder)
        self._workers: list[threading.Thread] = []
        self._loops: list[threading.Thread] = []

    # --- the private connection ---------------------------------------------------------------
    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        """A cursor on this thread's private connection (each thread its own: the monitor's
        readers wait for many owners at once, and one shared connection made them queue)."""
        db = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != os.getpid():
            db = self._local.db = connections.create_connection("default")
            self._local.pid = os.getpid()
            with self._db_lock:
                self._dbs.append(db)
        try:
            db.ensure_connection()
            with db.cursor() as cursor:
                yield cursor
        except Exception:
            try:
                db.close()
            except Exception:  # noqa: S110 - it was broken already
                pass
            self._local.db = None
            raise

    # --- leases ---------------------------------------------------------------------------------
    def lock_of(self, name: str) -> PriorityLock:
        with self._mutex:
            lock = self._locks.get(name)
            if lock is None:
                lock = self._locks[name] = PriorityLock()
            return lock

    def owns(self, name: str) -> bool:
        return self._owned.get(name, 0.0) > time.monotonic()

    def owned(self) -> list[str]:
        now = time.monotonic()
        return [name for name, until in list(self._owned.items()) if until > now]

    def take(self, name: str) -> bool:
        """Take the terminal's lease if nobody holds it (or ours lapsed); True when ours now."""
        started = time.monotonic()
        now = _now_msc()
        lease = TerminalLease._meta.db_table
        with self._cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {lease} (name, holder, host, pid, expires_msc, taken_msc) "  # noqa: S608 - the model's table
                "VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, host = excluded.host, "
                "pid = excluded.pid, expires_msc = excluded.expires_msc, taken_msc = excluded.taken_msc "
                f"WHERE {lease}.expires_msc < %s OR {lease}.holder = excluded.holder",
                [name, self.holder, socket.gethostname(), os.getpid(), now + _lease_msc(), now, now],
            )
            cursor.execute(f"SELECT holder FROM {lease} WHERE name = %s", [name])  # noqa: S608
            row = cursor.fetchone()
        mine = row is not None and row[0] == self.holder
        if mine:
            if name not in self._owned:
                logger.info("terminal lease taken", extra={"terminal": name})
            self._owned[name] = started + _safe_seconds()
            self._start_threads()
        return mine

    def holder_of(self, name: str) -> tuple[str, bool] | None:
        """(holder, live) of the terminal's lease, or None when it never had one."""
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT holder, expires_msc FROM {TerminalLease._meta.db_table} WHERE name = %s",  # noqa: S608
                [name],
            )
            row = cursor.fetchone()
        return None if row is None else (row[0], int(row[1]) > _now_msc())

    def renew(self) -> list[str]:
        """Move our leases on; returns the ones we lost (another process took them over)."""
        names = list(self._owned)
        if not names:
            return []
        started = time.monotonic()
        lease = TerminalLease._meta.db_table
        marks = ", ".join(["%s"] * len(names))
        with self._cursor() as cursor:
            cursor.execute(
                f"UPDATE {lease} SET expires_msc = %s WHERE holder = %s AND name IN ({marks}) RETURNING name",  # noqa: S608
                [_now_msc() + _lease_msc(), self.holder, *names],
            )
            kept = {row[0] for row in cursor.fetchall()}
        lost = []
        for name in names:
            if name in kept:
                self._owned[name] = started + _safe_seconds()
            else:
                self._owned.pop(name, None)
                lost.append(name)
                logger.error("terminal lease lost", extra={"terminal": name})
        return lost

    def release_all(self) -> None:
        names = list(self._owned)
        self._owned.clear()
        if not names:
            return
        marks = ", ".join(["%s"] * len(names))
        try:
            with self._cursor() as cursor:
                cursor.execute(
                    f"DELETE FROM {TerminalLease._meta.db_table} WHERE holder = %s AND name IN ({marks})",  # noqa: S608
                    [self.holder, *names],
                )
        except Exception:  # shutting down: the leases lapse anyway
            logger.exception("could not release the terminal leases")

    # --- the caller's side ------------------------------------------------------------------------
    def call(
        self, name: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, timeout: float | None = None
    ) -> Any:
        """Run ``method`` on the terminal's owner: here when we own it (or can take it), else there."""
        priority = current_priority()
        while True:
            if self.owns(name) or (self._elsewhere.get(name, 0.0) <= time.monotonic() and self.own_if_free(name)):
                with self.fast_running() if priority == Priority.FAST else contextlib.nullcontext():
                    if method in SELF_LOCKING:
                        return self._run_local(name, method, args, kwargs)
                    self.give_way()
                    with self.lock_of(name).held(priority):
                        if self.owns(name):
                            return self._run_local(name, method, args, kwargs)
                continue  # lost it while waiting: go round
            outcome = self._remote(name, method, args, kwargs, priority, timeout)
            if outcome is not _WITHDRAWN:
                return outcome

    @contextmanager
    def fast_running(self) -> Iterator[None]:
        """A fast call runs in this process meanwhile (the others give way: ``give_way``)."""
        with self._mutex:
            self._fast_here += 1
        try:
            yield
        finally:
            with self._mutex:
                self._fast_here -= 1
                if not self._fast_here:
                    self._fast_done.notify_all()

    def give_way(self) -> None:
        """Before each step of a call that is not fast (an account's read, a gateway call of a
        command's attempt): wait while a fast call runs in this process, for at most
        ``TERMINAL_FAST_ALONE_SECONDS``. A step already begun is never interrupted; the steps
        after it wait, whatever terminal they are for: the terminals of one host share its
        interpreter, cores and database connections, and a protective close that shares them
        with eight reads takes several times as long as one alone."""
        if not self._fast_here or current_priority() == Priority.FAST:
            return
        give_up = time.monotonic() + float(settings.TERMINAL_FAST_ALONE_SECONDS)
        with self._mutex:
            self.giving_way += 1
            try:
                while self._fast_here and (left := give_up - time.monotonic()) > 0:
                    self._fast_done.wait(left)
            finally:
                self.giving_way -= 1

    @contextmanager
    def driving(self, name: str) -> Iterator[None]:
        """Hold the terminal for one step of a call that locks per step (``SELF_LOCKING``)."""
        self.give_way()
        with self.lock_of(name).held(current_priority()):
            if not self.owns(name):
                raise GatewayUnavailable(f"terminal {name}: this process lost its lease")
            yield

    @property
    def may_take(self) -> bool:
        """Whether this process takes a terminal nobody drives (``TERMINAL_OWNERS``): a terminal
        host always; another process only when any process may."""
        return self.host or settings.TERMINAL_OWNERS != "hosts"

    def own_if_free(self, name: str) -> bool:
        """Take the terminal when nobody else holds a live lease on it (and this process may
        take terminals); True when ours."""
        if not self.may_take:
            return False
        found = self.holder_of(name)
        if found is not None and found[1] and found[0] != self.holder:
            # Another process drives it: send it our calls without asking again for a while.
            self._elsewhere[name] = time.monotonic() + float(settings.TERMINAL_LEASE_RENEW_SECONDS)
            return False
        return self.take(name)

    def _remote(
        self,
        name: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: int,
        timeout: float | None,
    ) -> Any:
        timeout = float(timeout or settings.TERMINAL_CALL_TIMEOUT_SECONDS)
        payload = SignedPackage.dumps((args, kwargs)).encode()
        insert = (
            f"INSERT INTO {_CALLS} (terminal, priority, method, payload, state, caller, owner, "  # noqa: S608
            "deadline_msc, created_msc) VALUES (%s, %s, %s, %s, %s, %s, '', %s, %s) RETURNING id"
        )
        values = [name, int(priority), method, payload, TerminalCall.PENDING, self.holder,
                  _now_msc() + round(timeout * 1000), _now_msc()]  # fmt: skip
        with self._cursor() as cursor:
            if cursor.db.vendor == "postgresql":  # the row and its doorbell in one round trip
                cursor.execute(
                    f"WITH call AS ({insert}) SELECT id, pg_notify(%s, %s) FROM call",  # noqa: S608
                    [*values, CHANNEL, name],
                )
            else:
                cursor.execute(insert, values)
            pk = int(cursor.fetchone()[0])
            rung = threading.Event() if cursor.db.vendor == "postgresql" else None
            if rung is not None:
                self._answers[pk] = rung
        if rung is not None:
            self._listen_for_answers()
        try:
            return self._wait(pk, name, time.monotonic() + timeout, rung)
        finally:
            self._answers.pop(pk, None)

    def _wait(self, pk: int, name: str, give_up: float, rung: threading.Event | None = None) -> Any:
        """Read the call's row when its answer rings (or, should a ring be lost, every
        ``ANSWER_LOOK_SECONDS``; without doorbells, polling); withdraw it when its owner died
        before taking it."""
        pause, next_look = 0.0005, time.monotonic() + float(settings.TERMINAL_LEASE_RENEW_SECONDS)
        while True:
            with self._cursor() as cursor:  # the answer, taken (deleted) as it is read
                cursor.execute(
                    f"DELETE FROM {_CALLS} WHERE id = %s AND state IN (%s, %s) RETURNING state, result",  # noqa: S608
                    [pk, TerminalCall.DONE, TerminalCall.FAILED],
                )
                row = cursor.fetchone()
            if row is not None:
                state, result = row
                value = SignedPackage.loads(bytes(result).decode())
                if state == TerminalCall.FAILED:
                    raise value
                return value
            now = time.monotonic()
            if now >= give_up or now >= next_look:
                next_look = now + float(settings.TERMINAL_LEASE_RENEW_SECONDS)
                outcome = self._look_again(pk, name, late=now >= give_up)
                if outcome is not _WAIT:
                    return outcome
            if rung is not None:
                rung.wait(ANSWER_LOOK_SECONDS)
                rung.clear()
            else:
                time.sleep(pause)
                pause = min(pause * 2, 0.004)

    def _look_again(self, pk: int, name: str, *, late: bool) -> Any:
        """While a call waits: is its owner still the terminal's? ``_WAIT`` to go on waiting,
        ``_WITHDRAWN`` when it never ran and should be sent again; raises when it cannot end well."""
        with self._cursor() as cursor:
            cursor.execute(f"SELECT state, owner FROM {_CALLS} WHERE id = %s", [pk])  # noqa: S608
            row = cursor.fetchone()
        if row is None:
            raise GatewayUnavailable(f"terminal {name}: the call vanished")
        state, claimer = row
        found = self.holder_of(name)
        holder = found[0] if found is not None and found[1] else None
        if state == TerminalCall.PENDING:
            if (holder is not None or not self.may_take) and not late:
                return _WAIT  # an owner (maybe a new one, a terminal host) will take it
            if self._delete_call(pk, only_pending=True):
                if holder is None and not late:
                    self._elsewhere.pop(name, None)
                    return _WITHDRAWN  # it never ran and nobody drives the terminal: run it here
                if holder is None and not self.may_take:
                    raise GatewayUnavailable(f"terminal {name}: no terminal host drives it (TERMINAL_OWNERS=hosts)")
                raise GatewayUnavailable(f"terminal {name}: its owner did not take the call in time")
            return _WAIT  # taken meanwhile
        if state == TerminalCall.RUNNING and (claimer != holder or late):
            # Claimed by an owner that died or lost the terminal (or that never answered): what
            # it did is unknown; a command reconciles by tag before sending anything again.
            self._delete_call(pk)
            raise GatewayUnavailable(f"terminal {name}: its owner went during the call; what it did is unknown")
        return _WAIT

    def _delete_call(self, pk: int, *, only_pending: bool = False) -> bool:
        with self._cursor() as cursor:
            if only_pending:
                cursor.execute(f"DELETE FROM {_CALLS} WHERE id = %s AND state = %s", [pk, TerminalCall.PENDING])  # noqa: S608
            else:
                cursor.execute(f"DELETE FROM {_CALLS} WHERE id = %s", [pk])  # noqa: S608
            return bool(cursor.rowcount)

    def _listen_for_answers(self) -> None:
        with self._mutex:
            if self._answer_listener is not None and self._answer_listener.is_alive():
                return
            self._answer_listener = threading.Thread(target=self._hearing_answers, name="terminal-answers", daemon=True)
            self._answer_listener.start()

    def _hearing_answers(self) -> None:
        """Set the waiting call's event when its answer's doorbell rings (the payload is its id)."""
        listener: _Listener | None = None
        while not self._stop.is_set():
            try:
                if listener is None:
                    listener = _Listener(self.channel)
                    for waiting in list(self._answers.values()):
                        waiting.set()  # rings sent before we listened (again): every caller looks
                for payload in listener.payloads(1.0):
                    rung = self._answers.get(int(payload)) if payload.isdigit() else None
                    if rung is not None:
                        rung.set()
            except Exception:
                logger.exception("the answers' doorbell failed; listening again")
                if listener is not None:
                    listener.close()
                listener = None
                time.sleep(0.1)
        if listener is not None:
            listener.close()

    # --- the owner's side -------------------------------------------------------------------------
    def _start_threads(self) -> None:
        with self._mutex:
            if self._threads_started and self._pid == os.getpid():
                return
            self._threads_started = True
            self._stop.clear()
            self._loops = [
                threading.Thread(target=self._renewing, name="terminal-leases", daemon=True),
                threading.Thread(target=self._serving, name="terminal-calls", daemon=True),
            ]
            self._workers = [
                threading.Thread(target=self._working, name=f"terminal-worker-{i}", daemon=True)
                for i in range(int(settings.TERMINAL_OWNER_THREADS))
            ]
            self._idle = threading.Semaphore(len(self._workers))
            for thread in [*self._loops, *self._workers]:
                thread.start()

    def stop(self) -> None:
        """Stop serving, let our terminals go, close our connections."""
        with self._mutex:
            self._stop.set()
            workers, threads = self._workers, [*self._workers, *self._loops]
            if self._answer_listener is not None:
                threads.append(self._answer_listener)
            self._workers, self._loops, self._answer_listener = [], [], None
            for _ in workers:
                self._calls.put(None)
            self._threads_started = False
        if threads:
            self._ring_self()
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)
        self.release_all()
        with self._db_lock:
            dbs, self._dbs = self._dbs, []
        for db in dbs:
            try:
                db.close()
            except Exception:  # noqa: S110 - shutting down
                pass
        self._local = threading.local()

    def _ring_self(self) -> None:
        """Wake our serving thread from its doorbell wait (it sees it must stop)."""
        try:
            with self._cursor() as cursor:
                if cursor.db.vendor == "postgresql":
                    cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, ""])
        except Exception:  # noqa: S110 - it wakes within a second anyway
            pass

    def _working(self) -> None:
        """One of the owner's workers: runs claimed calls, each under its terminal's lock."""
        try:
            while (call := self._calls.get()) is not None:
                try:
                    self._answer(call)
                finally:
                    with self._mutex:
                        self._fast.pop(call.pk, None)
                    self._idle.release()
        finally:
            connection.close()

    def _renewing(self) -> None:
        while not self._stop.wait(float(settings.TERMINAL_LEASE_RENEW_SECONDS)):
            try:
                self.renew()
            except Exception:
                logger.exception("renewing the terminal leases failed; trying again")
            finally:
                close_old_connections()

    def _serving(self) -> None:
        """Claim the calls sent to our terminals, most urgent first, and run each on the pool."""
        listener = _Listener() if connection.vendor == "postgresql" else None
        try:
            while not self._stop.is_set():
                if not self._idle.acquire(timeout=0.5):
                    continue  # every worker busy: what waits stays in the table, most urgent first
                try:
                    claimed = self._claim()
                except Exception:
                    logger.exception("claiming terminal calls failed; trying again")
                    claimed = None
                    time.sleep(0.5)
                if claimed is not None:
                    self._calls.put(claimed)
                    continue
                self._idle.release()
                if self._stop.is_set():
                    break
                if listener is not None:
                    listener.wait(self._fast_alone_for() or 1.0)
                else:
                    self._wake.wait(0.02)
                    self._wake.clear()
        finally:
            if listener is not None:
                listener.close()
            connection.close()

    def _fast_alone_for(self) -> float:
        """How much longer only fast calls are claimed here (0: any call is)."""
        if not self._fast:
            return 0.0
        with self._mutex:
            oldest = min(self._fast.values(), default=time.monotonic())
        return max(0.0, oldest + float(settings.TERMINAL_FAST_ALONE_SECONDS) - time.monotonic())

    def _claim(self) -> TerminalCall | None:
        names = self.owned()
        if not names:
            return None
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + 1.0
            # Calls whose caller gave up before we took them, and answers a caller never took (it
            # died) once it is surely gone.
            now = _now_msc()
            TerminalCall.objects.filter(terminal__in=names).filter(
                Q(state=TerminalCall.PENDING, deadline_msc__lt=now) | Q(deadline_msc__lt=now - ABANDONED_MSC)
            ).delete()
        most = Priority.FAST if self._fast_alone_for() else max(Priority)
        claimed = self._claim_one(names, most) if connection.vendor == "postgresql" else self._claim_orm(names, most)
        if claimed is not None and claimed.priority == Priority.FAST:
            with self._mutex:
                self._fast[claimed.pk] = time.monotonic()
        return claimed

    def _claim_orm(self, names: list[str], most: int) -> TerminalCall | None:
        """``_claim_one`` on a database without ``FOR UPDATE SKIP LOCKED`` (SQLite)."""
        for candidate in (
            TerminalCall.objects.filter(state=TerminalCall.PENDING, terminal__in=names, priority__lte=most)
            .order_by("priority", "pk")
            .values_list("pk", flat=True)[:8]
        ):
            taken = TerminalCall.objects.filter(pk=candidate, state=TerminalCall.PENDING).update(
                state=TerminalCall.RUNNING, owner=self.holder
            )
            if taken:
                return TerminalCall.objects.get(pk=candidate)
        return None

    def _claim_one(self, names: list[str], most: int) -> TerminalCall | None:
        """The most urgent pending call of our terminals (of priority ``most`` or more urgent),
        claimed in one statement."""
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {_CALLS} SET state = %s, owner = %s WHERE id = ("  # noqa: S608
                f"SELECT id FROM {_CALLS} WHERE state = %s AND terminal = ANY(%s) AND priority <= %s "
                "ORDER BY priority, id LIMIT 1 FOR UPDATE SKIP LOCKED) "
                "RETURNING id, terminal, priority, method, payload",
                [TerminalCall.RUNNING, self.holder, TerminalCall.PENDING, names, int(most)],
            )
            row = cursor.fetchone()
        if row is None:
            return None
        pk, terminal, priority, method, payload = row
        return TerminalCall(pk=pk, terminal=terminal, priority=priority, method=method, payload=payload)

    def _answer(self, call: TerminalCall) -> None:
        try:
            args, kwargs = SignedPackage.loads(bytes(call.payload).decode())
            state = TerminalCall.DONE
            fast = call.priority == Priority.FAST
            try:
                with call_priority(Priority(call.priority)), self.fast_running() if fast else contextlib.nullcontext():
                    if call.method in SELF_LOCKING:
                        value = self._run_local(call.terminal, call.method, args, kwargs)
                    else:
                        with self.driving(call.terminal):
                            value = self._run_local(call.terminal, call.method, args, kwargs)
            except Exception as exc:  # the caller gets it raised
                state, value = TerminalCall.FAILED, exc
            try:
                packed = SignedPackage.dumps(value)
            except Exception as exc:  # an unpicklable exception
                state, packed = (
                    TerminalCall.FAILED,
                    SignedPackage.dumps(GatewayUnavailable(f"{type(exc).__name__}: {exc}")),
                )
            # The calls held back while this fast one ran may be claimed from now on: the answer's
            # statement rings our own doorbell too.
            with self._mutex:
                ring_self = self._fast.pop(call.pk, None) is not None and not self._fast
            _answer_write(call, state, packed.encode(), ring_self=ring_self)
        except Exception:
            logger.exception("answering a terminal call failed", extra={"terminal": call.terminal})
            close_old_connections()


def answer_channel(holder: str) -> str:
    """The doorbell a caller listens on for its answers (a PostgreSQL identifier, from its holder name)."""
    return "terminal_answer_" + hashlib.md5(holder.encode(), usedforsecurity=False).hexdigest()[:20]


def _answer_write(call: TerminalCall, state: str, result: bytes, *, ring_self: bool = False) -> None:
    """Write the answer to the call's row and ring its caller's doorbell, in one statement (and,
    ``ring_self``, the owners' own doorbell)."""
    if connection.vendor != "postgresql":
        TerminalCall.objects.filter(pk=call.pk).update(state=state, result=result)
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH answered AS (UPDATE {_CALLS} SET state = %s, result = %s WHERE id = %s RETURNING id, caller) "  # noqa: S608
            "SELECT pg_notify(%s || substr(md5(caller), 1, 20), id::text)"
            + (", pg_notify(%s, %s)" if ring_self else "")
            + " FROM answered",
            [state, result, call.pk, "terminal_answer_", *([CHANNEL, call.terminal] if ring_self else [])],
        )


# How often a caller whose answer did not ring looks at its call's row all the same.
ANSWER_LOOK_SECONDS = 0.05
_WITHDRAWN = object()
_WAIT = object()
_everyone: weakref.WeakSet[Owners] = weakref.WeakSet()


def stop_all() -> None:
    """Stop every ``Owners`` of this process and let its terminals go (at exit: the next owner need
    not wait for the leases to lapse)."""
    for owners in list(_everyone):
        owners.stop()


atexit.register(stop_all)


class _Listener:
    """A doorbell: ``LISTEN`` on a connection of its own (the owner's ``terminal_call``, or a
    caller's answers)."""

    def __init__(self, channel: str = CHANNEL) -> None:
        self._db = connections.create_connection("default")
        self._db.ensure_connection()
        self._db.connection.autocommit = True
        self._db.connection.execute(f"LISTEN {channel}")

    def wait(self, timeout: float) -> None:
        try:
            for _ in self._db.connection.notifies(timeout=timeout, stop_after=1):
                pass
        except Exception:
            logger.exception("the terminal doorbell failed; polling")
            time.sleep(min(timeout, 0.1))

    def payloads(self, timeout: float) -> list[str]:
        """The payloads of the rings within ``timeout`` (returns at the first, with any others
        already arrived)."""
        found = [n.payload for n in self._db.connection.notifies(timeout=timeout, stop_after=1)]
        if found:
            found += [n.payload for n in self._db.connection.notifies(timeout=0)]
        return found

    def close(self) -> None:
        try:
            self._db.close()
        except Exception:  # noqa: S110 - shutting down
            pass


def live_owners(names: list[str] | None = None) -> dict[str, tuple[str, str, int]]:
    """Every terminal with a live lease (or those of ``names``): name -> (holder, host, pid)."""
    leases = TerminalLease.objects.filter(expires_msc__gte=_now_msc())
    if names is not None:
        leases = leases.filter(name__in=names)
    return {
        name: (holder, host, pid) for name, holder, host, pid in leases.values_list("name", "holder", "host", "pid")
    }
