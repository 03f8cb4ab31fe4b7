"""``SimulatedMetaTrader5``: the MetaTrader5 module's API over the simulator's database state.

One instance behaves like one terminal: it is initialised, logged into one account at a
time, and answers with the real module's namedtuples, constants and failure convention
(``None`` plus ``last_error()``). The trade server behind it is shared by every process
through the database, so mutations run in a transaction with the account row locked.

Faults injected with ``sim_inject_fault`` are consumed here by ``order_send``:
``requote`` (10004), ``market_closed`` (10018), ``no_connection`` (``None``, -10004, and the
terminal drops its IPC link) and ``timeout_after_fill`` (the order is executed but the call
returns ``None`` with -10005: the duplicate-order trap).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from django.db import transaction
from django.db.models import DecimalField, F, Q, Sum

from execution.models import SimAccount, SimDeal, SimFault, SimFaultKind, SimOrder, SimPosition, SimSymbol
from execution.simulator import constants as c
from execution.simulator import pricing, sql
from execution.simulator import service as svc
from execution.simulator.types import (
    AccountInfo,
    OrderCheckResult,
    OrderSendResult,
    SymbolInfo,
    TerminalInfo,
    Tick,
    TradeDeal,
    TradeOrder,
    TradePosition,
    TradeRequest,
)

COMMENT_LIMIT = 31
BUILD = 5200
ZERO = Decimal("0")

# The short texts the trade server puts in OrderSendResult.comment.
RESULT_COMMENT = {
    c.TRADE_RETCODE_REQUOTE: "Requote",
    c.TRADE_RETCODE_PLACED: "Request executed",
    c.TRADE_RETCODE_DONE: "Request executed",
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

_INT_FIELDS = ("action", "magic", "order", "deviation", "type", "type_filling", "type_time", "position", "position_by")
_FLOAT_FIELDS = ("volume", "price", "stoplimit", "sl", "tp")


class _InvalidArgument(Exception):
    """A request field of the wrong type: the real module rejects it before anything is sent."""


@dataclass
class _Request:
    action: int = 0
    magic: int = 0
    order: int = 0
    symbol: str = ""
    volume: float = 0.0
    price: float = 0.0
    stoplimit: float = 0.0
    sl: float = 0.0
    tp: float = 0.0
    deviation: int = 0
    type: int = 0
    type_filling: int = 0
    type_time: int = 0
    expiration: int = 0
    comment: str = ""
    position: int = 0
    position_by: int = 0

    @classmethod
    def parse(cls, request: Any) -> _Request:
        if not isinstance(request, dict):
            raise _InvalidArgument("Invalid arguments")
        parsed = cls()
        for name in _INT_FIELDS:
            if name in request:
                value = request[name]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise _InvalidArgument(f'Invalid "{name}" argument')
                setattr(parsed, name, value)
        for name in _FLOAT_FIELDS:
            if name in request:
                value = request[name]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise _InvalidArgument(f'Invalid "{name}" argument')
                setattr(parsed, name, float(value))
        for name in ("symbol", "comment"):
            if name in request:
                if not isinstance(request[name], str):
                    raise _InvalidArgument(f'Invalid "{name}" argument')
                setattr(parsed, name, request[name])
        if "expiration" in request:
            parsed.expiration = _to_seconds(request["expiration"], "expiration")
        if "action" not in request:
            raise _InvalidArgument('Invalid "action" argument')
        # The trade server keeps 31 characters of a comment and drops the rest.
        parsed.comment = parsed.comment[:COMMENT_LIMIT]
        return parsed

    def as_tuple(self) -> TradeRequest:
        return TradeRequest(
            self.action, self.magic, self.order, self.symbol, self.volume, self.price, self.stoplimit, self.sl,
            self.tp, self.deviation, self.type, self.type_filling, self.type_time, self.expiration, self.comment,
            self.position, self.position_by,
        )  # fmt: skip


class _Outcome(Exception):
    """How a trade request ended. Rejections are raised; the trade paths return one."""

    def __init__(
        self,
        retcode: int,
        comment: str = "",
        *,
        symbol: SimSymbol | None = None,
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


def _to_seconds(value: Any, name: str) -> int:
    if isinstance(value, datetime):
        # Naive datetimes are taken as UTC: the simulated server runs on UTC.
        return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    raise _InvalidArgument(f'Invalid "{name}" argument')


def _group_matcher(group: str | None) -> Any:
    """MT5's group filter: comma-separated wildcards, ``!`` excludes (``"*USD*,!EUR*"``)."""
    if not group:
        return lambda name: True
    parts = [p.strip() for p in group.split(",") if p.strip()]
    include = [p for p in parts if not p.startswith("!")]
    exclude = [p[1:] for p in parts if p.startswith("!")]

    def matches(name: str) -> bool:
        if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in exclude)

    return matches


class Triggered(NamedTuple):
    """What a quote set off: ``sl``/``tp`` (a position closed), ``filled``/``rejected`` (an order)."""

    kind: str
    symbol: str
    ticket: int
    deal: int
    price: Decimal


def _filling_for(symbol: sql.Symbol) -> int:
    """A filling mode the symbol accepts for a market order (what the server's own orders use)."""
    if symbol.filling_mode & c.SYMBOL_FILLING_FOK:
        return c.ORDER_FILLING_FOK
    if symbol.filling_mode & c.SYMBOL_FILLING_IOC:
        return c.ORDER_FILLING_IOC
    return c.ORDER_FILLING_RETURN


def _volume_ok(volume: Decimal, symbol: SimSymbol) -> bool:
    if volume <= 0 or volume < symbol.volume_min or volume > symbol.volume_max:
        return False
    steps = volume / symbol.volume_step
    return abs(steps - steps.to_integral_value()) < Decimal("1e-6")


def _filling_allowed(symbol: SimSymbol, filling: int, *, pending: bool) -> bool:
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


def _dec(value: float) -> Decimal:
    return Decimal(repr(value))


class SimulatedMetaTrader5:
    """One simulated terminal. Every constant of the MetaTrader5 module is a class attribute."""

    def __init__(self, *, trade_allowed: bool = True, tradeapi_disabled: bool = False) -> None:
        # The terminal's "Algo Trading" button and its "disable Python API trading" option.
        self.terminal_trade_allowed = trade_allowed
        self.tradeapi_disabled = tradeapi_disabled
        self._connected = False
        self._path: str | None = None
        self._account_id: int | None = None
        self._login: int | None = None
        self._server: str | None = None
        self._currency = "USD"
        self._currency_digits = 2
        self._leverage = 100
        self._last_error: tuple[int, str] = (c.RES_S_OK, c.LAST_ERROR_TEXT[c.RES_S_OK])
        self._request_id = 0
        self._hidden: set[str] = set()
        # The symbols loaded by the trade in progress (by pk), reused by its margin check.
        self._txn_symbols: dict[int, SimSymbol] = {}

    # --- the failure convention ------------------------------------------------------------
    def _ok(self) -> None:
        self._last_error = (c.RES_S_OK, c.LAST_ERROR_TEXT[c.RES_S_OK])

    def _fail(self, code: int, text: str | None = None) -> None:
        self._last_error = (code, text or c.LAST_ERROR_TEXT[code])

    def _ready(self, *, account: bool = True) -> bool:
        if not self._connected:
            self._fail(c.RES_E_INTERNAL_FAIL_CONNECT)
            return False
        if account and self._account_id is None:
            self._fail(c.RES_E_AUTH_FAILED)
            return False
        return True

    def last_error(self) -> tuple[int, str]:
        return self._last_error

    def sim_disconnect(self) -> None:
        """Test hook: the terminal process died or its IPC pipe broke."""
        self._connected = False

    # --- connection -----------------------------------------------------------------------
    def initialize(
        self,
        path: str | None = None,
        *,
        login: int | None = None,
        password: str | None = None,
        server: str | None = None,
        timeout: int | None = None,
        portable: bool = False,
    ) -> bool:
        for name, value, kind in (("path", path, str), ("password", password, str), ("server", server, str)):
            if value is not None and not isinstance(value, kind):
                self._fail(c.RES_E_INVALID_PARAMS, f'Invalid "{name}" argument')
                return False
        if login is not None and (isinstance(login, bool) or not isinstance(login, int)):
            self._fail(c.RES_E_INVALID_PARAMS, 'Invalid "login" argument')
            return False
        self._connected = True
        self._path = path
        if login is not None:
            return self.login(login, password=password, server=server, timeout=timeout)
        self._ok()
        return True

    def login(
        self, login: int, password: str | None = None, server: str | None = None, timeout: int | None = None
    ) -> bool:
        if not self._ready(account=False):
            return False
        if isinstance(login, bool) or not isinstance(login, int):
            self._fail(c.RES_E_INVALID_PARAMS, 'Invalid "login" argument')
            return False
        accounts = SimAccount.objects.filter(login=login)
        if server:
            accounts = accounts.filter(server=server)
        found = list(accounts[:2])
        account = found[0] if len(found) == 1 else None
        if account is None or (account.password and password != account.password):
            self._fail(c.RES_E_AUTH_FAILED)
            return False
        self._account_id, self._login, self._server = account.pk, account.login, account.server
        self._currency, self._currency_digits, self._leverage = (
            account.currency,
            account.currency_digits,
            account.leverage,
        )
        self._ok()
        return True

    def shutdown(self) -> None:
        # The terminal stays logged into its account; only this process's link is closed.
        self._connected = False
        self._ok()

    def version(self) -> tuple[int, int, str] | None:
        if not self._ready(account=False):
            return None
        self._ok()
        return (500, BUILD, "29 May 2026")

    def terminal_info(self) -> TerminalInfo | None:
        if not self._ready(account=False):
            return None
        self._ok()
        return TerminalInfo(
            community_account=False, community_connection=False, connected=True, dlls_allowed=False,
            trade_allowed=self.terminal_trade_allowed, tradeapi_disabled=self.tradeapi_disabled,
            email_enabled=False, ftp_enabled=False, notifications_enabled=False, mqid=False, build=BUILD,
            maxbars=100000, codepage=0, ping_last=1000, community_balance=0.0, retransmission=0.0,
            company="MT5 Bridge Simulator", name="MetaTrader 5 Simulator", language="English",
            path=self._path or "/simulator", data_path="/simulator", commondata_path="/simulator/common",
        )  # fmt: skip

    # --- account ----------------------------------------------------------------------------
    def _quotes(self, rows: Iterable[SimSymbol | sql.SymbolRow] = ()) -> pricing.QuoteSource:
        def load_all() -> dict[str, tuple[Decimal, Decimal]]:
            return {name: (bid, ask) for name, bid, ask in SimSymbol.objects.values_list("name", "bid", "ask")}

        return pricing.QuoteSource({s.name: (s.bid, s.ask) for s in rows}, load_all)

    def _valuate(self, position: SimPosition | sql.PositionRow, quotes: pricing.QuoteSource) -> tuple[Decimal, Decimal]:
        """(price_current, profit) of an open position: buys are valued at bid, sells at ask."""
        symbol = position.symbol
        is_buy = position.type == c.POSITION_TYPE_BUY
        current = symbol.bid if is_buy else symbol.ask
        value = pricing.profit(
            symbol=symbol.name, currency_profit=symbol.currency_profit, contract_size=symbol.trade_contract_size,
            is_buy=is_buy, volume=position.volume, price_open=position.price_open, price_close=current,
            account_currency=self._currency, account_digits=self._currency_digits, quotes=quotes,
        )  # fmt: skip
        return current, value

    def _margin(
        self, symbol: SimSymbol | sql.SymbolRow, volume: Decimal, price: Decimal, quotes: pricing.QuoteSource
    ) -> Decimal:
        return pricing.margin(
            symbol=symbol.name, calc_mode=symbol.trade_calc_mode, currency_margin=symbol.currency_margin,
            contract_size=symbol.trade_contract_size, volume=volume, price=price, leverage=self._leverage,
            account_currency=self._currency, account_digits=self._currency_digits, quotes=quotes,
        )  # fmt: skip

    def _exposure(self, positions: list[sql.PositionRow]) -> tuple[Decimal, Decimal]:
        """(floating profit incl. swap, used margin) of the given open positions."""
        quotes = self._quotes(p.symbol for p in positions)
        floating = margin = ZERO
        for position in positions:
            current, value = self._valuate(position, quotes)
            floating += value + position.swap
            margin += self._margin(position.symbol, position.volume, current, quotes)
        return floating, margin

    def _aggregate_exposure(self, account: SimAccount, known: dict[int, SimSymbol]) -> tuple[Decimal, Decimal]:
        """``_exposure`` from one GROUP BY per (symbol, side), so the margin check before an
        order stays cheap however many positions the account holds. Profit and margin are
        linear in volume, so summing volume and volume x open price per group is exact up to
        MT5's per-position rounding, which a margin check does not need."""
        groups = list(
            SimPosition.objects.filter(account=account)
            .values("symbol_id", "type")
            .annotate(
                lots=Sum("volume"),
                notional=Sum(
                    F("volume") * F("price_open"), output_field=DecimalField(max_digits=30, decimal_places=10)
                ),
                swap=Sum("swap"),
            )
        )
        if not groups:
            return ZERO, ZERO
        missing = {g["symbol_id"] for g in groups} - known.keys()
        symbols = {**known, **{s.pk: s for s in SimSymbol.objects.filter(pk__in=missing)}} if missing else known
        quotes = self._quotes(symbols.values())
        floating = margin = ZERO
        for group in groups:
            symbol = symbols[group["symbol_id"]]
            is_buy = group["type"] == c.POSITION_TYPE_BUY
            current = symbol.bid if is_buy else symbol.ask
            lots, notional = group["lots"], group["notional"]
            move = current * lots - notional if is_buy else notional - current * lots
            rate = pricing.conversion_rate(
                symbol.currency_profit, self._currency, quotes, own_symbol=symbol.name, own_price=current
            )
            floating += move * symbol.trade_contract_size * rate + group["swap"]
            margin += self._margin(symbol, lots, current, quotes)
        return floating, margin

    def _account_tuple(self, account: SimAccount, floating: Decimal, margin: Decimal) -> AccountInfo:
        equity = account.balance + account.credit + floating
        level = float(equity / margin * 100) if margin else 0.0
        return AccountInfo(
            login=account.login, trade_mode=account.trade_mode, leverage=account.leverage,
            limit_orders=account.limit_orders, margin_so_mode=c.ACCOUNT_STOPOUT_MODE_PERCENT,
            trade_allowed=account.trade_allowed, trade_expert=account.trade_expert,
            margin_mode=c.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING, currency_digits=account.currency_digits,
            fifo_close=False, balance=float(account.balance), credit=float(account.credit), profit=float(floating),
            equity=float(equity), margin=float(margin), margin_free=float(equity - margin), margin_level=level,
            margin_so_call=float(account.margin_so_call), margin_so_so=float(account.margin_so_so),
            margin_initial=0.0, margin_maintenance=0.0, assets=0.0, liabilities=0.0, commission_blocked=0.0,
            name=account.name, server=account.server, currency=account.currency, company=account.company,
        )  # fmt: skip

    def account_info(self) -> AccountInfo | None:
        if not self._ready():
            return None
        account = sql.account_row(self._account_id)
        if account is None:
            self._fail(c.RES_E_AUTH_FAILED)
            return None
        floating, margin = self._exposure(sql.account_position_rows(self._account_id))
        self._ok()
        return self._account_tuple(account, floating, margin)  # type: ignore[arg-type]

    def sim_bulk_state(
        self, keys: list[tuple[int, str]]
    ) -> dict[tuple[int, str], tuple[AccountInfo, tuple[TradePosition, ...], tuple[TradeOrder, ...]]]:
        """Not in the MetaTrader5 API: what account_info, positions_get and orders_get would return
        for each account, read in three queries — the simulator's stand-in for one terminal per
        account group, so the risk monitor's cycle over thousands of accounts stays short.

        Rows are read as plain values (model instances would cost more than the arithmetic) and
        each position is valued once, for both its tuple and the account's equity and margin."""
        wanted = set(keys)
        accounts = [
            row
            for row in sql.any_of(SimAccount.objects.all(), "login", list({k[0] for k in keys})).values_list(
                *sql.BulkAccountRow._fields
            )
            if (row[1], row[2]) in wanted
        ]
        ids = [row[0] for row in accounts]
        positions: dict[int, list[sql.PositionRow]] = {pk: [] for pk in ids}
        rows = sql.bulk_position_rows(
            sql.any_of(SimPosition.objects.all(), "account_id", ids).order_by("time_msc", "ticket"), positions
        )
        orders: dict[int, list[SimOrder]] = {pk: [] for pk in ids}
        open_orders = sql.any_of(SimOrder.objects.filter(is_open=True), "account_id", ids)
        for order in open_orders.select_related("symbol").order_by("time_setup_msc", "ticket"):
            orders[order.account_id].append(order)
        quotes = self._quotes(row.symbol for row in rows)
        saved = self._currency, self._currency_digits, self._leverage
        out = {}
        try:
            for values in accounts:
                account = sql.BulkAccountRow(*values)
                self._currency, self._currency_digits, self._leverage = (
                    account.currency,
                    account.currency_digits,
                    account.leverage,
                )
                floating = margin = ZERO
                tuples = []
                for position in positions[account.id]:
                    current, value = self._valuate(position, quotes)
                    floating += value + position.swap
                    margin += self._margin(position.symbol, position.volume, current, quotes)
                    tuples.append(self._bulk_position_tuple(position, current, value))
                info = self._account_tuple(account, floating, margin)  # type: ignore[arg-type]
                out[(account.login, account.server)] = (
                    info,
                    tuple(tuples),
                    tuple(self._order_tuple(o) for o in orders[account.id]),
                )
        finally:
            self._currency, self._currency_digits, self._leverage = saved
        self._ok()
        return out

    @staticmethod
    def _bulk_position_tuple(p: sql.PositionRow, current: Decimal, value: Decimal) -> TradePosition:
        """``_position_tuple`` for a position sim_bulk_state has valued already."""
        return TradePosition(
            ticket=p.ticket, time=p.time_msc // 1000, time_msc=p.time_msc, time_update=p.time_update_msc // 1000,
            time_update_msc=p.time_update_msc, type=p.type, magic=p.magic, identifier=p.ticket, reason=p.reason,
            volume=float(p.volume), price_open=float(p.price_open), sl=float(p.sl), tp=float(p.tp),
            price_current=float(current), swap=float(p.swap), profit=float(value), symbol=p.symbol.name,
            comment=p.comment, external_id=p.external_id,
        )  # fmt: skip

    # --- symbols ----------------------------------------------------------------------------
    def _symbols(self, **filters: Any) -> list[sql.Symbol]:
        """Every symbol by name, or the one ``name=`` names: whole rows, read fresh each time
        (the feed moves the quotes and the mt5sim CLI opens and closes sessions)."""
        rows = sql.symbol_rows(**filters)
        if not rows and (not filters or filters.get("name") in svc.SEED_NAMES):
            svc.ensure_symbols()
            rows = sql.symbol_rows(**filters)
        return rows

    def _symbol_tuple(self, s: SimSymbol) -> SymbolInfo:
        bid, ask, point = float(s.bid), float(s.ask), float(s.point)
        spread = int(((s.ask - s.bid) / s.point).to_integral_value())
        tick_value = float(s.trade_contract_size * s.point) if s.currency_profit == self._currency else 0.0
        if s.currency_profit != self._currency:
            quotes = self._quotes([s])
            try:
                rate = pricing.conversion_rate(
                    s.currency_profit, self._currency, quotes, own_symbol=s.name, own_price=s.bid
                )
                tick_value = float(s.trade_contract_size * s.point * rate)
            except LookupError:
                tick_value = 0.0
        seconds = s.price_time_msc // 1000
        return SymbolInfo(
            custom=False, chart_mode=c.SYMBOL_CHART_MODE_BID, select=s.name not in self._hidden,
            visible=s.name not in self._hidden, session_deals=0, session_buy_orders=0, session_sell_orders=0,
            volume=0, volumehigh=0, volumelow=0, time=seconds, digits=s.digits, spread=spread, spread_float=True,
            ticks_bookdepth=0, trade_calc_mode=s.trade_calc_mode, trade_mode=s.trade_mode, start_time=0,
            expiration_time=0, trade_stops_level=s.trade_stops_level, trade_freeze_level=0,
            trade_exemode=s.trade_exemode, swap_mode=c.SYMBOL_SWAP_MODE_CURRENCY_DEPOSIT,
            swap_rollover3days=c.DAY_OF_WEEK_WEDNESDAY, margin_hedged_use_leg=False, expiration_mode=15,
            filling_mode=s.filling_mode, order_mode=127, order_gtc_mode=c.SYMBOL_ORDERS_GTC, option_mode=0,
            option_right=0, bid=bid, bidhigh=bid, bidlow=bid, ask=ask, askhigh=ask, asklow=ask, last=0.0,
            lasthigh=0.0, lastlow=0.0, volume_real=0.0, volumehigh_real=0.0, volumelow_real=0.0, option_strike=0.0,
            point=point, trade_tick_value=tick_value, trade_tick_value_profit=tick_value,
            trade_tick_value_loss=tick_value, trade_tick_size=point,
            trade_contract_size=float(s.trade_contract_size), trade_accrued_interest=0.0, trade_face_value=0.0,
            trade_liquidity_rate=0.0, volume_min=float(s.volume_min), volume_max=float(s.volume_max),
            volume_step=float(s.volume_step), volume_limit=0.0, swap_long=float(s.swap_long),
            swap_short=float(s.swap_short), margin_initial=0.0, margin_maintenance=0.0, session_volume=0.0,
            session_turnover=0.0, session_interest=0.0, session_buy_orders_volume=0.0,
            session_sell_orders_volume=0.0, session_open=0.0, session_close=0.0, session_aw=0.0,
            session_price_settlement=0.0, session_price_limit_min=0.0, session_price_limit_max=0.0,
            margin_hedged=float(s.trade_contract_size), price_change=0.0, price_volatility=0.0,
            price_theoretical=0.0, price_greeks_delta=0.0, price_greeks_theta=0.0, price_greeks_gamma=0.0,
            price_greeks_vega=0.0, price_greeks_rho=0.0, price_greeks_omega=0.0, price_sensitivity=0.0, basis="",
            category="", currency_base=s.currency_base, currency_profit=s.currency_profit,
            currency_margin=s.currency_margin, bank="", description=s.description, exchange="", formula="", isin="",
            name=s.name, page="", path=f"Simulated\\{s.name}",
        )  # fmt: skip

    def symbols_total(self) -> int | None:
        if not self._ready(account=False):
            return None
        self._ok()
        return len(self._symbols())

    def symbols_get(self, group: str | None = None) -> tuple[SymbolInfo, ...] | None:
        if not self._ready(account=False):
            return None
        matches = _group_matcher(group)
        self._ok()
        return tuple(self._symbol_tuple(s) for s in self._symbols() if matches(s.name))

    def symbol_info(self, symbol: str) -> SymbolInfo | None:
        if not self._ready(account=False):
            return None
        rows = self._symbols(name=symbol)
        if not rows:
            self._fail(c.RES_E_NOT_FOUND)
            return None
        self._ok()
        return self._symbol_tuple(rows[0])

    def symbol_info_tick(self, symbol: str) -> Tick | None:
        if not self._ready(account=False):
            return None
        rows = self._symbols(name=symbol)
        if not rows or symbol in self._hidden:
            self._fail(c.RES_E_NOT_FOUND)
            return None
        s = rows[0]
        self._ok()
        return Tick(
            time=s.price_time_msc // 1000, bid=float(s.bid), ask=float(s.ask), last=0.0, volume=0,
            time_msc=s.price_time_msc, flags=c.TICK_FLAG_BID | c.TICK_FLAG_ASK, volume_real=0.0,
        )  # fmt: skip

    def symbol_select(self, symbol: str, enable: bool = True) -> bool:
        if not self._ready(account=False):
            return False
        if not self._symbols(name=symbol):
            self._fail(c.RES_E_NOT_FOUND)
            return False
        (self._hidden.discard if enable else self._hidden.add)(symbol)
        self._ok()
        return True

    # --- positions and orders ---------------------------------------------------------------
    def _position_tuple(self, p: sql.PositionRow, quotes: pricing.QuoteSource) -> TradePosition:
        current, value = self._valuate(p, quotes)
        return TradePosition(
            ticket=p.ticket, time=p.time_msc // 1000, time_msc=p.time_msc, time_update=p.time_update_msc // 1000,
            time_update_msc=p.time_update_msc, type=p.type, magic=p.magic, identifier=p.ticket, reason=p.reason,
            volume=float(p.volume), price_open=float(p.price_open), sl=float(p.sl), tp=float(p.tp),
            price_current=float(current), swap=float(p.swap), profit=float(value), symbol=p.symbol.name,
            comment=p.comment, external_id=p.external_id,
        )  # fmt: skip

    def positions_total(self) -> int | None:
        if not self._ready():
            return None
        self._ok()
        return SimPosition.objects.filter(account_id=self._account_id).count()

    def positions_get(
        self, symbol: str | None = None, group: str | None = None, ticket: int | None = None
    ) -> tuple[TradePosition, ...] | None:
        if not self._ready():
            return None
        matches = _group_matcher(group)
        rows = [
            row
            for row in sql.position_rows_of(self._account_id, ticket=ticket, symbol=symbol)
            if matches(row.symbol.name)
        ]
        quotes = self._quotes(p.symbol for p in rows)
        self._ok()
        return tuple(self._position_tuple(p, quotes) for p in rows)

    def _order_tuple(self, o: SimOrder | sql.OrderRow) -> TradeOrder:
        current = o.symbol.ask if o.type in BUY_TYPES else o.symbol.bid
        return TradeOrder(
            ticket=o.ticket, time_setup=o.time_setup_msc // 1000, time_setup_msc=o.time_setup_msc,
            time_done=o.time_done_msc // 1000, time_done_msc=o.time_done_msc, time_expiration=o.time_expiration,
            type=o.type, type_time=o.type_time, type_filling=o.type_filling, state=o.state, magic=o.magic,
            position_id=o.position_id, position_by_id=o.position_by_id, reason=o.reason,
            volume_initial=float(o.volume_initial), volume_current=float(o.volume_current),
            price_open=float(o.price_open), sl=float(o.sl), tp=float(o.tp),
            price_current=float(current) if o.is_open else float(o.price_open),
            price_stoplimit=float(o.price_stoplimit), symbol=o.symbol.name, comment=o.comment,
            external_id=o.external_id,
        )  # fmt: skip

    def orders_total(self) -> int | None:
        if not self._ready():
            return None
        self._ok()
        return SimOrder.objects.filter(account_id=self._account_id, is_open=True).count()

    def orders_get(
        self, symbol: str | None = None, group: str | None = None, ticket: int | None = None
    ) -> tuple[TradeOrder, ...] | None:
        if not self._ready():
            return None
        matches = _group_matcher(group)
        rows = [
            row
            for row in sql.order_rows(self._account_id, is_open=True, ticket=ticket, symbol=symbol)
            if matches(row.symbol.name)
        ]
        self._ok()
        return tuple(self._order_tuple(o) for o in rows)

    # --- history ----------------------------------------------------------------------------
    def _history_window(
        self, date_from: Any, date_to: Any, ticket: int | None, position: int | None
    ) -> tuple[int, int] | None:
        """Epoch-ms bounds; ``None`` when a ticket/position query makes the dates irrelevant."""
        if ticket is not None or position is not None:
            return None
        if date_from is None or date_to is None:
            raise _InvalidArgument("Invalid arguments")
        return _to_seconds(date_from, "date_from") * 1000, _to_seconds(date_to, "date_to") * 1000 + 999

    def history_orders_get(
        self,
        date_from: Any = None,
        date_to: Any = None,
        group: str | None = None,
        ticket: int | None = None,
        position: int | None = None,
    ) -> tuple[TradeOrder, ...] | None:
        if not self._ready():
            return None
        try:
            window = self._history_window(date_from, date_to, ticket, position)
        except _InvalidArgument as exc:
            self._fail(c.RES_E_INVALID_PARAMS, str(exc))
            return None
        matches = _group_matcher(group)
        rows = [
            row
            for row in sql.order_rows(self._account_id, is_open=False, window=window, position=position, ticket=ticket)
            if matches(row.symbol.name)
        ]
        self._ok()
        return tuple(self._order_tuple(o) for o in rows)

    def history_orders_total(self, date_from: Any, date_to: Any) -> int | None:
        orders = self.history_orders_get(date_from, date_to)
        return None if orders is None else len(orders)

    def history_deals_get(
        self,
        date_from: Any = None,
        date_to: Any = None,
        group: str | None = None,
        ticket: int | None = None,
        position: int | None = None,
    ) -> tuple[TradeDeal, ...] | None:
        if not self._ready():
            return None
        try:
            window = self._history_window(date_from, date_to, ticket, position)
        except _InvalidArgument as exc:
            self._fail(c.RES_E_INVALID_PARAMS, str(exc))
            return None
        rows = sql.deal_rows(self._account_id, window=window, ticket=ticket, position=position)
        matches = _group_matcher(group)
        deals = tuple(self._deal_tuple(row) for row in rows if not group or matches(row[sql.DEAL_SYMBOL_AT]))
        self._ok()
        return deals

    @staticmethod
    def _deal_tuple(row: tuple[Any, ...]) -> TradeDeal:
        """A row of ``_deals_select``: TradeDeal's columns in its order, ``time`` left out."""
        (ticket, order, time_msc, type_, entry, magic, position_id, reason, volume, price, commission, swap, profit,
         fee, symbol, comment, external_id) = row  # fmt: skip
        return TradeDeal(
            ticket=ticket, order=order, time=time_msc // 1000, time_msc=time_msc, type=type_, entry=entry,
            magic=magic, position_id=position_id, reason=reason, volume=float(volume), price=float(price),
            commission=float(commission), swap=float(swap), profit=float(profit), fee=float(fee), symbol=symbol,
            comment=comment, external_id=external_id,
        )  # fmt: skip

    def history_deals_total(self, date_from: Any, date_to: Any) -> int | None:
        deals = self.history_deals_get(date_from, date_to)
        return None if deals is None else len(deals)

    # --- calculations -----------------------------------------------------------------------
    def order_calc_margin(self, action: int, symbol: str, volume: float, price: float) -> float | None:
        if not self._ready():
            return None
        rows = self._symbols(name=symbol)
        if not rows or action not in (c.ORDER_TYPE_BUY, c.ORDER_TYPE_SELL):
            self._fail(c.RES_E_INVALID_PARAMS)
            return None
        self._ok()
        return float(self._margin(rows[0], _dec(volume), _dec(price), self._quotes(rows)))

    def order_calc_profit(
        self, action: int, symbol: str, volume: float, price_open: float, price_close: float
    ) -> float | None:
        if not self._ready():
            return None
        rows = self._symbols(name=symbol)
        if not rows or action not in (c.ORDER_TYPE_BUY, c.ORDER_TYPE_SELL):
            self._fail(c.RES_E_INVALID_PARAMS)
            return None
        s = rows[0]
        value = pricing.profit(
            symbol=s.name, currency_profit=s.currency_profit, contract_size=s.trade_contract_size,
            is_buy=action == c.ORDER_TYPE_BUY, volume=_dec(volume), price_open=_dec(price_open),
            price_close=_dec(price_close), account_currency=self._currency, account_digits=self._currency_digits,
            quotes=self._quotes(rows),
        )  # fmt: skip
        self._ok()
        return float(value)

    # --- trading ----------------------------------------------------------------------------
    def order_check(self, request: dict[str, Any]) -> OrderCheckResult | None:
        """Validate a request without executing it (retcode 0 when it would be accepted)."""
        if not self._ready():
            return None
        try:
            req = _Request.parse(request)
        except _InvalidArgument as exc:
            self._fail(c.RES_E_INVALID_PARAMS, str(exc))
            return None
        with transaction.atomic():
            outcome = self._execute(req, dry_run=True)
        retcode, comment = outcome.retcode, outcome.comment
        if retcode in (c.TRADE_RETCODE_DONE, c.TRADE_RETCODE_PLACED):
            retcode, comment = 0, "Done"
        info = self.account_info()
        self._ok()
        return OrderCheckResult(
            retcode=retcode, balance=info.balance if info else 0.0, equity=info.equity if info else 0.0,
            profit=info.profit if info else 0.0, margin=info.margin if info else 0.0,
            margin_free=info.margin_free if info else 0.0, margin_level=info.margin_level if info else 0.0,
            comment=comment, request=req.as_tuple(),
        )  # fmt: skip

    def order_send(self, request: dict[str, Any]) -> OrderSendResult | None:
        if not self._ready():
            return None
        try:
            req = _Request.parse(request)
        except _InvalidArgument as exc:
            self._fail(c.RES_E_INVALID_PARAMS, str(exc))
            return None
        if self.tradeapi_disabled:
            self._fail(c.RES_E_AUTO_TRADING_DISABLED)
            return None
        self._request_id += 1
        if not self.terminal_trade_allowed:
            # The terminal refuses before anything reaches the server: no fault is consumed.
            self._ok()
            return self._result(req, _Outcome(c.TRADE_RETCODE_CLIENT_DISABLES_AT))
        # The outcome is caught inside the transaction, so whatever it did (a fill, a consumed
        # fault) commits; rejections happen before any write and leave nothing behind.
        with transaction.atomic():
            outcome = self._execute(req, dry_run=False)
        if outcome.connection_lost:
            self._connected = False
            self._fail(c.RES_E_INTERNAL_FAIL_CONNECT)
            return None
        if outcome.timed_out:
            self._fail(c.RES_E_INTERNAL_FAIL_TIMEOUT)
            return None
        self._ok()
        return self._result(req, outcome)

    def _result(self, req: _Request, outcome: _Outcome) -> OrderSendResult:
        return OrderSendResult(
            retcode=outcome.retcode, deal=outcome.deal, order=outcome.order, volume=outcome.volume,
            price=outcome.price, bid=outcome.bid, ask=outcome.ask, comment=outcome.comment,
            request_id=self._request_id, retcode_external=0, request=req.as_tuple(),
        )  # fmt: skip

    def _execute(self, req: _Request, *, dry_run: bool) -> _Outcome:
        """The trade server: resolve the target, apply any injected fault, check, then execute."""
        try:
            account, symbol, position, order = self._resolve(req)
        except _Outcome as rejected:
            return rejected
        # The account query already said whether any fault is pending: the common path
        # pays no extra round trip for fault injection.
        fault = (
            None if dry_run or not account.pending_faults else self._take_fault(req.action, symbol.name, account.login)
        )
        if fault == SimFaultKind.NO_CONNECTION:
            lost = _Outcome(c.TRADE_RETCODE_CONNECTION)
            lost.connection_lost = True
            return lost
        if fault == SimFaultKind.REQUOTE:
            return _Outcome(c.TRADE_RETCODE_REQUOTE, symbol=symbol)
        if fault == SimFaultKind.MARKET_CLOSED:
            return _Outcome(c.TRADE_RETCODE_MARKET_CLOSED)
        try:
            closing = position is not None and req.action == c.TRADE_ACTION_DEAL
            self._check_permissions(account, symbol, req, closing=closing)
            if req.action == c.TRADE_ACTION_DEAL and position is None:
                outcome = self._open(account, symbol, req, dry_run)
            elif req.action == c.TRADE_ACTION_DEAL and position is not None:
                outcome = self._close(account, position, req, dry_run)
            elif req.action == c.TRADE_ACTION_SLTP and position is not None:
                outcome = self._modify_position(position, req, dry_run)
            elif req.action == c.TRADE_ACTION_PENDING:
                outcome = self._place_pending(account, symbol, req, dry_run)
            elif req.action == c.TRADE_ACTION_REMOVE and order is not None:
                outcome = self._remove_order(order, dry_run)
            elif order is not None:
                outcome = self._modify_order(order, req, dry_run)
            else:  # pragma: no cover - _resolve guarantees a target
                outcome = _Outcome(c.TRADE_RETCODE_INVALID)
        except _Outcome as rejected:
            outcome = rejected
        # The timeout hides whatever the server answered, filled or not.
        outcome.timed_out = fault == SimFaultKind.TIMEOUT_AFTER_FILL
        return outcome

    def _resolve(
        self, req: _Request
    ) -> tuple[sql.LockedAccount, sql.Symbol | SimSymbol, sql.LockedPosition | None, SimOrder | None]:
        """Lock the account (serialising its trades across processes) and find the request's target."""
        position: sql.LockedPosition | None = None
        order: SimOrder | None = None
        if req.action == c.TRADE_ACTION_SLTP or (req.action == c.TRADE_ACTION_DEAL and req.position):
            locked = sql.lock_account_and_position(self._account_id, req.position)
            if locked is None:
                raise _Outcome(c.TRADE_RETCODE_INVALID, "Account not found")
            account, position = locked
            if position is None:
                if req.position and SimDeal.objects.filter(account_id=account.id, position_id=req.position).exists():
                    raise _Outcome(c.TRADE_RETCODE_POSITION_CLOSED)
                raise _Outcome(c.TRADE_RETCODE_INVALID, "Position not found")
            symbol = position.symbol
            if req.symbol and req.symbol != symbol.name:
                raise _Outcome(c.TRADE_RETCODE_INVALID, "Symbol does not match")
            return account, symbol, position, order
        account = sql.lock_account(self._account_id)
        if account is None:
            raise _Outcome(c.TRADE_RETCODE_INVALID, "Account not found")
        if req.action in (c.TRADE_ACTION_REMOVE, c.TRADE_ACTION_MODIFY):
            order = (
                SimOrder.objects.select_for_update(of=("self",))
                .select_related("symbol")
                .filter(account_id=account.id, ticket=req.order, is_open=True)
                .first()
            )
            if order is None:
                raise _Outcome(c.TRADE_RETCODE_INVALID, "Order not found")
            symbol = order.symbol
        elif req.action in (c.TRADE_ACTION_DEAL, c.TRADE_ACTION_PENDING):
            # Every symbol (five rows) in one query: the margin check values the account's other
            # positions with them.
            self._txn_symbols = {s.pk: s for s in self._symbols()}
            symbol = next((s for s in self._txn_symbols.values() if s.name == req.symbol), None)
            if symbol is None:
                raise _Outcome(c.TRADE_RETCODE_INVALID, "Unknown symbol")
        else:
            raise _Outcome(c.TRADE_RETCODE_INVALID, "Unsupported trade action")
        if req.symbol and req.symbol != symbol.name:
            raise _Outcome(c.TRADE_RETCODE_INVALID, "Symbol does not match")
        return account, symbol, position, order

    def _take_fault(self, action: int, symbol: str, login: int) -> str | None:
        """Consume one matching injected fault; skip_locked lets concurrent senders share a count."""
        kinds = FAULTS_BY_ACTION.get(action, ())
        fault = (
            SimFault.objects.select_for_update(skip_locked=True)
            .filter(remaining__gt=0, kind__in=kinds)
            .filter(Q(symbol="") | Q(symbol=symbol))
            .filter(Q(login__isnull=True) | Q(login=login))
            .order_by("id")
            .first()
        )
        if fault is None:
            return None
        SimFault.objects.filter(pk=fault.pk).update(remaining=F("remaining") - 1)
        return fault.kind

    def _check_permissions(self, account: SimAccount, symbol: SimSymbol, req: _Request, *, closing: bool) -> None:
        if not account.trade_allowed:
            raise _Outcome(c.TRADE_RETCODE_TRADE_DISABLED)
        if not account.trade_expert:
            raise _Outcome(c.TRADE_RETCODE_SERVER_DISABLES_AT)
        if symbol.trade_mode == c.SYMBOL_TRADE_MODE_DISABLED:
            raise _Outcome(c.TRADE_RETCODE_TRADE_DISABLED)
        if not symbol.sessions_open:
            raise _Outcome(c.TRADE_RETCODE_MARKET_CLOSED)
        if req.action in (c.TRADE_ACTION_DEAL, c.TRADE_ACTION_PENDING) and not closing:
            if symbol.trade_mode == c.SYMBOL_TRADE_MODE_CLOSEONLY:
                raise _Outcome(c.TRADE_RETCODE_CLOSE_ONLY)
            if symbol.trade_mode == c.SYMBOL_TRADE_MODE_LONGONLY and req.type not in BUY_TYPES:
                raise _Outcome(c.TRADE_RETCODE_LONG_ONLY)
            if symbol.trade_mode == c.SYMBOL_TRADE_MODE_SHORTONLY and req.type in BUY_TYPES:
                raise _Outcome(c.TRADE_RETCODE_SHORT_ONLY)

    @staticmethod
    def _check_market_price(symbol: SimSymbol, req: _Request, is_buy: bool) -> Decimal:
        """The fill price. Under instant execution the client's price must be within deviation."""
        market = symbol.ask if is_buy else symbol.bid
        if symbol.trade_exemode in (c.SYMBOL_TRADE_EXECUTION_INSTANT, c.SYMBOL_TRADE_EXECUTION_REQUEST):
            if req.price <= 0:
                raise _Outcome(c.TRADE_RETCODE_INVALID_PRICE)
            if abs(_dec(req.price) - market) > max(req.deviation, 0) * symbol.point:
                raise _Outcome(c.TRADE_RETCODE_REQUOTE, symbol=symbol)
        return market

    @staticmethod
    def _check_stops(symbol: SimSymbol, is_buy: bool, sl: float, tp: float, reference: Decimal) -> None:
        """SL/TP must sit on the right side of the price the position would close at."""
        if sl < 0 or tp < 0:
            raise _Outcome(c.TRADE_RETCODE_INVALID_STOPS)
        gap = symbol.trade_stops_level * symbol.point
        sl_d, tp_d = _dec(sl), _dec(tp)
        if is_buy:
            bad = (sl_d and sl_d >= reference - gap) or (tp_d and tp_d <= reference + gap)
        else:
            bad = (sl_d and sl_d <= reference + gap) or (tp_d and tp_d >= reference - gap)
        if bad:
            raise _Outcome(c.TRADE_RETCODE_INVALID_STOPS)

    @staticmethod
    def _check_volume_and_filling(symbol: SimSymbol, req: _Request, *, pending: bool) -> Decimal:
        volume = _dec(req.volume)
        if not _volume_ok(volume, symbol):
            raise _Outcome(c.TRADE_RETCODE_INVALID_VOLUME)
        if not _filling_allowed(symbol, req.type_filling, pending=pending):
            raise _Outcome(c.TRADE_RETCODE_INVALID_FILL)
        return volume

    def _open(self, account: sql.LockedAccount, symbol: sql.Symbol, req: _Request, dry_run: bool) -> _Outcome:
        if req.type not in (c.ORDER_TYPE_BUY, c.ORDER_TYPE_SELL):
            raise _Outcome(c.TRADE_RETCODE_INVALID_ORDER)
        is_buy = req.type == c.ORDER_TYPE_BUY
        volume = self._check_volume_and_filling(symbol, req, pending=False)
        price = self._check_market_price(symbol, req, is_buy)
        self._check_stops(symbol, is_buy, req.sl, req.tp, symbol.bid if is_buy else symbol.ask)
        if self._lacks_margin(account, symbol, volume, price):
            raise _Outcome(c.TRADE_RETCODE_NO_MONEY)
        if dry_run:
            return _Outcome(c.TRADE_RETCODE_DONE)
        order_ticket, deal_ticket = svc.allocate_tickets(2)
        stamp = svc.now_msc()
        sl, tp = _dec(req.sl), _dec(req.tp)
        sql.insert(SimOrder, dict(
            ticket=order_ticket, account_id=account.pk, symbol_id=symbol.pk, type=req.type,
            type_filling=req.type_filling, state=c.ORDER_STATE_FILLED, volume_initial=volume, volume_current=ZERO,
            price_open=price, sl=sl, tp=tp, magic=req.magic, comment=req.comment, position_id=order_ticket,
            time_setup_msc=stamp, time_done_msc=stamp,
        ))  # fmt: skip
        self._enter(
            account, symbol, order_ticket=order_ticket, deal_ticket=deal_ticket, is_buy=is_buy, volume=volume,
            price=price, sl=sl, tp=tp, magic=req.magic, comment=req.comment, stamp=stamp,
        )  # fmt: skip
        return _Outcome(
            c.TRADE_RETCODE_DONE, symbol=symbol, deal=deal_ticket, order=order_ticket, volume=volume, price=price
        )

    def _lacks_margin(self, account: sql.LockedAccount, symbol: sql.Symbol, volume: Decimal, price: Decimal) -> bool:
        """Would opening ``volume`` at ``price`` leave the account's free margin below zero?"""
        floating, used = self._aggregate_exposure(account, self._txn_symbols)
        needed = self._margin(symbol, volume, price, self._quotes([symbol]))
        return account.balance + account.credit + floating - used - needed < 0

    @staticmethod
    def _enter(
        account: sql.LockedAccount, symbol: sql.Symbol, *, order_ticket: int, deal_ticket: int, is_buy: bool,
        volume: Decimal, price: Decimal, sl: Decimal, tp: Decimal, magic: int, comment: str, stamp: int,
    ) -> None:  # fmt: skip
        """The entry deal and the position an executed order opens (its ticket is the order's)."""
        # MT5 charges the entry commission to the balance at once; the deal records it.
        commission = -pricing.money(symbol.commission_per_lot * volume, account.currency_digits)
        sql.insert(SimDeal, dict(
            ticket=deal_ticket, account_id=account.pk, order=order_ticket, symbol=symbol.name,
            type=c.DEAL_TYPE_BUY if is_buy else c.DEAL_TYPE_SELL, entry=c.DEAL_ENTRY_IN, magic=magic,
            position_id=order_ticket, volume=volume, price=price, commission=commission, comment=comment,
            time_msc=stamp,
        ))  # fmt: skip
        sql.insert(SimPosition, dict(
            ticket=order_ticket, account_id=account.pk, symbol_id=symbol.pk,
            type=c.POSITION_TYPE_BUY if is_buy else c.POSITION_TYPE_SELL, volume=volume, price_open=price, sl=sl,
            tp=tp, magic=magic, comment=comment, commission=commission, time_msc=stamp, time_update_msc=stamp,
        ))  # fmt: skip
        if commission:
            sql.add_to_balance(account.pk, commission)

    def _close(
        self, account: sql.LockedAccount, position: sql.LockedPosition, req: _Request, dry_run: bool,
        reason: int = c.DEAL_REASON_EXPERT,
    ) -> _Outcome:  # fmt: skip
        symbol = position.symbol
        closing_type = c.ORDER_TYPE_SELL if position.type == c.POSITION_TYPE_BUY else c.ORDER_TYPE_BUY
        if req.type != closing_type:
            raise _Outcome(c.TRADE_RETCODE_INVALID, "Invalid close order type")
        if _dec(req.volume) > position.volume:
            raise _Outcome(c.TRADE_RETCODE_INVALID_CLOSE_VOLUME)
        volume = self._check_volume_and_filling(symbol, req, pending=False)
        price = self._check_market_price(symbol, req, closing_type == c.ORDER_TYPE_BUY)
        if dry_run:
            return _Outcome(c.TRADE_RETCODE_DONE)
        digits = account.currency_digits
        realised = pricing.profit(
            symbol=symbol.name, currency_profit=symbol.currency_profit, contract_size=symbol.trade_contract_size,
            is_buy=position.type == c.POSITION_TYPE_BUY, volume=volume, price_open=position.price_open,
            price_close=price, account_currency=account.currency, account_digits=digits,
            quotes=self._quotes([symbol]),
        )  # fmt: skip
        full = volume == position.volume
        # A partial close realises its share of the swap accrued so far.
        swap = position.swap if full else pricing.money(position.swap * volume / position.volume, digits)
        commission = -pricing.money(symbol.commission_per_lot * volume, digits)
        order_ticket, deal_ticket = svc.allocate_tickets(2)
        stamp = svc.now_msc()
        sql.insert(SimOrder, dict(
            ticket=order_ticket, account_id=account.pk, symbol_id=symbol.pk, type=closing_type,
            type_filling=req.type_filling, state=c.ORDER_STATE_FILLED, volume_initial=volume, volume_current=ZERO,
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
        return _Outcome(
            c.TRADE_RETCODE_DONE, symbol=symbol, deal=deal_ticket, order=order_ticket, volume=volume, price=price
        )

    def _modify_position(self, position: sql.LockedPosition, req: _Request, dry_run: bool) -> _Outcome:
        symbol = position.symbol
        is_buy = position.type == c.POSITION_TYPE_BUY
        sl, tp = _dec(req.sl), _dec(req.tp)
        if sl == position.sl and tp == position.tp:
            raise _Outcome(c.TRADE_RETCODE_NO_CHANGES)
        self._check_stops(symbol, is_buy, req.sl, req.tp, symbol.bid if is_buy else symbol.ask)
        if not dry_run:
            sql.update(SimPosition, position.pk, sl=sl, tp=tp, time_update_msc=svc.now_msc())
        return _Outcome(c.TRADE_RETCODE_DONE, symbol=symbol)

    @staticmethod
    def _pending_reached(symbol: SimSymbol | sql.Symbol, order_type: int, price: Decimal) -> bool:
        """Has the quote reached a pending order's price (it would fill now)? Unknown types: no."""
        return {
            c.ORDER_TYPE_BUY_LIMIT: symbol.ask <= price,
            c.ORDER_TYPE_SELL_LIMIT: symbol.bid >= price,
            c.ORDER_TYPE_BUY_STOP: symbol.ask >= price,
            c.ORDER_TYPE_SELL_STOP: symbol.bid <= price,
        }.get(order_type, False)

    @classmethod
    def _check_pending_price(cls, symbol: SimSymbol, order_type: int, price: Decimal) -> None:
        """A pending order is placed only where the quote has not reached it yet."""
        if not (price > 0 and order_type in PENDING_TYPES and not cls._pending_reached(symbol, order_type, price)):
            raise _Outcome(c.TRADE_RETCODE_INVALID_PRICE)

    def _place_pending(self, account: SimAccount, symbol: SimSymbol, req: _Request, dry_run: bool) -> _Outcome:
        if req.type not in PENDING_TYPES:
            raise _Outcome(c.TRADE_RETCODE_INVALID_ORDER)
        volume = self._check_volume_and_filling(symbol, req, pending=True)
        price = _dec(req.price)
        self._check_pending_price(symbol, req.type, price)
        self._check_stops(symbol, req.type in BUY_TYPES, req.sl, req.tp, price)
        if SimOrder.objects.filter(account_id=account.pk, is_open=True).count() >= account.limit_orders:
            raise _Outcome(c.TRADE_RETCODE_LIMIT_ORDERS)
        if dry_run:
            return _Outcome(c.TRADE_RETCODE_PLACED)
        (ticket,) = svc.allocate_tickets(1)
        SimOrder.objects.create(
            ticket=ticket, account_id=account.pk, symbol_id=symbol.pk, is_open=True, type=req.type,
            type_time=req.type_time, type_filling=req.type_filling, state=c.ORDER_STATE_PLACED,
            volume_initial=volume, volume_current=volume, price_open=price, price_stoplimit=_dec(req.stoplimit),
            sl=_dec(req.sl), tp=_dec(req.tp), magic=req.magic, comment=req.comment, time_setup_msc=svc.now_msc(),
            time_expiration=req.expiration,
        )  # fmt: skip
        return _Outcome(c.TRADE_RETCODE_PLACED, symbol=symbol, order=ticket, volume=volume, price=price)

    @staticmethod
    def _remove_order(order: SimOrder, dry_run: bool) -> _Outcome:
        if not dry_run:
            SimOrder.objects.filter(pk=order.pk).update(
                is_open=False, state=c.ORDER_STATE_CANCELED, time_done_msc=svc.now_msc()
            )
        return _Outcome(c.TRADE_RETCODE_DONE, symbol=order.symbol, order=order.ticket)

    def _modify_order(self, order: SimOrder, req: _Request, dry_run: bool) -> _Outcome:
        price = _dec(req.price) if req.price else order.price_open
        sl, tp = _dec(req.sl), _dec(req.tp)
        if price == order.price_open and sl == order.sl and tp == order.tp:
            raise _Outcome(c.TRADE_RETCODE_NO_CHANGES)
        self._check_pending_price(order.symbol, order.type, price)
        self._check_stops(order.symbol, order.type in BUY_TYPES, req.sl, req.tp, price)
        if not dry_run:
            SimOrder.objects.filter(pk=order.pk).update(price_open=price, sl=sl, tp=tp)
        return _Outcome(c.TRADE_RETCODE_DONE, symbol=order.symbol, order=order.ticket)

    # --- the trade server's triggers: what a new quote sets off -----------------------------
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
                fired.extend(cls._server(account_id)._fire_stop(ticket, magic))
        for account_id, ticket in orders.order_by("ticket").values_list("account_id", "ticket"):
            with transaction.atomic():
                fired.extend(cls._server(account_id)._fill_pending(ticket))
        return fired

    @classmethod
    def _server(cls, account_id: int) -> SimulatedMetaTrader5:
        """The trade server acting on one account (no terminal, no client checks)."""
        server = cls()
        server._connected, server._account_id = True, account_id
        return server

    def _fire_stop(self, ticket: int, magic: int) -> list[Triggered]:
        try:
            account, symbol, position, _ = self._resolve(_Request(action=c.TRADE_ACTION_DEAL, position=ticket))
        except _Outcome:
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
        req = _Request(
            action=c.TRADE_ACTION_DEAL, magic=magic, symbol=symbol.name, volume=float(position.volume),
            price=float(market), type=c.ORDER_TYPE_SELL if is_buy else c.ORDER_TYPE_BUY,
            type_filling=_filling_for(symbol), position=ticket, comment=f"[{kind} {level:.{symbol.digits}f}]",
        )  # fmt: skip
        outcome = self._close(account, position, req, dry_run=False, reason=reason)
        return [Triggered(kind, symbol.name, ticket, outcome.deal, pricing.price_round(market, symbol.digits))]

    def _fill_pending(self, ticket: int) -> list[Triggered]:
        account = sql.lock_account(self._account_id)
        order = (
            SimOrder.objects.select_for_update(of=("self",)).filter(ticket=ticket, is_open=True).first()
            if account is not None
            else None
        )
        if order is None:
            return []  # cancelled or filled meanwhile
        self._txn_symbols = {s.pk: s for s in self._symbols()}
        symbol = self._txn_symbols[order.symbol_id]
        if not self._pending_reached(symbol, order.type, order.price_open):
            return []  # moved meanwhile
        is_buy = order.type in BUY_TYPES
        market = symbol.ask if is_buy else symbol.bid
        price = market  # a stop fills at the quote; a limit at its price or the better quote
        if order.type in (c.ORDER_TYPE_BUY_LIMIT, c.ORDER_TYPE_SELL_LIMIT):
            price = min(market, order.price_open) if is_buy else max(market, order.price_open)
        stamp = svc.now_msc()
        if self._lacks_margin(account, symbol, order.volume_current, price):
            sql.update(SimOrder, order.pk, is_open=False, state=c.ORDER_STATE_REJECTED, time_done_msc=stamp)
            return [Triggered("rejected", symbol.name, ticket, 0, pricing.price_round(price, symbol.digits))]
        (deal_ticket,) = svc.allocate_tickets(1)
        sql.update(
            SimOrder, order.pk, is_open=False, state=c.ORDER_STATE_FILLED, volume_current=ZERO,
            position_id=order.ticket, time_done_msc=stamp,
        )  # fmt: skip
        self._enter(
            account, symbol, order_ticket=order.ticket, deal_ticket=deal_ticket, is_buy=is_buy,
            volume=order.volume_current, price=price, sl=order.sl, tp=order.tp, magic=order.magic,
            comment=order.comment, stamp=stamp,
        )  # fmt: skip
        return [Triggered("filled", symbol.name, ticket, deal_ticket, pricing.price_round(price, symbol.digits))]

    # --- unsupported market data (the module has them; the bridge does not need them) ----------
    def _unsupported(self, *args: Any, **kwargs: Any) -> None:
        self._fail(c.RES_E_UNSUPPORTED)

    copy_rates_from = copy_rates_from_pos = copy_rates_range = _unsupported
    copy_ticks_from = copy_ticks_range = market_book_get = _unsupported

    def market_book_add(self, symbol: str) -> bool:
        self._fail(c.RES_E_UNSUPPORTED)
        return False

    def market_book_release(self, symbol: str) -> bool:
        self._fail(c.RES_E_UNSUPPORTED)
        return False


for _name in c.MODULE_CONSTANTS:
    setattr(SimulatedMetaTrader5, _name, getattr(c, _name))
for _tuple in (AccountInfo, OrderCheckResult, OrderSendResult, SymbolInfo, TerminalInfo, Tick, TradeDeal, TradeOrder,
               TradePosition, TradeRequest):  # fmt: skip
    setattr(SimulatedMetaTrader5, _tuple.__name__, _tuple)
