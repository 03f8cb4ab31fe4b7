# ruff: noqa: F811  (the panel personas' fixtures are imported, then named as arguments)
"""The Manager API backend on the simulator's Manager surface (MANAGER_API.md).

Personas: alice (7001) and bob (7002) trade on the simulated ``Broker-Server``; the prop firm's
risk desk watches both through one manager connection (login 1000). Alice also has her own
terminal (``SimulatedMetaTrader5(manual=True)``, or ``mt5sim trade``), outside the bridge.

The surface pumps on threads of its own, so these tests commit (transactional database) and
wait for what the threads deliver, never for fixed pauses where a condition can be awaited.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings

from execution.adapters.manager import ManagerConnection, ManagerGateway, build_manager_gateway
from execution.adapters.manager import verify as manager_verify
from execution.gateway import DONE, RETRY, GatewayUnavailable, order_tag
from execution.gateways import build_gateway
from execution.models import SimAccount, SimPosition
from execution.simulator import SimulatedMetaTrader5
from execution.simulator import constants as c
from execution.simulator import manager as simulated
from execution.simulator.service import sim_account_create, sim_inject_fault, sim_set_price, sim_set_trade_disabled
from tests.execution_fixtures import ALICE, BOB, SERVER, pin_prices
from tests.test_panel_personas import logged_in, root, world  # noqa: F401  (the panel's personas, for the account page)

pytest_plugins = ["tests.execution_fixtures"]
pytestmark = pytest.mark.django_db(transaction=True)

DESK = 1000  # the risk desk's manager login


def wait_for(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("the condition did not hold in time")


class Recorder:
    """A listener of the adapter's connection: every event and resync, in order, with its thread."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self.resyncs: list[int] = []
        self.resync_positions: list[set[int]] = []
        self.lock = threading.Lock()

    def on_event(self, kind: str, args: tuple[Any, ...]) -> None:
        with self.lock:
            self.events.append((kind, args))

    def on_resync(self, connection: ManagerConnection) -> None:
        positions = connection.records("PositionRequestByLogins", [ALICE, BOB])
        with self.lock:
            self.resyncs.append(connection.generation)
            self.resync_positions.append({int(p.Position) for p in positions})

    def kinds(self, login: int | None = None) -> list[str]:
        with self.lock:
            return [k for k, a in self.events if login is None or (a and getattr(a[0], "Login", None) == login)]


@pytest.fixture
def accounts(alice_account: SimAccount, bob_account: SimAccount) -> None:
    pin_prices()


@pytest.fixture
def desk(accounts: None, request: pytest.FixtureRequest) -> Iterator[ManagerGateway]:
    """The risk desk's manager gateway over the simulator, connected and pumping every 5 ms; on a
    thread of this process, or (``@both_pumps``) in a process of the pump's own."""
    pump_in = getattr(request, "param", "thread")
    with override_settings(SIM_MANAGER_PUMP_MS=5, SIM_MANAGER_PUMP_IN=pump_in):
        gateway = build_manager_gateway(server="simulator", login=DESK, password="desk", groups="*")
        assert isinstance(gateway, ManagerGateway)
        gateway.conn.answer_timeout = 1.0
        try:
            assert (gateway.conn._api._child is not None) == (pump_in == "process")
            yield gateway
        finally:
            gateway.conn.close()


# The test runs twice: the simulator's pump reading on a thread of this process, and in a process
# of its own (SIM_MANAGER_PUMP_IN process) with this process keeping the copy and calling the sinks.
both_pumps = pytest.mark.parametrize("desk", ["thread", "process"], indirect=True)


@pytest.fixture
def recorder(desk: ManagerGateway) -> Recorder:
    recorder = Recorder()
    desk.conn.listen(recorder)
    return recorder


def alices_terminal() -> SimulatedMetaTrader5:
    """Alice's own desktop terminal: her requests are the user's, not a program's."""
    terminal = SimulatedMetaTrader5(manual=True)
    assert terminal.initialize(login=ALICE, server=SERVER), terminal.last_error()
    return terminal


def manual_buy(terminal: SimulatedMetaTrader5, volume: float = 0.1) -> Any:
    tick = terminal.symbol_info_tick("EURUSD")
    return terminal.order_send(
        {
            "action": c.TRADE_ACTION_DEAL, "symbol": "EURUSD", "volume": volume, "type": c.ORDER_TYPE_BUY,
            "price": tick.ask, "deviation": 20, "comment": "manual", "type_filling": c.ORDER_FILLING_IOC,
        }
    )  # fmt: skip


# --- the surface ------------------------------------------------------------------------------------------
def test_every_manager_call_the_adapter_makes_exists_on_the_simulated_surface():
    source = "".join(p.read_text() for p in Path("execution/adapters/manager").glob("*.py"))
    api_name = r'"((?:User|Position|Order|Deal|Group|Tick|Time|Symbol|History)[A-Za-z]*)"'
    called = {n for n in re.findall(api_name, source) if re.search("Get|Request|Update|Subscribe|Server|Last", n)}
    called |= {"Connect", "Disconnect", "Subscribe", "DealerSend"}
    assert {"UserAccountRequestByLogins", "PositionRequestByLogins", "DealRequest", "UserUpdate"} <= called
    missing = sorted(name for name in called if not callable(getattr(simulated.ManagerAPI, name, None)))
    assert missing == []


def test_a_get_call_without_its_pump_mode_fails_like_the_real_api(accounts):
    api = simulated.ManagerAPI()
    assert api.Connect("simulator", DESK, "desk", simulated.ManagerAPI.EnPumpModes.PUMP_MODE_USERS, 1000)
    try:
        assert api.UserGet(ALICE).Login == ALICE
        assert api.PositionGet(ALICE) is None
        assert simulated.LastError()[1] == simulated.EnMTAPIRetcode.MT_RET_ERR_PARAMS
        assert api.PositionRequest(ALICE) == []  # a *Request* asks the server instead
    finally:
        api.Disconnect()


def test_the_manager_cannot_connect_during_an_outage_of_the_whole_server(accounts):
    sim_inject_fault("no_connection", seconds=5)
    api = simulated.ManagerAPI()
    assert not api.Connect("simulator", DESK, "desk", simulated.ManagerAPI.EnPumpModes.PUMP_MODE_FULL, 1000)
    assert simulated.LastError()[1] == simulated.EnMTAPIRetcode.MT_RET_ERR_NETWORK


# --- reads -----------------------------------------------------------------------------------------------------
@both_pumps
def test_the_desk_reads_alice_and_bob_in_one_call_with_the_values_her_terminal_shows(desk):
    terminal = alices_terminal()
    assert manual_buy(terminal, 0.5).retcode == c.TRADE_RETCODE_DONE
    sim_set_price("EURUSD", "1.08300", "1.08310")
    snapshots = desk.account_snapshots([(ALICE, SERVER), (BOB, SERVER)])
    alice, bob = snapshots[(ALICE, SERVER)], snapshots[(BOB, SERVER)]
    info = terminal.account_info()
    assert not isinstance(alice, Exception) and not isinstance(bob, Exception)
    assert (alice.balance, alice.equity, alice.currency) == (
        Decimal(str(info.balance)),
        Decimal(str(info.equity)).quantize(Decimal("0.01")),
        "USD",
    )
    assert alice.equity < alice.balance and alice.trade_allowed
    (position,) = alice.positions
    held = terminal.positions_get()[0]
    assert (position.ticket, position.volume, position.side, position.comment) == (
        held.ticket,
        Decimal("0.5"),
        "buy",
        "manual",
    )
    assert position.profit == Decimal(str(held.profit))
    assert abs(position.opened_at - datetime.now(UTC)) < timedelta(seconds=30)  # server time made UTC
    assert bob.positions == () and bob.balance == Decimal("50000.00")


def test_an_account_the_manager_cannot_see_is_an_error_for_that_account_only(desk):
    snapshots = desk.account_snapshots([(ALICE, SERVER), (999999, SERVER)])
    assert not isinstance(snapshots[(ALICE, SERVER)], Exception)
    assert isinstance(snapshots[(999999, SERVER)], Exception)


@both_pumps
def test_symbol_info_comes_from_the_pumped_symbol_and_the_last_tick(desk):
    info = desk.symbol_info(ALICE, SERVER, "EURUSD")
    assert info is not None
    assert (info.bid, info.ask, info.contract_size, info.volume_step) == (
        Decimal("1.085"),
        Decimal("1.0851"),
        Decimal("100000.0"),
        Decimal("0.01"),
    )
    assert desk.symbol_info(ALICE, SERVER, "NOPE") is None


# --- dealing -------------------------------------------------------------------------------------------------------
def test_the_desk_opens_modifies_and_closes_alices_position_through_dealer_send(desk):
    tag = order_tag("cmd-open-1")
    opened = desk.open_position(ALICE, SERVER, symbol="EURUSD", side="buy", volume=Decimal("0.3"), tag=tag)
    assert (opened.outcome, opened.retcode, opened.volume) == (DONE, c.TRADE_RETCODE_DONE, Decimal("0.3"))
    terminal = alices_terminal()
    (held,) = terminal.positions_get()
    assert (held.ticket, held.comment) == (opened.position, tag)  # one world: her terminal sees it

    modified = desk.modify_position(ALICE, SERVER, ticket=opened.position, sl=Decimal("1.08000"), tag=order_tag("m"))
    assert modified.outcome == DONE
    assert terminal.positions_get()[0].sl == pytest.approx(1.08)

    closed = desk.close_position(ALICE, SERVER, ticket=opened.position, tag=order_tag("cmd-close-1"))
    assert (closed.outcome, closed.volume, closed.position) == (DONE, Decimal("0.3"), opened.position)
    assert terminal.positions_get() == ()
    (deal,) = desk.deals_by_tag(ALICE, SERVER, tag=order_tag("cmd-close-1"), since=datetime.now(UTC) - timedelta(1))
    assert (deal.entry, deal.position_id, deal.ticket) == ("out", opened.position, closed.deal)
    again = desk.close_position(ALICE, SERVER, ticket=opened.position, tag=order_tag("cmd-close-2"))
    assert (again.outcome, again.retcode) == ("final", c.TRADE_RETCODE_POSITION_CLOSED)


def test_a_partial_close_through_the_desk_leaves_the_rest_open(desk):
    opened = desk.open_position(ALICE, SERVER, symbol="EURUSD", side="sell", volume=Decimal("1"), tag="b:o")
    closed = desk.close_position(ALICE, SERVER, ticket=opened.position, volume=Decimal("0.4"), tag="b:c")
    assert closed.ok and closed.volume == Decimal("0.4")
    assert desk.position(ALICE, SERVER, opened.position).volume == Decimal("0.6")


def test_the_desk_places_finds_and_cancels_a_pending_order_by_tag(desk):
    placed = desk.place_pending_order(
        ALICE, SERVER, symbol="EURUSD", side="buy", kind="limit", volume=Decimal("0.2"), price=Decimal("1.07"),
        tag="b:pend",
    )  # fmt: skip
    assert (placed.outcome, placed.retcode) == (DONE, c.TRADE_RETCODE_PLACED)
    (order,) = desk.orders_by_tag(ALICE, SERVER, tag="b:pend", since=datetime.now(UTC) - timedelta(hours=1))
    assert (order.ticket, order.order_type, order.state) == (placed.order, "buy_limit", "placed")
    assert [o.ticket for o in desk.account_snapshot(ALICE, SERVER).orders] == [placed.order]
    cancelled = desk.cancel_order(ALICE, SERVER, ticket=placed.order, tag="b:cancel")
    assert cancelled.outcome == DONE
    assert desk.account_snapshot(ALICE, SERVER).orders == ()
    assert desk.cancel_order(ALICE, SERVER, ticket=placed.order, tag="b:cancel2").outcome == "final"


def test_positions_by_tag_finds_the_desks_position_with_its_entry_commission(desk):
    opened = desk.open_position(ALICE, SERVER, symbol="XAUUSD", side="buy", volume=Decimal("0.1"), tag="b:gold")
    (found,) = desk.positions_by_tag(ALICE, SERVER, tag="b:gold")
    entry = desk.deals_by_tag(ALICE, SERVER, tag="b:gold", since=datetime.now(UTC) - timedelta(hours=1))
    assert found.ticket == opened.position and found.commission == entry[0].commission


def test_a_refused_dealer_request_answers_with_the_trade_servers_retcode(desk):
    sim_inject_fault("market_closed", count=1, login=ALICE)
    result = desk.open_position(ALICE, SERVER, symbol="EURUSD", side="buy", volume=Decimal("0.1"), tag="b:mc")
    assert (result.outcome, result.retcode, result.maybe_executed) == (RETRY, c.TRADE_RETCODE_MARKET_CLOSED, False)
    assert not SimPosition.objects.exists()


def test_a_lost_dealer_answer_is_reconciled_by_tag_as_the_close_that_filled(desk):
    opened = desk.open_position(ALICE, SERVER, symbol="EURUSD", side="buy", volume=Decimal("0.2"), tag="b:o2")
    sim_inject_fault("timeout_after_fill", count=1, login=ALICE)
    started = time.monotonic()
    closed = desk.close_position(ALICE, SERVER, ticket=opened.position, tag="b:lost-close")
    assert time.monotonic() - started >= desk.conn.answer_timeout  # it did wait for the answer
    assert (closed.outcome, closed.maybe_executed, closed.volume) == (DONE, False, Decimal("0.2"))
    assert "reconciled by tag" in closed.message and closed.deal
    assert not SimPosition.objects.filter(ticket=opened.position).exists()


@both_pumps
def test_a_dealer_request_lost_with_the_connection_is_not_called_failed_and_the_desk_reconnects(desk, recorder):
    opened = desk.open_position(ALICE, SERVER, symbol="EURUSD", side="buy", volume=Decimal("0.2"), tag="b:o3")
    sim_inject_fault("no_connection", count=1, login=ALICE)
    closed = desk.close_position(ALICE, SERVER, ticket=opened.position, tag="b:lost-link")
    assert (closed.outcome, closed.maybe_executed) == (RETRY, True)  # unknown: reconcile before any retry
    assert SimPosition.objects.filter(ticket=opened.position).exists()  # the request never left
    wait_for(lambda: desk.conn.drops == 1 and desk.conn.connected and len(recorder.resyncs) >= 2)
    again = desk.close_position(ALICE, SERVER, ticket=opened.position, tag="b:lost-link")
    assert again.outcome == DONE


# --- events ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pump_in", ["thread", "process"])
def test_alices_own_trade_reaches_the_desk_as_events_in_order_on_the_apis_thread(accounts, pump_in):
    threads: list[str] = []
    seen: list[str] = []

    class Sink:
        def _record(self, name: str) -> None:
            threads.append(threading.current_thread().name)
            seen.append(name)

        def OnDealAdd(self, deal: Any) -> None:
            self._record(f"deal:{deal.Entry}")

        def OnPositionAdd(self, position: Any) -> None:
            self._record("position_add")

        def OnPositionDelete(self, position: Any) -> None:
            self._record("position_delete")

        def OnTick(self, symbol: str, tick: Any) -> None:
            self._record(f"tick:{symbol}")

    with override_settings(SIM_MANAGER_PUMP_MS=5, SIM_MANAGER_PUMP_IN=pump_in):
        api = simulated.ManagerAPI()
        sink = Sink()
        assert api.Connect("simulator", DESK, "desk", simulated.ManagerAPI.EnPumpModes.PUMP_MODE_FULL, 1000)
        assert (api._child is not None) == (pump_in == "process")
        try:
            assert api.DealSubscribe(sink) and api.PositionSubscribe(sink) and api.TickSubscribe(sink)
            terminal = alices_terminal()
            assert manual_buy(terminal).retcode == c.TRADE_RETCODE_DONE
            wait_for(lambda: "position_add" in seen)
            ticket = terminal.positions_get()[0].ticket
            sim_set_price("GBPUSD", "1.27100", "1.27114")
            wait_for(lambda: "tick:GBPUSD" in seen)
            tick = terminal.symbol_info_tick("EURUSD")
            close = {
                "action": c.TRADE_ACTION_DEAL, "symbol": "EURUSD", "volume": 0.1, "type": c.ORDER_TYPE_SELL,
                "position": ticket, "price": tick.bid, "deviation": 20, "type_filling": c.ORDER_FILLING_IOC,
            }  # fmt: skip
            assert terminal.order_send(close).retcode == c.TRADE_RETCODE_DONE
            wait_for(lambda: "position_delete" in seen)
        finally:
            api.Disconnect()
    assert seen == ["deal:0", "position_add", "tick:GBPUSD", "deal:1", "position_delete"]
    assert threading.current_thread().name not in threads and set(threads) == {"sim-mgr-pump"}


def test_a_sink_that_raises_does_not_stop_the_events_of_the_others(accounts):
    got: list[int] = []

    class Broken:
        def OnDealAdd(self, deal: Any) -> None:
            raise RuntimeError("a bug in a sink")

    class Fine:
        def OnDealAdd(self, deal: Any) -> None:
            got.append(deal.Deal)

    with override_settings(SIM_MANAGER_PUMP_MS=5):
        api = simulated.ManagerAPI()
        assert api.Connect("simulator", DESK, "desk", simulated.ManagerAPI.EnPumpModes.PUMP_MODE_FULL, 1000)
        try:
            api.DealSubscribe(Broken())
            api.DealSubscribe(Fine())
            manual_buy(alices_terminal())
            manual_buy(alices_terminal())
            wait_for(lambda: len(got) == 2)
        finally:
            api.Disconnect()


def test_with_the_pump_in_a_process_of_its_own_the_desks_process_reads_nothing_yet_its_copy_is_current(
    accounts, monkeypatch
):
    """As the real API's native pump thread: the reading and comparing is elsewhere; this process
    keeps the pumped copy the ``*Get*`` calls read and calls the sinks, on the API's thread."""
    reads: list[str] = []
    read_world = simulated.ManagerAPI._read_world

    def counted(self: Any, **kwargs: Any) -> Any:
        reads.append(threading.current_thread().name)
        return read_world(self, **kwargs)

    monkeypatch.setattr(simulated.ManagerAPI, "_read_world", counted)
    added: list[tuple[int, str]] = []

    class Sink:
        def OnPositionAdd(self, position: Any) -> None:
            added.append((int(position.Position), threading.current_thread().name))

    with override_settings(SIM_MANAGER_PUMP_MS=5, SIM_MANAGER_PUMP_IN="process"):
        api = simulated.ManagerAPI()
        assert api.Connect("simulator", DESK, "desk", simulated.ManagerAPI.EnPumpModes.PUMP_MODE_FULL, 1000)
        try:
            assert api.UserGet(ALICE).Login == ALICE and api.PositionGet(ALICE) == []  # the copy, read there
            assert api.PositionSubscribe(Sink())
            terminal = alices_terminal()
            assert manual_buy(terminal, 0.3).retcode == c.TRADE_RETCODE_DONE
            wait_for(lambda: added)
            ticket = terminal.positions_get()[0].ticket
            assert added == [(ticket, "sim-mgr-pump")]
            (held,) = api.PositionGet(ALICE)
            assert (held.Position, held.Volume) == (ticket, 3000)
            assert api.UserAccountGet(ALICE).Margin > 0
            sim_set_price("EURUSD", "1.08200", "1.08210")
            wait_for(lambda: api.TickLast("EURUSD").bid == 1.082)
            assert api.SymbolGet("EURUSD").ContractSize == 100000.0
        finally:
            api.Disconnect()
    assert reads == []  # the connect's read and every cycle's were the pump's process's


@pytest.mark.parametrize("desk", ["process"], indirect=True)
def test_when_the_pumps_process_dies_the_desk_hears_the_link_drop_and_reconnects_with_a_new_one(desk, recorder):
    wait_for(lambda: recorder.resyncs == [1])
    api = desk.conn._api
    first = api._child.process
    first.kill()
    wait_for(lambda: desk.conn.drops == 1 and desk.conn.connected and len(recorder.resyncs) == 2)
    second = api._child.process
    assert second.pid != first.pid and second.is_alive()
    manual_buy(alices_terminal())
    wait_for(lambda: "position_add" in recorder.kinds(ALICE))  # pumped by the new one
    desk.conn.close()
    assert not second.is_alive()  # a disconnect ends it


def test_the_desks_listener_hears_alices_trade_after_its_first_resync(desk, recorder):
    wait_for(lambda: recorder.resyncs == [1])
    manual_buy(alices_terminal())
    wait_for(lambda: "position_add" in recorder.kinds(ALICE))
    assert recorder.kinds(ALICE).index("deal_add") < recorder.kinds(ALICE).index("position_add")


@both_pumps
def test_a_drop_loses_the_events_meanwhile_and_the_resync_after_it_sees_the_position_gone(desk, recorder):
    opened = desk.open_position(
        ALICE, SERVER, symbol="EURUSD", side="buy", volume=Decimal("0.1"), sl=Decimal("1.08000"), tag="b:sl"
    )
    wait_for(lambda: "position_add" in recorder.kinds(ALICE))  # the desk knew it open
    assert opened.position in {p.ticket for p in desk.account_snapshot(ALICE, SERVER).positions}
    sim_inject_fault("no_connection", seconds=1.0)
    wait_for(lambda: not desk.conn.connected)
    assert desk.status()["available"] is False
    quote = sim_set_price("EURUSD", "1.07900", "1.07910")
    assert [t.kind for t in quote.triggered] == ["sl"]  # the server closes it meanwhile
    wait_for(lambda: desk.conn.connected and len(recorder.resyncs) == 2)
    assert recorder.resyncs == [1, 2] and recorder.resync_positions[-1] == set()  # the resync saw it gone
    assert "position_delete" not in recorder.kinds(ALICE)  # that event was lost with the link
    assert desk.account_snapshot(ALICE, SERVER).positions == ()
    assert desk.status()["available"] is True and desk.conn.drops == 1


# --- server-side enforcement ---------------------------------------------------------------------------------------
def test_disabling_alices_trading_on_the_server_refuses_her_own_terminal_with_10017(desk):
    terminal = alices_terminal()
    assert manual_buy(terminal).retcode == c.TRADE_RETCODE_DONE
    assert desk.set_server_trade_disabled(ALICE, SERVER, disabled=True) is True
    assert desk.server_trade_disabled(ALICE, SERVER) is True
    assert manual_buy(terminal).retcode == c.TRADE_RETCODE_TRADE_DISABLED
    out = io.StringIO()
    call_command("mt5sim", "trade", "--login", str(ALICE), "--symbol", "EURUSD", "--side", "buy", "--volume", "0.1",
                 stdout=out)  # fmt: skip
    assert json.loads(out.getvalue())["retcode"] == c.TRADE_RETCODE_TRADE_DISABLED
    wait_for(lambda: desk.account_snapshot(ALICE, SERVER).trade_allowed is False)
    ticket = terminal.positions_get()[0].ticket
    assert desk.close_position(ALICE, SERVER, ticket=ticket, tag="b:dealer-close").ok  # the dealer still can
    assert desk.server_trade_disabled(BOB, SERVER) is False  # bob is untouched

    assert desk.set_server_trade_disabled(ALICE, SERVER, disabled=False) is True
    assert manual_buy(terminal).retcode == c.TRADE_RETCODE_DONE
    assert SimAccount.objects.get(login=ALICE).trade_expert  # the other rights are kept


def test_alices_disable_trading_command_disables_her_trading_on_the_server_and_enable_restores_it(
    alice, account_1, desk
):
    from commands.states import State
    from execution.gateways import reset_gateway
    from tests.test_execution import LOGIN, run, submit

    sim_account_create(login=LOGIN, balance=100000, server=SERVER)
    reset_gateway(desk)
    try:
        disabled = run(submit(alice, "disable_trading"))
        assert (disabled.state, disabled.result) == (
            State.SUCCEEDED,
            {"trading_enabled": False, "server_trade_disabled": True},
        )
        assert desk.server_trade_disabled(LOGIN, SERVER) is True
        assert SimAccount.objects.get(login=LOGIN).trade_allowed is False  # her terminal gets 10017
        assert run(submit(alice, "enable_trading")).state == State.SUCCEEDED
        assert desk.server_trade_disabled(LOGIN, SERVER) is False
    finally:
        reset_gateway()


def test_the_account_page_shows_the_server_side_state_of_alices_trading(root, world, desk):
    from django.urls import reverse

    from execution.gateways import reset_gateway

    account = world.account_1
    sim_account_create(login=account.login, balance=100000, server=account.server)
    page_url = reverse("admin:policies_tradingaccount_change", args=[account.pk])
    reset_gateway(desk)
    try:
        assert b"enabled on the server" in logged_in(root).get(page_url).content
        desk.set_server_trade_disabled(account.login, account.server, disabled=True)
        assert b"disabled on the server (USER_RIGHT_TRADE_DISABLED)" in logged_in(root).get(page_url).content
    finally:
        reset_gateway()


def test_a_terminal_backend_has_no_server_side_switch(gateway):
    assert gateway.set_server_trade_disabled(ALICE, SERVER, disabled=True) is None


# --- configuration ---------------------------------------------------------------------------------------------
def test_the_manager_backend_selects_the_simulator_and_says_what_it_needs(accounts):
    with override_settings(MT5_MANAGER_SERVER="simulator", MT5_MANAGER_LOGIN=0):
        status = build_gateway("manager").status()
    assert (status["available"], status["detail"]) == (False, "MT5 Manager API backend: MT5_MANAGER_LOGIN is not set")
    with override_settings(MT5_MANAGER_SERVER="mt5.example.net:443", MT5_MANAGER_LOGIN=DESK):
        status = build_gateway("manager").status()
    assert status["available"] is False and "needs the MT5Manager package" in status["detail"]
    with override_settings(MT5_MANAGER_SERVER="", MT5_MANAGER_LOGIN=DESK, SIM_MANAGER_PUMP_MS=5):
        gateway = build_gateway("manager")
        try:
            assert isinstance(gateway, ManagerGateway) and gateway.status()["available"] is True
        finally:
            gateway.conn.close()


def test_the_verify_module_reads_dealer_send_answers_in_every_form_it_may_take():
    class Request:
        ID = 17

    assert manager_verify.dealer_request_id(5, Request()) == 5
    assert manager_verify.dealer_request_id(True, Request()) == 17
    assert manager_verify.dealer_request_id(False, Request()) is None
    assert manager_verify.tick_of(("EURUSD", object()))[0] == "EURUSD"


class _Binding:
    """A stand-in binding whose dealer answers the test delivers by hand (the simulator's answer
    in its own time), to pin down the adapter's correlation."""

    class ManagerAPI:
        def __init__(self) -> None:
            self.sent: list[tuple[Any, Any]] = []

        def Connect(self, *args: Any) -> bool:
            return True

        def Disconnect(self) -> bool:
            return True

        def Subscribe(self, sink: Any) -> bool:
            return True

        PositionSubscribe = DealSubscribe = OrderSubscribe = UserSubscribe = UserAccountSubscribe = Subscribe
        TickSubscribe = Subscribe

        def TimeServer(self) -> int:
            return int(time.time()) + 7200

        def DealerSend(self, request: Any, sink: Any) -> int:
            self.sent.append((request, sink))
            return len(self.sent)

    MTRequest = simulated.MTRequest

    @staticmethod
    def LastError() -> tuple[int, int, str]:
        return (0, 0, "ok")


def test_a_late_answer_to_an_earlier_request_with_the_same_tag_is_not_taken_for_the_next_ones():
    conn = ManagerConnection(_Binding, server="mt5.example.net:443", login=DESK, password="p", answer_timeout=0.3)
    conn.start()
    try:
        assert conn.server_offset == timedelta(hours=2)
        assert conn.dealer_send(conn.new("MTRequest"), "b:same") == (True, None)  # its answer is late
        results: list[Any] = []
        waiting = threading.Thread(target=lambda: results.append(conn.dealer_send(conn.new("MTRequest"), "b:same")))
        conn.answer_timeout = 5.0
        waiting.start()
        api = conn._api
        wait_for(lambda: len(api.sent) == 2)
        (first, sink), (second, _) = api.sent

        def answer(request: Any, request_id: int, retcode: int) -> Any:
            copy = request._copy()
            copy.ID, copy.ResultRetcode = request_id, retcode
            return copy

        sink.OnDealerAnswer(answer(first, 1, c.TRADE_RETCODE_DONE))  # the first one's, late
        sink.OnDealerAnswer(answer(second, 2, 10002))  # accepted: in flight, keep waiting
        time.sleep(0.1)
        assert results == []
        sink.OnDealerAnswer(answer(second, 2, c.TRADE_RETCODE_REJECT))
        waiting.join(timeout=5)
        (sent, final), *_ = results
        assert sent is True and final.ID == 2 and final.ResultRetcode == c.TRADE_RETCODE_REJECT
    finally:
        conn.close()


def test_a_daily_breach_disables_the_traders_terminal_on_the_server_until_the_block_lifts(trader, desk):
    from execution.gateways import reset_gateway
    from policies.models import TradingAccount
    from risk.engine import risk_evaluate_many
    from tests.conftest import LOGIN, send_policy

    send_policy(trader, policy_version=14, enforcement_flags={"disable_trading_on_breach": True})
    accounts = list(TradingAccount.objects.select_related("current_policy", "tenant"))
    terminal = SimulatedMetaTrader5(manual=True)
    assert terminal.initialize(login=LOGIN, server=SERVER)
    reset_gateway(desk)
    try:
        desk.open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=Decimal("2"), tag="b:big")
        risk_evaluate_many(accounts=accounts, gateway=desk)
        assert manual_buy(terminal).retcode == c.TRADE_RETCODE_DONE  # no breach yet: she trades
        sim_set_price("EURUSD", "1.05300")  # below the daily floor
        risk_evaluate_many(accounts=accounts, gateway=desk)
        assert desk.server_trade_disabled(LOGIN, SERVER) is True
        assert TradingAccount.objects.get(login=LOGIN).server_trade_disabled is True
        assert manual_buy(terminal).retcode == c.TRADE_RETCODE_TRADE_DISABLED  # her own terminal too

        # Laravel's next policy no longer disables trading on a breach: the block lifts, and the
        # bridge clears the right it set.
        send_policy(trader, policy_version=15, enforcement_flags={"disable_trading_on_breach": False})
        accounts = list(TradingAccount.objects.select_related("current_policy", "tenant"))
        wait_for(lambda: desk.account_snapshot(LOGIN, SERVER).trade_allowed is False)  # the pump caught up
        risk_evaluate_many(accounts=accounts, gateway=desk)
        assert desk.server_trade_disabled(LOGIN, SERVER) is False
        assert TradingAccount.objects.get(login=LOGIN).server_trade_disabled is False
        assert manual_buy(terminal).retcode == c.TRADE_RETCODE_DONE
    finally:
        reset_gateway()


def test_the_bridge_never_clears_a_right_an_administrator_took_away(trader, desk):
    from policies.models import TradingAccount
    from risk.engine import risk_evaluate_many
    from tests.conftest import LOGIN

    accounts = list(TradingAccount.objects.select_related("current_policy", "tenant"))
    sim_set_trade_disabled(LOGIN, True)  # the broker's back office, not the bridge
    wait_for(lambda: desk.account_snapshot(LOGIN, SERVER).trade_allowed is False)
    risk_evaluate_many(accounts=accounts, gateway=desk)
    assert desk.server_trade_disabled(LOGIN, SERVER) is True
    assert TradingAccount.objects.get(login=LOGIN).server_trade_disabled is False


# --- the event-driven monitor (issue #17 item 3, first version) ------------------------------------------
@pytest.fixture
def watching(trader, desk, recorder, monkeypatch):
    """Alice's account (50040367, policy v13) watched by the event monitor. Its ``start`` waits
    until the pump has delivered the events of the positions already open, so the monitor's
    counters count only what the test does after it starts."""
    from execution.gateways import reset_gateway
    from risk.events import EventMonitor
    from tests.conftest import LOGIN

    reset_gateway(desk)
    monitor = EventMonitor(desk)
    start = monitor.start

    def start_once_the_pump_caught_up() -> None:
        tickets = {p.ticket for p in desk.account_snapshot(LOGIN, SERVER).positions}
        wait_for(lambda: tickets <= {int(a[0].Position) for k, a in list(recorder.events) if k == "position_add"})
        start()

    monkeypatch.setattr(monitor, "start", start_once_the_pump_caught_up)
    try:
        yield monitor
    finally:
        reset_gateway()


@both_pumps
def test_a_tick_below_alices_daily_floor_is_acted_on_by_the_event_monitor_without_a_poll(watching, desk):
    from policies.models import ProtectiveAction
    from tests.conftest import LOGIN

    opened = desk.open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=Decimal("2"), tag="b:ev")
    watching.start()
    assert watching.trusted and watching.resyncs == 1
    key = (LOGIN, SERVER)
    sim_set_price("EURUSD", "1.08400", "1.08410")  # -200: quiet, revalued in memory only
    wait_for(lambda: watching.revaluations(key) >= 1)
    assert watching.judged[key] == 0 and not ProtectiveAction.objects.exists()
    sim_set_price("EURUSD", "1.05300", "1.05310")  # about -6,400: below the daily floor
    wait_for(lambda: ProtectiveAction.objects.filter(rule_key="daily_drawdown").exists())
    # Judged from the pumped picture at the tick's prices: no confirming round trip.
    assert watching.acted[key] >= 1 and watching.confirmations[key] == 0
    assert {a.ticket for a in ProtectiveAction.objects.filter(rule_key="single_trade_loss")} == {opened.position}


def test_a_tick_revalues_only_the_accounts_holding_its_symbol(watching, desk):
    from tests.conftest import LOGIN

    sim_account_create(login=LOGIN + 1, balance=100000, server=SERVER)
    desk.open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=Decimal("0.1"), tag="b:e1")
    watching.start()
    sim_set_price("GBPUSD", "1.27100", "1.27114")
    sim_set_price("EURUSD", "1.08490", "1.08500")
    wait_for(lambda: watching.revaluations((LOGIN, SERVER)) >= 1)
    time.sleep(0.05)
    assert watching.revalued_keys() == {(LOGIN, SERVER)}  # GBPUSD's tick touched nobody


def test_a_breach_while_the_link_is_down_is_found_by_the_resync_before_anything_is_trusted(watching, desk):
    from policies.models import ProtectiveAction
    from tests.conftest import LOGIN

    desk.open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=Decimal("2"), tag="b:ev2")
    watching.start()
    sim_inject_fault("no_connection", seconds=1.0)
    wait_for(lambda: not desk.conn.connected)
    assert watching.trusted is False
    sim_set_price("EURUSD", "1.05300", "1.05310")  # its tick is lost with the link
    assert not ProtectiveAction.objects.exists()
    wait_for(lambda: watching.resyncs == 2 and watching.trusted, timeout=10)
    assert ProtectiveAction.objects.filter(rule_key="daily_drawdown").exists()


def test_the_risk_monitor_starts_the_event_monitor_with_the_manager_backend_and_keeps_polling(trader, desk):
    from policies.models import ProtectiveAction
    from risk.monitor import Monitor
    from tests.conftest import LOGIN

    desk.open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=Decimal("2"), tag="b:ev3")
    monitor = Monitor(gateway_factory=lambda: desk)
    monitor.run(iterations=1)  # one polling cycle: quiet
    assert monitor.events is not None and monitor.events.trusted
    assert not ProtectiveAction.objects.exists()
    sim_set_price("EURUSD", "1.05300", "1.05310")  # no further cycle runs: the tick alone must do it
    wait_for(lambda: ProtectiveAction.objects.filter(rule_key="daily_drawdown").exists())
    assert monitor.events.judged[(LOGIN, SERVER)] >= 1


def test_on_carols_netting_account_an_open_adds_to_her_position_and_the_desk_names_it(desk):
    carol = 7003
    sim_account_create(login=carol, balance=100000, server=SERVER, margin_mode="netting")
    wait_for(lambda: desk.conn.record("UserGet", carol) is not None)  # pumped
    first = desk.open_position(carol, SERVER, symbol="EURUSD", side="buy", volume=Decimal("0.1"), tag="b:n1")
    second = desk.open_position(carol, SERVER, symbol="EURUSD", side="buy", volume=Decimal("0.2"), tag="b:n2")
    assert first.ok and second.ok and second.position == first.position  # one position per symbol
    held = desk.netting_position(carol, SERVER, "EURUSD")
    assert held is not None and (held.ticket, held.volume) == (first.position, Decimal("0.3"))
    assert desk.netting_position(ALICE, SERVER, "EURUSD") is None  # alice hedges


def test_a_call_to_the_server_pays_the_simulators_call_cost_and_a_pumped_read_does_not(accounts):
    api = simulated.ManagerAPI()
    assert api.Connect("simulator", DESK, "desk", simulated.ManagerAPI.EnPumpModes.PUMP_MODE_FULL, 1000)
    try:
        with override_settings(SIM_CALL_MS=60):
            started = time.monotonic()
            assert api.PositionGet(ALICE) == []
            pumped = time.monotonic() - started
            started = time.monotonic()
            assert api.PositionRequest(ALICE) == []
            asked = time.monotonic() - started
        assert asked >= 0.06 > pumped
    finally:
        api.Disconnect()


def test_alices_equity_climbing_to_new_highs_costs_the_event_monitor_no_mt5_read(watching, desk):
    from tests.conftest import LOGIN

    desk.open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=Decimal("1"), tag="b:up")
    watching.start()
    key = (LOGIN, SERVER)
    before = watching.high_water_mark(key)
    for n, bid in enumerate(("1.08700", "1.08900", "1.09100"), start=1):
        sim_set_price("EURUSD", bid)
        wait_for(lambda n=n: watching.revaluations(key) >= n)
    assert watching.judged[key] == 0
    assert watching.equity(key) > 100500 and watching.high_water_mark(key) > before  # a new high, kept in memory


# --- the vectorised event monitor (issue #17 item 3) ------------------------------------------------------
DAVE = 7004  # another of the firm's traders, on GBPUSD


@pytest.fixture
def dave(trader, tenant_1):
    """Dave's account at 100,000 with the example policy, watched beside alice's."""
    from tests.conftest import register_account

    sim_account_create(login=DAVE, balance=100000, server=SERVER)
    sim_set_price("GBPUSD", "1.27000", "1.27014")
    register_account(tenant_1, login=DAVE, server=SERVER)
    return DAVE


def test_a_tick_evaluates_only_the_holders_of_its_symbol_and_what_the_server_does_not_confirm_raises_nothing(
    dave, desk
):
    from execution.gateways import reset_gateway
    from policies.models import ProtectiveAction
    from risk.events import EventMonitor
    from tests.conftest import LOGIN

    reset_gateway(desk)
    try:
        desk.open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=Decimal("2"), tag="b:a1")
        desk.open_position(DAVE, SERVER, symbol="GBPUSD", side="buy", volume=Decimal("2"), tag="b:d1")
        monitor = EventMonitor(desk)  # not listening: only the ticks this test hands it
        monitor.resync()
        alice, dave_key = (LOGIN, SERVER), (DAVE, SERVER)
        assert monitor.watched_keys() == {alice, dave_key}

        # A GBPUSD quote far below dave's floors that the server never had: his picture is
        # suspect, the pumped quotes do not show that price, so he is read from the server,
        # which says otherwise: nothing is raised; alice is not even revalued.
        monitor.tick("GBPUSD", 1.20000, 1.20014)
        assert (monitor.revaluations(dave_key), monitor.revaluations(alice)) == (0, 0)  # rebuilt by the read
        assert monitor.judged == {dave_key: 1} and monitor.acted == {}
        assert not ProtectiveAction.objects.exists()
        before = monitor.equity(dave_key)
        assert before == float(desk.account_snapshot(DAVE, SERVER).equity)  # the real read's

        # EURUSD really falls below alice's daily floor: only she is revalued and read, and acted on.
        sim_set_price("EURUSD", "1.05300", "1.05310")
        monitor.tick("EURUSD", 1.05300, 1.05310)
        assert monitor.judged == {dave_key: 1, alice: 1}
        assert set(ProtectiveAction.objects.values_list("account__login", flat=True)) == {LOGIN}
        assert ProtectiveAction.objects.filter(rule_key="daily_drawdown").exists()

        # A quiet tick on dave's symbol revalues him alone, in memory.
        monitor.tick("GBPUSD", 1.27100, 1.27114)
        assert monitor.revaluations(dave_key) == 1 and monitor.revalued_keys() == {dave_key}
        assert monitor.judged == {dave_key: 1, alice: 1}
        assert monitor.equity(dave_key) == pytest.approx(before + 2 * 100000 * (1.27100 - 1.27000), abs=0.01)
    finally:
        reset_gateway()


def test_alices_breach_already_recorded_is_not_read_again_at_every_tick_but_a_new_one_is(watching, desk):
    from policies.models import ProtectiveAction
    from tests.conftest import LOGIN

    for n in range(4):  # four lots, each its own position: no single one loses past its limit
        desk.open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=Decimal("1"), tag=f"b:k{n}")
    watching.resync()
    key = (LOGIN, SERVER)
    sim_set_price("EURUSD", "1.06750", "1.06760")  # about -7,000: below the daily floor, above the total
    watching.tick("EURUSD", 1.06750, 1.06760)
    assert watching.judged[key] == 1
    assert set(ProtectiveAction.objects.values_list("rule_key", flat=True)) == {"daily_drawdown"}
    for bid in (1.06740, 1.06730, 1.06720):  # the same breach, its action at work: memory only
        watching.tick("EURUSD", bid, bid + 0.0001)
    assert watching.judged[key] == 1 and watching.revaluations(key) == 3
    sim_set_price("EURUSD", "1.05500", "1.05510")
    watching.tick("EURUSD", 1.05500, 1.05510)  # about -12,000: below the total floor too, a new breach
    assert watching.judged[key] == 2
    assert ProtectiveAction.objects.filter(rule_key="total_drawdown").exists()


def test_a_connection_drop_mid_breach_misses_nothing_the_resync_finds_it(watching, desk, monkeypatch):
    from policies.models import ProtectiveAction
    from tests.conftest import LOGIN

    desk.open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=Decimal("2"), tag="b:m1")
    watching.start()
    assert watching.trusted and watching.resyncs == 1
    failed: list[str] = []

    def the_link_drops_as_the_breach_is_judged(revalued):
        if not failed:
            failed.append("dropped")
            sim_inject_fault("no_connection", seconds=1.0)
        raise GatewayUnavailable("the link dropped")

    monkeypatch.setattr(desk, "pumped_snapshots", the_link_drops_as_the_breach_is_judged)
    sim_set_price("EURUSD", "1.05300", "1.05310")  # the tick makes alice suspect; no read gets through
    wait_for(lambda: failed and not desk.conn.connected, timeout=3)
    assert not ProtectiveAction.objects.exists()  # nothing acted on an unconfirmed picture
    # The read's link error and the API's OnDisconnect may each count a drop: a resync follows each.
    wait_for(lambda: watching.resyncs >= 2 and watching.trusted, timeout=10)
    assert ProtectiveAction.objects.filter(rule_key="daily_drawdown").exists()
    assert desk.conn.drops >= 1


def test_two_risk_monitors_share_the_accounts_with_none_watched_twice_and_one_takes_over_when_the_other_dies(
    trader, tenant_1, desk, recorder
):
    from execution.gateways import reset_gateway
    from policies.models import MonitorHeartbeat
    from risk.monitor import Monitor
    from tests.conftest import LOGIN, register_account

    reset_gateway(desk)
    logins = [LOGIN, *range(7100, 7108)]
    for login in logins[1:]:
        sim_account_create(login=login, balance=100000, server=SERVER)
        register_account(tenant_1, login=login, server=SERVER)
    for login in logins[1:]:
        wait_for(lambda login=login: desk.conn.record("UserGet", login) is not None)  # pumped
        desk.open_position(login, SERVER, symbol="EURUSD", side="buy", volume=Decimal("0.1"), tag=f"b:{login}")
    wait_for(lambda: set(logins[1:]) <= {int(a[0].Login) for k, a in list(recorder.events) if k == "position_add"})
    try:
        first, second = (
            Monitor(monitor_id="risk-a", gateway_factory=lambda: desk),
            Monitor(monitor_id="risk-b", gateway_factory=lambda: desk),
        )
        for monitor in (first, second, first, second):  # both alive, each seeing the other
            monitor.monitors = monitor.heartbeat(0, 0.0)
        assert first.monitors == second.monitors == ["risk-a", "risk-b"]
        first.follow_events()
        second.follow_events()
        assert first.events is not None and second.events is not None
        a, b = first.events.watched_keys(), second.events.watched_keys()
        assert a and b and not a & b and a | b == {(login, SERVER) for login in logins}

        sim_set_price("EURUSD", "1.08490", "1.08500")  # one tick reaches both: each account revalued once
        holders = {(login, SERVER) for login in logins[1:]}  # alice holds nothing

        def revalued(key: tuple[int, str]) -> int:
            return first.events.revaluations(key) + second.events.revaluations(key)  # type: ignore[union-attr]

        wait_for(lambda: all(revalued(k) for k in holders))
        assert [revalued(k) for k in sorted(holders)] == [1] * len(holders) and revalued((LOGIN, SERVER)) == 0

        MonitorHeartbeat.objects.filter(monitor_id="risk-b").delete()  # risk-b died
        first.monitors = first.heartbeat(0, 0.0)
        first.follow_events()
        assert first.events.watched_keys() == a | b
    finally:
        reset_gateway()


# --- group masks, margin-call and stop-out events (issue #17) ---------------------------------------------
def test_the_desk_reads_group_masks_as_mt5_does():
    from execution.group_masks import group_matches

    masks = "demo\\*,real\\pro*,!real\\pro-test"
    assert group_matches("demo\\sim-usd-hedging", masks)
    assert group_matches("REAL\\Pro-EUR", masks)  # letters compare without case
    assert not group_matches("real\\pro-test", masks)  # excluded
    assert not group_matches("real\\standard", masks)
    assert group_matches("anything\\at-all", "")  # no masks: every group
    assert not group_matches("demo\\x", "*,!demo\\*")  # exclusions alone: every group but those


def test_a_desk_configured_for_the_real_groups_neither_reads_nor_watches_alices_demo_account(desk):
    desk.groups = "real\\*"
    found = desk.account_snapshots([(ALICE, SERVER)])[(ALICE, SERVER)]
    assert isinstance(found, GatewayUnavailable) and "MT5_MANAGER_GROUPS" in found.message
    assert desk.in_groups([ALICE, BOB]) == set()
    desk.groups = "demo\\sim-*"
    assert desk.in_groups([ALICE, BOB]) == {ALICE, BOB}
    assert desk.account_snapshot(ALICE, SERVER).login == ALICE


@both_pumps
def test_alices_margin_call_is_an_account_event_when_she_enters_it_and_when_she_leaves_it(desk, recorder):
    SimAccount.objects.filter(login=ALICE, server=SERVER).update(margin_so_call=Decimal("999999"))
    terminal = alices_terminal()
    assert manual_buy(terminal).retcode == c.TRADE_RETCODE_DONE  # margin level far below 999,999 %
    entered = wait_for(lambda: [a for k, a in list(recorder.events) if k == "margin_call_enter"])
    assert int(entered[0][0].Login) == ALICE
    assert int(entered[0][0].SOActivation) == simulated.MTAccount.EnSoActivation.ACTIVATION_MARGIN_CALL
    ticket = terminal.positions_get()[0].ticket
    tick = terminal.symbol_info_tick("EURUSD")
    close = {
        "action": c.TRADE_ACTION_DEAL, "symbol": "EURUSD", "volume": 0.1, "type": c.ORDER_TYPE_SELL,
        "position": ticket, "price": tick.bid, "deviation": 20, "type_filling": c.ORDER_FILLING_IOC,
    }  # fmt: skip
    assert terminal.order_send(close).retcode == c.TRADE_RETCODE_DONE  # no margin used: she leaves it
    wait_for(lambda: any(k == "margin_call_leave" for k, _ in list(recorder.events)))
    assert not any(k.startswith("stop_out") for k, _ in list(recorder.events))


# --- closing before recording (issue #17: the 20 ms path) ---------------------------------------------------
class DealerSends:
    """Every DealerSend the desk makes: (position, comment, protective actions recorded then)."""

    def __init__(self, desk: ManagerGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        from policies.models import ProtectiveAction, SentAheadNote

        self.calls: list[tuple[int, str, int]] = []
        self.noted: list[int] = []  # the notes of closes sent ahead, at each DealerSend
        api = desk.conn._api
        real = api.DealerSend

        def dealer_send(request: Any, sink: Any) -> Any:
            self.calls.append((int(request.Position), str(request.Comment), ProtectiveAction.objects.count()))
            self.noted.append(SentAheadNote.objects.count())
            return real(request, sink)

        monkeypatch.setattr(api, "DealerSend", dealer_send)

    def noted_at(self, ticket: int) -> list[int]:
        return [noted for call, noted in zip(self.calls, self.noted, strict=True) if call[0] == ticket]

    def of(self, ticket: int) -> list[tuple[int, str, int]]:
        return [call for call in self.calls if call[0] == ticket]


def losing_trade(desk: ManagerGateway, monitor: Any, tag: str) -> int:
    """Alice's 1-lot EURUSD buy, pumped and held by the monitor (resynced after the pump has it)."""
    from tests.conftest import LOGIN

    ticket = desk.open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=Decimal("1"), tag=tag).position
    wait_for(lambda: ticket in {int(p.Position) for p in desk.conn.records("PositionGetByLogins", [LOGIN])})
    monitor.resync()
    assert monitor.trusted
    return ticket


def the_tick_that_breaks_her_single_trade_limit(monitor: Any) -> None:
    """EURUSD to 1.06400: her buy loses about 2,110, past the 2,000 limit; her equity stays above
    both floors. The server has the price; the tick is handed over as the connection would."""
    sim_set_price("EURUSD", "1.06400", "1.06410")
    monitor.tick("EURUSD", 1.06400, 1.06410, from_server=True)


def run_protective_command(action: Any) -> Any:
    from commands.models import Command
    from execution.runner import command_execute

    command_execute(action.command_id)
    return Command.objects.get(pk=action.command_id)


def pursue_alice(desk: ManagerGateway) -> None:
    from policies.models import TradingAccount
    from risk.engine import risk_evaluate_many

    risk_evaluate_many(accounts=list(TradingAccount.objects.select_related("current_policy", "tenant")), gateway=desk)


def test_the_event_monitor_closes_alices_losing_trade_before_the_action_is_recorded_and_never_twice(
    watching, desk, monkeypatch
):
    from policies.models import ProtectiveAction, SentAheadNote
    from risk import protection

    sends = DealerSends(desk, monkeypatch)
    ticket = losing_trade(desk, watching, "b:sa1")
    the_tick_that_breaks_her_single_trade_limit(watching)

    action = ProtectiveAction.objects.get(rule_key="single_trade_loss", ticket=ticket)
    [(_, comment, recorded_then)] = sends.of(ticket)
    assert recorded_then == 0  # sent before the action existed
    assert sends.noted_at(ticket) == [1]  # its note written just before
    assert not SentAheadNote.objects.exists()  # and deleted as the action was recorded
    assert comment == protection.first_close_tag(action.action_id)  # under the action's own tag
    command = run_protective_command(action)
    assert command.command_type == "close_position" and command.envelope["sent_ahead"]["tag"] == comment
    assert command.state == "succeeded" and command.result["reconciled"] is True  # found by tag
    assert len(sends.of(ticket)) == 1  # the command sent nothing
    pursue_alice(desk)
    action.refresh_from_db()
    assert action.goal_met_at is not None and action.execution_status == "success"
    assert not SimPosition.objects.filter(ticket=ticket).exists()


def test_the_note_of_a_close_sent_ahead_and_the_check_of_alices_actions_are_one_statement_not_waiting_for_disk(
    watching, desk, monkeypatch
):
    """A risk manager's close goes out one round trip after the breach is judged: the check that
    alice has no action at work and the note are one statement, whose commit does not wait for
    the WAL flush (the note must outlive the monitor, not a crash of PostgreSQL)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from policies.models import SentAheadNote
    from risk import protection

    statements: list[str] = []
    note = protection.sent_ahead_note

    def counted(**kwargs: Any) -> bool:
        with CaptureQueriesContext(connection) as captured:
            written = note(**kwargs)
        statements.extend(query["sql"] for query in captured.captured_queries)
        return written

    monkeypatch.setattr(protection, "sent_ahead_note", counted)
    sends = DealerSends(desk, monkeypatch)
    ticket = losing_trade(desk, watching, "b:one")
    the_tick_that_breaks_her_single_trade_limit(watching)
    assert sends.noted_at(ticket) == [1]
    [statement] = statements
    assert "set_config('synchronous_commit', 'off', true)" in statement and "NOT EXISTS" in statement
    assert not SentAheadNote.objects.exists()  # deleted as the action was recorded


def test_a_command_that_runs_while_the_close_sent_ahead_is_in_flight_waits_for_it_and_sends_nothing(
    watching, desk, monkeypatch
):
    from policies.models import ProtectiveAction

    sends = DealerSends(desk, monkeypatch)
    ticket = losing_trade(desk, watching, "b:sa2")
    api = desk.conn._api
    dealing = threading.Event()
    execute = api._execute

    def slow_dealer(request: Any) -> Any:
        dealing.wait(5)
        return execute(request)

    monkeypatch.setattr(api, "_execute", slow_dealer)
    the_tick_that_breaks_her_single_trade_limit(watching)
    action = ProtectiveAction.objects.get(rule_key="single_trade_loss", ticket=ticket)
    assert len(sends.of(ticket)) == 1
    threading.Timer(0.3, dealing.set).start()  # the dealer answers while the command waits
    command = run_protective_command(action)
    assert command.envelope["sent_ahead"]["in_flight"] == [ticket]  # no answer when it was recorded
    assert command.state == "succeeded" and command.result["reconciled"] is True
    assert len(sends.of(ticket)) == 1


def test_a_close_sent_ahead_and_refused_falls_back_to_the_protective_commands_own_close(watching, desk, monkeypatch):
    from policies.models import ProtectiveAction

    sends = DealerSends(desk, monkeypatch)
    ticket = losing_trade(desk, watching, "b:sa3")
    sim_inject_fault("requote", symbol="EURUSD")  # the trade server refuses the first close
    the_tick_that_breaks_her_single_trade_limit(watching)
    action = ProtectiveAction.objects.get(rule_key="single_trade_loss", ticket=ticket)
    command = run_protective_command(action)
    assert command.state == "succeeded"
    (_, ahead, recorded_then), (_, own, _) = sends.of(ticket)  # the refused one, then the command's
    assert recorded_then == 0 and ahead == command.envelope["sent_ahead"]["tag"] == own
    pursue_alice(desk)
    action.refresh_from_db()
    assert action.goal_met_at is not None
    assert not SimPosition.objects.filter(ticket=ticket).exists()


def test_a_close_sent_ahead_whose_answer_is_lost_is_reconciled_by_its_tag(watching, desk, monkeypatch):
    from policies.models import ProtectiveAction

    sends = DealerSends(desk, monkeypatch)
    ticket = losing_trade(desk, watching, "b:sa4")
    sim_inject_fault("timeout_after_fill", symbol="EURUSD")  # executed, its answer lost
    the_tick_that_breaks_her_single_trade_limit(watching)
    action = ProtectiveAction.objects.get(rule_key="single_trade_loss", ticket=ticket)
    command = run_protective_command(action)
    assert command.state == "succeeded" and command.result["reconciled"] is True
    assert len(sends.of(ticket)) == 1


class MonitorDied(BaseException):
    """The monitor's process ends (killed, power lost) between the close and its record."""


def after_the_grace_period() -> datetime:
    from django.conf import settings
    from django.utils import timezone

    return timezone.now() + timedelta(seconds=settings.SENT_AHEAD_RECOVER_SECONDS + 1)


def reports_and_alerts_of(action: Any) -> tuple[int, int]:
    from alerts.models import Alert
    from callbacks.models import CallbackDelivery

    reports = CallbackDelivery.objects.filter(source_kind="protective_action", source_id=str(action.pk)).count()
    alerts = Alert.objects.filter(kind="close_recovered", subject=f"action:{action.action_id}").count()
    return reports, alerts


def test_when_the_monitor_dies_between_the_close_and_its_record_the_sweeper_records_and_reports_it_once(
    watching, desk, monkeypatch
):
    from callbacks.models import CallbackDelivery
    from execution.models import SimDeal
    from policies.models import ProtectiveAction, SentAheadNote
    from risk import events, protection
    from risk.events import EventMonitor

    sends = DealerSends(desk, monkeypatch)
    ticket = losing_trade(desk, watching, "b:sa5")

    def dies(**kwargs: Any) -> Any:
        raise MonitorDied

    monkeypatch.setattr(events, "risk_evaluate_snapshots", dies)
    with pytest.raises(MonitorDied):
        the_tick_that_breaks_her_single_trade_limit(watching)
    monkeypatch.undo()  # (the DealerSend counter with it: counted from here by the server's deals)
    [(_, comment, _)] = sends.of(ticket)
    wait_for(lambda: not SimPosition.objects.filter(ticket=ticket).exists())

    # The monitor that takes over reads the server: the position is gone, so is the breach.
    successor = EventMonitor(desk)
    successor.resync()
    assert successor.trusted and not successor.sent_ahead
    assert not ProtectiveAction.objects.exists()
    closing = SimDeal.objects.filter(position_id=ticket, entry=c.DEAL_ENTRY_OUT)
    assert [d.comment for d in closing] == [comment]  # closed once, under the tag sent ahead
    [note] = SentAheadNote.objects.all()  # but the note written before the close stayed
    assert (note.rule_key, note.tickets, note.tag) == ("single_trade_loss", [ticket], comment)

    assert protection.sent_ahead_recover() == 0  # within the grace period the record may still come
    assert protection.sent_ahead_recover(now=after_the_grace_period()) == 1
    assert protection.sent_ahead_recover(now=after_the_grace_period()) == 0  # a second sweep: nothing more
    [action] = ProtectiveAction.objects.all()
    assert protection.first_close_tag(action.action_id) == comment  # under the id its close carried
    assert (action.rule_key, action.ticket, action.symbol, action.volume) == (
        "single_trade_loss", ticket, "EURUSD", Decimal("1")
    )  # fmt: skip
    assert action.measured < -2000 and action.floor_or_limit == Decimal("-2000")
    assert "closed ahead by the risk monitor" in action.mt5_response and comment in action.mt5_response
    assert reports_and_alerts_of(action) == (1, 1)  # reported to Laravel and raised, once
    assert not SentAheadNote.objects.exists()

    # Its first attempt's command finds the close by its tag: the deal and its profit, no new close.
    command = run_protective_command(action)
    [deal] = closing
    assert command.state == "succeeded" and command.envelope["sent_ahead"]["tag"] == comment
    assert command.result["deal"] == deal.ticket and command.result["reconciled"] is True
    action.refresh_from_db()
    assert action.closed_pnl == deal.profit < 0

    pursue_alice(desk)  # the goal held against MT5 as any action's: the position is gone
    action.refresh_from_db()
    assert action.goal_met_at is not None and action.execution_status == "success"
    last = CallbackDelivery.objects.filter(source_id=str(action.pk)).order_by("pk").last()
    assert last is not None and last.envelope["payload"]["execution_status"] == "success"
    assert Decimal(last.envelope["payload"]["closed_pnl"]) == deal.profit
    assert [d.comment for d in SimDeal.objects.filter(position_id=ticket, entry=c.DEAL_ENTRY_OUT)] == [comment]


def test_when_the_monitor_dies_after_the_note_before_its_close_went_out_the_recovered_action_closes_the_trade(
    watching, desk, monkeypatch
):
    from execution.models import SimDeal
    from policies.models import ProtectiveAction, SentAheadNote
    from risk import protection

    sends = DealerSends(desk, monkeypatch)
    ticket = losing_trade(desk, watching, "b:sa10")

    def dies_before_sending(*args: Any, **kwargs: Any) -> Any:
        raise MonitorDied

    monkeypatch.setattr(desk, "close_ahead", dies_before_sending)
    with pytest.raises(MonitorDied):
        the_tick_that_breaks_her_single_trade_limit(watching)
    [note] = SentAheadNote.objects.all()  # written, but no close went out
    assert sends.of(ticket) == [] and SimPosition.objects.filter(ticket=ticket).exists()

    assert protection.sent_ahead_recover(now=after_the_grace_period()) == 1
    [action] = ProtectiveAction.objects.all()
    command = run_protective_command(action)  # found nothing under the tag: closes her trade itself
    assert command.state == "succeeded" and command.result.get("reconciled") is not True
    closing = SimDeal.objects.filter(position_id=ticket, entry=c.DEAL_ENTRY_OUT)
    assert [d.comment for d in closing] == [note.tag] == [protection.first_close_tag(action.action_id)]
    assert not SimPosition.objects.filter(ticket=ticket).exists()
    assert reports_and_alerts_of(action) == (1, 1)


def test_a_close_sent_ahead_that_the_engine_judges_otherwise_is_recorded_by_the_sweeper(watching, desk, monkeypatch):
    from policies.models import ProtectiveAction, SentAheadNote
    from risk import protection

    sends = DealerSends(desk, monkeypatch)
    ticket = losing_trade(desk, watching, "b:sa8")

    def judged_otherwise(**kwargs: Any) -> bool:  # the database's state moved meanwhile
        return False

    monkeypatch.setattr(protection, "protective_action_raise", judged_otherwise)
    the_tick_that_breaks_her_single_trade_limit(watching)
    monkeypatch.undo()
    [(_, comment, _)] = sends.of(ticket)
    assert not ProtectiveAction.objects.exists() and SentAheadNote.objects.count() == 1

    assert protection.sent_ahead_recover(now=after_the_grace_period()) == 1
    [action] = ProtectiveAction.objects.all()
    assert protection.first_close_tag(action.action_id) == comment and action.ticket == ticket
    assert reports_and_alerts_of(action) == (1, 1)
    assert not SentAheadNote.objects.exists()


@contextlib.contextmanager
def the_database_refusing_notes() -> Iterator[None]:
    """Every INSERT into the notes' table fails in the database itself (a trigger raising)."""
    from django.db import connection

    from policies.models import SentAheadNote

    table = connection.ops.quote_name(SentAheadNote._meta.db_table)
    if connection.vendor == "postgresql":
        install = [
            "CREATE FUNCTION refuse_note() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the database refused the note'; END $$",
            f"CREATE TRIGGER refuse_note BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse_note()",
        ]
        remove = [f"DROP TRIGGER refuse_note ON {table}", "DROP FUNCTION refuse_note()"]
    else:
        install = [
            f"CREATE TRIGGER refuse_note BEFORE INSERT ON {table} "
            "BEGIN SELECT RAISE(ABORT, 'the database refused the note'); END"
        ]
        remove = ["DROP TRIGGER refuse_note"]
    with connection.cursor() as cursor:
        for sql in install:
            cursor.execute(sql)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for sql in remove:
                cursor.execute(sql)


def test_when_the_note_cannot_be_written_nothing_is_sent_ahead_and_the_engines_command_closes(
    watching, desk, monkeypatch
):
    from policies.models import ProtectiveAction, SentAheadNote
    from risk import protection

    sends = DealerSends(desk, monkeypatch)
    ticket = losing_trade(desk, watching, "b:sa9")
    with the_database_refusing_notes():  # a real error from the database, mid-transaction
        the_tick_that_breaks_her_single_trade_limit(watching)
    assert sends.of(ticket) == []  # nothing sent before the record
    action = ProtectiveAction.objects.get(rule_key="single_trade_loss", ticket=ticket)
    command = run_protective_command(action)
    assert "sent_ahead" not in command.envelope and command.state == "succeeded"
    [(_, comment, recorded_then)] = sends.of(ticket)  # the command's own close, after the record
    assert recorded_then == 1 and comment == protection.first_close_tag(action.action_id)
    assert not SentAheadNote.objects.exists()
    assert protection.sent_ahead_recover(now=after_the_grace_period()) == 0


def test_alices_daily_breach_closes_every_position_ahead_once_and_her_single_trade_actions_share_those_closes(
    watching, desk, monkeypatch
):
    from commands.models import Command
    from execution.runner import command_execute
    from policies.models import ProtectiveAction
    from tests.conftest import LOGIN

    sends = DealerSends(desk, monkeypatch)
    big = desk.open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=Decimal("2"), tag="b:sa6").position
    small = losing_trade(desk, watching, "b:sa7")
    sim_set_price("EURUSD", "1.05300", "1.05310")  # about -9,600: below the daily floor, each trade past its limit
    watching.tick("EURUSD", 1.05300, 1.05310, from_server=True)

    assert set(ProtectiveAction.objects.exclude(goal="none").values_list("rule_key", "ticket")) == {
        ("daily_drawdown", None), ("single_trade_loss", big), ("single_trade_loss", small)
    }  # fmt: skip
    assert [len(sends.of(t)) for t in (big, small)] == [1, 1]  # every position, once, under the flat action's tag
    flat = ProtectiveAction.objects.get(rule_key="daily_drawdown").command
    assert flat is not None
    flat_tag = flat.envelope["sent_ahead"]["tag"]
    assert {comment for position, comment, _ in sends.calls if position} == {flat_tag}
    for command in Command.objects.filter(state="queued"):
        command_execute(command.pk)
        command.refresh_from_db()
        assert command.state == "succeeded", command.error_message
        if command.command_type != "cancel_orders":
            assert command.envelope["sent_ahead"]["tag"] == flat_tag
    assert [len(sends.of(t)) for t in (big, small)] == [1, 1]  # no command sent again
    pursue_alice(desk)
    assert not ProtectiveAction.objects.filter(goal_met_at__isnull=True).exclude(goal="none").exists()


def test_when_the_monitor_dies_after_alices_flat_close_the_sweeper_records_her_single_trade_breaches_too(
    watching, desk, monkeypatch
):
    from alerts.models import Alert
    from commands.models import Command
    from execution.runner import command_execute
    from policies.models import ProtectiveAction, SentAheadNote
    from risk import events, protection
    from tests.conftest import LOGIN

    sends = DealerSends(desk, monkeypatch)
    big = desk.open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=Decimal("2"), tag="b:sa11").position
    small = losing_trade(desk, watching, "b:sa12")

    def dies(**kwargs: Any) -> Any:
        raise MonitorDied

    monkeypatch.setattr(events, "risk_evaluate_snapshots", dies)
    sim_set_price("EURUSD", "1.05300", "1.05310")  # below the daily floor, each trade past its limit
    with pytest.raises(MonitorDied):
        watching.tick("EURUSD", 1.05300, 1.05310, from_server=True)
    monkeypatch.undo()
    [note] = SentAheadNote.objects.all()  # one note, for the flat close every position shared
    assert note.rule_key == "daily_drawdown" and sorted(note.tickets) == sorted([big, small])
    wait_for(lambda: not SimPosition.objects.filter(ticket__in=[big, small]).exists())
    assert not ProtectiveAction.objects.exists()

    assert protection.sent_ahead_recover(now=after_the_grace_period()) == 3
    recorded = ProtectiveAction.objects.exclude(goal="none")
    assert set(recorded.values_list("rule_key", "ticket")) == {
        ("daily_drawdown", None), ("single_trade_loss", big), ("single_trade_loss", small)
    }  # fmt: skip
    flat = recorded.get(rule_key="daily_drawdown")
    assert flat.action_id == note.action_id
    for command in Command.objects.filter(state="queued"):
        command_execute(command.pk)
        command.refresh_from_db()
        assert command.state == "succeeded", command.error_message
        if command.command_type != "cancel_orders":
            assert command.envelope["sent_ahead"]["tag"] == note.tag
    assert [len(sends.of(t)) for t in (big, small)] == [1, 1]  # closed once, by the close sent ahead
    assert Alert.objects.filter(kind="close_recovered").count() == 1  # one alert names all three
    pursue_alice(desk)
    assert not ProtectiveAction.objects.filter(goal_met_at__isnull=True).exclude(goal="none").exists()


def test_the_event_monitors_first_breach_does_not_wait_for_numpy_to_import_its_set_routines():
    """A risk manager's first breach after a restart is judged as fast as the next: ``np.unique``
    (behind the tick's ``np.union1d``) imports ``numpy.ma`` on its first call, about 8 ms, so the
    event monitor's module imports it up front. Checked in a fresh interpreter."""
    import os
    import subprocess
    import sys

    script = (
        "import sys, django; django.setup(); "
        "assert 'numpy.ma' not in sys.modules, 'loaded before the monitor'; "
        "import risk.events; print('numpy.ma' in sys.modules)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bridgeproject.settings"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "True"


def on_the_dispatcher(desk: ManagerGateway, work: Callable[[], Any]) -> Any:
    """Run ``work`` on the desk's event thread, in order with its events; returns its result."""
    done: list[Any] = []
    desk.conn.on_dispatcher(lambda: done.append(work()))
    return wait_for(lambda: done)[0]


@pytest.mark.parametrize("after", ["start", "resync"])
def test_the_event_monitors_first_breach_after_its_start_or_a_resync_opens_no_database_connection(
    watching, desk, monkeypatch, after
):
    """A risk manager's first breach after a restart or a reconnect is sent as fast as the next:
    the monitor's start opens the event thread's database connection and reads the tables a close
    sent ahead uses, and the thread keeps it through a resync (it used to close it after each,
    and the first breach paid ~20 ms to connect again)."""
    from django.db import connection
    from django.db.backends.signals import connection_created

    from policies.models import ProtectiveAction
    from risk import protection
    from tests.conftest import LOGIN

    opened: list[str] = []
    noted_on: list[str] = []
    note = protection.sent_ahead_note

    def noted(**kwargs: Any) -> bool:
        noted_on.append(threading.current_thread().name)
        return note(**kwargs)

    def count(sender: Any, **kwargs: Any) -> None:
        opened.append(threading.current_thread().name)

    monkeypatch.setattr(protection, "sent_ahead_note", noted)
    desk.open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=Decimal("1"), tag="b:warm")
    on_the_dispatcher(desk, lambda: connection.close())  # the event thread has no database connection yet
    watching.start()
    if after == "resync":
        desk.conn._events.put(("resync", ()))  # the connection resyncs again, as after a reconnect
    on_the_dispatcher(desk, lambda: None)  # the warm-up the start queued, and the resync, have run
    connection_created.connect(count)
    try:
        sim_set_price("EURUSD", "1.06400", "1.06410")  # past her single-trade limit, through the pump
        wait_for(lambda: ProtectiveAction.objects.filter(rule_key="single_trade_loss").exists())
    finally:
        connection_created.disconnect(count)
    assert noted_on == ["manager-events"]  # the note and its close went from the event thread
    assert "manager-events" not in opened


def test_when_postgresql_drops_the_event_threads_connection_the_next_event_connects_again(desk):
    """An operator restarts PostgreSQL under a running monitor: the event thread's connection is
    dead. The error closes it, and the next event's work connects again, where it used to fail
    on the dead connection until the next resync."""
    from django.db import DatabaseError, connection

    def query() -> Any:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                return cursor.fetchone()[0]
        except DatabaseError as exc:
            return type(exc).__name__

    pid = on_the_dispatcher(desk, query)
    with connection.cursor() as cursor:  # from the test's own connection, as a restart would
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    assert on_the_dispatcher(desk, query) == "OperationalError"  # the dead connection's error, once
    again = on_the_dispatcher(desk, query)
    assert isinstance(again, int) and again != pid
