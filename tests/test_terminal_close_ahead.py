"""The polling risk monitor on a terminal backend closes a breach before recording it (``risk.ahead``).

Personas: alice (50040367) trades 1 lot EURUSD on the simulator; her policy v13 allows a single
trade to lose 2 % (2,000). Her terminal is driven by the ops team's terminal host (its owner);
the risk monitor is another process that reads her account through the host. When its read shows
her trade past the limit, the monitor sends the close through the host at once, under the tag of
the protective command about to be recorded, and records the action afterwards; the command then
finds the close by its tag and sends nothing again. A close the server refuses leaves the
command's own close to do the work; an account whose earlier action is still at work is left to
the engine; a close still running when the command runs is waited for.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal as D
from typing import Any

import pytest

from commands.models import Command
from commands.states import State
from execution import executors
from execution.adapters.router import TerminalRouter
from execution.gateways import reset_gateway, terminal_router
from execution.models import SimDeal
from execution.runner import command_execute
from execution.simulator import constants as c
from execution.simulator.service import sim_inject_fault, sim_set_price
from execution.simulator.terminal import SimulatedMetaTrader5
from execution.terminals import terminal_add
from policies.models import ProtectiveAction, SentAheadNote
from risk import protection
from risk.monitor import Monitor
from tests.conftest import LOGIN, SERVER

pytestmark = pytest.mark.django_db(transaction=True)


def process() -> TerminalRouter:
    """A gateway as a separate bridge process builds it (its own leases, adapters and threads)."""
    return terminal_router("simulator", magic=20260529)


class Closes:
    """Every close order_send alice's terminal runs: (position, comment, actions recorded then)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, gate: threading.Event | None = None) -> None:
        self.calls: list[tuple[int, str, int]] = []
        real = SimulatedMetaTrader5.order_send
        calls = self.calls

        def order_send(terminal: SimulatedMetaTrader5, request: dict[str, Any]) -> Any:
            if request.get("position"):
                calls.append((int(request["position"]), str(request["comment"]), ProtectiveAction.objects.count()))
                if gate is not None:
                    gate.wait(10)
            return real(terminal, request)

        monkeypatch.setattr(SimulatedMetaTrader5, "order_send", order_send)


class Sent:
    """The closes the monitor's gateway sent ahead: (ticket, tag, actions recorded then)."""

    def __init__(self, router: TerminalRouter, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, str, int]] = []
        real = router.close_ahead

        def close_ahead(login: int, server: str, position: Any, *, tag: str) -> Any:
            self.calls.append((position.ticket, tag, ProtectiveAction.objects.count()))
            return real(login, server, position, tag=tag)

        monkeypatch.setattr(router, "close_ahead", close_ahead)


@pytest.fixture
def desk(trader, settings):
    """Alice's terminal owned by the terminal host; the risk monitor's process reads it through
    the host, and its gateway is the one commands run on here."""
    settings.TERMINAL_LEASE_SECONDS, settings.TERMINAL_LEASE_RENEW_SECONDS = 1.0, 0.2
    terminal_add("alice-terminal", path="alice-terminal", accounts=[(LOGIN, SERVER)])
    host, monitor = process(), process()
    host.account_snapshot(LOGIN, SERVER)  # the host owns the terminal
    reset_gateway(monitor)
    yield host, monitor
    reset_gateway()
    # Both processes' threads end with the test (a close still on its way, the owners' callers),
    # so none touches the database after it.
    if monitor._closers is not None:
        monitor._closers.shutdown(wait=True)
    for router in (monitor, host):
        if router.owners is not None:
            router.owners.stop()


def her_losing_trade(host: TerminalRouter, volume: str = "1", tag: str = "b:alice") -> int:
    sim_set_price("EURUSD", "1.08500")
    return host.open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=D(volume), tag=tag).position


def the_price_falls_past_her_limit(price: str = "1.06000") -> None:
    sim_set_price("EURUSD", price)  # 1 lot from 1.08500: about -2,500, past the 2,000 limit


def a_cycle(router: TerminalRouter, *, closes_ahead: bool = True) -> None:
    monitor = Monitor(monitor_id="solo", gateway_factory=lambda: router, closes_ahead=closes_ahead)
    monitor.cycle(monitor.heartbeat(0, 0))


def closing_deals(ticket: int) -> list[str]:
    return [d.comment for d in SimDeal.objects.filter(position_id=ticket, entry=c.DEAL_ENTRY_OUT)]


def waits_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses an attempt makes on the terminal waiting for a close sent ahead."""
    polls: list[float] = []

    class Clock:
        @staticmethod
        def sleep(seconds: float) -> None:
            polls.append(seconds)
            time.sleep(seconds)

    monkeypatch.setattr(executors, "time", Clock)
    return polls


def calls_to_the_host(router: TerminalRouter, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The calls ``router`` sends to the terminal's owner from now on."""
    sent: list[str] = []
    assert router.owners is not None
    remote = router.owners._remote

    def counted(name: str, method: str, *rest: Any) -> Any:
        sent.append(method)
        return remote(name, method, *rest)

    monkeypatch.setattr(router.owners, "_remote", counted)
    return sent


def run(command: Command | None) -> Command:
    assert command is not None
    command_execute(command.pk)
    command.refresh_from_db()
    return command


def test_the_monitor_closes_alices_trade_through_her_terminals_owner_before_recording_it_and_never_twice(
    desk, monkeypatch
):
    host, monitor = desk
    closes, sent = Closes(monkeypatch), Sent(monitor, monkeypatch)
    ticket = her_losing_trade(host)
    the_price_falls_past_her_limit()
    a_cycle(monitor)

    action = ProtectiveAction.objects.get(rule_key="single_trade_loss", ticket=ticket)
    tag = protection.first_close_tag(action.action_id)
    assert sent.calls == [(ticket, tag, 0)]  # sent before the action existed, under its command's tag
    assert not SentAheadNote.objects.exists()  # its note went as the action was recorded
    to_the_host = calls_to_the_host(monitor, monkeypatch)
    command = run(action.command)
    assert to_the_host == []  # the fill and its deal came back with the close: no attempt sent
    assert command.envelope["sent_ahead"]["tag"] == tag
    assert command.state == State.SUCCEEDED and command.result["reconciled"] is True  # found by its tag
    assert [(t, comment) for t, comment, _ in closes.calls] == [(ticket, tag)]  # the command sent nothing
    assert closing_deals(ticket) == [tag]  # exactly one closing deal
    a_cycle(monitor)  # the goal held against MT5
    action.refresh_from_db()
    assert action.goal_met_at is not None and action.execution_status == "success"


def test_a_close_ahead_the_trade_server_refuses_is_left_to_the_protective_commands_own_close(desk, monkeypatch):
    host, monitor = desk
    closes, sent = Closes(monkeypatch), Sent(monitor, monkeypatch)
    ticket = her_losing_trade(host)
    sim_inject_fault("requote", symbol="EURUSD")  # the trade server refuses the first close
    the_price_falls_past_her_limit()
    a_cycle(monitor)

    action = ProtectiveAction.objects.get(rule_key="single_trade_loss", ticket=ticket)
    tag = protection.first_close_tag(action.action_id)
    assert sent.calls == [(ticket, tag, 0)]
    polls = waits_on_the_terminal(monkeypatch)
    command = run(action.command)
    assert polls == []  # the refusal was known here: the attempt did not wait for the close on the terminal
    assert command.envelope["sent_ahead"]["tag"] == tag
    assert command.state == State.SUCCEEDED, command.error_message
    (_, ahead, _), (_, own, _) = closes.calls  # the refused close, then the command's
    assert ahead == own == tag
    assert closing_deals(ticket) == [tag]
    a_cycle(monitor)
    action.refresh_from_db()
    assert action.goal_met_at is not None


def test_while_alices_earlier_action_is_at_work_her_next_breach_is_left_to_the_engine(desk, monkeypatch):
    host, monitor = desk
    sent = Sent(monitor, monkeypatch)
    first = her_losing_trade(host, tag="b:alice-1")
    the_price_falls_past_her_limit()
    a_cycle(monitor)
    earlier = ProtectiveAction.objects.get(ticket=first)
    assert [t for t, _, _ in sent.calls] == [first]  # no action at work: sent ahead
    assert earlier.command is not None and earlier.command.state == State.QUEUED  # its command still to run

    second = host.open_position(LOGIN, SERVER, symbol="EURUSD", side="buy", volume=D("1"), tag="b:alice-2").position
    the_price_falls_past_her_limit("1.03500")  # the second trade loses about 2,500 too
    a_cycle(monitor)
    later = ProtectiveAction.objects.get(ticket=second)
    assert [t for t, _, _ in sent.calls] == [first]  # nothing more sent ahead
    assert later.command is not None and "sent_ahead" not in later.command.envelope
    assert not SentAheadNote.objects.exists()
    assert run(later.command).state == State.SUCCEEDED
    assert len(closing_deals(second)) == 1


def test_a_close_ahead_still_running_when_the_command_runs_is_waited_for_and_not_sent_again(desk, monkeypatch):
    host, monitor = desk
    gate = threading.Event()
    closes = Closes(monkeypatch, gate)
    ticket = her_losing_trade(host)
    the_price_falls_past_her_limit()
    a_cycle(monitor)  # the close is held on the terminal: no answer yet

    action = ProtectiveAction.objects.get(rule_key="single_trade_loss", ticket=ticket)
    assert action.command is not None
    assert action.command.envelope["sent_ahead"]["in_flight"] == [ticket]  # no answer when recorded
    threading.Timer(0.3, gate.set).start()  # the terminal answers while the command waits
    command = run(action.command)
    assert command.state == State.SUCCEEDED and command.result["reconciled"] is True
    assert len(closes.calls) == 1  # the command sent nothing
    assert closing_deals(ticket) == [protection.first_close_tag(action.action_id)]


def test_a_lane_worker_running_the_command_waits_on_the_terminal_for_the_close_still_running(desk, monkeypatch):
    """Run by a fast-lane worker of another process (not the monitor's dispatcher), the command
    has no answer to wait for: its attempt looks on the terminal for the close by its tag (after
    the close, which holds the terminal) and for its position, and sends nothing for it."""
    host, monitor = desk
    gate = threading.Event()
    closes = Closes(monkeypatch, gate)
    ticket = her_losing_trade(host)
    the_price_falls_past_her_limit()
    a_cycle(monitor)
    action = ProtectiveAction.objects.get(rule_key="single_trade_loss", ticket=ticket)
    assert action.command is not None and action.command.envelope["sent_ahead"]["in_flight"] == [ticket]

    worker = process()
    reset_gateway(worker)
    threading.Timer(0.3, gate.set).start()
    command = run(action.command)
    assert command.state == State.SUCCEEDED and command.result["reconciled"] is True
    assert len(closes.calls) == 1
    assert len(closing_deals(ticket)) == 1
    reset_gateway(monitor)


def test_without_close_ahead_the_monitor_records_first_and_the_command_closes(desk, monkeypatch):
    host, monitor = desk
    closes = Closes(monkeypatch)
    ticket = her_losing_trade(host)
    the_price_falls_past_her_limit()
    a_cycle(monitor, closes_ahead=False)
    action = ProtectiveAction.objects.get(rule_key="single_trade_loss", ticket=ticket)
    assert closes.calls == []
    command = run(action.command)
    assert "sent_ahead" not in command.envelope and command.state == State.SUCCEEDED
    [(_, _, recorded_then)] = closes.calls
    assert recorded_then == 1


def test_a_lane_workers_command_does_not_wait_for_a_close_ahead_the_terminal_already_refused(desk, monkeypatch):
    """The close ahead is refused after the action was recorded (its answer had not come): the
    command, run by another process's lane worker, learns on the terminal's owner that the close
    was answered and closes the position itself at once, instead of waiting out the call timeout."""
    host, monitor = desk
    gate = threading.Event()
    closes = Closes(monkeypatch, gate)
    ticket = her_losing_trade(host)
    sim_inject_fault("requote", symbol="EURUSD")
    the_price_falls_past_her_limit()
    a_cycle(monitor)
    action = ProtectiveAction.objects.get(rule_key="single_trade_loss", ticket=ticket)
    assert action.command is not None and action.command.envelope["sent_ahead"]["in_flight"] == [ticket]

    reset_gateway(process())
    polls = waits_on_the_terminal(monkeypatch)
    threading.Timer(0.3, gate.set).start()
    command = run(action.command)
    assert command.state == State.SUCCEEDED, command.error_message
    assert len(polls) <= 2  # it looked again once the refusal came, not until the call timeout
    tag = protection.first_close_tag(action.action_id)
    assert [comment for _, comment, _ in closes.calls] == [tag, tag]  # the refused close, then the command's
    assert closing_deals(ticket) == [tag]
    reset_gateway(monitor)
