"""Reads of risk state and protective actions, for the API."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import QuerySet

from bridgeproject.jsonutil import decimal_text, jsonable
from execution.gateway import AccountSnapshot
from policies.models import AccountRisk, ProtectiveAction, TradingAccount
from risk import rules
from risk.engine import account_view, policy_of, state_from_row


def risk_summary(account: TradingAccount, live: AccountSnapshot | None = None) -> dict[str, Any] | None:
    """Both floors, headroom to each, trading enabled, and the breaches (RISK_RULES.md).

    With a live snapshot the figures are the rule table's answer to it now (a pure evaluation:
    nothing is stored or acted on here); otherwise the monitor's last ones.
    """
    risk = AccountRisk.objects.filter(account=account).first()
    if risk is None:
        return None
    policy = policy_of(account.current_policy) if account.current_policy is not None else None
    total_floor: Decimal | None = risk.total_floor
    if live is not None and policy is not None and policy.policy_version == risk.policy_version:
        evaluation = rules.evaluate(account_view(live), policy, state_from_row(risk))
        risk.measured, risk.daily_floor = evaluation.measured, evaluation.daily_floor
        total_floor, risk.trading_block = evaluation.total_floor, evaluation.trading_block or ""
        risk.high_water_mark = evaluation.state.high_water_mark
        risk.snapshot_at = live.observed_at
    elif policy is not None:
        # What is compared is the floor rounded to the currency digits; a rule that is off has none.
        digits = (account.last_snapshot or {}).get("currency_digits", 2)
        t = policy.thresholds_for(digits if isinstance(digits, int) else 2)
        total_floor = None if t.total_amount is None else rules.round_money(risk.total_floor, t.quantum)
    measured = risk.measured
    breaches = list(
        ProtectiveAction.objects.filter(account=account, policy_version=risk.policy_version).values(
            "rule_key", "scope", "execution_status", "detection_timestamp", "explanation"
        )[:50]
    )
    money = currency_digits(account, live)

    def text(value: Any) -> str | None:
        return decimal_text(value, money)

    return jsonable(
        {
            "policy_version": risk.policy_version,
            "measured": text(measured),
            "daily_floor": text(risk.daily_floor),
            "total_floor": text(total_floor),
            "daily_headroom": None
            if measured is None or risk.daily_floor is None
            else text(measured - risk.daily_floor),
            "total_headroom": None if measured is None or total_floor is None else text(measured - total_floor),
            "high_water_mark": text(risk.high_water_mark),
            "daily_reference": text(risk.daily_reference),
            "daily_reference_date": risk.daily_reference_date,
            "daily_reference_source": risk.daily_reference_source,
            "violation_count": risk.violation_count,
            "hard_breached": risk.hard_breached,
            "trading_enabled": account.trading_enabled and not risk.trading_block,
            "trading_block": risk.trading_block or None,
            "trading_disabled_until": risk.trading_disabled_until,
            "snapshot_at": risk.snapshot_at,
            "evaluated_at": risk.evaluated_at,
            "breaches": breaches,
        }
    )


def currency_digits(account: TradingAccount, live: AccountSnapshot | None = None) -> int:
    """The account currency's digits: the live snapshot's, else the last one remembered, else 2."""
    return int(live.currency_digits) if live is not None else account.money_digits


def protective_actions_of(account: TradingAccount) -> QuerySet[ProtectiveAction]:
    return ProtectiveAction.objects.filter(account=account).select_related("command", "account")
