"""One risk-evaluation cycle over 10,000 accounts x 10 positions, against a bare Decimal loop.

Run: python bench/bench_risk_eval.py [--accounts N] [--positions N] [--runs N]

The baseline is the least any evaluation must do with the same numbers: add profit, swap and
commission per position and compare it with the single-trade limit, compare equity with the
two floors. The target is a cycle within 100 ms on one core. "first" evaluates every account from a fresh
state (about 4 in 10 states change: equity above the starting high-water mark, positions
counted); "steady" runs the next cycle from those states, as the monitor does every poll.
"v2 steady" is the steady cycle with every rule of RISK_RULES "Rules v2" on (a Prague trading
day, balance trailing with a lock offset, every position rule, the weekend cut-off, a profit
target); the issue's mark is v2 steady <= 2.5 x the bare loop of the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from risk.rules import (
    AccountView,
    Policy,
    PositionView,
    RiskState,
    evaluate,
)

PANEL_POLICY: dict[str, object] = json.loads(
    """{
    "account_status": "active",
    "policy_version": 12,
    "initial_balance_snapshot": 100000,
    "daily_starting_balance": 98500,
    "daily_starting_balance_date": "2026-05-29",
    "max_daily_dd_pct": 5,
    "max_total_dd_pct": 10,
    "drawdown_type": "equity",
    "lock_trailing_drawdown": true,
    "max_single_trade_loss_pct": 2,
    "max_single_trade_loss_violations_allowed": 1,
    "current_single_trade_exceed_count": 0,
    "enforcement_flags": {
        "close_position_on_single_trade_breach": true,
        "close_all_on_daily_dd": true,
        "disable_trading_on_breach": false
    }
}"""
)
# Every v2 field on, none of them breached by the book (a weekday, positions with stops, within limits).
V2_POLICY: dict[str, object] = {
    **PANEL_POLICY,
    "daily_reset_timezone": "Europe/Prague",
    "daily_reset_time": "00:00",
    "daily_reference_fallback": "max_balance_equity",
    "trailing_source": "balance",
    "trailing_lock_offset": 100,
    "max_open_positions": 50,
    "max_position_volume": 10,
    "max_total_volume": 100,
    "require_stop_loss": True,
    "stop_loss_grace_seconds": 30,
    "close_before_weekend": "21:00",
    "profit_target_pct": 10,
}
OBSERVED_AT = datetime(2026, 5, 28, 12, 1, tzinfo=UTC)  # a Thursday: the weekend rule is looked at, not breached
CENT = Decimal("0.01")

Account = tuple[AccountView, Policy, RiskState]


def build(
    accounts: int, positions: int, seed: int = 20260529, payload: dict[str, object] = PANEL_POLICY
) -> list[Account]:
    """Accounts around the panel's balance, positions mostly quiet, about 1 % past the limit."""
    rng = random.Random(seed)
    book: list[Account] = []
    ticket = 500_000
    for login in range(50_000_000, 50_000_000 + accounts):
        policy = Policy.from_payload(dict(payload, daily_starting_balance_date="2026-05-28"))
        balance = Decimal(rng.randrange(9_700_000, 10_300_000)) * CENT
        open_positions = []
        for _ in range(positions):
            ticket += 1
            profit = Decimal(rng.randrange(-180_000, 150_000)) * CENT
            if rng.random() < 0.01:
                profit -= 2_000
            open_positions.append(
                PositionView(
                    ticket=ticket,
                    symbol="EURUSD",
                    volume=Decimal("1.00"),
                    profit=profit,
                    swap=Decimal(rng.randrange(-2_000, 500)) * CENT,
                    commission=Decimal("-7.00"),
                    opened_at=OBSERVED_AT - timedelta(minutes=rng.randrange(1, 600)),
                    sl=Decimal("1.05000"),
                )
            )
        equity = balance + sum((p.profit + p.swap + p.commission for p in open_positions), Decimal())
        view = AccountView(
            login=login,
            balance=balance,
            equity=equity,
            positions=tuple(open_positions),
            observed_at=OBSERVED_AT,
        )
        book.append((view, policy, RiskState.initial(policy)))
    return book


def cycle(book: list[Account]) -> int:
    """One evaluation of every account from its stored state, as the risk monitor does."""
    breaches = 0
    for view, policy, state in book:
        breaches += len(evaluate(view, policy, state).breaches)
    return breaches


def carried_over(book: list[Account]) -> list[Account]:
    """The book after one cycle: high-water marks and counted positions already in the state."""
    return [(view, policy, evaluate(view, policy, state).state) for view, policy, state in book]


def baseline(book: list[Account]) -> int:
    """The same comparisons with nothing around them."""
    breaches = 0
    for view, policy, state in book:
        limit = policy.thresholds.single_trade_limit
        for p in view.positions:
            if p.profit + p.swap + p.commission < limit:
                breaches += 1
        equity = view.equity
        if equity < policy.thresholds.laravel_daily_floor:
            breaches += 1
        if equity < state.total_floor:
            breaches += 1
    return breaches


def timed(fn: Callable[[list[Account]], int], book: list[Account], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            fn(book)
            samples.append((time.perf_counter() - start) * 1000)
        finally:
            gc.enable()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--positions", type=int, default=10)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()

    first = build(args.accounts, args.positions)
    steady = carried_over(first)
    changed = sum(new[2] is not old[2] for old, new in zip(first, steady, strict=True))
    v2 = carried_over(build(args.accounts, args.positions, payload=V2_POLICY))
    samples: dict[str, list[float]] = {"first": [], "steady": [], "baseline": [], "v2": []}
    for _ in range(args.runs):  # interleaved, so all four see the same machine noise
        samples["first"] += timed(cycle, first, 1)
        samples["steady"] += timed(cycle, steady, 1)
        samples["v2"] += timed(cycle, v2, 1)
        samples["baseline"] += timed(baseline, first, 1)

    print(f"{args.accounts:,} accounts x {args.positions} positions, {args.runs} runs, Python {sys.version.split()[0]}")
    print(
        f"breaches per cycle: {cycle(first)} first, {cycle(steady)} steady; "
        f"states changed by the first cycle: {changed:,}; bare loop's count: {baseline(first)}"
    )
    print(f"{'':8}{'first cycle ms':>16}{'steady cycle ms':>17}{'baseline ms':>13}{'ratio f/s':>14}")
    for label, pick in (("best", min), ("median", statistics.median)):
        c, s, b = (pick(samples[key]) for key in ("first", "steady", "baseline"))
        print(f"{label:8}{c:16.1f}{s:17.1f}{b:13.1f}{c / b:7.2f}/{s / b:<6.2f}")
    best = max(min(samples["first"]), min(samples["steady"]))
    print(f"target: cycle <= 100 ms -> {'met' if best <= 100 else 'NOT met'} (best, both cycles)")
    print(f"v2 steady (every Rules v2 rule on): breaches per cycle {cycle(v2)}")
    for label, pick in (("best", min), ("median", statistics.median)):
        v, b = pick(samples["v2"]), pick(samples["baseline"])
        print(f"{label:8}v2 steady {v:7.1f} ms, baseline {b:6.1f} ms: ratio {v / b:.2f}")
    ratio = statistics.median(samples["v2"]) / statistics.median(samples["baseline"])
    print(f"mark: v2 steady <= 2.5 x baseline (medians) -> {'met' if ratio <= 2.5 else 'NOT met'} ({ratio:.2f})")


if __name__ == "__main__":
    main()
