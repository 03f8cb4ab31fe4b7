"""Shared fixtures. Personas: alice's token owns tenant_1, bob's owns tenant_2, charlie has no token."""

from __future__ import annotations

import copy
import importlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from bridgeproject import caches
from commands import examples
from commands.validation import validate_policy_payload
from policies.models import TradingAccount
from policies.services import policy_apply
from tenancy.models import Tenant
from tenancy.services import token_create

ALICE_TOKEN = "alice-token-tenant-1"
BOB_TOKEN = "bob-token-tenant-2"


def create_migrations_data() -> None:
    """What the data migrations create, again (idempotent): the operator and support roles and
    the panel's example payloads. A transactional test empties every table when it ends."""
    from django.apps import apps

    importlib.import_module("panel.migrations.0002_roles_and_example_payloads").forwards(apps, None)


@pytest.fixture(scope="session")
def django_db_setup(
    django_db_setup: None, django_db_blocker: Any, django_db_keepdb: bool, django_db_createdb: bool
) -> None:
    """pytest-django's; with --reuse-db, the kept database is then brought back to what migrate
    leaves. The last run's transactional tests emptied its tables on their way out, roles and
    example payloads included, and a run cut short leaves its rows behind."""
    if django_db_keepdb and not django_db_createdb:
        from django.core.cache import caches
        from django.core.management import call_command

        with django_db_blocker.unblock():
            call_command("flush", interactive=False, verbosity=0)  # content types and permissions made again
            caches["default"].clear()  # the cache table is no model's: flush leaves it
            create_migrations_data()


@pytest.fixture(scope="session", autouse=True)
def _free_simulator() -> None:
    """The simulator's cost model off for the suite (a login costs 1 s by default); tests about
    the costs set them again."""
    from django.conf import settings

    settings.SIM_LOGIN_SECONDS = 0.0
    settings.SIM_CALL_MS = 0.0


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    caches.forget_all()
    yield
    caches.forget_all()


@pytest.fixture(autouse=True)
def _terminals_let_go() -> Iterator[None]:
    """Every gateway a test built lets its terminals go (and closes its connections) when it ends:
    a lease left behind would make the next test's gateway send its calls to a stale owner."""
    yield
    from execution.owners import stop_all

    stop_all()


class Api:
    """A JSON client for the bridge API that sets the protocol's headers."""

    def __init__(self, client: Client, token: str | None) -> None:
        self.client = client
        self.token = token

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra or {})
        return headers

    def post(
        self, path: str, body: Any, headers: dict[str, str] | None = None, content_type: str = "application/json"
    ) -> Any:
        import json

        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return self.client.post(f"/api/v1/{path}", data=data, content_type=content_type, headers=self.headers(headers))

    def get(self, path: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
        return self.client.get(f"/api/v1/{path}", params, headers=self.headers(headers))


@pytest.fixture
def tenant_1(db: None) -> Tenant:
    token_create(tenant_ids=["tenant_1"], name="alice", raw=ALICE_TOKEN)
    return Tenant.objects.get(tenant_id="tenant_1")


@pytest.fixture
def tenant_2(db: None) -> Tenant:
    token_create(tenant_ids=["tenant_2"], name="bob", raw=BOB_TOKEN)
    return Tenant.objects.get(tenant_id="tenant_2")


@pytest.fixture
def alice(client: Client, tenant_1: Tenant) -> Api:
    return Api(client, ALICE_TOKEN)


@pytest.fixture
def bob(client: Client, tenant_2: Tenant) -> Api:
    return Api(client, BOB_TOKEN)


@pytest.fixture
def charlie(client: Client, db: None) -> Api:
    return Api(client, None)


def register_account(
    tenant: Tenant, login: int = examples.DEMO_LOGIN, server: str = examples.DEMO_SERVER
) -> TradingAccount:
    """Register an account the way Laravel does: with its first policy snapshot."""
    snapshot = examples.example("policy_snapshot")
    snapshot["actor"]["account_login"] = login
    snapshot["actor"]["server"] = server
    payload = validate_policy_payload(snapshot["payload"])
    result = policy_apply(
        tenant=tenant,
        actor=snapshot["actor"],
        payload=payload,
        envelope=snapshot,
        correlation_id="",
        idempotency_key="seed",
    )
    return result.account


@pytest.fixture
def account_1(tenant_1: Tenant) -> TradingAccount:
    return register_account(tenant_1)


def fresh(name: str, **meta: Any) -> dict[str, Any]:
    """An example with new request id and idempotency key (and meta overrides)."""
    body = copy.deepcopy(examples.EXAMPLES[name])
    if "meta" in body:
        body["meta"]["request_id"] = str(uuid.uuid4())
        body["meta"]["idempotency_key"] = str(uuid.uuid4())
        body["meta"].update(meta)
    return body


def queue_command(account: TradingAccount, command_type: str, command_id: str, *, fast: bool = False, **specific: Any):
    """A command queued on its lane as the intake would queue it (normal, or critical and fast)."""
    from commands.services import command_create

    return command_create(
        tenant=account.tenant,
        account=account,
        common={
            "command_id": command_id,
            "command_type": command_type,
            "priority": "critical" if fast else "normal",
            "fast_lane": fast,
            "reason": "",
            "expires_at_utc": None,
        },
        specific=specific,
        envelope={},
        correlation_id=f"corr-{command_id}",
        idempotency_key=command_id,
    )


# The risk engine's trader (tests/test_risk_engine.py, tests/test_protection_goals.py).
LOGIN = 50040367
SERVER = "Broker-Server"


def send_policy(api: Api, **changes: Any) -> None:
    body = fresh("policy_snapshot")
    flags = changes.pop("enforcement_flags", {})
    body["payload"].update(changes)
    body["payload"]["enforcement_flags"].update(flags)
    body["payload"].setdefault("daily_starting_balance_date", timezone.now().date().isoformat())
    response = api.post("mt5/policies", body)
    assert response.status_code == 200, response.content


@pytest.fixture
def trader(alice: Api, account_1: TradingAccount) -> Api:
    """Alice's simulated account 50040367 at 100,000 with today's policy v13 (D = 98,500)."""
    from execution.simulator.service import sim_account_create, sim_set_price

    sim_account_create(login=LOGIN, balance=100000, server=SERVER)
    sim_set_price("EURUSD", "1.08500")
    # Today's snapshot, so D = 98,500 as Laravel says (RISK_RULES.md worked numbers).
    send_policy(alice, policy_version=13, daily_starting_balance_date=timezone.now().date().isoformat())
    return alice
