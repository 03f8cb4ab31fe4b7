"""The fast lane's lease, bounded Redis doorbells, live-worker counting and health's verdicts."""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from commands import services
from commands.models import Command, LaneHeartbeat
from commands.states import State
from execution import lease
from execution.gateways import build_gateway, reset_gateway
from execution.heartbeat import workers_alive
from execution.runner import command_claim, command_execute, sweep_stuck
from tests.conftest import queue_command, register_account

pytestmark = pytest.mark.django_db


@pytest.fixture
def account(tenant_1):
    from execution.simulator.service import sim_account_create, sim_set_price

    reset_gateway()
    sim_account_create(login=50040367, balance=100_000, server="Broker-Server")
    sim_set_price("EURUSD", "1.08500")
    return register_account(tenant_1)


def test_a_fast_claim_takes_a_short_lease_and_a_normal_one_none(account, settings):
    fast = queue_command(account, "sync_account", "fast-1", fast=True)
    normal = queue_command(account, "sync_account", "normal-1")
    before = timezone.now()
    claimed_fast, claimed_normal = command_claim(fast.pk), command_claim(normal.pk)
    assert claimed_fast is not None and claimed_normal is not None
    assert claimed_fast.lease_until is not None
    assert before < claimed_fast.lease_until <= timezone.now() + timedelta(seconds=settings.FAST_LANE_LEASE_SECONDS)
    assert claimed_normal.lease_until is None
    assert "pid" in claimed_fast.events.filter(to_state=State.EXECUTING).get().note  # which worker took it


def test_the_sweeper_takes_back_a_fast_command_whose_lease_lapsed_and_leaves_a_live_one(account):
    lapsed = queue_command(account, "sync_account", "lapsed", fast=True)
    live = queue_command(account, "sync_account", "live", fast=True)
    command_claim(lapsed.pk), command_claim(live.pk)
    Command.objects.filter(pk=lapsed.pk).update(lease_until=timezone.now() - timedelta(milliseconds=1))
    assert sweep_stuck(fast_only=True) == 1
    lapsed.refresh_from_db(), live.refresh_from_db()
    assert (lapsed.state, lapsed.lease_until) == (State.QUEUED, None)
    assert live.state == State.EXECUTING


def test_a_normal_command_keeps_its_long_lease(account):
    normal = queue_command(account, "sync_account", "normal", fast=False)
    command_claim(normal.pk)
    Command.objects.filter(pk=normal.pk).update(updated_at=timezone.now() - timedelta(seconds=30))
    assert sweep_stuck() == 0
    Command.objects.filter(pk=normal.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    assert sweep_stuck() == 1


def test_a_worker_whose_lease_was_taken_back_sends_nothing_and_records_nothing(account, monkeypatch):
    command = queue_command(
        account, "open_position", "taken-back", fast=True, symbol="EURUSD", direction="buy", volume="0.1"
    )
    monkeypatch.setattr(lease, "check", lambda command: (_ for _ in ()).throw(lease.LeaseLost(command.command_id)))
    assert command_execute(command.pk) is None
    command.refresh_from_db()
    assert command.state == State.EXECUTING and command.attempts == 0
    from execution.gateways import get_gateway

    assert get_gateway().account_snapshot(50040367, "Broker-Server").positions == ()


@pytest.mark.django_db(transaction=True)
def test_the_renewing_thread_moves_the_lease_on_and_notices_when_it_is_taken(account):
    command = queue_command(account, "sync_account", "renewed", fast=True)
    claimed = command_claim(command.pk)
    assert claimed is not None and claimed.lease_until is not None
    first = claimed.lease_until

    def lease_until():
        return Command.objects.values_list("lease_until", flat=True).get(pk=command.pk)

    def lost() -> bool:
        try:
            lease.check(claimed)
        except lease.LeaseLost:
            return True
        return False

    lease.hold(claimed)
    try:
        assert eventually(lambda: lease_until() > first)  # the thread renews it
        lease.check(claimed)  # still ours
        # The sweeper took it back and another worker claimed it: a new lease, not ours.
        Command.objects.filter(pk=command.pk).update(lease_until=timezone.now() + timedelta(seconds=30))
        assert eventually(lost)  # the thread's next renewal notices
    finally:
        lease.release(claimed)


def eventually(condition, timeout: float = 10.0) -> bool:
    """Whether `condition` holds within `timeout` (polled; a renewal is due every 0.3 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def silent_redis():
    """A TCP server that accepts and never answers: a Redis stopped with SIGSTOP, as seen by a client."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    stop.set()
    thread.join(timeout=2)
    for conn in held:
        conn.close()
    server.close()


def test_ringing_a_hung_redis_costs_a_request_about_a_tenth_of_a_second_then_nothing(
    account, settings, silent_redis, caplog
):
    settings.REDIS_URL, settings.FAST_LANE_BROKER = silent_redis, "redis"
    services._brokers.clear()
    services._redis_resting_until = 0.0
    try:
        broker, package = services.lane_broker("fast"), services.task_package("fast")
        started = time.monotonic()
        services._ring(broker, package)
        first = time.monotonic() - started
        started = time.monotonic()
        services._ring(broker, package)  # Redis is left alone for REDIS_RETRY_AFTER_SECONDS
        second = time.monotonic() - started
    finally:
        services._brokers.clear()
        services._redis_resting_until = 0.0
    assert first < 0.3, first
    assert second < 0.01, second
    assert "could not ring the lane's doorbell" in caplog.text


def test_a_worker_counts_as_live_only_with_a_fresh_heartbeat_from_a_process_that_exists(db):
    here = socket.gethostname()
    LaneHeartbeat.objects.create(lane="fast", host=here, pid=os.getpid())  # this process: alive
    LaneHeartbeat.objects.create(lane="fast", host=here, pid=2**22 + 12345)  # no such process
    LaneHeartbeat.objects.create(lane="fast", host="elsewhere", pid=1)  # another host: its word
    LaneHeartbeat.objects.create(lane="fast", host=here, pid=1, seen_at=timezone.now() - timedelta(seconds=3))  # stale
    assert workers_alive("fast") == 2


@pytest.fixture
def a_live_fast_worker(db):
    LaneHeartbeat.objects.create(lane="fast", host=socket.gethostname(), pid=os.getpid())


def _health(client):
    response = client.get("/api/v1/health")
    return response.status_code, response.json()


def test_health_is_503_down_without_a_live_fast_worker(client, db):
    status, body = _health(client)
    assert (status, body["status"], body["checks"]["fast_lane"]["status"]) == (503, "down", "down")


@pytest.mark.parametrize(
    ("terminal", "field"),
    [({"trade_allowed": False}, "trade_allowed"), ({"tradeapi_disabled": True}, "trade_api_disabled")],
)
def test_health_is_degraded_when_autotrading_or_python_trading_is_off(client, a_live_fast_worker, terminal, field):
    from execution.adapters.official import OfficialGateway
    from execution.simulator import SimulatedMetaTrader5

    reset_gateway(OfficialGateway(SimulatedMetaTrader5(**terminal), magic=1, backend="simulator", verify_account=False))
    try:
        status, body = _health(client)
    finally:
        reset_gateway()
    mt5 = body["checks"]["mt5"]
    assert mt5[field] is (field == "trade_api_disabled")
    assert (status, mt5["status"], body["status"]) == (200, "degraded", "degraded")


def test_health_is_503_down_when_the_mt5_backend_is_unavailable(client, a_live_fast_worker):
    reset_gateway(build_gateway("manager"))
    try:
        status, body = _health(client)
    finally:
        reset_gateway()
    assert (status, body["status"], body["checks"]["mt5"]["status"]) == (503, "down", "down")
