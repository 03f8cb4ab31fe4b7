"""Mixed traffic on PostgreSQL with every process running: zero errors, nothing lost or doubled, memory flat.

    .venv/bin/python drills/load.py [--seconds 600] [--rate 40] [--clients 6]

Commands (normal and fast modify_position, sync_account), policy snapshots (a new version each
time) and reads (account snapshot, command list, one command) from both tenants, paced to
`--rate` requests per second, against gunicorn, both lanes, the risk monitor and the callback
delivery (to a loopback receiver). Afterwards every accepted command must reach a terminal
state exactly once; every process's RSS is sampled every 2 s and compared between the end of
the warm-up (20 % of the run, at least 10 s) and the end. Figures and the raw series (for the
report's plots) go to var/drills/load.json.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from drills.faults import Receiver, _orm, register_accounts, wait_until_finished
from drills.harness import (
    DEMO_TOKEN,
    LOGIN_1,
    LOGIN_2,
    SERVER,
    TENANT_2_TOKEN,
    MemorySampler,
    auth,
    command_body,
    free_port,
    fresh_database,
    full_bridge,
    percentile,
    policy_body,
    print_figures,
    running,
    setup_django,
    wait_http,
    write_result,
)

ACCOUNTS = (("tenant_1", DEMO_TOKEN, LOGIN_1), ("tenant_2", TENANT_2_TOKEN, LOGIN_2))
MIX = [("command", 40), ("fast_command", 10), ("policy", 8), ("account", 22), ("list", 12), ("detail", 8)]


def drill_load(url: str, *, seconds: float, rate: float, clients: int) -> dict[str, Any]:
    from execution.gateways import get_gateway, reset_gateway

    receiver = Receiver()
    receiver.mode = "up"
    receiver.start()
    port = free_port()
    services = full_bridge(url, port, receiver.port)
    reset_gateway()
    _orm()
    tickets = {
        login: get_gateway().open_position(login, SERVER, symbol="EURUSD", side="buy", volume=0.1, tag="load").position
        for _, _, login in ACCOUNTS
    }
    samples: list[tuple[float, str, int, float]] = []  # (t, kind, status, ms)
    accepted: dict[str, str] = {}  # command_id -> lane asked
    versions = {login: 20 for _, _, login in ACCOUNTS}
    policy_locks = {login: threading.Lock() for _, _, login in ACCOUNTS}
    lock = threading.Lock()
    stop = threading.Event()
    weights = [w for _, w in MIX]
    kinds = [k for k, _ in MIX]

    def one(client: httpx.Client, rng: random.Random, n: int) -> tuple[str, int]:
        tenant, token, login = ACCOUNTS[n % 2]
        kind = rng.choices(kinds, weights)[0]
        if kind in ("command", "fast_command"):
            fast = kind == "fast_command"
            if rng.random() < 0.5:
                body = command_body(
                    "modify_position",
                    tenant=tenant,
                    login=login,
                    fast=fast,
                    ticket=tickets[login],
                    stop_loss=round(1.0 + rng.randrange(500) / 10000, 5),
                )
            else:
                body = command_body("sync_account", tenant=tenant, login=login, fast=fast)
            response = client.post("/api/v1/mt5/commands", json=body, headers=auth(token))
            if response.status_code == 202:
                with lock:
                    accepted[response.json()["command_id"]] = "fast" if fast else "normal"
                    mine[n % 2].append(response.json()["command_id"])
            return kind, response.status_code
        if kind == "policy":
            with policy_locks[login]:
                versions[login] += 1
                body = policy_body(tenant=tenant, login=login, version=versions[login])
                return kind, client.post("/api/v1/mt5/policies", json=body, headers=auth(token)).status_code
        if kind == "account":
            return kind, client.get(f"/api/v1/mt5/accounts/{login}", headers=auth(token)).status_code
        if kind == "list":
            return kind, client.get(f"/api/v1/mt5/commands?account_login={login}", headers=auth(token)).status_code
        with lock:
            recent = mine[n % 2][-50:]  # one of this tenant's own commands (another's is 403)
        if not recent:
            return kind, 200
        return kind, client.get(f"/api/v1/mt5/commands/{rng.choice(recent)}", headers=auth(token)).status_code

    mine: tuple[list[str], list[str]] = ([], [])

    def client_loop(n: int) -> None:
        rng = random.Random(n)
        interval = clients / rate
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            next_at = time.monotonic()
            while not stop.is_set():
                started = time.monotonic()
                try:
                    kind, status = one(client, rng, n)
                except httpx.HTTPError:
                    kind, status = "connection", 0
                elapsed = time.monotonic() - started
                with lock:
                    samples.append((round(started - t0, 3), kind, status, elapsed * 1000))
                next_at += interval
                stop.wait(max(0.0, next_at - time.monotonic()))

    try:
        with running(*services):
            if not wait_http(port):
                raise RuntimeError("web did not start")
            register_accounts(port)
            warmup = max(10.0, seconds * 0.2)
            with MemorySampler(services, every=2.0) as memory:
                t0 = time.monotonic()
                threads = [threading.Thread(target=client_loop, args=(n,), daemon=True) for n in range(clients)]
                for thread in threads:
                    thread.start()
                stop.wait(seconds)
                stop.set()
                for thread in threads:
                    thread.join(timeout=60)
                all_done = wait_until_finished(list(accepted), 180)
            alive = {service.name: service.alive for service in services}
    finally:
        stop.set()
        receiver.stop()
    Command, _ = _orm()
    ids = list(accepted)
    rows = list(
        Command.objects.filter(command_id__in=ids).values("command_id", "lane", "state", "received_at", "finished_at")
    )
    stored = Counter(row["command_id"] for row in rows)
    duplicates = sum(count - 1 for count in stored.values() if count > 1)
    lost = sum(1 for command_id in ids if command_id not in stored)
    states = Counter(row["state"] for row in rows)
    lane_ms: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row["finished_at"] and row["received_at"]:
            lane_ms[row["lane"]].append((row["finished_at"] - row["received_at"]).total_seconds() * 1000)
    errors = Counter(f"{kind} {status}" for _, kind, status, _ in samples if status == 0 or status >= 400)
    by_kind: dict[str, list[float]] = defaultdict(list)
    for _, kind, _, ms in samples:
        by_kind[kind].append(ms)
    growth = memory.growth(warmup)
    worst = max(growth, key=lambda row: row["growth_pct"], default=None)
    flat = all(row["growth_pct"] < 10 for row in growth)
    passed = (
        not errors and duplicates == 0 and lost == 0 and all_done and flat and all(alive.values())
        and set(states) <= {"succeeded"}
    )  # fmt: skip
    figures = {
        "duration (s) / warm-up (s)": f"{seconds:.0f} / {warmup:.0f}",
        "requests": len(samples),
        "requests/s": round(len(samples) / seconds, 1),
        "errors (5xx, 4xx, connection)": dict(errors) or 0,
        **{
            f"{kind} p50/p99 ms": f"{percentile(v, 50):.1f} / {percentile(v, 99):.1f} (n {len(v)})"
            for kind, v in sorted(by_kind.items())
        },
        "commands accepted": len(ids),
        "final states": dict(states),
        "duplicated / lost commands": f"{duplicates} / {lost}",
        **{
            f"{lane} lane accepted→finished p50/p99 ms": f"{percentile(v, 50):.0f} / {percentile(v, 99):.0f}"
            for lane, v in sorted(lane_ms.items())
        },
        "callbacks received by the receiver": len(receiver.received),
        "processes sampled": len(growth),
        "worst memory growth after warm-up": (
            f"{worst['growth_pct']}% ({worst['service']} pid {worst['pid']}, "
            f"{worst['rss_start_mb']}→{worst['rss_end_mb']} MB)"
            if worst
            else "n/a"
        ),
        "processes alive at the end": all(alive.values()),
        "result": "PASS" if passed else "FAIL",
    }
    return {
        "passed": passed,
        "figures": figures,
        "series": {
            "requests": samples,
            "lane_ms": dict(lane_ms),
            "memory": memory.samples,
            "memory_growth": growth,
            "warmup": warmup,
            "finished": sorted(
                (row["finished_at"] - rows[0]["received_at"]).total_seconds()
                for row in rows
                if row["finished_at"] and rows
            ),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second, all clients together")
    parser.add_argument("--clients", type=int, default=6)
    args = parser.parse_args()
    started = time.monotonic()
    try:
        url = fresh_database("bridge_drill_load")
        setup_django(url)
        result = drill_load(url, seconds=args.seconds, rate=args.rate, clients=args.clients)
    except Exception as exc:  # reported as a failed drill, not a crash
        result = {"passed": False, "figures": {"error": f"{type(exc).__name__}: {exc}", "result": "FAIL"}}
    result["figures"]["seconds"] = round(time.monotonic() - started, 1)
    print_figures("load: mixed traffic, every process running", result["figures"])
    write_result("load", {**result, "drill": "load"})
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
