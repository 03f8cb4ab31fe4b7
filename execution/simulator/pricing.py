"""Money math of the simulated trade server: profit, margin and currency conversion, in Decimal.

MT5 computes a position's profit in the symbol's profit currency and converts it into the
deposit currency at the current rate, rounded to the account's currency digits. The same
rules are used for open positions (floating P/L) and for the out deals that realise it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_UP, Decimal

from execution.simulator import constants as c

ZERO = Decimal("0")
ONE = Decimal("1")


class QuoteSource:
    """Bid/ask by symbol name for conversions; loads the other symbols only if a conversion needs them."""

    def __init__(
        self, known: Mapping[str, tuple[Decimal, Decimal]], loader: Callable[[], dict[str, tuple[Decimal, Decimal]]]
    ):
        self._quotes = dict(known)
        self._loader = loader
        self._loaded_all = False

    def get(self, name: str) -> tuple[Decimal, Decimal] | None:
        if name not in self._quotes and not self._loaded_all:
            self._quotes.update(self._loader())
            self._loaded_all = True
        return self._quotes.get(name)


def conversion_rate(
    from_ccy: str, to_ccy: str, quotes: QuoteSource, *, own_symbol: str = "", own_price: Decimal | None = None
) -> Decimal:
    """The rate turning an amount in ``from_ccy`` into ``to_ccy``.

    When the position's own symbol is the converter (USDJPY profit in JPY for a USD account)
    MT5's figure is the profit divided by the price the position is valued at, so that price
    is used; otherwise the converter symbol's bid. Crosses go through USD.
    """
    if from_ccy == to_ccy:
        return ONE
    direct, inverse = f"{from_ccy}{to_ccy}", f"{to_ccy}{from_ccy}"
    if own_price is not None and own_symbol == direct:
        return own_price
    if own_price is not None and own_symbol == inverse:
        return ONE / own_price
    quote = quotes.get(direct)
    if quote is not None:
        return quote[0]
    quote = quotes.get(inverse)
    if quote is not None:
        return ONE / quote[0]
    if "USD" not in (from_ccy, to_ccy):
        return conversion_rate(from_ccy, "USD", quotes) * conversion_rate("USD", to_ccy, quotes)
    raise LookupError(f"no symbol converts {from_ccy} into {to_ccy}")


def money(amount: Decimal, digits: int) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)


def price_round(price: Decimal, digits: int) -> Decimal:
    return price.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)


def profit(
    *,
    symbol: str,
    currency_profit: str,
    contract_size: Decimal,
    is_buy: bool,
    volume: Decimal,
    price_open: Decimal,
    price_close: Decimal,
    account_currency: str,
    account_digits: int,
    quotes: QuoteSource,
) -> Decimal:
    """Profit of ``volume`` lots from ``price_open`` to ``price_close``, in the deposit currency."""
    move = (price_close - price_open) if is_buy else (price_open - price_close)
    raw = move * contract_size * volume
    rate = conversion_rate(currency_profit, account_currency, quotes, own_symbol=symbol, own_price=price_close)
    return money(raw * rate, account_digits)


def margin(
    *,
    symbol: str,
    calc_mode: int,
    currency_margin: str,
    contract_size: Decimal,
    volume: Decimal,
    price: Decimal,
    leverage: int,
    account_currency: str,
    account_digits: int,
    quotes: QuoteSource,
) -> Decimal:
    """Margin for ``volume`` lots at ``price`` (MT5's formulas for the calc modes the simulator uses)."""
    lots = volume * contract_size
    if calc_mode == c.SYMBOL_CALC_MODE_FOREX:
        raw = lots / leverage
    elif calc_mode == c.SYMBOL_CALC_MODE_FOREX_NO_LEVERAGE:
        raw = lots
    elif calc_mode == c.SYMBOL_CALC_MODE_CFDLEVERAGE:
        raw = lots * price / leverage
    else:  # CFD, CFD index and the exchange modes: full notional
        raw = lots * price
    rate = conversion_rate(currency_margin, account_currency, quotes, own_symbol=symbol, own_price=price)
    return money(raw * rate, account_digits)
