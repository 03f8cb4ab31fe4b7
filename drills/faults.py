"""Fault drills: the bridge's real processes are killed, cut off or starved, and nothing is lost or doubled.

    .venv/bin/python drills/faults.py [kill_web|pg_restart|receiver_down|terminal_down|lanes_kill ...]
                                      [--quick]

Each drill prints its figures and writes var/drills/<name>.json. Without a name, all run.

- kill_web       kill -9 of gunicorn (master and workers) while POSTs are in flight; the client
                 retries every request with the same idempotency key: every command exists once.
- lanes_kill     kill -9 of the fast-lane worker mid-close with a timeout after the fill: one deal
                 (tests/test_lanes_live.py's drill, run as it is).
- pg_restart     PostgreSQL restarted under load (pg_ctlcluster): clients retry, the web and the
                 lanes reconnect, every accepted command finishes, none twice. PostgreSQL is always
                 left running.
- receiver_down  the Laravel receiver down for a long stretch, time compressed 1000x (backoff,
                 cap and retry window scaled alike): every report is delivered after, none dead.
- terminal_down  the MT5 terminal unreachable for 30 s (every order_send fails with no
                 connection): commands are retried within their deadlines and never after,
                 health goes `degraded` then back to `ok`.

The functions take a database URL so tests/test_drills.py runs the same drills, shorter, on the
test database.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from drills.harness import (
    DEMO_TOKEN,
    LOGIN_1,
    LOGIN_2,
    ROOT,
    SERVER,
    TENANT_2_TOKEN,
    auth,
    command_body,
    free_port,
    fresh_database,
    full_bridge,
    lanes,
    manage,
    not_ok,
    policy_body,
    print_figures,
    running,
    setup_django,
    wait_for,
    wait_http,
    web,
    write_result,
)

TERMINAL_STATES = ("succeeded", "partially_succeeded", "failed", "rejected", "expired", "cancelled")


def _orm() -> Any:
    from django.db import close_old_connections

    close_old_connections()
    from commands.models import Command, IdempotencyRecord

    return Command, IdempotencyRecord


def wait_until_finished(command_ids: list[str], timeout: float) -> bool:
    """Whether every one of these commands reached a terminal state within the timeout."""

    def finished() -> bool:
        Command, _ = _orm()
        return not Command.objects.filter(command_id__in=command_ids).exclude(state__in=TERMINAL_STATES).exists()

    return wait_for(finished, timeout, 0.5)


def post_until_answered(
    client: httpx.Client, body: dict, token: str, *, give_up_after: float = 90.0
) -> tuple[httpx.Response | None, int]:
    """POST with the body's key until a definitive answer (not a connection error, not 5xx); (answer, tries)."""
    key = body["meta"]["idempotency_key"]
    deadline = time.monotonic() + give_up_after
    tries = 0
    while time.monotonic() < deadline:
        tries += 1
        try:
            response = client.post("/api/v1/mt5/commands", json=body, headers=auth(token, **{"X-Idempotency-Key": key}))
            if response.status_code < 500 and response.status_code != 409:
                return response, tries
        except httpx.HTTPError:
            pass
        time.sleep(min(0.1 * tries, 1.0))
    return None, tries


def register_accounts(port: int) -> None:
    """tenant_2's account (seed_demo registered tenant_1's), with wide limits on both."""
    for tenant, token, login in (("tenant_1", DEMO_TOKEN, LOGIN_1), ("tenant_2", TENANT_2_TOKEN, LOGIN_2)):
        body = policy_body(tenant=tenant, login=login, version=13)
        httpx.post(
            f"http://127.0.0.1:{port}/api/v1/mt5/policies", json=body, headers=auth(token), timeout=30
        ).raise_for_status()


# --- kill -9 of the web process during in-flight POSTs -------------------------------------------


def drill_kill_web(url: str, *, requests: int = 300, concurrency: int = 16) -> dict[str, Any]:
    port = free_port()
    bodies = [command_body("sync_account") for _ in range(requests)]
    first: dict[str, httpx.Response | None] = {}
    killed = threading.Event()
    answered = Counter()
    server = web(url, port, name="killweb-web")
    server.start()
    try:
        if not wait_http(port):
            raise RuntimeError("web did not start")

        def send(body: dict) -> None:
            key = body["meta"]["idempotency_key"]
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                    response = client.post(
                        "/api/v1/mt5/commands", json=body, headers=auth(DEMO_TOKEN, **{"X-Idempotency-Key": key})
                    )
                first[key] = response if response.status_code < 500 else None
                answered["ok" if response.status_code == 202 else str(response.status_code)] += 1
            except httpx.HTTPError:
                first[key] = None
                answered["connection error"] += 1

        def killer() -> None:
            wait_for(lambda: sum(answered.values()) >= requests // 3, 60, 0.005)
            server.kill()  # SIGKILL to the whole process group: master and workers
            killed.set()

        threading.Thread(target=killer, daemon=True).start()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(send, bodies))
        killed.wait(30)
        answered_before_restart = dict(answered)
        restart_started = time.monotonic()
        server = web(url, port, name="killweb-web")
        server.start()
        if not wait_http(port):
            raise RuntimeError("web did not restart")
        restart_s = time.monotonic() - restart_started
        # The client cannot know which of its requests were done: it retries all of them.
        retried = Counter()
        mismatched = 0
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for body in bodies:
                key = body["meta"]["idempotency_key"]
                response, _ = post_until_answered(client, body, DEMO_TOKEN)
                if response is None or response.status_code != 202:
                    retried["unanswered"] += 1
                    continue
                replayed = response.headers.get("Idempotent-Replayed") == "true"
                retried["replayed" if replayed else "new"] += 1
                earlier = first.get(key)
                if replayed and earlier is None:
                    retried["done but unanswered"] += 1
                if earlier is not None and earlier.json()["command_id"] != response.json()["command_id"]:
                    mismatched += 1
    finally:
        server.stop()
    Command, IdempotencyRecord = _orm()
    ids = [body["payload"]["command_id"] for body in bodies]
    stored = Counter(Command.objects.filter(command_id__in=ids).values_list("command_id", flat=True))
    duplicates = sum(count - 1 for count in stored.values() if count > 1)
    lost = sum(1 for command_id in ids if command_id not in stored)
    keys = [body["meta"]["idempotency_key"] for body in bodies]
    records = IdempotencyRecord.objects.filter(key__in=keys).count()
    passed = duplicates == 0 and lost == 0 and retried["unanswered"] == 0 and mismatched == 0 and records == requests
    return {
        "passed": passed,
        "figures": {
            "requests": requests,
            "answers before the kill/restart": answered_before_restart,
            "web restart to first answer (s)": round(restart_s, 2),
            "retries answered as replays": retried["replayed"],
            "of which the first try died unanswered (in flight at the kill)": retried["done but unanswered"],
            "retries that created the command": retried["new"],
            "unanswered after retries": retried["unanswered"],
            "replay body differs from first answer": mismatched,
            "commands stored": sum(stored.values()),
            "duplicated commands": duplicates,
            "lost commands": lost,
            "result": "PASS" if passed else "FAIL",
        },
    }


# --- kill -9 of the fast-lane worker mid-close (tests/test_lanes_live.py) -------------------------


def drill_lanes_kill() -> dict[str, Any]:
    started = time.monotonic()
    env = {**os.environ, "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")}
    env.setdefault("TEST_DATABASE_NAME", "test_bridge_drill_lanes")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_lanes_live.py", "-k", "kill_9", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = [line for line in proc.stdout.splitlines() if "passed" in line or "failed" in line]
    passed = proc.returncode == 0
    return {
        "passed": passed,
        "figures": {
            "test": "tests/test_lanes_live.py -k kill_9",
            "pytest says": tail[-1] if tail else proc.stdout[-300:],
            "closing deals after kill, sweep, restart": "1 (asserted)" if passed else "see pytest output",
            "seconds": round(time.monotonic() - started, 1),
            "result": "PASS" if passed else "FAIL",
        },
    }


# --- PostgreSQL restarted under load ----------------------------------------------------------


def pg_version() -> str:
    return sorted(os.listdir("/etc/postgresql"))[-1]


def pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], check=False).returncode == 0


def ensure_pg_running() -> None:
    if not pg_ready():
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", pg_version(), "main", "start"], check=False, timeout=120
        )
        wait_for(pg_ready, 60, 0.5)


def drill_pg_restart(url: str, *, seconds: float = 30.0, clients: int = 6) -> dict[str, Any]:
    port = free_port()
    receiver = Receiver()
    receiver.mode = "up"
    receiver.start()
    # Time compressed: a command whose worker lost the database mid-run is swept after 20 s, not 90.
    env = {"COMMAND_EXECUTING_LEASE_SECONDS": "20", "COMMAND_QUEUED_GRACE_SECONDS": "20"}
    services = full_bridge(url, port, receiver.port, **env)
    accepted: dict[str, str] = {}
    errors = Counter()
    outage: dict[str, float] = {}
    lock = threading.Lock()
    stop = threading.Event()
    try:
        with running(*services):
            if not wait_http(port):
                raise RuntimeError("web did not start")
            register_accounts(port)
            started = time.monotonic()

            def client_loop(n: int) -> None:
                token, login = (DEMO_TOKEN, LOGIN_1) if n % 2 == 0 else (TENANT_2_TOKEN, LOGIN_2)
                tenant = "tenant_1" if n % 2 == 0 else "tenant_2"
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
                    while not stop.is_set():
                        body = command_body("sync_account", tenant=tenant, login=login, fast=n % 3 == 0)
                        key = body["meta"]["idempotency_key"]
                        deadline = time.monotonic() + 90
                        while time.monotonic() < deadline:
                            try:
                                response = client.post(
                                    "/api/v1/mt5/commands",
                                    json=body,
                                    headers=auth(token, **{"X-Idempotency-Key": key}),
                                )
                                code = response.status_code
                            except httpx.HTTPError:
                                code = 0
                            if code == 202:
                                with lock:
                                    accepted[key] = response.json()["command_id"]
                                break
                            with lock:
                                errors["connection error" if code == 0 else str(code)] += 1
                            time.sleep(0.2)
                        time.sleep(0.05)

            threads = [threading.Thread(target=client_loop, args=(n,), daemon=True) for n in range(clients)]
            for thread in threads:
                thread.start()
            time.sleep(seconds / 3)
            before = len(accepted)
            restart_at = time.monotonic()
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", pg_version(), "main", "restart"], check=True, timeout=120
            )
            outage["pg restart command (s)"] = round(time.monotonic() - restart_at, 2)
            wait_for(lambda: len(accepted) > before + clients, 120, 0.05)
            outage["restart to next accepted command (s)"] = round(time.monotonic() - restart_at, 2)
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))
            stop.set()
            for thread in threads:
                thread.join(timeout=100)
            drained = wait_until_finished(list(accepted.values()), 120)
            alive = {service.name: service.alive for service in services}
    finally:
        stop.set()
        ensure_pg_running()
        receiver.stop()
    Command, _ = _orm()
    ids = list(accepted.values())
    states = Counter(Command.objects.filter(command_id__in=ids).values_list("state", flat=True))
    stored = Counter(Command.objects.filter(command_id__in=ids).values_list("command_id", flat=True))
    duplicates = sum(count - 1 for count in stored.values() if count > 1)
    lost = sum(1 for command_id in ids if command_id not in stored)
    passed = drained and duplicates == 0 and lost == 0 and set(states) <= {"succeeded"} and all(alive.values())
    return {
        "passed": passed,
        "figures": {
            "commands accepted": len(ids),
            **outage,
            "client errors while PostgreSQL was away (retried)": dict(errors),
            "final states": dict(states),
            "all finished": drained,
            "duplicated commands": duplicates,
            "lost commands": lost,
            "processes alive after": alive,
            "PostgreSQL running after": pg_ready(),
            "result": "PASS" if passed else "FAIL",
        },
    }


# --- the Laravel receiver down for a long stretch ------------------------------------------------


class Receiver:
    """A stand-in for Laravel's internal API on loopback: records every callback, can be down."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.port = free_port()
        self.mode = "down"  # down (connection refused) | busy (503 + Retry-After) | up
        self.server: ThreadingHTTPServer | None = None
        self.refused = 0

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.mode == "busy":
                    self.send_response(503)
                    self.send_header("Retry-After", "1")
                    self.end_headers()
                    return
                envelope = json.loads(body)
                with receiver.lock:
                    receiver.received.append(
                        {
                            "key": self.headers.get("X-Idempotency-Key"),
                            "account": envelope["actor"]["account_login"],
                            "type": envelope["request"]["type"],
                        }
                    )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def drill_receiver_down(url: str, *, events: int = 40, down: float = 30.0, busy: float = 5.0) -> dict[str, Any]:
    factor = 1000.0  # 1 s of the drill = 1000 s of the callbacks' clock
    receiver = Receiver()  # not started: connection refused
    port = free_port()
    env = {
        "LARAVEL_API_URL": f"http://127.0.0.1:{receiver.port}",
        "LARAVEL_INTERNAL_TOKEN": "drill-laravel-token",
        "CALLBACK_BACKOFF_BASE_SECONDS": str(1.0 / factor),
        "CALLBACK_BACKOFF_MAX_SECONDS": str(900.0 / factor),
        "CALLBACK_RETRY_HOURS": str(24.0 / factor),
        "CALLBACK_TIMEOUT_SECONDS": "2",
        "CALLBACK_POLL_MS": "50",
    }
    services = [
        web(url, port, name="recv-web", **env),
        *lanes(url, **env),
        manage("recv-callbacks", url, "delivercallbacks", **env),
    ]
    from callbacks.models import CallbackDelivery

    try:
        with running(*services):
            if not wait_http(port):
                raise RuntimeError("web did not start")
            register_accounts(port)
            down_started = time.monotonic()
            command_ids = []
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
                for n in range(events):
                    tenant, token, login = (
                        ("tenant_1", DEMO_TOKEN, LOGIN_1) if n % 2 == 0 else ("tenant_2", TENANT_2_TOKEN, LOGIN_2)
                    )
                    body = command_body("sync_account", tenant=tenant, login=login, fast=n % 4 == 0)
                    response, _ = post_until_answered(client, body, token)
                    command_ids.append(response.json()["command_id"])  # type: ignore[union-attr]  # None only once 90 s of retries gave up: the drill fails here
            Command, _ = _orm()
            wait_for(
                lambda: (
                    Command.objects.filter(command_id__in=command_ids, state__in=TERMINAL_STATES).count()
                    == len(command_ids)
                ),
                120,
                0.2,
            )
            time.sleep(max(0.0, down - busy - (time.monotonic() - down_started)))
            receiver.mode = "busy"
            receiver.start()
            time.sleep(busy)
            down_seconds = time.monotonic() - down_started
            receiver.mode = "up"
            up_at = time.monotonic()
            _orm()
            rows = CallbackDelivery.objects.all()

            def drained() -> bool:
                _orm()
                return not rows.filter(status__in=("pending", "delivering")).exists()

            finished = wait_for(drained, 120, 0.2)
            drain_s = time.monotonic() - up_at
    finally:
        receiver.stop()
    _orm()
    outbox = list(
        CallbackDelivery.objects.order_by("id").values("idempotency_key", "account__login", "status", "attempts")
    )
    statuses = Counter(row["status"] for row in outbox)
    keys = Counter(item["key"] for item in receiver.received)
    missing = [row["idempotency_key"] for row in outbox if row["idempotency_key"] not in keys]
    duplicates = sum(count - 1 for count in keys.values() if count > 1)
    out_of_order = 0
    for login in {row["account__login"] for row in outbox}:
        expected = [row["idempotency_key"] for row in outbox if row["account__login"] == login]
        seen: list[str] = []
        for item in receiver.received:
            if item["account"] == login and item["key"] not in seen:
                seen.append(item["key"])
        out_of_order += sum(1 for a, b in zip(expected, seen, strict=False) if a != b)
    passed = finished and not missing and statuses.get("dead", 0) == 0 and out_of_order == 0 and len(outbox) >= events
    return {
        "passed": passed,
        "figures": {
            "callbacks in the outbox": len(outbox),
            "receiver down (s, real)": round(down_seconds, 1),
            "receiver down (h, callbacks' clock x1000)": round(down_seconds * factor / 3600, 1),
            "attempts (total / max per callback)": (
                f"{sum(r['attempts'] for r in outbox)} / {max((r['attempts'] for r in outbox), default=0)}"
            ),
            "delivered after the receiver came back": statuses.get("delivered", 0),
            "dead-lettered": statuses.get("dead", 0),
            "never received": len(missing),
            "received twice (Laravel de-duplicates)": duplicates,
            "out of per-account order": out_of_order,
            "drain after up (s)": round(drain_s, 2),
            "result": "PASS" if passed else "FAIL",
        },
    }


# --- the MT5 terminal disconnected for 30 s ---------------------------------------------------------


def drill_terminal_down(url: str, *, down: float = 30.0) -> dict[str, Any]:
    from execution.gateways import get_gateway, reset_gateway
    from execution.simulator.service import sim_clear_faults, sim_inject_fault

    port = free_port()
    receiver = Receiver()
    receiver.mode = "up"
    receiver.start()
    # Retries spread over ~45 s: a command whose deadline outlives the outage gets through.
    env = {"COMMAND_RETRY_BACKOFF_SECONDS": "0.5,1,2,3,3,3,3,3,3,3,3,3,3,3,3,3"}
    services = full_bridge(url, port, receiver.port, **env)
    health: list[tuple[float, str, str]] = []
    stop = threading.Event()
    reset_gateway()
    _orm()
    gateway = get_gateway()
    tickets = [
        gateway.open_position(LOGIN_1, SERVER, symbol="EURUSD", side="buy", volume=0.1, tag=f"drill-{n}").position
        for n in range(6)
    ]
    try:
        with running(*services):
            if not wait_http(port):
                raise RuntimeError("web did not start")
            register_accounts(port)

            def watch() -> None:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                    started = time.monotonic()
                    while not stop.is_set():
                        try:
                            report = client.get("/api/v1/health").json()
                            health.append(
                                (round(time.monotonic() - started, 2), report["status"], ",".join(not_ok(report)))
                            )
                        except (httpx.HTTPError, KeyError, ValueError):
                            health.append((round(time.monotonic() - started, 2), "unreachable", ""))
                        stop.wait(0.5)

            healthy = wait_for(
                lambda: httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5).json()["status"] == "ok",
                60,
                0.5,
            )
            if not healthy:
                report = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5).json()
                raise RuntimeError(f"health never ok before the outage: {not_ok(report)}")
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            _orm()
            sim_inject_fault("no_connection", count=1_000_000)
            cut_at = time.monotonic()
            plan = [
                # (ticket, fast, seconds until it expires)
                (tickets[0], True, down + 40),
                (tickets[1], True, down + 40),
                (tickets[2], True, down + 40),
                (tickets[3], False, down + 60),
                (tickets[4], False, down + 60),
                (tickets[5], True, min(5.0, down / 2)),  # expires during the outage
            ]
            sent = []
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
                for n, (ticket, fast, expires) in enumerate(plan):
                    body = command_body(
                        "modify_position",
                        fast=fast,
                        expires_in=expires,
                        ticket=ticket,
                        stop_loss=round(1.0 + n / 100, 5),
                    )
                    response, _ = post_until_answered(client, body, DEMO_TOKEN)
                    sent.append((response.json()["command_id"], expires))  # type: ignore[union-attr]  # None only once retries gave up: the drill fails here
            time.sleep(max(0.0, down - (time.monotonic() - cut_at)))
            _orm()
            sim_clear_faults()
            restored_at = time.monotonic()
            Command, _ = _orm()
            ids = [command_id for command_id, _ in sent]

            def finished() -> bool:
                _orm()
                return Command.objects.filter(command_id__in=ids, state__in=TERMINAL_STATES).count() == len(ids)

            all_done = wait_for(finished, down + 90, 0.2)
            ok_again = wait_for(lambda: health and health[-1][1] == "ok", 60, 0.5)
            recovered_s = time.monotonic() - restored_at
            stop.set()
            watcher.join(timeout=15)
    finally:
        stop.set()
        receiver.stop()
        _orm()
        sim_clear_faults()
    from commands.models import CommandEvent
    from execution.runner import deadline_of

    Command, _ = _orm()
    rows = {c.command_id: c for c in Command.objects.filter(command_id__in=[c for c, _ in sent])}
    late_attempts = 0
    outcome = {}
    for command_id, expires in sent:
        command = rows[command_id]
        deadline = deadline_of(command)
        attempts = CommandEvent.objects.filter(command=command, kind="attempt")
        late_attempts += attempts.filter(at__gt=deadline + timedelta(seconds=0.5)).count()
        outcome[command_id] = (command.lane, round(expires), command.state, command.attempts)
    long_lived_ok = all(state == "succeeded" for _, (_, exp, state, _) in outcome.items() if exp > down)
    short_lived_ok = all(state in ("failed", "expired") for _, (_, exp, state, _) in outcome.items() if exp < down)
    seen = [status for _, status, _ in health]
    why = sorted({reason for _, status, reason in health if status == "degraded"})
    degraded = "degraded" in seen
    passed = all_done and long_lived_ok and short_lived_ok and late_attempts == 0 and degraded and ok_again
    return {
        "passed": passed,
        "figures": {
            "terminal unreachable (s)": round(down, 1),
            "commands (lane, expires in s, final state, attempts)": list(outcome.values()),
            "attempts after a command's deadline": late_attempts,
            "commands outliving the outage succeeded": long_lived_ok,
            "command expiring inside it ended failed/expired": short_lived_ok,
            "health states seen (in order)": [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s],
            "health degraded samples": seen.count("degraded"),
            "checks that made it degraded": why,
            "back to ok after restore (s)": round(recovered_s, 1) if ok_again else "never",
            "result": "PASS" if passed else "FAIL",
        },
    }


DRILLS = ("kill_web", "lanes_kill", "pg_restart", "receiver_down", "terminal_down")


def run_one(name: str, quick: bool) -> dict[str, Any]:
    if name == "lanes_kill":
        return drill_lanes_kill()
    url = fresh_database(f"bridge_drill_{name}")
    setup_django(url)
    if name == "kill_web":
        return drill_kill_web(url, requests=100 if quick else 300)
    if name == "pg_restart":
        return drill_pg_restart(url, seconds=15 if quick else 30)
    if name == "receiver_down":
        return drill_receiver_down(url, events=20 if quick else 40, down=10 if quick else 30)
    return drill_terminal_down(url, down=10 if quick else 30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(DRILLS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="shorter outages and fewer requests")
    args = parser.parse_args()
    names = args.names or list(DRILLS)
    unknown = set(names) - set(DRILLS)
    if unknown:
        parser.error(f"unknown drill(s): {', '.join(sorted(unknown))}")
    if len(names) > 1:
        # One process (and one fresh database) per drill: Django is set up once per process.
        flags = ["--quick"] if args.quick else []
        codes = [subprocess.run([sys.executable, __file__, name, *flags], check=False).returncode for name in names]
        return 1 if any(codes) else 0
    (name,) = names
    started = time.monotonic()
    try:
        result = run_one(name, args.quick)
    except Exception as exc:  # a broken drill is reported as failed, with its error
        result = {"passed": False, "figures": {"error": f"{type(exc).__name__}: {exc}", "result": "FAIL"}}
    finally:
        if name == "pg_restart":
            ensure_pg_running()
    result["figures"]["seconds"] = round(time.monotonic() - started, 1)
    print_figures(name, result["figures"])
    write_result(name, {**result, "drill": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
