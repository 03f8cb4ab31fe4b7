"""The risk monitor loop: every account with a policy, at least every RISK_POLL_INTERVAL_MS.

Several monitors share the accounts through the database, with no coordinator: each writes a
heartbeat, reads the live ones, and watches the accounts that rendezvous hashing gives it. When
one dies its heartbeat goes stale and the others take its accounts on their next cycle. A short
overlap while membership changes is harmless: protective actions are unique in the database.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from execution.gateway import Gateway
from execution.gateways import get_gateway
from execution.runner import sweep_stuck
from policies.engine import risk_evaluate_account, risk_evaluate_many
from policies.models import AccountRisk, MonitorHeartbeat, TradingAccount

logger = logging.getLogger("bridge.risk")

SWEEP_EVERY = timedelta(seconds=5)
# Between full cycles, how often the monitor looks for accounts a finished command touched.
REQUEST_POLL_SECONDS = 0.02
# Accounts read and evaluated together: one bulk read each.
CHUNK = 500


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
    last_sweep: float = 0.0
    stopping: bool = False

    def heartbeat(self, watched: int, cycle_ms: float) -> list[str]:
        """Say we are alive; return the live monitors (us included), sorted."""
        now = timezone.now()
        MonitorHeartbeat.objects.update_or_create(
            monitor_id=self.monitor_id,
            defaults={
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "heartbeat_at": now,
                "accounts_watched": watched,
                "last_cycle_ms": cycle_ms,
            },
        )
        stale = now - timedelta(seconds=max(3 * self.interval, 2.0))
        return sorted(MonitorHeartbeat.objects.filter(heartbeat_at__gte=stale).values_list("monitor_id", flat=True))

    def my_accounts(self, monitors: list[str]) -> list[TradingAccount]:
        accounts = TradingAccount.objects.filter(current_policy__isnull=False).select_related(
            "current_policy", "tenant"
        )
        return [account for account in accounts if owner_of(account.pk, monitors) == self.monitor_id]

    def cycle(self, monitors: list[str]) -> tuple[int, int]:
        """Evaluate every account this monitor owns once; returns (accounts, breaches)."""
        accounts = self.my_accounts(monitors)
        breaches = 0
        for start in range(0, len(accounts), CHUNK):
            chunk = accounts[start : start + CHUNK]
            try:
                breaches += risk_evaluate_many(accounts=chunk, gateway=self.gateway_factory()).breaches
            except Exception:  # one bad batch must not blind the monitor to the others
                logger.exception("evaluation failed", extra={"accounts": len(chunk)})
        return len(accounts), breaches

    def requested(self, monitors: list[str]) -> int:
        """Evaluate at once the accounts whose commands just finished; returns how many."""
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
            try:
                risk_evaluate_account(account=accounts[pk], gateway=gateway)
            except Exception:
                logger.exception("evaluation failed", extra={"account": accounts[pk].login})
        return len(mine)

    def run(self, *, iterations: int | None = None) -> None:
        watched, cycle_ms, count = 0, 0.0, 0
        while not self.stopping and (iterations is None or count < iterations):
            try:
                started = time.monotonic()
                if connection.get_autocommit():  # drop a broken or old connection between cycles
                    close_old_connections()
                monitors = self.heartbeat(watched, cycle_ms)
                watched, _ = self.cycle(monitors)
                if time.monotonic() - self.last_sweep > SWEEP_EVERY.total_seconds():
                    self.last_sweep = time.monotonic()
                    requeued = sweep_stuck()
                    if requeued:
                        logger.warning("sweeper re-queued commands", extra={"count": requeued})
                cycle_ms = (time.monotonic() - started) * 1000
                next_cycle = started + self.interval
                while not self.stopping and time.monotonic() < next_cycle:
                    if not self.requested(monitors):
                        time.sleep(min(REQUEST_POLL_SECONDS, max(0.0, next_cycle - time.monotonic())))
            except DatabaseError:
                # PostgreSQL restarting, a deadlock: drop the connection, wait, go on. Exiting here would
                # stop the sweeper too, and runbridge stops every process when one exits.
                logger.exception("database error; the monitor carries on")
                connection.close()
                time.sleep(1.0)
            count += 1
        MonitorHeartbeat.objects.filter(monitor_id=self.monitor_id).delete()
