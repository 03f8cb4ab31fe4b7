"""The points where `policies` lets a higher layer react. Connected by `risk.apps.RiskConfig.ready`."""

from __future__ import annotations

from bridgeproject.hooks import Hook
from policies.models import PolicySnapshot, TradingAccount


def _nothing(*, account: TradingAccount, snapshot: PolicySnapshot) -> None:
    return None


# A policy snapshot was applied to an account, inside its transaction: the risk engine applies
# the new version at once (mid-day included), and its writes commit with the snapshot's.
policy_applied: Hook[..., None] = Hook("policy_applied", default=_nothing)
