"""Services around the simulated trade server: seeding, accounts, quotes and injected faults.

The rest of the bridge (seed_demo, the mt5sim command, the feed, tests) goes through these
functions instead of touching the ``Sim*`` tables, so the simulator keeps its invariants.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F, Q

from execution.models import SimAccount, SimDeal, SimFault, SimFaultKind, SimPosition, SimSymbol, SimTerminal
from execution.simulator import constants as c
from execution.simulator import faults, sql
from execution.simulator.pricing import money, price_round
from execution.simulator.request import Request
from execution.simulator.server import Outcome, TradeServer, Triggered, filling_for
from execution.simulator.stamps import allocate_tickets, now_msc
from execution.simulator.symbols import SEED_NAMES, ensure_symbols
from execution.simulator.valuation import Valuation

# ``mt5sim account create --margin-mode``: the account's ACCOUNT_MARGIN_MODE_*.
MARGIN_MODES = {
    "netting": c.ACCOUNT_MARGIN_MODE_RETAIL_NETTING,
    "hedging": c.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING,
}


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
    margin_mode: str = "hedging",
) -> tuple[SimAccount, bool]:
    """Create a simulated account with an initial balance deal; an existing one is returned
    unchanged. ``margin_mode`` is ``hedging`` (a position per deal in) or ``netting`` (one
    position per symbol)."""
    if margin_mode not in MARGIN_MODES:
        raise ValueError(f"unknown margin mode {margin_mode!r}; expected one of {', '.join(MARGIN_MODES)}")
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
        margin_mode=MARGIN_MODES[margin_mode],
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


def sim_inject_fault(
    kind: str, symbol: str | None = None, login: int | None = None, count: int = 1, *, seconds: float | None = None
) -> SimFault:
    """Make the next ``count`` matching order_send calls fail the way ``kind`` says, or, with
    ``seconds``, every matching call during that many seconds from now (an outage; for
    ``no_connection`` every terminal call, reads included: see ``faults``)."""
    if kind not in SimFaultKind.values:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(SimFaultKind.values)}")
    if seconds is not None:
        if seconds <= 0:
            raise ValueError("seconds must be more than 0")
        until = faults.clock() + round(seconds * 1000)
        return SimFault.objects.create(kind=kind, symbol=symbol or "", login=login, remaining=0, until_msc=until)
    if count < 1:
        raise ValueError("count must be at least 1")
    return SimFault.objects.create(kind=kind, symbol=symbol or "", login=login, remaining=count)


def sim_clear_faults(login: int | None = None) -> int:
    """End every pending fault and running outage, or only those injected for ``login`` (a
    fault for any account stays); returns how many. Rows stay, as the record of what was
    injected: a cleared count is 0, a cleared outage ends now."""
    now = faults.clock()
    active = SimFault.objects.filter(Q(remaining__gt=0) | Q(until_msc__gt=now))
    if login is not None:
        active = active.filter(login=login)
    ended = active.filter(until_msc__gt=now).update(remaining=0, until_msc=now)
    return ended + active.update(remaining=0)


def _find_account(login: int, server: str | None) -> SimAccount:
    accounts = SimAccount.objects.filter(login=login)
    if server:
        accounts = accounts.filter(server=server)
    found = list(accounts[:2])
    if len(found) != 1:
        where = f"@{server}" if server else ""
        raise LookupError(
            f"no simulated account {login}{where}" if not found else f"login {login} is on several servers: name one"
        )
    return found[0]


def sim_set_trade_disabled(login: int, disabled: bool, server: str | None = None) -> SimAccount:
    """Disable or enable the user's trade right (the Manager API's USER_RIGHT_TRADE_DISABLED;
    the terminal's ``account_info().trade_allowed`` is its inverse). Disabled, every request
    from the user's terminal is refused with 10017, closes included; a dealer can still close
    (``sim_dealer_close``), and stops and pending orders still fire on the server."""
    account = _find_account(login, server)
    SimAccount.objects.filter(pk=account.pk).update(trade_allowed=not disabled)
    account.refresh_from_db()
    return account


def sim_dealer_close(
    login: int, ticket: int, *, volume: Decimal | None = None, server: str | None = None, comment: str = "dealer"
) -> Outcome:
    """Close ``volume`` lots (all when None) of a position at market as a dealer would, from the
    server side: the user's rights (trade, Expert) do not apply, the symbol's session does. The
    seat the Manager API surface will act through; returns the trade server's answer.

    The deal's reason is DEAL_REASON_CLIENT: the MetaTrader5 module's enum has no value for a
    dealer, so the simulator records what a terminal would show for a deal it did not send."""
    account = _find_account(login, server)
    position = SimPosition.objects.select_related("symbol").filter(account=account, ticket=ticket).first()
    if position is None:
        raise LookupError(f"no open position {ticket} on {login}")
    is_buy = position.type == c.POSITION_TYPE_BUY
    symbol = position.symbol
    req = Request(
        action=c.TRADE_ACTION_DEAL, symbol=symbol.name, position=ticket, comment=comment,
        volume=float(volume if volume is not None else position.volume),
        type=c.ORDER_TYPE_SELL if is_buy else c.ORDER_TYPE_BUY, price=float(symbol.bid if is_buy else symbol.ask),
        type_filling=filling_for(symbol),
    )  # fmt: skip
    valuation = Valuation(account.currency, account.currency_digits, account.leverage)
    server_ = TradeServer(account.pk, valuation, reason=c.ORDER_REASON_CLIENT, dealer=True)
    with transaction.atomic():
        return server_.execute(req, dry_run=False)


def sim_account_state(login: int, server: str | None = None) -> dict[str, Any]:
    """The simulated account as an operator sees it (``mt5sim account show``): its money valued
    at the current quotes, its margin mode and its rights. Read straight from the trade
    server's rows, so it answers during an outage too. ``terminal`` names the terminal(s) logged
    into it now (null when none is)."""
    account = _find_account(login, server)
    valuation = Valuation(account.currency, account.currency_digits, account.leverage)
    positions = sql.account_position_rows(account.pk)
    floating, margin = valuation.exposure(positions)
    equity = account.balance + account.credit + floating
    digits = account.currency_digits
    level = (equity / margin * 100).quantize(Decimal("0.01")) if margin else Decimal("0.00")
    return {
        "login": account.login,
        "server": account.server,
        "currency": account.currency,
        "leverage": account.leverage,
        "balance": str(money(account.balance, digits)),
        "credit": str(money(account.credit, digits)),
        "equity": str(money(equity, digits)),
        "margin": str(money(margin, digits)),
        "margin_free": str(money(equity - margin, digits)),
        "margin_level": str(level),
        "margin_mode": c.name_of("ACCOUNT_MARGIN_MODE_", account.margin_mode),
        "trade_allowed": account.trade_allowed,
        "trade_disabled": not account.trade_allowed,
        "trade_expert": account.trade_expert,
        "positions": len(positions),
        "terminal": ", ".join(sorted(SimTerminal.objects.filter(account=account).values_list("path", flat=True)))
        or None,
    }


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
