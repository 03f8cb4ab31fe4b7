"""Reads of commands, always within one tenant."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from bridgeproject.errors import BridgeError
from commands.models import Command
from policies.services import account_get_for_tenant, tenant_forbidden
from tenancy.models import Tenant


def command_get(*, tenant: Tenant, command_id: str) -> Command:
    command = (
        Command.objects.select_related("account")
        .prefetch_related("events")
        .filter(tenant=tenant, command_id=command_id)
        .first()
    )
    if command is not None:
        return command
    if Command.objects.filter(command_id=command_id).exists():
        raise tenant_forbidden("This command belongs to another tenant.")
    raise BridgeError(404, "command_not_found", f"No command {command_id!r} for this tenant.")


def command_list(
    *,
    tenant: Tenant,
    account_login: int | None = None,
    server: str | None = None,
    state: str | None = None,
    since: datetime | None = None,
) -> QuerySet[Command]:
    commands = Command.objects.filter(tenant=tenant).select_related("account")
    if account_login is not None:
        account = account_get_for_tenant(tenant=tenant, login=account_login, server=server)
        commands = commands.filter(account=account)
    if state:
        commands = commands.filter(state=state)
    if since is not None:
        commands = commands.filter(received_at__gte=since)
    return commands
