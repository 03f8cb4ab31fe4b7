# ruff: noqa: F811  (fixtures imported from tests.test_execution, then named as arguments)

"""Symbol names per trade server (issue #16, "the official adapter against the real world"):
brokers name symbols per server (``EURUSD.m``), Laravel speaks the canonical name (``EURUSD``).

The simulator first: a server listed in ``SIM_SYMBOL_SUFFIXES`` (``Broker-Suffix`` by default)
shows and knows its symbols only by their suffixed names, as a real server does. Then the
official adapter, configured per terminal or learning from ``symbols_get()``: requests carry the
server's name, everything read back the canonical one, reconciliation by tag still works and an
unknown symbol is still ``unknown_symbol``.

Personas: dana trades on account 7101 on ``Broker-Suffix``, whose symbols carry ``.m``; alice
(7001) on ``Broker-Server``, whose symbols carry none.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings

from commands.states import State
from execution.adapters.official import OfficialGateway, SymbolNaming
from execution.adapters.official.symbols import RETRY_LEARN_SECONDS, SymbolBook, SymbolNamingError
from execution.gateway import order_tag
from execution.gateways import get_gateway, terminal_router
from execution.models import SimAccount
from execution.simulator import SimulatedMetaTrader5
from execution.simulator import constants as c
from execution.simulator.service import sim_account_create, sim_inject_fault
from execution.terminals import terminal_for
from tests.execution_fixtures import ALICE, MAGIC, SERVER, pin_prices
from tests.test_execution import LOGIN, _terminal, positions, run, submit, trader  # noqa: F401  (fixtures)

pytest_plugins = ["tests.execution_fixtures"]

D = Decimal
SUFFIXED = "Broker-Suffix"
DANA = 7101


@pytest.fixture
def dana_account(db: None) -> SimAccount:
    account, _ = sim_account_create(DANA, D("100000"), server=SUFFIXED)
    pin_prices()
    return account


@pytest.fixture
def dana_terminal(dana_account: SimAccount) -> SimulatedMetaTrader5:
    mt5 = SimulatedMetaTrader5()
    assert mt5.initialize(login=DANA, server=SUFFIXED), mt5.last_error()
    return mt5


class Spy:
    """Records every call and request the adapter makes, like a terminal log."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.calls: list[str] = []
        self.requests: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.module, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name == "order_send":
                self.requests.append(dict(args[0]))
            return target(*args, **kwargs)

        return call


def buy_request(symbol: str, volume: float = 0.5, comment: str = "manual") -> dict[str, Any]:
    return {
        "action": c.TRADE_ACTION_DEAL,
        "symbol": symbol,
        "volume": volume,
        "type": c.ORDER_TYPE_BUY,
        "type_filling": c.ORDER_FILLING_IOC,
        "deviation": 20,
        "magic": MAGIC,
        "comment": comment,
    }


def adapter(spy: Spy, naming: SymbolNaming | None = None) -> OfficialGateway:
    return OfficialGateway(spy, magic=MAGIC, backend="simulator", verify_account=False, symbols=naming)


def dana_buys(gateway: OfficialGateway, symbol: str = "EURUSD", tag: str = "b:dana-1", volume: str = "0.50") -> Any:
    return gateway.open_position(DANA, SUFFIXED, symbol=symbol, side="buy", volume=D(volume), tag=tag)


# --- the simulator: a server whose symbols carry a suffix ----------------------------------------------
def test_dana_s_server_lists_every_symbol_with_its_suffix_and_knows_no_plain_name(dana_terminal):
    mt5 = dana_terminal
    names = {s.name for s in mt5.symbols_get()}
    assert names == {"EURUSD.m", "GBPUSD.m", "USDJPY.m", "XAUUSD.m", "US30.m"}
    assert mt5.symbol_info("EURUSD") is None and mt5.last_error()[0] == c.RES_E_NOT_FOUND
    assert mt5.symbol_info_tick("EURUSD") is None and mt5.symbol_select("EURUSD", True) is False
    assert mt5.order_calc_margin(c.ORDER_TYPE_BUY, "EURUSD", 1.0, 1.085) is None
    info = mt5.symbol_info("EURUSD.m")
    assert info.name == "EURUSD.m" and info.path.endswith("EURUSD.m") and info.bid == 1.085
    assert mt5.symbol_info_tick("EURUSD.m").ask == 1.0851
    assert {s.name for s in mt5.symbols_get(group="EUR*")} == {"EURUSD.m"}
    assert mt5.symbols_get(group="EURUSD") == ()


def test_alice_s_plain_server_shows_the_same_instrument_under_its_plain_name(alice_account, dana_account):
    alice = SimulatedMetaTrader5()
    assert alice.initialize(login=ALICE, server=SERVER)
    assert alice.symbol_info("EURUSD").bid == 1.085 and alice.symbol_info("EURUSD.m") is None


def test_an_order_for_the_plain_name_is_refused_on_dana_s_server_and_the_suffixed_one_fills(dana_terminal):
    mt5 = dana_terminal
    refused = mt5.order_send(buy_request("EURUSD"))
    assert refused.retcode == c.TRADE_RETCODE_INVALID and refused.request.symbol == "EURUSD"
    assert mt5.positions_get() == ()
    done = mt5.order_send(buy_request("EURUSD.m"))
    assert done.retcode == c.TRADE_RETCODE_DONE and done.request.symbol == "EURUSD.m"
    (position,) = mt5.positions_get()
    assert position.symbol == "EURUSD.m"
    assert mt5.positions_get(symbol="EURUSD") == () and len(mt5.positions_get(symbol="EURUSD.m")) == 1
    assert len(mt5.positions_get(group="*.m")) == 1
    start, end = datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(days=1)
    deals = [d for d in mt5.history_deals_get(start, end) if d.symbol]
    assert [d.symbol for d in deals] == ["EURUSD.m"]
    assert [o.symbol for o in mt5.history_orders_get(start, end)] == ["EURUSD.m"]
    close = {**buy_request("EURUSD"), "type": c.ORDER_TYPE_SELL, "position": position.ticket}
    assert mt5.order_send(close).retcode == c.TRADE_RETCODE_INVALID  # not this server's name
    close["symbol"] = "EURUSD.m"
    assert mt5.order_send(close).retcode == c.TRADE_RETCODE_DONE and mt5.positions_get() == ()


def test_dana_s_pending_orders_carry_the_server_s_name(dana_terminal):
    mt5 = dana_terminal
    request = {**buy_request("EURUSD.m"), "action": c.TRADE_ACTION_PENDING, "type": c.ORDER_TYPE_BUY_LIMIT,
               "price": 1.08, "type_filling": c.ORDER_FILLING_RETURN}  # fmt: skip
    assert mt5.order_send(request).retcode == c.TRADE_RETCODE_PLACED
    assert [o.symbol for o in mt5.orders_get()] == ["EURUSD.m"]
    assert mt5.orders_get(symbol="EURUSD") == ()


def test_mt5sim_shows_dana_s_positions_by_the_server_s_names(dana_terminal):
    assert dana_terminal.order_send(buy_request("GBPUSD.m")).retcode == c.TRADE_RETCODE_DONE
    out = StringIO()
    call_command("mt5sim", "positions", "--login", str(DANA), "--server", SUFFIXED, stdout=out)
    assert [json.loads(line)["symbol"] for line in out.getvalue().splitlines()] == ["GBPUSD.m"]


def test_the_suffix_of_a_server_is_a_setting(alice_account):
    with override_settings(SIM_SYMBOL_SUFFIXES={SERVER: "-ECN"}):
        mt5 = SimulatedMetaTrader5()
        assert mt5.initialize(login=ALICE, server=SERVER)
        assert mt5.symbol_info("EURUSD-ECN").name == "EURUSD-ECN" and mt5.symbol_info("EURUSD") is None


def test_one_terminal_switching_between_alice_and_dana_names_each_position_as_its_server_does(
    alice_account, dana_account
):
    mt5 = SimulatedMetaTrader5()
    assert mt5.initialize("desk")
    for login, server, symbol in ((ALICE, SERVER, "EURUSD"), (DANA, SUFFIXED, "EURUSD.m")):
        assert mt5.login(login, server=server)
        assert mt5.order_send(buy_request(symbol)).retcode == c.TRADE_RETCODE_DONE
    other = SimulatedMetaTrader5()  # another process attached to the same terminal
    assert other.initialize("desk")
    assert [p.symbol for p in other.positions_get()] == ["EURUSD.m"]  # the terminal is on dana's
    assert other.login(ALICE, server=SERVER)
    assert [p.symbol for p in mt5.positions_get()] == ["EURUSD"]
    gateway = adapter(Spy(SimulatedMetaTrader5()), SymbolNaming(suffix=".m"))
    snapshots = gateway.account_snapshots([(DANA, SUFFIXED)])
    assert [p.symbol for p in snapshots[(DANA, SUFFIXED)].positions] == ["EURUSD"]


# --- the official adapter: configured per terminal -------------------------------------------------------
def test_with_a_configured_suffix_dana_s_open_sends_eurusd_m_and_everything_reads_back_eurusd(dana_account):
    spy = Spy(SimulatedMetaTrader5())
    gateway = adapter(spy, SymbolNaming(suffix=".m"))
    since = datetime.now(UTC) - timedelta(minutes=1)
    result = dana_buys(gateway, tag="b:dana-open")
    assert result.ok and spy.requests[0]["symbol"] == "EURUSD.m"
    assert result.request["symbol"] == "EURUSD" and result.request["broker_symbol"] == "EURUSD.m"
    assert "symbols_get" not in spy.calls  # configured: nothing to learn
    assert gateway.symbol_info(DANA, SUFFIXED, "EURUSD").name == "EURUSD"
    snapshot = gateway.account_snapshot(DANA, SUFFIXED)
    assert [p.symbol for p in snapshot.positions] == ["EURUSD"]
    assert [p.symbol for p in gateway.positions_by_tag(DANA, SUFFIXED, tag="b:dana-open")] == ["EURUSD"]
    assert {d.symbol for d in gateway.deals_by_tag(DANA, SUFFIXED, tag="b:dana-open", since=since)} == {"EURUSD"}
    assert {o.symbol for o in gateway.orders_by_tag(DANA, SUFFIXED, tag="b:dana-open", since=since)} == {"EURUSD"}
    assert gateway.position(DANA, SUFFIXED, result.position).symbol == "EURUSD"
    closed = gateway.close_position(DANA, SUFFIXED, ticket=result.position, tag="b:dana-close")
    assert closed.ok and spy.requests[-1]["symbol"] == "EURUSD.m" and closed.request["symbol"] == "EURUSD"
    assert gateway.account_snapshot(DANA, SUFFIXED).positions == ()


def test_dana_s_pending_order_goes_by_the_server_s_name_and_reads_back_canonical(dana_account):
    spy = Spy(SimulatedMetaTrader5())
    gateway = adapter(spy, SymbolNaming(suffix=".m"))
    placed = gateway.place_pending_order(
        DANA, SUFFIXED, symbol="EURUSD", side="buy", kind="limit", volume=D("0.10"), price=D("1.08"), tag="b:dana-po"
    )
    assert placed.ok and spy.requests[0]["symbol"] == "EURUSD.m"
    assert [o.symbol for o in gateway.account_snapshot(DANA, SUFFIXED).orders] == ["EURUSD"]


def test_explicit_names_override_the_suffix_for_their_symbols(dana_account):
    with override_settings(SIM_SYMBOL_SUFFIXES={SUFFIXED: ".m"}):
        spy = Spy(SimulatedMetaTrader5())
        # The broker calls the Dow "US30.m" too, but the desk speaks "DOW": an explicit name.
        gateway = adapter(spy, SymbolNaming.parse(suffix=".m", names="DOW=US30.m"))
        assert gateway.open_position(DANA, SUFFIXED, symbol="DOW", side="buy", volume=D("0.1"), tag="b:dow").ok
        assert spy.requests[0]["symbol"] == "US30.m"
        assert [p.symbol for p in gateway.account_snapshot(DANA, SUFFIXED).positions] == ["DOW"]
        assert gateway.symbol_info(DANA, SUFFIXED, "DOW").name == "DOW"
        assert gateway.symbol_info(DANA, SUFFIXED, "US30.m") is None  # the server's name, not a canonical one


def test_a_wrongly_configured_suffix_gives_unknown_symbol_without_sending(dana_account):
    spy = Spy(SimulatedMetaTrader5())
    gateway = adapter(spy, SymbolNaming(suffix=".pro"))
    result = dana_buys(gateway)
    assert not result.ok and result.retcode == c.TRADE_RETCODE_INVALID and "'EURUSD'" in result.message
    assert spy.requests == [] and "symbols_get" not in spy.calls  # configured: no guessing
    assert gateway.symbol_info(DANA, SUFFIXED, "EURUSD") is None


def test_the_timeout_after_fill_on_dana_s_server_is_reconciled_by_tag_under_the_canonical_name(dana_account):
    sim_inject_fault("timeout_after_fill", symbol="EURUSD", login=DANA, count=1)
    gateway = adapter(Spy(SimulatedMetaTrader5()), SymbolNaming(suffix=".m"))
    lost = dana_buys(gateway, tag="b:dana-lost")
    assert lost.maybe_executed and lost.request["symbol"] == "EURUSD"
    (found,) = gateway.positions_by_tag(DANA, SUFFIXED, tag="b:dana-lost")
    assert found.symbol == "EURUSD" and found.volume == D("0.50")


# --- the official adapter: learnt from symbols_get() -----------------------------------------------------
def test_without_configuration_the_adapter_learns_eurusd_m_once_and_reads_back_other_suffixed_names(dana_account):
    spy = Spy(SimulatedMetaTrader5())
    gateway = adapter(spy)
    assert dana_buys(gateway, tag="b:learn-1").ok
    assert spy.calls.count("symbols_get") == 1 and spy.requests[-1]["symbol"] == "EURUSD.m"
    assert dana_buys(gateway, tag="b:learn-2").ok
    assert spy.calls.count("symbols_get") == 1  # learnt: asked once
    # A position the trader opened on GBPUSD.m reads back as GBPUSD: the learnt suffix applies.
    trader = SimulatedMetaTrader5(manual=True)
    assert trader.initialize(login=DANA, server=SUFFIXED)
    assert trader.order_send(buy_request("GBPUSD.m", comment="own")).retcode == c.TRADE_RETCODE_DONE
    symbols = sorted(p.symbol for p in gateway.account_snapshot(DANA, SUFFIXED).positions)
    assert symbols == ["EURUSD", "EURUSD", "GBPUSD"]


def test_a_server_with_plain_names_learns_nothing_and_costs_nothing(alice_account):
    spy = Spy(SimulatedMetaTrader5())
    gateway = adapter(spy)
    assert gateway.open_position(ALICE, SERVER, symbol="EURUSD", side="buy", volume=D("0.1"), tag="b:plain").ok
    assert "symbols_get" not in spy.calls and spy.requests[0]["symbol"] == "EURUSD"
    assert (
        "broker_symbol"
        not in gateway.open_position(
            ALICE, SERVER, symbol="EURUSD", side="buy", volume=D("0.1"), tag="b:plain-2"
        ).request
    )


def test_an_ambiguous_server_list_teaches_nothing_and_a_lookalike_is_never_taken():
    now = [1000.0]
    book = SymbolBook(clock=lambda: now[0])
    assert book.learn("X", "EURUSD", ["EURUSD.m", "EURUSD.pro", "GBPUSD.m"]) is None
    assert book.broker("X", "EURUSD") == "EURUSD" and not book.may_learn("X", "EURUSD")  # not at every request
    now[0] += RETRY_LEARN_SECONDS
    assert book.may_learn("X", "EURUSD")
    assert book.learn("X", "US30", ["US300", "US30X", "XUS30"]) is None  # other instruments, not affixes
    assert book.learn("X", "US30", ["US300", "#US30"]) == "#US30"
    assert book.canonical("X", "#GER40") == "GER40" and book.canonical("x ", "#US30") == "US30"
    assert book.learn("Y", "EURUSD", ["EURUSDm", "GBPUSDm"]) == "EURUSDm"
    assert book.canonical("Y", "GBPUSDm") == "GBPUSD" and book.canonical("Y", "#GER40") == "#GER40"


def test_an_unknown_symbol_is_still_unknown_after_looking_at_the_server_s_list_once(dana_account):
    spy = Spy(SimulatedMetaTrader5())
    gateway = adapter(spy)
    result = dana_buys(gateway, symbol="DOGEUSD")
    assert result.retcode == c.TRADE_RETCODE_INVALID and "'DOGEUSD'" in result.message and spy.requests == []
    assert spy.calls.count("symbols_get") == 1
    assert dana_buys(gateway, symbol="DOGEUSD", tag="b:doge-2").retcode == c.TRADE_RETCODE_INVALID
    assert spy.calls.count("symbols_get") == 1  # the server's long list is not read at every request


# --- commands end to end: Laravel speaks EURUSD to a server that lists EURUSD.m --------------------------
@pytest.fixture
def suffixed(settings: Any) -> None:
    settings.SIM_SYMBOL_SUFFIXES = {"Broker-Server": ".m"}


def test_laravel_s_open_and_close_of_eurusd_run_on_eurusd_m_and_report_eurusd(trader, suffixed):
    command = run(submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1))
    assert command.state == State.SUCCEEDED, command.error_message
    attempt = command.events.get(kind="attempt")
    assert attempt.request["symbol"] == "EURUSD" and attempt.request["broker_symbol"] == "EURUSD.m"
    (position,) = positions()
    assert position.symbol == "EURUSD"
    closed = run(submit(trader, "close_position", ticket=position.ticket))
    assert closed.state == State.SUCCEEDED, closed.error_message
    assert positions() == []


def test_a_lost_answer_on_eurusd_m_is_reconciled_into_one_position(trader, suffixed):
    sim_inject_fault("timeout_after_fill", symbol="EURUSD", count=1)
    command = run(submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1))
    assert command.state == State.SUCCEEDED and command.result.get("reconciled") is True
    assert command.result["symbol"] == "EURUSD"
    assert [p.symbol for p in positions()] == ["EURUSD"]
    deals = get_gateway().deals_by_tag(
        LOGIN, "Broker-Server", tag=order_tag(command.command_id), since=command.received_at - timedelta(minutes=1)
    )
    assert [d.symbol for d in deals] == ["EURUSD"]


def test_an_unknown_symbol_on_a_suffixed_server_is_still_unknown_symbol(trader, suffixed):
    assert run(submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1)).state == State.SUCCEEDED
    for symbol in ("DOGEUSD", "EURUSD.m"):  # the server's own name is not a canonical one Laravel may send
        command = run(submit(trader, "open_position", symbol=symbol, direction="buy", volume=0.1))
        assert command.state == State.REJECTED and command.error_code == "unknown_symbol", symbol


# --- configuration: terminals add --symbol-suffix ---------------------------------------------------------
def terminals(*args: str) -> str:
    out = StringIO()
    call_command("terminals", *args, stdout=out)
    return out.getvalue()


def test_an_operator_configures_a_terminal_s_suffix_and_names_and_list_shows_them(db):
    terminals("add", "suffix-1", "--path", "S.exe", "--accounts", f"{DANA}@{SUFFIXED}", "--symbol-suffix", ".m",
              "--symbol-names", "DOW=US30.m, GER40=DE40.m")  # fmt: skip
    config = terminal_for(DANA, SUFFIXED)
    assert config.symbols == SymbolNaming(suffix=".m", names=(("DOW", "US30.m"), ("GER40", "DE40.m")))
    assert "SYMBOL.m, DOW=US30.m, GER40=DE40.m" in terminals("list")
    assert "symbols learnt" in terminals("symbols", "suffix-1")
    assert terminal_for(DANA, SUFFIXED).symbols == SymbolNaming()
    assert "symbols #SYMBOL" in terminals("symbols", "suffix-1", "--prefix", "#")


@pytest.mark.parametrize(
    "args",
    [
        ("--symbol-suffix", ".m x"),
        ("--symbol-names", "EURUSD"),
        ("--symbol-names", "A=B,A=C"),
        ("--symbol-names", "=B"),
    ],
)
def test_a_malformed_symbol_naming_is_refused_in_one_line(db, args):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="symbol"):
        terminals("add", "bad", "--path", "B.exe", *args)
    with pytest.raises(SymbolNamingError):
        SymbolNaming.parse(**{args[0].removeprefix("--symbol-"): args[1]})


@override_settings(MT5_BACKEND="official", MT5_TERMINAL_PATH="", MT5_LOGIN=0)
def test_the_official_gateway_gives_each_terminal_its_own_naming(alice_account, dana_account):
    terminals("add", "plain", "--path", "P.exe", "--accounts", f"{ALICE}@{SERVER}")
    terminals("add", "suffixed", "--path", "S.exe", "--accounts", f"{DANA}@{SUFFIXED}", "--symbol-suffix", ".m")
    spy = Spy(SimulatedMetaTrader5())
    gateway = terminal_router("official", magic=MAGIC, local_module=lambda: spy)
    assert gateway.open_position(ALICE, SERVER, symbol="EURUSD", side="buy", volume=D("0.1"), tag="b:a").ok
    assert gateway.open_position(DANA, SUFFIXED, symbol="EURUSD", side="buy", volume=D("0.1"), tag="b:d").ok
    assert [r["symbol"] for r in spy.requests] == ["EURUSD", "EURUSD.m"]
    assert "symbols_get" not in spy.calls
    assert [p.symbol for p in gateway.account_snapshot(DANA, SUFFIXED).positions] == ["EURUSD"]
