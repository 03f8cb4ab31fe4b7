"""A trade request as the MetaTrader5 module reads the dict given to ``order_send`` and
``order_check``: each field's type is checked before anything is sent (a wrong one is
``InvalidArgument``, which the terminal answers with ``None`` and -2), and the comment is cut
to what the trade server keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from execution.simulator.types import TradeRequest

COMMENT_LIMIT = 31

_INT_FIELDS = ("action", "magic", "order", "deviation", "type", "type_filling", "type_time", "position", "position_by")
_FLOAT_FIELDS = ("volume", "price", "stoplimit", "sl", "tp")


class InvalidArgument(Exception):
    """A request field of the wrong type: the real module rejects it before anything is sent."""


@dataclass
class Request:
    action: int = 0
    magic: int = 0
    order: int = 0
    symbol: str = ""
    volume: float = 0.0
    price: float = 0.0
    stoplimit: float = 0.0
    sl: float = 0.0
    tp: float = 0.0
    deviation: int = 0
    type: int = 0
    type_filling: int = 0
    type_time: int = 0
    expiration: int = 0
    comment: str = ""
    position: int = 0
    position_by: int = 0

    @classmethod
    def parse(cls, request: Any) -> Request:
        if not isinstance(request, dict):
            raise InvalidArgument("Invalid arguments")
        parsed = cls()
        for name in _INT_FIELDS:
            if name in request:
                value = request[name]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise InvalidArgument(f'Invalid "{name}" argument')
                setattr(parsed, name, value)
        for name in _FLOAT_FIELDS:
            if name in request:
                value = request[name]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InvalidArgument(f'Invalid "{name}" argument')
                setattr(parsed, name, float(value))
        for name in ("symbol", "comment"):
            if name in request:
                if not isinstance(request[name], str):
                    raise InvalidArgument(f'Invalid "{name}" argument')
                setattr(parsed, name, request[name])
        if "expiration" in request:
            parsed.expiration = to_seconds(request["expiration"], "expiration")
        if "action" not in request:
            raise InvalidArgument('Invalid "action" argument')
        # The trade server keeps 31 characters of a comment and drops the rest.
        parsed.comment = parsed.comment[:COMMENT_LIMIT]
        return parsed

    def as_tuple(self) -> TradeRequest:
        return TradeRequest(
            self.action, self.magic, self.order, self.symbol, self.volume, self.price, self.stoplimit, self.sl,
            self.tp, self.deviation, self.type, self.type_filling, self.type_time, self.expiration, self.comment,
            self.position, self.position_by,
        )  # fmt: skip


def to_seconds(value: Any, name: str) -> int:
    if isinstance(value, datetime):
        # A datetime counts by its timestamp (a naive one as UTC), and that number is read as
        # the server's wall clock, as the MetaTrader5 module does: pass server time, not UTC.
        return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    raise InvalidArgument(f'Invalid "{name}" argument')


def dec(value: float) -> Decimal:
    return Decimal(repr(value))
