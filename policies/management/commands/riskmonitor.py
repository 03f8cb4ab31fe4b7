from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from policies.monitor import Monitor, tune_gc


class Command(BaseCommand):
    help = "Watch every account against its policy (RISK_RULES.md) and act on breaches; also sweeps stuck commands."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--iterations", type=int, default=None, help="stop after N cycles (tests)")

    def handle(self, *args: Any, **options: Any) -> None:
        monitor = Monitor()

        def stop(*_: Any) -> None:
            monitor.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"risk monitor {monitor.monitor_id} every {monitor.interval * 1000:.0f} ms")
        tune_gc()
        monitor.run(iterations=options["iterations"])
