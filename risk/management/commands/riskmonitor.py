from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from execution import dispatch
from risk.monitor import Monitor, sweep_forever, tune_process


class Command(BaseCommand):
    help = "Watch every account against its policy (RISK_RULES.md) and act on breaches; a thread sweeps stuck commands."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--iterations", type=int, default=None, help="stop after N cycles (tests)")

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
        try:
            monitor.run(iterations=options["iterations"])
        finally:
            stopped.set()
            dispatch.stop()
            sweeper.join(timeout=5)
