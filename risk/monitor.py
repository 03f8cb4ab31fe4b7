"""The risk monitor loop: every account with a policy, at least every RISK_POLL_INTERVAL_MS.

Several monitors share the accounts through the database, with no coordinator: each writes a
heartbeat, reads the live ones, and watches the accounts that rendezvous hashing gives it. When
one dies its heartbeat goes stale and the others take its accounts on their next cycle. A short
overlap while membership changes is harmless: protective actions are unique in the database.

A cycle costs little when nothing happens: the account list is kept between cycles and read
again only when a cheap fingerprint of the policies in force changes (`watched_version`), the
MT5 read comes first, and the database is written only where something changed or figures are
due a refresh. Cycles start on a cadence, start to start, chosen so that the snapshot showing a
price move is read within one interval of the move: the interval less what the recent reads
took (their lateness included). A cycle that overruns is followed at once by the next.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from execution.adapters.manager import ManagerGateway
from execution.adapters.router import TerminalRouter
from execution.gateway import Gateway
from execution.gateways import get_gateway
from execution.owners import Priority, call_priority
from execution.runner import sweep_stuck
from policies.models import AccountRisk, MonitorHeartbeat, TradingAccount
from risk import protection
from risk.ahead import SendAhead
from risk.engine import (
    WatchedAccount,
    read_accounts,
    risk_evaluate_account,
    risk_evaluate_snapshots,
    watched_accounts,
    watched_version,
)
from risk.events import EventMonitor
from risk.server_side import server_trading_sync
from risk.watchdog import Watchdog

logger = logging.getLogger("bridge.risk")

SWEEP_EVERY = timedelta(seconds=5)
# Between full cycles, how often the monitor looks for accounts a finished command touched.
REQUEST_POLL_SECONDS = 0.02
# Accounts read and evaluated together: one bulk read each.
CHUNK = 2000
# The account list is read again when its fingerprint changes, and at least this often anyway.
ACCOUNTS_RELOAD_SECONDS = 60.0
# How many recent cycles the cadence learns the read time from.
RECENT = 20
# A cycle allocates tens of thousands of short-lived objects, almost none in reference cycles:
# collecting the young generation every 700 allocations (Python's default) costs more than it
# frees, and a full collection in the middle of a read delays a detection.
GC_YOUNG_THRESHOLD = 50_000


def tune_process() -> None:
    """For the monitor's process: collect the young generation less often, and leave what is
    loaded already (Django, the apps) out of every collection; and a short interpreter switch
    interval (RISK_MONITOR_SWITCH_INTERVAL_MS). The event monitor's path from a tick to
    DealerSend waits on the database and the API a few times; each time it comes back, another
    thread may hold the interpreter lock for a whole switch interval. A shorter one bounds that."""
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    gc.freeze()
    sys.setswitchinterval(settings.RISK_MONITOR_SWITCH_INTERVAL_MS / 1000)


def owner_of(account_pk: int, monitors: list[str]) -> str:
    """Rendezvous (highest random weight) hashing: stable, and only a dead monitor's accounts move."""
    return max(
        monitors, key=lambda monitor: hashlib.blake2b(f"{monitor}:{account_pk}".encode(), digest_size=8).digest()
    )


@dataclass
class Monitor:
    monitor_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    gateway_factory: Callable[[], Gateway] = get_gateway
    interval: float = field(default_factory=lambda: settings.RISK_POLL_INTERVAL_MS / 1000)
    stopping: bool = False
    # The live monitors as of our last heartbeat (us included), sorted.
    monitors: list[str] = field(default_factory=list)
    # Every account with a policy, as of `_version`; ours among them, for `_mine_for`.
    _watched: list[WatchedAccount] = field(default_factory=list, repr=False)
    _version: tuple[int, int, int] | None = field(default=None, repr=False)
    _loaded_at: float = field(default=float("-inf"), repr=False)
    _generation: int = field(default=0, repr=False)
    _mine: list[WatchedAccount] = field(default_factory=list, repr=False)
    _mine_for: tuple[tuple[str, ...], int] | None = field(default=None, repr=False)
    # Per recent cycle: from when it was due to start until its first read began, plus its
    # longest read. What the cadence must leave room for.
    _lags: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT), repr=False)
    # How long recent answers to finished commands took, so none delays a cycle.
    _answers: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT), repr=False)
    _first_read: float = field(default=0.0, repr=False)
    _longest_read: float = field(default=0.0, repr=False)
    # With the Manager API: the event-driven monitor acting between cycles, and for what it last resynced.
    events: EventMonitor | None = field(default=None, repr=False)
    _events_for: tuple[tuple[str, ...], int] | None = field(default=None, repr=False)
    # With a terminal backend, whether a breach's close is sent ahead of its record (risk.ahead):
    # the riskmonitor command turns it on (RISK_CLOSE_AHEAD), as it starts the dispatcher.
    closes_ahead: bool = False
    ahead: SendAhead | None = field(default=None, repr=False)

    def heartbeat(self, watched: int, cycle_ms: float) -> list[str]:
        """Say we are alive; return the live monitors (us included), sorted."""
        now = timezone.now()
        beat = {"heartbeat_at": now, "accounts_watched": watched, "last_cycle_ms": cycle_ms}
        if not MonitorHeartbeat.objects.filter(monitor_id=self.monitor_id).update(**beat):
            MonitorHeartbeat.objects.update_or_create(
                monitor_id=self.monitor_id, defaults={"hostname": socket.gethostname(), "pid": os.getpid(), **beat}
            )
        stale = now - timedelta(seconds=max(3 * self.interval, 2.0))
        return sorted(MonitorHeartbeat.objects.filter(heartbeat_at__gte=stale).values_list("monitor_id", flat=True))

    def watched(self) -> list[WatchedAccount]:
        """Every account with a policy: kept between cycles, read again when policies change."""
        version = watched_version()  # before the list: a change in between is seen next cycle
        if version != self._version or time.monotonic() - self._loaded_at > ACCOUNTS_RELOAD_SECONDS:
            self._watched = watched_accounts()
            self._version, self._loaded_at = version, time.monotonic()
            self._generation += 1
        return self._watched

    def my_accounts(self, monitors: list[str]) -> list[WatchedAccount]:
        accounts = self.watched()
        key = (tuple(monitors), self._generation)
        if key != self._mine_for:
            self._mine = [account for account in accounts if owner_of(account.pk, monitors) == self.monitor_id]
            self._mine_for = key
        return self._mine

    def cycle(self, monitors: list[str]) -> tuple[int, int]:
        """Evaluate every account this monitor owns once; returns (accounts, breaches)."""
        accounts = self.my_accounts(monitors)
        breaches = 0
        self._first_read = self._longest_read = 0.0
        for start in range(0, len(accounts), CHUNK):
            chunk = accounts[start : start + CHUNK]
            try:
                read_started = time.monotonic()
                gateway = self.gateway_factory()
                snapshots = read_accounts(gateway, [(a.login, a.server) for a in chunk])
                self._first_read = self._first_read or read_started
                self._longest_read = max(self._longest_read, time.monotonic() - read_started)
                # The Manager API: the MT5 server disables trading too (risk.server_side).
                held = dict(snapshots) if gateway.server_side_trading else None
                breaches += risk_evaluate_snapshots(
                    accounts=chunk, snapshots=snapshots if held is None else held, ahead=self._sends_ahead(gateway)
                ).breaches
                if held is not None:
                    server_trading_sync(gateway=gateway, accounts=chunk, snapshots=held)
            except Exception:  # one bad batch must not blind the monitor to the others
                logger.exception("evaluation failed", extra={"accounts": len(chunk)})
        return len(accounts), breaches

    def _sends_ahead(self, gateway: Gateway) -> SendAhead | None:
        """On a terminal backend, a breach whose goal is a close is closed as this cycle's read
        finds it, through the owner of the terminal it was read from, before it is recorded
        (``risk.ahead``; docs/architecture.md "Closing before recording")."""
        if not self.closes_ahead or not isinstance(gateway, TerminalRouter):
            return None
        if self.ahead is None or self.ahead.gateway is not gateway:
            self.ahead = SendAhead(gateway, answer_timeout=settings.TERMINAL_CALL_TIMEOUT_SECONDS)
        return self.ahead

    def follow_events(self) -> None:
        """With the Manager API backend, the event-driven monitor (``risk.events``) watches this
        monitor's accounts between cycles; it resyncs when the accounts or the monitors change.
        The polling cycles go on as the safety net."""
        gateway = self.gateway_factory()
        if not isinstance(gateway, ManagerGateway):
            return
        key = (tuple(self.monitors), self._generation)
        if self.events is None:
            self.events = EventMonitor(gateway, owns=lambda pk: owner_of(pk, self.monitors) == self.monitor_id)
            self.events.start()
        elif key != self._events_for:
            self.events.resync()
        self._events_for = key

    def requested(self, monitors: list[str]) -> int:
        """Evaluate at once the accounts whose commands just finished; returns how many."""
        if not monitors:
            return 0
        rows = list(
            AccountRisk.objects.filter(evaluate_requested_at__isnull=False).values_list(
                "account_id", "evaluate_requested_at"
            )[:1000]
        )
        mine = [(pk, at) for pk, at in rows if owner_of(pk, monitors) == self.monitor_id]
        if not mine:
            return 0
        gateway = self.gateway_factory()
        accounts = TradingAccount.objects.select_related("current_policy", "tenant").in_bulk([pk for pk, _ in mine])
        for pk, at in mine:
            # Clear only the request we saw: one made during the evaluation stays for the next tick.
            AccountRisk.objects.filter(account_id=pk, evaluate_requested_at=at).update(evaluate_requested_at=None)
            if pk not in accounts:
                continue
            try:
                risk_evaluate_account(account=accounts[pk], gateway=gateway)
            except Exception:
                logger.exception("evaluation failed", extra={"account": accounts[pk].login})
        return len(mine)

    def next_start(self, due: float, finished: float) -> float:
        """When the cycle after one that was due at `due` and finished at `finished` starts.

        A move just after a read began is seen by the next read, so from the start of one read to
        the end of the next must take at most the interval. The next cycle is due one interval
        after this read began, less the longest recent lag (how late a cycle's read began after it
        was due, plus how long the read took). Never sooner than half an interval after this one
        was due; at once when the time has passed already (an overrun)."""
        if not self._first_read:  # nothing read (no accounts, or the read failed)
            return max(due + self.interval, finished)
        lag = max(self._lags, default=0.0)
        return max(self._first_read + self.interval - lag, due + self.interval / 2, finished)

    def wait_until(self, deadline: float) -> None:
        """Answer finished commands until `deadline`, starting none that might not end by then."""
        while not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if remaining > max(self._answers, default=REQUEST_POLL_SECONDS):
                started = time.monotonic()
                if self.requested(self.monitors):
                    self._answers.append(time.monotonic() - started)
                    continue
            time.sleep(min(REQUEST_POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    def run(self, *, iterations: int | None = None) -> None:
        with call_priority(Priority.MONITOR):  # on each terminal: after fast commands and sync reads
            self._run(iterations)

    def _run(self, iterations: int | None) -> None:
        watched, cycle_ms, count = 0, 0.0, 0
        due = time.monotonic()
        while not self.stopping and (iterations is None or count < iterations):
            try:
                if not self.monitors:
                    self.monitors = self.heartbeat(watched, cycle_ms)
                    due = time.monotonic()
                self.wait_until(due)
                if self.stopping:
                    break
                started = time.monotonic()
                if connection.get_autocommit():  # drop a broken or old connection between cycles
                    close_old_connections()
                watched, _ = self.cycle(self.monitors)
                self.follow_events()
                if self._first_read:
                    self._lags.append(self._first_read - due + self._longest_read)
                self.monitors = self.heartbeat(watched, cycle_ms)
                finished = time.monotonic()
                cycle_ms = (finished - started) * 1000  # reported with the next heartbeat
                due = self.next_start(due, finished)
            except DatabaseError:
                # PostgreSQL restarting, a deadlock: drop the connection, wait, go on. Exiting here would
                # stop the sweeper's thread too, and runbridge stops every process when one exits.
                logger.exception("database error; the monitor carries on")
                connection.close()
                time.sleep(1.0)
                due = time.monotonic()
            count += 1
        MonitorHeartbeat.objects.filter(monitor_id=self.monitor_id).delete()


def sweep_forever(
    stop: threading.Event, *, every: float = SWEEP_EVERY.total_seconds(), fast_every: float | None = None
) -> None:
    """The sweeper (`execution.runner.sweep_stuck`) on its own thread and database connection.

    Re-ringing a backlog's commands takes one transaction each: on the monitor's own loop that
    could hold a cycle up for seconds, and with it the detection of a breach. The fast lane's part
    (lapsed leases, fast commands queued too long) runs every FAST_LANE_SWEEP_SECONDS, the whole
    sweep every `every`: with it the watchdog, and the recovery of protective closes a monitor
    sent ahead and never recorded (``protection.sent_ahead_recover``).
    """
    watchdog = Watchdog()
    fast_every = min(every, fast_every or settings.FAST_LANE_SWEEP_SECONDS)
    next_full = time.monotonic() + every
    while not stop.wait(fast_every):
        try:
            close_old_connections()
            full = time.monotonic() >= next_full
            if full:
                next_full = time.monotonic() + every
            requeued = sweep_stuck(fast_only=not full)
            if requeued:
                logger.warning("sweeper re-queued commands", extra={"count": requeued})
            if full:
                watchdog.check()
                # Closes a monitor sent ahead whose action was never recorded (risk.ahead).
                recovered = protection.sent_ahead_recover()
                if recovered:
                    logger.error("sweeper recorded protective closes sent ahead", extra={"count": recovered})
        except Exception:  # PostgreSQL restarting: drop the connection and try on the next turn
            logger.exception("the sweeper failed; it tries again")
            connection.close()
    connection.close()
