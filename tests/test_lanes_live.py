"""The lanes with real qcluster processes: fast never waits, a crash never duplicates a trade."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import pytest
from django.db import close_old_connections
from django.utils import timezone

from commands.models import Command, LaneHeartbeat
from commands.services import command_enqueue
from commands.states import State
from execution.gateway import order_tag
from execution.gateways import get_gateway, reset_gateway
from execution.runner import sweep_stuck
from execution.simulator.service import sim_account_create, sim_inject_fault, sim_set_price
from tests.conftest import ALICE_TOKEN, queue_command, register_account
from tests.processes import lane, running, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LOGIN = 50040367
SERVER = "Broker-Server"


@pytest.fixture
def account(tenant_1):
    reset_gateway()
    sim_account_create(login=LOGIN, balance=1_000_000, server=SERVER)
    sim_set_price("EURUSD", "1.08500")
    return register_account(tenant_1)


def state_of(command: Command) -> str:
    close_old_connections()
    return Command.objects.values_list("state", flat=True).get(pk=command.pk)


def test_a_fast_command_completes_while_a_thousand_normal_commands_wait(account):
    backlog = [queue_command(account, "sync_account", f"normal-{i}") for i in range(1000)]
    ticket = get_gateway().open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=1, tag="manual").position
    with running(lane("normal"), lane("fastlane")):
        assert wait_for(
            lambda: Command.objects.filter(pk__in=[c.pk for c in backlog[:5]], state=State.SUCCEEDED).exists(), 60
        )
        fast = queue_command(account, "close_position", "fast-close", fast=True, ticket=ticket)
        assert fast.lane == "fast"
        assert wait_for(lambda: state_of(fast) == State.SUCCEEDED, 60)
        waiting = Command.objects.filter(pk__in=[c.pk for c in backlog], state=State.QUEUED).count()
    assert waiting > 0, "the fast command waited for the whole normal backlog"
    fast.refresh_from_db()
    assert fast.attempts == 1


def test_a_task_delivered_twice_executes_once(account):
    command = queue_command(
        account, "open_position", "twice", fast=True, symbol="EURUSD", direction="buy", volume="0.1"
    )
    command_enqueue(command=command)  # the second doorbell
    with running(lane("fastlane")):
        assert wait_for(lambda: state_of(command) == State.SUCCEEDED, 60)
        assert wait_for(lambda: not __import__("django_q.models", fromlist=["OrmQ"]).OrmQ.objects.exists(), 30)
    command.refresh_from_db()
    assert command.attempts == 1
    assert len(get_gateway().account_snapshot(LOGIN, SERVER).positions) == 1


def test_kill_9_of_the_worker_mid_close_with_timeout_after_fill_then_restart_gives_one_deal(account):
    ticket = get_gateway().open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=1, tag="manual").position
    sim_inject_fault("timeout_after_fill", symbol="EURUSD", login=LOGIN, count=1)
    command = queue_command(account, "close_position", "close-crash", fast=True, ticket=ticket)
    tag = order_tag(command.command_id)
    since = timezone.now() - timedelta(minutes=1)

    def closing_deals() -> list:
        close_old_connections()
        return [d for d in get_gateway().deals_by_tag(LOGIN, SERVER, tag=tag, since=since) if d.entry == "out"]

    # A long first backoff holds the worker between the fill and its record: kill it right there.
    slow = lane("fastlane", COMMAND_RETRY_BACKOFF_SECONDS="20")
    with running(slow):
        assert wait_for(lambda: len(closing_deals()) == 1, 60)
        slow.kill()
    assert state_of(command) == State.EXECUTING
    # The lease runs out; the sweeper sends it back to its lane; a fresh worker reconciles.
    Command.objects.filter(pk=command.pk).update(
        updated_at=timezone.now() - timedelta(minutes=5), lease_until=timezone.now() - timedelta(seconds=1)
    )
    assert sweep_stuck() == 1
    with running(lane("fastlane")):
        assert wait_for(lambda: state_of(command) == State.SUCCEEDED, 60)
    command.refresh_from_db()
    assert len(closing_deals()) == 1
    assert command.result["reconciled"] is True
    assert get_gateway().account_snapshot(LOGIN, SERVER).positions == ()


def test_health_sees_each_lanes_workers_only_while_they_run(account, client):
    def workers(lane: str) -> int:
        close_old_connections()
        return client.get("/api/v1/health").json()["checks"][lane]["workers_alive"]

    assert workers("fast_lane") == 0
    with running(lane("fastlane")):
        assert wait_for(lambda: workers("fast_lane") >= 1, 30)
        assert workers("normal_lane") == 0


REDIS_TEST_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture
def redis_fast_lane(settings):
    """The fast lane on the Redis broker, in this process and in the lanes it starts."""
    import redis

    redis.from_url(REDIS_TEST_URL).flushdb()
    settings.REDIS_URL = REDIS_TEST_URL
    settings.FAST_LANE_BROKER = "redis"
    yield {"REDIS_URL": REDIS_TEST_URL, "FAST_LANE_BROKER": "redis"}
    redis.from_url(REDIS_TEST_URL).flushdb()


def test_on_the_redis_broker_a_fast_command_completes_while_normal_commands_wait(account, redis_fast_lane):
    import redis

    backlog = [queue_command(account, "sync_account", f"normal-{i}") for i in range(300)]
    ticket = get_gateway().open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=1, tag="manual").position
    with running(lane("normal", **redis_fast_lane), lane("fastlane", **redis_fast_lane)):
        assert wait_for(
            lambda: Command.objects.filter(pk__in=[c.pk for c in backlog[:5]], state=State.SUCCEEDED).exists(), 60
        )
        fast = queue_command(account, "close_position", "fast-close-redis", fast=True, ticket=ticket)
        assert fast.lane == "fast"
        assert wait_for(lambda: state_of(fast) == State.SUCCEEDED, 60)
        waiting = Command.objects.filter(pk__in=[c.pk for c in backlog], state=State.QUEUED).count()
    assert waiting > 0, "the fast command waited for the normal backlog"
    # The doorbell went through Redis, not the database queue.
    from django_q.models import OrmQ

    assert not OrmQ.objects.filter(key="fastlane").exists()
    assert redis.from_url(REDIS_TEST_URL).llen("django_q:fastlane:q") == 0


def test_on_the_redis_broker_a_lost_doorbell_is_rung_again_by_the_sweeper(account, redis_fast_lane, settings):
    import redis

    ticket = get_gateway().open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=1, tag="manual").position
    fast = queue_command(account, "close_position", "fast-lost", fast=True, ticket=ticket)
    queue = redis.from_url(REDIS_TEST_URL)
    assert queue.llen("django_q:fastlane:q") == 1
    queue.delete("django_q:fastlane:q")  # Redis lost it: no delivery receipts
    assert sweep_stuck() == 0  # still within the fast grace
    Command.objects.filter(pk=fast.pk).update(
        updated_at=timezone.now() - timedelta(seconds=settings.COMMAND_FAST_QUEUED_GRACE_SECONDS + 1)
    )
    assert sweep_stuck() == 1
    assert queue.llen("django_q:fastlane:q") == 1
    with running(lane("fastlane", **redis_fast_lane)):
        assert wait_for(lambda: state_of(fast) == State.SUCCEEDED, 60)


def test_on_the_redis_broker_health_counts_the_fast_queue_in_redis_and_pings_it(
    account, redis_fast_lane, client, monkeypatch
):
    import redis

    from commands.lanes import Lane
    from commands.services import lane_broker

    queue_command(account, "sync_account", "fast-waiting", fast=True)
    operator = {"HTTP_AUTHORIZATION": f"Bearer {ALICE_TOKEN}"}  # the details are for a token, not the public
    checks = client.get("/api/v1/health", **operator).json()["checks"]
    assert checks["broker"]["fast_lane_broker"].startswith("Redis")
    assert checks["fast_lane"]["queue_depth"] == 1
    assert checks["fast_lane"]["oldest_task_age_s"] >= 0
    # Redis goes away under the fast lane's broker (nothing listens on port 1).
    monkeypatch.setattr(lane_broker(Lane.FAST), "connection", redis.from_url("redis://127.0.0.1:1/0"))
    # A live fast worker (this process's own heartbeat): only the broker is at fault here.
    LaneHeartbeat.objects.create(lane="fast", host=socket.gethostname(), pid=os.getpid())
    body = client.get("/api/v1/health", **operator)
    assert body.json()["status"] == "degraded", body.json()  # commands are still taken; the fast lane is not rung
    assert body.json()["checks"]["broker"]["status"] == "down"
    assert body.json()["checks"]["broker"]["fast_lane_broker"].startswith("unreachable")


def test_the_monitors_sweeper_thread_rings_a_forgotten_command_again_on_its_own_connection(account):
    import threading

    from risk.monitor import sweep_forever

    command = queue_command(account, "sync_account", "forgotten")
    Command.objects.filter(pk=command.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    from django_q.models import OrmQ

    OrmQ.objects.all().delete()  # the doorbell was lost
    stop = threading.Event()
    sweeper = threading.Thread(target=sweep_forever, args=(stop,), kwargs={"every": 0.05}, daemon=True)
    sweeper.start()
    try:
        assert wait_for(lambda: OrmQ.objects.count() == 1, 10)
    finally:
        stop.set()
        sweeper.join(timeout=5)
    assert not sweeper.is_alive()
    assert command.events.filter(note__contains="rung again").count() >= 1
