"""The simulated trade server: it executes a trade request against one account, and fires what
a new quote reaches (stop losses, take profits, pending orders).

It is shared by every process through the database, so every request runs in a transaction
with the account row locked (``sql.lock_account``), and so does every trigger.

Faults injected with ``sim_inject_fault`` are taken here, by ``order_send``'s requests (a
counted fault is consumed, an outage hits every request until it ends; see ``faults``):
``requote`` (10004), ``market_closed`` (10018), ``no_connection`` (``None``, -10004, and the
terminal drops its IPC link), ``timeout_after_fill`` (the order is executed but the call
returns ``None`` with -10005: the duplicate-order trap) and ``partial_fill`` (a market deal
fills part of its volume: 10010 with the part filled; a FOK order, which MT5 never fills in
part, is rejected instead).

An account's margin mode decides what a market deal does (``SimAccount.margin_mode``). On a
hedging account every deal in opens a position of its own, closed by a deal naming it. On a
netting account there is at most one position per symbol: a deal in its direction adds to it
(entry IN; its open price becomes the volume-weighted average), an opposite one reduces or
closes it (OUT) or, larger than it, reverses it (INOUT: the rest opens the other way, and the
position takes the reversing order's ticket but keeps its identifier, as MT5 does); realised
profit goes to the balance. Every deal carries the position's identifier as ``position_id``.

Every new quote also checks the margin level (equity / margin x 100) of the accounts holding
the moved symbols: below the account's stop-out level (``margin_so_so``) the server closes the
most losing position (reason SO, comment ``[so 45.20%]``), again and again, until the level is
back at or above it or nothing is left to close.

Who sends matters as in MT5: a request from the user's terminal needs the user's trade right
(``SimAccount.trade_allowed``; 10017 without it, closes included); one from a program (the
Python API, an Expert) needs the Expert right too (10026); a dealer's (``dealer=True``, the
Manager API's seat) needs neither.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any, NamedTuple

from django.db import transaction
from django.db.models import F, Q

from execution.models import SimAccount, SimDeal, SimFault, SimFaultKind, SimOrder, SimPosition
from execution.simulator import constants as c
from execution.simulator import faults, pricing, sql
from execution.simulator.pricing import ZERO
from execution.simulator.request import Request, dec
from execution.simulator.stamps import allocate_tickets, now_msc
from execution.simulator.symbols import read_symbols
from execution.simulator.valuation import Valuation

# The short texts the trade server puts in OrderSendResult.comment.
RESULT_COMMENT = {
    c.TRADE_RETCODE_REQUOTE: "Requote",
    c.TRADE_RETCODE_PLACED: "Request executed",
    c.TRADE_RETCODE_DONE: "Request executed",
    c.TRADE_RETCODE_DONE_PARTIAL: "Request executed partially",
    c.TRADE_RETCODE_REJECT: "Request rejected",
    c.TRADE_RETCODE_INVALID: "Invalid request",
    c.TRADE_RETCODE_INVALID_VOLUME: "Invalid volume",
    c.TRADE_RETCODE_INVALID_PRICE: "Invalid price",
    c.TRADE_RETCODE_INVALID_STOPS: "Invalid stops",
    c.TRADE_RETCODE_TRADE_DISABLED: "Trade disabled",
    c.TRADE_RETCODE_MARKET_CLOSED: "Market closed",
    c.TRADE_RETCODE_NO_MONEY: "No money",
    c.TRADE_RETCODE_NO_CHANGES: "No changes",
    c.TRADE_RETCODE_SERVER_DISABLES_AT: "AutoTrading disabled by server",
    c.TRADE_RETCODE_CLIENT_DISABLES_AT: "AutoTrading disabled by client",
    c.TRADE_RETCODE_INVALID_FILL: "Unsupported filling mode",
    c.TRADE_RETCODE_LIMIT_ORDERS: "Too many orders",
    c.TRADE_RETCODE_INVALID_ORDER: "Invalid order type",
    c.TRADE_RETCODE_POSITION_CLOSED: "Position already closed",
    c.TRADE_RETCODE_INVALID_CLOSE_VOLUME: "Invalid close volume",
    c.TRADE_RETCODE_LONG_ONLY: "Long positions only allowed",
    c.TRADE_RETCODE_SHORT_ONLY: "Short positions only allowed",
    c.TRADE_RETCODE_CLOSE_ONLY: "Close only allowed",
}

# Which injected faults can hit which trade action: a requote only exists for a market price.
FAULTS_BY_ACTION = {
    c.TRADE_ACTION_DEAL: tuple(SimFaultKind.values),
    c.TRADE_ACTION_PENDING: (SimFaultKind.NO_CONNECTION, SimFaultKind.MARKET_CLOSED, SimFaultKind.TIMEOUT_AFTER_FILL),
    c.TRADE_ACTION_SLTP: (SimFaultKind.NO_CONNECTION, SimFaultKind.MARKET_CLOSED, SimFaultKind.TIMEOUT_AFTER_FILL),
    c.TRADE_ACTION_MODIFY: (SimFaultKind.NO_CONNECTION, SimFaultKind.MARKET_CLOSED, SimFaultKind.TIMEOUT_AFTER_FILL),
    c.TRADE_ACTION_REMOVE: (SimFaultKind.NO_CONNECTION, SimFaultKind.MARKET_CLOSED, SimFaultKind.TIMEOUT_AFTER_FILL),
}

BUY_TYPES = frozenset({c.ORDER_TYPE_BUY, c.ORDER_TYPE_BUY_LIMIT, c.ORDER_TYPE_BUY_STOP, c.ORDER_TYPE_BUY_STOP_LIMIT})
PENDING_TYPES = frozenset(
    {c.ORDER_TYPE_BUY_LIMIT, c.ORDER_TYPE_SELL_LIMIT, c.ORDER_TYPE_BUY_STOP, c.ORDER_TYPE_SELL_STOP}
)


class Outcome(Exception):
    """How a trade request ended. Rejections are raised; the trade paths return one."""

    def __init__(
        self,
        retcode: int,
        comment: str = "",
        *,
        symbol: sql.TradedSymbol | None = None,
        deal: int = 0,
        order: int = 0,
        volume: Decimal = ZERO,
        price: Decimal = ZERO,
    ) -> None:
        super().__init__(retcode)
        self.retcode = retcode
        self.comment = comment or RESULT_COMMENT.get(retcode, "Request rejected")
        self.deal, self.order, self.volume, self.price = deal, order, float(volume), float(price)
        self.bid = float(symbol.bid) if symbol is not None else 0.0
        self.ask = float(symbol.ask) if symbol is not None else 0.0
        # Set by injected faults: the link broke before the request left / the answer never came.
        self.connection_lost = False
        self.timed_out = False


class Triggered(NamedTuple):
    """What a quote set off: ``sl``/``tp``/``so`` (a position closed by its stop loss, its take
    profit or the account's stop-out), ``filled``/``rejected`` (an order)."""

    kind: str
    symbol: str
    ticket: int
    deal: int
    price: Decimal


# A netting position's volume-weighted open price keeps the precision of the price column.
AVERAGE_PRICE = Decimal("0.000001")


def opposite(held_type: int, is_buy: bool) -> bool:
    """Is a deal in the direction ``is_buy`` against a position of type ``held_type``?"""
    return (held_type == c.POSITION_TYPE_BUY) == (not is_buy)


def filling_for(symbol: sql.TradedSymbol) -> int:
    """A filling mode the symbol accepts for a market order (what the server's own orders use)."""
    if symbol.filling_mode & c.SYMBOL_FILLING_FOK:
        return c.ORDER_FILLING_FOK
    if symbol.filling_mode & c.SYMBOL_FILLING_IOC:
        return c.ORDER_FILLING_IOC
    return c.ORDER_FILLING_RETURN


def _volume_ok(volume: Decimal, symbol: sql.TradedSymbol) -> bool:
    if volume <= 0 or volume < symbol.volume_min or volume > symbol.volume_max:
        return False
    steps = volume / symbol.volume_step
    return abs(steps - steps.to_integral_value()) < Decimal("1e-6")


def _filling_allowed(symbol: sql.TradedSymbol, filling: int, *, pending: bool) -> bool:
    """MT5's rule: FOK/IOC need their bit in the symbol's mask; RETURN is refused for market
    orders under market execution unless the symbol offers neither FOK nor IOC."""
    mask = symbol.filling_mode
    if filling == c.ORDER_FILLING_FOK:
        return bool(mask & c.SYMBOL_FILLING_FOK)
    if filling == c.ORDER_FILLING_IOC:
        return bool(mask & c.SYMBOL_FILLING_IOC)
    if filling == c.ORDER_FILLING_BOC:
        return pending and bool(mask & c.SYMBOL_FILLING_BOC)
    if filling == c.ORDER_FILLING_RETURN:
        if pending or symbol.trade_exemode != c.SYMBOL_TRADE_EXECUTION_MARKET:
            return True
        return not mask & (c.SYMBOL_FILLING_FOK | c.SYMBOL_FILLING_IOC)
    return False


def pending_reached(symbol: sql.TradedSymbol, order_type: int, price: Decimal) -> bool:
    """Has the quote reached a pending order's price (it would fill now)? Unknown types: no."""
    return {
        c.ORDER_TYPE_BUY_LIMIT: symbol.ask <= price,
        c.ORDER_TYPE_SELL_LIMIT: symbol.bid >= price,
        c.ORDER_TYPE_BUY_STOP: symbol.ask >= price,
        c.ORDER_TYPE_SELL_STOP: symbol.bid <= price,
    }.get(order_type, False)


class TradeServer:
    """The trade server acting on one account: no terminal in front of it, so no client-side
    checks (the terminal makes those before it hands a request over)."""

    def __init__(
        self,
        account_id: int,
        valuation: Valuation | None = None,
        *,
        reason: int = c.ORDER_REASON_EXPERT,
        dealer: bool = False,
    ) -> None:
        self.account_id = account_id
        # The margin check values positions with it; the triggers' servers use the default.
        self.valuation = valuation or Valuation()
        # Where requests come from: ORDER_REASON_EXPERT (a program through the Python API) or
        # ORDER_REASON_CLIENT (a person at the desktop terminal). The order, deal and position
        # reasons share these values, so the rows record it as is.
        self.reason = reason
        # A dealer acts on the account from the server side: the user's rights do not apply.
        self.dealer = dealer
        # The symbols loaded by the trade in progress (by pk), reused by its margin check.
        self._txn_symbols: dict[int, sql.Symbol] = {}

    def execute(self, req: Request, *, dry_run: bool) -> Outcome:
        """Resolve the target, apply any injected fault, check, then execute."""
        try:
            account, symbol, position, order = self._resolve(req)
        except Outcome as rejected:
            return rejected
        # The account query already said whether any fault is pending: the common path
        # pays no extra round trip for fault injection.
        fault = (
            None if dry_run or not account.pending_faults else self._take_fault(req.action, symbol.name, account.login)
        )
        if fault == SimFaultKind.NO_CONNECTION:
            lost = Outcome(c.TRADE_RETCODE_CONNECTION)
            lost.connection_lost = True
            return lost
        if fault == SimFaultKind.REQUOTE:
            return Outcome(c.TRADE_RETCODE_REQUOTE, symbol=symbol)
        if fault == SimFaultKind.MARKET_CLOSED:
            return Outcome(c.TRADE_RETCODE_MARKET_CLOSED)
        partial = fault == SimFaultKind.PARTIAL_FILL
        try:
            # On a netting account a deal without a position acts on the symbol's position, if any.
            held = None
            if req.action == c.TRADE_ACTION_DEAL and position is None:
                held = self._held(account, symbol)
            reduces = (
                held is not None
                and opposite(held.type, req.type == c.ORDER_TYPE_BUY)
                and dec(req.volume) <= held.volume
            )
            closing = req.action == c.TRADE_ACTION_DEAL and (position is not None or reduces)
            self._check_permissions(account, symbol, req, closing=closing)
            if req.action == c.TRADE_ACTION_DEAL and position is None:
                outcome = self._open(account, symbol, req, dry_run, partial=partial, held=held)
            elif req.action == c.TRADE_ACTION_DEAL and position is not None:
                outcome = self._close(account, position, req, dry_run, reason=self.reason, partial=partial)
            elif req.action == c.TRADE_ACTION_SLTP and position is not None:
                outcome = self._modify_position(position, req, dry_run)
            elif req.action == c.TRADE_ACTION_PENDING:
                outcome = self._place_pending(account, symbol, req, dry_run)
            elif req.action == c.TRADE_ACTION_REMOVE and order is not None:
                outcome = self._remove_order(order, dry_run)
            elif order is not None:
                outcome = self._modify_order(order, req, dry_run)
            else:  # pragma: no cover - _resolve guarantees a target
                outcome = Outcome(c.TRADE_RETCODE_INVALID)
        except Outcome as rejected:
            outcome = rejected
        # The timeout hides whatever the server answered, filled or not.
        outcome.timed_out = fault == SimFaultKind.TIMEOUT_AFTER_FILL
        return outcome

    def _resolve(
        self, req: Request
    ) -> tuple[sql.LockedAccount, sql.TradedSymbol, sql.LockedPosition | None, SimOrder | None]:
        """Lock the account (serialising its trades across processes) and find the request's target."""
        position: sql.LockedPosition | None = None
        order: SimOrder | None = None
        symbol: sql.TradedSymbol | None
        if req.action == c.TRADE_ACTION_SLTP or (req.action == c.TRADE_ACTION_DEAL and req.position):
            locked = sql.lock_account_and_position(self.account_id, req.position, faults.clock())
            if locked is None:
                raise Outcome(c.TRADE_RETCODE_INVALID, "Account not found")
            account, position = locked
            if position is None:
                if req.position and SimDeal.objects.filter(account_id=account.id, position_id=req.position).exists():
                    raise Outcome(c.TRADE_RETCODE_POSITION_CLOSED)
                raise Outcome(c.TRADE_RETCODE_INVALID, "Position not found")
            symbol = position.symbol
            if req.symbol and req.symbol != symbol.name:
                raise Outcome(c.TRADE_RETCODE_INVALID, "Symbol does not match")
            return account, symbol, position, order
        locked_account = sql.lock_account(self.account_id, faults.clock())
        if locked_account is None:
            raise Outcome(c.TRADE_RETCODE_INVALID, "Account not found")
        account = locked_account
        if req.action in (c.TRADE_ACTION_REMOVE, c.TRADE_ACTION_MODIFY):
            order = (
                SimOrder.objects.select_for_update(of=("self",))
                .select_related("symbol")
                .filter(account_id=account.id, ticket=req.order, is_open=True)
                .first()
            )
            if order is None:
                raise Outcome(c.TRADE_RETCODE_INVALID, "Order not found")
            symbol = order.symbol
        elif req.action in (c.TRADE_ACTION_DEAL, c.TRADE_ACTION_PENDING):
            # Every symbol (five rows) in one query: the margin check values the account's other
            # positions with them.
            self._txn_symbols = {s.pk: s for s in read_symbols()}
            symbol = next((s for s in self._txn_symbols.values() if s.name == req.symbol), None)
            if symbol is None:
                raise Outcome(c.TRADE_RETCODE_INVALID, "Unknown symbol")
        else:
            raise Outcome(c.TRADE_RETCODE_INVALID, "Unsupported trade action")
        if req.symbol and req.symbol != symbol.name:
            raise Outcome(c.TRADE_RETCODE_INVALID, "Symbol does not match")
        return account, symbol, position, order

    @staticmethod
    def _held(account: sql.LockedAccount, symbol: sql.TradedSymbol) -> SimPosition | None:
        """A netting account's position on ``symbol``, locked; None on a hedging account."""
        if account.margin_mode == c.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING:
            return None
        return SimPosition.objects.select_for_update().filter(account_id=account.pk, symbol_id=symbol.pk).first()

    def _take_fault(self, action: int, symbol: str, login: int) -> str | None:
        """The kind of the oldest matching outage running, else consume one matching counted
        fault (skip_locked lets concurrent senders share a count; an outage is read unlocked,
        so every sender sees it)."""
        kinds = FAULTS_BY_ACTION.get(action, ())
        matching = (
            SimFault.objects.filter(kind__in=kinds)
            .filter(Q(symbol="") | Q(symbol=symbol))
            .filter(Q(login__isnull=True) | Q(login=login))
        )
        outage = matching.filter(until_msc__gt=faults.clock()).order_by("id").values_list("kind", flat=True).first()
        if outage is not None:
            return outage
        fault = matching.select_for_update(skip_locked=True).filter(remaining__gt=0).order_by("id").first()
        if fault is None:
            return None
        SimFault.objects.filter(pk=fault.pk).update(remaining=F("remaining") - 1)
        return fault.kind

    def _check_permissions(
        self, account: sql.LockedAccount, symbol: sql.TradedSymbol, req: Request, *, closing: bool
    ) -> None:
        if not self.dealer and not account.trade_allowed:
            raise Outcome(c.TRADE_RETCODE_TRADE_DISABLED)
        if not self.dealer and self.reason == c.ORDER_REASON_EXPERT and not account.trade_expert:
            raise Outcome(c.TRADE_RETCODE_SERVER_DISABLES_AT)
        if symbol.trade_mode == c.SYMBOL_TRADE_MODE_DISABLED:
            raise Outcome(c.TRADE_RETCODE_TRADE_DISABLED)
        if not symbol.sessions_open:
            raise Outcome(c.TRADE_RETCODE_MARKET_CLOSED)
        if req.action in (c.TRADE_ACTION_DEAL, c.TRADE_ACTION_PENDING) and not closing:
            if symbol.trade_mode == c.SYMBOL_TRADE_MODE_CLOSEONLY:
                raise Outcome(c.TRADE_RETCODE_CLOSE_ONLY)
            if symbol.trade_mode == c.SYMBOL_TRADE_MODE_LONGONLY and req.type not in BUY_TYPES:
                raise Outcome(c.TRADE_RETCODE_LONG_ONLY)
            if symbol.trade_mode == c.SYMBOL_TRADE_MODE_SHORTONLY and req.type in BUY_TYPES:
                raise Outcome(c.TRADE_RETCODE_SHORT_ONLY)

    @staticmethod
    def _check_market_price(symbol: sql.TradedSymbol, req: Request, is_buy: bool) -> Decimal:
        """The fill price. Under instant execution the client's price must be within deviation."""
        market = symbol.ask if is_buy else symbol.bid
        if symbol.trade_exemode in (c.SYMBOL_TRADE_EXECUTION_INSTANT, c.SYMBOL_TRADE_EXECUTION_REQUEST):
            if req.price <= 0:
                raise Outcome(c.TRADE_RETCODE_INVALID_PRICE)
            if abs(dec(req.price) - market) > max(req.deviation, 0) * symbol.point:
                raise Outcome(c.TRADE_RETCODE_REQUOTE, symbol=symbol)
        return market

    @staticmethod
    def _check_stops(symbol: sql.TradedSymbol, is_buy: bool, sl: float, tp: float, reference: Decimal) -> None:
        """SL/TP must sit on the right side of the price the position would close at."""
        if sl < 0 or tp < 0:
            raise Outcome(c.TRADE_RETCODE_INVALID_STOPS)
        gap = symbol.trade_stops_level * symbol.point
        sl_d, tp_d = dec(sl), dec(tp)
        if is_buy:
            bad = (sl_d and sl_d >= reference - gap) or (tp_d and tp_d <= reference + gap)
        else:
            bad = (sl_d and sl_d <= reference + gap) or (tp_d and tp_d >= reference - gap)
        if bad:
            raise Outcome(c.TRADE_RETCODE_INVALID_STOPS)

    @staticmethod
    def _check_volume_and_filling(symbol: sql.TradedSymbol, req: Request, *, pending: bool) -> Decimal:
        volume = dec(req.volume)
        if not _volume_ok(volume, symbol):
            raise Outcome(c.TRADE_RETCODE_INVALID_VOLUME)
        if not _filling_allowed(symbol, req.type_filling, pending=pending):
            raise Outcome(c.TRADE_RETCODE_INVALID_FILL)
        return volume

    @staticmethod
    def _filled(symbol: sql.TradedSymbol, req: Request, volume: Decimal, partial: bool) -> Decimal:
        """The volume a market deal fills: all of it, or under a ``partial_fill`` fault part of it.
        IOC keeps the part and cancels the rest; FOK, which MT5 fills whole or not at all, is
        rejected. (RETURN, allowed for market orders only on symbols without FOK or IOC, is
        treated as IOC: the rest is not left working as an order.)"""
        if not partial:
            return volume
        if req.type_filling == c.ORDER_FILLING_FOK:
            raise Outcome(c.TRADE_RETCODE_REJECT)
        return faults.partial_volume(volume, symbol.volume_step)

    @staticmethod
    def _order_fill(volume: Decimal, filled: Decimal) -> dict[str, Any]:
        """The market order's final state: filled, or filled in part with the rest cancelled."""
        if filled < volume:
            return {"state": c.ORDER_STATE_CANCELED, "volume_current": volume - filled}
        return {"state": c.ORDER_STATE_FILLED, "volume_current": ZERO}

    def _open(
        self, account: sql.LockedAccount, symbol: sql.TradedSymbol, req: Request, dry_run: bool, *, partial: bool,
        held: SimPosition | None = None,
    ) -> Outcome:  # fmt: skip
        if req.type not in (c.ORDER_TYPE_BUY, c.ORDER_TYPE_SELL):
            raise Outcome(c.TRADE_RETCODE_INVALID_ORDER)
        is_buy = req.type == c.ORDER_TYPE_BUY
        volume = self._check_volume_and_filling(symbol, req, pending=False)
        price = self._check_market_price(symbol, req, is_buy)
        self._check_stops(symbol, is_buy, req.sl, req.tp, symbol.bid if is_buy else symbol.ask)
        if self._lacks_margin(account, symbol, volume, price, is_buy=is_buy, held=held):
            raise Outcome(c.TRADE_RETCODE_NO_MONEY)
        if dry_run:
            return Outcome(c.TRADE_RETCODE_DONE)
        filled = self._filled(symbol, req, volume, partial)
        order_ticket, deal_ticket = allocate_tickets(2)
        stamp = now_msc()
        sl, tp = dec(req.sl), dec(req.tp)
        position_id = self._enter(
            account, symbol, order_ticket=order_ticket, deal_ticket=deal_ticket, is_buy=is_buy, volume=filled,
            price=price, sl=sl, tp=tp, magic=req.magic, comment=req.comment, stamp=stamp, reason=self.reason,
            held=held,
        )  # fmt: skip
        sql.insert(SimOrder, dict(
            ticket=order_ticket, account_id=account.pk, symbol_id=symbol.pk, type=req.type,
            type_filling=req.type_filling, volume_initial=volume, **self._order_fill(volume, filled),
            price_open=price, sl=sl, tp=tp, magic=req.magic, comment=req.comment, position_id=position_id,
            reason=self.reason, time_setup_msc=stamp, time_done_msc=stamp,
        ))  # fmt: skip
        retcode = c.TRADE_RETCODE_DONE_PARTIAL if filled < volume else c.TRADE_RETCODE_DONE
        return Outcome(retcode, symbol=symbol, deal=deal_ticket, order=order_ticket, volume=filled, price=price)

    def _lacks_margin(
        self, account: sql.LockedAccount, symbol: sql.TradedSymbol, volume: Decimal, price: Decimal, *,
        is_buy: bool, held: SimPosition | None = None,
    ) -> bool:  # fmt: skip
        """Would a deal of ``volume`` at ``price`` leave the account's free margin below zero? On
        a netting account an opposite deal frees the margin of the position it reduces: one that
        needs no more margin than before always passes, like a close."""
        quotes = Valuation.quotes([symbol])
        needed = self.valuation.margin(symbol, volume, price, quotes)
        if held is not None and opposite(held.type, is_buy):
            current = symbol.bid if held.type == c.POSITION_TYPE_BUY else symbol.ask
            freed = self.valuation.margin(symbol, held.volume, current, quotes)
            rest = volume - held.volume
            needed = (self.valuation.margin(symbol, rest, price, quotes) if rest > 0 else ZERO) - freed
            if needed <= 0:
                return False
        floating, used = self.valuation.aggregate_exposure(account.pk, self._txn_symbols)
        return account.balance + account.credit + floating - used - needed < 0

    @classmethod
    def _enter(
        cls, account: sql.LockedAccount, symbol: sql.TradedSymbol, *, order_ticket: int, deal_ticket: int,
        is_buy: bool, volume: Decimal, price: Decimal, sl: Decimal, tp: Decimal, magic: int, comment: str, stamp: int,
        reason: int, held: SimPosition | None = None,
    ) -> int:  # fmt: skip
        """The deal an executed market order makes and what it does to the positions; returns
        the identifier of the position it acted on. Without a ``held`` position (a hedging
        account, or a netting one flat on the symbol) it opens one, whose ticket and identifier
        are the order's; with one it nets against it. Deals and positions carry the order's
        reason (the three enums share its values)."""
        if held is not None:
            return cls._net(
                account, symbol, held, order_ticket=order_ticket, deal_ticket=deal_ticket, is_buy=is_buy,
                volume=volume, price=price, sl=sl, tp=tp, magic=magic, comment=comment, stamp=stamp, reason=reason,
            )  # fmt: skip
        # MT5 charges the entry commission to the balance at once; the deal records it.
        commission = -pricing.money(symbol.commission_per_lot * volume, account.currency_digits)
        sql.insert(SimDeal, dict(
            ticket=deal_ticket, account_id=account.pk, order=order_ticket, symbol=symbol.name,
            type=c.DEAL_TYPE_BUY if is_buy else c.DEAL_TYPE_SELL, entry=c.DEAL_ENTRY_IN, magic=magic,
            position_id=order_ticket, reason=reason, volume=volume, price=price, commission=commission,
            comment=comment, time_msc=stamp,
        ))  # fmt: skip
        sql.insert(SimPosition, dict(
            ticket=order_ticket, identifier=order_ticket, account_id=account.pk, symbol_id=symbol.pk,
            type=c.POSITION_TYPE_BUY if is_buy else c.POSITION_TYPE_SELL, volume=volume, price_open=price, sl=sl,
            tp=tp, magic=magic, comment=comment, reason=reason, commission=commission, time_msc=stamp,
            time_update_msc=stamp,
        ))  # fmt: skip
        if commission:
            sql.add_to_balance(account.pk, commission)
        return order_ticket

    @staticmethod
    def _net(
        account: sql.LockedAccount, symbol: sql.TradedSymbol, held: SimPosition, *, order_ticket: int,
        deal_ticket: int, is_buy: bool, volume: Decimal, price: Decimal, sl: Decimal, tp: Decimal, magic: int,
        comment: str, stamp: int, reason: int,
    ) -> int:  # fmt: skip
        """A netting account's deal against its position on the symbol: in its direction it adds
        (IN, the open price becoming the volume-weighted average; SL/TP given replace the
        position's); against it, it reduces or closes it (OUT) or reverses it (INOUT, the rest
        opening the other way at the deal's price with the request's SL/TP, under the reversing
        order's ticket). Every deal charges its commission; what it closes realises its profit
        and its share of the swap into the balance."""
        digits = account.currency_digits
        commission = -pricing.money(symbol.commission_per_lot * volume, digits)
        deal: dict[str, Any] = dict(
            ticket=deal_ticket, account_id=account.pk, order=order_ticket, symbol=symbol.name,
            type=c.DEAL_TYPE_BUY if is_buy else c.DEAL_TYPE_SELL, magic=magic, position_id=held.identifier,
            reason=reason, volume=volume, price=price, commission=commission, comment=comment, time_msc=stamp,
        )  # fmt: skip
        if not opposite(held.type, is_buy):
            total = held.volume + volume
            average = ((held.price_open * held.volume + price * volume) / total).quantize(AVERAGE_PRICE)
            sql.insert(SimDeal, {**deal, "entry": c.DEAL_ENTRY_IN})
            stops = {name: level for name, level in (("sl", sl), ("tp", tp)) if level}
            sql.update(
                SimPosition, held.pk, volume=total, price_open=average, commission=held.commission + commission,
                time_update_msc=stamp, **stops,
            )  # fmt: skip
            if commission:
                sql.add_to_balance(account.pk, commission)
            return held.identifier
        closed = min(volume, held.volume)
        realised = pricing.profit(
            symbol=symbol.name, currency_profit=symbol.currency_profit, contract_size=symbol.trade_contract_size,
            is_buy=held.type == c.POSITION_TYPE_BUY, volume=closed, price_open=held.price_open, price_close=price,
            account_currency=account.currency, account_digits=digits, quotes=Valuation.quotes([symbol]),
        )  # fmt: skip
        swap = held.swap if closed == held.volume else pricing.money(held.swap * closed / held.volume, digits)
        entry = c.DEAL_ENTRY_OUT if volume <= held.volume else c.DEAL_ENTRY_INOUT
        sql.insert(SimDeal, {**deal, "entry": entry, "swap": swap, "profit": realised})
        if volume < held.volume:
            sql.update(SimPosition, held.pk, volume=held.volume - volume, swap=held.swap - swap, time_update_msc=stamp)
        elif volume == held.volume:
            sql.delete_position(held.pk)
        else:
            rest = volume - held.volume
            sql.update(
                SimPosition, held.pk, ticket=order_ticket, type=c.POSITION_TYPE_BUY if is_buy else c.POSITION_TYPE_SELL,
                volume=rest, price_open=price, sl=sl, tp=tp, swap=ZERO,
                commission=pricing.money(commission * rest / volume, digits), magic=magic, comment=comment,
                reason=reason, time_msc=stamp, time_update_msc=stamp,
            )  # fmt: skip
        sql.add_to_balance(account.pk, realised + swap + commission)
        return held.identifier

    def _close(
        self, account: sql.LockedAccount, position: sql.LockedPosition, req: Request, dry_run: bool,
        reason: int = c.DEAL_REASON_EXPERT, partial: bool = False,
    ) -> Outcome:  # fmt: skip
        symbol = position.symbol
        closing_type = c.ORDER_TYPE_SELL if position.type == c.POSITION_TYPE_BUY else c.ORDER_TYPE_BUY
        if req.type != closing_type:
            raise Outcome(c.TRADE_RETCODE_INVALID, "Invalid close order type")
        if dec(req.volume) > position.volume:
            raise Outcome(c.TRADE_RETCODE_INVALID_CLOSE_VOLUME)
        volume = self._check_volume_and_filling(symbol, req, pending=False)
        price = self._check_market_price(symbol, req, closing_type == c.ORDER_TYPE_BUY)
        if dry_run:
            return Outcome(c.TRADE_RETCODE_DONE)
        requested, volume = volume, self._filled(symbol, req, volume, partial)
        digits = account.currency_digits
        realised = pricing.profit(
            symbol=symbol.name, currency_profit=symbol.currency_profit, contract_size=symbol.trade_contract_size,
            is_buy=position.type == c.POSITION_TYPE_BUY, volume=volume, price_open=position.price_open,
            price_close=price, account_currency=account.currency, account_digits=digits,
            quotes=Valuation.quotes([symbol]),
        )  # fmt: skip
        full = volume == position.volume
        # A partial close realises its share of the swap accrued so far.
        swap = position.swap if full else pricing.money(position.swap * volume / position.volume, digits)
        commission = -pricing.money(symbol.commission_per_lot * volume, digits)
        order_ticket, deal_ticket = allocate_tickets(2)
        stamp = now_msc()
        sql.insert(SimOrder, dict(
            ticket=order_ticket, account_id=account.pk, symbol_id=symbol.pk, type=closing_type,
            type_filling=req.type_filling, volume_initial=requested, **self._order_fill(requested, volume),
            price_open=price, magic=req.magic, comment=req.comment, position_id=position.identifier,
            reason=reason, time_setup_msc=stamp, time_done_msc=stamp,
        ))  # fmt: skip
        sql.insert(SimDeal, dict(
            ticket=deal_ticket, account_id=account.pk, order=order_ticket, symbol=symbol.name,
            type=c.DEAL_TYPE_BUY if closing_type == c.ORDER_TYPE_BUY else c.DEAL_TYPE_SELL, entry=c.DEAL_ENTRY_OUT,
            magic=req.magic, position_id=position.identifier, reason=reason, volume=volume, price=price,
            commission=commission, swap=swap, profit=realised, comment=req.comment, time_msc=stamp,
        ))  # fmt: skip
        if full:
            sql.delete_position(position.pk)
        else:
            sql.update(
                SimPosition, position.pk, volume=position.volume - volume, swap=position.swap - swap,
                time_update_msc=stamp,
            )  # fmt: skip
        sql.add_to_balance(account.pk, realised + swap + commission)
        retcode = c.TRADE_RETCODE_DONE_PARTIAL if volume < requested else c.TRADE_RETCODE_DONE
        return Outcome(retcode, symbol=symbol, deal=deal_ticket, order=order_ticket, volume=volume, price=price)

    def _modify_position(self, position: sql.LockedPosition, req: Request, dry_run: bool) -> Outcome:
        symbol = position.symbol
        is_buy = position.type == c.POSITION_TYPE_BUY
        sl, tp = dec(req.sl), dec(req.tp)
        if sl == position.sl and tp == position.tp:
            raise Outcome(c.TRADE_RETCODE_NO_CHANGES)
        self._check_stops(symbol, is_buy, req.sl, req.tp, symbol.bid if is_buy else symbol.ask)
        if not dry_run:
            sql.update(SimPosition, position.pk, sl=sl, tp=tp, time_update_msc=now_msc())
        return Outcome(c.TRADE_RETCODE_DONE, symbol=symbol)

    @staticmethod
    def _check_pending_price(symbol: sql.TradedSymbol, order_type: int, price: Decimal) -> None:
        """A pending order is placed only where the quote has not reached it yet."""
        if not (price > 0 and order_type in PENDING_TYPES and not pending_reached(symbol, order_type, price)):
            raise Outcome(c.TRADE_RETCODE_INVALID_PRICE)

    def _place_pending(
        self, account: sql.LockedAccount, symbol: sql.TradedSymbol, req: Request, dry_run: bool
    ) -> Outcome:
        if req.type not in PENDING_TYPES:
            raise Outcome(c.TRADE_RETCODE_INVALID_ORDER)
        volume = self._check_volume_and_filling(symbol, req, pending=True)
        price = dec(req.price)
        self._check_pending_price(symbol, req.type, price)
        self._check_stops(symbol, req.type in BUY_TYPES, req.sl, req.tp, price)
        if SimOrder.objects.filter(account_id=account.pk, is_open=True).count() >= account.limit_orders:
            raise Outcome(c.TRADE_RETCODE_LIMIT_ORDERS)
        if dry_run:
            return Outcome(c.TRADE_RETCODE_PLACED)
        (ticket,) = allocate_tickets(1)
        SimOrder.objects.create(
            ticket=ticket, account_id=account.pk, symbol_id=symbol.pk, is_open=True, type=req.type,
            type_time=req.type_time, type_filling=req.type_filling, state=c.ORDER_STATE_PLACED,
            volume_initial=volume, volume_current=volume, price_open=price, price_stoplimit=dec(req.stoplimit),
            sl=dec(req.sl), tp=dec(req.tp), magic=req.magic, comment=req.comment, time_setup_msc=now_msc(),
            time_expiration=req.expiration, reason=self.reason,
        )  # fmt: skip
        return Outcome(c.TRADE_RETCODE_PLACED, symbol=symbol, order=ticket, volume=volume, price=price)

    @staticmethod
    def _remove_order(order: SimOrder, dry_run: bool) -> Outcome:
        if not dry_run:
            SimOrder.objects.filter(pk=order.pk).update(
                is_open=False, state=c.ORDER_STATE_CANCELED, time_done_msc=now_msc()
            )
        return Outcome(c.TRADE_RETCODE_DONE, symbol=order.symbol, order=order.ticket)

    def _modify_order(self, order: SimOrder, req: Request, dry_run: bool) -> Outcome:
        price = dec(req.price) if req.price else order.price_open
        sl, tp = dec(req.sl), dec(req.tp)
        if price == order.price_open and sl == order.sl and tp == order.tp:
            raise Outcome(c.TRADE_RETCODE_NO_CHANGES)
        self._check_pending_price(order.symbol, order.type, price)
        self._check_stops(order.symbol, order.type in BUY_TYPES, req.sl, req.tp, price)
        if not dry_run:
            SimOrder.objects.filter(pk=order.pk).update(price_open=price, sl=sl, tp=tp)
        return Outcome(c.TRADE_RETCODE_DONE, symbol=order.symbol, order=order.ticket)

    # --- what a new quote sets off -------------------------------------------------------------
    @classmethod
    def fire_triggers(cls, symbols: Iterable[str] | None = None) -> list[Triggered]:
        """Close each position whose SL or TP the quote reached, and fill each pending order it
        reached, as the trade server does on every tick. A stop becomes a market order: it fills
        at the quote, so a gap past the stop fills worse than the stop. A limit fills at its price
        or the better quote; a stop order at the quote. Each runs in its own transaction with the
        account locked, like ``order_send``; one a client closed or cancelled first is skipped.
        Last, the accounts holding the symbols are checked for a stop-out (``_stop_outs``)."""
        names = list(symbols) if symbols else None
        in_session = Q(symbol__sessions_open=True) & (Q(symbol__name__in=names) if names else Q())
        buy, sell = Q(type=c.POSITION_TYPE_BUY), Q(type=c.POSITION_TYPE_SELL)
        stops = SimPosition.objects.filter(in_session).filter(
            (buy & Q(sl__gt=0, symbol__bid__lte=F("sl")))
            | (buy & Q(tp__gt=0, symbol__bid__gte=F("tp")))
            | (sell & Q(sl__gt=0, symbol__ask__gte=F("sl")))
            | (sell & Q(tp__gt=0, symbol__ask__lte=F("tp")))
        )
        orders = SimOrder.objects.filter(in_session, is_open=True).filter(
            Q(type=c.ORDER_TYPE_BUY_LIMIT, symbol__ask__lte=F("price_open"))
            | Q(type=c.ORDER_TYPE_SELL_LIMIT, symbol__bid__gte=F("price_open"))
            | Q(type=c.ORDER_TYPE_BUY_STOP, symbol__ask__gte=F("price_open"))
            | Q(type=c.ORDER_TYPE_SELL_STOP, symbol__bid__lte=F("price_open"))
        )
        fired: list[Triggered] = []
        for account_id, ticket, magic in stops.order_by("ticket").values_list("account_id", "ticket", "magic"):
            with transaction.atomic():
                fired.extend(cls(account_id)._fire_stop(ticket, magic))
        for account_id, ticket in orders.order_by("ticket").values_list("account_id", "ticket"):
            with transaction.atomic():
                fired.extend(cls(account_id)._fill_pending(ticket))
        fired.extend(cls._stop_outs(names))
        return fired

    @classmethod
    def _stop_outs(cls, names: list[str] | None) -> list[Triggered]:
        """Stop out every account holding the symbols ``names`` (all: None) whose margin level
        fell below its stop-out level. The accounts are first valued together from one GROUP BY
        (``Valuation.grouped_exposure``, exact up to per-position rounding, so a level within a
        point of the line is looked at too); each one near or below it is then judged exactly,
        position by position, under its lock (``_stop_out``)."""
        holding = SimPosition.objects.all()
        if names:
            holding = SimPosition.objects.filter(
                account_id__in=SimPosition.objects.filter(symbol__name__in=names).values("account_id")
            )
        groups: dict[int, list[dict[str, Any]]] = {}
        for group in Valuation.position_groups(holding, "account_id"):
            groups.setdefault(group["account_id"], []).append(group)
        if not groups:
            return []
        accounts = SimAccount.objects.filter(pk__in=list(groups)).values_list(
            "pk", "currency", "currency_digits", "leverage", "balance", "credit", "margin_so_so"
        )
        symbols: dict[int, sql.TradedSymbol] = {s.pk: s for s in read_symbols()}
        fired: list[Triggered] = []
        for pk, currency, digits, leverage, balance, credit, so_level in accounts.order_by("pk"):
            floating, margin = Valuation(currency, digits, leverage).grouped_exposure(groups[pk], symbols)
            if margin > 0 and (balance + credit + floating) / margin * 100 < so_level + 1:
                with transaction.atomic():
                    fired.extend(cls(pk)._stop_out())
        return fired

    def _stop_out(self) -> list[Triggered]:
        """Close the account's most losing position (in a session that is open) while its margin
        level is below its stop-out level: reason SO, the level in the comment (``[so 45.20%]``)."""
        fired: list[Triggered] = []
        while True:
            account = sql.lock_account(self.account_id, faults.clock())
            if account is None:
                return fired
            valuation = Valuation(account.currency, account.currency_digits, account.leverage)
            positions = sql.account_position_rows(account.pk)
            floating, margin = valuation.exposure(positions)
            if not margin:
                return fired
            level = (account.balance + account.credit + floating) / margin * 100
            if level >= account.margin_so_so:
                return fired
            quotes = Valuation.quotes(p.symbol for p in positions)
            in_session = {s.pk for s in read_symbols() if s.sessions_open}
            losses = []
            for p in positions:
                if p.symbol.pk in in_session:
                    _, value = valuation.value(p, quotes)
                    losses.append((value + p.swap, p.ticket))
            if not losses:
                return fired  # nothing the server can close now
            _, ticket = min(losses)
            locked = sql.lock_account_and_position(account.pk, ticket, faults.clock())
            position = locked[1] if locked is not None else None
            assert position is not None  # the account's lock is held: nothing closed it meanwhile
            symbol = position.symbol
            is_buy = position.type == c.POSITION_TYPE_BUY
            market = symbol.bid if is_buy else symbol.ask
            req = Request(
                action=c.TRADE_ACTION_DEAL, symbol=symbol.name, volume=float(position.volume), price=float(market),
                type=c.ORDER_TYPE_SELL if is_buy else c.ORDER_TYPE_BUY, type_filling=filling_for(symbol),
                position=ticket, comment=f"[so {level.quantize(Decimal('0.01'))}%]",
            )  # fmt: skip
            outcome = self._close(account, position, req, dry_run=False, reason=c.DEAL_REASON_SO)
            fired.append(Triggered("so", symbol.name, ticket, outcome.deal, pricing.price_round(market, symbol.digits)))

    def _fire_stop(self, ticket: int, magic: int) -> list[Triggered]:
        try:
            account, symbol, position, _ = self._resolve(Request(action=c.TRADE_ACTION_DEAL, position=ticket))
        except Outcome:
            return []  # closed meanwhile
        assert isinstance(symbol, sql.Symbol) and position is not None
        is_buy = position.type == c.POSITION_TYPE_BUY
        market = symbol.bid if is_buy else symbol.ask
        if position.sl and (market <= position.sl if is_buy else market >= position.sl):
            kind, reason, level = "sl", c.DEAL_REASON_SL, position.sl
        elif position.tp and (market >= position.tp if is_buy else market <= position.tp):
            kind, reason, level = "tp", c.DEAL_REASON_TP, position.tp
        else:
            return []  # moved meanwhile
        req = Request(
            action=c.TRADE_ACTION_DEAL, magic=magic, symbol=symbol.name, volume=float(position.volume),
            price=float(market), type=c.ORDER_TYPE_SELL if is_buy else c.ORDER_TYPE_BUY,
            type_filling=filling_for(symbol), position=ticket, comment=f"[{kind} {level:.{symbol.digits}f}]",
        )  # fmt: skip
        outcome = self._close(account, position, req, dry_run=False, reason=reason)
        return [Triggered(kind, symbol.name, ticket, outcome.deal, pricing.price_round(market, symbol.digits))]

    def _fill_pending(self, ticket: int) -> list[Triggered]:
        account = sql.lock_account(self.account_id, faults.clock())
        if account is None:
            return []  # the account is gone
        order = SimOrder.objects.select_for_update(of=("self",)).filter(ticket=ticket, is_open=True).first()
        if order is None:
            return []  # cancelled or filled meanwhile
        self._txn_symbols = {s.pk: s for s in read_symbols()}
        symbol = self._txn_symbols[order.symbol_id]
        if not pending_reached(symbol, order.type, order.price_open):
            return []  # moved meanwhile
        is_buy = order.type in BUY_TYPES
        market = symbol.ask if is_buy else symbol.bid
        price = market  # a stop fills at the quote; a limit at its price or the better quote
        if order.type in (c.ORDER_TYPE_BUY_LIMIT, c.ORDER_TYPE_SELL_LIMIT):
            price = min(market, order.price_open) if is_buy else max(market, order.price_open)
        stamp = now_msc()
        held = self._held(account, symbol)
        if self._lacks_margin(account, symbol, order.volume_current, price, is_buy=is_buy, held=held):
            sql.update(SimOrder, order.pk, is_open=False, state=c.ORDER_STATE_REJECTED, time_done_msc=stamp)
            return [Triggered("rejected", symbol.name, ticket, 0, pricing.price_round(price, symbol.digits))]
        (deal_ticket,) = allocate_tickets(1)
        position_id = self._enter(
            account, symbol, order_ticket=order.ticket, deal_ticket=deal_ticket, is_buy=is_buy,
            volume=order.volume_current, price=price, sl=order.sl, tp=order.tp, magic=order.magic,
            comment=order.comment, stamp=stamp, reason=order.reason, held=held,
        )  # fmt: skip
        sql.update(
            SimOrder, order.pk, is_open=False, state=c.ORDER_STATE_FILLED, volume_current=ZERO,
            position_id=position_id, time_done_msc=stamp,
        )  # fmt: skip
        return [Triggered("filled", symbol.name, ticket, deal_ticket, pricing.price_round(price, symbol.digits))]
