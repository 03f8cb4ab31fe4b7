"""How the panel writes a time and an amount of money, everywhere (lists, details, pages, templates).

- A time: UTC, to the second, with the zone: ``2026-05-29 12:00:00 UTC`` (the same as the
  DATETIME_FORMAT of panel.formats, which Django's own fields use).
- Money: the account's currency digits (MT5's ``currency_digits``, from its last snapshot; 2 when
  none was seen yet), thousands separated, with the currency when known: ``94,707.90 USD``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

DEFAULT_DIGITS = 2


def utc(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def currency_of(account: Any) -> tuple[int, str]:
    """(digits, currency code) of an account, from its last MT5 snapshot."""
    snapshot = getattr(account, "last_snapshot", None) or {}
    digits = snapshot.get("currency_digits")
    if not isinstance(digits, int) or not 0 <= digits <= 8:
        digits = DEFAULT_DIGITS
    currency = snapshot.get("currency")
    return digits, currency if isinstance(currency, str) else ""


def money(value: Decimal | float | int | str | None, account: Any = None, *, with_currency: bool = False) -> str:
    """An amount rounded to the account's currency digits (2 without an account)."""
    if value is None or value == "":
        return "—"
    digits, currency = currency_of(account) if account is not None else (DEFAULT_DIGITS, "")
    amount = Decimal(str(value)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    text = f"{amount:,.{digits}f}"
    return f"{text} {currency}" if with_currency and currency else text


def plain_number(value: Decimal | float | int | None) -> str:
    """Lots, percentages: as written, without the database's trailing zeros (1.00000000 is 1)."""
    if value is None:
        return "—"
    text = format(Decimal(str(value)).normalize(), "f")
    return text
