"""Deliver the callback outbox to Laravel until stopped (SIGTERM/SIGINT finish the current POST first)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from callbacks.delivery import check_webhook_secret, deliver_due, deliver_forever


class Command(BaseCommand):
    help = "Deliver due callbacks to Laravel: signed, retried with backoff, dead-lettered after the retry window."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="attempt what is due now, then exit")
        parser.add_argument("--poll-ms", type=int, default=settings.CALLBACK_POLL_MS, help="idle sleep")
        parser.add_argument("--limit", type=int, default=50, help="rows claimed per pass")

    def handle(self, *args: Any, **options: Any) -> None:
        check_webhook_secret()  # a secret Laravel's library would read differently: refuse to start
        if options["once"]:
            attempted = deliver_due(limit=options["limit"])
            self.stdout.write(f"attempted {attempted} callbacks")
            return
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            deliver_forever(stop=stop, poll_ms=options["poll_ms"], limit=options["limit"])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
