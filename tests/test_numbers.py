"""Numbers and timestamps (PROTOCOL §9): the API gives money, prices and volumes as decimal strings
with exactly the account currency's digits, the symbol's digits and its volume step's places;
callbacks give JSON numbers, inside `positions[]` too; timestamps are RFC 3339 UTC with
milliseconds; an absent value is null, never ""; `command_result` carries `error_code`."""

from __future__ import annotations

import json
import re

import pytest

from bridgeproject.jsonutil import callback_numbers, decimal_number, decimal_text, places_of, utc_iso
from callbacks.models import CallbackDelivery
from execution.simulator.service import sim_set_price
from tests.test_execution import LOGIN, _terminal, run, submit, trader  # noqa: F401  # fixtures
from tests.test_openapi import assert_valid
from tests.test_risk_engine import deliveries, evaluate, open_buy, run_fast_lane

pytestmark = pytest.mark.django_db

MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def places(text: str) -> int:
    return len(text.partition(".")[2])


def test_the_helpers_round_half_up_to_exactly_the_places_asked():
    assert decimal_text("2.345", 2) == "2.35"
    assert decimal_text(100000, 2) == "100000.00"
    assert decimal_text("1.0851", 5) == "1.08510"
    assert decimal_text(None, 2) is None
    assert decimal_number("-12.345", 2) == -12.35
    assert decimal_number("1234.4", 0) == 1234 and isinstance(decimal_number("1234.4", 0), int)
    assert places_of("0.01") == 2 and places_of("1") == 0 and places_of("0.10") == 1
    assert callback_numbers({"positions": [{"volume": "0.10", "profit": "-12.345", "comment": ""}]}, 2) == {
        "positions": [{"volume": 0.1, "profit": -12.35, "comment": None}]
    }


def test_alices_sync_read_gives_money_prices_and_volumes_with_exactly_their_digits(trader):  # noqa: F811
    sim_set_price("EURUSD", "1.08500")
    assert run(submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1)).state == "succeeded"
    body = trader.get(f"mt5/accounts/{LOGIN}").json()
    snapshot = body["snapshot"]
    assert snapshot["currency_digits"] == 2
    for name in ("balance", "equity", "margin", "free_margin", "profit"):
        assert isinstance(snapshot[name], str) and places(snapshot[name]) == 2, name
    (position,) = snapshot["positions"]
    assert position["volume"] == "0.10"  # EURUSD's volume step 0.01
    assert position["price_open"] == "1.08510" and places(position["price_current"]) == 5  # 5 digits
    assert position["sl"] is None and position["tp"] is None
    assert places(position["profit"]) == 2
    assert MS.fullmatch(position["opened_at_utc"]) and MS.fullmatch(snapshot["observed_at_utc"])
    risk = body["risk"]
    for name in ("measured", "daily_floor", "total_floor", "daily_headroom", "total_headroom", "high_water_mark"):
        assert places(risk[name]) == 2, name
    assert risk["total_floor"] == "90000.00"
    assert body["trading_disabled_reason"] is None


def test_a_command_result_callback_has_numbers_an_error_code_and_nulls(trader):  # noqa: F811
    opened = run(submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1))
    payload = CallbackDelivery.objects.get(source_id=str(opened.pk)).envelope["payload"]
    assert payload["error_code"] is None and payload["error_message"] is None
    assert payload["mt5"]["price"] == 1.0851
    assert payload["result"]["volume"] == 0.1 and payload["result"]["price"] == 1.0851
    assert MS.fullmatch(payload["finished_at_utc"])
    rejected = run(submit(trader, "close_position", ticket=424242))
    payload = CallbackDelivery.objects.get(source_id=str(rejected.pk)).envelope["payload"]
    assert (payload["state"], payload["error_code"]) == ("rejected", "position_not_found")
    detail = trader.get(f"mt5/commands/{opened.command_id}").json()
    assert detail["error_code"] is None and detail["error_message"] is None and detail["reason"] is None


def test_a_protective_close_all_reports_positions_as_numbers_like_the_money_beside_them(trader):  # noqa: F811
    open_buy(trader, 1.0)
    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.05300")  # 2 lots × ~320 pips: below the daily floor, close everything
    evaluate()
    run_fast_lane()
    evaluate()
    daily = [d for d in deliveries() if d.envelope["payload"]["rule_key"] == "daily_drawdown"][-1].envelope["payload"]
    assert isinstance(daily["equity"], int | float) and isinstance(daily["closed_pnl"], int | float)
    assert daily["positions"], daily
    for position in daily["positions"]:
        for name in ("volume", "price", "profit"):
            if name in position and position[name] is not None:
                assert isinstance(position[name], int | float), (name, position)
        assert "" not in position.values()
    assert MS.fullmatch(daily["detection_timestamp"])
    document = json.loads(trader.client.get("/api/v1/schema").content)
    for report in deliveries():
        assert_valid(document, "ProtectiveActionReport", report.envelope)
    history = trader.get(f"mt5/accounts/{LOGIN}/protective-actions").json()["results"]
    for action in history:
        for name in ("equity", "balance", "closed_pnl", "measured", "floor_or_limit"):
            assert isinstance(action[name], str) and places(action[name]) == 2, name
        assert action["error_message"] is None or action["error_message"] != ""
        assert MS.fullmatch(action["created_at"])


def test_callback_timestamps_have_milliseconds():
    from datetime import UTC, datetime

    assert utc_iso(datetime(2026, 5, 29, 12, 0, tzinfo=UTC)) == "2026-05-29T12:00:00.000Z"
