"""OfficialGateway, unchanged, against SimulatedMetaTrader5: trading, filling modes, tags and
reconciliation, every retcode class, None + last_error(), reconnects and the other backends."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import override_settings

from execution.adapters.mt5linux import Mt5LinuxModule, build_mt5linux_gateway
from execution.adapters.official import OfficialGateway, choose_filling
from execution.adapters.router import TerminalRouter
from execution.gateway import (
    COMMENT_LIMIT,
    RETCODES,
    AccountSnapshot,
    GatewayUnavailable,
    TradeResult,
    classify,
    order_tag,
)
from execution.gateways import get_gateway, reset_gateway
from execution.models import SimAccount
from execution.simulator import SimulatedMetaTrader5
from execution.simulator import constants as c
from execution.simulator.service import sim_inject_fault, sim_set_market_open, sim_set_price
from tests.execution_fixtures import ALICE, BOB, MAGIC, SERVER
from tests.rpyc_fakes import FakeClassicConnection

pytest_plugins = ["tests.execution_fixtures"]

D = Decimal


def an_hour_ago() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)


class Spy:
    """Wraps a module-like object and records every call, like a terminal log."""

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


@pytest.fixture
def spy(alice_account) -> Spy:
    return Spy(SimulatedMetaTrader5())


@pytest.fixture
def spied(spy: Spy) -> OfficialGateway:
    return OfficialGateway(spy, magic=MAGIC, backend="simulator", verify_account=False)


def open_eurusd(gateway: OfficialGateway, tag: str = "b:open-1", volume: str = "1.00", **extra: Any) -> TradeResult:
    return gateway.open_position(ALICE, SERVER, symbol="EURUSD", side="buy", volume=D(volume), tag=tag, **extra)


# --- trading ------------------------------------------------------------------------------------
def test_open_position_returns_done_with_order_deal_and_position(gateway):
    result = open_eurusd(gateway, sl=D("1.08000"), tp=D("1.09000"))
    assert (result.outcome, result.retcode, result.retcode_name) == ("done", 10009, "TRADE_RETCODE_DONE")
    assert result.ok and result.order and result.deal and result.position == result.order
    assert (result.volume, result.price) == (D("1.0"), D("1.0851"))
    assert result.request["magic"] == MAGIC and result.request["comment"] == "b:open-1"
    assert result.maybe_executed is False


def test_every_request_is_tagged_with_magic_and_the_comment(spied, spy):
    open_eurusd(spied, tag=order_tag("cmd-42"))
    (request,) = spy.requests
    assert (request["magic"], request["comment"]) == (MAGIC, "b:cmd-42")
    assert isinstance(request["volume"], float) and isinstance(request["price"], float)


def test_a_symbol_without_fok_gets_ioc_for_the_open_and_the_close(spied, spy):
    opened = spied.open_position(ALICE, SERVER, symbol="XAUUSD", side="sell", volume=D("0.10"), tag="b:gold")
    closed = spied.close_position(ALICE, SERVER, ticket=opened.position, tag="b:gold-close")
    assert opened.ok and closed.ok
    assert [r["type_filling"] for r in spy.requests] == [c.ORDER_FILLING_IOC, c.ORDER_FILLING_IOC]


def test_a_symbol_with_fok_gets_fok(spied, spy):
    assert open_eurusd(spied).ok
    assert spy.requests[0]["type_filling"] == c.ORDER_FILLING_FOK


def test_choose_filling_prefers_fok_then_ioc_then_return():
    assert choose_filling(c.SYMBOL_FILLING_FOK | c.SYMBOL_FILLING_IOC) == c.ORDER_FILLING_FOK
    assert choose_filling(c.SYMBOL_FILLING_IOC) == c.ORDER_FILLING_IOC
    assert choose_filling(0) == c.ORDER_FILLING_RETURN


def test_instant_execution_symbols_are_sent_at_the_current_price(gateway):
    result = gateway.open_position(ALICE, SERVER, symbol="USDJPY", side="buy", volume=D("0.10"), tag="b:jpy")
    assert result.ok and result.price == D("155.012")


def test_close_position_in_full_realises_the_profit(gateway):
    opened = open_eurusd(gateway)
    sim_set_price("EURUSD", "1.08760", "1.08770")
    closed = gateway.close_position(ALICE, SERVER, ticket=opened.position, tag="b:close-1")
    assert closed.ok and closed.position == opened.position and closed.price == D("1.0876")
    snapshot = gateway.account_snapshot(ALICE, SERVER)
    assert snapshot.positions == ()
    assert snapshot.balance == D("100000") + D("250.00") - D("7.00")


def test_a_partial_close_leaves_the_remaining_volume_open(gateway):
    opened = open_eurusd(gateway)
    closed = gateway.close_position(ALICE, SERVER, ticket=opened.position, volume=D("0.30"), tag="b:part")
    assert closed.ok and closed.volume == D("0.3")
    (position,) = gateway.account_snapshot(ALICE, SERVER).positions
    assert (position.ticket, position.volume) == (opened.position, D("0.7"))


def test_closing_a_position_that_is_not_open_is_final_without_sending(spied, spy):
    result = spied.close_position(ALICE, SERVER, ticket=123456, tag="b:ghost")
    assert (result.outcome, result.retcode_name) == ("final", "TRADE_RETCODE_POSITION_CLOSED")
    assert spy.requests == []


def test_modify_position_sets_sl_and_tp_and_none_keeps_a_level(gateway):
    opened = open_eurusd(gateway)
    assert gateway.modify_position(ALICE, SERVER, ticket=opened.position, sl=D("1.08"), tp=D("1.09"), tag="b:m1").ok
    assert gateway.modify_position(ALICE, SERVER, ticket=opened.position, tp=D("1.095"), tag="b:m2").ok
    (position,) = gateway.account_snapshot(ALICE, SERVER).positions
    assert (position.sl, position.tp) == (D("1.08"), D("1.095"))
    again = gateway.modify_position(ALICE, SERVER, ticket=opened.position, tp=D("1.095"), tag="b:m3")
    assert (again.outcome, again.retcode) == ("done", c.TRADE_RETCODE_NO_CHANGES)


def test_cancel_order_removes_a_pending_order(gateway):
    placed = gateway.place_pending_order(
        ALICE, SERVER, symbol="EURUSD", side="buy", kind="limit", volume=D("0.2"), price=D("1.08"), tag="b:limit"
    )
    assert (placed.outcome, placed.retcode) == ("done", c.TRADE_RETCODE_PLACED)
    (order,) = gateway.account_snapshot(ALICE, SERVER).orders
    assert (order.ticket, order.order_type, order.state, order.done_at) == (placed.order, "buy_limit", "placed", None)
    cancelled = gateway.cancel_order(ALICE, SERVER, ticket=placed.order, tag="b:cancel")
    assert cancelled.ok
    assert gateway.account_snapshot(ALICE, SERVER).orders == ()
    assert gateway.cancel_order(ALICE, SERVER, ticket=placed.order, tag="b:cancel").outcome == "final"


# --- tags and reconciliation ------------------------------------------------------------------
def test_order_tag_keeps_short_ids_and_hashes_long_ones_within_31_characters():
    assert order_tag("cmd-10001") == "b:cmd-10001"
    long_id = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
    tag = order_tag(long_id)
    assert len(tag) == COMMENT_LIMIT and tag.startswith("b#")
    assert tag == order_tag(long_id) and tag != order_tag(long_id + "x")
    assert len(order_tag("x" * 29)) == 31 and order_tag("x" * 29) == "b:" + "x" * 29
    assert order_tag("x" * 30).startswith("b#")
    assert order_tag("ünïcode").startswith("b#")


def test_deals_by_tag_finds_the_in_and_out_deals_of_a_command(gateway):
    tag = order_tag("3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b")
    opened = open_eurusd(gateway, tag=tag)
    open_eurusd(gateway, tag="b:someone-else")
    gateway.close_position(ALICE, SERVER, ticket=opened.position, volume=D("0.4"), tag=tag)
    deals = gateway.deals_by_tag(ALICE, SERVER, tag=tag, since=an_hour_ago())
    assert [(d.entry, d.volume, d.position_id) for d in deals] == [
        ("in", D("1.0"), opened.position),
        ("out", D("0.4"), opened.position),
    ]
    assert deals[1].commission == D("-1.40") and deals[0].side == "buy" and deals[1].side == "sell"


def test_deals_of_another_magic_are_not_ours(gateway, terminal):
    terminal.order_send(
        {"action": 1, "symbol": "EURUSD", "volume": 0.1, "type": 0, "type_filling": 0, "magic": 1, "comment": "b:x"}
    )
    assert gateway.deals_by_tag(ALICE, SERVER, tag="b:x", since=an_hour_ago()) == ()


def test_positions_by_tag_and_orders_by_tag_find_what_a_command_left(gateway):
    opened = open_eurusd(gateway, tag="b:cmd-7")
    (position,) = gateway.positions_by_tag(ALICE, SERVER, tag="b:cmd-7")
    assert position.ticket == opened.position and position.commission == D("-3.50")
    (order,) = gateway.orders_by_tag(ALICE, SERVER, tag="b:cmd-7", since=an_hour_ago())
    assert (order.ticket, order.state, order.order_type) == (opened.order, "filled", "buy")
    assert gateway.positions_by_tag(ALICE, SERVER, tag="b:cmd-8") == ()


def test_a_timeout_after_fill_says_maybe_executed_and_reconciliation_finds_the_position(gateway):
    sim_inject_fault("timeout_after_fill")
    result = open_eurusd(gateway, tag="b:dup-trap")
    assert (result.outcome, result.retcode, result.retcode_name) == ("retry", -10005, "RES_E_INTERNAL_FAIL_TIMEOUT")
    assert result.maybe_executed is True and "IPC timeout" in result.message
    # The retry reconciles first, and finds the fill: no second order is sent.
    (found,) = gateway.positions_by_tag(ALICE, SERVER, tag="b:dup-trap")
    (deal,) = gateway.deals_by_tag(ALICE, SERVER, tag="b:dup-trap", since=an_hour_ago())
    assert deal.position_id == found.ticket


# --- retcode classes ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fault", "retcode", "name"),
    [
        ("requote", 10004, "TRADE_RETCODE_REQUOTE"),
        ("market_closed", 10018, "TRADE_RETCODE_MARKET_CLOSED"),
    ],
)
def test_requote_and_market_closed_are_retryable_and_fill_nothing(gateway, fault, retcode, name):
    sim_inject_fault(fault)
    result = open_eurusd(gateway)
    assert (result.outcome, result.retcode, result.retcode_name, result.maybe_executed) == (
        "retry",
        retcode,
        name,
        False,
    )
    assert gateway.account_snapshot(ALICE, SERVER).positions == ()
    assert open_eurusd(gateway).ok


def test_a_no_connection_fault_is_retry_maybe_executed_and_the_next_call_reconnects(spied, spy):
    sim_inject_fault("no_connection")
    result = open_eurusd(spied)
    assert (result.outcome, result.retcode, result.maybe_executed) == ("retry", -10004, True)
    assert "No IPC connection" in result.message
    before = spy.calls.count("initialize")
    assert spied.account_snapshot(ALICE, SERVER).positions == ()
    assert spy.calls.count("initialize") == before + 1


def test_a_closed_session_is_retryable_for_a_protective_close(gateway):
    opened = open_eurusd(gateway)
    sim_set_market_open("EURUSD", False)
    result = gateway.close_position(ALICE, SERVER, ticket=opened.position, tag="b:protect")
    assert (result.outcome, result.retcode) == ("retry", 10018)
    sim_set_market_open("EURUSD", True)
    assert gateway.close_position(ALICE, SERVER, ticket=opened.position, tag="b:protect").ok


@pytest.mark.parametrize(
    ("kwargs", "retcode"),
    [
        ({"volume": D("0.015")}, c.TRADE_RETCODE_INVALID_VOLUME),
        ({"sl": D("1.09500")}, c.TRADE_RETCODE_INVALID_STOPS),
        ({"volume": D("100")}, c.TRADE_RETCODE_NO_MONEY),
    ],
)
def test_bad_requests_are_final(gateway, kwargs, retcode):
    volume = kwargs.pop("volume", D("1"))
    result = gateway.open_position(ALICE, SERVER, symbol="EURUSD", side="buy", volume=volume, tag="b:bad", **kwargs)
    assert (result.outcome, result.retcode, result.maybe_executed) == ("final", retcode, False)
    assert result.retcode_name == classify(retcode).name


def test_autotrading_disabled_in_the_terminal_is_final(alice_account):
    gateway = OfficialGateway(SimulatedMetaTrader5(trade_allowed=False), magic=MAGIC, verify_account=False)
    result = open_eurusd(gateway)
    assert (result.outcome, result.retcode, result.retcode_name) == ("final", 10027, "TRADE_RETCODE_CLIENT_DISABLES_AT")


def test_an_unknown_symbol_is_final_without_sending(spied, spy):
    result = spied.open_position(ALICE, SERVER, symbol="NOPE", side="buy", volume=D("1"), tag="b:nope")
    assert result.outcome == "final" and "Unknown symbol" in result.message
    assert spy.requests == []


def test_every_retcode_of_the_module_is_classified_once():
    module_codes = {getattr(c, n) for n in c.MODULE_CONSTANTS if n.startswith(("TRADE_RETCODE_", "RES_"))}
    assert module_codes <= set(RETCODES)
    assert {RETCODES[code].outcome for code in (10008, 10009, 10010)} == {"done"}
    assert {RETCODES[code].outcome for code in (10004, 10012, 10018, 10020, 10021, 10024, 10028, 10031)} == {"retry"}
    assert {RETCODES[code].outcome for code in (10006, 10013, 10014, 10016, 10019, 10027, 10030)} == {"final"}
    assert classify(99999).outcome == "final"


def test_a_tag_longer_than_31_characters_is_refused_before_sending(gateway):
    with pytest.raises(ValueError, match="31"):
        open_eurusd(gateway, tag="b:" + "x" * 30)


def test_trade_results_are_json_safe(gateway):
    payload = json.dumps(open_eurusd(gateway).as_json())
    assert '"outcome": "done"' in payload and '"volume": "1.0"' in payload


# --- snapshots, accounts and connections ----------------------------------------------------------
def test_account_snapshot_returns_decimals_positions_orders_and_commission(gateway):
    opened = open_eurusd(gateway)
    sim_set_price("EURUSD", "1.06010", "1.06020")
    snapshot = gateway.account_snapshot(ALICE, SERVER)
    assert isinstance(snapshot, AccountSnapshot)
    assert (snapshot.login, snapshot.server, snapshot.currency, snapshot.currency_digits) == (ALICE, SERVER, "USD", 2)
    assert snapshot.balance == D("99996.50")
    assert snapshot.equity == D("97496.50") and snapshot.profit == D("-2500.00")
    (position,) = snapshot.positions
    assert position.ticket == opened.position and position.side == "buy"
    assert (position.profit, position.swap, position.commission) == (D("-2500.00"), D("0.00"), D("-3.50"))
    assert position.opened_at.tzinfo is UTC and snapshot.observed_at.tzinfo is UTC
    assert snapshot.trade_allowed is True


def test_a_partially_closed_position_carries_its_share_of_the_entry_commission(gateway):
    opened = open_eurusd(gateway)
    gateway.close_position(ALICE, SERVER, ticket=opened.position, volume=D("0.6"), tag="b:part")
    (position,) = gateway.account_snapshot(ALICE, SERVER).positions
    assert position.commission == D("-1.40")


def test_account_snapshot_costs_a_few_queries(gateway, django_assert_max_num_queries):
    open_eurusd(gateway)
    gateway.account_snapshot(ALICE, SERVER)
    # Four reads (account, its positions' valuation, positions, orders) and, before each of the
    # three terminal calls, the look at the terminal's account and for a no_connection outage.
    with django_assert_max_num_queries(10):
        gateway.account_snapshot(ALICE, SERVER)


def test_the_adapter_logs_into_the_requested_account_and_switches_between_accounts(spied, spy, bob_account):
    open_eurusd(spied)
    assert spied.account_snapshot(BOB, SERVER).balance == D("50000.00")
    assert len(spied.account_snapshot(ALICE, SERVER).positions) == 1
    assert spy.calls.count("login") == 3
    spied.account_snapshot(ALICE, SERVER)
    assert spy.calls.count("login") == 3


def test_the_adapter_reconnects_once_after_an_ipc_error(spied, spy):
    spied.account_snapshot(ALICE, SERVER)
    spy.module.sim_disconnect()
    assert spied.account_snapshot(ALICE, SERVER).login == ALICE
    assert spy.calls.count("shutdown") == 1 and spy.calls.count("initialize") == 2


class DeadTerminal(SimulatedMetaTrader5):
    """A terminal whose IPC link never comes up: initialize() fails, and last_error() says why."""

    def initialize(self, *args: Any, **kwargs: Any) -> bool:
        return False

    def last_error(self) -> tuple[int, str]:
        return c.RES_E_INTERNAL_FAIL_INIT, "IPC initialize failed, MetaTrader 5 x64 not found"


def test_the_adapter_raises_gateway_unavailable_when_the_terminal_stays_down(alice_account):
    gateway = OfficialGateway(DeadTerminal(), magic=MAGIC)
    with pytest.raises(GatewayUnavailable, match="initialize failed"):
        gateway.account_snapshot(ALICE, SERVER)
    with pytest.raises(GatewayUnavailable):
        open_eurusd(gateway)
    status = gateway.status()
    assert status["available"] is False and "not found" in status["detail"]


def test_a_wrong_password_is_gateway_unavailable(db):
    from execution.simulator.service import sim_account_create

    sim_account_create(ALICE, 1000, server=SERVER, password="right")
    gateway = OfficialGateway(SimulatedMetaTrader5(), magic=MAGIC, password_for=lambda login, server: "wrong")
    with pytest.raises(GatewayUnavailable, match="Authorization failed"):
        gateway.account_snapshot(ALICE, SERVER)


def test_verify_account_logs_back_in_when_another_process_switched_the_terminal(alice_account, bob_account):
    shared = SimulatedMetaTrader5()
    gateway = OfficialGateway(shared, magic=MAGIC, verify_account=True)
    gateway.account_snapshot(ALICE, SERVER)
    shared.login(BOB, server=SERVER)  # another process, same terminal
    assert open_eurusd(gateway).ok
    assert SimAccount.objects.get(login=ALICE).positions.count() == 1
    assert SimAccount.objects.get(login=BOB).positions.count() == 0


def test_status_reports_the_simulator_as_available(gateway):
    status = gateway.status()
    assert status["backend"] == "simulator" and status["available"] is True


# --- the backends ---------------------------------------------------------------------------------
def test_get_gateway_returns_one_router_per_process_over_simulated_terminals(alice_account):
    reset_gateway()
    try:
        with override_settings(MT5_BACKEND="simulator", MT5_MAGIC=MAGIC):
            first = get_gateway()
            assert first is get_gateway() and isinstance(first, TerminalRouter)
            first.account_snapshot(ALICE, SERVER)
            (adapter,) = first.terminals().values()
            assert isinstance(adapter, OfficialGateway) and isinstance(adapter.mt5, SimulatedMetaTrader5)
            assert adapter.magic == MAGIC and first.status()["backend"] == "simulator"
    finally:
        reset_gateway()


def test_a_manager_backend_on_a_real_server_without_the_package_is_unavailable_and_never_fakes_success(
    alice_account,
):
    reset_gateway()
    try:
        with override_settings(MT5_BACKEND="manager", MT5_MANAGER_SERVER="mt5.example.net:443", MT5_MANAGER_LOGIN=1):
            gateway = get_gateway()
        status = gateway.status()
        assert (status["backend"], status["available"]) == ("manager", False)
        with pytest.raises(GatewayUnavailable, match=r"MT5_MANAGER_SERVER=mt5\.example\.net:443 needs the MT5Manager"):
            open_eurusd(gateway)
        with pytest.raises(GatewayUnavailable):
            gateway.account_snapshot(ALICE, SERVER)
    finally:
        reset_gateway()


def test_the_official_backend_without_the_package_reports_why(alice_account):
    reset_gateway()
    try:
        with override_settings(MT5_BACKEND="official"):
            status = get_gateway().status()
        assert status["available"] is False and "MetaTrader5" in status["detail"]
    finally:
        reset_gateway()


def test_mt5linux_turns_a_broken_link_into_no_ipc_connection():
    def refuse(**kwargs: Any) -> Any:
        raise ConnectionRefusedError("connection refused")

    module = Mt5LinuxModule("127.0.0.1", 1, factory=refuse)
    assert module.initialize() is None
    assert module.last_error()[0] == c.RES_E_INTERNAL_FAIL_CONNECT
    gateway = build_mt5linux_gateway("127.0.0.1", 1, magic=MAGIC, factory=refuse)
    assert gateway.status()["available"] is False
    with pytest.raises(GatewayUnavailable, match="No IPC connection"):
        gateway.account_snapshot(ALICE, SERVER)


def test_mt5linux_drives_the_same_adapter_over_a_client(alice_account):
    server = FakeClassicConnection(SimulatedMetaTrader5())
    gateway = build_mt5linux_gateway("127.0.0.1", 18812, magic=MAGIC, factory=lambda **kwargs: server)
    assert open_eurusd(gateway).ok
    assert len(gateway.account_snapshot(ALICE, SERVER).positions) == 1
    assert gateway.status()["backend"] == "mt5linux"


# --- mt5linux: one round trip per call, results copied locally ---------------------------------------
def test_over_mt5linux_alice_s_snapshot_costs_one_round_trip_per_mt5_call_and_no_remote_read(alice_account):
    """Each MT5 call is one eval on the mt5linux server whose answer arrives by value: reading the
    snapshot's positions and their fields asks the server nothing more."""
    spy = Spy(SimulatedMetaTrader5())
    server = FakeClassicConnection(spy)
    gateway = build_mt5linux_gateway("wine-a", 18812, magic=MAGIC, factory=lambda **kwargs: server)
    for n in range(3):
        assert open_eurusd(gateway, tag=f"b:rt-{n}").ok
    spy.calls.clear()
    server.round_trips = 0
    snapshot = gateway.account_snapshot(ALICE, SERVER)
    assert len(snapshot.positions) == 3
    assert all(p.symbol == "EURUSD" and p.volume == D("1.00") for p in snapshot.positions)
    assert {"account_info", "positions_get", "orders_get"} <= set(spy.calls)
    assert server.round_trips == len(spy.calls) and server.remote_reads == 0


def test_the_counting_server_would_see_a_remote_read_per_field_of_a_result_left_remote(alice_account):
    """The counter the test above relies on: a position read field by field through a remote
    reference (what the mt5linux client returns) costs a round trip per field."""
    server = FakeClassicConnection(SimulatedMetaTrader5())
    gateway = build_mt5linux_gateway("wine-a", 18812, magic=MAGIC, factory=lambda **kwargs: server)
    assert open_eurusd(gateway).ok
    before = server.round_trips
    positions = server.eval("_bridge_mt5.positions_get()")
    fields = [positions[0].ticket, positions[0].symbol, positions[0].volume, positions[0].price_open]
    assert fields[1] == "EURUSD"
    assert server.remote_reads == 8 and server.round_trips - before == 1 + 8


def test_mt5linux_results_are_local_namedtuples_and_nested_requests_too(alice_account):
    server = FakeClassicConnection(SimulatedMetaTrader5())
    module = Mt5LinuxModule("wine-a", 18812, factory=lambda **kwargs: server)
    assert module.initialize() is True and module.login(ALICE, server=SERVER) is True
    request = {
        "action": c.TRADE_ACTION_DEAL,
        "symbol": "EURUSD",
        "volume": 0.1,
        "type": c.ORDER_TYPE_BUY,
        "type_filling": c.ORDER_FILLING_FOK,
        "deviation": 20,
        "magic": MAGIC,
        "comment": "b:local",
    }
    result = module.order_send(request)
    assert type(result).__name__ == "OrderSendResult" and result.retcode == c.TRADE_RETCODE_DONE
    assert type(result.request).__name__ == "TradeRequest" and result.request.comment == "b:local"
    (position,) = module.positions_get(symbol="EURUSD")
    assert position._asdict()["comment"] == "b:local" and position.volume == 0.1
    assert module.positions_get(symbol="NOPE") == () and module.symbol_info("NOPE") is None
    assert module.last_error()[0] == c.RES_E_NOT_FOUND
    assert server.remote_reads == 0


def test_mt5linux_sends_enum_constants_and_nested_values_as_plain_literals(alice_account):
    import enum

    class Action(enum.IntEnum):
        DEAL = c.TRADE_ACTION_DEAL

    sent: list[Any] = []
    server = FakeClassicConnection(SimulatedMetaTrader5())
    module = Mt5LinuxModule("wine-a", 18812, factory=lambda **kwargs: server)
    assert module.initialize() is True  # the link is open, its helper defined: record what arrives instead
    server.namespace["_bridge_call"] = lambda name, args, kwargs: sent.append((name, args, kwargs))
    module.order_check({"action": Action.DEAL, "symbol": "EURUSD", "volume": 0.1, "nested": [1, (2,), {"a": None}]})
    assert sent == [
        ("order_check", ({"action": 1, "symbol": "EURUSD", "volume": 0.1, "nested": [1, (2,), {"a": None}]},), {})
    ]
    assert type(sent[0][1][0]["action"]) is int


@pytest.mark.parametrize("value", [float("nan"), object(), {1, 2}, datetime.now(UTC)])
def test_mt5linux_refuses_to_send_what_would_not_arrive_as_the_same_value(value):
    server = FakeClassicConnection(SimulatedMetaTrader5())
    module = Mt5LinuxModule("wine-a", 18812, factory=lambda **kwargs: server)
    with pytest.raises(TypeError, match="cannot send"):
        module.order_send({"action": 1, "price": value})
    assert server.round_trips == 0


def test_a_dropped_mt5linux_link_is_closed_and_the_next_call_opens_a_new_one(alice_account):
    servers: list[FakeClassicConnection] = []

    def connect(**kwargs: Any) -> FakeClassicConnection:
        servers.append(FakeClassicConnection(SimulatedMetaTrader5()))
        return servers[-1]

    module = Mt5LinuxModule("wine-a", 18812, factory=connect)
    assert module.initialize() is True
    servers[0].namespace["_bridge_call"] = lambda *args: (_ for _ in ()).throw(EOFError("stream has been closed"))
    assert module.terminal_info() is None
    assert module.last_error()[0] == c.RES_E_INTERNAL_FAIL_CONNECT and servers[0].closed
    assert module.initialize() is True and len(servers) == 2
