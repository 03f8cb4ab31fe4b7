"""open_position's `open_price` and `max_slippage_points` are honoured (issue 19): the order is sent
with that deviation, and a market further away than it is refused before anything reaches MT5,
whatever the symbol's execution mode (under market execution MT5 itself would fill anywhere)."""

from __future__ import annotations

import json

import pytest

from commands.models import CommandEvent
from commands.states import State
from execution.simulator.service import sim_set_price
from tests.test_execution import _terminal, positions, run, submit, trader  # noqa: F401  # fixtures

pytestmark = pytest.mark.django_db


def sent_requests(command) -> list[dict]:
    events = CommandEvent.objects.filter(command=command, kind=CommandEvent.Kind.ATTEMPT)
    return [json.loads(event.request) if isinstance(event.request, str) else event.request for event in events]


def test_alices_buy_at_1_0850_is_refused_when_eurusd_has_run_700_points_away(trader):  # noqa: F811
    sim_set_price("EURUSD", "1.09190")  # ask 1.09200: 700 points above the price alice saw
    command = run(
        submit(
            trader,
            "open_position",
            symbol="EURUSD",
            direction="buy",
            volume=0.1,
            open_price=1.085,
            max_slippage_points=20,
        )
    )
    assert command.state == State.REJECTED
    assert command.error_code == "slippage_exceeded"
    assert "700 points" in command.error_message
    assert positions() == []
    assert sent_requests(command) == []  # nothing reached MT5


def test_alices_open_price_without_max_slippage_points_allows_20_points(trader):  # noqa: F811
    sim_set_price("EURUSD", "1.08490")  # ask 1.08500
    far = run(submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1, open_price=1.08479))
    assert (far.state, far.error_code) == (State.REJECTED, "slippage_exceeded")
    near = run(submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1, open_price=1.08481))
    assert near.state == State.SUCCEEDED, near.error_message
    assert sent_requests(near)[0]["deviation"] == 20


def test_a_sell_is_compared_with_the_bid_and_sent_with_its_own_deviation(trader):  # noqa: F811
    sim_set_price("EURUSD", "1.08500")  # bid 1.08500, ask 1.08510
    command = run(
        submit(
            trader,
            "open_position",
            symbol="EURUSD",
            direction="sell",
            volume=0.1,
            open_price=1.08497,
            max_slippage_points=3,
        )
    )
    assert command.state == State.SUCCEEDED, command.error_message
    (request,) = sent_requests(command)
    assert request["deviation"] == 3
    assert request["price"] == pytest.approx(1.08497)


def test_max_slippage_points_zero_means_the_exact_price_not_the_default(trader):  # noqa: F811
    sim_set_price("EURUSD", "1.08500")
    command = run(
        submit(
            trader,
            "open_position",
            symbol="EURUSD",
            direction="sell",
            volume=0.1,
            open_price=1.08501,
            max_slippage_points=0,
        )
    )
    assert (command.state, command.error_code) == (State.REJECTED, "slippage_exceeded")
    exact = run(
        submit(
            trader,
            "open_position",
            symbol="EURUSD",
            direction="sell",
            volume=0.1,
            open_price=1.085,
            max_slippage_points=0,
        )
    )
    assert exact.state == State.SUCCEEDED, exact.error_message
    assert sent_requests(exact)[0]["deviation"] == 0


def test_under_instant_execution_the_deviation_reaches_mt5_which_requotes_beyond_it(trader):  # noqa: F811
    sim_set_price("USDJPY", "155.000")  # ask 155.012, instant execution
    command = run(
        submit(
            trader,
            "open_position",
            symbol="USDJPY",
            direction="buy",
            volume=0.1,
            open_price=155.010,
            max_slippage_points=5,
        )
    )
    assert command.state == State.SUCCEEDED, command.error_message
    (request,) = sent_requests(command)
    assert (request["price"], request["deviation"]) == (pytest.approx(155.01), 5)
    refused = run(
        submit(
            trader,
            "open_position",
            symbol="USDJPY",
            direction="buy",
            volume=0.1,
            open_price=154.9,
            max_slippage_points=10,
        )
    )
    assert (refused.state, refused.error_code) == (State.REJECTED, "slippage_exceeded")
