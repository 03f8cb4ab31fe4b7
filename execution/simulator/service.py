"""Services around the simulated trade server: seeding, accounts, quotes and injected faults.

The rest of the bridge (seed_demo, the mt5sim command, the feed, tests) goes through these
functions instead of touching the ``Sim*`` tables, so the simulator keeps its invariants.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.db.models import F

from execution.models import SimAccount, SimDeal, SimFault, SimFaultKind, SimPosition, SimSymbol
from execution.simulator import constants as c
from execution.simulator.pricing import price_round
from execution.simulator.server import TradeServer, Triggered
from execution.simulator.stamps import allocate_tickets, now_msc
from execution.simulator.symbols import SEED_NAMES, ensure_symbols


@transaction.atomic
def sim_account_create(
    login: int,
    balance: Decimal | float | str,
    server: str = "Broker-Server",
    currency: str = "USD",
    leverage: int = 100,
    *,
    password: str = "",
    name: str = "",
) -> tuple[SimAccount, bool]:
    """Create a simulated account with an initial balance deal; an existing one is returned unchanged."""
    ensure_symbols()
    existing = SimAccount.objects.filter(login=login, server=server).first()
    if existing is not None:
        return existing, False
    amount = Decimal(str(balance))
    account = SimAccount.objects.create(
        login=login,
        server=server,
        currency=currency.upper(),
        currency_digits=0 if currency.upper() == "JPY" else 2,
        leverage=leverage,
        balance=amount,
        password=password,
        name=name or f"Simulated {login}",
    )
    if amount:
        (ticket,) = allocate_tickets(1)
        SimDeal.objects.create(
            ticket=ticket,
            account=account,
            type=c.DEAL_TYPE_BALANCE,
            entry=c.DEAL_ENTRY_IN,
            reason=c.DEAL_REASON_CLIENT,
            profit=amount,
            comment="Initial deposit",
            time_msc=now_msc(),
        )
    return account, True


@dataclass(frozen=True)
class Quote:
    symbol: str
    bid: Decimal
    ask: Decimal
    time_msc: int
    # What the new quote set off: stops hit, pending orders filled (``server.TradeServer.fire_triggers``).
    triggered: tuple[Triggered, ...] = ()


def _symbol_row(name: str) -> SimSymbol:
    symbol = SimSymbol.objects.filter(name=name).first()
    if symbol is None and name in SEED_NAMES:
        ensure_symbols()
        symbol = SimSymbol.objects.filter(name=name).first()
    if symbol is None:
        raise LookupError(f"unknown symbol {name!r}")
    return symbol


def sim_set_price(symbol: str, bid: Decimal | float | str, ask: Decimal | float | str | None = None) -> Quote:
    """Set a quote; without ``ask`` the symbol's typical spread is added to ``bid``."""
    row = _symbol_row(symbol)
    new_bid = price_round(Decimal(str(bid)), row.digits)
    if ask is None:
        new_ask = price_round(new_bid + row.typical_spread * row.point, row.digits)
    else:
        new_ask = price_round(Decimal(str(ask)), row.digits)
    if new_bid <= 0 or new_ask < new_bid:
        raise ValueError(f"invalid quote for {symbol}: bid {new_bid}, ask {new_ask}")
    stamp = now_msc()
    SimSymbol.objects.filter(pk=row.pk).update(bid=new_bid, ask=new_ask, price_time_msc=stamp)
    return Quote(row.name, new_bid, new_ask, stamp, tuple(sim_fire_triggers([row.name])))


def sim_fire_triggers(symbols: list[str] | None = None) -> list[Triggered]:
    """Close the positions whose SL/TP the symbols' quotes reached and fill the pending orders
    they reached, each in its own transaction (after the quote's own has committed)."""
    return TradeServer.fire_triggers(symbols)


def sim_set_market_open(symbol: str, is_open: bool) -> None:
    """Open or close a symbol's trading session (closed: every trade request gets 10018)."""
    SimSymbol.objects.filter(pk=_symbol_row(symbol).pk).update(sessions_open=is_open)


def sim_random_walk_step(
    symbols: list[str] | None = None, *, rng: random.Random | None = None, reversion: float = 0.01
) -> list[Quote]:
    """Move every quote one step of a mean-reverting random walk around its anchor, then fire
    what the new quotes reached (stops, pending orders).

    Mean reversion keeps the demo's prices near the panel's examples (EURUSD ~1.0850, so the
    quick test's SL 1.0800 / TP 1.0900 stay valid), while the noise keeps P/L moving.
    """
    quotes = _random_walk(symbols, rng=rng, reversion=reversion)
    triggered = sim_fire_triggers([q.symbol for q in quotes])
    return [
        Quote(q.symbol, q.bid, q.ask, q.time_msc, tuple(t for t in triggered if t.symbol == q.symbol)) for q in quotes
    ]


@transaction.atomic
def _random_walk(symbols: list[str] | None, *, rng: random.Random | None, reversion: float) -> list[Quote]:
    ensure_symbols()
    rng = rng or random.Random()
    rows = list(SimSymbol.objects.filter(name__in=symbols) if symbols else SimSymbol.objects.all())
    stamp = now_msc()
    quotes = []
    for row in rows:
        point = row.point
        mid = (row.bid + row.ask) / 2
        step = Decimal(str(rng.gauss(0.0, float(max(row.typical_spread, 1))))) * point
        mid = mid + (row.anchor - mid) * Decimal(str(reversion)) + step
        spread = max(1, round(row.typical_spread * rng.uniform(0.8, 1.3))) * point
        row.bid = price_round(max(mid - spread / 2, point), row.digits)
        row.ask = price_round(row.bid + spread, row.digits)
        row.price_time_msc = stamp
        quotes.append(Quote(row.name, row.bid, row.ask, stamp))
    SimSymbol.objects.bulk_update(rows, ["bid", "ask", "price_time_msc"])
    return quotes


def sim_inject_fault(kind: str, symbol: str | None = None, login: int | None = None, count: int = 1) -> SimFault:
    """Make the next ``count`` matching order_send calls fail the way ``kind`` says."""
    if kind not in SimFaultKind.values:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(SimFaultKind.values)}")
    if count < 1:
        raise ValueError("count must be at least 1")
    return SimFault.objects.create(kind=kind, symbol=symbol or "", login=login, remaining=count)


def sim_clear_faults() -> int:
    return SimFault.objects.filter(remaining__gt=0).update(remaining=0)


@transaction.atomic
def sim_apply_rollover() -> int:
    """Charge one night's swap to every open position (what the server does at rollover)."""
    updated = 0
    for position in SimPosition.objects.select_for_update().select_related("symbol"):
        rate = position.symbol.swap_long if position.type == c.POSITION_TYPE_BUY else position.symbol.swap_short
        if rate:
            charge = (rate * position.volume).quantize(Decimal("0.01"))
            SimPosition.objects.filter(pk=position.pk).update(swap=F("swap") + charge)
            updated += 1
    return updated
