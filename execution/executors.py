"""What each command type does on MT5. One function per `command_type`, each returning a Step.

Every trade request carries the command's tag (magic + comment), so an attempt that follows
another — after a lost answer, or a worker that died mid-call — first looks for what the
earlier attempt did (`reconcile`) and never sends twice what already happened.

On a netting account (one position per symbol) an `open_position` against the symbol's
position would reduce, close or reverse it: it is refused before anything is sent
(`netting_opposite_position`); closing is `close_position`'s and `close_positions`' work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from commands.models import Command, CommandType
from commands.states import State
from execution import hooks
from execution.gateway import (
    DONE,
    RETRY,
    Deal,
    Gateway,
    Position,
    TradeResult,
    order_tag,
)
from policies.models import TradingAccount

# The deviation an open_position is sent with when it gives no max_slippage_points (MT5 points).
DEFAULT_DEVIATION_POINTS = 20


@dataclass
class Step:
    """The outcome of one execution of a command: a terminal state, or a retry."""

    state: State
    result: dict[str, Any] = field(default_factory=dict)
    error_code: str = ""
    error_message: str = ""
    retry: bool = False


@dataclass
class Context:
    command: Command
    gateway: Gateway
    record: Callable[[TradeResult], None]
    # True when an earlier attempt may have reached the terminal: look before sending.
    reconcile: bool

    @property
    def account(self) -> TradingAccount:
        return self.command.account

    @property
    def login(self) -> int:
        return self.command.account.login

    @property
    def server(self) -> str:
        return self.command.account.server

    @property
    def tag(self) -> str:
        return order_tag(self.command.command_id)

    def deals(self) -> tuple[Deal, ...]:
        since = self.command.received_at - timedelta(minutes=1)
        return self.gateway.deals_by_tag(self.login, self.server, tag=self.tag, since=since)


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _trade_json(result: TradeResult) -> dict[str, Any]:
    data = {
        "retcode": result.retcode,
        "retcode_name": result.retcode_name,
        "message": result.message,
        "order": result.order,
        "deal": result.deal,
        "position": result.position,
        "volume": str(result.volume),
        "price": str(result.price),
    }
    if result.partial:
        # Filled in part (10010): ``volume`` is the part filled; a close left the rest open.
        data["partial"] = True
        data["requested_volume"] = str(result.requested_volume)
    return data


def _deal_json(deal: Deal) -> dict[str, Any]:
    return {
        "deal": deal.ticket,
        "order": deal.order,
        "position": deal.position_id,
        "symbol": deal.symbol,
        "entry": deal.entry,
        "volume": str(deal.volume),
        "price": str(deal.price),
        "profit": str(deal.profit),
        "reconciled": True,
    }


def closed_by_deal(deal: Deal) -> Step:
    """A close found done: its closing deal is its result (as when reconciled by tag)."""
    return Step(State.SUCCEEDED, _deal_json(deal))


def _from_result(result: TradeResult) -> Step:
    if result.outcome == DONE:
        return Step(State.SUCCEEDED, _trade_json(result))
    return Step(
        State.FAILED,
        _trade_json(result),
        error_code=result.retcode_name.lower(),
        error_message=result.message,
        retry=result.outcome == RETRY,
    )


def _blocked_from_trading(ctx: Context) -> Step | None:
    """The bridge-enforced rules that reject a new position before MT5 is asked."""
    account = ctx.account
    if not account.trading_enabled:
        return Step(
            State.REJECTED,
            error_code="trading_disabled",
            error_message=account.trading_disabled_reason or "Trading is disabled for this account.",
        )
    if account.account_status != "active":
        return Step(
            State.REJECTED,
            error_code="account_not_active",
            error_message=f"account_status is {account.account_status!r}.",
        )
    reason = hooks.open_position_guard(account)
    if reason is not None:
        return Step(State.REJECTED, error_code=reason[0], error_message=reason[1])
    return None


def open_position(ctx: Context) -> Step:
    blocked = _blocked_from_trading(ctx)
    if blocked is not None:
        return blocked
    payload = ctx.command.payload
    if ctx.reconcile:
        opened = [deal for deal in ctx.deals() if deal.entry == "in"]
        if opened:
            return Step(State.SUCCEEDED, _opened_json(ctx, opened[0]))
    symbol = payload["symbol"]
    info = ctx.gateway.symbol_info(ctx.login, ctx.server, symbol)
    if info is None:
        return Step(
            State.REJECTED, error_code="unknown_symbol", error_message=f"{symbol} is not traded on this server."
        )
    slippage = payload.get("max_slippage_points")
    deviation = DEFAULT_DEVIATION_POINTS if slippage is None else int(slippage)
    open_price = _dec(payload.get("open_price"))
    if open_price is not None:
        # MT5 holds a request to its price and deviation only under instant or request execution;
        # under market execution (most brokers) it fills at whatever the market is. So the bridge
        # compares the quote with open_price itself, before sending, whatever the symbol's mode.
        market = info.ask if payload["direction"] == "buy" else info.bid
        away = abs(market - open_price) / info.point if info.point > 0 else Decimal(0)
        if away > deviation:
            return Step(
                State.REJECTED,
                error_code="slippage_exceeded",
                error_message=(
                    f"The market ({'ask' if payload['direction'] == 'buy' else 'bid'} {market}) is {away:f} points"
                    f" from open_price {open_price}; max_slippage_points is {deviation}. Nothing was sent."
                ),
            )
    limited = hooks.open_position_limits(ctx.account, payload, ctx.gateway)
    if limited is not None:
        return Step(State.REJECTED, limited[2], error_code=limited[0], error_message=limited[1])
    held = ctx.gateway.netting_position(ctx.login, ctx.server, symbol)
    if held is not None and held.side != payload["direction"]:
        return Step(
            State.REJECTED,
            error_code="netting_opposite_position",
            error_message=(
                f"The account nets positions and holds position {held.ticket} ({held.side} {held.volume} {symbol}):"
                f" a {payload['direction']} would reduce, close or reverse it. Close it with close_position."
            ),
        )
    result = ctx.gateway.open_position(
        ctx.login,
        ctx.server,
        symbol=symbol,
        side=payload["direction"],
        volume=Decimal(payload["volume"]),
        price=_dec(payload.get("open_price")),
        sl=_dec(payload.get("stop_loss")),
        tp=_dec(payload.get("take_profit")),
        deviation=deviation,
        tag=ctx.tag,
    )
    ctx.record(result)
    return _from_result(result)


def _opened_json(ctx: Context, deal: Deal) -> dict[str, Any]:
    """An open found by its tag: its deal, and the position it acted on. On a netting account
    the deal's ``position_id`` is the position's identifier, whose ticket differs after a
    reversal: the symbol's position with that identifier gives the ticket."""
    data = _deal_json(deal)
    held = ctx.gateway.netting_position(ctx.login, ctx.server, deal.symbol)
    if held is not None and held.identifier == deal.position_id:
        data["position"] = held.ticket
    return data


def _close(ctx: Context, position: Position, volume: Decimal | None, closed: dict[int, Deal]) -> TradeResult | None:
    """Close one position unless an earlier attempt already did (then None)."""
    if position.ticket in closed:
        return None
    result = ctx.gateway.close_position(ctx.login, ctx.server, ticket=position.ticket, volume=volume, tag=ctx.tag)
    ctx.record(result)
    return result


CLOSING_ENTRIES = ("out", "inout", "out_by")
# How often a close sent ahead whose answer had not come is looked for again.
SENT_AHEAD_POLL_SECONDS = 0.05


def _closed_by_this_command(ctx: Context) -> dict[int, Deal]:
    closed = {} if not ctx.reconcile else {d.position_id: d for d in ctx.deals() if d.entry in CLOSING_ENTRIES}
    ahead = (ctx.command.envelope or {}).get("sent_ahead")
    if ahead:
        closed = {**_closed_ahead(ctx, ahead), **closed}
    return closed


def _closed_ahead(ctx: Context, ahead: dict[str, Any]) -> dict[int, Deal]:
    """The closes a risk monitor sent before this command was recorded (``sent_ahead`` in its
    envelope; ``risk.ahead``): found by their tag. A close whose answer had not come when
    the command was recorded is waited for, as a lost answer is: until its position is gone or its
    deal is found, at most until ``until`` (the monitor's answer timeout). Nothing is sent for a
    position meanwhile, so it is never closed twice; after that the command goes on as a
    reconciled one (a lost request that never executed is then sent again)."""
    since = datetime.fromisoformat(ahead["sent_at"]) - timedelta(minutes=1)
    until = datetime.fromisoformat(ahead["until"])
    waiting = set(ahead.get("in_flight") or ())
    # On a terminal backend the closes run on the terminal's owner, as this attempt does: one
    # answered there is in flight no more (asked before the deals, so a fill's deal is among them).
    answered: Callable[[str], set[int]] | None = getattr(ctx.gateway, "closes_answered", None)

    def closed_by_tag() -> dict[int, Deal]:
        found = ctx.gateway.deals_by_tag(ctx.login, ctx.server, tag=ahead["tag"], since=since)
        return {d.position_id: d for d in found if d.entry in CLOSING_ENTRIES}

    while True:
        done_here = answered(ahead["tag"]) if answered is not None and waiting else set()
        closed = closed_by_tag()
        waiting -= closed.keys() | done_here
        gone = {t for t in waiting if ctx.gateway.position(ctx.login, ctx.server, t) is None}
        if gone:  # closed after the deals were read: read them again, the close's deal among them
            closed = closed_by_tag()
        waiting -= gone
        if not waiting or timezone.now() >= until:
            return closed
        time.sleep(SENT_AHEAD_POLL_SECONDS)


def close_position(ctx: Context) -> Step:
    payload = ctx.command.payload
    ticket = int(payload["ticket"])
    closed = _closed_by_this_command(ctx)
    if ticket in closed:
        return closed_by_deal(closed[ticket])
    position = ctx.gateway.position(ctx.login, ctx.server, ticket)
    if position is None:
        return Step(State.REJECTED, error_code="position_not_found", error_message=f"No open position {ticket}.")
    volume = _dec(payload.get("volume"))
    if volume is not None and volume > position.volume:
        return Step(
            State.REJECTED, error_code="invalid_volume", error_message=f"Position {ticket} has {position.volume} lots."
        )
    result = _close(ctx, position, volume, closed)
    assert result is not None
    step = _from_result(result)
    if result.outcome == DONE:
        _add_deal_profit(ctx, [step.result])
    return step


def _add_deal_profit(ctx: Context, entries: list[dict[str, Any]]) -> None:
    """The realised profit of each closing deal, for the protective action report's closed_pnl."""
    profits = {deal.ticket: deal.profit for deal in ctx.deals()}
    for entry in entries:
        if entry.get("deal") in profits and "profit" not in entry:
            entry["profit"] = str(profits[entry["deal"]])


def _targets(ctx: Context, positions: tuple[Position, ...]) -> list[Position]:
    """The positions a close_positions command aims at (PROTOCOL.md §5 target modes)."""
    target = ctx.command.payload["target"]
    execution = ctx.command.payload.get("execution") or {}
    mode = target["mode"]

    def loss(p: Position) -> Decimal:
        return p.profit + p.swap + p.commission

    chosen: list[Position]
    if mode == "all_positions":
        chosen = list(positions)
    elif mode == "by_symbol":
        chosen = [p for p in positions if p.symbol in set(target["symbols"])]
    elif mode == "by_tickets":
        chosen = [p for p in positions if p.ticket in set(target["tickets"])]
    elif mode == "losing":
        chosen = [p for p in positions if loss(p) < 0]
    else:  # profitable
        chosen = [p for p in positions if loss(p) > 0]
    if execution.get("close_only_profitable"):
        chosen = [p for p in chosen if loss(p) > 0]
    return chosen


def close_positions(ctx: Context) -> Step:
    closed = _closed_by_this_command(ctx)
    snapshot = ctx.gateway.account_snapshot(ctx.login, ctx.server)
    targets = _targets(ctx, snapshot.positions)
    results: list[dict[str, Any]] = [
        {"ticket": ticket, "status": "closed", **_deal_json(deal)} for ticket, deal in closed.items()
    ]
    retry = False
    failures: list[str] = []
    for position in targets:
        result = _close(ctx, position, None, closed)
        if result is None:
            continue
        entry = {
            "ticket": position.ticket,
            "symbol": position.symbol,
            "volume": str(position.volume),
            **_trade_json(result),
        }
        entry["status"] = "closed" if result.outcome == DONE else "failed"
        results.append(entry)
        if result.outcome != DONE:
            failures.append(f"{position.ticket}: {result.retcode_name} {result.message}")
            retry = retry or result.outcome == RETRY
    if any(r["status"] == "closed" and "profit" not in r for r in results):
        _add_deal_profit(ctx, results)
    done = sum(1 for r in results if r["status"] == "closed")
    summary = {"positions": results, "targeted": len(targets) + len(closed), "closed": done}
    if not failures:
        return Step(State.SUCCEEDED, summary)
    # allow_partial_close: a partial result is acceptable as it stands; otherwise the command
    # keeps retrying the positions that failed (retryable answers) until its deadline.
    allow_partial = (ctx.command.payload.get("execution") or {}).get("allow_partial_close", False)
    state = State.PARTIALLY_SUCCEEDED if done else State.FAILED
    return Step(
        state,
        summary,
        error_code="close_failed",
        error_message="; ".join(failures)[:2000],
        retry=retry and not (done and allow_partial),
    )


def modify_position(ctx: Context) -> Step:
    payload = ctx.command.payload
    limited = hooks.modify_position_limits(ctx.account, payload, ctx.gateway)
    if limited is not None:
        return Step(State.REJECTED, limited[2], error_code=limited[0], error_message=limited[1])
    result = ctx.gateway.modify_position(
        ctx.login,
        ctx.server,
        ticket=int(payload["ticket"]),
        sl=_dec(payload.get("stop_loss")),
        tp=_dec(payload.get("take_profit")),
        tag=ctx.tag,
    )
    ctx.record(result)
    return _from_result(result)


def cancel_orders(ctx: Context) -> Step:
    snapshot = ctx.gateway.account_snapshot(ctx.login, ctx.server)
    wanted = ctx.command.payload.get("tickets")
    live = {order.ticket for order in snapshot.orders}
    tickets = list(live) if wanted is None else [t for t in wanted if t in live]
    missing = [] if wanted is None else [t for t in wanted if t not in live]
    results: list[dict[str, Any]] = [{"ticket": t, "status": "not_found"} for t in missing]
    retry = False
    failures = []
    for ticket in tickets:
        result = ctx.gateway.cancel_order(ctx.login, ctx.server, ticket=ticket, tag=ctx.tag)
        ctx.record(result)
        results.append(
            {"ticket": ticket, "status": "cancelled" if result.outcome == DONE else "failed", **_trade_json(result)}
        )
        if result.outcome != DONE:
            failures.append(f"{ticket}: {result.retcode_name}")
            retry = retry or result.outcome == RETRY
    summary = {"orders": results, "cancelled": sum(1 for r in results if r["status"] == "cancelled")}
    if failures:
        state = State.PARTIALLY_SUCCEEDED if summary["cancelled"] else State.FAILED
        return Step(state, summary, error_code="cancel_failed", error_message="; ".join(failures), retry=retry)
    return Step(State.SUCCEEDED, summary)


def _set_trading(ctx: Context, enabled: bool) -> Step:
    """The bridge refuses (or accepts again) new positions; where the backend can (the Manager
    API's USER_RIGHT_TRADE_DISABLED), the MT5 server does too, so the trader's own terminal is
    refused as well. The bridge's flag is set first: a server that cannot be reached leaves the
    command to be retried (``GatewayUnavailable``), never the account open on the bridge."""
    reason = "" if enabled else (ctx.command.reason or f"disabled by command {ctx.command.command_id}")
    # Disabling an account already disabled keeps the moment it was first disabled (the panel's "since").
    since = None if enabled else Coalesce(F("trading_disabled_at"), Value(timezone.now()))
    TradingAccount.objects.filter(pk=ctx.account.pk).update(
        trading_enabled=enabled, trading_disabled_reason=reason, trading_disabled_at=since
    )
    result: dict[str, Any] = {"trading_enabled": enabled}
    if ctx.gateway.set_server_trade_disabled(ctx.login, ctx.server, disabled=not enabled) is not None:
        # Enabled again here, the right is set again by the risk monitor while a breach blocks trading.
        TradingAccount.objects.filter(pk=ctx.account.pk).update(server_trade_disabled=not enabled)
        result["server_trade_disabled"] = not enabled
    return Step(State.SUCCEEDED, result)


def disable_trading(ctx: Context) -> Step:
    return _set_trading(ctx, False)


def enable_trading(ctx: Context) -> Step:
    return _set_trading(ctx, True)


def sync_account(ctx: Context) -> Step:
    from execution.snapshots import snapshot_refresh

    snapshot = snapshot_refresh(account=ctx.account, gateway=ctx.gateway)
    return Step(
        State.SUCCEEDED,
        {"balance": snapshot["balance"], "equity": snapshot["equity"], "positions": len(snapshot["positions"])},
    )


EXECUTORS: dict[str, Callable[[Context], Step]] = {
    CommandType.OPEN_POSITION: open_position,
    CommandType.CLOSE_POSITION: close_position,
    CommandType.CLOSE_POSITIONS: close_positions,
    CommandType.MODIFY_POSITION: modify_position,
    CommandType.CANCEL_ORDERS: cancel_orders,
    CommandType.DISABLE_TRADING: disable_trading,
    CommandType.ENABLE_TRADING: enable_trading,
    CommandType.SYNC_ACCOUNT: sync_account,
}
