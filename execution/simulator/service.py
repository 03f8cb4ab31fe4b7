"""Services around the simulated trade server: seeding, accounts, quotes and injected faults.

The rest of the bridge (seed_demo, the mt5sim command, the feed, tests) goes through these
functions instead of touching the ``Sim*`` tables, so the simulator keeps its invariants.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import F

from execution.models import SimAccount, SimDeal, SimFault, SimFaultKind, SimPosition, SimSymbol, SimTicketSequence
from execution.simulator import constants as c
from execution.simulator import sql
from execution.simulator.pricing import price_round

if TYPE_CHECKING:
    from execution.simulator.server import Triggered

# Tickets start high, like a real server's, so they never look like row ids.
TICKET_START = 50_000_000

FX = {"trade_calc_mode": c.SYMBOL_CALC_MODE_FOREX, "trade_contract_size": Decimal("100000")}
FOK_IOC = c.SYMBOL_FILLING_FOK | c.SYMBOL_FILLING_IOC

# The five symbols every simulated server carries. XAUUSD and US30 allow IOC but not FOK and
# USDJPY is on instant execution (FOK only), so the adapter's filling logic is always exercised.
SEED_SYMBOLS: tuple[dict[str, Any], ...] = (
    {
        "name": "EURUSD", "description": "Euro vs US Dollar", "currency_base": "EUR", "currency_profit": "USD",
        "currency_margin": "EUR", "digits": 5, "point": Decimal("0.00001"), **FX, "filling_mode": FOK_IOC,
        "typical_spread": 10, "swap_long": Decimal("-7.20"), "swap_short": Decimal("2.10"),
        "commission_per_lot": Decimal("3.50"), "anchor": Decimal("1.08500"),
    },
    {
        "name": "GBPUSD", "description": "Great Britain Pound vs US Dollar", "currency_base": "GBP",
        "currency_profit": "USD", "currency_margin": "GBP", "digits": 5, "point": Decimal("0.00001"), **FX,
        "filling_mode": FOK_IOC, "typical_spread": 14, "swap_long": Decimal("-5.40"), "swap_short": Decimal("1.20"),
        "commission_per_lot": Decimal("3.50"), "anchor": Decimal("1.27000"),
    },
    {
        "name": "USDJPY", "description": "US Dollar vs Japanese Yen", "currency_base": "USD", "currency_profit": "JPY",
        "currency_margin": "USD", "digits": 3, "point": Decimal("0.001"), **FX, "filling_mode": c.SYMBOL_FILLING_FOK,
        "trade_exemode": c.SYMBOL_TRADE_EXECUTION_INSTANT, "typical_spread": 12, "swap_long": Decimal("8.10"),
        "swap_short": Decimal("-15.30"), "commission_per_lot": Decimal("3.50"), "anchor": Decimal("155.000"),
    },
    {
        "name": "XAUUSD", "description": "Gold vs US Dollar", "currency_base": "XAU", "currency_profit": "USD",
        "currency_margin": "USD", "digits": 2, "point": Decimal("0.01"),
        "trade_calc_mode": c.SYMBOL_CALC_MODE_CFDLEVERAGE, "trade_contract_size": Decimal("100"),
        "filling_mode": c.SYMBOL_FILLING_IOC, "typical_spread": 25, "volume_max": Decimal("50"),
        "swap_long": Decimal("-28.50"), "swap_short": Decimal("12.40"), "commission_per_lot": Decimal("0"),
        "anchor": Decimal("2350.00"),
    },
    {
        "name": "US30", "description": "Dow Jones Industrial Average (cash)", "currency_base": "USD",
        "currency_profit": "USD", "currency_margin": "USD", "digits": 1, "point": Decimal("0.1"),
        "trade_calc_mode": c.SYMBOL_CALC_MODE_CFDLEVERAGE, "trade_contract_size": Decimal("1"),
        "filling_mode": c.SYMBOL_FILLING_IOC, "typical_spread": 20, "volume_min": Decimal("0.1"),
        "volume_step": Decimal("0.1"), "volume_max": Decimal("50"), "swap_long": Decimal("-4.80"),
        "swap_short": Decimal("-1.10"), "commission_per_lot": Decimal("0"), "anchor": Decimal("39000.0"),
    },
)  # fmt: skip
SEED_NAMES = frozenset(spec["name"] for spec in SEED_SYMBOLS)


def now_msc() -> int:
    return time.time_ns() // 1_000_000


def ensure_symbols() -> None:
    """Create the seed symbols that are missing (safe to race: conflicts are ignored)."""
    stamp = now_msc()
    rows = []
    for spec in SEED_SYMBOLS:
        ask = price_round(spec["anchor"] + spec["typical_spread"] * spec["point"], spec["digits"])
        rows.append(SimSymbol(**spec, bid=spec["anchor"], ask=ask, price_time_msc=stamp))
    SimSymbol.objects.bulk_create(rows, ignore_conflicts=True)


def allocate_tickets(count: int) -> list[int]:
    """Reserve ``count`` consecutive tickets in one statement.

    The row lock taken by the UPDATE is held until the caller's transaction ends, which is
    what keeps tickets unique across processes; callers allocate as late as they can.
    """
    for _ in range(2):
        last = sql.advance_ticket_sequence(count)
        if last is not None:
            return list(range(last - count + 1, last + 1))
        # First use (or a test database flush): create the counter and try again.
        SimTicketSequence.objects.bulk_create([SimTicketSequence(id=1, value=TICKET_START)], ignore_conflicts=True)
    raise RuntimeError("the simulator's ticket sequence could not be created")


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
    from execution.simulator.server import TradeServer  # it imports this module

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
