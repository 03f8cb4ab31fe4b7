"""Identity of accounts (PROTOCOL §9): an account is (server, login), server names compare trimmed
and case-insensitively, a login resolves among the caller's own accounts only, and public health
names no tenant, login or account."""

from __future__ import annotations

import copy
import json

import pytest

from commands import examples
from commands.models import Command
from execution.simulator.service import sim_account_create, sim_set_price
from policies.models import TradingAccount
from tests.conftest import LOGIN, SERVER, fresh, register_account, send_policy
from tests.test_intake import problem

pytestmark = pytest.mark.django_db


def snapshot_for(server: str, login: int = LOGIN) -> dict:
    body = fresh("policy_snapshot", tenant_id="tenant_2")
    body["actor"]["server"] = server
    body["actor"]["account_login"] = login
    return body


@pytest.fixture
def alices_account(alice, account_1):
    sim_account_create(login=LOGIN, balance=100000, server=SERVER)
    sim_set_price("EURUSD", "1.08500")
    return account_1


def alices_reads_all_work(alice) -> None:
    assert alice.get(f"mt5/accounts/{LOGIN}").status_code == 200
    assert alice.get(f"mt5/accounts/{LOGIN}/protective-actions").status_code == 200
    assert alice.get("mt5/commands", account_login=LOGIN).status_code == 200
    flat = copy.deepcopy(examples.LEGACY_OPEN_POSITION)
    flat["command_id"] = f"flat-{Command.objects.count()}"
    response = alice.post("mt5/commands", flat)
    assert response.status_code == 202, response.content


def test_bob_registering_alices_login_on_a_dozen_other_servers_never_locks_alice_out(alices_account, alice, bob):
    for n in range(12):
        assert bob.post("mt5/policies", snapshot_for(f"Other-Server-{n}")).status_code == 200
    send_policy(alice, policy_version=13)  # alice's row is written again after bob's
    alices_reads_all_work(alice)
    assert TradingAccount.objects.filter(login=LOGIN).count() == 13


@pytest.mark.parametrize("spelling", ["broker-server", " BROKER-SERVER ", "Broker-Server "])
def test_bob_cannot_take_alices_account_by_spelling_its_server_another_way(alices_account, alice, bob, spelling):
    problem(bob.post("mt5/policies", snapshot_for(spelling)), 403, "tenant_forbidden")
    command = fresh("close_positions", tenant_id="tenant_2")
    command["actor"]["server"] = spelling
    problem(bob.post("mt5/commands", command), 403, "tenant_forbidden")
    assert list(TradingAccount.objects.values_list("server", flat=True)) == [SERVER]
    alices_reads_all_work(alice)


def test_alice_naming_her_server_in_another_case_reaches_her_one_account(alices_account, alice):
    body = fresh("close_positions")
    body["actor"]["server"] = "  broker-SERVER"
    assert alice.post("mt5/commands", body).status_code == 202
    assert Command.objects.get().account == alices_account
    snapshot = fresh("policy_snapshot")
    snapshot["actor"]["server"] = "BROKER-SERVER"
    snapshot["payload"]["policy_version"] = 20
    assert alice.post("mt5/policies", snapshot).status_code == 200
    assert TradingAccount.objects.get().server == SERVER  # the first snapshot's spelling stays


def test_a_server_name_is_stored_trimmed(alice, tenant_1):
    snapshot = fresh("policy_snapshot")
    snapshot["actor"]["server"] = "  Spaced-Server  "
    assert alice.post("mt5/policies", snapshot).status_code == 200
    assert TradingAccount.objects.get().server == "Spaced-Server"


def test_alice_with_one_login_on_two_servers_is_asked_to_name_one_and_can(alices_account, alice, tenant_1):
    first = copy.deepcopy(examples.LEGACY_OPEN_POSITION)
    first["command_id"] = "before-the-second-server"
    assert alice.post("mt5/commands", first).status_code == 202  # one server: the flat body is enough
    Command.objects.all().delete()
    register_account(tenant_1, server="Second-Server")
    for response in (
        alice.get(f"mt5/accounts/{LOGIN}"),
        alice.get(f"mt5/accounts/{LOGIN}/protective-actions"),
        alice.get("mt5/commands", account_login=LOGIN),
        alice.post("mt5/commands", examples.LEGACY_OPEN_POSITION),  # the flat body names no server
    ):
        body = problem(response, 409, "ambiguous_account")
        assert body["servers"] == ["Broker-Server", "Second-Server"]
    assert not Command.objects.exists()
    read = alice.get(f"mt5/accounts/{LOGIN}", server="broker-server")
    assert read.status_code == 200, read.content
    assert read.json()["server"] == SERVER
    assert alice.get(f"mt5/accounts/{LOGIN}/protective-actions", server="Second-Server").status_code == 200
    assert alice.get("mt5/commands", account_login=LOGIN, server="Second-Server").json()["results"] == []
    assert alice.post("mt5/commands", examples.CLOSE_POSITIONS).status_code == 202  # actor.server names it


def test_bobs_own_login_elsewhere_does_not_make_alices_reads_ambiguous(alices_account, alice, bob):
    assert bob.post("mt5/policies", snapshot_for("Second-Server")).status_code == 200
    sim_account_create(login=LOGIN, balance=5000, server="Second-Server")
    assert alice.get(f"mt5/accounts/{LOGIN}").status_code == 200
    problem(bob.get(f"mt5/accounts/{LOGIN}", server=SERVER), 403, "tenant_forbidden")
    assert bob.get(f"mt5/accounts/{LOGIN}").json()["server"] == "Second-Server"


@pytest.mark.parametrize("server", ["", "   ", "x" * 129])
def test_a_server_parameter_that_names_no_server_is_a_422(alices_account, alice, server):
    body = problem(alice.get(f"mt5/accounts/{LOGIN}", server=server), 422, "validation_failed")
    assert body["errors"][0]["field"] == "server"


def test_the_command_list_takes_server_only_beside_account_login(alices_account, alice):
    body = problem(alice.get("mt5/commands", server=SERVER), 422, "validation_failed")
    assert body["errors"][0]["field"] == "server"


# --- public health -----------------------------------------------------------------------------


def test_charlies_public_health_names_no_tenant_login_or_server(alices_account, alice, charlie):
    alice.get(f"mt5/accounts/{LOGIN}")  # the gateway has now served alice's account
    response = charlie.client.get("/api/v1/health")
    text = response.content.decode()
    assert response.json()["status"] in {"ok", "degraded", "down"}
    for secret in (str(LOGIN), SERVER, "tenant_1", "logged_in", "terminals"):
        assert secret not in text, secret
    assert set(response.json()["checks"]) == {"database", "broker", "normal_lane", "fast_lane", "mt5", "callbacks"}
    assert "queue_depth" in response.json()["checks"]["fast_lane"]


def test_alices_token_or_a_staff_session_sees_the_detailed_health(alices_account, alice, client, django_user_model):
    alice.get(f"mt5/accounts/{LOGIN}")
    detailed = alice.client.get("/api/v1/health", headers=alice.headers()).json()
    assert "detail" in detailed["checks"]["mt5"]
    staff = django_user_model.objects.create_user("oscar", password="pw", is_staff=True)
    client.force_login(staff)
    assert str(LOGIN) in json.dumps(client.get("/api/v1/health").json())
