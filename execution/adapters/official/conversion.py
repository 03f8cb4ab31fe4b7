"""Conversions between the MetaTrader5 module's values and the gateway's: its result
namedtuples into the gateway's dataclasses (floats into ``Decimal``, the server's wall-clock
times into UTC datetimes, codes into names), its retcodes into ``TradeResult``s, history
windows into the server's wall clock, and the filling mode a request needs.

Every MT5 time is the trade server's wall clock written as if it were a Unix timestamp; the
``offset`` these functions take is how far that clock runs ahead of UTC (``servertime``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from execution.adapters.official.symbols import Rename, same
from execution.gateway import (
    IPC_ERRORS,
    RETRY,
    AccountSnapshot,
    Deal,
    PendingOrder,
    Position,
    Side,
    SymbolInfo,
    TradeResult,
    classify,
)
from execution.simulator import constants as c

# History windows are asked in the server's wall clock, padded on each side: an offset that
# could not be learned yet (the fallback) may be off by a DST hour, or more when misconfigured,
# and a deal missed by reconciliation would be an order sent twice.
HISTORY_PADDING = timedelta(hours=3)

ORDER_TYPE_NAMES = {
    c.ORDER_TYPE_BUY: "buy",
    c.ORDER_TYPE_SELL: "sell",
    c.ORDER_TYPE_BUY_LIMIT: "buy_limit",
    c.ORDER_TYPE_SELL_LIMIT: "sell_limit",
    c.ORDER_TYPE_BUY_STOP: "buy_stop",
    c.ORDER_TYPE_SELL_STOP: "sell_stop",
    c.ORDER_TYPE_BUY_STOP_LIMIT: "buy_stop_limit",
    c.ORDER_TYPE_SELL_STOP_LIMIT: "sell_stop_limit",
    c.ORDER_TYPE_CLOSE_BY: "close_by",
}
ORDER_STATE_NAMES = {
    c.ORDER_STATE_STARTED: "started",
    c.ORDER_STATE_PLACED: "placed",
    c.ORDER_STATE_CANCELED: "canceled",
    c.ORDER_STATE_PARTIAL: "partial",
    c.ORDER_STATE_FILLED: "filled",
    c.ORDER_STATE_REJECTED: "rejected",
    c.ORDER_STATE_EXPIRED: "expired",
    c.ORDER_STATE_REQUEST_ADD: "request_add",
    c.ORDER_STATE_REQUEST_MODIFY: "request_modify",
    c.ORDER_STATE_REQUEST_CANCEL: "request_cancel",
}
DEAL_ENTRY_NAMES = {
    c.DEAL_ENTRY_IN: "in",
    c.DEAL_ENTRY_OUT: "out",
    c.DEAL_ENTRY_INOUT: "inout",
    c.DEAL_ENTRY_OUT_BY: "out_by",
}
DEAL_TYPE_NAMES = {
    c.DEAL_TYPE_BUY: "buy",
    c.DEAL_TYPE_SELL: "sell",
    c.DEAL_TYPE_BALANCE: "balance",
    c.DEAL_TYPE_CREDIT: "credit",
    c.DEAL_TYPE_CHARGE: "charge",
    c.DEAL_TYPE_CORRECTION: "correction",
    c.DEAL_TYPE_BONUS: "bonus",
    c.DEAL_TYPE_COMMISSION: "commission",
}

PENDING_TYPES: dict[tuple[str, str], int] = {
    ("buy", "limit"): c.ORDER_TYPE_BUY_LIMIT,
    ("sell", "limit"): c.ORDER_TYPE_SELL_LIMIT,
    ("buy", "stop"): c.ORDER_TYPE_BUY_STOP,
    ("sell", "stop"): c.ORDER_TYPE_SELL_STOP,
}


def choose_filling(filling_mode: int) -> int:
    """FOK when the symbol allows it, else IOC, else RETURN (CTrade's rule; avoids 10030)."""
    if filling_mode & c.SYMBOL_FILLING_FOK:
        return c.ORDER_FILLING_FOK
    if filling_mode & c.SYMBOL_FILLING_IOC:
        return c.ORDER_FILLING_IOC
    return c.ORDER_FILLING_RETURN


def dec(value: float | int) -> Decimal:
    # repr() is the shortest string that round-trips, so 1.0851 stays 1.0851.
    return Decimal(repr(float(value)))


# 10**-digits for the usual currency digits: _money runs for every figure of every snapshot.
_QUANTA = {digits: Decimal(1).scaleb(-digits) for digits in range(9)}


def quantum(digits: int) -> Decimal:
    """10**-digits, the step of an amount with ``digits`` decimals."""
    return _QUANTA.get(digits) or Decimal(1).scaleb(-digits)


def money(value: float, digits: int) -> Decimal:
    return dec(value).quantize(_QUANTA.get(digits) or Decimal(1).scaleb(-digits))


def optional_price(value: float) -> Decimal | None:
    return dec(value) if value else None


def utc_ms(msc: int, offset: timedelta) -> datetime:
    """An MT5 time in epoch ms of the server's wall clock, as a UTC datetime."""
    return datetime.fromtimestamp(msc / 1000, tz=UTC) - offset


def epoch(moment: datetime) -> int:
    """History bounds as epoch seconds: the module accepts them, and unlike a datetime they
    neither pass through the local timezone nor need pickling over RPyC."""
    return int(moment.timestamp())


def window(since: datetime, offset: timedelta) -> tuple[int, int]:
    """``history_*_get`` bounds from ``since`` (UTC) to now, in the server's wall clock, which is
    how MT5 reads them (UTC bounds would miss the last ``offset`` hours), and padded."""
    return epoch(since + offset - HISTORY_PADDING), epoch(datetime.now(UTC) + offset + HISTORY_PADDING)


def side_of(order_type: int) -> Side:
    return "sell" if order_type % 2 else "buy"


def to_symbol_info(raw: Any, offset: timedelta, canonical: Rename = same) -> SymbolInfo:
    return SymbolInfo(
        name=canonical(raw.name),
        description=raw.description,
        digits=int(raw.digits),
        point=dec(raw.point),
        contract_size=dec(raw.trade_contract_size),
        volume_min=dec(raw.volume_min),
        volume_max=dec(raw.volume_max),
        volume_step=dec(raw.volume_step),
        filling_mode=int(raw.filling_mode),
        trade_mode=int(raw.trade_mode),
        trade_exemode=int(raw.trade_exemode),
        stops_level=int(raw.trade_stops_level),
        bid=dec(raw.bid),
        ask=dec(raw.ask),
        spread=int(raw.spread),
        tick_value=dec(raw.trade_tick_value),
        tick_size=dec(raw.trade_tick_size),
        currency_base=raw.currency_base,
        currency_profit=raw.currency_profit,
        currency_margin=raw.currency_margin,
        quoted_at=utc_ms(int(raw.time) * 1000, offset),
    )


def to_position(raw: Any, digits: int, commission: Decimal, offset: timedelta, canonical: Rename = same) -> Position:
    return Position(
        ticket=int(raw.ticket),
        symbol=canonical(raw.symbol),
        side="buy" if raw.type == c.POSITION_TYPE_BUY else "sell",
        volume=dec(raw.volume),
        price_open=dec(raw.price_open),
        price_current=dec(raw.price_current),
        sl=optional_price(raw.sl),
        tp=optional_price(raw.tp),
        profit=money(raw.profit, digits),
        swap=money(raw.swap, digits),
        commission=commission,
        magic=int(raw.magic),
        comment=raw.comment,
        opened_at=utc_ms(int(raw.time_msc), offset),
        identifier=int(raw.identifier),
    )


def to_order(raw: Any, offset: timedelta, canonical: Rename = same) -> PendingOrder:
    return PendingOrder(
        ticket=int(raw.ticket),
        symbol=canonical(raw.symbol),
        side=side_of(int(raw.type)),
        order_type=ORDER_TYPE_NAMES.get(int(raw.type), str(raw.type)),
        state=ORDER_STATE_NAMES.get(int(raw.state), str(raw.state)),
        volume_initial=dec(raw.volume_initial),
        volume_current=dec(raw.volume_current),
        price_open=dec(raw.price_open),
        price_current=dec(raw.price_current),
        sl=optional_price(raw.sl),
        tp=optional_price(raw.tp),
        magic=int(raw.magic),
        comment=raw.comment,
        position_id=int(raw.position_id),
        placed_at=utc_ms(int(raw.time_setup_msc), offset),
        done_at=utc_ms(int(raw.time_done_msc), offset) if raw.time_done_msc else None,
    )


def to_deal(raw: Any, digits: int, offset: timedelta, canonical: Rename = same) -> Deal:
    return Deal(
        ticket=int(raw.ticket),
        order=int(raw.order),
        position_id=int(raw.position_id),
        symbol=canonical(raw.symbol),
        side=DEAL_TYPE_NAMES.get(int(raw.type), str(raw.type)),
        entry=DEAL_ENTRY_NAMES.get(int(raw.entry), str(raw.entry)),
        volume=dec(raw.volume),
        price=dec(raw.price),
        profit=money(raw.profit, digits),
        commission=money(raw.commission, digits),
        swap=money(raw.swap, digits),
        magic=int(raw.magic),
        comment=raw.comment,
        time=utc_ms(int(raw.time_msc), offset),
    )


def to_account_snapshot(
    info: Any,
    digits: int,
    raw_positions: Any,
    raw_orders: Any,
    commissions: dict[int, Decimal],
    observed_at: datetime,
    offset: timedelta,
    canonical: Rename = same,
) -> AccountSnapshot:
    """``account_info`` with its positions and pending orders, each position with its entry
    commission (which the module's position does not carry). ``observed_at`` is the local UTC
    clock when the terminal answered, not a server time."""

    def amount(value: float) -> Decimal:
        return money(value, digits)

    return AccountSnapshot(
        login=int(info.login),
        server=info.server,
        currency=info.currency,
        currency_digits=digits,
        leverage=int(info.leverage),
        balance=amount(info.balance),
        credit=amount(info.credit),
        equity=amount(info.equity),
        margin=amount(info.margin),
        margin_free=amount(info.margin_free),
        margin_level=dec(info.margin_level).quantize(Decimal("0.01")),
        profit=amount(info.profit),
        positions=tuple(to_position(p, digits, commissions[int(p.ticket)], offset, canonical) for p in raw_positions),
        orders=tuple(to_order(o, offset, canonical) for o in raw_orders),
        observed_at=observed_at,
        trade_allowed=bool(info.trade_allowed) and bool(info.trade_expert),
    )


def lost_link(code: int) -> bool:
    """Did ``order_send``'s ``None`` come from the link (IPC, or RPyC's transport) rather than
    from the terminal? The request may then have left: the caller reconciles."""
    return code in IPC_ERRORS or code == c.RES_E_FAIL


def unanswered(code: int, text: str, request: dict[str, Any], position: int) -> TradeResult:
    """``order_send`` returned ``None`` (its ``last_error()`` is ``code``, ``text``)."""
    info = classify(code)
    ipc = lost_link(code)
    return TradeResult(
        outcome=RETRY if ipc else info.outcome,
        retcode=code,
        retcode_name=info.name,
        message=f"order_send returned None: {text}",
        request=dict(request),
        maybe_executed=ipc,
        position=position,
    )


def answered(result: Any, request: dict[str, Any], position: int) -> TradeResult:
    """``order_send``'s OrderSendResult, classified by its retcode. A partial fill (10010) is
    done for what it filled, and says so: ``partial``, the filled ``volume`` and the
    ``requested_volume``, and a message naming both."""
    info = classify(int(result.retcode))
    order = int(result.order)
    volume = dec(result.volume)
    requested = dec(request.get("volume") or 0)
    partial = info.code == c.TRADE_RETCODE_DONE_PARTIAL
    message = str(result.comment) or info.message
    if partial:
        message = f"{message}: {volume} of {requested} lots filled"
    return TradeResult(
        outcome=info.outcome,
        retcode=info.code,
        retcode_name=info.name,
        message=message,
        order=order,
        deal=int(result.deal),
        volume=volume,
        price=dec(result.price),
        request=dict(request),
        comment=str(result.comment),
        maybe_executed=info.code == c.TRADE_RETCODE_TIMEOUT,
        position=position or (order if request.get("action") == c.TRADE_ACTION_DEAL and info.outcome == "done" else 0),
        partial=partial,
        requested_volume=requested,
    )


def refused(retcode: int, message: str, request: dict[str, Any] | None = None, position: int = 0) -> TradeResult:
    """A request the adapter refuses before sending (nothing reached MT5)."""
    info = classify(retcode)
    return TradeResult(
        outcome=info.outcome,
        retcode=retcode,
        retcode_name=info.name,
        message=message,
        request=request or {},
        position=position,
    )
