"""Injected faults: the clock outages are measured with, who is cut off by one, and how much of a
market deal a partial fill leaves filled.

A fault is a ``SimFault`` row. With ``remaining`` it hits the next matching ``order_send`` calls
and is consumed by them (``server.TradeServer._take_fault``). With ``until_msc`` it is an outage:
every matching call fails until then and nothing is consumed. An outage of ``no_connection``
cuts the terminal off altogether, reads included (``terminal.SimulatedMetaTrader5._ready``): they
answer ``None`` with -10004, the terminal drops its IPC link, and ``initialize``/``login`` fail
until the outage ends. Other kinds of outage hit ``order_send`` only, like their counted
versions.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from execution.simulator import sql, stamps


def clock() -> int:
    """Now, in epoch ms, for outages (a test moves it by replacing this function)."""
    return stamps.now_msc()


def cut_off(login: int | None) -> bool:
    """Is a terminal logged into ``login`` (None: not logged in) inside a ``no_connection``
    outage? Outages scoped to one symbol cut off only that symbol's trade requests."""
    logins = sql.outage_logins(clock())
    return None in logins or (login is not None and login in logins)


def partial_volume(volume: Decimal, step: Decimal) -> Decimal:
    """What a partial fill fills of ``volume``: half, rounded down to the volume step, at least
    one step (so a one-step order fills whole)."""
    half = ((volume / 2) / step).to_integral_value(rounding=ROUND_DOWN) * step
    return min(max(half, step), volume)
