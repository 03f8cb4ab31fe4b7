"""The official adapter over ``mt5linux`` (an RPyC client to a MetaTrader5 module running
under Wine or on a Windows host).

The RPyC link is one more thing that breaks, and it breaks with Python exceptions rather
than MT5 error codes. ``Mt5LinuxModule`` turns a broken link into the MetaTrader5 module's
own convention (``None`` and ``last_error() == (-10004, ...)``) and reconnects on the next
call, so ``OfficialGateway``'s reconnect and duplicate-order logic applies unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from execution.adapters.official import OfficialGateway, PasswordFor, SharedModule
from execution.gateway import GatewayUnavailable
from execution.simulator import constants as c

TRANSPORT_ERRORS = (EOFError, ConnectionError, OSError)


def _client_factory() -> Callable[..., Any]:
    try:
        from mt5linux import MetaTrader5  # optional dependency, Linux hosts only
    except ImportError as exc:
        raise GatewayUnavailable(
            f"MT5_BACKEND=mt5linux needs the mt5linux package (pip install mt5linux): {exc}"
        ) from exc
    return MetaTrader5


class Mt5LinuxModule:
    """Module-like proxy over an mt5linux client that reports transport failures the MT5 way."""

    def __init__(self, host: str, port: int, factory: Callable[..., Any] | None = None) -> None:
        self.host, self.port = host, port
        self._factory = factory or _client_factory()
        self._client: Any = None
        self._transport_error: tuple[int, str] | None = None

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            if self._client is None:
                self._client = self._factory(host=self.host, port=self.port)
            result = getattr(self._client, name)(*args, **kwargs)
        except TimeoutError as exc:
            self._client = None
            self._transport_error = (c.RES_E_INTERNAL_FAIL_TIMEOUT, f"IPC timeout (RPyC: {exc})")
            return None
        except TRANSPORT_ERRORS as exc:
            self._client = None
            self._transport_error = (
                c.RES_E_INTERNAL_FAIL_CONNECT,
                f"No IPC connection (RPyC {self.host}:{self.port}: {exc})",
            )
            return None
        self._transport_error = None
        return result

    def last_error(self) -> tuple[int, str]:
        if self._transport_error is not None:
            return self._transport_error
        error = self._call("last_error")
        if error is None:
            # _call failed and has just recorded why (mypy still holds the attribute narrowed to None).
            return cast("tuple[int, str]", self._transport_error)
        return cast("tuple[int, str]", tuple(error))  # MT5's (code, description), copied out of the RPyC proxy

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name.isupper():
            return getattr(c, name)
        return lambda *args, **kwargs: self._call(name, *args, **kwargs)


def build_mt5linux_gateway(
    host: str,
    port: int,
    *,
    magic: int,
    terminal_path: str | None = None,
    password_for: PasswordFor | None = None,
    factory: Callable[..., Any] | None = None,
    module: Mt5LinuxModule | None = None,
    shared: SharedModule | None = None,
) -> OfficialGateway:
    """Raises GatewayUnavailable when mt5linux is not installed; the link itself is opened lazily.
    ``module`` and ``shared``: a server already serving other terminals' gateways."""
    module = module or Mt5LinuxModule(host, port, factory)
    return OfficialGateway(
        module,
        terminal_path=terminal_path,
        password_for=password_for,
        magic=magic,
        backend="mt5linux",
        shared=shared,
    )
