"""What a finished command tells Laravel and the layers above."""

from __future__ import annotations

from typing import Any

from bridgeproject.jsonutil import callback_numbers, utc_iso
from callbacks.services import callback_enqueue
from commands.models import Command, Source
from execution import hooks


def command_result_payload(command: Command) -> dict[str, Any]:
    """PROTOCOL §7 and §9: numbers as JSON numbers (money to the account currency's digits), the
    stable `error_code` beside `error_message`, null for what is absent."""
    result = callback_numbers(command.result or {}, command.account.money_digits)
    return {
        "command_id": command.command_id,
        "command_type": command.command_type,
        "state": command.state,
        "attempts": command.attempts,
        "mt5": {
            "retcode": result.get("retcode"),
            "order": result.get("order"),
            "deal": result.get("deal"),
            "price": result.get("price"),
        },
        "result": result,
        "error_code": command.error_code or None,
        "error_message": command.error_message or None,
        "finished_at_utc": utc_iso(command.finished_at) if command.finished_at else None,
    }


def command_finished(command: Command) -> None:
    """A command reached a terminal state: call inside the transaction that records it.

    Laravel's command_result goes to the outbox in the same transaction (its own commands only:
    the bridge's protective closes are reported as protective actions), then the layer above
    reacts through `execution.hooks.command_finished`.
    """
    if command.source == Source.API:
        callback_enqueue(
            tenant=command.tenant,
            account=command.account,
            request_type="command_result",
            payload=command_result_payload(command),
            dedup_key=f"command-result:{command.pk}",  # its identity is minted by the outbox
            correlation_id=command.correlation_id,
            session_id="execution",
            correlation_group="command-result",
            source_kind="command",
            source_id=str(command.pk),
        )
    hooks.command_finished(command)
