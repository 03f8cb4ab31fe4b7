"""The one MT5 gateway interface the bridge calls, its normalised results and the retcode table.

Every backend (the official module, mt5linux, the simulator through the official adapter,
the Manager API seam) implements ``Gateway``. Results are frozen dataclasses with Decimal
money and prices and UTC datetimes; the MT5-shaped floats stay inside the adapters.

A terminal holds one logged-in account, so every call names the account (``login``,
``server``) and the adapter switches to it. Trade calls raise ``GatewayUnavailable`` only
when nothing was sent; once ``order_send`` has been called they always return a
``TradeResult``, whose ``maybe_executed`` says the order may exist although the answer was
lost: reconcile by tag before any retry.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from execution.simulator import constants as c

Outcome = Literal["done", "retry", "final"]
Side = Literal["buy", "sell"]

DONE: Outcome = "done"
RETRY: Outcome = "retry"
FINAL: Outcome = "final"

# MT5 keeps 31 characters of an order comment.
COMMENT_LIMIT = 31
TAG_PREFIX = "b:"
TAG_HASHED_PREFIX = "b#"


class GatewayUnavailable(Exception):
    """The terminal (or the backend) cannot be reached, even after one reconnect attempt."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code  # the last_error() code behind it, when there is one


# --- the retcode table ------------------------------------------------------------------------
@dataclass(frozen=True)
class RetcodeInfo:
    code: int
    name: str
    outcome: Outcome
    message: str


def _table(*rows: tuple[int, str, Outcome, str]) -> dict[int, RetcodeInfo]:
    return {code: RetcodeInfo(code, name, outcome, message) for code, name, outcome, message in rows}


# Every trade server retcode and every last_error() code, classified once.
# done: the request took effect. retry: transient, the same request may succeed within the
# command's deadline (market closed included: RISK_RULES retries a failed protective close on
# market closed / requote / no connection). final: retrying the same request cannot help.
RETCODES: dict[int, RetcodeInfo] = _table(
    (c.TRADE_RETCODE_PLACED, "TRADE_RETCODE_PLACED", DONE, "Order placed"),
    (c.TRADE_RETCODE_DONE, "TRADE_RETCODE_DONE", DONE, "Request completed"),
    (c.TRADE_RETCODE_DONE_PARTIAL, "TRADE_RETCODE_DONE_PARTIAL", DONE, "Only part of the request was completed"),
    # The state asked for is already there (a modify retried after a lost answer).
    (c.TRADE_RETCODE_NO_CHANGES, "TRADE_RETCODE_NO_CHANGES", DONE, "No changes in request"),
    (c.TRADE_RETCODE_REQUOTE, "TRADE_RETCODE_REQUOTE", RETRY, "Requote"),
    (c.TRADE_RETCODE_ERROR, "TRADE_RETCODE_ERROR", RETRY, "Request processing error"),
    (c.TRADE_RETCODE_TIMEOUT, "TRADE_RETCODE_TIMEOUT", RETRY, "Request canceled by timeout"),
    (c.TRADE_RETCODE_MARKET_CLOSED, "TRADE_RETCODE_MARKET_CLOSED", RETRY, "Market is closed"),
    (c.TRADE_RETCODE_PRICE_CHANGED, "TRADE_RETCODE_PRICE_CHANGED", RETRY, "Prices changed"),
    (c.TRADE_RETCODE_PRICE_OFF, "TRADE_RETCODE_PRICE_OFF", RETRY, "There are no quotes to process the request"),
    (c.TRADE_RETCODE_ORDER_CHANGED, "TRADE_RETCODE_ORDER_CHANGED", RETRY, "Order state changed"),
    (c.TRADE_RETCODE_TOO_MANY_REQUESTS, "TRADE_RETCODE_TOO_MANY_REQUESTS", RETRY, "Too frequent requests"),
    (c.TRADE_RETCODE_LOCKED, "TRADE_RETCODE_LOCKED", RETRY, "Request locked for processing"),
    (c.TRADE_RETCODE_FROZEN, "TRADE_RETCODE_FROZEN", RETRY, "Order or position frozen"),
    (c.TRADE_RETCODE_CONNECTION, "TRADE_RETCODE_CONNECTION", RETRY, "No connection with the trade server"),
    (c.TRADE_RETCODE_CLOSE_ORDER_EXIST, "TRADE_RETCODE_CLOSE_ORDER_EXIST", RETRY, "A close order already exists"),
    (c.TRADE_RETCODE_REJECT, "TRADE_RETCODE_REJECT", FINAL, "Request rejected"),
    (c.TRADE_RETCODE_CANCEL, "TRADE_RETCODE_CANCEL", FINAL, "Request canceled by trader"),
    (c.TRADE_RETCODE_INVALID, "TRADE_RETCODE_INVALID", FINAL, "Invalid request"),
    (c.TRADE_RETCODE_INVALID_VOLUME, "TRADE_RETCODE_INVALID_VOLUME", FINAL, "Invalid volume in the request"),
    (c.TRADE_RETCODE_INVALID_PRICE, "TRADE_RETCODE_INVALID_PRICE", FINAL, "Invalid price in the request"),
    (c.TRADE_RETCODE_INVALID_STOPS, "TRADE_RETCODE_INVALID_STOPS", FINAL, "Invalid stops in the request"),
    (c.TRADE_RETCODE_TRADE_DISABLED, "TRADE_RETCODE_TRADE_DISABLED", FINAL, "Trade is disabled"),
    (c.TRADE_RETCODE_NO_MONEY, "TRADE_RETCODE_NO_MONEY", FINAL, "There is not enough money to complete the request"),
    (c.TRADE_RETCODE_INVALID_EXPIRATION, "TRADE_RETCODE_INVALID_EXPIRATION", FINAL, "Invalid order expiration date"),
    (c.TRADE_RETCODE_SERVER_DISABLES_AT, "TRADE_RETCODE_SERVER_DISABLES_AT", FINAL, "Autotrading disabled by server"),
    (c.TRADE_RETCODE_CLIENT_DISABLES_AT, "TRADE_RETCODE_CLIENT_DISABLES_AT", FINAL, "Autotrading disabled by client"),
    (c.TRADE_RETCODE_INVALID_FILL, "TRADE_RETCODE_INVALID_FILL", FINAL, "Invalid order filling type"),
    (c.TRADE_RETCODE_ONLY_REAL, "TRADE_RETCODE_ONLY_REAL", FINAL, "Operation is allowed only for live accounts"),
    (c.TRADE_RETCODE_LIMIT_ORDERS, "TRADE_RETCODE_LIMIT_ORDERS", FINAL, "The number of pending orders is at the limit"),
    (c.TRADE_RETCODE_LIMIT_VOLUME, "TRADE_RETCODE_LIMIT_VOLUME", FINAL, "The symbol's volume limit is reached"),
    (c.TRADE_RETCODE_INVALID_ORDER, "TRADE_RETCODE_INVALID_ORDER", FINAL, "Incorrect or prohibited order type"),
    (c.TRADE_RETCODE_POSITION_CLOSED, "TRADE_RETCODE_POSITION_CLOSED", FINAL, "Position has already been closed"),
    (c.TRADE_RETCODE_INVALID_CLOSE_VOLUME, "TRADE_RETCODE_INVALID_CLOSE_VOLUME", FINAL, "Close volume too large"),
    (c.TRADE_RETCODE_LIMIT_POSITIONS, "TRADE_RETCODE_LIMIT_POSITIONS", FINAL, "Too many open positions"),
    (c.TRADE_RETCODE_REJECT_CANCEL, "TRADE_RETCODE_REJECT_CANCEL", FINAL, "Pending order activation rejected"),
    (c.TRADE_RETCODE_LONG_ONLY, "TRADE_RETCODE_LONG_ONLY", FINAL, "Only long positions are allowed"),
    (c.TRADE_RETCODE_SHORT_ONLY, "TRADE_RETCODE_SHORT_ONLY", FINAL, "Only short positions are allowed"),
    (c.TRADE_RETCODE_CLOSE_ONLY, "TRADE_RETCODE_CLOSE_ONLY", FINAL, "Only position closing is allowed"),
    (c.TRADE_RETCODE_FIFO_CLOSE, "TRADE_RETCODE_FIFO_CLOSE", FINAL, "Position closing is allowed only by FIFO"),
    # last_error() codes, for calls that returned None.
    (c.RES_S_OK, "RES_S_OK", DONE, "Success"),
    (c.RES_E_FAIL, "RES_E_FAIL", RETRY, "Generic fail"),
    (c.RES_E_INVALID_PARAMS, "RES_E_INVALID_PARAMS", FINAL, "Invalid arguments/parameters"),
    (c.RES_E_NO_MEMORY, "RES_E_NO_MEMORY", RETRY, "No memory condition"),
    (c.RES_E_NOT_FOUND, "RES_E_NOT_FOUND", FINAL, "No history"),
    (c.RES_E_INVALID_VERSION, "RES_E_INVALID_VERSION", FINAL, "Invalid version"),
    (c.RES_E_AUTH_FAILED, "RES_E_AUTH_FAILED", FINAL, "Authorization failed"),
    (c.RES_E_UNSUPPORTED, "RES_E_UNSUPPORTED", FINAL, "Unsupported method"),
    (c.RES_E_AUTO_TRADING_DISABLED, "RES_E_AUTO_TRADING_DISABLED", FINAL, "Auto-trading disabled"),
    (c.RES_E_INTERNAL_FAIL, "RES_E_INTERNAL_FAIL", RETRY, "Internal IPC general error"),
    (c.RES_E_INTERNAL_FAIL_SEND, "RES_E_INTERNAL_FAIL_SEND", RETRY, "Internal IPC send failed"),
    (c.RES_E_INTERNAL_FAIL_RECEIVE, "RES_E_INTERNAL_FAIL_RECEIVE", RETRY, "Internal IPC recv failed"),
    (c.RES_E_INTERNAL_FAIL_INIT, "RES_E_INTERNAL_FAIL_INIT", RETRY, "Internal IPC initialization fail"),
    (c.RES_E_INTERNAL_FAIL_CONNECT, "RES_E_INTERNAL_FAIL_CONNECT", RETRY, "No IPC connection"),
    (c.RES_E_INTERNAL_FAIL_TIMEOUT, "RES_E_INTERNAL_FAIL_TIMEOUT", RETRY, "Internal timeout"),
)

# last_error() codes that mean the link to the terminal is broken: re-initialise, then retry reads.
IPC_ERRORS = frozenset(
    {
        c.RES_E_INTERNAL_FAIL,
        c.RES_E_INTERNAL_FAIL_SEND,
        c.RES_E_INTERNAL_FAIL_RECEIVE,
        c.RES_E_INTERNAL_FAIL_INIT,
        c.RES_E_INTERNAL_FAIL_CONNECT,
        c.RES_E_INTERNAL_FAIL_TIMEOUT,
    }
)


def classify(retcode: int) -> RetcodeInfo:
    """The table's entry for ``retcode``; an unknown code is final (never retried blindly)."""
    return RETCODES.get(retcode) or RetcodeInfo(retcode, "UNKNOWN", FINAL, f"Unknown MT5 return code {retcode}")


# --- tags ---------------------------------------------------------------------------------
def order_tag(command_id: str) -> str:
    """The order comment that carries ``command_id`` within MT5's 31 characters.

    MT5 has no client order id, so the tag (with the bridge's magic) is how a retried command
    finds what an earlier attempt did. Short printable-ASCII ids are kept verbatim behind
    ``b:``; anything longer (a UUID is 36) becomes ``b#`` + 29 hex digits of its SHA-256,
    deterministic across processes and distinct from every verbatim tag.
    """
    if len(TAG_PREFIX) + len(command_id) <= COMMENT_LIMIT and command_id.isascii() and command_id.isprintable():
        return TAG_PREFIX + command_id
    digest = hashlib.sha256(command_id.encode("utf-8")).hexdigest()
    return TAG_HASHED_PREFIX + digest[: COMMENT_LIMIT - len(TAG_HASHED_PREFIX)]


# --- normalised results ---------------------------------------------------------------------
@dataclass(frozen=True)
class Position:
    ticket: int
    symbol: str
    side: Side
    volume: Decimal
    price_open: Decimal
    price_current: Decimal
    sl: Decimal | None
    tp: Decimal | None
    profit: Decimal
    swap: Decimal
    # The entry commission of the remaining volume; MT5 already charged it to the balance,
    # so equity does not include it again.
    commission: Decimal
    magic: int
    comment: str
    opened_at: datetime
    # POSITION_IDENTIFIER, the ``position_id`` of its orders and deals: the ticket of the order
    # that opened it. It is the ticket too, except after a reversal on a netting account, where
    # the position takes the reversing order's ticket and keeps its identifier. 0: not known.
    identifier: int = 0


@dataclass(frozen=True)
class PendingOrder:
    """An order: a live pending order (``done_at`` None) or, from ``orders_by_tag``, a historical one."""

    ticket: int
    symbol: str
    side: Side
    order_type: str  # buy, sell, buy_limit, sell_limit, buy_stop, sell_stop, buy_stop_limit, ...
    state: str  # started, placed, canceled, partial, filled, rejected, expired, ...
    volume_initial: Decimal
    volume_current: Decimal
    price_open: Decimal
    price_current: Decimal
    sl: Decimal | None
    tp: Decimal | None
    magic: int
    comment: str
    position_id: int
    placed_at: datetime
    done_at: datetime | None


@dataclass(frozen=True)
class Deal:
    ticket: int
    order: int
    position_id: int
    symbol: str
    side: str  # buy | sell (balance operations: balance, credit, ...)
    entry: str  # in | out | inout | out_by
    volume: Decimal
    price: Decimal
    profit: Decimal
    commission: Decimal
    swap: Decimal
    magic: int
    comment: str
    time: datetime


@dataclass(frozen=True)
class SymbolInfo:
    name: str
    description: str
    digits: int
    point: Decimal
    contract_size: Decimal
    volume_min: Decimal
    volume_max: Decimal
    volume_step: Decimal
    filling_mode: int  # SYMBOL_FILLING_* bitmask
    trade_mode: int  # SYMBOL_TRADE_MODE_*
    trade_exemode: int  # SYMBOL_TRADE_EXECUTION_*
    stops_level: int  # points
    bid: Decimal
    ask: Decimal
    spread: int  # points
    tick_value: Decimal
    tick_size: Decimal
    currency_base: str
    currency_profit: str
    currency_margin: str
    quoted_at: datetime


@dataclass(frozen=True)
class AccountSnapshot:
    login: int
    server: str
    currency: str
    currency_digits: int
    leverage: int
    balance: Decimal
    credit: Decimal
    equity: Decimal
    margin: Decimal
    margin_free: Decimal
    margin_level: Decimal
    profit: Decimal
    positions: tuple[Position, ...]
    orders: tuple[PendingOrder, ...]
    observed_at: datetime
    trade_allowed: bool


@dataclass(frozen=True)
class TradeResult:
    outcome: Outcome
    retcode: int
    retcode_name: str
    message: str
    order: int = 0
    deal: int = 0
    volume: Decimal = Decimal("0")
    price: Decimal = Decimal("0")
    request: dict[str, Any] = field(default_factory=dict)
    comment: str = ""
    # True when order_send may have executed although no answer came back (IPC error or
    # timeout after sending): reconcile by tag before sending again.
    maybe_executed: bool = False
    # The position the request opened (hedging: the order ticket; netting: the position its
    # deal acted on, found from the deal), closed or modified.
    position: int = 0
    # A market deal filled in part (10010, TRADE_RETCODE_DONE_PARTIAL): ``volume`` is what was
    # filled, ``requested_volume`` what was asked. The outcome is still done (the part filled is
    # real), but a partial close left the rest of the position open.
    partial: bool = False
    requested_volume: Decimal = Decimal("0")

    @property
    def ok(self) -> bool:
        return self.outcome == DONE

    def as_json(self) -> dict[str, Any]:
        """JSON-safe form for command results and callbacks (Decimals as strings)."""
        data = asdict(self)
        data["volume"], data["price"] = str(self.volume), str(self.price)
        data["requested_volume"] = str(self.requested_volume)
        return data


# --- the interface ----------------------------------------------------------------------------
class Gateway(ABC):
    """What the bridge asks of MT5. Each call names the account; the backend logs into it."""

    backend: str = "unknown"
    # Can the backend disable an account's trading on the MT5 server (set_server_trade_disabled)?
    server_side_trading: bool = False

    @abstractmethod
    def account_snapshot(self, login: int, server: str) -> AccountSnapshot: ...

    def account_snapshots(
        self, accounts: Iterable[tuple[int, str]]
    ) -> dict[tuple[int, str], AccountSnapshot | Exception]:
        """Many accounts, for the risk monitor; a backend that can read them together overrides this."""
        out: dict[tuple[int, str], AccountSnapshot | Exception] = {}
        for login, server in accounts:
            try:
                out[(login, server)] = self.account_snapshot(login, server)
            except GatewayUnavailable as exc:
                out[(login, server)] = exc
        return out

    def position(self, login: int, server: str, ticket: int) -> Position | None:
        """One open position, or None; a backend that can read just that one overrides this."""
        return next((p for p in self.account_snapshot(login, server).positions if p.ticket == ticket), None)

    def netting_position(self, login: int, server: str, symbol: str) -> Position | None:
        """On an account that nets (MT5's retail netting and exchange margin modes: at most one
        position per symbol, which every deal on the symbol adds to, reduces, closes or
        reverses), its position on ``symbol``; None when it holds none there or the account
        hedges. A backend that cannot tell answers None (it is taken for hedging)."""
        return None

    @abstractmethod
    def symbol_info(self, login: int, server: str, symbol: str) -> SymbolInfo | None: ...

    @abstractmethod
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
    ) -> TradeResult: ...

    @abstractmethod
    def close_position(
        self, login: int, server: str, *, ticket: int, volume: Decimal | None = None, deviation: int = 20, tag: str
    ) -> TradeResult: ...

    @abstractmethod
    def modify_position(
        self, login: int, server: str, *, ticket: int, sl: Decimal | None = None, tp: Decimal | None = None, tag: str
    ) -> TradeResult: ...

    @abstractmethod
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
    ) -> TradeResult: ...

    @abstractmethod
    def cancel_order(self, login: int, server: str, *, ticket: int, tag: str) -> TradeResult: ...

    @abstractmethod
    def deals_by_tag(self, login: int, server: str, *, tag: str, since: datetime) -> tuple[Deal, ...]: ...

    @abstractmethod
    def orders_by_tag(self, login: int, server: str, *, tag: str, since: datetime) -> tuple[PendingOrder, ...]: ...

    @abstractmethod
    def positions_by_tag(self, login: int, server: str, *, tag: str) -> tuple[Position, ...]: ...

    def set_server_trade_disabled(self, login: int, server: str, *, disabled: bool) -> bool | None:
        """Disable (or enable) the account's trading on the MT5 server itself, so the trader's own
        terminal is refused too (the Manager API's ``USER_RIGHT_TRADE_DISABLED``). True: done;
        None: this backend cannot (a terminal has no such right); ``GatewayUnavailable``: it
        could not be reached."""
        return None

    def server_trade_disabled(self, login: int, server: str) -> bool | None:
        """Whether the server has the account's trading disabled; None: this backend cannot tell."""
        return None

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """``{"backend": str, "available": bool, "detail": str, ...}``; never raises."""
