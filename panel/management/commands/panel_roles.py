from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand

from panel.roles import OPERATORS, SUPPORT, sync_roles


class Command(BaseCommand):
    help = "Create or repair the panel's groups (operators, support) and their permissions."

    def handle(self, *args: Any, **options: Any) -> None:
        sync_roles(apps)
        self.stdout.write(f"groups {OPERATORS} and {SUPPORT} are up to date")
