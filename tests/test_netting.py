"""Netting accounts and the stop-out: the simulator through the MetaTrader5 module's surface (as
MT5 would answer), and the bridge's open, close and reconciliation on a netting account.

Carol trades on a netting account (7003, 100,000 USD). EURUSD is pinned at 1.08500 / 1.08510
and charges 3.50 USD a lot on every deal."""

from __future__ import annotations

import json
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from commands.models import CommandEvent
from commands.states import State
from execution.gateways import get_gateway, reset_gateway
from execution.models import SimPosition
from execution.simulator import SimulatedMetaTrader5
from execution.simulator import constants as c
from execution.simulator.service import sim_account_create, sim_inject_fault, sim_set_price
from tests.execution_fixtures import MAGIC, SERVER, market_buy, pin_prices
from tests.test_execution import LOGIN, run, submit

pytest_plugins = ["tests.execution_fixtures"]

CAROL = 7003


@pytest.fixture
def netting(db: None) -> SimulatedMetaTrader5:
    """A terminal logged into carol's netting account."""
    sim_account_create(CAROL, Decimal("100000"), server=SERVER, margin_mode="netting")
    pin_prices()
    mt5 = SimulatedMetaTrader5()
    assert mt5.initialize("carols-terminal", login=CAROL, server=SERVER), mt5.last_error()
    return mt5


def sell(mt5: SimulatedMetaTrader5, volume: float, **extra: object) -> dict:
    return market_buy(mt5, volume=volume, type=c.ORDER_TYPE_SELL, **extra)


def mt5sim(*args: str) -> list[dict[str, Any]]:
    out = StringIO()
    call_command("mt5sim", *args, stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


# --- netting in the simulator, through the terminal -----------------------------------------------
def test_a_netting_account_says_so_in_account_info_and_a_hedging_one_still_hedges(netting, terminal):
    assert netting.account_info().margin_mode == c.ACCOUNT_MARGIN_MODE_RETAIL_NETTING
    assert terminal.account_info().margin_mode == c.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING


def test_a_second_buy_adds_to_the_one_position_at_the_volume_weighted_open_price(netting):
    first = netting.order_send(market_buy(netting, volume=1.0))
    sim_set_price("EURUSD", "1.08600", "1.08610")
    second = netting.order_send(market_buy(netting, volume=0.5, sl=1.07))
    assert second.retcode == c.TRADE_RETCODE_DONE and second.order != first.order
    (position,) = netting.positions_get()
    assert (position.ticket, position.identifier) == (first.order, first.order)
    assert (position.type, position.volume, position.sl) == (c.POSITION_TYPE_BUY, 1.5, 1.07)
    # (1.0851 x 1.0 + 1.0861 x 0.5) / 1.5
    assert position.price_open == 1.085433
    deal = netting.history_deals_get(ticket=second.deal)[0]
    assert (deal.entry, deal.position_id, deal.order) == (c.DEAL_ENTRY_IN, first.order, second.order)
    assert netting.history_orders_get(ticket=second.order)[0].position_id == first.order
    assert netting.account_info().balance == 100000 - 3.5 - 1.75


def test_an_opposite_deal_reduces_the_position_and_its_realised_profit_goes_to_the_balance(netting):
    opened = netting.order_send(market_buy(netting, volume=1.0))
    sim_set_price("EURUSD", "1.08610", "1.08620")
    reduced = netting.order_send(sell(netting, 0.4))
    assert (reduced.retcode, reduced.volume, reduced.price) == (c.TRADE_RETCODE_DONE, 0.4, 1.0861)
    (position,) = netting.positions_get()
    assert (position.ticket, position.type, position.volume) == (opened.order, c.POSITION_TYPE_BUY, 0.6)
    assert position.price_open == 1.0851
    out = netting.history_deals_get(ticket=reduced.deal)[0]
    assert (out.entry, out.volume, out.profit, out.position_id) == (c.DEAL_ENTRY_OUT, 0.4, 40.0, opened.order)
    # 40 USD realised, less 3.50 in and 1.40 out.
    assert netting.account_info().balance == pytest.approx(100000 + 40 - 3.5 - 1.4)


def test_an_opposite_deal_of_equal_volume_closes_the_position(netting):
    opened = netting.order_send(market_buy(netting, volume=1.0))
    closed = netting.order_send(sell(netting, 1.0))
    assert closed.retcode == c.TRADE_RETCODE_DONE
    assert netting.positions_get() == ()
    deals = netting.history_deals_get(position=opened.order)
    assert [(d.entry, d.volume) for d in deals] == [(c.DEAL_ENTRY_IN, 1.0), (c.DEAL_ENTRY_OUT, 1.0)]
    assert deals[1].profit == -10.0  # bought at 1.08510, sold at 1.08500
    assert netting.account_info().balance == 100000 - 10 - 7.0


def test_a_larger_opposite_deal_reverses_the_position_under_the_reversing_orders_ticket(netting):
    opened = netting.order_send(market_buy(netting, volume=1.0))
    sim_set_price("EURUSD", "1.08700", "1.08710")
    reversing = netting.order_send(sell(netting, 1.5))
    assert (reversing.retcode, reversing.volume, reversing.price) == (c.TRADE_RETCODE_DONE, 1.5, 1.087)
    (position,) = netting.positions_get()
    # MT5: the identifier stays, the ticket becomes the reversing order's.
    assert (position.ticket, position.identifier) == (reversing.order, opened.order)
    assert (position.type, position.volume, position.price_open) == (c.POSITION_TYPE_SELL, 0.5, 1.087)
    inout = netting.history_deals_get(ticket=reversing.deal)[0]
    assert (inout.entry, inout.volume, inout.position_id) == (c.DEAL_ENTRY_INOUT, 1.5, opened.order)
    assert inout.profit == 190.0  # the 1.0 lot closed: 1.08510 -> 1.08700
    assert [d.ticket for d in netting.history_deals_get(position=opened.order)] == [opened.deal, reversing.deal]
    # The reversed position closes by its new ticket.
    closed = netting.order_send(market_buy(netting, volume=0.5, position=reversing.order))
    assert closed.retcode == c.TRADE_RETCODE_DONE and netting.positions_get() == ()
    assert netting.history_deals_get(ticket=closed.deal)[0].position_id == opened.order


def test_a_deal_naming_the_netting_position_reduces_it_and_may_not_exceed_it(netting):
    opened = netting.order_send(market_buy(netting, volume=1.0))
    too_much = netting.order_send(sell(netting, 1.5, position=opened.order))
    assert too_much.retcode == c.TRADE_RETCODE_INVALID_CLOSE_VOLUME
    reduced = netting.order_send(sell(netting, 0.3, position=opened.order))
    assert reduced.retcode == c.TRADE_RETCODE_DONE
    assert netting.positions_get()[0].volume == 0.7
    assert netting.history_deals_get(ticket=reduced.deal)[0].entry == c.DEAL_ENTRY_OUT


def test_a_pending_order_filling_on_a_netting_account_adds_to_the_symbols_position(netting):
    opened = netting.order_send(market_buy(netting, volume=1.0))
    limit = {
        "action": c.TRADE_ACTION_PENDING, "symbol": "EURUSD", "volume": 0.5, "type": c.ORDER_TYPE_BUY_LIMIT,
        "price": 1.08, "type_filling": c.ORDER_FILLING_RETURN, "magic": MAGIC,
    }  # fmt: skip
    placed = netting.order_send(limit)
    assert placed.retcode == c.TRADE_RETCODE_PLACED
    fired = sim_set_price("EURUSD", "1.07990", "1.08000").triggered
    assert [t.kind for t in fired] == ["filled"]
    (position,) = netting.positions_get()
    assert (position.ticket, position.volume) == (opened.order, 1.5)
    assert netting.history_orders_get(ticket=placed.order)[0].position_id == opened.order


def test_a_reduce_on_a_netting_account_needs_no_free_margin(db):
    sim_account_create(CAROL, Decimal("1200"), server=SERVER, margin_mode="netting")
    pin_prices()
    mt5 = SimulatedMetaTrader5()
    assert mt5.initialize(login=CAROL, server=SERVER)
    assert mt5.order_send(market_buy(mt5, volume=1.0)).retcode == c.TRADE_RETCODE_DONE
    assert mt5.order_send(market_buy(mt5, volume=0.5)).retcode == c.TRADE_RETCODE_NO_MONEY
    assert mt5.order_send(sell(mt5, 0.5)).retcode == c.TRADE_RETCODE_DONE
    # A reversal needs the margin of what it opens the other way.
    assert mt5.order_send(sell(mt5, 2.0)).retcode == c.TRADE_RETCODE_NO_MONEY


def test_account_show_and_create_give_the_margin_mode(db):
    mt5sim("account", "create", "--login", str(CAROL), "--balance", "1000", "--margin-mode", "netting")
    mt5sim("account", "create", "--login", "7004", "--balance", "1000")
    (shown,) = mt5sim("account", "show", "--login", str(CAROL))
    assert shown["margin_mode"] == "ACCOUNT_MARGIN_MODE_RETAIL_NETTING"
    (shown,) = mt5sim("account", "show", "--login", "7004")
    assert shown["margin_mode"] == "ACCOUNT_MARGIN_MODE_RETAIL_HEDGING"


# --- the stop-out -----------------------------------------------------------------------------------
def test_a_stop_out_closes_the_most_losing_position_first_until_the_margin_level_recovers(db):
    sim_account_create(7005, Decimal("3000"), server=SERVER)
    pin_prices()
    mt5 = SimulatedMetaTrader5()
    assert mt5.initialize(login=7005, server=SERVER)
    info = mt5.account_info()
    assert (info.margin_so_call, info.margin_so_so, info.margin_so_mode) == (100.0, 50.0, 0)
    euro = mt5.order_send(market_buy(mt5, "EURUSD", 1.0))
    pound = mt5.order_send(market_buy(mt5, "GBPUSD", 1.0))
    gold = mt5.order_send(market_buy(mt5, "XAUUSD", 0.01))
    assert {r.retcode for r in (euro, pound, gold)} == {c.TRADE_RETCODE_DONE}
    assert sim_set_price("GBPUSD", "1.26500").triggered == ()  # -514 USD: the level is still above 100%
    assert mt5.account_info().margin_level > 100
    fired = sim_set_price("EURUSD", "1.06500").triggered  # -2,010 USD more: the level falls to about 20%
    # The euro (the most losing) goes first; without it the level is still below 50%: the pound goes
    # too; then the gold alone leaves the level far above it.
    assert [(t.kind, t.ticket) for t in fired] == [("so", euro.order), ("so", pound.order)]
    (left,) = mt5.positions_get()
    assert left.ticket == gold.order
    assert mt5.account_info().margin_level >= 50
    for stopped, trigger in zip((euro, pound), fired, strict=True):
        out = mt5.history_deals_get(ticket=trigger.deal)[0]
        assert (out.reason, out.entry, out.position_id) == (c.DEAL_REASON_SO, c.DEAL_ENTRY_OUT, stopped.order)
        assert out.comment.startswith("[so ") and out.comment.endswith("%]")
        assert float(out.comment[4:-2]) < 50
    assert mt5.history_orders_get(ticket=mt5.history_deals_get(ticket=fired[0].deal)[0].order)[0].reason == (
        c.ORDER_REASON_SO
    )


def test_mt5sim_price_prints_what_the_stop_out_closed(db):
    sim_account_create(7006, Decimal("1200"), server=SERVER, margin_mode="netting")
    pin_prices()
    mt5 = SimulatedMetaTrader5()
    assert mt5.initialize(login=7006, server=SERVER)
    opened = mt5.order_send(market_buy(mt5, volume=1.0))
    quote, stopped = mt5sim("price", "--symbol", "EURUSD", "--bid", "1.07800")  # -710 USD: about 45%
    assert quote["symbol"] == "EURUSD"
    assert (stopped["triggered"], stopped["ticket"], stopped["price"]) == ("so", opened.order, "1.07800")
    assert not SimPosition.objects.filter(account__login=7006).exists()


def test_an_account_above_its_stop_out_level_keeps_its_positions(terminal):
    opened = terminal.order_send(market_buy(terminal, volume=1.0))
    assert sim_set_price("EURUSD", "1.00000").triggered == ()  # -8,510 USD of 100,000
    assert [p.ticket for p in terminal.positions_get()] == [opened.order]


# --- the bridge on a netting account ---------------------------------------------------------------
@pytest.fixture
def netting_trader(alice, account_1):
    reset_gateway()
    sim_account_create(login=LOGIN, balance=100000, server=SERVER, margin_mode="netting")
    sim_set_price("EURUSD", "1.08500")
    yield alice
    reset_gateway()


def test_an_open_position_adds_to_the_netting_position_and_reports_its_ticket(netting_trader):
    first = run(submit(netting_trader, "open_position", symbol="EURUSD", direction="buy", volume=1.0))
    second = run(submit(netting_trader, "open_position", symbol="EURUSD", direction="buy", volume=0.5))
    assert (first.state, second.state) == (State.SUCCEEDED, State.SUCCEEDED)
    (position,) = get_gateway().account_snapshot(LOGIN, SERVER).positions
    assert position.volume == Decimal("1.5")
    assert second.result["order"] != position.ticket
    assert first.result["position"] == second.result["position"] == position.ticket == position.identifier


def test_the_bridge_refuses_an_open_position_against_a_netting_position_before_sending(netting_trader):
    bought = run(submit(netting_trader, "open_position", symbol="EURUSD", direction="buy", volume=1.0))
    ticket = bought.result["position"]
    command = run(submit(netting_trader, "open_position", symbol="EURUSD", direction="sell", volume=2.0))
    assert command.state == State.REJECTED
    assert command.error_code == "netting_opposite_position"
    assert str(ticket) in command.error_message and "close_position" in command.error_message
    assert command.attempts == 0
    (position,) = get_gateway().account_snapshot(LOGIN, SERVER).positions
    assert (position.ticket, position.side, position.volume) == (ticket, "buy", Decimal("1.0"))


def test_close_position_closes_a_netting_position_partly_then_fully(netting_trader):
    ticket = run(submit(netting_trader, "open_position", symbol="EURUSD", direction="buy", volume=1.0)).result[
        "position"
    ]
    partly = run(submit(netting_trader, "close_position", ticket=ticket, volume=0.4))
    assert partly.state == State.SUCCEEDED, partly.error_message
    assert partly.attempts == 1 and partly.events.get(kind=CommandEvent.Kind.ATTEMPT).request["position"] == ticket
    assert get_gateway().account_snapshot(LOGIN, SERVER).positions[0].volume == Decimal("0.6")
    fully = run(submit(netting_trader, "close_position", ticket=ticket))
    assert fully.state == State.SUCCEEDED and fully.result["profit"] == "-6.00"
    assert get_gateway().account_snapshot(LOGIN, SERVER).positions == ()


def test_an_open_on_a_netting_account_whose_answer_was_lost_is_reconciled_to_its_deal_and_position(
    netting_trader,
):
    held = run(submit(netting_trader, "open_position", symbol="EURUSD", direction="buy", volume=1.0)).result["position"]
    sim_inject_fault("timeout_after_fill", symbol="EURUSD", count=1)
    command = run(submit(netting_trader, "open_position", symbol="EURUSD", direction="buy", volume=0.5))
    assert command.state == State.SUCCEEDED, command.error_message
    assert command.result["reconciled"] is True and command.result["entry"] == "in"
    assert command.result["position"] == held
    (position,) = get_gateway().account_snapshot(LOGIN, SERVER).positions
    assert (position.ticket, position.volume) == (held, Decimal("1.5"))  # added once, not twice
