"""Rules v2 through the bridge: the policy schema (422s, nulls, the OpenAPI document), pre-trade
rejections (`risk_limit_exceeded`), the new rules acting on positions opened elsewhere, and the
explanation in every report and in the sync read.

Alice's trader is the simulated account 50040367 at 100,000 with today's policy v13 (the
panel's: D = 98,500, 5 % / 10 % / 2 %); the trader also trades from their own terminal.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from callbacks.models import CallbackDelivery
from commands.models import Command
from commands.states import State
from execution.gateways import get_gateway, reset_gateway
from execution.runner import command_execute
from execution.simulator import SimulatedMetaTrader5
from execution.simulator import constants as c
from execution.simulator.service import sim_clear_faults, sim_set_price
from policies.models import AccountRisk, ProtectiveAction
from risk.engine import risk_evaluate_account
from tests.conftest import LOGIN, SERVER, fresh, send_policy
from tests.test_panel_personas import sue  # noqa: F401  (Sue of support, a fixture)
from tests.test_risk_engine import account, open_buy, run_fast_lane

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _terminal():
    reset_gateway()
    yield
    reset_gateway()
    sim_clear_faults()


def send_and_run(api, body: dict) -> Command:
    """Post a command as Laravel does and let a lane worker run it."""
    response = api.post("mt5/commands", body)
    assert response.status_code == 202, response.content
    command = Command.objects.get(command_id=body["payload"]["command_id"])
    command_execute(command.pk)
    command.refresh_from_db()
    return command


def evaluate(*, later: float = 0.0):
    return risk_evaluate_account(
        account=account(), gateway=get_gateway(), now=timezone.now() + timedelta(seconds=later)
    )


def reports() -> list[dict[str, Any]]:
    rows = CallbackDelivery.objects.filter(request_type="protective_action_report").order_by("id")
    return [row.envelope["payload"] for row in rows]


def positions() -> tuple:
    return get_gateway().account_snapshot(LOGIN, SERVER).positions


def open_through_bridge(api, volume: float, stop_loss: float | None = None) -> Command:
    body = fresh("close_positions")
    body["payload"] = {
        "command_id": f"open-{timezone.now().timestamp()}",
        "command_type": "open_position",
        "symbol": "EURUSD",
        "direction": "buy",
        "volume": volume,
    }
    if stop_loss is not None:
        body["payload"]["stop_loss"] = stop_loss
    return send_and_run(api, body)


def open_elsewhere(volume: float) -> int:
    """The trader's own terminal opens a market buy, outside the bridge."""
    mt5 = SimulatedMetaTrader5()
    assert mt5.initialize(login=LOGIN, server=SERVER), mt5.last_error()
    sent = mt5.order_send(
        {"action": c.TRADE_ACTION_DEAL, "symbol": "EURUSD", "volume": volume, "type": c.ORDER_TYPE_BUY,
         "type_filling": c.ORDER_FILLING_IOC}
    )  # fmt: skip
    assert sent is not None and sent.retcode == c.TRADE_RETCODE_DONE, sent
    return int(sent.order)


def post_policy(api, **changes: Any):
    body = fresh("policy_snapshot")
    flags = changes.pop("enforcement_flags", {})
    body["payload"].update(changes)
    body["payload"]["enforcement_flags"].update(flags)
    body["payload"].setdefault("daily_starting_balance_date", timezone.now().date().isoformat())
    return api.post("mt5/policies", body)


# --- The schema --------------------------------------------------------------------------


def test_a_snapshot_with_rules_turned_off_and_every_v2_field_is_applied(trader):
    response = post_policy(
        trader,
        policy_version=14,
        max_daily_dd_pct=None,
        max_single_trade_loss_pct=None,
        daily_reset_timezone="Europe/Prague",
        daily_reset_time="00:00",
        daily_reference_fallback="max_balance_equity",
        trailing_source="balance",
        trailing_lock_offset=100,
        breach_at_floor=True,
        reinstate=False,
        max_open_positions=3,
        max_position_volume=2,
        max_total_volume=5,
        require_stop_loss=True,
        stop_loss_grace_seconds=45,
        close_before_weekend="21:00",
        profit_target_pct=10,
        enforcement_flags={"close_excess_positions": False, "close_all_before_weekend": True},
    )

    assert response.status_code == 200, response.content
    assert AccountRisk.objects.get(account__login=LOGIN).policy_version == 14


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"max_daily_dd_pct": 0}, "payload.max_daily_dd_pct"),
        ({"max_total_dd_pct": 100.5}, "payload.max_total_dd_pct"),
        ({"daily_reset_timezone": "Mars/Olympus"}, "payload.daily_reset_timezone"),
        ({"trailing_source": "margin"}, "payload.trailing_source"),
        ({"max_position_volume": 0}, "payload.max_position_volume"),
        ({"daily_reference_fallback": "credit"}, "payload.daily_reference_fallback"),
    ],
)
def test_a_snapshot_with_a_bad_v2_field_is_422_naming_it(trader, changes, field):
    response = post_policy(trader, policy_version=14, **changes)

    assert response.status_code == 422, response.content
    body = response.json()
    assert body["code"] == "validation_failed"
    assert field in [e["field"] for e in body["errors"]]


def test_a_starting_balance_date_after_the_current_trading_day_is_422_and_changes_nothing(trader):
    typo = (timezone.now().date() + timedelta(days=365)).isoformat()

    response = post_policy(trader, policy_version=14, daily_starting_balance_date=typo)

    assert response.status_code == 422, response.content
    assert response.json()["errors"][0]["field"] == "payload.daily_starting_balance_date"
    assert AccountRisk.objects.get(account__login=LOGIN).policy_version == 13
    yesterday = (timezone.now().date() - timedelta(days=1)).isoformat()
    assert post_policy(trader, policy_version=14, daily_starting_balance_date=yesterday).status_code == 200


def test_the_openapi_document_carries_the_v2_fields(trader):
    text = trader.get("schema").content.decode()

    for name in (
        "daily_reset_timezone",
        "trailing_source",
        "breach_at_floor",
        "reinstate",
        "max_open_positions",
        "close_before_weekend",
        "profit_target_pct",
        "close_oversized_positions",
    ):
        assert name in text, name


# --- Pre-trade rejections ---------------------------------------------------------------


def test_an_open_that_would_exceed_max_open_positions_is_rejected_with_the_numbers(trader):
    send_policy(trader, policy_version=14, max_open_positions=1)
    assert open_through_bridge(trader, 0.1).state == State.SUCCEEDED

    refused = open_through_bridge(trader, 0.1)

    assert refused.state == State.REJECTED
    assert refused.error_code == "risk_limit_exceeded"
    assert refused.result["rule_key"] == "max_open_positions"
    assert (Decimal(refused.result["measured"]), Decimal(refused.result["limit"])) == (Decimal(2), Decimal(1))
    assert len(positions()) == 1
    results = CallbackDelivery.objects.filter(request_type="command_result")
    (result,) = [r for r in results if r.envelope["payload"]["command_id"] == refused.command_id]
    assert result.envelope["payload"]["state"] == "rejected"
    assert result.envelope["payload"]["result"]["rule_key"] == "max_open_positions"


def test_an_open_risking_more_than_the_single_trade_limit_at_its_stop_is_rejected_before_mt5(trader):
    # 1 lot EURUSD at the ask 1.0851x: a stop at 1.06000 risks about 2,510, over the 2,000 limit.
    refused = open_through_bridge(trader, 1.0, stop_loss=1.06000)
    allowed = open_through_bridge(trader, 1.0, stop_loss=1.07000)

    assert refused.state == State.REJECTED and refused.error_code == "risk_limit_exceeded"
    assert refused.result["rule_key"] == "single_trade_risk"
    assert Decimal(refused.result["limit"]) == Decimal(2000)
    assert Decimal(refused.result["measured"]) > Decimal(2000)
    assert refused.result["explanation"]["measured_kind"] == "loss_at_stop_loss"
    assert allowed.state == State.SUCCEEDED
    assert len(positions()) == 1


def test_an_open_without_a_stop_loss_is_rejected_when_one_is_required(trader):
    send_policy(trader, policy_version=14, require_stop_loss=True)

    refused = open_through_bridge(trader, 0.1)

    assert refused.error_code == "risk_limit_exceeded" and refused.result["rule_key"] == "stop_loss_required"
    assert open_through_bridge(trader, 0.1, stop_loss=1.08000).state == State.SUCCEEDED


def modify_through_bridge(api, ticket: int, **stops: float) -> Command:
    body = fresh("close_positions")
    body["payload"] = {
        "command_id": f"modify-{timezone.now().timestamp()}",
        "command_type": "modify_position",
        "ticket": ticket,
        **stops,
    }
    return send_and_run(api, body)


def test_a_modify_removing_the_stop_loss_is_rejected_when_one_is_required_and_the_stop_stays(trader):
    send_policy(trader, policy_version=14, require_stop_loss=True)
    assert open_through_bridge(trader, 0.1, stop_loss=1.08000).state == State.SUCCEEDED
    (position,) = positions()

    refused = modify_through_bridge(trader, position.ticket, stop_loss=0)

    assert refused.state == State.REJECTED and refused.error_code == "risk_limit_exceeded"
    assert refused.result["rule_key"] == "stop_loss_required"
    assert refused.result["policy_version"] == 14
    assert refused.result["explanation"]["measured_kind"] == "stop_loss_given"
    assert refused.result["explanation"]["rule_params"]["ticket"] == position.ticket
    assert positions()[0].sl == Decimal("1.08000")
    results = CallbackDelivery.objects.filter(request_type="command_result")
    (result,) = [r for r in results if r.envelope["payload"]["command_id"] == refused.command_id]
    assert result.envelope["payload"]["state"] == "rejected"
    assert result.envelope["payload"]["result"]["rule_key"] == "stop_loss_required"


def test_a_modify_that_moves_the_stop_or_only_sets_a_take_profit_beside_one_goes_ahead(trader):
    send_policy(trader, policy_version=14, require_stop_loss=True)
    open_through_bridge(trader, 0.1, stop_loss=1.08000)
    (position,) = positions()

    moved = modify_through_bridge(trader, position.ticket, stop_loss=1.07500)
    take_profit = modify_through_bridge(trader, position.ticket, take_profit=1.10000)

    assert (moved.state, take_profit.state) == (State.SUCCEEDED, State.SUCCEEDED)
    assert (positions()[0].sl, positions()[0].tp) == (Decimal("1.07500"), Decimal("1.10000"))


def test_a_modify_leaving_a_position_opened_elsewhere_without_a_stop_is_rejected_until_it_sets_one(trader):
    send_policy(trader, policy_version=14, require_stop_loss=True)
    ticket = open_elsewhere(0.1)

    take_profit_only = modify_through_bridge(trader, ticket, take_profit=1.10000)
    with_a_stop = modify_through_bridge(trader, ticket, stop_loss=1.08000, take_profit=1.10000)

    assert take_profit_only.state == State.REJECTED and take_profit_only.error_code == "risk_limit_exceeded"
    assert with_a_stop.state == State.SUCCEEDED
    assert positions()[0].sl == Decimal("1.08000")


def test_without_require_stop_loss_a_modify_may_remove_the_stop(trader):
    open_through_bridge(trader, 0.1, stop_loss=1.08000)
    (position,) = positions()

    removed = modify_through_bridge(trader, position.ticket, stop_loss=0)

    assert removed.state == State.SUCCEEDED
    assert not positions()[0].sl


# --- Positions opened elsewhere -----------------------------------------------------------


def test_a_position_opened_elsewhere_beyond_max_open_positions_is_closed_newest_first(trader):
    send_policy(trader, policy_version=14, max_open_positions=1)
    older = open_elsewhere(0.1)
    newer = open_elsewhere(0.1)

    evaluate()
    action = ProtectiveAction.objects.get()
    assert (action.rule_key, action.ticket, action.goal) == ("max_open_positions", newer, "position_closed")
    assert run_fast_lane() == [State.SUCCEEDED]
    evaluate()

    assert [p.ticket for p in positions()] == [older]
    (report,) = reports()
    assert report["rule_key"] == "max_open_positions" and report["execution_status"] == "success"
    assert report["ticket"] == newer and report["volume"] == 0.1
    assert report["floating_pnl"] == float(action.floating_pnl) and abs(report["floating_pnl"]) < 100  # money, not 2
    assert report["explanation"]["measured_kind"] == "open_positions"


def test_an_oversized_position_opened_elsewhere_is_reduced_to_the_limit(trader):
    send_policy(trader, policy_version=14, max_position_volume=0.5)
    ticket = open_elsewhere(0.8)

    evaluate()
    action = ProtectiveAction.objects.get()
    assert (action.rule_key, action.goal) == ("max_position_volume", "position_reduced")
    assert run_fast_lane() == [State.SUCCEEDED]
    evaluate()

    (left,) = positions()
    assert (left.ticket, left.volume) == (ticket, Decimal("0.5"))
    action.refresh_from_db()
    assert action.execution_status == "success" and action.goal_met_at is not None


def test_a_position_opened_elsewhere_without_a_stop_loss_is_closed_after_the_grace(trader):
    send_policy(trader, policy_version=14, require_stop_loss=True, stop_loss_grace_seconds=0)
    ticket = open_elsewhere(0.1)

    evaluate()
    action = ProtectiveAction.objects.get()
    assert (action.rule_key, action.ticket, action.goal) == ("stop_loss_required", ticket, "position_closed")
    run_fast_lane()
    evaluate()

    assert positions() == ()
    assert reports()[-1]["explanation"]["measured_kind"] == "seconds_without_stop_loss"


def test_open_volume_above_the_total_limit_opened_elsewhere_is_reported_once_a_day_and_left_open(trader):
    send_policy(trader, policy_version=14, max_total_volume=0.5)
    open_elsewhere(0.3)
    open_elsewhere(0.3)

    evaluate()
    evaluate()

    action = ProtectiveAction.objects.get()
    assert (action.rule_key, action.goal, action.execution_status) == ("max_total_volume", "none", "skipped")
    assert action.scope.startswith("day:")
    assert len(positions()) == 2
    (report,) = reports()
    assert report["explanation"]["measured"] == 0.6 and report["explanation"]["floor_or_limit"] == 0.5


def test_the_profit_target_is_reported_once_and_nothing_is_done_on_mt5(trader):
    send_policy(trader, policy_version=14, profit_target_pct=1)
    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.10000")  # about +1,500 on 100,000: past 101,000

    evaluate()
    evaluate()

    action = ProtectiveAction.objects.get()
    assert (action.rule_key, action.scope, action.goal, action.command) == ("profit_target", "version:14", "none", None)
    assert len(positions()) == 1
    (report,) = reports()
    assert report["execution_status"] == "skipped"
    assert report["explanation"]["floor_or_limit"] == 101000


# --- Explanations ---------------------------------------------------------------------------


def test_a_breach_report_and_the_sync_read_explain_the_breach(trader):
    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")

    evaluate()
    run_fast_lane()
    evaluate()

    (report,) = reports()
    explanation = report["explanation"]
    assert explanation["measured_kind"] == "position_loss"
    assert explanation["floor_or_limit"] == -2000
    assert explanation["reference"] == {"kind": "initial_balance", "value": 100000, "source": "laravel"}
    assert explanation["rule_params"]["max_single_trade_loss_pct"] == 2
    risk = trader.get(f"mt5/accounts/{LOGIN}").json()["risk"]
    assert Decimal(risk["breaches"][0]["explanation"]["floor_or_limit"]) == Decimal("-2000")
    history = trader.get(f"mt5/accounts/{LOGIN}/protective-actions").json()["results"]
    assert history[0]["explanation"]["measured_kind"] == "position_loss"


def test_the_sync_read_shows_no_floor_for_a_rule_that_is_off(trader):
    send_policy(trader, policy_version=14, max_total_dd_pct=None)

    risk = trader.get(f"mt5/accounts/{LOGIN}").json()["risk"]

    assert risk["total_floor"] is None and risk["total_headroom"] is None
    assert Decimal(risk["daily_floor"]) == Decimal("93575")


# --- The panel's builder ----------------------------------------------------------------------


def test_the_builders_policy_form_shows_the_v2_fields_and_what_it_builds_is_applied(alice, account_1):
    from panel.fieldspec import policy_spec
    from panel.payloads import POLICY_SNAPSHOT, SAMPLE_ACCOUNT, build_request, sample_fields

    spec = {field["name"]: field for field in policy_spec()}
    for name in ("daily_reset_timezone", "trailing_source", "max_open_positions", "profit_target_pct", "reinstate"):
        assert name in spec and spec[name]["required"] is False
    assert spec["max_daily_dd_pct"]["allow_null"] is True and spec["max_daily_dd_pct"]["above"] == 0.0
    assert spec["trailing_source"]["choices"] == ["equity", "balance", "eod_balance"]
    flags = {field["name"] for field in spec["enforcement_flags"]["fields"]}
    assert {"close_excess_positions", "close_all_before_weekend"} <= flags

    fields = {
        **sample_fields(POLICY_SNAPSHOT, None),
        "max_daily_dd_pct": None,
        "daily_reset_timezone": "America/New_York",
        "daily_reset_time": "17:00",
        "max_open_positions": 5,
        "policy_version": 13,
    }
    fields["daily_starting_balance_date"] = timezone.now().date().isoformat()
    request = build_request(
        request_type=POLICY_SNAPSHOT, tenant_id="tenant_1", account=SAMPLE_ACCOUNT, command_type=None, fields=fields
    )

    assert request.errors == []
    headers = {k: v for k, v in request.headers.items() if k not in ("Authorization", "Content-Type")}
    assert alice.post("mt5/policies", request.body, headers=headers).json()["status"] == "applied"


def test_support_reads_a_breachs_explanation_on_its_protective_action_page(trader, sue):  # noqa: F811
    from django.urls import reverse

    from tests.test_panel_personas import logged_in

    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")
    evaluate()
    action = ProtectiveAction.objects.get()

    response = logged_in(sue).get(reverse("admin:policies_protectiveaction_change", args=[action.pk]))
    assert response.status_code == 200, response.status_code
    content = response.content.decode()

    assert "Explanation" in content
    assert "position_loss" in content and "-2000.00" in content and "initial_balance 100000" in content


def test_on_a_netting_account_a_second_buy_adds_to_the_one_position_within_max_open_positions(alice, account_1):
    from execution.simulator.service import sim_account_create

    sim_account_create(login=LOGIN, balance=100000, server=SERVER, margin_mode="netting")
    sim_set_price("EURUSD", "1.08500")
    send_policy(alice, policy_version=13, max_open_positions=1, max_position_volume=0.5)

    first = open_through_bridge(alice, 0.2)
    second = open_through_bridge(alice, 0.2)
    third = open_through_bridge(alice, 0.2)

    assert (first.state, second.state) == (State.SUCCEEDED, State.SUCCEEDED)
    assert third.state == State.REJECTED and third.result["rule_key"] == "max_position_volume"
    (position,) = positions()
    assert position.volume == Decimal("0.4")


def test_the_account_page_shows_a_total_floor_turned_off_as_off(trader, sue):  # noqa: F811
    from django.urls import reverse

    from tests.test_panel_personas import logged_in

    send_policy(trader, policy_version=14, max_total_dd_pct=None)
    evaluate()

    content = logged_in(sue).get(reverse("admin:policies_tradingaccount_change", args=[account().pk])).content
    assert b"<td>total floor</td><td>off</td>" in content
