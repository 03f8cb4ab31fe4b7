"""The terminal session under ``OfficialGateway``: ``initialize``, ``login`` into the account a
call is for, one reconnect (shutdown, initialize, login) after an IPC error, the server clock's
offset from UTC (learned from ticks, looked at again after each reconnect), and the health
check.

One terminal holds one logged-in account, so every call first makes sure the requested
account is the logged-in one; ``None`` results carry their reason in ``last_error()``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from execution.adapters.official.servertime import ServerClock
from execution.gateway import IPC_ERRORS, GatewayUnavailable
from execution.simulator import constants as c

# How many Market Watch symbols the server clock is learned from (the most recently quoted).
CLOCK_PROBES = 4

PasswordFor = Callable[[int, str], str | None]


class SharedModule:
    """One MT5 module serving several terminals, one attached at a time: the process's
    ``MetaTrader5`` (one IPC link, whatever the path) or one mt5linux server. The sessions over it
    share its lock, and a session whose terminal is not the attached one shuts the link down and
    initialises its own before its next call."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.owner: object | None = None


class Session:
    """The connection to one terminal (``OfficialGateway.__init__`` sets its state)."""

    mt5: Any
    terminal_path: str | None
    password_for: PasswordFor | None
    backend: str
    # Held around every terminal call: the module is one IPC channel whose logged-in account
    # is shared state.
    _lock: Any
    _initialized: bool
    _current: tuple[int, str] | None
    # The server's wall clock against UTC, and the symbols whose ticks teach it.
    _clock: ServerClock
    _probes: list[str]
    _shared: SharedModule | None

    # --- connection -----------------------------------------------------------------------
    def _error(self) -> tuple[int, str]:
        try:
            code, text = self.mt5.last_error()
        except Exception:  # a dead RPyC link raises anything; treat as no IPC
            return c.RES_E_INTERNAL_FAIL_CONNECT, "No IPC connection"
        return int(code), str(text)

    def _attached(self) -> bool:
        """False when another terminal's session took the shared module since this one initialised it."""
        return self._shared is None or self._shared.owner is self

    def _initialize(self) -> None:
        if self._shared is not None and self._shared.owner not in (None, self):
            try:
                self.mt5.shutdown()  # detach the other terminal first
            except Exception:  # noqa: S110 - initialize decides whether the link works
                pass
            self._shared.owner = None
        ok = self.mt5.initialize(self.terminal_path) if self.terminal_path else self.mt5.initialize()
        if not ok:
            code, text = self._error()
            self._initialized = False
            raise GatewayUnavailable(f"MT5 initialize failed: ({code}) {text}", code=code)
        self._initialized = True
        self._current = None
        # A new link: learn the server's clock again (it may be another server's, or DST began).
        self._clock.forget()
        self._probes = []
        if self._shared is not None:
            self._shared.owner = self

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
        if not self._initialized or not self._attached():
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

    # --- the server's clock -----------------------------------------------------------------
    def _server_offset(self) -> timedelta:
        """How far the server's wall clock runs ahead of UTC, looked at again when it is due
        (call with the lock held)."""
        if self._clock.due():
            self._clock.look(self._probe_ticks())
        return self._clock.offset

    def server_utc_offset(self) -> timedelta:
        """The offset every time this adapter returns was converted with: learned from ticks,
        or ``MT5_SERVER_UTC_OFFSET_HOURS`` until a fresh tick has taught it."""
        with self._lock:
            return self._server_offset()

    def _probe_ticks(self) -> dict[str, int]:
        """The latest tick time (``time_msc``, server clock) of the most recently quoted Market
        Watch symbols; empty when the terminal cannot say (the clock then keeps what it has)."""
        try:
            if not self._initialized:
                self._initialize()
            if not self._probes:
                listed = [s for s in self.mt5.symbols_get() or () if getattr(s, "visible", True) and int(s.time)]
                listed.sort(key=lambda s: int(s.time), reverse=True)
                self._probes = [str(s.name) for s in listed[:CLOCK_PROBES]]
            ticks = {}
            for name in self._probes:
                tick = self.mt5.symbol_info_tick(name)
                if tick is not None:
                    ticks[name] = int(tick.time_msc)
            return ticks
        except Exception:  # GatewayUnavailable, or a dead RPyC link: the reads will say so
            return {}

    # --- health ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._lock:
            try:
                if not self._initialized or not self._attached():
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
