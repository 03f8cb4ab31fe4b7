"""What "in breach" means, in one place: the accounts list, the risk chart, the dashboard and the API
all ask here.

An account is in breach when any of these holds now:

- it is hard-breached (RISK_RULES.md: the lifetime rules, or the single-trade-loss limit);
- its trading is disabled: by a `disable_trading` command or a kill switch (the account's own
  switch), or blocked by the risk engine (a breach with `disable_trading_on_breach`, or an
  account_status other than active);
- its measured equity (or balance, per the policy's drawdown type) is below the daily or the
  total floor at the last evaluation: a daily drawdown that closed the account out is still a
  breach for the rest of its day, though nothing is open any more.

`in_breach_q` is the definition as a database filter (the list's filter and the dashboard's
counter are the same query); `breach_status` the same definition for one account, with the
reasons and since when.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import F, Q

from policies.models import AccountRisk, ProtectiveAction, TradingAccount

# The rules whose breach blocks trading when `disable_trading_on_breach` is set (risk.protection).
_BLOCKING_RULES = ("daily_drawdown", "total_drawdown", "single_trade_loss_limit", "trading_disabled")


def in_breach_q() -> Q:
    """The definition as a filter on TradingAccount."""
    return (
        Q(trading_enabled=False)
        | Q(risk__hard_breached=True)
        | Q(risk__trading_block__gt="")
        | Q(risk__measured__lt=F("risk__daily_floor"))
        | Q(risk__measured__lt=F("risk__total_floor"))
    )


@dataclass(frozen=True)
class BreachStatus:
    """Why an account is in breach (most serious first) and since when (the earliest known start)."""

    reasons: tuple[str, ...]
    since: datetime | None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def _risk_of(account: TradingAccount) -> AccountRisk | None:
    try:
        return account.risk
    except AccountRisk.DoesNotExist:
        return None


def _figure(value: Decimal) -> str:
    return f"{value:,.2f}"


def breach_status(account: TradingAccount, risk: AccountRisk | None = None) -> BreachStatus | None:
    """The account's breach now, or None when it is within limits (or not evaluated and enabled).

    `risk` defaults to the account's risk row; one more query reads the protective actions of the
    current policy version, only when the account is in breach.
    """
    risk = risk if risk is not None else _risk_of(account)
    reasons: list[tuple[str, datetime | None]] = []
    actions: list[ProtectiveAction] = []
    if risk is not None and (
        risk.hard_breached
        or risk.trading_block
        or (risk.measured is not None and risk.daily_floor is not None and risk.measured < risk.daily_floor)
        or (risk.measured is not None and risk.measured < risk.total_floor)
    ):
        actions = list(
            ProtectiveAction.objects.filter(account_id=account.pk, policy_version=risk.policy_version)
            .only("rule_key", "hard", "detection_timestamp")
            .order_by("detection_timestamp")
        )

    def first(*, hard: bool = False, rules: tuple[str, ...] = ()) -> ProtectiveAction | None:
        for action in actions:
            if (hard and action.hard) or action.rule_key in rules:
                return action
        return None

    if risk is not None and risk.hard_breached:
        action = first(hard=True)
        rule = f": {action.rule_key}" if action else ""
        reasons.append((f"hard breach{rule}", action.detection_timestamp if action else None))
    if not account.trading_enabled:
        why = account.trading_disabled_reason or "disable_trading"
        reasons.append((f"trading disabled ({why})", account.trading_disabled_at))
    if risk is not None and risk.trading_block == "trading_disabled":
        action = first(rules=_BLOCKING_RULES)
        reasons.append(("trading blocked by the risk engine", action.detection_timestamp if action else None))
    elif risk is not None and risk.trading_block:
        policy = account.current_policy
        reasons.append((f"trading blocked: {risk.trading_block}", policy.received_at if policy else None))
    if risk is not None and risk.measured is not None:
        if risk.daily_floor is not None and risk.measured < risk.daily_floor:
            action = first(rules=("daily_drawdown",))
            reasons.append(
                (
                    f"{_figure(risk.measured)} below the daily floor {_figure(risk.daily_floor)}",
                    action.detection_timestamp if action else None,
                )
            )
        if risk.measured < risk.total_floor:
            action = first(rules=("total_drawdown",))
            reasons.append(
                (
                    f"{_figure(risk.measured)} below the total floor {_figure(risk.total_floor)}",
                    action.detection_timestamp if action else None,
                )
            )
    if not reasons:
        return None
    starts = [at for _, at in reasons if at is not None]
    return BreachStatus(reasons=tuple(text for text, _ in reasons), since=min(starts) if starts else None)
