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

from execution.models import SimDeal, SimFault, SimFaultKind, SimOrder, SimPosition
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
    """What a quote set off: ``sl``/``tp`` (a position closed), ``filled``/``rejected`` (an order)."""

    kind: str
    symbol: str
    ticket: int
    deal: int
    price: Decimal


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
            closing = position is not None and req.action == c.TRADE_ACTION_DEAL
            self._check_permissions(account, symbol, req, closing=closing)
            if req.action == c.TRADE_ACTION_DEAL and position is None:
                outcome = self._open(account, symbol, req, dry_run, partial=partial)
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
        self, account: sql.LockedAccount, symbol: sql.TradedSymbol, req: Request, dry_run: bool, *, partial: bool
    ) -> Outcome:
        if req.type not in (c.ORDER_TYPE_BUY, c.ORDER_TYPE_SELL):
            raise Outcome(c.TRADE_RETCODE_INVALID_ORDER)
        is_buy = req.type == c.ORDER_TYPE_BUY
        volume = self._check_volume_and_filling(symbol, req, pending=False)
        price = self._check_market_price(symbol, req, is_buy)
        self._check_stops(symbol, is_buy, req.sl, req.tp, symbol.bid if is_buy else symbol.ask)
        if self._lacks_margin(account, symbol, volume, price):
            raise Outcome(c.TRADE_RETCODE_NO_MONEY)
        if dry_run:
            return Outcome(c.TRADE_RETCODE_DONE)
        filled = self._filled(symbol, req, volume, partial)
        order_ticket, deal_ticket = allocate_tickets(2)
        stamp = now_msc()
        sl, tp = dec(req.sl), dec(req.tp)
        sql.insert(SimOrder, dict(
            ticket=order_ticket, account_id=account.pk, symbol_id=symbol.pk, type=req.type,
            type_filling=req.type_filling, volume_initial=volume, **self._order_fill(volume, filled),
            price_open=price, sl=sl, tp=tp, magic=req.magic, comment=req.comment, position_id=order_ticket,
            reason=self.reason, time_setup_msc=stamp, time_done_msc=stamp,
        ))  # fmt: skip
        self._enter(
            account, symbol, order_ticket=order_ticket, deal_ticket=deal_ticket, is_buy=is_buy, volume=filled,
            price=price, sl=sl, tp=tp, magic=req.magic, comment=req.comment, stamp=stamp, reason=self.reason,
        )  # fmt: skip
        retcode = c.TRADE_RETCODE_DONE_PARTIAL if filled < volume else c.TRADE_RETCODE_DONE
        return Outcome(retcode, symbol=symbol, deal=deal_ticket, order=order_ticket, volume=filled, price=price)

    def _lacks_margin(
        self, account: sql.LockedAccount, symbol: sql.TradedSymbol, volume: Decimal, price: Decimal
    ) -> bool:
        """Would opening ``volume`` at ``price`` leave the account's free margin below zero?"""
        floating, used = self.valuation.aggregate_exposure(account.pk, self._txn_symbols)
        needed = self.valuation.margin(symbol, volume, price, Valuation.quotes([symbol]))
        return account.balance + account.credit + floating - used - needed < 0

    @staticmethod
    def _enter(
        account: sql.LockedAccount, symbol: sql.TradedSymbol, *, order_ticket: int, deal_ticket: int, is_buy: bool,
        volume: Decimal, price: Decimal, sl: Decimal, tp: Decimal, magic: int, comment: str, stamp: int, reason: int,
    ) -> None:  # fmt: skip
        """The entry deal and the position an executed order opens (its ticket is the order's);
        both carry the order's reason (the three enums share its values)."""
        # MT5 charges the entry commission to the balance at once; the deal records it.
        commission = -pricing.money(symbol.commission_per_lot * volume, account.currency_digits)
        sql.insert(SimDeal, dict(
            ticket=deal_ticket, account_id=account.pk, order=order_ticket, symbol=symbol.name,
            type=c.DEAL_TYPE_BUY if is_buy else c.DEAL_TYPE_SELL, entry=c.DEAL_ENTRY_IN, magic=magic,
            position_id=order_ticket, reason=reason, volume=volume, price=price, commission=commission,
            comment=comment, time_msc=stamp,
        ))  # fmt: skip
        sql.insert(SimPosition, dict(
            ticket=order_ticket, account_id=account.pk, symbol_id=symbol.pk,
            type=c.POSITION_TYPE_BUY if is_buy else c.POSITION_TYPE_SELL, volume=volume, price_open=price, sl=sl,
            tp=tp, magic=magic, comment=comment, reason=reason, commission=commission, time_msc=stamp,
            time_update_msc=stamp,
        ))  # fmt: skip
        if commission:
            sql.add_to_balance(account.pk, commission)

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
            price_open=price, magic=req.magic, comment=req.comment, position_id=position.ticket,
            reason=reason, time_setup_msc=stamp, time_done_msc=stamp,
        ))  # fmt: skip
        sql.insert(SimDeal, dict(
            ticket=deal_ticket, account_id=account.pk, order=order_ticket, symbol=symbol.name,
            type=c.DEAL_TYPE_BUY if closing_type == c.ORDER_TYPE_BUY else c.DEAL_TYPE_SELL, entry=c.DEAL_ENTRY_OUT,
            magic=req.magic, position_id=position.ticket, reason=reason, volume=volume, price=price,
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
        account locked, like ``order_send``; one a client closed or cancelled first is skipped."""
        in_session = Q(symbol__sessions_open=True) & (Q(symbol__name__in=list(symbols)) if symbols else Q())
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
        return fired

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
        if self._lacks_margin(account, symbol, order.volume_current, price):
            sql.update(SimOrder, order.pk, is_open=False, state=c.ORDER_STATE_REJECTED, time_done_msc=stamp)
            return [Triggered("rejected", symbol.name, ticket, 0, pricing.price_round(price, symbol.digits))]
        (deal_ticket,) = allocate_tickets(1)
        sql.update(
            SimOrder, order.pk, is_open=False, state=c.ORDER_STATE_FILLED, volume_current=ZERO,
            position_id=order.ticket, time_done_msc=stamp,
        )  # fmt: skip
        self._enter(
            account, symbol, order_ticket=order.ticket, deal_ticket=deal_ticket, is_buy=is_buy,
            volume=order.volume_current, price=price, sl=order.sl, tp=order.tp, magic=order.magic,
            comment=order.comment, stamp=stamp, reason=order.reason,
        )  # fmt: skip
        return [Triggered("filled", symbol.name, ticket, deal_ticket, pricing.price_round(price, symbol.digits))]
