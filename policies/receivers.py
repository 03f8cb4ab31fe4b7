"""How the risk engine hears of new policies and finished commands (connected in PoliciesConfig.ready)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from bridgeproject.dbutil import prepared_cursor
from bridgeproject.jsonutil import utc_iso
from commands.models import Command, Source
from policies.models import AccountRisk, PolicySnapshot, ProtectiveAction, TradingAccount


def on_policy_applied(sender: Any, account: TradingAccount, snapshot: PolicySnapshot, **kwargs: Any) -> None:
    """A new policy version is applied at once, mid-day included."""
    from policies.engine import risk_state_apply_policy

    risk_state_apply_policy(account=account, snapshot=snapshot)


def command_result_payload(command: Command) -> dict[str, Any]:
    result = command.result or {}
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
        "error_message": command.error_message or None,
        "finished_at_utc": utc_iso(command.finished_at) if command.finished_at else None,
    }


def on_command_finished(sender: Any, command: Command, **kwargs: Any) -> None:
    """Report the result (outbox, same transaction), then look at the account again at once."""
    from callbacks.services import callback_enqueue
    from policies.engine import protective_action_complete

    if command.source == Source.BRIDGE:
        action = ProtectiveAction.objects.filter(command=command).select_related("tenant", "account").first()
        if action is not None:
            protective_action_complete(action=action, command=command)
    if command.source == Source.API:
        callback_enqueue(
            tenant=command.tenant,
            account=command.account,
            request_type="command_result",
            payload=command_result_payload(command),
            idempotency_key=f"command-result-{command.pk}",
            correlation_id=command.correlation_id,
            session_id="execution",
            correlation_group="command-result",
            source_kind="command",
            source_id=str(command.pk),
        )
    # The monitor that owns the account evaluates it again at once (RISK_RULES.md "Evaluation").
    # After the commit, on its own: holding the risk row inside this transaction deadlocked with
    # the monitor's and the policy's transactions under load; a lost request costs one poll.
    account_pk = command.account_id
    transaction.on_commit(lambda: request_evaluation(account_pk))


def request_evaluation(account_pk: int) -> None:
    """Ask for an evaluation unless one is already asked for: the monitor clears a request before
    it reads the account, so a pending one is answered by a read that starts after this command.
    A request already pending then changes no row, and a commit that wrote nothing costs no WAL
    flush: a backlog draining on one account asks once per evaluation, not once per command."""
    with prepared_cursor() as cursor:
        cursor.execute(_REQUEST_EVALUATION, [timezone.now(), account_pk])


# The statement every finished command runs, written once rather than compiled each time.
_REQUEST_EVALUATION = (
    f"UPDATE {AccountRisk._meta.db_table} SET evaluate_requested_at = %s "  # noqa: S608
    "WHERE account_id = %s AND evaluate_requested_at IS NULL"
)
