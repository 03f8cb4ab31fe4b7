"""JSON helpers: canonical bytes for fingerprints, and JSON-safe copies of validated data."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_UP, Decimal
from typing import Any


def utc_iso(value: datetime) -> str:
    """An aware datetime as RFC 3339 UTC with a Z and millisecond precision (PROTOCOL §9 "Numbers")."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- Numbers (PROTOCOL §9): the API gives money, prices and volumes as decimal strings with exactly
# the account's currency digits, the symbol's digits or its volume step's places; callbacks give
# the same values as JSON numbers. An absent value is null.


def places_of(step: Decimal | float | str) -> int:
    """How many decimal places a step has: 0.01 → 2, 1 → 0, 0.5 → 1."""
    exponent = Decimal(str(step)).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def quantized(value: Any, places: int) -> Decimal | None:
    """`value` (Decimal, number or decimal string) rounded half up to `places`; None for None or ""."""
    if value is None or value == "":
        return None
    return Decimal(str(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def decimal_text(value: Any, places: int) -> str | None:
    """The API's form: a decimal string with exactly `places` decimals."""
    result = quantized(value, places)
    return None if result is None else f"{result:f}"


def decimal_number(value: Any, places: int) -> float | int | None:
    """The callbacks' form: a JSON number rounded to `places` (an int when places is 0)."""
    result = quantized(value, places)
    if result is None:
        return None
    return int(result) if places == 0 else float(result)


def blank_as_null(value: Any) -> Any:
    """An absent text is null, never \"\"."""
    return None if value == "" else value


def jsonable(value: Any) -> Any:
    """Validated data (Decimal, datetime, UUID...) as plain JSON types; money stays exact as a string."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def canonical_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def sha256_of(value: Any) -> str:
    return hashlib.sha256(canonical_bytes(value)).hexdigest()


# Keys of MT5 results and position rows that hold money, and those that hold prices or volumes.
MONEY_KEYS = frozenset({"profit", "swap", "commission", "closed_pnl", "floating_pnl", "equity", "balance"})
MARKET_KEYS = frozenset({"volume", "requested_volume", "price", "price_open", "price_current", "sl", "tp"})


def callback_numbers(value: Any, money: int) -> Any:
    """A result or position row as callbacks give it (PROTOCOL §9): its money rounded to the
    account currency's `money` digits and its prices and volumes (already on the symbol's grid
    as MT5 gave them) as JSON numbers, at any depth; "" is null."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in MONEY_KEYS and isinstance(item, str | int | float | Decimal) and not isinstance(item, bool):
                out[key] = decimal_number(item, money)
            elif key in MARKET_KEYS and isinstance(item, str | int | float | Decimal) and not isinstance(item, bool):
                out[key] = _number(item)
            else:
                out[key] = callback_numbers(item, money)
        return out
    if isinstance(value, list):
        return [callback_numbers(item, money) for item in value]
    return blank_as_null(value)


def _number(value: Any) -> Any:
    try:
        exact = Decimal(str(value))
    except ArithmeticError:
        return value
    if not exact.is_finite():
        return None
    return int(exact) if exact == exact.to_integral_value() and "." not in str(value) else float(exact)
