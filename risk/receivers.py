"""How the risk engine hears of new policies and finished commands (connected in RiskConfig.ready)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from bridgeproject.dbutil import prepared_cursor
from commands.models import Command, Source
from policies.models import PolicySnapshot, ProtectiveAction, TradingAccount
from risk import rules, sql


def on_policy_applied(*, account: TradingAccount, snapshot: PolicySnapshot) -> None:
    """A new policy version is applied at once, mid-day included."""
    from risk.engine import risk_state_apply_policy

    risk_state_apply_policy(account=account, snapshot=snapshot)


def policy_objections(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """What only the rule table's calendar can judge in a payload the schema accepted (a starting
    balance date after the current trading day), judged at the time it arrives."""
    try:
        policy = rules.Policy.from_payload(payload)
    except rules.PolicyError as exc:
        field, _, message = str(exc).partition(": ")
        return [(field, message or str(exc))]
    problem = rules.starting_balance_date_problem(policy, timezone.now())
    return [] if problem is None else [("daily_starting_balance_date", problem)]


def on_command_finished(command: Command) -> None:
    """Note what the command did for its protective action, then look at the account again at once
    (the snapshot read after the attempt ended decides whether the action's goal holds)."""
    from risk.protection import protective_action_note

    served = (command.envelope or {}).get("protective_action") if command.source == Source.BRIDGE else None
    if served:
        action = ProtectiveAction.objects.select_for_update().filter(action_id=served).first()
        if action is not None:
            protective_action_note(action=action, command=command)
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
        cursor.execute(sql.REQUEST_EVALUATION, [timezone.now(), account_pk])
