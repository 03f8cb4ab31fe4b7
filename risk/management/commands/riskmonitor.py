from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from execution import dispatch
from execution.adapters.router import TerminalRouter
from execution.gateways import get_gateway
from execution.hosting import host_terminals, terminal_limit
from execution.owners import Owners
from risk.monitor import Monitor, sweep_forever, tune_process


class Command(BaseCommand):
    help = "Watch every account against its policy (RISK_RULES.md) and act on breaches; a thread sweeps stuck commands."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--iterations", type=int, default=None, help="stop after N cycles (tests)")
        parser.add_argument(
            "--host-terminals",
            action="store_true",
            help="also host the terminals (as manage.py terminalhost): this process then reads its accounts and "
            "sends their protective closes itself, with no round trip to another process",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # On a terminal backend, a breach's close goes out as the read finds it (risk.ahead).
        monitor = Monitor(closes_ahead=settings.RISK_CLOSE_AHEAD)
        stopped = threading.Event()

        def stop(*_: Any) -> None:
            monitor.stopping = True
            stopped.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"risk monitor {monitor.monitor_id} every {monitor.interval * 1000:.0f} ms")
        tune_process()
        sweeper = threading.Thread(target=sweep_forever, args=(stopped,), name="sweeper", daemon=True)
        sweeper.start()
        # Protective commands: the first of each attempt run here, at once (execution.dispatch).
        dispatch.start()
        hosting = self._host_terminals(stopped) if options["host_terminals"] else None
        try:
            monitor.run(iterations=options["iterations"])
        finally:
            stopped.set()
            dispatch.stop()
            sweeper.join(timeout=5)
            if hosting is not None:
                thread, owners = hosting
                thread.join(timeout=5)
                owners.stop()

    def _host_terminals(self, stopped: threading.Event) -> tuple[threading.Thread, Owners]:
        gateway = get_gateway()
        if not isinstance(gateway, TerminalRouter) or gateway.owners is None:
            raise CommandError(f"--host-terminals: MT5_BACKEND={settings.MT5_BACKEND} has no terminals to own")
        gateway.owners.host = True  # its cycles take, as a host, a terminal nobody owns yet
        self.stdout.write(f"risk monitor hosting terminals as {gateway.owners.holder}")
        thread = threading.Thread(
            target=host_terminals,
            args=(gateway, stopped),
            kwargs={"limit": terminal_limit(), "say": self.stdout.write},
            name="terminal-hosting",
            daemon=True,
        )
        thread.start()
        return thread, gateway.owners
