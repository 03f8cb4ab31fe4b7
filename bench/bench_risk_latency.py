"""Detection → terminal-confirmed close with many monitored accounts and a normal-lane backlog.

    python bench/bench_risk_latency.py [--accounts 1000] [--trials 30] [--backlog 2000]

Real processes on PostgreSQL and the simulator: both lanes and the risk monitor. Each trial
opens 1.0 lot EURUSD on one account and drops the price 300 pips (a single-trade breach of the
panel's policy); the figures are the protective action's own timestamps.
"""

from __future__ import annotations

import argparse
import os
import time

from common import breach_trial, demo_accounts, fresh_database, percentile, setup_django, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--backlog", type=int, default=2000)
    args = parser.parse_args()

    url = fresh_database("bridge_bench_risk")
    setup_django(url)
    from django.conf import settings

    from commands.services import command_create
    from execution.gateways import get_gateway
    from execution.simulator.service import sim_set_price
    from policies.models import MonitorHeartbeat, TradingAccount
    from tests.processes import Proc

    gateway = get_gateway()
    sim_set_price("EURUSD", "1.08500")
    sim_set_price("GBPUSD", "1.27000")
    started = time.monotonic()
    logins = [60_000_000 + i for i in range(args.accounts)]
    demo_accounts(logins, "Bench-Server")
    for login in logins:
        gateway.open_position(login, "Bench-Server", symbol="GBPUSD", side="buy", volume=0.01, tag="bench")
    print(f"{args.accounts} accounts with a policy and a position in {time.monotonic() - started:.0f}s")
    demo = TradingAccount.objects.select_related("tenant").get(login=50040367)
    for n in range(args.backlog):
        command_create(
            tenant=demo.tenant,
            account=demo,
            common={
                "command_id": f"n-{n}",
                "command_type": "sync_account",
                "priority": "normal",
                "fast_lane": False,
                "reason": "",
                "expires_at_utc": None,
            },
            specific={},
            envelope={},
            correlation_id="bench",
            idempotency_key=f"n-{n}",
        )

    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING", "DJANGO_SECRET_KEY": settings.SECRET_KEY}
    procs = [
        Proc("bench-normal", ["qcluster"], env),
        Proc("bench-fast", ["qcluster"], {**env, "Q_CLUSTER_NAME": "fastlane"}),
        Proc("bench-risk", ["riskmonitor"], env),
    ]
    move_to_detect: list[float] = []
    detect_to_close: list[float] = []
    cycles: list[float] = []
    for proc in procs:
        proc.start()
    try:
        # Warm-up: the monitor's first cycles read every account's entry commissions once.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not MonitorHeartbeat.objects.filter(last_cycle_ms__gt=0).exists():
            time.sleep(0.2)
        time.sleep(3)
        for trial in range(args.trials):
            login = logins[trial]
            timed = breach_trial(gateway, login, "Bench-Server", trial)
            if timed is None:
                continue
            move_to_detect.append(timed[0])
            detect_to_close.append(timed[1])
            cycles.extend(MonitorHeartbeat.objects.values_list("last_cycle_ms", flat=True))
    finally:
        for proc in procs:
            proc.stop()

    interval = settings.RISK_POLL_INTERVAL_MS
    print(f"\nRisk engine with {args.accounts} monitored accounts, {args.backlog} normal commands backlogged")
    print(f"  detection → terminal-confirmed close: {summary(detect_to_close)}")
    print(f"  price move → detection:               {summary(move_to_detect)}  (poll interval {interval} ms)")
    print(
        f"  monitor cycle over all accounts:       p50 {percentile(cycles, 50):.0f} ms, max {max(cycles or [0]):.0f} ms"
    )


if __name__ == "__main__":
    main()
