"""``OfficialGateway``: the Gateway over any object with the MetaTrader5 module's API.

The same code drives the real ``MetaTrader5`` module (Windows), the ``mt5linux`` RPyC client
and ``SimulatedMetaTrader5``; the simulator is how this adapter is tested. It deals with
the module's known traps (ARCHITECTURE.md, "Known pitfalls"):

- one terminal holds one logged-in account: every call first makes sure the requested
  account is the logged-in one (``login`` again when another is asked for);
- ``None`` results carry their reason in ``last_error()``; IPC errors (-10000..-10005) get
  one reconnect (shutdown, initialize, login) and the read is retried once;
- the filling mode must match the symbol's ``filling_mode`` bitmask, for closes too;
- ``order_send`` returning ``None`` after the request may have left is never retried here:
  the result says ``maybe_executed`` and the caller reconciles by tag (magic + comment);
- MT5 timestamps are the server's wall clock, which is often UTC+2/3 although the module
  presents them as UTC, so history windows are padded by a day on each side.

One lock per adapter serialises terminal calls: the module is one IPC channel whose logged-in
account is shared state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from execution.gateway import (
    COMMENT_LIMIT,
    IPC_ERRORS,
    RETRY,
    AccountSnapshot,
    Deal,
    Gateway,
    GatewayUnavailable,
    PendingOrder,
    Position,
    Side,
    SymbolInfo,
    TradeResult,
    classify,
)
from execution.simulator import constants as c

PasswordFor = Callable[[int, str], str | None]

# Server clocks run ahead of UTC by a few hours; a day of padding covers every broker.
HISTORY_PADDING = timedelta(days=1)

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


def _dec(value: float | int) -> Decimal:
    # repr() is the shortest string that round-trips, so 1.0851 stays 1.0851.
    return Decimal(repr(float(value)))


# 10**-digits for the usual currency digits: _money runs for every figure of every snapshot.
_QUANTA = {digits: Decimal(1).scaleb(-digits) for digits in range(9)}


def _money(value: float, digits: int) -> Decimal:
    return _dec(value).quantize(_QUANTA.get(digits) or Decimal(1).scaleb(-digits))


def _optional_price(value: float) -> Decimal | None:
    return _dec(value) if value else None


def _utc_ms(msc: int) -> datetime:
    return datetime.fromtimestamp(msc / 1000, tz=UTC)


def _epoch(moment: datetime) -> int:
    """History bounds as epoch seconds: the module accepts them, and unlike a datetime they
    neither pass through the local timezone nor need pickling over RPyC."""
    return int(moment.timestamp())


def _window(since: datetime) -> tuple[int, int]:
    return _epoch(since - HISTORY_PADDING), _epoch(datetime.now(UTC) + HISTORY_PADDING)


def _side(order_type: int) -> Side:
    return "sell" if order_type % 2 else "buy"


class OfficialGateway(Gateway):
    """The Gateway over an MT5-module-like object (one terminal)."""

    def __init__(
        self,
        mt5_module: Any,
        *,
        terminal_path: str | None = None,
        password_for: PasswordFor | None = None,
        magic: int,
        backend: str = "official",
        verify_account: bool = True,
    ) -> None:
        """``verify_account`` re-reads ``account_info().login`` before each trade, for terminals
        another process may switch to another account; a private terminal can skip it."""
        self.mt5 = mt5_module
        self.terminal_path = terminal_path or None
        self.password_for = password_for
        self.magic = magic
        self.backend = backend
        self.verify_account = verify_account
        self._lock = threading.RLock()
        self._initialized = False
        self._current: tuple[int, str] | None = None
        # Entry commission and entry volume per (login, server, position ticket): they never
        # change once the position is open, so the deal history is read once per position.
        # Per account, each open position's (entry commission, entry lots): read once from history.
        self._entry_costs: dict[tuple[int, str], dict[int, tuple[Decimal, Decimal]]] = {}
        # An account's currency digits never change; reconciliation reads skip account_info.
        self._digits: dict[tuple[int, str], int] = {}

    # --- connection -----------------------------------------------------------------------
    def _error(self) -> tuple[int, str]:
        try:
            code, text = self.mt5.last_error()
        except Exception:  # a dead RPyC link raises anything; treat as no IPC
            return c.RES_E_INTERNAL_FAIL_CONNECT, "No IPC connection"
        return int(code), str(text)

    def _initialize(self) -> None:
        ok = self.mt5.initialize(self.terminal_path) if self.terminal_path else self.mt5.initialize()
        if not ok:
            code, text = self._error()
            self._initialized = False
            raise GatewayUnavailable(f"MT5 initialize failed: ({code}) {text}", code=code)
        self._initialized = True
        self._current = None

    def _login(self, login: int, server: str) -> None:
        kwargs: dict[str, Any] = {"server": server}
        password = self.password_for(login, server) if self.password_for else None
        if password:
            kwargs["password"] = password
        if not self.mt5.login(login, **kwargs):
            code, text = self._error()
            self._current = None
            raise GatewayUnavailable(f"MT5 login to {login}@{server} failed: ({code}) {text}", code=code)
        self._current = (login, server)

    def _ensure(self, login: int, server: str) -> None:
        if not self._initialized:
            self._initialize()
        if self._current != (login, server):
            try:
                self._login(login, server)
            except GatewayUnavailable as exc:
                if exc.code not in IPC_ERRORS:
                    raise
                self._reconnect(login, server)

    def _reconnect(self, login: int, server: str) -> None:
        try:
            self.mt5.shutdown()
        except Exception:  # noqa: S110 - the link is already broken; initialize decides
            pass
        self._initialized = False
        self._current = None
        self._initialize()
        self._login(login, server)

    def _read(self, login: int, server: str, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call a read function; on an IPC error reconnect once and retry; ``None`` otherwise passes through."""
        self._ensure(login, server)
        result = getattr(self.mt5, name)(*args, **kwargs)
        if result is not None:
            return result
        code, text = self._error()
        if code in IPC_ERRORS or code == c.RES_E_AUTH_FAILED:
            self._reconnect(login, server)
            result = getattr(self.mt5, name)(*args, **kwargs)
            if result is None:
                code, text = self._error()
                if code in IPC_ERRORS or code == c.RES_E_AUTH_FAILED:
                    raise GatewayUnavailable(f"MT5 {name} failed after reconnecting: ({code}) {text}", code=code)
        return result

    def _read_list(self, login: int, server: str, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        result = self._read(login, server, name, *args, **kwargs)
        if result is None:
            code, text = self._error()
            if code in (c.RES_S_OK, c.RES_E_NOT_FOUND):
                return ()  # some builds answer "nothing matches" with None
            raise GatewayUnavailable(f"MT5 {name} failed: ({code}) {text}", code=code)
        return tuple(result)

    def _verify_account(self, login: int, server: str) -> None:
        info = self._read(login, server, "account_info")
        if info is None or int(info.login) != login:
            # Someone else switched the shared terminal: log back in before trading.
            self._login(login, server)

    # --- reads ----------------------------------------------------------------------------
    def _account_digits(self, login: int, server: str) -> int:
        if (login, server) not in self._digits:
            info = self._read(login, server, "account_info")
            if info is None:
                code, text = self._error()
                raise GatewayUnavailable(f"MT5 account_info for {login}@{server} failed: ({code}) {text}", code=code)
            self._digits[(login, server)] = int(info.currency_digits)
        return self._digits[(login, server)]

    def _symbol_raw(self, login: int, server: str, symbol: str) -> Any:
        info = self._read(login, server, "symbol_info", symbol)
        if info is None or not getattr(info, "visible", True):
            # Symbols outside Market Watch have no live quotes until selected.
            if self._read(login, server, "symbol_select", symbol, True):
                info = self._read(login, server, "symbol_info", symbol)
        return info

    def symbol_info(self, login: int, server: str, symbol: str) -> SymbolInfo | None:
        with self._lock:
            raw = self._symbol_raw(login, server, symbol)
        if raw is None:
            return None
        return SymbolInfo(
            name=raw.name,
            description=raw.description,
            digits=int(raw.digits),
            point=_dec(raw.point),
            contract_size=_dec(raw.trade_contract_size),
            volume_min=_dec(raw.volume_min),
            volume_max=_dec(raw.volume_max),
            volume_step=_dec(raw.volume_step),
            filling_mode=int(raw.filling_mode),
            trade_mode=int(raw.trade_mode),
            trade_exemode=int(raw.trade_exemode),
            stops_level=int(raw.trade_stops_level),
            bid=_dec(raw.bid),
            ask=_dec(raw.ask),
            spread=int(raw.spread),
            tick_value=_dec(raw.trade_tick_value),
            tick_size=_dec(raw.trade_tick_size),
            currency_base=raw.currency_base,
            currency_profit=raw.currency_profit,
            currency_margin=raw.currency_margin,
            quoted_at=datetime.fromtimestamp(int(raw.time), tz=UTC),
        )

    def _position(self, raw: Any, digits: int, commission: Decimal) -> Position:
        return Position(
            ticket=int(raw.ticket),
            symbol=raw.symbol,
            side="buy" if raw.type == c.POSITION_TYPE_BUY else "sell",
            volume=_dec(raw.volume),
            price_open=_dec(raw.price_open),
            price_current=_dec(raw.price_current),
            sl=_optional_price(raw.sl),
            tp=_optional_price(raw.tp),
            profit=_money(raw.profit, digits),
            swap=_money(raw.swap, digits),
            commission=commission,
            magic=int(raw.magic),
            comment=raw.comment,
            opened_at=_utc_ms(int(raw.time_msc)),
        )

    def _order(self, raw: Any) -> PendingOrder:
        return PendingOrder(
            ticket=int(raw.ticket),
            symbol=raw.symbol,
            side=_side(int(raw.type)),
            order_type=ORDER_TYPE_NAMES.get(int(raw.type), str(raw.type)),
            state=ORDER_STATE_NAMES.get(int(raw.state), str(raw.state)),
            volume_initial=_dec(raw.volume_initial),
            volume_current=_dec(raw.volume_current),
            price_open=_dec(raw.price_open),
            price_current=_dec(raw.price_current),
            sl=_optional_price(raw.sl),
            tp=_optional_price(raw.tp),
            magic=int(raw.magic),
            comment=raw.comment,
            position_id=int(raw.position_id),
            placed_at=_utc_ms(int(raw.time_setup_msc)),
            done_at=_utc_ms(int(raw.time_done_msc)) if raw.time_done_msc else None,
        )

    @staticmethod
    def _deal(raw: Any, digits: int) -> Deal:
        return Deal(
            ticket=int(raw.ticket),
            order=int(raw.order),
            position_id=int(raw.position_id),
            symbol=raw.symbol,
            side=DEAL_TYPE_NAMES.get(int(raw.type), str(raw.type)),
            entry=DEAL_ENTRY_NAMES.get(int(raw.entry), str(raw.entry)),
            volume=_dec(raw.volume),
            price=_dec(raw.price),
            profit=_money(raw.profit, digits),
            commission=_money(raw.commission, digits),
            swap=_money(raw.swap, digits),
            magic=int(raw.magic),
            comment=raw.comment,
            time=_utc_ms(int(raw.time_msc)),
        )

    def _commissions(self, login: int, server: str, raw_positions: Iterable[Any], digits: int) -> dict[int, Decimal]:
        """Each open position's entry commission, scaled to its remaining volume."""
        positions = list(raw_positions)
        known = self._entry_costs.get((login, server), {})
        missing = [p for p in positions if int(p.ticket) not in known]
        if missing:
            since = min(_utc_ms(int(p.time_msc)) for p in missing)
            deals = self._read_list(login, server, "history_deals_get", *_window(since))
            wanted = {int(p.ticket) for p in missing}
            found: dict[int, tuple[Decimal, Decimal]] = {}
            for deal in deals:
                position_id = int(deal.position_id)
                if position_id in wanted and deal.entry == c.DEAL_ENTRY_IN:
                    fee, lots = found.get(position_id, (Decimal(0), Decimal(0)))
                    found[position_id] = (fee + _dec(deal.commission), lots + _dec(deal.volume))
            for ticket in wanted:
                known[ticket] = found.get(ticket, (Decimal(0), Decimal(0)))
        if missing or len(known) != len(positions):
            # Keep only the open positions' entries, so closed ones do not pile up.
            known = {int(p.ticket): known[int(p.ticket)] for p in positions}
            self._entry_costs[(login, server)] = known
        quantum = _QUANTA.get(digits) or Decimal(1).scaleb(-digits)
        result = {}
        for p in positions:
            fee, lots = known[int(p.ticket)]
            share = fee * _dec(p.volume) / lots if lots else fee
            result[int(p.ticket)] = share.quantize(quantum)
        return result

    def account_snapshot(self, login: int, server: str) -> AccountSnapshot:
        with self._lock:
            info = self._read(login, server, "account_info")
            if info is not None and int(info.login) != login:
                self._login(login, server)
                info = self._read(login, server, "account_info")
            if info is None:
                code, text = self._error()
                raise GatewayUnavailable(f"MT5 account_info for {login}@{server} failed: ({code}) {text}")
            raw_positions = self._read_list(login, server, "positions_get")
            raw_orders = self._read_list(login, server, "orders_get")
            return self._snapshot(login, server, info, raw_positions, raw_orders)

    def account_snapshots(
        self, accounts: Iterable[tuple[int, str]]
    ) -> dict[tuple[int, str], AccountSnapshot | Exception]:
        """Many accounts at once: one pass when the module can read them together (the simulator)."""
        return dict(self.account_snapshots_stream(accounts))

    def account_snapshots_stream(
        self, accounts: Iterable[tuple[int, str]]
    ) -> Iterator[tuple[tuple[int, str], AccountSnapshot | Exception]]:
        """``account_snapshots`` in order, for a caller that acts on each account as it comes (the
        risk monitor): read together now when the module can (the simulator), each converted only
        when its turn comes; otherwise each read when its turn comes. An account that cannot be
        read comes as its exception, and the others still come."""
        keys = list(accounts)
        bulk = getattr(self.mt5, "sim_bulk_state", None)
        if bulk is None:
            return self._read_one_by_one(keys)
        with self._lock:
            states = bulk(keys)
        # One read, one time: when it returned. Every account in it was read by then; a time
        # taken as each is converted would be later than the read, by the others' conversion.
        return self._converted(keys, states, datetime.now(UTC))

    def _read_one_by_one(
        self, keys: list[tuple[int, str]]
    ) -> Iterator[tuple[tuple[int, str], AccountSnapshot | Exception]]:
        for login, server in keys:
            try:
                yield (login, server), self.account_snapshot(login, server)
            except GatewayUnavailable as exc:
                yield (login, server), exc

    def _converted(
        self, keys: list[tuple[int, str]], states: dict[tuple[int, str], Any], observed_at: datetime
    ) -> Iterator[tuple[tuple[int, str], AccountSnapshot | Exception]]:
        for key in keys:
            state = states.get(key)
            if state is None:
                yield key, GatewayUnavailable(f"no account {key[0]}@{key[1]} on the terminal")
                continue
            info, raw_positions, raw_orders = state
            try:
                with self._lock:  # a new position's entry commission is read from the terminal
                    snapshot = self._snapshot(key[0], key[1], info, raw_positions, raw_orders, observed_at)
            except GatewayUnavailable as exc:
                yield key, exc
                continue
            yield key, snapshot

    def _snapshot(
        self,
        login: int,
        server: str,
        info: Any,
        raw_positions: Any,
        raw_orders: Any,
        observed_at: datetime | None = None,
    ) -> AccountSnapshot:
        digits = int(info.currency_digits)
        self._digits[(login, server)] = digits
        commissions = self._commissions(login, server, raw_positions, digits)
        observed_at = observed_at or datetime.now(UTC)

        def money(value: float) -> Decimal:
            return _money(value, digits)

        return AccountSnapshot(
            login=int(info.login),
            server=info.server,
            currency=info.currency,
            currency_digits=digits,
            leverage=int(info.leverage),
            balance=money(info.balance),
            credit=money(info.credit),
            equity=money(info.equity),
            margin=money(info.margin),
            margin_free=money(info.margin_free),
            margin_level=_dec(info.margin_level).quantize(Decimal("0.01")),
            profit=money(info.profit),
            positions=tuple(self._position(p, digits, commissions[int(p.ticket)]) for p in raw_positions),
            orders=tuple(self._order(o) for o in raw_orders),
            observed_at=observed_at,
            trade_allowed=bool(info.trade_allowed) and bool(info.trade_expert),
        )

    def deals_by_tag(self, login: int, server: str, *, tag: str, since: datetime) -> tuple[Deal, ...]:
        with self._lock:
            digits = self._account_digits(login, server)
            raw = self._read_list(login, server, "history_deals_get", *_window(since))
        return tuple(self._deal(d, digits) for d in raw if d.comment == tag and int(d.magic) == self.magic)

    def orders_by_tag(self, login: int, server: str, *, tag: str, since: datetime) -> tuple[PendingOrder, ...]:
        """Live pending orders and historical orders (filled, canceled, ...) carrying ``tag``."""
        with self._lock:
            live = self._read_list(login, server, "orders_get")
            history = self._read_list(login, server, "history_orders_get", *_window(since))
        return tuple(self._order(o) for o in (*live, *history) if o.comment == tag and int(o.magic) == self.magic)

    def position(self, login: int, server: str, ticket: int) -> Position | None:
        """positions_get(ticket=...): a close needs its position, not the whole account."""
        with self._lock:
            digits = self._account_digits(login, server)
            raw = self._read_list(login, server, "positions_get", ticket=ticket)
            if not raw:
                return None
            commissions = self._commissions(login, server, raw[:1], digits)
        return self._position(raw[0], digits, commissions[int(raw[0].ticket)])

    def positions_by_tag(self, login: int, server: str, *, tag: str) -> tuple[Position, ...]:
        with self._lock:
            digits = self._account_digits(login, server)
            raw = [p for p in self._read_list(login, server, "positions_get") if p.comment == tag]
            raw = [p for p in raw if int(p.magic) == self.magic]
            commissions = self._commissions(login, server, raw, digits) if raw else {}
        return tuple(self._position(p, digits, commissions[int(p.ticket)]) for p in raw)

    # --- trading --------------------------------------------------------------------------
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
            info = classify(code)
            ipc = code in IPC_ERRORS or code == c.RES_E_FAIL
            if ipc:
                # Force a fresh initialize + login before the next call on this terminal.
                self._initialized = False
                self._current = None
            return TradeResult(
                outcome=RETRY if ipc else info.outcome,
                retcode=code,
                retcode_name=info.name,
                message=f"order_send returned None: {text}",
                request=dict(request),
                maybe_executed=ipc,
                position=position,
            )
        info = classify(int(result.retcode))
        order = int(result.order)
        return TradeResult(
            outcome=info.outcome,
            retcode=info.code,
            retcode_name=info.name,
            message=str(result.comment) or info.message,
            order=order,
            deal=int(result.deal),
            volume=_dec(result.volume),
            price=_dec(result.price),
            request=dict(request),
            comment=str(result.comment),
            maybe_executed=info.code == c.TRADE_RETCODE_TIMEOUT,
            position=position
            or (order if request.get("action") == c.TRADE_ACTION_DEAL and info.outcome == "done" else 0),
        )

    @staticmethod
    def _refused(retcode: int, message: str, request: dict[str, Any] | None = None, position: int = 0) -> TradeResult:
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
                return self._refused(c.TRADE_RETCODE_INVALID, f"Unknown symbol {symbol!r}")
            is_buy = side == "buy"
            request: dict[str, Any] = {
                "action": c.TRADE_ACTION_DEAL,
                "symbol": symbol,
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
            return self._send(login, server, request)

    def close_position(
        self, login: int, server: str, *, ticket: int, volume: Decimal | None = None, deviation: int = 20, tag: str
    ) -> TradeResult:
        """Close ``volume`` lots (all when None) with an opposite market deal against the position."""
        self._check_tag(tag)
        with self._lock:
            found = self._read_list(login, server, "positions_get", ticket=ticket)
            if not found:
                return self._refused(c.TRADE_RETCODE_POSITION_CLOSED, f"Position {ticket} is not open", position=ticket)
            position = found[0]
            info = self._symbol_raw(login, server, position.symbol)
            if info is None:
                return self._refused(c.TRADE_RETCODE_INVALID, f"Unknown symbol {position.symbol!r}", position=ticket)
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
                return self._refused(c.TRADE_RETCODE_POSITION_CLOSED, f"Position {ticket} is not open", position=ticket)
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
                return self._refused(c.TRADE_RETCODE_INVALID, f"Unknown symbol {symbol!r}")
            request: dict[str, Any] = {
                "action": c.TRADE_ACTION_PENDING,
                "symbol": symbol,
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
                return self._refused(c.TRADE_RETCODE_INVALID, f"Pending order {ticket} does not exist")
            request = {"action": c.TRADE_ACTION_REMOVE, "order": int(ticket), "magic": self.magic, "comment": tag}
            return self._send(login, server, request)

    # --- health ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._lock:
            try:
                if not self._initialized:
                    self._initialize()
                info = self.mt5.terminal_info()
                if info is None:
                    code, text = self._error()
                    if code not in IPC_ERRORS:
                        raise GatewayUnavailable(f"terminal_info failed: ({code}) {text}")
                    self._initialize()
                    info = self.mt5.terminal_info()
                    if info is None:
                        code, text = self._error()
                        raise GatewayUnavailable(f"terminal_info failed after reconnecting: ({code}) {text}")
            except GatewayUnavailable as exc:
                return {"backend": self.backend, "available": False, "detail": exc.message}
            except Exception as exc:  # health must answer, whatever the transport did
                self._initialized = False
                return {"backend": self.backend, "available": False, "detail": f"{type(exc).__name__}: {exc}"}
            connected = bool(info.connected)
            return {
                "backend": self.backend,
                "available": connected,
                "detail": f"{info.name} build {info.build}, "
                + ("connected to the trade server" if connected else "no connection to the trade server"),
                "trade_allowed": bool(info.trade_allowed),
                # The terminal's "disable automatic trading through the Python API" option.
                "trade_api_disabled": bool(getattr(info, "tradeapi_disabled", False)),
                "logged_in": self._current[0] if self._current else None,
            }
