"""The fault drills of drills/faults.py, short, on the test database, with the bridge's real processes.

Figures are the drills' business (they print them); these tests assert only the outcomes: nothing
lost, nothing doubled, everything delivered, no attempt past a deadline. The long versions, the
PostgreSQL restart and the load run are `drills/report.py` (docs/drills.md).
"""

from __future__ import annotations

import pytest

from drills import faults
from drills.harness import DEMO_TOKEN, LOGIN_1, LOGIN_2, SERVER, TENANT_2_TOKEN
from execution.gateways import reset_gateway
from execution.simulator.service import sim_account_create, sim_set_price
from tenancy.services import token_create
from tests import processes
from tests.conftest import register_account

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def bridge_db(transactional_db) -> str:
    """The demo tenant and token of seed_demo, a second tenant, both accounts in the simulator."""
    reset_gateway()
    token_create(tenant_ids=["tenant_1"], name="demo", raw=DEMO_TOKEN)
    token_create(tenant_ids=["tenant_2"], name="drill", raw=TENANT_2_TOKEN)
    from tenancy.models import Tenant

    for login in (LOGIN_1, LOGIN_2):
        sim_account_create(login=login, balance=100_000, server=SERVER)
    sim_set_price("EURUSD", "1.08500")
    register_account(Tenant.objects.get(tenant_id="tenant_1"), login=LOGIN_1)
    return processes.test_database_url()


def test_kill_9_of_the_web_mid_post_then_client_retries_leave_every_command_exactly_once(bridge_db):
    result = faults.drill_kill_web(bridge_db, requests=60, concurrency=8)
    figures = result["figures"]
    assert figures["duplicated commands"] == 0
    assert figures["lost commands"] == 0
    assert figures["unanswered after retries"] == 0
    assert figures["replay body differs from first answer"] == 0
    assert result["passed"], figures


def test_with_the_laravel_receiver_down_every_report_is_delivered_after_in_order(bridge_db):
    result = faults.drill_receiver_down(bridge_db, events=10, down=6, busy=2)
    figures = result["figures"]
    assert figures["never received"] == 0
    assert figures["dead-lettered"] == 0
    assert figures["out of per-account order"] == 0
    assert result["passed"], figures
