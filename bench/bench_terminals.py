"""Terminal topologies with the simulator's MT5 costs on, beside the same runs with them off.

    python bench/bench_terminals.py [--accounts 50] [--shared 5] [--trials 20] [--commands 40]
                                     [--only a|b] [--without-ahead] [--monitor-hosts]

Real processes on PostgreSQL: a terminal host owning every terminal, both lanes and the risk
monitor; every MT5 call goes through the terminal's owner. Two topologies:

- (a) one account per terminal: each account pinned alone to its own terminal;
- (b) shared terminals: the accounts pinned to ``--shared`` terminals, round robin.

Each runs twice: with the simulator's default costs (``SIM_LOGIN_SECONDS`` 1.0, ``SIM_CALL_MS``
1: what a real terminal costs) and with both at 0 (the baseline, same run). Printed per run:
the monitor's cycle over all accounts, price move → detection and detection → terminal-confirmed
close (p50/p99, the protective actions' own timestamps: the command that closed or reconciled
the close finished; each trial opens 1 lot EURUSD on one account and drops the price 300 pips),
detection → the closing deal's fill, where each close's time went, and normal-lane
``open_position`` commands per second on one terminal. ``--without-ahead`` adds a third run with
the defaults' costs and the risk monitor's close ahead off (``RISK_CLOSE_AHEAD=0``).
``--monitor-hosts``: no terminal host process; the risk monitor hosts the terminals itself
(``riskmonitor --host-terminals``), so its reads and closes are made in its own process. Every
process runs with ``TERMINAL_OWNERS=hosts``, as ``runbridge`` runs them.
"""

from __future__ import annotations

import argparse
import os
import time

from common import breach_trial, demo_accounts, fresh_database, percentile, setup_django, summary

COSTS = {"costs on (defaults)": ("1.0", "1"), "costs off (baseline)": ("0", "0")}
# With --without-ahead, a third run: the defaults' costs, the risk monitor's close ahead off
# (RISK_CLOSE_AHEAD=0: the protective command sends the close once the action is recorded).
WITHOUT_AHEAD = "costs on, close ahead off"


def run(args: argparse.Namespace, topology: str, costs: tuple[str, str], ahead: bool = True) -> dict[str, object]:
    from django.conf import settings
    from django.db import close_old_connections

    from commands.models import Command
    from commands.services import command_create
    from commands.states import State
    from execution.gateways import get_gateway, reset_gateway
    from execution.owners import live_owners
    from execution.simulator.service import sim_set_price
    from execution.terminals import terminal_add
    from policies.models import MonitorHeartbeat, TradingAccount
    from tests.processes import Proc

    server = "Bench-Server"
    sim_set_price("EURUSD", "1.08500")
    sim_set_price("GBPUSD", "1.27000")
    logins = [61_000_000 + i for i in range(args.accounts)]
    terminals = args.accounts if topology == "a" else args.shared
    groups: dict[int, list[int]] = {}
    demo_accounts(logins, server)
    for i, login in enumerate(logins):
        groups.setdefault(i % terminals, []).append(login)
    for n, members in groups.items():
        terminal_add(f"bench-{n}", path=f"bench-{n}", accounts=[(login, server) for login in members])

    env = {
        **os.environ,
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "LOG_LEVEL": "WARNING",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "SIM_LOGIN_SECONDS": costs[0],
        "SIM_CALL_MS": costs[1],
        "RISK_CLOSE_AHEAD": "1" if ahead else "0",
        # As runbridge runs them: only the host takes terminals (else the first process to need
        # one, often the risk monitor, kept it and read it on its own thread).
        "TERMINAL_OWNERS": "hosts",
    }
    procs = [
        Proc("bench-normal", ["qcluster"], env),
        Proc("bench-fast", ["qcluster"], {**env, "Q_CLUSTER_NAME": "fastlane"}),
    ]
    if args.monitor_hosts:  # the risk monitor is the terminal host
        procs.append(Proc("bench-risk", ["riskmonitor", "--host-terminals"], env))
    else:
        procs += [Proc("bench-terminals", ["terminalhost"], env), Proc("bench-risk", ["riskmonitor"], env)]
    move_to_detect: list[float] = []
    detect_to_close: list[float] = []
    cycles: list[float] = []
    segments: list[tuple[float, ...]] = []
    rate = float("nan")
    for proc in procs:
        proc.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(live_owners()) < terminals:
            time.sleep(0.2)
        holders = {holder for holder, _, _ in live_owners().values()}
        print(f"  {len(live_owners())} of {terminals} terminals owned, by {len(holders)} process(es)")
        reset_gateway()
        settings.TERMINAL_OWNERS = "hosts"
        gateway = get_gateway()  # this process sends its calls to the host, as the others do
        for login in logins:
            gateway.open_position(login, server, symbol="GBPUSD", side="buy", volume=0.01, tag="bench")
        # Warm-up: the monitor's first cycles read every account (and its entry commissions) once.
        deadline = time.monotonic() + 300
        MonitorHeartbeat.objects.update(last_cycle_ms=0)
        while time.monotonic() < deadline and not MonitorHeartbeat.objects.filter(last_cycle_ms__gt=0).exists():
            time.sleep(0.2)
        time.sleep(2)
        for trial in range(min(args.trials, len(logins))):
            login = logins[trial]
            timed = breach_trial(gateway, login, server, trial, timeout=120)
            if timed is None:
                continue
            move_to_detect.append(timed[0])
            detect_to_close.append(timed[1])
            segments.append(close_segments(login))
            cycles.extend(MonitorHeartbeat.objects.values_list("last_cycle_ms", flat=True))
        sim_set_price("EURUSD", "1.08500")
        # Normal-lane commands on one terminal: its accounts round robin (on a shared terminal,
        # a login whenever the account changes).
        members = [login for login in groups[terminals - 1] if login not in logins[: args.trials]] or groups[0]
        accounts = {a.login: a for a in TradingAccount.objects.filter(login__in=members).select_related("tenant")}
        commands = []
        started = time.monotonic()
        for n in range(args.commands):
            account = accounts[members[n % len(members)]]
            commands.append(
                command_create(
                    tenant=account.tenant,
                    account=account,
                    common={
                        "command_id": f"rate-{n}",
                        "command_type": "open_position",
                        "priority": "normal",
                        "fast_lane": False,
                        "reason": "",
                        "expires_at_utc": None,
                    },
                    specific={"symbol": "GBPUSD", "direction": "buy", "volume": "0.01"},
                    envelope={},
                    correlation_id="bench",
                    idempotency_key=f"rate-{n}",
                ).pk
            )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            close_old_connections()
            if not Command.objects.filter(pk__in=commands, state__in=[State.QUEUED, State.EXECUTING]).exists():
                break
            time.sleep(0.05)
        done = Command.objects.filter(pk__in=commands, state=State.SUCCEEDED).count()
        rate = done / (time.monotonic() - started)
    finally:
        reset_gateway()
        for proc in procs:
            proc.stop()
    return {
        "cycles": cycles,
        "move_to_detect": move_to_detect,
        "detect_to_close": detect_to_close,
        "rate": rate,
        "segments": segments,
    }


# Where a protective close's time goes, from timestamps the bridge and the simulated trade server
# write anyway: the close sent ahead's (its command's envelope), the closing deal's (the trade
# server's own clock), the action's, and its command's. Each is ms after the detection (the
# snapshot read on the terminal's owner): with the close sent ahead, the fill comes before or
# while the action is recorded, so the points are not in a fixed order.
SEGMENTS = (
    "close sent ahead",
    "MT5 filled the close (via the owner)",
    "action built",
    "its command created (recorded)",
    "claimed (monitor or lane)",
    "command finished",
)


def close_segments(login: int) -> tuple[float, ...]:
    """The ms after detection of each of ``SEGMENTS`` for the account's protective close (NaN for
    "close sent ahead" when it was not)."""
    from datetime import UTC, datetime

    from execution.models import SimDeal
    from execution.simulator import constants as c
    from policies.models import ProtectiveAction

    action = (
        ProtectiveAction.objects.select_related("command")
        .filter(account__login=login, rule_key="single_trade_loss", execution_timestamp__isnull=False)
        .first()
    )
    assert action is not None and action.command is not None
    command = action.command
    deal = SimDeal.objects.get(position_id=action.ticket, entry=c.DEAL_ENTRY_OUT)
    filled = datetime.fromtimestamp(deal.time_msc / 1000, UTC)
    ahead = (command.envelope or {}).get("sent_ahead")
    detected = action.detection_timestamp

    def ms(end) -> float:
        return (end - detected).total_seconds() * 1000

    return (
        ms(datetime.fromisoformat(ahead["sent_at"])) if ahead else float("nan"),
        ms(filled),
        ms(action.created_at),
        ms(command.received_at),
        ms(command.started_at),
        ms(command.finished_at),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--shared", type=int, default=5, help="terminals in topology (b)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--commands", type=int, default=40)
    parser.add_argument("--only", choices=["a", "b"], default=None)
    parser.add_argument("--without-ahead", action="store_true", help=f"a third run: {WITHOUT_AHEAD}")
    parser.add_argument(
        "--monitor-hosts",
        action="store_true",
        help="the risk monitor hosts the terminals (riskmonitor --host-terminals, no terminalhost process)",
    )
    args = parser.parse_args()

    results = {}
    ready = False
    configs = [(label, costs, True) for label, costs in COSTS.items()]
    if args.without_ahead:
        configs.append((WITHOUT_AHEAD, COSTS["costs on (defaults)"], False))
    for topology in [args.only] if args.only else ["a", "b"]:
        for label, costs, ahead in configs:
            url = fresh_database("bridge_bench_terminals")
            if not ready:
                setup_django(url)
                ready = True
            results[(topology, label)] = run(args, topology, costs, ahead)
            from django.db import connections

            connections.close_all()

    from django.conf import settings

    interval = settings.RISK_POLL_INTERVAL_MS
    for (topology, label), r in results.items():
        name = (
            f"(a) {args.accounts} accounts, one per terminal"
            if topology == "a"
            else f"(b) {args.accounts} accounts on {args.shared} shared terminals"
        )
        cycles = r["cycles"]
        moves, closes = r["move_to_detect"], r["detect_to_close"]
        host = "the risk monitor hosts the terminals" if args.monitor_hosts else "a terminal host process"
        print(f"\n{name} — {label} — {host}")
        print(
            f"  monitor cycle over all accounts:       p50 {percentile(cycles, 50):.0f} ms,"
            f" max {max(cycles or [0]):.0f} ms"
        )
        print(f"  price move → detection:               {summary(moves) if moves else 'none'} (poll {interval} ms)")
        print(f"  detection → terminal-confirmed close: {summary(closes) if closes else 'none'}")
        if r["segments"]:
            columns = list(zip(*r["segments"], strict=True))
            sent = [v for v in columns[0] if v == v]  # not NaN: sent ahead
            print(f"    closes sent ahead of their record: {len(sent)} of {len(columns[0])}")
            print(f"  detection → MT5 filled the close:     {summary(list(columns[1]))}")
            print(
                "    ms after detection, p50 / p90: "
                + ", ".join(
                    f"{name} {percentile(values, 50):.0f} / {percentile(values, 90):.0f}"
                    for name, values in zip(SEGMENTS, ([v for v in c if v == v] for c in columns), strict=True)
                    if values
                )
            )
            # The slowest trials, point by point (the p99 of 20 trials is the slowest one).
            for close, points in sorted(zip(closes, r["segments"], strict=True), reverse=True)[:2]:
                print(
                    f"    a slow trial, {close:.0f} ms: "
                    + ", ".join(f"{name} {v:.0f}" for name, v in zip(SEGMENTS, points, strict=True) if v == v)
                )
        print(f"  normal open_position on one terminal:  {r['rate']:.1f} commands/s")


if __name__ == "__main__":
    main()
