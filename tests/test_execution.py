"""Every command type executed through the official adapter on the simulator, and the runner's rules."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from commands.models import Command, CommandEvent
from commands.states import State
from execution.gateway import order_tag
from execution.gateways import get_gateway, reset_gateway
from execution.runner import command_execute, sweep_stuck
from execution.simulator.service import sim_account_create, sim_inject_fault, sim_set_price
from tests.conftest import fresh
from tests.virtual_clock import VirtualClock

pytestmark = pytest.mark.django_db

LOGIN = 50040367
SERVER = "Broker-Server"


@pytest.fixture(autouse=True)
def _terminal():
    reset_gateway()
    yield
    reset_gateway()


@pytest.fixture
def trader(alice, account_1):
    sim_account_create(login=LOGIN, balance=100000, server=SERVER)
    sim_set_price("EURUSD", "1.08500")
    return alice


def submit(api, command_type: str, command_id: str | None = None, **payload) -> Command:
    body = fresh("close_positions")
    body["payload"] = {
        "command_id": command_id or f"{command_type}-{timezone.now().timestamp()}",
        "command_type": command_type,
        "priority": payload.pop("priority", "normal"),
        **payload,
    }
    response = api.post("mt5/commands", body)
    assert response.status_code == 202, response.content
    return Command.objects.get(command_id=body["payload"]["command_id"])


def run(command: Command) -> Command:
    command_execute(command.pk)
    command.refresh_from_db()
    return command


def open_buy(api, volume: float = 1.0, symbol: str = "EURUSD") -> int:
    command = run(submit(api, "open_position", symbol=symbol, direction="buy", volume=volume))
    assert command.state == State.SUCCEEDED, command.error_message
    return get_gateway().account_snapshot(LOGIN, SERVER).positions[-1].ticket


def positions() -> list:
    return list(get_gateway().account_snapshot(LOGIN, SERVER).positions)


def test_open_position_succeeds_with_the_mt5_result_and_one_attempt(trader):
    command = run(
        submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1, stop_loss=1.08, take_profit=1.09)
    )
    assert command.state == State.SUCCEEDED
    assert command.attempts == 1
    assert command.result["retcode"] == 10009
    assert command.finished_at is not None
    (position,) = positions()
    assert position.volume == Decimal("0.1")
    assert position.comment == order_tag(command.command_id)
    attempt = command.events.get(kind=CommandEvent.Kind.ATTEMPT)
    assert attempt.request["symbol"] == "EURUSD"
    assert [e.to_state for e in command.events.filter(kind="transition")] == [
        "received",
        "queued",
        "executing",
        "succeeded",
    ]


def test_the_panels_powershell_open_position_executes(trader):
    from commands import examples

    response = trader.post("mt5/commands", examples.LEGACY_OPEN_POSITION)
    command = run(Command.objects.get(command_id=response.json()["command_id"]))
    assert command.state == State.SUCCEEDED, command.error_message


def test_an_unknown_symbol_is_rejected_without_touching_mt5(trader):
    command = run(submit(trader, "open_position", symbol="DOGEUSD", direction="buy", volume=0.1))
    assert command.state == State.REJECTED
    assert command.error_code == "unknown_symbol"
    assert command.attempts == 0


def test_open_position_is_rejected_while_trading_is_disabled_and_accepted_after_enable(trader):
    assert run(submit(trader, "disable_trading")).state == State.SUCCEEDED
    command = run(submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1))
    assert command.state == State.REJECTED
    assert command.error_code == "trading_disabled"
    assert run(submit(trader, "enable_trading")).state == State.SUCCEEDED
    assert run(submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1)).state == State.SUCCEEDED


def test_open_position_is_rejected_when_the_account_is_not_active(trader, account_1):
    body = fresh("policy_snapshot")
    body["payload"].update(policy_version=13, account_status="suspended")
    assert trader.post("mt5/policies", body).status_code == 200
    command = run(submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1))
    assert command.state == State.REJECTED
    assert command.error_code == "account_not_active"


def test_close_position_closes_fully_and_partially(trader):
    ticket = open_buy(trader, 1.0)
    assert run(submit(trader, "close_position", ticket=ticket, volume=0.4)).state == State.SUCCEEDED
    assert positions()[0].volume == Decimal("0.6")
    assert run(submit(trader, "close_position", ticket=ticket)).state == State.SUCCEEDED
    assert positions() == []


def test_closing_an_unknown_ticket_is_rejected(trader):
    command = run(submit(trader, "close_position", ticket=999999))
    assert command.state == State.REJECTED
    assert command.error_code == "position_not_found"


@pytest.mark.parametrize(
    ("target", "closed"),
    [
        ({"mode": "all_positions"}, {"eur_up", "eur_down", "gbp_up"}),
        ({"mode": "by_symbol", "symbols": ["GBPUSD"]}, {"gbp_up"}),
        ({"mode": "losing"}, {"eur_down"}),
        ({"mode": "profitable"}, {"eur_up", "gbp_up"}),
    ],
)
def test_close_positions_honours_every_target_mode(trader, target, closed):
    sim_set_price("GBPUSD", "1.27000")
    tickets = {"eur_up": open_buy(trader, 0.1), "gbp_up": open_buy(trader, 0.1, "GBPUSD")}
    sim_set_price("EURUSD", "1.09500")
    tickets["eur_down"] = open_buy(trader, 0.1)
    sim_set_price("EURUSD", "1.09000")  # bought at 1.085 is up 50 pips; bought at 1.095 is down 50
    sim_set_price("GBPUSD", "1.28000")
    command = run(submit(trader, "close_positions", target=target))
    assert command.state == State.SUCCEEDED, command.error_message
    remaining = {p.ticket for p in positions()}
    assert remaining == {ticket for name, ticket in tickets.items() if name not in closed}


def test_close_positions_by_tickets_and_close_only_profitable(trader):
    first = open_buy(trader, 0.1)
    sim_set_price("EURUSD", "1.09000")
    second = open_buy(trader, 0.1)
    sim_set_price("EURUSD", "1.08800")  # first up 30 pips, second down 20
    command = run(
        submit(
            trader,
            "close_positions",
            target={"mode": "by_tickets", "tickets": [first, second]},
            execution={"close_only_profitable": True},
        )
    )
    assert command.state == State.SUCCEEDED
    assert {p.ticket for p in positions()} == {second}
    assert command.result["closed"] == 1


@pytest.mark.parametrize("path", ["one statement (PostgreSQL)", "a transaction (SQLite)"])
def test_a_requote_is_retried_and_every_attempt_is_recorded(trader, monkeypatch, path):
    from django.db import connection

    from execution import runner

    seen_while_waiting = []
    monkeypatch.setattr(
        runner.time,
        "sleep",
        lambda seconds: seen_while_waiting.append(CommandEvent.objects.filter(kind="attempt").count()),
    )
    if path.startswith("a transaction"):
        monkeypatch.setattr(connection, "vendor", "sqlite")
    sim_inject_fault("requote", symbol="EURUSD", count=2)
    command = run(submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1))
    assert command.state == State.SUCCEEDED
    assert command.attempts == 3
    attempts = list(command.events.filter(kind="attempt").values_list("attempt", "note"))
    assert [number for number, _ in attempts] == [1, 2, 3]
    assert attempts[0][1].startswith("TRADE_RETCODE_REQUOTE")
    assert attempts[-1][1].startswith("TRADE_RETCODE_DONE")
    # Each failed attempt is on the timeline before the pause that follows it.
    assert seen_while_waiting == [1, 2]


def test_market_closed_until_the_deadline_fails_with_the_retcode(trader):
    sim_inject_fault("market_closed", symbol="EURUSD", count=50)
    command = submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1)
    Command.objects.filter(pk=command.pk).update(expires_at=timezone.now() + timedelta(seconds=2))
    command = run(command)
    assert command.state == State.FAILED
    assert command.error_code == "trade_retcode_market_closed"
    assert command.attempts >= 2
    assert positions() == []


def test_a_final_retcode_is_not_retried(trader):
    command = run(submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=900))
    assert command.state == State.FAILED
    assert command.attempts == 1


def test_a_timeout_after_fill_is_reconciled_into_one_position(trader):
    sim_inject_fault("timeout_after_fill", symbol="EURUSD", count=1)
    command = run(submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1))
    assert command.state == State.SUCCEEDED
    assert command.result.get("reconciled") is True
    assert len(positions()) == 1


def test_a_close_with_timeout_after_fill_closes_exactly_once(trader):
    ticket = open_buy(trader, 1.0)
    sim_inject_fault("timeout_after_fill", symbol="EURUSD", count=1)
    command = run(submit(trader, "close_positions", target={"mode": "all_positions"}))
    assert command.state == State.SUCCEEDED
    assert positions() == []
    out_deals = [
        d
        for d in get_gateway().deals_by_tag(
            LOGIN, SERVER, tag=order_tag(command.command_id), since=command.received_at - timedelta(minutes=1)
        )
        if d.entry == "out"
    ]
    assert len(out_deals) == 1
    assert out_deals[0].position_id == ticket


def test_modify_position_sets_stops(trader):
    ticket = open_buy(trader, 0.1)
    command = run(submit(trader, "modify_position", ticket=ticket, stop_loss=1.07, take_profit=1.1))
    assert command.state == State.SUCCEEDED, command.error_message
    assert positions()[0].sl == Decimal("1.07")


def test_cancel_orders_cancels_every_pending_order(trader):
    gateway = get_gateway()
    for price in ("1.07000", "1.06000"):
        result = gateway.place_pending_order(
            LOGIN,
            SERVER,
            symbol="EURUSD",
            side="buy",
            kind="limit",
            volume=Decimal("0.1"),
            price=Decimal(price),
            tag="manual",
        )
        assert result.ok, result
    assert len(gateway.account_snapshot(LOGIN, SERVER).orders) == 2
    command = run(submit(trader, "cancel_orders"))
    assert command.state == State.SUCCEEDED
    assert command.result["cancelled"] == 2
    assert gateway.account_snapshot(LOGIN, SERVER).orders == ()


def test_sync_account_remembers_the_snapshot(trader, account_1):
    command = run(submit(trader, "sync_account"))
    assert command.state == State.SUCCEEDED
    account_1.refresh_from_db()
    assert account_1.last_snapshot["balance"] == "100000.00"


@pytest.mark.parametrize("path", ["one statement (PostgreSQL)", "a transaction (SQLite)"])
def test_a_task_delivered_twice_executes_once(trader, monkeypatch, path):
    from django.db import connection

    if path.startswith("a transaction"):
        monkeypatch.setattr(connection, "vendor", "sqlite")
    command = submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1)
    assert command_execute(command.pk) == State.SUCCEEDED
    assert command_execute(command.pk) is None
    assert len(positions()) == 1
    transitions = command.events.filter(kind="transition").values_list("from_state", "to_state")
    assert ("queued", "executing") in transitions
    assert [to for _, to in transitions].count("executing") == 1


@pytest.mark.parametrize("path", ["one statement (PostgreSQL)", "a transaction (SQLite)"])
def test_a_worker_that_died_between_sending_and_recording_is_reconciled_not_sent_twice(trader, monkeypatch, path):
    from django.db import connection

    from execution.runner import command_claim

    if path.startswith("a transaction"):
        monkeypatch.setattr(connection, "vendor", "sqlite")
    command = submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1)
    claimed = command_claim(command.pk)
    assert claimed is not None and not claimed.claimed_before
    # The order reached MT5, then the worker died before recording any attempt.
    tag = order_tag(command.command_id)
    get_gateway().open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=0.1, tag=tag)
    Command.objects.filter(pk=command.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    assert Command.objects.get(pk=command.pk).attempts == 0
    assert sweep_stuck() == 1
    command = run(command)
    assert command.state == State.SUCCEEDED
    assert command.result["reconciled"] is True
    assert len(positions()) == 1


def test_a_normal_command_older_than_the_ttl_expires(trader, settings):
    command = submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1)
    Command.objects.filter(pk=command.pk).update(
        received_at=timezone.now() - timedelta(seconds=settings.COMMAND_NORMAL_TTL_SECONDS + 1)
    )
    assert run(command).state == State.EXPIRED
    assert positions() == []


def test_a_command_past_expires_at_expires(trader):
    command = submit(
        trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1, expires_at_utc="2020-01-01T00:00:00Z"
    )
    assert run(command).state == State.EXPIRED


def test_the_sweeper_requeues_a_command_whose_worker_died_and_the_retry_reconciles(trader):
    ticket = open_buy(trader, 1.0)
    command = submit(trader, "close_position", ticket=ticket)
    # A worker claimed it, sent the close (filled), then died before recording anything.
    from execution.runner import command_claim

    claimed = command_claim(command.pk)
    get_gateway().close_position(LOGIN, SERVER, ticket=ticket, tag=order_tag(command.command_id))
    Command.objects.filter(pk=claimed.pk).update(updated_at=timezone.now() - timedelta(minutes=10), attempts=1)
    OrmQ.objects.all().delete()
    assert sweep_stuck() == 1
    assert OrmQ.objects.count() == 1
    command = run(command)
    assert command.state == State.SUCCEEDED
    assert command.result["reconciled"] is True
    assert command.attempts == 1  # nothing sent again


def test_the_account_endpoint_returns_the_live_snapshot(trader):
    open_buy(trader, 0.1)
    body = trader.get(f"mt5/accounts/{LOGIN}").json()
    assert body["policy_version"] == 12
    assert Decimal("99990") < Decimal(body["snapshot"]["balance"]) <= Decimal("100000")  # less the entry commission
    assert len(body["snapshot"]["positions"]) == 1
    assert {"equity", "margin", "free_margin", "pending_orders"} <= set(body["snapshot"])


def test_the_account_endpoint_is_503_with_the_last_known_snapshot_when_mt5_is_down(trader):
    from execution.adapters.unavailable import UnavailableGateway

    trader.get(f"mt5/accounts/{LOGIN}")
    reset_gateway(UnavailableGateway("simulator", "terminal switched off"))
    response = trader.get(f"mt5/accounts/{LOGIN}")
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "mt5_unavailable"
    assert body["last_known_snapshot"]["balance"] == "100000.00"
    assert body["last_known_snapshot_age_s"] >= 0


def test_another_tenant_cannot_read_the_account(trader, bob):
    assert bob.get(f"mt5/accounts/{LOGIN}").status_code == 403


def test_the_manager_backend_fails_commands_clearly_and_health_says_so(trader):
    from execution.gateways import build_gateway

    reset_gateway(build_gateway("manager"))
    command = run(
        submit(
            trader,
            "open_position",
            symbol="EURUSD",
            direction="buy",
            volume=0.1,
            expires_at_utc=(timezone.now() + timedelta(seconds=0.3)).isoformat(),
        )
    )
    assert command.state == State.FAILED
    assert command.error_code == "mt5_unavailable"
    assert "Manager API" in command.error_message
    response = trader.client.get("/api/v1/health")
    health = response.json()
    assert health["checks"]["mt5"]["available"] is False
    assert health["checks"]["mt5"]["status"] == "down"
    assert (response.status_code, health["status"]) == (503, "down")  # no protective close can run


def test_a_lost_answer_at_the_deadline_is_reconciled_before_saying_failed(trader, settings):
    settings.COMMAND_RETRY_BACKOFF_SECONDS = [3600.0]  # past the deadline: no second send
    ticket = open_buy(trader, 1.0)
    sim_inject_fault("timeout_after_fill", symbol="EURUSD", count=1)
    command = run(submit(trader, "close_position", ticket=ticket))
    assert command.state == State.SUCCEEDED
    assert command.result["reconciled"] is True
    assert command.attempts == 1
    assert positions() == []


def test_health_is_degraded_while_the_terminal_drops_connections_and_ok_after_a_success(trader, client):
    from django.core.cache import cache

    from execution import outages

    cache.delete(outages.KEY)
    sim_inject_fault("no_connection", symbol="EURUSD", count=1)
    command = submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1)
    Command.objects.filter(pk=command.pk).update(expires_at=timezone.now() + timedelta(milliseconds=30))
    assert run(command).state == State.FAILED
    mt5 = client.get("/api/v1/health").json()["checks"]["mt5"]
    assert mt5["status"] == "degraded"
    assert mt5["recent_connection_failure"]["seconds_ago"] >= 0
    assert run(submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1)).state == State.SUCCEEDED
    mt5 = client.get("/api/v1/health").json()["checks"]["mt5"]
    assert mt5["recent_connection_failure"] is None


def _waiting_doorbells(queue: str) -> int:
    return OrmQ.objects.filter(key=queue, lock__lt=timezone.now()).count()


@pytest.mark.parametrize("path", ["one statement (PostgreSQL)", "a transaction (SQLite)"])
def test_one_normal_doorbell_drains_the_lane_oldest_first_and_takes_the_spare_doorbells(
    trader, monkeypatch, settings, path
):
    from django.db import connection

    from execution.tasks import run_lane

    settings.NORMAL_LANE_DRAIN_SECONDS = 2
    commands = [submit(trader, "sync_account", f"sync-{i}") for i in range(5)]
    assert _waiting_doorbells("normal") == 5
    if path.startswith("a transaction"):
        monkeypatch.setattr(connection, "vendor", "sqlite")
    assert run_lane("normal") == 5
    finished = Command.objects.filter(pk__in=[c.pk for c in commands]).order_by("started_at")
    assert [c.command_id for c in finished] == [f"sync-{i}" for i in range(5)]
    assert {c.state for c in finished} == {State.SUCCEEDED}
    # The doorbell being answered stays for django-q2 to acknowledge; the other four went with their commands.
    assert _waiting_doorbells("normal") == 1
    assert run_lane("normal") == 0


def test_by_default_a_normal_doorbell_drains_the_lane_and_takes_the_spare_doorbells(trader):
    from execution.tasks import run_lane

    for i in range(3):
        submit(trader, "sync_account", f"sync-{i}")
    assert run_lane("normal") == 3
    assert Command.objects.filter(state=State.QUEUED).count() == 0
    assert _waiting_doorbells("normal") == 1  # the answered one, for django-q2 to acknowledge


def test_a_drain_stops_claiming_once_its_time_is_up(trader, settings):
    from execution.runner import lane_run

    settings.NORMAL_LANE_DRAIN_SECONDS = 0
    for i in range(3):
        submit(trader, "sync_account", f"sync-{i}")
    assert lane_run("normal") == 1
    assert Command.objects.filter(state=State.QUEUED).count() == 2
    assert _waiting_doorbells("normal") == 3  # nothing taken but the answered doorbell's own command


def test_a_fast_doorbell_runs_the_fast_lane_oldest_first_and_leaves_the_normal_lane_alone(trader):
    from execution.runner import lane_run

    first = submit(trader, "sync_account", "fast-1", priority="critical")
    second = submit(trader, "sync_account", "fast-2", priority="critical")
    submit(trader, "sync_account", "normal-1")
    assert lane_run("fast") == 2
    finished = Command.objects.filter(pk__in=[first.pk, second.pk]).order_by("started_at")
    assert [(c.command_id, c.state) for c in finished] == [("fast-1", State.SUCCEEDED), ("fast-2", State.SUCCEEDED)]
    assert set(Command.objects.filter(state=State.QUEUED).values_list("command_id", flat=True)) == {"normal-1"}


def test_a_fast_command_whose_doorbell_was_lost_runs_with_the_next_doorbell(trader):
    from execution.tasks import run_lane

    stranded = submit(trader, "sync_account", "fast-stranded", priority="critical")
    OrmQ.objects.all().delete()  # a crash took its doorbell (and, with Redis, any doorbell may go)
    later = submit(trader, "sync_account", "fast-later", priority="critical")
    assert run_lane("fast") == 2
    assert {c.state for c in Command.objects.filter(pk__in=[stranded.pk, later.pk])} == {State.SUCCEEDED}


def test_with_fast_draining_off_a_fast_doorbell_runs_one_command(trader, settings):
    from execution.runner import lane_run

    settings.FAST_LANE_DRAIN_SECONDS = 0
    submit(trader, "sync_account", "fast-1", priority="critical")
    submit(trader, "sync_account", "fast-2", priority="critical")
    assert lane_run("fast") == 1
    assert list(Command.objects.filter(state=State.QUEUED).values_list("command_id", flat=True)) == ["fast-2"]


def test_a_doorbell_rung_for_one_command_before_the_upgrade_still_runs_it(trader):
    from execution.tasks import execute_command

    command = submit(trader, "sync_account")
    assert execute_command(command.pk) == State.SUCCEEDED
    assert execute_command(command.pk) is None


def test_the_claim_statement_reads_the_command_its_account_and_tenant_as_the_orm_does(trader):
    from django.forms.models import model_to_dict

    from execution.runner import command_claim

    command = submit(trader, "modify_position", ticket=7, stop_loss=1.07, expires_at_utc="2030-01-01T02:00:00+02:00")
    claimed = command_claim(lane="normal")
    assert claimed is not None and claimed.pk == command.pk
    fresh_read = Command.objects.select_related("account", "tenant").get(pk=command.pk)
    pairs = [(claimed, fresh_read), (claimed.account, fresh_read.account), (claimed.tenant, fresh_read.tenant)]
    for got, want in pairs:
        assert model_to_dict(got) == model_to_dict(want)
    assert claimed.payload == {"ticket": 7, "stop_loss": "1.07"}
    assert claimed.expires_at.utcoffset() == timedelta(0)
    claimed.validate_unique()  # loaded, not new: it is not a duplicate of its own row


@pytest.fixture
def clock(monkeypatch) -> VirtualClock:
    """The yielding module's clock and waits, virtual: the seconds it says it waited are exact."""
    from execution import yielding

    clock = VirtualClock()
    monkeypatch.setattr(yielding, "time", clock)
    monkeypatch.setattr(yielding, "select", clock)
    return clock


@pytest.mark.django_db(transaction=True)
def test_a_normal_command_waits_while_a_fast_one_is_at_work_and_no_longer_than_the_bound(trader, settings, clock):
    from execution.runner import command_claim, command_execute
    from execution.yielding import yield_to_the_fast_lane

    settings.NORMAL_LANE_YIELD_MS = 60
    assert yield_to_the_fast_lane() == 0.0  # nothing fast at work: no wait
    fast = submit(trader, "sync_account", "protect", priority="critical")
    assert yield_to_the_fast_lane() == 0.0  # queued is not yet at work
    command_claim(fast.pk)  # 'busy', from the claim statement
    assert yield_to_the_fast_lane() == pytest.approx(0.06)  # the whole bound, and no longer
    settings.NORMAL_LANE_YIELD_MS = 0
    assert yield_to_the_fast_lane() == 0.0
    settings.NORMAL_LANE_YIELD_MS = 60
    Command.objects.filter(pk=fast.pk).update(state=State.QUEUED)
    command_execute(fast.pk)  # claimed again and finished: 'idle' with the finish
    assert yield_to_the_fast_lane() == 0.0


@pytest.mark.django_db(transaction=True)
def test_a_busy_fast_command_that_never_says_idle_stops_counting(trader, settings, clock):
    from execution import yielding
    from execution.runner import command_claim

    settings.NORMAL_LANE_YIELD_MS = 40
    assert yielding.yield_to_the_fast_lane() == 0.0  # a normal worker listens from its first claim on
    fast = submit(trader, "sync_account", "protect", priority="critical")
    command_claim(fast.pk)  # its worker dies here: no 'idle' will come
    assert yielding.yield_to_the_fast_lane() == pytest.approx(0.04)
    clock.advance(yielding.AT_WORK_AT_MOST_SECONDS - 0.5)  # still within what a command can take
    assert yielding.yield_to_the_fast_lane() == pytest.approx(0.04)
    clock.advance(0.5)  # it said 'busy' longer ago than a command can take
    assert yielding.yield_to_the_fast_lane() == 0.0
