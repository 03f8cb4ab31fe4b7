"""drills/protection.py, one short trial on the test database with the bridge's real processes.

A breach through an 8 s MT5 outage, with the fake Laravel refusing the action's first report: the
account ends flat, the refused report alone is dead-lettered (and alerted), the action's next
report is delivered, and every report arrives once, in sequence. The full drills, ten trials each
and the rebuilt database, are `drills/report.py` (docs/drills.md).
"""

from __future__ import annotations

import pytest

from drills import protection
from drills.harness import DEMO_TOKEN
from execution.gateways import reset_gateway
from execution.simulator.service import sim_set_price
from tenancy.services import token_create
from tests import processes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def bridge_db(transactional_db) -> str:
    """seed_demo's token; the drill creates and registers its own account."""
    reset_gateway()
    token_create(tenant_ids=["tenant_1"], name="demo", raw=DEMO_TOKEN)
    sim_set_price("EURUSD", "1.08500")
    return processes.test_database_url()


def test_a_breach_through_an_mt5_outage_ends_flat_and_a_refused_report_does_not_hold_back_the_next(bridge_db):
    result = protection.drill_laravel_400(bridge_db, trials=1, outage=8.0)
    figures = result["figures"]
    assert figures["trials never flat"] == 0
    assert figures["positions left open (mt5sim positions)"] == 0
    assert figures["lost"] == 0
    assert figures["duplicated (one report under two keys)"] == 0
    assert figures["answered 400 and dead-lettered"] == 1
    assert figures["answered 400 with a callback_dead alert"] == 1
    assert figures["reports of the account delivered after the 400"] >= 1
    assert result["passed"], figures
