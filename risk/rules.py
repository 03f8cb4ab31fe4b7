"""The risk rule table of RISK_RULES.md, as pure functions over immutable values.

Nothing here touches Django, the database, MT5 or the clock: the caller passes the MT5
snapshot (`AccountView`), the policy snapshot Laravel sent (`Policy`) and the durable risk
state (`RiskState`), and gets back the breaches and the next state (`Evaluation`). That keeps
the rules testable number by number against the spec and fast enough to run for every
account every `RISK_POLL_INTERVAL_MS`.

How breaches are reported:
- `single_trade_loss` is reported once per position: the violation count must grow by exactly
  one per breaching position, so the state remembers the tickets already counted.
- `daily_drawdown` and `total_drawdown` are reported on every evaluation in which they hold.
  Their scope (the trading day, the lifetime) is what one protective action is keyed on
  (RISK_RULES "exactly one protective action per (account, rule, scope, policy_version)"), so
  the caller de-duplicates on `(login, rule_key, scope, policy_version)`; reporting them as a
  level also makes `Evaluation.breaches` the account's current breaches for the sync endpoint.
- `single_trade_loss_limit` is reported in the evaluation whose new position breaches take the
  count above the allowed number (scope "lifetime", so one action however often it recurs).

`RiskState` is frozen: `evaluate` and `apply_policy` return a new state, or the very same
object when nothing changed, so the caller can persist only when `new is not old`.

All money is `Decimal` under the caller's decimal context (the default 28 digits is ample);
floors are not rounded, rounding to `currency_digits` is for display only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, cast

__all__ = [
    "RULES",
    "AccountView",
    "Breach",
    "Evaluation",
    "Policy",
    "PolicyError",
    "PositionView",
    "RiskState",
    "Rule",
    "StalePolicyError",
    "Thresholds",
    "compile_policy",
    "daily_floor",
    "enforcement",
    "evaluate",
    "open_position_block",
    "total_floor",
    "trading_day",
]

RuleKey = Literal[
    "daily_drawdown", "total_drawdown", "single_trade_loss", "single_trade_loss_limit", "trading_disabled"
]
Action = Literal["close_position", "close_all", "cancel_order", "none"]
ScopeKind = Literal["ticket", "order", "day", "lifetime"]
DrawdownType = Literal["equity", "balance"]
DailyBase = Literal["starting_balance", "initial_balance"]
ReferenceSource = Literal["laravel", "bridge"]
BlockReason = Literal["account_not_active", "trading_disabled"]

ACTIVE: Final = "active"
_HUNDRED: Final = Decimal(100)
# A floor below every value, so the first floor of an I is not held up by a previous one.
_NO_FLOOR: Final = Decimal("-Infinity")


# --------------------------------------------------------------------------------------------
# The rule table (RISK_RULES.md "Rules" and "Enforcement", one row per rule_key)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the rule table: what a breach of it does and which flag allows that."""

    key: RuleKey
    scope: ScopeKind
    action: Action
    flag: str | None  # the Policy attribute that enables the action; None: no flag
    hard: bool  # a hard breach disables trading when `disable_trading_on_breach`
    percent: str  # the Policy attribute reported as `threshold_used`


# Every rule breaches when the measured value is strictly below its floor or limit
# (`M < daily_floor`, `M < total_floor`, `L(p) < -threshold`, count > allowed).
DAILY_DRAWDOWN: Final = Rule(
    key="daily_drawdown",
    scope="day",
    action="close_all",
    flag="close_all_on_daily_dd",
    hard=True,
    percent="max_daily_dd_pct",
)
TOTAL_DRAWDOWN: Final = Rule(
    key="total_drawdown",
    scope="lifetime",
    action="close_all",
    flag="close_all_on_total_dd",
    hard=True,
    percent="max_total_dd_pct",
)
SINGLE_TRADE_LOSS: Final = Rule(
    key="single_trade_loss",
    scope="ticket",
    action="close_position",
    flag="close_position_on_single_trade_breach",
    hard=False,
    percent="max_single_trade_loss_pct",
)
# The escalation closes nothing by itself: it marks the account hard-breached, which disables
# trading when `disable_trading_on_breach` is set. The spec names no flag for the report.
SINGLE_TRADE_LOSS_LIMIT: Final = Rule(
    key="single_trade_loss_limit",
    scope="lifetime",
    action="none",
    flag=None,
    hard=True,
    percent="max_single_trade_loss_pct",
)
RULES: Final = (DAILY_DRAWDOWN, TOTAL_DRAWDOWN, SINGLE_TRADE_LOSS, SINGLE_TRADE_LOSS_LIMIT)


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

    def __post_init__(self) -> None:
        # Trading days are cut in UTC; a local or naive time would put the cut elsewhere.
        object.__setattr__(self, "observed_at", _as_utc(self.observed_at))


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A policy snapshot's payload, typed. Build it with `Policy.from_payload`."""

    policy_version: int
    account_status: str
    initial_balance: Decimal  # I
    daily_starting_balance: Decimal  # D
    daily_starting_balance_date: date
    max_daily_dd_pct: Decimal
    max_total_dd_pct: Decimal
    drawdown_type: DrawdownType
    lock_trailing_drawdown: bool
    trailing_drawdown: bool | None = None
    daily_dd_base: DailyBase = "starting_balance"
    daily_reset_time_utc: time = time(0, 0)
    max_single_trade_loss_pct: Decimal
    max_single_trade_loss_violations_allowed: int
    current_single_trade_exceed_count: int = 0
    close_position_on_single_trade_breach: bool
    close_all_on_daily_dd: bool
    close_all_on_total_dd: bool = True
    disable_trading_on_breach: bool
    high_water_mark: Decimal | None = None
    thresholds: Thresholds = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate(self)
        object.__setattr__(self, "thresholds", compile_policy(self))

    @property
    def is_trailing(self) -> bool:
        """Trailing when `trailing_drawdown` is true, or absent and the trailing lock is on."""
        if self.trailing_drawdown is None:
            return self.lock_trailing_drawdown
        return self.trailing_drawdown

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Policy:
        """Read the `payload` object of a `policy_snapshot` request."""
        if not isinstance(payload, dict):
            raise PolicyError("payload: expected an object")
        flags = payload.get("enforcement_flags", {})
        if not isinstance(flags, dict):
            raise PolicyError("enforcement_flags: expected an object")
        trailing = payload.get("trailing_drawdown")
        hwm = payload.get("high_water_mark")
        return cls(
            policy_version=_int(payload, "policy_version"),
            account_status=_str(payload, "account_status"),
            initial_balance=_decimal(payload, "initial_balance_snapshot"),
            daily_starting_balance=_decimal(payload, "daily_starting_balance"),
            daily_starting_balance_date=_date(payload, "daily_starting_balance_date"),
            max_daily_dd_pct=_decimal(payload, "max_daily_dd_pct"),
            max_total_dd_pct=_decimal(payload, "max_total_dd_pct"),
            # The two Literal fields are cast: __post_init__ (_validate) refuses any other string.
            drawdown_type=cast(DrawdownType, _str(payload, "drawdown_type")),
            lock_trailing_drawdown=_bool(payload, "lock_trailing_drawdown", default=False),
            trailing_drawdown=None if trailing is None else _bool(payload, "trailing_drawdown"),
            daily_dd_base=cast(DailyBase, _str(payload, "daily_dd_base", default="starting_balance")),
            daily_reset_time_utc=_time(payload, "daily_reset_time_utc", default=time(0, 0)),
            max_single_trade_loss_pct=_decimal(payload, "max_single_trade_loss_pct"),
            max_single_trade_loss_violations_allowed=_int(payload, "max_single_trade_loss_violations_allowed"),
            current_single_trade_exceed_count=_int(payload, "current_single_trade_exceed_count", default=0),
            close_position_on_single_trade_breach=_bool(
                flags, "close_position_on_single_trade_breach", prefix="enforcement_flags."
            ),
            close_all_on_daily_dd=_bool(flags, "close_all_on_daily_dd", prefix="enforcement_flags."),
            close_all_on_total_dd=_bool(flags, "close_all_on_total_dd", default=True, prefix="enforcement_flags."),
            disable_trading_on_breach=_bool(flags, "disable_trading_on_breach", prefix="enforcement_flags."),
            high_water_mark=None if hwm is None else _decimal(payload, "high_water_mark"),
        )


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What a policy fixes once, so an evaluation only adds and compares."""

    measure_equity: bool
    initial_balance: Decimal
    daily_fraction: Decimal  # max_daily_dd_pct / 100
    daily_on_initial: bool
    daily_amount_on_initial: Decimal  # max_daily_dd_pct% x I
    laravel_daily_floor: Decimal  # the daily floor for D itself
    total_amount: Decimal  # max_total_dd_pct% x I
    static_total_floor: Decimal
    trailing: bool
    lock: bool
    single_trade_threshold: Decimal  # max_single_trade_loss_pct% x I
    single_trade_limit: Decimal  # -threshold: L(p) below this breaches
    violations_allowed: int
    reset_time: time
    reset_offset: timedelta
    active: bool
    disable_trading: bool


def compile_policy(policy: Policy) -> Thresholds:
    """Fix the policy's thresholds in money (Policy does this once, as `policy.thresholds`)."""
    i = policy.initial_balance
    daily_fraction = policy.max_daily_dd_pct / _HUNDRED
    total_amount = policy.max_total_dd_pct / _HUNDRED * i
    single = policy.max_single_trade_loss_pct / _HUNDRED * i
    reset = policy.daily_reset_time_utc
    thresholds = Thresholds(
        measure_equity=policy.drawdown_type == "equity",
        initial_balance=i,
        daily_fraction=daily_fraction,
        daily_on_initial=policy.daily_dd_base == "initial_balance",
        daily_amount_on_initial=daily_fraction * i,
        laravel_daily_floor=_NO_FLOOR,
        total_amount=total_amount,
        static_total_floor=i - total_amount,
        trailing=policy.is_trailing,
        lock=policy.lock_trailing_drawdown,
        single_trade_threshold=single,
        single_trade_limit=-single,
        violations_allowed=policy.max_single_trade_loss_violations_allowed,
        reset_time=reset,
        reset_offset=_offset(reset),
        active=policy.account_status == ACTIVE,
        disable_trading=policy.disable_trading_on_breach,
    )
    # Most evaluations measure against Laravel's own D: fix that floor once too.
    return replace(thresholds, laravel_daily_floor=daily_floor(thresholds, policy.daily_starting_balance))


# --------------------------------------------------------------------------------------------
# Floors
# --------------------------------------------------------------------------------------------


def daily_floor(t: Thresholds, reference: Decimal) -> Decimal:
    """`daily_floor = D - max_daily_dd_pct% x base`, base = D, or I when `daily_dd_base` says so."""
    if t.daily_on_initial:
        return reference - t.daily_amount_on_initial
    return reference - reference * t.daily_fraction


def total_floor(t: Thresholds, high_water_mark: Decimal, previous: Decimal) -> Decimal:
    """Static `I - pct% x I` or trailing `HWM - pct% x I` (capped at I when locked); never down."""
    floor = high_water_mark - t.total_amount if t.trailing else t.static_total_floor
    if t.lock and floor > t.initial_balance:
        floor = t.initial_balance
    return floor if floor > previous else previous


def trading_day(at: datetime, reset: time) -> date:
    """The trading day `at` belongs to: the day starting at `reset` UTC on that date."""
    at = _as_utc(at)
    return (at - _offset(reset)).date()


def _day_start(day: date, reset: time) -> datetime:
    return datetime.combine(day, reset, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskState:
    """What the rules remember between evaluations; durable, so it survives restarts.

    `initial_balance` is the I the high-water mark and the total floor were started from: a
    snapshot with another I restarts both. `hard_breached` is a lifetime breach (total drawdown
    or the single-trade escalation); `trading_disabled_until` is when a daily breach's disable
    ends. Whether either actually blocks trading is `disable_trading_on_breach` of the policy
    in force (`open_position_block`).
    """

    policy_version: int
    initial_balance: Decimal
    high_water_mark: Decimal
    total_floor: Decimal  # a ratchet: only ever raised until I changes
    daily_reference: Decimal
    daily_reference_date: date
    daily_reference_source: ReferenceSource
    violation_count: int
    breached_tickets: frozenset[int] = frozenset()
    hard_breached: bool = False
    trading_disabled_until: datetime | None = None

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
            floor = total_floor(t, hwm, _NO_FLOOR)
        else:
            # A restored HWM lower than ours is Laravel lagging behind what the bridge saw.
            hwm = old.high_water_mark
            if restored is not None and restored > hwm:
                hwm = restored
            floor = total_floor(t, hwm, old.total_floor)

        if old is None or policy.daily_starting_balance_date >= old.daily_reference_date:
            reference = policy.daily_starting_balance
            reference_date = policy.daily_starting_balance_date
            source: ReferenceSource = "laravel"
        else:
            # The snapshot's D is for an earlier day than the one already started.
            reference = old.daily_reference
            reference_date = old.daily_reference_date
            source = old.daily_reference_source

        return RiskState(
            policy_version=policy.policy_version,
            initial_balance=i,
            high_water_mark=hwm,
            total_floor=floor,
            daily_reference=reference,
            daily_reference_date=reference_date,
            daily_reference_source=source,
            violation_count=policy.current_single_trade_exceed_count,
            # Kept across versions: a still-open position must not be counted a second time.
            breached_tickets=frozenset() if old is None else old.breached_tickets,
            # Only an active, newer snapshot lifts a lifetime breach (RISK_RULES Enforcement).
            hard_breached=False if old is None else old.hard_breached and not t.active,
            trading_disabled_until=None if old is None else old.trading_disabled_until,
        )


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Breach:
    """One rule found broken, with what the report to Laravel needs.

    `threshold_used` is the policy's percent (the panel's report: `threshold_used: 2`);
    `floor_or_limit` is the money value `measured` fell below (-2,000 for a 2 % single-trade
    limit on 100,000; for `single_trade_loss_limit` the allowed count, measured the count).
    `enabled` False means: record and report with `execution_status: "skipped"`.
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


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome of one evaluation: breaches, the next state, and the figures behind them."""

    breaches: tuple[Breach, ...]
    state: RiskState
    daily_floor: Decimal
    total_floor: Decimal
    daily_headroom: Decimal  # M - daily_floor
    total_headroom: Decimal  # M - total_floor
    measured: Decimal  # M
    trading_enabled: bool
    trading_block: BlockReason | None


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


def evaluate(view: AccountView, policy: Policy, state: RiskState) -> Evaluation:
    """Apply the rule table to one MT5 snapshot (whatever the account status: monitoring goes on).

    The caller must not declare breaches from a snapshot older than `RISK_MAX_SNAPSHOT_AGE_MS`;
    this function has no clock.
    """
    if state.policy_version != policy.policy_version:
        raise ValueError("state is for another policy version: RiskState.apply_policy first")
    t = policy.thresholds
    at = view.observed_at
    changed = False

    # Trading day: a new day without Laravel's snapshot for it takes the observed balance as D.
    # (A snapshot for the day already moved the reference there: `RiskState.apply_policy`.)
    today = (at - t.reset_offset).date()
    reference = state.daily_reference
    reference_date = state.daily_reference_date
    source = state.daily_reference_source
    if today > reference_date:
        reference, reference_date, source = view.balance, today, "bridge"
        changed = True
    disabled_until = state.trading_disabled_until
    if disabled_until is not None and at >= disabled_until:
        disabled_until = None
        changed = True

    measured = view.equity if t.measure_equity else view.balance
    breaches: list[Breach] = []

    # daily_drawdown: M < daily_floor.
    if source == "laravel" and reference == policy.daily_starting_balance:
        d_floor = t.laravel_daily_floor
    else:
        d_floor = daily_floor(t, reference)
    if measured < d_floor:
        # The day is the reference's: a snapshot for the next day arriving a moment before the
        # reset makes that day's floor (and its one protective action) start a moment early.
        breaches.append(_breach(DAILY_DRAWDOWN, policy, f"day:{reference_date.isoformat()}", d_floor, measured))
        # A daily breach disables trading until the next trading day starts.
        until = _day_start(reference_date + timedelta(days=1), t.reset_time)
        if disabled_until is None or disabled_until < until:
            disabled_until = until
            changed = True

    # total_drawdown: M < total_floor, the HWM being the highest M seen since I was set.
    hwm = state.high_water_mark
    if measured > hwm:
        hwm = measured
        changed = True
    t_floor = total_floor(t, hwm, state.total_floor)
    if t_floor != state.total_floor:
        changed = True
    hard = state.hard_breached
    if measured < t_floor:
        breaches.append(_breach(TOTAL_DRAWDOWN, policy, "lifetime", t_floor, measured))
        if not hard:
            hard = changed = True

    # single_trade_loss: L(p) < -threshold, counted once per position.
    limit = t.single_trade_limit
    counted = state.breached_tickets
    count = state.violation_count
    newly: list[int] | None = None
    for p in view.positions:
        loss = p.profit + p.swap + p.commission
        if loss < limit and p.ticket not in counted:
            if newly is None:
                newly = []
            elif p.ticket in newly:
                continue
            newly.append(p.ticket)
            count += 1
            breaches.append(_breach(SINGLE_TRADE_LOSS, policy, f"ticket:{p.ticket}", limit, loss, p.ticket, count))
    if newly is not None:
        counted = counted.union(newly)
        changed = True
        # single_trade_loss_limit: count > allowed escalates to a lifetime (hard) breach.
        if count > t.violations_allowed:
            breaches.append(
                _breach(
                    SINGLE_TRADE_LOSS_LIMIT,
                    policy,
                    "lifetime",
                    Decimal(t.violations_allowed),
                    Decimal(count),
                    None,
                    count,
                )
            )
            hard = True

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
        )

    if not t.active:
        block: BlockReason | None = "account_not_active"
    elif t.disable_trading and (hard or disabled_until is not None):
        block = "trading_disabled"
    else:
        block = None
    return Evaluation(
        breaches=tuple(breaches) if breaches else (),
        state=state,
        daily_floor=d_floor,
        total_floor=t_floor,
        daily_headroom=measured - d_floor,
        total_headroom=measured - t_floor,
        measured=measured,
        trading_enabled=block is None,
        trading_block=block,
    )


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
        _enforced(f"order:{ticket}", ticket, "cancel_order", Decimal(0))
        for ticket, placed_at in view.orders
        if placed_at >= since
    )
    return closes + cancels


def _enforced(scope: str, ticket: int, action: Action, measured: Decimal) -> Breach:
    return Breach(
        rule_key="trading_disabled",
        scope=scope,
        threshold_used=Decimal(0),
        floor_or_limit=Decimal(0),
        measured=measured,
        ticket=ticket,
        action=action,
        enabled=True,
        hard=False,
        violation_count=None,
    )


def _breach(
    rule: Rule,
    policy: Policy,
    scope: str,
    floor_or_limit: Decimal,
    measured: Decimal,
    ticket: int | None = None,
    violation_count: int | None = None,
) -> Breach:
    return Breach(
        rule_key=rule.key,
        scope=scope,
        threshold_used=getattr(policy, rule.percent),
        floor_or_limit=floor_or_limit,
        measured=measured,
        ticket=ticket,
        action=rule.action,
        enabled=True if rule.flag is None else getattr(policy, rule.flag),
        hard=rule.hard,
        violation_count=violation_count,
    )


# --------------------------------------------------------------------------------------------
# Reading and checking a snapshot payload
# --------------------------------------------------------------------------------------------

_MISSING: Final = object()


def _get(data: dict[str, Any], key: str, default: Any, prefix: str) -> Any:
    value = data.get(key, _MISSING)
    if value is _MISSING or value is None:
        if default is _MISSING:
            raise PolicyError(f"{prefix}{key}: required")
        return default
    return value


def _decimal(data: dict[str, Any], key: str, default: Any = _MISSING, prefix: str = "") -> Decimal:
    value = _get(data, key, default, prefix)
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PolicyError(f"{prefix}{key}: expected a number, got {value!r}")
    else:
        try:
            # str() first: Decimal(0.1) would carry the float's binary error into the money.
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise PolicyError(f"{prefix}{key}: expected a number, got {value!r}") from None
    if not number.is_finite():
        raise PolicyError(f"{prefix}{key}: expected a finite number, got {value!r}")
    return number


def _int(data: dict[str, Any], key: str, default: Any = _MISSING, prefix: str = "") -> int:
    value = _get(data, key, default, prefix)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _decimal(data, key, default, prefix)
    if number != number.to_integral_value():
        raise PolicyError(f"{prefix}{key}: expected a whole number, got {value!r}")
    return int(number)


def _bool(data: dict[str, Any], key: str, default: Any = _MISSING, prefix: str = "") -> bool:
    value = _get(data, key, default, prefix)
    if not isinstance(value, bool):
        raise PolicyError(f"{prefix}{key}: expected true or false, got {value!r}")
    return value


def _str(data: dict[str, Any], key: str, default: Any = _MISSING, prefix: str = "") -> str:
    value = _get(data, key, default, prefix)
    if not isinstance(value, str):
        raise PolicyError(f"{prefix}{key}: expected a string, got {value!r}")
    return value


def _date(data: dict[str, Any], key: str) -> date:
    value = _str(data, key)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise PolicyError(f"{key}: expected YYYY-MM-DD, got {value!r}") from None


def _time(data: dict[str, Any], key: str, default: time) -> time:
    value = _get(data, key, default, "")
    if isinstance(value, time):
        return value
    if not isinstance(value, str):
        raise PolicyError(f"{key}: expected HH:MM, got {value!r}")
    try:
        parsed = time.fromisoformat(value)
    except ValueError:
        raise PolicyError(f"{key}: expected HH:MM, got {value!r}") from None
    if parsed.tzinfo is not None and parsed.utcoffset() != timedelta(0):
        raise PolicyError(f"{key}: a UTC time, got {value!r}")
    return parsed.replace(tzinfo=None)


def _validate(policy: Policy) -> None:
    if policy.drawdown_type not in ("equity", "balance"):
        raise PolicyError(f"drawdown_type: 'equity' or 'balance', got {policy.drawdown_type!r}")
    if policy.daily_dd_base not in ("starting_balance", "initial_balance"):
        raise PolicyError(f"daily_dd_base: 'starting_balance' or 'initial_balance', got {policy.daily_dd_base!r}")
    if policy.initial_balance <= 0:
        raise PolicyError("initial_balance_snapshot: must be positive")
    if policy.daily_starting_balance < 0:
        raise PolicyError("daily_starting_balance: must not be negative")
    for name in ("max_daily_dd_pct", "max_total_dd_pct", "max_single_trade_loss_pct"):
        pct = getattr(policy, name)
        if not 0 <= pct <= _HUNDRED:
            raise PolicyError(f"{name}: a percent between 0 and 100, got {pct}")
    if policy.max_single_trade_loss_violations_allowed < 0:
        raise PolicyError("max_single_trade_loss_violations_allowed: must not be negative")
    if policy.current_single_trade_exceed_count < 0:
        raise PolicyError("current_single_trade_exceed_count: must not be negative")
    if policy.policy_version < 0:
        raise PolicyError("policy_version: must not be negative")


def _offset(reset: time) -> timedelta:
    return timedelta(hours=reset.hour, minutes=reset.minute, seconds=reset.second, microseconds=reset.microsecond)


def _as_utc(at: datetime) -> datetime:
    offset = at.utcoffset()
    if offset is None:
        raise ValueError(f"a timezone-aware UTC time is required, got {at!r}")
    if offset or at.tzinfo is not UTC:
        return at.astimezone(UTC)
    return at
