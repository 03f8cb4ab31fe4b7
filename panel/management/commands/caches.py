"""python manage.py caches: every per-process cache, its bound, what invalidates it, and its size here."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from bridgeproject import caches


class Command(BaseCommand):
    help = "List the per-process caches (bridgeproject.caches) with their bounds and sizes in this process."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--markdown", action="store_true", help="print the table docs/architecture.md holds")

    def handle(self, *args: Any, markdown: bool = False, **options: Any) -> None:
        if markdown:
            self.stdout.write("| cache | where | bound | invalidated by |\n|---|---|---|---|")
            for cache in caches.CACHES:
                self.stdout.write(f"| {cache.name} | `{cache.where}` | {cache.bound} | {cache.invalidated_by} |")
            return
        for cache in caches.CACHES:
            held = caches.size(cache)
            self.stdout.write(
                f"{cache.name}: {'-' if held is None else held} held; bound {cache.bound}; "
                f"invalidated by {cache.invalidated_by} ({cache.where})"
            )
