from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tenancy.services import token_create


class Command(BaseCommand):
    help = "Create an API token scoped to a tenant (created if new) and print it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", action="append", required=True, help="tenant_id; repeat for several")
        parser.add_argument("--token", help="use this value instead of a generated one")
        parser.add_argument("--name", default="", help="a label for the token")

    def handle(self, *args: Any, **options: Any) -> None:
        tenants: list[str] = options["tenant"]
        _token, raw = token_create(
            tenant_ids=tenants, name=options["name"] or f"token for {', '.join(tenants)}", raw=options["token"]
        )
        self.stdout.write(raw)
