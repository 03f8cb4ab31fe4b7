"""The simulator's operations contract additions: the trader's own terminal (``mt5sim trade``), the
user's trade right, outages (``mt5sim fault --seconds``, ``--clear``), partial fills and
``mt5sim account show``.

Outages are timed by ``faults.clock``; the tests replace it with a clock they move, so nothing
sleeps.
"""

from __future__ import annotations

import json
from decimal import Decimal as D
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from execution.adapters.official import OfficialGateway
from execution.executors import _trade_json
from execution.gateway import DONE, GatewayUnavailable
from execution.models import SimAccount, SimDeal, SimOrder, SimPosition
from execution.simulator import SimulatedMetaTrader5, faults
from execution.simulator import constants as c
from execution.simulator.service import (
    sim_clear_faults,
    sim_dealer_close,
    sim_inject_fault,
    sim_set_trade_disabled,
)
from tests.execution_fixtures import ALICE, BOB, MAGIC, SERVER, market_buy

pytest_plugins = ["tests.execution_fixtures"]


def mt5sim(*args: str) -> list[dict[str, Any]]:
    out = StringIO()
    call_command("mt5sim", *args, stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


class Clock:
    """``faults.clock`` replaced by a clock the test moves."""

    def __init__(self, start_msc: int) -> None:
        self.now = start_msc

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * 1000)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    moved = Clock(faults.clock())
    monkeypatch.setattr(faults, "clock", moved)
    return moved


# --- the trader's own terminal ------------------------------------------------------------------
def test_a_trader_opening_from_their_own_terminal_gets_a_position_the_bridge_did_not_send(terminal):
    (result,) = mt5sim("trade", "--login", str(ALICE), "--symbol", "EURUSD", "--side", "buy", "--volume", "0.3",
                       "--sl", "1.08")  # fmt: skip
    assert result == {
        "retcode": c.TRADE_RETCODE_DONE,
        "deal": result["deal"],
        "order": result["order"],
        "volume": 0.3,
        "price": 1.0851,
        "comment": "Request executed",
    }
    (position,) = terminal.positions_get()
    assert (position.ticket, position.magic, position.comment, position.sl) == (result["order"], 0, "manual", 1.08)
    assert position.reason == c.POSITION_REASON_CLIENT
    deal = SimDeal.objects.get(ticket=result["deal"])
    assert (deal.reason, deal.magic) == (c.DEAL_REASON_CLIENT, 0)
    assert SimOrder.objects.get(ticket=result["order"]).reason == c.ORDER_REASON_CLIENT


def test_the_traders_own_orders_ignore_the_algo_trading_switches_but_not_the_trade_right(terminal, alice_account):
    SimAccount.objects.filter(pk=alice_account.pk).update(trade_expert=False)
    manual = SimulatedMetaTrader5(manual=True, trade_allowed=False, tradeapi_disabled=True)
    manual.initialize("alice-at-home", login=ALICE)
    assert manual.order_send(market_buy(manual, magic=0)).retcode == c.TRADE_RETCODE_DONE
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_SERVER_DISABLES_AT


def test_trade_on_an_unknown_login_is_a_command_error(alice_account):
    with pytest.raises(CommandError, match="cannot log into 9999"):
        mt5sim("trade", "--login", "9999", "--symbol", "EURUSD", "--side", "buy", "--volume", "0.1")


# --- the user's trade right ---------------------------------------------------------------------
def test_a_disabled_account_refuses_the_traders_own_order_with_10017(terminal):
    sim_set_trade_disabled(ALICE, True)
    (result,) = mt5sim("trade", "--login", str(ALICE), "--symbol", "EURUSD", "--side", "sell", "--volume", "0.1")
    assert (result["retcode"], result["deal"], result["order"], result["volume"]) == (
        c.TRADE_RETCODE_TRADE_DISABLED,
        0,
        0,
        0.0,
    )
    assert terminal.account_info().trade_allowed is False
    assert terminal.positions_total() == 0


def test_a_disabled_account_refuses_every_request_of_its_terminals_closes_included(terminal):
    opened = terminal.order_send(market_buy(terminal))
    sim_set_trade_disabled(ALICE, True)
    close = market_buy(terminal, type=c.ORDER_TYPE_SELL, position=opened.order)
    assert terminal.order_send(close).retcode == c.TRADE_RETCODE_TRADE_DISABLED
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_TRADE_DISABLED
    assert terminal.positions_total() == 1
    sim_set_trade_disabled(ALICE, False)
    assert terminal.order_send(close).retcode == c.TRADE_RETCODE_DONE


def test_a_dealer_can_still_close_a_position_of_a_disabled_account(terminal):
    opened = terminal.order_send(market_buy(terminal, volume=0.5))
    sim_set_trade_disabled(ALICE, True)
    outcome = sim_dealer_close(ALICE, opened.order)
    assert (outcome.retcode, outcome.volume) == (c.TRADE_RETCODE_DONE, 0.5)
    assert terminal.positions_total() == 0
    deal = SimDeal.objects.get(ticket=outcome.deal)
    assert (deal.entry, deal.comment, deal.position_id) == (c.DEAL_ENTRY_OUT, "dealer", opened.order)


# --- outages ------------------------------------------------------------------------------------
def test_an_outage_of_45_seconds_fails_every_call_until_it_ends(terminal, clock):
    opened = terminal.order_send(market_buy(terminal))
    (fault,) = mt5sim("fault", "--kind", "no_connection", "--seconds", "45")
    assert (fault["kind"], fault["count"], fault["until_msc"]) == ("no_connection", None, clock.now + 45_000)
    # Reads fail like a disconnected terminal's, and the link stays down.
    assert terminal.account_info() is None
    assert terminal.last_error() == (c.RES_E_INTERNAL_FAIL_CONNECT, "No IPC connection")
    assert terminal.positions_get() is None
    clock.advance(30)
    assert terminal.initialize() is False
    assert terminal.last_error()[0] == c.RES_E_INTERNAL_FAIL_INIT
    other = SimulatedMetaTrader5()
    assert other.initialize(login=ALICE) is False
    clock.advance(14.9)
    assert terminal.initialize() is False
    clock.advance(0.1)  # 45 s: over
    assert terminal.initialize() is True
    assert [p.ticket for p in terminal.positions_get()] == [opened.order]
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_DONE


def test_an_outage_fails_every_order_send_of_its_kind_without_being_consumed(terminal, clock):
    sim_inject_fault("requote", seconds=10)
    for _ in range(3):
        assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_REQUOTE
    assert terminal.positions_get() == ()  # a requote outage leaves reads alone
    clock.advance(10)
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_DONE


def test_an_outage_of_one_login_leaves_the_others_terminals_working(terminal, bob_account, clock):
    mt5sim("fault", "--kind", "no_connection", "--seconds", "60", "--login", str(BOB))
    bob = SimulatedMetaTrader5()
    assert bob.initialize("bobs-terminal", login=BOB) is False
    assert terminal.positions_get() == ()
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_DONE
    assert terminal.account_info().login == ALICE


def test_the_risk_monitors_read_fails_during_an_outage_of_every_account(alice_account, clock):
    gateway = OfficialGateway(SimulatedMetaTrader5(), magic=MAGIC, backend="simulator", verify_account=False)
    sim_inject_fault("no_connection", seconds=5)
    (read,) = gateway.account_snapshots([(ALICE, SERVER)]).values()
    assert isinstance(read, GatewayUnavailable) and read.code == c.RES_E_INTERNAL_FAIL_INIT
    with pytest.raises(GatewayUnavailable):
        gateway.account_snapshot(ALICE, SERVER)
    clock.advance(5)
    assert gateway.account_snapshot(ALICE, SERVER).balance == D("100000.00")


def test_fault_clear_ends_an_outage(terminal, clock):
    mt5sim("fault", "--kind", "no_connection", "--seconds", "600")
    assert terminal.positions_get() is None
    assert mt5sim("fault", "--clear") == [{"cleared": 1, "login": None}]
    assert terminal.initialize() is True
    assert terminal.positions_get() == ()


def test_fault_clear_for_a_login_leaves_the_other_faults(terminal, bob_account, clock):
    sim_inject_fault("market_closed", login=BOB, seconds=60)
    sim_inject_fault("market_closed", login=BOB, count=1)
    sim_inject_fault("requote", login=ALICE, count=2)
    assert sim_clear_faults(login=BOB) == 2
    bob = SimulatedMetaTrader5()
    bob.initialize("bobs-terminal", login=BOB)
    assert bob.order_send(market_buy(bob)).retcode == c.TRADE_RETCODE_DONE
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_REQUOTE


def test_fault_takes_a_count_or_seconds_not_both_and_clear_takes_no_kind(db):
    with pytest.raises(CommandError):
        mt5sim("fault", "--kind", "requote", "--count", "2", "--seconds", "5")
    with pytest.raises(CommandError, match="--clear takes only --login"):
        mt5sim("fault", "--clear", "--kind", "requote")
    with pytest.raises(CommandError, match="--kind is required"):
        mt5sim("fault")
    with pytest.raises(CommandError, match="seconds must be more than 0"):
        mt5sim("fault", "--kind", "requote", "--seconds", "0")


# --- partial fills ------------------------------------------------------------------------------
def test_a_partial_fill_opens_half_rounded_down_to_the_step_and_answers_10010(terminal):
    sim_inject_fault("partial_fill")
    result = terminal.order_send(market_buy(terminal, volume=0.75))
    assert (result.retcode, result.volume, result.comment) == (
        c.TRADE_RETCODE_DONE_PARTIAL,
        0.37,
        "Request executed partially",
    )
    (position,) = terminal.positions_get()
    assert position.volume == 0.37
    order = SimOrder.objects.get(ticket=result.order)
    assert (order.volume_initial, order.volume_current, order.state) == (D("0.75"), D("0.38"), c.ORDER_STATE_CANCELED)


def test_a_partial_fill_of_one_step_fills_it_whole(terminal):
    sim_inject_fault("partial_fill")
    result = terminal.order_send(market_buy(terminal, volume=0.01))
    assert (result.retcode, result.volume) == (c.TRADE_RETCODE_DONE, 0.01)


def test_a_fill_or_kill_order_is_never_filled_in_part(terminal):
    sim_inject_fault("partial_fill")
    result = terminal.order_send(market_buy(terminal, type_filling=c.ORDER_FILLING_FOK))
    assert (result.retcode, result.volume) == (c.TRADE_RETCODE_REJECT, 0.0)
    assert terminal.positions_total() == 0


def test_a_partial_fill_leaves_the_rest_of_the_position_open_and_says_so(gateway):
    # XAUUSD offers IOC only, so the adapter sends IOC, which MT5 may fill in part.
    opened = gateway.open_position(ALICE, SERVER, symbol="XAUUSD", side="buy", volume=D("1"), tag="b:open")
    assert opened.ok and not opened.partial
    sim_inject_fault("partial_fill", symbol="XAUUSD")
    closed = gateway.close_position(ALICE, SERVER, ticket=opened.position, tag="b:close")
    assert (closed.outcome, closed.retcode, closed.partial) == (DONE, c.TRADE_RETCODE_DONE_PARTIAL, True)
    assert (closed.volume, closed.requested_volume, closed.position) == (D("0.5"), D("1.0"), opened.position)
    assert closed.message == "Request executed partially: 0.5 of 1.0 lots filled"
    (position,) = gateway.account_snapshot(ALICE, SERVER).positions
    assert (position.ticket, position.volume) == (opened.position, D("0.5"))
    assert SimPosition.objects.get(ticket=opened.position).volume == D("0.5")
    reported = _trade_json(closed)
    assert (reported["partial"], reported["volume"], reported["requested_volume"]) == (True, "0.5", "1.0")
    assert "partial" not in _trade_json(opened)


# --- account show -------------------------------------------------------------------------------
def test_account_show_prints_money_margin_mode_rights_and_the_terminal_logged_into_it(terminal):
    terminal.order_send(market_buy(terminal))
    (shown,) = mt5sim("account", "show", "--login", str(ALICE))
    info = terminal.account_info()
    assert shown == {
        "login": ALICE,
        "server": SERVER,
        "currency": "USD",
        "leverage": 100,
        "balance": "99996.50",  # the entry commission is charged at once
        "credit": "0.00",
        "equity": f"{info.equity:.2f}",
        "margin": f"{info.margin:.2f}",
        "margin_free": f"{info.margin_free:.2f}",
        "margin_level": f"{info.margin_level:.2f}",
        "margin_mode": "ACCOUNT_MARGIN_MODE_RETAIL_HEDGING",
        "trade_allowed": True,
        "trade_disabled": False,
        "trade_expert": True,
        "positions": 1,
        "terminal": "terminal64.exe",  # the fixture's terminal: initialize() without a path
    }
    sim_set_trade_disabled(ALICE, True)
    (shown,) = mt5sim("account", "show", "--login", str(ALICE))
    assert (shown["trade_allowed"], shown["trade_disabled"]) == (False, True)


def test_account_show_of_an_unknown_login_is_a_command_error(db):
    with pytest.raises(CommandError, match="no simulated account 4242"):
        mt5sim("account", "show", "--login", "4242")
