"""The panel's personas and the two-tenant world they look at; and the scoping rule itself.

- root: a superuser, sees everything.
- oscar: an operator (operators group), explicitly unscoped (StaffScope.all_tenants).
- sue: support (support group), explicitly unscoped.
- tess: an operator scoped to tenant_1: must never see a row of tenant_2, anywhere.
- nadia: staff with no group: no access to anything.
- olaf: an operator without a StaffScope: sees no tenant's rows (the rule fails closed).

tenant_2's rows carry markers (T2_MARKERS) that tests look for in every page tess can open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from callbacks.models import CallbackAttempt, CallbackDelivery, DeliveryStatus
from callbacks.services import callback_enqueue
from commands.models import Command
from panel.models import LibraryPayload, PanelSend, StaffScope
from panel.scoping import ALL, scope_queryset, visible_tenant_pks
from policies.models import AccountRisk, ProtectiveAction, RiskSample, TradingAccount
from tenancy.models import ApiToken, Tenant
from tests.conftest import ALICE_TOKEN, BOB_TOKEN, Api, fresh, register_account

T2_LOGIN = 77770002
T2_SERVER = "Other-Server"
T2_COMMAND = "t2-secret-cmd"
T2_KEY = "t2-secret-key"
T2_MARKERS = ("tenant_2", str(T2_LOGIN), T2_SERVER, T2_COMMAND, T2_KEY, "bob-token")
PASSWORD = "panel-password-1"


@dataclass
class World:
    tenant_1: Tenant
    tenant_2: Tenant
    account_1: TradingAccount
    account_2: TradingAccount
    command_1: Command
    command_2: Command
    action_1: ProtectiveAction
    action_2: ProtectiveAction
    delivery_1: CallbackDelivery
    delivery_2: CallbackDelivery
    payload_2: LibraryPayload


def make_user(username: str, *, groups: tuple[str, ...] = (), scope: Any = None, superuser: bool = False) -> User:
    """A staff user in the named groups; scope is None (no StaffScope), "all", or a list of tenants."""
    if superuser:
        return User.objects.create_superuser(username, f"{username}@example.com", PASSWORD)
    user = User.objects.create_user(username, f"{username}@example.com", PASSWORD, is_staff=True)
    user.groups.set(Group.objects.filter(name__in=groups))
    if scope == "all":
        StaffScope.objects.create(user=user, all_tenants=True)
    elif scope is not None:
        StaffScope.objects.create(user=user).tenants.set(scope)
    return user


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def protective_action(
    account: TradingAccount, command: Command | None, *, scope: str, rule: str = "daily_drawdown"
) -> ProtectiveAction:
    now = timezone.now()
    return ProtectiveAction.objects.create(
        tenant=account.tenant,
        account=account,
        rule_key=rule,
        scope=scope,
        policy_version=12,
        action="close_all",
        enabled=True,
        equity=Decimal("93000"),
        balance=Decimal("100000"),
        threshold_used=Decimal("5"),
        floor_or_limit=Decimal("93575"),
        measured=Decimal("93000"),
        detection_timestamp=now - timedelta(minutes=5),
        execution_status=ProtectiveAction.Status.SUCCESS,
        positions=[{"ticket": 555111, "symbol": "EURUSD", "status": "closed"}],
        command=command,
    )


def report(action: ProtectiveAction, key: str) -> CallbackDelivery:
    return callback_enqueue(
        tenant=action.tenant,
        account=action.account,
        request_type="protective_action_report",
        payload={"rule_key": action.rule_key, "execution_status": "success"},
        dedup_key=key,
        correlation_id=f"corr-{key}",
        session_id="risk-engine",
        correlation_group="protective-action",
        source_kind="protective_action",
        source_id=str(action.pk),
    )


def risk_state(account: TradingAccount) -> None:
    now = timezone.now()
    AccountRisk.objects.update_or_create(
        account=account,
        defaults=dict(
            policy_version=12,
            initial_balance=Decimal("100000"),
            high_water_mark=Decimal("100000"),
            total_floor=Decimal("90000"),
            daily_reference=Decimal("98500"),
            daily_reference_date=now.date(),
            measured=Decimal("93000"),
            equity=Decimal("93000"),
            balance=Decimal("100000"),
            daily_floor=Decimal("93575"),
            hard_breached=True,
            trading_block="daily_drawdown",
            evaluated_at=now,
        ),
    )
    RiskSample.objects.bulk_create(
        RiskSample(
            account=account,
            at=now - timedelta(minutes=30 - minute),
            balance=Decimal("100000"),
            equity=Decimal(99000 - minute * 200),
            daily_floor=Decimal("93575"),
            total_floor=Decimal("90000"),
        )
        for minute in range(30)
    )


@pytest.fixture
def world(client: Client, tenant_1: Tenant, tenant_2: Tenant) -> World:
    """Both tenants with an account, a command, a protective action, its report and a failed delivery."""
    account_1 = register_account(tenant_1)
    account_2 = register_account(tenant_2, login=T2_LOGIN, server=T2_SERVER)
    alice, bob = Api(client, ALICE_TOKEN), Api(client, BOB_TOKEN)
    assert alice.post("mt5/commands", fresh("close_positions")).status_code == 202
    body = fresh("close_positions", idempotency_key=T2_KEY, tenant_id="tenant_2")
    body["actor"].update(account_login=T2_LOGIN, server=T2_SERVER)
    body["payload"]["command_id"] = T2_COMMAND
    assert bob.post("mt5/commands", body).status_code == 202
    command_1 = Command.objects.get(tenant=tenant_1)
    command_2 = Command.objects.get(tenant=tenant_2)
    action_1 = protective_action(account_1, command_1, scope="day:1")
    action_2 = protective_action(account_2, command_2, scope="day:2")
    delivery_1, delivery_2 = report(action_1, "t1-report"), report(action_2, f"{T2_KEY}-report")
    for delivery in (delivery_1, delivery_2):
        CallbackDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.DEAD, attempts=3, dead_at=timezone.now()
        )
        CallbackAttempt.objects.create(delivery=delivery, number=1, status_code=500, outcome="dead", error="HTTP 500")
    risk_state(account_1)
    risk_state(account_2)
    ApiToken.objects.filter(name="bob").update(name="bob-token")
    payload_2 = LibraryPayload.objects.create(
        slug="t2-own", title=f"tenant_2 payload {T2_COMMAND}", kind="command", body=body, tenant=tenant_2
    )
    PanelSend.objects.create(
        tenant=tenant_2,
        origin="builder",
        username="bob",
        method="POST",
        path="/api/v1/mt5/commands",
        body=body,
        status=202,
    )
    return World(
        tenant_1,
        tenant_2,
        account_1,
        account_2,
        command_1,
        command_2,
        action_1,
        action_2,
        delivery_1,
        delivery_2,
        payload_2,
    )


@pytest.fixture
def root(db: None) -> User:
    return make_user("root", superuser=True)


@pytest.fixture
def oscar(db: None) -> User:
    return make_user("oscar", groups=("operators",), scope="all")


@pytest.fixture
def sue(db: None) -> User:
    return make_user("sue", groups=("support",), scope="all")


@pytest.fixture
def tess(world: World) -> User:
    return make_user("tess", groups=("operators",), scope=[world.tenant_1])


@pytest.fixture
def nadia(db: None) -> User:
    return make_user("nadia", scope="all")


@pytest.fixture
def olaf(db: None) -> User:
    return make_user("olaf", groups=("operators",))


# --- the scoping rule ------------------------------------------------------------------------------


def test_a_superuser_and_an_explicitly_unscoped_operator_see_every_tenant(root: User, oscar: User) -> None:
    assert visible_tenant_pks(root) is ALL
    assert visible_tenant_pks(oscar) is ALL


def test_a_scoped_staff_user_sees_only_their_tenants(world: World, tess: User) -> None:
    assert visible_tenant_pks(tess) == frozenset({world.tenant_1.pk})
    assert list(scope_queryset(Command.objects.all(), tess)) == [world.command_1]
    assert list(scope_queryset(ProtectiveAction.objects.all(), tess)) == [world.action_1]


def test_staff_without_a_scope_see_no_tenant_at_all(world: World, olaf: User) -> None:
    assert visible_tenant_pks(olaf) == frozenset()
    assert not scope_queryset(Command.objects.all(), olaf).exists()
    assert not scope_queryset(Tenant.objects.all(), olaf).exists()


def test_a_token_is_visible_only_when_every_tenant_it_names_is(world: World, tess: User) -> None:
    shared, _ = ApiToken.objects.get_or_create(name="shared", defaults={"key_hash": "x" * 64, "prefix": "x"})
    shared.tenants.set([world.tenant_1, world.tenant_2])
    visible = set(scope_queryset(ApiToken.objects.all(), tess).values_list("name", flat=True))
    assert visible == {"alice"}


def test_rows_of_no_tenant_are_hidden_from_scoped_staff(world: World, tess: User) -> None:
    assert not scope_queryset(User.objects.all(), tess).exists()
    assert not scope_queryset(StaffScope.objects.all(), tess).exists()
