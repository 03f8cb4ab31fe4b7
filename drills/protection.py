"""Protection drills: a breached account is made flat through an MT5 outage, a Laravel that refuses
a report, and a database rebuilt between two breaches; every protective report arrives once, in
sequence, under an identity never seen before.

    .venv/bin/python drills/protection.py [mt5_outage|laravel_400|db_rebuilt ...] [--quick] [--trials N]

Each drill prints its figures and writes var/drills/<name>.json. Without a name, all run.

- mt5_outage   a position opened through the API breaches the single-trade rule (the price moved
               300 pips against 1 lot); the account's terminal is cut off (`no_connection`) from
               the breach for 45 s (8 s with --quick). When the outage ends the bridge must close
               the position: seconds from the outage's end to a flat account.
- laravel_400  the same breach with an 8 s outage (so each action has a `failed` and a `success`
               report), and the fake Laravel answers 400 to the first report of one trial: that
               callback is dead-lettered (row `dead`, an `alerts.Alert` of kind `callback_dead`)
               and every later report of the account is delivered.
- db_rebuilt   one breach (8 s outage) per life of the bridge; between lives the bridge is
               stopped and its database dropped, created and migrated fresh, reporting to the same
               fake Laravel: no idempotency key, request id, webhook-id or action id of a life was
               seen in an earlier one.

Every drill checks every protective action's reports as Laravel received them: `report_sequence`
1..n without gap or repeat, the last one `success`, no report under two idempotency keys, no key
for two reports. The simulator is driven through its service functions (what `mt5sim price`,
`mt5sim fault --kind no_connection --seconds S --login N` and `mt5sim account show` run), and the
end state through `mt5sim positions`. Loopback only; each drill uses its own database
(`bridge_pdrill_<name>`) and ports the kernel picks.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from drills.faults import TERMINAL_STATES, post_until_answered
from drills.harness import (
    DEMO_TOKEN,
    ROOT,
    SERVER,
    Service,
    auth,
    bridge_env,
    command_body,
    free_port,
    fresh_database,
    full_bridge,
    percentile,
    policy_body,
    print_figures,
    setup_django,
    wait_for,
    wait_http,
    write_result,
)

DRILLS = ("mt5_outage", "laravel_400", "db_rebuilt")
DB_PREFIX = "bridge_pdrill_"  # distinct from the other drills' bridge_drill_* databases
# The drills' own account, registered with the drills' policy as its first one: an account with an
# earlier policy keeps that policy's total floor (a floor never moves down for the same initial
# balance), and the demo's 10 % would turn the trials' realised losses into a total drawdown.
LOGIN = 50040377
SYMBOL, OPEN_BID, BREACH_BID, VOLUME = "EURUSD", "1.08500", "1.05500", 1.0  # -300 pips on 1 lot: about -3,000
# A Standard Webhooks secret, so every callback carries webhook-id / webhook-signature.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"protection-drill-webhook-secret!").decode()
PROTECTIVE = "protective_action_report"


# --- the fake Laravel ---------------------------------------------------------------------------


class ReportReceiver:
    """Laravel's internal API on loopback: records every callback with its identity; answers 400 to
    the next protective report when `refuse_next` is set, 200 to everything else."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.port = free_port()
        self.refuse_next = False
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> ReportReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                envelope = json.loads(body)
                payload = envelope.get("payload") or {}
                kind = envelope["request"]["type"]
                with receiver.lock:
                    refuse = kind == PROTECTIVE and receiver.refuse_next
                    if refuse:
                        receiver.refuse_next = False
                    receiver.received.append(
                        {
                            "at": time.time(),
                            "type": kind,
                            "account": envelope["actor"]["account_login"],
                            "key": self.headers.get("X-Idempotency-Key"),
                            "meta_key": envelope["meta"]["idempotency_key"],
                            "request_id": envelope["meta"]["request_id"],
                            "webhook_id": self.headers.get("webhook-id"),
                            "action_id": payload.get("action_id"),
                            "seq": payload.get("report_sequence"),
                            "status": payload.get("execution_status"),
                            "goal_met": payload.get("goal_met"),
                            "answered": 400 if refuse else 200,
                        }
                    )
                self.send_response(400 if refuse else 200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"message":"refused by the drill"}' if refuse else b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def reports(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.received if r["type"] == PROTECTIVE]


# --- the bridge and one breach ----------------------------------------------------------------------


def _orm() -> None:
    from django.db import close_old_connections

    close_old_connections()


def protection_policy(login: int, version: int) -> dict[str, Any]:
    """Single-trade loss 2 % of 100,000 (2,000) with room for every trial's breach; wide drawdowns,
    so the trials' realised losses never breach the daily or total rule."""
    body = policy_body(login=login, version=version)
    body["payload"].update(
        max_single_trade_loss_pct=2,
        max_single_trade_loss_violations_allowed=1000,
        max_daily_dd_pct=50,
        max_total_dd_pct=90,
    )
    body["payload"]["enforcement_flags"].update(
        close_position_on_single_trade_breach=True, disable_trading_on_breach=False
    )
    return body


def start_bridge(url: str, receiver: ReportReceiver) -> tuple[int, list[Any]]:
    port = free_port()
    env = {"LARAVEL_WEBHOOK_SECRET": WEBHOOK_SECRET}
    return port, full_bridge(url, port, receiver.port, **env)


def register(port: int, login: int = LOGIN, version: int = 1) -> None:
    """The drill's account in the simulator, then registered with its first policy, as Laravel does."""
    from execution.simulator.service import sim_account_create

    _orm()
    sim_account_create(login, 100_000, server=SERVER)
    httpx.post(
        f"http://127.0.0.1:{port}/api/v1/mt5/policies",
        json=protection_policy(login, version),
        headers=auth(DEMO_TOKEN),
        timeout=30,
    ).raise_for_status()


def wait_monitor_ready(login: int = LOGIN, version: int = 1, timeout: float = 60.0) -> bool:
    """The risk monitor has evaluated the account under the drill's policy since it was applied."""
    from django.utils import timezone

    from policies.models import AccountRisk

    since = timezone.now()

    def ready() -> bool:
        _orm()
        return AccountRisk.objects.filter(account__login=login, policy_version=version, evaluated_at__gt=since).exists()

    return wait_for(ready, timeout, 0.2)


def open_position(port: int, login: int = LOGIN) -> str:
    """1 lot bought through the API on the fast lane; returns the command id once it succeeded."""
    from commands.models import Command

    body = command_body("open_position", login=login, fast=True, symbol=SYMBOL, direction="buy", volume=VOLUME)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
        response, _ = post_until_answered(client, body, DEMO_TOKEN)
    if response is None or response.status_code != 202:
        raise RuntimeError(f"open_position not accepted: {response and response.text}")
    command_id = response.json()["command_id"]

    def finished() -> bool:
        _orm()
        return Command.objects.filter(command_id=command_id, state__in=TERMINAL_STATES).exists()

    if not wait_for(finished, 60, 0.05):
        raise RuntimeError("open_position did not finish in 60 s")
    state = Command.objects.get(command_id=command_id).state
    if state != "succeeded":
        raise RuntimeError(f"open_position ended {state}")
    return command_id


def positions_now(login: int = LOGIN) -> int:
    from execution.simulator.service import sim_account_state

    _orm()
    return int(sim_account_state(login, SERVER)["positions"])


def positions_cli(url: str, login: int = LOGIN) -> int:
    """`mt5sim positions --login N`: one JSON line per open position."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "mt5sim", "positions", "--login", str(login), "--server", SERVER],
        env=bridge_env(url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return sum(1 for line in proc.stdout.splitlines() if line.strip().startswith("{"))


def breach_trial(
    port: int, receiver: ReportReceiver, *, outage: float, login: int = LOGIN, refuse_first: bool = False
) -> dict[str, Any]:
    """Open 1 lot through the API, move the price 300 pips against it and cut the terminal off
    for `outage` seconds from the moment the breach is recorded; time the outage's end → flat.

    From before the price moves, every order_send of the account fails with no connection (a
    counted fault), so the breach's first close cannot get through before the outage begins. The
    moment the action is recorded the outage (reads cut off too) is committed, and only then is
    the counted fault ended. Not the other way round, nor in one transaction: a sender skips a
    counted fault whose row another transaction holds (`SKIP LOCKED`, so that senders share a
    count), so a close sent while the fault's row is being ended, with the outage not yet
    committed, would go through."""
    from execution.models import SimFault
    from execution.simulator.service import sim_clear_faults, sim_inject_fault, sim_set_price
    from policies.models import ProtectiveAction

    _orm()
    sim_clear_faults(login=login)
    sim_set_price(SYMBOL, OPEN_BID)
    open_position(port, login)
    known = set(ProtectiveAction.objects.filter(account__login=login).values_list("pk", flat=True))
    armed = sim_inject_fault("no_connection", login=login, count=1_000_000) if outage else None
    receiver.refuse_next = refuse_first
    moved_ms = time.time() * 1000
    sim_set_price(SYMBOL, BREACH_BID)

    def recorded() -> bool:
        _orm()
        return ProtectiveAction.objects.filter(account__login=login).exclude(pk__in=known).exists()

    if not wait_for(recorded, 30, 0.005):
        raise RuntimeError("no protective action within 30 s of the breach")
    if armed is not None:
        fault = sim_inject_fault("no_connection", login=login, seconds=outage)
        # No service function ends one fault and not the others of its login: the row, directly.
        SimFault.objects.filter(pk=armed.pk).update(remaining=0)
        recovery_ms = float(fault.until_msc or 0)
    else:
        recovery_ms = moved_ms
    action = ProtectiveAction.objects.filter(account__login=login, rule_key="single_trade_loss").exclude(pk__in=known)
    action = action.order_by("pk").first()
    if action is None:
        others = list(ProtectiveAction.objects.exclude(pk__in=known).values_list("rule_key", flat=True))
        raise RuntimeError(f"the breach raised {others}, not a single_trade_loss action")
    open_at_recovery = None

    flat_ms = None
    deadline = time.monotonic() + outage + 120
    while time.monotonic() < deadline:
        now_ms = time.time() * 1000
        count = positions_now(login)
        if open_at_recovery is None and now_ms >= recovery_ms:
            open_at_recovery = count
        if count == 0:
            flat_ms = now_ms
            break
        time.sleep(0.02)
    if open_at_recovery is None:
        open_at_recovery = 0  # flat before the outage ended: the outage did not hold the close back

    def reported() -> bool:
        _orm()
        row = ProtectiveAction.objects.get(pk=action.pk)
        if row.goal_met_at is None:
            return False
        seqs = {r["seq"] for r in receiver.reports() if r["action_id"] == str(row.action_id)}
        return seqs >= set(range(1, row.report_sequence + 1))

    delivered = wait_for(reported, 90, 0.1)
    action.refresh_from_db()
    return {
        "action_id": str(action.action_id),
        "rule": action.rule_key,
        "attempts": action.attempt_count,
        "reports": action.report_sequence,
        "recovery_to_flat_s": None if flat_ms is None else round((flat_ms - recovery_ms) / 1000, 3),
        "open_at_recovery": open_at_recovery,
        "reports_delivered": delivered,
    }


# --- the checks -------------------------------------------------------------------------------------


def life_record() -> dict[str, Any]:
    """What the bridge's database says of its protective actions and their callbacks (kept before
    a rebuild, since the rebuild forgets them)."""
    from alerts.models import Alert
    from callbacks.models import CallbackDelivery
    from policies.models import ProtectiveAction

    _orm()
    actions = [
        {
            "action_id": str(a.action_id),
            "rule": a.rule_key,
            "n": a.report_sequence,
            "goal_met": a.goal_met_at is not None,
        }
        for a in ProtectiveAction.objects.order_by("pk")
    ]
    outbox = list(
        CallbackDelivery.objects.filter(request_type=PROTECTIVE).values(
            "pk", "idempotency_key", "request_id", "status", "dedup_key"
        )
    )
    alerts = list(Alert.objects.filter(kind=Alert.Kind.CALLBACK_DEAD).values_list("subject", flat=True))
    return {"actions": actions, "outbox": outbox, "callback_dead_alerts": alerts}


def check_reports(receiver: ReportReceiver, lives: list[dict[str, Any]]) -> dict[str, Any]:
    """Every action's reports as Laravel saw them: 1..n, no gap, no repeat, the last a success; no
    report under two keys, no key for two reports; a refused (400) report must be dead-lettered."""
    reports = receiver.reports()
    by_action: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in reports:
        by_action[r["action_id"]].append(r)
    keys_of_report: dict[tuple[str, int], set[str]] = defaultdict(set)
    reports_of_key: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for r in reports:
        keys_of_report[(r["action_id"], r["seq"])].add(r["key"])
        reports_of_key[r["key"]].add((r["action_id"], r["seq"]))
    header_mismatch = sum(1 for r in reports if r["key"] != r["meta_key"] or r["webhook_id"] != r["request_id"])
    lost = gaps = not_success_last = unmet = 0
    refused = [r for r in reports if r["answered"] == 400]
    refused_keys = {r["key"] for r in refused}
    dead_rows = {row["idempotency_key"]: row for life in lives for row in life["outbox"] if row["status"] == "dead"}
    for life in lives:
        for action in life["actions"]:
            got = by_action.get(action["action_id"], [])
            ok_seqs = {r["seq"] for r in got if r["answered"] == 200}
            refused_seqs = {r["seq"] for r in got if r["answered"] == 400}
            expected = set(range(1, action["n"] + 1))
            lost += len(expected - ok_seqs - refused_seqs)
            gaps += len({r["seq"] for r in got} - expected)  # a sequence number the action never had
            if not action["goal_met"]:
                unmet += 1
            last = [r for r in got if r["seq"] == action["n"]]
            if not last or last[-1]["status"] != "success" or not last[-1]["goal_met"]:
                not_success_last += 1
    duplicated = sum(len(keys) - 1 for keys in keys_of_report.values() if len(keys) > 1)
    key_reused = sum(1 for seen in reports_of_key.values() if len(seen) > 1)
    redelivered = sum(n - 1 for n in Counter(r["key"] for r in reports if r["answered"] == 200).values() if n > 1)
    refused_dead = sum(1 for key in refused_keys if key in dead_rows)
    other_dead = sum(1 for key in dead_rows if key not in refused_keys)
    alerts = {subject for life in lives for subject in life["callback_dead_alerts"]}
    refused_alerted = sum(
        1 for key in refused_keys if key in dead_rows and f"callback:{dead_rows[key]['pk']}" in alerts
    )
    return {
        "actions": sum(len(life["actions"]) for life in lives),
        "actions by rule": dict(Counter(a["rule"] for life in lives for a in life["actions"])),
        "reports received": len(reports),
        "lost": lost,
        "duplicated (one report under two keys)": duplicated,
        "key used for two reports": key_reused,
        "sequence numbers beyond the action's": gaps,
        "actions whose last report is not success": not_success_last,
        "actions whose goal is not met": unmet,
        "header differs from meta (key / webhook-id)": header_mismatch,
        "redelivered with the same key (Laravel de-duplicates)": redelivered,
        "answered 400": len(refused),
        "answered 400 and dead-lettered": refused_dead,
        "answered 400 with a callback_dead alert": refused_alerted,
        "dead-lettered without a 400": other_dead,
    }


def summarise(trials: list[dict[str, Any]], checks: dict[str, Any], positions_left: int) -> dict[str, Any]:
    times = [t["recovery_to_flat_s"] for t in trials if t["recovery_to_flat_s"] is not None]
    return {
        "trials": len(trials),
        "recovery → flat p50 (s)": round(percentile(times, 50), 3) if times else None,
        "recovery → flat p99 (s)": round(percentile(times, 99), 3) if times else None,
        "recovery → flat max (s)": round(max(times), 3) if times else None,
        "trials never flat": sum(1 for t in trials if t["recovery_to_flat_s"] is None),
        "trials flat before the outage ended": sum(1 for t in trials if not t["open_at_recovery"]),
        "attempts per action": dict(sorted(Counter(t["attempts"] for t in trials).items())),
        "reports per action": dict(sorted(Counter(t["reports"] for t in trials).items())),
        "positions left open (mt5sim positions)": positions_left,
        **checks,
    }


def base_pass(figures: dict[str, Any]) -> bool:
    return (
        figures["trials never flat"] == 0
        and figures["positions left open (mt5sim positions)"] == 0
        and figures["lost"] == 0
        and figures["duplicated (one report under two keys)"] == 0
        and figures["key used for two reports"] == 0
        and figures["sequence numbers beyond the action's"] == 0
        and figures["actions whose last report is not success"] == 0
        and figures["actions whose goal is not met"] == 0
        and figures["header differs from meta (key / webhook-id)"] == 0
    )


# --- the drills ---------------------------------------------------------------------------------------


@contextmanager
def stopped_together(services: list[Service]) -> Iterator[None]:
    """`running`, but the processes are stopped at once rather than one after another (each may
    take its 20 s grace): the drills stop and start the bridge many times."""
    try:
        for service in services:
            service.start()
        yield
    finally:
        threads = [threading.Thread(target=service.stop) for service in services]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)


def run_trials(
    url: str, receiver: ReportReceiver, *, trials: int, outage: float, refuse_trial: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Start the bridge, run the trials one after another, stop it; (trials, positions left)."""
    port, services = start_bridge(url, receiver)
    results = []
    with stopped_together(services):
        if not wait_http(port):
            raise RuntimeError("web did not start")
        register(port)
        if not wait_monitor_ready():
            raise RuntimeError("the risk monitor never evaluated the account")
        for n in range(trials):
            results.append(breach_trial(port, receiver, outage=outage, refuse_first=n == refuse_trial))
            print(f"  trial {n + 1}/{trials}: {results[-1]}", flush=True)
        left = positions_cli(url)
    return results, left


def drill_mt5_outage(url: str, *, trials: int = 10, outage: float = 45.0) -> dict[str, Any]:
    receiver = ReportReceiver().start()
    try:
        results, left = run_trials(url, receiver, trials=trials, outage=outage)
    finally:
        receiver.stop()
    checks = check_reports(receiver, [life_record()])
    figures = {"outage (s)": outage, **summarise(results, checks, left)}
    passed = (
        base_pass(figures)
        and figures["trials flat before the outage ended"] == 0
        and checks["answered 400"] == 0
        and checks["dead-lettered without a 400"] == 0
    )
    return {"passed": passed, "figures": {**figures, "result": "PASS" if passed else "FAIL"}, "trials": results}


def drill_laravel_400(url: str, *, trials: int = 10, outage: float = 8.0) -> dict[str, Any]:
    receiver = ReportReceiver().start()
    refuse_trial = 0  # its first report (failed) is refused; its second (success) and every later one must arrive
    try:
        results, left = run_trials(url, receiver, trials=trials, outage=outage, refuse_trial=refuse_trial)
    finally:
        receiver.stop()
    life = life_record()
    checks = check_reports(receiver, [life])
    refused = [r for r in receiver.reports() if r["answered"] == 400]
    later = [r for r in receiver.reports() if refused and r["at"] > refused[0]["at"] and r["answered"] == 200]
    figures = {
        "outage (s)": outage,
        **summarise(results, checks, left),
        "refused report (action, sequence)": [(r["action_id"], r["seq"]) for r in refused],
        "reports of the account delivered after the 400": len(later),
    }
    passed = (
        base_pass(figures)
        and checks["answered 400"] == 1
        and checks["answered 400 and dead-lettered"] == 1
        and checks["answered 400 with a callback_dead alert"] == 1
        and checks["dead-lettered without a 400"] == 0
        and len(later) >= 2 * trials - 1
    )
    return {"passed": passed, "figures": {**figures, "result": "PASS" if passed else "FAIL"}, "trials": results}


def drill_db_rebuilt(name: str, *, lives: int = 10, outage: float = 8.0) -> dict[str, Any]:
    """One breach per life; between lives the database is dropped, created and migrated fresh."""
    receiver = ReportReceiver().start()
    records: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    rebuild_s: list[float] = []
    left = 0
    try:
        for life in range(lives):
            if life:
                from django.db import connections

                connections.close_all()  # the drop below (WITH FORCE) would cut them anyway
            started = time.monotonic()
            url = fresh_database(name)
            if life:
                rebuild_s.append(time.monotonic() - started)
            if life == 0:
                setup_django(url)
            trial, life_left = run_trials(url, receiver, trials=1, outage=outage)
            results += trial
            left += life_left
            records.append(life_record())
            print(f"  life {life + 1}/{lives} done", flush=True)
    finally:
        receiver.stop()
    checks = check_reports(receiver, records)
    # Identities each life sent, against every earlier life's.
    collisions: Counter[str] = Counter()
    seen: dict[str, set[str]] = defaultdict(set)
    reports = receiver.reports()
    for record in records:
        ids = {a["action_id"] for a in record["actions"]}
        mine = [r for r in reports if r["action_id"] in ids]
        current = {
            "idempotency_key": {r["key"] for r in mine},
            "request_id": {r["request_id"] for r in mine},
            "webhook-id": {r["webhook_id"] for r in mine},
            "action_id": ids,
        }
        for field, values in current.items():
            collisions[field] += len(values & seen[field])
        for field, values in current.items():
            seen[field] |= values
    figures = {
        "lives (database dropped and migrated fresh between them)": lives,
        "outage per breach (s)": outage,
        **summarise(results, checks, left),
        "rebuild (drop, create, migrate, seed) p50 (s)": round(percentile(rebuild_s, 50), 2) if rebuild_s else None,
        "identity collisions with an earlier life": dict(collisions),
    }
    passed = base_pass(figures) and sum(collisions.values()) == 0 and checks["answered 400"] == 0 and lives >= 2
    return {"passed": passed, "figures": {**figures, "result": "PASS" if passed else "FAIL"}, "trials": results}


SIZES = {  # (trials or lives, outage s) at full size and with --quick
    "mt5_outage": ((10, 45.0), (3, 8.0)),
    "laravel_400": ((10, 8.0), (3, 8.0)),
    "db_rebuilt": ((10, 8.0), (3, 8.0)),
}


def run_one(name: str, quick: bool, trials: int | None) -> dict[str, Any]:
    size, outage = SIZES[name][1 if quick else 0]
    size = trials or size
    database = f"{DB_PREFIX}{name}"
    if name == "db_rebuilt":
        return drill_db_rebuilt(database, lives=size, outage=outage)
    url = fresh_database(database)
    setup_django(url)
    if name == "mt5_outage":
        return drill_mt5_outage(url, trials=size, outage=outage)
    return drill_laravel_400(url, trials=size, outage=outage)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(DRILLS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="3 trials, 8 s outages")
    parser.add_argument("--trials", type=int, default=None, help="trials (lives for db_rebuilt); default 10, 3 quick")
    args = parser.parse_args()
    names = args.names or list(DRILLS)
    unknown = set(names) - set(DRILLS)
    if unknown:
        parser.error(f"unknown drill(s): {', '.join(sorted(unknown))}")
    if len(names) > 1:
        # One process (and one fresh database) per drill: Django is set up once per process.
        flags = (["--quick"] if args.quick else []) + (["--trials", str(args.trials)] if args.trials else [])
        codes = [subprocess.run([sys.executable, __file__, name, *flags], check=False).returncode for name in names]
        return 1 if any(codes) else 0
    (name,) = names
    started = time.monotonic()
    try:
        result = run_one(name, args.quick, args.trials)
    except Exception as exc:  # a broken drill is reported as failed, with its error
        result = {"passed": False, "figures": {"error": f"{type(exc).__name__}: {exc}", "result": "FAIL"}}
    result["figures"]["seconds"] = round(time.monotonic() - started, 1)
    print_figures(name, result["figures"])
    write_result(name, {**result, "drill": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
