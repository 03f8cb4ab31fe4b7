"""RISK_RULES.md, number by number, against `risk.rules` (no Django needed).

The account is the panel's: policy snapshot version 12 (I = 100,000, D = 98,500 for
2026-05-29, 5 % daily, 10 % total, 2 % single trade, equity, trailing lock on, one violation
allowed) and its protective-action report (ticket 555111, floating -2,500).
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from commands import examples
from risk.rules import (
    RULES,
    AccountView,
    Breach,
    Evaluation,
    Policy,
    PolicyError,
    PositionView,
    RiskState,
    StalePolicyError,
    evaluate,
    open_position_block,
    trading_day,
)

PANEL_PAYLOAD: dict[str, Any] = copy.deepcopy(examples.POLICY_SNAPSHOT["payload"])
FLAGS = (
    "close_position_on_single_trade_breach",
    "close_all_on_daily_dd",
    "close_all_on_total_dd",
    "disable_trading_on_breach",
)
NOON = datetime(2026, 5, 29, 12, 1, tzinfo=UTC)


def D(value: str | int) -> Decimal:
    return Decimal(str(value))


def policy(**changes: Any) -> Policy:
    """The panel's snapshot with some fields changed (flags by name, None removes a field)."""
    payload = copy.deepcopy(PANEL_PAYLOAD)
    for key, value in changes.items():
        target = payload["enforcement_flags"] if key in FLAGS else payload
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return Policy.from_payload(payload)


def position(ticket: int, profit: str, swap: str = "0", commission: str = "0") -> PositionView:
    return PositionView(
        ticket=ticket,
        symbol="EURUSD",
        volume=D("1.0"),
        profit=D(profit),
        swap=D(swap),
        commission=D(commission),
    )


def view(
    equity: str = "100000",
    balance: str | None = None,
    positions: tuple[PositionView, ...] = (),
    at: datetime = NOON,
) -> AccountView:
    return AccountView(
        login=50040367,
        balance=D(balance if balance is not None else equity),
        equity=D(equity),
        positions=positions,
        observed_at=at,
    )


def run(p: Policy, *equities: str, state: RiskState | None = None, at: datetime = NOON) -> Evaluation:
    """Evaluate a series of equities in order, carrying the state; return the last evaluation."""
    current = state or RiskState.initial(p)
    result = None
    for equity in equities:
        result = evaluate(view(equity, at=at), p, current)
        current = result.state
    assert result is not None
    return result


def only(result: Evaluation, rule_key: str) -> Breach:
    found = [b for b in result.breaches if b.rule_key == rule_key]
    assert len(found) == 1, result.breaches
    return found[0]


def keys(result: Evaluation) -> list[str]:
    return [b.rule_key for b in result.breaches]


# --- Reading the snapshot ---------------------------------------------------------------


def test_the_panel_snapshot_reads_into_a_policy_with_the_spec_defaults() -> None:
    p = Policy.from_payload(PANEL_PAYLOAD)

    assert p.policy_version == 12
    assert p.initial_balance == D(100000)
    assert p.daily_starting_balance == D(98500)
    assert p.daily_starting_balance_date == date(2026, 5, 29)
    assert p.max_single_trade_loss_violations_allowed == 1
    assert p.trailing_drawdown is None
    assert p.is_trailing  # absent trailing_drawdown + lock on
    assert p.daily_dd_base == "starting_balance"
    assert p.daily_reset_time_utc == time(0, 0)
    assert p.close_all_on_total_dd is True
    assert p.disable_trading_on_breach is False
    assert p.high_water_mark is None


def test_numbers_sent_as_floats_or_strings_are_read_exactly() -> None:
    p = policy(max_daily_dd_pct=4.1, initial_balance_snapshot="100000.00", policy_version=13)

    assert p.max_daily_dd_pct == D("4.1")
    assert p.initial_balance == D("100000.00")
    assert p.policy_version == 13
    with pytest.raises(PolicyError, match="policy_version: A valid integer is required"):
        policy(policy_version="13")  # a version is a JSON integer, as the intake's schema says


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"initial_balance_snapshot": None}, "initial_balance_snapshot: This field is required"),
        ({"disable_trading_on_breach": None}, "enforcement_flags.disable_trading_on_breach"),
        ({"drawdown_type": "margin"}, "drawdown_type"),
        ({"daily_dd_base": "peak"}, "daily_dd_base"),
        ({"max_total_dd_pct": True}, "max_total_dd_pct: Must be a number"),
        ({"max_total_dd_pct": "NaN"}, "max_total_dd_pct: Must be a finite number"),
        ({"max_daily_dd_pct": 120}, "max_daily_dd_pct: Must be at most 100"),
        ({"policy_version": 12.5}, "policy_version: A valid integer is required"),
        ({"lock_trailing_drawdown": "yes"}, "lock_trailing_drawdown: Must be true or false"),
        ({"daily_reset_time_utc": "25:00"}, "daily_reset_time_utc"),
    ],
)
def test_a_snapshot_the_rules_cannot_read_is_refused_naming_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        policy(**changes)


def test_the_rule_table_has_one_row_per_rule_key_of_the_spec() -> None:
    assert [(r.key, r.scope, r.action, r.flag, r.hard) for r in RULES] == [
        ("daily_drawdown", "day", "close_all", "close_all_on_daily_dd", True),
        ("total_drawdown", "lifetime", "close_all", "close_all_on_total_dd", True),
        ("single_trade_loss", "ticket", "close_position", "close_position_on_single_trade_breach", False),
        ("single_trade_loss_limit", "lifetime", "none", None, True),
        ("max_open_positions", "ticket", "close_position", "close_excess_positions", False),
        ("max_position_volume", "ticket", "reduce_position", "close_oversized_positions", False),
        ("max_total_volume", "day", "report", None, False),
        ("stop_loss_required", "ticket", "close_position", "close_positions_without_sl", False),
        ("single_trade_risk", "command", "reject", None, False),
        ("weekend_holding", "week", "close_all", "close_all_before_weekend", False),
        ("profit_target", "version", "report", None, False),
    ]


# --- daily_drawdown ---------------------------------------------------------------------


def test_the_panel_daily_floor_is_93575() -> None:
    result = run(policy(), "100000")

    assert result.daily_floor == D(93575)
    assert result.daily_headroom == D(6425)
    assert result.breaches == ()


def test_equity_one_cent_below_the_daily_floor_breaches() -> None:
    result = run(policy(), "93574.99")

    assert result.breaches == (
        Breach(
            rule_key="daily_drawdown",
            scope="day:2026-05-29",
            threshold_used=D(5),
            floor_or_limit=D(93575),
            measured=D("93574.99"),
            ticket=None,
            action="close_all",
            enabled=True,
            hard=True,
            violation_count=None,
        ),
    )
    assert result.daily_headroom == D("-0.01")


def test_equity_exactly_on_the_daily_floor_does_not_breach() -> None:
    assert run(policy(), "93575.00").breaches == ()


def test_daily_dd_base_initial_balance_takes_the_percent_of_i() -> None:
    p = policy(daily_dd_base="initial_balance")

    assert run(p, "93500.00").daily_floor == D(93500)  # 98,500 - 5 % x 100,000
    assert run(p, "93500.00").breaches == ()
    assert keys(run(p, "93499.99")) == ["daily_drawdown"]


def test_a_balance_drawdown_measures_the_balance_not_the_equity() -> None:
    p = policy(drawdown_type="balance")

    losing_equity = evaluate(view("93000", balance="98000"), p, RiskState.initial(p))
    losing_balance = evaluate(view("99000", balance="93574.99"), p, RiskState.initial(p))

    assert losing_equity.breaches == ()
    assert losing_equity.measured == D(98000)
    assert only(losing_balance, "daily_drawdown").measured == D("93574.99")


# --- total_drawdown ---------------------------------------------------------------------


def test_the_panel_total_floor_starts_at_90000() -> None:
    assert RiskState.initial(policy()).total_floor == D(90000)
    assert run(policy(), "100000").total_floor == D(90000)


def test_the_trailing_floor_follows_the_high_water_mark_and_locks_at_i() -> None:
    p = policy()
    peak_104k = run(p, "104000")
    peak_112k = run(p, "112000", state=peak_104k.state)
    peak_130k = run(p, "130000", state=peak_112k.state)
    back_to_104k = run(p, "104000", state=peak_130k.state)

    assert peak_104k.total_floor == D(94000)
    assert peak_112k.total_floor == D(100000)
    assert peak_130k.total_floor == D(100000)
    assert peak_130k.state.high_water_mark == D(130000)
    assert back_to_104k.total_floor == D(100000)  # never goes down
    assert back_to_104k.total_headroom == D(4000)
    assert back_to_104k.breaches == ()


def test_equity_one_cent_below_the_locked_floor_breaches_and_on_it_does_not() -> None:
    p = policy()
    locked = run(p, "112000").state

    assert run(p, "100000.00", state=locked).breaches == ()
    breach = only(run(p, "99999.99", state=locked), "total_drawdown")
    assert (breach.scope, breach.threshold_used, breach.floor_or_limit) == (
        "lifetime",
        D(10),
        D(100000),
    )
    assert (breach.action, breach.enabled, breach.hard) == ("close_all", True, True)


def test_equity_one_cent_below_the_starting_total_floor_breaches() -> None:
    p = policy(max_daily_dd_pct=20)  # daily floor 78,800, out of the way

    assert run(p, "90000.00").breaches == ()
    assert keys(run(p, "89999.99")) == ["total_drawdown"]


def test_a_static_total_floor_does_not_trail() -> None:
    p = policy(lock_trailing_drawdown=False)

    result = run(p, "112000", "104000")

    assert result.total_floor == D(90000)
    assert result.state.high_water_mark == D(112000)  # still kept, should the policy trail later


def test_trailing_drawdown_true_without_the_lock_keeps_rising_above_i() -> None:
    p = policy(trailing_drawdown=True, lock_trailing_drawdown=False)

    assert run(p, "112000").total_floor == D(102000)
    assert keys(run(p, "112000", "101999.99")) == ["total_drawdown"]


def test_trailing_drawdown_false_wins_over_the_lock() -> None:
    assert run(policy(trailing_drawdown=False), "112000").total_floor == D(90000)


# --- single_trade_loss ------------------------------------------------------------------


def test_the_panel_single_trade_threshold_is_2000() -> None:
    assert policy().thresholds.single_trade_threshold == D(2000)


def test_the_panels_reported_position_breaches_with_threshold_used_2() -> None:
    p = policy()
    report = view("97500", balance="100000", positions=(position(555111, "-2500"),))

    result = evaluate(report, p, RiskState.initial(p))

    assert result.breaches == (
        Breach(
            rule_key="single_trade_loss",
            scope="ticket:555111",
            threshold_used=D(2),
            floor_or_limit=D(-2000),
            measured=D(-2500),
            ticket=555111,
            action="close_position",
            enabled=True,
            hard=False,
            violation_count=1,
        ),
    )
    assert result.state.violation_count == 1
    assert result.state.breached_tickets == {555111}


def test_a_loss_exactly_at_the_threshold_does_not_breach_and_one_cent_more_does() -> None:
    p = policy()
    on_it = view("98000", positions=(position(1, "-2000.00"),))
    past_it = view("97999.99", positions=(position(1, "-2000.01"),))

    assert evaluate(on_it, p, RiskState.initial(p)).breaches == ()
    assert keys(evaluate(past_it, p, RiskState.initial(p))) == ["single_trade_loss"]


def test_swap_and_commission_count_toward_a_positions_loss() -> None:
    p = policy()
    losing = position(7, "-1990.00", swap="-5.00", commission="-5.01")

    result = evaluate(view("97999.99", positions=(losing,)), p, RiskState.initial(p))

    assert losing.loss == D("-2000.01")
    assert only(result, "single_trade_loss").measured == D("-2000.01")


def test_the_same_breaching_position_seen_twice_counts_once() -> None:
    p = policy()
    losing = view("97500", positions=(position(555111, "-2500"),))

    first = evaluate(losing, p, RiskState.initial(p))
    second = evaluate(losing, p, first.state)

    assert first.state.violation_count == 1
    assert second.breaches == ()
    assert second.state.violation_count == 1
    assert second.state is first.state


def test_the_second_breaching_position_escalates_with_the_panel_snapshot() -> None:
    p = policy()
    first = evaluate(view("97500", positions=(position(1, "-2500"),)), p, RiskState.initial(p))
    both = (position(1, "-2500"), position(2, "-2100"))
    second = evaluate(view("95400", positions=both), p, first.state)

    assert keys(first) == ["single_trade_loss"]  # count 1: allowed
    assert first.state.hard_breached is False
    assert keys(second) == ["single_trade_loss", "single_trade_loss_limit"]
    assert only(second, "single_trade_loss").ticket == 2
    assert only(second, "single_trade_loss").violation_count == 2
    assert only(second, "single_trade_loss_limit") == Breach(
        rule_key="single_trade_loss_limit",
        scope="lifetime",
        threshold_used=D(2),
        floor_or_limit=D(1),
        measured=D(2),
        ticket=None,
        action="none",
        enabled=True,
        hard=True,
        violation_count=2,
    )
    assert second.state.hard_breached is True
    assert second.trading_enabled is True  # disable_trading_on_breach is false in the panel


def test_two_positions_breaching_at_once_are_counted_one_each_and_escalate() -> None:
    p = policy()
    both = (position(1, "-2500"), position(2, "-2100"))

    result = evaluate(view("95400", positions=both), p, RiskState.initial(p))

    assert [(b.rule_key, b.violation_count) for b in result.breaches] == [
        ("single_trade_loss", 1),
        ("single_trade_loss", 2),
        ("single_trade_loss_limit", 2),
    ]


def test_the_count_starts_at_the_snapshots_exceed_count() -> None:
    p = policy(current_single_trade_exceed_count=1)

    result = evaluate(view("97500", positions=(position(1, "-2500"),)), p, RiskState.initial(p))

    assert keys(result) == ["single_trade_loss", "single_trade_loss_limit"]
    assert result.state.violation_count == 2


# --- enforcement flags ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "equity", "positions", "rule_key"),
    [
        ("close_position_on_single_trade_breach", "97500", (position(1, "-2500"),), "single_trade_loss"),
        ("close_all_on_daily_dd", "93000", (), "daily_drawdown"),
        ("close_all_on_total_dd", "89000", (), "total_drawdown"),
    ],
)
def test_a_breach_whose_flag_is_false_is_still_reported_but_not_enabled(
    flag: str, equity: str, positions: tuple[PositionView, ...], rule_key: str
) -> None:
    for enabled in (True, False):
        p = policy(**{flag: enabled})

        result = evaluate(view(equity, positions=positions), p, RiskState.initial(p))

        assert only(result, rule_key).enabled is enabled


def test_close_all_on_total_dd_defaults_to_true() -> None:
    assert only(run(policy(), "89000"), "total_drawdown").enabled is True


def test_a_hard_breach_leaves_trading_enabled_when_disable_trading_on_breach_is_false() -> None:
    result = run(policy(), "89000")

    assert result.state.hard_breached is True
    assert result.trading_enabled is True
    assert result.trading_block is None


# --- disabling trading ------------------------------------------------------------------


def test_a_daily_breach_disables_trading_until_the_next_trading_day() -> None:
    p = policy(disable_trading_on_breach=True)
    breached = run(p, "93000")
    late_that_day = evaluate(view("99000", at=datetime(2026, 5, 29, 23, 59, 59, tzinfo=UTC)), p, breached.state)
    next_day = evaluate(view("99000", at=datetime(2026, 5, 30, tzinfo=UTC)), p, breached.state)

    assert breached.trading_enabled is False
    assert breached.trading_block == "trading_disabled"
    assert breached.state.trading_disabled_until == datetime(2026, 5, 30, tzinfo=UTC)
    assert breached.state.hard_breached is False  # a daily breach is not a lifetime one
    assert late_that_day.trading_enabled is False
    assert next_day.trading_enabled is True
    assert next_day.state.trading_disabled_until is None


def test_a_total_breach_disables_trading_until_an_active_newer_snapshot_that_reinstates() -> None:
    flags = {"disable_trading_on_breach": True, "max_daily_dd_pct": 20}  # no daily breach
    p12 = policy(**flags)
    breached = run(p12, "89000").state
    same_version = RiskState.apply_policy(breached, p12)
    newer_but_suspended = RiskState.apply_policy(
        breached, policy(policy_version=13, account_status="suspended", **flags)
    )
    routine = RiskState.apply_policy(newer_but_suspended, policy(policy_version=14, **flags))
    p15 = policy(policy_version=15, reinstate=True, **flags)
    newer_and_active = RiskState.apply_policy(routine, p15)

    assert open_position_block(p12, breached, NOON) == "trading_disabled"
    assert same_version is breached
    assert newer_but_suspended.hard_breached is True
    assert routine.hard_breached is True  # a routine active snapshot does not lift it (v2)
    assert newer_and_active.hard_breached is False
    assert open_position_block(p15, newer_and_active, NOON) is None


def test_the_escalation_disables_trading_until_an_active_newer_snapshot_that_reinstates() -> None:
    p = policy(disable_trading_on_breach=True, current_single_trade_exceed_count=1)

    result = evaluate(view("97500", positions=(position(1, "-2500"),)), p, RiskState.initial(p))

    assert result.state.hard_breached is True
    assert result.trading_block == "trading_disabled"
    routine = RiskState.apply_policy(result.state, policy(policy_version=13, disable_trading_on_breach=True))
    after = RiskState.apply_policy(routine, policy(policy_version=14, disable_trading_on_breach=True, reinstate=True))
    assert routine.hard_breached is True
    assert after.hard_breached is False


def test_an_inactive_account_is_still_monitored_and_may_not_open_positions() -> None:
    p = policy(account_status="suspended")

    result = run(p, "93000")

    assert keys(result) == ["daily_drawdown"]
    assert result.trading_enabled is False
    assert result.trading_block == "account_not_active"
    assert open_position_block(p, result.state, NOON) == "account_not_active"


# --- trading days -----------------------------------------------------------------------


def test_a_new_day_without_a_snapshot_takes_the_observed_balance_as_its_reference() -> None:
    p = policy()
    just_after_reset = datetime(2026, 5, 30, 0, 0, 5, tzinfo=UTC)

    result = evaluate(view("96900", balance="97000", at=just_after_reset), p, RiskState.initial(p))

    assert result.state.daily_reference == D(97000)
    assert result.state.daily_reference_date == date(2026, 5, 30)
    assert result.state.daily_reference_source == "bridge"
    assert result.daily_floor == D(92150)  # 97,000 - 5 % x 97,000
    assert keys(evaluate(view("92149.99", at=just_after_reset), p, result.state)) == ["daily_drawdown"]


def test_laravels_snapshot_for_the_day_replaces_the_bridge_reference() -> None:
    p12 = policy()
    bridged = evaluate(view("97000", at=datetime(2026, 5, 30, 0, 0, 5, tzinfo=UTC)), p12, RiskState.initial(p12)).state
    p13 = policy(policy_version=13, daily_starting_balance=97100, daily_starting_balance_date="2026-05-30")

    state = RiskState.apply_policy(bridged, p13)
    result = evaluate(view("97000", at=datetime(2026, 5, 30, 0, 1, tzinfo=UTC)), p13, state)

    assert (state.daily_reference, state.daily_reference_source) == (D(97100), "laravel")
    assert result.daily_floor == D(92245)  # 97,100 - 4,855


def test_a_newer_snapshot_still_carrying_yesterdays_reference_keeps_the_bridge_one() -> None:
    p12 = policy()
    bridged = evaluate(view("97000", at=datetime(2026, 5, 30, 0, 0, 5, tzinfo=UTC)), p12, RiskState.initial(p12)).state

    state = RiskState.apply_policy(bridged, policy(policy_version=13))

    assert (state.daily_reference, state.daily_reference_date) == (D(97000), date(2026, 5, 30))
    assert state.daily_reference_source == "bridge"


def test_a_reset_time_other_than_midnight_moves_the_day_boundary_and_names_the_day_it_ends_on() -> None:
    p = policy(daily_reset_time_utc="22:00", daily_starting_balance_date="2026-05-30")
    state = RiskState.initial(p)
    before = datetime(2026, 5, 30, 21, 59, 59, tzinfo=UTC)
    at_reset = datetime(2026, 5, 30, 22, 0, tzinfo=UTC)

    # The day that starts 29 May 22:00 ends on 30 May: it is 30 May's (RISK_RULES v2).
    assert trading_day(before, time(22, 0)) == date(2026, 5, 30)
    assert trading_day(at_reset, time(22, 0)) == date(2026, 5, 31)
    assert evaluate(view("97000", at=before), p, state).state is state
    rolled = evaluate(view("97000", at=at_reset), p, state)
    assert (rolled.state.daily_reference_date, rolled.state.daily_reference_source) == (
        date(2026, 5, 31),
        "bridge",
    )


def test_a_daily_disable_with_a_late_reset_lasts_one_day_not_two() -> None:
    p = policy(daily_reset_time_utc="22:00", disable_trading_on_breach=True, daily_starting_balance_date="2026-05-30")

    breached = run(p, "93000", at=datetime(2026, 5, 29, 23, 0, tzinfo=UTC))

    assert breached.state.trading_disabled_until == datetime(2026, 5, 30, 22, 0, tzinfo=UTC)
    assert only(breached, "daily_drawdown").scope == "day:2026-05-30"


def test_a_snapshot_for_the_next_day_arriving_before_the_reset_is_used_at_once() -> None:
    p13 = policy(policy_version=13, daily_starting_balance=97000, daily_starting_balance_date="2026-05-30")
    state = RiskState.apply_policy(RiskState.initial(policy()), p13)
    just_before_reset = datetime(2026, 5, 29, 23, 59, 59, 900000, tzinfo=UTC)

    result = evaluate(view("92149.99", at=just_before_reset), p13, state)

    assert result.daily_floor == D(92150)
    assert only(result, "daily_drawdown").scope == "day:2026-05-30"
    assert result.state.trading_disabled_until == datetime(2026, 5, 31, tzinfo=UTC)


def test_times_are_taken_in_utc_and_a_naive_time_is_refused() -> None:
    three_hours_east = timezone(timedelta(hours=3))

    assert trading_day(datetime(2026, 5, 30, 1, 0, tzinfo=three_hours_east), time(0)) == date(2026, 5, 29)
    assert view(at=datetime(2026, 5, 30, 1, 0, tzinfo=three_hours_east)).observed_at == datetime(
        2026, 5, 29, 22, 0, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        trading_day(datetime(2026, 5, 30), time(0))


# --- new policy versions ----------------------------------------------------------------


def test_a_new_policy_version_changing_i_restarts_the_high_water_mark() -> None:
    locked = run(policy(), "112000").state

    state = RiskState.apply_policy(locked, policy(policy_version=13, initial_balance_snapshot=120000))

    assert state.high_water_mark == D(120000)
    assert state.total_floor == D(108000)  # 120,000 - 10 % x 120,000


def test_a_new_policy_version_with_the_same_i_keeps_the_high_water_mark_and_the_floor() -> None:
    peaked = run(policy(), "104000").state

    state = RiskState.apply_policy(peaked, policy(policy_version=13))

    assert state.high_water_mark == D(104000)
    assert state.total_floor == D(94000)


def test_a_snapshot_high_water_mark_restores_it() -> None:
    restored = RiskState.initial(policy(high_water_mark="104000"))
    lagging = RiskState.apply_policy(run(policy(), "112000").state, policy(policy_version=13, high_water_mark=104000))

    assert (restored.high_water_mark, restored.total_floor) == (D(104000), D(94000))
    assert lagging.high_water_mark == D(112000)  # Laravel's older peak does not lower ours
    assert lagging.total_floor == D(100000)


def test_a_restored_high_water_mark_is_never_below_i() -> None:
    assert RiskState.initial(policy(high_water_mark=95000)).high_water_mark == D(100000)


def test_the_violation_count_restarts_at_the_snapshots_count_but_counted_positions_stay_counted() -> None:
    p12 = policy()
    losing = view("97500", positions=(position(1, "-2500"),))
    counted = evaluate(losing, p12, RiskState.initial(p12)).state
    p13 = policy(policy_version=13, current_single_trade_exceed_count=1)

    state = RiskState.apply_policy(counted, p13)

    assert state.violation_count == 1
    assert evaluate(losing, p13, state).breaches == ()


def test_an_older_policy_version_is_refused_and_the_same_one_changes_nothing() -> None:
    state = RiskState.initial(policy())

    with pytest.raises(StalePolicyError):
        RiskState.apply_policy(state, policy(policy_version=11))
    assert RiskState.apply_policy(state, policy()) is state


def test_evaluating_with_a_state_of_another_version_is_refused() -> None:
    with pytest.raises(ValueError, match="apply_policy"):
        evaluate(view(), policy(policy_version=13), RiskState.initial(policy()))


# --- the evaluation as a whole ----------------------------------------------------------


def test_an_account_where_nothing_moved_keeps_the_same_state_object() -> None:
    p = policy()
    state = RiskState.initial(p)

    assert evaluate(view("99000"), p, state).state is state


def test_breaches_are_listed_in_the_order_of_the_rule_table() -> None:
    p = policy(max_daily_dd_pct=20)
    wrecked = view("78000", positions=(position(1, "-2500"), position(2, "-3000")))

    result = evaluate(wrecked, p, RiskState.initial(p))

    assert keys(result) == [
        "daily_drawdown",
        "total_drawdown",
        "single_trade_loss",
        "single_trade_loss",
        "single_trade_loss_limit",
    ]


def test_every_amount_is_a_decimal() -> None:
    p = policy()
    result = evaluate(view("97500", positions=(position(1, "-2500"),)), p, RiskState.initial(p))
    amounts = [
        result.daily_floor,
        result.total_floor,
        result.daily_headroom,
        result.total_headroom,
        result.measured,
        result.state.high_water_mark,
        result.state.total_floor,
        result.state.daily_reference,
    ]
    for breach in result.breaches:
        amounts += [breach.threshold_used, breach.floor_or_limit, breach.measured]

    assert all(type(amount) is Decimal for amount in amounts)
