"""Fixtures for the simulator, the official adapter and the mt5sim command.

Personas: alice trades on account 7001 (100,000 USD), bob on 7002 (50,000 USD) on the same
simulated server. Quotes are pinned to known values so every number in a test is exact.

Test modules load this as a plugin (``pytest_plugins``) and also import its constants, so it
opts out of assertion rewriting: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from execution.adapters.official import OfficialGateway
from execution.models import SimAccount
from execution.simulator import SimulatedMetaTrader5
from execution.simulator.service import sim_account_create, sim_set_price

SERVER = "Broker-Server"
ALICE = 7001
BOB = 7002
MAGIC = 424242

PRICES = {
    "EURUSD": ("1.08500", "1.08510"),
    "GBPUSD": ("1.27000", "1.27014"),
    "USDJPY": ("155.000", "155.012"),
    "XAUUSD": ("2350.00", "2350.25"),
    "US30": ("39000.0", "39002.0"),
}


def pin_prices() -> None:
    for symbol, (bid, ask) in PRICES.items():
        sim_set_price(symbol, bid, ask)


@pytest.fixture
def alice_account(db: None) -> SimAccount:
    account, _ = sim_account_create(ALICE, Decimal("100000"), server=SERVER)
    pin_prices()
    return account


@pytest.fixture
def bob_account(db: None) -> SimAccount:
    account, _ = sim_account_create(BOB, Decimal("50000"), server=SERVER)
    return account


@pytest.fixture
def terminal(alice_account: SimAccount) -> SimulatedMetaTrader5:
    """A simulated terminal logged into alice's account."""
    mt5 = SimulatedMetaTrader5()
    assert mt5.initialize(login=ALICE, server=SERVER), mt5.last_error()
    return mt5


@pytest.fixture
def gateway(alice_account: SimAccount) -> Iterator[OfficialGateway]:
    """The official adapter, unchanged, over a fresh simulated terminal."""
    yield OfficialGateway(SimulatedMetaTrader5(), magic=MAGIC, backend="simulator", verify_account=False)


def market_buy(mt5: SimulatedMetaTrader5, symbol: str = "EURUSD", volume: float = 1.0, **extra: object) -> dict:
    request = {
        "action": mt5.TRADE_ACTION_DEAL,
        "symbol": symbol,
        "volume": volume,
        "type": mt5.ORDER_TYPE_BUY,
        "type_filling": mt5.ORDER_FILLING_IOC,
        "deviation": 20,
        "magic": MAGIC,
        "comment": "test",
    }
    request.update(extra)
    return request
