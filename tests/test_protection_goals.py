"""Protection is a goal, not a command (RISK_RULES.md "Enforcement that holds").

Alice's trader breaches; the risk engine pursues each protective action's goal until MT5 shows
it holding — through failed and expired closes, answers lost after a fill, closes the server
made itself, and positions the trader opens from their own terminal afterwards.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from callbacks.models import CallbackDelivery
from commands.models import Command
from commands.states import State
from execution.gateways import get_gateway, reset_gateway
from execution.simulator import SimulatedMetaTrader5
from execution.simulator import constants as c
from execution.simulator.service import sim_clear_faults, sim_inject_fault, sim_set_price
from policies.models import ProtectiveAction
from risk.engine import risk_evaluate_account
from tests.conftest import LOGIN, SERVER, fresh, send_policy
from tests.test_risk_engine import account, open_buy, run_fast_lane

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _terminal():
    reset_gateway()
    yield
    reset_gateway()
    sim_clear_faults()


def evaluate(*, later: float = 0.0):
    """The monitor's look at the account, `later` seconds from now (to pass a retry's pause)."""
    return risk_evaluate_account(
        account=account(), gateway=get_gateway(), now=timezone.now() + timedelta(seconds=later)
    )


def reports() -> list[dict]:
    rows = CallbackDelivery.objects.filter(request_type="protective_action_report").order_by("id")
    return [row.envelope["payload"] for row in rows]


def traders_own_terminal() -> SimulatedMetaTrader5:
    mt5 = SimulatedMetaTrader5()
    assert mt5.initialize(login=LOGIN, server=SERVER), mt5.last_error()
    return mt5


def positions() -> tuple:
    return get_gateway().account_snapshot(LOGIN, SERVER).positions


def test_a_close_that_failed_is_attempted_again_until_the_position_is_closed(trader):
    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")
    evaluate()
    action = ProtectiveAction.objects.get()
    sim_inject_fault("market_closed", symbol="EURUSD", count=50)
    assert run_fast_lane() == [State.FAILED]
    evaluate()  # MT5 still shows the position: the first attempt failed, reported so
    action.refresh_from_db()
    assert action.goal_met_at is None and action.execution_status == "failed"
    assert [r["execution_status"] for r in reports()] == ["failed"]
    assert Command.objects.filter(source="bridge", state=State.QUEUED).count() == 0  # a pause before the next
    sim_clear_faults()
    evaluate(later=1.0)
    action.refresh_from_db()
    assert action.attempt_count == 2
    assert run_fast_lane() == [State.SUCCEEDED]
    evaluate(later=1.0)
    action.refresh_from_db()
    assert action.execution_status == "success" and action.goal_met_at is not None
    assert positions() == ()
    sent = reports()
    assert [r["execution_status"] for r in sent] == ["failed", "success"]
    assert [r["report_sequence"] for r in sent] == [1, 2]
    assert {r["action_id"] for r in sent} == {str(action.action_id)}


def test_a_close_that_filled_but_lost_its_answer_is_a_success_not_a_failure(trader):
    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")
    evaluate()
    sim_inject_fault("timeout_after_fill", symbol="EURUSD", count=1)
    run_fast_lane()
    evaluate()
    action = ProtectiveAction.objects.get()
    assert action.execution_status == "success"
    assert action.attempt_count == 1
    assert positions() == ()
    assert [r["execution_status"] for r in reports()] == ["success"]


def test_a_position_the_trader_closed_during_the_close_counts_as_closed(trader):
    ticket = open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")
    evaluate()
    mt5 = traders_own_terminal()
    closed = mt5.order_send(
        {"action": c.TRADE_ACTION_DEAL, "symbol": "EURUSD", "volume": 1.0, "type": c.ORDER_TYPE_SELL,
         "position": ticket, "type_filling": c.ORDER_FILLING_IOC}
    )  # fmt: skip
    assert closed.retcode == c.TRADE_RETCODE_DONE
    run_fast_lane()  # the bridge's close finds no position
    evaluate()
    action = ProtectiveAction.objects.get()
    assert action.execution_status == "success" and action.goal_met_at is not None
    assert [r["execution_status"] for r in reports()] == ["success"]


def test_a_position_the_trader_opens_after_a_total_breach_is_closed_and_reported(trader):
    send_policy(trader, policy_version=14, enforcement_flags={"disable_trading_on_breach": True})
    open_buy(trader, 5.0)
    sim_set_price("EURUSD", "1.06000")  # 5 lots × 250 pips: below the total floor of 90,000
    evaluate()
    run_fast_lane()
    evaluate(later=0.1)
    assert positions() == ()
    flat = ProtectiveAction.objects.get(rule_key="total_drawdown")
    assert flat.goal == "account_flat" and flat.execution_status == "success"
    # The trader opens from their own terminal: MT5 takes it, the bridge closes it.
    sim_set_price("EURUSD", "1.06000")
    opened = traders_own_terminal().order_send(
        {"action": c.TRADE_ACTION_DEAL, "symbol": "EURUSD", "volume": 0.1, "type": c.ORDER_TYPE_BUY,
         "type_filling": c.ORDER_FILLING_IOC}
    )  # fmt: skip
    assert opened.retcode == c.TRADE_RETCODE_DONE
    evaluate(later=0.2)
    action = ProtectiveAction.objects.get(rule_key="trading_disabled")
    assert action.scope == f"ticket:{positions()[0].ticket}"
    run_fast_lane()
    evaluate(later=0.3)
    action.refresh_from_db()
    assert action.execution_status == "success"
    assert positions() == ()
    assert reports()[-1]["rule_key"] == "trading_disabled"


def test_close_all_is_not_a_success_while_a_pending_order_is_left(trader):
    send_policy(trader, policy_version=14, enforcement_flags={"disable_trading_on_breach": True})
    open_buy(trader, 5.0)
    sim_set_price("EURUSD", "1.06000")
    evaluate()
    run_fast_lane()  # the first attempt closes the positions and cancels the orders it finds
    # After it, before the monitor looks, the trader places a pending order from their terminal.
    placed = traders_own_terminal().order_send(
        {"action": c.TRADE_ACTION_PENDING, "symbol": "EURUSD", "volume": 0.1, "type": c.ORDER_TYPE_BUY_LIMIT,
         "price": 1.0500}
    )  # fmt: skip
    assert placed.retcode == c.TRADE_RETCODE_PLACED
    evaluate(later=0.1)
    # A daily and a total drawdown both want the account flat: the older action sends the attempts.
    flat = ProtectiveAction.objects.filter(goal="account_flat").order_by("pk").first()
    assert flat is not None and flat.goal_met_at is None
    assert flat.execution_status == "partial"  # positions closed, an order still there
    evaluate(later=2.0)  # the next attempt, after its pause: only the cancel is left to send
    assert list(Command.objects.filter(state=State.QUEUED).values_list("command_type", flat=True)) == ["cancel_orders"]
    run_fast_lane()
    evaluate(later=3.0)
    flat.refresh_from_db()
    assert flat.execution_status == "success"
    assert get_gateway().account_snapshot(LOGIN, SERVER).orders == ()
    statuses = [r["execution_status"] for r in reports() if r["action_id"] == str(flat.action_id)]
    assert statuses == ["partial", "success"]
    assert ProtectiveAction.objects.filter(goal="account_flat", goal_met_at__isnull=True).count() == 0


def test_a_late_goal_is_reported_with_its_outcome_so_far(trader, settings):
    settings.PROTECTION_ALERT_SECONDS = 0
    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")
    evaluate()
    sim_inject_fault("market_closed", symbol="EURUSD", count=50)
    run_fast_lane()
    evaluate()
    action = ProtectiveAction.objects.get()
    assert action.alerted_at is not None
    assert action.goal_met_at is None
    assert reports()[-1]["execution_status"] == "failed"
    from alerts.models import Alert

    (alert,) = Alert.objects.filter(kind=Alert.Kind.PROTECTION_LATE)
    assert alert.subject == f"action:{action.action_id}" and str(LOGIN) in alert.title


def test_a_tenant_cannot_send_a_command_id_the_bridge_reserves(trader):
    body = fresh("close_positions")
    body["payload"]["command_id"] = "bridge-pa-1-0"
    response = trader.post("mt5/commands", body)
    assert response.status_code == 422
    assert response.json()["code"] == "reserved_command_id"


def test_bobs_account_failing_to_evaluate_never_holds_up_alices_protection(trader, bob, tenant_2, monkeypatch):
    from execution.simulator.service import sim_account_create
    from risk import engine, protection

    # Bob's account breaches in the same batch, is judged first, and acting on it fails.
    sim_account_create(login=7001, balance=100000, server=SERVER)
    policy = fresh("policy_snapshot", tenant_id=tenant_2.tenant_id)
    policy["actor"]["account_login"] = 7001
    policy["payload"]["daily_starting_balance_date"] = timezone.now().date().isoformat()
    assert bob.post("mt5/policies", policy).status_code == 200
    open_buy(bob, 1.0, login=7001, tenant_id=tenant_2.tenant_id)
    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")
    raise_ = protection.protective_action_raise

    def failing_for_bob(*, account, **kwargs):
        if account.login == 7001:
            raise RuntimeError("bob's account cannot be acted on")
        return raise_(account=account, **kwargs)

    monkeypatch.setattr(protection, "protective_action_raise", failing_for_bob)
    accounts = sorted(engine.watched_accounts(), key=lambda a: a.login != 7001)  # bob's first
    keys = [(a.login, a.server) for a in accounts]
    engine.risk_evaluate_snapshots(accounts=accounts, snapshots=engine.read_accounts(get_gateway(), keys))
    assert ProtectiveAction.objects.filter(account__login=LOGIN).exists()
    assert not ProtectiveAction.objects.filter(account__login=7001).exists()
