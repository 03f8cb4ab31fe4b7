"""Idempotency under real concurrency: many connections, one key, one command."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from commands import examples
from commands.models import Command, IdempotencyRecord
from tests.conftest import ALICE_TOKEN, queue_command, register_account

PARALLEL = 24


@pytest.mark.django_db(transaction=True)
def test_parallel_identical_requests_create_one_command_and_no_5xx(live_server, tenant_1):
    register_account(tenant_1)
    body = json.dumps(examples.CLOSE_POSITIONS)
    headers = {"Authorization": f"Bearer {ALICE_TOKEN}", "Content-Type": "application/json"}
    url = f"{live_server.url}/api/v1/mt5/commands"

    def send(_: int) -> httpx.Response:
        with httpx.Client(timeout=30) as http:  # one connection per request: real parallelism
            return http.post(url, content=body, headers=headers)

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        responses = list(pool.map(send, range(PARALLEL)))

    statuses = [response.status_code for response in responses]
    assert all(status == 202 for status in statuses), statuses
    assert Command.objects.filter(command_id="cmd-10001").count() == 1
    assert IdempotencyRecord.objects.count() == 1
    replayed = [response.headers.get("Idempotent-Replayed") for response in responses]
    assert replayed.count(None) == 1
    assert replayed.count("true") == PARALLEL - 1
    assert len({response.json()["received_at_utc"] for response in responses}) == 1


@pytest.mark.django_db(transaction=True)
def test_parallel_requests_with_distinct_keys_and_one_command_id_create_one_command(live_server, tenant_1):
    register_account(tenant_1)
    headers = {"Authorization": f"Bearer {ALICE_TOKEN}", "Content-Type": "application/json"}
    url = f"{live_server.url}/api/v1/mt5/commands"

    def send(index: int) -> httpx.Response:
        body = json.loads(json.dumps(examples.CLOSE_POSITIONS))
        body["meta"]["idempotency_key"] = f"key-{index}"
        with httpx.Client(timeout=30) as http:
            return http.post(url, content=json.dumps(body), headers=headers)

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        statuses = sorted(response.status_code for response in pool.map(send, range(PARALLEL)))

    assert statuses == [202] + [409] * (PARALLEL - 1)
    assert Command.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_workers_draining_one_lane_at_once_run_every_command_exactly_once(tenant_1, settings):
    from django.db import connection

    from commands.states import State
    from execution.runner import lane_run
    from execution.simulator.service import sim_account_create

    settings.NORMAL_LANE_DRAIN_SECONDS = 60
    account = register_account(tenant_1)
    sim_account_create(login=account.login, balance=100000, server=account.server)
    commands = [queue_command(account, "sync_account", f"sync-{i}") for i in range(40)]

    def drain(_: int) -> int:
        try:
            return lane_run("normal")
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        ran = list(pool.map(drain, range(4)))

    assert sum(ran) == 40
    rows = Command.objects.filter(pk__in=[c.pk for c in commands])
    assert set(rows.values_list("state", flat=True)) == {State.SUCCEEDED}
    assert [c.events.filter(to_state=State.EXECUTING).count() for c in rows] == [1] * 40
