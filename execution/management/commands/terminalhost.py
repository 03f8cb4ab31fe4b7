"""``manage.py terminalhost``: own terminals (ARCHITECTURE.md, "Real MT5 topology")."""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from execution.adapters.router import TerminalRouter
from execution.gateways import get_gateway
from execution.hosting import host_terminals, terminal_limit


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
        # A fast command's calls wait on the database and the terminal many times; each time they
        # come back, a thread reading another terminal may hold the interpreter lock for a whole
        # switch interval. A shorter one bounds that wait.
        sys.setswitchinterval(settings.TERMINAL_HOST_SWITCH_INTERVAL_MS / 1000)
        limit = options["max_terminals"]
        if limit is None:
            limit = terminal_limit()
        stopped = threading.Event()

        def stop(*_: Any) -> None:
            stopped.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        until = time.monotonic() + options["seconds"] if options["seconds"] else None
        self.stdout.write(f"terminal host {owners.holder}: owning up to {limit} terminal(s)")
        try:
            host_terminals(gateway, stopped, limit=limit, until=until, say=self.stdout.write)
        finally:
            owners.stop()
