"""The risk engine: evaluate an account against its policy, persist the state, act on breaches.

Pure rules live in `policies.risk.rules`; this module is the I/O around them. Exactly one
protective action per (account, rule, scope, policy_version) is guaranteed by a unique
constraint, so repeated evaluations, restarts and several monitors can all see the same breach.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from bridgeproject import context
from bridgeproject.jsonutil import jsonable, utc_iso
from commands.models import Command, CommandType, Priority, Source
from commands.services import command_create
from execution import outages
from execution.gateway import AccountSnapshot, Gateway, GatewayUnavailable
from policies.models import AccountRisk, PolicySnapshot, ProtectiveAction, RiskSample, TradingAccount
from policies.risk import rules

logger = logging.getLogger("bridge.risk")

_policies: dict[int, rules.Policy] = {}
SAMPLE_EVERY = timedelta(seconds=5)


def policy_of(snapshot: PolicySnapshot) -> rules.Policy:
    """The parsed policy of a stored snapshot (snapshots never change, so parse once)."""
    policy = _policies.get(snapshot.pk)
    if policy is None:
        policy = rules.Policy.from_payload(snapshot.payload)
        if len(_policies) > 50_000:
            _policies.clear()
        _policies[snapshot.pk] = policy
    return policy


def state_from_row(row: AccountRisk) -> rules.RiskState:
    return rules.RiskState(
        policy_version=row.policy_version,
        initial_balance=row.initial_balance,
        high_water_mark=row.high_water_mark,
        total_floor=row.total_floor,
        daily_reference=row.daily_reference,
        daily_reference_date=row.daily_reference_date,
        daily_reference_source=row.daily_reference_source,  # type: ignore[arg-type]
        violation_count=row.violation_count,
        breached_tickets=frozenset(row.breached_tickets),
        hard_breached=row.hard_breached,
        trading_disabled_until=row.trading_disabled_until,
    )


def _state_to_row(state: rules.RiskState, row: AccountRisk) -> None:
    row.policy_version = state.policy_version
    row.initial_balance = state.initial_balance
    row.high_water_mark = state.high_water_mark
    row.total_floor = state.total_floor
    row.daily_reference = state.daily_reference
    row.daily_reference_date = state.daily_reference_date
    row.daily_reference_source = state.daily_reference_source
    row.violation_count = state.violation_count
    row.breached_tickets = sorted(state.breached_tickets)
    row.hard_breached = state.hard_breached
    row.trading_disabled_until = state.trading_disabled_until


def risk_state_apply_policy(*, account: TradingAccount, snapshot: PolicySnapshot) -> AccountRisk:
    """Bring the durable state to a new policy version at once (called in the snapshot's transaction)."""
    policy = policy_of(snapshot)
    row = AccountRisk.objects.select_for_update().filter(account=account).first()
    old = state_from_row(row) if row is not None else None
    try:
        state = rules.RiskState.apply_policy(old, policy)
    except rules.StalePolicyError:
        return row  # type: ignore[return-value]
    row = row or AccountRisk(account=account)
    _state_to_row(state, row)
    row.trading_block = rules.open_position_block(policy, state, timezone.now()) or ""
    row.updated_at = timezone.now()
    row.save()
    return row


def account_view(snapshot: AccountSnapshot) -> rules.AccountView:
    return rules.AccountView(
        login=snapshot.login,
        balance=snapshot.balance,
        equity=snapshot.equity,
        positions=tuple(
            rules.PositionView(
                ticket=p.ticket, symbol=p.symbol, volume=p.volume, profit=p.profit, swap=p.swap, commission=p.commission
            )
            for p in snapshot.positions
        ),
        observed_at=snapshot.observed_at,
    )


@dataclass(frozen=True)
class Outcome:
    """What an evaluation did (`evaluated` False: it could not look, and `reason` says why)."""

    evaluated: bool
    breaches: int = 0
    actions: int = 0
    reason: str = ""


def risk_evaluate_account(*, account: TradingAccount, gateway: Gateway, now: datetime | None = None) -> Outcome:
    """One evaluation: read MT5, apply the rule table, persist, and raise protective actions."""
    if account.current_policy is None:
        return Outcome(False, reason="no policy")
    try:
        mt5 = gateway.account_snapshot(account.login, account.server)
    except GatewayUnavailable as exc:
        outages.note_failure(exc.message)
        return Outcome(False, reason=f"mt5 unavailable: {exc.message}")
    return risk_evaluate_snapshot(account=account, mt5=mt5, now=now)


def _too_old(mt5: AccountSnapshot, now: datetime) -> str:
    age = now - mt5.observed_at
    if age > timedelta(milliseconds=settings.RISK_MAX_SNAPSHOT_AGE_MS):
        # A stale picture of the account must never close anyone's positions.
        return f"snapshot {age.total_seconds():.1f}s old"
    return ""


def _figures(row: AccountRisk, mt5: AccountSnapshot, evaluation: rules.Evaluation, now: datetime) -> None:
    row.measured = evaluation.measured
    row.balance, row.equity = mt5.balance, mt5.equity
    row.daily_floor = evaluation.daily_floor
    row.trading_block = evaluation.trading_block or ""
    row.snapshot_at = mt5.observed_at
    row.evaluated_at = now
    row.updated_at = now


def _sample(account_pk: int, mt5: AccountSnapshot, evaluation: rules.Evaluation) -> RiskSample:
    return RiskSample(
        account_id=account_pk,
        at=mt5.observed_at,
        balance=mt5.balance,
        equity=mt5.equity,
        daily_floor=evaluation.daily_floor,
        total_floor=evaluation.total_floor,
    )


def risk_evaluate_snapshot(*, account: TradingAccount, mt5: AccountSnapshot, now: datetime | None = None) -> Outcome:
    """The rule table on one MT5 snapshot, under the account's row lock; breaches become actions."""
    now = now or timezone.now()
    stale = _too_old(mt5, now)
    if stale:
        return Outcome(False, reason=stale)
    snapshot_row = account.current_policy
    if snapshot_row is None:
        return Outcome(False, reason="no policy")
    policy = policy_of(snapshot_row)
    with transaction.atomic():
        row = AccountRisk.objects.select_for_update().filter(account=account).first()
        if row is None or row.policy_version != policy.policy_version:
            row = risk_state_apply_policy(account=account, snapshot=snapshot_row)
        state = state_from_row(row)
        evaluation = rules.evaluate(account_view(mt5), policy, state)
        if evaluation.state is not state:
            _state_to_row(evaluation.state, row)
        last_evaluated = row.evaluated_at
        _figures(row, mt5, evaluation, now)
        row.save()
        if last_evaluated is None or now - last_evaluated >= SAMPLE_EVERY or evaluation.breaches:
            _sample(account.pk, mt5, evaluation).save()
        actions = sum(
            1
            for breach in evaluation.breaches
            if protective_action_raise(account=account, breach=breach, snapshot=mt5, policy=policy)
        )
    return Outcome(True, breaches=len(evaluation.breaches), actions=actions)


def risk_evaluate_many(*, accounts: list[TradingAccount], gateway: Gateway, now: datetime | None = None) -> Outcome:
    """One monitor cycle over many accounts: one bulk read, and the database touched only where
    something changed (state, a breach) or the figures shown to people are due a refresh."""
    now = now or timezone.now()
    rows = {row.account_id: row for row in AccountRisk.objects.filter(account__in=accounts)}
    snapshots = gateway.account_snapshots([(a.login, a.server) for a in accounts])
    failed = next((s for s in snapshots.values() if isinstance(s, GatewayUnavailable)), None)
    if failed is not None and len(snapshots) == sum(isinstance(s, Exception) for s in snapshots.values()):
        outages.note_failure(failed.message)  # every account unreadable: the terminal is gone
    elif failed is None:
        outages.note_success()
    refreshed: list[AccountRisk] = []
    samples: list[RiskSample] = []
    evaluated = breaches = actions = 0
    for account in accounts:
        mt5 = snapshots.get((account.login, account.server))
        if not isinstance(mt5, AccountSnapshot) or account.current_policy is None or _too_old(mt5, now):
            continue
        policy = policy_of(account.current_policy)
        row = rows.get(account.pk)
        if row is not None and row.policy_version == policy.policy_version:
            state = state_from_row(row)
            evaluation = rules.evaluate(account_view(mt5), policy, state)
            if evaluation.state is state and not evaluation.breaches:
                evaluated += 1
                if row.evaluated_at is None or now - row.evaluated_at >= SAMPLE_EVERY:
                    _figures(row, mt5, evaluation, now)
                    refreshed.append(row)
                    samples.append(_sample(account.pk, mt5, evaluation))
                continue
        outcome = risk_evaluate_snapshot(account=account, mt5=mt5, now=now)
        evaluated += outcome.evaluated
        breaches += outcome.breaches
        actions += outcome.actions
    if refreshed:
        # In primary key order, so two monitors overlapping for a cycle lock rows in one order.
        AccountRisk.objects.bulk_update(sorted(refreshed, key=lambda row: row.pk), FIGURE_FIELDS)
        RiskSample.objects.bulk_create(samples)
    return Outcome(evaluated > 0, breaches=breaches, actions=actions, reason=f"{evaluated} evaluated")


FIGURE_FIELDS = [
    "measured",
    "balance",
    "equity",
    "daily_floor",
    "trading_block",
    "snapshot_at",
    "evaluated_at",
    "updated_at",
]


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
    try:
        with transaction.atomic():
            action.save(force_insert=True)
    except IntegrityError:
        return False
    with context.scope(correlation_id=f"risk-{action.pk}", tenant=account.tenant.tenant_id, account=account.login):
        logger.warning("breach", extra={"rule_key": breach.rule_key, "scope": breach.scope, "enabled": breach.enabled})
        if not breach.enabled or breach.action == "none":
            _finish_without_command(action, policy)
            return True
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
    from callbacks.services import callback_enqueue

    callback_enqueue(
        tenant=action.tenant,
        account=action.account,
        request_type="protective_action_report",
        payload=report_payload(action),
        idempotency_key=f"protective-action-{action.pk}",
        correlation_id=f"risk-{action.pk}",
        session_id="risk-engine",
        correlation_group="protective-action",
        source_kind="protective_action",
        source_id=str(action.pk),
    )


def open_position_guard(account: TradingAccount) -> tuple[str, str] | None:
    """The executor's guard: a breach that disables trading rejects new positions."""
    snapshot = account.current_policy
    row = AccountRisk.objects.filter(account=account).first()
    if snapshot is None or row is None or row.policy_version != snapshot.policy_version:
        return None
    block = rules.open_position_block(policy_of(snapshot), state_from_row(row), timezone.now())
    if block == "trading_disabled":
        return "trading_disabled", "Trading is disabled after a risk breach."
    return None
