"""Symbol names per trade server: brokers list one instrument under different names on different
servers (``EURUSD``, ``EURUSD.m``, ``EURUSDm``, ...), and a server knows only its own names.

The simulated servers share one set of instruments, one quote each (the rows keep the plain
name). A server listed in ``SIM_SYMBOL_SUFFIXES`` shows every instrument under the plain name
plus its suffix, in every answer (symbols, positions, orders, deals, the request a result
echoes), reads the names it is given the same way, and knows no other: on ``Broker-Suffix``
(suffix ``.m``) ``symbol_info("EURUSD")`` is ``None`` with "not found", as on a real server,
and ``order_send`` for ``EURUSD`` is refused as an unknown symbol.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

# Marks a name the server does not list: no instrument is stored under such a name, so the trade
# server answers it as it answers any unknown symbol.
NOT_LISTED = "not-listed:"


@dataclass(frozen=True)
class ServerNames:
    """How one trade server names the instruments."""

    suffix: str = ""

    def shown(self, name: str) -> str:
        """The server's name for the instrument stored as ``name`` ("" stays "": a balance deal)."""
        return f"{name}{self.suffix}" if name and self.suffix else name

    def stored(self, name: str) -> str | None:
        """The instrument the server's name ``name`` stands for; None when it lists no such name."""
        if not self.suffix or not name:
            return name
        if len(name) > len(self.suffix) and name.endswith(self.suffix):
            return name[: -len(self.suffix)]
        return None

    def for_server(self, name: str) -> str:
        """``stored``, with a name the server does not list kept unknown to the trade server
        (a request's symbol: the trade server refuses it as it refuses any unknown one)."""
        stored = self.stored(name)
        return NOT_LISTED + name if stored is None else stored


PLAIN = ServerNames()


def names_of(server: str | None) -> ServerNames:
    """The naming of the trade server called ``server`` (None: not logged in yet, plain names)."""
    suffix = (getattr(settings, "SIM_SYMBOL_SUFFIXES", None) or {}).get(server or "", "")
    return ServerNames(str(suffix)) if suffix else PLAIN
