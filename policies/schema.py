"""The policy snapshot's payload (RISK_RULES.md, with its "Rules v2" fields): the one schema.

`PolicyPayload` validates the payload of every `policy_snapshot` request, gives its field errors,
is the `payload` of the documented policy envelope, and is what `risk.rules.Policy` reads a stored
snapshot with (context `STORED`). What only the risk engine's calendar can judge (a starting
balance date after the current trading day) is its objection, through `policies.hooks`.
"""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import MISSING, Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

from bridgeproject.schema import ClockTime, IsoDate, Number, OneOf, RequestModel, Text

MAX_VOLUME = Decimal("1000")
# Below 10^12: the risk state stores money as numeric(20, 8) (an amount of 10^12 would overflow it).
MONEY_MAX = Decimal("999999999999.99")

Money = Number(ge=Decimal(0), le=MONEY_MAX, places=2)
# A percent is > 0 and <= 100 (RISK_RULES v2); null, where allowed, turns its rule off. A stored
# snapshot from before v2 may hold 0: it keeps its old meaning, so the account stays watched.
Percent = Number(gt=Decimal(0), le=Decimal(100), stored_ge=Decimal(0))
Lots = Number(gt=Decimal(0), le=MAX_VOLUME)
Count = Field(strict=True, ge=0, le=1_000_000)
PERCENT_HELP = "Above 0, at most 100; null turns the rule off."


class EnforcementFlags(RequestModel):
    close_position_on_single_trade_breach: StrictBool
    close_all_on_daily_dd: StrictBool
    close_all_on_total_dd: StrictBool = True
    disable_trading_on_breach: StrictBool
    # RISK_RULES v2 "More rules": absent means true. Left out when absent, so a stored snapshot's
    # payload (and its fingerprint) is what Laravel sent.
    close_excess_positions: StrictBool | MISSING = Field(
        MISSING, description="Close positions beyond max_open_positions, newest first (absent: true)."
    )
    close_oversized_positions: StrictBool | MISSING = Field(
        MISSING, description="Close the volume above max_position_volume (absent: true)."
    )
    close_positions_without_sl: StrictBool | MISSING = Field(
        MISSING, description="Close a position without a stop loss after the grace (absent: true)."
    )
    close_all_before_weekend: StrictBool | MISSING = Field(
        MISSING, description="Close all past close_before_weekend on Friday (absent: true)."
    )


class PolicyPayload(RequestModel):
    """A policy snapshot's payload; every field's meaning is RISK_RULES.md (v2 fields optional)."""

    account_status: Annotated[str, Text(max_length=32)]
    policy_version: Annotated[int, Field(strict=True, ge=1, le=2**31 - 1)]
    initial_balance_snapshot: Annotated[Decimal, Number(gt=Decimal(0), le=MONEY_MAX, places=2)]
    daily_starting_balance: Annotated[Decimal, Money]
    daily_starting_balance_date: Annotated[date, IsoDate()]
    max_daily_dd_pct: Annotated[Decimal, Percent] | None = Field(description=PERCENT_HELP)
    max_total_dd_pct: Annotated[Decimal, Percent] | None = Field(description=PERCENT_HELP)
    drawdown_type: Annotated[str, OneOf(["equity", "balance"])]
    lock_trailing_drawdown: StrictBool
    trailing_drawdown: StrictBool | MISSING = MISSING
    daily_dd_base: Annotated[str, OneOf(["starting_balance", "initial_balance"])] | MISSING = MISSING
    daily_reset_time_utc: Annotated[time, ClockTime()] | MISSING = MISSING
    max_single_trade_loss_pct: Annotated[Decimal, Percent] | None = Field(description=PERCENT_HELP)
    max_single_trade_loss_violations_allowed: Annotated[int, Count]
    current_single_trade_exceed_count: Annotated[int, Count]
    high_water_mark: Annotated[Decimal, Money] | MISSING | None = MISSING
    enforcement_flags: EnforcementFlags
    # Rules v2: the trading day in a named time zone.
    daily_reset_timezone: Annotated[str, Text(max_length=64)] | MISSING | None = Field(
        MISSING, description="IANA name (Europe/Prague); absent: daily_reset_time_utc in UTC."
    )
    daily_reset_time: Annotated[time, ClockTime()] | MISSING | None = Field(
        MISSING, description="Local HH:MM in daily_reset_timezone (absent: 00:00)."
    )
    daily_reference_fallback: Annotated[str, OneOf(["balance", "equity", "max_balance_equity"])] | MISSING = Field(
        MISSING, description="D the bridge takes at the reset when Laravel's snapshot is late (absent: balance)."
    )
    # Rules v2: trailing drawdown as the firms define it; the breach boundary; reinstatement.
    trailing_source: Annotated[str, OneOf(["equity", "balance", "eod_balance"])] | MISSING = Field(
        MISSING, description="What the high-water mark follows (absent: drawdown_type)."
    )
    trailing_lock_offset: Annotated[Decimal, Money] | MISSING = Field(
        MISSING, description="With the lock, the floor stops at I + this (absent: 0)."
    )
    breach_at_floor: StrictBool | MISSING = Field(
        MISSING, description="Reaching the floor is a breach (absent: false, strictly below)."
    )
    reinstate: StrictBool | MISSING = Field(
        MISSING, description="Lift a lifetime breach and take the violation count from this snapshot."
    )
    # Rules v2: more rules, each off when absent or null.
    max_open_positions: Annotated[int, Field(strict=True, ge=0, le=10000)] | MISSING | None = Field(
        MISSING, description="Absent or null: off."
    )
    max_position_volume: Annotated[Decimal, Lots] | MISSING | None = Field(
        MISSING, description="Lots; absent or null: off."
    )
    max_total_volume: Annotated[Decimal, Lots] | MISSING | None = Field(
        MISSING, description="Open lots; absent or null: off."
    )
    require_stop_loss: StrictBool | MISSING = Field(
        MISSING, description="Refuse opens without a stop loss; close such positions after the grace."
    )
    stop_loss_grace_seconds: Annotated[int, Field(strict=True, ge=0, le=86_400)] | MISSING = Field(
        MISSING, description="Absent: 30."
    )
    close_before_weekend: Annotated[time, ClockTime()] | MISSING | None = Field(
        MISSING, description="Local HH:MM on Friday, in the reset time zone; absent or null: off."
    )
    profit_target_pct: Annotated[Decimal, Number(gt=Decimal(0), le=Decimal(1000))] | MISSING | None = Field(
        MISSING, description="Reported when M reaches I x (1 + pct%); absent or null: off."
    )

    @field_validator("daily_reset_timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if isinstance(value, str):
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise PydanticCustomError(
                    "time_zone", "Must be an IANA time zone name, such as Europe/Prague."
                ) from None
        return value
