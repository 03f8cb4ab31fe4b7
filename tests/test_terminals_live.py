"""Shared terminals with every process kind running (ARCHITECTURE.md "Real MT5 topology").

Personas: four traders whose accounts share two terminals two by two (as a firm's VPS would),
the ops team's terminal host, both lanes, the risk monitor, and Laravel's sync reads from the web.
The simulator shares each terminal's login between processes and charges 50 ms per login: the
world in which the unowned bridge put trades on other traders' accounts.
"""

from __future__ import annotations

import threading
from decimal import Decimal as D

import pytest
from django.db import close_old_connections, connection

from commands.models import Command
from commands.states import State
from execution.gateway import GatewayUnavailable, order_tag
from execution.gateways import get_gateway, reset_gateway
from execution.models import SimDeal, TerminalLease
from execution.owners import Priority, call_priority, live_owners
from execution.simulator.service import sim_account_create, sim_set_price
from execution.terminals import terminal_add
from tests.conftest import queue_command, register_account
from tests.processes import Proc, bridge_env, lane, running, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SERVER = "Broker-Server"
# Ten thousand apart: a read of another account's money cannot pass for this one's.
TRADERS = {50050001: D("100000"), 50050002: D("110000"), 50050003: D("120000"), 50050004: D("130000")}


def terminal_host(**extra: str) -> Proc:
    return Proc("terminals", ["terminalhost"], bridge_env(**extra))


@pytest.fixture
def shared_desks(tenant_1):
    reset_gateway()
    sim_set_price("EURUSD", "1.08500")
    accounts = {}
    for login, balance in TRADERS.items():
        sim_account_create(login=login, balance=balance, server=SERVER)
        accounts[login] = register_account(tenant_1, login, SERVER)
    logins = list(TRADERS)
    terminal_add("desk-a", path="desk-a", accounts=[(logins[0], SERVER), (logins[1], SERVER)])
    terminal_add("desk-b", path="desk-b", accounts=[(logins[2], SERVER), (logins[3], SERVER)])
    yield accounts
    reset_gateway()


def finished(commands: list[Command]) -> bool:
    close_old_connections()
    return (
        not Command.objects.filter(pk__in=[c.pk for c in commands])
        .exclude(state__in=[State.SUCCEEDED, State.FAILED, State.REJECTED, State.EXPIRED])
        .exists()
    )


def test_every_process_kind_on_shared_terminals_trades_and_reads_each_account_as_itself(shared_desks):
    commands = [
        queue_command(
            shared_desks[login], "open_position", f"own-{i}", fast=i % 4 == 0,
            symbol="EURUSD", direction="buy", volume="0.01",
        )
        for i, login in enumerate(list(TRADERS) * 40)
    ]  # fmt: skip
    mixed, reads, stop = [], [], threading.Event()

    def sync_reads() -> None:  # Laravel's sync reads, from this process, through the owners
        with call_priority(Priority.SYNC):
            while not stop.is_set():
                for login, balance in TRADERS.items():
                    try:
                        snapshot = get_gateway().account_snapshot(login, SERVER)
                    except GatewayUnavailable:
                        continue
                    reads.append(login)
                    if snapshot.login != login or abs(snapshot.balance - balance) > 100:
                        mixed.append((login, snapshot.login, snapshot.balance))
        connection.close()

    with running(terminal_host(), lane("normal"), lane("fastlane"), Proc("risk", ["riskmonitor"], bridge_env())):
        assert wait_for(lambda: {"desk-a", "desk-b"} <= set(live_owners()), 60)
        reader = threading.Thread(target=sync_reads)
        reader.start()
        try:
            assert wait_for(lambda: finished(commands), 240)
        finally:
            stop.set()
            reader.join(60)
        owners = {TerminalLease.objects.get(name=name).holder for name in ("desk-a", "desk-b")}
    states = list(Command.objects.filter(pk__in=[c.pk for c in commands]).values_list("state", flat=True))
    assert states.count(State.SUCCEEDED) == len(commands) == 160
    wrong = [
        command.command_id
        for command in commands
        for login in SimDeal.objects.filter(comment=order_tag(command.command_id)).values_list(
            "account__login", flat=True
        )
        if login != command.account.login
    ]
    assert wrong == []
    assert SimDeal.objects.filter(comment__startswith="b:own-").count() == 160  # each exactly once
    assert reads and mixed == []
    # The host (or a lane that needed a terminal first) drove them; this process only sent its reads.
    assert get_gateway().owners.holder not in owners


def test_kill_9_of_the_terminal_owner_mid_command_moves_the_lease_and_the_command_reconciles(shared_desks):
    login = next(iter(TRADERS))
    # The first host answers slowly (every call 300 ms), so the command is in its hands when it dies.
    slow_host = terminal_host(SIM_CALL_MS="300").start()
    try:
        assert wait_for(lambda: "desk-a" in live_owners(), 60)
        first_owner = TerminalLease.objects.get(name="desk-a").holder
        with running(lane("fastlane")):
            command = queue_command(
                shared_desks[login], "open_position", "kill-owner", fast=True,
                symbol="EURUSD", direction="buy", volume="0.01",
            )  # fmt: skip
            from execution.models import TerminalCall
            from execution.owners import RUN

            # The worker sent the whole attempt to the host; kill the host once the order is on
            # the trade server but before the host could answer (it still verifies the account).
            assert wait_for(lambda: TerminalCall.objects.filter(method=RUN, state="running").exists(), 60)
            assert wait_for(lambda: SimDeal.objects.filter(comment=order_tag("kill-owner")).exists(), 60)
            slow_host.kill()
            with running(terminal_host()):
                assert wait_for(lambda: finished([command]), 90)
                new_owner = TerminalLease.objects.get(name="desk-a").holder
    finally:
        slow_host.kill()
    command.refresh_from_db()
    assert command.state == State.SUCCEEDED, command.error_message
    assert new_owner != first_owner
    assert SimDeal.objects.filter(comment=order_tag("kill-owner")).count() == 1


def test_kill_9_of_the_risk_monitor_running_its_protective_close_leaves_the_close_to_the_lane(shared_desks):
    """The risk monitor runs its own protective close (execution.dispatch). Killed while the close
    is in its hands, the close's lease lapses, the next monitor's sweeper sends it back to the
    fast lane, and the lane reconciles by tag: the position is closed, once."""
    from commands.models import CommandEvent
    from execution.simulator import constants as c
    from policies.models import ProtectiveAction

    login = next(iter(TRADERS))
    opened = None
    # The host answers slowly (every call 300 ms), so the close is in the monitor's hands when it
    # dies; no lane runs yet, so the monitor is the one that claims it.
    with running(terminal_host(SIM_CALL_MS="300")):
        assert wait_for(lambda: "desk-a" in live_owners(), 60)
        opened = get_gateway().open_position(login, SERVER, symbol="EURUSD", side="buy", volume=D("1"), tag="b:own")
        assert opened.ok
        monitor = Proc("risk", ["riskmonitor"], bridge_env()).start()
        try:
            sim_set_price("EURUSD", "1.05500")  # 300 pips down: the demo policy's single-trade limit
            assert monitor.popen is not None
            claimed_here = f"pid {monitor.popen.pid}"

            def claimed_by_the_monitor() -> bool:
                close_old_connections()
                return CommandEvent.objects.filter(
                    command__source="bridge", to_state=State.EXECUTING, note__endswith=claimed_here
                ).exists()

            assert wait_for(claimed_by_the_monitor, 120)
            monitor.kill()
            close = Command.objects.get(source="bridge")
            assert close.state == State.EXECUTING  # killed mid-close
            with running(lane("fastlane"), Proc("risk", ["riskmonitor"], bridge_env())):
                assert wait_for(lambda: finished([close]), 90)
                assert wait_for(lambda: ProtectiveAction.objects.filter(goal_met_at__isnull=False).exists(), 90)
        finally:
            monitor.kill()
    close.refresh_from_db()
    assert close.state == State.SUCCEEDED, close.error_message
    assert close.events.filter(to_state=State.EXECUTING).count() == 2  # the monitor's claim, then the lane's
    assert SimDeal.objects.filter(position_id=opened.position, entry=c.DEAL_ENTRY_OUT).count() == 1
