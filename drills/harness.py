"""What every drill shares: a fresh database, the bridge's real processes, a client, memory samples, results.

Every process a drill starts runs in its own process group (so kill -9 takes its workers too)
and is stopped when the drill ends, whatever happened. Only loopback addresses are used.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "var" / "drills"
SECRET_KEY = "drill-secret-key-not-for-production-0123456789"
DEMO_TOKEN = "test_token_123"  # seed_demo's token (tenant_1)
TENANT_2_TOKEN = "drill-token-tenant-2"
LOGIN_1, SERVER = 50040367, "Broker-Server"
LOGIN_2 = 50040368


def fresh_database(name: str) -> str:
    """A new PostgreSQL database, migrated, the demo seeded, and a second tenant with an account."""
    from bench.common import fresh_database as bench_fresh

    url = bench_fresh(name)
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    for args in (
        ["create_api_token", "--tenant", "tenant_2", "--token", TENANT_2_TOKEN],
        ["mt5sim", "account", "create", "--login", str(LOGIN_2), "--balance", "100000", "--server", SERVER],
    ):
        subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args], env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL
        )
    return url


def setup_django(url: str) -> None:
    os.environ["DJANGO_SECRET_KEY"] = SECRET_KEY
    from bench.common import setup_django as bench_setup

    bench_setup(url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bridge_env(url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(extra)
    return env


class Service:
    """One bridge process (and its children), its output in var/drills/<name>.log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = OUT / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        OUT.mkdir(parents=True, exist_ok=True)
        handle = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.argv, env=self.env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        handle.close()
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def pids(self) -> list[int]:
        """This process and all its descendants."""
        if self.popen is None or not self.alive:
            return []
        import psutil

        try:
            root = psutil.Process(self.popen.pid)
            return [root.pid, *(child.pid for child in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen is not None and self.alive:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen is not None and self.alive:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                pass


def manage(name: str, url: str, *args: str, **env: str) -> Service:
    return Service(name, [sys.executable, str(ROOT / "manage.py"), *args], bridge_env(url, **env))


def web(url: str, port: int, *, workers: int = 4, threads: int = 1, name: str = "web", **env: str) -> Service:
    """gunicorn as `runbridge` runs it: sync workers, two per core."""
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "bridgeproject.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--log-level",
        "warning",
        "--graceful-timeout",
        "5",
    ]
    return Service(name, argv, bridge_env(url, **env))


def lanes(url: str, **env: str) -> list[Service]:
    return [
        manage("normal", url, "qcluster", **env),
        manage("fastlane", url, "qcluster", Q_CLUSTER_NAME="fastlane", **env),
    ]


def full_bridge(url: str, port: int, receiver_port: int, **env: str) -> list[Service]:
    """Every process of runbridge but the price feed: web, both lanes, the risk monitor, callbacks."""
    env = {
        "LARAVEL_API_URL": f"http://127.0.0.1:{receiver_port}",
        "LARAVEL_INTERNAL_TOKEN": "drill-laravel-token",
        "CALLBACK_POLL_MS": "50",
        **env,
    }
    return [
        web(url, port, **env),
        *lanes(url, **env),
        manage("risk", url, "riskmonitor", **env),
        manage("callbacks", url, "delivercallbacks", **env),
    ]


def not_ok(report: dict[str, Any]) -> list[str]:
    """The checks of a health report that are not ok."""
    return sorted(name for name, check in report.get("checks", {}).items() if check.get("status") != "ok")


@contextmanager
def running(*services: Service) -> Iterator[tuple[Service, ...]]:
    try:
        for service in services:
            service.start()
        yield services
    finally:
        for service in services:
            service.stop()


def wait_for(condition: Callable[[], bool], timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except Exception:
            pass
        time.sleep(every)
    return False


def wait_http(port: int, timeout: float = 60.0) -> bool:
    import httpx

    def up() -> bool:
        return httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5).status_code in (200, 503)

    return wait_for(up, timeout, 0.2)


# --- request bodies -------------------------------------------------------------------------


def command_body(
    command_type: str,
    *,
    tenant: str = "tenant_1",
    login: int = LOGIN_1,
    command_id: str | None = None,
    fast: bool = False,
    expires_in: float | None = None,
    **specific: Any,
) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    from commands import examples

    body = json.loads(json.dumps(examples.EXAMPLES["close_positions"]))
    now = datetime.now(UTC)
    body["meta"].update(
        request_id=str(uuid.uuid4()),
        idempotency_key=str(uuid.uuid4()),
        correlation_id=str(uuid.uuid4()),
        tenant_id=tenant,
        sent_at_utc=now.isoformat().replace("+00:00", "Z"),
    )
    body["actor"].update(account_login=login, server=SERVER)
    payload: dict[str, Any] = {
        "command_id": command_id or f"drill-{uuid.uuid4().hex[:20]}",
        "command_type": command_type,
        "priority": "critical" if fast else "normal",
        "fast_lane": fast,
        "reason": "drill",
        **specific,
    }
    if expires_in is not None:
        payload["expires_at_utc"] = (now + timedelta(seconds=expires_in)).isoformat().replace("+00:00", "Z")
    body["payload"] = payload
    return body


def policy_body(*, tenant: str = "tenant_1", login: int = LOGIN_1, version: int = 12) -> dict[str, Any]:
    from commands import examples

    body = json.loads(json.dumps(examples.EXAMPLES["policy_snapshot"]))
    body["meta"].update(request_id=str(uuid.uuid4()), idempotency_key=str(uuid.uuid4()), tenant_id=tenant)
    body["actor"].update(account_login=login, server=SERVER, trading_account_id=str(login))
    body["payload"]["policy_version"] = version
    # Wide limits: the drills' own traffic must not trip a protective close of their positions.
    body["payload"].update(max_daily_dd_pct=50, max_total_dd_pct=90, max_single_trade_loss_pct=50)
    return body


def auth(token: str = DEMO_TOKEN, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **extra}


# --- memory ---------------------------------------------------------------------------------


class MemorySampler:
    """Samples the RSS of every process of the given services every `every` seconds, in a thread."""

    def __init__(self, services: list[Service], every: float = 2.0) -> None:
        self.services = services
        self.every = every
        self.samples: list[dict[str, Any]] = []  # {t, service, pid, rss_mb}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            now = time.monotonic() - self.started
            for service in self.services:
                for pid in service.pids():
                    try:
                        rss = psutil.Process(pid).memory_info().rss / 2**20
                    except psutil.Error:
                        continue
                    self.samples.append({"t": round(now, 2), "service": service.name, "pid": pid, "rss_mb": rss})
            self._stop.wait(self.every)

    def __enter__(self) -> MemorySampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def growth(self, warmup: float) -> list[dict[str, Any]]:
        """Per process: RSS right after warm-up vs at the end (means of a few samples), in % of the former."""
        by_pid: dict[int, list[dict[str, Any]]] = {}
        for sample in self.samples:
            by_pid.setdefault(sample["pid"], []).append(sample)
        rows = []
        for pid, samples in by_pid.items():
            after = [s for s in samples if s["t"] >= warmup]
            if len(after) < 4:
                continue  # a process that came and went (a replaced worker) has no trend to judge
            head = [s["rss_mb"] for s in after[:3]]
            tail = [s["rss_mb"] for s in after[-3:]]
            start, end = sum(head) / len(head), sum(tail) / len(tail)
            rows.append(
                {
                    "service": samples[0]["service"],
                    "pid": pid,
                    "rss_start_mb": round(start, 1),
                    "rss_end_mb": round(end, 1),
                    "growth_pct": round((end - start) / start * 100, 2) if start else 0.0,
                }
            )
        return sorted(rows, key=lambda row: (row["service"], row["pid"]))


# --- results ----------------------------------------------------------------------------------


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Save a drill's figures as var/drills/<name>.json (the report reads them) and return the path."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def print_figures(title: str, figures: dict[str, Any]) -> None:
    print(f"\n== {title} ==")
    width = max(len(key) for key in figures) if figures else 0
    for key, value in figures.items():
        print(f"  {key:<{width}}  {value}")


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


def ensure_services() -> None:
    """PostgreSQL (and Redis) up, as the test command does (bin/services)."""
    subprocess.run(["bash", str(ROOT / "bin" / "services")], cwd=ROOT, check=False)
