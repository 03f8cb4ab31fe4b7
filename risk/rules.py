"""The risk rule table of RISK_RULES.md (with its "Rules v2"), as pure functions over immutable values.

Nothing here touches the database, MT5 or the clock (a payload is read with its request model,
`policies.schema.PolicyPayload`, and Django's pure date parsers): the caller passes the MT5
snapshot (`AccountView`), the policy snapshot Laravel sent (`Policy`) and the durable risk
state (`RiskState`), and gets back the breaches and the next state (`Evaluation`). That keeps
the rules testable number by number against the spec and fast enough to run for every
account every `RISK_POLL_INTERVAL_MS`. Before a new position is sent, `open_position_check`
answers whether the pre-trade limits refuse it.

How breaches are reported:
- `single_trade_loss` is reported once per position: the violation count must grow by exactly
  one per breaching position, so the state remembers the tickets already counted.
- Every other rule is reported on every evaluation in which it holds. Its scope (a ticket, the
  trading day, the trading week, the lifetime, the policy version) is what one protective
  action is keyed on (RISK_RULES "exactly one protective action per (account, rule, scope,
  policy_version)"), so the caller de-duplicates on `(login, rule_key, scope, policy_version)`;
  reporting them as a level also makes `Evaluation.breaches` the account's current breaches.
- `single_trade_loss_limit` is reported in the evaluation whose new position breaches take the
  count above the allowed number (scope "lifetime", so one action however often it recurs).

`RiskState` is frozen: `evaluate` and `apply_policy` return a new state, or the very same
object when nothing changed, so the caller can persist only when `new is not old`.

All money is `Decimal`. Floors and thresholds are rounded to the account's `currency_digits`
(half away from zero) before they are compared, so the figure shown is the figure compared.

Days (RISK_RULES "The trading day, in a named time zone"): a trading day starts at the local
reset time of `daily_reset_timezone` (UTC without one), follows daylight saving by itself, and
is named by the local calendar date of its last instant (`TradingCalendar`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from functools import partial
from typing import Any, Final, Literal, NamedTuple, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from bridgeproject.schema import STORED, field_errors
from policies.schema import PolicyPayload

__all__ = [
    "RULES",
    "AccountView",
    "Breach",
    "Evaluation",
    "OrderView",
    "Policy",
    "PolicyError",
    "PositionView",
    "Rejection",
    "RiskState",
    "Rule",
    "StalePolicyError",
    "SymbolView",
    "Thresholds",
    "TradingCalendar",
    "compile_policy",
    "daily_floor",
    "enforcement",
    "evaluate",
    "modify_position_check",
    "open_position_block",
    "open_position_check",
    "round_money",
    "starting_balance_date_problem",
    "total_floor",
    "trading_day",
]

RuleKey = Literal[
    "daily_drawdown",
    "total_drawdown",
    "single_trade_loss",
    "single_trade_loss_limit",
    "max_open_positions",
    "max_position_volume",
    "max_total_volume",
    "stop_loss_required",
    "single_trade_risk",
    "weekend_holding",
    "profit_target",
    "trading_disabled",
]
# close_position: close a ticket; reduce_position: close a ticket's volume above a limit;
# close_all: the account flat; cancel_order: one pending order; none: the escalation (it acts by
# disabling trading); report: report only; reject: refused before MT5 (pre-trade only).
Action = Literal["close_position", "reduce_position", "close_all", "cancel_order", "none", "report", "reject"]
ScopeKind = Literal["ticket", "order", "day", "week", "lifetime", "version", "command"]
DrawdownType = Literal["equity", "balance"]
DailyBase = Literal["starting_balance", "initial_balance"]
ReferenceSource = Literal["laravel", "bridge"]
ReferenceFallback = Literal["balance", "equity", "max_balance_equity"]
TrailingSource = Literal["equity", "balance", "eod_balance"]
BlockReason = Literal["account_not_active", "trading_disabled"]

ACTIVE: Final = "active"
_HUNDRED: Final = Decimal(100)
_ZERO: Final = Decimal(0)
# A floor below every value, so the first floor of a version is not held up by a previous one.
_NO_FLOOR: Final = Decimal("-Infinity")
_MIDNIGHT: Final = time(0, 0)
_ONE_DAY: Final = timedelta(days=1)
_FRIDAY: Final = 4


# --------------------------------------------------------------------------------------------
# The rule table (RISK_RULES.md "Rules", "Enforcement" and "More rules", one row per rule_key)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the rule table: what a breach of it does and which flag allows that."""

    key: RuleKey
    scope: ScopeKind
    action: Action
    flag: str | None  # the Policy attribute that enables the action; None: no flag
    hard: bool  # a hard breach disables trading when `disable_trading_on_breach`
    param: str  # the Policy attribute reported as `threshold_used` (None there: the rule is off)


# A rule breaches when the measured value is below its floor (`M < floor`, `L(p) < -threshold`),
# or on it too with `breach_at_floor` (`M <= floor`); a limit when the measured value is above it.
DAILY_DRAWDOWN: Final = Rule("daily_drawdown", "day", "close_all", "close_all_on_daily_dd", True, "max_daily_dd_pct")
TOTAL_DRAWDOWN: Final = Rule(
    "total_drawdown", "lifetime", "close_all", "close_all_on_total_dd", True, "max_total_dd_pct"
)
SINGLE_TRADE_LOSS: Final = Rule(
    "single_trade_loss",
    "ticket",
    "close_position",
    "close_position_on_single_trade_breach",
    False,
    "max_single_trade_loss_pct",
)
# The escalation closes nothing by itself: it marks the account hard-breached, which disables
# trading when `disable_trading_on_breach` is set. The spec names no flag for the report.
SINGLE_TRADE_LOSS_LIMIT: Final = Rule(
    "single_trade_loss_limit", "lifetime", "none", None, True, "max_single_trade_loss_pct"
)
# More rules (Rules v2): each off when its field is absent or null.
MAX_OPEN_POSITIONS: Final = Rule(
    "max_open_positions", "ticket", "close_position", "close_excess_positions", False, "max_open_positions"
)
MAX_POSITION_VOLUME: Final = Rule(
    "max_position_volume", "ticket", "reduce_position", "close_oversized_positions", False, "max_position_volume"
)
MAX_TOTAL_VOLUME: Final = Rule("max_total_volume", "day", "report", None, False, "max_total_volume")
STOP_LOSS_REQUIRED: Final = Rule(
    "stop_loss_required", "ticket", "close_position", "close_positions_without_sl", False, "require_stop_loss"
)
# Pre-trade only: an open_position whose loss at its stop loss would pass the single-trade threshold.
SINGLE_TRADE_RISK: Final = Rule("single_trade_risk", "command", "reject", None, False, "max_single_trade_loss_pct")
WEEKEND_HOLDING: Final = Rule(
    "weekend_holding", "week", "close_all", "close_all_before_weekend", False, "close_before_weekend"
)
PROFIT_TARGET: Final = Rule("profit_target", "version", "report", None, False, "profit_target_pct")
RULES: Final = (
    DAILY_DRAWDOWN,
    TOTAL_DRAWDOWN,
    SINGLE_TRADE_LOSS,
    SINGLE_TRADE_LOSS_LIMIT,
    MAX_OPEN_POSITIONS,
    MAX_POSITION_VOLUME,
    MAX_TOTAL_VOLUME,
    STOP_LOSS_REQUIRED,
    SINGLE_TRADE_RISK,
    WEEKEND_HOLDING,
    PROFIT_TARGET,
)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


class PolicyError(ValueError):
    """A policy snapshot payload that cannot be read as RISK_RULES.md describes."""


class StalePolicyError(PolicyError):
    """A snapshot older than the one the state was built from (PROTOCOL: 409, changes nothing)."""


@dataclass(frozen=True, slots=True)
class PositionView:
    """One open MT5 position as the risk rules see it."""

    ticket: int
    symbol: str
    volume: Decimal
    profit: Decimal
    swap: Decimal
    commission: Decimal
    opened_at: datetime | None = None
    sl: Decimal | None = None  # None or 0: no stop loss

    @property
    def loss(self) -> Decimal:
        """`L(p)`: profit + swap + commission, negative when losing."""
        return self.profit + self.swap + self.commission


@dataclass(frozen=True, slots=True)
class AccountView:
    """One MT5 account snapshot; `observed_at` is when MT5 produced it (UTC)."""

    login: int
    balance: Decimal
    equity: Decimal
    positions: tuple[PositionView, ...]
    observed_at: datetime
    orders: tuple[tuple[int, datetime], ...] = ()  # pending orders: (ticket, placed at)
    currency_digits: int = 2

    def __post_init__(self) -> None:
        # Trading days are cut on instants; a naive time would put the cut elsewhere.
        object.__setattr__(self, "observed_at", _as_utc(self.observed_at))


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A policy snapshot's payload, typed. Build it with `Policy.from_payload`."""

    policy_version: int
    account_status: str
    initial_balance: Decimal  # I
    daily_starting_balance: Decimal  # D
    daily_starting_balance_date: date
    max_daily_dd_pct: Decimal | None  # None: the rule is off
    max_total_dd_pct: Decimal | None
    drawdown_type: DrawdownType
    lock_trailing_drawdown: bool
    trailing_drawdown: bool | None = None
    daily_dd_base: DailyBase = "starting_balance"
    daily_reset_time_utc: time = _MIDNIGHT
    daily_reset_timezone: str | None = None
    daily_reset_time: time | None = None  # local, with daily_reset_timezone
    daily_reference_fallback: ReferenceFallback = "balance"
    trailing_source: TrailingSource | None = None  # None: the measured value (drawdown_type)
    trailing_lock_offset: Decimal = _ZERO
    breach_at_floor: bool = False
    reinstate: bool = False
    max_single_trade_loss_pct: Decimal | None
    max_single_trade_loss_violations_allowed: int
    current_single_trade_exceed_count: int = 0
    max_open_positions: int | None = None
    max_position_volume: Decimal | None = None
    max_total_volume: Decimal | None = None
    require_stop_loss: bool = False
    stop_loss_grace_seconds: int = 30
    close_before_weekend: time | None = None  # local Friday time, in the reset time zone
    profit_target_pct: Decimal | None = None
    close_position_on_single_trade_breach: bool
    close_all_on_daily_dd: bool
    close_all_on_total_dd: bool = True
    close_excess_positions: bool = True
    close_oversized_positions: bool = True
    close_positions_without_sl: bool = True
    close_all_before_weekend: bool = True
    disable_trading_on_breach: bool
    high_water_mark: Decimal | None = None
    thresholds: Thresholds = field(init=False, repr=False, compare=False)
    calendar: TradingCalendar = field(init=False, repr=False, compare=False)
    _by_digits: dict[int, Thresholds] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.daily_reset_timezone is not None:
            calendar = TradingCalendar.shared(_zone(self.daily_reset_timezone), self.daily_reset_time or _MIDNIGHT)
        else:
            calendar = TradingCalendar.shared(UTC, self.daily_reset_time_utc)
        object.__setattr__(self, "calendar", calendar)
        object.__setattr__(self, "_by_digits", {})
        object.__setattr__(self, "thresholds", self.thresholds_for(2))

    def thresholds_for(self, digits: int) -> Thresholds:
        """The thresholds in money rounded to `digits` (an account's `currency_digits`), fixed once."""
        found = self._by_digits.get(digits)
        if found is None:
            found = self._by_digits[digits] = compile_policy(self, digits)
        return found

    @property
    def is_trailing(self) -> bool:
        """Trailing when `trailing_drawdown` is true, or absent and the trailing lock is on."""
        if self.trailing_drawdown is None:
            return self.lock_trailing_drawdown
        return self.trailing_drawdown

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Policy:
        """Read the `payload` object of a `policy_snapshot` request, as sent or as stored, with the
        one schema that validated it at intake (`policies.schema.PolicyPayload`)."""
        try:
            model = PolicyPayload.model_validate(payload, context=STORED)
        except ValidationError as exc:
            raise PolicyError(
                "; ".join(f"{error['field']}: {error['message']}" for error in field_errors(exc))
            ) from None
        values = model.model_dump()
        values["initial_balance"] = values.pop("initial_balance_snapshot")
        values.update(values.pop("enforcement_flags"))
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What a policy fixes once (for one `currency_digits`), so an evaluation only adds and compares.

    A rule that is off has `None` where its amount would be."""

    digits: int
    quantum: Decimal  # 10 ** -digits
    measure_equity: bool
    trailing_source: TrailingSource
    initial_balance: Decimal
    daily_fraction: Decimal | None  # max_daily_dd_pct / 100
    daily_on_initial: bool
    daily_amount_on_initial: Decimal  # max_daily_dd_pct% x I
    laravel_daily_floor: Decimal | None  # the daily floor for Laravel's D itself, rounded
    total_amount: Decimal | None  # max_total_dd_pct% x I
    static_total_floor: Decimal
    trailing: bool
    lock: bool
    lock_at: Decimal  # I + trailing_lock_offset
    single_trade_threshold: Decimal | None  # max_single_trade_loss_pct% x I, rounded
    single_trade_limit: Decimal | None  # -threshold: L(p) below this breaches
    violations_allowed: int
    at_floor: bool  # breach_at_floor
    fallback: ReferenceFallback
    max_open_positions: int | None
    max_position_volume: Decimal | None
    max_total_volume: Decimal | None
    require_stop_loss: bool
    stop_loss_grace: timedelta
    close_before_weekend: time | None
    profit_target: Decimal | None  # I x (1 + pct%), rounded
    # This many positions, none above max_position_volume, cannot pass max_total_volume
    # (max_total_volume // max_position_volume; -1 when either is off: add the volumes up).
    positions_within_total: int
    position_rules: bool  # any of "More rules" that looks at positions is on
    active: bool
    disable_trading: bool


def round_money(amount: Decimal, quantum: Decimal) -> Decimal:
    """To the account's currency digits, half away from zero (RISK_RULES "Breach boundary and rounding")."""
    return amount.quantize(quantum, rounding=ROUND_HALF_UP)


_round = round_money


def compile_policy(policy: Policy, digits: int = 2) -> Thresholds:
    """Fix the policy's thresholds in money, rounded to `digits` (`policy.thresholds_for` caches it)."""
    quantum = Decimal(1).scaleb(-digits)
    i = policy.initial_balance
    daily_fraction = None if policy.max_daily_dd_pct is None else policy.max_daily_dd_pct / _HUNDRED
    total_amount = None if policy.max_total_dd_pct is None else policy.max_total_dd_pct / _HUNDRED * i
    single = None
    if policy.max_single_trade_loss_pct is not None:
        single = _round(policy.max_single_trade_loss_pct / _HUNDRED * i, quantum)
    target = None
    if policy.profit_target_pct is not None:
        target = _round(i * (1 + policy.profit_target_pct / _HUNDRED), quantum)
    thresholds = Thresholds(
        digits=digits,
        quantum=quantum,
        measure_equity=policy.drawdown_type == "equity",
        trailing_source=policy.trailing_source or policy.drawdown_type,
        initial_balance=i,
        daily_fraction=daily_fraction,
        daily_on_initial=policy.daily_dd_base == "initial_balance",
        daily_amount_on_initial=_ZERO if daily_fraction is None else daily_fraction * i,
        laravel_daily_floor=None,
        total_amount=total_amount,
        static_total_floor=_NO_FLOOR if total_amount is None else i - total_amount,
        trailing=policy.is_trailing,
        lock=policy.lock_trailing_drawdown,
        lock_at=i + policy.trailing_lock_offset,
        single_trade_threshold=single,
        single_trade_limit=None if single is None else -single,
        violations_allowed=policy.max_single_trade_loss_violations_allowed,
        at_floor=policy.breach_at_floor,
        fallback=policy.daily_reference_fallback,
        max_open_positions=policy.max_open_positions,
        max_position_volume=policy.max_position_volume,
        max_total_volume=policy.max_total_volume,
        require_stop_loss=policy.require_stop_loss,
        stop_loss_grace=timedelta(seconds=policy.stop_loss_grace_seconds),
        close_before_weekend=policy.close_before_weekend,
        profit_target=target,
        positions_within_total=-1
        if policy.max_position_volume is None or policy.max_total_volume is None
        else int(policy.max_total_volume // policy.max_position_volume),
        position_rules=policy.max_open_positions is not None
        or policy.max_position_volume is not None
        or policy.max_total_volume is not None
        or policy.require_stop_loss
        or policy.close_before_weekend is not None,
        active=policy.account_status == ACTIVE,
        disable_trading=policy.disable_trading_on_breach,
    )
    # Most evaluations measure against Laravel's own D: fix that floor once too.
    return replace(thresholds, laravel_daily_floor=daily_floor(thresholds, policy.daily_starting_balance))


# --------------------------------------------------------------------------------------------
# Floors
# --------------------------------------------------------------------------------------------


def daily_floor(t: Thresholds, reference: Decimal) -> Decimal | None:
    """`daily_floor = D - max_daily_dd_pct% x base`, base = D, or I when `daily_dd_base` says so;
    rounded. None: the rule is off."""
    if t.daily_fraction is None:
        return None
    if t.daily_on_initial:
        return _round(reference - t.daily_amount_on_initial, t.quantum)
    return _round(reference - reference * t.daily_fraction, t.quantum)


def total_floor(t: Thresholds, high_water_mark: Decimal, previous: Decimal) -> Decimal:
    """Static `I - pct% x I` or trailing `HWM - pct% x I` (with the lock, never above
    `I + trailing_lock_offset`), rounded; never below `previous` (the floor of this policy version
    so far). 0 when the rule is off: nothing is compared with it.

    Rounding before the ratchet gives what rounding after it would (rounding is monotone), so the
    durable floor is the rounded one, the figure shown and compared."""
    if t.total_amount is None:
        return _ZERO
    floor = high_water_mark - t.total_amount if t.trailing else t.static_total_floor
    if t.lock and floor > t.lock_at:
        floor = t.lock_at
    floor = _round(floor, t.quantum)
    if t.digits != 2:  # a floor fixed with the policy's default digits, held at the account's
        previous = _round(previous, t.quantum)
    return floor if floor > previous else previous


# --------------------------------------------------------------------------------------------
# Trading days
# --------------------------------------------------------------------------------------------


class TradingCalendar:
    """Trading days that start at a local time of a time zone (RISK_RULES "The trading day").

    A day starts at the first instant whose local wall-clock time on its start date is at or past
    `reset` (the earlier one when the clocks go back, the end of the gap when they skip it), and is
    named by the local date of its last instant: its start date with a 00:00 reset, the next date
    otherwise. Remembers the last day it looked up, so the monitor's every-poll question is two
    comparisons."""

    __slots__ = ("_last", "_shift", "_weekend", "reset", "zone")

    def __init__(self, zone: tzinfo, reset: time) -> None:
        self.zone = zone
        self.reset = reset.replace(tzinfo=None)
        self._shift = timedelta(0) if self.reset == _MIDNIGHT else _ONE_DAY
        self._last: tuple[datetime, datetime, date] | None = None
        self._weekend: dict[time, tuple[datetime, datetime, tuple[datetime, datetime, date] | None]] = {}

    @classmethod
    def shared(cls, zone: tzinfo, reset: time) -> TradingCalendar:
        """The one calendar of (zone, reset) in this process: the accounts that share it share
        its remembered day, which stays in the CPU's cache across a monitor's cycle."""
        key = (str(zone), reset.replace(tzinfo=None))
        calendar = _CALENDARS.get(key)
        if calendar is None:
            if len(_CALENDARS) > 10_000:
                _CALENDARS.clear()
            calendar = _CALENDARS[key] = cls(zone, reset)
        return calendar

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TradingCalendar) and (self.zone, self.reset) == (other.zone, other.reset)

    def __hash__(self) -> int:
        return hash((str(self.zone), self.reset))

    def __repr__(self) -> str:
        return f"TradingCalendar({self.zone}, {self.reset.isoformat('minutes')})"

    def local_instant(self, day: date, at: time) -> datetime:
        """The first instant (UTC) at or past local wall-clock `at` on local date `day`."""
        return _local_instant(day, at, self.zone)

    def start_of(self, name: date) -> datetime:
        """When the trading day named `name` starts (UTC)."""
        return self.local_instant(name - self._shift, self.reset)

    def end_of(self, name: date) -> datetime:
        """When the trading day named `name` ends: when the next one starts (UTC)."""
        last = self._last
        if last is not None and last[2] == name:
            return last[1]
        return self.start_of(name + _ONE_DAY)

    def day_of(self, at: datetime) -> date:
        """The name of the trading day `at` belongs to."""
        last = self._last
        if last is not None and last[0] <= at < last[1]:
            return last[2]
        return self.window_of(at)[2]

    def window_of(self, at: datetime) -> tuple[datetime, datetime, date]:
        """(start, end, name) of the trading day `at` belongs to."""
        at = _as_utc(at)
        local = at.astimezone(self.zone).date()
        start = self.local_instant(local, self.reset)
        if at < start:
            local -= _ONE_DAY
            start = self.local_instant(local, self.reset)
        end = self.local_instant(local + _ONE_DAY, self.reset)
        window = (start, end, local + self._shift)
        self._last = window
        return window

    def weekend_window(self, at: datetime, cutoff: time) -> tuple[datetime, datetime, date] | None:
        """(from, until, friday) when `at` is past `cutoff` local on a Friday and before the trading
        day named the following Monday starts; else None. Remembers the stretch of time its last
        answer holds for (a weekend, or the week between two)."""
        known = self._weekend.get(cutoff)
        if known is not None and known[0] <= at < known[1]:
            return known[2]
        local = at.astimezone(self.zone).date()
        friday = local - timedelta(days=(local.weekday() - _FRIDAY) % 7)
        begins = self.local_instant(friday, cutoff)
        ends = self.start_of(friday + timedelta(days=3))
        answer: tuple[datetime, datetime, date] | None
        if begins <= at < ends:
            answer = (begins, ends, friday)
            holds = (begins, ends)
        elif at < begins:
            answer, holds = None, (self.start_of(friday - timedelta(days=4)), begins)
        else:
            answer, holds = None, (ends, self.local_instant(friday + timedelta(days=7), cutoff))
        self._weekend[cutoff] = (holds[0], holds[1], answer)
        return answer


# TradingCalendar.shared's calendars, by (zone name, reset); declared in bridgeproject.caches.
_CALENDARS: dict[tuple[str, time], TradingCalendar] = {}


def _local_instant(day: date, at: time, zone: tzinfo) -> datetime:
    naive = datetime.combine(day, at)
    if zone is UTC:
        return naive.replace(tzinfo=UTC)
    # fold=0: of a wall-clock time that happens twice (clocks going back), the first.
    instant = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == naive:
        return instant
    # A wall-clock time the clocks skip: the day starts when they jump past it. Between the two
    # readings of the skipped time, find the first instant whose local time is at or past it.
    low = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = instant
    step = timedelta(seconds=1)
    while high - low > step:
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0) if high.microsecond else high


def trading_day(at: datetime, reset: time, zone: tzinfo = UTC) -> date:
    """The name of the trading day `at` belongs to, for days starting at local `reset` in `zone`."""
    return TradingCalendar(zone, reset).day_of(_as_utc(at))


def starting_balance_date_problem(policy: Policy, now: datetime) -> str | None:
    """A `daily_starting_balance_date` after the current trading day is refused (422): a typo must
    not disable an account for a year. One before it is stored (D stays the bridge's)."""
    today = policy.calendar.day_of(_as_utc(now))
    if policy.daily_starting_balance_date > today:
        return (
            f"{policy.daily_starting_balance_date.isoformat()} is after the current trading day"
            f" {today.isoformat()} ({policy.calendar!r})."
        )
    return None


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PolicyError(f"daily_reset_timezone: an IANA time zone name, got {name!r}") from None


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskState:
    """What the rules remember between evaluations; durable, so it survives restarts.

    `initial_balance` is the I the high-water mark was started from: a snapshot with another I
    restarts it. `total_floor` is this policy version's floor so far (a ratchet, rounded).
    `hard_breached` is a lifetime breach (total drawdown or the single-trade escalation);
    `trading_disabled_until` is when a daily breach's disable ends. Whether either actually
    blocks trading is `disable_trading_on_breach` of the policy in force (`open_position_block`).
    `last_trading_day` is the trading day of the latest evaluation (an `eod_balance` high-water
    mark takes the balance when it sees the next one start).
    """

    policy_version: int
    initial_balance: Decimal
    high_water_mark: Decimal
    total_floor: Decimal
    daily_reference: Decimal
    daily_reference_date: date
    daily_reference_source: ReferenceSource
    violation_count: int
    breached_tickets: frozenset[int] = frozenset()
    hard_breached: bool = False
    trading_disabled_until: datetime | None = None
    last_trading_day: date | None = None

    @classmethod
    def initial(cls, policy: Policy) -> RiskState:
        """The state for an account's first snapshot."""
        return cls.apply_policy(None, policy)

    @staticmethod
    def apply_policy(old: RiskState | None, policy: Policy) -> RiskState:
        """The state once a new policy snapshot is in force (same version: `old` unchanged)."""
        t = policy.thresholds
        i = policy.initial_balance
        restored = policy.high_water_mark
        if old is not None:
            if policy.policy_version < old.policy_version:
                raise StalePolicyError(f"policy_version {policy.policy_version} is older than {old.policy_version}")
            if policy.policy_version == old.policy_version:
                return old

        if old is None or old.initial_balance != i:
            # "HWM ... restarts at the new I when a snapshot changes I"; it is never below I.
            hwm = i if restored is None or restored < i else restored
        else:
            # A restored HWM lower than ours is Laravel lagging behind what the bridge saw.
            hwm = old.high_water_mark
            if restored is not None and restored > hwm:
                hwm = restored
        # "The floor never goes down within one policy version": a new version computes its
        # floor from its own fields and the durable HWM, so loosening a limit loosens the floor.
        floor = total_floor(t, hwm, _NO_FLOOR)

        if old is None or policy.daily_starting_balance_date >= old.daily_reference_date:
            reference = policy.daily_starting_balance
            reference_date = policy.daily_starting_balance_date
            source: ReferenceSource = "laravel"
        else:
            # The snapshot's D is for an earlier day than the one already started: the bridge's
            # D stays until Laravel's snapshot for the current day arrives.
            reference = old.daily_reference
            reference_date = old.daily_reference_date
            source = old.daily_reference_source

        # A lifetime breach is lifted, and the count taken from the snapshot, only by an
        # operator's explicit decision: a newer, active snapshot saying `reinstate`.
        reinstated = t.active and policy.reinstate
        count = policy.current_single_trade_exceed_count
        if old is not None and not reinstated and old.violation_count > count:
            count = old.violation_count
        return RiskState(
            policy_version=policy.policy_version,
            initial_balance=i,
            high_water_mark=hwm,
            total_floor=floor,
            daily_reference=reference,
            daily_reference_date=reference_date,
            daily_reference_source=source,
            violation_count=count,
            # Kept across versions: a still-open position must not be counted a second time.
            breached_tickets=frozenset() if old is None else old.breached_tickets,
            hard_breached=False if old is None else old.hard_breached and not reinstated,
            trading_disabled_until=None if old is None else old.trading_disabled_until,
            last_trading_day=None if old is None else old.last_trading_day,
        )


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


class Breach(NamedTuple):
    """One rule found broken, with what the report to Laravel needs.

    `threshold_used` is the policy's parameter (the panel's report: `threshold_used: 2` for the
    2 % single-trade rule; the count, lots or percent of the newer rules); `floor_or_limit` is
    the value `measured` passed (-2,000 for a 2 % single-trade limit on 100,000; for
    `single_trade_loss_limit` the allowed count, measured the count). `enabled` False means:
    record and report with `execution_status: "skipped"`. `explanation` is RISK_RULES
    "Explaining a breach": enough for Laravel and support to recompute the decision.

    Immutable; a named tuple for the reason `Evaluation` is one (a breach that holds is reported
    on every poll, and a frozen dataclass costs about three times as much to build). Two
    breaches are equal when their fields are, whatever `explain` holds.
    """

    rule_key: RuleKey
    scope: str
    threshold_used: Decimal
    floor_or_limit: Decimal
    measured: Decimal
    ticket: int | None
    action: Action
    enabled: bool
    hard: bool
    violation_count: int | None
    # Builds `explanation` when asked (most evaluations see a breach already acted on).
    explain: Callable[[], dict[str, Any]] | None = None

    @property
    def explanation(self) -> dict[str, Any] | None:
        """RISK_RULES "Explaining a breach": {measured, measured_kind, floor_or_limit, reference:
        {kind, value, source}, high_water_mark, rule_params}."""
        return None if self.explain is None else self.explain()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Breach):
            return NotImplemented
        return self[:-1] == other[:-1]

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, Breach):
            return NotImplemented
        return self[:-1] != other[:-1]

    def __hash__(self) -> int:
        return hash(self[:-1])

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields[:-1], self[:-1], strict=True))
        return f"Breach({fields})"


class Evaluation(NamedTuple):
    """The outcome of one evaluation: breaches, the next state, and the figures behind them.

    A drawdown rule that is off has no floor: its floor and headroom are None. Immutable like
    the rest; a named tuple because one is made per account per poll, and a frozen dataclass
    costs several times as much to build."""

    breaches: tuple[Breach, ...]
    state: RiskState
    daily_floor: Decimal | None
    total_floor: Decimal | None  # rounded, as compared
    measured: Decimal  # M
    trading_enabled: bool
    trading_block: BlockReason | None

    # The headrooms are worked out when read (the monitor's cycle reads neither).
    @property
    def daily_headroom(self) -> Decimal | None:
        """`M - daily_floor`; None while the daily rule is off."""
        return None if self.daily_floor is None else self.measured - self.daily_floor

    @property
    def total_headroom(self) -> Decimal | None:
        """`M - total_floor`; None while the total rule is off."""
        return None if self.total_floor is None else self.measured - self.total_floor


# What `Evaluation._make` and `Breach._make` do without their Python-level call: the evaluation
# builds one per account per poll and one per breach that holds. The tuples given are complete.
_new_evaluation: Final = cast(Callable[[tuple[Any, ...]], Evaluation], partial(tuple.__new__, Evaluation))
_new_breach: Final = cast(Callable[[tuple[Any, ...]], Breach], partial(tuple.__new__, Breach))


def _day_name(day: date) -> str:
    """`YYYY-MM-DD` of a trading day, as scopes and reports name it, formatted once (a breach
    that holds asks on every poll, and `date.isoformat` costs more than the lookup)."""
    name = _DAY_NAMES.get(day)
    if name is None:
        if len(_DAY_NAMES) > 1_000:
            _DAY_NAMES.clear()
        name = _DAY_NAMES[day] = day.isoformat()
    return name


# _day_name's names, by trading day; declared in bridgeproject.caches.
_DAY_NAMES: dict[date, str] = {}


def open_position_block(policy: Policy, state: RiskState, at: datetime) -> BlockReason | None:
    """Why a new `open_position` must be rejected at `at`, or None when it may go ahead."""
    if not policy.thresholds.active:
        return "account_not_active"
    if policy.disable_trading_on_breach and (
        state.hard_breached or (state.trading_disabled_until is not None and at < state.trading_disabled_until)
    ):
        return "trading_disabled"
    return None


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def _fallback_reference(t: Thresholds, view: AccountView) -> Decimal:
    """D when Laravel's snapshot for a new day is late (`daily_reference_fallback`)."""
    if t.fallback == "equity":
        return view.equity
    if t.fallback == "max_balance_equity":
        return view.equity if view.equity > view.balance else view.balance
    return view.balance


def evaluate(view: AccountView, policy: Policy, state: RiskState) -> Evaluation:
    """Apply the rule table to one MT5 snapshot (whatever the account status: monitoring goes on).

    The caller must not declare breaches from a snapshot older than `RISK_MAX_SNAPSHOT_AGE_MS`;
    this function has no clock.
    """
    if state.policy_version != policy.policy_version:
        raise ValueError("state is for another policy version: RiskState.apply_policy first")
    t = policy.thresholds if view.currency_digits == 2 else policy.thresholds_for(view.currency_digits)
    calendar = policy.calendar
    at = view.observed_at
    at_floor = t.at_floor
    changed = False
    measured = view.equity if t.measure_equity else view.balance
    hwm = state.high_water_mark

    # The trading day: a new day without Laravel's snapshot for it takes the fallback as D.
    # (A snapshot for the day already moved the reference there: `RiskState.apply_policy`.)
    today = calendar.day_of(at)
    reference = state.daily_reference
    reference_date = state.daily_reference_date
    source = state.daily_reference_source
    if today > reference_date:
        reference, reference_date, source = _fallback_reference(t, view), today, "bridge"
        changed = True
    last_day = state.last_trading_day
    if t.trailing_source == "eod_balance" and last_day != today:
        # `eod_balance`: the balance at a day's end is the one seen as the next day starts.
        if last_day is not None and today > last_day and view.balance > hwm:
            hwm = view.balance
        last_day = today
        changed = True
    disabled_until = state.trading_disabled_until
    if disabled_until is not None and at >= disabled_until:
        disabled_until = None
        changed = True

    breaches: list[Breach] = []

    # daily_drawdown: M < daily_floor (M <= daily_floor with `breach_at_floor`).
    if source == "laravel" and reference == policy.daily_starting_balance:
        d_floor = t.laravel_daily_floor
    else:
        d_floor = daily_floor(t, reference)
    if d_floor is not None and (measured <= d_floor if at_floor else measured < d_floor):
        # The day is the reference's: a snapshot for the next day arriving a moment before the
        # reset makes that day's floor (and its one protective action) start a moment early.
        day = _day_name(reference_date)
        why = partial(_explain, t, policy, measured, d_floor, hwm, ("daily_starting_balance", reference, source))
        breaches.append(_breach(DAILY_DRAWDOWN, policy, f"day:{day}", d_floor, measured, why, trading_day=day))
        # A daily breach disables trading until the next trading day starts.
        until = calendar.end_of(reference_date)
        if disabled_until is None or disabled_until < until:
            disabled_until = until
            changed = True

    # total_drawdown: M < total_floor; the HWM follows `trailing_source` (the measured value by default).
    trailing = t.trailing_source
    if trailing == "equity":
        if view.equity > hwm:
            hwm = view.equity
    elif trailing == "balance" and view.balance > hwm:
        hwm = view.balance
    t_floor = state.total_floor
    # The HWM above only ever moves to a strictly higher value: `is not` is `!=` here, without
    # comparing two Decimals on every poll.
    moved = hwm is not state.high_water_mark
    if moved or t.digits != 2:
        # Within a version the floor is a function of the HWM and itself: unchanged while the
        # HWM is (the state's floor is rounded to 2 digits, an account with others recomputes).
        changed = changed or moved
        t_floor = total_floor(t, hwm, t_floor)
        if t_floor != state.total_floor:
            changed = True
    hard = state.hard_breached
    shown_total: Decimal | None = None
    if t.total_amount is not None:
        shown_total = t_floor
        if measured <= shown_total if at_floor else measured < shown_total:
            why = partial(
                _explain, t, policy, measured, shown_total, hwm, ("initial_balance", t.initial_balance, "laravel")
            )
            breaches.append(_breach(TOTAL_DRAWDOWN, policy, "lifetime", shown_total, measured, why))
            if not hard:
                hard = changed = True

    # single_trade_loss: L(p) < -threshold, counted once per position.
    limit = t.single_trade_limit
    counted = state.breached_tickets
    count = state.violation_count
    positions = view.positions
    if limit is not None and positions:
        newly: list[int] | None = None
        # With `breach_at_floor`, L(p) <= -threshold: the first amount past the limit, so `<`
        # against the next number up (Decimal's own next_plus) is the same test.
        strict_limit = limit.next_plus() if at_floor else limit
        for p in positions:
            loss = p.profit + p.swap + p.commission
            if loss < strict_limit and p.ticket not in counted:
                if newly is None:
                    newly = []
                elif p.ticket in newly:
                    continue
                newly.append(p.ticket)
                count += 1
                why = partial(_explain, t, policy, loss, limit, hwm, ("initial_balance", t.initial_balance, "laravel"))
                breaches.append(
                    _breach(SINGLE_TRADE_LOSS, policy, f"ticket:{p.ticket}", limit, loss, why, p.ticket, count)
                )
        if newly is not None:
            counted = counted.union(newly)
            changed = True
            # single_trade_loss_limit: count > allowed escalates to a lifetime (hard) breach.
            if count > t.violations_allowed:
                allowed, measured_count = Decimal(t.violations_allowed), Decimal(count)
                why = partial(_explain, t, policy, measured_count, allowed, hwm, None)
                breaches.append(
                    _breach(SINGLE_TRADE_LOSS_LIMIT, policy, "lifetime", allowed, measured_count, why, None, count)
                )
                hard = True

    if positions and t.position_rules:
        _position_rules(breaches, view, policy, t, today, hwm)

    # profit_target: M >= I x (1 + pct%), reported once per policy version.
    target = t.profit_target
    if target is not None and measured >= target:
        why = partial(_explain, t, policy, measured, target, hwm, ("initial_balance", t.initial_balance, "laravel"))
        breaches.append(_breach(PROFIT_TARGET, policy, f"version:{policy.policy_version}", target, measured, why))

    if changed:
        state = RiskState(
            policy_version=state.policy_version,
            initial_balance=state.initial_balance,
            high_water_mark=hwm,
            total_floor=t_floor,
            daily_reference=reference,
            daily_reference_date=reference_date,
            daily_reference_source=source,
            violation_count=count,
            breached_tickets=counted,
            hard_breached=hard,
            trading_disabled_until=disabled_until,
            last_trading_day=last_day,
        )

    if not t.active:
        block: BlockReason | None = "account_not_active"
    elif t.disable_trading and (hard or disabled_until is not None):
        block = "trading_disabled"
    else:
        block = None
    return _new_evaluation(
        (
            tuple(breaches) if breaches else (),  # breaches
            state,  # state
            d_floor,  # daily_floor
            shown_total,  # total_floor
            measured,  # measured
            block is None,  # trading_enabled
            block,  # trading_block
        )
    )


def _position_rules(
    breaches: list[Breach], view: AccountView, policy: Policy, t: Thresholds, today: date, hwm: Decimal
) -> None:
    """The rules of "More rules" on positions however they were opened (the bridge refuses them
    before MT5 when they come through it: `open_position_check`). A rule that is off reads no
    position; one that is on reads each position once (a plain loop: in CPython a slot read
    there costs less than `map(attrgetter(...))`), and only a breach builds anything."""
    positions = view.positions
    at = view.observed_at

    # max_open_positions: the newest beyond the limit are closed, each its own action.
    most = t.max_open_positions
    if most is not None and len(positions) > most:
        held, allowed = Decimal(len(positions)), Decimal(most)
        why = partial(_explain, t, policy, held, allowed, hwm, None)
        for p in sorted(positions, key=_age_key, reverse=True)[: len(positions) - most]:
            breaches.append(_breach(MAX_OPEN_POSITIONS, policy, f"ticket:{p.ticket}", allowed, held, why, p.ticket))

    # max_position_volume: a position above it is brought back to it (the excess closed).
    largest = t.max_position_volume
    oversized = False
    if largest is not None:
        for p in positions:
            if p.volume > largest:
                oversized = True
                why = partial(_explain, t, policy, p.volume, largest, hwm, None)
                breaches.append(
                    _breach(MAX_POSITION_VOLUME, policy, f"ticket:{p.ticket}", largest, p.volume, why, p.ticket)
                )

    # max_total_volume: open volume above it, reported once a trading day. No need to add the
    # volumes up while none is above max_position_volume and that many positions of that size
    # stay within it (`positions_within_total`).
    total_limit = t.max_total_volume
    if total_limit is not None and (oversized or len(positions) > t.positions_within_total):
        volume = sum([p.volume for p in positions], _ZERO)
        if volume > total_limit:
            why = partial(_explain, t, policy, volume, total_limit, hwm, None)
            breaches.append(_breach(MAX_TOTAL_VOLUME, policy, f"day:{_day_name(today)}", total_limit, volume, why))

    # stop_loss_required: a position without a stop loss (none, or 0) past the grace is closed.
    if t.require_stop_loss:
        grace = t.stop_loss_grace
        for p in positions:
            if not p.sl and p.opened_at is not None and at - p.opened_at > grace:
                age = Decimal((at - p.opened_at).total_seconds())
                seconds = Decimal(int(grace.total_seconds()))
                why = partial(_explain, t, policy, age, seconds, hwm, None)
                breaches.append(_breach(STOP_LOSS_REQUIRED, policy, f"ticket:{p.ticket}", seconds, age, why, p.ticket))

    # weekend_holding: positions open past Friday's cut-off (local) are closed, once a week.
    cutoff = t.close_before_weekend
    if cutoff is not None:
        window = policy.calendar.weekend_window(at, cutoff)
        if window is not None:
            year, week, _ = window[2].isocalendar()
            count = Decimal(len(positions))
            why = partial(_explain, t, policy, count, _ZERO, hwm, None)
            breaches.append(
                _breach(
                    WEEKEND_HOLDING,
                    policy,
                    f"week:{year}-W{week:02d}",
                    _ZERO,
                    count,
                    why,
                    weekend_from=window[0].isoformat().replace("+00:00", "Z"),
                    weekend_until=window[1].isoformat().replace("+00:00", "Z"),
                )
            )


def _age_key(p: PositionView) -> tuple[datetime, int]:
    # Newest first: the latest opened, then the highest ticket (MT5 tickets grow).
    return (p.opened_at or datetime.min.replace(tzinfo=UTC), p.ticket)


# What each rule's explanation calls the measured value (the drawdown rules: `drawdown_type`).
_MEASURED_KIND: Final[dict[str, str]] = {
    "single_trade_loss": "position_loss",
    "single_trade_loss_limit": "violation_count",
    "max_open_positions": "open_positions",
    "max_position_volume": "position_volume",
    "max_total_volume": "open_volume",
    "stop_loss_required": "seconds_without_stop_loss",
    "weekend_holding": "open_positions",
}


def _explain(
    t: Thresholds,
    policy: Policy,
    measured: Decimal,
    floor_or_limit: Decimal,
    hwm: Decimal | None,
    reference: tuple[str, Decimal, str] | None,
    rule: Rule,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """RISK_RULES "Explaining a breach": measured, what it was held against, the reference it came
    from, the high-water mark and the rule's parameters. Built only when asked for (a breach's
    `explanation`): most evaluations see a breach already acted on."""
    params: dict[str, Any] = {rule.param: getattr(policy, rule.param), "currency_digits": t.digits}
    if rule is DAILY_DRAWDOWN:
        params["daily_dd_base"] = policy.daily_dd_base
        params["daily_reset"] = repr(policy.calendar)
    elif rule is TOTAL_DRAWDOWN:
        params.update(
            trailing=t.trailing,
            trailing_source=t.trailing_source,
            lock_trailing_drawdown=t.lock,
            trailing_lock_offset=policy.trailing_lock_offset,
        )
    elif rule is SINGLE_TRADE_LOSS or rule is SINGLE_TRADE_LOSS_LIMIT:
        params["max_single_trade_loss_violations_allowed"] = t.violations_allowed
    elif rule is STOP_LOSS_REQUIRED:
        params["stop_loss_grace_seconds"] = policy.stop_loss_grace_seconds
    if rule.key in ("daily_drawdown", "total_drawdown", "single_trade_loss"):
        params["breach_at_floor"] = t.at_floor
    params.update(extra)
    return {
        "measured": measured,
        "measured_kind": _MEASURED_KIND.get(rule.key, "equity" if t.measure_equity else "balance"),
        "floor_or_limit": floor_or_limit,
        "reference": None
        if reference is None
        else {"kind": reference[0], "value": reference[1], "source": reference[2]},
        "high_water_mark": hwm,
        "rule_params": params,
    }


def enforcement(view: AccountView, evaluation: Evaluation, since: datetime) -> tuple[Breach, ...]:
    """RISK_RULES.md "Enforcement that holds": while trading is disabled after a breach (the
    breach seen at `since`), any position or pending order that appears on the account (opened
    from the trader's own terminal, a pending order that filled) is closed or cancelled, each its
    own action: rule_key `trading_disabled`, scope its ticket. What was there before the breach
    is the breach's own action's to handle (or not, when its flag is off)."""
    if evaluation.trading_block != "trading_disabled":
        return ()
    closes = tuple(
        _enforced(f"ticket:{p.ticket}", p.ticket, "close_position", p.loss)
        for p in view.positions
        if p.opened_at is None or p.opened_at >= since
    )
    cancels = tuple(
        _enforced(f"order:{ticket}", ticket, "cancel_order", _ZERO)
        for ticket, placed_at in view.orders
        if placed_at >= since
    )
    return closes + cancels


def _enforced(scope: str, ticket: int, action: Action, measured: Decimal) -> Breach:
    return Breach(
        rule_key="trading_disabled",
        scope=scope,
        threshold_used=_ZERO,
        floor_or_limit=_ZERO,
        measured=measured,
        ticket=ticket,
        action=action,
        enabled=True,
        hard=False,
        violation_count=None,
        explain=partial(_enforced_explanation, measured, action),
    )


def _enforced_explanation(measured: Decimal, action: Action) -> dict[str, Any]:
    return {
        "measured": measured,
        "measured_kind": "position_loss" if action == "close_position" else "pending_order",
        "floor_or_limit": _ZERO,
        "reference": None,
        "high_water_mark": None,
        "rule_params": {"trading_block": "trading_disabled"},
    }


def _breach(
    rule: Rule,
    policy: Policy,
    scope: str,
    floor_or_limit: Decimal,
    measured: Decimal,
    why: Callable[..., dict[str, Any]] | None = None,
    ticket: int | None = None,
    violation_count: int | None = None,
    **extra: Any,
) -> Breach:
    """A breach of `rule`; `why` is `_explain` with all but the rule and its extra parameters."""
    param = getattr(policy, rule.param)
    if isinstance(param, bool):
        threshold = Decimal(int(param))
    elif isinstance(param, time):
        threshold = Decimal(param.hour * 100 + param.minute)  # HHMM: the report's number
    else:
        threshold = Decimal(param)
    if violation_count is not None:
        extra["violation_count"] = violation_count
    return _new_breach(  # built on every poll a breach holds
        (
            rule.key,  # rule_key
            scope,  # scope
            threshold,  # threshold_used
            floor_or_limit,  # floor_or_limit
            measured,  # measured
            ticket,  # ticket
            rule.action,  # action
            True if rule.flag is None else getattr(policy, rule.flag),  # enabled
            rule.hard,  # hard
            violation_count,  # violation_count
            None if why is None else partial(why, rule, extra),  # explain
        )
    )


# --------------------------------------------------------------------------------------------
# Before a position is sent: the pre-trade limits ("More rules": rejected through the bridge)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderView:
    """An `open_position` about to be sent: `price` the open price (None: the market's)."""

    symbol: str
    direction: Literal["buy", "sell"]
    volume: Decimal
    price: Decimal | None = None
    stop_loss: Decimal | None = None


@dataclass(frozen=True, slots=True)
class SymbolView:
    """What the loss at a stop needs of a symbol: its tick and the market."""

    tick_size: Decimal
    tick_value: Decimal  # a tick's value for one lot, in the account currency
    bid: Decimal
    ask: Decimal


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an `open_position` is refused before MT5 (`risk_limit_exceeded`), with the numbers."""

    rule_key: RuleKey
    measured: Decimal
    limit: Decimal
    message: str
    explanation: dict[str, Any]


def open_position_check(
    order: OrderView,
    view: AccountView,
    policy: Policy,
    symbol: SymbolView | None = None,
    adds_to: PositionView | None = None,
) -> Rejection | None:
    """The first pre-trade limit `order` would break on the account as `view` shows it, or None.

    `adds_to`: on an account that nets, the position of the same side the order would add to
    (it opens no new position, and the position's volume grows by the order's)."""
    t = policy.thresholds_for(view.currency_digits)
    volume_after = order.volume if adds_to is None else adds_to.volume + order.volume
    opened_after = len(view.positions) + (0 if adds_to is not None else 1)

    def refuse(rule: Rule, measured: Decimal, limit: Decimal, kind: str, message: str) -> Rejection:
        explanation = _explain(t, policy, measured, limit, None, None, rule, {})
        explanation["measured_kind"] = kind
        return Rejection(rule.key, measured, limit, message, explanation)

    if t.require_stop_loss and not order.stop_loss:
        return refuse(STOP_LOSS_REQUIRED, _ZERO, Decimal(1), "stop_loss_given", "A stop loss is required.")
    if t.max_position_volume is not None and volume_after > t.max_position_volume:
        return refuse(
            MAX_POSITION_VOLUME,
            volume_after,
            t.max_position_volume,
            "position_volume",
            f"The position would hold {volume_after} lots; {t.max_position_volume} are allowed in one.",
        )
    if t.max_open_positions is not None and opened_after > t.max_open_positions:
        return refuse(
            MAX_OPEN_POSITIONS,
            Decimal(opened_after),
            Decimal(t.max_open_positions),
            "open_positions",
            f"It would be open position {opened_after}; {t.max_open_positions} are allowed.",
        )
    if t.max_total_volume is not None:
        volume = sum((p.volume for p in view.positions), order.volume)
        if volume > t.max_total_volume:
            return refuse(
                MAX_TOTAL_VOLUME,
                volume,
                t.max_total_volume,
                "open_volume",
                f"It would take the open volume to {volume} lots; {t.max_total_volume} are allowed.",
            )
    threshold = t.single_trade_threshold
    if threshold is not None and order.stop_loss and symbol is not None and symbol.tick_size > 0:
        price = order.price or (symbol.ask if order.direction == "buy" else symbol.bid)
        distance = price - order.stop_loss if order.direction == "buy" else order.stop_loss - price
        risk = _round(order.volume * distance / symbol.tick_size * symbol.tick_value, t.quantum)
        if risk > 0 and (risk >= threshold if t.at_floor else risk > threshold):
            rejection = refuse(
                SINGLE_TRADE_RISK,
                risk,
                threshold,
                "loss_at_stop_loss",
                f"The loss at its stop loss would be {risk}, more than the single-trade limit {threshold}.",
            )
            rejection.explanation["reference"] = {
                "kind": "initial_balance",
                "value": t.initial_balance,
                "source": "laravel",
            }
            rejection.explanation["rule_params"].update(
                open_price=price,
                stop_loss=order.stop_loss,
                volume=order.volume,
                tick_size=symbol.tick_size,
                tick_value=symbol.tick_value,
                breach_at_floor=t.at_floor,
            )
            return rejection
    return None


def modify_position_check(policy: Policy, ticket: int, stop_loss_after: Decimal | None) -> Rejection | None:
    """`stop_loss_required` on a `modify_position`: one that would leave position `ticket`
    without a stop loss (`stop_loss_after`, the level it would have: None or 0 for none) on an
    account whose policy requires one is refused like an open without one; else None."""
    t = policy.thresholds
    if not t.require_stop_loss or stop_loss_after:
        return None
    explanation = _explain(t, policy, _ZERO, Decimal(1), None, None, STOP_LOSS_REQUIRED, {"ticket": ticket})
    explanation["measured_kind"] = "stop_loss_given"
    return Rejection(
        STOP_LOSS_REQUIRED.key,
        _ZERO,
        Decimal(1),
        f"Position {ticket} would be left without a stop loss; a stop loss is required.",
        explanation,
    )


def _as_utc(at: datetime) -> datetime:
    offset = at.utcoffset()
    if offset is None:
        raise ValueError(f"a timezone-aware UTC time is required, got {at!r}")
    if offset or at.tzinfo is not UTC:
        return at.astimezone(UTC)
    return at
