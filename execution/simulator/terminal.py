"""``SimulatedMetaTrader5``: the MetaTrader5 module's API over the simulator's database state.

One instance behaves like one terminal: it is initialised, logged into one account at a
time, and answers with the real module's namedtuples, constants and failure convention
(``None`` plus ``last_error()``). Like MT5 it shows every time (ticks, positions, orders, deals,
symbols) in the trade server's wall clock, UTC + ``SIM_SERVER_UTC_OFFSET_HOURS`` written as if
it were a Unix timestamp, and reads the dates it is given (history windows) the same way; the
rows underneath keep UTC (``stamps``). Its trade requests go to the trade server (``server``),
which every process shares through the database; so do its reads.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import replace
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from execution.models import SimAccount, SimOrder, SimPosition, SimTerminal
from execution.simulator import constants as c
from execution.simulator import faults, pricing, sql
from execution.simulator.naming import ServerNames, names_of
from execution.simulator.request import InvalidArgument, Request, dec, to_seconds
from execution.simulator.server import BUY_TYPES, Outcome, TradeServer
from execution.simulator.stamps import server_msc, server_offset_msc
from execution.simulator.symbols import read_symbols
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
from execution.simulator.valuation import Valuation

BUILD = 5200
# The terminal ``initialize()`` attaches to when no path is given (the one installed).
DEFAULT_PATH = "terminal64.exe"


def _pay(seconds: float) -> None:
    """The cost model: what a call to a real terminal takes (``SIM_CALL_MS``, ``SIM_LOGIN_SECONDS``)."""
    if seconds > 0:
        time.sleep(seconds)


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


class SimulatedMetaTrader5:
    """One simulated terminal. Every constant of the MetaTrader5 module is a class attribute."""

    def __init__(
        self, *, trade_allowed: bool | None = None, tradeapi_disabled: bool | None = None, manual: bool = False
    ) -> None:
        # The terminal's "Algo Trading" button and its "disable Python API trading" option belong
        # to the terminal (``SimTerminal``): given here, they are set on it at ``initialize``.
        self._switches = {
            name: value
            for name, value in (("trade_allowed", trade_allowed), ("tradeapi_disabled", tradeapi_disabled))
            if value is not None
        }
        # Not in the MetaTrader5 API: the trader at the terminal's own trade window rather than a
        # program. Its requests are the user's (reason CLIENT): the two switches above and the
        # server's Expert right do not apply to them; the user's trade right does.
        self.manual = manual
        self._connected = False
        self._path: str | None = None
        self._terminal_id = 0  # the SimTerminal row, once initialize()d
        # The terminal's state as this process last read it (``_sync``, before every call).
        self._account_id: int | None = None
        self._login: int | None = None
        self._server: str | None = None
        self._trade_allowed = True
        self._tradeapi_disabled = False
        # The logged-in account's currency, digits and leverage: what reports are valued in.
        self._valuation = Valuation()
        self._last_error: tuple[int, str] = (c.RES_S_OK, c.LAST_ERROR_TEXT[c.RES_S_OK])
        self._request_id = 0
        self._hidden: set[str] = set()

    # --- the failure convention ------------------------------------------------------------
    def _ok(self) -> None:
        self._last_error = (c.RES_S_OK, c.LAST_ERROR_TEXT[c.RES_S_OK])

    def _fail(self, code: int, text: str | None = None) -> None:
        self._last_error = (code, text or c.LAST_ERROR_TEXT[code])

    def _ready(self, *, account: bool = True, outage: bool = True) -> bool:
        """Can the terminal answer? Not before initialize(), nor inside a ``no_connection``
        outage (which breaks the link: initialize() again once it is over), nor for an account
        before login. ``order_send`` leaves the outage to the trade server, which takes every
        fault in the transaction it already runs. Every call pays ``SIM_CALL_MS`` and sees the
        account the terminal holds now, whoever logged it in."""
        if not self._connected:
            self._fail(c.RES_E_INTERNAL_FAIL_CONNECT)
            return False
        _pay(settings.SIM_CALL_MS / 1000)
        cut_off = self._sync()
        if outage and cut_off:
            self._connected = False
            self._fail(c.RES_E_INTERNAL_FAIL_CONNECT)
            return False
        if account and self._account_id is None:
            self._fail(c.RES_E_AUTH_FAILED)
            return False
        return True

    def _sync(self) -> bool:
        """Read the terminal's shared state: its account (another process may have switched it)
        and its two trading switches; True when a ``no_connection`` outage cuts it off now."""
        state = sql.terminal_state(self._terminal_id, faults.clock())
        self._trade_allowed, self._tradeapi_disabled = state.trade_allowed, state.tradeapi_disabled
        if state.account_id != self._account_id:
            account = SimAccount.objects.filter(pk=state.account_id).first() if state.account_id is not None else None
            self._adopt(account)
        return state.cut_off

    def _adopt(self, account: SimAccount | None) -> None:
        if account is None:
            self._account_id = self._login = self._server = None
            self._valuation = Valuation()
            return
        self._account_id, self._login, self._server = account.pk, account.login, account.server
        self._valuation = Valuation(account.currency, account.currency_digits, account.leverage)

    def _account(self, *, outage: bool = True) -> int | None:
        """The logged-in account's id when the terminal can answer for it; None (with
        ``last_error`` set) when it cannot."""
        if not self._ready(outage=outage):
            return None
        return self._account_id

    def last_error(self) -> tuple[int, str]:
        return self._last_error

    @property
    def _names(self) -> ServerNames:
        """How the logged-in account's trade server names its symbols (``naming``)."""
        return names_of(self._server)

    def _symbol_rows(self, symbol: str) -> list[sql.Symbol]:
        """The instrument the server lists under ``symbol``; none when it lists no such name."""
        stored = self._names.stored(symbol)
        return read_symbols(name=stored) if stored else []

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
        if faults.cut_off(None):
            # The terminal cannot be reached while the outage lasts.
            self._connected = False
            self._fail(c.RES_E_INTERNAL_FAIL_INIT)
            return False
        self._path = path or DEFAULT_PATH
        terminal, _ = SimTerminal.objects.get_or_create(path=self._path)
        if self._switches:
            SimTerminal.objects.filter(pk=terminal.pk).update(**self._switches)
        self._terminal_id = terminal.pk
        self._connected = True
        if login is not None:
            return self.login(login, password=password, server=server, timeout=timeout)
        self._ok()
        return True

    def login(
        self, login: int, password: str | None = None, server: str | None = None, timeout: int | None = None
    ) -> bool:
        """Switch the terminal to ``login``: for every process attached to it, at once. The
        authorisation then takes ``SIM_LOGIN_SECONDS``, while the terminal already holds the new
        account (what a process that did not log in sees meanwhile)."""
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
            _pay(settings.SIM_LOGIN_SECONDS)
            self._fail(c.RES_E_AUTH_FAILED)
            return False
        if faults.cut_off(account.login):
            self._connected = False
            self._fail(c.RES_E_INTERNAL_FAIL_CONNECT)
            return False
        switch: dict[str, Any] = {"account": account, "logins": F("logins") + 1, "logged_in_at": timezone.now()}
        if settings.SIM_DISABLE_AT_ON_SWITCH and self._account_id not in (None, account.pk):
            switch["trade_allowed"] = False  # "Disable algorithmic trading when the account has been changed"
        SimTerminal.objects.filter(pk=self._terminal_id).update(**switch)
        self._adopt(account)
        _pay(settings.SIM_LOGIN_SECONDS)
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
            trade_allowed=self._trade_allowed, tradeapi_disabled=self._tradeapi_disabled,
            email_enabled=False, ftp_enabled=False, notifications_enabled=False, mqid=False, build=BUILD,
            maxbars=100000, codepage=0, ping_last=1000, community_balance=0.0, retransmission=0.0,
            company="MT5 Bridge Simulator", name="MetaTrader 5 Simulator", language="English",
            path=self._path or "/simulator", data_path="/simulator", commondata_path="/simulator/common",
        )  # fmt: skip

    # --- account ----------------------------------------------------------------------------
    def _account_tuple(self, account: SimAccount | sql.AccountRow, floating: Decimal, margin: Decimal) -> AccountInfo:
        equity = account.balance + account.credit + floating
        level = float(equity / margin * 100) if margin else 0.0
        return AccountInfo(
            login=account.login, trade_mode=account.trade_mode, leverage=account.leverage,
            limit_orders=account.limit_orders, margin_so_mode=c.ACCOUNT_STOPOUT_MODE_PERCENT,
            trade_allowed=account.trade_allowed, trade_expert=account.trade_expert,
            margin_mode=account.margin_mode, currency_digits=account.currency_digits,
            fifo_close=False, balance=float(account.balance), credit=float(account.credit), profit=float(floating),
            equity=float(equity), margin=float(margin), margin_free=float(equity - margin), margin_level=level,
            margin_so_call=float(account.margin_so_call), margin_so_so=float(account.margin_so_so),
            margin_initial=0.0, margin_maintenance=0.0, assets=0.0, liabilities=0.0, commission_blocked=0.0,
            name=account.name, server=account.server, currency=account.currency, company=account.company,
        )  # fmt: skip

    def account_info(self) -> AccountInfo | None:
        account_id = self._account()
        if account_id is None:
            return None
        account = sql.account_row(account_id)
        if account is None:
            self._fail(c.RES_E_AUTH_FAILED)
            return None
        floating, margin = self._valuation.exposure(sql.account_position_rows(account_id))
        self._ok()
        return self._account_tuple(account, floating, margin)

    # --- symbols ----------------------------------------------------------------------------
    def _symbol_tuple(self, s: sql.Symbol) -> SymbolInfo:
        bid, ask, point = float(s.bid), float(s.ask), float(s.point)
        spread = int(((s.ask - s.bid) / s.point).to_integral_value())
        currency = self._valuation.currency
        tick_value = float(s.trade_contract_size * s.point) if s.currency_profit == currency else 0.0
        if s.currency_profit != currency:
            quotes = Valuation.quotes([s])
            try:
                rate = pricing.conversion_rate(s.currency_profit, currency, quotes, own_symbol=s.name, own_price=s.bid)
                tick_value = float(s.trade_contract_size * s.point * rate)
            except LookupError:
                tick_value = 0.0
        seconds = server_msc(s.price_time_msc, server_offset_msc()) // 1000
        name = self._names.shown(s.name)
        return SymbolInfo(
            custom=False, chart_mode=c.SYMBOL_CHART_MODE_BID, select=name not in self._hidden,
            visible=name not in self._hidden, session_deals=0, session_buy_orders=0, session_sell_orders=0,
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
            name=name, page="", path=f"Simulated\\{name}",
        )  # fmt: skip

    def symbols_total(self) -> int | None:
        if not self._ready(account=False):
            return None
        self._ok()
        return len(read_symbols())

    def symbols_get(self, group: str | None = None) -> tuple[SymbolInfo, ...] | None:
        if not self._ready(account=False):
            return None
        matches = _group_matcher(group)
        self._ok()
        shown = self._names.shown
        return tuple(self._symbol_tuple(s) for s in read_symbols() if matches(shown(s.name)))

    def symbol_info(self, symbol: str) -> SymbolInfo | None:
        if not self._ready(account=False):
            return None
        rows = self._symbol_rows(symbol)
        if not rows:
            self._fail(c.RES_E_NOT_FOUND)
            return None
        self._ok()
        return self._symbol_tuple(rows[0])

    def symbol_info_tick(self, symbol: str) -> Tick | None:
        if not self._ready(account=False):
            return None
        rows = self._symbol_rows(symbol)
        if not rows or symbol in self._hidden:
            self._fail(c.RES_E_NOT_FOUND)
            return None
        s = rows[0]
        stamp = server_msc(s.price_time_msc, server_offset_msc())
        self._ok()
        return Tick(
            time=stamp // 1000, bid=float(s.bid), ask=float(s.ask), last=0.0, volume=0,
            time_msc=stamp, flags=c.TICK_FLAG_BID | c.TICK_FLAG_ASK, volume_real=0.0,
        )  # fmt: skip

    def symbol_select(self, symbol: str, enable: bool = True) -> bool:
        if not self._ready(account=False):
            return False
        if not self._symbol_rows(symbol):
            self._fail(c.RES_E_NOT_FOUND)
            return False
        (self._hidden.discard if enable else self._hidden.add)(symbol)
        self._ok()
        return True

    # --- positions and orders ---------------------------------------------------------------
    def _position_tuple(self, p: sql.PositionRow, quotes: pricing.QuoteSource, offset: int) -> TradePosition:
        current, value = self._valuation.value(p, quotes)
        opened, updated = server_msc(p.time_msc, offset), server_msc(p.time_update_msc, offset)
        return TradePosition(
            ticket=p.ticket, time=opened // 1000, time_msc=opened, time_update=updated // 1000,
            time_update_msc=updated, type=p.type, magic=p.magic, identifier=p.identifier, reason=p.reason,
            volume=float(p.volume), price_open=float(p.price_open), sl=float(p.sl), tp=float(p.tp),
            price_current=float(current), swap=float(p.swap), profit=float(value),
            symbol=self._names.shown(p.symbol.name), comment=p.comment, external_id=p.external_id,
        )  # fmt: skip

    def positions_total(self) -> int | None:
        account_id = self._account()
        if account_id is None:
            return None
        self._ok()
        return SimPosition.objects.filter(account_id=account_id).count()

    def positions_get(
        self, symbol: str | None = None, group: str | None = None, ticket: int | None = None
    ) -> tuple[TradePosition, ...] | None:
        account_id = self._account()
        if account_id is None:
            return None
        matches, names = _group_matcher(group), self._names
        stored = names.stored(symbol) if symbol else symbol
        found = () if symbol and stored is None else sql.position_rows_of(account_id, ticket=ticket, symbol=stored)
        rows = [row for row in found if matches(names.shown(row.symbol.name))]
        quotes = Valuation.quotes(p.symbol for p in rows)
        offset = server_offset_msc()
        self._ok()
        return tuple(self._position_tuple(p, quotes, offset) for p in rows)

    def _order_tuple(self, o: SimOrder | sql.OrderRow, offset: int, names: ServerNames | None = None) -> TradeOrder:
        """An order as the terminal shows it (named as ``names``' server does: by default the
        logged-in account's). ``time_expiration`` is stored as the request gave it, which was
        already the server's wall clock."""
        current = o.symbol.ask if o.type in BUY_TYPES else o.symbol.bid
        setup, done = server_msc(o.time_setup_msc, offset), server_msc(o.time_done_msc, offset)
        return TradeOrder(
            ticket=o.ticket, time_setup=setup // 1000, time_setup_msc=setup,
            time_done=done // 1000, time_done_msc=done, time_expiration=o.time_expiration,
            type=o.type, type_time=o.type_time, type_filling=o.type_filling, state=o.state, magic=o.magic,
            position_id=o.position_id, position_by_id=o.position_by_id, reason=o.reason,
            volume_initial=float(o.volume_initial), volume_current=float(o.volume_current),
            price_open=float(o.price_open), sl=float(o.sl), tp=float(o.tp),
            price_current=float(current) if o.is_open else float(o.price_open),
            price_stoplimit=float(o.price_stoplimit), symbol=(names or self._names).shown(o.symbol.name),
            comment=o.comment,
            external_id=o.external_id,
        )  # fmt: skip

    def orders_total(self) -> int | None:
        account_id = self._account()
        if account_id is None:
            return None
        self._ok()
        return SimOrder.objects.filter(account_id=account_id, is_open=True).count()

    def orders_get(
        self, symbol: str | None = None, group: str | None = None, ticket: int | None = None
    ) -> tuple[TradeOrder, ...] | None:
        account_id = self._account()
        if account_id is None:
            return None
        matches, names = _group_matcher(group), self._names
        stored = names.stored(symbol) if symbol else symbol
        found = (
            () if symbol and stored is None else sql.order_rows(account_id, is_open=True, ticket=ticket, symbol=stored)
        )
        rows = [row for row in found if matches(names.shown(row.symbol.name))]
        offset = server_offset_msc()
        self._ok()
        return tuple(self._order_tuple(o, offset) for o in rows)

    # --- history ----------------------------------------------------------------------------
    def _history_window(
        self, date_from: Any, date_to: Any, ticket: int | None, position: int | None
    ) -> tuple[int, int] | None:
        """The stored (UTC) epoch-ms bounds of dates given in the server's wall clock, as MT5
        reads them: a window that ends at UTC's now misses the last ``offset`` hours. ``None``
        when a ticket/position query makes the dates irrelevant."""
        if ticket is not None or position is not None:
            return None
        if date_from is None or date_to is None:
            raise InvalidArgument("Invalid arguments")
        offset = server_offset_msc()
        since = to_seconds(date_from, "date_from") * 1000 - offset
        return since, to_seconds(date_to, "date_to") * 1000 + 999 - offset

    def history_orders_get(
        self,
        date_from: Any = None,
        date_to: Any = None,
        group: str | None = None,
        ticket: int | None = None,
        position: int | None = None,
    ) -> tuple[TradeOrder, ...] | None:
        account_id = self._account()
        if account_id is None:
            return None
        try:
            window = self._history_window(date_from, date_to, ticket, position)
        except InvalidArgument as exc:
            self._fail(c.RES_E_INVALID_PARAMS, str(exc))
            return None
        matches, names = _group_matcher(group), self._names
        rows = [
            row
            for row in sql.order_rows(account_id, is_open=False, window=window, position=position, ticket=ticket)
            if matches(names.shown(row.symbol.name))
        ]
        offset = server_offset_msc()
        self._ok()
        return tuple(self._order_tuple(o, offset) for o in rows)

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
        account_id = self._account()
        if account_id is None:
            return None
        try:
            window = self._history_window(date_from, date_to, ticket, position)
        except InvalidArgument as exc:
            self._fail(c.RES_E_INVALID_PARAMS, str(exc))
            return None
        rows = sql.deal_rows(account_id, window=window, ticket=ticket, position=position)
        matches, names = _group_matcher(group), self._names
        offset = server_offset_msc()
        deals = tuple(
            self._deal_tuple(row, offset, names)
            for row in rows
            if not group or matches(names.shown(row[sql.DEAL_SYMBOL_AT]))
        )
        self._ok()
        return deals

    @staticmethod
    def _deal_tuple(row: tuple[Any, ...], offset: int, names: ServerNames) -> TradeDeal:
        """A row of ``_deals_select``: TradeDeal's columns in its order, ``time`` left out."""
        (ticket, order, time_msc, type_, entry, magic, position_id, reason, volume, price, commission, swap, profit,
         fee, symbol, comment, external_id) = row  # fmt: skip
        time_msc = server_msc(time_msc, offset)
        return TradeDeal(
            ticket=ticket, order=order, time=time_msc // 1000, time_msc=time_msc, type=type_, entry=entry,
            magic=magic, position_id=position_id, reason=reason, volume=float(volume), price=float(price),
            commission=float(commission), swap=float(swap), profit=float(profit), fee=float(fee),
            symbol=names.shown(symbol), comment=comment, external_id=external_id,
        )  # fmt: skip

    def history_deals_total(self, date_from: Any, date_to: Any) -> int | None:
        deals = self.history_deals_get(date_from, date_to)
        return None if deals is None else len(deals)

    # --- calculations -----------------------------------------------------------------------
    def order_calc_margin(self, action: int, symbol: str, volume: float, price: float) -> float | None:
        if not self._ready():
            return None
        rows = self._symbol_rows(symbol)
        if not rows or action not in (c.ORDER_TYPE_BUY, c.ORDER_TYPE_SELL):
            self._fail(c.RES_E_INVALID_PARAMS)
            return None
        self._ok()
        return float(self._valuation.margin(rows[0], dec(volume), dec(price), Valuation.quotes(rows)))

    def order_calc_profit(
        self, action: int, symbol: str, volume: float, price_open: float, price_close: float
    ) -> float | None:
        if not self._ready():
            return None
        rows = self._symbol_rows(symbol)
        if not rows or action not in (c.ORDER_TYPE_BUY, c.ORDER_TYPE_SELL):
            self._fail(c.RES_E_INVALID_PARAMS)
            return None
        s = rows[0]
        value = pricing.profit(
            symbol=s.name, currency_profit=s.currency_profit, contract_size=s.trade_contract_size,
            is_buy=action == c.ORDER_TYPE_BUY, volume=dec(volume), price_open=dec(price_open),
            price_close=dec(price_close), account_currency=self._valuation.currency,
            account_digits=self._valuation.currency_digits, quotes=Valuation.quotes(rows),
        )  # fmt: skip
        self._ok()
        return float(value)

    # --- trading ----------------------------------------------------------------------------
    def order_check(self, request: dict[str, Any]) -> OrderCheckResult | None:
        """Validate a request without executing it (retcode 0 when it would be accepted)."""
        account_id = self._account()
        if account_id is None:
            return None
        try:
            req = Request.parse(request)
        except InvalidArgument as exc:
            self._fail(c.RES_E_INVALID_PARAMS, str(exc))
            return None
        with transaction.atomic():
            outcome = self._trade_server(account_id).execute(self._on_server(req), dry_run=True)
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
        account_id = self._account(outage=False)
        if account_id is None:
            return None
        try:
            req = Request.parse(request)
        except InvalidArgument as exc:
            self._fail(c.RES_E_INVALID_PARAMS, str(exc))
            return None
        if self._tradeapi_disabled and not self.manual:
            self._fail(c.RES_E_AUTO_TRADING_DISABLED)
            return None
        self._request_id += 1
        if not self._trade_allowed and not self.manual:
            # The terminal refuses before anything reaches the server: no fault is consumed.
            self._ok()
            return self._result(req, Outcome(c.TRADE_RETCODE_CLIENT_DISABLES_AT))
        # The outcome is caught inside the transaction, so whatever it did (a fill, a consumed
        # fault) commits; rejections happen before any write and leave nothing behind.
        with transaction.atomic():
            outcome = self._trade_server(account_id).execute(self._on_server(req), dry_run=False)
        if outcome.connection_lost:
            self._connected = False
            self._fail(c.RES_E_INTERNAL_FAIL_CONNECT)
            return None
        if outcome.timed_out:
            self._fail(c.RES_E_INTERNAL_FAIL_TIMEOUT)
            return None
        self._ok()
        return self._result(req, outcome)

    def _result(self, req: Request, outcome: Outcome) -> OrderSendResult:
        return OrderSendResult(
            retcode=outcome.retcode, deal=outcome.deal, order=outcome.order, volume=outcome.volume,
            price=outcome.price, bid=outcome.bid, ask=outcome.ask, comment=outcome.comment,
            request_id=self._request_id, retcode_external=0, request=req.as_tuple(),
        )  # fmt: skip

    def _on_server(self, req: Request) -> Request:
        """The request as the trade server reads it: its symbol, named as the logged-in account's
        server names it, is the instrument stored under the plain name (``naming``)."""
        return replace(req, symbol=self._names.for_server(req.symbol)) if req.symbol else req

    def _trade_server(self, account_id: int) -> TradeServer:
        """The trade server, acting on the logged-in account and valuing in its currency, for
        a program (the Python API) or, on a manual terminal, for the trader."""
        reason = c.ORDER_REASON_CLIENT if self.manual else c.ORDER_REASON_EXPERT
        return TradeServer(account_id, self._valuation, reason=reason)

    # --- unsupported market data (the module has them; the bridge does not need them) ----------
    # (Their dates would be the server's wall clock too, like the history functions'.)
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
