"""The panel's example payloads (../shared/seed/operational-panel.txt), verbatim, in one place.

Used by seed_demo, the admin's test payload library, the OpenAPI examples and the tests.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

DEMO_TENANT = "tenant_1"
DEMO_TOKEN = "test_token_123"
DEMO_LOGIN = 50040367
DEMO_SERVER = "Broker-Server"
DEMO_BALANCE = 100000

_ACTOR = {"trading_account_id": "1001", "account_login": 50040367, "server": "Broker-Server", "platform": "MT5"}

POLICY_SNAPSHOT: dict[str, Any] = {
    "meta": {
        "protocol_version": "1.0",
        "request_id": "0a0b0c0d-1111-2222-3333-444444444444",
        "correlation_id": "11112222-3333-4444-5555-666677778888",
        "idempotency_key": "policy-uuid-0001",
        "tenant_id": "tenant_1",
        "environment": "prod",
        "source": "laravel",
        "sent_at_utc": "2026-05-29T12:00:00Z",
    },
    "actor": _ACTOR,
    "context": {"session_id": "daily-reset", "correlation_group": "policy-sync"},
    "request": {"type": "policy_snapshot", "version": "1"},
    "payload": {
        "account_status": "active",
        "policy_version": 12,
        "initial_balance_snapshot": 100000,
        "daily_starting_balance": 98500,
        "daily_starting_balance_date": "2026-05-29",
        "max_daily_dd_pct": 5,
        "max_total_dd_pct": 10,
        "drawdown_type": "equity",
        "lock_trailing_drawdown": True,
        "max_single_trade_loss_pct": 2,
        "max_single_trade_loss_violations_allowed": 1,
        "current_single_trade_exceed_count": 0,
        "enforcement_flags": {
            "close_position_on_single_trade_breach": True,
            "close_all_on_daily_dd": True,
            "disable_trading_on_breach": False,
        },
    },
}

CLOSE_POSITIONS: dict[str, Any] = {
    "meta": {
        "protocol_version": "1.0",
        "request_id": "1a2b3c4d-1111-2222-3333-444444444444",
        "correlation_id": "9f8e7d6c-aaaa-bbbb-cccc-123456789000",
        "idempotency_key": "f1f2f3f4-5555-6666-7777-888888888888",
        "tenant_id": "tenant_1",
        "environment": "prod",
        "source": "laravel",
        "sent_at_utc": "2026-05-29T12:00:00Z",
    },
    "actor": _ACTOR,
    "context": {"session_id": "risk-control", "terminal_id": "optional", "correlation_group": "risk-control"},
    "request": {"type": "command", "version": "1"},
    "payload": {
        "command_id": "cmd-10001",
        "command_type": "close_positions",
        "priority": "critical",
        "fast_lane": True,
        "reason": "daily_drawdown_breach",
        "target": {"mode": "all_positions"},
        "execution": {"allow_partial_close": False, "close_only_profitable": False, "force_market": True},
    },
}

PROTECTIVE_ACTION_REPORT: dict[str, Any] = {
    "meta": {
        "protocol_version": "1.0",
        "request_id": "aaaa1111-bbbb-2222-cccc-333333333333",
        "correlation_id": "99998888-7777-6666-5555-444433332222",
        "idempotency_key": "protect-001",
        "tenant_id": "tenant_1",
        "environment": "prod",
        "source": "python",
        "sent_at_utc": "2026-05-29T12:01:01Z",
    },
    "actor": _ACTOR,
    "context": {"session_id": "risk-engine", "correlation_group": "protective-action"},
    "request": {"type": "protective_action_report", "version": "1"},
    "payload": {
        "rule_key": "single_trade_loss",
        "policy_version": 12,
        "position_id": "555111",
        "ticket": 555111,
        "symbol": "EURUSD",
        "volume": 1.0,
        "floating_pnl": -2500,
        "closed_pnl": 0,
        "equity": 97500,
        "balance": 100000,
        "threshold_used": 2,
        "detection_timestamp": "2026-05-29T12:01:00Z",
        "execution_timestamp": "2026-05-29T12:01:01Z",
        "execution_status": "success",
        "mt5_response": "position closed successfully",
        "error_message": None,
    },
}

# The PowerShell quick test's flat open_position body ($body); command_id and issued_at are
# filled at send time, as Get-Date does there.
LEGACY_OPEN_POSITION: dict[str, Any] = {
    "command_id": "test-open-20260529120000",
    "tenant_id": "tenant_1",
    "account_id": 50040367,
    "command_type": "open_position",
    "payload": {
        "symbol": "EURUSD",
        "direction": "buy",
        "volume": 0.1,
        "open_price": 1.0850,
        "stop_loss": 1.0800,
        "take_profit": 1.0900,
        "comment": "test from middleware",
    },
    "issued_at": "2026-05-29T12:00:00Z",
}


# Valid fields of each command type besides the common ones (PROTOCOL §5): the panel's own
# examples where it has one. The panel's payload builder starts from these too.
COMMAND_FIELDS: dict[str, dict[str, Any]] = {
    "open_position": dict(LEGACY_OPEN_POSITION["payload"]),
    "close_position": {"ticket": 555111},
    "close_positions": {
        key: CLOSE_POSITIONS["payload"][key] for key in ("priority", "fast_lane", "reason", "target", "execution")
    },
    "modify_position": {"ticket": 555111, "stop_loss": 1.08, "take_profit": 1.09},
    "cancel_orders": {},
    "disable_trading": {"reason": "manual review"},
    "enable_trading": {},
    "sync_account": {},
}


def command_envelope(command_type: str) -> dict[str, Any]:
    """An envelope for one command type: the panel's close_positions envelope itself, or that
    envelope carrying another type's payload (its own command id, request id and idempotency key,
    all three fixed, and the common fields written out as a client sends them)."""
    if command_type == "close_positions":
        return copy.deepcopy(CLOSE_POSITIONS)
    envelope = copy.deepcopy(CLOSE_POSITIONS)
    envelope["meta"]["request_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"mt5-bridge:request:{command_type}"))
    envelope["meta"]["idempotency_key"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"mt5-bridge:key:{command_type}"))
    envelope["payload"] = {
        "command_id": f"cmd-{command_type.replace('_', '-')}",
        "command_type": command_type,
        "priority": "normal",
        "fast_lane": False,
        "reason": "",
        **copy.deepcopy(COMMAND_FIELDS[command_type]),
    }
    return envelope


# One envelope per command type: the OpenAPI document's examples, sent by the generated clients' tests.
COMMAND_ENVELOPES: dict[str, dict[str, Any]] = {ctype: command_envelope(ctype) for ctype in COMMAND_FIELDS}


def example(name: str) -> dict[str, Any]:
    """A deep copy of one example, safe to modify."""
    return copy.deepcopy(EXAMPLES[name])


EXAMPLES: dict[str, dict[str, Any]] = {
    "policy_snapshot": POLICY_SNAPSHOT,
    "close_positions": CLOSE_POSITIONS,
    "protective_action_report": PROTECTIVE_ACTION_REPORT,
    "legacy_open_position": LEGACY_OPEN_POSITION,
}
