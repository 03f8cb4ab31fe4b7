"""The official adapter over an mt5linux server (RPyC to a MetaTrader5 module running under Wine
or on a Windows host), one server per terminal.

**Results are copied locally, once per call.** Through the mt5linux client every MT5 result is
a remote reference (an RPyC netref): each attribute read of it (``position.ticket``,
``info.balance``, ...) is one more network round trip, so a snapshot of ten positions would cost
hundreds of them. ``Mt5LinuxModule`` speaks to the mt5linux server over its RPyC classic
connection instead: once per connection it defines a small function on the server
(``REMOTE_HELPER``), and each MT5 call is then one ``eval`` of that function, which calls the
module there and returns the result as plain nested tuples of numbers and strings. RPyC moves
such tuples *by value* (brine), so the call is one round trip and the adapter reads local
namedtuples rebuilt from them (``rebuild``). No pickle crosses the link either way, and nothing
needs the Windows-only ``MetaTrader5`` package on this host. The arguments travel inside the
evaluated text as Python literals (as the mt5linux client itself sends them), checked to be
plain values first (``literal``): a dict passed as an RPyC argument would be a reference the
server reads back field by field.

The RPyC link is one more thing that breaks, and it breaks with Python exceptions rather
than MT5 error codes. ``Mt5LinuxModule`` turns a broken link into the MetaTrader5 module's
own convention (``None`` and ``last_error() == (-10004, ...)``) and reconnects on the next
call, so ``OfficialGateway``'s reconnect and duplicate-order logic applies unchanged.
"""

from __future__ import annotations

import math
import re
from collections import namedtuple
from collections.abc import Callable
from functools import lru_cache
from typing import Any, cast

from execution.adapters.official import OfficialGateway, PasswordFor, SharedModule
from execution.gateway import GatewayUnavailable
from execution.simulator import constants as c

TRANSPORT_ERRORS = (EOFError, ConnectionError, OSError)
# How long one MT5 call may take on the server (a login can take many seconds), as mt5linux sets it.
SYNC_REQUEST_TIMEOUT = 300

# Tags of the containers in a plain result (scalars travel as themselves).
NAMEDTUPLE, SEQUENCE, MAPPING = "nt", "seq", "map"

# Run once per connection on the mt5linux server (its Python, under Wine or on Windows): plain
# Python any version of it runs, the module imported there as the mt5linux client does.
REMOTE_HELPER = f'''
import MetaTrader5 as _bridge_mt5


def _bridge_plain(value):
    """An MT5 result as nested tuples of scalars, which RPyC moves by value."""
    fields = getattr(value, "_fields", None)
    if isinstance(value, tuple) and fields is not None:
        return ("{NAMEDTUPLE}", type(value).__name__, tuple(fields), tuple(_bridge_plain(v) for v in value))
    if isinstance(value, (tuple, list)):
        return ("{SEQUENCE}", tuple(_bridge_plain(v) for v in value))
    if isinstance(value, dict):
        return ("{MAPPING}", tuple((_bridge_plain(k), _bridge_plain(v)) for k, v in value.items()))
    return value


def _bridge_call(name, args, kwargs):
    return _bridge_plain(getattr(_bridge_mt5, name)(*args, **kwargs))
'''

_FUNCTION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _rpyc_connect() -> Callable[..., Any]:
    """``rpyc.classic.connect`` for the mt5linux server at host:port, or why it cannot be had."""
    try:
        import rpyc  # optional dependency (mt5linux installs it), Linux hosts only
    except ImportError as exc:
        raise GatewayUnavailable(
            f"MT5_BACKEND=mt5linux needs the rpyc package (pip install mt5linux brings it): {exc}"
        ) from exc

    def connect(*, host: str, port: int) -> Any:
        conn = rpyc.classic.connect(host, port)
        conn._config["sync_request_timeout"] = SYNC_REQUEST_TIMEOUT
        return conn

    return connect


def literal(value: Any) -> str:
    """``value`` as Python source the server evaluates back to an equal plain value. Only plain
    values are sent (MT5's arguments are numbers, strings, booleans and a request dict); anything
    else would not round-trip through ``repr`` and is refused here, before it leaves."""
    # The base type's repr: an IntEnum or a str subclass would print as something else.
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, str):
        return repr(str(value))
    if isinstance(value, bytes):
        return repr(bytes(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"cannot send the float {value!r} to the mt5linux server")
        return repr(float(value))
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + "".join(f"{literal(v)}, " for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot send a {type(value).__name__} to the mt5linux server")


@lru_cache(maxsize=64)
def _tuple_type(name: str, fields: tuple[str, ...]) -> type:
    """The local namedtuple standing for the server's ``name`` (cached: a type per shape)."""
    return namedtuple(name, fields)


def rebuild(value: Any) -> Any:
    """A plain result from ``_bridge_plain`` as local values: namedtuples with the module's type
    names and fields, tuples, dicts and scalars."""
    if type(value) is not tuple:
        return value
    tag = value[0]
    if tag == NAMEDTUPLE:
        _, name, fields, values = value
        return _tuple_type(name, fields)(*(rebuild(v) for v in values))
    if tag == SEQUENCE:
        return tuple(rebuild(v) for v in value[1])
    if tag == MAPPING:
        return {rebuild(k): rebuild(v) for k, v in value[1]}
    raise ValueError(f"unexpected value from the mt5linux server: {value!r}")


class Mt5LinuxModule:
    """Module-like proxy over one mt5linux server: each MT5 function is one round trip whose
    result arrives as local values, and transport failures are reported the MT5 way.

    ``factory(host=..., port=...)`` opens the link: an RPyC classic connection (``eval`` and
    ``execute``), by default ``rpyc.classic.connect`` (GatewayUnavailable here when rpyc is not
    installed)."""

    def __init__(self, host: str, port: int, factory: Callable[..., Any] | None = None) -> None:
        self.host, self.port = host, port
        self._factory = factory or _rpyc_connect()
        self._conn: Any = None
        self._transport_error: tuple[int, str] | None = None

    def _link(self) -> Any:
        if self._conn is None:
            conn = self._factory(host=self.host, port=self.port)
            conn.execute(REMOTE_HELPER)
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        close = getattr(conn, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: S110 - the link is broken already; a new one is opened next call
                pass

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if not _FUNCTION_NAME.match(name):
            raise AttributeError(name)
        code = f"_bridge_call({name!r}, {literal(args)}, {literal(kwargs)})"
        try:
            result = self._link().eval(code)
        except TimeoutError as exc:  # RPyC's AsyncResultTimeout
            self._drop()
            self._transport_error = (c.RES_E_INTERNAL_FAIL_TIMEOUT, f"IPC timeout (RPyC: {exc})")
            return None
        except TRANSPORT_ERRORS as exc:
            self._drop()
            self._transport_error = (
                c.RES_E_INTERNAL_FAIL_CONNECT,
                f"No IPC connection (RPyC {self.host}:{self.port}: {exc})",
            )
            return None
        self._transport_error = None
        return rebuild(result)

    def last_error(self) -> tuple[int, str]:
        if self._transport_error is not None:
            return self._transport_error
        error = self._call("last_error")
        if error is None:
            # _call failed and has just recorded why (mypy still holds the attribute narrowed to None).
            return cast("tuple[int, str]", self._transport_error)
        return cast("tuple[int, str]", tuple(error))

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
    """Raises GatewayUnavailable when rpyc is not installed; the link itself is opened lazily.
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
