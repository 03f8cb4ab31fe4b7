"""The trade server's wall clock: the simulator stamps every MT5 time as UTC + its offset and
reads history dates the same way, as MT5 does; the official adapter learns the offset from
ticks and gives the rest of the bridge UTC."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from execution.adapters.official import OfficialGateway
from execution.adapters.official import servertime as st
from execution.adapters.official.servertime import ServerClock
from execution.gateway import order_tag
from execution.gateways import get_gateway, reset_gateway
from execution.simulator import SimulatedMetaTrader5
from execution.simulator.service import sim_random_walk_step, sim_set_price
from policies.models import AccountRisk, ProtectiveAction, TradingAccount
from risk.engine import risk_evaluate_account
from risk.monitor import Monitor
from tests.conftest import LOGIN
from tests.execution_fixtures import ALICE, MAGIC, SERVER, market_buy

pytest_plugins = ["tests.execution_fixtures"]

D = Decimal
HOURS_2 = 2 * 3600


def utc_now() -> datetime:
    return datetime.now(UTC)


def close_to(moment: datetime, expected: datetime, seconds: float = 1.0) -> bool:
    return abs((moment - expected).total_seconds()) <= seconds


def logged_in(**kwargs: Any) -> SimulatedMetaTrader5:
    mt5 = SimulatedMetaTrader5(**kwargs)
    assert mt5.initialize(login=ALICE, server=SERVER), mt5.last_error()
    return mt5


def adapter(**kwargs: Any) -> OfficialGateway:
    return OfficialGateway(SimulatedMetaTrader5(), magic=MAGIC, backend="simulator", verify_account=False, **kwargs)


def open_eurusd(gateway: OfficialGateway, tag: str = "b:time-1") -> int:
    result = gateway.open_position(ALICE, SERVER, symbol="EURUSD", side="buy", volume=D("1"), tag=tag)
    assert result.ok, result
    return result.position


# --- the simulator: what the terminal shows ------------------------------------------------------
def test_a_position_opened_now_shows_server_time_on_the_terminal_and_utc_through_the_adapter(gateway):
    ticket = open_eurusd(gateway)
    now = utc_now()
    terminal = logged_in()
    (raw,) = terminal.positions_get()
    assert abs(raw.time - (now.timestamp() + HOURS_2)) <= 1
    assert abs(raw.time_msc / 1000 - (now.timestamp() + HOURS_2)) <= 1
    assert abs(raw.time_update - (now.timestamp() + HOURS_2)) <= 1
    (deal,) = [d for d in terminal.history_deals_get(position=ticket)]
    assert abs(deal.time - (now.timestamp() + HOURS_2)) <= 1
    (order,) = terminal.history_orders_get(position=ticket)
    assert abs(order.time_setup - (now.timestamp() + HOURS_2)) <= 1 and order.time_done == order.time_setup
    tick = terminal.symbol_info_tick("EURUSD")
    assert abs(tick.time_msc / 1000 - (now.timestamp() + HOURS_2)) <= 5  # pinned by the fixture a moment ago
    assert terminal.symbol_info("EURUSD").time == tick.time
    # A second look (the risk monitor's) shows the same.
    assert terminal.positions_get()[0].time_msc == raw.time_msc

    (position,) = gateway.account_snapshot(ALICE, SERVER).positions
    assert close_to(position.opened_at, now)
    assert close_to(gateway.position(ALICE, SERVER, ticket).opened_at, now)
    (bulk,) = gateway.account_snapshots([(ALICE, SERVER)])[(ALICE, SERVER)].positions
    assert close_to(bulk.opened_at, now)
    assert close_to(gateway.symbol_info(ALICE, SERVER, "EURUSD").quoted_at, now, seconds=5)


def test_a_pending_order_shows_server_time_and_an_open_one_has_no_done_time(gateway):
    result = gateway.place_pending_order(
        ALICE, SERVER, symbol="EURUSD", side="buy", kind="limit", volume=D("1"), price=D("1.08000"), tag="b:limit"
    )
    assert result.ok
    now = utc_now()
    (raw,) = logged_in().orders_get()
    assert abs(raw.time_setup - (now.timestamp() + HOURS_2)) <= 1 and (raw.time_done, raw.time_done_msc) == (0, 0)
    (order,) = gateway.account_snapshot(ALICE, SERVER).orders
    assert close_to(order.placed_at, now) and order.done_at is None


def test_history_dates_are_read_in_server_time_so_utc_bounds_miss_the_last_two_hours(alice_account):
    terminal = logged_in()
    assert terminal.order_send(market_buy(terminal)).retcode == terminal.TRADE_RETCODE_DONE
    now = utc_now()
    server_now = now + timedelta(hours=2)
    today_server = server_now.replace(hour=0, minute=0, second=0, microsecond=0)
    # Server-time bounds find today's deals (the deposit and the buy) and the buy's order.
    deals = terminal.history_deals_get(today_server - timedelta(days=1), server_now + timedelta(minutes=1))
    assert [d.entry for d in deals][-1] == terminal.DEAL_ENTRY_IN and len(deals) == 2
    assert len(terminal.history_orders_get(server_now - timedelta(minutes=5), server_now + timedelta(minutes=1))) == 1
    # UTC bounds end two hours early: a deal made a moment ago is not in them, as on MT5.
    assert terminal.history_deals_get(now - timedelta(hours=1), now) == ()
    assert terminal.history_orders_get(now - timedelta(hours=1), now) == ()
    assert terminal.history_deals_total(int(now.timestamp()) - 3600, int(now.timestamp())) == 0


def test_the_offset_is_a_setting(alice_account, settings):
    settings.SIM_SERVER_UTC_OFFSET_HOURS = 3
    terminal = logged_in()
    terminal.order_send(market_buy(terminal))
    (raw,) = terminal.positions_get()
    assert abs(raw.time - (time.time() + 3 * 3600)) <= 1


# --- the adapter: learning the offset ------------------------------------------------------------
@pytest.fixture
def look_at_once(monkeypatch):
    """Every call looks at the ticks again (no 30 s wait between the two looks that can learn)."""
    monkeypatch.setattr(st, "RETRY_SECONDS", 0.0)
    monkeypatch.setattr(st, "RELEARN_SECONDS", 0.0)


@pytest.mark.parametrize(("simulated", "fallback"), [(2, 0), (3, 2)])
def test_the_adapter_learns_the_offset_from_a_tick_that_moved(
    alice_account, settings, look_at_once, caplog, simulated, fallback
):
    settings.SIM_SERVER_UTC_OFFSET_HOURS = simulated
    settings.MT5_SERVER_UTC_OFFSET_HOURS = fallback
    gateway = adapter()
    with caplog.at_level(logging.WARNING, logger="bridge.execution"):
        # One look cannot tell a fresh tick from an old one: the fallback, said once.
        assert gateway.server_utc_offset() == timedelta(hours=fallback)
        assert gateway.server_utc_offset() == timedelta(hours=fallback)  # nothing ticked since
    assert [r.message for r in caplog.records].count(
        f"MT5 server clock: no fresh tick to learn it from yet; using UTC{fallback:+g}h (MT5_SERVER_UTC_OFFSET_HOURS)"
    ) == 1
    sim_random_walk_step()  # the market ticks
    assert gateway.server_utc_offset() == timedelta(hours=simulated)
    ticket = open_eurusd(gateway)
    now = utc_now()
    (position,) = gateway.account_snapshot(ALICE, SERVER).positions
    assert position.ticket == ticket and close_to(position.opened_at, now)
    (deal,) = gateway.deals_by_tag(ALICE, SERVER, tag="b:time-1", since=now - timedelta(seconds=5))
    assert close_to(deal.time, now)


def test_with_no_fresh_tick_the_adapter_falls_back_to_the_setting(alice_account, settings, look_at_once):
    settings.SIM_SERVER_UTC_OFFSET_HOURS = 3
    settings.MT5_SERVER_UTC_OFFSET_HOURS = 3
    gateway = adapter()
    for _ in range(3):  # the market is closed: no quote moves
        assert gateway.server_utc_offset() == timedelta(hours=3)
    open_eurusd(gateway)
    (position,) = gateway.account_snapshot(ALICE, SERVER).positions
    assert close_to(position.opened_at, utc_now())


def test_an_offset_learned_survives_a_closed_market_and_a_reconnect_looks_again(alice_account, settings, look_at_once):
    settings.SIM_SERVER_UTC_OFFSET_HOURS = 3
    gateway = adapter(server_utc_offset_hours=0)
    gateway.server_utc_offset()
    sim_random_walk_step()
    assert gateway.server_utc_offset() == timedelta(hours=3)
    assert gateway.server_utc_offset() == timedelta(hours=3)  # nothing ticked since: kept
    gateway.mt5.sim_disconnect()
    gateway.account_snapshot(ALICE, SERVER)  # reconnects
    assert gateway.server_utc_offset() == timedelta(hours=3)


def test_the_clock_trusts_only_a_tick_that_moved_between_two_looks_minutes_apart():
    now = [1_800_000_000.0]
    clock = ServerClock(2, now=lambda: now[0])
    server = lambda seconds_ago: int((now[0] + 3 * 3600 - seconds_ago) * 1000)  # noqa: E731
    # A tick seen once, however fresh it looks, decides nothing.
    assert clock.look({"EURUSD": server(0)}) == timedelta(hours=2) and not clock.learned
    # It moved, but the looks were 20 minutes apart: it may be 20 minutes old.
    now[0] += 1200
    assert clock.look({"EURUSD": server(0)}) == timedelta(hours=2) and not clock.learned
    # It moved within a minute: at most a minute old, so the rounding is exact.
    now[0] += 60
    assert clock.look({"EURUSD": server(40), "GBPUSD": 0}) == timedelta(hours=3) and clock.learned
    # Half-hour offsets round to the nearest 30 minutes.
    half = ServerClock(0, now=lambda: now[0])
    half.look({"X": 1})
    assert half.look({"X": int((now[0] + 5.5 * 3600 - 3) * 1000)}) == timedelta(hours=5, minutes=30)
    # An implausible offset (a tick days old, say) is never learned.
    odd = ServerClock(2, now=lambda: now[0])
    odd.look({"X": 1})
    assert odd.look({"X": int((now[0] - 3 * 86400) * 1000)}) == timedelta(hours=2) and not odd.learned


# --- the bridge on top --------------------------------------------------------------------------
def test_reconciliation_by_tag_finds_a_deal_made_a_moment_ago_when_the_server_runs_far_ahead(alice_account, settings):
    # Five hours ahead: beyond the windows' padding, so only asking in server time finds it.
    settings.SIM_SERVER_UTC_OFFSET_HOURS = 5
    gateway = adapter(server_utc_offset_hours=5)
    tag = order_tag("cmd-far-ahead")
    since = utc_now() - timedelta(seconds=1)
    open_eurusd(gateway, tag=tag)
    (deal,) = gateway.deals_by_tag(ALICE, SERVER, tag=tag, since=since)
    assert close_to(deal.time, utc_now())
    (order,) = gateway.orders_by_tag(ALICE, SERVER, tag=tag, since=since)
    assert close_to(order.placed_at, utc_now()) and order.done_at is not None
    (position,) = gateway.positions_by_tag(ALICE, SERVER, tag=tag)
    assert position.commission == D("-3.50")  # the entry deal was found in the history window


@pytest.fixture
def fresh_gateway():
    reset_gateway()
    yield
    reset_gateway()


def _account() -> TradingAccount:
    return TradingAccount.objects.select_related("current_policy", "tenant").get(login=LOGIN)


def test_a_fresh_snapshot_is_fresh_with_the_server_clock_ahead_and_a_stale_one_never_breaches(trader, fresh_gateway):
    from tests.test_risk_engine import open_buy

    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")
    late = risk_evaluate_account(account=_account(), gateway=get_gateway(), now=timezone.now() + timedelta(seconds=6))
    assert late.evaluated is False and "old" in late.reason
    assert not ProtectiveAction.objects.exists()
    outcome = risk_evaluate_account(account=_account(), gateway=get_gateway(), now=timezone.now())
    assert outcome.evaluated and outcome.actions == 1
    assert close_to(AccountRisk.objects.get().snapshot_at, utc_now(), seconds=5)


def test_the_monitors_bulk_read_yields_utc(trader, fresh_gateway):
    from tests.test_risk_engine import open_buy

    open_buy(trader, 1.0)
    opened = utc_now()
    (snapshot,) = dict(get_gateway().account_snapshots_stream([(LOGIN, SERVER)])).values()
    assert close_to(snapshot.positions[0].opened_at, opened) and close_to(snapshot.observed_at, utc_now())
    monitor = Monitor(monitor_id="solo")
    monitor.cycle(monitor.heartbeat(0, 0))
    assert close_to(AccountRisk.objects.get().snapshot_at, utc_now(), seconds=5)
