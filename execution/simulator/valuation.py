"""Open positions valued for one account: each position's current price and profit, the
account's floating profit and used margin, and the quotes those need.

The money rules are ``pricing``'s; a ``Valuation`` applies them in one account's deposit
currency, with its currency digits and leverage. The terminal values what it reports with the
logged-in account's; the trade server values its margin check with the one it is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import DecimalField, F, QuerySet, Sum

from execution.models import SimPosition, SimSymbol
from execution.simulator import constants as c
from execution.simulator import pricing, sql
from execution.simulator.pricing import ZERO


@dataclass(frozen=True)
class Valuation:
    """An account's deposit currency, its currency digits and its leverage (a terminal that is
    not logged in values in USD, 2 digits, 1:100)."""

    currency: str = "USD"
    currency_digits: int = 2
    leverage: int = 100

    @staticmethod
    def quotes(rows: Iterable[sql.QuotedSymbol] = ()) -> pricing.QuoteSource:
        def load_all() -> dict[str, tuple[Decimal, Decimal]]:
            return {name: (bid, ask) for name, bid, ask in SimSymbol.objects.values_list("name", "bid", "ask")}

        return pricing.QuoteSource({s.name: (s.bid, s.ask) for s in rows}, load_all)

    def value(self, position: SimPosition | sql.PositionRow, quotes: pricing.QuoteSource) -> tuple[Decimal, Decimal]:
        """(price_current, profit) of an open position: buys are valued at bid, sells at ask."""
        symbol = position.symbol
        is_buy = position.type == c.POSITION_TYPE_BUY
        current = symbol.bid if is_buy else symbol.ask
        value = pricing.profit(
            symbol=symbol.name, currency_profit=symbol.currency_profit, contract_size=symbol.trade_contract_size,
            is_buy=is_buy, volume=position.volume, price_open=position.price_open, price_close=current,
            account_currency=self.currency, account_digits=self.currency_digits, quotes=quotes,
        )  # fmt: skip
        return current, value

    def margin(self, symbol: sql.QuotedSymbol, volume: Decimal, price: Decimal, quotes: pricing.QuoteSource) -> Decimal:
        return pricing.margin(
            symbol=symbol.name, calc_mode=symbol.trade_calc_mode, currency_margin=symbol.currency_margin,
            contract_size=symbol.trade_contract_size, volume=volume, price=price, leverage=self.leverage,
            account_currency=self.currency, account_digits=self.currency_digits, quotes=quotes,
        )  # fmt: skip

    def exposure(self, positions: list[sql.PositionRow]) -> tuple[Decimal, Decimal]:
        """(floating profit incl. swap, used margin) of the given open positions."""
        quotes = self.quotes(p.symbol for p in positions)
        floating = margin = ZERO
        for position in positions:
            current, value = self.value(position, quotes)
            floating += value + position.swap
            margin += self.margin(position.symbol, position.volume, current, quotes)
        return floating, margin

    def aggregate_exposure(self, account_id: int, known: dict[int, sql.Symbol]) -> tuple[Decimal, Decimal]:
        """``exposure`` from one GROUP BY per (symbol, side), so the margin check before an
        order stays cheap however many positions the account holds. Profit and margin are
        linear in volume, so summing volume and volume x open price per group is exact up to
        MT5's per-position rounding, which a margin check does not need."""
        groups = self.position_groups(SimPosition.objects.filter(account_id=account_id))
        return self.grouped_exposure(groups, known)

    @staticmethod
    def position_groups(positions: QuerySet[SimPosition], *by: str) -> list[dict[str, Any]]:
        """The positions summed per (``by``..., symbol, side): lots, volume x open price, swap."""
        return list(
            positions.values(*by, "symbol_id", "type").annotate(
                lots=Sum("volume"),
                notional=Sum(
                    F("volume") * F("price_open"), output_field=DecimalField(max_digits=30, decimal_places=10)
                ),
                swap=Sum("swap"),
            )
        )

    def grouped_exposure(
        self, groups: list[dict[str, Any]], known: Mapping[int, sql.TradedSymbol]
    ) -> tuple[Decimal, Decimal]:
        """(floating profit incl. swap, used margin) of ``position_groups``' groups."""
        if not groups:
            return ZERO, ZERO
        missing = {g["symbol_id"] for g in groups} - known.keys()
        symbols: dict[int, sql.TradedSymbol] = dict(known)
        if missing:
            symbols.update((s.pk, s) for s in SimSymbol.objects.filter(pk__in=missing))
        quotes = self.quotes(symbols.values())
        floating = margin = ZERO
        for group in groups:
            symbol = symbols[group["symbol_id"]]
            is_buy = group["type"] == c.POSITION_TYPE_BUY
            current = symbol.bid if is_buy else symbol.ask
            lots, notional = group["lots"], group["notional"]
            move = current * lots - notional if is_buy else notional - current * lots
            rate = pricing.conversion_rate(
                symbol.currency_profit, self.currency, quotes, own_symbol=symbol.name, own_price=current
            )
            floating += move * symbol.trade_contract_size * rate + group["swap"]
            margin += self.margin(symbol, lots, current, quotes)
        return floating, margin
