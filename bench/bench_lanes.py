"""Fast-lane latency with an idle and with a backlogged normal lane, and normal-lane throughput.

    python bench/bench_lanes.py [--fast 200] [--backlog 10000] [--normal-workers 2] [--backlog-accounts 1]

Real qcluster processes (both lanes) on PostgreSQL and the simulator. Latency is the command's
own record: `received_at` (accepted) → `finished_at` (the terminal confirmed), so it includes
the broker poll, the claim, the MT5 round trip and the bookkeeping. The backlog is on the fast
commands' own account by default (they then share its row lock); `--backlog-accounts N` spreads it
over N other accounts instead. The backlog is queued whole while the normal lane is stopped, then
the lane starts and the loaded phase runs against all of it; throughput is the backlog over its
first-to-last finish.
"""

from __future__ import annotations

import argparse
import os
import time

from common import ROOT, fresh_database, percentile, setup_django, summary  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--normal-workers", type=int, default=2)
    parser.add_argument("--backlog-accounts", type=int, default=1, help="1: the fast commands' account")
    args = parser.parse_args()

    url = fresh_database("bridge_bench_lanes")
    setup_django(url)
    from django.conf import settings
    from django.db import close_old_connections
    from django.utils import timezone

    from commands.models import Command
    from commands.services import command_create
    from commands.states import TERMINAL, State
    from execution.gateways import get_gateway
    from policies.models import TradingAccount
    from tests.processes import Proc

    account = TradingAccount.objects.select_related("tenant").get(login=50040367)
    gateway = get_gateway()
    ticket = gateway.open_position(
        account.login, account.server, symbol="EURUSD", side="buy", volume=0.1, tag="bench"
    ).position
    counter = iter(range(10**9))
    others: list[tuple[TradingAccount, int]] = []
    if args.backlog_accounts > 1:
        from execution.simulator.service import sim_account_create
        from tests.conftest import register_account

        for i in range(args.backlog_accounts):
            login = 70_000_000 + i
            sim_account_create(login=login, balance=100000, server=account.server)
            other = register_account(account.tenant, login=login, server=account.server)
            position = gateway.open_position(login, account.server, symbol="EURUSD", side="buy", volume=0.1, tag="b")
            others.append((other, position.position))

    def create(fast: bool, command_type: str = "modify_position") -> Command:
        n = next(counter)
        sl = f"1.0{700 + n % 50}"
        target, target_ticket = (account, ticket) if fast or not others else others[n % len(others)]
        return command_create(
            tenant=target.tenant,
            account=target,
            common={
                "command_id": f"{'f' if fast else 'n'}-{n}",
                "command_type": command_type,
                "priority": "critical" if fast else "normal",
                "fast_lane": fast,
                "reason": "bench",
                "expires_at_utc": None,
            },
            specific={"ticket": target_ticket, "stop_loss": sl},
            envelope={},
            correlation_id="bench",
            idempotency_key=f"k-{n}",
        )

    env = {
        **os.environ,
        "DATABASE_URL": url,
        "LOG_LEVEL": "WARNING",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "Q_NORMAL_WORKERS": str(args.normal_workers),
    }
    procs = [
        Proc("bench-normal", ["qcluster"], env),
        Proc("bench-fast", ["qcluster"], {**env, "Q_CLUSTER_NAME": "fastlane"}),
    ]

    def fast_latencies(count: int) -> list[float]:
        latencies = []
        for _ in range(count):
            command = create(True)
            while True:
                close_old_connections()
                row = Command.objects.values("state", "received_at", "finished_at").get(pk=command.pk)
                if row["state"] in TERMINAL:
                    break
                time.sleep(0.005)  # the latency is the row's own timestamps: polling need not be tight
            if row["state"] == State.SUCCEEDED:
                latencies.append((row["finished_at"] - row["received_at"]).total_seconds() * 1000)
            time.sleep(0.02)  # one protective command at a time, as a breach raises them
        return latencies

    normal_lane = procs[0]

    def settle() -> None:
        """Both phases start from the same database state: no checkpoint or autovacuum of the rows
        just written lands inside one of them by chance (either costs tens of milliseconds here)."""
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE commands_command")
            cursor.execute("CHECKPOINT")

    for proc in procs:
        proc.start()
    try:
        time.sleep(3)
        fast_latencies(10)  # warm-up
        settle()
        idle = fast_latencies(args.fast)

        # The backlog is queued whole while the normal lane is down, so the loaded phase has all of
        # it waiting and the lane's throughput is not shared with this process creating it.
        normal_lane.stop()
        started = time.monotonic()
        backlog = [create(False).pk for _ in range(args.backlog)]
        created_s = time.monotonic() - started
        settle()
        normal_lane.start()
        # Measured once the lane is at work on the backlog, not while its processes start.
        while not Command.objects.filter(pk=backlog[0]).exclude(state=State.QUEUED).exists():
            time.sleep(0.05)
        time.sleep(1)
        loaded_started = timezone.now()
        loaded = fast_latencies(args.fast)
        # The backlog's ids are one contiguous range of the normal lane: polling it by range
        # keeps a 10,000-id IN list from loading the database the lane is measured on.
        in_backlog = Command.objects.filter(lane="normal", pk__range=(backlog[0], backlog[-1]))
        waiting = in_backlog.filter(state=State.QUEUED).count()
        # Normal-lane throughput: drain what is left of the backlog.
        drain_started = time.monotonic()
        done_before = in_backlog.exclude(state__in=[State.QUEUED, State.EXECUTING]).count()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            remaining = in_backlog.filter(state__in=[State.QUEUED, State.EXECUTING]).count()
            if remaining == 0:
                break
            time.sleep(0.1)
        drain_s = time.monotonic() - drain_started
        done_after = in_backlog.exclude(state__in=[State.QUEUED, State.EXECUTING]).count()
        succeeded = in_backlog.filter(state=State.SUCCEEDED).count()
        first = (
            in_backlog.exclude(finished_at=None).order_by("finished_at").values_list("finished_at", flat=True).first()
        )
        last = (
            in_backlog.exclude(finished_at=None).order_by("-finished_at").values_list("finished_at", flat=True).first()
        )
    finally:
        for proc in procs:
            proc.stop()

    span = (last - first).total_seconds() if first and last else float("nan")
    cores = os.cpu_count()
    print(f"\nFast lane, accepted → terminal confirmed (modify_position, simulator, PostgreSQL, {cores} cores)")
    print(f"  idle normal lane:                 {summary(idle)}")
    where = "the same account" if not others else f"{len(others)} other accounts"
    print(f"  {args.backlog} normal backlogged:      {summary(loaded)}  ({waiting} normal still queued at the end)")
    print(f"  (the backlog is on {where})")
    print(f"  loaded/idle p99 ratio:            {percentile(loaded, 99) / percentile(idle, 99):.2f}")
    print(
        f"\nNormal lane ({args.normal_workers} workers): {args.backlog} commands created in {created_s:.1f}s; "
        f"{succeeded} succeeded; throughput {len(backlog) / span:.0f} commands/s over {span:.1f}s "
        f"(first to last finish, the fast commands above running meanwhile)"
    )
    drained = done_after - done_before
    print(
        f"  alone, once the rest was queued and the fast lane idle: {drained / drain_s:.0f} commands/s "
        f"({drained} commands in {drain_s:.1f}s)"
    )
    print(f"  (loaded phase started {loaded_started:%H:%M:%S}Z)")


if __name__ == "__main__":
    main()
