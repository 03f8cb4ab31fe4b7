"""Fast-lane faults with real processes: a worker killed mid-close or idle, a hung Redis, no fast worker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import close_old_connections
from django.utils import timezone

from commands import services
from commands.models import Command, CommandEvent, LaneHeartbeat
from commands.states import State
from execution.gateway import order_tag
from execution.gateways import get_gateway, reset_gateway
from execution.heartbeat import process_exists, workers_alive
from execution.simulator.service import sim_account_create, sim_inject_fault, sim_set_price
from tests.conftest import fresh, queue_command, register_account
from tests.processes import lane, running, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LOGIN = 50040367
SERVER = "Broker-Server"
# A private redis-server for the hung-Redis test, never the shared one.
PRIVATE_REDIS_PORT = int(os.environ.get("TEST_PRIVATE_REDIS_PORT", "6391"))


@pytest.fixture
def account(tenant_1):
    reset_gateway()
    sim_account_create(login=LOGIN, balance=1_000_000, server=SERVER)
    sim_set_price("EURUSD", "1.08500")
    return register_account(tenant_1)


@pytest.fixture
def sweeper() -> Iterator[None]:
    """The risk monitor's sweeper thread, as `riskmonitor` runs it."""
    from risk.monitor import sweep_forever

    stop = threading.Event()
    thread = threading.Thread(target=sweep_forever, args=(stop,), daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=5)


def state_of(command: Command) -> str:
    close_old_connections()
    return Command.objects.values_list("state", flat=True).get(pk=command.pk)


def fast_worker_pids() -> list[int]:
    close_old_connections()
    since = timezone.now() - timedelta(seconds=2)
    rows = LaneHeartbeat.objects.filter(lane="fast", seen_at__gte=since).values_list("pid", flat=True)
    return sorted(pid for pid in rows if process_exists(pid))


def open_position() -> int:
    return get_gateway().open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=1, tag="manual").position


def test_kill_9_of_a_fast_worker_mid_close_is_finished_by_another_worker_within_seconds_with_one_deal(account, sweeper):
    ticket = open_position()
    # The fill's answer is lost and a long backoff holds the worker right after the fill: kill it there.
    sim_inject_fault("timeout_after_fill", symbol="EURUSD", login=LOGIN, count=1)
    with running(lane("fastlane", Q_FAST_WORKERS="2", COMMAND_RETRY_BACKOFF_SECONDS="20")):
        assert wait_for(lambda: len(fast_worker_pids()) == 2, 30)
        command = queue_command(account, "close_position", "close-killed", fast=True, ticket=ticket)
        tag, since = order_tag(command.command_id), timezone.now() - timedelta(minutes=1)

        def closing_deals() -> list:
            close_old_connections()
            return [d for d in get_gateway().deals_by_tag(LOGIN, SERVER, tag=tag, since=since) if d.entry == "out"]

        assert wait_for(lambda: len(closing_deals()) == 1, 30)
        claim = CommandEvent.objects.filter(command=command, to_state=State.EXECUTING).latest("at")
        worker = int(re.search(r"pid (\d+)", claim.note).group(1))  # type: ignore[union-attr]
        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()
        assert wait_for(lambda: state_of(command) == State.SUCCEEDED, 10)
        recovered_in = time.monotonic() - killed_at
    command.refresh_from_db()
    assert recovered_in < 5, f"took {recovered_in:.1f} s"
    assert command.result["reconciled"] is True
    assert len(closing_deals()) == 1
    assert get_gateway().account_snapshot(LOGIN, SERVER).positions == ()
    reclaim = CommandEvent.objects.filter(command=command, to_state=State.EXECUTING).latest("at")
    assert f"pid {worker}" not in reclaim.note  # another worker finished it


def test_kill_9_of_an_idle_fast_worker_leaves_a_lane_that_still_closes(account):
    """django-q2's own sentinel replaces the dead worker, but one killed in the task queue's read
    took the queue's lock with it and wedged the lane (execution/cluster.py)."""
    with running(lane("fastlane", Q_FAST_WORKERS="2")):
        for round_ in range(4):
            assert wait_for(lambda: len(fast_worker_pids()) == 2 and workers_alive("fast") == 2, 10)
            victim = fast_worker_pids()[round_ % 2]  # one of them is blocked in the read, whichever
            os.kill(victim, signal.SIGKILL)
            started = time.monotonic()
            command = queue_command(
                account, "close_position", f"after-kill-{round_}", fast=True, ticket=open_position()
            )
            assert wait_for(lambda c=command: state_of(c) == State.SUCCEEDED, 10), "the fast lane is wedged"
            assert time.monotonic() - started < 5
            assert wait_for(lambda v=victim: v not in fast_worker_pids(), 3)
            # Its heartbeat is deleted as the sentinel replaces it (within a guard cycle, 0.5 s).
            assert wait_for(lambda v=victim: not LaneHeartbeat.objects.filter(pid=v).exists(), 2)
            assert workers_alive("fast") <= 2


def test_health_is_503_down_once_the_fast_lane_is_killed(account, client):
    fastlane = lane("fastlane")
    with running(fastlane):
        assert wait_for(lambda: client.get("/api/v1/health").json()["checks"]["fast_lane"]["status"] == "ok", 30)
        fastlane.kill()
        killed_at = time.monotonic()
        assert wait_for(lambda: client.get("/api/v1/health").status_code == 503, 5)
        assert time.monotonic() - killed_at < 3
    body = client.get("/api/v1/health").json()
    assert body["status"] == "down"
    assert body["checks"]["fast_lane"] == {**body["checks"]["fast_lane"], "status": "down", "workers_alive": 0}


@pytest.fixture
def private_redis(settings) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server of this test's own on a spare port (it gets SIGSTOPped), the fast lane on it."""
    server = subprocess.Popen(
        ["redis-server", "--port", str(PRIVATE_REDIS_PORT), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{PRIVATE_REDIS_PORT}/0"
    import redis

    assert wait_for(lambda: _pings(redis.from_url(url)), 10)
    settings.REDIS_URL = url
    settings.FAST_LANE_BROKER = "redis"
    services._brokers.clear()
    services._redis_resting_until = 0.0
    yield server
    server.send_signal(signal.SIGCONT)
    server.terminate()
    server.wait(timeout=10)
    services._brokers.clear()


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def test_with_redis_hung_intake_answers_within_half_a_second_and_the_fast_close_still_runs(
    account, alice, private_redis, settings, sweeper
):
    env = {"REDIS_URL": settings.REDIS_URL, "FAST_LANE_BROKER": "redis"}
    with running(lane("fastlane", **env)):
        assert wait_for(lambda: len(fast_worker_pids()) >= 1, 30)
        private_redis.send_signal(signal.SIGSTOP)
        try:
            timings = []
            for index in range(3):
                body = fresh("close_positions")
                body["payload"]["command_id"] = f"hung-{index}"
                open_position()
                started = time.monotonic()
                response = alice.post("mt5/commands", body)
                timings.append(time.monotonic() - started)
                assert response.status_code == 202
            assert max(timings) < 0.5, timings
            commands = Command.objects.filter(command_id__startswith="hung-")
            # Redis still hung: the pusher serves the lane from the database. (Two close-alls
            # running at once on two workers may find a position the other just closed: each
            # ends, and the account is flat.)
            terminal = {State.SUCCEEDED, State.PARTIALLY_SUCCEEDED, State.FAILED}
            assert wait_for(lambda: set(commands.values_list("state", flat=True)) <= terminal, 20), [
                (c.command_id, c.state, c.error_code) for c in commands
            ]
            assert commands.filter(state=State.SUCCEEDED).exists()
            assert get_gateway().account_snapshot(LOGIN, SERVER).positions == ()
        finally:
            private_redis.send_signal(signal.SIGCONT)
        # Redis back: the lane takes its doorbells from Redis again.
        after = queue_command(account, "close_position", "after-resume", fast=True, ticket=open_position())
        assert wait_for(lambda: state_of(after) == State.SUCCEEDED, 20)
