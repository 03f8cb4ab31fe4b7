"""Account snapshots: read live through the gateway, remembered for when the terminal is gone."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from bridgeproject.jsonutil import jsonable
from execution.gateway import AccountSnapshot, Gateway, PendingOrder, Position
from policies.models import TradingAccount


def position_json(position: Position) -> dict[str, Any]:
    return jsonable(
        {
            "ticket": position.ticket,
            "symbol": position.symbol,
            "side": position.side,
            "volume": position.volume,
            "price_open": position.price_open,
            "price_current": position.price_current,
            "sl": position.sl,
            "tp": position.tp,
            "profit": position.profit,
            "swap": position.swap,
            "commission": position.commission,
            "magic": position.magic,
            "comment": position.comment,
            "opened_at_utc": position.opened_at,
        }
    )


def order_json(order: PendingOrder) -> dict[str, Any]:
    return jsonable(
        {
            "ticket": order.ticket,
            "symbol": order.symbol,
            "type": order.order_type,
            "side": order.side,
            "volume": order.volume_current,
            "price_open": order.price_open,
            "sl": order.sl,
            "tp": order.tp,
            "comment": order.comment,
            "placed_at_utc": order.placed_at,
        }
    )


def snapshot_json(snapshot: AccountSnapshot) -> dict[str, Any]:
    """The sync view of PROTOCOL.md §5: balance, equity, margin, free margin, positions, orders."""
    return jsonable(
        {
            "login": snapshot.login,
            "server": snapshot.server,
            "currency": snapshot.currency,
            "currency_digits": snapshot.currency_digits,
            "leverage": snapshot.leverage,
            "balance": snapshot.balance,
            "credit": snapshot.credit,
            "equity": snapshot.equity,
            "margin": snapshot.margin,
            "free_margin": snapshot.margin_free,
            "margin_level": snapshot.margin_level,
            "profit": snapshot.profit,
            "trade_allowed": snapshot.trade_allowed,
            "observed_at_utc": snapshot.observed_at,
            "positions": [position_json(p) for p in snapshot.positions],
            "pending_orders": [order_json(o) for o in snapshot.orders],
        }
    )


def snapshot_refresh(*, account: TradingAccount, gateway: Gateway) -> dict[str, Any]:
    """Read the account live and remember it; raises GatewayUnavailable when the terminal is gone."""
    return snapshot_remember(account=account, snapshot=gateway.account_snapshot(account.login, account.server))


def snapshot_remember(*, account: TradingAccount, snapshot: AccountSnapshot) -> dict[str, Any]:
    """Keep the last snapshot seen, to serve (with its age) while the terminal is unreachable."""
    data = snapshot_json(snapshot)
    now = timezone.now()
    TradingAccount.objects.filter(pk=account.pk).update(last_snapshot=data, last_snapshot_at=now)
    account.last_snapshot, account.last_snapshot_at = data, now
    return data
