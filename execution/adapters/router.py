"""``TerminalRouter``: one Gateway over many terminals, each call sent to the terminal of its account.

Every call names its account; the router asks ``execution.terminals`` which terminal serves it
and hands the call to that terminal's own adapter, built on first use (one per terminal, kept
for the life of the process). Callers see the plain ``Gateway`` interface.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

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
from execution.terminals import TerminalConfig

Address = tuple[Any, ...]  # TerminalConfig.address


class TerminalRouter(Gateway):
    def __init__(
        self,
        backend: str,
        *,
        build: Callable[[TerminalConfig], Gateway],
        resolve: Callable[[int, str], TerminalConfig],
        resolve_many: Callable[[Iterable[tuple[int, str]]], dict[tuple[int, str], TerminalConfig]],
        configured: Callable[[], list[TerminalConfig]],
    ) -> None:
        """``build`` makes a terminal's adapter; ``resolve``/``resolve_many`` say which terminal
        serves an account; ``configured`` lists the terminals health checks before any was used."""
        self.backend = backend
        self._build = build
        self._resolve = resolve
        self._resolve_many = resolve_many
        self._configured = configured
        self._lock = threading.Lock()
        self._gateways: dict[Address, tuple[str, Gateway]] = {}

    # --- routing ----------------------------------------------------------------------------
    def gateway_of(self, config: TerminalConfig) -> Gateway:
        found = self._gateways.get(config.address)
        if found is None:
            with self._lock:
                found = self._gateways.get(config.address)
                if found is None:
                    found = self._gateways[config.address] = (config.name, self._build(config))
        return found[1]

    def gateway_for(self, login: int, server: str) -> Gateway:
        return self.gateway_of(self._resolve(login, server))

    def terminals(self) -> dict[str, Gateway]:
        """The terminals this process has used so far, by name."""
        with self._lock:
            return dict(self._gateways.values())

    # --- reads --------------------------------------------------------------------------------
    def account_snapshot(self, login: int, server: str) -> AccountSnapshot:
        return self.gateway_for(login, server).account_snapshot(login, server)

    def account_snapshots(
        self, accounts: Iterable[tuple[int, str]]
    ) -> dict[tuple[int, str], AccountSnapshot | Exception]:
        return dict(self.account_snapshots_stream(accounts))

    def account_snapshots_stream(
        self, accounts: Iterable[tuple[int, str]]
    ) -> Iterator[tuple[tuple[int, str], AccountSnapshot | Exception]]:
        """In ``accounts`` order, each read from its own terminal when its turn comes; the
        terminals are looked up together, in one query."""
        keys = list(accounts)
        configs = self._resolve_many(keys)
        for login, server in keys:
            try:
                yield (login, server), self.gateway_of(configs[(login, server)]).account_snapshot(login, server)
            except GatewayUnavailable as exc:
                yield (login, server), exc

    def position(self, login: int, server: str, ticket: int) -> Position | None:
        return self.gateway_for(login, server).position(login, server, ticket)

    def symbol_info(self, login: int, server: str, symbol: str) -> SymbolInfo | None:
        return self.gateway_for(login, server).symbol_info(login, server, symbol)

    def deals_by_tag(self, login: int, server: str, *, tag: str, since: datetime) -> tuple[Deal, ...]:
        return self.gateway_for(login, server).deals_by_tag(login, server, tag=tag, since=since)

    def orders_by_tag(self, login: int, server: str, *, tag: str, since: datetime) -> tuple[PendingOrder, ...]:
        return self.gateway_for(login, server).orders_by_tag(login, server, tag=tag, since=since)

    def positions_by_tag(self, login: int, server: str, *, tag: str) -> tuple[Position, ...]:
        return self.gateway_for(login, server).positions_by_tag(login, server, tag=tag)

    # --- trading ------------------------------------------------------------------------------
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
        gateway = self.gateway_for(login, server)
        return gateway.open_position(
            login,
            server,
            symbol=symbol,
            side=side,
            volume=volume,
            price=price,
            sl=sl,
            tp=tp,
            deviation=deviation,
            tag=tag,
        )

    def close_position(
        self, login: int, server: str, *, ticket: int, volume: Decimal | None = None, deviation: int = 20, tag: str
    ) -> TradeResult:
        return self.gateway_for(login, server).close_position(
            login, server, ticket=ticket, volume=volume, deviation=deviation, tag=tag
        )

    def modify_position(
        self, login: int, server: str, *, ticket: int, sl: Decimal | None = None, tp: Decimal | None = None, tag: str
    ) -> TradeResult:
        return self.gateway_for(login, server).modify_position(login, server, ticket=ticket, sl=sl, tp=tp, tag=tag)

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
        return self.gateway_for(login, server).place_pending_order(
            login, server, symbol=symbol, side=side, kind=kind, volume=volume, price=price, sl=sl, tp=tp, tag=tag
        )

    def cancel_order(self, login: int, server: str, *, ticket: int, tag: str) -> TradeResult:
        return self.gateway_for(login, server).cancel_order(login, server, ticket=ticket, tag=tag)

    # --- health -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Every terminal this process has used (or, before any was, every configured one): the
        backend is available when each of them is."""
        used = self.terminals()
        if not used:
            try:
                used = {config.name: self.gateway_of(config) for config in self._configured()}
            except Exception as exc:  # health must answer, whatever the database did
                return {"backend": self.backend, "available": False, "detail": f"cannot read the terminals: {exc}"}
        statuses = {name: gateway.status() for name, gateway in sorted(used.items())}
        return {
            "backend": self.backend,
            "available": bool(statuses) and all(bool(s.get("available")) for s in statuses.values()),
            "detail": "; ".join(f"{name}: {s.get('detail', '')}" for name, s in statuses.items()) or "no terminal",
            # Health is degraded when AutoTrading or Python trading is off on any terminal.
            "trade_allowed": all(s.get("trade_allowed") is not False for s in statuses.values()),
            "trade_api_disabled": any(bool(s.get("trade_api_disabled")) for s in statuses.values()),
            "terminals": statuses,
        }
