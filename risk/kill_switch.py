"""Kill switches: an operator stops an account (or a whole tenant) from trading, and may make it flat.

Each switch raises ordinary commands through `commands.services.command_create`, the service the
API's intake and the risk engine's protective actions use, on the fast lane (critical), so they
run through the same executors, state machine, timeline and MT5 gateway as every other command:

- disable: a `disable_trading` command (the bridge refuses every new position from then on; on
  the Manager backend its executor is where trading is also disabled server-side);
- close all and disable: `disable_trading`, then `close_positions` (all positions, market) and
  `cancel_orders` (every pending order): the same close-all a protective action sends;
- halt a tenant: `disable_trading` on each of its accounts still enabled;
- enable: `enable_trading`, the way back (a tenant's accounts: those its halt disabled).

The commands are the bridge's own (`bridge-ks-` ids, which intake refuses from a tenant); each
carries who and why in its reason and envelope. Laravel is told nothing new by this module: a
protective action is reported by the risk engine when a breach is, as ever.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import QuerySet, TextChoices

from commands.models import BRIDGE_COMMAND_ID_PREFIX, Command, CommandType, Priority, Source
from commands.services import command_create
from policies.models import TradingAccount
from risk.protection import CLOSE_ALL_SPECS
from tenancy.models import Tenant

COMMAND_ID_PREFIX = f"{BRIDGE_COMMAND_ID_PREFIX}ks-"
# The disabled reason a tenant's halt leaves on each account: enabling the tenant enables those only.
HALT_MARK = "tenant halt"


class Switch(TextChoices):
    DISABLE = "disable_trading", "Disable trading"
    CLOSE_ALL_AND_DISABLE = "close_all_and_disable", "Close all and disable"
    ENABLE = "enable_trading", "Enable trading"
    HALT_TENANT = "halt_tenant", "Halt all trading"
    RESUME_TENANT = "resume_tenant", "Enable trading (tenant)"


class KillSwitchRefused(Exception):
    """A switch that cannot be used as asked (no reason given, nothing to act on)."""


@dataclass(frozen=True)
class SwitchEffect:
    """What a switch does, in words a confirmation shows before anything is sent."""

    commands: tuple[str, ...]
    summary: str


def effect_of(switch: str, *, accounts: int = 1) -> SwitchEffect:
    match switch:
        case Switch.DISABLE:
            return SwitchEffect(
                ("disable_trading",),
                "Trading is disabled: every new position is refused. Open positions and orders stay as they are.",
            )
        case Switch.CLOSE_ALL_AND_DISABLE:
            return SwitchEffect(
                ("disable_trading", "close_positions", "cancel_orders"),
                "Trading is disabled, then every open position is closed at market and every pending order "
                "cancelled, on the fast lane.",
            )
        case Switch.ENABLE:
            return SwitchEffect(
                ("enable_trading",),
                "Trading is enabled again. A block of the risk engine (a breach) still holds until its policy "
                "lifts it.",
            )
        case Switch.HALT_TENANT:
            return SwitchEffect(
                ("disable_trading",) * accounts,
                f"Trading is disabled on the tenant's {accounts} enabled account(s). Open positions stay open.",
            )
        case Switch.RESUME_TENANT:
            return SwitchEffect(
                ("enable_trading",) * accounts,
                f"Trading is enabled again on the {accounts} account(s) the tenant's halt disabled.",
            )
    raise KillSwitchRefused(f"Unknown switch {switch!r}.")


def _raise(
    *, account: TradingAccount, command_type: str, specific: dict[str, Any], switch: str, reason: str, actor: str
) -> Command:
    command_id = f"{COMMAND_ID_PREFIX}{uuid.uuid4().hex}"
    why = f"{HALT_MARK} by {actor}: {reason}" if switch == Switch.HALT_TENANT else f"{switch} by {actor}: {reason}"
    return command_create(
        tenant=account.tenant,
        account=account,
        common={
            "command_id": command_id,
            "command_type": command_type,
            "priority": Priority.CRITICAL,
            "fast_lane": True,
            "reason": why[:200],
            "expires_at_utc": None,
        },
        specific=specific,
        envelope={"raised_by": "kill_switch", "switch": switch, "operator": actor, "reason": reason},
        correlation_id=f"ks-{uuid.uuid4()}",
        idempotency_key=command_id,
        source=Source.BRIDGE,
    )


def _reason(reason: str) -> str:
    reason = " ".join(reason.split())
    if len(reason) < 3:
        raise KillSwitchRefused("Say why: a kill switch needs a reason.")
    return reason[:500]


@transaction.atomic
def account_switch(*, account: TradingAccount, switch: str, reason: str, actor: str) -> list[Command]:
    """Disable, close all and disable, or enable one account; returns the commands raised."""
    reason = _reason(reason)
    specs: list[tuple[str, dict[str, Any]]]
    if switch == Switch.DISABLE:
        specs = [(CommandType.DISABLE_TRADING, {})]
    elif switch == Switch.CLOSE_ALL_AND_DISABLE:
        specs = [(CommandType.DISABLE_TRADING, {}), *((ct, copy.deepcopy(sp)) for ct, sp in CLOSE_ALL_SPECS)]
    elif switch == Switch.ENABLE:
        specs = [(CommandType.ENABLE_TRADING, {})]
    else:
        raise KillSwitchRefused(f"{switch!r} is not an account's switch.")
    return [
        _raise(account=account, command_type=ct, specific=sp, switch=switch, reason=reason, actor=actor)
        for ct, sp in specs
    ]


def halted_by_tenant(tenant: Tenant) -> QuerySet[TradingAccount]:
    """The tenant's accounts its halt disabled (and nobody enabled since)."""
    return TradingAccount.objects.filter(
        tenant=tenant, trading_enabled=False, trading_disabled_reason__startswith=HALT_MARK
    )


def accounts_to_halt(tenant: Tenant) -> QuerySet[TradingAccount]:
    return TradingAccount.objects.filter(tenant=tenant, trading_enabled=True)


@transaction.atomic
def tenant_switch(*, tenant: Tenant, switch: str, reason: str, actor: str) -> list[Command]:
    """Halt every enabled account of a tenant, or enable again those its halt disabled."""
    reason = _reason(reason)
    if switch == Switch.HALT_TENANT:
        accounts, command_type = accounts_to_halt(tenant), CommandType.DISABLE_TRADING
    elif switch == Switch.RESUME_TENANT:
        accounts, command_type = halted_by_tenant(tenant), CommandType.ENABLE_TRADING
    else:
        raise KillSwitchRefused(f"{switch!r} is not a tenant's switch.")
    commands = [
        _raise(account=account, command_type=command_type, specific={}, switch=switch, reason=reason, actor=actor)
        for account in accounts.select_related("tenant").order_by("login")
    ]
    if not commands:
        raise KillSwitchRefused("No account to act on: nothing was sent.")
    return commands
