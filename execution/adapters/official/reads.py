"""Reading accounts through the terminal: snapshots (one, or many at once where the module can
read them together), positions, symbols, and each position's entry commission, which the
module's positions do not carry and the deal history does; and whether an account nets (one
position per symbol) or hedges.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from execution.adapters.official.conversion import (
    dec,
    quantum,
    to_account_snapshot,
    to_position,
    to_symbol_info,
    utc_ms,
    window,
)
from execution.adapters.official.session import Session
from execution.adapters.official.symbols import Rename, SymbolBook
from execution.gateway import AccountSnapshot, GatewayUnavailable, Position, SymbolInfo
from execution.simulator import constants as c


class Reads(Session):
    """The gateway's reads (``OfficialGateway.__init__`` sets their caches)."""

    # Per account, each open position's (entry commission, entry lots): read once from history.
    _entry_costs: dict[tuple[int, str], dict[int, tuple[Decimal, Decimal]]]
    # An account's currency digits never change; reconciliation reads skip account_info.
    _digits: dict[tuple[int, str], int]
    # Nor does its margin mode (ACCOUNT_MARGIN_MODE_*).
    _margin_modes: dict[tuple[int, str], int]
    # Canonical symbol names <-> each server's own (``symbols``).
    _symbols: SymbolBook

    def _canonical(self, server: str) -> Rename:
        """Renames ``server``'s symbol names to the canonical ones, for everything read back."""
        return lambda name: self._symbols.canonical(server, name)

    # --- reads ----------------------------------------------------------------------------
    def _account_digits(self, login: int, server: str) -> int:
        if (login, server) not in self._digits:
            self._remember_account(login, server)
        return self._digits[(login, server)]

    def _remember_account(self, login: int, server: str) -> None:
        """Read what never changes about an account: its currency digits and margin mode."""
        info = self._read(login, server, "account_info")
        if info is None:
            code, text = self._error()
            raise GatewayUnavailable(f"MT5 account_info for {login}@{server} failed: ({code}) {text}", code=code)
        self._digits[(login, server)] = int(info.currency_digits)
        self._margin_modes[(login, server)] = int(info.margin_mode)

    def _nets(self, login: int, server: str) -> bool:
        """Does the account net positions (retail netting or exchange: one position per symbol)?"""
        if (login, server) not in self._margin_modes:
            self._remember_account(login, server)
        return self._margin_modes[(login, server)] != c.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING

    def netting_position(self, login: int, server: str, symbol: str) -> Position | None:
        with self._lock:
            if not self._nets(login, server):
                return None
            digits = self._account_digits(login, server)
            broker = self._symbols.broker(server, symbol)
            raw = self._read_list(login, server, "positions_get", symbol=broker)
            if not raw:
                return None
            commissions = self._commissions(login, server, raw[:1], digits)
            offset = self._server_offset()
        return to_position(raw[0], digits, commissions[int(raw[0].ticket)], offset, self._canonical(server))

    def _listed(self, login: int, server: str, name: str) -> Any:
        """``symbol_info`` of the server's symbol ``name``, selected into Market Watch if need be."""
        info = self._read(login, server, "symbol_info", name)
        if info is None or not getattr(info, "visible", True):
            # Symbols outside Market Watch have no live quotes until selected.
            if self._read(login, server, "symbol_select", name, True):
                info = self._read(login, server, "symbol_info", name)
        return info

    def _symbol_raw(self, login: int, server: str, symbol: str) -> Any:
        """``symbol_info`` of the canonical ``symbol`` under the server's name for it (its
        ``name``); a terminal without a configured naming learns it when the server does not
        list the canonical name (``symbols``). None: the server does not trade it, or ``symbol``
        is the server's name of another canonical one (Laravel speaks canonical names only)."""
        if self._symbols.canonical(server, symbol) != symbol:
            return None
        info = self._listed(login, server, self._symbols.broker(server, symbol))
        if info is None and self._symbols.may_learn(server, symbol):
            listed = self._read(login, server, "symbols_get") or ()
            learnt = self._symbols.learn(server, symbol, (str(s.name) for s in listed))
            if learnt is not None:
                info = self._listed(login, server, learnt)
        return info

    def symbol_info(self, login: int, server: str, symbol: str) -> SymbolInfo | None:
        with self._lock:
            raw = self._symbol_raw(login, server, symbol)
            offset = self._server_offset()
        if raw is None:
            return None
        return to_symbol_info(raw, offset, self._canonical(server))

    def _commissions(self, login: int, server: str, raw_positions: Iterable[Any], digits: int) -> dict[int, Decimal]:
        """Each open position's entry commission, scaled to its remaining volume."""
        positions = list(raw_positions)
        known = self._entry_costs.get((login, server), {})
        missing = [p for p in positions if int(p.ticket) not in known]
        if missing:
            offset = self._server_offset()
            since = min(utc_ms(int(p.time_msc), offset) for p in missing)
            deals = self._read_list(login, server, "history_deals_get", *window(since, offset))
            wanted = {int(p.ticket) for p in missing}
            found: dict[int, tuple[Decimal, Decimal]] = {}
            for deal in deals:
                position_id = int(deal.position_id)
                if position_id in wanted and deal.entry == c.DEAL_ENTRY_IN:
                    fee, lots = found.get(position_id, (Decimal(0), Decimal(0)))
                    found[position_id] = (fee + dec(deal.commission), lots + dec(deal.volume))
            for ticket in wanted:
                known[ticket] = found.get(ticket, (Decimal(0), Decimal(0)))
        if missing or len(known) != len(positions):
            # Keep only the open positions' entries, so closed ones do not pile up.
            known = {int(p.ticket): known[int(p.ticket)] for p in positions}
            self._entry_costs[(login, server)] = known
        step = quantum(digits)
        result = {}
        for p in positions:
            fee, lots = known[int(p.ticket)]
            share = fee * dec(p.volume) / lots if lots else fee
            result[int(p.ticket)] = share.quantize(step)
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
        return dict(self.account_snapshots_stream(accounts))

    def account_snapshots_stream(
        self, accounts: Iterable[tuple[int, str]]
    ) -> Iterator[tuple[tuple[int, str], AccountSnapshot | Exception]]:
        """``account_snapshots`` in order, each read when its turn comes (the risk monitor acts on
        each as it comes). An account that cannot be read comes as its exception, and the others
        still come. A terminal holds one account: on a shared one each read is a login."""
        for login, server in list(accounts):
            try:
                yield (login, server), self.account_snapshot(login, server)
            except GatewayUnavailable as exc:
                yield (login, server), exc

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
        self._margin_modes[(login, server)] = int(info.margin_mode)
        commissions = self._commissions(login, server, raw_positions, digits)
        observed_at = observed_at or datetime.now(UTC)
        offset = self._server_offset()
        return to_account_snapshot(
            info, digits, raw_positions, raw_orders, commissions, observed_at, offset, self._canonical(server)
        )

    def position(self, login: int, server: str, ticket: int) -> Position | None:
        """positions_get(ticket=...): a close needs its position, not the whole account."""
        with self._lock:
            digits = self._account_digits(login, server)
            raw = self._read_list(login, server, "positions_get", ticket=ticket)
            if not raw:
                return None
            commissions = self._commissions(login, server, raw[:1], digits)
            offset = self._server_offset()
        return to_position(raw[0], digits, commissions[int(raw[0].ticket)], offset, self._canonical(server))
