"""A Gateway that is configured but cannot work here: every call raises, status says why.

Used for the Manager API seam and for a backend whose library is missing on this host
(``MetaTrader5`` off Windows, ``mt5linux`` not installed), so health reports the reason
instead of the process failing at import and nothing ever pretends to have traded.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, NoReturn

from execution.gateway import (
    AccountSnapshot,
    Deal,
    Gateway,
    GatewayUnavailable,
    PendingOrder,
    Position,
    Side,
    SymbolInfo,
    TradeResult,
)


class UnavailableGateway(Gateway):
    def __init__(self, backend: str, reason: str, *, details: dict[str, Any] | None = None) -> None:
        self.backend = backend
        self.reason = reason
        self.details = details or {}

    def _raise(self) -> NoReturn:
        raise GatewayUnavailable(self.reason)

    def account_snapshot(self, login: int, server: str) -> AccountSnapshot:
        self._raise()

    def symbol_info(self, login: int, server: str, symbol: str) -> SymbolInfo | None:
        self._raise()

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
        self._raise()

    def close_position(
        self, login: int, server: str, *, ticket: int, volume: Decimal | None = None, deviation: int = 20, tag: str
    ) -> TradeResult:
        self._raise()

    def modify_position(
        self, login: int, server: str, *, ticket: int, sl: Decimal | None = None, tp: Decimal | None = None, tag: str
    ) -> TradeResult:
        self._raise()

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
        self._raise()

    def cancel_order(self, login: int, server: str, *, ticket: int, tag: str) -> TradeResult:
        self._raise()

    def deals_by_tag(self, login: int, server: str, *, tag: str, since: datetime) -> tuple[Deal, ...]:
        self._raise()

    def orders_by_tag(self, login: int, server: str, *, tag: str, since: datetime) -> tuple[PendingOrder, ...]:
        self._raise()

    def positions_by_tag(self, login: int, server: str, *, tag: str) -> tuple[Position, ...]:
        self._raise()

    def set_server_trade_disabled(self, login: int, server: str, *, disabled: bool) -> bool | None:
        if self.backend == "manager":  # the switch exists but cannot be reached: never pretend
            self._raise()
        return None

    def status(self) -> dict[str, Any]:
        return {"backend": self.backend, "available": False, "detail": self.reason, **self.details}
