"""Fast-lane drills: protective closes through a killed worker, a hung Redis and a Redis that is gone.

    .venv/bin/python drills/fastlane.py [fast_kill_mid_close|fast_kill_idle|redis_hung|redis_down ...]
                                        [--quick]

Each runs the bridge's real processes (web, both lanes, the risk monitor with its sweeper,
callbacks) on a fresh database, and in every trial closes positions with the command a breach
raises: `close_positions`, critical, on the fast lane, posted through the web. It prints, over
the trials, the seconds from the fault (or from Redis coming back) to a flat account, p50 and
p99, the positions left open (must be 0) and the duplicated closes (closing deals beyond one per
position: must be 0), and writes var/drills/<name>.json.

- fast_kill_mid_close  kill -9 of the fast worker holding the close: half the trials after the
                       fill with its answer lost (the next worker must reconcile, not close
                       twice), half during a retry pause before anything filled (the next worker
                       closes). Seconds from the kill to the command recorded / the account flat.
- fast_kill_idle       kill -9 of an idle fast worker, then a breach at once: seconds to flat.
- redis_hung           the fast lane's Redis SIGSTOPped (its own redis-server on a spare port):
                       breaches during the hang (intake latency; closes served from the
                       database), then after SIGCONT.
- redis_down           the same Redis stopped for 60 s (quick: 10 s) with breaches all along, then
                       started again: seconds to flat during the outage and after it.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from drills.faults import Receiver, post_until_answered, register_accounts
from drills.harness import (
    DEMO_TOKEN,
    LOGIN_1,
    SERVER,
    free_port,
    fresh_database,
    full_bridge,
    percentile,
    print_figures,
    running,
    setup_django,
    wait_for,
    wait_http,
    write_result,
)

DRILLS = ("fast_kill_mid_close", "fast_kill_idle", "redis_hung", "redis_down")
CLOSE_ALL = {
    "target": {"mode": "all_positions"},
    "execution": {"allow_partial_close": False, "close_only_profitable": False, "force_market": True},
}


def _fresh() -> None:
    from django.db import close_old_connections

    close_old_connections()


def open_positions(count: int = 2) -> list[int]:
    from execution.gateways import get_gateway

    _fresh()
    gateway = get_gateway()
    return [
        gateway.open_position(LOGIN_1, SERVER, symbol="EURUSD", side="buy", volume=0.1, tag="drill").position
        for _ in range(count)
    ]


def open_count() -> int:
    from execution.gateways import get_gateway

    _fresh()
    return len(get_gateway().account_snapshot(LOGIN_1, SERVER).positions)


def closing_deals(tickets: list[int]) -> dict[int, int]:
    """Closing deals per position ticket (a duplicate close would make one of them 2)."""
    from execution.models import SimDeal
    from execution.simulator import constants

    _fresh()
    counts = {ticket: 0 for ticket in tickets}
    outs = SimDeal.objects.filter(position_id__in=tickets, entry=constants.DEAL_ENTRY_OUT)
    for ticket in outs.values_list("position_id", flat=True):
        counts[ticket] += 1
    return counts


def breach(client: httpx.Client) -> tuple[str, float]:
    """The protective close a breach raises, through the web; (command_id, seconds to the 202)."""
    from drills.harness import command_body

    body = command_body("close_positions", fast=True, **CLOSE_ALL)
    started = time.monotonic()
    response, _ = post_until_answered(client, body, DEMO_TOKEN)
    took = time.monotonic() - started
    if response is None or response.status_code != 202:
        raise RuntimeError(f"the close was not accepted: {response and response.text}")
    return body["payload"]["command_id"], took


def command_state(command_id: str) -> str:
    from commands.models import Command

    _fresh()
    return Command.objects.values_list("state", flat=True).get(command_id=command_id)


def fast_worker_pids() -> list[int]:
    from datetime import timedelta

    from django.utils import timezone

    from commands.models import LaneHeartbeat
    from execution.heartbeat import process_exists

    _fresh()
    since = timezone.now() - timedelta(seconds=2)
    rows = LaneHeartbeat.objects.filter(lane="fast", seen_at__gte=since).values_list("pid", flat=True)
    return sorted(pid for pid in rows if process_exists(pid))


def claiming_worker(command_id: str) -> int | None:
    from commands.models import CommandEvent

    _fresh()
    event = (
        CommandEvent.objects.filter(command__command_id=command_id, to_state="executing").order_by("-at", "-id").first()
    )
    found = event and re.search(r"pid (\d+)", event.note)
    return int(found.group(1)) if found else None


def summary(seconds: list[float]) -> dict[str, Any]:
    return {
        "p50": round(percentile(seconds, 50), 3),
        "p99": round(percentile(seconds, 99), 3),
        "max": round(max(seconds), 3) if seconds else None,
        "n": len(seconds),
    }


@contextmanager
def bridge(url: str, **env: str) -> Iterator[httpx.Client]:
    port = free_port()
    receiver = Receiver()
    receiver.mode = "up"
    receiver.start()
    try:
        with running(*full_bridge(url, port, receiver.port, **env)):
            if not wait_http(port):
                raise RuntimeError("web did not start")
            register_accounts(port)
            if not wait_for(lambda: len(fast_worker_pids()) >= 1, 60, 0.2):
                raise RuntimeError("no fast worker started")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                yield client
    finally:
        receiver.stop()


def wait_flat(timeout: float = 60.0) -> float | None:
    """Seconds until the account is flat (None: it never was within the timeout)."""
    started = time.monotonic()
    return time.monotonic() - started if wait_for(lambda: open_count() == 0, timeout, 0.02) else None


def drill_fast_kill_mid_close(url: str, *, trials: int) -> dict[str, Any]:
    from execution.simulator.service import sim_inject_fault

    recorded, flat, tickets_all, failures = [], [], [], []
    # A 3 s pause after a retryable answer holds the worker mid-close long enough to kill it there.
    with bridge(url, Q_FAST_WORKERS="2", COMMAND_RETRY_BACKOFF_SECONDS="3,3,3") as client:
        for trial in range(trials):
            wait_for(lambda: len(fast_worker_pids()) == 2, 10, 0.1)
            tickets = open_positions(1)
            tickets_all += tickets
            after_fill = trial % 2 == 0
            _fresh()
            sim_inject_fault("timeout_after_fill" if after_fill else "no_connection", login=LOGIN_1, count=1)
            command_id, _ = breach(client)
            # Held in its pause: after the fill (answer lost) or before anything filled.
            # (the attempt is written before the pause).
            held = wait_for(lambda c=command_id: _attempts(c) >= 1, 10, 0.01)
            time.sleep(0.2)
            worker = claiming_worker(command_id)
            if not held or worker is None:
                failures.append(f"trial {trial}: never claimed")
                continue
            os.kill(worker, signal.SIGKILL)
            killed = time.monotonic()
            if after_fill:
                if wait_for(lambda c=command_id: command_state(c) == "succeeded", 30, 0.02):
                    recorded.append(time.monotonic() - killed)
                else:
                    failures.append(f"trial {trial}: {command_state(command_id)}")
            else:
                took = wait_flat(30)
                if took is None:
                    failures.append(f"trial {trial}: never flat")
                else:
                    flat.append(time.monotonic() - killed)
                wait_for(lambda c=command_id: command_state(c) == "succeeded", 30, 0.05)
    deals = closing_deals(tickets_all)
    return _result(
        {
            "kill → flat, killed before the fill (s)": summary(flat),
            "kill → recorded, killed after the fill (s)": summary(recorded),
        },
        deals,
        failures,
    )


def _attempts(command_id: str) -> int:
    from commands.models import Command

    _fresh()
    return Command.objects.values_list("attempts", flat=True).get(command_id=command_id)


def drill_fast_kill_idle(url: str, *, trials: int) -> dict[str, Any]:
    flat, tickets_all, failures = [], [], []
    with bridge(url, Q_FAST_WORKERS="2") as client:
        for trial in range(trials):
            wait_for(lambda: len(fast_worker_pids()) == 2, 10, 0.1)
            pids = fast_worker_pids()
            tickets_all += open_positions(2)
            os.kill(pids[trial % len(pids)], signal.SIGKILL)
            killed = time.monotonic()
            breach(client)
            if wait_flat(30) is None:
                failures.append(f"trial {trial}: never flat")
            else:
                flat.append(time.monotonic() - killed)
    return _result({"kill → flat (s)": summary(flat)}, closing_deals(tickets_all), failures)


@contextmanager
def private_redis() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A redis-server of the drill's own on a spare port: it gets stopped, never the shared one."""
    port = free_port()
    server = _start_redis(port)
    try:
        yield server, port
    finally:
        _stop_redis(server)


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    import redis

    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_timeout=0.5)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    if not wait_for(up, 10, 0.05):
        raise RuntimeError("the drill's redis-server did not start")
    return server


def _stop_redis(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGCONT)
        server.terminate()
        server.wait(timeout=10)


def _breaches(client: httpx.Client, trials: int, every: float, until: Callable[[], bool] = lambda: False) -> dict:
    """`trials` breaches, one every `every` s at most: intake seconds and seconds to flat."""
    intake, flat, tickets, failures = [], [], [], []
    for trial in range(trials):
        started = time.monotonic()
        tickets += open_positions(2)
        posted = time.monotonic()
        _, took = breach(client)
        intake.append(took)
        if wait_flat(60) is None:
            failures.append(f"trial {trial}: never flat")
        else:
            flat.append(time.monotonic() - posted)
        time.sleep(max(0.0, every - (time.monotonic() - started)))
    return {"intake": intake, "flat": flat, "tickets": tickets, "failures": failures}


def drill_redis(url: str, *, trials: int, outage: float, hung: bool) -> dict[str, Any]:
    with private_redis() as (server, port):
        env = {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "FAST_LANE_BROKER": "redis"}
        with bridge(url, **env) as client:
            warm = _breaches(client, 2, 0.0)  # the lane on Redis, as it normally runs
            if hung:
                server.send_signal(signal.SIGSTOP)
            else:
                server.terminate()
                server.wait(timeout=10)
            started = time.monotonic()
            during = _breaches(client, trials, outage / trials)
            time.sleep(max(0.0, outage - (time.monotonic() - started)))
            if hung:
                server.send_signal(signal.SIGCONT)
            else:
                server = _start_redis(port)
            back = time.monotonic()
            after = _breaches(client, trials, 0.2)
            first_after = after["flat"][0] if after["flat"] else None
            back_s = time.monotonic() - back
            server_for_cleanup = server
    _stop_redis(server_for_cleanup)
    deals = closing_deals(warm["tickets"] + during["tickets"] + after["tickets"])
    return _result(
        {
            f"Redis {'hung' if hung else 'down'} (s)": round(outage, 1),
            "intake during the outage (s)": summary(during["intake"]),
            "breach → flat during the outage (s)": summary(during["flat"]),
            "recovery → flat, first breach after (s)": round(first_after, 3) if first_after is not None else "never",
            "breach → flat after recovery (s)": summary(after["flat"]),
            "after-recovery trials took (s)": round(back_s, 1),
        },
        deals,
        warm["failures"] + during["failures"] + after["failures"],
    )


def _result(figures: dict[str, Any], deals: dict[int, int], failures: list[str]) -> dict[str, Any]:
    left_open = open_count()
    duplicates = sum(max(0, count - 1) for count in deals.values())
    unclosed = sum(1 for count in deals.values() if count == 0)
    passed = left_open == 0 and duplicates == 0 and unclosed == 0 and not failures
    return {
        "passed": passed,
        "figures": {
            **figures,
            "positions opened": len(deals),
            "positions left open": left_open,
            "duplicate closes": duplicates,
            "trial failures": failures,
            "result": "PASS" if passed else "FAIL",
        },
    }


def run_one(name: str, quick: bool) -> dict[str, Any]:
    url = fresh_database(f"bridge_drill_{name}")
    setup_django(url)
    from execution.gateways import reset_gateway

    reset_gateway()
    trials = 4 if quick else 10
    if name == "fast_kill_mid_close":  # half after the fill, half before: trials of each
        return drill_fast_kill_mid_close(url, trials=2 * trials)
    if name == "fast_kill_idle":
        return drill_fast_kill_idle(url, trials=trials)
    if name == "redis_hung":
        return drill_redis(url, trials=trials, outage=8.0 if quick else 30.0, hung=True)
    return drill_redis(url, trials=trials, outage=10.0 if quick else 60.0, hung=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(DRILLS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer trials, shorter outages")
    args = parser.parse_args()
    names = args.names or list(DRILLS)
    unknown = set(names) - set(DRILLS)
    if unknown:
        parser.error(f"unknown drill(s): {', '.join(sorted(unknown))}")
    if len(names) > 1:
        flags = ["--quick"] if args.quick else []
        codes = [subprocess.run([sys.executable, __file__, name, *flags], check=False).returncode for name in names]
        return 1 if any(codes) else 0
    (name,) = names
    started = time.monotonic()
    try:
        result = run_one(name, args.quick)
    except Exception as exc:  # a broken drill is reported as failed, with its error
        result = {"passed": False, "figures": {"error": f"{type(exc).__name__}: {exc}", "result": "FAIL"}}
    result["figures"]["seconds"] = round(time.monotonic() - started, 1)
    print_figures(name, result["figures"])
    write_result(name, {**result, "drill": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
