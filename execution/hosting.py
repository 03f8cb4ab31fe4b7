"""Hosting terminals: take every terminal nobody owns and serve the calls sent to it
(ARCHITECTURE.md, "Real MT5 topology"). ``manage.py terminalhost`` does only this;
``manage.py riskmonitor --host-terminals`` does it beside its cycles, so that its reads and its
protective closes are made in its own process (docs/architecture.md "Who owns")."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import close_old_connections

from alerts.models import Alert
from alerts.services import alert_raise
from execution.adapters.router import TerminalRouter
from execution.owners import Priority, call_priority
from execution.terminals import terminal_names

logger = logging.getLogger("bridge.execution")

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


def host_terminals(
    gateway: TerminalRouter,
    stopped: threading.Event,
    *,
    limit: int,
    until: float | None = None,
    say: Callable[[str], None] = logger.info,
) -> None:
    """Until ``stopped`` (or monotonic ``until``): every lease period, take every terminal nobody
    owns (at most ``limit`` in all), and look at the switches of those owned now and then. The
    calls sent to them are served by the owners' own threads. Leaves the terminals held: the
    caller stops the owners (``gateway.owners.stop()``)."""
    owners = gateway.owners
    assert owners is not None
    owners.host = True
    next_look = time.monotonic()
    while not stopped.is_set() and (until is None or time.monotonic() < until):
        try:
            for name in terminal_names():
                if len(owners.owned()) >= limit:
                    break
                if not owners.owns(name) and owners.take(name):
                    say(f"owning {name}")
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + LOOK_EVERY_SECONDS
                look_at_switches(gateway)
        except Exception as exc:  # the database restarting: try again on the next turn
            say(f"looking for terminals failed: {exc}")
        finally:
            close_old_connections()
        stopped.wait(float(settings.TERMINAL_LEASE_RENEW_SECONDS))


def terminal_limit() -> int:
    """How many terminals one process may own: 1 with MT5_BACKEND=official (its module attaches
    to one terminal per process), otherwise no limit."""
    return 1 if settings.MT5_BACKEND == "official" else 1_000_000
