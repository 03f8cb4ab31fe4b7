from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from bridgeproject.errors import BridgeError
from commands import examples
from commands.validation import validate_policy_payload
from execution.terminals import pinned_terminal, terminal_ensure, terminal_pin
from policies.services import policy_apply
from tenancy.services import token_create

DEMO_TERMINAL = "demo"


class Command(BaseCommand):
    help = (
        "Idempotently create the demo tenant, token, simulated account (pinned to the demo terminal) "
        "and the panel's policy snapshot."
    )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        from execution.simulator.service import sim_account_create

        token, _ = token_create(tenant_ids=[examples.DEMO_TENANT], name="demo token", raw=examples.DEMO_TOKEN)
        sim_account_create(login=examples.DEMO_LOGIN, balance=examples.DEMO_BALANCE, server=examples.DEMO_SERVER)
        # The demo account is served by the demo terminal (left alone when an operator pinned it elsewhere).
        terminal, _ = terminal_ensure(DEMO_TERMINAL, path=DEMO_TERMINAL)
        if pinned_terminal(examples.DEMO_LOGIN, examples.DEMO_SERVER) is None:
            terminal_pin(terminal, [(examples.DEMO_LOGIN, examples.DEMO_SERVER)])
        snapshot = examples.example("policy_snapshot")
        payload = validate_policy_payload(snapshot["payload"])
        try:
            result = policy_apply(
                tenant=token.tenants.get(tenant_id=examples.DEMO_TENANT),
                actor=snapshot["actor"],
                payload=payload,
                envelope=snapshot,
                correlation_id=snapshot["meta"]["correlation_id"],
                idempotency_key=snapshot["meta"]["idempotency_key"],
            )
            status = result.status
        except BridgeError as exc:  # a newer policy from Laravel is already held: leave it
            status = exc.code
        self.stdout.write(
            f"demo ready: tenant {examples.DEMO_TENANT}, token {examples.DEMO_TOKEN}, "
            f"account {examples.DEMO_LOGIN}@{examples.DEMO_SERVER} on terminal {DEMO_TERMINAL}, policy v12 {status}"
        )
