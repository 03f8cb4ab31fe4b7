"""The symbols every simulated server carries, and how the trade server and the terminal read
them: whole rows, fresh on every call, the seed symbols created on first use.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from execution.models import SimSymbol
from execution.simulator import constants as c
from execution.simulator import sql
from execution.simulator.pricing import price_round
from execution.simulator.stamps import now_msc

FX = {"trade_calc_mode": c.SYMBOL_CALC_MODE_FOREX, "trade_contract_size": Decimal("100000")}
FOK_IOC = c.SYMBOL_FILLING_FOK | c.SYMBOL_FILLING_IOC

# The five symbols every simulated server carries. XAUUSD and US30 allow IOC but not FOK and
# USDJPY is on instant execution (FOK only), so the adapter's filling logic is always exercised.
SEED_SYMBOLS: tuple[dict[str, Any], ...] = (
    {
        "name": "EURUSD", "description": "Euro vs US Dollar", "currency_base": "EUR", "currency_profit": "USD",
        "currency_margin": "EUR", "digits": 5, "point": Decimal("0.00001"), **FX, "filling_mode": FOK_IOC,
        "typical_spread": 10, "swap_long": Decimal("-7.20"), "swap_short": Decimal("2.10"),
        "commission_per_lot": Decimal("3.50"), "anchor": Decimal("1.08500"),
    },
    {
        "name": "GBPUSD", "description": "Great Britain Pound vs US Dollar", "currency_base": "GBP",
        "currency_profit": "USD", "currency_margin": "GBP", "digits": 5, "point": Decimal("0.00001"), **FX,
        "filling_mode": FOK_IOC, "typical_spread": 14, "swap_long": Decimal("-5.40"), "swap_short": Decimal("1.20"),
        "commission_per_lot": Decimal("3.50"), "anchor": Decimal("1.27000"),
    },
    {
        "name": "USDJPY", "description": "US Dollar vs Japanese Yen", "currency_base": "USD", "currency_profit": "JPY",
        "currency_margin": "USD", "digits": 3, "point": Decimal("0.001"), **FX, "filling_mode": c.SYMBOL_FILLING_FOK,
        "trade_exemode": c.SYMBOL_TRADE_EXECUTION_INSTANT, "typical_spread": 12, "swap_long": Decimal("8.10"),
        "swap_short": Decimal("-15.30"), "commission_per_lot": Decimal("3.50"), "anchor": Decimal("155.000"),
    },
    {
        "name": "XAUUSD", "description": "Gold vs US Dollar", "currency_base": "XAU", "currency_profit": "USD",
        "currency_margin": "USD", "digits": 2, "point": Decimal("0.01"),
        "trade_calc_mode": c.SYMBOL_CALC_MODE_CFDLEVERAGE, "trade_contract_size": Decimal("100"),
        "filling_mode": c.SYMBOL_FILLING_IOC, "typical_spread": 25, "volume_max": Decimal("50"),
        "swap_long": Decimal("-28.50"), "swap_short": Decimal("12.40"), "commission_per_lot": Decimal("0"),
        "anchor": Decimal("2350.00"),
    },
    {
        "name": "US30", "description": "Dow Jones Industrial Average (cash)", "currency_base": "USD",
        "currency_profit": "USD", "currency_margin": "USD", "digits": 1, "point": Decimal("0.1"),
        "trade_calc_mode": c.SYMBOL_CALC_MODE_CFDLEVERAGE, "trade_contract_size": Decimal("1"),
        "filling_mode": c.SYMBOL_FILLING_IOC, "typical_spread": 20, "volume_min": Decimal("0.1"),
        "volume_step": Decimal("0.1"), "volume_max": Decimal("50"), "swap_long": Decimal("-4.80"),
        "swap_short": Decimal("-1.10"), "commission_per_lot": Decimal("0"), "anchor": Decimal("39000.0"),
    },
)  # fmt: skip
SEED_NAMES = frozenset(spec["name"] for spec in SEED_SYMBOLS)


def ensure_symbols() -> None:
    """Create the seed symbols that are missing (safe to race: conflicts are ignored)."""
    stamp = now_msc()
    rows = []
    for spec in SEED_SYMBOLS:
        ask = price_round(spec["anchor"] + spec["typical_spread"] * spec["point"], spec["digits"])
        rows.append(SimSymbol(**spec, bid=spec["anchor"], ask=ask, price_time_msc=stamp))
    SimSymbol.objects.bulk_create(rows, ignore_conflicts=True)


def read_symbols(**filters: Any) -> list[sql.Symbol]:
    """Every symbol by name, or the one ``name=`` names: whole rows, read fresh each time
    (the feed moves the quotes and the mt5sim CLI opens and closes sessions); the seed symbols
    are created on first use."""
    rows = sql.symbol_rows(**filters)
    if not rows and (not filters or filters.get("name") in SEED_NAMES):
        ensure_symbols()
        rows = sql.symbol_rows(**filters)
    return rows
