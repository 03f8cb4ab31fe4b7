"""What a send from the panel would do, in words, before it is sent: the account, the environment, the effect.

The builder and the replay page ask for a confirmation showing this for every send that changes
state (on MT5, in the bridge's risk rules, or at Laravel), and send only once it is confirmed.
Read-only sends (a GET of an account, a `sync_account` command) need none.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from panel.navigation import environment_label

READ_ONLY_COMMANDS = frozenset({"sync_account"})


@dataclass(frozen=True)
class SendEffect:
    account: str
    environment: str
    effect: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _command_effect(command_type: str, payload: dict[str, Any]) -> str:
    match command_type:
        case "open_position":
            side, volume, symbol = payload.get("direction", "?"), payload.get("volume", "?"), payload.get("symbol", "?")
            return f"opens a {side} position of {volume} lot(s) {symbol} on MT5"
        case "close_position":
            volume = payload.get("volume")
            part = f" ({volume} lot(s))" if volume else ""
            return f"closes position {payload.get('ticket', '?')}{part} on MT5"
        case "close_positions":
            target = payload.get("target")
            mode = target.get("mode", "all_positions") if isinstance(target, dict) else "all_positions"
            return f"closes positions on MT5 (target: {mode})"
        case "modify_position":
            return f"changes the stop loss / take profit of position {payload.get('ticket', '?')} on MT5"
        case "cancel_orders":
            tickets = payload.get("tickets")
            return f"cancels pending orders {tickets} on MT5" if tickets else "cancels every pending order on MT5"
        case "disable_trading":
            return "disables trading on the account (new positions refused)"
        case "enable_trading":
            return "enables trading on the account again"
    return f"sends a {command_type} command"


def _priority(payload: dict[str, Any]) -> str:
    fast = payload.get("fast_lane") is True or payload.get("priority") == "critical"
    return ", critical, fast lane" if fast else ""


def send_effect(*, method: str, path: str, body: Any) -> SendEffect | None:
    """The confirmation a send needs, or None for a read-only one."""
    if method == "GET":
        return None
    body = body if isinstance(body, dict) else {}
    environment = environment_label()
    actor = body.get("actor") if isinstance(body.get("actor"), dict) else {}
    payload = body.get("payload") if isinstance(body.get("payload"), dict) else {}
    if "actor" in body:
        account = f"{actor.get('account_login', '?')} @ {actor.get('server', '?')}"
    else:  # the legacy flat command names the login only
        account = str(body.get("account_id", "?"))
    if path.endswith("/policies"):
        version = payload.get("policy_version", "?")
        return SendEffect(account, environment, f"applies policy snapshot v{version}: the risk engine enforces it now")
    if "request" in body and isinstance(body.get("request"), dict):
        if body["request"].get("type") == "protective_action_report":
            return SendEffect(account, environment, "queues a protective_action_report to Laravel (the outbox)")
    command_type = str(payload.get("command_type") or body.get("command_type") or "")
    if command_type in READ_ONLY_COMMANDS:
        return None
    return SendEffect(account, environment, _command_effect(command_type, payload) + _priority(payload))
