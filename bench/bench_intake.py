"""Sustained POST /api/v1/mt5/commands on PostgreSQL under gunicorn, beside a bare Django JSON view.

    python bench/bench_intake.py [--seconds 10] [--connections 16] [--workers 4]

Prints accepted/s, p50 and p99 for: the bare view (the framework's ceiling on this server),
new commands, and idempotent replays — all in one run against the same server. Needs `wrk`
(Debian package) and a local PostgreSQL (bin/services starts it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from commands import examples  # noqa: E402

PORT = 8765


def _env(database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_ROOT_URLCONF": "bench.bench_urls",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL
    )


def _recreate_database(name: str) -> str:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", f"DROP DATABASE IF EXISTS {name}"], check=True
    )
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", f"CREATE DATABASE {name}"], check=True)
    return f"postgres://postgres@127.0.0.1:5432/{name}"


def _wrk(path: str, body: str, *, unique: bool, seconds: int, connections: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        handle.write(body)
    env = {**os.environ, "BENCH_BODY_FILE": handle.name, "BENCH_UNIQUE": "1" if unique else "0"}
    threads = min(connections, 2)
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "-s",
            str(ROOT / "bench" / "wrk_post.lua"),
            f"http://127.0.0.1:{PORT}{path}",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("JSON "))
    data = json.loads(line[5:])
    seconds_run = data["duration_us"] / 1e6
    return {
        "seconds": seconds_run,
        "rps": (data["requests"] - data["non2xx"]) / seconds_run,
        "p50_ms": data["p50_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "non2xx": data["non2xx"],
        "errors": data["errors"],
    }


def _server_command(server: str, workers: int) -> list[str]:
    if server == "granian":
        return [
            *(sys.executable, "-m", "granian", "--interface", "wsgi", "bridgeproject.wsgi:application"),
            *("--host", "127.0.0.1", "--port", str(PORT), "--workers", str(workers), "--blocking-threads", "1"),
            *("--log-level", "warning", "--no-ws"),
        ]
    threaded = ("--worker-class", "gthread", "--threads", "2", "--keep-alive", "5") if server == "gthread" else ()
    return [
        *(sys.executable, "-m", "gunicorn", "bridgeproject.wsgi:application", "--bind", f"127.0.0.1:{PORT}"),
        *("--workers", str(workers), "--log-level", "warning", *threaded),
    ]


def _commands(database_url: str) -> int:
    """How many command rows the database holds: every 202 of a fresh key must have made one."""
    query = ["psql", database_url, "-Atc", "SELECT count(*) FROM commands_command"]
    out = subprocess.run(query, check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--server", choices=["gunicorn", "gthread", "granian"], default="gunicorn")
    args = parser.parse_args()

    database_url = _recreate_database("bridge_bench")
    env = _env(database_url)
    _manage(env, "migrate", "--noinput", "-v0")
    _manage(env, "seed_demo")
    server = subprocess.Popen(_server_command(args.server, args.workers), env=env, cwd=ROOT)
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{PORT}/api/v1/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        command = examples.example("close_positions")
        command["payload"].update(command_id="__ID__", priority="normal", fast_lane=False)
        command["meta"]["idempotency_key"] = "__ID__"
        new_body = json.dumps(command)
        replay = examples.example("close_positions")
        replay_body = json.dumps(replay)
        httpx.post(
            f"http://127.0.0.1:{PORT}/api/v1/mt5/commands",
            content=replay_body,
            headers={"Authorization": "Bearer test_token_123", "Content-Type": "application/json"},
        )
        warm = dict(seconds=2, connections=args.connections)
        _wrk("/bench/bare", new_body, unique=False, **warm)
        _wrk("/api/v1/mt5/commands", new_body, unique=True, **warm)
        run = dict(seconds=args.seconds, connections=args.connections)
        bare = _wrk("/bench/bare", new_body, unique=False, **run)
        before = _commands(database_url)
        new = _wrk("/api/v1/mt5/commands", new_body, unique=True, **run)
        created = _commands(database_url) - before
        replays = _wrk("/api/v1/mt5/commands", replay_body, unique=False, **run)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    print(
        f"\nPOST /api/v1/mt5/commands on PostgreSQL, {args.server} {args.workers} workers, "
        f"{args.connections} connections, {args.seconds}s each (wrk on the same {os.cpu_count()}-core machine)\n"
    )
    print(f"| {'endpoint':<28} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'non-2xx':>7} |")
    print(f"|{'-' * 30}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for name, figures in [
        ("bare Django JSON view", bare),
        ("new commands (accepted)", new),
        ("idempotent replays", replays),
    ]:
        print(
            f"| {name:<28} | {figures['rps']:>8.0f} | {figures['p50_ms']:>7.2f} | {figures['p99_ms']:>7.2f} | "
            f"{figures['non2xx']:>7} |"
        )
    print(f"\nratio new commands / bare view: {new['rps'] / bare['rps']:.2f}")
    accepted = round(new["rps"] * new["seconds"])
    print(f"command rows created during the new-commands run: {created} (202s answered: {accepted})")


if __name__ == "__main__":
    main()
