"""``manage.py terminalhost``: own terminals (ARCHITECTURE.md, "Real MT5 topology")."""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from alerts.models import Alert
from alerts.services import alert_raise
from execution.adapters.router import TerminalRouter
from execution.gateways import get_gateway
from execution.owners import Priority, call_priority
from execution.terminals import terminal_names

# How often the host looks at its terminals' Algo Trading and Python-API switches.
LOOK_EVERY_SECONDS = 10.0


def look_at_switches(gateway: TerminalRouter) -> None:
    """Alert when a terminal we drive refuses the bridge's trades (health says degraded too)."""
    assert gateway.owners is not None
    for name in gateway.owners.owned():
        with call_priority(Priority.MONITOR):
            status = gateway.terminal_status(name)
        if status.get("trade_allowed") is False or status.get("trade_api_disabled"):
            alert_raise(
                kind=Alert.Kind.TERMINAL_TRADING_OFF,
                subject=f"terminal:{name}",
                title=f"Terminal {name} refuses the bridge's trades",
                body="Its Algo Trading button is off or Python API trading is disabled: every order is refused "
                "(protective closes included) until someone at the terminal turns it back on.",
            )


class Command(BaseCommand):
    help = (
        "Own MT5 terminals: take the lease of every terminal nobody owns (up to --max-terminals) and "
        "run every call the other processes send them, fast-lane commands first."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--max-terminals",
            type=int,
            default=None,
            help="own at most this many (default: 1 with MT5_BACKEND=official, whose module attaches to one "
            "terminal per process; otherwise no limit)",
        )
        parser.add_argument("--seconds", type=float, default=None, help="stop after this long (tests)")

    def handle(self, *args: Any, **options: Any) -> None:
        gateway = get_gateway()
        if not isinstance(gateway, TerminalRouter) or gateway.owners is None:
            raise CommandError(f"MT5_BACKEND={settings.MT5_BACKEND} has no terminals to own")
        owners = gateway.owners
        owners.host = True
        # A fast command's calls wait on the database and the terminal many times; each time they
        # come back, a thread reading another terminal may hold the interpreter lock for a whole
        # switch interval. A shorter one bounds that wait.
        sys.setswitchinterval(settings.TERMINAL_HOST_SWITCH_INTERVAL_MS / 1000)
        limit = options["max_terminals"]
        if limit is None:
            limit = 1 if settings.MT5_BACKEND == "official" else 1_000_000
        stopped = threading.Event()

        def stop(*_: Any) -> None:
            stopped.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        until = time.monotonic() + options["seconds"] if options["seconds"] else None
        next_look = time.monotonic()
        self.stdout.write(f"terminal host {owners.holder}: owning up to {limit} terminal(s)")
        try:
            while not stopped.is_set() and (until is None or time.monotonic() < until):
                try:
                    for name in terminal_names():
                        if len(owners.owned()) >= limit:
                            break
                        if not owners.owns(name) and owners.take(name):
                            self.stdout.write(f"owning {name}")
                    if time.monotonic() >= next_look:
                        next_look = time.monotonic() + LOOK_EVERY_SECONDS
                        look_at_switches(gateway)
                except Exception as exc:  # the database restarting: try again on the next turn
                    self.stderr.write(f"looking for terminals failed: {exc}")
                finally:
                    close_old_connections()
                stopped.wait(float(settings.TERMINAL_LEASE_RENEW_SECONDS))
        finally:
            owners.stop()
