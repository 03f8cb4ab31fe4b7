"""Account snapshots: read live through the gateway, remembered for when the terminal is gone.

Numbers as PROTOCOL §9 gives them in the API: money, prices and volumes are decimal strings with
exactly the account's currency digits, the symbol's digits and its volume step's places (a
symbol the terminal no longer knows keeps MT5's value as it came); an absent value is null."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from bridgeproject.jsonutil import blank_as_null, decimal_text, jsonable, places_of
from execution.gateway import AccountSnapshot, Gateway, PendingOrder, Position
from policies.models import TradingAccount


@dataclass(frozen=True, slots=True)
class Digits:
    price: int | None = None  # the symbol's digits
    volume: int | None = None  # its volume step's decimal places


def _text(value: Any, places: int | None) -> str | None:
    if value is None:
        return None
    return decimal_text(value, places) if places is not None else jsonable(value)


def symbol_digits(gateway: Gateway | None, login: int, server: str, symbols: set[str]) -> dict[str, Digits]:
    """Each symbol's digits, as the account's terminal states them (one read per symbol)."""
    found: dict[str, Digits] = {}
    if gateway is None:
        return found
    for symbol in sorted(symbols):
        info = gateway.symbol_info(login, server, symbol)
        if info is not None:
            found[symbol] = Digits(price=int(info.digits), volume=places_of(info.volume_step))
    return found


def position_json(position: Position, money: int, digits: Digits = Digits()) -> dict[str, Any]:
    return {
        "ticket": position.ticket,
        "symbol": position.symbol,
        "side": position.side,
        "volume": _text(position.volume, digits.volume),
        "price_open": _text(position.price_open, digits.price),
        "price_current": _text(position.price_current, digits.price),
        "sl": _text(position.sl or None, digits.price),
        "tp": _text(position.tp or None, digits.price),
        "profit": decimal_text(position.profit, money),
        "swap": decimal_text(position.swap, money),
        "commission": decimal_text(position.commission, money),
        "magic": position.magic,
        "comment": blank_as_null(position.comment),
        "opened_at_utc": jsonable(position.opened_at),
    }


def order_json(order: PendingOrder, digits: Digits = Digits()) -> dict[str, Any]:
    return {
        "ticket": order.ticket,
        "symbol": order.symbol,
        "type": order.order_type,
        "side": order.side,
        "volume": _text(order.volume_current, digits.volume),
        "price_open": _text(order.price_open, digits.price),
        "sl": _text(order.sl or None, digits.price),
        "tp": _text(order.tp or None, digits.price),
        "comment": blank_as_null(order.comment),
        "placed_at_utc": jsonable(order.placed_at),
    }


def snapshot_json(snapshot: AccountSnapshot, symbols: dict[str, Digits] | None = None) -> dict[str, Any]:
    """The sync view of PROTOCOL.md §5: balance, equity, margin, free margin, positions, orders."""
    money = int(snapshot.currency_digits)
    known = symbols or {}
    return {
        "login": snapshot.login,
        "server": snapshot.server,
        "currency": snapshot.currency,
        "currency_digits": money,
        "leverage": snapshot.leverage,
        "balance": decimal_text(snapshot.balance, money),
        "credit": decimal_text(snapshot.credit, money),
        "equity": decimal_text(snapshot.equity, money),
        "margin": decimal_text(snapshot.margin, money),
        "free_margin": decimal_text(snapshot.margin_free, money),
        "margin_level": decimal_text(snapshot.margin_level, 2),  # a percentage
        "profit": decimal_text(snapshot.profit, money),
        "trade_allowed": snapshot.trade_allowed,
        "observed_at_utc": jsonable(snapshot.observed_at),
        "positions": [position_json(p, money, known.get(p.symbol, Digits())) for p in snapshot.positions],
        "pending_orders": [order_json(o, known.get(o.symbol, Digits())) for o in snapshot.orders],
    }


def snapshot_refresh(*, account: TradingAccount, gateway: Gateway) -> dict[str, Any]:
    """Read the account live and remember it; raises GatewayUnavailable when the terminal is gone."""
    return snapshot_remember(
        account=account, snapshot=gateway.account_snapshot(account.login, account.server), gateway=gateway
    )


def snapshot_remember(
    *, account: TradingAccount, snapshot: AccountSnapshot, gateway: Gateway | None = None
) -> dict[str, Any]:
    """Keep the last snapshot seen, to serve (with its age) while the terminal is unreachable.
    With the gateway, prices and volumes get their symbols' digits."""
    symbols = {p.symbol for p in snapshot.positions} | {o.symbol for o in snapshot.orders}
    data = snapshot_json(snapshot, symbol_digits(gateway, account.login, account.server, symbols))
    now = timezone.now()
    TradingAccount.objects.filter(pk=account.pk).update(last_snapshot=data, last_snapshot_at=now)
    account.last_snapshot, account.last_snapshot_at = data, now
    return data
