"""The ``MT5Manager`` package's surface over the simulator's database state.

This module stands in for the ``MT5Manager`` module itself: ``ManagerAPI``, the ``MT*`` record
classes with their nested ``En*`` enums, ``EnMTAPIRetcode`` and ``LastError()`` have the
real package's names (its wheel's ``_core.pyi``), so ``execution.adapters.manager`` runs
unchanged on either. It sees the same accounts, positions, orders, deals and quotes as every
simulated terminal: a trade made through a terminal is an event here, and a ``DealerSend``
is a deal every terminal sees.

Like the real API (``MANAGER_API.md``):

- ``Connect`` logs into the server and starts pumping: a thread of the API's own keeps a local
  copy of the pumped users, accounts, positions, orders and quotes fresh from the shared state
  (every ``SIM_MANAGER_PUMP_MS``) and calls the subscribed sinks on that thread, with what
  changed. ``*Get*`` calls read that copy (and need their pump mode); ``*Request*`` calls read
  the shared state (a round trip). Events that happen while the connection is down are never
  delivered: after a reconnect the copy is reloaded silently and the caller must resync.
  With ``SIM_MANAGER_PUMP_IN`` process the reading and comparing is a spawned process's
  (``serve_pump``, as the real API's native pump thread leaves the interpreter lock free): the
  pump thread here only applies each cycle's changes to the copy and calls the sinks.
- A pump cycle sees what changed since the last one, so changes that came and went between two
  cycles make no event (a position opened and closed: its deals only), and a symbol that
  ticked several times makes one ``OnTick``; the symbols' configuration (``SymbolGet``) is the
  copy's too, as of the last cycle. Within a cycle events come in this order: users,
  ticks, orders, deals (by ticket), positions. A call that goes to the server (``*Request*``,
  a dealer request) costs ``SIM_CALL_MS`` when the simulator's cost model sets it.
- ``DealerSend`` only queues the request and returns its id; the dealer thread executes it on
  the trade server from the dealer's seat (the user's rights do not apply; the symbol's
  session does) and answers through the sink's ``OnDealerAnswer``.
- The same faults as the terminals: a ``no_connection`` outage of every login drops the
  connection (``OnDisconnect``; ``Connect`` fails until it ends) and takes the dealer requests
  queued with it; a counted ``no_connection`` loses that request (never executed, never
  answered); ``timeout_after_fill`` executes the request and loses its answer; ``requote``,
  ``market_closed`` and ``partial_fill`` answer as the trade server does.
- ``UserUpdate`` writes the user's rights: ``USER_RIGHT_TRADE_DISABLED`` is the account's trade
  right (``SimAccount.trade_allowed``, its inverse), which the trade server enforces against
  every terminal's ``order_send`` (10017), the trader's own included.

A manager connects to one trade server: ``"simulator"`` is the accounts of ``Broker-Server``
(the simulator's default), ``"simulator:NAME"`` those of ``NAME``. In MT5 the deposit
currency and the margin mode (netting or hedging) are the group's: each simulated account is
in the group ``demo\\sim-<currency>-<hedging|netting>`` (``group_of``).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from enum import IntEnum, IntFlag
from typing import TYPE_CHECKING, Any, NamedTuple

from django.conf import settings
from django.db import close_old_connections, connection, transaction

from execution.group_masks import group_matches
from execution.models import SimAccount, SimDeal, SimOrder, SimPosition
from execution.simulator import constants as c
from execution.simulator import faults, sql
from execution.simulator.request import Request
from execution.simulator.server import Outcome, TradeServer, filling_for
from execution.simulator.stamps import now_msc, server_msc, server_offset_msc
from execution.simulator.symbols import read_symbols
from execution.simulator.valuation import Valuation

log = logging.getLogger(__name__)

GROUP_PREFIX = "demo\\sim-"
DEFAULT_TRADE_SERVER = "Broker-Server"
# MTPosition.Volume, MTRequest.Volume, ...: lots x 10,000.
VOLUME_UNITS = 10_000
# How far back each pump cycle looks again: deal tickets, and position stamps (milliseconds), taken
# by transactions that committed after later ones.
DEAL_OVERLAP = 200
POSITION_OVERLAP_MS = 2_000


# --- enums (the values of the Manager API's headers) ----------------------------------------------
class EnMTAPIRetcode(IntEnum):
    MT_RET_OK = 0
    MT_RET_OK_NONE = 1
    MT_RET_ERROR = 2
    MT_RET_ERR_PARAMS = 3
    MT_RET_ERR_NETWORK = 7
    MT_RET_ERR_PERMISSIONS = 8
    MT_RET_ERR_TIMEOUT = 9
    MT_RET_ERR_CONNECTION = 10
    MT_RET_ERR_FREQUENT = 12
    MT_RET_ERR_NOTFOUND = 13


class _EnPumpModes(IntFlag):
    PUMP_MODE_USERS = 0x1
    PUMP_MODE_ACTIVITY = 0x2
    PUMP_MODE_ORDERS = 0x8
    PUMP_MODE_POSITIONS = 0x80
    PUMP_MODE_GROUPS = 0x100
    PUMP_MODE_SYMBOLS = 0x200
    PUMP_MODE_TIME = 0x1000
    PUMP_MODE_FULL = 0xFFFFFFFF


class _EnTradeActions(IntEnum):
    TA_DEALER_POS_EXECUTE = 200
    TA_DEALER_ORD_PENDING = 201
    TA_DEALER_POS_MODIFY = 202
    TA_DEALER_ORD_MODIFY = 203
    TA_DEALER_ORD_REMOVE = 204


class _EnTradeActionFlags(IntFlag):
    TA_FLAG_NONE = 0
    TA_FLAG_CLOSE = 0x1
    TA_FLAG_MARKET = 0x2


class _EnUsersRights(IntFlag):
    USER_RIGHT_NONE = 0
    USER_RIGHT_ENABLED = 0x1
    USER_RIGHT_PASSWORD = 0x2
    USER_RIGHT_TRADE_DISABLED = 0x4
    USER_RIGHT_INVESTOR = 0x8
    USER_RIGHT_TRAILING = 0x20
    USER_RIGHT_EXPERT = 0x40
    USER_RIGHT_REPORTS = 0x100


class _EnPositionAction(IntEnum):
    POSITION_BUY = 0
    POSITION_SELL = 1


# The terminal's DEAL_REASON_* (what the rows keep) as the Manager API numbers them.
MANAGER_DEAL_REASON = {
    c.DEAL_REASON_CLIENT: 0,
    c.DEAL_REASON_EXPERT: 1,
    c.DEAL_REASON_SL: 3,
    c.DEAL_REASON_TP: 4,
    c.DEAL_REASON_SO: 5,
    c.DEAL_REASON_ROLLOVER: 6,
    c.DEAL_REASON_VMARGIN: 8,
    c.DEAL_REASON_MOBILE: 16,
    c.DEAL_REASON_WEB: 17,
    c.DEAL_REASON_SPLIT: 18,
}

# --- LastError --------------------------------------------------------------------------------------
_errors = threading.local()


def _set_error(code: int, text: str = "") -> None:
    _errors.value = (code, EnMTAPIRetcode(code), text or EnMTAPIRetcode(code).name)


def LastError() -> tuple[int, EnMTAPIRetcode, str]:
    """The calling thread's last error, as ``MT5Manager.LastError()``: (code, retcode, text)."""
    return getattr(_errors, "value", (0, EnMTAPIRetcode.MT_RET_OK, "MT_RET_OK"))


# --- records ----------------------------------------------------------------------------------------
class _Record:
    """A record with the package's attribute names; built with the manager, as the package's are."""

    _defaults: dict[str, Any] = {}

    def __init__(self, manager: Any = None, **values: Any) -> None:
        for name, default in self._defaults.items():
            setattr(self, name, values.pop(name, default))
        if values:
            raise TypeError(f"{type(self).__name__} has no fields {sorted(values)}")

    if TYPE_CHECKING:  # the fields are set from ``_defaults``

        def __getattr__(self, name: str) -> Any: ...

        def __setattr__(self, name: str, value: Any) -> None: ...

    def _copy(self) -> Any:
        return type(self)(**{name: getattr(self, name) for name in self._defaults})

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._defaults)
        return f"{type(self).__name__}({fields})"


class MTUser(_Record):
    EnUsersRights = _EnUsersRights
    _defaults = {"Login": 0, "Group": "", "Name": "", "Rights": 0, "Leverage": 100, "Balance": 0.0, "Credit": 0.0,
                 "BalancePrevDay": 0.0, "EquityPrevDay": 0.0}  # fmt: skip


class _EnSoActivation(IntEnum):
    ACTIVATION_NONE = 0
    ACTIVATION_MARGIN_CALL = 1
    ACTIVATION_STOP_OUT = 2


class MTAccount(_Record):
    EnSoActivation = _EnSoActivation
    _defaults = {"Login": 0, "CurrencyDigits": 2, "Balance": 0.0, "Credit": 0.0, "Equity": 0.0, "Floating": 0.0,
                 "Profit": 0.0, "Storage": 0.0, "Margin": 0.0, "MarginFree": 0.0, "MarginLevel": 0.0,
                 "MarginLeverage": 100, "SOActivation": 0, "SOLevel": 0.0, "SOEquity": 0.0}  # fmt: skip


class MTPosition(_Record):
    EnPositionAction = _EnPositionAction
    _defaults = {"Position": 0, "Login": 0, "Symbol": "", "Action": 0, "Volume": 0, "VolumeExt": 0,
                 "PriceOpen": 0.0, "PriceCurrent": 0.0, "PriceSL": 0.0, "PriceTP": 0.0, "Profit": 0.0,
                 "Storage": 0.0, "RateProfit": 1.0, "ContractSize": 0.0, "Digits": 5, "ExpertID": 0,
                 "Comment": "", "Reason": 0, "TimeCreate": 0, "TimeCreateMsc": 0, "TimeUpdate": 0,
                 "TimeUpdateMsc": 0}  # fmt: skip


class MTOrder(_Record):
    _defaults = {"Order": 0, "Login": 0, "Symbol": "", "Type": 0, "State": 0, "VolumeInitial": 0,
                 "VolumeCurrent": 0, "PriceOrder": 0.0, "PriceCurrent": 0.0, "PriceSL": 0.0, "PriceTP": 0.0,
                 "ExpertID": 0, "Comment": "", "PositionID": 0, "Reason": 0, "TimeSetupMsc": 0,
                 "TimeDoneMsc": 0, "TypeFill": 0}  # fmt: skip


class MTDeal(_Record):
    _defaults = {"Deal": 0, "Login": 0, "Order": 0, "PositionID": 0, "Symbol": "", "Action": 0, "Entry": 0,
                 "Volume": 0, "VolumeExt": 0, "Price": 0.0, "Profit": 0.0, "Commission": 0.0, "Storage": 0.0,
                 "Fee": 0.0, "ExpertID": 0, "Comment": "", "Reason": 0, "Time": 0, "TimeMsc": 0}  # fmt: skip


class MTRequest(_Record):
    EnTradeActions = _EnTradeActions
    EnTradeActionFlags = _EnTradeActionFlags
    _defaults = {"ID": 0, "Action": 0, "Flags": 0, "Login": 0, "Symbol": "", "Position": 0, "Order": 0,
                 "Type": 0, "TypeFill": 0, "Volume": 0, "PriceOrder": 0.0, "PriceSL": 0.0, "PriceTP": 0.0,
                 "PriceDeviation": 0, "Comment": "", "ResultRetcode": 0, "ResultDeal": 0, "ResultOrder": 0,
                 "ResultVolume": 0, "ResultPrice": 0.0, "ResultComment": ""}  # fmt: skip


class MTTickShort(_Record):
    _defaults = {"bid": 0.0, "ask": 0.0, "last": 0.0, "volume": 0, "datetime": 0, "datetime_msc": 0, "flags": 0}


class MTConSymbol(_Record):
    _defaults = {"Symbol": "", "Digits": 5, "Point": 0.0, "ContractSize": 0.0, "VolumeMin": 0, "VolumeMax": 0,
                 "VolumeStep": 0, "FillFlags": 0, "ExecMode": 0, "TradeMode": 0, "StopsLevel": 0,
                 "CurrencyBase": "", "CurrencyProfit": "", "CurrencyMargin": "", "Description": "",
                 "TickValue": 0.0, "TickSize": 0.0}  # fmt: skip


class MTConGroup(_Record):
    # EnMarginMode: MARGIN_MODE_RETAIL 0 (netting), MARGIN_MODE_EXCHANGE_DISCOUNT 1, MARGIN_MODE_RETAIL_HEDGED 2.
    _defaults = {"Group": "", "Currency": "USD", "CurrencyDigits": 2, "MarginMode": 2, "MarginSOMode": 0}


MARGIN_MODE_RETAIL = 0
MARGIN_MODE_RETAIL_HEDGED = 2


def group_of(currency: str, margin_mode: int) -> str:
    hedging = margin_mode == c.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING
    return f"{GROUP_PREFIX}{currency.lower()}-{'hedging' if hedging else 'netting'}"


def _units(lots: Decimal) -> int:
    return int((lots * VOLUME_UNITS).to_integral_value())


def _activation(equity: Decimal, margin: Decimal, call: Decimal, stop_out: Decimal) -> int:
    """The account's margin state (``MTAccount.SOActivation``): margin call at or below the
    margin-call level, stop-out at or below the stop-out level (percent of margin)."""
    if margin <= 0:
        return _EnSoActivation.ACTIVATION_NONE
    level = equity / margin * 100
    if level <= stop_out:
        return _EnSoActivation.ACTIVATION_STOP_OUT
    if level <= call:
        return _EnSoActivation.ACTIVATION_MARGIN_CALL
    return _EnSoActivation.ACTIVATION_NONE


class _World:
    """One read of the shared state: what the pump compares with its copy."""

    def __init__(self) -> None:
        self.users: dict[int, MTUser] = {}
        self.accounts: dict[int, MTAccount] = {}
        self.positions: dict[int, MTPosition] = {}  # by ticket
        self.by_login: dict[int, dict[int, MTPosition]] = {}  # login: {ticket: position}
        self.orders: dict[int, MTOrder] = {}
        self.ticks: dict[str, MTTickShort] = {}
        self.deals: list[MTDeal] = []
        self.groups: dict[str, MTConGroup] = {}
        self.symbols: dict[str, sql.Symbol] = {}  # the symbols' configuration (PUMP_MODE_SYMBOLS)
        self.last_deal = 0
        self.recent_deals: set[int] = set()  # the deal tickets of the overlap window, seen already
        self.account_ids: set[int] = set()  # the ids of the server's accounts read (SimAccount.id)
        self.foreign_ids: set[int] = set()  # ids of other servers' accounts the deals' window met
        self.since_msc = 0  # the stamp the next pump cycle reads position changes from

    def put_position(self, p: MTPosition) -> None:
        self.positions[p.Position] = p
        self.by_login.setdefault(p.Login, {})[p.Position] = p

    def drop_position(self, p: MTPosition) -> None:
        self.positions.pop(p.Position, None)
        held = self.by_login.get(p.Login)
        if held is not None:
            held.pop(p.Position, None)


class _CycleRead(NamedTuple):
    """A pump cycle's reads of the shared state (``ManagerAPI._read_cycle``)."""

    part: _World | None  # the touched accounts, read whole (None: none touched)
    touched: set[int]
    ticks: list[tuple[str, MTTickShort]]  # the symbols whose quote moved
    deals: list[tuple[int, MTDeal]]  # the deals not seen yet, by ticket
    open_orders: dict[int, MTOrder]
    symbols: list[sql.Symbol]
    started_msc: int


class _Change(NamedTuple):
    """What one cycle of the pump's process changed in the pumped copy (``SIM_MANAGER_PUMP_IN``
    process): the parent applies it to its copy, then calls the sinks with the cycle's events."""

    users: dict[int, MTUser]
    groups: dict[str, MTConGroup]
    ticks: list[tuple[str, MTTickShort]]
    orders: dict[int, MTOrder] | None  # the open orders (None: as they were)
    positions: dict[int, dict[int, MTPosition]]  # the touched logins': {login: {ticket: position}}
    accounts: dict[int, MTAccount]
    symbols: dict[str, sql.Symbol]  # the symbols whose configuration or quote changed
    symbols_whole: bool  # ``symbols`` is every symbol (one went)

    def apply(self, world: _World) -> None:
        world.users.update(self.users)
        world.groups.update(self.groups)
        for name, tick in self.ticks:
            world.ticks[name] = tick
        if self.orders is not None:
            world.orders = self.orders
        for login, now in self.positions.items():
            before = world.by_login.get(login, {})
            for ticket in before.keys() - now.keys():
                world.drop_position(before[ticket])
            for position in now.values():
                world.put_position(position)
        world.accounts.update(self.accounts)
        if self.symbols_whole:
            world.symbols = dict(self.symbols)
        else:
            world.symbols.update(self.symbols)


def _same_orders(before: dict[int, MTOrder], now: dict[int, MTOrder]) -> bool:
    return list(before) == list(now) and all(vars(before[t]) == vars(o) for t, o in now.items())


# The user-account sink's methods, by the state left and the state entered.
_LEAVE = {_EnSoActivation.ACTIVATION_MARGIN_CALL: "OnAccountMarginCallLeave",
          _EnSoActivation.ACTIVATION_STOP_OUT: "OnAccountStopOutLeave"}  # fmt: skip
_ENTER = {_EnSoActivation.ACTIVATION_MARGIN_CALL: "OnAccountMarginCallEnter",
          _EnSoActivation.ACTIVATION_STOP_OUT: "OnAccountStopOutEnter"}  # fmt: skip


def _margin_events(was: int, now: int, account: MTAccount, world: _World) -> list[tuple[Any, ...]]:
    """``IMTAccountSink`` events for a change of margin state: (account, group), as the API calls them."""
    if was == now:
        return []
    user = world.users.get(account.Login)
    group = world.groups.get(user.Group) if user is not None else None
    events: list[tuple[Any, ...]] = []
    if was in _LEAVE:
        events.append(("account", _LEAVE[_EnSoActivation(was)], account, group))
    if now in _ENTER:
        events.append(("account", _ENTER[_EnSoActivation(now)], account, group))
    return events


def _position_key(p: MTPosition) -> tuple[Any, ...]:
    """What makes a position event: trade changes, not price moves (those revalue it silently)."""
    return (p.Volume, p.PriceOpen, p.PriceSL, p.PriceTP, p.Storage, p.TimeUpdateMsc, p.Action)


def _order_key(o: MTOrder) -> tuple[Any, ...]:
    return (o.State, o.VolumeCurrent, o.PriceOrder, o.PriceSL, o.PriceTP)


def _user_key(u: MTUser) -> tuple[Any, ...]:
    return (u.Rights, u.Group, u.Leverage, u.Balance, u.Credit)


class ManagerAPI:
    """One manager connection to the simulated trade server (``MT5Manager.ManagerAPI``)."""

    EnPumpModes = _EnPumpModes

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._connected = False
        self._pump_mode = 0
        self._trade_server = DEFAULT_TRADE_SERVER
        self._world = _World()
        self._sinks: dict[str, list[Any]] = {
            k: [] for k in ("manager", "position", "deal", "order", "user", "account", "tick")
        }
        self._stop = threading.Event()
        self._pump: threading.Thread | None = None
        self._dealer: threading.Thread | None = None
        self._requests: queue.Queue[tuple[MTRequest, Any] | None] = queue.Queue()
        self._ids = itertools.count(1)
        self._generation = 0
        self._child: _PumpChild | None = None  # the pump's process (SIM_MANAGER_PUMP_IN process)
        self._remote = False  # this connection's pump is in that process

    # --- connection -------------------------------------------------------------------------------
    def Connect(self, server: str, login: int, password: str, pump_mode: int, timeout: int) -> bool:
        if not isinstance(server, str) or isinstance(login, bool) or not isinstance(login, int) or login <= 0:
            _set_error(EnMTAPIRetcode.MT_RET_ERR_PARAMS)
            return False
        name = server.partition(":")[2] if server.startswith("simulator:") else DEFAULT_TRADE_SERVER
        if faults.cut_off(None):
            _set_error(EnMTAPIRetcode.MT_RET_ERR_NETWORK, "no connection to the trade server")
            return False
        remote = str(getattr(settings, "SIM_MANAGER_PUMP_IN", "thread")) == "process"
        database = str(connection.settings_dict["NAME"])
        if remote and connection.vendor == "sqlite" and (database == ":memory:" or "mode=memory" in database):
            log.warning("SIM_MANAGER_PUMP_IN process needs a database another process can open: a thread pumps")
            remote = False
        if remote and not self._connected:
            self._join_pump()  # the last connection's pump thread reads the pipe until it ends
        with self._lock:
            if self._connected:
                _set_error(EnMTAPIRetcode.MT_RET_OK)
                return True
            self._trade_server, self._pump_mode = name, int(pump_mode)
            if remote:
                world = self._remote_connect(self._generation + 1)
                if world is None:
                    _set_error(EnMTAPIRetcode.MT_RET_ERR_NETWORK, "the simulated pump's process failed")
                    return False
                self._world = world
            else:
                self._world = self._read_world(last_deal=None)
            self._remote = remote
            self._connected = True
            self._generation += 1
            self._stop = threading.Event()
            generation = self._generation
            pump = self._pump_remote if remote else self._pump_loop
            self._pump = threading.Thread(target=pump, args=(generation,), name="sim-mgr-pump", daemon=True)
            self._dealer = threading.Thread(target=self._dealer_loop, name="sim-mgr-dealer", daemon=True)
            self._requests = queue.Queue()
            self._pump.start()
            self._dealer.start()
        _set_error(EnMTAPIRetcode.MT_RET_OK)
        return True

    def Disconnect(self) -> bool:
        self._drop(notify=False)
        for thread in (self._pump, self._dealer):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5)
        child, self._child = self._child, None
        if child is not None:
            child.end()
        return True

    def _drop(self, *, notify: bool) -> None:
        with self._lock:
            if not self._connected:
                return
            self._connected = False
            self._stop.set()
            self._requests.put(None)
            if self._remote and self._child is not None:
                self._child.send(("stop", self._generation))
        if notify:
            self._emit("manager", "OnDisconnect")

    def sim_drop_connection(self) -> None:
        """Not in the package: the link to the server broke (the sinks hear ``OnDisconnect``)."""
        self._drop(notify=True)

    def _require(self, mode: int = 0) -> bool:
        if not self._connected:
            _set_error(EnMTAPIRetcode.MT_RET_ERR_CONNECTION)
            return False
        if mode and not self._pump_mode & mode:
            _set_error(EnMTAPIRetcode.MT_RET_ERR_PARAMS, "not pumped: connect with the pump mode")
            return False
        _set_error(EnMTAPIRetcode.MT_RET_OK)
        return True

    # --- subscriptions ------------------------------------------------------------------------------
    def _subscribe(self, kind: str, sink: Any) -> bool:
        with self._lock:
            if sink not in self._sinks[kind]:
                self._sinks[kind].append(sink)
        _set_error(EnMTAPIRetcode.MT_RET_OK)
        return True

    def _unsubscribe(self, kind: str, sink: Any) -> bool:
        with self._lock:
            if sink in self._sinks[kind]:
                self._sinks[kind].remove(sink)
                return True
        _set_error(EnMTAPIRetcode.MT_RET_ERR_NOTFOUND)
        return False

    def Subscribe(self, sink: Any) -> bool:
        return self._subscribe("manager", sink)

    def Unsubscribe(self, sink: Any) -> bool:
        return self._unsubscribe("manager", sink)

    def PositionSubscribe(self, sink: Any) -> bool:
        return self._subscribe("position", sink)

    def PositionUnsubscribe(self, sink: Any) -> bool:
        return self._unsubscribe("position", sink)

    def DealSubscribe(self, sink: Any) -> bool:
        return self._subscribe("deal", sink)

    def DealUnsubscribe(self, sink: Any) -> bool:
        return self._unsubscribe("deal", sink)

    def OrderSubscribe(self, sink: Any) -> bool:
        return self._subscribe("order", sink)

    def OrderUnsubscribe(self, sink: Any) -> bool:
        return self._unsubscribe("order", sink)

    def UserSubscribe(self, sink: Any) -> bool:
        return self._subscribe("user", sink)

    def UserUnsubscribe(self, sink: Any) -> bool:
        return self._unsubscribe("user", sink)

    def UserAccountSubscribe(self, sink: Any) -> bool:
        """Margin-call and stop-out enter/leave (``IMTAccountSink``); there is no equity event."""
        return self._subscribe("account", sink)

    def UserAccountUnsubscribe(self, sink: Any) -> bool:
        return self._unsubscribe("account", sink)

    def TickSubscribe(self, sink: Any) -> bool:
        return self._subscribe("tick", sink)

    def TickUnsubscribe(self, sink: Any) -> bool:
        return self._unsubscribe("tick", sink)

    def _emit(self, kind: str, method: str, *args: Any) -> None:
        """Call ``method`` on every sink of ``kind``; a sink's exception stays in the sink's thread,
        as an exception inside a C++ callback would be swallowed by the API."""
        with self._lock:
            sinks = list(self._sinks[kind])
        for sink in sinks:
            handler = getattr(sink, method, None)
            if handler is None:
                continue
            try:
                handler(*args)
            except Exception:
                log.exception("manager sink %s.%s raised", type(sink).__name__, method)

    # --- the pump -------------------------------------------------------------------------------------
    def _pump_loop(self, generation: int) -> None:
        interval = max(int(getattr(settings, "SIM_MANAGER_PUMP_MS", 20)), 1) / 1000
        sweep = int(getattr(settings, "SIM_MANAGER_SWEEP_MS", 1000) or 0) / 1000
        stop = self._stop
        self._emit("manager", "OnConnect")
        swept = time.monotonic()
        try:
            while not stop.wait(interval):
                if faults.cut_off(None):
                    self._drop(notify=True)
                    return
                full = bool(sweep) and time.monotonic() - swept >= sweep
                if full:
                    swept = time.monotonic()
                if not self._pump_cycle(generation, full=full):
                    return
        except Exception:
            log.exception("the simulated manager's pump failed: the connection drops")
            self._drop(notify=True)
        finally:
            close_old_connections()
            connection.close()

    # --- the pump in a process of its own (SIM_MANAGER_PUMP_IN process) -----------------------------
    def _join_pump(self) -> None:
        pump = self._pump
        if pump is not None and pump is not threading.current_thread():
            pump.join(timeout=30)

    def _remote_connect(self, generation: int) -> _World | None:
        """The pump's process (started on first use) connects and reads the copy: returned whole.
        What it sent for an earlier connection and nobody read is passed over."""
        child = self._child
        if child is None or not child.alive():
            if child is not None:
                child.end()
            child = self._child = _PumpChild.start()
        interval = max(int(getattr(settings, "SIM_MANAGER_PUMP_MS", 20)), 1) / 1000
        sweep = int(getattr(settings, "SIM_MANAGER_SWEEP_MS", 1000) or 0) / 1000
        simulator = {name: getattr(settings, name) for name in dir(settings) if name.startswith("SIM_")}
        if not child.send(("connect", generation, self._trade_server, interval, sweep, simulator)):
            return None
        while True:
            message = child.recv()
            if message is None:
                return None
            if message[1] == generation and message[0] == "world":
                world: _World = message[2]
                return world
            if message[1] == generation and message[0] == "error":
                log.error("the simulated pump's process could not read the server: %s", message[2])
                return None

    def _pump_remote(self, generation: int) -> None:
        """The pump thread when the pump's process reads and compares: each cycle's changes are
        applied to the copy and its events told to the sinks, on this thread, as they come."""
        child = self._child
        assert child is not None
        self._emit("manager", "OnConnect")
        while True:
            message = child.recv()
            if message is None:
                log.error("the simulated pump's process is gone: the connection drops")
                self._drop(notify=True)
                return
            kind = message[0]
            if message[1] != generation or kind == "stopped":
                return
            if kind == "cycle":
                if not self._remote_cycle(generation, message[2], message[3], message[4]):
                    return
            elif kind == "cut":
                self._drop(notify=True)
                return
            else:  # "failed": the cycle raised in the pump's process (logged there)
                log.error("the simulated manager's pump failed: the connection drops")
                self._drop(notify=True)
                return

    def _remote_cycle(self, generation: int, change: _Change, events: list[tuple[Any, ...]], cycle_ms: float) -> bool:
        """One cycle the pump's process made (``cycle_ms`` its wall time there): put in the copy,
        told to the sinks. False when the connection went meanwhile."""
        with self._lock:
            if generation != self._generation or not self._connected:
                return False
            change.apply(self._world)
        for kind, method, *args in events:
            self._emit(kind, method, *args)
        return True

    def _step(self, world: _World, *, full: bool) -> tuple[_Change, list[tuple[Any, ...]]] | None:
        """In the pump's process: one cycle against its own copy; what changed in the copy and
        the events, or None when nothing did."""
        read = self._read_cycle(world, full=full)
        orders, symbols = world.orders, world.symbols
        events = self._apply(world, read)
        part, touched = read.part, read.touched
        moved = {name: symbol for name, symbol in world.symbols.items() if symbols.get(name) != symbol}
        whole = symbols.keys() != world.symbols.keys()
        change = _Change(
            users=dict(part.users) if part is not None else {},
            groups=dict(part.groups) if part is not None else {},
            ticks=read.ticks,
            orders=None if _same_orders(orders, world.orders) else world.orders,
            positions={login: part.by_login.get(login, {}) for login in touched} if part is not None else {},
            accounts={x: part.accounts[x] for x in touched if x in part.accounts} if part is not None else {},
            symbols=world.symbols if whole else moved,
            symbols_whole=whole,
        )
        quiet = not (events or change.users or change.ticks or change.positions or change.symbols)
        return None if quiet and change.orders is None else (change, events)

    def _pump_cycle(self, generation: int, *, full: bool = False) -> bool:
        """One cycle: what changed since the last, read incrementally, applied to the copy and
        told to the sinks. False when the connection went meanwhile.

        Read each cycle: the quotes (ticks), the deals after the last seen, the positions whose
        ``time_update_msc`` moved (an index), the open orders. The accounts touched by any of
        those (and, with ``full``, every account: the users sweep) are then read whole, as a
        ``*Request*`` would, and compared with the copy: users, positions added, changed and
        gone, margin-call and stop-out states."""
        world = self._world
        read = self._read_cycle(world, full=full)
        with self._lock:
            if generation != self._generation or not self._connected:
                return False
            events = self._apply(world, read)
        for kind, method, *args in events:
            self._emit(kind, method, *args)
        return True

    def _read_cycle(self, world: _World, *, full: bool) -> _CycleRead:
        """A pump cycle's reads (see ``_pump_cycle``), in one snapshot of the shared state."""
        # One snapshot for every read of the cycle: a trade's deal and position are seen together.
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cycle_started = now_msc()
            offset = server_offset_msc()
            mine = SimAccount.objects.filter(server=self._trade_server)
            ticks: list[tuple[str, MTTickShort]] = []
            symbols = read_symbols()
            for symbol in symbols:
                stamp = server_msc(symbol.price_time_msc, offset)
                before = world.ticks.get(symbol.name)
                if before is None or before.datetime_msc != stamp:
                    tick = MTTickShort(
                        bid=float(symbol.bid), ask=float(symbol.ask), datetime=stamp // 1000, datetime_msc=stamp
                    )
                    ticks.append((symbol.name, tick))
            # Deals: a ticket taken by a transaction that commits after a later one would be passed
            # over by "after the last seen": the window reaches back DEAL_OVERLAP tickets. The
            # window's tickets and accounts first (every server's: tickets are global), the rows of
            # this server's not seen yet only (most cycles: none).
            window = list(
                SimDeal.objects.filter(ticket__gt=world.last_deal - DEAL_OVERLAP).values_list("ticket", "account_id")
            )
            unknown = {a for _, a in window if a not in world.account_ids and a not in world.foreign_ids}
            if unknown:
                found = set(mine.filter(id__in=unknown).values_list("id", flat=True))
                world.account_ids |= found
                world.foreign_ids |= unknown - found
            unseen = [t for t, a in window if a in world.account_ids and t not in world.recent_deals]
            fresh_deals = (
                list(SimDeal.objects.filter(ticket__in=unseen).select_related("account").order_by("ticket"))
                if unseen
                else []
            )
            touched = {d.account.login for d in fresh_deals}
            # Positions: the same for stamps taken before a slow commit (POSITION_OVERLAP_MS).
            changed = SimPosition.objects.filter(
                account__server=self._trade_server, time_update_msc__gte=world.since_msc - POSITION_OVERLAP_MS
            ).values_list("account__login", flat=True)
            touched.update(changed)
            open_orders = {
                o.ticket: self._order(o, o.account.login, offset)
                for o in SimOrder.objects.filter(account__server=self._trade_server, is_open=True)
                .select_related("symbol", "account")
                .order_by("time_setup_msc", "ticket")
            }
            if full:
                touched.update(mine.values_list("login", flat=True))
            part = self._read_world(last_deal=None, logins=touched) if touched else None
        deals = [(d.ticket, self._deal(d, d.account.login, offset)) for d in fresh_deals]
        return _CycleRead(part, touched, ticks, deals, open_orders, symbols, cycle_started)

    @staticmethod
    def _apply(world: _World, read: _CycleRead) -> list[tuple[Any, ...]]:
        """Put a cycle's reads in the copy; the events, in the API's order (users, ticks, orders,
        deals, positions, then margin states)."""
        part, touched, ticks, open_orders = read.part, read.touched, read.ticks, read.open_orders
        world.symbols = {symbol.name: symbol for symbol in read.symbols}
        world.since_msc = read.started_msc
        events: list[tuple[Any, ...]] = []
        margin: list[tuple[Any, ...]] = []
        if part is not None:
            for login, user in part.users.items():
                before_user = world.users.get(login)
                world.users[login] = user
                if before_user is not None and _user_key(before_user) != _user_key(user):
                    events.append(("user", "OnUserUpdate", user))
            world.groups.update(part.groups)
            world.account_ids |= part.account_ids
        for name, tick in ticks:
            world.ticks[name] = tick
            events.append(("tick", "OnTick", name, tick))
        for ticket, order in open_orders.items():
            before_order = world.orders.get(ticket)
            if before_order is None:
                events.append(("order", "OnOrderAdd", order))
            elif _order_key(before_order) != _order_key(order):
                events.append(("order", "OnOrderUpdate", order))
        for ticket in world.orders.keys() - open_orders.keys():
            events.append(("order", "OnOrderDelete", world.orders[ticket]))
        world.orders = open_orders
        for ticket, deal in read.deals:
            events.append(("deal", "OnDealAdd", deal))
            world.recent_deals.add(ticket)
            world.last_deal = max(world.last_deal, ticket)
        if len(world.recent_deals) > 4 * DEAL_OVERLAP:
            world.recent_deals = {t for t in world.recent_deals if t > world.last_deal - DEAL_OVERLAP}
        if part is None:
            return events
        for login in touched:
            now = part.by_login.get(login, {})
            before = world.by_login.get(login, {})
            for ticket, position in now.items():
                before_position = before.get(ticket)
                if before_position is None:
                    events.append(("position", "OnPositionAdd", position))
                elif _position_key(before_position) != _position_key(position):
                    events.append(("position", "OnPositionUpdate", position))
            for ticket in before.keys() - now.keys():
                events.append(("position", "OnPositionDelete", before[ticket]))
                world.drop_position(before[ticket])
            for position in now.values():
                world.put_position(position)
            account = part.accounts.get(login)
            if account is None:
                continue
            before_account = world.accounts.get(login)
            world.accounts[login] = account
            was = before_account.SOActivation if before_account is not None else _EnSoActivation.ACTIVATION_NONE
            margin.extend(_margin_events(int(was), int(account.SOActivation), account, part))
        return events + margin

    # --- reading the shared state ----------------------------------------------------------------------
    def _read_world(self, *, last_deal: int | None, logins: Iterable[int] | None = None) -> _World:
        """The pumped part of the shared state, valued at the current quotes. ``last_deal``: the
        highest deal ticket seen (None: none wanted, note the highest only)."""
        world = _World()
        world.since_msc = now_msc()
        offset = server_offset_msc()
        accounts = SimAccount.objects.filter(server=self._trade_server)
        if logins is not None:
            accounts = accounts.filter(login__in=list(logins))
        rows = [sql.AccountRow(*v) for v in accounts.values_list(*sql.AccountRow._fields)]
        ids = {row.id: row for row in rows}
        world.account_ids = set(ids)
        by_account: dict[int, list[sql.PositionRow]] = {pk: [] for pk in ids}
        sql.bulk_position_rows(
            sql.any_of(SimPosition.objects.all(), "account_id", list(ids)).order_by("time_msc", "ticket"), by_account
        )
        symbols = read_symbols()
        quotes = Valuation.quotes(symbols)
        world.symbols = {s.name: s for s in symbols}
        for s in symbols:
            stamp = server_msc(s.price_time_msc, offset)
            world.ticks[s.name] = MTTickShort(
                bid=float(s.bid), ask=float(s.ask), datetime=stamp // 1000, datetime_msc=stamp
            )
        for row in rows:
            valuation = Valuation(row.currency, row.currency_digits, row.leverage)
            floating = storage = margin = Decimal(0)
            for p in by_account[row.id]:
                current, value = valuation.value(p, quotes)
                floating += value
                storage += p.swap
                margin += valuation.margin(p.symbol, p.volume, current, quotes)
                opened, updated = server_msc(p.time_msc, offset), server_msc(p.time_update_msc, offset)
                world.put_position(MTPosition(
                    Position=p.ticket, Login=row.login, Symbol=p.symbol.name, Action=p.type,
                    Volume=_units(p.volume), VolumeExt=int(p.volume * 10**8), PriceOpen=float(p.price_open),
                    PriceCurrent=float(current), PriceSL=float(p.sl), PriceTP=float(p.tp), Profit=float(value),
                    Storage=float(p.swap), ContractSize=float(p.symbol.trade_contract_size), ExpertID=p.magic,
                    Comment=p.comment, Reason=p.reason, TimeCreate=opened // 1000, TimeCreateMsc=opened,
                    TimeUpdate=updated // 1000, TimeUpdateMsc=updated,
                ))  # fmt: skip
            equity = row.balance + row.credit + floating + storage
            rights = _EnUsersRights.USER_RIGHT_ENABLED | _EnUsersRights.USER_RIGHT_PASSWORD
            rights |= _EnUsersRights.USER_RIGHT_TRAILING | _EnUsersRights.USER_RIGHT_REPORTS
            if row.trade_expert:
                rights |= _EnUsersRights.USER_RIGHT_EXPERT
            if not row.trade_allowed:
                rights |= _EnUsersRights.USER_RIGHT_TRADE_DISABLED
            world.users[row.login] = MTUser(
                Login=row.login, Group=group_of(row.currency, row.margin_mode), Name=row.name, Rights=int(rights),
                Leverage=row.leverage,
                Balance=float(row.balance), Credit=float(row.credit),
            )  # fmt: skip
            world.groups.setdefault(
                group_of(row.currency, row.margin_mode),
                MTConGroup(
                    Group=group_of(row.currency, row.margin_mode), Currency=row.currency,
                    CurrencyDigits=row.currency_digits,
                    MarginMode=MARGIN_MODE_RETAIL_HEDGED
                    if row.margin_mode == c.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING else MARGIN_MODE_RETAIL,
                ),
            )  # fmt: skip
            world.accounts[row.login] = MTAccount(
                Login=row.login, CurrencyDigits=row.currency_digits, Balance=float(row.balance),
                Credit=float(row.credit), Equity=float(equity), Floating=float(floating + storage),
                Profit=float(floating), Storage=float(storage), Margin=float(margin),
                MarginFree=float(equity - margin), MarginLevel=float(equity / margin * 100) if margin else 0.0,
                MarginLeverage=row.leverage, SOLevel=float(row.margin_so_so),
                SOActivation=_activation(equity, margin, row.margin_so_call, row.margin_so_so),
            )  # fmt: skip
        login_of = {row.id: row.login for row in rows}
        open_orders = sql.any_of(SimOrder.objects.filter(is_open=True), "account_id", list(ids))
        for o in open_orders.select_related("symbol").order_by("time_setup_msc", "ticket"):
            world.orders[o.ticket] = self._order(o, login_of[o.account_id], offset)
        deals = sql.any_of(SimDeal.objects.all(), "account_id", list(ids))
        if last_deal is None:
            world.last_deal = deals.order_by("-ticket").values_list("ticket", flat=True).first() or 0
            if logins is None:  # a connect: the pump's overlap window starts with what is there
                world.recent_deals = set(
                    SimDeal.objects.filter(
                        account__server=self._trade_server, ticket__gt=world.last_deal - DEAL_OVERLAP
                    ).values_list("ticket", flat=True)
                )
        else:
            world.deals = [self._deal(d, login_of[d.account_id], offset) for d in
                           deals.filter(ticket__gt=last_deal).order_by("ticket")]  # fmt: skip
            world.last_deal = world.deals[-1].Deal if world.deals else last_deal
        return world

    @staticmethod
    def _order(o: SimOrder, login: int, offset: int) -> MTOrder:
        current = (
            o.symbol.ask
            if o.type in (c.ORDER_TYPE_BUY, c.ORDER_TYPE_BUY_LIMIT, c.ORDER_TYPE_BUY_STOP)
            else o.symbol.bid
        )
        return MTOrder(
            Order=o.ticket, Login=login, Symbol=o.symbol.name, Type=o.type, State=o.state,
            VolumeInitial=_units(o.volume_initial), VolumeCurrent=_units(o.volume_current),
            PriceOrder=float(o.price_open), PriceCurrent=float(current) if o.is_open else float(o.price_open),
            PriceSL=float(o.sl), PriceTP=float(o.tp), ExpertID=o.magic, Comment=o.comment,
            PositionID=o.position_id, Reason=o.reason, TimeSetupMsc=server_msc(o.time_setup_msc, offset),
            TimeDoneMsc=server_msc(o.time_done_msc, offset), TypeFill=o.type_filling,
        )  # fmt: skip

    @staticmethod
    def _deal(d: SimDeal, login: int, offset: int) -> MTDeal:
        stamp = server_msc(d.time_msc, offset)
        return MTDeal(
            Deal=d.ticket, Login=login, Order=d.order, PositionID=d.position_id, Symbol=d.symbol, Action=d.type,
            Entry=d.entry, Volume=_units(d.volume), VolumeExt=int(d.volume * 10**8), Price=float(d.price),
            Profit=float(d.profit), Commission=float(d.commission), Storage=float(d.swap), Fee=float(d.fee),
            ExpertID=d.magic, Comment=d.comment, Reason=MANAGER_DEAL_REASON.get(d.reason, d.reason),
            Time=stamp // 1000, TimeMsc=stamp,
        )  # fmt: skip

    @staticmethod
    def _round_trip() -> None:
        """What a call to the server costs: ``SIM_CALL_MS`` (the terminals' cost model, when set)."""
        cost = float(getattr(settings, "SIM_CALL_MS", 0) or 0)
        if cost > 0:
            time.sleep(cost / 1000)

    def _request(self, logins: Iterable[int] | None) -> _World | None:
        """A ``*Request*`` call: the shared state now, one round trip."""
        if not self._require():
            return None
        self._round_trip()
        if faults.cut_off(None):
            _set_error(EnMTAPIRetcode.MT_RET_ERR_NETWORK)
            return None
        return self._read_world(last_deal=None, logins=logins)

    # --- users and accounts ---------------------------------------------------------------------------------
    def UserGet(self, login: int) -> MTUser | None:
        if not self._require(_EnPumpModes.PUMP_MODE_USERS):
            return None
        user = self._world.users.get(login)
        if user is None:
            _set_error(EnMTAPIRetcode.MT_RET_ERR_NOTFOUND)
            return None
        return user._copy()

    def UserRequest(self, login: int) -> MTUser | None:
        world = self._request([login])
        if world is None:
            return None
        if login not in world.users:
            _set_error(EnMTAPIRetcode.MT_RET_ERR_NOTFOUND)
            return None
        return world.users[login]

    def UserGetByLogins(self, logins: list[int]) -> list[MTUser] | None:
        if not self._require(_EnPumpModes.PUMP_MODE_USERS):
            return None
        world = self._world
        return [world.users[login]._copy() for login in logins if login in world.users]

    def UserLogins(self, group: str) -> list[int] | None:
        if not self._require(_EnPumpModes.PUMP_MODE_USERS):
            return None
        return sorted(login for login, user in self._world.users.items() if group_matches(user.Group, group))

    def UserUpdate(self, user: MTUser) -> bool:
        """Write the user's rights to the server: trade (``USER_RIGHT_TRADE_DISABLED``) and Expert."""
        if not self._require():
            return False
        if faults.cut_off(None):
            _set_error(EnMTAPIRetcode.MT_RET_ERR_NETWORK)
            return False
        rights = int(user.Rights)
        updated = SimAccount.objects.filter(server=self._trade_server, login=user.Login).update(
            trade_allowed=not rights & _EnUsersRights.USER_RIGHT_TRADE_DISABLED,
            trade_expert=bool(rights & _EnUsersRights.USER_RIGHT_EXPERT),
        )
        if not updated:
            _set_error(EnMTAPIRetcode.MT_RET_ERR_NOTFOUND)
            return False
        return True

    def UserAccountGet(self, login: int) -> MTAccount | None:
        if not self._require(_EnPumpModes.PUMP_MODE_USERS | _EnPumpModes.PUMP_MODE_POSITIONS):
            return None
        account = self._world.accounts.get(login)
        if account is None:
            _set_error(EnMTAPIRetcode.MT_RET_ERR_NOTFOUND)
        return account

    def UserAccountGetByLogins(self, logins: list[int]) -> list[MTAccount] | None:
        if not self._require(_EnPumpModes.PUMP_MODE_USERS | _EnPumpModes.PUMP_MODE_POSITIONS):
            return None
        world = self._world
        return [world.accounts[login] for login in logins if login in world.accounts]

    def UserAccountRequest(self, login: int) -> MTAccount | None:
        world = self._request([login])
        if world is None:
            return None
        if login not in world.accounts:
            _set_error(EnMTAPIRetcode.MT_RET_ERR_NOTFOUND)
            return None
        return world.accounts[login]

    def UserAccountRequestByLogins(self, logins: list[int]) -> list[MTAccount] | None:
        world = self._request(logins)
        return None if world is None else [world.accounts[x] for x in logins if x in world.accounts]

    # --- positions and orders -------------------------------------------------------------------------------
    def _pumped_positions(self, logins: Iterable[int]) -> list[MTPosition] | None:
        if not self._require(_EnPumpModes.PUMP_MODE_POSITIONS):
            return None
        by_login = self._world.by_login
        return [p for login in dict.fromkeys(logins) for p in by_login.get(login, {}).values()]

    def PositionGet(self, login: int) -> list[MTPosition] | None:
        return self._pumped_positions([login])

    def PositionGetByLogins(self, logins: list[int]) -> list[MTPosition] | None:
        return self._pumped_positions(logins)

    def PositionRequest(self, login: int) -> list[MTPosition] | None:
        return self.PositionRequestByLogins([login])

    def PositionRequestByLogins(self, logins: list[int]) -> list[MTPosition] | None:
        world = self._request(logins)
        return None if world is None else list(world.positions.values())

    def OrderGetByLogins(self, logins: list[int]) -> list[MTOrder] | None:
        if not self._require(_EnPumpModes.PUMP_MODE_ORDERS):
            return None
        wanted = set(logins)
        return [o for o in self._world.orders.values() if o.Login in wanted]

    def OrderGetOpen(self, login: int) -> list[MTOrder] | None:
        return self.OrderGetByLogins([login])

    def OrderRequestByLogins(self, logins: list[int]) -> list[MTOrder] | None:
        world = self._request(logins)
        return None if world is None else list(world.orders.values())

    def OrderRequestOpen(self, login: int) -> list[MTOrder] | None:
        return self.OrderRequestByLogins([login])

    # --- history --------------------------------------------------------------------------------------------
    def _account_id(self, login: int) -> int | None:
        return SimAccount.objects.filter(server=self._trade_server, login=login).values_list("id", flat=True).first()

    def _window(self, from_date: int, to_date: int) -> tuple[int, int]:
        """Server-time seconds, as the API takes them, into the stored UTC milliseconds."""
        offset = server_offset_msc()
        return int(from_date) * 1000 - offset, int(to_date) * 1000 + 999 - offset

    def DealRequest(self, login: int, from_date: int, to_date: int) -> list[MTDeal] | None:
        if self._request([]) is None:
            return None
        account_id = self._account_id(login)
        if account_id is None:
            _set_error(EnMTAPIRetcode.MT_RET_ERR_NOTFOUND)
            return None
        since, until = self._window(from_date, to_date)
        offset = server_offset_msc()
        rows = SimDeal.objects.filter(account_id=account_id, time_msc__gte=since, time_msc__lte=until)
        return [self._deal(d, login, offset) for d in rows.order_by("time_msc", "ticket")]

    def DealRequestByLogins(self, logins: list[int], from_date: int, to_date: int) -> list[MTDeal] | None:
        if self._request([]) is None:
            return None
        accounts = dict(
            SimAccount.objects.filter(server=self._trade_server, login__in=list(logins)).values_list("id", "login")
        )
        since, until = self._window(from_date, to_date)
        offset = server_offset_msc()
        rows = sql.any_of(SimDeal.objects.all(), "account_id", list(accounts)).filter(
            time_msc__gte=since, time_msc__lte=until
        )
        return [self._deal(d, accounts[d.account_id], offset) for d in rows.order_by("time_msc", "ticket")]

    def HistoryRequest(self, login: int, from_date: int, to_date: int) -> list[MTOrder] | None:
        """The account's finished orders set up in the window (server-time seconds)."""
        if self._request([]) is None:
            return None
        account_id = self._account_id(login)
        if account_id is None:
            _set_error(EnMTAPIRetcode.MT_RET_ERR_NOTFOUND)
            return None
        since, until = self._window(from_date, to_date)
        offset = server_offset_msc()
        rows = SimOrder.objects.filter(
            account_id=account_id, is_open=False, time_setup_msc__gte=since, time_setup_msc__lte=until
        )
        return [self._order(o, login, offset) for o in rows.select_related("symbol").order_by("time_setup_msc")]

    def GroupGet(self, name: str) -> MTConGroup | None:
        if not self._require(_EnPumpModes.PUMP_MODE_GROUPS):
            return None
        group = self._world.groups.get(name)
        if group is None:
            _set_error(EnMTAPIRetcode.MT_RET_ERR_NOTFOUND)
        return group

    # --- symbols, quotes, time ------------------------------------------------------------------------------
    def SymbolGet(self, name: str) -> MTConSymbol | None:
        """The symbol's configuration from the pumped copy (as of the pump's last cycle)."""
        if not self._require(_EnPumpModes.PUMP_MODE_SYMBOLS):
            return None
        s = self._world.symbols.get(name)
        if s is None:
            _set_error(EnMTAPIRetcode.MT_RET_ERR_NOTFOUND)
            return None
        return MTConSymbol(
            Symbol=s.name, Digits=s.digits, Point=float(s.point), ContractSize=float(s.trade_contract_size),
            VolumeMin=_units(s.volume_min), VolumeMax=_units(s.volume_max), VolumeStep=_units(s.volume_step),
            FillFlags=s.filling_mode & (c.SYMBOL_FILLING_FOK | c.SYMBOL_FILLING_IOC), ExecMode=s.trade_exemode,
            TradeMode=s.trade_mode, StopsLevel=s.trade_stops_level, CurrencyBase=s.currency_base,
            CurrencyProfit=s.currency_profit, CurrencyMargin=s.currency_margin, Description=s.description,
            TickSize=float(s.point), TickValue=float(s.trade_contract_size * s.point),
        )  # fmt: skip

    def TickLast(self, symbol: str) -> MTTickShort | None:
        if not self._require():
            return None
        tick = self._world.ticks.get(symbol)
        if tick is None:
            _set_error(EnMTAPIRetcode.MT_RET_ERR_NOTFOUND)
        return tick

    def TimeServer(self) -> int | None:
        """The trade server's wall clock, in seconds."""
        if not self._require():
            return None
        return (faults.clock() + server_offset_msc()) // 1000

    # --- dealing --------------------------------------------------------------------------------------------
    def DealerSend(self, request: MTRequest, sink: Any) -> int | bool:
        """Queue ``request``; its answer comes through ``sink.OnDealerAnswer``. Returns its id."""
        if not isinstance(request, MTRequest):
            _set_error(EnMTAPIRetcode.MT_RET_ERR_PARAMS)
            return False
        with self._lock:
            if not self._require():
                return False
            queued = request._copy()
            queued.ID = request.ID = next(self._ids)
            self._requests.put((queued, sink))
        return int(queued.ID)

    def _dealer_loop(self) -> None:
        requests = self._requests
        try:
            while True:
                item = requests.get()
                if item is None or not self._connected:
                    return
                answer, sink = item
                if faults.cut_off(None):
                    self._drop(notify=True)
                    return
                self._round_trip()
                try:
                    outcome = self._execute(answer)
                except Exception as exc:
                    log.exception("dealer request %s failed", answer.ID)
                    outcome = Outcome(c.TRADE_RETCODE_ERROR, f"{type(exc).__name__}")
                if outcome.connection_lost:
                    # The request never reached the server, and the link went with it.
                    self._drop(notify=True)
                    return
                if outcome.timed_out:
                    continue  # executed; its answer is lost
                answer.ResultRetcode, answer.ResultComment = outcome.retcode, outcome.comment
                answer.ResultDeal, answer.ResultOrder = outcome.deal, outcome.order
                answer.ResultVolume = _units(Decimal(repr(outcome.volume)))
                answer.ResultPrice = outcome.price
                handler: Callable[[MTRequest], None] | None = getattr(sink, "OnDealerAnswer", None)
                if handler is not None:
                    try:
                        handler(answer)
                    except Exception:
                        log.exception("dealer sink raised")
        finally:
            close_old_connections()
            connection.close()

    def _execute(self, r: MTRequest) -> Outcome:
        """A dealer request on the trade server, from the dealer's seat."""
        account = SimAccount.objects.filter(server=self._trade_server, login=r.Login).first()
        if account is None:
            return Outcome(c.TRADE_RETCODE_INVALID, "Account not found")
        req = Request(comment=str(r.Comment)[:31], volume=int(r.Volume) / VOLUME_UNITS, symbol=str(r.Symbol))
        market = bool(int(r.Flags) & _EnTradeActionFlags.TA_FLAG_MARKET)
        action = int(r.Action)
        if action == _EnTradeActions.TA_DEALER_POS_EXECUTE:
            req.action, req.type, req.position = c.TRADE_ACTION_DEAL, int(r.Type), int(r.Position)
            req.sl, req.tp = float(r.PriceSL), float(r.PriceTP)
            symbols = read_symbols(name=req.symbol)
            if not symbols:
                return Outcome(c.TRADE_RETCODE_INVALID, "Unknown symbol")
            symbol = symbols[0]
            is_buy = req.type == c.ORDER_TYPE_BUY
            market_price = float(symbol.ask if is_buy else symbol.bid)
            if market:
                req.price, req.deviation = market_price, 0
            elif float(r.PriceOrder) <= 0:
                return Outcome(c.TRADE_RETCODE_INVALID_PRICE)
            else:
                req.price, req.deviation = float(r.PriceOrder), int(r.PriceDeviation)
            req.type_filling = int(r.TypeFill) if r.TypeFill else filling_for(symbol)
        elif action == _EnTradeActions.TA_DEALER_POS_MODIFY:
            req.action, req.position = c.TRADE_ACTION_SLTP, int(r.Position)
            req.sl, req.tp = float(r.PriceSL), float(r.PriceTP)
        elif action == _EnTradeActions.TA_DEALER_ORD_PENDING:
            req.action, req.type, req.price = c.TRADE_ACTION_PENDING, int(r.Type), float(r.PriceOrder)
            req.sl, req.tp, req.type_filling = float(r.PriceSL), float(r.PriceTP), int(r.TypeFill)
        elif action == _EnTradeActions.TA_DEALER_ORD_REMOVE:
            req.action, req.order = c.TRADE_ACTION_REMOVE, int(r.Order)
        else:
            return Outcome(c.TRADE_RETCODE_INVALID, "Unsupported dealer action")
        valuation = Valuation(account.currency, account.currency_digits, account.leverage)
        server = TradeServer(account.pk, valuation, reason=c.ORDER_REASON_CLIENT, dealer=True)
        with transaction.atomic():
            return server.execute(req, dry_run=False)


# --- the pump's process (SIM_MANAGER_PUMP_IN process) ----------------------------------------------
class _PumpChild:
    """The parent's end of the pump's process: a spawned interpreter on the same database, one
    pipe both ways (commands in, the copy and each cycle's changes and events out)."""

    def __init__(self, process: Any, pipe: Any) -> None:
        self.process, self.pipe = process, pipe
        self._sending = threading.Lock()

    @classmethod
    def start(cls) -> _PumpChild:
        import multiprocessing
        import os

        from execution.simulator import pump

        spawn = multiprocessing.get_context("spawn")
        mine, theirs = spawn.Pipe()
        module = os.environ.get("DJANGO_SETTINGS_MODULE") or settings.SETTINGS_MODULE
        process = spawn.Process(
            target=pump.main, args=(theirs, module, dict(connection.settings_dict)), name="sim-mgr-pump", daemon=True
        )
        process.start()
        theirs.close()
        return cls(process, mine)

    def alive(self) -> bool:
        return bool(self.process.is_alive())

    def send(self, message: tuple[Any, ...]) -> bool:
        try:
            with self._sending:
                self.pipe.send(message)
        except (OSError, ValueError):
            return False
        return True

    def recv(self) -> Any:
        """The next message, or None when the process is gone."""
        try:
            return self.pipe.recv()
        except (EOFError, OSError):
            return None

    def end(self) -> None:
        self.send(("exit",))
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.pipe.close()


def serve_pump(pipe: Any) -> None:
    """The pump's process (``execution.simulator.pump``): on ``connect`` it reads the copy and
    sends it whole, then every interval runs a cycle against its own copy (the reads, the
    comparison) and sends what changed with the events, until ``stop``; it ends on ``exit`` or
    when the parent is gone. The outage check is its too: ``cut`` drops the connection."""
    api = ManagerAPI()
    world = _World()
    generation, pumping, interval, sweep, swept = 0, False, 0.02, 0.0, 0.0
    try:
        while True:
            if pipe.poll(interval if pumping else None):
                command = pipe.recv()
                if command[0] == "exit":
                    return
                if command[0] == "stop":
                    pumping = False
                    pipe.send(("stopped", command[1]))
                    close_old_connections()
                    connection.close()
                    continue
                _, generation, api._trade_server, interval, sweep, simulator = command
                for name, value in simulator.items():
                    setattr(settings, name, value)
                try:
                    world = api._read_world(last_deal=None)
                except Exception as exc:
                    log.exception("the simulated pump's process could not read the server")
                    pipe.send(("error", generation, f"{type(exc).__name__}: {exc}"))
                    continue
                pipe.send(("world", generation, world))
                pumping, swept = True, time.monotonic()
                continue
            try:
                if faults.cut_off(None):
                    pumping = False
                    pipe.send(("cut", generation))
                    continue
                full = bool(sweep) and time.monotonic() - swept >= sweep
                if full:
                    swept = time.monotonic()
                started = time.perf_counter()
                step = api._step(world, full=full)
                cycle_ms = (time.perf_counter() - started) * 1000
            except Exception:
                log.exception("the simulated manager's pump failed: the connection drops")
                pumping = False
                pipe.send(("failed", generation))
                continue
            if step is not None:
                pipe.send(("cycle", generation, step[0], step[1], cycle_ms))
    except (EOFError, OSError):
        return  # the parent is gone
    finally:
        connection.close()
