"""Trading through the terminal: ``order_send`` for opening, closing and modifying positions and
for placing and cancelling pending orders, and the reads by tag (magic + comment) that
reconcile a request whose answer was lost.

``order_send`` returning ``None`` after the request may have left is never retried here: the
result says ``maybe_executed`` and the caller reconciles by tag. The filling mode must match
the symbol's ``filling_mode`` bitmask, for closes too.

On a netting account (one position per symbol) an open's deal may add to a position opened
earlier, so the position it acted on is read from the deal (``position_id``), never assumed
to be the order's ticket; a close is the opposite deal naming the position, as on hedging.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from alerts.models import Alert
from alerts.services import alert_raise
from execution.adapters.official.conversion import (
    PENDING_TYPES,
    answered,
    choose_filling,
    lost_link,
    refused,
    to_deal,
    to_order,
    to_position,
    unanswered,
    window,
)
from execution.adapters.official.reads import Reads
from execution.gateway import COMMENT_LIMIT, Deal, PendingOrder, Position, Side, TradeResult
from execution.simulator import constants as c


class Trading(Reads):
    """The gateway's trade requests and its reconciliation by tag (``OfficialGateway.__init__``
    sets ``magic`` and ``verify_account``)."""

    magic: int
    verify_account: bool

    def _send(self, login: int, server: str, request: dict[str, Any], *, position: int = 0) -> TradeResult:
        """order_send and its result, classified. Never retried here: a lost answer is reconciled."""
        if self.verify_account:
            self._verify_account(login, server)
        try:
            result = self.mt5.order_send(request)
        except Exception as exc:  # an RPyC transport error after sending
            result, error = None, (c.RES_E_INTERNAL_FAIL, f"order_send raised {type(exc).__name__}: {exc}")
        else:
            error = self._error() if result is None else (c.RES_S_OK, "")
        if result is None:
            code, text = error
            if lost_link(code):
                # Force a fresh initialize + login before the next call on this terminal.
                self._initialized = False
                self._current = None
            return unanswered(code, text, self._reported(server, request), position)
        if self.verify_account:
            self._check_still_on(login, server, request)
        return answered(result, self._reported(server, request), position)

    def _reported(self, server: str, request: dict[str, Any]) -> dict[str, Any]:
        """The request as results report it: its symbol canonical, the server's name beside it
        when it differs."""
        broker = request.get("symbol")
        if not broker:
            return request
        canonical = self._symbols.canonical(server, broker)
        if canonical == broker:
            return request
        return {**request, "symbol": canonical, "broker_symbol": broker}

    def _check_still_on(self, login: int, server: str, request: dict[str, Any]) -> None:
        """After a trade, the terminal must still hold the account it was for. Its owner is the
        only process that switches it, so this never fires unless something outside the bridge
        (a person at the terminal, a second bridge) logged in meanwhile: then the trade may be on
        another account, and an operator must look."""
        info = self.mt5.account_info()
        if info is not None and int(info.login) != login:
            self._current = None
            alert_raise(
                kind=Alert.Kind.TERMINAL_SWITCHED,
                subject=f"{self.terminal_path or 'default'}:{login}",
                title=f"Terminal {self.terminal_path or 'default'} switched accounts in a trade for {login}",
                body=f"After the trade it held {info.login}: check {request.get('comment', '')!r} on both accounts.",
            )

    @staticmethod
    def _check_tag(tag: str) -> None:
        if not tag or len(tag) > COMMENT_LIMIT:
            raise ValueError(f"an MT5 tag must be 1-{COMMENT_LIMIT} characters; use gateway.order_tag()")

    def open_position(
        self,
        login: int,
        server: str,
        *,
        symbol: str,
        side: Side,
        volume: Decimal,
        price: Decimal | None = None,
        sl: Decimal | None = None,
        tp: Decimal | None = None,
        deviation: int = 20,
        tag: str,
    ) -> TradeResult:
        self._check_tag(tag)
        with self._lock:
            info = self._symbol_raw(login, server, symbol)
            if info is None:
                return refused(c.TRADE_RETCODE_INVALID, f"Unknown symbol {symbol!r}")
            is_buy = side == "buy"
            request: dict[str, Any] = {
                "action": c.TRADE_ACTION_DEAL,
                "symbol": str(info.name),  # the server's name for it
                "volume": float(volume),
                "type": c.ORDER_TYPE_BUY if is_buy else c.ORDER_TYPE_SELL,
                "price": float(price) if price is not None else float(info.ask if is_buy else info.bid),
                "deviation": int(deviation),
                "magic": self.magic,
                "comment": tag,
                "type_time": c.ORDER_TIME_GTC,
                "type_filling": choose_filling(int(info.filling_mode)),
            }
            if sl:
                request["sl"] = float(sl)
            if tp:
                request["tp"] = float(tp)
            result = self._send(login, server, request)
            if result.ok and result.deal and self._nets(login, server):
                result = replace(result, position=self._position_of_deal(login, server, result.deal, str(info.name)))
            return result

    def _position_of_deal(self, login: int, server: str, deal: int, symbol: str) -> int:
        # ``symbol``: the server's name of the deal's symbol.
        """The ticket of the netting position ``deal`` acted on: the deal's ``position_id`` is the
        position's identifier, which is its ticket unless a reversal gave it another. The
        symbol's position when the deal is not in the history yet; its identifier when the
        position is gone (closed meanwhile)."""
        found = self._read_list(login, server, "history_deals_get", ticket=deal)
        identifier = int(found[0].position_id) if found else 0
        for held in self._read_list(login, server, "positions_get", symbol=symbol):
            if not identifier or int(held.identifier) == identifier:
                return int(held.ticket)
        return identifier

    def close_position(
        self, login: int, server: str, *, ticket: int, volume: Decimal | None = None, deviation: int = 20, tag: str
    ) -> TradeResult:
        """Close ``volume`` lots (all when None) with an opposite market deal against the position."""
        self._check_tag(tag)
        with self._lock:
            found = self._read_list(login, server, "positions_get", ticket=ticket)
            if not found:
                return refused(c.TRADE_RETCODE_POSITION_CLOSED, f"Position {ticket} is not open", position=ticket)
            position = found[0]
            info = self._listed(login, server, position.symbol)
            if info is None:
                name = self._symbols.canonical(server, position.symbol)
                return refused(c.TRADE_RETCODE_INVALID, f"Unknown symbol {name!r}", position=ticket)
            closing_sell = position.type == c.POSITION_TYPE_BUY
            request = {
                "action": c.TRADE_ACTION_DEAL,
                "position": int(ticket),
                "symbol": position.symbol,
                "volume": float(volume) if volume is not None else float(position.volume),
                "type": c.ORDER_TYPE_SELL if closing_sell else c.ORDER_TYPE_BUY,
                "price": float(info.bid if closing_sell else info.ask),
                "deviation": int(deviation),
                "magic": self.magic,
                "comment": tag,
                "type_time": c.ORDER_TIME_GTC,
                "type_filling": choose_filling(int(info.filling_mode)),
            }
            return self._send(login, server, request, position=ticket)

    def modify_position(
        self, login: int, server: str, *, ticket: int, sl: Decimal | None = None, tp: Decimal | None = None, tag: str
    ) -> TradeResult:
        """Set SL/TP. ``None`` keeps the current level; ``Decimal(0)`` removes it."""
        self._check_tag(tag)
        with self._lock:
            found = self._read_list(login, server, "positions_get", ticket=ticket)
            if not found:
                return refused(c.TRADE_RETCODE_POSITION_CLOSED, f"Position {ticket} is not open", position=ticket)
            position = found[0]
            request = {
                "action": c.TRADE_ACTION_SLTP,
                "position": int(ticket),
                "symbol": position.symbol,
                "sl": float(sl) if sl is not None else float(position.sl),
                "tp": float(tp) if tp is not None else float(position.tp),
                "magic": self.magic,
                "comment": tag,
            }
            return self._send(login, server, request, position=ticket)

    def place_pending_order(
        self,
        login: int,
        server: str,
        *,
        symbol: str,
        side: Side,
        kind: Literal["limit", "stop"],
        volume: Decimal,
        price: Decimal,
        sl: Decimal | None = None,
        tp: Decimal | None = None,
        tag: str,
    ) -> TradeResult:
        self._check_tag(tag)
        with self._lock:
            info = self._symbol_raw(login, server, symbol)
            if info is None:
                return refused(c.TRADE_RETCODE_INVALID, f"Unknown symbol {symbol!r}")
            request: dict[str, Any] = {
                "action": c.TRADE_ACTION_PENDING,
                "symbol": str(info.name),  # the server's name for it
                "volume": float(volume),
                "type": PENDING_TYPES[(side, kind)],
                "price": float(price),
                "magic": self.magic,
                "comment": tag,
                "type_time": c.ORDER_TIME_GTC,
                "type_filling": choose_filling(int(info.filling_mode)),
            }
            if sl:
                request["sl"] = float(sl)
            if tp:
                request["tp"] = float(tp)
            return self._send(login, server, request)

    def cancel_order(self, login: int, server: str, *, ticket: int, tag: str) -> TradeResult:
        self._check_tag(tag)
        with self._lock:
            if not self._read_list(login, server, "orders_get", ticket=ticket):
                return refused(c.TRADE_RETCODE_INVALID, f"Pending order {ticket} does not exist")
            request = {"action": c.TRADE_ACTION_REMOVE, "order": int(ticket), "magic": self.magic, "comment": tag}
            return self._send(login, server, request)

    # --- reconciliation by tag -------------------------------------------------------------
    def deals_by_tag(self, login: int, server: str, *, tag: str, since: datetime) -> tuple[Deal, ...]:
        with self._lock:
            digits = self._account_digits(login, server)
            offset = self._server_offset()
            raw = self._read_list(login, server, "history_deals_get", *window(since, offset))
        canonical = self._canonical(server)
        return tuple(
            to_deal(d, digits, offset, canonical) for d in raw if d.comment == tag and int(d.magic) == self.magic
        )

    def orders_by_tag(self, login: int, server: str, *, tag: str, since: datetime) -> tuple[PendingOrder, ...]:
        """Live pending orders and historical orders (filled, canceled, ...) carrying ``tag``."""
        with self._lock:
            live = self._read_list(login, server, "orders_get")
            offset = self._server_offset()
            history = self._read_list(login, server, "history_orders_get", *window(since, offset))
        tagged = (o for o in (*live, *history) if o.comment == tag and int(o.magic) == self.magic)
        canonical = self._canonical(server)
        return tuple(to_order(o, offset, canonical) for o in tagged)

    def positions_by_tag(self, login: int, server: str, *, tag: str) -> tuple[Position, ...]:
        with self._lock:
            digits = self._account_digits(login, server)
            raw = [p for p in self._read_list(login, server, "positions_get") if p.comment == tag]
            raw = [p for p in raw if int(p.magic) == self.magic]
            commissions = self._commissions(login, server, raw, digits) if raw else {}
            offset = self._server_offset()
        canonical = self._canonical(server)
        return tuple(to_position(p, digits, commissions[int(p.ticket)], offset, canonical) for p in raw)
