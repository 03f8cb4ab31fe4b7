"""SimulatedMetaTrader5 against the MetaTrader5 module's contract: names, values, retcodes,
``None`` + ``last_error()``, money math, faults, and shared durable state."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from execution.models import SimAccount, SimDeal, SimFault, SimOrder, SimPosition, SimSymbol
from execution.simulator import SimulatedMetaTrader5
from execution.simulator import constants as c
from execution.simulator.service import (
    sim_account_create,
    sim_apply_rollover,
    sim_inject_fault,
    sim_random_walk_step,
    sim_set_market_open,
    sim_set_price,
)
from execution.simulator.types import AccountInfo, SymbolInfo, TradeDeal, TradePosition
from tests.execution_fixtures import ALICE, BOB, MAGIC, SERVER, market_buy

pytest_plugins = ["tests.execution_fixtures"]

FAR_PAST = datetime(2000, 1, 1, tzinfo=UTC)


def far_future() -> datetime:
    return datetime.now(UTC) + timedelta(days=1)


# --- the module's surface -------------------------------------------------------------------
def test_constants_have_the_official_packages_values():
    assert (c.TRADE_ACTION_DEAL, c.TRADE_ACTION_PENDING, c.TRADE_ACTION_SLTP, c.TRADE_ACTION_REMOVE) == (1, 5, 6, 8)
    assert (c.ORDER_FILLING_FOK, c.ORDER_FILLING_IOC, c.ORDER_FILLING_RETURN) == (0, 1, 2)
    assert (c.SYMBOL_FILLING_FOK, c.SYMBOL_FILLING_IOC) == (1, 2)
    assert (c.TRADE_RETCODE_REQUOTE, c.TRADE_RETCODE_DONE, c.TRADE_RETCODE_INVALID_FILL) == (10004, 10009, 10030)
    assert (c.RES_E_INTERNAL_FAIL_CONNECT, c.RES_E_INTERNAL_FAIL_TIMEOUT) == (-10004, -10005)
    assert c.TIMEFRAME_H1 == 16385 and c.TIMEFRAME_MN1 == 49153


def test_every_constant_is_an_attribute_of_the_simulated_module():
    mt5 = SimulatedMetaTrader5()
    for name in c.MODULE_CONSTANTS:
        assert getattr(mt5, name) == getattr(c, name)
    functions = (
        "initialize login shutdown last_error version terminal_info account_info symbols_total symbols_get "
        "symbol_info symbol_info_tick symbol_select positions_total positions_get orders_total orders_get "
        "history_orders_get history_deals_get order_check order_send order_calc_margin order_calc_profit"
    ).split()
    for function in functions:
        assert callable(getattr(mt5, function)), function


def test_calls_before_initialize_return_none_with_no_ipc_connection(alice_account):
    mt5 = SimulatedMetaTrader5()
    assert mt5.account_info() is None
    assert mt5.last_error() == (-10004, "No IPC connection")
    assert mt5.order_send({"action": 1}) is None
    assert mt5.last_error() == (-10004, "No IPC connection")


def test_initialize_succeeds_and_last_error_says_success(alice_account):
    mt5 = SimulatedMetaTrader5()
    assert mt5.initialize() is True
    assert mt5.last_error() == (1, "Success")
    assert mt5.version()[0] == 500
    assert mt5.terminal_info().connected is True


def test_login_with_a_wrong_password_fails_with_authorization_failed(db):
    sim_account_create(ALICE, 1000, server=SERVER, password="secret")
    mt5 = SimulatedMetaTrader5()
    assert mt5.initialize()
    assert mt5.login(ALICE, password="wrong", server=SERVER) is False
    assert mt5.last_error() == (-6, "Terminal: Authorization failed")
    assert mt5.login(ALICE, password="secret", server=SERVER) is True


def test_account_info_has_the_real_field_names_and_the_created_balance(terminal):
    info = terminal.account_info()
    assert type(info) is AccountInfo
    assert info._fields[:3] == ("login", "trade_mode", "leverage") and info._fields[-1] == "company"
    assert (info.login, info.server, info.currency, info.leverage) == (ALICE, SERVER, "USD", 100)
    assert info.balance == info.equity == info.margin_free == 100000.0
    assert info.margin_mode == c.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING


def test_account_create_is_idempotent_and_writes_a_balance_deal(db):
    first, created = sim_account_create(ALICE, 100000)
    again, created_again = sim_account_create(ALICE, 5)
    assert created and not created_again and first.pk == again.pk
    assert SimAccount.objects.get(pk=first.pk).balance == Decimal("100000.00")
    assert SimDeal.objects.filter(account=first, type=c.DEAL_TYPE_BALANCE).count() == 1


def test_five_symbols_are_seeded_on_first_use_with_at_least_one_without_fok(terminal):
    names = {s.name for s in terminal.symbols_get()}
    assert names == {"EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "US30"}
    assert terminal.symbols_total() == 5
    without_fok = [s.name for s in terminal.symbols_get() if not s.filling_mode & c.SYMBOL_FILLING_FOK]
    assert "XAUUSD" in without_fok


def test_symbols_get_filters_by_group_with_wildcards_and_exclusions(terminal):
    assert {s.name for s in terminal.symbols_get(group="*USD*,!EUR*")} == {"GBPUSD", "USDJPY", "XAUUSD"}


def test_symbol_info_of_an_unknown_symbol_is_none(terminal):
    assert terminal.symbol_info("NOPE") is None
    assert terminal.last_error()[0] == c.RES_E_NOT_FOUND


def test_set_price_without_ask_adds_the_typical_spread(terminal):
    sim_set_price("EURUSD", "1.10000")
    tick = terminal.symbol_info_tick("EURUSD")
    assert (tick.bid, tick.ask) == (1.1, 1.1001)
    assert terminal.symbol_info("EURUSD").spread == 10


# --- market orders and money -----------------------------------------------------------------
def test_a_market_buy_fills_at_ask_and_writes_order_deal_and_position(terminal):
    result = terminal.order_send(market_buy(terminal, volume=0.5))
    assert result.retcode == c.TRADE_RETCODE_DONE
    assert (result.volume, result.price, result.bid, result.ask) == (0.5, 1.0851, 1.085, 1.0851)
    (position,) = terminal.positions_get()
    assert type(position) is TradePosition
    assert (position.ticket, position.identifier) == (result.order, result.order)
    assert (position.type, position.volume, position.magic) == (c.POSITION_TYPE_BUY, 0.5, MAGIC)
    deal = terminal.history_deals_get(ticket=result.deal)[0]
    assert (deal.entry, deal.position_id, deal.order) == (c.DEAL_ENTRY_IN, result.order, result.order)
    assert terminal.history_orders_get(ticket=result.order)[0].state == c.ORDER_STATE_FILLED


def test_eurusd_one_lot_falling_250_pips_shows_minus_2500_usd(terminal):
    opened = terminal.order_send(market_buy(terminal, volume=1.0))
    assert opened.price == 1.0851
    sim_set_price("EURUSD", "1.06010", "1.06020")
    (position,) = terminal.positions_get()
    assert position.price_current == 1.0601
    assert position.profit == -2500.0
    info = terminal.account_info()
    assert info.profit == -2500.0
    assert info.equity == info.balance - 2500.0


def test_usdjpy_profit_is_converted_by_dividing_by_the_price(terminal):
    request = market_buy(terminal, "USDJPY", 1.0, type_filling=c.ORDER_FILLING_FOK, price=155.012)
    assert terminal.order_send(request).retcode == c.TRADE_RETCODE_DONE
    sim_set_price("USDJPY", "156.012", "156.024")
    (position,) = terminal.positions_get()
    # 1 lot x 100,000 x 1.000 JPY = 100,000 JPY, at 156.012 = 640.98 USD
    assert position.profit == 640.98


def test_xauusd_profit_uses_a_contract_of_100_ounces(terminal):
    terminal.order_send(market_buy(terminal, "XAUUSD", 0.1))
    sim_set_price("XAUUSD", "2360.25", "2360.50")
    assert terminal.positions_get()[0].profit == 100.0  # 10 USD x 100 oz x 0.1 lot


def test_us30_profit_uses_a_contract_of_one(terminal):
    sell = market_buy(terminal, "US30", 1.0, type=c.ORDER_TYPE_SELL)
    assert terminal.order_send(sell).price == 39000.0
    sim_set_price("US30", "38898.0", "38900.0")
    assert terminal.positions_get()[0].profit == 100.0  # 100 points x 1 x 1 lot, valued at ask


def test_commission_per_lot_is_charged_on_the_entry_and_the_exit_deal(terminal):
    opened = terminal.order_send(market_buy(terminal, volume=2.0))
    assert terminal.account_info().balance == 100000 - 7.0
    close = market_buy(terminal, volume=2.0, type=c.ORDER_TYPE_SELL, position=opened.order)
    assert terminal.order_send(close).retcode == c.TRADE_RETCODE_DONE
    deals = terminal.history_deals_get(position=opened.order)
    assert [d.commission for d in deals] == [-7.0, -7.0]
    # Closed at bid 1.08500 after buying at 1.08510: -20 USD, plus both commissions.
    assert deals[1].profit == -20.0
    assert terminal.account_info().balance == 100000 - 14.0 - 20.0


def test_a_partial_close_writes_an_out_deal_and_leaves_the_rest_open(terminal):
    opened = terminal.order_send(market_buy(terminal, volume=1.0))
    sim_set_price("EURUSD", "1.08610", "1.08620")
    close = market_buy(terminal, volume=0.4, type=c.ORDER_TYPE_SELL, position=opened.order)
    result = terminal.order_send(close)
    assert (result.retcode, result.volume, result.price) == (c.TRADE_RETCODE_DONE, 0.4, 1.0861)
    (position,) = terminal.positions_get()
    assert (position.ticket, position.volume) == (opened.order, 0.6)
    out = terminal.history_deals_get(ticket=result.deal)[0]
    assert type(out) is TradeDeal
    assert (out.entry, out.volume, out.profit, out.position_id) == (c.DEAL_ENTRY_OUT, 0.4, 40.0, opened.order)


def test_swap_accrues_at_rollover_and_is_realised_on_close(terminal):
    opened = terminal.order_send(market_buy(terminal, volume=1.0))
    sim_apply_rollover()
    assert terminal.positions_get()[0].swap == -7.2
    close = market_buy(terminal, volume=1.0, type=c.ORDER_TYPE_SELL, position=opened.order)
    deal = terminal.history_deals_get(ticket=terminal.order_send(close).deal)[0]
    assert deal.swap == -7.2


def test_closing_with_the_same_direction_is_an_invalid_request(terminal):
    opened = terminal.order_send(market_buy(terminal))
    same_side = market_buy(terminal, position=opened.order)
    assert terminal.order_send(same_side).retcode == c.TRADE_RETCODE_INVALID
    assert terminal.positions_total() == 1


def test_closing_more_than_the_position_volume_is_refused(terminal):
    opened = terminal.order_send(market_buy(terminal, volume=0.1))
    close = market_buy(terminal, volume=0.2, type=c.ORDER_TYPE_SELL, position=opened.order)
    assert terminal.order_send(close).retcode == c.TRADE_RETCODE_INVALID_CLOSE_VOLUME


def test_closing_a_closed_position_answers_position_closed(terminal):
    opened = terminal.order_send(market_buy(terminal, volume=0.1))
    close = market_buy(terminal, volume=0.1, type=c.ORDER_TYPE_SELL, position=opened.order)
    assert terminal.order_send(close).retcode == c.TRADE_RETCODE_DONE
    assert terminal.order_send(close).retcode == c.TRADE_RETCODE_POSITION_CLOSED


def test_the_comment_is_cut_at_31_characters(terminal):
    result = terminal.order_send(market_buy(terminal, comment="x" * 40))
    assert result.request.comment == "x" * 31
    assert terminal.positions_get()[0].comment == "x" * 31


# --- rejections with the real retcodes --------------------------------------------------------
def test_fok_on_a_symbol_without_fok_is_an_invalid_fill(terminal):
    request = market_buy(terminal, "XAUUSD", 0.1, type_filling=c.ORDER_FILLING_FOK)
    assert terminal.order_send(request).retcode == c.TRADE_RETCODE_INVALID_FILL
    assert terminal.positions_total() == 0


def test_return_filling_is_refused_for_market_orders_under_market_execution(terminal):
    request = market_buy(terminal, "EURUSD", 0.1, type_filling=c.ORDER_FILLING_RETURN)
    assert terminal.order_send(request).retcode == c.TRADE_RETCODE_INVALID_FILL


def test_closes_are_held_to_the_filling_mode_too(terminal):
    opened = terminal.order_send(market_buy(terminal, "XAUUSD", 0.1))
    close = market_buy(terminal, "XAUUSD", 0.1, type=c.ORDER_TYPE_SELL, position=opened.order, type_filling=0)
    assert terminal.order_send(close).retcode == c.TRADE_RETCODE_INVALID_FILL


@pytest.mark.parametrize("volume", [0.0, 0.001, 0.015, 1000.0])
def test_a_volume_off_the_limits_or_the_step_is_an_invalid_volume(terminal, volume):
    assert terminal.order_send(market_buy(terminal, volume=volume)).retcode == c.TRADE_RETCODE_INVALID_VOLUME


def test_stops_on_the_wrong_side_are_invalid_stops(terminal):
    assert terminal.order_send(market_buy(terminal, sl=1.0900)).retcode == c.TRADE_RETCODE_INVALID_STOPS
    assert terminal.order_send(market_buy(terminal, tp=1.0800)).retcode == c.TRADE_RETCODE_INVALID_STOPS
    assert terminal.order_send(market_buy(terminal, sl=1.0800, tp=1.0900)).retcode == c.TRADE_RETCODE_DONE


def test_an_order_bigger_than_the_free_margin_gets_no_money(terminal):
    # 90 lots of gold at 2350 with 1:100 is 211,522 USD of margin on a 100,000 account.
    assert terminal.order_send(market_buy(terminal, "XAUUSD", 45.0)).retcode == c.TRADE_RETCODE_NO_MONEY


def test_a_closed_session_answers_market_closed(terminal):
    sim_set_market_open("EURUSD", False)
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_MARKET_CLOSED
    sim_set_market_open("EURUSD", True)
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_DONE


def test_autotrading_off_in_the_terminal_answers_10027(alice_account):
    mt5 = SimulatedMetaTrader5(trade_allowed=False)
    mt5.initialize(login=ALICE)
    assert mt5.order_send(market_buy(mt5)).retcode == c.TRADE_RETCODE_CLIENT_DISABLES_AT


def test_an_account_without_trading_rights_answers_trade_disabled(terminal, alice_account):
    SimAccount.objects.filter(pk=alice_account.pk).update(trade_allowed=False)
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_TRADE_DISABLED


def test_instant_execution_requotes_a_price_outside_the_deviation(terminal):
    far = market_buy(terminal, "USDJPY", 0.1, type_filling=c.ORDER_FILLING_FOK, price=154.9, deviation=10)
    result = terminal.order_send(far)
    assert (result.retcode, result.bid, result.ask) == (c.TRADE_RETCODE_REQUOTE, 155.0, 155.012)
    near = dict(far, price=155.010)
    assert terminal.order_send(near).retcode == c.TRADE_RETCODE_DONE


def test_a_decimal_volume_is_an_invalid_argument_like_the_real_module(terminal):
    assert terminal.order_send(market_buy(terminal, volume=Decimal("0.1"))) is None
    assert terminal.last_error() == (c.RES_E_INVALID_PARAMS, 'Invalid "volume" argument')


def test_order_check_validates_without_executing(terminal):
    check = terminal.order_check(market_buy(terminal, volume=0.1))
    assert (check.retcode, check.comment) == (0, "Done")
    bad = terminal.order_check(market_buy(terminal, "XAUUSD", 0.1, type_filling=c.ORDER_FILLING_FOK))
    assert bad.retcode == c.TRADE_RETCODE_INVALID_FILL
    assert terminal.positions_total() == 0


def test_order_calc_profit_and_margin_use_the_same_math(terminal):
    assert terminal.order_calc_profit(c.ORDER_TYPE_BUY, "EURUSD", 1.0, 1.0851, 1.0601) == -2500.0
    assert terminal.order_calc_margin(c.ORDER_TYPE_BUY, "EURUSD", 1.0, 1.0851) == 1085.1


# --- pending orders and SL/TP -----------------------------------------------------------------
def test_a_pending_order_is_placed_listed_and_removed_into_history(terminal):
    placed = terminal.order_send(
        {"action": c.TRADE_ACTION_PENDING, "symbol": "EURUSD", "volume": 0.2, "type": c.ORDER_TYPE_BUY_LIMIT,
         "price": 1.0800, "type_filling": c.ORDER_FILLING_RETURN, "magic": MAGIC, "comment": "limit"}
    )  # fmt: skip
    assert placed.retcode == c.TRADE_RETCODE_PLACED
    (order,) = terminal.orders_get()
    assert (order.ticket, order.state, order.price_open) == (placed.order, c.ORDER_STATE_PLACED, 1.08)
    removed = terminal.order_send({"action": c.TRADE_ACTION_REMOVE, "order": placed.order})
    assert removed.retcode == c.TRADE_RETCODE_DONE
    assert terminal.orders_total() == 0
    (history,) = terminal.history_orders_get(FAR_PAST, far_future(), ticket=placed.order)
    assert history.state == c.ORDER_STATE_CANCELED


def test_a_buy_limit_above_the_market_is_an_invalid_price(terminal):
    request = {"action": c.TRADE_ACTION_PENDING, "symbol": "EURUSD", "volume": 0.2, "type": c.ORDER_TYPE_BUY_LIMIT,
               "price": 1.0900}  # fmt: skip
    assert terminal.order_send(request).retcode == c.TRADE_RETCODE_INVALID_PRICE


def test_sltp_modifies_a_position_and_the_same_levels_again_give_no_changes(terminal):
    opened = terminal.order_send(market_buy(terminal))
    modify = {"action": c.TRADE_ACTION_SLTP, "position": opened.order, "symbol": "EURUSD", "sl": 1.08, "tp": 1.09}
    assert terminal.order_send(modify).retcode == c.TRADE_RETCODE_DONE
    position = terminal.positions_get(ticket=opened.order)[0]
    assert (position.sl, position.tp) == (1.08, 1.09)
    assert terminal.order_send(modify).retcode == c.TRADE_RETCODE_NO_CHANGES


# --- the trade server's triggers: stops and pending orders ----------------------------------
def _pending(mt5: SimulatedMetaTrader5, order_type: int, price: float, volume: float = 0.2, **extra: object):
    request = {
        "action": c.TRADE_ACTION_PENDING, "symbol": "EURUSD", "volume": volume, "type": order_type, "price": price,
        "type_filling": c.ORDER_FILLING_RETURN, "magic": MAGIC, "comment": "pending", **extra,
    }  # fmt: skip
    placed = mt5.order_send(request)
    assert placed.retcode == c.TRADE_RETCODE_PLACED, placed
    return placed


def test_a_buy_whose_stop_loss_the_bid_gaps_through_closes_at_the_bid_with_reason_sl(terminal):
    opened = terminal.order_send(market_buy(terminal, volume=1.0, sl=1.0800, tp=1.0900))
    balance = terminal.account_info().balance
    quote = sim_set_price("EURUSD", "1.07900", "1.07910")
    assert [(t.kind, t.ticket) for t in quote.triggered] == [("sl", opened.order)]
    assert terminal.positions_total() == 0
    (out,) = [d for d in terminal.history_deals_get(position=opened.order) if d.entry == c.DEAL_ENTRY_OUT]
    assert (out.reason, out.price, out.volume, out.magic) == (c.DEAL_REASON_SL, 1.079, 1.0, MAGIC)
    assert out.comment == "[sl 1.08000]"
    assert out.profit == -610.0  # filled at the bid past the stop: 61 pips, not 51
    assert terminal.account_info().balance == balance - 610.0 + out.commission
    closing = terminal.history_orders_get(ticket=out.order)[0]
    assert (closing.reason, closing.type) == (c.ORDER_REASON_SL, c.ORDER_TYPE_SELL)


def test_a_sell_whose_take_profit_the_ask_reaches_closes_with_reason_tp(terminal):
    opened = terminal.order_send(market_buy(terminal, volume=0.5, type=c.ORDER_TYPE_SELL, sl=1.0900, tp=1.0800))
    quote = sim_set_price("EURUSD", "1.07990", "1.08000")
    assert [(t.kind, t.ticket, t.price) for t in quote.triggered] == [("tp", opened.order, Decimal("1.08000"))]
    (out,) = [d for d in terminal.history_deals_get(position=opened.order) if d.entry == c.DEAL_ENTRY_OUT]
    assert (out.reason, out.price, out.profit, out.comment) == (c.DEAL_REASON_TP, 1.08, 250.0, "[tp 1.08000]")


def test_a_quote_short_of_every_level_sets_nothing_off(terminal):
    terminal.order_send(market_buy(terminal, sl=1.0800, tp=1.0900))
    _pending(terminal, c.ORDER_TYPE_BUY_LIMIT, 1.0800)
    _pending(terminal, c.ORDER_TYPE_SELL_STOP, 1.0700)
    assert sim_set_price("EURUSD", "1.08010", "1.08020").triggered == ()
    assert (terminal.positions_total(), terminal.orders_total()) == (1, 2)


def test_other_symbols_quotes_leave_a_position_alone(terminal):
    terminal.order_send(market_buy(terminal, sl=1.0800))
    assert sim_set_price("GBPUSD", "1.20000").triggered == ()
    assert terminal.positions_total() == 1


def test_a_buy_limit_the_ask_reaches_fills_into_a_position_with_its_ticket_and_stops(terminal):
    placed = _pending(terminal, c.ORDER_TYPE_BUY_LIMIT, 1.0800, sl=1.0700, tp=1.0950)
    quote = sim_set_price("EURUSD", "1.07960", "1.07970")
    assert [(t.kind, t.ticket, t.price) for t in quote.triggered] == [("filled", placed.order, Decimal("1.07970"))]
    assert terminal.orders_total() == 0
    (position,) = terminal.positions_get()
    assert (position.ticket, position.price_open, position.volume) == (placed.order, 1.0797, 0.2)
    assert (position.sl, position.tp, position.magic, position.comment) == (1.07, 1.095, MAGIC, "pending")
    (history,) = terminal.history_orders_get(FAR_PAST, far_future(), ticket=placed.order)
    assert (history.state, history.volume_current, history.position_id) == (c.ORDER_STATE_FILLED, 0.0, placed.order)
    (deal,) = terminal.history_deals_get(position=placed.order)
    assert (deal.entry, deal.order, deal.price) == (c.DEAL_ENTRY_IN, placed.order, 1.0797)


def test_a_sell_stop_the_bid_reaches_fills_at_the_bid(terminal):
    placed = _pending(terminal, c.ORDER_TYPE_SELL_STOP, 1.0800)
    quote = sim_set_price("EURUSD", "1.07950", "1.07960")
    assert [(t.kind, t.price) for t in quote.triggered] == [("filled", Decimal("1.07950"))]
    (position,) = terminal.positions_get()
    assert (position.ticket, position.type, position.price_open) == (placed.order, c.POSITION_TYPE_SELL, 1.0795)


def test_a_pending_order_without_the_margin_when_reached_is_rejected_into_history(terminal):
    placed = _pending(terminal, c.ORDER_TYPE_BUY_LIMIT, 1.0800, volume=50.0)
    SimAccount.objects.filter(login=ALICE).update(balance=Decimal("1000"))
    quote = sim_set_price("EURUSD", "1.07990", "1.08000")
    assert [(t.kind, t.ticket) for t in quote.triggered] == [("rejected", placed.order)]
    assert (terminal.positions_total(), terminal.orders_total()) == (0, 0)
    (history,) = terminal.history_orders_get(FAR_PAST, far_future(), ticket=placed.order)
    assert history.state == c.ORDER_STATE_REJECTED


def test_a_closed_session_fires_no_stops_until_it_opens(terminal):
    terminal.order_send(market_buy(terminal, sl=1.0800))
    sim_set_market_open("EURUSD", False)
    assert sim_set_price("EURUSD", "1.07000").triggered == ()
    sim_set_market_open("EURUSD", True)
    assert [t.kind for t in sim_set_price("EURUSD", "1.07000").triggered] == ["sl"]


def test_the_random_walk_fires_the_stops_its_quotes_reach(terminal):
    opened = terminal.order_send(market_buy(terminal, sl=1.0849))  # the bid is 1.0850
    assert opened.retcode == c.TRADE_RETCODE_DONE
    rng = random.Random(3)
    fired = []
    for _ in range(500):
        fired += [t for q in sim_random_walk_step(["EURUSD"], rng=rng) for t in q.triggered]
        if fired:
            break
    assert [(t.kind, t.ticket) for t in fired] == [("sl", opened.order)]
    assert terminal.positions_total() == 0


# --- faults -----------------------------------------------------------------------------------
def test_a_requote_fault_fills_nothing_and_is_consumed_once(terminal):
    sim_inject_fault("requote")
    first = terminal.order_send(market_buy(terminal))
    assert (first.retcode, first.bid, first.ask) == (c.TRADE_RETCODE_REQUOTE, 1.085, 1.0851)
    assert terminal.positions_total() == 0
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_DONE


def test_a_market_closed_fault_answers_10018(terminal):
    sim_inject_fault("market_closed", count=2)
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_MARKET_CLOSED
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_MARKET_CLOSED
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_DONE


def test_a_no_connection_fault_returns_none_and_drops_the_ipc_link(terminal):
    sim_inject_fault("no_connection")
    assert terminal.order_send(market_buy(terminal)) is None
    assert terminal.last_error() == (-10004, "No IPC connection")
    assert terminal.positions_get() is None  # the link is down until initialize()
    assert terminal.initialize()
    assert terminal.positions_get() == ()


def test_a_timeout_after_fill_leaves_the_position_open_and_returns_none(terminal):
    sim_inject_fault("timeout_after_fill")
    assert terminal.order_send(market_buy(terminal, comment="b:cmd-1")) is None
    assert terminal.last_error() == (-10005, "IPC timeout")
    (position,) = terminal.positions_get()
    assert position.comment == "b:cmd-1"
    (deal,) = [d for d in terminal.history_deals_get(FAR_PAST, far_future()) if d.symbol == "EURUSD"]
    assert (deal.comment, deal.entry, deal.position_id) == ("b:cmd-1", c.DEAL_ENTRY_IN, position.ticket)


def test_faults_filtered_by_symbol_and_login_only_hit_those(terminal, bob_account):
    sim_inject_fault("requote", symbol="GBPUSD")
    sim_inject_fault("market_closed", login=BOB)
    assert terminal.order_send(market_buy(terminal, "EURUSD", 0.1)).retcode == c.TRADE_RETCODE_DONE
    assert terminal.order_send(market_buy(terminal, "GBPUSD", 0.1)).retcode == c.TRADE_RETCODE_REQUOTE
    bob = SimulatedMetaTrader5()
    bob.initialize(login=BOB)
    assert bob.order_send(market_buy(bob, "EURUSD", 0.1)).retcode == c.TRADE_RETCODE_MARKET_CLOSED
    assert not SimFault.objects.filter(remaining__gt=0).exists()


# --- shared state and cost ----------------------------------------------------------------------
def test_two_terminals_see_the_same_positions_and_prices(terminal):
    other = SimulatedMetaTrader5()
    other.initialize(login=ALICE, server=SERVER)
    terminal.order_send(market_buy(terminal, volume=0.3))
    sim_set_price("EURUSD", "1.09000")
    assert other.positions_get()[0].volume == 0.3
    assert other.symbol_info_tick("EURUSD").bid == 1.09


def test_accounts_are_isolated(terminal, bob_account):
    terminal.order_send(market_buy(terminal))
    bob = SimulatedMetaTrader5()
    bob.initialize(login=BOB)
    assert bob.positions_get() == ()
    assert bob.history_deals_get(FAR_PAST, far_future())[0].type == c.DEAL_TYPE_BALANCE


def test_order_send_costs_a_handful_of_queries(terminal, django_assert_max_num_queries):
    terminal.order_send(market_buy(terminal))
    with django_assert_max_num_queries(12):
        assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_DONE


def test_random_walk_keeps_prices_near_their_anchor_with_a_sane_spread(terminal):
    rng = random.Random(7)
    for _ in range(50):
        sim_random_walk_step(rng=rng)
    for symbol in SimSymbol.objects.all():
        spread_points = (symbol.ask - symbol.bid) / symbol.point
        assert 1 <= spread_points <= symbol.typical_spread * 2
        assert abs(symbol.bid - symbol.anchor) < symbol.anchor * Decimal("0.01")


@pytest.mark.django_db(transaction=True)
def test_concurrent_orders_on_one_account_get_unique_tickets_and_a_consistent_balance():
    sim_account_create(ALICE, 100000, server=SERVER)
    errors: list[BaseException] = []

    def trade() -> None:
        try:
            mt5 = SimulatedMetaTrader5()
            mt5.initialize(login=ALICE)
            for _ in range(10):
                assert mt5.order_send(market_buy(mt5, volume=0.1)).retcode == c.TRADE_RETCODE_DONE
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=trade) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert SimPosition.objects.count() == 60
    tickets = [*SimOrder.objects.values_list("ticket", flat=True), *SimDeal.objects.values_list("ticket", flat=True)]
    assert len(tickets) == len(set(tickets))
    # 60 entries of 0.1 lot at 3.50 per lot.
    assert SimAccount.objects.get(login=ALICE).balance == Decimal("100000") - Decimal("21.00")


# --- the precompiled statements -------------------------------------------------------------------
def test_it_answers_with_every_column_a_symbol_row_shares_with_symbol_info(terminal):
    """Symbols are read whole by a hand-written statement: each SimSymbol column that SymbolInfo
    also names (and the quote's time, in server time) comes back as the table holds it now, in
    its own field."""
    row = SimSymbol.objects.get(name="EURUSD")
    shared = [
        f.attname for f in SimSymbol._meta.concrete_fields if f.attname in SymbolInfo._fields and f.attname != "name"
    ]
    changed: dict[str, object] = {}
    for name in shared:
        old = getattr(row, name)
        # A new value of the same kind, different from every other column's.
        changed[name] = old[::-1] + "x" if isinstance(old, str) else old + len(changed) + 1
    changed["price_time_msc"] = row.price_time_msc + 86_400_000
    SimSymbol.objects.filter(pk=row.pk).update(**changed)
    assert {"bid", "ask", "digits", "point", "filling_mode", "trade_stops_level", "volume_step", "description"} <= set(
        changed
    )
    info = terminal.symbol_info("EURUSD")
    for name in shared:
        value = changed[name]
        assert getattr(info, name) == (float(value) if isinstance(value, Decimal) else value), name
    # The quote's time as the terminal shows every time: the server's wall clock (UTC + 2 h).
    shown = changed["price_time_msc"] + 2 * 3600 * 1000
    assert info.time == shown // 1000
    assert terminal.symbol_info_tick("EURUSD").time_msc == shown


def test_it_trades_against_the_account_position_and_symbol_rows_as_they_stand(terminal, alice_account):
    """The trade server reads the account, the position and its symbol whole under their row
    locks: a column changed in the table since the last call is the one it acts on."""
    SimSymbol.objects.filter(name="EURUSD").update(commission_per_lot=Decimal("10.00"))
    opened = terminal.order_send(market_buy(terminal, volume=1.0))
    assert terminal.history_deals_get(ticket=opened.deal)[0].commission == -10.0
    bid = SimSymbol.objects.get(name="EURUSD").bid
    stop = bid - Decimal("0.02")
    SimPosition.objects.filter(ticket=opened.order).update(
        volume=Decimal("0.5"), price_open=bid - Decimal("0.01"), sl=stop, swap=Decimal("-3.00")
    )
    SimSymbol.objects.filter(name="EURUSD").update(commission_per_lot=Decimal("4.00"))
    too_much = market_buy(terminal, volume=0.6, type=c.ORDER_TYPE_SELL, position=opened.order)
    assert terminal.order_send(too_much).retcode == c.TRADE_RETCODE_INVALID_CLOSE_VOLUME
    same_stops = {"action": c.TRADE_ACTION_SLTP, "position": opened.order, "symbol": "EURUSD", "sl": float(stop)}
    assert terminal.order_send(same_stops).retcode == c.TRADE_RETCODE_NO_CHANGES
    close = market_buy(terminal, volume=0.5, type=c.ORDER_TYPE_SELL, position=opened.order)
    deal = terminal.history_deals_get(ticket=terminal.order_send(close).deal)[0]
    # 0.01 up on half a lot of 100,000 euros; the swap the row holds; 4.00 a lot on half a lot.
    assert (deal.volume, deal.profit, deal.swap, deal.commission) == (0.5, 500.0, -3.0, -2.0)
    SimAccount.objects.filter(pk=alice_account.pk).update(trade_expert=False)
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_SERVER_DISABLES_AT


def test_it_reads_a_symbols_quote_and_settings_afresh_on_every_call(terminal):
    assert terminal.symbol_info("EURUSD").filling_mode == c.SYMBOL_FILLING_FOK | c.SYMBOL_FILLING_IOC
    sim_set_price("EURUSD", "1.07000")
    SimSymbol.objects.filter(name="EURUSD").update(filling_mode=c.SYMBOL_FILLING_IOC, trade_stops_level=7)
    info = terminal.symbol_info("EURUSD")
    assert (info.bid, info.filling_mode, info.trade_stops_level) == (1.07, c.SYMBOL_FILLING_IOC, 7)
    assert terminal.symbol_info_tick("EURUSD").bid == 1.07
    sim_set_market_open("EURUSD", False)
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_MARKET_CLOSED


def test_it_modifies_a_position_with_one_locking_read_and_one_update(terminal, django_assert_num_queries):
    ticket = terminal.order_send(market_buy(terminal)).order
    request = {"action": c.TRADE_ACTION_SLTP, "position": ticket, "symbol": "EURUSD", "sl": 1.08, "tp": 1.09}
    # The terminal's shared state (which account it holds), then, inside the test's transaction
    # the atomic block is a savepoint: SAVEPOINT, the read, the UPDATE, RELEASE SAVEPOINT.
    with django_assert_num_queries(5):
        assert terminal.order_send(request).retcode == c.TRADE_RETCODE_DONE
    # The read, and what every terminal call looks at first, in one query: the terminal's
    # account and switches, and whether an outage cuts it off.
    with django_assert_num_queries(2):
        (position,) = terminal.positions_get(ticket=ticket)
    assert (position.sl, position.tp) == (1.08, 1.09)


def test_it_answers_a_position_read_with_the_ticket_or_symbol_narrowing_as_before(terminal):
    ticket = terminal.order_send(market_buy(terminal)).order
    terminal.order_send(market_buy(terminal, "GBPUSD"))
    assert [p.ticket for p in terminal.positions_get(ticket=ticket)] == [ticket]
    assert [p.symbol for p in terminal.positions_get(symbol="GBPUSD")] == ["GBPUSD"]
    assert terminal.positions_get(ticket=ticket, symbol="GBPUSD") == ()
    assert [p.symbol for p in terminal.positions_get(group="*USD,!GBP*")] == ["EURUSD"]


@pytest.mark.django_db(transaction=True)
def test_it_locks_the_account_before_the_position_like_a_terminal_serialising_its_trades():
    import psycopg

    sim_account_create(ALICE, 100000, server=SERVER)
    mt5 = SimulatedMetaTrader5()
    mt5.initialize(login=ALICE)
    ticket = mt5.order_send(market_buy(mt5)).order
    position = SimPosition.objects.get(ticket=ticket)
    settings = connection.settings_dict
    dsn = {"dbname": settings["NAME"], "host": settings["HOST"], "user": settings["USER"], "port": settings["PORT"]}
    holder, probe = psycopg.connect(**dsn), psycopg.connect(**dsn)
    holder.execute(f"SELECT 1 FROM {SimPosition._meta.db_table} WHERE id = %s FOR UPDATE", [position.pk])
    results: list[int] = []

    def modify() -> None:
        try:
            sender = SimulatedMetaTrader5()
            sender.initialize(login=ALICE)
            request = {"action": c.TRADE_ACTION_SLTP, "position": ticket, "symbol": "EURUSD", "sl": 1.08}
            results.append(sender.order_send(request).retcode)
        finally:
            connection.close()

    thread = threading.Thread(target=modify)
    thread.start()
    try:
        # The sender waits on the position; it must already hold the account by then.
        deadline = datetime.now(UTC) + timedelta(seconds=5)
        while True:
            try:
                probe.execute(f"SELECT 1 FROM {SimAccount._meta.db_table} WHERE login = %s FOR UPDATE NOWAIT", [ALICE])
            except psycopg.errors.LockNotAvailable:
                break
            probe.rollback()
            assert datetime.now(UTC) < deadline, "the sender never took the account lock"
        probe.rollback()
    finally:
        holder.rollback()
        thread.join(10)
        holder.close()
        probe.close()
    assert results == [c.TRADE_RETCODE_DONE]


def test_it_narrows_history_by_position_ticket_window_and_group_as_before(terminal):
    ticket = terminal.order_send(market_buy(terminal)).order
    terminal.order_send(market_buy(terminal, "GBPUSD"))
    close = {**market_buy(terminal), "type": c.ORDER_TYPE_SELL, "position": ticket, "price": 0.0}
    terminal.order_send(close)
    deals = terminal.history_deals_get(position=ticket)
    assert [(d.entry, d.position_id) for d in deals] == [(c.DEAL_ENTRY_IN, ticket), (c.DEAL_ENTRY_OUT, ticket)]
    assert terminal.history_deals_get(ticket=deals[1].ticket) == deals[1:]
    assert [o.position_id for o in terminal.history_orders_get(position=ticket)] == [ticket, ticket]
    assert [o.symbol for o in terminal.history_orders_get(FAR_PAST, far_future(), group="GBP*")] == ["GBPUSD"]
    assert [d.symbol for d in terminal.history_deals_get(FAR_PAST, far_future(), group="GBP*")] == ["GBPUSD"]
    assert terminal.history_deals_get(FAR_PAST, FAR_PAST) == ()
