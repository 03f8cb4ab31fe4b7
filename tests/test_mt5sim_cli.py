"""The ``mt5sim`` management command, exactly as ARCHITECTURE.md's operations contract names it."""

from __future__ import annotations

import json
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from execution.models import SimAccount, SimFault, SimSymbol
from execution.simulator import constants as c
from execution.simulator.types import TradePosition
from tests.execution_fixtures import ALICE, market_buy

pytest_plugins = ["tests.execution_fixtures"]


def mt5sim(*args: str) -> list[dict[str, Any]]:
    out = StringIO()
    call_command("mt5sim", *args, stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_account_create_prints_the_account_and_is_idempotent(db):
    (created,) = mt5sim("account", "create", "--login", "50040367", "--balance", "100000")
    assert created == {
        "login": 50040367,
        "server": "Broker-Server",
        "currency": "USD",
        "leverage": 100,
        "balance": "100000.00",
        "created": True,
    }
    (again,) = mt5sim("account", "create", "--login", "50040367", "--balance", "5")
    assert again["created"] is False and again["balance"] == "100000.00"
    assert SimAccount.objects.filter(login=50040367).count() == 1


def test_account_create_takes_server_currency_and_leverage(db):
    mt5sim("account", "create", "--login", "9", "--balance", "2500.5", "--server", "Other-Live", "--currency", "EUR",
           "--leverage", "30")  # fmt: skip
    account = SimAccount.objects.get(login=9)
    assert (account.server, account.currency, account.leverage, account.balance) == (
        "Other-Live",
        "EUR",
        30,
        Decimal("2500.50"),
    )


def test_price_defaults_ask_to_bid_plus_the_typical_spread(db):
    (quote,) = mt5sim("price", "--symbol", "EURUSD", "--bid", "1.07000")
    assert (quote["symbol"], quote["bid"], quote["ask"]) == ("EURUSD", "1.07000", "1.07010")
    gold = mt5sim("price", "--symbol", "XAUUSD", "--bid", "2400")[0]
    assert gold["ask"] == "2400.25"


def test_price_with_an_explicit_ask(db):
    mt5sim("price", "--symbol", "USDJPY", "--bid", "150.100", "--ask", "150.130")
    symbol = SimSymbol.objects.get(name="USDJPY")
    assert (symbol.bid, symbol.ask) == (Decimal("150.100"), Decimal("150.130"))


def test_price_prints_the_stop_it_set_off_after_the_quote(terminal):
    opened = terminal.order_send(market_buy(terminal, sl=1.0800))
    quote, fired = mt5sim("price", "--symbol", "EURUSD", "--bid", "1.0790")
    assert quote["bid"] == "1.07900"
    assert (fired["triggered"], fired["ticket"], fired["price"]) == ("sl", opened.order, "1.07900")
    assert terminal.positions_total() == 0


def test_price_for_an_unknown_symbol_is_a_command_error(db):
    with pytest.raises(CommandError, match="unknown symbol"):
        mt5sim("price", "--symbol", "NOPE", "--bid", "1")


def test_positions_prints_one_json_object_per_position_with_trade_position_fields(terminal):
    first = terminal.order_send(market_buy(terminal, volume=0.5, comment="b:cmd-1"))
    terminal.order_send(market_buy(terminal, "XAUUSD", 0.1, type=c.ORDER_TYPE_SELL))
    lines = mt5sim("positions", "--login", str(ALICE))
    assert len(lines) == 2
    assert all(tuple(line) == TradePosition._fields for line in lines)
    assert lines[0]["ticket"] == first.order
    assert (lines[0]["symbol"], lines[0]["type"], lines[0]["volume"], lines[0]["comment"]) == (
        "EURUSD",
        c.POSITION_TYPE_BUY,
        0.5,
        "b:cmd-1",
    )
    assert lines[1]["symbol"] == "XAUUSD" and lines[1]["type"] == c.POSITION_TYPE_SELL


def test_positions_of_an_account_without_positions_prints_nothing(alice_account):
    assert mt5sim("positions", "--login", str(ALICE)) == []


def test_positions_for_an_unknown_login_is_a_command_error(db):
    with pytest.raises(CommandError, match="no simulated account 404"):
        mt5sim("positions", "--login", "404")


def test_fault_injects_k_faults_that_the_next_order_sends_consume(terminal):
    (fault,) = mt5sim("fault", "--kind", "requote", "--symbol", "EURUSD", "--login", str(ALICE), "--count", "2")
    assert (fault["kind"], fault["symbol"], fault["login"], fault["count"]) == ("requote", "EURUSD", ALICE, 2)
    codes = [terminal.order_send(market_buy(terminal, volume=0.1)).retcode for _ in range(3)]
    assert codes == [c.TRADE_RETCODE_REQUOTE, c.TRADE_RETCODE_REQUOTE, c.TRADE_RETCODE_DONE]
    assert SimFault.objects.get().remaining == 0


@pytest.mark.parametrize("kind", ["requote", "no_connection", "market_closed", "timeout_after_fill"])
def test_fault_accepts_every_kind_of_the_contract(db, kind):
    assert mt5sim("fault", "--kind", kind)[0]["kind"] == kind


def test_fault_rejects_an_unknown_kind(db):
    with pytest.raises(CommandError):
        mt5sim("fault", "--kind", "meteor")


def test_a_timeout_after_fill_injected_from_the_cli_fills_and_returns_none(terminal):
    mt5sim("fault", "--kind", "timeout_after_fill")
    assert terminal.order_send(market_buy(terminal)) is None
    assert terminal.last_error() == (-10005, "IPC timeout")
    assert len(mt5sim("positions", "--login", str(ALICE))) == 1


def test_feed_moves_prices_for_the_given_iterations(alice_account):
    before = dict(SimSymbol.objects.values_list("name", "bid"))
    lines = mt5sim("feed", "--iterations", "3", "--interval-ms", "0", "--seed", "1")
    assert lines[-1] == {"feed": "stopped", "steps": 3}
    after = dict(SimSymbol.objects.values_list("name", "bid"))
    assert before.keys() == after.keys() and before != after


def test_market_closes_and_reopens_a_symbol(terminal):
    mt5sim("market", "--symbol", "EURUSD", "--closed")
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_MARKET_CLOSED
    mt5sim("market", "--symbol", "EURUSD", "--open")
    assert terminal.order_send(market_buy(terminal)).retcode == c.TRADE_RETCODE_DONE


def test_symbols_lists_the_five_seeded_symbols(db):
    assert [line["symbol"] for line in mt5sim("symbols")] == ["EURUSD", "GBPUSD", "US30", "USDJPY", "XAUUSD"]
