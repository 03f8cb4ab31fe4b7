"""The points where `execution` lets a higher layer react. Connected by `risk.apps.RiskConfig.ready`."""

from __future__ import annotations

from typing import Any

from bridgeproject.hooks import Hook
from commands.models import Command
from execution.gateway import Gateway
from policies.models import TradingAccount


def _nothing(command: Command) -> None:
    return None


def _no_objection(account: TradingAccount) -> tuple[str, str] | None:
    return None


def _no_limit(
    account: TradingAccount, payload: dict[str, Any], gateway: Gateway
) -> tuple[str, str, dict[str, Any]] | None:
    return None


# A command reached a terminal state, inside the transaction that records it, after its
# command_result callback is in the outbox: the risk engine completes the protective action the
# command served and asks for the account to be evaluated again.
command_finished: Hook[[Command], None] = Hook("command_finished", default=_nothing)

# Before a new position is sent to MT5: (account) -> (error_code, message) to refuse it, or None.
# The risk engine refuses a position on an account its rules have blocked.
open_position_guard: Hook[[TradingAccount], tuple[str, str] | None] = Hook("open_position_guard", default=_no_objection)

# After an open_position's reconciliation found nothing sent yet and its symbol is known, just
# before it is sent: (account, the command's payload, the gateway) -> (error_code, message, the
# numbers for the command's result) to refuse it, or None. The risk engine refuses a position
# that would break a pre-trade limit of the policy (RISK_RULES v2 "More rules":
# `risk_limit_exceeded`).
open_position_limits: Hook[[TradingAccount, dict[str, Any], Gateway], tuple[str, str, dict[str, Any]] | None] = Hook(
    "open_position_limits", default=_no_limit
)

# Before a modify_position is sent: (account, the command's payload, the gateway) -> (error_code,
# message, the numbers for the command's result) to refuse it, or None. The risk engine refuses a
# modify that would leave the position without a stop loss where the policy requires one
# (`stop_loss_required`, `risk_limit_exceeded`).
modify_position_limits: Hook[[TradingAccount, dict[str, Any], Gateway], tuple[str, str, dict[str, Any]] | None] = Hook(
    "modify_position_limits", default=_no_limit
)
