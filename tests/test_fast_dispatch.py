"""The risk monitor runs a protective command's first attempt itself (``execution.dispatch``).

Alice's trader (50040367) breaches a single-trade limit; the risk monitor that recorded the breach
claims the protective close the moment it is committed, exactly as a fast-lane worker would, and
the worker answering the lane's doorbell finds it taken. While the monitor's dispatcher is busy,
a close is left to the lane.
"""

from __future__ import annotations

import threading
from decimal import Decimal as D

import pytest
from django_q.models import OrmQ

from commands.lanes import Lane
from commands.models import Command, CommandEvent
from commands.services import lane_broker
from commands.states import State
from execution import dispatch
from execution.dispatch import Dispatcher
from execution.gateways import get_gateway, reset_gateway
from execution.runner import lane_run
from execution.simulator.service import sim_account_create, sim_set_price
from policies.models import ProtectiveAction
from tests.conftest import LOGIN, SERVER, queue_command, register_account
from tests.processes import wait_for
from tests.test_risk_engine import evaluate, open_buy


@pytest.fixture(autouse=True)
def _terminal():
    reset_gateway()
    yield
    reset_gateway()


def test_a_breach_offers_its_protective_close_to_the_monitors_dispatcher_once_committed(
    trader, monkeypatch, django_capture_on_commit_callbacks
):
    offered: list[int] = []

    def decline(pk: int) -> bool:
        offered.append(pk)
        return False

    monkeypatch.setattr(dispatch, "offer", decline)
    open_buy(trader, 1.0)
    sim_set_price("EURUSD", "1.06000")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        evaluate()
    assert offered == []  # nothing runs before the command is committed: another process could not claim it
    for callback in callbacks:
        callback()
    action = ProtectiveAction.objects.get()
    assert offered == [action.command_id]
    assert action.command.state == State.QUEUED  # declined: the lane runs it, as always


@pytest.mark.django_db(transaction=True)
def test_the_dispatcher_runs_a_committed_close_at_once_and_the_lanes_worker_finds_it_taken(tenant_1):
    sim_account_create(LOGIN, D("100000"), server=SERVER)
    sim_set_price("EURUSD", "1.08500")
    account = register_account(tenant_1, login=LOGIN, server=SERVER)
    opened = get_gateway().open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=D("1"), tag="b:trader")
    command = queue_command(account, "close_position", "risk-close-1", fast=True, ticket=opened.position)
    doorbells = OrmQ.objects.filter(key=lane_broker(Lane.FAST).list_key)
    assert doorbells.count() == 1
    dispatcher = Dispatcher()
    dispatcher.start()
    try:
        assert dispatcher.offer(command.pk)
        assert doorbells.count() == 0  # taken with the command: no worker wakes for nothing
        assert wait_for(lambda: Command.objects.get(pk=command.pk).state == State.SUCCEEDED, 30)
        assert wait_for(lambda: dispatcher.ran == 1, 5)
    finally:
        dispatcher.stop()
    assert lane_run(Lane.FAST) == 0  # a worker rung all the same (its doorbell fetched first): nothing to run
    claims = CommandEvent.objects.filter(command_id=command.pk, to_state=State.EXECUTING)
    assert claims.count() == 1
    assert get_gateway().account_snapshot(LOGIN, SERVER).positions == ()


def test_a_close_offered_while_the_dispatcher_is_busy_is_left_to_the_lane(monkeypatch):
    from execution import runner

    release, started, claimed, ran = threading.Event(), threading.Event(), [], []

    def claim(pk: int, **_: object) -> Command:
        claimed.append(pk)
        return Command(pk=pk)

    def slow_run(command: Command) -> str:
        ran.append(command.pk)
        started.set()
        release.wait(10)
        return State.SUCCEEDED

    monkeypatch.setattr(runner, "command_claim", claim)
    monkeypatch.setattr(runner, "command_run", slow_run)
    dispatcher = Dispatcher()
    assert not dispatcher.offer(1)  # not started: everything is the lanes'
    dispatcher.start()
    try:
        assert dispatcher.offer(1)
        assert started.wait(5)
        assert not dispatcher.offer(2)  # busy: not even claimed, its lane's worker takes it
        release.set()
        assert wait_for(lambda: dispatcher.offer(3), 5)
        assert wait_for(lambda: ran == [1, 3], 5)
        assert claimed == [1, 3]
    finally:
        release.set()
        dispatcher.stop()


def test_a_close_a_lane_worker_claimed_first_is_not_run_again(monkeypatch):
    from execution import runner

    ran: list[int] = []
    monkeypatch.setattr(runner, "command_claim", lambda pk, **_: None if pk == 7 else Command(pk=pk))
    monkeypatch.setattr(runner, "command_run", lambda command: ran.append(command.pk))
    dispatcher = Dispatcher()
    dispatcher.start()
    try:
        assert not dispatcher.offer(7)
        assert dispatcher.offer(8)  # still free for the next one
        assert wait_for(lambda: ran == [8], 5)
    finally:
        dispatcher.stop()
