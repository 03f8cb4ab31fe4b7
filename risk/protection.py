"""Protective actions: record a breach once, start its action on the fast lane, complete it
when its command finishes, and report it to Laravel through the callback outbox.

Exactly one protective action per (account, rule, scope, policy_version) is guaranteed by a
unique constraint, so repeated evaluations, restarts and several monitors can all see the same
breach.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from bridgeproject import context
from bridgeproject.jsonutil import jsonable, utc_iso
from callbacks.services import callback_enqueue
from commands.models import Command, CommandType, Priority, Source
from commands.services import command_create
from execution.gateway import AccountSnapshot
from policies.models import ProtectiveAction, TradingAccount
from risk import rules

logger = logging.getLogger("bridge.risk")

# (account, rule_key, scope, policy_version) of breaches whose protective action is committed:
# seeing one again needs no transaction (the unique constraint would refuse it anyway).
_recorded: set[tuple[int, str, str, int]] = set()


def is_recorded(key: tuple[int, str, str, int]) -> bool:
    """Whether this process has seen the breach's action committed."""
    return key in _recorded


# RISK_RULES.md "close all positions and cancel pending orders": two fast-lane commands.
CLOSE_ALL_COMMANDS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        CommandType.CLOSE_POSITIONS,
        {
            "target": {"mode": "all_positions"},
            "execution": {"allow_partial_close": False, "close_only_profitable": False, "force_market": True},
        },
    ),
    (CommandType.CANCEL_ORDERS, {}),
)


def protective_action_raise(
    *, account: TradingAccount, breach: rules.Breach, snapshot: AccountSnapshot, policy: rules.Policy
) -> bool:
    """Record the breach once and start its action on the fast lane; False when already recorded."""
    position = next((p for p in snapshot.positions if p.ticket == breach.ticket), None) if breach.ticket else None
    action = ProtectiveAction(
        tenant_id=account.tenant_id,
        account=account,
        rule_key=breach.rule_key,
        scope=breach.scope,
        policy_version=policy.policy_version,
        action=breach.action,
        enabled=breach.enabled,
        hard=breach.hard,
        ticket=breach.ticket,
        symbol=position.symbol if position else "",
        volume=position.volume if position else None,
        floating_pnl=breach.measured if breach.ticket else snapshot.profit,
        equity=snapshot.equity,
        balance=snapshot.balance,
        threshold_used=breach.threshold_used,
        floor_or_limit=breach.floor_or_limit,
        measured=breach.measured,
        violation_count=breach.violation_count,
        detection_timestamp=snapshot.observed_at,
    )
    # Once the action is committed (here, or by an earlier evaluation), the monitor's quiet path
    # sees this breach again without a transaction.
    key = (account.pk, breach.rule_key, breach.scope, policy.policy_version)
    if len(_recorded) > 200_000:
        _recorded.clear()
    try:
        with transaction.atomic():
            action.save(force_insert=True)
    except IntegrityError:
        transaction.on_commit(lambda: _recorded.add(key))
        return False
    transaction.on_commit(lambda: _recorded.add(key))
    with context.scope(correlation_id=f"risk-{action.pk}", tenant=account.tenant.tenant_id, account=account.login):
        logger.warning("breach", extra={"rule_key": breach.rule_key, "scope": breach.scope, "enabled": breach.enabled})
        if not breach.enabled or breach.action == "none":
            _finish_without_command(action, policy)
            return True
        specs: list[tuple[str, dict[str, Any]]]
        if breach.action == "close_position":
            specs = [(CommandType.CLOSE_POSITION, {"ticket": breach.ticket})]
        else:
            specs = list(CLOSE_ALL_COMMANDS)
        for index, (command_type, specific) in enumerate(specs):
            command = command_create(
                tenant=account.tenant,
                account=account,
                common={
                    "command_id": f"pa-{action.pk}-{index}",
                    "command_type": command_type,
                    "priority": Priority.CRITICAL,
                    "fast_lane": True,
                    "reason": f"{breach.rule_key}:{breach.scope}",
                    "expires_at_utc": None,
                },
                specific=specific,
                envelope={"raised_by": "risk_engine", "protective_action": action.pk},
                correlation_id=f"risk-{action.pk}",
                idempotency_key=f"protective-action-{action.pk}-{index}",
                source=Source.BRIDGE,
            )
            if index == 0:
                action.command = command
        action.save(update_fields=["command"])
    return True


def _finish_without_command(action: ProtectiveAction, policy: rules.Policy) -> None:
    if action.action == "none" and action.enabled:
        # The escalation acts by disabling trading, when the policy says so.
        status = (
            ProtectiveAction.Status.SUCCESS if policy.disable_trading_on_breach else ProtectiveAction.Status.SKIPPED
        )
        response = "trading disabled" if policy.disable_trading_on_breach else "disable_trading_on_breach is off"
    else:
        status = ProtectiveAction.Status.SKIPPED
        response = "enforcement flag is off: recorded, no action taken"
    action.execution_status = status
    action.mt5_response = response
    action.execution_timestamp = timezone.now()
    action.save(update_fields=["execution_status", "mt5_response", "execution_timestamp"])
    protective_action_report(action=action)


_STATUS_FOR_STATE = {
    "succeeded": ProtectiveAction.Status.SUCCESS,
    "partially_succeeded": ProtectiveAction.Status.PARTIAL,
}


def protective_action_complete(*, action: ProtectiveAction, command: Command) -> None:
    """The fast-lane command of an action finished: record what MT5 said and report it."""
    status = _STATUS_FOR_STATE.get(command.state, ProtectiveAction.Status.FAILED)
    result = command.result or {}
    positions = result.get("positions") or []
    closed = positions if positions else [result]
    closed_pnl = sum(
        (Decimal(str(p.get("profit") or "0")) for p in closed if p.get("status", "closed") == "closed"), Decimal(0)
    )
    action.execution_status = status
    action.execution_timestamp = command.finished_at
    action.positions = positions
    action.closed_pnl = closed_pnl
    action.mt5_response = f"{result.get('retcode_name', '')} {result.get('message', '')}".strip() or (
        "positions closed" if status == ProtectiveAction.Status.SUCCESS else ""
    )
    if status == ProtectiveAction.Status.SUCCESS and action.action == "close_position":
        action.mt5_response = "position closed successfully"
    action.error_message = command.error_message
    action.save()
    protective_action_report(action=action)


def report_payload(action: ProtectiveAction) -> dict[str, Any]:
    """The panel's protective_action_report payload, plus violation_count and positions."""
    payload: dict[str, Any] = {
        "rule_key": action.rule_key,
        "policy_version": action.policy_version,
        "position_id": str(action.ticket) if action.ticket else None,
        "ticket": action.ticket,
        "symbol": action.symbol or None,
        "volume": float(action.volume) if action.volume is not None else None,
        "floating_pnl": float(action.floating_pnl) if action.floating_pnl is not None else None,
        "closed_pnl": float(action.closed_pnl),
        "equity": float(action.equity),
        "balance": float(action.balance),
        "threshold_used": float(action.threshold_used),
        "detection_timestamp": utc_iso(action.detection_timestamp),
        "execution_timestamp": utc_iso(action.execution_timestamp) if action.execution_timestamp else None,
        "execution_status": action.execution_status,
        "mt5_response": action.mt5_response,
        "error_message": action.error_message or None,
        "violation_count": action.violation_count,
    }
    if action.action == "close_all":
        payload["positions"] = jsonable(action.positions)
    return payload


def protective_action_report(*, action: ProtectiveAction) -> None:
    """Write the report to the outbox, in the caller's transaction."""
    callback_enqueue(
        tenant=action.tenant,
        account=action.account,
        request_type="protective_action_report",
        payload=report_payload(action),
        # The action's first (today its only) report; the outbox mints the identity Laravel sees.
        dedup_key=f"protective-action:{action.pk}:1",
        correlation_id=f"risk-{action.pk}",
        session_id="risk-engine",
        correlation_group="protective-action",
        source_kind="protective_action",
        source_id=str(action.pk),
    )
