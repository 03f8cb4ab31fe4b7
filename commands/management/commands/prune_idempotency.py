from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from commands.idempotency import prune_expired


class Command(BaseCommand):
    help = "Delete idempotency records past their retention (IDEMPOTENCY_RETENTION_HOURS)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"pruned {prune_expired()} idempotency records")
