"""The points where `policies` lets a higher layer react. Connected by `risk.apps.RiskConfig.ready`."""

from __future__ import annotations

from typing import Any

from bridgeproject.hooks import Hook
from policies.models import PolicySnapshot, TradingAccount


def _nothing(*, account: TradingAccount, snapshot: PolicySnapshot) -> None:
    return None


# A policy snapshot was applied to an account, inside its transaction: the risk engine applies
# the new version at once (mid-day included), and its writes commit with the snapshot's.
policy_applied: Hook[..., None] = Hook("policy_applied", default=_nothing)


def _no_objections(payload: dict[str, Any]) -> list[tuple[str, str]]:
    return []


# A policy snapshot's payload has passed its schema and is about to be stored: the risk engine's
# objections, as (field, message), to what only its rules can judge (RISK_RULES v2: a
# `daily_starting_balance_date` after the current trading day is 422). None: the payload stands.
policy_objections: Hook[[dict[str, Any]], list[tuple[str, str]]] = Hook("policy_objections", default=_no_objections)
