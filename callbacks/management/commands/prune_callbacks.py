from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from callbacks.services import callbacks_prune_delivered


class Command(BaseCommand):
    help = "Delete delivered callbacks past CALLBACK_RETENTION_DAYS (dead letters and open rows stay)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"pruned {callbacks_prune_delivered()} delivered callbacks")
