"""A stand-in for an RPyC classic connection to an mt5linux server, in process, that counts what
the network would carry.

``FakeClassicConnection(module)`` serves ``module`` as the server's ``MetaTrader5``: ``execute``
and ``eval`` run the text there, each one round trip. What ``eval`` returns crosses as RPyC
would move it: a value brine can dump (scalars, and plain tuples and frozensets of them) by
value; anything else — a namedtuple, a list, a dict, a module object — as a ``RemoteReference``
(a netref), every attribute read, item, iteration or length of which is one more round trip,
counted in ``remote_reads``.
"""

from __future__ import annotations

import builtins
from typing import Any

# brine's simple types (rpyc.core.brine.simple_types): what RPyC moves by value.
SIMPLE_TYPES = (type(None), int, bool, float, bytes, str, complex, type(NotImplemented), type(Ellipsis))


def dumpable(value: Any) -> bool:
    """rpyc.core.brine.dumpable: exact types only (a namedtuple is a reference, not a tuple)."""
    if type(value) in SIMPLE_TYPES:
        return True
    if type(value) in (tuple, frozenset):
        return all(dumpable(item) for item in value)
    return False


class RemoteReference:
    """A netref: every use of it asks the server."""

    def __init__(self, target: Any, conn: FakeClassicConnection) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_conn", conn)

    def _fetch(self, value: Any) -> Any:
        self._conn.round_trips += 1
        self._conn.remote_reads += 1
        return self._conn.cross(value)

    def __getattr__(self, name: str) -> Any:
        return self._fetch(getattr(self._target, name))

    def __getitem__(self, key: Any) -> Any:
        return self._fetch(self._target[key])

    def __iter__(self) -> Any:
        return iter(self._fetch(tuple(self._target)))

    def __len__(self) -> int:
        return int(self._fetch(len(self._target)))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fetch(self._target(*args, **kwargs))


class FakeClassicConnection:
    def __init__(self, module: Any) -> None:
        self.module = module
        self.round_trips = 0
        self.remote_reads = 0
        self.closed = False
        self.namespace: dict[str, Any] = {"__builtins__": {**vars(builtins), "__import__": self._import}}

    def _import(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.module if name == "MetaTrader5" else builtins.__import__(name, *args, **kwargs)

    def cross(self, value: Any) -> Any:
        return value if dumpable(value) else RemoteReference(value, self)

    def execute(self, text: str) -> None:
        self.round_trips += 1
        exec(text, self.namespace)  # the server side of a classic RPyC connection

    def eval(self, text: str) -> Any:
        self.round_trips += 1
        return self.cross(eval(text, self.namespace))

    def close(self) -> None:
        self.closed = True
