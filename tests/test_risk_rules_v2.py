"""RISK_RULES.md "Rules v2", number by number, against `risk.rules` (no Django needed).

Each defect of issue #18 is a test here that failed on the rule table before v2: days named by
the UTC date they start on, a fixed UTC reset, a rule that cannot be off, a routine snapshot
lifting a lifetime breach, one field for what trails and what is measured, unrounded floors, a
loosened limit keeping the old floor, and breaches nobody can explain. The account is the
panel's (I = 100,000, D = 98,500, 5 % daily, 10 % total, 2 % single trade, equity, lock on)
unless a test says otherwise; Olga trades it from Prague, Ned from New York.
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands import examples
from risk.rules import (
    AccountView,
    Breach,
    Evaluation,
    OrderView,
    Policy,
    PolicyError,
    PositionView,
    RiskState,
    SymbolView,
    TradingCalendar,
    evaluate,
    modify_position_check,
    open_position_block,
    open_position_check,
    starting_balance_date_problem,
    trading_day,
)

PANEL_PAYLOAD: dict[str, Any] = copy.deepcopy(examples.POLICY_SNAPSHOT["payload"])
FLAGS = {
    "close_position_on_single_trade_breach",
    "close_all_on_daily_dd",
    "close_all_on_total_dd",
    "disable_trading_on_breach",
    "close_excess_positions",
    "close_oversized_positions",
    "close_positions_without_sl",
    "close_all_before_weekend",
}
PRAGUE = ZoneInfo("Europe/Prague")
NEW_YORK = ZoneInfo("America/New_York")
NOON = datetime(2026, 5, 29, 12, 1, tzinfo=UTC)


def D(value: str | int) -> Decimal:
    return Decimal(str(value))


def policy(**changes: Any) -> Policy:
    """The panel's snapshot with some fields changed (flags by name; the value ... removes a field)."""
    payload = copy.deepcopy(PANEL_PAYLOAD)
    for key, value in changes.items():
        target = payload["enforcement_flags"] if key in FLAGS else payload
        if value is ...:
            target.pop(key, None)
        else:
            target[key] = value
    return Policy.from_payload(payload)


def position(
    ticket: int,
    profit: str = "0",
    *,
    volume: str = "1.0",
    sl: str | None = "1.0",
    opened_at: datetime | None = None,
) -> PositionView:
    return PositionView(
        ticket=ticket,
        symbol="EURUSD",
        volume=D(volume),
        profit=D(profit),
        swap=D(0),
        commission=D(0),
        opened_at=opened_at,
        sl=None if sl is None else D(sl),
    )


def view(
    equity: str = "100000",
    balance: str | None = None,
    positions: tuple[PositionView, ...] = (),
    at: datetime = NOON,
    digits: int = 2,
) -> AccountView:
    return AccountView(
        login=50040367,
        balance=D(balance if balance is not None else equity),
        equity=D(equity),
        positions=positions,
        observed_at=at,
        currency_digits=digits,
    )


def run(p: Policy, *equities: str, state: RiskState | None = None, at: datetime = NOON) -> Evaluation:
    current = state or RiskState.initial(p)
    result = None
    for equity in equities:
        result = evaluate(view(equity, at=at), p, current)
        current = result.state
    assert result is not None
    return result


def keys(result: Evaluation) -> list[str]:
    return [b.rule_key for b in result.breaches]


def only(result: Evaluation, rule_key: str) -> Breach:
    found = [b for b in result.breaches if b.rule_key == rule_key]
    assert len(found) == 1, result.breaches
    return found[0]


def prague(*args: int) -> datetime:
    return datetime(*args, tzinfo=PRAGUE).astimezone(UTC)


def new_york(*args: int) -> datetime:
    return datetime(*args, tzinfo=NEW_YORK).astimezone(UTC)


# --- Turning a rule off -----------------------------------------------------------------


@pytest.mark.parametrize("field", ["max_daily_dd_pct", "max_total_dd_pct", "max_single_trade_loss_pct"])
def test_a_null_percent_turns_its_rule_off_and_nothing_is_reported(field: str) -> None:
    p = policy(**{field: None})
    wrecked = view("50000", positions=(position(1, "-40000"),))

    result = evaluate(wrecked, p, RiskState.initial(p))

    rule = {
        "max_daily_dd_pct": "daily_drawdown",
        "max_total_dd_pct": "total_drawdown",
        "max_single_trade_loss_pct": "single_trade_loss",
    }[field]
    assert rule not in keys(result)
    assert len(result.breaches) >= 1  # the other rules still see the wreck


def test_with_every_drawdown_rule_off_the_floors_and_headrooms_are_none() -> None:
    p = policy(max_daily_dd_pct=None, max_total_dd_pct=None)

    result = run(p, "1")

    assert (result.daily_floor, result.total_floor, result.daily_headroom, result.total_headroom) == (
        None,
        None,
        None,
        None,
    )
    assert result.breaches == ()


@pytest.mark.parametrize("pct", [-1, "100.01", 101])
def test_a_percent_outside_0_to_100_is_refused(pct: Any) -> None:
    with pytest.raises(PolicyError, match=r"max_single_trade_loss_pct: Must be at (least 0|most 100)"):
        policy(max_single_trade_loss_pct=pct)


def test_a_zero_percent_stored_before_v2_keeps_its_old_meaning_so_the_account_stays_watched() -> None:
    # The schema refuses 0 % at intake (422); a stored one must not make the account unreadable.
    p = policy(max_single_trade_loss_pct=0)

    result = evaluate(view("99999.99", positions=(position(1, "-0.01"),)), p, RiskState.initial(p))

    assert keys(result) == ["single_trade_loss"]


def test_a_percent_field_left_out_is_an_error_not_a_rule_turned_off() -> None:
    with pytest.raises(PolicyError, match="max_total_dd_pct: This field is required"):
        policy(max_total_dd_pct=...)


def test_a_new_rule_left_out_or_null_is_off() -> None:
    crowded = view("100000", positions=tuple(position(n, volume="50", sl=None, opened_at=NOON) for n in range(9)))
    for p in (policy(), policy(max_open_positions=None, max_position_volume=None, profit_target_pct=None)):
        assert evaluate(crowded, p, RiskState.initial(p)).breaches == ()


# --- The trading day, in a named time zone -----------------------------------------------


def test_a_00_00_reset_names_the_day_by_the_date_it_runs_on() -> None:
    calendar = TradingCalendar(PRAGUE, time(0, 0))

    assert calendar.day_of(prague(2026, 6, 2, 0, 0)) == date(2026, 6, 2)
    assert calendar.day_of(prague(2026, 6, 2, 23, 59, 59)) == date(2026, 6, 2)
    assert calendar.start_of(date(2026, 6, 2)) == datetime(2026, 6, 1, 22, 0, tzinfo=UTC)  # CEST, UTC+2


def test_the_day_that_starts_monday_17_00_in_new_york_is_tuesdays() -> None:
    calendar = TradingCalendar(NEW_YORK, time(17, 0))
    monday_17 = new_york(2026, 6, 1, 17, 0)

    assert calendar.day_of(monday_17) == date(2026, 6, 2)
    assert calendar.day_of(monday_17 - timedelta(microseconds=1)) == date(2026, 6, 1)
    assert calendar.day_of(new_york(2026, 6, 2, 16, 59, 59)) == date(2026, 6, 2)
    assert calendar.start_of(date(2026, 6, 2)) == datetime(2026, 6, 1, 21, 0, tzinfo=UTC)  # EDT, UTC-4


def test_a_prague_midnight_reset_follows_daylight_saving_by_itself() -> None:
    calendar = TradingCalendar(PRAGUE, time(0, 0))

    # Summer: midnight in Prague is 22:00 UTC; winter: 23:00 UTC. Laravel need not resend anything.
    assert calendar.start_of(date(2026, 3, 29)) == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # still CET
    assert calendar.start_of(date(2026, 3, 30)) == datetime(2026, 3, 29, 22, 0, tzinfo=UTC)  # CEST
    assert calendar.start_of(date(2026, 10, 25)) == datetime(2026, 10, 24, 22, 0, tzinfo=UTC)
    assert calendar.start_of(date(2026, 10, 26)) == datetime(2026, 10, 25, 23, 0, tzinfo=UTC)


def test_new_york_and_prague_switch_on_different_dates_and_each_day_follows_its_own_clock() -> None:
    # 2026-03-08 the US springs forward; Europe only on 2026-03-29.
    ny = TradingCalendar(NEW_YORK, time(17, 0))

    assert ny.start_of(date(2026, 3, 7)) == datetime(2026, 3, 6, 22, 0, tzinfo=UTC)  # EST
    assert ny.start_of(date(2026, 3, 9)) == datetime(2026, 3, 8, 21, 0, tzinfo=UTC)  # EDT
    assert TradingCalendar(PRAGUE, time(0, 0)).start_of(date(2026, 3, 9)) == datetime(2026, 3, 8, 23, 0, tzinfo=UTC)


def test_a_reset_inside_the_skipped_hour_starts_the_day_when_the_clocks_jump() -> None:
    calendar = TradingCalendar(NEW_YORK, time(2, 30))

    # 2026-03-08 02:00 EST jumps to 03:00 EDT (07:00 UTC): 02:30 never happens that night.
    assert calendar.start_of(date(2026, 3, 9)) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def test_a_reset_inside_the_repeated_hour_starts_the_day_at_its_first_occurrence() -> None:
    calendar = TradingCalendar(NEW_YORK, time(1, 30))
    first = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    second = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 EST, an hour later

    assert calendar.start_of(date(2026, 11, 2)) == first
    assert calendar.day_of(second) == calendar.day_of(first) == date(2026, 11, 2)


def test_without_a_time_zone_the_utc_reset_applies_as_before() -> None:
    p = policy(daily_reset_time_utc="22:00")

    assert p.calendar == TradingCalendar(UTC, time(22, 0))
    assert p.calendar.start_of(date(2026, 5, 30)) == datetime(2026, 5, 29, 22, 0, tzinfo=UTC)


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(PolicyError, match="daily_reset_timezone"):
        policy(daily_reset_timezone="Europe/Atlantis")


def olgas_policy(**changes: Any) -> Policy:
    """FTMO-style: the day resets at midnight in Prague; Laravel's D for 2 June is 98,500."""
    fields: dict[str, Any] = {
        "daily_reset_timezone": "Europe/Prague",
        "daily_starting_balance_date": "2026-06-02",
        "disable_trading_on_breach": True,
    }
    fields.update(changes)
    return policy(**fields)


def test_a_prague_midnight_daily_breach_disables_trading_for_one_day_not_48_hours() -> None:
    p = olgas_policy()
    half_past_midnight = prague(2026, 6, 2, 0, 30)  # 1 June 22:30 UTC

    breached = run(p, "93000", at=half_past_midnight)

    assert only(breached, "daily_drawdown").scope == "day:2026-06-02"
    assert breached.state.trading_disabled_until == prague(2026, 6, 3, 0, 0)  # 2 June 22:00 UTC
    next_day = evaluate(view("93000", at=prague(2026, 6, 3, 0, 0, 1)), p, breached.state)
    assert next_day.state.trading_disabled_until is None


def test_yesterdays_starting_balance_is_not_in_force_once_the_prague_day_has_turned() -> None:
    p = olgas_policy(daily_starting_balance_date="2026-06-01")
    state = RiskState.initial(p)

    # 2 June 00:05 in Prague is still 1 June in UTC: before v2 the 1 June D stayed in force.
    result = evaluate(view("97000", balance="97000", at=prague(2026, 6, 2, 0, 5)), p, state)

    assert (result.state.daily_reference, result.state.daily_reference_date) == (D(97000), date(2026, 6, 2))
    assert result.state.daily_reference_source == "bridge"


def test_the_next_prague_days_breach_is_its_own_action_not_deduplicated_away() -> None:
    day_one = olgas_policy(disable_trading_on_breach=False)
    first = run(day_one, "93000", at=prague(2026, 6, 2, 0, 30))
    day_two = olgas_policy(policy_version=13, disable_trading_on_breach=False, daily_starting_balance_date="2026-06-03")
    state = RiskState.apply_policy(first.state, day_two)

    second = run(day_two, "93000", state=state, at=prague(2026, 6, 3, 0, 30))

    assert only(first, "daily_drawdown").scope == "day:2026-06-02"
    assert only(second, "daily_drawdown").scope == "day:2026-06-03"


def test_a_starting_balance_date_after_the_current_trading_day_is_a_problem_and_today_is_not() -> None:
    p = olgas_policy(daily_starting_balance_date="2027-06-02")  # a typo for 2026

    assert starting_balance_date_problem(p, prague(2026, 6, 2, 9, 0)) is not None
    assert starting_balance_date_problem(olgas_policy(), prague(2026, 6, 2, 9, 0)) is None
    assert starting_balance_date_problem(olgas_policy(), prague(2026, 6, 1, 23, 59)) is not None
    # New York 17:00: at Monday 18:00 the current trading day is already Tuesday's.
    ned = policy(
        daily_reset_timezone="America/New_York", daily_reset_time="17:00", daily_starting_balance_date="2026-06-02"
    )
    assert starting_balance_date_problem(ned, new_york(2026, 6, 1, 18, 0)) is None
    assert starting_balance_date_problem(ned, new_york(2026, 6, 1, 16, 0)) is not None


def test_an_earlier_starting_balance_date_is_kept_but_the_bridges_d_stays_for_today() -> None:
    p12 = olgas_policy()
    bridged = evaluate(view("97000", at=prague(2026, 6, 3, 0, 5)), p12, RiskState.initial(p12)).state
    late = olgas_policy(policy_version=13, daily_starting_balance=99000)  # still 2 June's D

    state = RiskState.apply_policy(bridged, late)

    assert (state.daily_reference, state.daily_reference_date, state.daily_reference_source) == (
        D(97000),
        date(2026, 6, 3),
        "bridge",
    )


@pytest.mark.parametrize(
    ("fallback", "reference"),
    [("balance", "97000"), ("equity", "96500"), ("max_balance_equity", "97000"), (..., "97000")],
)
def test_the_reference_fallback_says_what_the_bridge_takes_as_d_when_laravel_is_late(
    fallback: Any, reference: str
) -> None:
    p = olgas_policy(daily_reference_fallback=fallback)

    result = evaluate(view("96500", balance="97000", at=prague(2026, 6, 3, 0, 5)), p, RiskState.initial(p))

    assert result.state.daily_reference == D(reference)


def test_max_balance_equity_takes_the_equity_when_it_is_the_higher() -> None:
    p = olgas_policy(daily_reference_fallback="max_balance_equity")

    result = evaluate(view("97300", balance="97000", at=prague(2026, 6, 3, 0, 5)), p, RiskState.initial(p))

    assert result.state.daily_reference == D(97300)
    assert result.daily_floor == D("92435.00")  # 97,300 - 5 %


# --- Trailing drawdown, as the firms define it --------------------------------------------


def test_balance_trailing_measured_on_equity_trails_the_closed_balance_peak() -> None:
    # FTMO 1-Step / Topstep style: the HWM follows the balance, equity is compared with the floor.
    p = policy(trailing_source="balance", trailing_drawdown=True, lock_trailing_drawdown=False)
    state = RiskState.initial(p)

    floating_peak = evaluate(view("108000", balance="100000"), p, state)
    banked = evaluate(view("104000", balance="104000"), p, floating_peak.state)
    dipping = evaluate(view("93999.99", balance="104000"), p, banked.state)

    assert floating_peak.state.high_water_mark == D(100000)  # equity's intraday peak does not count
    assert floating_peak.total_floor == D(90000)
    assert banked.total_floor == D(94000)
    assert only(dipping, "total_drawdown").measured == D("93999.99")  # equity is what is compared


def test_equity_trailing_is_the_default_for_an_equity_measured_policy() -> None:
    p = policy(trailing_drawdown=True, lock_trailing_drawdown=False)

    assert run(p, "108000").total_floor == D(98000)


def test_end_of_day_balance_trailing_moves_only_when_a_day_ends() -> None:
    p = policy(trailing_source="eod_balance", trailing_drawdown=True, lock_trailing_drawdown=False)
    state = RiskState.initial(p)

    intraday = evaluate(view("106000", balance="105000", at=datetime(2026, 5, 29, 15, 0, tzinfo=UTC)), p, state)
    next_morning = evaluate(
        view("105500", balance="105000", at=datetime(2026, 5, 30, 0, 0, 1, tzinfo=UTC)), p, intraday.state
    )

    assert intraday.state.high_water_mark == D(100000)
    assert intraday.total_floor == D(90000)
    assert next_morning.state.high_water_mark == D(105000)
    assert next_morning.total_floor == D(95000)


def test_the_lock_offset_stops_the_floor_at_i_plus_the_offset() -> None:
    p = policy(trailing_lock_offset=100)

    assert run(p, "105000").total_floor == D(95000)
    assert run(p, "112000").total_floor == D(100100)
    assert run(p, "130000").total_floor == D(100100)


def test_loosening_the_total_limit_in_a_new_version_loosens_the_floor() -> None:
    peaked = run(policy(), "104000").state  # floor 94,000

    looser = RiskState.apply_policy(peaked, policy(policy_version=13, max_total_dd_pct=12))

    assert looser.total_floor == D(92000)  # 104,000 - 12 % x 100,000, from the durable HWM
    assert run(policy(policy_version=13, max_total_dd_pct=12), "103000", state=looser).total_floor == D(92000)


def test_within_one_version_the_floor_never_goes_down() -> None:
    p = policy(trailing_drawdown=True, lock_trailing_drawdown=False)

    assert run(p, "110000", "95000", "101000").total_floor == D(100000)


# --- Breach boundary and rounding ---------------------------------------------------------


def test_a_floor_is_rounded_before_it_is_compared_so_the_shown_floor_is_the_compared_one() -> None:
    # D = 98,500.37: 5 % is 4,925.0185, the floor 93,575.3515, shown as 93,575.35.
    p = policy(daily_starting_balance=98500.37)

    on_it = run(p, "93575.35")
    below = run(p, "93575.34")

    assert on_it.daily_floor == D("93575.35")
    assert on_it.breaches == ()  # before v2: 93,575.35 < 93,575.3515, a breach at the shown floor
    assert only(below, "daily_drawdown").floor_or_limit == D("93575.35")


def test_rounding_is_half_away_from_zero_at_the_accounts_currency_digits() -> None:
    p = policy(daily_starting_balance=98500.10)  # floor 93,575.095

    assert evaluate(view("99000", digits=2), p, RiskState.initial(p)).daily_floor == D("93575.10")
    assert evaluate(view("99000", digits=0), p, RiskState.initial(p)).daily_floor == D("93575")
    assert p.thresholds_for(0).single_trade_threshold == D(2000)


def test_breach_at_floor_makes_reaching_the_floor_a_breach() -> None:
    p = policy(breach_at_floor=True)

    assert keys(run(p, "93575.00")) == ["daily_drawdown"]
    assert run(p, "93575.01").breaches == ()
    on_the_limit = evaluate(view("98000", positions=(position(1, "-2000.00"),)), p, RiskState.initial(p))
    assert keys(on_the_limit) == ["single_trade_loss"]


# --- Lifetime breaches and the violation count --------------------------------------------


def test_a_routine_daily_snapshot_does_not_lift_a_total_breach_and_reinstate_does() -> None:
    flags = {"disable_trading_on_breach": True, "max_daily_dd_pct": 20}
    breached = run(policy(**flags), "89000").state

    routine = RiskState.apply_policy(breached, policy(policy_version=13, **flags))
    suspended = RiskState.apply_policy(routine, policy(policy_version=14, account_status="suspended", reinstate=True))
    reinstated = RiskState.apply_policy(suspended, policy(policy_version=15, reinstate=True, **flags))

    assert routine.hard_breached is True
    assert open_position_block(policy(policy_version=13, **flags), routine, NOON) == "trading_disabled"
    assert suspended.hard_breached is True  # reinstating needs an active snapshot
    assert reinstated.hard_breached is False


def test_the_violation_count_is_the_higher_of_the_bridges_and_a_lagging_snapshots() -> None:
    p12 = policy()
    counted = evaluate(view("97500", positions=(position(1, "-2500"),)), p12, RiskState.initial(p12)).state

    lagging = RiskState.apply_policy(counted, policy(policy_version=13, current_single_trade_exceed_count=0))
    ahead = RiskState.apply_policy(counted, policy(policy_version=13, current_single_trade_exceed_count=3))
    reinstated = RiskState.apply_policy(
        counted, policy(policy_version=13, current_single_trade_exceed_count=0, reinstate=True)
    )

    assert counted.violation_count == 1
    assert lagging.violation_count == 1  # before v2: 0, and the next breach was "allowed" again
    assert ahead.violation_count == 3
    assert reinstated.violation_count == 0


# --- More rules -----------------------------------------------------------------------


def test_positions_beyond_max_open_positions_are_closed_newest_first() -> None:
    p = policy(max_open_positions=2)
    opened = [NOON - timedelta(minutes=m) for m in (30, 10, 20, 5)]
    four = tuple(position(100 + n, opened_at=at) for n, at in enumerate(opened))

    result = evaluate(view(positions=four), p, RiskState.initial(p))

    closing = [(b.rule_key, b.ticket, b.scope, b.action, b.measured, b.floor_or_limit) for b in result.breaches]
    assert closing == [
        ("max_open_positions", 103, "ticket:103", "close_position", D(4), D(2)),
        ("max_open_positions", 101, "ticket:101", "close_position", D(4), D(2)),
    ]
    assert evaluate(view(positions=four[:2]), p, RiskState.initial(p)).breaches == ()


def test_a_position_above_max_position_volume_is_brought_back_to_it() -> None:
    p = policy(max_position_volume=2)

    result = evaluate(view(positions=(position(7, volume="2.5"), position(8, volume="2"))), p, RiskState.initial(p))

    breach = only(result, "max_position_volume")
    assert (breach.ticket, breach.action, breach.measured, breach.floor_or_limit) == (
        7,
        "reduce_position",
        D("2.5"),
        D(2),
    )
    assert breach.enabled is True
    off = policy(max_position_volume=2, close_oversized_positions=False)
    oversized = evaluate(view(positions=(position(7, volume="2.5"),)), off, RiskState.initial(off))
    assert only(oversized, "max_position_volume").enabled is False


def test_open_volume_above_max_total_volume_is_reported_once_a_trading_day() -> None:
    p = policy(max_total_volume=3)

    result = evaluate(view(positions=(position(1, volume="2"), position(2, volume="1.5"))), p, RiskState.initial(p))

    breach = only(result, "max_total_volume")
    assert (breach.scope, breach.action, breach.measured, breach.floor_or_limit) == (
        "day:2026-05-29",
        "report",
        D("3.5"),
        D(3),
    )


def test_a_position_without_a_stop_loss_is_closed_once_the_grace_has_passed() -> None:
    p = policy(require_stop_loss=True, stop_loss_grace_seconds=30)
    fresh = position(1, sl=None, opened_at=NOON - timedelta(seconds=30))
    stale = position(2, sl=None, opened_at=NOON - timedelta(seconds=31))
    protected = position(3, sl="1.05", opened_at=NOON - timedelta(hours=1))

    result = evaluate(view(positions=(fresh, stale, protected)), p, RiskState.initial(p))

    breach = only(result, "stop_loss_required")
    assert (breach.ticket, breach.action, breach.scope) == (2, "close_position", "ticket:2")
    assert breach.measured == D(31) and breach.floor_or_limit == D(30)


def test_positions_held_past_fridays_cut_off_in_prague_are_closed_once_that_week() -> None:
    p = olgas_policy(close_before_weekend="21:00", disable_trading_on_breach=False)
    held = (position(1),)

    before = evaluate(view(positions=held, at=prague(2026, 6, 5, 20, 59)), p, RiskState.initial(p))
    after = evaluate(view(positions=held, at=prague(2026, 6, 5, 21, 0)), p, RiskState.initial(p))
    sunday = evaluate(view(positions=held, at=prague(2026, 6, 7, 23, 59)), p, RiskState.initial(p))
    monday = evaluate(view(positions=held, at=prague(2026, 6, 8, 0, 0)), p, RiskState.initial(p))

    assert before.breaches == ()
    breach = only(after, "weekend_holding")
    assert (breach.scope, breach.action, breach.enabled) == ("week:2026-W23", "close_all", True)
    assert only(sunday, "weekend_holding").scope == "week:2026-W23"
    assert monday.breaches == ()
    assert evaluate(view(at=prague(2026, 6, 5, 22, 0)), p, RiskState.initial(p)).breaches == ()  # flat: nothing


def test_the_profit_target_is_reported_once_the_measured_value_reaches_it() -> None:
    p = policy(profit_target_pct=10)

    assert run(p, "109999.99").breaches == ()
    breach = only(run(p, "110000.00"), "profit_target")
    assert (breach.scope, breach.action, breach.floor_or_limit, breach.threshold_used) == (
        "version:12",
        "report",
        D(110000),
        D(10),
    )


# --- Pre-trade checks (rejected through the bridge: risk_limit_exceeded) ---------------------

EURUSD = SymbolView(tick_size=D("0.00001"), tick_value=D(1), bid=D("1.08500"), ask=D("1.08510"))


def order(volume: str = "1", stop_loss: str | None = "1.06500", price: str | None = "1.08500") -> OrderView:
    return OrderView(
        symbol="EURUSD",
        direction="buy",
        volume=D(volume),
        price=None if price is None else D(price),
        stop_loss=None if stop_loss is None else D(stop_loss),
    )


def test_an_order_risking_exactly_the_single_trade_threshold_at_its_stop_goes_and_one_tick_more_is_refused() -> None:
    p = policy()

    at_threshold = open_position_check(order(stop_loss="1.06500"), view(), p, EURUSD)  # 2,000 ticks x 1 = 2,000
    past_it = open_position_check(order(stop_loss="1.06499"), view(), p, EURUSD)

    assert at_threshold is None
    assert past_it is not None
    assert (past_it.rule_key, past_it.measured, past_it.limit) == ("single_trade_risk", D("2001.00"), D(2000))
    assert past_it.explanation["rule_params"]["tick_value"] == D(1)


def test_a_sell_at_the_market_is_priced_at_the_bid() -> None:
    sell = OrderView(symbol="EURUSD", direction="sell", volume=D(1), stop_loss=D("1.10501"))

    refused = open_position_check(sell, view(), policy(), EURUSD)

    assert refused is not None and refused.measured == D("2001.00")


@pytest.mark.parametrize(
    ("changes", "the_order", "positions", "rule_key"),
    [
        ({"require_stop_loss": True}, order(stop_loss=None), (), "stop_loss_required"),
        ({"max_position_volume": 0.5}, order(volume="0.6", stop_loss="1.08"), (), "max_position_volume"),
        ({"max_open_positions": 2}, order(volume="0.1"), (position(1), position(2)), "max_open_positions"),
        ({"max_total_volume": 2}, order(volume="0.6"), (position(1, volume="1.5"),), "max_total_volume"),
    ],
)
def test_an_order_breaking_a_pre_trade_limit_is_refused_naming_the_rule(
    changes: dict[str, Any], the_order: OrderView, positions: tuple[PositionView, ...], rule_key: str
) -> None:
    p = policy(**changes)

    refused = open_position_check(the_order, view(positions=positions), p, EURUSD)

    assert refused is not None and refused.rule_key == rule_key
    assert open_position_check(the_order, view(positions=positions), policy(), EURUSD) is None


def test_on_a_netting_account_an_order_adding_to_its_position_opens_none_but_grows_it() -> None:
    p = policy(max_open_positions=1, max_position_volume=2)
    held = position(1, volume="1.5")

    growing = open_position_check(order(volume="0.5"), view(positions=(held,)), p, EURUSD, adds_to=held)
    too_big = open_position_check(order(volume="0.6"), view(positions=(held,)), p, EURUSD, adds_to=held)

    assert growing is None
    assert too_big is not None and (too_big.rule_key, too_big.measured) == ("max_position_volume", D("2.1"))


def test_an_order_within_every_limit_goes() -> None:
    p = policy(require_stop_loss=True, max_position_volume=1, max_open_positions=3, max_total_volume=3)

    assert open_position_check(order(volume="1"), view(positions=(position(1), position(2))), p, EURUSD) is None


# --- Explaining a breach --------------------------------------------------------------------


def test_a_daily_breach_explains_its_floor_measured_value_d_and_high_water_mark() -> None:
    explanation = only(run(policy(), "93574.99"), "daily_drawdown").explanation

    assert explanation is not None
    assert explanation["measured"] == D("93574.99")
    assert explanation["measured_kind"] == "equity"
    assert explanation["floor_or_limit"] == D(93575)
    assert explanation["reference"] == {"kind": "daily_starting_balance", "value": D(98500), "source": "laravel"}
    assert explanation["high_water_mark"] == D(100000)
    assert explanation["rule_params"]["max_daily_dd_pct"] == D(5)
    assert explanation["rule_params"]["trading_day"] == "2026-05-29"


def test_a_total_breach_explains_the_trailing_it_was_held_to() -> None:
    p = policy()
    locked = run(p, "112000").state

    explanation = only(run(p, "99999.99", state=locked), "total_drawdown").explanation

    assert explanation is not None
    assert (explanation["floor_or_limit"], explanation["high_water_mark"]) == (D(100000), D(112000))
    assert explanation["reference"] == {"kind": "initial_balance", "value": D(100000), "source": "laravel"}
    assert explanation["rule_params"]["trailing"] is True
    assert explanation["rule_params"]["lock_trailing_drawdown"] is True


def test_every_breach_carries_an_explanation() -> None:
    p = policy(max_daily_dd_pct=20, max_open_positions=1, max_total_volume=1, profit_target_pct=1)
    result = evaluate(view("78000", positions=(position(1, "-2500"), position(2, "-3000"))), p, RiskState.initial(p))

    assert result.breaches
    for breach in result.breaches:
        assert breach.explanation is not None
        assert set(breach.explanation) == {
            "measured",
            "measured_kind",
            "floor_or_limit",
            "reference",
            "high_water_mark",
            "rule_params",
        }


# --- Properties --------------------------------------------------------------------------

money = st.decimals(min_value=D("1000"), max_value=D("1000000"), places=2)
percent = st.decimals(min_value=D("0.01"), max_value=D("50"), places=2)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    i = draw(money)
    return policy(
        initial_balance_snapshot=str(i),
        daily_starting_balance=str(draw(money)),
        max_daily_dd_pct=str(draw(percent)),
        max_total_dd_pct=str(draw(percent)),
        trailing_drawdown=draw(st.booleans()),
        lock_trailing_drawdown=draw(st.booleans()),
        trailing_source=draw(st.sampled_from(["equity", "balance", "eod_balance", ...])),
        trailing_lock_offset=str(draw(st.decimals(min_value=0, max_value=5000, places=2))),
        breach_at_floor=draw(st.booleans()),
        daily_dd_base=draw(st.sampled_from(["starting_balance", "initial_balance"])),
    )


@settings(max_examples=150, deadline=None)
@given(
    p=policies(),
    moves=st.lists(st.tuples(money, money, st.integers(0, 50)), min_size=1, max_size=12),
    digits=st.integers(0, 3),
)
def test_no_drawdown_breach_while_m_is_above_every_floor_and_the_floor_never_falls_within_a_version(
    p: Policy, moves: list[tuple[Decimal, Decimal, int]], digits: int
) -> None:
    state = RiskState.initial(p)
    at = NOON
    previous_floor: Decimal | None = None
    for equity, balance, hours in moves:
        at += timedelta(hours=hours)
        result = evaluate(view(str(equity), balance=str(balance), at=at, digits=digits), p, state)
        measured = result.measured
        assert result.daily_floor is not None and result.total_floor is not None
        floors = (result.daily_floor, result.total_floor)
        # The shown floors have the account's digits, and they are exactly what was compared.
        assert all(f == f.quantize(D(1).scaleb(-digits)) for f in floors)
        daily = measured <= result.daily_floor if p.breach_at_floor else measured < result.daily_floor
        total = measured <= result.total_floor if p.breach_at_floor else measured < result.total_floor
        assert ("daily_drawdown" in keys(result)) is daily
        assert ("total_drawdown" in keys(result)) is total
        if previous_floor is not None:
            assert result.total_floor >= previous_floor
        previous_floor = result.total_floor
        state = result.state


instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
) | st.sampled_from(
    [
        datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # US spring forward
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # EU spring forward
        datetime(2026, 10, 25, 1, 0, tzinfo=UTC),  # EU fall back
        datetime(2026, 11, 1, 6, 0, tzinfo=UTC),  # US fall back
    ]
)
resets = st.sampled_from([time(0, 0), time(17, 0), time(22, 0), time(1, 30), time(2, 30), time(3, 0), time(23, 59)])
zones = st.sampled_from([PRAGUE, NEW_YORK, ZoneInfo("Europe/London"), UTC])


@settings(max_examples=300, deadline=None)
@given(zone=zones, reset=resets, first=instants, gap=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)))
def test_every_instant_belongs_to_exactly_one_trading_day_and_day_names_never_go_back(
    zone: ZoneInfo, reset: time, first: datetime, gap: timedelta
) -> None:
    calendar = TradingCalendar(zone, reset)
    later = first + gap

    for at in (first, later):
        name = calendar.day_of(at)
        # Exactly one day: at is inside [start(name), start(name + 1)), and days tile without gaps.
        assert calendar.start_of(name) <= at < calendar.start_of(name + timedelta(days=1))
        assert calendar.start_of(name - timedelta(days=1)) < calendar.start_of(name)
    assert calendar.day_of(first) <= calendar.day_of(later)
    assert TradingCalendar(zone, reset).day_of(later) == calendar.day_of(later)  # the cache changes nothing
    assert trading_day(later, reset, zone) == calendar.day_of(later)


@settings(max_examples=100, deadline=None)
@given(
    d=st.decimals(min_value=D("1000"), max_value=D("1000000"), places=4),
    pct=st.decimals(min_value=D("0.001"), max_value=D("50"), places=3),
    digits=st.integers(0, 4),
    offset=st.integers(-3, 3),
)
def test_rounding_never_makes_the_displayed_floor_disagree_with_the_comparison(
    d: Decimal, pct: Decimal, digits: int, offset: int
) -> None:
    p = policy(daily_starting_balance=str(d), max_daily_dd_pct=str(pct), max_total_dd_pct=None)
    shown = evaluate(view("1000000000", digits=digits), p, RiskState.initial(p)).daily_floor
    assert shown is not None
    measured = shown + D(offset).scaleb(-digits)  # a few units of the last shown digit either side

    result = evaluate(view(str(measured), digits=digits), p, RiskState.initial(p))

    assert result.daily_floor == shown
    assert ("daily_drawdown" in keys(result)) is (measured < shown)


def test_a_modify_leaving_no_stop_loss_is_refused_only_where_the_policy_requires_one() -> None:
    required = policy(require_stop_loss=True)

    removed = modify_position_check(required, 7, D(0))
    none_kept = modify_position_check(required, 7, None)

    assert removed is not None and none_kept is not None
    assert (removed.rule_key, removed.measured, removed.limit) == ("stop_loss_required", D(0), D(1))
    assert removed.explanation["measured_kind"] == "stop_loss_given"
    assert removed.explanation["rule_params"]["ticket"] == 7
    assert modify_position_check(required, 7, D("1.08")) is None
    assert modify_position_check(policy(), 7, D(0)) is None
