"""The risk engine end to end on the simulator: breach → one protective action → fast lane → report."""

from __future__ import annotations

import importlib
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from commands.lanes import Lane
from commands.models import Command
from commands.states import State
from execution.gateway import GatewayUnavailable
from execution.gateways import get_gateway, reset_gateway
from execution.runner import command_execute
from execution.simulator.service import sim_account_create, sim_set_price
from policies.models import AccountRisk, MonitorHeartbeat, ProtectiveAction, TradingAccount
from risk.engine import risk_evaluate_account
from risk.monitor import Monitor, owner_of
from tests.conftest import LOGIN, SERVER, fresh, register_account, send_policy
from tests.virtual_clock import VirtualClock

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _terminal():
    reset_gateway()
    yield
    reset_gateway()


def account() -> TradingAccount:
    return TradingAccount.objects.select_related("current_policy", "tenant").get(login=LOGIN)


def evaluate():
    return risk_evaluate_account(account=account(), gateway=get_gateway())


def open_buy(api, volume: float = 1.0, *, login: int = LOGIN, tenant_id: str = "tenant_1") -> int:
    body = fresh("close_positions", tenant_id=tenant_id)
    body["actor"]["account_login"] = login
    body["payload"] = {
        "command_id": f"open-{timezone.now().timestamp()}",
        "command_type": "open_position",
        "symbol": "EURUSD",
        "direction": "buy",
        "volume": volume,
    }
    api.post("mt5/commands", body)
    command = Command.objects.get(command_id=body["payload"]["command_id"])
    assert command_execute(command.pk) == State.SUCCEEDED
    return get_gateway().account_snapshot(login, SERVER).positions[-1].ticket


def run_fast_lane() -> list[str]:
    states = []
    for command in Command.objects.filter(lane=Lane.FAST, state=State.QUEUED).order_by("id"):
        states.append(command_execute(command.pk))
    return states


def deliveries(request_type: str = "protective_action_report"):
    from callbacks.models import CallbackDelivery

    return CallbackDelivery.objects.filter(request_type=request_type).order_by("id")


def test_a_policy_snapshot_creates_the_risk_state_at_once(trader):
    risk = AccountRisk.objects.get(account__login=LOGIN)
    assert risk.policy_version == 13
    assert risk.total_floor == Decimal("90000")
    assert risk.daily_reference == Decimal("98500")


def test_a_one_lot_eurusd_falling_250_pips_is_closed_and_reported_once(trader):
    ticket = open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")  # bought at the ask 1.08510ish: about -2,500 and more
    outcome = evaluate()
    assert outcome.actions == 1
    action = ProtectiveAction.objects.get()
    assert action.rule_key == "single_trade_loss"
    assert action.scope == f"ticket:{ticket}"
    assert action.threshold_used == Decimal("2")
    assert action.floating_pnl < Decimal("-2000")
    assert action.command.lane == Lane.FAST
    assert action.command.source == "bridge"
    # Many evaluations before the close completes: still one action, one command.
    for _ in range(3):
        assert evaluate().actions == 0
    assert Command.objects.filter(source="bridge").count() == 1
    assert run_fast_lane() == [State.SUCCEEDED]
    action.refresh_from_db()
    assert action.execution_status == "pending"  # the command is an attempt: MT5 says whether it worked
    evaluate()  # the monitor reads the account after the attempt ended
    action.refresh_from_db()
    assert action.execution_status == "success"
    assert action.goal == "position_closed" and action.goal_met_at is not None
    assert action.mt5_response == "position closed successfully"
    assert action.execution_timestamp >= action.detection_timestamp
    assert action.closed_pnl < Decimal("-2000")
    assert get_gateway().account_snapshot(LOGIN, SERVER).positions == ()
    (report,) = deliveries()
    payload = report.envelope["payload"]
    assert report.envelope["request"]["type"] == "protective_action_report"
    assert report.envelope["meta"]["source"] == "python"
    assert payload["rule_key"] == "single_trade_loss"
    assert payload["ticket"] == ticket and payload["position_id"] == str(ticket)
    assert payload["execution_status"] == "success"
    assert payload["violation_count"] == 1
    assert payload["threshold_used"] == 2
    assert set(payload) >= {
        "policy_version",
        "symbol",
        "volume",
        "floating_pnl",
        "closed_pnl",
        "equity",
        "balance",
        "detection_timestamp",
        "execution_timestamp",
        "mt5_response",
        "error_message",
    }


def test_a_flag_that_is_false_records_and_reports_skipped(trader):
    send_policy(trader, policy_version=14, enforcement_flags={"close_position_on_single_trade_breach": False})
    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")
    evaluate()
    action = ProtectiveAction.objects.get()
    assert action.execution_status == "skipped"
    assert action.command is None
    assert len(get_gateway().account_snapshot(LOGIN, SERVER).positions) == 1
    assert deliveries()[0].envelope["payload"]["execution_status"] == "skipped"


def test_the_second_single_trade_breach_escalates(trader):
    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")
    evaluate()
    run_fast_lane()
    sim_set_price("EURUSD", "1.08500")
    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")
    evaluate()
    rules = list(ProtectiveAction.objects.order_by("id").values_list("rule_key", "violation_count"))
    assert rules == [("single_trade_loss", 1), ("single_trade_loss", 2), ("single_trade_loss_limit", 2)]
    assert AccountRisk.objects.get().hard_breached is True


def test_a_daily_breach_closes_everything_cancels_orders_and_disables_trading(trader):
    send_policy(trader, policy_version=14, enforcement_flags={"disable_trading_on_breach": True})
    open_buy(trader, 2.0)
    sim_set_price("EURUSD", "1.05300")  # 2 lots × ~320 pips ≈ -6,400: equity below the 93,575 floor

    evaluate()
    rule_keys = set(ProtectiveAction.objects.values_list("rule_key", flat=True))
    assert "daily_drawdown" in rule_keys
    daily = ProtectiveAction.objects.get(rule_key="daily_drawdown")
    assert daily.scope == f"day:{timezone.now().date().isoformat()}"
    commands = list(Command.objects.filter(source="bridge").values_list("command_type", flat=True))
    assert "close_positions" in commands and "cancel_orders" in commands
    run_fast_lane()
    evaluate()  # the snapshot after the attempt: flat
    daily.refresh_from_db()
    assert daily.execution_status == "success"
    assert daily.goal == "account_flat" and daily.goal_met_at is not None
    assert get_gateway().account_snapshot(LOGIN, SERVER).positions == ()
    # Trading is now disabled: a new position is rejected.
    body = fresh("close_positions")
    body["payload"] = {
        "command_id": "after-breach",
        "command_type": "open_position",
        "symbol": "EURUSD",
        "direction": "buy",
        "volume": 0.1,
    }
    trader.post("mt5/commands", body)
    command = Command.objects.get(command_id="after-breach")
    command_execute(command.pk)
    command.refresh_from_db()
    assert command.state == State.REJECTED
    assert command.error_code == "trading_disabled"


def test_a_stale_snapshot_never_declares_a_breach(trader, settings):
    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")
    outcome = risk_evaluate_account(account=account(), gateway=get_gateway(), now=timezone.now() + timedelta(seconds=6))
    assert outcome.evaluated is False
    assert "old" in outcome.reason
    assert not ProtectiveAction.objects.exists()


def test_the_account_endpoint_shows_floors_headroom_and_breaches(trader):
    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")
    evaluate()
    body = trader.get(f"mt5/accounts/{LOGIN}").json()
    risk = body["risk"]
    assert Decimal(risk["daily_floor"]) == Decimal("93575")
    assert Decimal(risk["total_floor"]) == Decimal("90000")
    assert Decimal(risk["daily_headroom"]) > 0
    assert risk["breaches"][0]["rule_key"] == "single_trade_loss"
    history = trader.get(f"mt5/accounts/{LOGIN}/protective-actions").json()["results"]
    assert history[0]["rule_key"] == "single_trade_loss"


def test_another_tenant_cannot_read_protective_actions(trader, bob):
    assert bob.get(f"mt5/accounts/{LOGIN}/protective-actions").status_code == 403


def test_monitors_split_the_accounts_and_take_over_a_dead_ones(tenant_1):
    for login in range(1000, 1020):
        register_account(tenant_1, login=login)
    first, second = Monitor(monitor_id="m-a"), Monitor(monitor_id="m-b")
    first.heartbeat(0, 0)
    live = second.heartbeat(0, 0)
    assert live == ["m-a", "m-b"]
    mine_a = {a.pk for a in first.my_accounts(live)}
    mine_b = {a.pk for a in second.my_accounts(live)}
    assert mine_a and mine_b
    assert not mine_a & mine_b
    assert len(mine_a | mine_b) == TradingAccount.objects.count()
    # m-b dies: its heartbeat goes stale, and m-a watches everything.
    MonitorHeartbeat.objects.filter(monitor_id="m-b").update(heartbeat_at=timezone.now() - timedelta(minutes=1))
    live = first.heartbeat(0, 0)
    assert live == ["m-a"]
    assert len(first.my_accounts(live)) == TradingAccount.objects.count()
    assert owner_of(5, ["m-a", "m-b"]) == owner_of(5, ["m-b", "m-a"])


def test_the_monitor_loop_evaluates_and_acts(trader):
    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")
    Monitor(monitor_id="loop").run(iterations=2)
    assert ProtectiveAction.objects.count() == 1
    assert not MonitorHeartbeat.objects.exists()


def test_a_finished_command_asks_for_an_evaluation_and_the_monitor_answers_it(
    trader, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        open_buy(trader, 1.0)
    risk = AccountRisk.objects.get()
    assert risk.evaluate_requested_at is not None
    sim_set_price("EURUSD", "1.06000")
    monitor = Monitor(monitor_id="solo")
    live = monitor.heartbeat(0, 0)
    assert monitor.requested(live) == 1
    assert ProtectiveAction.objects.count() == 1
    assert AccountRisk.objects.get().evaluate_requested_at is None
    assert monitor.requested(live) == 0


def test_a_request_already_pending_is_kept_and_the_next_after_the_monitors_answer_is_made(
    trader, django_capture_on_commit_callbacks
):
    from risk.receivers import request_evaluation

    with django_capture_on_commit_callbacks(execute=True):
        open_buy(trader, 1.0)
    risk = AccountRisk.objects.get()
    first = risk.evaluate_requested_at
    assert first is not None
    request_evaluation(risk.account_id)  # the monitor has not answered yet: one request stands
    assert AccountRisk.objects.get().evaluate_requested_at == first
    monitor = Monitor(monitor_id="solo")
    assert monitor.requested(monitor.heartbeat(0, 0)) == 1
    request_evaluation(risk.account_id)  # a command finishing after the answer asks again
    assert AccountRisk.objects.get().evaluate_requested_at > first


def test_the_bulk_read_gives_the_same_snapshots_as_one_by_one(trader, tenant_1):
    sim_account_create(login=777, balance=5000, server="Other")
    open_buy(trader, 0.5)
    keys = [(LOGIN, SERVER), (777, "Other"), (999, "Nowhere")]
    bulk = get_gateway().account_snapshots(keys)
    for key in keys[:2]:
        one = get_gateway().account_snapshot(*key)
        assert bulk[key].equity == one.equity
        assert bulk[key].balance == one.balance
        assert [(p.ticket, p.profit, p.commission) for p in bulk[key].positions] == [
            (p.ticket, p.profit, p.commission) for p in one.positions
        ]
    assert isinstance(bulk[(999, "Nowhere")], Exception)


def test_a_monitor_cycle_acts_on_a_breach_and_leaves_quiet_accounts_alone(trader, tenant_1):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from risk.engine import risk_evaluate_many

    for login in range(2000, 2010):
        sim_account_create(login=login, balance=100000, server=SERVER)
        register_account(tenant_1, login=login)
    open_buy(trader, 1.0)
    accounts = list(TradingAccount.objects.select_related("current_policy", "tenant"))
    risk_evaluate_many(accounts=accounts, gateway=get_gateway())  # first look: figures written
    sim_set_price("EURUSD", "1.06000")
    outcome = risk_evaluate_many(accounts=accounts, gateway=get_gateway())
    assert outcome.actions == 1
    with CaptureQueriesContext(connection) as queries:
        quiet = risk_evaluate_many(accounts=[a for a in accounts if a.login != LOGIN], gateway=get_gateway())
    assert quiet.evaluated
    # The bridge's own queries (the simulated terminals' are MT5's cost, in their own statements):
    # which terminal serves each account, the figures' versions, the open goals; nothing changed,
    # so nothing is written but a staggered refresh of the figures if one falls due (two writes).
    assert len(bridge_queries(queries)) <= 6


def test_health_is_degraded_while_an_accounts_snapshot_is_stale_and_ok_once_fresh(trader, client):
    evaluate()
    mt5 = client.get("/api/v1/health").json()["checks"]["mt5"]
    assert mt5["accounts_with_stale_snapshot"] == 0
    assert mt5["status"] == "ok"
    AccountRisk.objects.update(snapshot_at=timezone.now() - timedelta(seconds=30))
    mt5 = client.get("/api/v1/health").json()["checks"]["mt5"]
    assert mt5["accounts_with_stale_snapshot"] == 1
    assert mt5["status"] == "degraded"


def test_a_new_day_without_a_snapshot_uses_the_observed_balance_until_laravels_arrives(alice, account_1):
    sim_account_create(login=LOGIN, balance=100000, server=SERVER)
    yesterday = (timezone.now() - timedelta(days=1)).date().isoformat()
    send_policy(alice, policy_version=13, daily_starting_balance_date=yesterday)
    evaluate()
    risk = AccountRisk.objects.get()
    assert risk.daily_reference_source == "bridge"
    assert risk.daily_reference == Decimal("100000")  # the balance observed at the new day
    assert risk.daily_reference_date == timezone.now().date()
    send_policy(
        alice,
        policy_version=14,
        daily_starting_balance=99000,
        daily_starting_balance_date=timezone.now().date().isoformat(),
    )
    risk = AccountRisk.objects.get()
    assert risk.daily_reference_source == "laravel"
    assert risk.daily_reference == Decimal("99000")
    body = alice.get(f"mt5/accounts/{LOGIN}").json()
    assert Decimal(body["risk"]["daily_floor"]) == Decimal("94050")  # 99,000 − 5 % × 99,000


# --- the monitor's cycle: cached accounts, the quiet path, the cadence ---------------------


def watching(monitor: Monitor) -> list:
    return monitor.my_accounts(monitor.heartbeat(0, 0))


def test_a_new_policy_is_watched_on_the_next_cycle_without_a_restart(trader):
    monitor = Monitor(monitor_id="solo")
    (watched,) = watching(monitor)
    assert watched.policy.policy_version == 13
    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.07000")  # about -1,500: inside the 2 % (2,000) single-trade limit
    monitor.cycle(monitor.heartbeat(0, 0))
    assert not ProtectiveAction.objects.exists()
    send_policy(trader, policy_version=14, max_single_trade_loss_pct=1)  # 1,000: now a breach
    monitor.cycle(monitor.heartbeat(0, 0))
    (watched,) = watching(monitor)
    assert watched.policy.policy_version == 14
    action = ProtectiveAction.objects.get()
    assert (action.rule_key, action.policy_version, action.threshold_used) == ("single_trade_loss", 14, Decimal(1))


def test_a_process_remembers_one_parsed_policy_an_account_never_its_history(trader, monkeypatch):
    from policies.models import PolicySnapshot
    from risk import engine
    from risk.rules import Policy

    for version in (14, 15, 16):
        send_policy(trader, policy_version=version)
    parsed: list[int] = []  # the version of each payload parsed from here on
    parse = Policy.from_payload

    def counted(payload):
        parsed.append(payload["policy_version"])
        return parse(payload)

    monkeypatch.setattr(Policy, "from_payload", counted)
    snapshots = {s.policy_version: s for s in PolicySnapshot.objects.filter(account=account())}
    assert engine.watched_accounts()[0].policy.policy_version == 16
    assert engine.policy_of(snapshots[16]).policy_version == 16
    assert parsed == []  # the latest is remembered
    for version in (13, 14, 15, 13):
        assert engine.policy_of(snapshots[version]).policy_version == version
    assert parsed == [13, 14, 15, 13]  # the history is parsed when asked, never remembered
    assert engine.policy_of(snapshots[16]).policy_version == 16
    assert parsed == [13, 14, 15, 13]  # and never displaces the latest


def test_a_newly_registered_account_is_watched_on_the_next_cycle_and_a_removed_one_no_longer(trader, tenant_1):
    monitor = Monitor(monitor_id="solo")
    assert [a.login for a in watching(monitor)] == [LOGIN]
    sim_account_create(login=4242, balance=100000, server=SERVER)
    register_account(tenant_1, login=4242, server=SERVER)
    assert [a.login for a in watching(monitor)] == [LOGIN, 4242]
    TradingAccount.objects.filter(login=LOGIN).delete()
    assert [a.login for a in watching(monitor)] == [4242]


def test_the_account_list_is_not_read_again_while_policies_are_unchanged(trader):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    monitor = Monitor(monitor_id="solo")
    live = monitor.heartbeat(0, 0)
    monitor.cycle(live)
    with CaptureQueriesContext(connection) as queries:
        monitor.cycle(live)
    sql = [q["sql"] for q in queries.captured_queries]
    on_accounts = [s for s in sql if 'FROM "policies_tradingaccount"' in s]
    assert len(on_accounts) == 1 and "COUNT(" in on_accounts[0]  # the fingerprint, nothing else
    assert not [s for s in sql if "policies_policysnapshot" in s]


def test_a_quiet_cycle_costs_as_many_queries_for_twenty_accounts_as_for_one(trader, tenant_1, monkeypatch, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from risk import engine

    # Refreshes are staggered by account over time: with the periods at an hour, none falls due
    # between the cycles below however slowly they run (else a due refresh adds its two writes).
    monkeypatch.setattr(engine, "SAMPLE_EVERY", timedelta(hours=1))
    settings.RISK_MAX_SNAPSHOT_AGE_MS = 2 * 3600 * 1000

    def quiet_cycle_queries() -> int:
        monitor = Monitor(monitor_id="solo")
        live = monitor.heartbeat(0, 0)
        monitor.cycle(live)
        AccountRisk.objects.update(evaluated_at=timezone.now())  # figures fresh: none due
        monitor.cycle(live)  # reads the rows the update above changed
        with CaptureQueriesContext(connection) as queries:
            monitor.cycle(live)
        return len(bridge_queries(queries))

    one = quiet_cycle_queries()
    for login in range(3000, 3019):
        sim_account_create(login=login, balance=100000, server=SERVER)
        register_account(tenant_1, login=login, server=SERVER)
    # The bridge's own: the open protective goals of these accounts and the figures' versions.
    assert quiet_cycle_queries() == one <= 7


def test_a_breach_already_recorded_is_seen_again_without_a_transaction(trader, django_capture_on_commit_callbacks):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    send_policy(trader, policy_version=14, enforcement_flags={"close_all_on_daily_dd": False})
    open_buy(trader, 2.0)
    sim_set_price("EURUSD", "1.05300")  # below the daily floor, and nothing closes the position
    monitor = Monitor(monitor_id="solo")
    live = monitor.heartbeat(0, 0)
    with django_capture_on_commit_callbacks(execute=True):  # the actions commit
        monitor.cycle(live)
    assert ProtectiveAction.objects.filter(rule_key="daily_drawdown").count() == 1
    monitor.cycle(live)  # reads the risk row the breach changed
    with CaptureQueriesContext(connection) as queries:
        assert monitor.cycle(live)[1] >= 1  # the breach is still seen
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    assert "SAVEPOINT" not in sql and "FOR UPDATE" not in sql
    # The protective actions are only read (which goals are open, since when trading is off).
    assert not any(
        q["sql"].startswith(("INSERT", "UPDATE")) and "policies_protectiveaction" in q["sql"]
        for q in queries.captured_queries
    )
    assert ProtectiveAction.objects.filter(rule_key="daily_drawdown").count() == 1


def test_a_breach_is_acted_on_before_the_other_accounts_are_judged(trader, tenant_1):
    from risk import engine

    for login in range(5000, 5005):
        sim_account_create(login=login, balance=100000, server=SERVER)
        register_account(tenant_1, login=login, server=SERVER)
    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")
    accounts = engine.watched_accounts()
    seen: list[tuple[int, int]] = []

    def reading():
        for key, snapshot in engine.read_accounts(get_gateway(), [(a.login, a.server) for a in accounts]):
            seen.append((key[0], ProtectiveAction.objects.count()))
            yield key, snapshot

    engine.risk_evaluate_snapshots(accounts=accounts, snapshots=reading())
    # The breached account is the first one read: its action exists before the next is converted.
    assert seen[0] == (LOGIN, 0)
    assert seen[1][1] == 1


def test_each_account_of_a_read_is_dated_when_its_terminal_answered(trader, tenant_1):
    from datetime import UTC, datetime

    for login in range(6000, 6003):
        sim_account_create(login=login, balance=100000, server=SERVER)
    keys = [(LOGIN, SERVER), *((login, SERVER) for login in range(6000, 6003))]
    before = datetime.now(UTC)
    stamps = []
    for _, snapshot in get_gateway().account_snapshots_stream(keys):
        stamps.append((snapshot.observed_at, datetime.now(UTC)))
    assert before <= stamps[0][0]
    assert all(observed <= handed for observed, handed in stamps)
    assert [observed for observed, _ in stamps] == sorted(observed for observed, _ in stamps)


def test_quiet_accounts_figures_are_refreshed_a_few_at_a_time_and_never_left_stale(trader, tenant_1, settings):
    from dataclasses import replace

    from django.db import transaction

    from risk.engine import figures_every, risk_evaluate_snapshots, watched_accounts

    settings.RISK_MAX_SNAPSHOT_AGE_MS = 5000
    every = figures_every()
    assert every <= timedelta(milliseconds=2500)  # health calls a snapshot older than 5 s stale
    for login in range(7001, 7100):
        register_account(tenant_1, login=login, server=SERVER)
    watched = watched_accounts()
    assert len(watched) == 100
    quiet = get_gateway().account_snapshot(LOGIN, SERVER)  # every account as quiet as this one

    # Each write in a transaction of its own, as the monitor's are (here a savepoint: a row's version
    # is the transaction that wrote it last).
    def cycle(now) -> set[int]:
        """A monitor cycle at `now` on snapshots read then; the accounts whose figures it refreshed."""
        snapshots = {(w.login, w.server): replace(quiet, login=w.login, observed_at=now) for w in watched}
        with transaction.atomic():
            risk_evaluate_snapshots(accounts=watched, snapshots=snapshots, now=now)
        return set(AccountRisk.objects.filter(evaluated_at=now).values_list("account_id", flat=True))

    def refreshed_at(at) -> None:
        with transaction.atomic():
            AccountRisk.objects.update(evaluated_at=at)

    last = timezone.now()
    assert len(cycle(last)) == 100  # never refreshed yet: each at once
    due = cycle(last + timedelta(milliseconds=500))  # one cycle later
    assert 0.1 * 100 < len(due) < 0.3 * 100  # about a fifth of the accounts in each half-second cycle
    refreshed_at(last)
    assert len(cycle(last + every)) == 100
    # Each account once per period, however often it is looked at.
    refreshed_at(last)
    refreshes = dict.fromkeys((w.pk for w in watched), 0)
    for i in range(1, 51):
        for pk in cycle(last + timedelta(milliseconds=100 * i)):
            refreshes[pk] += 1
    assert set(refreshes.values()) <= {2, 3}  # five seconds of 100 ms looks at a 2.5 s period


def test_figures_are_not_written_over_a_risk_row_written_since_it_was_read(trader):
    from django.db import transaction

    from risk.engine import read_accounts, risk_evaluate_snapshots, watched_accounts

    watched = watched_accounts()
    keys = [(LOGIN, SERVER)]
    row = AccountRisk.objects.filter(account__login=LOGIN)

    def written_while_the_cycle_reads():
        for key, snapshot in read_accounts(get_gateway(), keys):
            # Another writer (a policy, a breach), in a transaction of its own, updates the row
            # after the cycle read it and before the cycle writes its figures.
            with transaction.atomic():
                row.update(equity=Decimal("123"), updated_at=timezone.now())
            yield key, snapshot

    risk_evaluate_snapshots(accounts=watched, snapshots=written_while_the_cycle_reads())
    assert row.get().equity == Decimal("123")
    risk_evaluate_snapshots(accounts=watched, snapshots=read_accounts(get_gateway(), keys))  # reads it afresh
    assert row.get().equity == Decimal(100000)


@pytest.fixture
def clock(monkeypatch) -> VirtualClock:
    """The monitor's clock and sleeps, virtual: when each read begins is exact."""
    clock = VirtualClock()
    monkeypatch.setattr(importlib.import_module(Monitor.__module__), "time", clock)
    return clock


class TimedReads:
    """The simulator's terminal, where each bulk read takes the next of `durations` in virtual
    seconds (None: the read fails), and says when it began and ended."""

    def __init__(self, clock: VirtualClock, durations: list[float | None]) -> None:
        self.clock, self.durations = clock, durations
        self.reads: list[tuple[float, float]] = []

    def account_snapshots(self, keys):
        began, took = self.clock.now, self.durations.pop(0)
        self.clock.advance(took or 0.0)
        self.reads.append((began, self.clock.now))
        if took is None:
            raise GatewayUnavailable("terminal down")
        return get_gateway().account_snapshots(keys)


def test_cycles_start_on_a_cadence_that_leaves_room_for_the_read_and_an_overrun_is_followed_at_once(
    trader, clock, monkeypatch
):
    terminal = TimedReads(clock, [None, 0.04, 0.04, 0.6, 0.04, 0.04])
    monitor = Monitor(monitor_id="solo", interval=0.5, gateway_factory=lambda: terminal)
    watched = monitor.watched

    def watched_in_10_ms():  # each read begins 10 ms after its cycle was due
        clock.advance(0.01)
        return watched()

    monkeypatch.setattr(monitor, "watched", watched_in_10_ms)
    monitor.run(iterations=6)
    began, ended = [b for b, _ in terminal.reads], [e for _, e in terminal.reads]
    # Nothing read yet (the read failed): one interval, start to start.
    assert began[1] - began[0] == pytest.approx(0.5)
    # Reads begin 10 ms late and take 40 ms: the next read ends one interval after this one began,
    # so a price move just after a read began is seen within one interval.
    assert ended[2] - began[1] == pytest.approx(0.5)
    assert began[3] - began[2] == pytest.approx(began[2] - began[1])  # and so on, while reads take as long
    # A cycle that overran (a 600 ms read) is followed at once by the next (its account list, then its read).
    assert ended[3] - began[3] == pytest.approx(0.6)
    assert began[4] - ended[3] == pytest.approx(0.01)
    # However slow the recent reads, never closer than half an interval.
    assert began[5] - began[4] == pytest.approx(0.25)


def test_answering_a_finished_command_never_delays_the_next_cycle(monkeypatch, clock):
    monitor = Monitor(monitor_id="solo", interval=0.5)
    answered: list[tuple[float, float]] = []

    def requested(monitors) -> int:  # a finished command to answer every time; answering takes 50 ms
        began = clock.now
        clock.advance(0.05)
        answered.append((began, clock.now))
        return 1

    monkeypatch.setattr(monitor, "requested", requested)
    deadline = clock.now + 0.13
    monitor.wait_until(deadline)
    # Two answers (from 0 and 50 ms); a third, begun at 100 ms, would have ended 20 ms past the deadline.
    assert len(answered) == 2
    assert all(ended <= deadline for _, ended in answered)
    assert clock.now == pytest.approx(deadline)  # the cycle starts when it is due: not before, not after


def bridge_queries(captured: Any) -> list[dict[str, Any]]:
    """The statements of the bridge itself, without the simulated terminals' (MT5's own cost)."""
    return [q for q in captured.captured_queries if "execution_sim" not in q["sql"]]
