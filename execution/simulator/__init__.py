"""A faithful, database-backed stand-in for the MetaTrader5 module (see ``terminal.SimulatedMetaTrader5``).

``execution.models`` reads this package's constants, so the package is imported before Django's
app registry is ready; the terminal needs the models, so it is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from execution.simulator.terminal import SimulatedMetaTrader5

__all__ = ["SimulatedMetaTrader5"]


def __getattr__(name: str) -> Any:
    if name == "SimulatedMetaTrader5":
        from execution.simulator.terminal import SimulatedMetaTrader5

        return SimulatedMetaTrader5
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
