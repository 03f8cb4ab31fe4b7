from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from execution import dispatch
from risk.monitor import Monitor, sweep_forever, tune_gc


class Command(BaseCommand):
    help = "Watch every account against its policy (RISK_RULES.md) and act on breaches; a thread sweeps stuck commands."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--iterations", type=int, default=None, help="stop after N cycles (tests)")

    def handle(self, *args: Any, **options: Any) -> None:
        monitor = Monitor()
        stopped = threading.Event()

        def stop(*_: Any) -> None:
            monitor.stopping = True
            stopped.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"risk monitor {monitor.monitor_id} every {monitor.interval * 1000:.0f} ms")
        tune_gc()
        # The event monitor's path from a tick to DealerSend waits on the database and the API a
        # few times; each time it comes back, another thread may hold the interpreter lock for a
        # whole switch interval. A shorter one bounds that wait.
        sys.setswitchinterval(settings.RISK_MONITOR_SWITCH_INTERVAL_MS / 1000)
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
