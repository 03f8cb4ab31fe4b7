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
- MT5 timestamps are the server's wall clock (often UTC+2/3) written as if they were Unix
  timestamps, and history dates are read the same way: the adapter learns the offset from
  ticks (``servertime``), returns UTC datetimes and asks history windows in server time.

One lock per adapter serialises terminal calls: the module is one IPC channel whose logged-in
account is shared state.

``session`` keeps the terminal initialised and logged in (and reconnects), ``reads`` reads
accounts, positions and symbols, ``trading`` sends orders and reconciles by tag, and
``conversion`` turns the module's values into the gateway's, and ``symbols`` maps canonical
symbol names to each server's own (``EURUSD`` ↔ ``EURUSD.m``): requests carry the server's name,
everything read back the canonical one.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

from execution.adapters.official.conversion import choose_filling
from execution.adapters.official.servertime import ServerClock
from execution.adapters.official.session import PasswordFor, SharedModule
from execution.adapters.official.symbols import SymbolBook, SymbolNaming
from execution.adapters.official.trading import Trading
from execution.gateway import Gateway

__all__ = ["OfficialGateway", "PasswordFor", "SharedModule", "SymbolNaming", "choose_filling"]


class OfficialGateway(Trading, Gateway):
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
        server_utc_offset_hours: float | None = None,
        shared: SharedModule | None = None,
        symbols: SymbolNaming | None = None,
    ) -> None:
        """``verify_account`` re-reads ``account_info().login`` before each trade, for terminals
        another process may switch to another account; a private terminal can skip it.
        ``server_utc_offset_hours`` is the server clock's offset until ticks have taught it
        (default: ``MT5_SERVER_UTC_OFFSET_HOURS``). ``shared``: the module serves other
        terminals' gateways too (one attached at a time). ``symbols``: how the terminal's servers
        name symbols (``symbols``; learnt when not configured)."""
        self.mt5 = mt5_module
        self.terminal_path = terminal_path or None
        self.password_for = password_for
        self.magic = magic
        self.backend = backend
        self.verify_account = verify_account
        self._shared = shared
        self._lock = shared.lock if shared is not None else threading.RLock()
        self._initialized = False
        self._current: tuple[int, str] | None = None
        if server_utc_offset_hours is None:
            from django.conf import settings

            server_utc_offset_hours = float(getattr(settings, "MT5_SERVER_UTC_OFFSET_HOURS", 0.0))
        self._clock = ServerClock(server_utc_offset_hours)
        self._probes: list[str] = []
        # Entry commission and entry volume per (login, server, position ticket): they never
        # change once the position is open, so the deal history is read once per position.
        # Per account, each open position's (entry commission, entry lots): read once from history.
        self._entry_costs: dict[tuple[int, str], dict[int, tuple[Decimal, Decimal]]] = {}
        # An account's currency digits never change; reconciliation reads skip account_info.
        self._digits: dict[tuple[int, str], int] = {}
        # Nor does its margin mode (ACCOUNT_MARGIN_MODE_*): whether it nets or hedges.
        self._margin_modes: dict[tuple[int, str], int] = {}
        self._symbols = SymbolBook(symbols)
