"""The event-driven risk monitor of the Manager API backend at a prop firm's scale (issue #17).

    python bench/bench_manager.py [--accounts 10000] [--positions 10] [--symbols 20] [--seconds 30]
                                  [--pump process|thread]

PostgreSQL and the simulator's Manager surface, with its cost model at the defaults
(SIM_CALL_MS). Every account has a policy and ``--positions`` small positions over ``--symbols``
symbols; each symbol ticks 5 times a second (a random walk within +/- 5 pips), and once a second
a breach is planted: one account holds a 50-lot position that the next tick of its symbol takes
past its single-trade limit. The monitor (``risk.events.EventMonitor``, every account watched)
runs on the manager connection's dispatcher thread and sends the close through ``DealerSend``
before the action is recorded; a fast-lane worker runs in a process of its own (with its own
manager connection, as a lane worker has in production), and so does the feed that writes the
quotes (the trade server's work, not the monitor process's).

Measured, each beside what it is compared with in the same run:

- tick -> protective ``DealerSend`` sent, and tick -> close confirmed (the dealer's answer), p50/p99,
  from the moment the tick reaches the connection's sink; and each step of a planted breach from
  that moment: the tick dispatched to the monitor, the account judged suspect, the pumped picture
  read, the note written (with its check that the account has no action at work), ``DealerSend``
  called, its answer, the action recorded, its command taken and finished
  (from the command's own timestamps, read on this process's clock);
- the monitor's CPU per tick (thread time, quiet ticks; and ticks that confirmed a breach with
  a real read, with the read's wall time), beside a bare vectorised revaluation of the same
  symbol's positions right after it on the same thread (new profit per position, summed per
  account, the holders compared with one floor each);
- a full resync (the first, which creates every risk state, and a steady one);
- the monitor's memory (its arrays, and what a second monitor's resync keeps, by tracemalloc);
- the polling monitor on the same accounts: one cycle over all of them (a price move is seen
  within the poll interval plus a cycle).

How events reach the monitor here: the bench writes each quote to the simulator's database and
the simulator's incremental pump (``SIM_MANAGER_PUMP_MS`` 20, the users sweep off) delivers it
as ``OnTick``, and the planted closes' deals and position deletions as events; times are taken
where the connection's sink receives them. The pump reads and compares in a process of its own
(``SIM_MANAGER_PUMP_IN`` process, ``--pump process``, the default here), as the real API's
native pump thread leaves the interpreter lock alone; the monitor's process only applies each
cycle's changes to its copy and calls the sinks. ``--pump thread`` runs it on a thread of the
monitor's process instead (the simulator's default, harder than MT5: it holds the lock while it
reads). Also measured: quote written -> ``OnTick``, the pump's cycle (in the pump's process
with ``--pump process``, beside what applying it costs the monitor's process) beside a whole
re-read of the same accounts (what each cycle cost before the pump was incremental), and dealer
answer -> ``OnDealAdd`` / ``OnPositionDelete``.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import random
import statistics
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from common import demo_accounts, fresh_database, percentile, setup_django, summary

SERVER = "Bench-Server"
LOGIN0 = 70_000_000
PIP = 0.0001
BIG_LOTS = 50
PLANT_DEPTH = 0.0010  # the first plant's trigger, below the base price
PLANT_STEP = 0.0002  # each next plant on a symbol goes this much deeper


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--positions", type=int, default=10)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--tick-hz", type=float, default=5.0)
    parser.add_argument("--database", default="bridge_bench_manager")
    parser.add_argument("--pump", choices=("process", "thread"), default="process")
    args = parser.parse_args()

    url = fresh_database(args.database)
    setup_django(url)
    import numpy as np
    import psutil
    from django.conf import settings
    from django.db import close_old_connections

    from commands.models import Command
    from execution.adapters.manager import ManagerGateway, build_manager_gateway
    from execution.gateways import reset_gateway
    from execution.models import SimAccount, SimPosition, SimSymbol
    from execution.simulator.service import sim_set_price
    from execution.simulator.stamps import now_msc
    from execution.simulator.symbols import SEED_SYMBOLS
    from policies.models import ProtectiveAction, TradingAccount
    from risk import protection
    from risk.events import EventMonitor
    from risk.monitor import Monitor, tune_process

    rng = random.Random(20261207)
    # --- symbols: EURUSD, GBPUSD and clones of EURUSD, all with USD profit ---------------------
    eurusd = next(s for s in SEED_SYMBOLS if s["name"] == "EURUSD")
    sim_set_price("EURUSD", "1.08500")
    names = ["EURUSD", "GBPUSD"] + [f"FX{n:02d}USD" for n in range(1, args.symbols - 1)]
    names = names[: args.symbols]
    base: dict[str, float] = {"EURUSD": 1.08500, "GBPUSD": 1.27000}
    stamp = now_msc()
    for n, name in enumerate(names[2:], start=1):
        anchor = Decimal("1.00000") + Decimal(n) / 100
        base[name] = float(anchor)
        spec = {**eurusd, "name": name, "description": f"bench {name}", "currency_base": f"X{n:02d}"}
        spec["anchor"] = anchor
        SimSymbol.objects.update_or_create(
            name=name, defaults={**spec, "bid": anchor, "ask": anchor + Decimal("0.00010"), "price_time_msc": stamp}
        )
    for name in names:
        sim_set_price(name, f"{base[name]:.5f}")

    # --- accounts, policies, positions -----------------------------------------------------------
    started = time.monotonic()
    logins = [LOGIN0 + i for i in range(args.accounts)]
    demo_accounts(logins, SERVER)
    account_ids = dict(SimAccount.objects.filter(server=SERVER).values_list("login", "id"))
    symbol_ids = dict(SimSymbol.objects.filter(name__in=names).values_list("name", "id"))
    # Plant k (second k) is on symbol k % S, the (k // S)-th on it: its victim's 50-lot buy
    # breaches its single-trade limit (2,000) when the price falls below its trigger.
    plants = []
    for k in range(args.seconds):
        symbol, depth = names[k % len(names)], k // len(names)
        trigger = base[symbol] - PLANT_DEPTH - PLANT_STEP * depth
        plants.append((k, logins[k], symbol, trigger))
    victims = {login: (symbol, trigger) for _, login, symbol, trigger in plants}
    rows, ticket = [], 10_000_000
    for login in logins:
        held = rng.sample(names, min(args.positions, len(names)))
        for n, symbol in enumerate(held):
            ticket += 1
            side = rng.randrange(2)
            volume = Decimal(rng.randrange(1, 51)) / 100
            price_open = Decimal(f"{base[symbol] + rng.uniform(-3, 3) * PIP:.5f}")
            if n == 0 and login in victims:
                symbol, trigger = victims[login]
                side, volume = 0, Decimal(BIG_LOTS)
                price_open = Decimal(f"{trigger + 0.0004:.5f}")
            rows.append(
                SimPosition(
                    ticket=ticket, identifier=ticket, account_id=account_ids[login], symbol_id=symbol_ids[symbol],
                    type=side, volume=volume, price_open=price_open, comment="bench", time_msc=stamp,
                    time_update_msc=stamp,
                )
            )  # fmt: skip
    SimPosition.objects.bulk_create(rows, batch_size=5000)
    print(
        f"{args.accounts} accounts with a policy, {len(rows)} positions over {len(names)} symbols "
        f"in {time.monotonic() - started:.0f} s"
    )

    # --- the manager connection, the monitor, a fast-lane worker ---------------------------------
    settings.SIM_MANAGER_PUMP_MS = 20  # the default: the incremental pump delivers ticks, positions, deals
    settings.SIM_MANAGER_SWEEP_MS = 0  # no whole-users sweep during the run (see the docstring)
    settings.SIM_MANAGER_PUMP_IN = args.pump  # where the pump reads and compares (see the docstring)
    gateway = build_manager_gateway(server=f"simulator:{SERVER}", login=1000, password="desk", groups="*")
    assert isinstance(gateway, ManagerGateway)
    reset_gateway(gateway)
    conn = gateway.conn
    api = conn._api
    sent: dict[int, float] = {}
    confirmed: dict[int, float] = {}
    dealer_send = api.DealerSend

    def timed_dealer_send(request: Any, sink: Any) -> Any:
        sent.setdefault(int(request.Login), time.perf_counter())
        return dealer_send(request, sink)

    api.DealerSend = timed_dealer_send
    answered = conn._answered

    def timed_answer(answer: Any) -> None:
        if int(answer.ResultRetcode) in (10009, 10010):
            confirmed.setdefault(int(answer.Login), time.perf_counter())
        answered(answer)

    conn._answered = timed_answer  # type: ignore[method-assign]

    # When each planted tick, and each victim's deal and position events, reach the sink.
    sink = conn._sink
    planted_prices: dict[tuple[str, float], int] = {}
    planted_at: dict[int, float] = {}
    written_at: dict[tuple[str, float], list[float]] = {}
    delivery: list[float] = []
    tick_seen: list[tuple[tuple[str, float], float]] = []
    deal_seen: dict[int, float] = {}
    delete_seen: dict[int, float] = {}
    on_tick, on_deal, on_delete = sink.OnTick, sink.OnDealAdd, sink.OnPositionDelete

    def timed_tick_event(symbol: str, tick: Any) -> None:
        now = time.perf_counter()
        key = (symbol, round(float(tick.bid), 5))
        tick_seen.append((key, now))
        login = planted_prices.get(key)
        if login is not None:
            planted_at.setdefault(login, now)
        on_tick(symbol, tick)

    def timed_deal(deal: Any) -> None:
        deal_seen.setdefault(int(deal.Login), time.perf_counter())
        on_deal(deal)

    def timed_delete(position: Any) -> None:
        delete_seen.setdefault(int(position.Login), time.perf_counter())
        on_delete(position)

    sink.OnTick, sink.OnDealAdd, sink.OnPositionDelete = timed_tick_event, timed_deal, timed_delete  # type: ignore[method-assign]
    cycle_wall: list[float] = []  # a pump cycle's wall time, where it reads and compares
    applied_wall: list[float] = []  # --pump process: applying a cycle in the monitor's process
    pump_cycle, remote_cycle = api._pump_cycle, api._remote_cycle

    def timed_cycle(generation: int, *, full: bool = False) -> bool:
        wall = time.perf_counter()
        try:
            return pump_cycle(generation, full=full)
        finally:
            cycle_wall.append((time.perf_counter() - wall) * 1000)

    def timed_remote_cycle(generation: int, change: Any, events: Any, cycle_ms: float) -> bool:
        wall = time.perf_counter()
        try:
            return remote_cycle(generation, change, events, cycle_ms)
        finally:
            applied_wall.append((time.perf_counter() - wall) * 1000)
            cycle_wall.append(cycle_ms)

    api._pump_cycle = timed_cycle
    api._remote_cycle = timed_remote_cycle

    # The steps of each planted breach, by the victim's login (perf_counter seconds).
    steps: dict[str, dict[int, float]] = {
        name: {} for name in ("dispatched", "judging", "picture", "noted", "recorded", "claimed", "finished")
    }
    victims_by_price: dict[tuple[str, float], int] = planted_prices  # filled by the feed below
    pumped_snapshots = gateway.pumped_snapshots

    def timed_pumped(revalued: Any) -> Any:
        found = pumped_snapshots(revalued)
        now = time.perf_counter()
        for login, _ in revalued:
            steps["picture"].setdefault(login, now)
        return found

    gateway.pumped_snapshots = timed_pumped  # type: ignore[method-assign]
    raise_action = protection.protective_action_raise

    def timed_raise(*, account: Any, **kwargs: Any) -> bool:
        raised = raise_action(account=account, **kwargs)
        if raised:
            steps["recorded"].setdefault(account.login, time.perf_counter())
        return raised

    protection.protective_action_raise = timed_raise
    note = protection.sent_ahead_note
    login_of_pk = dict(TradingAccount.objects.values_list("pk", "login"))

    def timed_note(**kwargs: Any) -> bool:
        noted = note(**kwargs)
        steps["noted"].setdefault(login_of_pk[kwargs["account_pk"]], time.perf_counter())
        return noted

    protection.sent_ahead_note = timed_note

    process = psutil.Process()
    del rows
    gc.collect()
    # As the risk monitor's process is set up (manage.py riskmonitor) before its first resync.
    tune_process()
    rss_before = process.memory_info().rss
    monitor = EventMonitor(gateway)
    first_resync = time.perf_counter()
    monitor.start()
    first_resync = time.perf_counter() - first_resync
    gc.collect()
    rss_after = process.memory_info().rss
    # The connection's own resync (queued by its connect) may reach the monitor through the
    # dispatcher after ``start``'s: the monitor trusts its picture once the last one ends.
    deadline = time.monotonic() + 300
    while not monitor.trusted and time.monotonic() < deadline:
        time.sleep(0.1)
    assert monitor.trusted, f"the first resync failed (resyncs {monitor.resyncs}, connected {conn.connected})"
    steady_resync = time.perf_counter()
    monitor.resync()
    steady_resync = time.perf_counter() - steady_resync
    watched = len(monitor.watched_keys())
    print(f"monitor watching {watched} accounts; first resync {first_resync:.1f} s, steady {steady_resync:.1f} s")

    quiet_cpu: list[float] = []
    confirming_cpu: list[float] = []
    confirm_wall: list[float] = []
    tick = monitor.tick
    confirm = monitor.act

    bare_cpu: list[float] = []
    bare_last: dict[str, Any] = {}

    def bare(symbol: str, bid: float, ask: float) -> None:
        """The baseline: the least a tick costs. Each of the symbol's positions revalued, the
        change summed per account, the holders' equity compared with one floor each."""
        book = monitor._books[symbol]
        n = book.used
        row, size, price_open = book.row[:n], book.size[:n], book.open[:n]
        last = bare_last.get(symbol)
        if last is None or len(last) != n:
            last = book.profit[:n].copy()
        holders = book.holders
        price = np.where(book.buy[:n], bid, ask)
        profit = size * (price - price_open)
        moved = np.bincount(row, weights=profit - last, minlength=len(monitor._equity))
        suspect = monitor._equity[holders] + moved[holders] < monitor._trip[holders]
        bare_last[symbol] = profit
        assert suspect.dtype == np.bool_

    def timed_tick(symbol: str, bid: float, ask: float, *, from_server: bool = False) -> None:
        """The monitor's tick, then the baseline on the same positions, on the same thread."""
        victim = victims_by_price.get((symbol, round(bid, 5)))
        if victim is not None:
            steps["dispatched"].setdefault(victim, time.perf_counter())
        before = sum(monitor.judged.values())
        cpu = time.thread_time()
        tick(symbol, bid, ask, from_server=from_server)
        cpu = time.thread_time() - cpu
        (quiet_cpu if sum(monitor.judged.values()) == before else confirming_cpu).append(cpu * 1000)
        if symbol in monitor._books:
            cpu = time.thread_time()
            bare(symbol, bid, ask)
            bare_cpu.append((time.thread_time() - cpu) * 1000)

    def timed_confirm(keys: Any) -> None:
        wall = time.perf_counter()
        keys = list(keys)
        for login, _ in keys:
            steps["judging"].setdefault(login, wall)
        confirm(keys)
        confirm_wall.append((time.perf_counter() - wall) * 1000)

    monitor.tick = timed_tick  # type: ignore[method-assign]
    monitor.act = timed_confirm  # type: ignore[method-assign]

    # --- the fast lane and the feed, each in a process of its own ---------------------------------
    # As in production: a lane worker is its own process with its own manager connection, and the
    # quotes are the trade server's, written by a process that is not the monitor's.
    spawn = multiprocessing.get_context("spawn")
    stop, ready = spawn.Event(), spawn.Event()
    worker = spawn.Process(target=fast_lane, args=(url, stop, ready), name="bench-fast-lane", daemon=True)
    worker.start()
    if not ready.wait(300):
        raise SystemExit("the fast-lane worker did not start")
    for _, login, symbol, trigger in plants:
        planted_prices[(symbol, round(trigger - 0.00005, 5))] = login
    results = spawn.Queue()
    feeder = spawn.Process(
        target=feed, args=(url, names, base, plants, args.seconds, args.tick_hz, results), name="bench-feed"
    )
    wall_offset = time.time() - time.perf_counter()  # to read the commands' timestamps on this clock
    collections: list[tuple[int, float]] = []  # the garbage collector's pauses during the run
    collecting: dict[str, float] = {}

    def gc_timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collecting["at"] = time.perf_counter()
        elif "at" in collecting:
            collections.append((info["generation"], (time.perf_counter() - collecting.pop("at")) * 1000))

    gc.callbacks.append(gc_timed)
    feeder.start()
    ticks, run_started, ran_until, writes = results.get(timeout=args.seconds + 300)
    gc.callbacks.remove(gc_timed)
    feeder.join(timeout=10)
    for key, at in writes:
        written_at.setdefault(key, []).append(at)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not all(login in confirmed for login in planted_at):
        time.sleep(0.05)
    deadline = time.monotonic() + 15
    victims_done = Command.objects.filter(account__login__in=list(planted_at), finished_at__isnull=False)
    while time.monotonic() < deadline and victims_done.count() < len(planted_at):
        time.sleep(0.1)
    stop.set()
    worker.join(timeout=10)
    for login, started_at, finished_at in Command.objects.filter(account__login__in=list(planted_at)).values_list(
        "account__login", "started_at", "finished_at"
    ):
        if started_at is not None:
            steps["claimed"].setdefault(login, started_at.timestamp() - wall_offset)
        if finished_at is not None:
            steps["finished"].setdefault(login, finished_at.timestamp() - wall_offset)
    close_old_connections()
    for key, received in tick_seen:  # from the latest write of that quote before it arrived
        before = [at for at in written_at.get(key, ()) if at <= received]
        if before:
            delivery.append((received - max(before)) * 1000)
    ran_for = ran_until - run_started

    # --- memory: what a second monitor's resync keeps ---------------------------------------------
    gc.collect()
    tracemalloc.start()
    kept_before = tracemalloc.get_traced_memory()[0]
    second = EventMonitor(gateway)
    second.resync()
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - kept_before
    tracemalloc.stop()
    del second

    # --- the polling monitor on the same accounts --------------------------------------------------
    poller = Monitor(monitor_id="bench-poll", gateway_factory=lambda: gateway)
    cycles = []
    for _ in range(3):
        cycle = time.perf_counter()
        poller.cycle(["bench-poll"])
        cycles.append((time.perf_counter() - cycle) * 1000)

    # --- the pump: an incremental cycle beside a whole re-read of the same accounts ------------------
    whole = []
    for _ in range(2):
        wall = time.perf_counter()
        api._read_world(last_deal=None)
        whole.append((time.perf_counter() - wall) * 1000)
    conn.close()
    answer_to_deal = [(deal_seen[x] - confirmed[x]) * 1000 for x in planted_at if x in deal_seen and x in confirmed]
    answer_to_delete = [
        (delete_seen[x] - confirmed[x]) * 1000 for x in planted_at if x in delete_seen and x in confirmed
    ]
    tick_to_send = [(sent[x] - planted_at[x]) * 1000 for x in planted_at if x in sent]
    warm_to_send = [(sent[x] - planted_at[x]) * 1000 for x in planted_at if x in sent and x != LOGIN0]
    marks = {"dispatched": steps["dispatched"], "judging": steps["judging"], "picture read": steps["picture"],
             "noted": steps["noted"], "DealerSend": sent,
             "answer": confirmed, "recorded": steps["recorded"], "command taken": steps["claimed"],
             "command finished": steps["finished"]}  # fmt: skip
    step_lines = [
        f"    tick -> {name + ':':18} {summary([(at[x] - planted_at[x]) * 1000 for x in planted_at if x in at])}"
        for name, at in marks.items()
        if any(x in at for x in planted_at)
    ]
    slowest = sorted((x for x in planted_at if x in sent), key=lambda x: sent[x] - planted_at[x])[-3:]
    step_lines.append("  the three slowest to DealerSend, each step from the tick (ms):")
    for x in reversed(slowest):
        marked = [(name, (at[x] - planted_at[x]) * 1000) for name, at in list(marks.items())[:5] if x in at]
        step_lines.append(f"    breach {x - LOGIN0}: " + ", ".join(f"{name} {ms:.1f}" for name, ms in marked))
    tick_to_close = [(confirmed[x] - planted_at[x]) * 1000 for x in planted_at if x in confirmed]
    actions = ProtectiveAction.objects.filter(account__login__in=list(planted_at)).count()
    per_symbol = statistics.fmean(len(monitor._books[name].holders) for name in names)
    positions_per_symbol = statistics.fmean(book.used - len(book.free) for book in monitor._books.values())
    quiet, baseline = percentile(quiet_cpu, 50), percentile(bare_cpu, 50)
    rate = ticks / ran_for
    lines = [
        f"Manager API event monitor, {datetime.now(UTC):%Y-%m-%d}: {watched} accounts x {args.positions} positions,",
        f"  {len(names)} symbols at {args.tick_hz:g} ticks/s each ({rate:.0f} ticks/s delivered),",
        f"  {len(planted_at)} breaches planted, SIM_CALL_MS {settings.SIM_CALL_MS:g}",
        f"  holders per symbol {per_symbol:.0f}, positions per symbol {positions_per_symbol:.0f};"
        f" interpreter switch interval {sys.getswitchinterval() * 1000:g} ms",
        f"  tick -> protective DealerSend sent: {summary(tick_to_send)}  ({len(tick_to_send)}/{len(planted_at)})",
        f"  tick -> close confirmed:            {summary(tick_to_close)}  ({len(tick_to_close)}/{len(planted_at)})",
        f"  tick -> DealerSend, the first breach left out (the monitor's first act since its start):"
        f" {summary(warm_to_send)}",
        f"  protective actions raised for the planted breaches: {actions};"
        f" closes sent before the record: {len(monitor.sent_ahead)}",
        "  the steps of a planted breach, each from the tick received at the sink:",
        *step_lines,
        "  garbage collections in the monitor's process during the run: "
        + ", ".join(
            f"gen{g} {len(p)} (max {max(p):.1f} ms)"
            for g in range(3)
            if (p := [ms for gen, ms in collections if gen == g])
        ),
        f"  monitor CPU per quiet tick:         {cpu_summary(quiet_cpu)}",
        f"  bare vectorised revaluation (base): {cpu_summary(bare_cpu)}  -> monitor / bare = {quiet / baseline:.1f}x",
        f"  monitor CPU per confirming tick:    {summary(confirming_cpu)}",
        f"  confirming read + engine (wall):    {summary(confirm_wall)}",
        f"  full resync: first {first_resync:.1f} s (every risk state created), steady {steady_resync:.1f} s",
        f"  monitor memory: arrays {monitor.memory_bytes() / 2**20:.1f} MiB; a second monitor's resync keeps"
        f" {kept / 2**20:.0f} MiB (tracemalloc); RSS +{(rss_after - rss_before) / 2**20:.0f} MiB over the first",
        f"  judged from the pumped picture {sum(monitor.acted.values())}, read from the server"
        f" {sum(monitor.confirmations.values())}",
        f"  simulated pump: quote written -> OnTick {summary(delivery)}",
        f"  simulated pump ({args.pump}): incremental cycle (wall) {summary(cycle_wall)}; a whole re-read of"
        f" the same accounts (the old cycle): {', '.join(f'{w:.0f}' for w in whole)} ms",
        *(
            [f"  simulated pump: a cycle applied and told in the monitor's process (wall) {summary(applied_wall)}"]
            if args.pump == "process"
            else []
        ),
        f"  dealer answer -> OnDealAdd {summary(answer_to_deal)}; -> OnPositionDelete {summary(answer_to_delete)}",
        f"  polling monitor, one cycle over the same accounts: {', '.join(f'{c:.0f}' for c in cycles)} ms"
        f" (a move is seen within RISK_POLL_INTERVAL_MS {settings.RISK_POLL_INTERVAL_MS} + a cycle)",
    ]
    print("\n" + "\n".join(lines))


def fast_lane(url: str, stop: Any, ready: Any) -> None:
    """A fast-lane worker process: its own manager connection, the lane polled every 5 ms (a
    stand-in for the doorbell: at most 5 ms added)."""
    setup_django(url)
    from django.conf import settings

    from execution.adapters.manager import build_manager_gateway
    from execution.gateways import reset_gateway
    from execution.runner import lane_run

    settings.SIM_MANAGER_PUMP_MS = 20
    settings.SIM_MANAGER_SWEEP_MS = 0
    settings.SIM_MANAGER_PUMP_IN = "thread"  # a daemonic process has no children; this one is not the monitor's
    gateway = build_manager_gateway(server=f"simulator:{SERVER}", login=1000, password="desk", groups="*")
    reset_gateway(gateway)
    ready.set()
    while not stop.is_set():
        try:
            if not lane_run("fast"):
                time.sleep(0.005)
        except Exception as exc:  # keep the worker up, as the cluster would
            print(f"fast lane: {exc!r}")
            time.sleep(0.05)


def feed(
    url: str, names: list[str], base: dict[str, float], plants: list[Any], seconds: int, tick_hz: float, out: Any
) -> None:
    """The trade server's quotes, in a process of their own: each symbol ``tick_hz`` times a
    second (uniform within +/- 5 pips of its base), and plant k's price on its symbol at second k.
    Puts (quotes written, started, ended, [((symbol, bid), written at)]) on ``out`` at the end."""
    setup_django(url)
    from execution.models import SimSymbol
    from execution.simulator.stamps import now_msc

    rng = random.Random(20261208)
    writes: list[tuple[tuple[str, float], float]] = []
    period = 1.0 / (tick_hz * len(names))
    # The feed's own start-up (its first query connects, a new PostgreSQL backend starts, the ORM
    # compiles its statement) happens before the run: the trade server's work is not on these
    # cores in production, and at second 0 it fell on the first plant's tick. One quiet round
    # of quotes at the base prices, then a second's pause.
    for symbol in names:
        SimSymbol.objects.filter(name=symbol).update(
            bid=Decimal(f"{base[symbol]:.5f}"), ask=Decimal(f"{base[symbol] + 0.0001:.5f}"), price_time_msc=now_msc()
        )
    time.sleep(1.0)
    due = run_started = time.perf_counter()
    ticks = 0
    pending = list(plants)
    while True:
        elapsed = time.perf_counter() - run_started
        if elapsed >= seconds:
            break
        symbol = names[ticks % len(names)]
        if pending and pending[0][2] == symbol and elapsed >= pending[0][0]:
            bid = pending.pop(0)[3] - 0.00005
        else:
            bid = base[symbol] + rng.uniform(-5, 5) * PIP
        ask = bid + 0.0001
        # The quote as sim_set_price writes it, without its SL/TP trigger scan (no position here has one).
        writes.append(((symbol, round(bid, 5)), time.perf_counter()))
        SimSymbol.objects.filter(name=symbol).update(
            bid=Decimal(f"{bid:.5f}"), ask=Decimal(f"{ask:.5f}"), price_time_msc=now_msc()
        )
        ticks += 1
        due += period
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    out.put((ticks, run_started, time.perf_counter(), writes))


def cpu_summary(values: list[float]) -> str:
    return f"p50 {percentile(values, 50):.3f} ms | p99 {percentile(values, 99):.3f} ms | n {len(values)}"


if __name__ == "__main__":
    main()
