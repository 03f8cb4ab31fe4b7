"""One account per terminal at a time, one owner per terminal (ARCHITECTURE.md "Real MT5 topology").

Personas: alice (50040367) and bob (50040368) are traders whose accounts share one terminal;
the ops team runs the terminal host. The simulator is as hard as MT5: a terminal's logged-in
account is shared by every process attached to it, a login costs time, and a switch can turn
Algo Trading off.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal as D
from typing import Any

import pytest
from django.core.management import call_command

from execution.adapters.router import TerminalRouter
from execution.gateway import GatewayUnavailable
from execution.gateways import terminal_router
from execution.models import SimDeal, TerminalCall, TerminalLease
from execution.owners import Owners, Priority, PriorityLock, call_priority
from execution.simulator import SimulatedMetaTrader5
from execution.simulator import constants as c
from execution.simulator import terminal as sim_terminal
from execution.simulator.service import sim_account_create, sim_account_state, sim_set_price
from execution.terminals import terminal_add, terminal_pin
from tests.execution_fixtures import market_buy
from tests.processes import wait_for

ALICE, BOB, SERVER = 50040367, 50040368, "Broker-Server"
CAROL, DAVE = 50040369, 50040370


@pytest.fixture
def two_accounts(db):
    sim_account_create(ALICE, D("100000"), server=SERVER)
    sim_account_create(BOB, D("50000"), server=SERVER)
    sim_set_price("EURUSD", "1.08500")


# --- the simulator: a terminal is one account for every process attached to it ----------------------
def test_a_login_from_one_process_switches_the_terminal_for_every_process_attached_to_it(two_accounts):
    worker, monitor = SimulatedMetaTrader5(), SimulatedMetaTrader5()
    assert worker.initialize("shared", login=ALICE, server=SERVER)
    assert monitor.initialize("shared")
    assert monitor.login(BOB, server=SERVER)
    assert worker.account_info().login == BOB
    result = worker.order_send(market_buy(worker, volume=0.1))  # the worker believes it trades for alice
    assert result.retcode == c.TRADE_RETCODE_DONE
    assert SimDeal.objects.get(ticket=result.deal).account.login == BOB


def test_two_terminals_hold_their_own_accounts(two_accounts):
    one, other = SimulatedMetaTrader5(), SimulatedMetaTrader5()
    assert one.initialize("terminal-1", login=ALICE, server=SERVER)
    assert other.initialize("terminal-2", login=BOB, server=SERVER)
    assert (one.account_info().login, other.account_info().login) == (ALICE, BOB)


def test_the_cost_model_charges_a_login_and_every_call(two_accounts, settings, monkeypatch):
    settings.SIM_LOGIN_SECONDS, settings.SIM_CALL_MS = 1.0, 1.0
    paid: list[float] = []
    monkeypatch.setattr(sim_terminal, "_pay", paid.append)
    mt5 = SimulatedMetaTrader5()
    mt5.initialize("costly")
    mt5.login(ALICE, server=SERVER)
    mt5.account_info()
    assert paid == [0.001, 1.0, 0.001]


def test_a_switch_turns_algo_trading_off_when_the_terminal_is_set_to(two_accounts, settings):
    settings.SIM_DISABLE_AT_ON_SWITCH = True
    mt5 = SimulatedMetaTrader5()
    assert mt5.initialize("switchy", login=ALICE, server=SERVER)
    assert mt5.terminal_info().trade_allowed is True  # the first login is no switch
    assert mt5.login(BOB, server=SERVER)
    assert mt5.terminal_info().trade_allowed is False
    assert mt5.order_send(market_buy(mt5, volume=0.1)).retcode == c.TRADE_RETCODE_CLIENT_DISABLES_AT


def test_mt5sim_account_show_names_the_terminal_logged_into_the_account(two_accounts):
    assert sim_account_state(ALICE)["terminal"] is None
    SimulatedMetaTrader5().initialize("desk-7", login=ALICE, server=SERVER)
    assert sim_account_state(ALICE)["terminal"] == "desk-7"
    call_command("mt5sim", "positions", "--login", str(BOB))  # an operator's look logs in elsewhere
    assert sim_account_state(ALICE)["terminal"] == "desk-7"


# --- the priority lock ---------------------------------------------------------------------------------
def queued(lock: PriorityLock, count: int) -> None:
    """Wait until `count` callers wait for the lock (so each came after the one before)."""
    assert wait_for(lambda: lock.waiting == count, timeout=5, every=0.001)


def test_a_fast_call_goes_before_normal_calls_that_waited_longer():
    lock, order = PriorityLock(), []

    def take(priority: Priority, name: str) -> None:
        with lock.held(priority):
            order.append(name)

    with lock.held(Priority.NORMAL):
        threads = [threading.Thread(target=take, args=(Priority.NORMAL, f"normal-{i}")) for i in range(3)]
        for count, thread in enumerate(threads, 1):
            thread.start()
            queued(lock, count)
        fast = threading.Thread(target=take, args=(Priority.FAST, "fast"))
        fast.start()
        queued(lock, 4)
    for thread in [*threads, fast]:
        thread.join(5)
    assert order == ["fast", "normal-0", "normal-1", "normal-2"]


def test_the_monitors_reads_and_normal_commands_take_turns_in_the_order_they_came():
    lock, order = PriorityLock(), []

    def take(priority: Priority, name: str) -> None:
        with lock.held(priority):
            order.append(name)

    with lock.held(Priority.FAST):
        threads = []
        for priority, name in [(Priority.MONITOR, "read-1"), (Priority.NORMAL, "open"), (Priority.MONITOR, "read-2")]:
            threads.append(threading.Thread(target=take, args=(priority, name)))
            threads[-1].start()
            queued(lock, len(threads))
    for thread in threads:
        thread.join(5)
    assert order == ["read-1", "open", "read-2"]  # a normal command is never starved by the reads


# --- owners: one process drives a terminal; the others send it their calls -------------------------
def process() -> TerminalRouter:
    """A gateway as a separate bridge process builds it (its own leases, adapters and threads)."""
    return terminal_router("simulator", magic=20260529)


@pytest.fixture
def shared_terminal(transactional_db, settings):
    settings.TERMINAL_LEASE_SECONDS, settings.TERMINAL_LEASE_RENEW_SECONDS = 1.0, 0.2
    sim_account_create(ALICE, D("100000"), server=SERVER)
    sim_account_create(BOB, D("50000"), server=SERVER)
    sim_set_price("EURUSD", "1.08500")
    terminal_add("desk", path="desk-terminal", accounts=[(ALICE, SERVER), (BOB, SERVER)])
    host, worker = process(), process()
    yield host, worker
    for router in (host, worker):
        assert router.owners is not None
        router.owners.stop()


def test_the_first_process_to_need_a_terminal_owns_it_and_the_next_sends_it_its_calls(shared_terminal):
    host, worker = shared_terminal
    assert host.account_snapshot(ALICE, SERVER).balance == D("100000.00")
    assert host.owners.owns("desk") and not worker.owners.owns("desk")
    opened = worker.open_position(BOB, SERVER, symbol="EURUSD", side="buy", volume=D("0.1"), tag="b:bob-1")
    assert opened.ok
    assert SimDeal.objects.get(ticket=opened.deal).account.login == BOB
    assert worker.terminals() == {}  # the worker never attached to the terminal
    assert [p.ticket for p in worker.account_snapshot(BOB, SERVER).positions] == [opened.position]
    assert not TerminalCall.objects.exists()  # every answered call is gone


def test_a_refusal_on_the_owner_reaches_the_caller_as_the_same_exception(shared_terminal):
    host, worker = shared_terminal
    host.account_snapshot(ALICE, SERVER)
    with pytest.raises(GatewayUnavailable, match="login"):
        worker.account_snapshot(99999999, SERVER)  # pinned nowhere: a private terminal, no such account


def test_interleaved_calls_of_two_processes_never_trade_or_read_on_the_wrong_account(shared_terminal):
    host, worker = shared_terminal
    host.account_snapshot(ALICE, SERVER)
    wrong, reads = [], []

    def trade(router: TerminalRouter, login: int, prefix: str) -> None:
        for i in range(8):
            result = router.open_position(
                login, SERVER, symbol="EURUSD", side="buy", volume=D("0.01"), tag=f"b:{prefix}{i}"
            )
            if SimDeal.objects.get(ticket=result.deal).account.login != login:
                wrong.append(result.deal)

    def read(router: TerminalRouter, login: int, balance: D) -> None:
        with call_priority(Priority.MONITOR):
            for _ in range(8):
                snap = router.account_snapshot(login, SERVER)
                # Each open charges a few cents of commission; the other account is 50,000 away.
                mine = snap.login == login and abs(snap.balance - balance) < 10
                reads.append(mine or (login, snap.login, snap.balance))

    threads = [
        threading.Thread(target=trade, args=(host, ALICE, "a")),
        threading.Thread(target=trade, args=(worker, BOB, "b")),
        threading.Thread(target=read, args=(worker, ALICE, D("100000.00"))),
        threading.Thread(target=read, args=(host, BOB, D("50000.00"))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert wrong == []
    assert len(reads) == 16 and all(r is True for r in reads), reads


def test_when_the_owner_dies_its_lease_lapses_and_the_next_caller_takes_the_terminal(shared_terminal, settings):
    host, worker = shared_terminal
    host.account_snapshot(ALICE, SERVER)
    host.owners._stop.set()  # the host stops renewing and serving: as if killed (its lease is not released)
    started = time.monotonic()
    assert worker.account_snapshot(BOB, SERVER).balance == D("50000.00")
    assert time.monotonic() - started < 5 * settings.TERMINAL_LEASE_SECONDS
    assert worker.owners.owns("desk")
    assert TerminalLease.objects.get(name="desk").holder == worker.owners.holder


def test_a_second_owner_cannot_take_a_live_lease_and_a_lost_lease_is_noticed(shared_terminal):
    host, worker = shared_terminal
    assert host.owners.take("desk")
    assert not worker.owners.own_if_free("desk")
    TerminalLease.objects.filter(name="desk").update(holder="someone-else")
    assert host.owners.renew() == ["desk"]
    assert not host.owners.owns("desk")


def test_with_terminal_hosts_only_a_lane_worker_never_drives_a_free_terminal_it_waits_for_the_host(
    shared_terminal, settings
):
    """Ops run the bridge with a terminal host (runbridge sets TERMINAL_OWNERS=hosts): a lane
    worker that needs alice's terminal before the host took it does not take it (it would keep
    it, and the host's design, for good); its call waits and runs on the host once it does."""
    settings.TERMINAL_OWNERS = "hosts"
    host, worker = shared_terminal
    host.owners.host = True
    results: dict[str, object] = {}
    reader = threading.Thread(target=lambda: results.setdefault("read", worker.account_snapshot(ALICE, SERVER)))
    reader.start()
    assert wait_for(lambda: TerminalCall.objects.filter(method="account_snapshot").exists(), timeout=5, every=0.01)
    assert not TerminalLease.objects.filter(name="desk").exists()  # nobody took it
    assert host.owners.take("desk")
    reader.join(10)
    assert results["read"].login == ALICE
    assert not worker.owners.owns("desk") and host.owners.owns("desk")


def test_with_terminal_hosts_only_and_no_host_a_call_fails_saying_so(shared_terminal, settings):
    settings.TERMINAL_OWNERS = "hosts"
    settings.TERMINAL_CALL_TIMEOUT_SECONDS = 1.0
    _, worker = shared_terminal
    with pytest.raises(GatewayUnavailable, match="no terminal host drives it"):
        worker.account_snapshot(ALICE, SERVER)
    assert not TerminalLease.objects.exists() and not TerminalCall.objects.exists()


def served_by(host: TerminalRouter) -> list[str]:
    """The methods the host's owner runs from now on, in the order it runs them."""
    assert isinstance(host.owners, Owners)
    served: list[str] = []
    original = host._run_local

    def spy(name, method, args, kwargs):
        served.append(method)
        return original(name, method, args, kwargs)

    host.owners._run_local = spy
    return served


def test_an_owner_serves_a_waiting_fast_command_before_waiting_reads(shared_terminal):
    host, worker = shared_terminal
    host.account_snapshot(ALICE, SERVER)
    owners = host.owners
    served = served_by(host)
    gate = owners.lock_of("desk")
    results = []

    def call(priority: Priority, method: str) -> None:
        with call_priority(priority):
            if method == "read":
                results.append(worker.account_snapshot(BOB, SERVER))
            else:
                results.append(
                    worker.open_position(BOB, SERVER, symbol="EURUSD", side="buy", volume=D("0.01"), tag="b:fast")
                )

    with gate.held(Priority.FAST):  # the terminal is busy: the calls queue up
        readers = [threading.Thread(target=call, args=(Priority.MONITOR, "read")) for _ in range(3)]
        for thread in readers:
            thread.start()
        queued(gate, 3)  # the owner took the three reads and waits for the terminal
        fast = threading.Thread(target=call, args=(Priority.FAST, "open"))
        fast.start()
        queued(gate, 4)
    for thread in [*readers, fast]:
        thread.join(30)
    assert served[0] == "open_position"
    assert len(results) == 4


def test_a_fast_command_sent_while_every_owner_worker_is_busy_runs_before_the_reads_that_came_earlier(
    shared_terminal, settings
):
    """A risk manager's protective close reaches a busy terminal host behind a cycle of monitor
    reads: the host claims a call only when a worker can run it, so the close is the next to run."""
    settings.TERMINAL_OWNER_THREADS = 1
    host, worker = shared_terminal
    host.account_snapshot(ALICE, SERVER)  # the host owns the terminal, with its one worker
    owners = host.owners
    served = served_by(host)

    def read() -> None:
        with call_priority(Priority.MONITOR):
            worker.account_snapshot(BOB, SERVER)

    def close_fast() -> None:
        with call_priority(Priority.FAST):
            worker.open_position(BOB, SERVER, symbol="EURUSD", side="buy", volume=D("0.01"), tag="b:fast")

    gate = owners.lock_of("desk")
    threads = [threading.Thread(target=read) for _ in range(4)] + [threading.Thread(target=close_fast)]
    with gate.held(Priority.FAST):  # the host's only worker will wait for the terminal
        for count, thread in enumerate(threads, start=1):
            thread.start()
            assert wait_for(lambda n=count: TerminalCall.objects.count() == n, timeout=5, every=0.001)
        assert wait_for(lambda: gate.waiting == 1, timeout=5, every=0.001)  # the first read is running
    for thread in threads:
        thread.join(30)
    assert served == ["account_snapshot", "open_position", "account_snapshot", "account_snapshot", "account_snapshot"]


def bobs_trade_on_the_hosts_terminal(host: TerminalRouter, tenant: Any) -> tuple[Any, int]:
    """The host owns the shared terminal; bob, a registered account on it, holds a trade."""
    from tests.conftest import register_account

    host.account_snapshot(ALICE, SERVER)  # the host owns the terminal
    account = register_account(tenant, login=BOB, server=SERVER)
    opened = host.open_position(BOB, SERVER, symbol="EURUSD", side="buy", volume=D("0.1"), tag="b:trader")
    return account, opened.position


def run_as_the_fast_lane_worker(worker: TerminalRouter, command: Any) -> Any:
    """Run ``command`` on this thread as a fast-lane worker whose gateway is ``worker`` (its
    terminal owned by the host); it must succeed."""
    from commands.states import State
    from execution.gateways import reset_gateway
    from execution.runner import command_execute

    reset_gateway(worker)
    try:
        command_execute(command.pk)
    finally:
        reset_gateway()
    command.refresh_from_db()
    assert command.state == State.SUCCEEDED, (command.error_code, command.error_message)
    return command


def test_a_protective_close_run_by_a_lane_worker_reaches_the_terminal_host_in_one_round_trip(shared_terminal, tenant_1):
    """A risk manager's close goes from the fast-lane worker to the terminal's host once: the
    host runs the whole attempt (read the position, close it, read its deal) and sends back the
    outcome, instead of one round trip per MT5 call."""
    from tests.conftest import queue_command

    host, worker = shared_terminal
    account, ticket = bobs_trade_on_the_hosts_terminal(host, tenant_1)
    sent: list[str] = []
    original = worker.owners._remote

    def count(name, method, *rest):
        sent.append(method)
        return original(name, method, *rest)

    worker.owners._remote = count
    command = run_as_the_fast_lane_worker(
        worker, queue_command(account, "close_position", "risk-close-1", fast=True, ticket=ticket)
    )
    assert command.result["profit"] is not None  # the closing deal's profit, read on the host
    assert host.account_snapshot(BOB, SERVER).positions == ()
    assert sent == ["run"]


def test_a_protective_close_on_the_host_asks_which_terminal_serves_the_account_once(shared_terminal, tenant_1):
    """The lane worker looks up bob's terminal and sends the close there; on the host, the close's
    three MT5 calls (its position, the close, its deal) go to that terminal without asking the
    database again."""
    from tests.conftest import queue_command

    host, worker = shared_terminal
    account, ticket = bobs_trade_on_the_hosts_terminal(host, tenant_1)
    looked_up: dict[str, int] = {"host": 0, "worker": 0}
    for name, router in (("host", host), ("worker", worker)):

        def resolve(login, server, name=name, original=router._resolve):
            looked_up[name] += 1
            return original(login, server)

        router._resolve = resolve
    served = served_by(host)
    run_as_the_fast_lane_worker(
        worker, queue_command(account, "close_position", "risk-close-2", fast=True, ticket=ticket)
    )
    assert served == ["run", "position", "close_position", "deals_by_tag"]
    assert looked_up == {"host": 0, "worker": 1}


def test_the_monitors_close_goes_to_the_terminal_it_just_read_the_breach_from_without_a_lookup(
    shared_terminal, tenant_1, monkeypatch
):
    """The risk monitor reads bob's terminal in bulk and, finding a breach, sends the close at
    once: to the terminal it read bob from, without asking the database again; a second later
    it asks again."""
    from execution.adapters import router as router_module
    from execution.runner import attempt_on_owner
    from tests.conftest import queue_command

    host, monitor = shared_terminal
    account, ticket = bobs_trade_on_the_hosts_terminal(host, tenant_1)
    looked_up: list[tuple[int, str]] = []
    resolve = monitor._resolve

    def counted(login, server):
        looked_up.append((login, server))
        return resolve(login, server)

    monitor._resolve = counted
    assert monitor.account_snapshots([(BOB, SERVER)])[(BOB, SERVER)].positions  # the cycle's read
    command = queue_command(account, "close_position", "risk-close-3", fast=True, ticket=ticket)
    step, _ = monitor.run_on_owner(BOB, SERVER, attempt_on_owner, command, False)
    assert step.error_code == "" and looked_up == []
    monkeypatch.setattr(router_module, "READ_FROM_SECONDS", 0.0)
    monitor.run_on_owner(BOB, SERVER, attempt_on_owner, command, True)
    assert looked_up == [(BOB, SERVER)]


@pytest.fixture
def second_terminal(shared_terminal):
    """Carol's account alone on a second terminal of the same host."""
    sim_account_create(CAROL, D("20000"), server=SERVER)
    terminal_add("desk-2", path="desk-2-terminal", accounts=[(CAROL, SERVER)])
    host, worker = shared_terminal
    host.account_snapshot(ALICE, SERVER)
    host.account_snapshot(CAROL, SERVER)  # the host owns both terminals
    return host, worker


def test_a_process_owning_several_terminals_reads_them_two_at_a_time(second_terminal, monkeypatch):
    """The risk monitor hosting the terminals reads alice's and carol's at once, on its own thread
    and one more (not one after the other: its cycle over 50 terminals outran the 500 ms poll),
    and gets both."""
    host, _ = second_terminal
    threads: dict[str, str] = {}
    run_local = host.owners._run_local

    def recorded(name: str, method: str, args: Any, kwargs: Any) -> Any:
        threads[name] = threading.current_thread().name
        return run_local(name, method, args, kwargs)

    monkeypatch.setattr(host.owners, "_run_local", recorded)
    read = host.account_snapshots([(ALICE, SERVER), (CAROL, SERVER)])
    assert {key[0] for key, snapshot in read.items() if snapshot.login == key[0]} == {ALICE, CAROL}
    assert threads["desk"] == threading.current_thread().name
    assert threads["desk-2"].startswith("terminal-own-reads")


def hold_a_fast_call_on_the_host(host: TerminalRouter, worker: TerminalRouter, results: dict[str, object]):
    """A risk manager's close sent to the host, claimed there and waiting for bob's terminal (held
    by the caller of this)."""

    def close_fast() -> None:
        with call_priority(Priority.FAST):
            results["fast"] = worker.open_position(
                BOB, SERVER, symbol="EURUSD", side="buy", volume=D("0.01"), tag="b:fast"
            )

    thread = threading.Thread(target=close_fast)
    thread.start()
    assert wait_for(lambda: host.owners.lock_of("desk").waiting == 1, timeout=5, every=0.001)
    return thread


def read_carol(worker: TerminalRouter, results: dict[str, object]) -> threading.Thread:
    def read() -> None:
        with call_priority(Priority.MONITOR):
            results["read"] = worker.account_snapshot(CAROL, SERVER)

    thread = threading.Thread(target=read)
    thread.start()
    assert wait_for(lambda: TerminalCall.objects.filter(method="account_snapshot").exists(), timeout=5, every=0.001)
    return thread


def test_while_a_protective_close_runs_on_the_host_a_read_of_another_terminal_waits_until_it_ends(
    second_terminal, settings
):
    """Ops run one terminal host for many terminals: while a risk manager's close runs there, the
    monitor's read of carol's terminal (free, with idle workers to run it) waits in the table,
    and is run the moment the close has its answer."""
    settings.TERMINAL_FAST_ALONE_SECONDS = 30.0
    host, worker = second_terminal
    results: dict[str, object] = {}
    with host.owners.lock_of("desk").held(Priority.FAST):  # bob's terminal is busy
        fast = hold_a_fast_call_on_the_host(host, worker, results)
        reader = read_carol(worker, results)
        time.sleep(0.5)
        assert TerminalCall.objects.get(method="account_snapshot").state == TerminalCall.PENDING
        assert "read" not in results
    fast.join(10)
    reader.join(10)
    assert not reader.is_alive(), "the read waited past the close"
    assert results["read"].login == CAROL
    assert results["fast"].ok


def test_a_close_that_runs_long_holds_the_other_terminals_reads_back_no_longer_than_the_limit(
    second_terminal, settings
):
    settings.TERMINAL_FAST_ALONE_SECONDS = 0.3
    host, worker = second_terminal
    results: dict[str, object] = {}
    with host.owners.lock_of("desk").held(Priority.FAST):
        fast = hold_a_fast_call_on_the_host(host, worker, results)
        reader = read_carol(worker, results)
        assert wait_for(lambda: "read" in results, timeout=5, every=0.01)  # the close still waits
        assert "fast" not in results
    fast.join(10)
    reader.join(10)
    assert results["read"].login == CAROL


def test_a_read_already_running_on_the_host_reads_no_further_account_while_a_protective_close_runs(
    second_terminal, settings
):
    """Ops run one terminal host for many terminals: the monitor's read of carol's terminal had
    begun when a risk manager's close for bob came. The read finishes the account it is on, then
    waits: the close has the host (its interpreter, cores and database) to itself until it ends."""
    settings.TERMINAL_FAST_ALONE_SECONDS = 30.0
    host, worker = second_terminal
    sim_account_create(DAVE, D("30000"), server=SERVER)
    terminal_pin("desk-2", [(DAVE, SERVER)])
    results: dict[str, object] = {}

    def read_carol_and_dave() -> None:
        with call_priority(Priority.MONITOR):
            results["read"] = worker.account_snapshots([(CAROL, SERVER), (DAVE, SERVER)])

    with host.owners.lock_of("desk").held(Priority.FAST):  # bob's terminal is busy: the close waits
        with host.owners.lock_of("desk-2").held(Priority.FAST):  # and so does the read, on carol
            reader = threading.Thread(target=read_carol_and_dave)
            reader.start()
            assert wait_for(lambda: host.owners.lock_of("desk-2").waiting == 1, timeout=5, every=0.001)
            fast = hold_a_fast_call_on_the_host(host, worker, results)
        # carol's account is read now; dave's, the next step, waits for the close.
        assert wait_for(lambda: host.owners.giving_way == 1, timeout=5, every=0.001)
        assert "read" not in results and host.owners.lock_of("desk-2").waiting == 0
    fast.join(10)
    reader.join(10)
    assert results["fast"].ok
    assert {snapshot.login for snapshot in results["read"].values()} == {CAROL, DAVE}


def test_a_caller_reads_its_answer_when_the_owner_rings_not_at_its_next_look(shared_terminal, monkeypatch):
    """The fast-lane worker waiting for the host's answer hears it ring: were it left to its
    periodic look at the row, it would wait a minute here."""
    from execution import owners as owners_module

    host, worker = shared_terminal
    host.account_snapshot(ALICE, SERVER)
    monkeypatch.setattr(owners_module, "ANSWER_LOOK_SECONDS", 60.0)
    answers: list[object] = []
    thread = threading.Thread(target=lambda: answers.extend(worker.account_snapshot(BOB, SERVER) for _ in range(3)))
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "the caller waited for its look, not for the ring"
    assert [a.login for a in answers] == [BOB, BOB, BOB]


def test_an_answer_whose_ring_is_lost_is_still_read_at_the_callers_next_look(shared_terminal, monkeypatch):
    from execution import owners as owners_module

    host, worker = shared_terminal
    host.account_snapshot(ALICE, SERVER)

    def answer_without_ringing(call, state, result, **_):
        TerminalCall.objects.filter(pk=call.pk).update(state=state, result=result)

    monkeypatch.setattr(owners_module, "_answer_write", answer_without_ringing)
    assert worker.account_snapshot(BOB, SERVER).balance == D("50000.00")


def test_the_owner_alerts_when_the_terminal_holds_another_account_after_a_trade(two_accounts):
    from alerts.models import Alert
    from execution.adapters.official import OfficialGateway

    mt5, intruder = SimulatedMetaTrader5(), SimulatedMetaTrader5()
    gateway = OfficialGateway(mt5, terminal_path="desk-x", magic=20260529, backend="simulator")
    intruder.initialize("desk-x")
    send = mt5.order_send

    def send_then_someone_logs_in(request):
        result = send(request)
        intruder.login(BOB, server=SERVER)  # a person at the terminal, a second bridge
        return result

    mt5.order_send = send_then_someone_logs_in
    assert gateway.open_position(ALICE, SERVER, symbol="EURUSD", side="buy", volume=D("0.1"), tag="b:x").ok
    alert = Alert.objects.get(kind="terminal_account_switched")
    assert str(ALICE) in alert.title and str(BOB) in alert.body


def test_the_watchdog_alerts_when_no_process_drives_a_terminal_and_not_while_one_does(shared_terminal):
    from alerts.models import Alert
    from risk.watchdog import Watchdog

    host, _ = shared_terminal
    watchdog = Watchdog(grace_seconds=0)
    watchdog.check()
    assert Alert.objects.filter(kind=Alert.Kind.TERMINAL_UNOWNED, subject="terminal:desk").exists()
    Alert.objects.all().delete()
    host.account_snapshot(ALICE, SERVER)  # the host drives it now
    watchdog.check()
    assert not Alert.objects.filter(kind=Alert.Kind.TERMINAL_UNOWNED, subject="terminal:desk").exists()


def test_the_terminal_host_takes_every_terminal_and_alerts_when_one_refuses_trades(shared_terminal, settings):
    from io import StringIO

    from alerts.models import Alert
    from execution.gateways import reset_gateway
    from execution.models import SimTerminal

    SimulatedMetaTrader5(trade_allowed=False).initialize("desk-terminal")  # someone pressed Algo Trading
    reset_gateway()
    out = StringIO()
    call_command("terminalhost", "--seconds", "1.5", stdout=out)
    assert "owning desk" in out.getvalue()
    assert Alert.objects.filter(kind=Alert.Kind.TERMINAL_TRADING_OFF, subject="terminal:desk").exists()
    assert SimTerminal.objects.get(path="desk-terminal").trade_allowed is False
    assert not TerminalLease.objects.filter(name="desk").exists()  # let go on the way out


def test_a_risk_monitor_hosting_the_terminals_reads_its_accounts_itself_with_hosts_only(
    shared_terminal, trader, settings, monkeypatch
):
    """Ops with one terminal host run the risk monitor as the host (riskmonitor --host-terminals,
    TERMINAL_OWNERS=hosts): it takes the terminal like a host, reads alice and bob there, in its
    own process, without a call row, and lets the terminal go when it stops."""
    from io import StringIO

    from execution.gateways import get_gateway, reset_gateway
    from policies.models import MonitorHeartbeat

    settings.TERMINAL_OWNERS = "hosts"
    reset_gateway()
    sent: list[str] = []
    monkeypatch.setattr(Owners, "_remote", lambda self, name, method, *rest: sent.append(method))
    ran_here: list[tuple[str, str]] = []
    run_local = TerminalRouter._run_local

    def recorded(self: TerminalRouter, name: str, method: str, args: Any, kwargs: Any) -> Any:
        ran_here.append((name, method))
        return run_local(self, name, method, args, kwargs)

    monkeypatch.setattr(TerminalRouter, "_run_local", recorded)
    out = StringIO()
    call_command("riskmonitor", "--iterations", "3", "--host-terminals", stdout=out)
    assert "hosting terminals" in out.getvalue()
    assert ("desk", "account_snapshots") in ran_here  # alice's reads, made here as the terminal's owner
    assert sent == []  # nothing sent to another process
    assert get_gateway().owners.host
    assert not TerminalLease.objects.filter(name="desk").exists()  # let go on the way out
    assert not MonitorHeartbeat.objects.exists()
    reset_gateway()


def test_a_call_its_owner_took_before_dying_fails_as_unknown_even_once_a_new_owner_holds_the_terminal(
    shared_terminal,
):
    host, worker = shared_terminal
    host.account_snapshot(ALICE, SERVER)
    stuck, release = threading.Event(), threading.Event()
    original = host._run_local

    def hang_on_trades(name, method, args, kwargs):
        if method == "open_position":
            stuck.set()
            release.wait(30)  # the owner is frozen mid-order_send, then killed
            raise GatewayUnavailable("killed")
        return original(name, method, args, kwargs)

    host.owners._run_local = hang_on_trades
    outcome: list[object] = []

    def send() -> None:
        try:
            outcome.append(
                worker.open_position(BOB, SERVER, symbol="EURUSD", side="buy", volume=D("0.1"), tag="b:orphan")
            )
        except GatewayUnavailable as exc:
            outcome.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    assert stuck.wait(10)
    host.owners._stop.set()  # it stops renewing: its lease lapses
    successor = process()
    try:
        assert wait_for(lambda: successor.owners.own_if_free("desk"), timeout=10, every=0.1)
        assert successor.owners.owns("desk")  # a new owner holds the terminal
        sender.join(15)
        assert not sender.is_alive(), "the caller waited on a call nobody will answer"
        (failed,) = outcome
        assert isinstance(failed, GatewayUnavailable) and "unknown" in failed.message
    finally:
        release.set()
        successor.owners.stop()


def test_the_owner_sweeps_calls_nobody_waits_for_any_more_and_keeps_the_rest(shared_terminal):
    from execution.owners import ABANDONED_MSC

    host, _ = shared_terminal
    host.account_snapshot(ALICE, SERVER)
    now = time.time_ns() // 1_000_000
    rows = {
        "given up": ("pending", now - 1),  # its caller stopped waiting before it was taken
        "orphaned answer": ("done", now - ABANDONED_MSC - 1),  # its caller died before reading it
        "fresh answer": ("done", now - 1),  # its caller is reading it now
        "waiting": ("pending", now + 60_000),
    }
    made = {
        label: TerminalCall.objects.create(
            terminal="desk", priority=3, method="status", payload=b"", state=state, caller="c", deadline_msc=deadline
        ).pk
        for label, (state, deadline) in rows.items()
    }
    host.owners._stop.set()  # its serving thread stops: this test drives the sweep
    host.owners._next_sweep = 0.0
    host.owners._claim()
    left = set(TerminalCall.objects.values_list("pk", flat=True))
    assert left >= {made["fresh answer"]} and made["given up"] not in left and made["orphaned answer"] not in left
